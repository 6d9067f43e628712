"""The numpy reference against the independent float64 oracle, op by op and end to end."""

from __future__ import annotations

import numpy as np
import pytest

from cupy_getp import Trace
from cupy_getp.engine.factory import create_engine
from cupy_getp.reference import attention, rmsnorm, route, swiglu
from cupy_getp.rope import rope_cos_sin
from oracle64 import Oracle64

from conftest import TINY

# float32 activations against float64: relative errors of a few 1e-7 are expected; 1e-5 leaves
# room for accumulation over layers while catching any real formula difference (those are O(1e-2)).
REL_TOL = 1e-5


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def run_both(weights, tokens):
    engine = create_engine(weights, "numpy")
    engine.warm_up()
    oracle = Oracle64(weights)
    for pos, token in enumerate(tokens):
        trace = Trace()
        logits = engine.forward(token, pos, trace)
        expected = oracle.forward(token, pos)
        yield pos, trace, logits, oracle.trace, expected


def test_forward_matches_float64_oracle_past_the_sliding_window(tiny_weights):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, TINY.vocab_size, 12)  # 12 positions > sliding_window 5
    for pos, trace, logits, oracle_trace, expected in run_both(tiny_weights, tokens):
        assert logits.dtype == np.float32
        assert rel_err(logits, expected) < REL_TOL, f"logits at pos {pos}"
        for layer, (got, want) in enumerate(zip(trace.values, oracle_trace)):
            np.testing.assert_array_equal(got["experts"], want["experts"], err_msg=f"pos {pos} layer {layer}")
            for point in ("attn_out", "x_attn", "router", "moe_out", "x_moe"):
                assert rel_err(got[point], want[point]) < REL_TOL, f"{point} at pos {pos} layer {layer}"


def test_sliding_window_masks_only_even_layers(tiny_weights):
    """Changing a token outside the window must not change an even layer's attention output at the
    last position, but must change an odd (full attention) layer's."""
    base = list(range(10, 20))
    changed = [90] + base[1:]  # position 0 is 9 positions back: outside the window of 5
    outs = []
    for tokens in (base, changed):
        engine = create_engine(tiny_weights, "numpy")
        engine.warm_up()
        for pos, token in enumerate(tokens):
            trace = Trace()
            engine.forward(token, pos, trace)
        outs.append(trace)
    layer0_a, layer0_b = outs[0].values[0]["attn_out"], outs[1].values[0]["attn_out"]
    np.testing.assert_array_equal(layer0_a, layer0_b)
    assert rel_err(outs[0].values[1]["attn_out"], outs[1].values[1]["attn_out"]) > 1e-4


def test_attention_window_boundary():
    """pos - t >= window is masked; pos - t = window - 1 is not."""
    rng = np.random.default_rng(1)
    T, window = 9, 4
    q = rng.standard_normal((2, 8)).astype(np.float32)
    keys = rng.standard_normal((T, 1, 8)).astype(np.float32)
    values = rng.standard_normal((T, 1, 8)).astype(np.float32)
    sinks = np.zeros(2, np.float32)
    full = attention(q, keys[T - window:], values[T - window:], sinks, 0)
    np.testing.assert_allclose(attention(q, keys, values, sinks, window), full, rtol=1e-6)
    assert rel_err(attention(q, keys, values, sinks, window + 1), full) > 1e-3


def test_sink_takes_probability_mass():
    q = np.ones((1, 4), np.float32)
    keys = np.zeros((1, 1, 4), np.float32)
    values = np.ones((1, 1, 4), np.float32)
    # one position with score 0 and a sink of 0: the position gets half the mass
    np.testing.assert_allclose(attention(q, keys, values, np.zeros(1, np.float32), 0), 0.5, rtol=1e-7)
    big_sink = attention(q, keys, values, np.full(1, 20, np.float32), 0)
    assert np.all(big_sink < 1e-8)


def test_rmsnorm_against_formula():
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal(37).astype(np.float32), rng.standard_normal(37).astype(np.float32)
    expected = w.astype(np.float64) * x / np.sqrt(np.mean(x.astype(np.float64) ** 2) + 1e-5)
    assert rel_err(rmsnorm(x, w), expected) < 1e-6


def test_route_ties_go_to_the_lower_index():
    scores = np.array([1.0, 3.0, 3.0, 0.5, 3.0], np.float32)
    experts, weights = route(scores, 2)
    assert experts.tolist() == [1, 2]
    np.testing.assert_allclose(weights, [0.5, 0.5])


def test_swiglu_clamps_and_adds_one():
    m = np.array([10.0, 10.0, -3.0, -10.0], np.float32)  # (gate, up) pairs
    limit = 7.0
    got = swiglu(m, limit)
    g0 = 7.0 / (1 + np.exp(-1.702 * 7.0)) * (7.0 + 1)
    g1 = -3.0 / (1 + np.exp(-1.702 * -3.0)) * (-7.0 + 1)
    np.testing.assert_allclose(got, [g0, g1], rtol=1e-6)


def test_rope_tables_yarn():
    c = TINY
    cos, sin = rope_cos_sin(c, 0)
    conc = 0.1 * np.log(c.rope_scaling_factor) + 1
    np.testing.assert_allclose(cos, conc, rtol=1e-7)
    np.testing.assert_allclose(sin, 0, atol=0)
    oracle = Oracle64.__new__(Oracle64)
    oracle.c = c
    for pos in (1, 17, 63):
        want_cos, want_sin = oracle.cos_sin(pos)
        got_cos, got_sin = rope_cos_sin(c, pos)
        np.testing.assert_allclose(got_cos, want_cos, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(got_sin, want_sin, rtol=1e-6, atol=1e-7)


def test_7m_activations_stay_finite_and_greedy_output_depends_on_the_prompt(weights_7m):
    engine = create_engine(weights_7m, "numpy")
    engine.warm_up()
    continuations = []
    for first in (13225, 2375, 5000):
        token, out = first, []
        for pos in range(40):
            logits = engine.forward(token, pos)
            assert np.all(np.isfinite(logits))
            token = int(np.argmax(logits))
            out.append(token)
        continuations.append(out)
        assert len(set(out)) > 1, "greedy output is one repeated token"
    assert continuations[0] != continuations[1] != continuations[2]


@pytest.mark.slow
def test_7m_finite_over_all_2048_positions(weights_7m):
    engine = create_engine(weights_7m, "numpy")
    engine.warm_up()
    rng = np.random.default_rng(3)
    for pos, token in enumerate(rng.integers(0, 201088, 2048)):
        logits = engine.forward(int(token), pos)
    assert np.all(np.isfinite(logits))
    assert 0.5 < float(np.std(logits)) < 20
