"""The one-row products (matvec), the fused one-row expert kernels and the synthetic weights' generator against
numpy on random inputs, sizes that are not multiples of a block or warp included: the kernels' oracles
(tests/kernel_oracles.py, through `expected`) and the reference engine's functions. Tolerance (max abs diff):
docs/spec.md's for matvecs, 5e-5. The row kernels (embedding, rmsnorm, RoPE with the KV write, attention,
routing, argmax) are tested in tests/test_gpu_batch_attention.py and tests/test_gpu_batch_moe.py."""

from __future__ import annotations

import numpy as np
import pytest

from cupy_getp.bf16 import bf16_to_f32, f32_to_bf16
from cupy_getp.checkpoint import SyntheticStore
from cupy_getp.checkpoint.layout import LAYER_TENSORS
from cupy_getp.checkpoint.synthetic import stream_key
from cupy_getp.config import preset
from cupy_getp.reference import softmax

from batch_fakes import expected
from conftest import TINY
from gpu_helpers import host, poisoned, random_mxfp4_matrix, to_device

pytestmark = pytest.mark.gpu

MATVEC_TOL = 5e-5


@pytest.mark.parametrize("rows, cols", [(1, 1), (33, 31), (64, 2880), (201, 37), (5120, 2880), (7, 4096)])
@pytest.mark.parametrize("bias, accumulate", [(False, False), (True, True)])
def test_matvec_f32(gpu, rng, rows, cols, bias, accumulate):
    w = (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)
    x = rng.standard_normal(cols).astype(np.float32)
    b = rng.standard_normal(rows).astype(np.float32) if bias else None
    y0 = rng.standard_normal(rows).astype(np.float32)
    y = to_device(y0) if accumulate else poisoned(rows)
    gpu[1].matvec(y, to_device(w), to_device(x), to_device(b) if bias else None, accumulate)
    want, *_ = expected("matvec", y0 if accumulate else np.zeros(rows, np.float32), w, x, b, accumulate)
    assert np.max(np.abs(host(y, gpu) - want)) <= MATVEC_TOL


def test_matvec_f32_unaligned_view_uses_the_scalar_path(gpu, rng):
    """A view starting 4 bytes into an allocation must still be right (no 16-byte loads)."""
    w = (rng.standard_normal((9, 65)) / 8).astype(np.float32)
    x = rng.standard_normal(65).astype(np.float32)
    wd = to_device(np.concatenate([[0.0], w.reshape(-1)]).astype(np.float32))[1:].reshape(9, 65)
    y = poisoned(9)
    gpu[1].matvec(y, wd, to_device(x))
    assert np.max(np.abs(host(y, gpu) - w.astype(np.float64) @ x)) <= MATVEC_TOL


@pytest.mark.parametrize("rows, cols", [(1, 8), (33, 31), (5760, 2880), (100, 2888), (3, 20)])
def test_matvec_bf16w(gpu, rng, rows, cols):
    w = f32_to_bf16((rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32))
    x = rng.standard_normal(cols).astype(np.float32)
    y = poisoned(rows)
    gpu[1].matvec_bf16w(y, to_device(w), to_device(x))
    want, *_ = expected("matvec_bf16w", y, w, x)
    assert np.max(np.abs(host(y, gpu) - want)) <= MATVEC_TOL


