"""The GPU engine against the numpy reference, end to end; memory of the 20b shape; the CLI on the GPU."""

from __future__ import annotations

import re

import numpy as np
import pytest

from cupy_getp.checkpoint import BinStore, SyntheticStore, Weights, write_bin
from cupy_getp.config import preset
from cupy_getp.diff import DiffSummary, diff_engines
from cupy_getp.engine.base import TRACE_POINTS, Trace
from cupy_getp.engine.factory import create_engine
from cupy_getp.gpu.batch_shape import one_slot_bytes

from conftest import ROOT, cli

pytestmark = pytest.mark.gpu


def engines(weights):
    reference, gpu = create_engine(weights, "numpy"), create_engine(weights, "cupy")
    reference.warm_up()
    gpu.warm_up()
    return reference, gpu


def run_diff(weights, prompt, steps) -> DiffSummary:
    reference, gpu = engines(weights)
    summary = DiffSummary()
    try:
        for step in diff_engines(reference, gpu, prompt, steps):
            summary.add(step)
    finally:
        gpu.finish()
    return summary


def test_7m_32_greedy_steps_token_parity_and_logits(weights_7m):
    summary = run_diff(weights_7m, [13225, 2375], 32)
    print("\n".join(summary.lines()))
    assert summary.generated == 32 and summary.token_matches == 32
    assert summary.worst["logits"] <= 2e-3
    assert summary.violations == []


def test_tiny_odd_shapes_past_the_sliding_window(tiny_weights):
    """Grouped heads, odd sizes, window 5 on even layers, 40 positions."""
    summary = run_diff(tiny_weights, list(range(3, 43)), 1)
    print("\n".join(summary.lines()))
    assert summary.positions == 40 and summary.violations == []


def test_bin_upload_path_matches_the_synthetic_path(tmp_path, weights_7m):
    """A .bin read through the memmap and converted slice by slice gives the same device weights as the
    on-device generator, and the same logits."""
    path = tmp_path / "7m.bin"
    write_bin(path, weights_7m)
    from_file, generated = create_engine(Weights(BinStore(path)), "cupy"), create_engine(weights_7m, "cupy")
    from_file.warm_up()
    generated.warm_up()
    for name in ("embedding", "w_qkv", "w_mlp1", "w_mlp2", "attn_sinks"):
        np.testing.assert_array_equal(from_file.w.arrays[name].get(), generated.w.arrays[name].get(), err_msg=name)
    np.testing.assert_array_equal(from_file.forward(13225, 0), generated.forward(13225, 0))
    from_file.finish()
    generated.finish()


def test_launches_and_copies_are_accounted_for(weights_7m):
    """The first forward captures the one-row step's graph (its launches counted once, as captured), then every
    forward replays it: one copy up (the row), one down (the logits), no launch of ours."""
    gpu = create_engine(weights_7m, "cupy")
    gpu.warm_up()
    gpu.forward(1, 0)
    counters = gpu.device.counters
    L = weights_7m.config.n_layers
    # embedding; per layer 5 attention (rmsnorm, qkv, RoPE + KV write, attention with its merge, o) + 4 MoE
    # (rmsnorm, router with its top-k, mlp1, mlp2) launches; final rmsnorm, unembedding, argmax
    step_launches = 1 + 9 * L + 3
    assert counters.total_launches() == step_launches, counters.launches
    assert counters.h2d_copies == 1 and counters.d2h_copies == 1  # the row up; logits down
    gpu.forward(2, 1)
    assert counters.total_launches() == step_launches and set(gpu.one_slot.runner.graphs) == {1}
    assert counters.h2d_copies == 2 and counters.d2h_copies == 2
    gpu.finish()


