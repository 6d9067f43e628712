"""One numpy oracle per kernel: the contract of every entry point of kernels/*.hip, written once.

`ORACLES[name](*args)` does what kernel `name` does, taking the very argument tuple its launch helper
passes to the launch (arrays, then exact numpy scalars; outputs written in place). Two users:

- `FakeKernels` (tests/batch_fakes.py) runs the real launch helpers of `gpu.kernels.Kernels`, with
  their checks, grids and kernel choice, and replaces only the launch by the oracle: the CPU tests of
  the engines' orchestration.
- the GPU kernel tests (tests/test_gpu_*.py) compute what a kernel must write with `expected(...)`:
  the same launch helper on host copies, through the same oracle.

Products are taken in float64 and rounded once (the GPU tests' tolerances are against that); vec4, vec8 and
vec flags only pick load widths and are ignored here. tests/test_kernel_oracles.py checks that every
entry point has an oracle taking as many arguments as the kernel has parameters.
"""

from __future__ import annotations

import ctypes
import inspect
import struct

import numpy as np

from cupy_getp.bf16 import bf16_to_f32, f32_to_bf16
from cupy_getp.checkpoint.safetensors import dequantize_mxfp4
from cupy_getp.checkpoint.synthetic import Init, Mxfp4Stream, mxfp4_blocks, mxfp4_values, uniform_values
from cupy_getp.gpu.constants import ROUTER_MAX_ROWS, ROUTER_STAGED, SKINNY_BM, TC_BLOCK_M, TILE_BM
from cupy_getp.gpu.launch.attention import ATTN_PARTIAL_VARIANTS, ATTN_TF32_KERNEL
from cupy_getp.gpu.launch.gemm_tc import (DENSE_TILES, WG_DENSE_TILES, WG_GROUPED_TILES, WG_HALF_ROWS, WG_ROWS,
                                          WG_WIDE_KIND, WG_WIDE_PLAIN_KIND, WG_WIDE_ROWS, WG_WIDE_TALL)
from cupy_getp.gpu.launch.moe import moe_align_host
from cupy_getp.gpu.launch.splitk import WG_SLICED_HEIGHTS
from cupy_getp.gpu.launch.tensor_map import MAP_BYTES, map_argument
from cupy_getp.reference import rmsnorm, rope, route, swiglu

ORACLES: dict = {}


def oracle(*names: str):
    def register(function):
        for name in names:
            ORACLES[name] = function
        return function
    return register


def f32(w) -> np.ndarray:
    """Weights as float32 values: bf16 bits widened exactly, float32 as they are."""
    return bf16_to_f32(w) if w.dtype == np.uint16 else np.asarray(w, np.float32)


def _product(a, w, bias=None) -> np.ndarray:
    """a (..., K) @ w (N, K)^T (+ bias), float64."""
    y = np.asarray(a, np.float64) @ f32(w).astype(np.float64).T
    return y if bias is None else y + bias


# -- rows: embedding, rmsnorm, rope, argmax -----------------------------------------------------------
@oracle("embedding_rows_f32")
def embedding_rows(x, table, tokens, hidden):
    x[...] = table[tokens]


@oracle("embedding_rows_fed_f32")
def embedding_rows_fed(x, table, tokens, sources, last_tokens, hidden):
    x[...] = table[np.where(sources >= 0, np.asarray(last_tokens)[np.maximum(sources, 0)], tokens)]


@oracle("rmsnorm_rows_f32")
def rmsnorm_rows(out, x, w, hidden):
    for r in range(x.shape[0]):
        out[r] = rmsnorm(np.asarray(x[r]), w)


def cached(values, dtype) -> np.ndarray:
    """Values as a KV cache of `dtype` holds them: float32, or bf16 bits (uint16) rounded to nearest even."""
    values = np.asarray(values, np.float32)
    return f32_to_bf16(values) if np.dtype(dtype) == np.uint16 else values


