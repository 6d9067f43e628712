"""Checkpoint directories in both layouts (no torch needed): loading gives back the written weights,
MXFP4 decodes per the spec, export to .bin equals loading the directory, bad directories fail clearly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cupy_getp.bf16 import round_to_bf16
from cupy_getp.checkpoint import BinStore, SyntheticStore, TENSOR_NAMES, Weights, open_store
from cupy_getp.checkpoint.layout import bin_size
from cupy_getp.checkpoint.safetensors import SafetensorsFile, dequantize_mxfp4
from cupy_getp.config import ModelConfig
from cupy_getp.engine.factory import create_engine
from cupy_getp.errors import CheckpointError

from checkpoints import (hf_config, hf_tensors, openai_config, openai_tensors, random_mxfp4, write_checkpoint,
                         write_safetensors)
from conftest import cli

# Multiples of 32 where MXFP4 needs them (hidden, intermediate); grouped heads; window < test length.
SMALL = ModelConfig(
    vocab_size=97, hidden_dim=64, n_experts=4, experts_per_token=2, intermediate_dim=32, n_layers=2, head_dim=16,
    n_attn_heads=4, n_kv_heads=2, seq_len=64, initial_context_length=512, rope_theta=10000.0,
    rope_scaling_factor=4.0, sliding_window=5, swiglu_limit=7.0,
).validate()


@pytest.fixture(scope="module")
def spec_weights():
    store = SyntheticStore(SMALL, seed=3)
    return {n: store.read(n) for n in TENSOR_NAMES}


@pytest.fixture(scope="module")
def mxfp4():
    rng = np.random.default_rng(0)
    c = SMALL
    return {"w_mlp1": random_mxfp4_layers(rng, c, 2 * c.intermediate_dim, c.hidden_dim),
            "w_mlp2": random_mxfp4_layers(rng, c, c.hidden_dim, c.intermediate_dim)}


def random_mxfp4_layers(rng, c, rows, cols):
    pairs = [random_mxfp4(rng, c.n_experts, rows, cols) for _ in range(c.n_layers)]
    return np.stack([b for b, _ in pairs]), np.stack([s for _, s in pairs])


def with_dequantized(weights, mxfp4):
    return weights | {n: dequantize_mxfp4(*mxfp4[n]) for n in ("w_mlp1", "w_mlp2")}


def assert_store_equals(store, expected: dict):
    weights = Weights(store)
    for name in TENSOR_NAMES:
        np.testing.assert_array_equal(weights.f32(name), expected[name], err_msg=name)
    # slices read lazily equal slices of the whole
    np.testing.assert_array_equal(weights.f32("w_mlp1", 1, 2), expected["w_mlp1"][1, 2])
    np.testing.assert_array_equal(weights.f32("w_mlp2", 0, 3, slice(5, 9)), expected["w_mlp2"][0, 3, 5:9])
    np.testing.assert_array_equal(weights.f32("w_qkv", 1, slice(3, 40)), expected["w_qkv"][1, 3:40])
    np.testing.assert_array_equal(weights.f32("embedding", slice(10, 20)), expected["embedding"][10:20])


def test_mxfp4_decoding_follows_the_spec():
    # byte 0x21: low nibble 1 (+0.5) first, high nibble 2 (+1.0); scale 128 = 2^1; code 15 = -6, 8 = -0
    blocks = np.zeros((1, 16), np.uint8)
    blocks[0, 0], blocks[0, 1] = 0x21, 0x8F
    values = dequantize_mxfp4(blocks, np.array([128], np.uint8))
    assert values.shape == (32,) and values.dtype == np.float32
    assert values[:4].tolist() == [1.0, 2.0, -12.0, -0.0] and np.signbit(values[3])
    assert np.all(values[4:] == 0)
    small = dequantize_mxfp4(np.full((2, 3, 16), 0x77, np.uint8), np.full((2, 3), 127 - 10, np.uint8))
    assert small.shape == (2, 96) and np.all(small == 6.0 * 2.0 ** -10)
    np.testing.assert_array_equal(round_to_bf16(small), small)  # MXFP4 values are bfloat16-exact


def test_hf_plain_layout(tmp_path, spec_weights):
    path = write_checkpoint(tmp_path / "hf", hf_tensors(spec_weights, SMALL), hf_config(SMALL), shards=3)
    store = open_store(path)
    assert store.config == SMALL and "Hugging Face" in store.description
    assert_store_equals(store, spec_weights)


def test_hf_mxfp4_layout(tmp_path, spec_weights, mxfp4):
    path = write_checkpoint(tmp_path / "hfq", hf_tensors(spec_weights, SMALL, mxfp4), hf_config(SMALL))
    assert_store_equals(open_store(path), with_dequantized(spec_weights, mxfp4))


def test_openai_layout_bf16_dense_and_mxfp4(tmp_path, spec_weights, mxfp4):
    tensors = openai_tensors(spec_weights, SMALL, mxfp4)
    dense = tuple(n for n in tensors if not n.endswith((".blocks", ".scales")))
    path = write_checkpoint(tmp_path / "oai", tensors, openai_config(SMALL), bf16=dense)
    store = open_store(path, config={"seq_len": 64})
    assert store.config == SMALL and "openai" in store.description
    expected = {n: round_to_bf16(a) for n, a in spec_weights.items()}
    assert_store_equals(store, with_dequantized(expected, mxfp4))


@pytest.mark.parametrize("layout", ["openai", "hf"])
def test_mxfp4_experts_read_as_stored_without_widening(tmp_path, spec_weights, mxfp4, layout):
    """Both published layouts give their blocks and scales back byte for byte, per layer, expert or row
    range, and they decode to what `read` gives; plain experts, dense tensors and a .bin have no MXFP4 form."""
    tensors, config = ((openai_tensors(spec_weights, SMALL, mxfp4), openai_config(SMALL)) if layout == "openai"
                       else (hf_tensors(spec_weights, SMALL, mxfp4), hf_config(SMALL)))
    weights = Weights(open_store(write_checkpoint(tmp_path / layout, tensors, config), config={"seq_len": 64}))
    for name in ("w_mlp1", "w_mlp2"):
        blocks, scales = mxfp4[name]
        got = weights.mxfp4(name, 1, 2)
        assert got[0].dtype == got[1].dtype == np.uint8
        np.testing.assert_array_equal(got[0], blocks[1, 2])
        np.testing.assert_array_equal(got[1], scales[1, 2])
        np.testing.assert_array_equal(dequantize_mxfp4(*got), weights.f32(name, 1, 2))
        whole = weights.mxfp4(name)
        np.testing.assert_array_equal(whole[0], blocks)
        np.testing.assert_array_equal(weights.mxfp4(name, 0, 3, slice(4, 9))[1], scales[0, 3, 4:9])
    assert weights.mxfp4("w_qkv", 0) is None
    plain = write_checkpoint(tmp_path / "plain", openai_tensors(spec_weights, SMALL), openai_config(SMALL))
    assert Weights(open_store(plain)).mxfp4("w_mlp1", 0) is None


def test_mxfp4_blocks_of_the_wrong_shape_are_named(tmp_path, spec_weights, mxfp4):
    tensors = openai_tensors(spec_weights, SMALL, mxfp4)
    tensors["block.1.mlp.mlp1_weight.scales"] = tensors["block.1.mlp.mlp1_weight.scales"][:, :, :1].copy()
    weights = Weights(open_store(write_checkpoint(tmp_path / "bad", tensors, openai_config(SMALL))))
    with pytest.raises(CheckpointError, match=r"layer 1 w_mlp1: MXFP4 blocks .* and scales \(4, 64, 1\)"):
        weights.mxfp4("w_mlp1", 1)


def test_openai_layout_plain_experts_default_seq_len(tmp_path, spec_weights):
    path = write_checkpoint(tmp_path / "oai", openai_tensors(spec_weights, SMALL), openai_config(SMALL))
    store = open_store(path)
    assert store.config.seq_len == 2048  # the openai config has no maximum: the runtime's exports' 2048
    assert_store_equals(store, spec_weights)


def test_reader_agrees_with_the_safetensors_package(tmp_path):
    from safetensors.numpy import load_file, save_file

    rng = np.random.default_rng(1)
    tensors = {"a": rng.standard_normal((3, 5)).astype(np.float32), "b": rng.integers(0, 255, (7,), dtype=np.uint8),
               "c": rng.standard_normal((2, 2, 2)).astype(np.float16)}
    save_file(tensors, str(tmp_path / "lib.safetensors"))
    ours = SafetensorsFile(tmp_path / "lib.safetensors")
    for name, array in tensors.items():
        np.testing.assert_array_equal(ours.get(name), array)
    write_safetensors(tmp_path / "ours.safetensors", tensors)  # and the test writer is a valid writer
    for name, array in load_file(str(tmp_path / "ours.safetensors")).items():
        np.testing.assert_array_equal(array, tensors[name])


def test_export_then_run_equals_loading_the_directory(tmp_path, spec_weights, mxfp4):
    path = write_checkpoint(tmp_path / "hfq", hf_tensors(spec_weights, SMALL, mxfp4), hf_config(SMALL))
    out = tmp_path / "small.bin"
    result = cli("export", str(path), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size == bin_size(SMALL, 4)
    assert_store_equals(BinStore(out), with_dequantized(spec_weights, mxfp4))
    direct, exported = create_engine(Weights(open_store(path)), "numpy"), create_engine(Weights(BinStore(out)), "numpy")
    direct.warm_up()
    exported.warm_up()
    for pos, token in enumerate([5, 17, 3, 90, 41, 8, 8, 60]):
        np.testing.assert_array_equal(direct.forward(token, pos), exported.forward(token, pos))


def test_export_config_override_and_bfloat16(tmp_path, spec_weights):
    path = write_checkpoint(tmp_path / "oai", openai_tensors(spec_weights, SMALL), openai_config(SMALL))
    out = tmp_path / "small16.bin"
    result = cli("export", str(path), "-o", str(out), "--dtype", "bfloat16", "--config", "seq_len=32")
    assert result.returncode == 0, result.stderr
    store = BinStore(out)
    assert store.storage_dtype == "bfloat16" and store.config.seq_len == 32


@pytest.mark.parametrize("mutate, message", [
    (lambda d: (d / "config.json").unlink(), "has no config.json"),
    (lambda d: (d / "config.json").write_text("{"), "invalid JSON"),
    (lambda d: [p.unlink() for p in d.glob("*.safetensors")], "no .safetensors files"),
    (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:-50]), "truncated"),
    (lambda d: _edit_config(d, lambda c: c.pop("hidden_size")), "no value for hidden_dim; set it with --config"),
    (lambda d: _edit_config(d, lambda c: c["rope_parameters"].update(truncate=True)), "truncate"),
    (lambda d: _edit_config(d, lambda c: c.update(layer_types=["full_attention", "sliding_attention"])),
     "layer_types must alternate"),
    (lambda d: _edit_config(d, lambda c: c.update(hidden_size=32)), "embedding has shape (97, 64), config says"),
])
def test_bad_checkpoint_directories(tmp_path, spec_weights, mutate, message):
    path = write_checkpoint(tmp_path / "hf", hf_tensors(spec_weights, SMALL), hf_config(SMALL))
    mutate(path)
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")):
        open_store(path)


def test_missing_tensor_is_named(tmp_path, spec_weights):
    tensors = hf_tensors(spec_weights, SMALL)
    del tensors["model.layers.1.self_attn.sinks"]
    path = write_checkpoint(tmp_path / "hf", tensors, hf_config(SMALL))
    with pytest.raises(CheckpointError, match="model.layers.1.self_attn.sinks is missing"):
        Weights(open_store(path)).f32("attn_sinks")


def test_cli_errors_for_directories(tmp_path, spec_weights):
    path = write_checkpoint(tmp_path / "hf", hf_tensors(spec_weights, SMALL), hf_config(SMALL))
    result = cli("export", str(path), "-o", str(tmp_path / "x.bin"), "--config", "hidden=3")
    assert result.returncode == 1 and "unknown config field 'hidden'" in result.stderr
    assert not (tmp_path / "x.bin").exists()
    result = cli("info", str(path), "--config", "seq_len")
    assert result.returncode == 1 and "--config expects KEY=VALUE" in result.stderr


def _edit_config(directory, change):
    config = json.loads((directory / "config.json").read_text())
    change(config)
    (directory / "config.json").write_text(json.dumps(config))
