"""The single-sequence GPU engine (`CupyEngine.forward`: generate, chat, diff) is the model over rows with one
request slot; here on the CPU stand-ins (tests/batch_fakes.py: numpy oracles for the kernels, a stream that
captures CUDA graphs and replays them), against the numpy reference engine."""

from __future__ import annotations

import numpy as np
import pytest

from cupy_getp.checkpoint import SyntheticStore, Weights
from cupy_getp.diff import TOLERANCES, DiffSummary, diff_engines, max_abs_diff
from cupy_getp.engine.base import TRACE_POINTS, Trace
from cupy_getp.engine.factory import create_engine
from cupy_getp.getp import run_requests
from cupy_getp.sampler import Sampler

from batch_fakes import CapturingStream, FakeDevice, fake_cupy, use_stand_ins
from conftest import TINY

GREEDY = Sampler(0.0, 0.9, 1)


class GraphDevice(FakeDevice):
    """A CUDA device stand-in: steps are captured as graphs and replayed; the allocations' out-of-memory
    lines are recorded (what, remedy)."""

    def __init__(self):
        from cupy_getp.gpu.device import Counters

        self.stream, self.counters, self.allocations = CapturingStream(), Counters(), []

    def allocating(self, what, remedy):
        self.allocations.append((what, remedy))
        return super().allocating(what, remedy)


@pytest.fixture
def device(monkeypatch):
    """CuPy, the device and the kernels replaced by the stand-ins; the device the GPU engine opens."""
    device = GraphDevice()
    use_stand_ins(monkeypatch, fake_cupy, lambda: device)
    return device


def engines(seed: int):
    """(the numpy reference, the GPU engine on the stand-ins), both warmed up, on TINY weights."""
    weights = Weights(SyntheticStore(TINY, seed=seed))
    reference, gpu = create_engine(weights, "numpy"), create_engine(weights, "cupy")
    reference.warm_up()
    gpu.warm_up()
    return reference, gpu


def tokens(n: int, seed: int) -> list[int]:
    return np.random.default_rng(seed).integers(0, TINY.vocab_size, n).tolist()


def test_logits_equal_the_reference_past_the_window_through_replayed_graphs(device):
    """40 positions: past the window (5), the windowed layers' ring of 6 positions wrapping; every step after
    the first a replay of the one captured one-row graph, each position's row uploaded before it."""
    from cupy_getp.gpu.engine import ONE_ROW_PRECISION

    reference, gpu = engines(seed=3)
    assert gpu.one_slot is None  # nothing of it before the first forward
    for pos, token in enumerate(tokens(40, 1)):
        want, got = reference.forward(token, pos), gpu.forward(token, pos)
        assert got.shape == (TINY.vocab_size,) and got.dtype == np.float32
        assert max_abs_diff(want, got) <= TOLERANCES["logits"], pos
    model = gpu.one_slot
    assert model.precision == ONE_ROW_PRECISION == "fp32"
    assert model.model.cache.lengths[0] == TINY.sliding_window + 1 < 40  # a ring that wraps
    assert set(model.runner.graphs) == {1} and model.runner.graphs[1].replays == 40
    gpu.finish()
    assert gpu.one_slot is None and gpu.finished


def test_traced_steps_hold_every_point_and_stay_within_the_spec(device):
    """`diff --layers` on the one-slot engine: every TRACE_POINTS value of every layer and the logits, within
    the spec's tolerances of the reference; the traced steps run eagerly (no graph replayed for them)."""
    reference, gpu = engines(seed=4)
    prompt = tokens(9, 2)
    summary = DiffSummary()
    for step in diff_engines(reference, gpu, prompt, 12):
        summary.add(step)
    assert summary.positions == 20 and summary.token_matches == summary.generated == 12
    assert not summary.violations, summary.violations[:3]
    trace = Trace()
    logits = gpu.forward(prompt[0], 0, trace)
    assert len(trace.values) == TINY.n_layers
    assert all(set(values) == set(TRACE_POINTS) for values in trace.values)
    assert trace.values[0]["attn_out"].shape == (TINY.q_dim,) and trace.values[0]["experts"].shape == (2,)
    np.testing.assert_array_equal(trace.logits, logits)
    assert not gpu.one_slot.runner.graphs  # only traced steps so far: nothing captured


def test_reset_then_the_same_tokens_give_the_same_logits(device):
    """A sequence, another one (which leaves its own keys and values in the cache), then the first again:
    bit for bit the first's logits, for nothing stale is read."""
    _, gpu = engines(seed=5)
    first, other = tokens(14, 3), tokens(9, 4)

    def run(sequence):
        gpu.reset()
        return [gpu.forward(token, pos) for pos, token in enumerate(sequence)]

    before = run(first)
    run(other)
    again = run(first)
    for pos, (a, b) in enumerate(zip(before, again)):
        np.testing.assert_array_equal(a, b, err_msg=f"position {pos}")


def test_getp_one_request_at_a_time_through_forward_writes_the_references_lines(device):
    """getp's one-sequence path (`run_requests`: decode through `forward`, positions from 0 per request)."""
    reference, gpu = engines(seed=6)
    rng = np.random.default_rng(5)
    requests = [rng.integers(0, TINY.vocab_size, rng.integers(1, 8)).tolist() for _ in range(4)]
    want = run_requests(reference, GREEDY, requests, 24)
    assert run_requests(gpu, GREEDY, requests, 24) == want


def test_the_one_slot_model_is_made_once_by_the_first_forward_and_names_itself_out_of_memory(device):
    """getp's batches do not make it; the first forward does, once, under the single-sequence engine's
    out-of-memory line."""
    _, gpu = engines(seed=7)
    gpu.batched(2, 16, slots=2, precision="fp32").free()
    assert gpu.one_slot is None
    gpu.forward(1, 0)
    model = gpu.one_slot
    gpu.forward(2, 1)
    assert gpu.one_slot is model
    lines = dict(device.allocations)  # what -> remedy
    remedy = lines[f"the single-sequence state and KV cache ({TINY.seq_len} positions)"]
    assert remedy == gpu.memory_remedy("a smaller seq_len (--config seq_len=N)")
    assert remedy.startswith("a smaller seq_len (--config seq_len=N), or --experts mxfp4 (")  # TINY's come in MXFP4
    assert lines["the CUDA graph of a 1-row step"] == remedy


def test_the_first_forward_captures_the_one_row_step_and_the_next_ones_replay_it(device):
    """What tests/test_gpu_engine.py counts on the device: the captured step's launches, the one-row kernels
    (matvec, the fused one-row experts), and none more for a replay."""
    _, gpu = engines(seed=8)
    gpu.kernels.launches.clear()  # the weights' generation at warm-up
    gpu.forward(1, 0)
    launches, L = list(gpu.kernels.launches), TINY.n_layers
    assert len(launches) == 1 + 9 * L + 3, launches  # embedding; 9 a layer; rmsnorm, unembedding, argmax
    assert sum(name.startswith("matvec") for name in launches) == 2 * L + 1  # qkv, o; unembedding
    assert sum(name.startswith("router_rows") for name in launches) == L  # the router with its choice
    assert sum(name.startswith(("moe_mlp1_swiglu", "moe_mlp2_accumulate")) for name in launches) == 2 * L
    gpu.forward(2, 1)
    assert len(gpu.kernels.launches) == len(launches)
