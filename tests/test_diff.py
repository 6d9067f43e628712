"""diff: comparison rules on crafted traces, and the command end to end on the CPU."""

from __future__ import annotations

import numpy as np
import pytest

from cupy_getp.diff import TOLERANCES, DiffSummary, compare_step, max_abs_diff
from cupy_getp.engine.base import TRACE_POINTS, Trace

from conftest import cli


def make_trace(rng, layers=2, hidden=6, experts=(1, 3)) -> Trace:
    trace = Trace()
    for l in range(layers):
        for p in TRACE_POINTS:
            trace.record(l, p, np.array(experts) if p == "experts" else rng.standard_normal(hidden))
    trace.logits = rng.standard_normal(50)
    return trace


def copy_trace(trace: Trace) -> Trace:
    other = Trace()
    for l, values in enumerate(trace.values):
        for p, v in values.items():
            other.record(l, p, v)
    other.logits = trace.logits.copy()
    return other


def test_identical_traces_pass():
    rng = np.random.default_rng(0)
    ref = make_trace(rng)
    step = compare_step(3, 7, ref, copy_trace(ref), generated=True)
    assert step.violations == [] and step.token_parity


def test_each_tolerance_is_enforced():
    rng = np.random.default_rng(1)
    ref = make_trace(rng)
    for point, tol in TOLERANCES.items():
        for delta, flagged in ((tol * 0.9, False), (tol * 1.1, True)):
            other = copy_trace(ref)
            if point == "logits":
                other.logits[4] += delta
            else:
                other.values[1][point][2] += delta
            step = compare_step(0, 1, ref, other, generated=False)
            assert bool(step.violations) == flagged, (point, delta, step.violations)


def test_nan_experts_and_tokens_are_violations():
    rng = np.random.default_rng(2)
    ref = make_trace(rng)
    other = copy_trace(ref)
    other.values[0]["x_moe"][0] = np.nan
    assert max_abs_diff(ref.values[0]["x_moe"], other.values[0]["x_moe"]) == float("inf")
    assert compare_step(0, 1, ref, other, False).violations

    other = copy_trace(ref)
    other.values[1]["experts"] = np.array([3, 1])
    assert compare_step(0, 1, ref, other, False).experts_differ == [1]

    other = copy_trace(ref)
    other.logits[int(np.argmin(ref.logits))] = ref.logits.max() + 1e-3  # a new argmax within tolerance
    step = compare_step(0, 1, ref, other, generated=True)
    assert not step.token_parity and any("greedy token" in v for v in step.violations)
    summary = DiffSummary()
    summary.add(step)
    assert summary.token_matches == 0 and summary.generated == 1


def test_diff_command_numpy_against_numpy():
    result = cli("diff", "7m", "--layers", "--steps", "4", "--engine", "numpy")
    assert result.returncode == 0, result.stderr
    assert "token parity: 4/4 greedy steps" in result.stdout and "violations: 0" in result.stdout
    rows = [l for l in result.stdout.splitlines() if l.strip() and l.split()[0].isdigit()]
    assert len(rows) == (2 + 4 - 1) * 3  # 5 positions x (2 layers + the logits row)


def test_cupy_engine_without_a_gpu_is_a_clear_error(tmp_path):
    from conftest import gpu_skip_reason, ROOT

    if gpu_skip_reason() is None:
        import pytest

        pytest.skip("a GPU is visible here")
    out = tmp_path / "o.txt"
    result = cli("getp", "7m", "-i", str(ROOT / "data/input.txt"), "-o", str(out), "--engine", "cupy")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: the cupy engine cannot run: ")
    assert not out.exists()
    auto = cli("generate", "7m", "-i", "Hi", "-n", "4")
    assert auto.returncode == 0 and "note: using the numpy engine" in auto.stderr


def test_diff_model_prints_a_row_per_layer_and_position(tiny_weights):
    from cupy_getp.diff import diff_model

    lines = []
    summary = diff_model(tiny_weights, "numpy", [1, 2], steps=2, layers=True, echo=lines.append)
    layer_rows = [l for l in lines if l.split()[:1] in (["0"], ["1"], ["2"]) and len(l.split()) > 4]
    assert summary.violations == [] and summary.positions == 3
    assert len(layer_rows) == 3 * tiny_weights.config.n_layers
    assert lines[-3].startswith("max abs diff over 3 positions") and lines[-1] == "violations: 0"


# -- diff --batch's batch-invariance check, on the batched engine with numpy stand-ins for its kernels -----
def test_digests_compare_bits_not_values():
    from cupy_getp.invariance import digest

    x = np.linspace(-1, 1, 7, dtype=np.float32)
    assert digest(x) == digest(x.copy())
    one_ulp = x.copy()
    one_ulp[3] = np.nextafter(x[3], np.float32(np.inf))
    assert digest(x) != digest(one_ulp)
    assert digest(np.float32([0.0])) != digest(np.float32([-0.0]))  # equal values, other bits
    assert digest(np.float32([np.nan])) == digest(np.float32([np.nan]))  # the same bits
    assert digest(x) != digest(x.reshape(1, 7))


