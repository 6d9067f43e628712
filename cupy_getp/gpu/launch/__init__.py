"""Launch helpers of the batched engine's kernels, one module per kernel family, mixed into `Kernels`.

Each mixin uses `self._launch(name, grid, block, args)` and `self.warps_per_block` of `Kernels`.
"""

from __future__ import annotations

from .attention import AttentionLaunches
from .gemm import GemmLaunches
from .gemm_tc import TensorCoreGemmLaunches
from .moe import MoeLaunches
from .rows import RowLaunches


class BatchLaunches(RowLaunches, AttentionLaunches, MoeLaunches, GemmLaunches, TensorCoreGemmLaunches):
    pass
