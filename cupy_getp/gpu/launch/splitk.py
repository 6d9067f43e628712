"""Deterministic split-K of the dense wgmma products (kernels/gemm_wgmma.hip), on by default on Hopper
(CUPY_GETP_WG_SPLITK=0 turns it off).

Why: at one row a dense product has ceil(N / 128) blocks (qkv 40, the output projection 23, the router 1) on
132 SMs, and a block's time is proportional to its K stages, so most SMs idle. Cutting K into S splits gives
S times the blocks, each with 1 / S of the stages: at one row the output projection 27.1 -> 11.2 us and the
router 19.2 -> 7.6 (H200; the router has since moved to the CUDA cores, kernels/moe.hip router_rows). Only
products whose tiles fill under a quarter of the SMs are split (SPLIT_BELOW_FILL: not qkv, see there).

Two modes, the same bits. Split mode (gemm_wg[_tma]_splitk_*, few rows): grid (tiles, row tiles, S), each
block one split; the FP32 partials go to a workspace (S, M, N), and the last of a tile's blocks (a counter per
tile, zero between launches: it sets it back) sums them in split order. Sliced mode (gemm_wg[_tma]_sliced_*,
many rows: where the one-block tiles already fill the SMs, S blocks a tile would each refill and drain a
pipeline for 1 / S of the stages, the 1024-row step 68.6 -> 75.6 ms in the sixth session): one block a tile runs
the S slices in turn and folds them in registers in the same order. Measured side by side (bench/RESULTS.md,
seventh session, H100): the 1024-request headline 11,680 -> 11,668 tok/s (within noise), batch-1 decode 192.4
-> 215.8 tok/s.

Batch invariance holds because S and the split boundaries come from the product's shape alone (N, K and the
SM count, never the row count), the slices' FP32 partials are summed in one fixed order in either mode, and
the mode (which may follow the row count) does not change a bit. The split-K bits are not the unsplit kernels'
(nor the mma.sync kernels' of other GPUs): other K sums. The workspace and counters belong to `Kernels`
(SplitKWorkspace).
"""

from __future__ import annotations

import os

from .common import _blocks

SPLITK_ENV = "CUPY_GETP_WG_SPLITK"
SLICED_TALL_ENV = "CUPY_GETP_WG_SLICED_TALL"
WG_BK = 64  # K per stage: gemm_wgmma.hip's WG_BK; split boundaries are multiples of it
MIN_SPLIT_STAGES = 8  # a split keeps at least this many stages (the ring's prologue and the fixup amortised)
SPLITK_FEATURES = 128  # output features per block of the split-K twins (one 64-feature block per consumer)
# Split a product only where its feature tiles give fewer than a quarter of the SMs a block: the output
# projection (23 tiles on 132 SMs), not qkv (40). qkv gains 19.8 -> 12.2 us at one row
# (H200), but at many rows its 128-row tiles cannot be sliced at no cost: with qkv split too (64-row sliced
# tiles) the headline fell 13,503 -> 13,307 tok/s (H200, run 38); 128-row sliced tiles keeping their total in
# memory took 301 us a 1024-row product against 183 (H100, run 39; bench/RESULTS.md, seventh session).
SPLIT_BELOW_FILL = 4
# Row-tile height of the sliced kernels (gemm_wg[_tma]_sliced_r64_p{pieces}_b1), by which wg_sliced picks the
# mode: with 3 pieces their total beside acc and t fits the registers only up to 64 rows.
WG_SLICED_ROWS = 64
# The heights of the sliced kernels by pieces: with 1 piece (no t) also 128 rows (gemm_wg[_tma]_sliced_r128_p1_b1),
# the height the unsplit products of many rows take in `fast` (launch/gemm_tc.py's wg_tile): its W stage serves
# twice the rows.
WG_SLICED_HEIGHTS = {3: (WG_SLICED_ROWS,), 1: (WG_SLICED_ROWS, 128)}


def wg_splitk_enabled() -> bool:
    """Whether the dense wgmma products of few feature tiles are split along K: yes unless
    CUPY_GETP_WG_SPLITK=0."""
    return os.environ.get(SPLITK_ENV, "") != "0"


