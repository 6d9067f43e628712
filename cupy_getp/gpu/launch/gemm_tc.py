"""Launch helpers for the batched engine (family: gemm_tc): products on BF16 tensor cores, FP32-accurate
with `pieces=3` (each FP32 activation split into three BF16 pieces, kernels/gemm_tc.hip).

CUDA needs compute capability 8.0 (mma.sync bf16). The ROCm (gfx90a MFMA) path compiles but has never
run on an AMD GPU: it is off unless CUPY_GETP_ROCM_MFMA=1.
"""

from __future__ import annotations

import os
import re

from .common import BF16, F32, I32, _aligned, _blocks, _check

TC_BLOCK_M = 64  # rows per tile of the grouped kernels: the engine's block_m for moe_align
TC_BLOCK_N = 128  # output columns per block (TC_BN)
TC_BK = 32  # K per pipeline step
_TC_LDS = TC_BK + 8  # padded shared-memory row, bf16 elements
_DENSE_BLOCK_M = (64, 128)  # gemm_tc_bf16w_m64, gemm_tc_bf16w_m128


def tensor_cores_supported(device) -> bool:
    """True where the gemm_tc kernels may run: CUDA sm_80+, or gfx90a / gfx94x with CUPY_GETP_ROCM_MFMA=1."""
    if device.is_hip:
        enabled = os.environ.get("CUPY_GETP_ROCM_MFMA", "") == "1"
        return enabled and device.arch.startswith(("gfx90a", "gfx94"))
    match = re.fullmatch(r"sm_(\d+)(\d)", device.arch)
    return bool(match) and int(match.group(1)) >= 8


def tc_shared_bytes(pieces: int, block_m: int) -> int:
    """Dynamic shared memory of one block: two stages of pieces x BM A rows and TC_BLOCK_N W rows, bf16."""
    return 2 * (pieces * block_m + TC_BLOCK_N) * _TC_LDS * 2


class TensorCoreGemmLaunches:
    def _tc_launch(self, name: str, grid: tuple, args: tuple, pieces: int, block_m: int) -> None:
        if not tensor_cores_supported(self.device):
            raise RuntimeError(f"{name}: no tensor-core path on {self.device.arch} (needs CUDA sm_80+; "
                               "ROCm gfx90a only with CUPY_GETP_ROCM_MFMA=1)")
        if pieces not in (1, 3):
            raise ValueError(f"{name}: pieces must be 1 or 3, not {pieces}")
        if grid[0] == 0 or grid[1] == 0:  # CuPy would still launch one block
            return
        block = (self.warps_per_block * self.device.warp_size,)
        self._launch(name, grid, block, args, shared_mem=tc_shared_bytes(pieces, block_m))

    def _tc_dense_block_m(self, m: int, n: int) -> int:
        """128-row tiles (one block per SM) once there are enough of them to fill the GPU twice over;
        64-row tiles (two blocks per SM) otherwise. ROCm: 64 (128 rows x 3 pieces exceed 64 KiB of LDS)."""
        if self.device.is_hip:
            return 64
        sms = self._tc_sm_count()
        return 128 if _blocks(m, 128) * _blocks(n, TC_BLOCK_N) >= 2 * sms else 64

    def _tc_sm_count(self) -> int:
        count = getattr(self, "_sm_count", None)
        if count is None:  # a device attribute, not device data: fine during graph capture
            count = self._sm_count = int(self.device.cuda_device.attributes["MultiProcessorCount"])
        return count

    def gemm_tc(self, c, a, w, bias=None, accumulate: bool = False, pieces: int = 3, block_m: int | None = None) -> None:
        """c (M,N) = a (M,K) @ w (N,K)^T (+ bias (N,)) (+ c when accumulate); w bf16 bits. block_m: 64 or
        128 rows per block, None picks by shape."""
        m, k = a.shape
        n = w.shape[0]
        _check("a", a, F32)
        _check("w", w, BF16, (n, k))
        _check("c", c, F32, (m, n))
        if bias is not None:
            _check("bias", bias, F32, (n,))
        if block_m is None:
            block_m = self._tc_dense_block_m(m, n)
        if block_m not in _DENSE_BLOCK_M or (self.device.is_hip and block_m != 64):
            raise ValueError(f"gemm_tc: block_m {block_m} not available (CUDA {_DENSE_BLOCK_M}, ROCm 64)")
        vec8 = k % 8 == 0 and _aligned(a, w)
        self._tc_launch(f"gemm_tc_bf16w_m{block_m}", (_blocks(n, TC_BLOCK_N), _blocks(m, block_m)),
                        (c, a, w, bias, I32(m), I32(n), I32(k), I32(accumulate), I32(pieces), I32(vec8)),
                        pieces, block_m)

    def _tc_grouping(self, pair_of_slot, tile_expert) -> int:
        p = pair_of_slot.shape[0]
        _check("pair_of_slot", pair_of_slot, I32, (p,))
        if p % TC_BLOCK_M:
            raise ValueError(f"pair_of_slot: {p} padded positions, not a multiple of TC_BLOCK_M={TC_BLOCK_M}")
        _check("tile_expert", tile_expert, I32, (p // TC_BLOCK_M,))
        return p

    def gemm_tc_grouped_swiglu(self, g, a, pair_of_slot, tile_expert, w1, b1, experts_per_token: int, limit: float,
                               pieces: int = 3) -> None:
        """g[p] (P,I) = swiglu(w1[e] (2I,H) @ a[pair // k] + b1[e]) for every non-pad padded position p of an
        expert-e tile (moe_align with block_m = TC_BLOCK_M); pad positions are not written."""
        n_experts, two_inter, hidden = w1.shape
        inter = two_inter // 2
        p = self._tc_grouping(pair_of_slot, tile_expert)
        _check("g", g, F32, (p, inter))
        _check("a", a, F32)
        _check("w1", w1, BF16)
        _check("b1", b1, F32, (n_experts, two_inter))
        assert a.ndim == 2 and a.shape[1] == hidden and two_inter == 2 * inter and experts_per_token > 0
        vec8 = hidden % 8 == 0 and _aligned(a, w1)
        self._tc_launch("gemm_tc_grouped_swiglu_bf16w", (_blocks(two_inter, TC_BLOCK_N), p // TC_BLOCK_M),
                        (g, a, pair_of_slot, tile_expert, w1, b1, I32(hidden), I32(inter), I32(experts_per_token),
                         F32(limit), I32(pieces), I32(vec8)), pieces, TC_BLOCK_M)

    def gemm_tc_grouped(self, y, g, pair_of_slot, tile_expert, w2, b2, pieces: int = 3) -> None:
        """y[p] (P,H) = w2[e] (H,I) @ g[p] + b2[e] for every non-pad padded position p of an expert-e tile."""
        n_experts, hidden, inter = w2.shape
        p = self._tc_grouping(pair_of_slot, tile_expert)
        _check("y", y, F32, (p, hidden))
        _check("g", g, F32, (p, inter))
        _check("w2", w2, BF16)
        _check("b2", b2, F32, (n_experts, hidden))
        vec8 = inter % 8 == 0 and _aligned(g, w2)
        self._tc_launch("gemm_tc_grouped_bf16w", (_blocks(hidden, TC_BLOCK_N), p // TC_BLOCK_M),
                        (y, g, pair_of_slot, tile_expert, w2, b2, I32(hidden), I32(inter), I32(pieces), I32(vec8)),
                        pieces, TC_BLOCK_M)