@oracle("rope_kv_write_f32", "rope_kv_write_bf16kv")
def rope_kv_write(qkv, cos, sin, key_cache, value_cache, row_slot, row_pos, n_heads, n_kv_heads, head_dim,
                  cache_len):
    q_dim, kv_dim = n_heads * head_dim, n_kv_heads * head_dim
    for r, (slot, pos) in enumerate(zip(row_slot, row_pos)):
        q = rope(np.array(qkv[r, :q_dim]).reshape(n_heads, head_dim), cos[pos], sin[pos])
        key = rope(np.array(qkv[r, q_dim:q_dim + kv_dim]).reshape(n_kv_heads, head_dim), cos[pos], sin[pos])
        qkv[r, :q_dim], qkv[r, q_dim:q_dim + kv_dim] = q.reshape(-1), key.reshape(-1)
        key_cache[slot, pos % cache_len] = cached(key.reshape(-1), key_cache.dtype)
        value_cache[slot, pos % cache_len] = cached(qkv[r, q_dim + kv_dim:], value_cache.dtype)


@oracle("argmax_rows_f32")
def argmax_rows(next_token, logits, vocab, vec4):
    next_token[...] = [int(np.argmax(row)) if np.isfinite(row).all() else -1 for row in np.asarray(logits)]


# -- dense products ------------------------------------------------------------------------------------------
@oracle("matvec_f32", "matvec_bf16w_f32")
def matvec(y, w, x, b, rows, cols, accumulate, vec):
    result = _product(x, w, b)
    y[...] = result + y if accumulate else result


@oracle("gemm_f32w_skinny", "gemm_f32w_tiled", "gemm_bf16w_skinny", "gemm_bf16w_tiled")
def gemm(c, a, w, bias, m, n, k, accumulate, vec):
    result = _product(a, w, bias)
    c[...] = result + c if accumulate else result


# -- batched attention: flash-decoding partials and their merge ------------------------------------------------
@oracle(*ATTN_PARTIAL_VARIANTS, ATTN_TF32_KERNEL)
def attn_rows_partial(partial_acc, partial_ml, qkv, key_cache, value_cache, row_slot, row_pos, n_heads, n_kv_heads,
                      head_dim, cache_len, window, split_len, vec, att, ap, sinks, counters, lda, pieces):
    """The partials; with counters (not null), merged in the same launch: attn_rows_merge_f32's att, and
    attn_rows_merge_split's pieces too where ap is not null. The counters stay zero."""
    attn_partials(partial_acc, partial_ml, qkv, key_cache, value_cache, row_slot, row_pos, n_heads, n_kv_heads,
                  head_dim, cache_len, window, split_len)
    if isinstance(counters, np.ndarray):
        assert not counters.any(), "attn_rows_partial's merge counters must be zero"
        merge = (partial_acc, partial_ml, sinks, row_pos, len(row_pos) * n_heads, n_heads, partial_acc.shape[2],
                 head_dim, window, split_len)
        if isinstance(ap, np.ndarray):
            attn_rows_merge_split(att, ap, *merge, lda, pieces, 1)
        else:
            attn_rows_merge(att, *merge, 1)


