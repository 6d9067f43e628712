"""Launch helpers for the batched engine (family: gemm)."""

from __future__ import annotations


class GemmLaunches:
    pass
