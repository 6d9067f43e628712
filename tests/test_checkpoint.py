"""Header, validation, .bin round trips through the memmap, the bfloat16 variant, synthetic models."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from cupy_getp.bf16 import bf16_to_f32, f32_to_bf16, round_to_bf16
from cupy_getp.checkpoint import (TENSOR_NAMES, ArrayStore, BinStore, SyntheticStore, Weights, open_store,
                                  tensor_shapes, write_bin)
from cupy_getp.checkpoint.layout import bin_size, n_params
from cupy_getp.config import HEADER_SIZE, PRESETS, ModelConfig
from cupy_getp.errors import CheckpointError, GetpError

from conftest import TINY


def test_header_is_60_bytes_and_round_trips():
    data = TINY.to_header()
    assert len(data) == HEADER_SIZE == 60
    assert ModelConfig.from_header(data) == TINY
    # field order and types of spec section 1
    fields = struct.unpack("<11iffif", data)
    assert fields[0] == TINY.vocab_size and fields[13] == TINY.sliding_window
    assert fields[11] == TINY.rope_theta and fields[14] == TINY.swiglu_limit


def test_presets_match_the_spec():
    assert PRESETS["20b"].hidden_dim == 2880 and PRESETS["20b"].n_layers == 24
    assert PRESETS["120b"].n_layers == 36 and PRESETS["120b"].n_experts == 128
    c = PRESETS["7m"]
    assert (c.hidden_dim, c.intermediate_dim, c.n_layers, c.head_dim, c.n_attn_heads, c.n_kv_heads) == \
        (32, 64, 2, 32, 2, 1)
    assert round(bin_size(PRESETS["20b"]) / 1e9) == 84


@pytest.mark.parametrize("change, message", [
    (dict(vocab_size=0), "vocab_size = 0"),
    (dict(hidden_dim=-3), "hidden_dim = -3"),
    (dict(head_dim=7), "head_dim = 7 must be even"),
    (dict(n_attn_heads=6, n_kv_heads=4), "not a multiple of n_kv_heads"),
    (dict(experts_per_token=6), "experts_per_token = 6 > n_experts = 5"),
    (dict(sliding_window=-1), "sliding_window = -1"),
    (dict(rope_theta=float("nan")), "rope_theta = nan"),
    (dict(swiglu_limit=0.0), "swiglu_limit = 0.0"),
    (dict(initial_context_length=100000), "YaRN needs 0 < low < high"),
])
def test_invalid_headers_name_the_field(change, message):
    with pytest.raises(CheckpointError, match=message):
        ModelConfig.from_header(TINY.replace(**change).to_header())


def test_short_header():
    with pytest.raises(CheckpointError, match="shorter than the 60-byte header"):
        ModelConfig.from_header(b"\0" * 10)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_bin_round_trip_through_memmap(tmp_path, tiny_weights, dtype):
    path = tmp_path / "tiny.bin"
    size = write_bin(path, tiny_weights, dtype)
    assert size == path.stat().st_size == bin_size(TINY, 4 if dtype == "float32" else 2)
    store = BinStore(path)
    assert store.config == TINY and store.storage_dtype == dtype
    loaded = Weights(store)
    for name in TENSOR_NAMES:
        view = store.read(name)
        assert isinstance(view.base, np.memmap) or isinstance(view, np.memmap), f"{name} is a copy"
        want = tiny_weights.f32(name)
        want = want if dtype == "float32" else round_to_bf16(want)
        np.testing.assert_array_equal(loaded.f32(name), want, err_msg=name)
    # per-layer and per-expert access
    np.testing.assert_array_equal(loaded.layer(1).expert(3).w_mlp2, loaded.f32("w_mlp2")[1, 3])
    np.testing.assert_array_equal(loaded.layer(2).b_qkv, loaded.f32("b_qkv")[2])


def test_tensor_offsets_follow_the_spec_order(tmp_path):
    """Each tensor filled with its index: the file must hold them back to back in spec order."""
    shapes = tensor_shapes(TINY)
    arrays = {n: np.full(s, i, np.float32) for i, (n, s) in enumerate(shapes.items())}
    path = tmp_path / "order.bin"
    write_bin(path, Weights(ArrayStore(TINY, arrays)))
    flat = np.fromfile(path, np.float32, offset=HEADER_SIZE)
    expected = np.concatenate([np.full(math.prod(s), i, np.float32) for i, s in enumerate(shapes.values())])
    np.testing.assert_array_equal(flat, expected)
    assert TENSOR_NAMES[0] == "embedding" and TENSOR_NAMES[-1] == "b_mlp2"


@pytest.mark.parametrize("delta, problem", [(-4, "truncated"), (4, "oversized"), (-n_params(TINY) * 2 + 2,
                                                                                     "truncated")])
def test_wrong_size_is_rejected(tmp_path, tiny_weights, delta, problem):
    path = tmp_path / "bad.bin"
    write_bin(path, tiny_weights)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size + delta)
    with pytest.raises(CheckpointError, match=problem):
        BinStore(path)


def test_in_between_size_is_rejected(tmp_path, tiny_weights):
    path = tmp_path / "bad.bin"
    write_bin(path, tiny_weights)
    with open(path, "r+b") as f:
        f.truncate(bin_size(TINY, 3))
    with pytest.raises(CheckpointError, match=f"truncated: {bin_size(TINY, 3)} bytes, but its header describes "
                                              f"{bin_size(TINY, 4)} bytes as float32 or {bin_size(TINY, 2)} bytes"):
        BinStore(path)


def test_write_failure_leaves_no_file(tmp_path, tiny_weights):
    class Broken(Weights):
        def f32(self, name, *index):
            if name == "w_mlp1":
                raise RuntimeError("disk on fire")
            return super().f32(name, *index)

    path = tmp_path / "partial.bin"
    with pytest.raises(RuntimeError):
        write_bin(path, Broken(tiny_weights.store))
    assert list(tmp_path.iterdir()) == []


def test_synthetic_is_deterministic_and_sliceable():
    a, b = SyntheticStore(TINY, seed=5), SyntheticStore(TINY, seed=5)
    other = SyntheticStore(TINY, seed=6)
    for name in TENSOR_NAMES:
        full = a.read(name)
        np.testing.assert_array_equal(full, b.read(name))
        assert not np.array_equal(full, other.read(name)), name
    full = a.read("w_mlp1")
    np.testing.assert_array_equal(a.read("w_mlp1", (2, 4)), full[2, 4])
    np.testing.assert_array_equal(a.read("w_mlp1", (1, 3, 7)), full[1, 3, 7])
    np.testing.assert_array_equal(a.read("embedding", (41,)), a.read("embedding")[41])
    # an MXFP4 slice that starts and ends inside a row's blocks (TINY's rows are not whole blocks)
    np.testing.assert_array_equal(a.read("w_mlp2", (2, 1, 5, slice(3, 21))), a.read("w_mlp2")[2, 1, 5, 3:21])


def _block_scale(values: np.ndarray) -> int | None:
    """The power of two k with every value of the block in FP4_VALUES * 2^k, or None."""
    from cupy_getp.checkpoint.safetensors import FP4_VALUES

    top = float(np.max(np.abs(values)))
    if top == 0.0:
        return 0
    first = math.floor(math.log2(top))
    for k in range(first - 3, first + 2):
        if np.isin(np.ldexp(values.astype(np.float64), -k), FP4_VALUES).all():
            return k
    return None


@pytest.mark.parametrize("config", [TINY, PRESETS["7m"]], ids=["tiny", "7m"])
def test_synthetic_experts_are_mxfp4_values(config):
    """Every 32 values of a row (the last block may be partial) share one power-of-two scale and are E2M1
    values under it, as in the published checkpoints; their spread stays near the uniform values'."""
    store = SyntheticStore(config, seed=5)
    for name in ("w_mlp1", "w_mlp2"):
        rows = store.read(name).reshape(-1, config.hidden_dim if name == "w_mlp1" else config.intermediate_dim)
        scales = [_block_scale(rows[r, c:c + 32]) for r in range(0, len(rows), 7)
                  for c in range(0, rows.shape[1], 32)]
        assert None not in scales, name
        assert len(set(scales)) >= 3, name  # scales vary from block to block
        uniform_std = store.inits[name].scale / math.sqrt(3)
        assert 0.5 < float(np.std(rows)) / uniform_std < 2.0, name