def test_the_second_shape_differs_in_slots_and_chunks():
    from cupy_getp.diff import BatchDiffShape, second_shape
    from cupy_getp.gpu.batch_shape import BatchShape

    def shape(slots, chunk):
        return BatchShape(slots, slots + chunk, chunk, 30)

    assert second_shape(shape(2, 3), 5, "exact") == BatchDiffShape(5, 16, "exact")  # every request at once
    assert second_shape(shape(5, 3), 5, "fast") == BatchDiffShape(2, 16, "fast")  # half as many
    assert second_shape(shape(8, 16), 5, "exact") == BatchDiffShape(4, 3, "exact")
    assert second_shape(shape(1, 3), 1, "exact") == BatchDiffShape(2, 16, "exact")  # one request: a spare slot


class StandInGpuEngine:
    """The GPU engine as `diff_batched_model` opens it, over batch_fakes.FakeEngine: its batched engine
    runs gpu/batch.py with numpy stand-ins for the kernels."""

    name, batches = "cupy (numpy stand-ins)", True

    def __init__(self, weights):
        from batch_fakes import FakeEngine

        self.fake = FakeEngine(weights)

    def __getattr__(self, name):  # config, device, kernels, w, check_not_finished, memory_remedy
        return getattr(self.fake, name)

    def warm_up(self, progress=None):
        pass

    def storage_notes(self):
        return []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fake.finished = True


def batched_diff_on_stand_ins(monkeypatch, precision, flip=None):
    """`diff_batched_model` of 5 tiny requests (2 slots, chunks of 3) on the stand-ins; `flip` = (slot,
    position, layer, point, element): the second run's recorded value there one ulp up."""
    import sys

    from batch_fakes import fake_cupy
    from conftest import TINY

    from cupy_getp import diff
    from cupy_getp.checkpoint import SyntheticStore, Weights

    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    real_create, real_shaped = diff.create_engine, diff.batch_diff_engine
    monkeypatch.setattr(diff, "create_engine", lambda weights, name, *storage, **kv_cache: (
        StandInGpuEngine(weights) if name == "cupy" else real_create(weights, name, *storage, **kv_cache)))
    if flip is not None:
        monkeypatch.setattr(diff, "batch_diff_engine", lambda *args: flipping(real_shaped(*args), *flip))
    rng = np.random.default_rng(2)
    prompts = [rng.integers(0, TINY.vocab_size, rng.integers(1, 10)).tolist() for _ in range(5)]
    lines = []
    summary = diff.diff_batched_model(Weights(SyntheticStore(TINY, seed=4)), "cupy", "numpy", prompts, 12, False,
                                      lines.append, diff.BatchDiffShape(precision=precision))
    return summary, lines


def flipping(batched, slot, pos, layer, point, element):
    """`batched`, whose step records, where the second run's shape has it (chunks of SECOND_CHUNK), the
    value of the row at (slot, pos) one ulp up; the first run's engine as it is."""
    from cupy_getp.invariance import SECOND_CHUNK

    if batched.shape.max_chunk != SECOND_CHUNK:
        return batched
    step = batched.step

    def flipped(slots, positions, tokens, trace=None):
        view = step(slots, positions, tokens, trace)
        values = trace.values[layer][point]
        for i in np.flatnonzero((slots == slot) & (positions == pos)):
            values[i, element] = np.nextafter(values[i, element], np.float32(np.inf))
        return view

    batched.step = flipped
    return batched


INVARIANCE_LINE = "batch invariance ({}): 2 slots with prompt chunks of 3 and 5 slots with prompt chunks of 16 "


@pytest.mark.parametrize("precision", ["exact", "fp32"])
def test_two_batched_runs_of_different_shapes_agree_bit_for_bit(monkeypatch, precision):
    summary, lines = batched_diff_on_stand_ins(monkeypatch, precision)
    rows = summary.positions  # every row of every request, each with 3 layers x 6 points + the logits
    assert f"{INVARIANCE_LINE.format(precision)}agree bit for bit ({rows * 19:,} values over {rows} rows)" in lines
    assert not summary.violations


@pytest.mark.parametrize("precision", ["exact", "fp32"])
def test_one_value_that_differs_in_the_second_shape_is_named(monkeypatch, precision):
    """Slot 2 of the second run (5 slots for 5 requests: request 2's), position 4, layer 1's MoE output,
    element 3 one ulp up: one value differs, there. exact is covered by the promise (a violation: diff
    exits 1); fp32 not yet (the line says so, no violation)."""
    summary, lines = batched_diff_on_stand_ins(monkeypatch, precision, flip=(2, 4, 1, "moe_out", 3))
    rows = summary.positions
    line = (f"{INVARIANCE_LINE.format(precision)}differ in 1 of {rows * 19:,} values, the first at request 2 "
            f"position 4 layer 1 moe_out")
    if precision == "exact":
        assert line in lines and summary.violations == [line]
        assert lines[-1] == line  # the summary's list of violations
    else:
        assert f"{line} (not a violation: fp32 is not covered)" in lines and not summary.violations
