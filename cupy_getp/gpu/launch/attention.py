"""Launch helpers for the batched engine (family: attention)."""

from __future__ import annotations


class AttentionLaunches:
    pass
