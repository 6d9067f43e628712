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
# Pre-split kernels (gemm_tc2_*): tile shapes (BM, BN) with their blocks per SM and a relative cost per
# output (bigger tiles reuse each staged byte more); ROCm only 64-row tiles (LDS 64 KiB).
_PIECE_TILES = {(128, 128): (1, 1.0), (64, 128): (2, 1.15), (64, 64): (2, 1.4)}
TC_STAGES = {False: 4, True: 2}  # kernels/gemm_tc.hip TC_STAGES on CUDA, HIP


def pieces_lda(k: int) -> int:
    """Row length of split activations: K rounded up to 8 (whole 16-byte chunks, zeros after K)."""
    return -(-k // 8) * 8


def tc2_shared_bytes(pieces: int, block_m: int, block_n: int, is_hip: bool) -> int:
    """Dynamic shared memory of one pre-split block: TC_STAGES stages of pieces x BM + BN rows, bf16."""
    return TC_STAGES[is_hip] * (pieces * block_m + block_n) * _TC_LDS * 2


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
    def _tc_launch(self, name: str, grid: tuple, args: tuple, pieces: int, block_m: int,
                   shared_mem: int | None = None) -> None:
        if not tensor_cores_supported(self.device):
            raise RuntimeError(f"{name}: no tensor-core path on {self.device.arch} (needs CUDA sm_80+; "
                               "ROCm gfx90a only with CUPY_GETP_ROCM_MFMA=1)")
        if pieces not in (1, 3):
            raise ValueError(f"{name}: pieces must be 1 or 3, not {pieces}")
        if grid[0] == 0 or grid[1] == 0:  # CuPy would still launch one block
            return
        block = (self.warps_per_block * self.device.warp_size,)
        if shared_mem is None:
            shared_mem = tc_shared_bytes(pieces, block_m)
        self._launch(name, grid, block, args, shared_mem=shared_mem)

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


    # -- pre-split activations ------------------------------------------------------------------------
    def split_pieces(self, ap, a) -> None:
        """ap (pieces, M, pieces_lda(K)) bf16 = the BF16 pieces of a (M, K) f32 (3: x1, x2, x3; 1: bf16(x)),
        zeros after column K."""
        m, k = a.shape
        pieces = ap.shape[0]
        _check("a", a, F32)
        _check("ap", ap, BF16, (pieces, m, pieces_lda(k)))
        if pieces not in (1, 3):
            raise ValueError(f"split_pieces: pieces must be 1 or 3, not {pieces}")
        if m == 0:
            return
        self._launch("tc_split_rows", (m,), (self.warps_per_block * self.device.warp_size,),
                     (ap, a, I32(m), I32(k), I32(ap.shape[2]), I32(pieces)))

    def _tc2_dense_tile(self, m: int, n: int) -> tuple[int, int]:
        """The tile shape with the least estimated time: waves of blocks x blocks per SM x tile cost."""
        sms = self._tc_sm_count()

        def cost(tile):
            per_sm, weight = _PIECE_TILES[tile]
            blocks = _blocks(m, tile[0]) * _blocks(n, tile[1])
            return _blocks(blocks, sms * per_sm) * per_sm * tile[0] * tile[1] * weight

        tiles = [t for t in _PIECE_TILES if not (self.device.is_hip and t[0] != 64)]
        return min(tiles, key=cost)

    def _check_pieces(self, name: str, ap, k: int) -> tuple[int, int]:
        _check(name, ap, BF16)
        if ap.ndim != 3 or ap.shape[0] not in (1, 3) or ap.shape[2] != pieces_lda(k):
            raise ValueError(f"{name}: shape {tuple(ap.shape)}, expected (1 or 3, rows, {pieces_lda(k)})")
        if not _aligned(ap):
            raise ValueError(f"{name}: must start on a 16-byte boundary (the kernels copy 16-byte chunks)")
        return ap.shape[0], ap.shape[1]

    def gemm_tc_pieces(self, c, ap, w, bias=None, accumulate: bool = False, tile: tuple[int, int] | None = None) -> None:
        """c (M,N) = a @ w (N,K)^T (+ bias) (+ c when accumulate) with a given as its pieces ap (split_pieces).
        tile: (BM, BN) of _PIECE_TILES, None picks by shape."""
        n, k = w.shape
        pieces, m = self._check_pieces("ap", ap, k)
        _check("w", w, BF16)
        _check("c", c, F32, (m, n))
        if bias is not None:
            _check("bias", bias, F32, (n,))
        tile = tile or self._tc2_dense_tile(m, n)
        if tile not in _PIECE_TILES or (self.device.is_hip and tile[0] != 64):
            raise ValueError(f"gemm_tc_pieces: tile {tile} not available")
        vec8 = k % 8 == 0 and _aligned(w)
        self._tc_launch(f"gemm_tc2_m{tile[0]}_n{tile[1]}", (_blocks(n, tile[1]), _blocks(m, tile[0])),
                        (c, ap, w, bias, I32(m), I32(n), I32(k), I32(ap.shape[2]), I32(accumulate), I32(pieces),
                         I32(vec8)), pieces, tile[0], tc2_shared_bytes(pieces, *tile, self.device.is_hip))

    def gemm_tc_grouped_swiglu_pieces(self, g, ap, pair_of_slot, tile_expert, w1, b1, experts_per_token: int,
                                      limit: float) -> None:
        """gemm_tc_grouped_swiglu with the rows' activations given as pieces ap (pieces, R, lda)."""
        n_experts, two_inter, hidden = w1.shape
        inter = two_inter // 2
        p = self._tc_grouping(pair_of_slot, tile_expert)
        pieces, rows = self._check_pieces("ap", ap, hidden)
        _check("g", g, F32, (p, inter))
        _check("w1", w1, BF16)
        _check("b1", b1, F32, (n_experts, two_inter))
        assert two_inter == 2 * inter and experts_per_token > 0
        vec8 = hidden % 8 == 0 and _aligned(w1)
        self._tc_launch("gemm_tc2_grouped_swiglu", (_blocks(two_inter, TC_BLOCK_N), p // TC_BLOCK_M),
                        (g, ap, I32(rows), I32(ap.shape[2]), pair_of_slot, tile_expert, w1, b1, I32(hidden),
                         I32(inter), I32(experts_per_token), F32(limit), I32(pieces), I32(vec8)), pieces,
                        TC_BLOCK_M, tc2_shared_bytes(pieces, TC_BLOCK_M, TC_BLOCK_N, self.device.is_hip))

    def gemm_tc_grouped_pieces(self, y, gp, pair_of_slot, tile_expert, w2, b2) -> None:
        """gemm_tc_grouped with g given as pieces gp (pieces, P, lda)."""
        n_experts, hidden, inter = w2.shape
        p = self._tc_grouping(pair_of_slot, tile_expert)
        pieces, padded = self._check_pieces("gp", gp, inter)
        if padded != p:
            raise ValueError(f"gp: {padded} rows, expected the {p} padded positions")
        _check("y", y, F32, (p, hidden))
        _check("w2", w2, BF16)
        _check("b2", b2, F32, (n_experts, hidden))
        vec8 = inter % 8 == 0 and _aligned(w2)
        self._tc_launch("gemm_tc2_grouped", (_blocks(hidden, TC_BLOCK_N), p // TC_BLOCK_M),
                        (y, gp, I32(p), I32(gp.shape[2]), pair_of_slot, tile_expert, w2, b2, I32(hidden), I32(inter),
                         I32(pieces), I32(vec8)), pieces, TC_BLOCK_M,
                        tc2_shared_bytes(pieces, TC_BLOCK_M, TC_BLOCK_N, self.device.is_hip))
