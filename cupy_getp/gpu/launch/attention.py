"""Launch helpers for the batched engine (family: attention): flash-decoding over rows of different lengths
(kernels/attention.hip, attn_rows_partial_d*_g*_{f32,bf16kv} and attn_rows_merge_f32 / _split), over an FP32
or a BF16 KV cache."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..constants import ATTN_MAX_GROUP, ATTN_MAX_HEAD_DIM, BLOCK_SIZE
from .common import (F32, I32, KV_CACHE_SUFFIX, _aligned, _blocks, _check, _require, check_kv_caches,
                     kv_cache_suffix)

# attn_rows_partial's specialisations (kernels/attention.hip ATTN_ROWS_PARTIAL_KERNEL): (head_dim bound, group bound)
# for each KV cache (KV_CACHE_SUFFIX).
ATTN_PARTIAL_BOUNDS = ((64, 8), (64, 16), (128, 8), (128, ATTN_MAX_GROUP))
ATTN_PARTIAL_VARIANTS = tuple(f"attn_rows_partial_d{d}_g{g}_{cache}" for cache in KV_CACHE_SUFFIX.values()
                              for d, g in ATTN_PARTIAL_BOUNDS)
# attn_rows_partial over an FP32 cache on the tensor cores, for head_dim <= 64 and groups <= 8 (the 20b and 120b):
# TF32 in three products a pair of FP32 values (~2^-22 of each where the CUDA cores' FMAs give 2^-24; other bits
# than the CUDA-core kernel's, the same whatever the step). Opt-in: CUPY_GETP_ATTN_TF32=1 (or ATTN_TF32 = 1:
# bench/step_ablation.py --set attention.ATTN_TF32=1). Where mma.sync is not (HIP), the kernel is the CUDA-core one.
ATTN_TF32_ENV = "CUPY_GETP_ATTN_TF32"
ATTN_TF32 = int(os.environ.get(ATTN_TF32_ENV, "0") == "1")
ATTN_TF32_KERNEL = "attn_rows_partial_d64_g8_f32tc"
# attn_rows_merge with pieces: one launch (attn_rows_merge_split) up to this many rows, the merge then
# split_pieces above (the same bits). Measured on the H200 (bench/RESULTS.md, 2026-11-29, sixth session, eager
# profiles of a 20b step): one row 0.216 ms a step fused against 0.579 for the two; 1024 rows 1.632 against
# 1.424 (the fused kernel then stored the pieces 2 bytes a lane, tc_split_rows 16). With two dims a lane
# (MERGE_PAIRS) a 640-row step is still slower fused: +0.75 ms exact, +0.81 fast (H100, twenty-seventh session).
MERGE_SPLIT_MAX_ROWS = 64
# attn_rows_merge: two adjacent dims a lane where head_dim is even (8-byte loads, each piece stored 4 bytes a lane);
# 0: one dim a lane (the same bits; for timing comparisons, bench/step_ablation.py --set attention.MERGE_PAIRS=0).
# The merge in attention's own launch always takes pairs.
MERGE_PAIRS = 1
# attn_rows: the merge in attention's launch (the last split of each row and kv head merges) up to this many rows,
# the two launches above it (the same bits). At few rows a launch a layer fewer; at 640 rows a step is slower
# with it: +0.41 ms exact, +0.26 fast (H100, twenty-sixth session).
ATTN_FUSED_MAX_ROWS = 64


@dataclass(frozen=True)
class AttnMergeArgs:
    """attn_rows_partial's merge in the same launch: att (R, nh D) and, or None, its pieces (1 or 3, R,
    pieces_lda(nh D)) bf16, as attn_rows_merge writes them; the sinks (nh,); counters (R, nkv) uint32, zero."""

    att: object
    sinks: object
    counters: object
    pieces: object = None


def attn_variant(head_dim: int, group: int) -> tuple[int, int]:
    """(head_dim bound, group bound) of the attn_rows_partial specialisation for this head_dim and group size
    (query heads per kv head)."""
    _require(0 < head_dim <= ATTN_MAX_HEAD_DIM, f"attention: head_dim {head_dim} outside 1..{ATTN_MAX_HEAD_DIM}")
    _require(0 < group <= ATTN_MAX_GROUP, f"attention: {group} query heads per kv head, at most {ATTN_MAX_GROUP}")
    return 64 if head_dim <= 64 else 128, 8 if group <= 8 else 16


def attn_partial_kernel(head_dim: int, group: int, cache_dtype=F32) -> str:
    """The attn_rows_partial specialisation's name for a KV cache of `cache_dtype` (float32 or bf16 bits); with
    ATTN_TF32 the tensor-core one where it applies (an FP32 cache, head_dim <= 64, group <= 8)."""
    d, g = attn_variant(head_dim, group)
    name = f"attn_rows_partial_d{d}_g{g}_{kv_cache_suffix(cache_dtype)}"
    return ATTN_TF32_KERNEL if ATTN_TF32 and name == "attn_rows_partial_d64_g8_f32" else name


def attn_split_positions(head_dim: int, group: int) -> int:
    """The most positions one split may hold: the variant's AttnRows::TILE (kernels/attention.hip), BLOCK_SIZE
    threads of 16 dims each scoring two positions (one at group bound 16): 128 at the 20b/120b shape."""
    d, g = attn_variant(head_dim, group)
    return (2 if g <= 8 else 1) * BLOCK_SIZE // (d // 16)


class AttentionLaunches:
    def attn_rows(self, att, partial_acc, partial_ml, qkv, key_cache, value_cache, row_slot, row_pos, sinks, counters,
                  n_heads: int, n_kv_heads: int, head_dim: int, window: int, split_len: int, pieces=None) -> None:
        """att (R, nh D) (and its pieces, if given) = attention of each row over its cache, as attn_rows_partial
        then attn_rows_merge compute it: in one launch up to ATTN_FUSED_MAX_ROWS rows (counters (R, nkv)
        uint32, zero, and left so), else those two. The same bits either way."""
        partial = (partial_acc, partial_ml, qkv, key_cache, value_cache, row_slot, row_pos, n_heads, n_kv_heads,
                   head_dim, window, split_len)
        if qkv.shape[0] <= ATTN_FUSED_MAX_ROWS:
            self.attn_rows_partial(*partial, merge=AttnMergeArgs(att, sinks, counters, pieces))
            return
        self.attn_rows_partial(*partial)
        self.attn_rows_merge(att, partial_acc, partial_ml, sinks, row_pos, window, split_len, pieces)

    def attn_rows_partial(self, partial_acc, partial_ml, qkv, key_cache, value_cache, row_slot, row_pos,
                          n_heads: int, n_kv_heads: int, head_dim: int, window: int, split_len: int,
                          merge: AttnMergeArgs | None = None) -> None:
        """Per row r, kv head j and split s (grid (n_split, nkv, R), n_split from the partial buffers):
        partial_acc (R, nh, n_split, D), partial_ml (R, nh, n_split, 2) of positions
        [lo + s split_len, lo + (s + 1) split_len) ∩ [lo, row_pos[r]], lo = max(0, pos - window + 1) if
        window > 0 else 0, read at index p % C of slot row_slot[r] of the caches (S1, C, nkv D), float32 or bf16
        bits (widened exactly), which must hold the positions the row reads: at most C of them (row_pos[r] < C on a
        full layer, a window longer than C only where the positions stay below C: the engine's rings of a short
        budget), device data not checked here (the kernels' ring index wraps once). A split a row does not reach
        is not written. split_len <= attn_split_positions(
        head_dim, G). With `merge`, the same launch merges them as attn_rows_merge does, bit for bit (the last
        split of each row and kv head to finish merges that kv head's query heads; `merge.counters` (R, nkv)
        uint32 must be zero, and are left so), its pieces included where given."""
        rows = qkv.shape[0]
        _require(n_kv_heads > 0 and n_heads % n_kv_heads == 0,
                 f"attn_rows_partial: {n_heads} query heads over {n_kv_heads} kv heads")
        check_kv_caches(key_cache, value_cache, n_kv_heads * head_dim)
        name = attn_partial_kernel(head_dim, n_heads // n_kv_heads, key_cache.dtype)
        n_split = partial_ml.shape[2] if partial_ml.ndim == 4 else 0
        _check("partial_ml", partial_ml, F32, (rows, n_heads, n_split, 2))
        _check("partial_acc", partial_acc, F32, (rows, n_heads, n_split, head_dim))
        _check("qkv", qkv, F32, (rows, (n_heads + 2 * n_kv_heads) * head_dim))
        _check("row_slot", row_slot, I32, (rows,))
        _check("row_pos", row_pos, I32, (rows,))
        cache_len = key_cache.shape[1]
        most = attn_split_positions(head_dim, n_heads // n_kv_heads)
        _require(window >= 0 and 0 < split_len <= most and n_split > 0,
                 f"attn_rows_partial: window {window}, split_len {split_len} (at most {most} here), n_split {n_split}")
        # a slot's rows of a layer are indexed in 32 bits (attn_rows_to_shared)
        _require(cache_len * n_kv_heads * head_dim < 2**31,
                 f"attn_rows_partial: a slot's cache of {cache_len} x {n_kv_heads * head_dim} values passes 2^31")
        span = min(window, cache_len) if window > 0 else cache_len  # most positions a row attends to
        _require(n_split * split_len >= span,
                 f"attn_rows_partial: {n_split} splits of {split_len} positions cannot cover {span}")
        # 16-byte loads: 4 FP32 or 8 BF16 values, a head's rows at 16-byte multiples
        vec = head_dim % (16 // key_cache.dtype.itemsize) == 0 and _aligned(key_cache, value_cache)
        merged = self._attn_merge_args(merge, rows, n_heads, n_kv_heads, head_dim)
        if rows == 0:  # the grid's last dimension: CuPy would still launch one block
            return
        self._launch(name, (n_split, n_kv_heads, rows), (BLOCK_SIZE,),
                     (partial_acc, partial_ml, qkv, key_cache, value_cache, row_slot, row_pos, I32(n_heads),
                      I32(n_kv_heads), I32(head_dim), I32(cache_len), I32(window), I32(split_len), I32(vec), *merged))

    def _attn_merge_args(self, merge: AttnMergeArgs | None, rows: int, n_heads: int, n_kv_heads: int,
                         head_dim: int) -> tuple:
        """attn_rows_partial's merge arguments (att, pieces, sinks, counters, lda, n_pieces), checked; None (a
        null pointer, as an absent bias is passed) where there is no merge or no pieces."""
        if merge is None:
            return (None, None, None, None, I32(0), I32(0))
        _check("att", merge.att, F32, (rows, n_heads * head_dim))
        _check("sinks", merge.sinks, F32, (n_heads,))
        _check("counters", merge.counters, np.uint32, (rows, n_kv_heads))
        lda = n_pieces = 0
        if merge.pieces is not None:
            n_pieces, _ = self._check_pieces("pieces", merge.pieces, n_heads * head_dim, rows)
            lda = merge.pieces.shape[2]
        return (merge.att, merge.pieces, merge.sinks, merge.counters, I32(lda), I32(n_pieces))

    def attn_rows_merge(self, att, partial_acc, partial_ml, sinks, row_pos, window: int, split_len: int,
                        pieces=None) -> None:
        """att (R, nh D) = the splits row r reaches (those attn_rows_partial wrote for row_pos[r], window and
        split_len), merged in split order with the sink: M = max(max_s m_s, sink), L = sum_s l_s exp(m_s - M)
        + exp(sink - M), att = sum_s acc_s exp(m_s - M) / L. With `pieces` (1 or 3, R, pieces_lda(nh D)) bf16,
        att's BF16 pieces too, as split_pieces would write them: in the same launch (attn_rows_merge_split) up
        to MERGE_SPLIT_MAX_ROWS rows, else by split_pieces after the merge."""
        _check("partial_acc", partial_acc, F32)
        _require(partial_acc.ndim == 4, f"partial_acc: shape {tuple(partial_acc.shape)}, expected (R, nh, n_split, D)")
        rows, n_heads, n_split, head_dim = partial_acc.shape
        _check("partial_ml", partial_ml, F32, (rows, n_heads, n_split, 2))
        _check("att", att, F32, (rows, n_heads * head_dim))
        _check("sinks", sinks, F32, (n_heads,))
        _check("row_pos", row_pos, I32, (rows,))
        _require(window >= 0 and split_len > 0, f"attn_rows_merge: window {window}, split_len {split_len}")
        items = rows * n_heads
        args = (partial_acc, partial_ml, sinks, row_pos, I32(items), I32(n_heads), I32(n_split), I32(head_dim),
                I32(window), I32(split_len))
        grid = (_blocks(items, self.warps_per_block),)
        pairs = I32(MERGE_PAIRS)
        if pieces is not None:
            n_pieces, _ = self._check_pieces("pieces", pieces, n_heads * head_dim, rows)
            if rows <= MERGE_SPLIT_MAX_ROWS:
                self._launch("attn_rows_merge_split", grid, (BLOCK_SIZE,),
                             (att, pieces, *args, I32(pieces.shape[2]), I32(n_pieces), pairs))
                return
        self._launch("attn_rows_merge_f32", grid, (BLOCK_SIZE,), (att, *args, pairs))
        if pieces is not None:
            self.split_pieces(pieces, att)