def test_20b_shape_fits_runs_and_frees(capsys):
    """Synthetic 20b weights generated on the device: under 64 GB, a few finite steps (their one-slot model
    within what `--experts auto` counts for it), and finish() returns device memory to its pre-load level."""
    import cupy

    from cupy_getp.gpu.device import Device

    device = Device.open()
    cupy.get_default_memory_pool().free_all_blocks()
    free_before, total = device.device_free_bytes()
    gpu = create_engine(Weights(SyntheticStore(preset("20b"), 42, "20b")), "cupy")
    gpu.warm_up()
    used = gpu.memory_after_warm_up - gpu.memory_before
    free_loaded, _ = device.device_free_bytes()
    with capsys.disabled():
        print(f"\n20b shape on {gpu.device.describe()}: {used / 2**30:.2f} GiB in CuPy arrays, "
              f"{(free_before - free_loaded) / 2**30:.2f} GiB taken from the device")
    assert used < 64e9
    token = 13225
    for pos in range(4):
        logits = gpu.forward(token, pos)
        assert np.all(np.isfinite(logits)) and logits.std() > 0.1
        token = int(np.argmax(logits))
    one_slot = gpu.device.memory_in_use() - gpu.memory_after_warm_up  # made by the first forward
    assert 0 < one_slot <= one_slot_bytes(preset("20b")), one_slot
    gpu.finish()
    free_after, _ = device.device_free_bytes()
    assert gpu.device.memory_in_use() == 0
    assert abs(free_after - free_before) < 64 << 20, (free_before, free_after)


def test_reset_restarts_at_position_0(weights_7m):
    gpu = create_engine(weights_7m, "cupy")
    gpu.warm_up()
    first = gpu.forward(5, 0)
    second = gpu.forward(6, 1)
    gpu.forward(7, 2)
    gpu.reset()  # nothing cleared: position 0 is rewritten before it is read, positions 1 and 2 are not read
    np.testing.assert_array_equal(gpu.forward(5, 0), first)
    np.testing.assert_array_equal(gpu.forward(6, 1), second)
    gpu.finish()


def test_trace_values_are_recorded(weights_7m):
    """A traced step (eager) records every point of row 0, and its logits are the replayed graph's, bit for bit."""
    gpu = create_engine(weights_7m, "cupy")
    gpu.warm_up()
    replayed = gpu.forward(13225, 0)
    trace = Trace()
    traced = gpu.forward(13225, 0, trace)
    assert len(trace.values) == 2 and all(set(values) == set(TRACE_POINTS) for values in trace.values)
    assert trace.values[0]["attn_out"].shape == (weights_7m.config.q_dim,)
    assert trace.logits.shape == (201088,)
    np.testing.assert_array_equal(traced, replayed)
    np.testing.assert_array_equal(trace.logits, replayed)
    gpu.finish()


def test_getp_cli_cupy_writes_the_same_ids_as_numpy(tmp_path):
    """The batched GPU engine through the CLI, -n 256 (the batched engine issue's 7m identity; longer
    random-weight decodes can part at an FP32 near-tie of the router, see test_gpu_batch_engine's 20b test)."""
    outs = {}
    for engine in ("numpy", "cupy"):
        out = tmp_path / f"{engine}.txt"
        result = cli("run", "7m", "-m", "getp", "-i", str(ROOT / "data/input.txt"), "-o", str(out), "--engine", engine,
                     "-n", "256")
        assert result.returncode == 0, result.stderr
        assert re.search(r"achieved throughput TPS \(tok/s\): \d", result.stdout)
        print(engine, result.stdout.splitlines()[1])
        outs[engine] = out.read_text()
    assert len(outs["cupy"].splitlines()) == 32
    assert outs["cupy"] == outs["numpy"]


def test_diff_cli_7m_32_steps_exits_0():
    result = cli("diff", "7m", "--layers", "--steps", "32")
    print(result.stdout[-1500:])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert "token parity: 32/32 greedy steps" in result.stdout and "violations: 0" in result.stdout


def test_engine_errors_are_one_line(tmp_path, monkeypatch):
    result = cli("run", "7m", "-m", "getp", "-i", str(ROOT / "data/input.txt"), "-o", str(tmp_path / "o.txt"),
                 "--engine", "cupy", env={"HIP_DEVICE_ID": "99"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: the cupy engine cannot run: HIP_DEVICE_ID=99")
    assert not (tmp_path / "o.txt").exists()
