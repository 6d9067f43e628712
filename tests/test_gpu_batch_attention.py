"""The batched engine's row kernels (embedding_rows, rmsnorm_rows, rope_kv_write, argmax_rows) and its
flash-decoding attention (attn_rows_partial + attn_rows_merge) against numpy: rows of different slots and
positions in one launch, contexts of 1 and of the whole cache, windows with ring wrap, prefill-chunk rows
of one slot at consecutive positions. Outputs are poisoned first. What a kernel must write comes from its
oracle (tests/kernel_oracles.py, through `expected`), the whole attention from the reference engine's.
Tolerances as docs/batched-engine.md asks: element kernels 5e-6, attention 5e-5 (max abs, O(1) inputs)."""

from __future__ import annotations

import numpy as np
import pytest

from cupy_getp.reference import attention, rope
from cupy_getp.rope import rope_cos_sin

from batch_fakes import expected
from conftest import TINY
from gpu_helpers import host, poisoned, to_device

gpu_test = pytest.mark.gpu

ELEMENT_TOL = 5e-6
ATTN_TOL = 5e-5


def test_attention_variant_choice():
    from cupy_getp.gpu.launch import attention as attention_launch

    assert attention_launch.attn_partial_kernel(64, 8) == "attn_rows_partial_d64_g8_f32"
    assert attention_launch.attn_partial_kernel(30, 3) == "attn_rows_partial_d64_g8_f32"
    assert attention_launch.attn_partial_kernel(128, 16) == "attn_rows_partial_d128_g16_f32"
    for bad in ((129, 8), (64, 17), (0, 1)):
        with pytest.raises(ValueError):
            attention_launch.attn_partial_kernel(*bad)
    picks = {attention_launch.attn_partial_kernel(d, g) for d in range(1, 129) for g in range(1, 17)}
    assert picks == set(attention_launch.ATTN_PARTIAL_VARIANTS)  # every variant used, none missing


# -- rows ---------------------------------------------------------------------------------------------
@gpu_test
@pytest.mark.parametrize("rows, hidden, vocab", [(1, 1, 3), (5, 37, 50), (17, 2880, 33)])
def test_embedding_rows(gpu, rng, rows, hidden, vocab):
    table = rng.standard_normal((vocab, hidden)).astype(np.float32)
    tokens = rng.integers(0, vocab, rows).astype(np.int32)
    tokens[0], tokens[-1] = vocab - 1, 0
    x = poisoned((rows, hidden))
    gpu[1].embedding_rows(x, to_device(table), to_device(tokens))
    want, *_ = expected("embedding_rows", x, table, tokens)
    np.testing.assert_array_equal(host(x, gpu), want)


@gpu_test
@pytest.mark.parametrize("rows, hidden", [(1, 1), (3, 31), (7, 257), (5, 2880)])
def test_rmsnorm_rows(gpu, rng, rows, hidden):
    x = (rng.standard_normal((rows, hidden)) * 3).astype(np.float32)
    w = rng.standard_normal(hidden).astype(np.float32)
    out = poisoned((rows, hidden))
    gpu[1].rmsnorm_rows(out, to_device(x), to_device(w))
    want, *_ = expected("rmsnorm_rows", out, x, w)
    assert np.max(np.abs(host(out, gpu) - want)) <= ELEMENT_TOL


def rope_tables(head_dim: int, n_pos: int):
    config = TINY.replace(head_dim=head_dim)
    tables = [rope_cos_sin(config, p) for p in range(n_pos)]
    return np.stack([c for c, _ in tables]), np.stack([s for _, s in tables])