def wg_sliced_tall_enabled() -> bool:
    """Whether split products of many rows in `fast` take the 128-row sliced kernels where the unsplit ones would
    take 128-row tiles (wg_sliced_height): yes unless CUPY_GETP_WG_SLICED_TALL=0 (the same bits either way)."""
    return os.environ.get(SLICED_TALL_ENV, "") != "0"


def wg_splits(n: int, k: int, sms: int) -> int:
    """Splits S of a product of N features over K: 1 where its feature tiles give at least a quarter of the SMs
    a block (SPLIT_BELOW_FILL); else the S (each split keeping >= MIN_SPLIT_STAGES stages) with the fewest
    stages on the busiest SM, one block an SM at a time: waves ceil(tiles S / SMs) x stages ceil(stages / S),
    the smaller S on a tie (a second, partly empty wave costs more than it saves)."""
    tiles, stages = _blocks(n, SPLITK_FEATURES), _blocks(k, WG_BK)
    if tiles * SPLIT_BELOW_FILL >= sms:
        return 1
    most = max(1, stages // MIN_SPLIT_STAGES)
    return min(range(1, most + 1), key=lambda s: (_blocks(tiles * s, sms) * _blocks(stages, s), s))


def wg_sliced(n: int, m: int, rows: int, sms: int) -> bool:
    """Whether a split product of M rows, which the helper would tile `rows` high, runs in sliced mode (one
    block a tile of WG_SLICED_ROWS running the S slices in turn) rather than split mode (S blocks a tile): where
    those tiles already give every SM a block; never below the sliced height (few rows: the split mode's many
    blocks are what help). Both give the same bits, so the choice may follow M."""
    return rows >= WG_SLICED_ROWS and _blocks(n, SPLITK_FEATURES) * _blocks(m, WG_SLICED_ROWS) >= sms


def wg_sliced_height(rows: int, pieces: int, tall: bool = True) -> int:
    """The sliced kernels' height for a product the helper would tile `rows` high: that height where a sliced
    kernel of it exists (and `tall`, for heights above WG_SLICED_ROWS), else WG_SLICED_ROWS. The height changes
    no bit (a row's products do not depend on the tile's height)."""
    if rows in WG_SLICED_HEIGHTS[pieces] and (tall or rows <= WG_SLICED_ROWS):
        return rows
    return WG_SLICED_ROWS


def wg_split_rows_limit(n: int, sms: int) -> int:
    """The most rows a product of N features has in split mode as the launch helper picks it (wg_sliced false:
    tiles x row tiles of the sliced height < SMs; or at most 32 rows, tiled below the sliced height): what its
    workspace must hold."""
    return max(32, (sms - 1) // _blocks(n, SPLITK_FEATURES) * WG_SLICED_ROWS)


def wg_split_bounds(k: int, splits: int) -> list[int]:
    """The S + 1 K boundaries of the splits: stage multiples of WG_BK, as equal as possible, the last K
    (the kernels' wg_split_k)."""
    stages = _blocks(k, WG_BK)
    return [min(k, (s * stages // splits) * WG_BK) for s in range(splits + 1)]


def splitk_sizes(m: int, n: int, k: int, splits: int, rows: int) -> tuple[int, int]:
    """(workspace floats, counters) of a split product of M rows in row tiles of `rows`."""
    return splits * m * n, _blocks(n, SPLITK_FEATURES) * _blocks(m, rows)


class SplitKWorkspace:
    """The split-K kernels' workspace (FP32) and tile counters (uint32, zeroed once when made: the kernels leave
    them zero). Grown, never shrunk; a grown one keeps the old buffers alive, since a captured CUDA graph may
    still name them. Growing allocates and zeroes on the device, so it must not happen while a graph is
    captured: `Kernels.reserve_splitk` sizes it at warm-up."""

    def __init__(self):
        self.work = self.counters = None
        self.kept: list = []

    def fits(self, floats: int, tiles: int) -> bool:
        return self.work is not None and self.work.size >= floats and self.counters.size >= tiles

    def grow(self, floats: int, tiles: int) -> None:
        import cupy
        import numpy as np

        if self.work is not None:
            self.kept += [self.work, self.counters]
            floats, tiles = max(floats, self.work.size), max(tiles, self.counters.size)
        self.work = cupy.zeros(max(1, floats), np.float32)
        self.counters = cupy.zeros(max(1, tiles), np.uint32)
