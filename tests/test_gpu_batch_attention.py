"""The batched engine's row kernels (embedding_rows, rmsnorm_rows, rope_kv_write, argmax_rows) and its
flash-decoding attention (attn_rows_partial + attn_rows_merge) against numpy: rows of different slots and
positions in one launch, contexts of 1 and of the whole cache (127, 128, 129 and seq_len at the 20b shape),
windows with ring wrap, prefill-chunk rows of one slot at consecutive positions (the window's start moving
inside the chunk), the engine's split length (`attn_split_len`), and a row's output bit-identical whatever
the launch's other rows; over an FP32 cache and a BF16 one (`--kv-cache bf16`: against the reference over the
history rounded to BF16). Outputs are poisoned first. What a kernel must write comes from its
oracle (tests/kernel_oracles.py, through `expected`), the whole attention from the reference engine's.
Tolerances as docs/batched-engine.md asks: element kernels 5e-6, attention 5e-5 (max abs, O(1) inputs)."""

from __future__ import annotations

import numpy as np
import pytest

from cupy_getp.bf16 import round_to_bf16
from cupy_getp.config import preset
from cupy_getp.kv_cache import KV_CACHE_DTYPES
from cupy_getp.reference import attention, rope
from cupy_getp.rope import rope_cos_sin

from batch_fakes import expected
from kernel_oracles import cached
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
    assert attention_launch.attn_partial_kernel(64, 8, np.uint16) == "attn_rows_partial_d64_g8_bf16kv"
    for bad in ((129, 8), (64, 17), (0, 1), (64, 8, np.float16)):
        with pytest.raises(ValueError):
            attention_launch.attn_partial_kernel(*bad)
    picks = {attention_launch.attn_partial_kernel(d, g, dtype) for d in range(1, 129) for g in range(1, 17)
             for dtype in KV_CACHE_DTYPES.values()}
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
@pytest.mark.parametrize("rows, hidden, vocab", [(1, 1, 3), (5, 37, 50), (17, 2880, 33)])
def test_embedding_rows_fed_from_the_step_before(gpu, rng, rows, hidden, vocab):
    """Overlapped steps: a row whose source is a row of the step before takes the token sampled there
    (last_tokens[source]); a source of -1 takes its own token."""
    table = rng.standard_normal((vocab, hidden)).astype(np.float32)
    tokens = np.zeros(rows, np.int32)  # the host's placeholder where a source feeds the token
    last = rng.integers(0, vocab, rows + 3).astype(np.int32)
    sources = rng.integers(-1, rows + 3, rows).astype(np.int32)
    sources[0] = rows + 2
    tokens[sources < 0] = rng.integers(0, vocab, int((sources < 0).sum()))
    x = poisoned((rows, hidden))
    gpu[1].embedding_rows(x, to_device(table), to_device(tokens), to_device(sources), to_device(last))
    np.testing.assert_array_equal(host(x, gpu), table[np.where(sources >= 0, last[np.maximum(sources, 0)], tokens)])


@gpu_test
# 5000: a row past the values a thread holds in registers (RMS_HELD x BLOCK_SIZE = 3072), read again
@pytest.mark.parametrize("rows, hidden", [(1, 1), (3, 31), (7, 257), (5, 2880), (2, 5000)])
def test_rmsnorm_rows(gpu, rng, rows, hidden):
    x = (rng.standard_normal((rows, hidden)) * 3).astype(np.float32)
    w = rng.standard_normal(hidden).astype(np.float32)
    out = poisoned((rows, hidden))
    gpu[1].rmsnorm_rows(out, to_device(x), to_device(w))
    want, *_ = expected("rmsnorm_rows", out, x, w)
    assert np.max(np.abs(host(out, gpu) - want)) <= ELEMENT_TOL


@gpu_test
@pytest.mark.parametrize("pieces", [1, 3])
@pytest.mark.parametrize("rows, hidden", [(1, 2880), (3, 37), (70, 2880), (5, 100), (2, 5000)])
def test_rmsnorm_split_rows_is_rmsnorm_then_split_bit_for_bit(gpu, rng, rows, hidden, pieces):
    """The fused kernel the engine runs on tensor cores: its t and its pieces are the two kernels' bits."""
    import cupy

    from cupy_getp.gpu.launch.gemm_tc import pieces_lda

    x = (rng.standard_normal((rows, hidden)) * 3).astype(np.float32)
    x[0, :3] = (1e30, -1e-30, 0.0)  # large, tiny and zero values split too
    w = rng.standard_normal(hidden).astype(np.float32)
    lda = pieces_lda(hidden)
    t_want, t_got = poisoned((rows, hidden)), poisoned((rows, hidden))
    ap_want = cupy.full((pieces, rows, lda), 0xFFFF, np.uint16)
    ap_got = cupy.full((pieces, rows, lda), 0xFFFF, np.uint16)
    xd, wd = to_device(x), to_device(w)
    gpu[1].rmsnorm_rows(t_want, xd, wd)
    gpu[1].split_pieces(ap_want, t_want)
    gpu[1].rmsnorm_split_rows(t_got, ap_got, xd, wd)
    np.testing.assert_array_equal(host(t_got, gpu).view(np.uint32), host(t_want, gpu).view(np.uint32))
    np.testing.assert_array_equal(host(ap_got, gpu), host(ap_want, gpu))


