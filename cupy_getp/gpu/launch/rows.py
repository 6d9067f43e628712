"""Launch helpers for the batched engine (family: rows): embedding, rmsnorm, rope + KV-cache write, argmax,
one block per row. Kernels in kernels/embedding.hip, rmsnorm.hip, rope.hip, softmax.hip."""

from __future__ import annotations

from ..constants import BLOCK_SIZE
from .common import F32, I32, _aligned, _blocks, _check, _require, check_kv_caches, kv_cache_suffix

RMS_SPLIT_ROWS = 32  # rmsnorms of at most this many rows run several blocks a row (_rmsnorm_grid)
RMS_MAX_SPLITS = 12  # blocks a row at most: the 20b's 2880 columns are 12 slabs of 256


class RowLaunches:
    def embedding_rows(self, x, table, tokens, sources=None, last_tokens=None) -> None:
        """x[r] = table[tokens[r]]; x (R, H), table (V, H) f32, tokens (R,) i32. With sources (R,) i32 and
        last_tokens (R',) i32 (overlapped steps): row r's token is last_tokens[sources[r]] where sources[r] >= 0."""
        rows, hidden = x.shape
        _check("x", x, F32)
        _check("table", table, F32, (table.shape[0], hidden))
        _check("tokens", tokens, I32, (rows,))
        if sources is None:
            self._launch("embedding_rows_f32", (rows,), (BLOCK_SIZE,), (x, table, tokens, I32(hidden)))
            return
        _check("sources", sources, I32, (rows,))
        _check("last_tokens", last_tokens, I32, (last_tokens.shape[0],))
        self._launch("embedding_rows_fed_f32", (rows,), (BLOCK_SIZE,),
                     (x, table, tokens, sources, last_tokens, I32(hidden)))

    def rmsnorm_rows(self, out, x, w) -> None:
        """out[i] = rmsnorm(x[i]) for each row; out, x (R, H), w (H,)."""
        rows, hidden = _rmsnorm_shape(out, x, w)
        self._launch("rmsnorm_rows_f32", _rmsnorm_grid(rows, hidden), (BLOCK_SIZE,), (out, x, w, I32(hidden)))

    def rmsnorm_split_rows(self, out, ap, x, w) -> None:
        """out[i] = rmsnorm(x[i]) as rmsnorm_rows, and ap (pieces, R, pieces_lda(H)) bf16 = its BF16 pieces as
        split_pieces would write them, in one launch."""
        rows, hidden = _rmsnorm_shape(out, x, w)
        pieces, _ = self._check_pieces("ap", ap, hidden, rows)
        self._launch("rmsnorm_split_rows", _rmsnorm_grid(rows, ap.shape[2]), (BLOCK_SIZE,),
                     (out, ap, x, w, I32(hidden), I32(ap.shape[2]), I32(pieces)))

    def rope_kv_write(self, qkv, cos, sin, key_cache, value_cache, row_slot, row_pos,
                      n_heads: int, n_kv_heads: int, head_dim: int) -> None:
        """Row r at position p = row_pos[r]: rotate its q and k heads in place with cos/sin (n_pos, D/2) row p,
        write the rotated k heads to key_cache[row_slot[r], p % C], its v heads to value_cache there.
        Caches (S1, C, n_kv_heads * head_dim), float32 or bf16 bits (each value rounded to nearest even)."""
        rows = qkv.shape[0]
        kv_dim = n_kv_heads * head_dim
        _require(head_dim % 2 == 0 and n_kv_heads > 0 and n_heads % n_kv_heads == 0,
                 f"rope_kv_write: head_dim {head_dim}, {n_heads} query heads over {n_kv_heads} kv heads")
        _check("qkv", qkv, F32, (rows, (n_heads + 2 * n_kv_heads) * head_dim))
        _check("cos", cos, F32, (cos.shape[0], head_dim // 2))
        _check("sin", sin, F32, cos.shape)
        check_kv_caches(key_cache, value_cache, kv_dim)
        _check("row_slot", row_slot, I32, (rows,))
        _check("row_pos", row_pos, I32, (rows,))
        self._launch(f"rope_kv_write_{kv_cache_suffix(key_cache.dtype)}", (rows,), (BLOCK_SIZE,),
                     (qkv, cos, sin, key_cache, value_cache, row_slot, row_pos, I32(n_heads), I32(n_kv_heads),
                      I32(head_dim), I32(key_cache.shape[1])))

    def argmax_rows(self, next_token, logits) -> None:
        """next_token[r] = first index of the maximum of logits[r] (R, V); -1 if the row holds a NaN."""
        rows, vocab = logits.shape
        _check("logits", logits, F32)
        _check("next_token", next_token, I32, (rows,))
        vec4 = vocab % 4 == 0 and _aligned(logits)
        self._launch("argmax_rows_f32", (rows,), (BLOCK_SIZE,), (next_token, logits, I32(vocab), I32(vec4)))


def _rmsnorm_grid(rows: int, width: int) -> tuple[int, int]:
    """(R, S) blocks of an rmsnorm kernel over rows `width` columns wide (the padded width where it writes
    pieces): up to RMS_SPLIT_ROWS rows, S blocks a row, one a slab of BLOCK_SIZE columns (at most
    RMS_MAX_SPLITS), else one. At one row a single block runs the row's arithmetic on one SM, latency-bound
    (ncu, tenth session: 9.2 us a launch); every block of a row sums the whole row in the same order, so S
    changes no bit (kernels/rmsnorm.hip)."""
    if rows > RMS_SPLIT_ROWS:
        return rows, 1
    return rows, max(1, min(RMS_MAX_SPLITS, _blocks(width, BLOCK_SIZE)))


def _rmsnorm_shape(out, x, w) -> tuple[int, int]:
    """(R, H) of an rmsnorm over rows, after the checks: out, x (R, H) f32, w (H,) f32."""
    rows, hidden = x.shape
    _check("out", out, F32, (rows, hidden))
    _check("x", x, F32)
    _check("w", w, F32, (hidden,))
    return rows, hidden
