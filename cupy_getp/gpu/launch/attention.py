"""Launch helpers for the batched engine (family: attention): flash-decoding over rows of different lengths
(kernels/attention.hip, attn_rows_d*_g*_f32: the splits' partials and, in each row's last block, their merge)."""

from __future__ import annotations

import numpy as np

from ..constants import ATTN_MAX_GROUP, ATTN_MAX_HEAD_DIM, BLOCK_SIZE
from .common import F32, I32, _aligned, _check, _require

# attn_rows' specialisations (kernels/attention.hip ATTN_ROWS_KERNEL): (head_dim bound, group bound)
ATTN_BOUNDS = ((64, 8), (64, 16), (128, 8), (128, ATTN_MAX_GROUP))
ATTN_VARIANTS = tuple(f"attn_rows_d{d}_g{g}_f32" for d, g in ATTN_BOUNDS)
# attn_rows with pieces: the merge writes them (no launch of their own) up to this many rows, split_pieces after
# it above (the same bits). Measured on the H200 (bench/RESULTS.md, 2026-11-29, sixth session, eager profiles of
# a 20b step, the merge then a launch of its own): one row 0.216 ms a step with the pieces against 0.579 for the
# merge and split_pieces; 1024 rows 1.632 against 1.424 (the merge stores the pieces 2 bytes a lane,
# tc_split_rows 16).
MERGE_SPLIT_MAX_ROWS = 64


def attn_variant(head_dim: int, group: int) -> tuple[int, int]:
    """(head_dim bound, group bound) of the attn_rows specialisation for this head_dim and group size
    (query heads per kv head)."""
    _require(0 < head_dim <= ATTN_MAX_HEAD_DIM, f"attention: head_dim {head_dim} outside 1..{ATTN_MAX_HEAD_DIM}")
    _require(0 < group <= ATTN_MAX_GROUP, f"attention: {group} query heads per kv head, at most {ATTN_MAX_GROUP}")
    return 64 if head_dim <= 64 else 128, 8 if group <= 8 else 16


def attn_kernel(head_dim: int, group: int) -> str:
    """The attn_rows specialisation's name."""
    d, g = attn_variant(head_dim, group)
    return f"attn_rows_d{d}_g{g}_f32"


def attn_split_positions(head_dim: int, group: int) -> int:
    """The most positions one split may hold: the variant's AttnRows::TILE (kernels/attention.hip), BLOCK_SIZE
    threads of 16 dims each scoring two positions (one at group bound 16): 128 at the 20b/120b shape."""
    d, g = attn_variant(head_dim, group)
    return (2 if g <= 8 else 1) * BLOCK_SIZE // (d // 16)


class AttentionLaunches:
    def attn_rows(self, att, partial_acc, partial_ml, counters, qkv, key_cache, value_cache, sinks, row_slot,
                  row_pos, n_heads: int, n_kv_heads: int, head_dim: int, window: int, split_len: int,
                  pieces=None) -> None:
        """att (R, nh D): each row's attention over its positions, split over positions then merged, in one
        launch (grid (n_split, nkv, R), n_split from the partial buffers).

        Block (s, j, r) writes partial_acc (R, nh, n_split, D) and partial_ml (R, nh, n_split, 2) of row r's
        positions [lo + s split_len, lo + (s + 1) split_len) ∩ [lo, row_pos[r]] for the query heads of kv head j,
        lo = max(0, pos - window + 1) if window > 0 else 0, read at index p % C of slot row_slot[r] of the caches
        (S1, C, nkv D); a split a row does not reach is not written. The last of the row's blocks of head j
        (counters (R_max nkv,) uint32, zeros, left zeros) merges them in split order with the sink: M =
        max(max_s m_s, sink), L = sum_s l_s exp(m_s - M) + exp(sink - M), att = sum_s acc_s exp(m_s - M) / L.
        With `pieces` (1 or 3, R, pieces_lda(nh D)) bf16, att's BF16 pieces too, as split_pieces would write them:
        by the merge up to MERGE_SPLIT_MAX_ROWS rows, else by split_pieces after it. split_len <=
        attn_split_positions(head_dim, G)."""
        rows = qkv.shape[0]
        _require(n_kv_heads > 0 and n_heads % n_kv_heads == 0,
                 f"attn_rows: {n_heads} query heads over {n_kv_heads} kv heads")
        name = attn_kernel(head_dim, n_heads // n_kv_heads)
        n_split = partial_ml.shape[2] if partial_ml.ndim == 4 else 0
        _check("partial_ml", partial_ml, F32, (rows, n_heads, n_split, 2))
        _check("partial_acc", partial_acc, F32, (rows, n_heads, n_split, head_dim))
        _check("att", att, F32, (rows, n_heads * head_dim))
        _check("counters", counters, np.uint32)
        _require(counters.ndim == 1 and counters.size >= rows * n_kv_heads,
                 f"counters: shape {tuple(counters.shape)}, expected at least ({rows * n_kv_heads},)")
        _check("qkv", qkv, F32, (rows, (n_heads + 2 * n_kv_heads) * head_dim))
        _check("key_cache", key_cache, F32)
        _require(key_cache.ndim == 3 and key_cache.shape[2] == n_kv_heads * head_dim,
                 f"key_cache: shape {tuple(key_cache.shape)}, expected (slots, C, {n_kv_heads * head_dim})")
        _check("value_cache", value_cache, F32, key_cache.shape)
        _check("sinks", sinks, F32, (n_heads,))
        _check("row_slot", row_slot, I32, (rows,))
        _check("row_pos", row_pos, I32, (rows,))
        cache_len = key_cache.shape[1]
        most = attn_split_positions(head_dim, n_heads // n_kv_heads)
        _require(window >= 0 and 0 < split_len <= most and n_split > 0,
                 f"attn_rows: window {window}, split_len {split_len} (at most {most} here), n_split {n_split}")
        span = min(window, cache_len) if window > 0 else cache_len  # most positions a row attends to
        _require(n_split * split_len >= span,
                 f"attn_rows: {n_split} splits of {split_len} positions cannot cover {span}")
        merged_pieces, n_pieces, lda = att, 0, 0  # the merge writes no pieces (att: an unused pointer)
        if pieces is not None:
            self._check_pieces("pieces", pieces, n_heads * head_dim, rows)
            if rows <= MERGE_SPLIT_MAX_ROWS:
                merged_pieces, n_pieces, lda = pieces, pieces.shape[0], pieces.shape[2]
        vec4 = head_dim % 4 == 0 and _aligned(key_cache, value_cache)
        if rows == 0:  # the grid's last dimension: CuPy would still launch one block
            return
        self._launch(name, (n_split, n_kv_heads, rows), (BLOCK_SIZE,),
                     (att, merged_pieces, partial_acc, partial_ml, counters, qkv, key_cache, value_cache, sinks,
                      row_slot, row_pos, I32(n_heads), I32(n_kv_heads), I32(head_dim), I32(cache_len), I32(window),
                      I32(split_len), I32(vec4), I32(lda), I32(n_pieces)))
        if pieces is not None and n_pieces == 0:
            self.split_pieces(pieces, att)