@gpu_test
@pytest.mark.parametrize("hidden", [37, 2880, 5000])
def test_rmsnorm_row_bits_do_not_depend_on_the_blocks_a_row(gpu, rng, hidden):
    """At few rows the helper runs several blocks a row, at many rows one (rows.py's _rmsnorm_grid): a row's
    values and pieces are the same bits either way."""
    import cupy

    from cupy_getp.gpu.launch.gemm_tc import pieces_lda
    from cupy_getp.gpu.launch.rows import RMS_SPLIT_ROWS, _rmsnorm_grid

    rows, lda = RMS_SPLIT_ROWS + 3, pieces_lda(hidden)
    if hidden > 256:  # the premise: one row takes several blocks, the whole batch one a row
        assert _rmsnorm_grid(1, lda)[1] > 1 and _rmsnorm_grid(rows, lda)[1] == 1
    x = (rng.standard_normal((rows, hidden)) * 3).astype(np.float32)
    w = rng.standard_normal(hidden).astype(np.float32)
    xd, wd = to_device(x), to_device(w)

    def norms(n):  # rmsnorm_rows, then rmsnorm_split_rows' t and pieces, of the first n rows
        t, t_split = poisoned((n, hidden)), poisoned((n, hidden))
        ap = cupy.full((3, n, lda), 0xFFFF, np.uint16)
        gpu[1].rmsnorm_rows(t, xd[:n], wd)
        gpu[1].rmsnorm_split_rows(t_split, ap, xd[:n], wd)
        return host(t, gpu).view(np.uint32), host(t_split, gpu).view(np.uint32), host(ap, gpu)

    t_all, ts_all, ap_all = norms(rows)
    for n in (1, 5, RMS_SPLIT_ROWS):
        t, ts, ap = norms(n)
        np.testing.assert_array_equal(t, t_all[:n])
        np.testing.assert_array_equal(ts, ts_all[:n])
        np.testing.assert_array_equal(ap, ap_all[:, :n])


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
    # 104 heads x 32 pairs = 3328: more pairs than a block rotates at a time (ROPE_IN_FLIGHT x BLOCK_SIZE = 3072)
    (96, 8, 64, 2, 32, [(0, 3), (1, 40), (2, 0)]),
])
@pytest.mark.parametrize("kv_cache", ["fp32", "bf16"])
def test_rope_kv_write(gpu, rng, n_heads, n_kv_heads, head_dim, slots, cache_len, rows, kv_cache):
    """The rotation against the oracle; the cache holds the rotated k heads the kernel leaves in qkv and the v
    heads, as its element holds them (bf16: each rounded to nearest even, bit for bit); nothing else moves."""
    kv_dim, q_dim, dtype = n_kv_heads * head_dim, n_heads * head_dim, KV_CACHE_DTYPES[kv_cache]
    row_slot = np.array([s for s, _ in rows], np.int32)
    row_pos = np.array([p for _, p in rows], np.int32)
    cos, sin = rope_tables(head_dim, int(row_pos.max()) + 3)
    qkv = rng.standard_normal((len(rows), q_dim + 2 * kv_dim)).astype(np.float32)
    key_cache = cached(rng.standard_normal((slots + 1, cache_len, kv_dim)), dtype)
    value_cache = cached(rng.standard_normal((slots + 1, cache_len, kv_dim)), dtype)
    qkv_d, kd, vd = to_device(qkv), to_device(key_cache), to_device(value_cache)
    gpu[1].rope_kv_write(qkv_d, to_device(cos), to_device(sin), kd, vd, to_device(row_slot), to_device(row_pos),
                         n_heads, n_kv_heads, head_dim)

    want_qkv, _, _, _, want_v, *_ = expected("rope_kv_write", qkv, cos, sin, key_cache, value_cache, row_slot,
                                             row_pos, n_heads, n_kv_heads, head_dim)
    written = np.zeros(key_cache.shape[:2], bool)
    written[row_slot, row_pos % cache_len] = True
    got_qkv, got_k, got_v = host(qkv_d, gpu), host(kd, gpu), host(vd, gpu)
    assert np.max(np.abs(got_qkv[:, : q_dim + kv_dim] - want_qkv[:, : q_dim + kv_dim])) <= ELEMENT_TOL
    np.testing.assert_array_equal(got_qkv[:, q_dim + kv_dim:], qkv[:, q_dim + kv_dim:])  # v untouched
    rotated_k = cached(got_qkv[:, q_dim: q_dim + kv_dim], dtype)
    np.testing.assert_array_equal(got_k[row_slot, row_pos % cache_len], rotated_k)
    np.testing.assert_array_equal(got_v[written], want_v[written])  # a copy (rounded to the cache's element)
    np.testing.assert_array_equal(got_k[~written], key_cache[~written])  # untouched entries
    np.testing.assert_array_equal(got_v[~written], value_cache[~written])


@gpu_test
# 16392: 4098 float4s, past one round of loads in flight (ARGMAX_IN_FLIGHT x BLOCK_SIZE = 4096)
@pytest.mark.parametrize("rows, vocab", [(1, 1), (3, 7), (4, 1001), (4, 16392), (5, 201088)])
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
CTX_20B = preset("20b").seq_len  # the 20b shape's last position is CTX_20B - 1


def split_len_of(head_dim: int, n_heads: int, n_kv_heads: int) -> int:
    """The engine's positions per split for a model of these attention shapes (fixed by the model alone)."""
    from cupy_getp.gpu.batch_shape import attn_split_len

    return attn_split_len(TINY.replace(head_dim=head_dim, n_attn_heads=n_heads, n_kv_heads=n_kv_heads))


