"""Launch helpers for the batched engine (families gemm_tc, gemm_wgmma): products on BF16 tensor cores,
FP32-accurate with 3 pieces: each FP32 activation split once, by `split_pieces`, into three BF16 pieces
that the products read.

Which kernels run is decided here, per device: on compute capability 9.0 (H100, H200) the wgmma kernels
(kernels/gemm_wgmma.hip, built for sm_90a) for any row count (the engine uses them at every row count);
elsewhere on CUDA sm_80+
the mma.sync kernels (kernels/gemm_tc.hip), and on gfx90a their MFMA version, which compiles but has never
run on an AMD GPU: it is off unless CUPY_GETP_ROCM_MFMA=1. Both give the same bits (same k order, same
promotion at every k = 16).
"""

from __future__ import annotations

import os
import re

from ...errors import KernelArgumentError
from ..constants import (TC_BLOCK_M, TC_BLOCK_N, TC_LDS, TC_STAGES_CUDA, TC_STAGES_HIP, WG_HALF_THREADS, WG_SMEM_BYTES,
                         WG_THREADS, WG_WIDE_THREADS)
from .common import BF16, F32, I32, DeviceSms, _aligned, _blocks, _check, _expert_weights, _grouped_suffix, _require
from .splitk import SplitKWorkspace, splitk_sizes, wg_sliced, wg_sliced_height, wg_split_rows_limit, wg_splits
from .tensor_map import paired_eligible, tma_eligible

# Dense tile shapes (BM, BN): blocks per SM, and time per output relative to 64 x 128 (measured on an
# H100 at M = 512: bench/RESULTS.md). ROCm: 64-row tiles only (LDS 64 KiB).
DENSE_TILES = {(128, 128): (1, 1.34), (64, 128): (2, 1.0), (64, 64): (2, 1.66)}
# wgmma kernels (kernels/gemm_wgmma.hip): row-tile heights (the N side of the instruction) per piece
# count, output features per block (128 MB, MB = 1 or 2); threads and dynamic shared memory of every block
# are constants.py's WG_THREADS and WG_SMEM_BYTES. The grouped kernels' tile height is moe_align's block_m.
WG_ROWS = {3: (8, 16, 32, 64, 128), 1: (8, 16, 32, 64, 128)}
WG_DENSE_TILES = {p: [(r, f) for r in WG_ROWS[p] for f in (1, 2) if (p, r, f) != (3, 128, 2)] for p in WG_ROWS}
WG_GROUPED_ROWS = (8, 16, 32, 64, 128)
WG_GROUPED_TILES = [(r, f) for r in WG_GROUPED_ROWS for f in (1, 2) if (r, f) != (128, 2)]  # either piece count
# The half blocks (gemm_wg_tma_half_r{rows}_p{pieces}_b1: a producer and one consumer warpgroup, 64 features,
# WG_HALF_THREADS): dense TMA tiles of one feature block and these heights, where the two-consumer tiles would
# leave most SMs idle (wg_half_blocks). CUPY_GETP_WG_HALF=0 turns them off; the bits are the same either way.
WG_HALF_ROWS = (8, 16)
WG_HALF_ENV = "CUPY_GETP_WG_HALF"
# The grouped TMA kernels (gemm_wg_tma_grouped{,_swiglu}_r{rows}_p{pieces}_b{blocks}: bf16 experts through a paired
# map, launch/tensor_map.py): every grouped tile (WG_GROUPED_TILES). CUPY_GETP_WG_TMA_GROUPED=0 turns them off; the
# bits are the same either way.
WG_TMA_GROUPED_ENV = "CUPY_GETP_WG_TMA_GROUPED"
# The wide blocks (gemm_wg_tma_grouped_swiglu_wide_r{rows}_p{pieces}_b1: a producer and three consumer warpgroups,
# 192 features, WG_WIDE_THREADS): the grouped TMA mlp1 of tiles of these heights where 128-feature tiles would take
# two waves and 192-feature ones fit one (wg_wide_blocks). CUPY_GETP_WG_WIDE=0 turns them off; the same bits.
WG_WIDE_ROWS = (8,)
WG_WIDE_ENV = "CUPY_GETP_WG_WIDE"
WG_WIDE_KIND = "_tma_grouped_swiglu_wide"
# The tall wide blocks (gemm_wg_tma_grouped{_swiglu}_wide_r{rows}_p{pieces}_b{blocks}, mlp1 and mlp2): grouped TMA
# products of many tiles, of these (tile height, pieces), in blocks of 192 x this many features, where they still
# give every SM a block (wg_wide_tall_blocks). Many rows' grouped products are bound by L2's throughput (ncu,
# twenty-seventh session), and a third of their bytes are the tile's activation pieces, read once a feature block: a
# block of 384 features (192) reads them a third fewer times than one of 256 (128). Opt-in until measured:
# CUPY_GETP_WG_WIDE_TALL=1 (or WG_WIDE_TALL_ON = 1: bench/step_ablation.py --set gemm_tc.WG_WIDE_TALL_ON=1) takes
# them; by default, or with CUPY_GETP_WG_WIDE=0, the two-consumer blocks. The same bits either way.
WG_WIDE_TALL = {(64, 3): 2, (128, 1): 1}
WG_WIDE_TALL_ENV = "CUPY_GETP_WG_WIDE_TALL"
WG_WIDE_TALL_ON = int(os.environ.get(WG_WIDE_TALL_ENV, "0") == "1")
WG_WIDE_PLAIN_KIND = "_tma_grouped_wide"