def attn_partials(partial_acc, partial_ml, qkv, key_cache, value_cache, row_slot, row_pos, n_heads, n_kv_heads,
                  head_dim, cache_len, window, split_len):
    n_split, group = partial_acc.shape[2], n_heads // n_kv_heads
    for r, (slot, pos) in enumerate(zip(row_slot, row_pos)):
        lo = max(0, pos - window + 1) if window > 0 else 0
        for s in range(n_split):
            ts = np.arange(lo + s * split_len, min(lo + (s + 1) * split_len, pos + 1)) % cache_len
            if ts.size == 0:  # a split the row does not reach: not written
                continue
            for h in range(n_heads):
                kv = slice((h // group) * head_dim, (h // group + 1) * head_dim)
                q = np.asarray(qkv[r, h * head_dim:(h + 1) * head_dim], np.float64)
                scores = f32(key_cache[slot, ts, kv]).astype(np.float64) @ q / np.sqrt(head_dim)
                p = np.exp(scores - scores.max())
                partial_acc[r, h, s] = p @ f32(value_cache[slot, ts, kv]).astype(np.float64)
                partial_ml[r, h, s] = (scores.max(), p.sum())


@oracle("attn_rows_merge_f32")
def attn_rows_merge(att, partial_acc, partial_ml, sinks, row_pos, items, n_heads, n_split, head_dim, window,
                    split_len, pairs):  # pairs: how the lanes share the dims, the same values either way
    merged = np.zeros((len(row_pos), n_heads, head_dim))
    for r, pos in enumerate(row_pos):
        lo = max(0, pos - window + 1) if window > 0 else 0
        used = min(n_split, -(-(pos + 1 - lo) // split_len))  # only the splits the row reaches were written
        m, l = np.asarray(partial_ml[r, :, :used, 0], np.float64), np.asarray(partial_ml[r, :, :used, 1], np.float64)
        top = np.maximum(m.max(axis=1), sinks)  # (nh,): M = max(max_s m_s, sink)
        scale = np.exp(m - top[:, None])
        total = (l * scale).sum(axis=1) + np.exp(sinks - top)
        merged[r] = (np.asarray(partial_acc[r, :, :used], np.float64) * scale[..., None]).sum(axis=1) / total[:, None]
    att[...] = merged.reshape(att.shape)


# -- MoE: router, grouping, expert products, combine ---------------------------------------------------------------
@oracle("router_rows_bf16w", "router_rows_f32w")
def router_rows(experts, weights, scores, w, b, t, hidden, n_experts, k, vec, n_rows, rows_per_block, staged):
    assert n_rows == scores.shape[0] and 1 <= rows_per_block <= ROUTER_MAX_ROWS
    assert not staged or (vec and hidden <= ROUTER_STAGED), "rows of t staged only where they fit the buffers"
    scores[...] = _product(t, w, b).astype(np.float32)
    for r in range(scores.shape[0]):
        experts[r], weights[r] = route(np.asarray(scores[r]), k)


@oracle("moe_align")
def moe_align(pair_of_padded, padded_of_pair, tile_expert, experts, n_pairs, n_experts, padded, block_m, row_slot,
              spare_slot, top_k):
    """moe_align_host, cut to P padded positions: a pair that would land past P is not placed (slot -1), nor
    (with row_slot) one of a row in the spare slot."""
    experts = np.array(experts, np.int32).reshape(-1, int(top_k))
    if row_slot is not None:
        experts[np.asarray(row_slot) == spare_slot] = -1
    pairs, slots, tiles = moe_align_host(experts, int(n_experts), int(block_m))
    pair_of_padded[...], tile_expert[...] = -1, -1
    pair_of_padded[:min(padded, pairs.size)] = pairs[:padded]
    tile_expert[:min(padded // block_m, tiles.size)] = tiles[:padded // block_m]
    padded_of_pair[...] = np.where(slots < padded, slots, -1)


@oracle("moe_combine")
def moe_combine(x, moe_out, y, weights, padded_of_pair, hidden, k):
    rows = x.shape[0]
    total = np.zeros((rows, hidden), np.float32)
    slots = np.asarray(padded_of_pair).reshape(rows, k)
    for s in range(k):  # the reference's order: agg += weight * out, slot by slot; unplaced pairs add nothing
        placed = slots[:, s] >= 0
        total[placed] += weights[placed, s:s + 1] * y[slots[placed, s]]
    moe_out[...] = total
    x += total


@oracle("moe_mlp1_swiglu_bf16w")
def moe_mlp1_swiglu(g, w_mlp1, b_mlp1, t, experts, hidden, inter, limit, vec8):
    for s, e in enumerate(experts):
        g[s] = swiglu(_product(t, w_mlp1[e], b_mlp1[e]).astype(np.float32), limit)


@oracle("moe_mlp2_accumulate_bf16w")
def moe_mlp2_accumulate(x, moe_out, w_mlp2, b_mlp2, g, experts, weights, k, hidden, inter, vec8):
    total = np.zeros(hidden, np.float32)
    for s in range(k):  # slots summed in order
        total += weights[s] * _product(g[s], w_mlp2[experts[s]], b_mlp2[experts[s]]).astype(np.float32)
    moe_out[...] = total
    x += total


def widened(blocks, scales, cols) -> np.ndarray:
    """An MXFP4 matrix's values (..., rows, cols), float32: what the mxfp4w kernels compute with."""
    return dequantize_mxfp4(blocks, scales)[..., :int(cols)]


@oracle("moe_mlp1_swiglu_mxfp4w")
def moe_mlp1_swiglu_mxfp4(g, codes, scales, b_mlp1, t, experts, hidden, inter, limit, vec8):
    moe_mlp1_swiglu(g, widened(codes, scales, hidden), b_mlp1, t, experts, hidden, inter, limit, vec8)


@oracle("moe_mlp2_accumulate_mxfp4w")
def moe_mlp2_accumulate_mxfp4(x, moe_out, codes, scales, b_mlp2, g, experts, weights, k, hidden, inter, vec8):
    moe_mlp2_accumulate(x, moe_out, widened(codes, scales, inter), b_mlp2, g, experts, weights, k, hidden, inter,
                        vec8)


def _grouped(out, a, row_of, pair_of_padded, tile_expert, w, b, block_m, epilogue):
    """out[p] = epilogue(w[e] @ a[row_of(p, pair)] + b[e]) for every non-pad position p (pair >= 0) of a tile
    with expert e = tile_expert[tile] >= 0; other positions are not written. One product per expert."""
    pairs = np.asarray(pair_of_padded)
    expert_of = np.repeat(np.asarray(tile_expert), block_m)
    for e in np.unique(expert_of[expert_of >= 0]):
        positions = np.flatnonzero((expert_of == e) & (pairs >= 0))
        if positions.size:
            m = _product(a[row_of(positions, pairs[positions])], w[e], b[e]).astype(np.float32)
            out[positions] = np.stack([epilogue(row) for row in m])


def _grouped_swiglu(block_m):
    def run(g, a, pair_of_padded, tile_expert, w1, b1, p, n, k, experts_per_token, limit, vec):
        _grouped(g, a, lambda p, pair: pair // experts_per_token, pair_of_padded, tile_expert, w1, b1, block_m,
                 lambda m: swiglu(m, limit))
    return run


def _grouped_plain(block_m):
    def run(y, g, pair_of_padded, tile_expert, w2, b2, p, n, k, vec):
        _grouped(y, g, lambda p, pair: p, pair_of_padded, tile_expert, w2, b2, block_m, lambda m: m)
    return run


oracle("gemm_grouped_swiglu_skinny")(_grouped_swiglu(SKINNY_BM))
oracle("gemm_grouped_swiglu_tiled")(_grouped_swiglu(TILE_BM))
oracle("gemm_grouped_skinny")(_grouped_plain(SKINNY_BM))
oracle("gemm_grouped_tiled")(_grouped_plain(TILE_BM))


def _grouped_swiglu_mxfp4(block_m):
    def run(g, a, pair_of_padded, tile_expert, codes, scales, b1, p, n, k, experts_per_token, limit, vec):
        _grouped_swiglu(block_m)(g, a, pair_of_padded, tile_expert, widened(codes, scales, k), b1, p, n, k,
                                 experts_per_token, limit, vec)
    return run


def _grouped_plain_mxfp4(block_m):
    def run(y, g, pair_of_padded, tile_expert, codes, scales, b2, p, n, k, vec):
        _grouped_plain(block_m)(y, g, pair_of_padded, tile_expert, widened(codes, scales, k), b2, p, n, k, vec)
    return run


for _shape, _block_m in (("skinny", SKINNY_BM), ("tiled", TILE_BM)):
    oracle(f"gemm_grouped_swiglu_mxfp4w_{_shape}")(_grouped_swiglu_mxfp4(_block_m))
    oracle(f"gemm_grouped_mxfp4w_{_shape}")(_grouped_plain_mxfp4(_block_m))


# -- tensor cores: activations as BF16 pieces, products of the pieces' sum ------------------------------------------
@oracle("tc_split_rows")
def tc_split_rows(ap, a, m, k, lda, pieces, vec4):
    """Piece p is the RNE bf16 of what pieces 0..p-1 left (exact FP32 differences); zeros after column K.
    An infinite or NaN x: piece 0 is bf16(x), no remainder."""
    rest = np.array(a, np.float32)
    for p in range(pieces):
        ap[p] = 0
        ap[p, :, :k] = f32_to_bf16(rest)
        with np.errstate(invalid="ignore"):
            rest = np.where(np.isfinite(rest), rest - bf16_to_f32(ap[p, :, :k]), 0).astype(np.float32)


@oracle("rmsnorm_split_rows")
def rmsnorm_split_rows(out, ap, x, w, hidden, lda, pieces):
    """rmsnorm_rows, then tc_split_rows of its output."""
    rmsnorm_rows(out, x, w, hidden)
    tc_split_rows(ap, out, out.shape[0], hidden, lda, pieces, 0)


@oracle("attn_rows_merge_split")
def attn_rows_merge_split(att, ap, partial_acc, partial_ml, sinks, row_pos, items, n_heads, n_split, head_dim,
                          window, split_len, lda, pieces, pairs):
    """attn_rows_merge_f32, then tc_split_rows of att."""
    attn_rows_merge(att, partial_acc, partial_ml, sinks, row_pos, items, n_heads, n_split, head_dim, window,
                    split_len, pairs)
    tc_split_rows(ap, att, att.shape[0], n_heads * head_dim, lda, pieces, 0)


def joined(ap, k: int) -> np.ndarray:
    """The float64 sum of pieces (pieces, rows, lda) bf16: the values they stand for."""
    return sum(bf16_to_f32(ap[p, :, :k]).astype(np.float64) for p in range(ap.shape[0]))


@oracle(*(f"gemm_tc_m{bm}_n{bn}" for bm, bn in DENSE_TILES))
def gemm_tc(c, ap, w, bias, m, n, k, lda, accumulate, pieces, vec8):
    gemm(c, joined(ap, k), w, bias, m, n, k, accumulate, vec8)


def _grouped_swiglu_pieces(gp, p, gp_lda, ap, pair_of_padded, tile_expert, w1, b1, hidden, inter,
                           experts_per_token, limit, pieces, block_m):
    """g of the grouped mlp1 written as its pieces gp (pieces, P, gp_lda); pad positions are not written."""
    g = np.full((p, inter), np.nan, np.float32)
    _grouped_swiglu(block_m)(g, joined(ap, hidden), pair_of_padded, tile_expert, w1, b1, p, 2 * inter, hidden,
                             experts_per_token, limit, 0)
    written = np.asarray(pair_of_padded) >= 0
    split = np.zeros((pieces, p, gp_lda), np.uint16)
    tc_split_rows(split, np.nan_to_num(g), p, inter, gp_lda, pieces, 0)
    gp[:, written] = split[:, written]


@oracle("gemm_tc_grouped_swiglu")
def gemm_tc_grouped_swiglu(gp, p, gp_lda, ap, rows, ap_lda, pair_of_padded, tile_expert, w1, b1, hidden, inter,
                           experts_per_token, limit, pieces, vec8):
    _grouped_swiglu_pieces(gp, p, gp_lda, ap, pair_of_padded, tile_expert, w1, b1, hidden, inter, experts_per_token,
                           limit, pieces, TC_BLOCK_M)


@oracle("gemm_tc_grouped")
def gemm_tc_grouped(y, gp, p, gp_lda, pair_of_padded, tile_expert, w2, b2, hidden, inter, pieces, vec8):
    _grouped_plain(TC_BLOCK_M)(y, joined(gp, inter), pair_of_padded, tile_expert, w2, b2, p, hidden, inter, vec8)


def _with_widened_experts(run, w_at: int, k_at: int):
    """An oracle for the *_mxfp4w twin of a grouped tensor-core kernel: its arguments with the experts as codes
    and scales at w_at, w_at + 1 (K at k_at of the bf16 kernel's arguments), run on their widened values."""
    def run_mxfp4(*args):
        w = widened(args[w_at], args[w_at + 1], args[k_at + 1])
        return run(*args[:w_at], w, *args[w_at + 2:])

    params = list(inspect.signature(run).parameters.values())
    codes = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for name in ("codes", "scales")]
    run_mxfp4.__signature__ = inspect.Signature([*params[:w_at], *codes, *params[w_at + 1:]])  # the kernel's arity
    return run_mxfp4


oracle("gemm_tc_grouped_swiglu_mxfp4w")(_with_widened_experts(gemm_tc_grouped_swiglu, 8, 10))
oracle("gemm_tc_grouped_mxfp4w")(_with_widened_experts(gemm_tc_grouped, 6, 9))


# -- tensor cores on wgmma (sm_90a): the same contracts, pieces and tile height in the kernel's name ----------------
@oracle("wg_available")
def wg_available(out):
    out[0] = 0  # a stand-in has no wgmma bodies


@oracle(*(f"gemm_wg_r{rows}_p{pieces}_b{blocks}" for pieces in (3, 1) for rows, blocks in WG_DENSE_TILES[pieces]))
def gemm_wg(c, ap, w, bias, m, n, k, lda, accumulate, vec8):
    gemm(c, joined(ap, k), w, bias, m, n, k, accumulate, vec8)


def _wg_grouped_swiglu(block_m):
    def run(gp, p, gp_lda, ap, rows, ap_lda, pair_of_padded, tile_expert, w1, b1, hidden, inter, experts_per_token,
            limit, vec8):
        _grouped_swiglu_pieces(gp, p, gp_lda, ap, pair_of_padded, tile_expert, w1, b1, hidden, inter,
                               experts_per_token, limit, gp.shape[0], block_m)
    return run


def _wg_grouped(block_m):
    def run(y, gp, p, gp_lda, pair_of_padded, tile_expert, w2, b2, hidden, inter, vec8):
        _grouped_plain(block_m)(y, joined(gp, inter), pair_of_padded, tile_expert, w2, b2, p, hidden, inter, vec8)
    return run


def _with_mapped_experts(run, w_at: int, n_of):
    """An oracle for a grouped TMA kernel (gemm_wg_tma_grouped*): the bf16 kernel's arguments (`run`'s) with the
    experts, at w_at, as a paired map placed first instead, and no vec8; run on the matrix the map names as
    (E, N, K), N = n_of(the arguments without the map)."""
    def run_mapped(w_map, *args):
        rows = mapped_matrix(w_map, paired=True)
        experts = rows.reshape(-1, n_of(args), rows.shape[1])
        return run(*args[:w_at], experts, *args[w_at:], 1)

    params = list(inspect.signature(run).parameters.values())
    w_map = inspect.Parameter("w_map", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    run_mapped.__signature__ = inspect.Signature([w_map, *params[:w_at], *params[w_at + 1:-1]])  # the kernel's arity
    return run_mapped


for _pieces in (3, 1):
    for _rows, _blocks in WG_GROUPED_TILES:
        oracle(f"gemm_wg_grouped_swiglu_r{_rows}_p{_pieces}_b{_blocks}")(_wg_grouped_swiglu(_rows))
        oracle(f"gemm_wg_grouped_r{_rows}_p{_pieces}_b{_blocks}")(_wg_grouped(_rows))
        oracle(f"gemm_wg_grouped_swiglu_mxfp4w_r{_rows}_p{_pieces}_b{_blocks}")(
            _with_widened_experts(_wg_grouped_swiglu(_rows), 8, 10))
        oracle(f"gemm_wg_grouped_mxfp4w_r{_rows}_p{_pieces}_b{_blocks}")(
            _with_widened_experts(_wg_grouped(_rows), 6, 9))
        # the TMA kernels' N: 2 inter (mlp1), hidden (mlp2), from the arguments without W
        oracle(f"gemm_wg_tma_grouped_swiglu_r{_rows}_p{_pieces}_b{_blocks}")(
            _with_mapped_experts(_wg_grouped_swiglu(_rows), 8, lambda args: 2 * int(args[10])))
        oracle(f"gemm_wg_tma_grouped_r{_rows}_p{_pieces}_b{_blocks}")(
            _with_mapped_experts(_wg_grouped(_rows), 6, lambda args: int(args[7])))


def _wg_wide(mapped, blocks: int):
    """The wide blocks (three consumer warpgroups, 192 x blocks features a block) of a grouped TMA kernel's oracle
    `mapped`: its contract, W through a paired map of boxes of the block's rows."""
    def run(w_map, *args):
        box_rows = struct.unpack_from("<4Q", w_map.tobytes())[3]
        assert box_rows == 192 * blocks, f"a wide block's map moves boxes of {192 * blocks} W rows, not {box_rows}"
        return mapped(w_map, *args)

    run.__signature__ = inspect.signature(mapped)
    return run


def _wg_wide_swiglu(block_m, blocks: int = 1):
    """The wide blocks' mlp1 + SwiGLU."""
    return _wg_wide(_with_mapped_experts(_wg_grouped_swiglu(block_m), 8, lambda args: 2 * int(args[10])), blocks)


for _pieces in (3, 1):
    for _rows in WG_WIDE_ROWS:
        oracle(f"gemm_wg{WG_WIDE_KIND}_r{_rows}_p{_pieces}_b1")(_wg_wide_swiglu(_rows))
for (_rows, _pieces), _blocks in WG_WIDE_TALL.items():  # the tall ones, mlp1 and mlp2
    oracle(f"gemm_wg{WG_WIDE_KIND}_r{_rows}_p{_pieces}_b{_blocks}")(_wg_wide_swiglu(_rows, _blocks))
    oracle(f"gemm_wg{WG_WIDE_PLAIN_KIND}_r{_rows}_p{_pieces}_b{_blocks}")(
        _wg_wide(_with_mapped_experts(_wg_grouped(_rows), 6, lambda args: int(args[7])), _blocks))


# -- synthetic weights ----------------------------------------------------------------------------------------------
@oracle("synthetic_f32")
def synthetic_f32(out, start, n, key, scale, offset, round_bf16):
    values = uniform_values(int(key), int(start), int(n), Init(float(scale), float(offset)))
    out[...] = bf16_to_f32(f32_to_bf16(values)) if round_bf16 else values


@oracle("synthetic_bf16")
def synthetic_bf16(out, start, n, key, scale, offset):
    out[...] = f32_to_bf16(uniform_values(int(key), int(start), int(n), Init(float(scale), float(offset))))


@oracle("synthetic_mxfp4_bf16")
def synthetic_mxfp4_bf16(out, start, n, cols, key, scale_key, exponent):
    stream = Mxfp4Stream(int(key), int(scale_key), int(exponent), int(cols))
    out[...] = f32_to_bf16(mxfp4_values(stream, int(start), int(n)))


@oracle("synthetic_mxfp4_codes")
def synthetic_mxfp4_codes(blocks, scales, row0, rows, cols, key, scale_key, exponent):
    want_blocks, want_scales = mxfp4_blocks(Mxfp4Stream(int(key), int(scale_key), int(exponent), int(cols)),
                                            int(row0), int(rows))
    blocks[...] = want_blocks.reshape(blocks.shape)
    scales[...] = want_scales.reshape(scales.shape)


@oracle("mxfp4_widen_f32")
def mxfp4_widen_f32(out, codes, scales, n):
    with np.errstate(over="ignore"):  # scale 255: inf, as numpy's ldexp and the kernel give
        out[...] = dequantize_mxfp4(codes.reshape(-1, 16), scales).reshape(-1)


# The TMA twins of the dense kernels: W named by a tensor map. On the CPU a stand-in map carries what a real
# one encodes (address, N, K, box rows); its oracle reads W from that address, as the copies would.
def stand_in_tensor_map(ptr: int, n: int, k: int, box_rows: int, paired: bool = False):
    return map_argument(struct.pack("<5Q", ptr, n, k, box_rows, paired).ljust(MAP_BYTES, b"\0"))


def mapped_matrix(w_map, paired: bool = False):
    """The bf16 (N, K) matrix a stand-in map names, read at its address as the copies would; the map must be
    of the kind the kernel takes (paired: the grouped TMA kernels' rows in wg_w_slot's order)."""
    ptr, rows, cols, _, is_paired = struct.unpack_from("<5Q", w_map.tobytes())
    assert bool(is_paired) == paired, f"a {'paired' if paired else 'plain'} map expected"
    return np.ctypeslib.as_array((ctypes.c_uint16 * (rows * cols)).from_address(ptr)).reshape(rows, cols)


@oracle(*(f"gemm_wg_tma_r{rows}_p{pieces}_b{blocks}" for pieces in (3, 1) for rows, blocks in WG_DENSE_TILES[pieces]))
def gemm_wg_tma(w_map, c, ap, bias, m, n, k, lda, accumulate):
    gemm(c, joined(ap, k), mapped_matrix(w_map), bias, m, n, k, accumulate, 1)


# ... and in half blocks (one consumer warpgroup, 64 features a block): the same contract, W through a map of
# 64-row boxes.
@oracle(*(f"gemm_wg_tma_half_r{rows}_p{pieces}_b1" for pieces in (3, 1) for rows in WG_HALF_ROWS))
def gemm_wg_tma_half(w_map, c, ap, bias, m, n, k, lda, accumulate):
    box_rows = struct.unpack_from("<4Q", w_map.tobytes())[3]
    assert box_rows == 64, f"a half block's map moves boxes of 64 W rows, not {box_rows}"
    gemm_wg_tma(w_map, c, ap, bias, m, n, k, lda, accumulate)


# Their split-K twins (launch/splitk.py): the same contract; the workspace and the counters are the kernels' own.
@oracle(*(f"gemm_wg_splitk_r{rows}_p{pieces}_b1" for pieces in (3, 1) for rows in WG_ROWS[pieces]))
def gemm_wg_splitk(c, ap, w, bias, m, n, k, lda, accumulate, vec8, work, counters):
    gemm_wg(c, ap, w, bias, m, n, k, lda, accumulate, vec8)


@oracle(*(f"gemm_wg_tma_splitk_r{rows}_p{pieces}_b1" for pieces in (3, 1) for rows in WG_ROWS[pieces]))
def gemm_wg_tma_splitk(w_map, c, ap, bias, m, n, k, lda, accumulate, work, counters):
    gemm_wg_tma(w_map, c, ap, bias, m, n, k, lda, accumulate)


# ... and their sliced mode (one block a tile, the slices in turn): the same contract again.
@oracle(*(f"gemm_wg_sliced_r{rows}_p{pieces}_b1" for pieces in (3, 1) for rows in WG_SLICED_HEIGHTS[pieces]))
def gemm_wg_sliced(c, ap, w, bias, m, n, k, lda, accumulate, vec8, splits):
    gemm_wg(c, ap, w, bias, m, n, k, lda, accumulate, vec8)


@oracle(*(f"gemm_wg_tma_sliced_r{rows}_p{pieces}_b1" for pieces in (3, 1) for rows in WG_SLICED_HEIGHTS[pieces]))
def gemm_wg_tma_sliced(w_map, c, ap, bias, m, n, k, lda, accumulate, splits):
    gemm_wg_tma(w_map, c, ap, bias, m, n, k, lda, accumulate)
