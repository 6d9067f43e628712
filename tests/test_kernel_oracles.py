"""The CPU stand-ins of the kernels cannot drift from their launch helpers: `FakeKernels` is `Kernels`
with only the launch replaced, every entry point has exactly one oracle taking the kernel's parameters,
and the oracles agree with the reference engine's functions."""

from __future__ import annotations

import inspect
import shutil

import numpy as np
import pytest

from cupy_getp.bf16 import round_to_bf16
from cupy_getp.errors import KernelArgumentError, KernelDtypeError
from cupy_getp.gpu import kernels
from cupy_getp.gpu.launch.gemm_tc import pieces_lda
from cupy_getp.gpu.launch.moe import moe_padded_pairs
from cupy_getp.kv_cache import KV_CACHE_DTYPES
from cupy_getp.reference import attention, route

from batch_fakes import FakeKernels, expected, host_array
from kernel_oracles import ORACLES, cached, joined
from test_kernel_contracts import declared_kernels


def test_the_stand_in_replaces_only_the_launch():
    """A method of FakeKernels overriding a launch helper would be a second contract: none may exist."""
    assert issubclass(FakeKernels, kernels.Kernels)
    own = {name for name, value in vars(FakeKernels).items() if callable(value) and not name.startswith("__")}
    assert own == {"_launch"}, f"FakeKernels redefines {sorted(own - {'_launch'})}"


def test_every_entry_point_has_one_oracle():
    names = {n for family in kernels.ENTRY_POINTS.values() for n in family}
    assert set(ORACLES) == names


@pytest.mark.skipif(not shutil.which("cpp"), reason="the C preprocessor (cpp) is needed")
@pytest.mark.parametrize("family", kernels.families())
def test_each_oracle_takes_its_kernels_parameters(family):
    for name, n_params in declared_kernels(family, 32).items():
        assert len(inspect.signature(ORACLES[name]).parameters) == n_params, name


def test_helper_checks_run_on_the_cpu():
    """A wrong view shape or dtype is refused by the helper, as on the GPU, instead of broadcasting."""
    k = FakeKernels()
    x = np.zeros((3, 8), np.float32)
    with pytest.raises(KernelArgumentError, match="out: shape"):
        k.rmsnorm_rows(np.zeros((1, 8), np.float32), x, np.ones(8, np.float32))
    with pytest.raises(KernelDtypeError):
        k.embedding_rows(x, np.zeros((5, 8), np.float32), np.zeros(3, np.int64))
    k.rmsnorm_rows(np.zeros((3, 8), np.float32), x, np.ones(8, np.float32))
    assert k.launches == ["rmsnorm_rows_f32"]