def wg_grouped_rows(n_pairs: int, n_experts: int, pieces: int) -> int:
    """The grouped kernels' tile height for a step of n_pairs (row, expert) pairs: the smallest that holds
    an expert's average share; at most 64 with 3 pieces (128 measured no faster), 128 with 1 (faster from
    1024 rows). The bits do not depend on it."""
    share = -(-n_pairs // max(1, n_experts))
    heights = WG_GROUPED_ROWS if pieces == 1 else WG_GROUPED_ROWS[:-1]
    return next((r for r in heights if share <= r), heights[-1])


def tensor_cores_supported(device) -> bool:
    """True where the gemm_tc kernels may run: CUDA sm_80+, or gfx90a / gfx94x with CUPY_GETP_ROCM_MFMA=1."""
    if device.is_hip:
        enabled = os.environ.get("CUPY_GETP_ROCM_MFMA", "") == "1"
        return enabled and device.arch.startswith(("gfx90a", "gfx94"))
    match = re.fullmatch(r"sm_(\d+)(\d)", device.arch)
    return bool(match) and int(match.group(1)) >= 8


def wgmma_disabled() -> bool:
    """CUPY_GETP_WGMMA=0: the products keep the mma.sync kernels on Hopper too."""
    return os.environ.get("CUPY_GETP_WGMMA", "") == "0"


def wg_block_features(kind: str, features: int) -> int:
    """Features a block of gemm_wg{kind}_..._b{features} computes (and a TMA map's box rows): 64 a consumer
    warpgroup and feature block, two consumers but in the half blocks (kind _tma_half: one) and the wide ones
    (WG_WIDE_KIND, WG_WIDE_PLAIN_KIND: three)."""
    return 64 * wg_consumers(kind) * features


def wg_consumers(kind: str) -> int:
    """Consumer warpgroups in a block of gemm_wg{kind}_...: one in the half blocks, three in the wide ones, else two."""
    return {"_tma_half": 1, WG_WIDE_KIND: 3, WG_WIDE_PLAIN_KIND: 3}.get(kind, 2)


def wg_wide_enabled() -> bool:
    """Whether the grouped TMA products take the wide blocks (mlp1 of few tiles; with WG_WIDE_TALL_ON, both of many):
    yes unless CUPY_GETP_WG_WIDE=0."""
    return os.environ.get(WG_WIDE_ENV, "") != "0"


def wg_tma_grouped_enabled() -> bool:
    """Whether the grouped products with bf16 experts read them by TMA: yes unless CUPY_GETP_WG_TMA_GROUPED=0."""
    return os.environ.get(WG_TMA_GROUPED_ENV, "") != "0"


def wg_half_enabled() -> bool:
    """Whether the dense TMA products of few rows and few feature tiles take the half blocks: yes unless
    CUPY_GETP_WG_HALF=0."""
    return os.environ.get(WG_HALF_ENV, "") != "0"


def describe_products(device, wgmma: bool | None = None, not_built: str | None = None) -> str:
    """Which kernels run the tensor-core products on this device, in a few words. `wgmma`: whether the
    wgmma kernels were built and report their bodies (Kernels.wgmma); None: what a compute capability 9.0
    device is expected to take (CUPY_GETP_WGMMA=0 included)."""
    if wgmma is None and wgmma_disabled():
        wgmma, not_built = False, "disabled by CUPY_GETP_WGMMA=0"
    if not tensor_cores_supported(device):
        return "CUDA cores (no tensor-core path on this device: --precision fp32)"
    if device.is_hip:
        return "MFMA tensor cores (gfx90a; compiled, never run on an AMD GPU)"
    if device.arch == "sm_90" and wgmma is not False:
        return "wgmma tensor cores (sm_90a)"
    why = f" (wgmma {not_built})" if device.arch == "sm_90" and not_built else ""
    return f"mma.sync tensor cores{why}"


def pieces_lda(k: int) -> int:
    """Row length of split activations: K rounded up to 8 (whole 16-byte chunks, zeros after K)."""
    return -(-k // 8) * 8


def pieces_view(flat, pieces: int, rows: int, k: int):
    """The (pieces, rows, pieces_lda(k)) split activations at the start of a flat bf16 buffer: contiguous, as the
    launch helpers want them."""
    lda = pieces_lda(k)
    return flat[: pieces * rows * lda].reshape(pieces, rows, lda)


def tc_shared_bytes(pieces: int, block_m: int, block_n: int, is_hip: bool) -> int:
    """Dynamic shared memory of one block: TC_STAGES stages of pieces x BM + BN rows, bf16."""
    stages = TC_STAGES_HIP if is_hip else TC_STAGES_CUDA
    return stages * (pieces * block_m + block_n) * TC_LDS * 2


class TensorCoreGemmLaunches(DeviceSms):
    # Kernels sets them at warm-up, with `wgmma`: wg_tma (where the wgmma kernels run, `wg_tma_enabled()`): the
    # dense wgmma products read W through tensor maps, made once per weight by tensor_maps (a TensorMaps).
    wg_tma = False
    tensor_maps = None
    # ... and wg_splitk (on unless CUPY_GETP_WG_SPLITK=0, launch/splitk.py): products of few tiles split along K,
    # into the workspace `_splitk` (made by reserve_splitk at warm-up, or on first use outside graph capture).
    wg_splitk = False
    _splitk = None
    # ... and wg_sliced_tall (with wg_splitk, unless CUPY_GETP_WG_SLICED_TALL=0): wg_dense_sliced's 128-row height.
    wg_sliced_tall = False
    # ... and wg_half (with wg_tma, unless CUPY_GETP_WG_HALF=0): wg_half_blocks.
    wg_half = False
    # ... and wg_tma_grouped (with wg_tma, unless CUPY_GETP_WG_TMA_GROUPED=0): _wg_grouped_map.
    wg_tma_grouped = False
    # ... and wg_wide (with wg_tma_grouped, unless CUPY_GETP_WG_WIDE=0): wg_wide_blocks, wg_wide_tall_blocks.
    wg_wide = False
    def _tc_launch(self, name: str, grid: tuple, args: tuple, pieces: int, tile: tuple[int, int]) -> None:
        if not tensor_cores_supported(self.device):
            raise RuntimeError(f"{name}: no tensor-core path on {self.device.arch} (needs CUDA sm_80+; "
                               "ROCm gfx90a only with CUPY_GETP_ROCM_MFMA=1)")
        if grid[0] == 0 or grid[1] == 0:  # CuPy would still launch one block
            return
        block = (self.warps_per_block * self.device.warp_size,)
        self._launch(name, grid, block, args, shared_mem=tc_shared_bytes(pieces, *tile, self.device.is_hip))

    def _check_pieces(self, name: str, ap, k: int, rows: int | None = None) -> tuple[int, int]:
        """(pieces, rows) of split activations (pieces, rows, pieces_lda(k)) bf16."""
        _check(name, ap, BF16)
        if ap.ndim != 3 or ap.shape[0] not in (1, 3) or ap.shape[2] != pieces_lda(k) or \
                (rows is not None and ap.shape[1] != rows):
            want = f"(1 or 3, {'rows' if rows is None else rows}, {pieces_lda(k)})"
            raise KernelArgumentError(f"{name}: shape {tuple(ap.shape)}, expected {want}")
        if not _aligned(ap):
            raise KernelArgumentError(f"{name}: must start on a 16-byte boundary (the kernels copy 16-byte chunks)")
        return ap.shape[0], ap.shape[1]

    def split_pieces(self, ap, a) -> None:
        """ap (pieces, M, pieces_lda(K)) bf16 = the BF16 pieces of a (M, K) f32 (3: x1, x2, x3; 1: bf16(x)),
        zeros after column K."""
        m, k = a.shape
        _check("a", a, F32)
        pieces, _ = self._check_pieces("ap", ap, k, m)
        threads = self.warps_per_block * self.device.warp_size
        vec4 = k % 4 == 0 and _aligned(a)
        self._launch("tc_split_rows", (_blocks(m * ap.shape[2] // 8, threads),), (threads,),
                     (ap, a, I32(m), I32(k), I32(ap.shape[2]), I32(pieces), I32(vec4)))

    def wg_tile(self, m: int, n: int, pieces: int) -> tuple[int, int]:
        """(row-tile height, 64-feature blocks per consumer) of a wgmma product of M rows and N features. Up to
        64 rows, the smallest height that holds M; above, as measured on the H200 at 512 and 1024 rows
        (bench/RESULTS.md, 2026-11-29): exact 64 x 1, and 128 x 1 above 512 rows where N >= 4096 (at
        N = 2880 the 128-row tiles leave the last wave half empty); fast 128-row tiles."""
        if m <= 64:
            rows = next(r for r in WG_ROWS[pieces] if m <= r)
        elif pieces == 3:
            return (128, 1) if m > 512 and n >= 4096 else (64, 1)
        else:
            rows = 128
        return rows, self._wg_features(rows, pieces, _blocks(m, rows), n)

    def _wg_features(self, rows: int, pieces: int, row_tiles: int, n: int, grouped: bool = False) -> int:
        """Feature blocks per consumer: dense, two where that still gives every SM a block; grouped (row_tiles:
        at most the tiles that hold a pair), one where one-block tiles all fit in one wave (measured at one
        row, bench/onerow.py: mlp2's 4 x 23 blocks of one in 26.5 us, of two in 35.7; mlp1's 4 x 45 blocks
        of one are two waves: 54 us, of two 40). One where no two-block kernel of that height exists (registers:
        WG_DENSE_TILES, WG_GROUPED_TILES)."""
        if (rows, 2) not in (WG_GROUPED_TILES if grouped else WG_DENSE_TILES[pieces]):
            return 1
        if grouped:
            return 1 if row_tiles * _blocks(n, 128) <= self.sm_count() else 2
        return 2 if row_tiles * _blocks(n, 256) >= self.sm_count() else 1

    def _wg_grouped_features(self, block_m: int, pieces: int, p: int, pairs: int, n: int) -> int:
        """_wg_features of a grouped product of P padded positions holding `pairs` pairs, counting the tiles
        that can hold a pair: at most one a pair."""
        return self._wg_features(block_m, pieces, min(p // block_m, pairs), n, grouped=True)

    def _wg_launch(self, kind: str, rows: int, pieces: int, features: int, n: int, grid_y: int, args: tuple,
                   splits: int = 1) -> None:
        """Kernel gemm_wg{kind}_r{rows}_p{pieces}_b{features} over (ceil(N / block features), grid_y), a block
        wg_block_features (128 features; 64 in the half blocks, 192 in the wide ones) and wg_consumers + 1
        warpgroups; kind may end in _splitk (split-K's split mode: grid z = splits) or _sliced (its sliced mode)."""
        grid = (_blocks(n, wg_block_features(kind, features)), grid_y, splits)
        if grid[0] == 0 or grid[1] == 0:
            return
        name = f"gemm_wg{kind}_r{rows}_p{pieces}_b{features}"
        threads = {1: WG_HALF_THREADS, 2: WG_THREADS, 3: WG_WIDE_THREADS}[wg_consumers(kind)]
        self._launch(name, grid if kind.endswith("_splitk") else grid[:2], (threads,), args, shared_mem=WG_SMEM_BYTES)

    def wg_half_blocks(self, m: int, n: int, rows: int, features: int) -> bool:
        """Whether an unsplit dense TMA product of M rows and N features, tiled (rows, features), takes the half
        blocks: with wg_half, tiles of one feature block and a height of WG_HALF_ROWS whose 64-feature halves
        all fit one wave on the SMs. At one row qkv's 40 tiles leave 92 of an H100's 132 SMs idle, and a tile
        of few rows waits on its own ring (ncu, thirteenth session: its weights in L2, it takes as long), so
        twice the blocks stream twice the rings. Each feature's sum is the same: so are the bits."""
        return (self.wg_half and features == 1 and rows in WG_HALF_ROWS
                and _blocks(n, 64) * _blocks(m, rows) <= self.sm_count())

    def wg_wide_blocks(self, row_tiles: int, n: int, rows: int) -> bool:
        """Whether a grouped TMA mlp1 + SwiGLU of N features whose tiles (`rows` high) that can hold a pair are
        row_tiles takes the wide blocks: with wg_wide, where its 128-feature tiles would take more than one wave on
        the SMs and its 192-feature ones fit one. At one row mlp1's 4 experts x 45 tiles of 128 features are two
        waves (180 blocks on 132 SMs), of 256 they leave 40 SMs idle (92), of 192 fill 120. Each feature's sum and
        SwiGLU are the two-consumer blocks': the same bits."""
        sms = self.sm_count()
        return (self.wg_wide and rows in WG_WIDE_ROWS
                and row_tiles * _blocks(n, 128) > sms >= row_tiles * _blocks(n, wg_block_features(WG_WIDE_KIND, 1)))

    def wg_wide_tall_blocks(self, row_tiles: int, n: int, rows: int, pieces: int) -> int:
        """Feature blocks per consumer of the tall wide blocks for a grouped TMA product of N features whose tiles
        (`rows` high) that can hold a pair are row_tiles, or 0 where it keeps the two-consumer blocks: with wg_wide
        and WG_WIDE_TALL_ON, tiles of a WG_WIDE_TALL shape whose wide blocks still give every SM one (640 rows'
        mlp1: 72 x 15 blocks of 384 features). Each feature's sum is the two-consumer blocks': the same bits."""
        blocks = WG_WIDE_TALL.get((rows, pieces), 0)
        if not (self.wg_wide and WG_WIDE_TALL_ON and blocks):
            return 0
        return blocks if row_tiles * _blocks(n, wg_block_features(WG_WIDE_KIND, blocks)) >= self.sm_count() else 0

    def wg_dense_splits(self, n: int, k: int) -> int:
        """Split-K splits of a dense wgmma product of N features over K: 1 unless wg_splitk; never a function of
        the row count (batch invariance)."""
        return wg_splits(n, k, self.sm_count()) if self.wg_splitk else 1

    def wg_dense_sliced(self, n: int, m: int, rows: int, pieces: int) -> int | None:
        """The sliced kernels' tile height for a split product of M rows tiled `rows` high, where it runs in
        sliced mode (launch/splitk.py's wg_sliced; its height by wg_sliced_height); None: split mode."""
        if not wg_sliced(n, m, rows, self.sm_count()):
            return None
        return wg_sliced_height(rows, pieces, self.wg_sliced_tall)

    def reserve_splitk(self, rows: int, shapes) -> None:
        """Size the split-K workspace for dense products of up to `rows` rows with weights of these (N, K)
        shapes (split mode's rows only: the sliced mode needs none). Call it outside graph capture (at
        warm-up): a capture then never allocates."""
        sms = self.sm_count()
        sizes = [splitk_sizes(min(rows, wg_split_rows_limit(n, sms)), n, k, splits, 8)  # 8: the shortest tile
                 for n, k in shapes if (splits := self.wg_dense_splits(n, k)) > 1]
        if sizes:  # one allocation for the largest (a grown workspace keeps the smaller alive)
            self._splitk_buffers(max(f for f, _ in sizes), max(t for _, t in sizes))

    def _splitk_buffers(self, floats: int, tiles: int) -> tuple:
        """(workspace, counters) holding at least these sizes; grown here only outside graph capture."""
        if self._splitk is None:
            self._splitk = SplitKWorkspace()
        if not self._splitk.fits(floats, tiles):
            capturing = getattr(self.device.stream, "is_capturing", None)
            if capturing is not None and capturing():
                raise KernelArgumentError(f"gemm_tc: the split-K workspace needs {floats} floats and {tiles} "
                                          "counters while a CUDA graph is captured: reserve_splitk at warm-up")
            self._splitk.grow(floats, tiles)
        return self._splitk.work, self._splitk.counters

    def tc_dense_tile(self, m: int, n: int) -> tuple[int, int]:
        """The tile shape with the least estimated time: waves of blocks x blocks per SM x tile cost."""
        sms = self.sm_count()

        def cost(tile):
            per_sm, weight = DENSE_TILES[tile]
            blocks = _blocks(m, tile[0]) * _blocks(n, tile[1])
            return _blocks(blocks, sms * per_sm) * per_sm * tile[0] * tile[1] * weight

        return min((t for t in DENSE_TILES if not (self.device.is_hip and t[0] != 64)), key=cost)

    def gemm_tc(self, c, ap, w, bias=None, accumulate: bool = False, tile: tuple[int, int] | None = None) -> None:
        """c (M,N) = a @ w (N,K)^T (+ bias (N,)) (+ c when accumulate), a given as its pieces ap (split_pieces),
        w bf16 bits. `tile` on the wgmma kernels: (row-tile height of WG_ROWS, feature blocks 1 or 2), else
        (BM, BN) of DENSE_TILES; None picks by shape. With wg_tma, a w that a tensor map can describe is read
        by the TMA kernels (gemm_wg_tma_*: the same bits); with wg_splitk, a product of few feature tiles by
        the split-K twins (other bits, the same at every row count)."""
        n, k = w.shape
        _check("w", w, BF16)
        pieces, m = self._check_pieces("ap", ap, k)
        _check("c", c, F32, (m, n))
        if bias is not None:
            _check("bias", bias, F32, (n,))
        vec8 = k % 8 == 0 and _aligned(w)
        if self.wgmma:
            self._wg_dense(c, ap, w, bias, accumulate, tile, pieces, vec8)
            return
        tile = tile or self.tc_dense_tile(m, n)
        if tile not in DENSE_TILES or (self.device.is_hip and tile[0] != 64):
            raise KernelArgumentError(f"gemm_tc: tile {tile} not available (CUDA {list(DENSE_TILES)}, "
                                      "ROCm 64-row tiles)")
        self._tc_launch(f"gemm_tc_m{tile[0]}_n{tile[1]}", (_blocks(n, tile[1]), _blocks(m, tile[0])),
                        (c, ap, w, bias, I32(m), I32(n), I32(k), I32(ap.shape[2]), I32(accumulate), I32(pieces),
                         I32(vec8)), pieces, tile)

    def _wg_dense(self, c, ap, w, bias, accumulate: bool, tile, pieces: int, vec8: bool) -> None:
        """gemm_tc on the wgmma kernels (arguments checked). Split along K (wg_dense_splits), a product takes
        one-block tiles whatever `tile` asks, in sliced mode where those fill the SMs (wg_dense_sliced's
        height), else in split mode: the bits depend on none of it."""
        (m, n), k = c.shape, w.shape[1]
        rows, features = tile or self.wg_tile(m, n, pieces)
        if (rows, features) not in WG_DENSE_TILES[pieces]:
            raise KernelArgumentError(f"gemm_tc: tile {(rows, features)} not available on the wgmma kernels "
                                      f"with {pieces} pieces: {WG_DENSE_TILES[pieces]}")
        splits = self.wg_dense_splits(n, k)
        sliced_rows = None
        if splits > 1:
            sliced_rows = self.wg_dense_sliced(n, m, rows, pieces)
            features, rows = 1, sliced_rows or rows
        sizes = (I32(m), I32(n), I32(k), I32(ap.shape[2]), I32(accumulate))
        if self.wg_tma and tma_eligible(w):
            kind = "_tma_half" if splits == 1 and self.wg_half_blocks(m, n, rows, features) else "_tma"
            args = (self.tensor_maps.of(w, wg_block_features(kind, features)), c, ap, bias, *sizes)
        else:
            kind, args = "", (c, ap, w, bias, *sizes, I32(vec8))
        if sliced_rows:
            kind, args = kind + "_sliced", args + (I32(splits),)
        elif splits > 1:
            kind, args = kind + "_splitk", args + self._splitk_buffers(*splitk_sizes(m, n, k, splits, rows))
        self._wg_launch(kind, rows, pieces, features, n, _blocks(m, rows), args, splits)

    def _wg_grouped_map(self, kind: str, w, box_rows: int):
        """The paired map of bf16 experts w (E, N, K) for the grouped TMA kernels (boxes of box_rows rows: a
        block's features), or None where they do not run: wg_tma or wg_tma_grouped off, MXFP4 experts, or a matrix
        no map describes (launch/tensor_map.py: paired_eligible)."""
        if not (self.wg_tma and self.wg_tma_grouped and kind == "bf16w"):
            return None
        rows = w.reshape(-1, w.shape[2])  # (E N, K): one matrix, expert e's rows from e N
        if not paired_eligible(rows, w.shape[1]):
            return None
        return self.tensor_maps.of(rows, box_rows, paired=True)

    def _tc_grouping(self, pair_of_padded, tile_expert) -> tuple[int, int]:
        """(P, tile height) of a moe_align grouping: TC_BLOCK_M on the mma.sync kernels, one of
        WG_GROUPED_ROWS on the wgmma kernels."""
        p = pair_of_padded.shape[0]
        _check("pair_of_padded", pair_of_padded, I32, (p,))
        heights = WG_GROUPED_ROWS if self.wgmma else (TC_BLOCK_M,)
        block_m = p // tile_expert.shape[0] if tile_expert.ndim == 1 and tile_expert.shape[0] else 0
        if block_m not in heights or p % block_m:
            raise KernelArgumentError(f"pair_of_padded ({p},) and tile_expert {tuple(tile_expert.shape)}: tiles of "
                             f"{heights} positions expected")
        _check("tile_expert", tile_expert, I32, (p // block_m,))
        return p, block_m

    def gemm_tc_grouped_swiglu(self, gp, ap, pair_of_padded, tile_expert, w1, b1, experts_per_token: int,
                               limit: float) -> None:
        """g[p] = swiglu(w1[e] (2I,H) @ a[pair // k] + b1[e]) for every non-pad padded position p of an
        expert-e tile (moe_align with block_m = TC_BLOCK_M), written as its pieces gp (pieces, P,
        pieces_lda(I)) for gemm_tc_grouped; a given as pieces ap (pieces, R, pieces_lda(H)). Pad positions
        are not written. w1: bf16 bits or an `Mxfp4Matrix` (the *_mxfp4w kernels, bit-identical results)."""
        n_experts, two_inter, hidden = w1.shape
        inter = two_inter // 2
        p, block_m = self._tc_grouping(pair_of_padded, tile_expert)
        pieces, rows = self._check_pieces("ap", ap, hidden)
        self._check_pieces("gp", gp, inter, p)
        if gp.shape[0] != pieces:
            raise KernelArgumentError(f"gp: {gp.shape[0]} pieces, ap has {pieces}")
        kind, w_args, loaded = _expert_weights("w1", w1)
        _check("b1", b1, F32, (n_experts, two_inter))
        _require(two_inter == 2 * inter and experts_per_token > 0,
                 f"gemm_tc_grouped_swiglu: w1 {tuple(w1.shape)}, {experts_per_token} experts per token")
        vec8 = hidden % 8 == 0 and _aligned(loaded)
        # the arguments around the experts (the TMA kernels take a map of them first instead)
        head = (gp, I32(p), I32(gp.shape[2]), ap, I32(rows), I32(ap.shape[2]), pair_of_padded, tile_expert)
        tail = (b1, I32(hidden), I32(inter), I32(experts_per_token), F32(limit))
        args = (*head, *w_args, *tail)
        suffix = _grouped_suffix(kind)
        if self.wgmma:
            features = self._wg_grouped_features(block_m, pieces, p, rows * experts_per_token, two_inter)
            tiles = min(p // block_m, rows * experts_per_token)  # those that can hold a pair
            wide = 1 if self.wg_wide_blocks(tiles, two_inter, block_m) else self.wg_wide_tall_blocks(
                tiles, two_inter, block_m, pieces)
            tma_kind, tma_features = (WG_WIDE_KIND, wide) if wide else ("_tma_grouped_swiglu", features)
            w_map = self._wg_grouped_map(kind, w1, wg_block_features(tma_kind, tma_features))
            if w_map is not None:  # the same arguments, W by the map (without one the cp.async kernels, never wide)
                self._wg_launch(tma_kind, block_m, pieces, tma_features, two_inter, p // block_m,
                                (w_map, *head, *tail))
                return
            self._wg_launch(f"_grouped_swiglu{suffix}", block_m, pieces, features, two_inter, p // block_m,
                            (*args, I32(vec8)))
            return
        self._tc_launch(f"gemm_tc_grouped_swiglu{suffix}", (_blocks(two_inter, TC_BLOCK_N), p // TC_BLOCK_M),
                        (*args, I32(pieces), I32(vec8)), pieces, (TC_BLOCK_M, TC_BLOCK_N))

    def gemm_tc_grouped(self, y, gp, pair_of_padded, tile_expert, w2, b2, pairs: int | None = None) -> None:
        """y[p] (P,H) = w2[e] (H,I) @ g[p] + b2[e] for every non-pad padded position p of an expert-e tile,
        g given as pieces gp (pieces, P, pieces_lda(I)); w2 bf16 bits or an `Mxfp4Matrix`. pairs: how many
        (row, expert) pairs were grouped (at most P), which picks the tiling (not the bits)."""
        n_experts, hidden, inter = w2.shape
        p, block_m = self._tc_grouping(pair_of_padded, tile_expert)
        pieces, _ = self._check_pieces("gp", gp, inter, p)
        _check("y", y, F32, (p, hidden))
        kind, w_args, loaded = _expert_weights("w2", w2)
        _check("b2", b2, F32, (n_experts, hidden))
        vec8 = inter % 8 == 0 and _aligned(loaded)
        head, tail = (y, gp, I32(p), I32(gp.shape[2]), pair_of_padded, tile_expert), (b2, I32(hidden), I32(inter))
        args = (*head, *w_args, *tail)
        suffix = _grouped_suffix(kind)
        if self.wgmma:
            pairs = p if pairs is None else pairs
            features = self._wg_grouped_features(block_m, pieces, p, pairs, hidden)
            wide = self.wg_wide_tall_blocks(min(p // block_m, pairs), hidden, block_m, pieces)
            tma_kind, tma_features = (WG_WIDE_PLAIN_KIND, wide) if wide else ("_tma_grouped", features)
            w_map = self._wg_grouped_map(kind, w2, wg_block_features(tma_kind, tma_features))
            if w_map is not None:  # the same arguments, W by the map
                self._wg_launch(tma_kind, block_m, pieces, tma_features, hidden, p // block_m,
                                (w_map, *head, *tail))
                return
            self._wg_launch(f"_grouped{suffix}", block_m, pieces, features, hidden, p // block_m, (*args, I32(vec8)))
            return
        self._tc_launch(f"gemm_tc_grouped{suffix}", (_blocks(hidden, TC_BLOCK_N), p // TC_BLOCK_M),
                        (*args, I32(pieces), I32(vec8)), pieces, (TC_BLOCK_M, TC_BLOCK_N))
