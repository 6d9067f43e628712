"""`DeviceWeights` on the CPU stand-ins (numpy for CuPy, the kernels' oracles for the kernels): BF16 experts
(today's storage) hold the weights' values; MXFP4 experts hold the store's blocks and scales byte for byte,
generated on the device for a synthetic model and uploaded as stored for a checkpoint; a store without an
MXFP4 form is refused in one line."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from cupy_getp.bf16 import bf16_to_f32
from cupy_getp.checkpoint import MOE_WEIGHTS, TENSOR_NAMES, ArrayStore, SyntheticStore, Weights, open_store
from cupy_getp.errors import DeviceError

from batch_fakes import FakeDevice, FakeKernels, fake_cupy
from checkpoints import openai_config, openai_tensors, random_mxfp4, write_checkpoint
from conftest import TINY
from test_safetensors import SMALL


@pytest.fixture
def stand_in(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)


def device_weights(weights, experts):
    from cupy_getp.gpu.weights import DeviceWeights

    return DeviceWeights(weights, FakeDevice(), FakeKernels(), experts=experts)


def assert_mxfp4_as_stored(w, weights):
    for name in MOE_WEIGHTS:
        blocks, scales = weights.mxfp4(name)
        assert w.storage[name] == "mxfp4"
        np.testing.assert_array_equal(w.arrays[name].blocks, blocks, err_msg=name)
        np.testing.assert_array_equal(w.arrays[name].scales, scales, err_msg=name)
        layer = w.layer(1)
        np.testing.assert_array_equal(getattr(layer, name).scales, scales[1], err_msg=name)


@pytest.mark.parametrize("config", [TINY, SMALL], ids=["tiny", "small"])
def test_synthetic_experts_are_generated_as_mxfp4_or_bf16(stand_in, config):
    weights = Weights(SyntheticStore(config, seed=3))
    assert_mxfp4_as_stored(device_weights(weights, "mxfp4"), weights)
    w = device_weights(weights, "bf16")
    for name in TENSOR_NAMES:
        got = w.arrays[name]
        values = bf16_to_f32(got) if got.dtype == np.uint16 else got
        np.testing.assert_array_equal(values, weights.f32(name), err_msg=name)


def mxfp4_checkpoint(tmp_path, c=SMALL) -> Weights:
    """An openai-layout checkpoint of config c with random MXFP4 experts, opened."""
    rng = np.random.default_rng(1)
    store = SyntheticStore(c, seed=4)
    spec = {n: store.read(n) for n in TENSOR_NAMES}
    mxfp4 = {}
    for name, rows, cols in (("w_mlp1", 2 * c.intermediate_dim, c.hidden_dim),
                             ("w_mlp2", c.hidden_dim, c.intermediate_dim)):
        pairs = [random_mxfp4(rng, c.n_experts, rows, cols) for _ in range(c.n_layers)]
        mxfp4[name] = np.stack([b for b, _ in pairs]), np.stack([s for _, s in pairs])
    path = write_checkpoint(tmp_path / "oai", openai_tensors(spec, c, mxfp4), openai_config(c))
    return Weights(open_store(path, config={"seq_len": 64}))


def test_checkpoint_experts_are_uploaded_as_stored(stand_in, tmp_path):
    weights = mxfp4_checkpoint(tmp_path)
    assert_mxfp4_as_stored(device_weights(weights, "mxfp4"), weights)


def test_mxfp4_storage_of_experts_not_stored_as_mxfp4_is_one_line(stand_in):
    plain = Weights(ArrayStore.materialize(SyntheticStore(TINY, seed=3)))
    with pytest.raises(DeviceError, match=r"^MXFP4 expert storage needs experts stored as MXFP4 .* holds layer 0 "
                                          r"w_mlp1 otherwise: use BF16 expert storage$"):
        device_weights(plain, "mxfp4")
    bf16_only = Weights(SyntheticStore(TINY, seed=3, mxfp4_experts=False))
    with pytest.raises(DeviceError, match="MXFP4 expert storage needs"):
        device_weights(bf16_only, "mxfp4")


def test_one_row_expert_kernels_take_mxfp4_storage(stand_in):
    """The launch helpers dispatch an Mxfp4Matrix to the mxfp4w kernels with codes and scales in the kernels'
    order (through their oracles): the same results as BF16 storage of the same layer."""
    from cupy_getp.bf16 import f32_to_bf16
    from cupy_getp.checkpoint.safetensors import dequantize_mxfp4

    from batch_fakes import host_array

    c = SMALL
    mx = device_weights(Weights(SyntheticStore(c, seed=6)), "mxfp4")
    rng = np.random.default_rng(2)
    t, x0 = host_array(rng.standard_normal(c.hidden_dim).astype(np.float32)), rng.standard_normal(c.hidden_dim)
    experts, weights = host_array(np.array([3, 1], np.int32)), host_array(np.array([0.75, 0.25], np.float32))
    results = []
    for w1, w2 in ((mx.w_mlp1[1], mx.w_mlp2[1]),
                   (host_array(f32_to_bf16(dequantize_mxfp4(mx.w_mlp1.blocks[1], mx.w_mlp1.scales[1]))),
                    host_array(f32_to_bf16(dequantize_mxfp4(mx.w_mlp2.blocks[1], mx.w_mlp2.scales[1]))))):
        k = FakeKernels()
        g, x, moe_out = (host_array(np.zeros(shape, np.float32)) for shape in ((2, c.intermediate_dim),
                                                                                c.hidden_dim, c.hidden_dim))
        x[...] = x0
        k.moe_mlp1_swiglu(g, w1, mx.b_mlp1[1], t, experts, c.swiglu_limit)
        k.moe_mlp2_accumulate(x, moe_out, w2, mx.b_mlp2[1], g, experts, weights)
        results.append((k.launches, g.copy(), x.copy()))
    (mx_launches, *mx_values), (bf_launches, *bf_values) = results
    assert mx_launches == ["moe_mlp1_swiglu_mxfp4w", "moe_mlp2_accumulate_mxfp4w"]
    assert bf_launches == ["moe_mlp1_swiglu_bf16w", "moe_mlp2_accumulate_bf16w"]
    for a, b in zip(mx_values, bf_values):
        np.testing.assert_array_equal(a, b)
    assert np.abs(mx_values[1] - x0).max() > 0  # the MoE added something


def test_batched_engine_runs_on_mxfp4_experts_end_to_end(stand_in):
    """fp32 precision (CUDA-core grouped products, one-row kernels for one-row steps) through the stand-ins,
    the weights from `DeviceWeights`: MXFP4 storage gives BF16 storage's greedy tokens, which are the numpy
    reference's, request by request; every MoE product ran an mxfp4w kernel."""
    from cupy_getp.engine.factory import create_engine
    from cupy_getp.getp import run_batched, run_requests
    from cupy_getp.gpu.batch import BatchedEngine
    from cupy_getp.gpu.batch_shape import BatchShape
    from cupy_getp.sampler import Sampler

    from batch_fakes import FakeEngine

    weights = Weights(SyntheticStore(TINY, seed=9))
    rng = np.random.default_rng(3)
    requests = [rng.integers(0, TINY.vocab_size, rng.integers(1, 8)).tolist() for _ in range(6)]
    greedy, steps = Sampler(0.0, 0.9, 1), 12
    reference = create_engine(weights, "numpy")
    reference.warm_up()
    want = run_requests(reference, greedy, requests, steps)
    for experts in ("bf16", "mxfp4"):
        engine = FakeEngine(weights)
        engine.w = device_weights(weights, experts)
        batched = BatchedEngine(engine, BatchShape(3, 6, 3, steps), "fp32", use_graphs=False)
        assert run_batched(batched, greedy, requests, steps) == want, experts
        moe = {name for name in engine.kernels.launches if "mlp" in name or "grouped" in name}
        assert len(moe) >= 4, moe  # one-row and grouped, mlp1 and mlp2
        assert all(name.endswith(("mxfp4w", "mxfp4w_skinny", "mxfp4w_tiled")) == (experts == "mxfp4")
                   for name in moe), moe