def test_bf16_only_experts_keep_the_uniform_values():
    """mxfp4_experts=False: the MoE matrices are the uniform stream rounded to bfloat16 (earlier presets),
    which MXFP4 cannot hold; the other tensors are unchanged."""
    from cupy_getp.checkpoint.synthetic import stream_key, uniform_values

    mx, plain = SyntheticStore(TINY, seed=5), SyntheticStore(TINY, seed=5, mxfp4_experts=False)
    want = round_to_bf16(uniform_values(stream_key(5, "w_mlp1", 1), 0, math.prod(TINY_EXPERT_SHAPE),
                                        plain.inits["w_mlp1"]))
    np.testing.assert_array_equal(plain.read("w_mlp1", (1,)).reshape(-1), want)
    assert _block_scale(plain.read("w_mlp1", (1, 0, 0))[:24]) is None
    assert not np.array_equal(mx.read("w_mlp1"), plain.read("w_mlp1"))
    np.testing.assert_array_equal(mx.read("w_qkv"), plain.read("w_qkv"))


@pytest.mark.parametrize("config", [TINY, PRESETS["7m"]], ids=["tiny", "7m"])
def test_synthetic_experts_come_as_mxfp4_codes_and_scales(config):
    """`Weights.mxfp4` of a synthetic model: what `read` decodes (rows padded to whole blocks with code 0),
    for a layer, an expert, a row range; None for BF16-only experts and for other stores."""
    from cupy_getp.checkpoint.safetensors import dequantize_mxfp4

    weights = Weights(SyntheticStore(config, seed=5))
    cols = config.hidden_dim
    blocks, scales = weights.mxfp4("w_mlp1", 1)
    assert blocks.shape == (config.n_experts, 2 * config.intermediate_dim, -(-cols // 32), 16)
    assert scales.shape == blocks.shape[:-1] and blocks.dtype == scales.dtype == np.uint8
    np.testing.assert_array_equal(dequantize_mxfp4(blocks, scales)[..., :cols], weights.f32("w_mlp1", 1))
    assert not dequantize_mxfp4(blocks, scales)[..., cols:].any()
    np.testing.assert_array_equal(weights.mxfp4("w_mlp1", 1, 2, slice(3, 7))[0], blocks[2, 3:7])
    np.testing.assert_array_equal(weights.mxfp4("w_mlp1")[1][1], scales)
    assert weights.mxfp4("b_mlp1", 1) is None
    assert Weights(SyntheticStore(config, seed=5, mxfp4_experts=False)).mxfp4("w_mlp1", 1) is None
    assert Weights(ArrayStore.materialize(SyntheticStore(TINY, seed=5))).mxfp4("w_mlp1", 1) is None


TINY_EXPERT_SHAPE = (TINY.n_experts, 2 * TINY.intermediate_dim, TINY.hidden_dim)


def test_synthetic_value_distribution():
    store = SyntheticStore(PRESETS["7m"], seed=42)
    emb = store.read("embedding")
    assert emb.dtype == np.float32 and emb.shape == (201088, 32)
    assert -1.0 <= emb.min() and emb.max() <= 1.0  # [-1, 1), then rounded to bfloat16 (1.0 reachable)
    assert abs(float(emb.mean())) < 0.01 and abs(float(emb.std()) - 1 / math.sqrt(3)) < 0.01
    rms = store.read("rms_attn_w")
    assert 0.79 <= rms.min() and rms.max() <= 1.21  # 1 + 0.2 [-1, 1), bfloat16 spacing 2^-7 near 1.2


def test_open_store_sources(tmp_path, tiny_weights):
    assert open_store("7m").config == PRESETS["7m"]
    path = tmp_path / "m.bin"
    write_bin(path, tiny_weights)
    assert isinstance(open_store(str(path)), BinStore)
    with pytest.raises(CheckpointError, match="no model file"):
        open_store(tmp_path / "missing.bin")


# -- bfloat16 ----------------------------------------------------------------------------------------
def _bf16_nearest_even(x: float) -> int:
    """Independent RNE: pick between the two neighbouring bf16 values by exact float64 distance."""
    bits = np.float32(x).view(np.uint32).item()
    lo = bits >> 16
    candidates = [lo, lo + 1]
    values = [float(np.uint32(c << 16).view(np.float32)) for c in candidates]
    d = [abs(v - float(np.float32(x))) for v in values]
    if d[0] != d[1]:
        return candidates[int(d[1] < d[0])]
    return candidates[0] if candidates[0] % 2 == 0 else candidates[1]


def test_f32_to_bf16_is_round_to_nearest_even():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(2000).astype(np.float32) * 10.0 ** rng.integers(-30, 30, 2000),
                        # exact ties: low 16 bits 0x8000
                        (rng.integers(0, 2**15, 200, dtype=np.uint32) << 16 | 0x8000).view(np.float32)])
    x = x[np.isfinite(x)].astype(np.float32)
    got = f32_to_bf16(x)
    want = np.array([_bf16_nearest_even(v) for v in x], np.uint16)
    np.testing.assert_array_equal(got, want)