def splits_of(window: int, cache_len: int, split_len: int) -> int:
    """The partial buffers' splits: ceil(span / split_len), span the most positions a row attends to."""
    span = min(window, cache_len) if window else cache_len
    return -(-span // split_len)


def reached_mask(positions, n_heads: int, n_split: int, window: int, split_len: int) -> np.ndarray:
    """(R, nh, n_split): True where the row at that position reaches the split (its positions [lo, pos],
    lo = max(0, pos - window + 1) on a windowed layer, else 0)."""
    positions = np.asarray(positions)
    lo = np.maximum(0, positions - window + 1) if window else np.zeros_like(positions)
    reached = -(-(positions - lo + 1) // split_len)
    mask = np.arange(n_split)[None, :] < reached[:, None]
    return np.broadcast_to(mask[:, None, :], (len(positions), n_heads, n_split))


def fill_caches(rng, rows, slots, cache_len, n_kv_heads, head_dim, kv_cache="fp32"):
    """Each slot's history of K and V (positions 0..its largest row position), written to the caches at
    p % C in increasing p (as the engine writes them), and the caches, of `kv_cache` elements (a BF16 cache's
    history: the values it holds, rounded to BF16, as the numpy engine's `kv_cache="bf16"` keeps them)."""
    kv_dim, dtype = n_kv_heads * head_dim, KV_CACHE_DTYPES[kv_cache]
    as_held = round_to_bf16 if kv_cache == "bf16" else (lambda a: a)
    key_cache = cached(rng.standard_normal((slots + 1, cache_len, kv_dim)), dtype)  # stale entries
    value_cache = cached(rng.standard_normal((slots + 1, cache_len, kv_dim)), dtype)
    history = {}
    for slot in {s for s, _ in rows}:
        n = max(p for s, p in rows if s == slot) + 1
        keys = as_held(rng.standard_normal((n, n_kv_heads, head_dim)).astype(np.float32))
        values = as_held(rng.standard_normal((n, n_kv_heads, head_dim)).astype(np.float32))
        for p in range(n):
            key_cache[slot, p % cache_len] = cached(keys[p].reshape(-1), dtype)
            value_cache[slot, p % cache_len] = cached(values[p].reshape(-1), dtype)
        history[slot] = keys, values
    return key_cache, value_cache, history


def run_attention(gpu, qkv, key_cache, value_cache, rows, sinks, n_heads, n_kv_heads, head_dim, window, split_len,
                  fused: bool = True):
    """Attention as the engine launches it (attn_rows: one launch up to ATTN_FUSED_MAX_ROWS rows), or with fused
    False attn_rows_partial then attn_rows_merge; partial buffers of the engine's splits, NaN-poisoned; host or
    device inputs. Returns the device att, partial_acc and partial_ml."""
    k = gpu[1]
    R = len(rows)
    n_split = splits_of(window, key_cache.shape[1], split_len)
    row_slot = to_device(np.array([s for s, _ in rows], np.int32))
    row_pos = to_device(np.array([p for _, p in rows], np.int32))
    partial_acc = poisoned((R, n_heads, n_split, head_dim))
    partial_ml = poisoned((R, n_heads, n_split, 2))
    att = poisoned((R, n_heads * head_dim))
    partial = (partial_acc, partial_ml, to_device(qkv), to_device(key_cache), to_device(value_cache), row_slot,
               row_pos)
    if fused:
        import cupy

        counters = cupy.zeros((R, n_kv_heads), np.uint32)
        k.attn_rows(att, *partial, to_device(sinks), counters, n_heads, n_kv_heads, head_dim, window, split_len)
        assert not counters.any(), "the merge's counters are left zero for the next launch"
    else:
        k.attn_rows_partial(*partial, n_heads, n_kv_heads, head_dim, window, split_len)
        k.attn_rows_merge(att, partial_acc, partial_ml, to_device(sinks), row_pos, window, split_len)
    return att, partial_acc, partial_ml


def assert_only_reached_splits_written(partial_acc, partial_ml, rows, window, split_len):
    """A split a row does not reach is not written (its poison stays); every split it reaches is finite."""
    R, n_heads, n_split, _ = partial_acc.shape
    reached = reached_mask([p for _, p in rows], n_heads, n_split, window, split_len)
    assert np.all(np.isnan(partial_ml[~reached])) and np.all(np.isnan(partial_acc[~reached]))
    assert np.all(np.isfinite(partial_ml[reached])) and np.all(np.isfinite(partial_acc[reached]))


ATTENTION_CASES = [
    # head_dim, n_heads, n_kv_heads, window, cache_len, rows (slot, position); split_len is the engine's
    (8, 6, 2, 0, 64, [(0, 0)]),  # one row, context 1, G = 3
    (8, 6, 2, 0, 64, [(0, 63), (1, 0), (2, 17), (2, 18), (3, 0)]),  # context = the cache; chunk rows; pad row
    (64, 64, 8, 0, 300, [(0, 299), (1, 0), (2, 40), (2, 41), (2, 42), (3, 255), (3, 256), (4, 31), (4, 32)]),
    # the 20b shape at contexts 1, 127, 128, 129 and seq_len: a full layer, and a windowed layer's ring of
    # C = window + chunk (positions past C wrap p % C)
    (64, 64, 8, 0, CTX_20B, [(0, 0), (1, 126), (2, 127), (3, 128), (4, CTX_20B - 1)]),
    (64, 64, 8, 128, 256, [(0, 0), (1, 126), (2, 127), (3, 128), (4, CTX_20B - 1)]),
    (64, 64, 8, 0, CTX_20B, [(0, CTX_20B - 1)]),  # one row, the longest context
    (64, 64, 8, 128, 256, [(0, 1000)]),  # one row on the ring
    (64, 64, 8, 128, 144, [(0, 500), (1, 143), (1, 144), (1, 145), (2, 7), (3, 127), (3, 128), (4, 1000)]),
    (30, 3, 1, 5, 9, [(0, 40), (0, 41), (1, 3), (2, 4), (2, 5)]),  # D = 30 (scalar loads), G = 3
    (30, 6, 2, 0, 70, [(0, 69), (1, 33)]),
    (32, 16, 1, 0, 100, [(0, 99), (1, 64), (2, 2)]),  # G = 16
    (64, 4, 4, 0, 80, [(0, 79), (1, 10)]),  # G = 1
    (64, 24, 3, 0, 90, [(0, 89), (1, 45)]),  # G = 8 with 3 kv heads
    (128, 16, 2, 0, 70, [(0, 69), (1, 20)]),  # head_dim 128
    (96, 12, 1, 20, 28, [(0, 60), (0, 61), (1, 27)]),  # 64 < head_dim < 128, G = 12, windowed
    (64, 8, 8, 0, 1024, [(0, 1023), (1, 511), (2, 700)]),
    # a ring shorter than a pass of the 16-byte copies (16 FP32 rows, 32 BF16): wraps within a pass
    (64, 8, 1, 5, 9, [(0, 40), (0, 41), (1, 3), (2, 4), (2, 5), (3, 0)]),
]
# head_dim 64 and two odd ones (40: the 64-position splits, 80: the 32-position ones) at groups 1, 8 and 16;
# contexts on both sides of the split boundaries; a full layer and a windowed ring (C = window + 64)
SHAPE_ROWS = [(0, 0), (1, 31), (1, 32), (2, 63), (2, 64), (3, 127), (3, 128), (3, 129), (4, 299)]
ATTENTION_CASES += [(head_dim, 2 * group, 2, window, cache_len, SHAPE_ROWS)
                    for head_dim in (64, 40, 80) for group in (1, 8, 16)
                    for window, cache_len in ((0, 300), (100, 164))]


@gpu_test
@pytest.mark.parametrize("head_dim, n_heads, n_kv_heads, window, cache_len, rows", ATTENTION_CASES)
@pytest.mark.parametrize("sink_scale, kv_cache", [(0.5, "fp32"), (8.0, "fp32"), (0.5, "bf16"), (8.0, "bf16")])
def test_attention_rows(gpu, rng, head_dim, n_heads, n_kv_heads, window, cache_len, rows, sink_scale, kv_cache):
    """Against the reference over each slot's history (a BF16 cache: the history it holds, rounded to BF16)."""
    slots = max(s for s, _ in rows) + 1
    key_cache, value_cache, history = fill_caches(rng, rows, slots, cache_len, n_kv_heads, head_dim, kv_cache)
    qkv = rng.standard_normal((len(rows), (n_heads + 2 * n_kv_heads) * head_dim)).astype(np.float32)
    sinks = (rng.standard_normal(n_heads) * sink_scale).astype(np.float32)
    if sink_scale > 1:
        sinks[0] = 20.0  # the sink takes nearly all of the probability
    split_len = split_len_of(head_dim, n_heads, n_kv_heads)
    att, partial_acc, partial_ml = run_attention(gpu, qkv, key_cache, value_cache, rows, sinks, n_heads,
                                                 n_kv_heads, head_dim, window, split_len)
    att = host(att, gpu)
    q_dim = n_heads * head_dim
    for r, (slot, pos) in enumerate(rows):
        keys, values = history[slot]
        want = attention(qkv[r, :q_dim].reshape(n_heads, head_dim), keys[: pos + 1], values[: pos + 1], sinks, window)
        assert np.max(np.abs(att[r] - want)) <= ATTN_TOL, f"row {r} (slot {slot}, position {pos})"
    assert_only_reached_splits_written(host(partial_acc, gpu), host(partial_ml, gpu), rows, window, split_len)


@gpu_test
@pytest.mark.parametrize("head_dim, n_heads, n_kv_heads, window, cache_len, rows",
                         [ATTENTION_CASES[i] for i in (0, 2, 4, 7, 8, 10, 14)])
def test_attention_in_one_launch_gives_the_two_launches_bits(gpu, rng, head_dim, n_heads, n_kv_heads, window,
                                                             cache_len, rows):
    """attn_rows_partial with its merge (the last split of each row and kv head merges) against the partials then
    attn_rows_merge: att and the partials bit for bit, twice in a row on the same counters (a graph replay's
    case: the last block sets its counter back to zero)."""
    slots = max(s for s, _ in rows) + 1
    key_cache, value_cache, _ = fill_caches(rng, rows, slots, cache_len, n_kv_heads, head_dim)
    qkv = rng.standard_normal((len(rows), (n_heads + 2 * n_kv_heads) * head_dim)).astype(np.float32)
    sinks = rng.standard_normal(n_heads).astype(np.float32)
    split_len = split_len_of(head_dim, n_heads, n_kv_heads)
    want = [host(a, gpu) for a in run_attention(gpu, qkv, key_cache, value_cache, rows, sinks, n_heads, n_kv_heads,
                                                head_dim, window, split_len, fused=False)]
    for _ in range(2):
        got = [host(a, gpu) for a in run_attention(gpu, qkv, key_cache, value_cache, rows, sinks, n_heads,
                                                   n_kv_heads, head_dim, window, split_len)]
        for name, g, w in zip(("att", "partial_acc", "partial_ml"), got, want):
            np.testing.assert_array_equal(g.view(np.uint32), w.view(np.uint32), err_msg=name)


@gpu_test
@pytest.mark.parametrize("head_dim, n_heads, n_kv_heads, window, cache_len, rows",
                         [c for c in ATTENTION_CASES if c[0] % 8 == 0 and c[4] < 4096])
@pytest.mark.parametrize("kv_cache", ["fp32", "bf16"])
def test_attention_copies_by_16_bytes_give_the_element_copies_bits(gpu, rng, head_dim, n_heads, n_kv_heads, window,
                                                                   cache_len, rows, kv_cache):
    """The caches' rows copied 16 bytes at a time (aligned caches: each thread carrying its rows' ring index from
    pass to pass) against element by element (the same caches 4 bytes past alignment): att and the partials bit for
    bit, rings shorter than a pass of copies among them."""
    slots = max(s for s, _ in rows) + 1
    key_cache, value_cache, _ = fill_caches(rng, rows, slots, cache_len, n_kv_heads, head_dim, kv_cache)
    qkv = rng.standard_normal((len(rows), (n_heads + 2 * n_kv_heads) * head_dim)).astype(np.float32)
    sinks = rng.standard_normal(n_heads).astype(np.float32)
    split_len = split_len_of(head_dim, n_heads, n_kv_heads)
    runs = []
    for offset in (0, 4):  # aligned: 16-byte copies; 4 bytes past: element by element
        caches = to_device(key_cache, offset), to_device(value_cache, offset)
        runs.append([host(a, gpu) for a in run_attention(gpu, qkv, *caches, rows, sinks, n_heads, n_kv_heads, head_dim,
                                                         window, split_len)])
    for name, vec, scalar in zip(("att", "partial_acc", "partial_ml"), *runs):
        np.testing.assert_array_equal(vec.view(np.uint32), scalar.view(np.uint32), err_msg=name)
    assert np.isfinite(runs[0][0]).all()


@gpu_test
@pytest.mark.parametrize("pieces", [1, 3])
def test_attention_in_one_launch_writes_the_merge_split_pieces(gpu, rng, pieces):
    """With pieces, the one launch writes attn_rows_merge_split's (att's BF16 pieces, zero padding columns) bit for
    bit, on a 20b-shaped layer of mixed contexts."""
    import cupy

    from cupy_getp.gpu.launch.gemm_tc import pieces_lda

    head_dim, n_heads, n_kv_heads, window, cache_len = 64, 64, 8, 0, 300
    rows = [(0, 299), (1, 0), (2, 40), (3, 255), (3, 256)]
    key_cache, value_cache, _ = fill_caches(rng, rows, 4, cache_len, n_kv_heads, head_dim)
    qkv = to_device(rng.standard_normal((len(rows), (n_heads + 2 * n_kv_heads) * head_dim)).astype(np.float32))
    sinks = to_device(rng.standard_normal(n_heads).astype(np.float32))
    split_len = split_len_of(head_dim, n_heads, n_kv_heads)
    R, n_split, lda = len(rows), splits_of(window, cache_len, split_len), pieces_lda(n_heads * head_dim)
    row_slot = to_device(np.array([s for s, _ in rows], np.int32))
    row_pos = to_device(np.array([p for _, p in rows], np.int32))
    kd, vd = to_device(key_cache), to_device(value_cache)
    outputs = []
    for fused in (False, True):
        acc, ml = poisoned((R, n_heads, n_split, head_dim)), poisoned((R, n_heads, n_split, 2))
        att, ap = poisoned((R, n_heads * head_dim)), cupy.full((pieces, R, lda), 0xFFFF, np.uint16)
        partial = (acc, ml, qkv, kd, vd, row_slot, row_pos)
        if fused:
            gpu[1].attn_rows(att, *partial, sinks, cupy.zeros((R, n_kv_heads), np.uint32), n_heads, n_kv_heads,
                             head_dim, window, split_len, ap)
        else:
            gpu[1].attn_rows_partial(*partial, n_heads, n_kv_heads, head_dim, window, split_len)
            gpu[1].attn_rows_merge(att, acc, ml, sinks, row_pos, window, split_len, ap)
        outputs.append((host(att, gpu).view(np.uint32), host(ap, gpu)))
    np.testing.assert_array_equal(outputs[1][0], outputs[0][0])
    np.testing.assert_array_equal(outputs[1][1], outputs[0][1])


@gpu_test
@pytest.mark.parametrize("window, cache_len", [(0, 200), (100, 140)])
def test_attention_rows_partials_per_split(gpu, rng, window, cache_len):
    """The partials of every split a row reaches against the oracle: m the max of the split's scores, l, acc."""
    head_dim, n_heads, n_kv_heads = 64, 16, 2
    split_len = split_len_of(head_dim, n_heads, n_kv_heads)
    rows = [(0, 150), (1, 39), (2, 0)]
    key_cache, value_cache, _ = fill_caches(rng, rows, 3, cache_len, n_kv_heads, head_dim)
    qkv = rng.standard_normal((3, (n_heads + 2 * n_kv_heads) * head_dim)).astype(np.float32)
    _, partial_acc, partial_ml = run_attention(gpu, qkv, key_cache, value_cache, rows, np.zeros(n_heads, np.float32),
                                               n_heads, n_kv_heads, head_dim, window, split_len)
    want_acc, want_ml, *_ = expected("attn_rows_partial", partial_acc, partial_ml, qkv, key_cache, value_cache,
                                     np.array([s for s, _ in rows], np.int32), np.array([p for _, p in rows], np.int32),
                                     n_heads, n_kv_heads, head_dim, window, split_len)
    partial_acc, partial_ml = host(partial_acc, gpu), host(partial_ml, gpu)
    assert_only_reached_splits_written(partial_acc, partial_ml, rows, window, split_len)
    reached = reached_mask([p for _, p in rows], n_heads, partial_ml.shape[2], window, split_len)
    (m, l), (want_m, want_l) = partial_ml[reached].T, want_ml[reached].T
    assert np.max(np.abs(m - want_m)) <= 1e-5
    assert np.all(np.abs(l - want_l) <= 1e-5 * want_l)
    assert np.max(np.abs(partial_acc[reached] - want_acc[reached])) <= ATTN_TOL


@gpu_test
@pytest.mark.parametrize("window, positions", [(0, [100, 255, 0, 191, 64]), (200, [100, 255, 0, 30, 250])])
def test_attention_rows_merge_alone(gpu, rng, window, positions):
    """The merge against its oracle on made-up partials: a row reads only the splits it reaches (the others
    hold NaNs here, as the partial kernel leaves them); the oracle sees them as empty (m = -inf, l = 0)."""
    n_heads, head_dim = 5, 30
    split_len = split_len_of(head_dim, n_heads, 1)
    n_split = splits_of(window, 256, split_len)
    row_pos = np.array(positions, np.int32)
    R = len(row_pos)
    reached = reached_mask(row_pos, n_heads, n_split, window, split_len)
    assert len({int(n) for n in reached[:, 0].sum(axis=1)}) > 1  # rows reaching different numbers of splits
    m = rng.standard_normal((R, n_heads, n_split)).astype(np.float32) * 3
    l = rng.uniform(0.5, 20, (R, n_heads, n_split)).astype(np.float32)
    ml = np.stack([m, l], axis=-1)
    acc = rng.standard_normal((R, n_heads, n_split, head_dim)).astype(np.float32)
    empty_ml, empty_acc = ml.copy(), acc.copy()
    empty_ml[~reached], empty_acc[~reached] = (-np.inf, 0.0), 0.0
    ml[~reached], acc[~reached] = np.nan, np.nan
    sinks = rng.standard_normal(n_heads).astype(np.float32) * 4
    att = poisoned((R, n_heads * head_dim))
    gpu[1].attn_rows_merge(att, to_device(acc), to_device(ml), to_device(sinks), to_device(row_pos), window, split_len)
    want, *_ = expected("attn_rows_merge", att, empty_acc, empty_ml, sinks, row_pos, window, split_len)
    assert np.max(np.abs(host(att, gpu) - want)) <= ELEMENT_TOL * 4


@gpu_test
@pytest.mark.parametrize("pieces", [1, 3])
@pytest.mark.parametrize("n_heads, n_kv_heads, head_dim, window, positions", [
    (64, 8, 64, 0, [511]), (5, 1, 30, 200, [100, 255, 0, 30]), (3, 1, 14, 0, [7, 0, 40])])
def test_attention_merge_split_is_merge_then_split_bit_for_bit(gpu, rng, pieces, n_heads, n_kv_heads, head_dim,
                                                               window, positions):
    """attn_rows_merge with `pieces` (attn_rows_merge_split, the engine's launch before the output projection on
    tensor cores): att and its pieces are the bits of the merge then split_pieces; pad columns (nh D = 42 and
    150: not multiples of 8) zeros. 64 x 64: one 20b row at context 512."""
    import cupy

    from cupy_getp.gpu.launch.gemm_tc import pieces_lda

    split_len = split_len_of(head_dim, n_heads, n_kv_heads)
    n_split = splits_of(window, 1024, split_len)
    row_pos = to_device(np.array(positions, np.int32))
    R, width = len(positions), n_heads * head_dim
    ml = np.stack([rng.standard_normal((R, n_heads, n_split)) * 3, rng.uniform(0.5, 20, (R, n_heads, n_split))],
                  axis=-1).astype(np.float32)
    acc = rng.standard_normal((R, n_heads, n_split, head_dim)).astype(np.float32)
    acc[0, 0, 0, :3] = (1e30, -1e-30, 0.0)
    acc, ml, sinks = to_device(acc), to_device(ml), to_device(rng.standard_normal(n_heads).astype(np.float32))
    lda = pieces_lda(width)
    att_want, att_got = poisoned((R, width)), poisoned((R, width))
    ap_want = cupy.full((pieces, R, lda), 0xFFFF, np.uint16)
    ap_got = cupy.full((pieces, R, lda), 0xFFFF, np.uint16)
    gpu[1].attn_rows_merge(att_want, acc, ml, sinks, row_pos, window, split_len)
    gpu[1].split_pieces(ap_want, att_want)
    gpu[1].attn_rows_merge(att_got, acc, ml, sinks, row_pos, window, split_len, ap_got)
    np.testing.assert_array_equal(host(att_got, gpu).view(np.uint32), host(att_want, gpu).view(np.uint32))
    np.testing.assert_array_equal(host(ap_got, gpu), host(ap_want, gpu))


@gpu_test
@pytest.mark.parametrize("with_pieces", [False, True])
@pytest.mark.parametrize("offset_bytes", [0, 4])
@pytest.mark.parametrize("n_heads, head_dim, rows", [(64, 64, 70), (5, 30, 3), (3, 15, 4), (2, 128, 1)])
def test_attention_merge_in_pairs_gives_the_one_dim_a_lane_bits(gpu, rng, monkeypatch, with_pieces, offset_bytes,
                                                                 n_heads, head_dim, rows):
    """attn_rows_merge takes two adjacent dims a lane (MERGE_PAIRS, the default) where head_dim is even and its
    buffers 8-byte aligned: att and its pieces (through attn_rows_merge_split, at up to 64 rows, and tc_split_rows
    above) are the bits of one dim a lane. Odd head_dim (15) and buffers 4 bytes past alignment take the one-dim
    path either way."""
    import cupy

    from cupy_getp.gpu.launch import attention as launch_attention
    from cupy_getp.gpu.launch.gemm_tc import pieces_lda

    split_len, window = 64, 0
    n_split = splits_of(window, 300, split_len)
    positions = rng.integers(0, 300, rows).astype(np.int32)
    positions[0] = 299
    row_pos = to_device(positions)
    ml = np.stack([rng.standard_normal((rows, n_heads, n_split)) * 3,
                   rng.uniform(0.5, 20, (rows, n_heads, n_split))], axis=-1).astype(np.float32)
    acc = rng.standard_normal((rows, n_heads, n_split, head_dim)).astype(np.float32)
    acc, ml = to_device(acc, offset_bytes), to_device(ml)
    sinks = to_device(rng.standard_normal(n_heads).astype(np.float32))
    width = n_heads * head_dim
    results = []
    for pairs in (0, 1):
        monkeypatch.setattr(launch_attention, "MERGE_PAIRS", pairs)
        att = to_device(np.full((rows, width), np.nan, np.float32), offset_bytes)
        ap = cupy.full((3, rows, pieces_lda(width)), 0xFFFF, np.uint16) if with_pieces else None
        gpu[1].attn_rows_merge(att, acc, ml, sinks, row_pos, window, split_len, ap)
        results.append((host(att, gpu), None if ap is None else host(ap, gpu)))
    (att_one, ap_one), (att_pairs, ap_pairs) = results
    assert not np.isnan(att_one).any()
    np.testing.assert_array_equal(att_pairs.view(np.uint32), att_one.view(np.uint32))
    if with_pieces:
        np.testing.assert_array_equal(ap_pairs, ap_one)


@pytest.mark.parametrize("rows", [1, 64, 65, 300])
def test_attention_merge_with_pieces_takes_one_launch_up_to_64_rows(monkeypatch, rows):
    """attn_rows_merge with `pieces`: attn_rows_merge_split up to MERGE_SPLIT_MAX_ROWS rows, else the merge then
    tc_split_rows (faster at 1024 rows); att and the pieces the same either way (the kernels' oracles here)."""
    import sys

    from batch_fakes import FakeDevice, FakeKernels, fake_cupy, host_array
    from cupy_getp.gpu.launch.attention import MERGE_SPLIT_MAX_ROWS
    from cupy_getp.gpu.launch.gemm_tc import pieces_lda

    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    rng = np.random.default_rng(rows)
    kernels = FakeKernels(FakeDevice())
    n_heads, head_dim, n_split, split_len = 3, 14, 2, 64
    row_pos = host_array(rng.integers(0, 2 * split_len, rows).astype(np.int32))
    acc = host_array(rng.standard_normal((rows, n_heads, n_split, head_dim)).astype(np.float32))
    ml = host_array(np.stack([rng.standard_normal((rows, n_heads, n_split)),
                              rng.uniform(0.5, 20, (rows, n_heads, n_split))], axis=-1).astype(np.float32))
    sinks = host_array(rng.standard_normal(n_heads).astype(np.float32))
    att = host_array(np.full((rows, n_heads * head_dim), np.nan, np.float32))
    ap = host_array(np.full((3, rows, pieces_lda(n_heads * head_dim)), 0xFFFF, np.uint16))
    kernels.attn_rows_merge(att, acc, ml, sinks, row_pos, 0, split_len, ap)
    fused = rows <= MERGE_SPLIT_MAX_ROWS
    assert kernels.launches == (["attn_rows_merge_split"] if fused else ["attn_rows_merge_f32", "tc_split_rows"])
    want_ap = host_array(np.zeros_like(ap))
    kernels.split_pieces(want_ap, att)
    assert not np.isnan(att).any()
    np.testing.assert_array_equal(ap, want_ap)


@pytest.mark.parametrize("rows", [1, 64, 65, 300])
def test_attention_takes_one_launch_up_to_64_rows(monkeypatch, rows):
    """attn_rows: the partials and their merge (with att's pieces) in one launch up to ATTN_FUSED_MAX_ROWS rows,
    else the partials then attn_rows_merge (with its own choice); the same att and pieces either way (the
    kernels' oracles here), the counters left zero."""
    import sys

    from batch_fakes import FakeDevice, FakeKernels, fake_cupy, host_array
    from cupy_getp.gpu.launch.attention import ATTN_FUSED_MAX_ROWS, MERGE_SPLIT_MAX_ROWS
    from cupy_getp.gpu.launch.gemm_tc import pieces_lda

    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    rng = np.random.default_rng(rows)
    n_heads, n_kv_heads, head_dim, cache_len = 4, 2, 16, 150
    split_len = split_len_of(head_dim, n_heads, n_kv_heads)
    n_split = splits_of(0, cache_len, split_len)
    positions = rng.integers(0, cache_len, rows)
    row_slot, row_pos = host_array(np.arange(rows, dtype=np.int32)), host_array(positions.astype(np.int32))
    caches = [host_array(rng.standard_normal((rows, cache_len, n_kv_heads * head_dim)).astype(np.float32))
              for _ in range(2)]
    qkv = host_array(rng.standard_normal((rows, (n_heads + 2 * n_kv_heads) * head_dim)).astype(np.float32))
    sinks = host_array(rng.standard_normal(n_heads).astype(np.float32))
    results = []
    for one_launch in (True, False):
        kernels = FakeKernels(FakeDevice())
        acc = host_array(np.zeros((rows, n_heads, n_split, head_dim), np.float32))
        ml = host_array(np.zeros((rows, n_heads, n_split, 2), np.float32))
        att = host_array(np.full((rows, n_heads * head_dim), np.nan, np.float32))
        ap = host_array(np.full((3, rows, pieces_lda(n_heads * head_dim)), 0xFFFF, np.uint16))
        partial = (acc, ml, qkv, *caches, row_slot, row_pos)
        if one_launch:
            counters = host_array(np.zeros((rows, n_kv_heads), np.uint32))
            kernels.attn_rows(att, *partial, sinks, counters, n_heads, n_kv_heads, head_dim, 0, split_len, ap)
            fused, merged = rows <= ATTN_FUSED_MAX_ROWS, rows <= MERGE_SPLIT_MAX_ROWS
            merge = ["attn_rows_merge_split"] if merged else ["attn_rows_merge_f32", "tc_split_rows"]
            assert kernels.launches == ["attn_rows_partial_d64_g8_f32"] + ([] if fused else merge)
            assert not counters.any()
        else:
            kernels.attn_rows_partial(*partial, n_heads, n_kv_heads, head_dim, 0, split_len)
            kernels.attn_rows_merge(att, acc, ml, sinks, row_pos, 0, split_len, ap)
        results.append((att, ap))
    assert not np.isnan(results[0][0]).any()
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])