@gpu_test
@pytest.mark.parametrize("n_heads, n_kv_heads, head_dim, slots, cache_len, rows", [
    (6, 2, 8, 1, 16, [(0, 0)]),
    # several slots; two rows of slot 1 at consecutive positions; a pad row (spare slot 3, position 0)
    (6, 2, 8, 3, 16, [(0, 5), (1, 14), (1, 15), (2, 0), (3, 0)]),
    # a windowed ring: positions past the cache length wrap (p % C)
    (64, 8, 64, 4, 144, [(0, 500), (1, 143), (1, 144), (1, 145), (2, 7), (3, 1000)]),
    (3, 1, 30, 2, 9, [(0, 40), (1, 8), (0, 41)]),
])
def test_rope_kv_write(gpu, rng, n_heads, n_kv_heads, head_dim, slots, cache_len, rows):
    kv_dim, q_dim = n_kv_heads * head_dim, n_heads * head_dim
    row_slot = np.array([s for s, _ in rows], np.int32)
    row_pos = np.array([p for _, p in rows], np.int32)
    cos, sin = rope_tables(head_dim, int(row_pos.max()) + 3)
    qkv = rng.standard_normal((len(rows), q_dim + 2 * kv_dim)).astype(np.float32)
    key_cache = rng.standard_normal((slots + 1, cache_len, kv_dim)).astype(np.float32)
    value_cache = rng.standard_normal((slots + 1, cache_len, kv_dim)).astype(np.float32)
    qkv_d, kd, vd = to_device(qkv), to_device(key_cache), to_device(value_cache)
    gpu[1].rope_kv_write(qkv_d, to_device(cos), to_device(sin), kd, vd, to_device(row_slot), to_device(row_pos),
                         n_heads, n_kv_heads, head_dim)

    want_qkv, _, _, want_k, want_v, *_ = expected("rope_kv_write", qkv, cos, sin, key_cache, value_cache, row_slot,
                                                 row_pos, n_heads, n_kv_heads, head_dim)
    written = np.zeros(key_cache.shape[:2], bool)
    written[row_slot, row_pos % cache_len] = True
    got_qkv, got_k, got_v = host(qkv_d, gpu), host(kd, gpu), host(vd, gpu)
    assert np.max(np.abs(got_qkv[:, : q_dim + kv_dim] - want_qkv[:, : q_dim + kv_dim])) <= ELEMENT_TOL
    np.testing.assert_array_equal(got_qkv[:, q_dim + kv_dim:], qkv[:, q_dim + kv_dim:])  # v untouched
    assert np.max(np.abs(got_k[written] - want_k[written])) <= ELEMENT_TOL
    np.testing.assert_array_equal(got_v[written], want_v[written])  # a copy
    np.testing.assert_array_equal(got_k[~written], key_cache[~written])  # untouched entries
    np.testing.assert_array_equal(got_v[~written], value_cache[~written])


