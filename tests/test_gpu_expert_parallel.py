"""Expert parallelism on the kernels: G ranks in one process on one device (the in-process communicator)
against the unsharded batched engine, bit for bit: every layer's MoE output of the same rows, and whole
steps' logits. Also runs on the CPU stand-ins: PYTHONPATH=tests python -m pytest -p gpu_dry_run <this file>.

Whole steps: each rank runs the dense products and attention on its own rows, with the kernels one GPU takes
for the whole step (ShardRowModel), so their bits must not depend on the row count within a kernel: in `exact`
and `fast` nothing does (batch invariance); in `fp32` the CUDA-core products are chosen by row count, so the
steps here keep 2 to 8 rows, within one choice."""

from __future__ import annotations

import numpy as np
import pytest

from cupy_getp.checkpoint import SyntheticStore, Weights
from cupy_getp.config import preset

from ep_helpers import TINY_EP, device_weights, moe_chain, step_logits

pytestmark = pytest.mark.gpu

CONFIGS = {"7m": preset("7m"), "tiny": TINY_EP}


@pytest.fixture(scope="module")
def weights_on_device(gpu_module, weights_7m):
    """name -> (config, device weights), uploaded on the kernels' stream."""
    device = gpu_module[0]
    device.stream.use()
    tiny = Weights(SyntheticStore(TINY_EP, seed=11))
    uploaded = {"7m": (CONFIGS["7m"], device_weights(weights_7m)), "tiny": (TINY_EP, device_weights(tiny))}
    device.synchronize("the test weights' upload")
    return uploaded


@pytest.mark.parametrize("precision", ["exact", "fast", "fp32"])
@pytest.mark.parametrize("n_ranks", [2, 4])
@pytest.mark.parametrize("which", ["7m", "tiny"])
@pytest.mark.parametrize("rows", [3, 24])  # rows a rank: 6 to 96 a step (the kernels by rows: all of them)
def test_moe_of_g_ranks_is_one_gpus_bits(gpu, weights_on_device, which, n_ranks, precision, rows):
    config, w = weights_on_device[which]
    (want_x, want_moe), (got_x, got_moe) = moe_chain(config, w, gpu[1], gpu[0], precision, n_ranks, rows, 7)
    np.testing.assert_array_equal(got_moe, want_moe)
    np.testing.assert_array_equal(got_x, want_x)


@pytest.mark.parametrize("precision", ["exact", "fast", "fp32"])
@pytest.mark.parametrize("n_ranks", [2, 4])
@pytest.mark.parametrize("which", ["7m", "tiny"])
def test_step_logits_of_g_ranks_are_one_gpus_bits(gpu, weights_on_device, which, n_ranks, precision):
    config, w = weights_on_device[which]
    rows = 8 // n_ranks  # 2 or 4 a rank, 8 a step
    want, got = step_logits(config, w, gpu[1], gpu[0], precision, n_ranks, rows, 3, 5)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("experts", ["bf16", "mxfp4"])
def test_ranks_holding_only_their_experts(gpu, experts):
    """DeviceWeights of an expert range, generated on the device: the full weights' slice; 4 ranks each
    holding only its experts give one GPU's bits."""
    from cupy_getp.gpu.weights import EXPERT_TENSORS, DeviceWeights

    weights = Weights(SyntheticStore(TINY_EP, seed=5))
    full = DeviceWeights(weights, *gpu, experts=experts)
    shards = [DeviceWeights(weights, *gpu, experts=experts, expert_range=(3 * q, 3 * q + 3)) for q in range(4)]
    for q, shard in enumerate(shards):
        for name in EXPERT_TENSORS:
            got, whole = shard.arrays[name], full.arrays[name][:, 3 * q: 3 * q + 3]
            for part in ("blocks", "scales") if experts == "mxfp4" and name.startswith("w_") else (None,):
                a, b = (getattr(got, part), getattr(whole, part)) if part else (got, whole)
                np.testing.assert_array_equal(a.get(), b.get(), err_msg=f"rank {q} {name} {part or ''}")
    (want_x, want_moe), (got_x, got_moe) = moe_chain(TINY_EP, full, gpu[1], gpu[0], "exact", 4, 5, 9,
                                                     shard_weights=shards)
    np.testing.assert_array_equal(got_moe, want_moe)
    np.testing.assert_array_equal(got_x, want_x)