PREFILL_CASES = [
    # head_dim, n_heads, n_kv_heads, window, cache_len, start, chunk: slot 0 holds positions 0..start-1 (earlier
    # steps) and takes start..start+chunk-1 in this step, beside a decode row of slot 1
    (64, 16, 2, 0, 40, 0, 12),  # a prompt's first chunk
    (64, 64, 8, 128, 256, 100, 128),  # the window's start moves inside the chunk (lo from 0 up to 100)
    (64, 64, 8, 128, 256, 300, 128),  # and the ring wraps: the chunk writes over positions it no longer needs
    (80, 16, 2, 20, 36, 50, 16),  # head_dim 80 (32-position splits): window crossing with a wrap
    (64, 64, 8, 0, CTX_20B, CTX_20B - 128, 128),  # the last chunk of a full layer, up to seq_len
]


@gpu_test
@pytest.mark.parametrize("head_dim, n_heads, n_kv_heads, window, cache_len, start, chunk", PREFILL_CASES)
def test_rope_kv_write_then_attention_over_a_prefill_chunk(gpu, rng, head_dim, n_heads, n_kv_heads, window,
                                                           cache_len, start, chunk):
    """A prefill chunk of one sequence and a decode row of another in one step, as the engine runs it:
    rope_kv_write puts the step's K and V in the caches (at p % C), then every row attends to its own
    positions <= its own (within the window), against numpy over each sequence's whole history."""
    kv_dim, q_dim = n_kv_heads * head_dim, n_heads * head_dim
    other = 3 * cache_len + 5 if window else cache_len - 1  # the decode row's position
    rows = [(0, p) for p in range(start, start + chunk)] + [(1, other)]
    first_new, n_positions = {0: start, 1: other}, {0: start + chunk, 1: other + 1}
    key_cache = rng.standard_normal((3, cache_len, kv_dim)).astype(np.float32)  # stale entries; slot 2 spare
    value_cache = rng.standard_normal((3, cache_len, kv_dim)).astype(np.float32)
    keys = {s: rng.standard_normal((n, n_kv_heads, head_dim)).astype(np.float32) for s, n in n_positions.items()}
    values = {s: rng.standard_normal((n, n_kv_heads, head_dim)).astype(np.float32) for s, n in n_positions.items()}
    for slot, first in first_new.items():  # earlier steps' (already rotated) K and V
        for p in range(first):
            key_cache[slot, p % cache_len] = keys[slot][p].reshape(-1)
            value_cache[slot, p % cache_len] = values[slot][p].reshape(-1)
    cos, sin = rope_tables(head_dim, max(n_positions.values()))
    qkv = rng.standard_normal((len(rows), q_dim + 2 * kv_dim)).astype(np.float32)
    sinks = rng.standard_normal(n_heads).astype(np.float32)
    qkv_d, kd, vd = to_device(qkv), to_device(key_cache), to_device(value_cache)
    row_slot = to_device(np.array([s for s, _ in rows], np.int32))
    row_pos = to_device(np.array([p for _, p in rows], np.int32))
    gpu[1].rope_kv_write(qkv_d, to_device(cos), to_device(sin), kd, vd, row_slot, row_pos, n_heads, n_kv_heads,
                         head_dim)
    att, _, _ = run_attention(gpu, qkv_d, kd, vd, rows, sinks, n_heads, n_kv_heads, head_dim, window,
                              split_len_of(head_dim, n_heads, n_kv_heads))
    att = host(att, gpu)

    qs = []
    for r, (slot, pos) in enumerate(rows):  # this step's rows: q and k rotated, k and v into the history
        qs.append(rope(qkv[r, :q_dim].reshape(n_heads, head_dim), cos[pos], sin[pos]))
        keys[slot][pos] = rope(qkv[r, q_dim: q_dim + kv_dim].reshape(n_kv_heads, head_dim), cos[pos], sin[pos])
        values[slot][pos] = qkv[r, q_dim + kv_dim:].reshape(n_kv_heads, head_dim)
    for r, (slot, pos) in enumerate(rows):
        want = attention(qs[r], keys[slot][: pos + 1], values[slot][: pos + 1], sinks, window)
        assert np.max(np.abs(att[r] - want)) <= ATTN_TOL, f"row {r} (slot {slot}, position {pos})"


