"""bench/routing.py: its padding statistic, and the routes it keeps from the batched engine (here gpu/batch.py on
numpy stand-ins, fed the device's greedy tokens after each prompt) against the numpy reference's, request by
request."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

from test_diff import StandInGpuEngine

ROOT = Path(__file__).resolve().parents[1]


def routing_module():
    spec = importlib.util.spec_from_file_location("bench_routing", ROOT / "bench" / "routing.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_padded_rows_per_route_fills_whole_tiles():
    routing = routing_module()
    # expert 0: 65 routes (two tiles of 64, one of 96), expert 1: 1 route (one tile), expert 2: none
    experts = np.array([0] * 65 + [1], np.int32).reshape(-1, 1)
    assert routing.padded_rows_per_route(experts, 3, 64) == (128 + 64) / 66
    assert routing.padded_rows_per_route(experts, 3, 96) == (96 + 96) / 66
    # loads 3, 2, 2, 1: the 2 busiest of 8 experts take 5 of the 8 routes
    assert routing.busiest_quarter_share(np.array([[0, 1], [0, 2], [0, 3], [1, 2]]), 8) == 5 / 8


def test_even_routes_are_distinct_experts_spread_evenly():
    routing = routing_module()
    routes = routing.even_routes(np.random.default_rng(0), 4000, 32, 4)
    assert routes.shape == (4000, 4)
    assert all(len(set(r)) == 4 for r in routes.tolist())
    assert abs(routing.busiest_quarter_share(routes, 32) - 0.25) < 0.02


def test_kept_routes_are_the_reference_routes(monkeypatch):
    from batch_fakes import fake_cupy
    from conftest import TINY

    from cupy_getp.checkpoint import SyntheticStore, Weights
    from cupy_getp.reference import NumpyEngine

    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    routing = routing_module()
    weights = Weights(SyntheticStore(TINY, seed=4))
    rng = np.random.default_rng(3)
    prompts = [rng.integers(0, TINY.vocab_size, rng.integers(1, 6)).tolist() for _ in range(4)]
    kept = routing.kept_routes(StandInGpuEngine(weights), prompts, 9, 2, 3)
    reference = NumpyEngine(weights)
    reference.warm_up()
    expected = routing.single_routes(reference, prompts, 9)
    assert len(kept) == len(expected) == TINY.n_layers
    for got, want in zip(kept, expected):
        assert got.shape == want.shape == (4 * 9, TINY.experts_per_token)
        # rows come in step order on the batched engine, request by request on the reference
        assert sorted(map(tuple, got.tolist())) == sorted(map(tuple, want.tolist()))