@pytest.mark.parametrize("n_experts, k, hidden, inter", [(5, 2, 24, 20), (32, 4, 2880, 2880), (4, 3, 33, 17)])
def test_moe_kernels(gpu, rng, n_experts, k, hidden, inter):
    w1 = f32_to_bf16((rng.standard_normal((n_experts, 2 * inter, hidden)) / np.sqrt(hidden)).astype(np.float32))
    b1 = rng.standard_normal((n_experts, 2 * inter)).astype(np.float32)
    w2 = f32_to_bf16((rng.standard_normal((n_experts, hidden, inter)) / np.sqrt(inter)).astype(np.float32))
    b2 = rng.standard_normal((n_experts, hidden)).astype(np.float32)
    t = (rng.standard_normal(hidden) * 2).astype(np.float32)
    x0 = rng.standard_normal(hidden).astype(np.float32)
    experts = rng.choice(n_experts, k, replace=False).astype(np.int32)
    weights = softmax(rng.standard_normal(k).astype(np.float32))
    limit = 1.5

    g = poisoned((k, inter))
    gpu[1].moe_mlp1_swiglu(g, to_device(w1), to_device(b1), to_device(t), to_device(experts), limit)
    want_g, *_ = expected("moe_mlp1_swiglu", g, w1, b1, t, experts, limit)
    assert np.max(np.abs(host(g, gpu) - want_g)) <= MATVEC_TOL

    x, moe_out = to_device(x0), poisoned(hidden)
    gpu[1].moe_mlp2_accumulate(x, moe_out, to_device(w2), to_device(b2), to_device(want_g), to_device(experts),
                               to_device(weights))
    want_x, want, *_ = expected("moe_mlp2_accumulate", x0, moe_out, w2, b2, want_g, experts, weights)
    assert np.max(np.abs(host(moe_out, gpu) - want)) <= MATVEC_TOL
    assert np.max(np.abs(host(x, gpu) - want_x)) <= MATVEC_TOL


@pytest.mark.parametrize("n_experts, k, hidden, inter", [(5, 2, 24, 20), (32, 4, 2880, 2880), (4, 3, 33, 17)])
def test_moe_kernels_with_mxfp4_experts_equal_bf16_bit_for_bit(gpu, rng, n_experts, k, hidden, inter):
    """The one-row expert kernels on MXFP4 storage against BF16 storage of the same values: identical bits
    (partial blocks, the 20b shape, the scalar path), and both the oracle's within MATVEC_TOL."""
    from cupy_getp.gpu.launch.common import Mxfp4Matrix

    from kernel_oracles import widened

    mx1 = random_mxfp4_matrix(rng, (n_experts, 2 * inter, hidden))
    mx2 = random_mxfp4_matrix(rng, (n_experts, hidden, inter))
    w1, w2 = f32_to_bf16(widened(*mx1, hidden)), f32_to_bf16(widened(*mx2, inter))
    b1 = rng.standard_normal((n_experts, 2 * inter)).astype(np.float32)
    b2 = rng.standard_normal((n_experts, hidden)).astype(np.float32)
    t, x0 = (rng.standard_normal(hidden) * 2).astype(np.float32), rng.standard_normal(hidden).astype(np.float32)
    experts = to_device(rng.choice(n_experts, k, replace=False).astype(np.int32))
    weights = to_device(softmax(rng.standard_normal(k).astype(np.float32)))
    stored = {"bf16": (to_device(w1), to_device(w2)),
              "mxfp4": (Mxfp4Matrix(to_device(mx1[0]), to_device(mx1[1]), hidden),
                        Mxfp4Matrix(to_device(mx2[0]), to_device(mx2[1]), inter))}
    got = {}
    for kind, (d1, d2) in stored.items():
        g, x, moe_out = poisoned((k, inter)), to_device(x0), poisoned(hidden)
        gpu[1].moe_mlp1_swiglu(g, d1, to_device(b1), to_device(t), experts, 1.5)
        gpu[1].moe_mlp2_accumulate(x, moe_out, d2, to_device(b2), g, experts, weights)
        got[kind] = [host(a, gpu) for a in (g, moe_out, x)]
    for name, a, b in zip(("g", "moe_out", "x"), got["bf16"], got["mxfp4"]):
        np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32), err_msg=name)
    want_g, *_ = expected("moe_mlp1_swiglu", poisoned((k, inter)), w1, b1, t, host(experts, gpu), 1.5)
    assert np.max(np.abs(got["mxfp4"][0] - want_g)) <= MATVEC_TOL