def test_bf16_special_values():
    x = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, np.finfo(np.float32).max], np.float32)
    h = f32_to_bf16(x)
    back = bf16_to_f32(h)
    assert np.isnan(back[0]) and np.isnan(back[1])
    assert back[2] == np.inf and back[3] == -np.inf
    assert h[4] == 0 and h[5] == 0x8000
    assert back[6] == np.inf  # max float32 rounds up past the largest bf16
    # a NaN whose payload lives only in the low bits must stay NaN (plain rounding would give inf)
    sneaky = np.array([0x7F800001], np.uint32).view(np.float32)
    assert np.isnan(bf16_to_f32(f32_to_bf16(sneaky))[0])


def test_not_enough_disk_space_is_reported_before_writing(tmp_path, tiny_weights, monkeypatch):
    import shutil

    real = shutil.disk_usage
    monkeypatch.setattr("cupy_getp.fileio.shutil.disk_usage",
                        lambda p: real(p)._replace(free=bin_size(TINY, 4) - 1))
    with pytest.raises(GetpError, match="cannot write .*big.bin: not enough disk space: it needs 0.1 MB, 0.1 MB free"):
        write_bin(tmp_path / "big.bin", tiny_weights)
    assert list(tmp_path.iterdir()) == []
    assert list(tmp_path.iterdir()) == []


