"""diff: comparison rules on crafted traces, and the command end to end on the CPU."""

from __future__ import annotations

import numpy as np

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
