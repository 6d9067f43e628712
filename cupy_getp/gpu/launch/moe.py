"""Launch helpers for the batched engine (family: moe): router over rows with its choice, expert grouping,
combine."""

from __future__ import annotations

import numpy as np

from ...errors import KernelArgumentError, KernelDtypeError
from ..constants import (BLOCK_SIZE, MOE_ALIGN_THREADS, MOE_MAX_EXPERTS, ROUTER_EXPERTS, ROUTER_MAX_ROWS,
                         ROUTER_STAGED, ROUTER_THREADS)
from .common import BF16, F32, I32, DeviceSms, _aligned, _blocks, _check, _require


def moe_padded_pairs(n_pairs: int, n_experts: int, block_m: int) -> int:
    """P: padded positions that hold any grouping of n_pairs pairs over n_experts experts in BM-row tiles.
    sum_e ceil(n_e / BM) <= (n_pairs + E (BM - 1)) / BM, so ceil of that many tiles always suffice."""
    if n_pairs < 0 or n_experts < 1 or block_m < 1:
        raise KernelArgumentError(f"moe_padded_pairs({n_pairs}, {n_experts}, {block_m})")
    return block_m * _blocks(n_pairs + n_experts * (block_m - 1), block_m)


def moe_align_host(experts: np.ndarray, n_experts: int, block_m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`moe_align`'s contract in numpy (the oracle of its tests, and the grouping of the GEMM tests and
    benchmarks): (pair_of_padded, padded_of_pair, tile_expert). Pair id r k + s; expert e's pairs, in
    increasing pair id, fill ceil(n_e / BM) consecutive tiles in expert order; -1 for padding and unused
    tiles."""
    flat = np.asarray(experts).reshape(-1)
    padded = moe_padded_pairs(flat.size, n_experts, block_m)
    pair_of_padded = np.full(padded, -1, np.int32)
    padded_of_pair = np.full(flat.size, -1, np.int32)
    tile_expert = np.full(padded // block_m, -1, np.int32)
    tile = 0
    for e in range(n_experts):
        ids = np.flatnonzero(flat == e)
        n_tiles = -(-ids.size // block_m)
        tile_expert[tile:tile + n_tiles] = e
        positions = tile * block_m + np.arange(ids.size)
        pair_of_padded[positions] = ids
        padded_of_pair[ids] = positions
        tile += n_tiles
    return pair_of_padded, padded_of_pair, tile_expert


# router_rows: rows of t through shared memory (kernels/moe.hip) where they fit; 0 reads them from global memory
# instead (the same bits; for timing comparisons, bench/step_ablation.py --set moe.ROUTER_STAGING=0).
ROUTER_STAGING = 1


def router_rows_per_block(rows: int, sms: int) -> int:
    """router_rows' rows a block: as few as fill every SM with a block (one at up to `sms` rows, the
    latency-bound case), at most ROUTER_MAX_ROWS. Each block loads the router's weights once for all its rows; a
    row's bits do not depend on it."""
    return max(1, min(ROUTER_MAX_ROWS, _blocks(rows, sms)))


