"""Launch helpers for the batched engine (family: gemm): CUDA-core FP32 products C = A @ W^T (kernels/gemm.hip).

Two kernel shapes per entry point: "skinny" (a warp streams two weight rows once for a tile of up to
SKINNY_BM activation rows; few rows, bandwidth-bound) and "tiled" (64 x 128 block tiles in shared memory,
4 x 8 register micro-tiles; many rows, compute-bound). The helper picks one from shapes only.
"""

from __future__ import annotations

import numpy as np

from ...errors import KernelArgumentError, KernelDtypeError
from ..constants import BLOCK_SIZE, SKINNY_BM, TILE_BM, TILE_BN
from .common import F32, I32, _aligned, _blocks, _check, _expert_weights, _grouped_suffix

GROUPED_BLOCK_M = (SKINNY_BM, TILE_BM)  # (small: skinny kernel, large: tiled kernel); the block_m given to moe_align
SKINNY_MAX_M = 16  # dense products with at most this many rows use the skinny kernel
SKINNY_TILE_GROUPS = 4  # skinny grid.x: tiles are spread over this many blocks per column block, each loops


class GemmLaunches:
    def _skinny_grid(self, n_tiles: int, n: int) -> tuple:
        # A warp owns two adjacent columns; blockIdx.x picks the first tile, the block loops over the rest.
        return (min(n_tiles, SKINNY_TILE_GROUPS), _blocks(n, 2 * self.warps_per_block))

    def gemm(self, c, a, w, bias=None, accumulate: bool = False) -> None:
        """c (M, N) = a (M, K) @ w (N, K)^T (+ bias (N,)) (+ c when accumulate); w float32 or bf16 bits."""
        m, k = a.shape
        n = w.shape[0]
        _check("a", a, F32)
        if w.dtype not in (np.float32, np.uint16):
            raise KernelDtypeError(f"w: dtype {w.dtype}, expected float32 or uint16 (bf16)")
        _check("w", w, w.dtype, (n, k))
        _check("c", c, F32, (m, n))
        if bias is not None:
            _check("bias", bias, F32, (n,))
        if m == 0 or n == 0:
            return
        kind = "f32w" if w.dtype == np.float32 else "bf16w"
        vec = k % (4 if w.dtype == np.float32 else 8) == 0 and _aligned(a, w)
        args = (c, a, w, bias, I32(m), I32(n), I32(k), I32(bool(accumulate)), I32(vec))
        if m <= SKINNY_MAX_M:
            self._launch(f"gemm_{kind}_skinny", self._skinny_grid(_blocks(m, SKINNY_BM), n), (BLOCK_SIZE,), args)
        else:
            self._launch(f"gemm_{kind}_tiled", (_blocks(n, TILE_BN), _blocks(m, TILE_BM)), (BLOCK_SIZE,), args)

    def _grouped_checks(self, out, a, pair_of_padded, tile_expert, w, b, block_m: int) -> tuple:
        """(P, E, N, K) after the checks every grouped product shares."""
        if block_m not in GROUPED_BLOCK_M:
            raise KernelArgumentError(f"block_m {block_m} not supported; expected one of {GROUPED_BLOCK_M}")
        n_experts, n, k = w.shape
        p = out.shape[0]
        if p % block_m:
            raise KernelArgumentError(f"padded positions {p} not a multiple of block_m {block_m}")
        _check("a", a, F32)
        _check("pair_of_padded", pair_of_padded, I32, (p,))
        _check("tile_expert", tile_expert, I32, (p // block_m,))
        _check("b", b, F32, (n_experts, n))
        if a.ndim != 2 or a.shape[1] != k:
            raise KernelArgumentError(f"a: shape {tuple(a.shape)}, expected (rows, {k})")
        return p, n, k

    def _grouped_grid(self, p: int, n: int, block_m: int) -> tuple:
        if block_m == SKINNY_BM:
            return self._skinny_grid(p // SKINNY_BM, n)
        return (_blocks(n, TILE_BN), p // TILE_BM)

    def gemm_grouped_swiglu(self, g, a, pair_of_padded, tile_expert, w1, b1, experts_per_token: int, limit: float,
                            block_m: int) -> None:
        """g[p] (P, I) = SwiGLU(w1[e] @ a[pair_of_padded[p] // k] + b1[e]) for every non-pad position p of each
        tile with expert e = tile_expert[tile] >= 0; w1 (E, 2I, H) bf16 or an Mxfp4Matrix, b1 (E, 2I), a (R, H)."""
        p, n, k = self._grouped_checks(g, a, pair_of_padded, tile_expert, w1, b1, block_m)
        _check("g", g, F32, (p, n // 2))
        if n % 2:
            raise KernelArgumentError(f"w1: {n} rows, expected 2 * intermediate (gate, up interleaved)")
        if p == 0 or n == 0:
            return
        kind, w_args, w_first = _expert_weights("w1", w1)
        vec = k % 8 == 0 and _aligned(a, w_first)
        self._launch(_grouped_name("gemm_grouped_swiglu", kind, block_m), self._grouped_grid(p, n, block_m),
                     (BLOCK_SIZE,), (g, a, pair_of_padded, tile_expert, *w_args, b1, I32(p), I32(n), I32(k),
                                     I32(experts_per_token), F32(limit), I32(vec)))

    def gemm_grouped(self, y, g, pair_of_padded, tile_expert, w2, b2, block_m: int) -> None:
        """y[p] (P, H) = w2[e] @ g[p] + b2[e] for every non-pad position p of each tile with expert
        e = tile_expert[tile] >= 0; w2 (E, H, I) bf16 or an Mxfp4Matrix, b2 (E, H), g (P, I)."""
        p, n, k = self._grouped_checks(y, g, pair_of_padded, tile_expert, w2, b2, block_m)
        _check("y", y, F32, (p, n))
        _check("g", g, F32, (p, k))
        if p == 0 or n == 0:
            return
        kind, w_args, w_first = _expert_weights("w2", w2)
        vec = k % 8 == 0 and _aligned(g, w_first)
        self._launch(_grouped_name("gemm_grouped", kind, block_m), self._grouped_grid(p, n, block_m), (BLOCK_SIZE,),
                     (y, g, pair_of_padded, tile_expert, *w_args, b2, I32(p), I32(n), I32(k), I32(vec)))


def _grouped_name(product: str, kind: str, block_m: int) -> str:
    """gemm_grouped[_swiglu][_mxfp4w]_{skinny,tiled}."""
    return f"{product}{_grouped_suffix(kind)}_{'skinny' if block_m == SKINNY_BM else 'tiled'}"
