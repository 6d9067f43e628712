"""Expert parallelism against the unsharded batched engine, shared by tests/test_expert_parallel.py (CPU,
kernel stand-ins) and tests/test_gpu_expert_parallel.py (the kernels; G ranks in one process on one
device): the same rows through one `RowModel` and through G shards, their values read back as bits."""

from __future__ import annotations

import dataclasses
import types

import numpy as np

from cupy_getp.checkpoint import TENSOR_NAMES
from cupy_getp.checkpoint.layout import LAYER_TENSORS
from cupy_getp.gpu.batch import RowModel
from cupy_getp.gpu.batch_shape import BatchShape
from cupy_getp.gpu.comm import InProcessCommunicator
from cupy_getp.gpu.expert_parallel import ExpertParallel, ExpertShard

from batch_fakes import FakeEngine
from conftest import TINY

# Odd sizes as TINY, with experts that split over 2 and 4 ranks and an odd top-k.
TINY_EP = dataclasses.replace(TINY, n_experts=12, experts_per_token=3).validate()


def device_weights(weights):
    """The weights as the device engine stores them (bf16 MoE and lossless dense GEMM weights), on the
    device (`cupy.asarray`: a real or stand-in CuPy)."""
    import cupy

    host = FakeEngine(weights).w
    arrays = {name: cupy.asarray(np.asarray(getattr(host, name))) for name in TENSOR_NAMES}
    layers = [types.SimpleNamespace(**{n: arrays[n][l] for n in LAYER_TENSORS})
              for l in range(weights.config.n_layers)]
    return types.SimpleNamespace(layer=lambda l: layers[l], **arrays)


def bits(a) -> np.ndarray:
    """A device array's values as their bit patterns (-0 and +0 differ, NaNs compare)."""
    return np.asarray(a.get()).view(np.uint32)


def expert_parallel(config, w, kernels, device, precision, n_ranks, rows, n_ctx=1, shard_weights=None):
    """G shards of `rows` rows each, in process; each views the experts it holds of `w`, or holds
    shard_weights[q] (weights of its experts only)."""
    shards = [ExpertShard(q, n_ranks, config, shard_weights[q] if shard_weights else w, kernels,
                          BatchShape(rows, rows, 1, n_ctx), precision) for q in range(n_ranks)]
    return ExpertParallel(shards, InProcessCommunicator(n_ranks), device)


def moe_chain(config, w, kernels, device, precision, n_ranks, rows, seed, shard_weights=None):
    """Random rows x through every layer's MoE block only (x += MoE(x)), unsharded (weights w) and
    expert-parallel: ((x, moe_out) one GPU, (x, moe_out) G ranks, rows of rank q at q R.. (q + 1) R), as bits."""
    total = n_ranks * rows
    x = np.random.default_rng(seed).standard_normal((total, config.hidden_dim)).astype(np.float32)
    one = RowModel(config, w, kernels, BatchShape(total, total, 1, 1), precision)
    v = one.view(total)
    device.upload(v.x, x)
    ep = expert_parallel(config, w, kernels, device, precision, n_ranks, rows, shard_weights=shard_weights)
    views = [s.model.view(rows) for s in ep.shards]
    for q, view in enumerate(views):
        device.upload(view.x, x[q * rows: (q + 1) * rows])
    for l in range(config.n_layers):
        one.moe_block(l, v, None)
        ep.moe_layer(l, views)
    got = [np.concatenate([bits(getattr(view, name)) for view in views]) for name in ("x", "moe_out")]
    return (bits(v.x), bits(v.moe_out)), tuple(got)


def _upload_rows(device, view, slots, positions, tokens) -> None:
    rows = np.zeros((3, view.R), np.int32)
    rows[0], rows[1], rows[2] = slots, positions, tokens
    device.upload(view.rows_packed, rows)


def step_logits(config, w, kernels, device, precision, n_ranks, rows, steps, seed):
    """Logits of `steps` whole decode steps (row i: its own sequence, random tokens at positions 0, 1, ...),
    one GPU's RowModel and G ranks' (each its own slots and KV cache): (one, G ranks) as bits (steps, R, V)."""
    total = n_ranks * rows
    tokens = np.random.default_rng(seed).integers(0, config.vocab_size, (steps, total)).astype(np.int32)
    one = RowModel(config, w, kernels, BatchShape(total, total, 1, steps), precision)
    v = one.view(total)
    ep = expert_parallel(config, w, kernels, device, precision, n_ranks, rows, steps)
    views = [s.model.view(rows) for s in ep.shards]
    want, got = [], []
    for step in range(steps):
        _upload_rows(device, v, np.arange(total), step, tokens[step])
        one.step(v)
        want.append(bits(v.logits))
        for q, view in enumerate(views):
            _upload_rows(device, view, np.arange(rows), step, tokens[step, q * rows: (q + 1) * rows])
        ep.step(views)
        got.append(np.concatenate([bits(view.logits) for view in views]))
    return np.stack(want), np.stack(got)