def _align_threads(n_pairs: int, n_experts: int, warp_size: int) -> int:
    """moe_align's block: a warp per warp_size pairs, at least a thread an expert (its scan), at most
    MOE_ALIGN_THREADS. Few pairs take few warps: the kernel's barriers and its per-warp tables then cost less
    (at one row one warp, not 32); the grouping does not depend on it."""
    warps = max(_blocks(n_pairs, warp_size), _blocks(n_experts, warp_size))
    return min(MOE_ALIGN_THREADS // warp_size, warps) * warp_size


class MoeLaunches(DeviceSms):
    def router_rows(self, experts, weights, scores, w, b, t) -> None:
        """The router over rows and its choice, one launch: scores (R, E) = t (R, H) @ w^T + b (w (E, H) bf16 bits
        or float32, on the CUDA cores in FP32, a warp an expert's dot: the same bits at every row count), then per row
        experts (R, top_k) = the top-k by score (ties to the lower index) and weights (R, top_k) = the softmax of
        their scores: reference.route. A block takes router_rows_per_block rows, each row of t copied to shared
        memory where it fits (ROUTER_STAGED values, 16-byte aligned)."""
        rows, hidden = t.shape
        n_experts = w.shape[0]
        top_k = experts.shape[1] if experts.ndim == 2 else -1
        if w.dtype not in (BF16, F32):
            raise KernelDtypeError(f"router_rows: w dtype {w.dtype}, expected float32 or uint16 (bf16)")
        _check("w", w, w.dtype, (n_experts, hidden))
        _check("b", b, F32, (n_experts,))
        _check("t", t, F32)
        _check("scores", scores, F32, (rows, n_experts))
        _check("experts", experts, I32, (rows, top_k))
        _check("weights", weights, F32, (rows, top_k))
        _require(0 < top_k <= n_experts <= MOE_MAX_EXPERTS,
                 f"router_rows: top_k = {top_k} of {n_experts} experts (at most {MOE_MAX_EXPERTS})")
        width = 8 if w.dtype == BF16 else 4  # values a vector load of w takes
        vec = hidden % width == 0 and _aligned(w, t)
        threads = min(ROUTER_THREADS, _blocks(n_experts, ROUTER_EXPERTS) * self.device.warp_size)
        per_block = router_rows_per_block(rows, self.sm_count())
        staged = bool(ROUTER_STAGING) and vec and hidden <= ROUTER_STAGED  # 16-byte copies of t's rows
        self._launch("router_rows_bf16w" if w.dtype == BF16 else "router_rows_f32w", (_blocks(rows, per_block),),
                     (threads,), (experts, weights, scores, w, b, t, I32(hidden), I32(n_experts), I32(top_k), I32(vec),
                                  I32(rows), I32(per_block), I32(staged)))

    def moe_align(self, pair_of_padded, padded_of_pair, tile_expert, experts, block_m: int,
                  n_experts: int | None = None, row_slot=None, spare_slot: int = -1) -> None:
        """Group the R top_k (row, choice) pairs of experts (R, top_k) by expert into BM-row tiles (see
        docs/batched-engine.md). With n_experts, P = pair_of_padded's length must be
        moe_padded_pairs(R top_k, E, BM); without, ids are taken as < MOE_MAX_EXPERTS and P is only checked
        to be whole tiles (the kernel never writes past P: a pair that would is left unplaced, padded position -1).
        With row_slot (R,) i32, the pairs of rows in slot `spare_slot` (a step's pad rows) are left unplaced too.
        Writes every element of the three outputs; one block, grid and block from shapes only."""
        rows, top_k = experts.shape
        if row_slot is not None:
            _check("row_slot", row_slot, I32, (rows,))
        n_pairs = rows * top_k
        padded = pair_of_padded.shape[0] if pair_of_padded.ndim == 1 else -1
        _check("experts", experts, I32)
        _check("pair_of_padded", pair_of_padded, I32, (padded,))
        _check("padded_of_pair", padded_of_pair, I32, (n_pairs,))
        if block_m < 1 or padded % block_m or padded < n_pairs:
            raise KernelArgumentError(f"moe_align: P = {padded} for {n_pairs} pairs and block_m {block_m}")
        _check("tile_expert", tile_expert, I32, (padded // block_m,))
        if n_experts is None:
            n_experts = MOE_MAX_EXPERTS
        elif padded != moe_padded_pairs(n_pairs, n_experts, block_m):
            raise KernelArgumentError(f"moe_align: P = {padded}, expected moe_padded_pairs({n_pairs}, {n_experts}, "
                             f"{block_m}) = {moe_padded_pairs(n_pairs, n_experts, block_m)}")
        if not 0 < n_experts <= MOE_MAX_EXPERTS:
            raise KernelArgumentError(f"moe_align: {n_experts} experts (at most {MOE_MAX_EXPERTS})")
        if padded >= 2**31:
            raise KernelArgumentError(f"moe_align: {padded} padded positions overflow int32")
        self._launch("moe_align", (1,), (_align_threads(n_pairs, n_experts, self.device.warp_size),),
                     (pair_of_padded, padded_of_pair, tile_expert, experts, I32(n_pairs), I32(n_experts), I32(padded),
                      I32(block_m), row_slot, I32(spare_slot), I32(top_k)))

    def moe_combine(self, x, moe_out, y, weights, padded_of_pair) -> None:
        """moe_out[r] = sum_s (in order) weights[r, s] * y[padded_of_pair[r top_k + s]]; x[r] += moe_out[r]."""
        rows, hidden = x.shape
        top_k = weights.shape[1] if weights.ndim == 2 else -1
        _check("x", x, F32)
        _check("moe_out", moe_out, F32, (rows, hidden))
        _check("y", y, F32)
        _check("weights", weights, F32, (rows, top_k))
        _check("padded_of_pair", padded_of_pair, I32, (rows * top_k,))
        if y.ndim != 2 or y.shape[1] != hidden:
            raise KernelArgumentError(f"moe_combine: y {tuple(y.shape)}, expected (P, {hidden})")
        if rows == 0 or hidden == 0:  # CuPy would still launch one block along y
            return
        if rows > 65535:
            raise KernelArgumentError(f"moe_combine: {rows} rows (grid y at most 65535)")
        self._launch("moe_combine", (_blocks(hidden, BLOCK_SIZE), rows), (BLOCK_SIZE,),
                     (x, moe_out, y, weights, padded_of_pair, I32(hidden), I32(top_k)))