def test_synthetic_models_are_bf16_exact_unless_asked_otherwise():
    """Like published checkpoints, every synthetic weight is a bfloat16 value; bf16_exact=False keeps
    float32 values outside the MoE matrices (for the FP32 fallback's tests)."""
    from cupy_getp.bf16 import round_to_bf16
    from cupy_getp.checkpoint import SyntheticStore
    from conftest import TINY

    exact, plain = SyntheticStore(TINY, seed=5), SyntheticStore(TINY, seed=5, bf16_exact=False)
    for name in ("w_qkv", "out", "rms_attn_w", "w_mlp1"):
        np.testing.assert_array_equal(exact.read(name), round_to_bf16(exact.read(name)))
    assert not np.array_equal(plain.read("w_qkv"), round_to_bf16(plain.read("w_qkv")))
    np.testing.assert_array_equal(plain.read("w_mlp1"), exact.read("w_mlp1"))


def test_planned_device_storage_is_decided_on_the_host():
    """`info`'s storage line: dense GEMM weights BF16 exactly when every value is one (read through the
    store for files), MoE always BF16, the rest FP32."""
    from cupy_getp.gpu.weights import DENSE_GEMM_WEIGHTS, planned_storage

    exact = planned_storage(Weights(SyntheticStore(TINY, seed=5)))
    assert {exact[n] for n in DENSE_GEMM_WEIGHTS} == {"bf16 (lossless)"} and exact["w_mlp1"] == "bf16"
    assert exact["embedding"] == "fp32"
    store = ArrayStore.materialize(SyntheticStore(TINY, seed=5))
    store.arrays["w_o"].reshape(-1)[7] += np.float32(2.0 ** -20)
    mixed = planned_storage(Weights(store))
    assert mixed["w_o"] == "fp32" and mixed["w_qkv"] == "bf16 (lossless)"
    plain = planned_storage(Weights(SyntheticStore(TINY, seed=5, bf16_exact=False)))
    assert {plain[n] for n in DENSE_GEMM_WEIGHTS} == {"fp32"}