@pytest.mark.parametrize("kv_cache", ["fp32", "bf16"])
@pytest.mark.parametrize("head_dim, n_heads, n_kv_heads, window, cache_len, split_len, rows", [
    (8, 6, 2, 0, 64, 16, [(0, 63), (1, 0), (2, 17), (2, 18)]),
    (30, 3, 1, 5, 9, 4, [(0, 40), (0, 41), (1, 3)]),  # a windowed ring that wraps
])
def test_attention_oracles_equal_the_reference(rng, head_dim, n_heads, n_kv_heads, window, cache_len, split_len,
                                               rows, kv_cache):
    """Over an FP32 cache, and over a BF16 one against the reference's keys and values rounded to BF16 (the
    numpy engine's `kv_cache="bf16"`)."""
    kv_dim = n_kv_heads * head_dim
    slots = max(s for s, _ in rows) + 1
    history = {s: rng.standard_normal((max(p for t, p in rows if t == s) + 1, 2, n_kv_heads, head_dim))
               .astype(np.float32) for s in range(slots)}
    if kv_cache == "bf16":
        history = {s: round_to_bf16(kv) for s, kv in history.items()}
    caches = np.zeros((2, slots, cache_len, kv_dim), KV_CACHE_DTYPES[kv_cache])
    for slot, kv in history.items():
        for p in range(kv.shape[0]):
            caches[:, slot, p % cache_len] = cached(kv[p].reshape(2, -1), caches.dtype)
    qkv = rng.standard_normal((len(rows), (n_heads + 2 * n_kv_heads) * head_dim)).astype(np.float32)
    sinks = rng.standard_normal(n_heads).astype(np.float32)
    n_split = -(-min(window or cache_len, cache_len) // split_len)
    k = FakeKernels()
    acc = np.zeros((len(rows), n_heads, n_split, head_dim), np.float32)
    ml = np.zeros((len(rows), n_heads, n_split, 2), np.float32)
    att = np.zeros((len(rows), n_heads * head_dim), np.float32)
    qkv, caches = host_array(qkv), host_array(caches)  # the helpers read device addresses (alignment)
    k.attn_rows_partial(acc, ml, qkv, caches[0], caches[1], np.array([s for s, _ in rows], np.int32),
                        np.array([p for _, p in rows], np.int32), n_heads, n_kv_heads, head_dim, window, split_len)
    k.attn_rows_merge(att, acc, ml, sinks, np.array([p for _, p in rows], np.int32), window, split_len)
    for r, (slot, pos) in enumerate(rows):
        kv = history[slot][:pos + 1]
        want = attention(qkv[r, :n_heads * head_dim].reshape(n_heads, head_dim), kv[:, 0], kv[:, 1], sinks, window)
        assert np.max(np.abs(att[r] - want)) <= 1e-6


def test_router_align_and_combine_oracles_equal_route_per_row(rng):
    rows, n_experts, top, block_m, hidden = 9, 7, 3, 4, 5
    t = rng.standard_normal((rows, hidden)).astype(np.float32)
    w_router = rng.standard_normal((n_experts, hidden)).astype(np.float32)
    b_router = rng.standard_normal(n_experts).astype(np.float32)
    scores = np.zeros((rows, n_experts), np.float32)
    padded = moe_padded_pairs(rows * top, n_experts, block_m)
    experts, weights = np.zeros((rows, top), np.int32), np.zeros((rows, top), np.float32)
    pair_of_padded, padded_of_pair = np.zeros(padded, np.int32), np.zeros(rows * top, np.int32)
    tile_expert = np.zeros(padded // block_m, np.int32)
    k = FakeKernels()
    k.router_rows(experts, weights, scores, w_router, b_router, t)
    np.testing.assert_allclose(scores, t @ w_router.T + b_router, rtol=1e-5, atol=1e-5)
    k.moe_align(pair_of_padded, padded_of_pair, tile_expert, experts, block_m, n_experts)
    out_of_pair = rng.standard_normal((rows * top, hidden)).astype(np.float32)
    y = np.zeros((padded, hidden), np.float32)
    y[padded_of_pair] = out_of_pair
    x, moe_out = np.zeros((rows, hidden), np.float32), np.zeros((rows, hidden), np.float32)
    k.moe_combine(x, moe_out, y, weights, padded_of_pair)
    for r in range(rows):
        chosen, w = route(scores[r], top)
        np.testing.assert_array_equal(experts[r], chosen)
        np.testing.assert_allclose(x[r], w @ out_of_pair[r * top:(r + 1) * top], rtol=1e-6, atol=1e-6)
    # a P too small for n_experts = None: pairs past P are left unplaced, never written out of bounds
    short = block_m * -(-rows * top // block_m)  # whole tiles for the pairs, fewer than the grouping needs
    k.moe_align(np.zeros(short, np.int32), padded_of_pair, np.zeros(short // block_m, np.int32), experts, block_m)
    assert np.all(padded_of_pair < short) and np.sum(padded_of_pair >= 0) <= short


def test_tensor_core_oracles_are_products_of_the_split(rng):
    m, kdim, n = 5, 13, 7
    a = (rng.standard_normal((m, kdim)) * np.exp(2 * rng.standard_normal((m, kdim)))).astype(np.float32)
    w = rng.integers(0x3C00, 0x3F80, (n, kdim)).astype(np.uint16)  # bf16 bits of moderate values
    a, w = host_array(a), host_array(w)  # the helpers read device addresses (alignment)
    ap = host_array(np.zeros((3, m, pieces_lda(kdim)), np.uint16))
    k = FakeKernels()
    k.split_pieces(ap, a)
    assert np.all(np.abs(joined(ap, kdim) - a) <= 2.0 ** -24 * np.abs(a)) and np.all(ap[:, :, kdim:] == 0)
    c_tc, c = np.zeros((m, n), np.float32), np.zeros((m, n), np.float32)
    k.gemm_tc(c_tc, ap, w)
    k.gemm(c, a, w)
    np.testing.assert_allclose(c_tc, c, rtol=1e-6)


def test_expected_copies_device_or_host_inputs_and_leaves_them_alone(rng):
    x = rng.standard_normal((2, 6)).astype(np.float32)
    out, x_after, w = expected("rmsnorm_rows", np.full((2, 6), np.nan, np.float32), x, np.ones(6, np.float32))
    assert np.all(np.isfinite(out)) and np.array_equal(x_after, x) and w.shape == (6,)