# The cases the TF32 kernel takes (an FP32 cache, head_dim <= 64, groups <= 8)
TF32_CASES = [c for c in ATTENTION_CASES if c[0] <= 64 and c[1] // c[2] <= 8]


@pytest.fixture
def attn_tf32(monkeypatch):
    """ATTN_TF32 on for the test: the FP32 cache's head_dim <= 64, group <= 8 rows go to the TF32 kernel."""
    from cupy_getp.gpu.launch import attention as launch_attention

    monkeypatch.setattr(launch_attention, "ATTN_TF32", 1)
    assert launch_attention.attn_partial_kernel(64, 8) == launch_attention.ATTN_TF32_KERNEL


@gpu_test
@pytest.mark.parametrize("head_dim, n_heads, n_kv_heads, window, cache_len, rows", TF32_CASES)
@pytest.mark.parametrize("sink_scale", [0.5, 8.0])
@pytest.mark.parametrize("offset", [0, 4])
def test_attention_rows_on_the_tensor_cores_in_tf32(gpu, rng, attn_tf32, head_dim, n_heads, n_kv_heads, window,
                                                    cache_len, rows, sink_scale, offset):
    """The TF32 kernel against the reference over each slot's history, at the CUDA-core kernel's tolerance: the
    caches aligned (16-byte loads and copies) and 4 bytes past (element by element); the partials of the splits
    a row does not reach left alone; in one launch (<= 64 rows) and in two, the same bits."""
    slots = max(s for s, _ in rows) + 1
    key_cache, value_cache, history = fill_caches(rng, rows, slots, cache_len, n_kv_heads, head_dim)
    caches = to_device(key_cache, offset), to_device(value_cache, offset)
    qkv = rng.standard_normal((len(rows), (n_heads + 2 * n_kv_heads) * head_dim)).astype(np.float32)
    sinks = (rng.standard_normal(n_heads) * sink_scale).astype(np.float32)
    if sink_scale > 1:
        sinks[0] = 20.0
    split_len = split_len_of(head_dim, n_heads, n_kv_heads)
    runs = [[host(a, gpu) for a in run_attention(gpu, qkv, *caches, rows, sinks, n_heads, n_kv_heads, head_dim,
                                                 window, split_len, fused=fused)] for fused in (True, False)]
    for name, one, two in zip(("att", "partial_acc", "partial_ml"), *runs):
        np.testing.assert_array_equal(one.view(np.uint32), two.view(np.uint32), err_msg=name)
    att, partial_acc, partial_ml = runs[0]
    q_dim = n_heads * head_dim
    for r, (slot, pos) in enumerate(rows):
        keys, values = history[slot]
        want = attention(qkv[r, :q_dim].reshape(n_heads, head_dim), keys[: pos + 1], values[: pos + 1], sinks, window)
        assert np.max(np.abs(att[r] - want)) <= ATTN_TOL, f"row {r} (slot {slot}, position {pos})"
    assert_only_reached_splits_written(partial_acc, partial_ml, rows, window, split_len)


@gpu_test
@pytest.mark.parametrize("tf32", [False, True])
@pytest.mark.parametrize("bits", [0x7FFFFFFF, 0x7F800001, 0xFFC00000])
def test_a_nan_in_the_cache_gives_nan_attention_on_either_kernel(gpu, rng, monkeypatch, tf32, bits):
    """A NaN in a K row the row reads (any NaN: the GPU's own, one in the low mantissa bits the tensor cores do not
    read, a negative one) makes that KV head's outputs NaN, on the CUDA cores and in TF32 (whose integer rounding
    turned NaNs into zeros or inf, finite wrong outputs, until tc_tf32 passed them on); the other KV head's stay
    finite."""
    from cupy_getp.gpu.launch import attention as launch_attention

    monkeypatch.setattr(launch_attention, "ATTN_TF32", int(tf32))
    head_dim, n_heads, n_kv_heads, cache_len, rows = 64, 16, 2, 300, [(0, 200)]
    key_cache, value_cache, _ = fill_caches(rng, rows, 1, cache_len, n_kv_heads, head_dim)
    key_cache[0, 37, 5:6] = np.array([bits], np.uint32).view(np.float32)  # KV head 0, position 37
    qkv = rng.standard_normal((1, (n_heads + 2 * n_kv_heads) * head_dim)).astype(np.float32)
    sinks = rng.standard_normal(n_heads).astype(np.float32)
    att, _, _ = run_attention(gpu, qkv, key_cache, value_cache, rows, sinks, n_heads, n_kv_heads, head_dim, 0,
                              split_len_of(head_dim, n_heads, n_kv_heads))
    att = host(att, gpu).reshape(n_heads, head_dim)
    group = n_heads // n_kv_heads
    assert np.all(np.isnan(att[:group])) and np.all(np.isfinite(att[group:]))


@gpu_test
@pytest.mark.parametrize("head_dim, n_heads, n_kv_heads, window, cache_len", [(64, 64, 8, 0, CTX_20B),
                                                                              (64, 64, 8, 128, 256)])
def test_attention_row_in_tf32_is_bit_identical_whatever_the_other_rows(gpu, rng, attn_tf32, head_dim, n_heads,
                                                                        n_kv_heads, window, cache_len):
    """The TF32 kernel keeps the invariance: test_attention_row_is_bit_identical_whatever_the_other_rows on it."""
    test_attention_row_is_bit_identical_whatever_the_other_rows(gpu, rng, head_dim, n_heads, n_kv_heads, window,
                                                                cache_len, "fp32")


@gpu_test
@pytest.mark.parametrize("head_dim, n_heads, n_kv_heads, window, cache_len", [
    (64, 64, 8, 0, CTX_20B), (64, 64, 8, 128, 256), (80, 32, 2, 0, 300), (40, 16, 16, 100, 164)])
@pytest.mark.parametrize("kv_cache", ["fp32", "bf16"])
def test_attention_row_is_bit_identical_whatever_the_other_rows(gpu, rng, head_dim, n_heads, n_kv_heads, window,
                                                                  cache_len, kv_cache):
    """The invariance the engine relies on: a row's attention output is a function of its q, slot and position
    alone, bit for bit: the same alone, among 7 other rows, and among 300 others at another index."""
    slots, kv_dim, dtype = 24, n_kv_heads * head_dim, KV_CACHE_DTYPES[kv_cache]
    key_cache = to_device(cached(rng.standard_normal((slots + 1, cache_len, kv_dim)), dtype))  # uploaded once
    value_cache = to_device(cached(rng.standard_normal((slots + 1, cache_len, kv_dim)), dtype))
    sinks = rng.standard_normal(n_heads).astype(np.float32)
    split_len = split_len_of(head_dim, n_heads, n_kv_heads)
    last = 4 * cache_len if window else cache_len - 1  # the largest position: windowed rows wrap the ring
    q_width = (n_heads + 2 * n_kv_heads) * head_dim

    def output_of(row, q, others: int, index: int) -> np.ndarray:
        rows = list(zip(rng.integers(0, slots, others).tolist(), rng.integers(0, last + 1, others).tolist()))
        rows.insert(index, row)
        qkv = rng.standard_normal((len(rows), q_width)).astype(np.float32)
        qkv[index] = q
        att, _, _ = run_attention(gpu, qkv, key_cache, value_cache, rows, sinks, n_heads, n_kv_heads, head_dim,
                                  window, split_len)
        return host(att, gpu)[index]

    for row in ((7, last - 3), (3, 5), (slots - 1, split_len)):
        q = rng.standard_normal(q_width).astype(np.float32)
        alone = output_of(row, q, 0, 0)
        assert np.all(np.isfinite(alone))
        for others, index in ((7, 3), (300, 217)):
            got = output_of(row, q, others, index)
            np.testing.assert_array_equal(got.view(np.uint32), alone.view(np.uint32),
                                          err_msg=f"row {row} among {others} others at index {index}")


@gpu_test
def test_attention_rows_rejects_splits_that_cannot_cover_the_cache(gpu):
    import cupy

    R, n_heads, n_kv_heads, head_dim = 1, 2, 1, 8
    split_len = split_len_of(head_dim, n_heads, n_kv_heads)
    cache_len = split_len + 36
    cache = cupy.zeros((2, cache_len, head_dim), np.float32)
    args = (cupy.zeros((R, (n_heads + 2) * head_dim), np.float32), cache, cache,
            cupy.zeros(R, np.int32), cupy.zeros(R, np.int32), n_heads, n_kv_heads, head_dim)
    with pytest.raises(ValueError):  # one split cannot cover the full layer's cache_len positions
        gpu[1].attn_rows_partial(cupy.zeros((R, n_heads, 1, head_dim), np.float32),
                                 cupy.zeros((R, n_heads, 1, 2), np.float32), *args, 0, split_len)
    gpu[1].attn_rows_partial(cupy.zeros((R, n_heads, 1, head_dim), np.float32),  # a window <= split_len: one
                             cupy.zeros((R, n_heads, 1, 2), np.float32), *args, split_len - 14, split_len)
