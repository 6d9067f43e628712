"""Lossless BF16 storage of the dense GEMM weights: BF16 exactly where every value is a BF16 value,
the same values either way, and FP32 kept where one value is not."""

from __future__ import annotations

import numpy as np
import pytest

from cupy_getp.bf16 import bf16_to_f32
from cupy_getp.checkpoint import ArrayStore, SyntheticStore, Weights
from cupy_getp.gpu.weights import DENSE_GEMM_WEIGHTS

from conftest import TINY

pytestmark = pytest.mark.gpu


def device_weights(store, experts="bf16"):
    from cupy_getp.gpu.device import Device
    from cupy_getp.gpu.kernels import Kernels
    from cupy_getp.gpu.weights import DeviceWeights

    device = Device.open()
    return DeviceWeights(Weights(store), device, Kernels(device), experts=experts)


def test_mxfp4_expert_storage_holds_the_codes_and_scales_as_stored():
    """7m shape, generated on the device: the blocks and scales `Weights.mxfp4` reads, the rest as with BF16."""
    from cupy_getp.config import preset

    store = SyntheticStore(preset("7m"), seed=3)
    w = device_weights(store, "mxfp4")
    for name in ("w_mlp1", "w_mlp2"):
        blocks, scales = Weights(store).mxfp4(name)
        assert w.storage[name] == "mxfp4"
        np.testing.assert_array_equal(w.arrays[name].blocks.get(), blocks, err_msg=name)
        np.testing.assert_array_equal(w.arrays[name].scales.get(), scales, err_msg=name)
    np.testing.assert_array_equal(bf16_to_f32(w.w_qkv.get()), Weights(store).f32("w_qkv"))


@pytest.mark.parametrize("bf16_exact", [True, False])
def test_dense_weights_are_bf16_exactly_when_lossless(bf16_exact):
    store = SyntheticStore(TINY, seed=3, bf16_exact=bf16_exact)
    w = device_weights(store)
    for name in DENSE_GEMM_WEIGHTS:
        array = w.arrays[name]
        assert (array.dtype == np.uint16) == bf16_exact, name
        assert w.storage[name] == ("bf16 (lossless)" if bf16_exact else "fp32")
        values = bf16_to_f32(array.get()) if bf16_exact else array.get()
        np.testing.assert_array_equal(values, store.read(name), err_msg=name)
    described = w.describe_storage()
    assert ("bf16 (lossless): " in described) == bf16_exact and "w_qkv" in described


def test_one_inexact_value_keeps_a_tensor_fp32():
    """Through the upload path (an in-memory store): w_o with one value off the BF16 grid stays FP32."""
    store = ArrayStore.materialize(SyntheticStore(TINY, seed=3))
    store.arrays["w_o"].reshape(-1)[-1] += np.float32(2.0 ** -20)
    w = device_weights(store)
    assert w.storage["w_o"] == "fp32" and w.storage["w_qkv"] == "bf16 (lossless)"
    np.testing.assert_array_equal(w.arrays["w_o"].get(), store.arrays["w_o"])
