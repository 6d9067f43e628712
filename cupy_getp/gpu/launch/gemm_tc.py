"""Launch helpers for the batched engine (family: gemm_tc)."""

from __future__ import annotations


class TensorCoreGemmLaunches:
    pass