@pytest.mark.parametrize("bf16_exact, mxfp4_experts", [(True, True), (False, True), (True, False)])
@pytest.mark.parametrize("config", [TINY, preset("7m")], ids=["tiny", "7m"])
def test_synthetic_weights_on_device_are_bit_identical(gpu, config, bf16_exact, mxfp4_experts):
    import cupy

    store = SyntheticStore(config, seed=11, bf16_exact=bf16_exact, mxfp4_experts=mxfp4_experts)
    for name in ("embedding", "rms_attn_w", "w_qkv", "attn_sinks", "w_mlp1", "w_mlp2", "b_mlp2"):
        host_values = store.read(name)
        layer = 1 if name in LAYER_TENSORS else None
        if layer is not None:
            host_values = host_values[layer]
        bf16 = name in ("w_mlp1", "w_mlp2")
        out = cupy.empty(host_values.shape, np.uint16 if bf16 else np.float32)
        init = store.inits[name]
        if store.is_mxfp4(name):
            gpu[1].synthetic_mxfp4(out.reshape(-1), 0, store.mxfp4_stream(name, layer))
        else:
            gpu[1].synthetic(out.reshape(-1), 0, stream_key(store.seed, name, layer), init.scale, init.offset,
                             store.rounds_to_bf16(name))
        got = host(out, gpu)
        np.testing.assert_array_equal(bf16_to_f32(got) if bf16 else got, host_values, err_msg=name)


@pytest.mark.parametrize("config", [TINY, preset("7m")], ids=["tiny", "7m"])
def test_synthetic_mxfp4_codes_on_device_are_bit_identical(gpu, config):
    """The codes and scales MXFP4 expert storage generates on the device: the host's, from a row offset (layer
    1's expert 1), with TINY's partial last block padded by code 0."""
    import cupy

    store = SyntheticStore(config, seed=11)
    for name in ("w_mlp1", "w_mlp2"):
        want_blocks, want_scales = store.read_mxfp4(name, (1, 1))
        rows = want_scales.shape[0]
        blocks, scales = cupy.full(want_blocks.shape, 0xFF, np.uint8), cupy.full(want_scales.shape, 0xFF, np.uint8)
        gpu[1].synthetic_mxfp4_codes(blocks, scales, rows, store.mxfp4_stream(name, 1))
        np.testing.assert_array_equal(host(blocks, gpu), want_blocks, err_msg=name)
        np.testing.assert_array_equal(host(scales, gpu), want_scales, err_msg=name)


def every_mxfp4_code_and_scale() -> tuple[np.ndarray, np.ndarray]:
    """(256 * 16,) code bytes and (256,) scales: every E8M0 scale, each block holding every E2M1 code in
    both nibbles (low: 0..15, high: 15..0)."""
    codes = np.arange(16, dtype=np.uint8) | (np.arange(15, -1, -1, dtype=np.uint8) << 4)
    return np.tile(codes, 256), np.arange(256, dtype=np.uint8)


def test_mxfp4_widening_equals_numpys_dequantize_bit_for_bit(gpu):
    """The widening every MXFP4 kernel does (common.h mxfp4_value), on every code and scale: the float32
    bits of dequantize_mxfp4, subnormal (scale 0, 1) and overflowing (255) results included."""
    from cupy_getp.checkpoint.safetensors import dequantize_mxfp4

    codes, scales = every_mxfp4_code_and_scale()
    out = poisoned(codes.size * 2)
    gpu[1].mxfp4_widen(out, to_device(codes), to_device(scales))
    with np.errstate(over="ignore"):  # scale 255: 2^128 times the codes >= 1 is inf, as on the device
        want = dequantize_mxfp4(codes.reshape(256, 16), scales).reshape(-1)
    np.testing.assert_array_equal(host(out, gpu).view(np.uint32), want.view(np.uint32))
