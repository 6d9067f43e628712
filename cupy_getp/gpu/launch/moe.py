"""Launch helpers for the batched engine (family: moe)."""

from __future__ import annotations


class MoeLaunches:
    pass
