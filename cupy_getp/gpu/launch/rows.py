"""Launch helpers for the batched engine (family: rows)."""

from __future__ import annotations


class RowLaunches:
    pass