@gpu_test
@pytest.mark.parametrize("rows, vocab", [(1, 1), (3, 7), (4, 1001), (5, 201088)])
def test_argmax_rows(gpu, rng, rows, vocab):
    logits = rng.standard_normal((rows, vocab)).astype(np.float32)
    want = logits.argmax(axis=1).astype(np.int32)  # built by hand below, and checked against the oracle
    if vocab > 1:
        # ties: the maximum at several indices (spread over threads and warps); the first one wins
        top = logits[0].max() + 1.0
        ties = np.unique(rng.integers(1, vocab, 6))
        logits[0, ties] = top
        want[0] = ties[0]
    if rows > 1:
        logits[1, vocab - 1] = np.inf  # an infinity is as bad as a NaN
        want[1] = -1
    if rows > 2:
        logits[2, vocab // 2] = np.nan
        want[2] = -1
    if rows > 3:
        logits[3, :] = 2.5  # a constant row
        logits[3, vocab - 1] = np.nan
        want[3] = -1
    out = poisoned(rows, np.int32)
    gpu[1].argmax_rows(out, to_device(logits))
    np.testing.assert_array_equal(expected("argmax_rows", out, logits)[0], want)
    np.testing.assert_array_equal(host(out, gpu), want)


@gpu_test
def test_argmax_rows_unaligned_view_uses_the_scalar_path(gpu, rng):
    logits = rng.standard_normal((3, 1024)).astype(np.float32)
    logits[1, 700] = logits[1, 3] = 9.0
    flat = to_device(np.concatenate([[0.0], logits.reshape(-1)]).astype(np.float32))
    out = poisoned(3, np.int32)
    gpu[1].argmax_rows(out, flat[1:].reshape(3, 1024))
    np.testing.assert_array_equal(host(out, gpu), logits.argmax(axis=1))


# -- attention ----------------------------------------------------------------------------------------
def fill_caches(rng, rows, slots, cache_len, n_kv_heads, head_dim):
    """Each slot's history of K and V (positions 0..its largest row position), written to the caches at
    p % C in increasing p (as the engine writes them), and the caches."""
    kv_dim = n_kv_heads * head_dim
    key_cache = rng.standard_normal((slots + 1, cache_len, kv_dim)).astype(np.float32)  # stale entries
    value_cache = rng.standard_normal((slots + 1, cache_len, kv_dim)).astype(np.float32)
    history = {}
    for slot in {s for s, _ in rows}:
        n = max(p for s, p in rows if s == slot) + 1
        keys = rng.standard_normal((n, n_kv_heads, head_dim)).astype(np.float32)
        values = rng.standard_normal((n, n_kv_heads, head_dim)).astype(np.float32)
        for p in range(n):
            key_cache[slot, p % cache_len] = keys[p].reshape(-1)
            value_cache[slot, p % cache_len] = values[p].reshape(-1)
        history[slot] = keys, values
    return key_cache, value_cache, history


def run_attention(gpu, qkv, key_cache, value_cache, rows, sinks, n_heads, n_kv_heads, head_dim, window, split_len,
                  n_split):
    k = gpu[1]
    R = len(rows)
    row_slot = to_device(np.array([s for s, _ in rows], np.int32))
    row_pos = to_device(np.array([p for _, p in rows], np.int32))
    partial_acc = poisoned((R, n_heads, n_split, head_dim))
    partial_ml = poisoned((R, n_heads, n_split, 2))
    att = poisoned((R, n_heads * head_dim))
    k.attn_rows_partial(partial_acc, partial_ml, to_device(qkv), to_device(key_cache), to_device(value_cache),
                        row_slot, row_pos, n_heads, n_kv_heads, head_dim, window, split_len)
    k.attn_rows_merge(att, partial_acc, partial_ml, to_device(sinks))
    return host(att, gpu), host(partial_acc, gpu), host(partial_ml, gpu)


ATTENTION_CASES = [
    # head_dim, n_heads, n_kv_heads, window, cache_len, split_len, rows (slot, position)
    (8, 6, 2, 0, 64, 256, [(0, 0)]),  # one row, context 1, G = 3
    (8, 6, 2, 0, 64, 16, [(0, 63), (1, 0), (2, 17), (2, 18), (3, 0)]),  # context seq_len; chunk rows; pad row
    (64, 64, 8, 0, 300, 256, [(0, 299), (1, 0), (2, 40), (2, 41), (2, 42), (3, 255), (3, 256), (4, 31), (4, 32)]),
    (64, 64, 8, 0, 300, 37, [(0, 299), (1, 1), (2, 100)]),  # split_len not a multiple of the 32-position tile
    # windowed ring of C = window + chunk: positions past the window and wrapping p % C; chunk rows
    (64, 64, 8, 128, 144, 128, [(0, 500), (1, 143), (1, 144), (1, 145), (2, 7), (3, 127), (3, 128), (4, 1000)]),
    (64, 64, 8, 128, 144, 48, [(0, 500), (1, 130), (2, 0)]),
    (30, 3, 1, 5, 9, 4, [(0, 40), (0, 41), (1, 3), (2, 4), (2, 5)]),  # D = 30 (scalar loads), G = 3
    (30, 6, 2, 0, 70, 64, [(0, 69), (1, 33)]),
    (32, 16, 1, 0, 100, 64, [(0, 99), (1, 64), (2, 2)]),  # G = 16
    (64, 4, 4, 0, 80, 32, [(0, 79), (1, 10)]),  # G = 1
    (64, 24, 3, 0, 90, 32, [(0, 89), (1, 45)]),  # G = 8 with 3 kv heads
    (128, 16, 2, 0, 70, 32, [(0, 69), (1, 20)]),  # head_dim 128
    (96, 12, 1, 20, 28, 16, [(0, 60), (0, 61), (1, 27)]),  # 64 < head_dim < 128, G = 12, windowed
    (64, 8, 8, 0, 1024, 256, [(0, 1023), (1, 511), (2, 700)]),
]


@gpu_test
@pytest.mark.parametrize("head_dim, n_heads, n_kv_heads, window, cache_len, split_len, rows", ATTENTION_CASES)
@pytest.mark.parametrize("sink_scale", [0.5, 8.0])
def test_attention_rows(gpu, rng, head_dim, n_heads, n_kv_heads, window, cache_len, split_len, rows, sink_scale):
    slots = max(s for s, _ in rows) + 1
    key_cache, value_cache, history = fill_caches(rng, rows, slots, cache_len, n_kv_heads, head_dim)
    qkv = rng.standard_normal((len(rows), (n_heads + 2 * n_kv_heads) * head_dim)).astype(np.float32)
    sinks = (rng.standard_normal(n_heads) * sink_scale).astype(np.float32)
    if sink_scale > 1:
        sinks[0] = 20.0  # the sink takes nearly all of the probability
    span = min(window, cache_len) if window else cache_len
    n_split = -(-span // split_len) + 1  # one split more than needed: always empty
    att, partial_acc, partial_ml = run_attention(gpu, qkv, key_cache, value_cache, rows, sinks, n_heads,
                                                 n_kv_heads, head_dim, window, split_len, n_split)
    q_dim = n_heads * head_dim
    for r, (slot, pos) in enumerate(rows):
        keys, values = history[slot]
        want = attention(qkv[r, :q_dim].reshape(n_heads, head_dim), keys[: pos + 1], values[: pos + 1], sinks, window)
        assert np.max(np.abs(att[r] - want)) <= ATTN_TOL, f"row {r} (slot {slot}, position {pos})"
    # empty splits (the last one always): m = -inf, l = 0, acc = 0
    assert np.all(partial_ml[:, :, -1, 0] == -np.inf) and np.all(partial_ml[:, :, -1, 1] == 0)
    assert np.all(partial_acc[:, :, -1] == 0)
    assert np.all(np.isfinite(partial_acc)) and not np.any(np.isnan(partial_ml))


@gpu_test
@pytest.mark.parametrize("window, cache_len", [(0, 200), (100, 140)])
def test_attention_rows_partials_per_split(gpu, rng, window, cache_len):
    """The partials of every split against the oracle: m the max of the split's scores, l and acc."""
    head_dim, n_heads, n_kv_heads, split_len = 64, 16, 2, 40
    rows = [(0, 150), (1, 39)]
    key_cache, value_cache, _ = fill_caches(rng, rows, 2, cache_len, n_kv_heads, head_dim)
    qkv = rng.standard_normal((2, (n_heads + 2 * n_kv_heads) * head_dim)).astype(np.float32)
    n_split = 5
    _, partial_acc, partial_ml = run_attention(gpu, qkv, key_cache, value_cache, rows, np.zeros(n_heads, np.float32),
                                               n_heads, n_kv_heads, head_dim, window, split_len, n_split)
    want_acc, want_ml, *_ = expected("attn_rows_partial", partial_acc, partial_ml, qkv, key_cache, value_cache,
                                     np.array([s for s, _ in rows], np.int32), np.array([p for _, p in rows], np.int32),
                                     n_heads, n_kv_heads, head_dim, window, split_len)
    empty = want_ml[..., 0] == -np.inf
    assert np.all(partial_ml[empty] == want_ml[empty]) and np.all(partial_acc[empty] == 0)
    m, l = partial_ml[~empty].T
    assert np.max(np.abs(m - want_ml[~empty][:, 0])) <= 1e-5
    assert np.all(np.abs(l - want_ml[~empty][:, 1]) <= 1e-5 * want_ml[~empty][:, 1])
    assert np.max(np.abs(partial_acc - want_acc)) <= ATTN_TOL


@gpu_test
def test_attention_rows_merge_alone(gpu, rng):
    """The merge against the contract's formula on made-up partials (empty splits included)."""
    R, n_heads, n_split, head_dim = 3, 5, 4, 30
    m = rng.standard_normal((R, n_heads, n_split)).astype(np.float32) * 3
    l = rng.uniform(0.5, 20, (R, n_heads, n_split)).astype(np.float32)
    m[0, :, 2:], l[0, :, 2:] = -np.inf, 0
    acc = rng.standard_normal((R, n_heads, n_split, head_dim)).astype(np.float32)
    acc[0, :, 2:] = 0
    sinks = rng.standard_normal(n_heads).astype(np.float32) * 4
    att = poisoned((R, n_heads * head_dim))
    ml = np.stack([m, l], axis=-1)
    gpu[1].attn_rows_merge(att, to_device(acc), to_device(ml), to_device(sinks))
    want, *_ = expected("attn_rows_merge", att, acc, ml, sinks)
    assert np.max(np.abs(host(att, gpu) - want)) <= ELEMENT_TOL * 4


@gpu_test
def test_rope_kv_write_then_attention_over_a_prefill_chunk(gpu, rng):
    """A prefill chunk of one sequence (rows at positions 0..n-1) and a decode row of another sequence in
    one step: rope_kv_write fills the caches, then every row attends to its own positions <= its own."""
    head_dim, n_heads, n_kv_heads, cache_len, window = 64, 16, 2, 40, 0
    kv_dim, q_dim = n_kv_heads * head_dim, n_heads * head_dim
    chunk = [(0, p) for p in range(12)]
    prior = 30  # slot 1 already holds positions 0..29 (written by earlier steps)
    rows = chunk + [(1, prior)]
    cos, sin = rope_tables(head_dim, cache_len)
    key_cache = rng.standard_normal((3, cache_len, kv_dim)).astype(np.float32)
    value_cache = rng.standard_normal((3, cache_len, kv_dim)).astype(np.float32)
    qkv = rng.standard_normal((len(rows), q_dim + 2 * kv_dim)).astype(np.float32)
    sinks = rng.standard_normal(n_heads).astype(np.float32)
    qkv_d, kd, vd = to_device(qkv), to_device(key_cache), to_device(value_cache)
    row_slot = to_device(np.array([s for s, _ in rows], np.int32))
    row_pos = to_device(np.array([p for _, p in rows], np.int32))
    k = gpu[1]
    k.rope_kv_write(qkv_d, to_device(cos), to_device(sin), kd, vd, row_slot, row_pos, n_heads, n_kv_heads, head_dim)
    n_split = 3
    partial_acc, partial_ml = poisoned((len(rows), n_heads, n_split, head_dim)), poisoned((len(rows), n_heads, n_split, 2))
    att = poisoned((len(rows), q_dim))
    k.attn_rows_partial(partial_acc, partial_ml, qkv_d, kd, vd, row_slot, row_pos, n_heads, n_kv_heads, head_dim,
                        window, 16)
    k.attn_rows_merge(att, partial_acc, partial_ml, to_device(sinks))
    att = host(att, gpu)

    keys = key_cache.reshape(3, cache_len, n_kv_heads, head_dim).copy()
    values = value_cache.reshape(3, cache_len, n_kv_heads, head_dim).copy()
    qs = []
    for r, (slot, pos) in enumerate(rows):
        q = rope(qkv[r, :q_dim].reshape(n_heads, head_dim), cos[pos], sin[pos])
        keys[slot, pos] = rope(qkv[r, q_dim: q_dim + kv_dim].reshape(n_kv_heads, head_dim), cos[pos], sin[pos])
        values[slot, pos] = qkv[r, q_dim + kv_dim:].reshape(n_kv_heads, head_dim)
        qs.append(q)
    for r, (slot, pos) in enumerate(rows):
        want = attention(qs[r], keys[slot, : pos + 1], values[slot, : pos + 1], sinks, window)
        assert np.max(np.abs(att[r] - want)) <= ATTN_TOL, f"row {r} (slot {slot}, position {pos})"


@gpu_test
def test_attention_rows_rejects_splits_that_cannot_cover_the_cache(gpu):
    import cupy

    R, n_heads, n_kv_heads, head_dim = 1, 2, 1, 8
    cache = cupy.zeros((2, 100, head_dim), np.float32)
    args = (cupy.zeros((R, (n_heads + 2) * head_dim), np.float32), cache, cache,
            cupy.zeros(R, np.int32), cupy.zeros(R, np.int32), n_heads, n_kv_heads, head_dim)
    with pytest.raises(ValueError):
        gpu[1].attn_rows_partial(cupy.zeros((R, n_heads, 3, head_dim), np.float32),
                                 cupy.zeros((R, n_heads, 3, 2), np.float32), *args, 0, 32)  # 96 < 100
    gpu[1].attn_rows_partial(cupy.zeros((R, n_heads, 1, head_dim), np.float32),
                             cupy.zeros((R, n_heads, 1, 2), np.float32), *args, 50, 64)  # window 50 <= 64
