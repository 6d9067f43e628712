"""The batched engine's orchestration on the CPU: gpu/batch.py's model over rows, KV ring, attention
splits, MoE grouping and the scheduler loop, with numpy stand-ins for the kernels (tests/batch_fakes.py),
against the numpy reference engine run one request at a time. The kernels themselves are tested
against the same contracts on the GPU."""

from __future__ import annotations

import numpy as np
import pytest

from cupy_getp.checkpoint import SyntheticStore, Weights
from cupy_getp.diff import DiffSummary, diff_batched
from cupy_getp.engine.factory import create_engine
from cupy_getp.getp import run_batched, run_requests
from cupy_getp.sampler import Sampler

from batch_fakes import FakeEngine, fake_cupy
from conftest import TINY

GREEDY = Sampler(0.0, 0.9, 1)


@pytest.fixture
def cupy_stand_in(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)


def prompts(n, seed, longest=9):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, TINY.vocab_size, rng.integers(1, longest + 1)).tolist() for _ in range(n)]


def reference_engine(weights):
    """The numpy engine, warmed up: the oracle of these tests."""
    reference = create_engine(weights, "numpy")
    reference.warm_up()
    return reference


def reference_lines(weights, requests, steps):
    """The greedy lines of the numpy engine running the requests one at a time."""
    return run_requests(reference_engine(weights), GREEDY, requests, steps)


def batched_engine(weights, n_slots, max_chunk, n_ctx, precision, kv_cache="fp32", overlap=False):
    from cupy_getp.gpu.batch import BatchedEngine
    from cupy_getp.gpu.batch_shape import BatchShape

    return BatchedEngine(FakeEngine(weights), BatchShape(n_slots, n_slots + max_chunk, max_chunk, n_ctx, kv_cache),
                         precision, use_graphs=False, overlap=overlap)


@pytest.mark.parametrize("bf16_exact, precision", [(True, "exact"), (False, "fp32")])
def test_batched_lines_equal_the_reference_one_request_at_a_time(cupy_stand_in, bf16_exact, precision):
    """Window 5 with chunks of 3: the windowed layers' 8-position ring wraps many times; 11 requests
    over 4 slots: admission while others decode; 40 positions: past the window."""
    weights = Weights(SyntheticStore(TINY, seed=9, bf16_exact=bf16_exact))
    requests, steps = prompts(11, 1), 40
    want = reference_lines(weights, requests, steps)
    batched = batched_engine(weights, 4, 3, steps, precision)
    assert batched.model.cache.lengths[0] == TINY.sliding_window + 3 < steps  # a real ring
    assert run_batched(batched, GREEDY, requests, steps) == want


@pytest.mark.parametrize("precision", ["exact", "fp32"])
def test_steps_run_ahead_give_the_reference_lines(cupy_stand_in, precision):
    """Overlapped steps (run_overlapped: each step launched before the last one's tokens are read, a decoding
    row's token fed on the device from the step before's next_token by embedding_rows_fed): the greedy lines of
    the reference, 11 requests over 4 slots in chunks of 3; the fed kernel runs, and a NaN still names its
    request."""
    from cupy_getp.errors import NumericalError

    weights = Weights(SyntheticStore(TINY, seed=9))
    requests, steps = prompts(11, 1), 40
    batched = batched_engine(weights, 4, 3, steps, precision, overlap=True)
    assert batched.model.view(4).row_source is not None
    assert run_batched(batched, GREEDY, requests, steps) == reference_lines(weights, requests, steps)
    launches = batched.engine.kernels.launches
    assert "embedding_rows_fed_f32" in launches and "embedding_rows_f32" not in launches
    batched.engine.w.out[5] = np.inf if batched.engine.w.out.dtype == np.float32 else 0x7F80  # +inf bits: logit 5
    with np.errstate(invalid="ignore"), pytest.raises(NumericalError, match=r"request 17: non-finite logits"):
        run_batched(batched, GREEDY, prompts(1, 3), 20, numbers=[16])


def test_batched_diff_of_every_row_has_no_violation(cupy_stand_in):
    weights = Weights(SyntheticStore(TINY, seed=4))
    requests = prompts(5, 2)
    reference = reference_engine(weights)
    batched = batched_engine(weights, 2, 3, 30, "exact")
    summary = DiffSummary()
    for _, step in diff_batched(reference, batched, requests, 20):
        summary.add(step)
    assert summary.generated >= 5 * 20 and summary.positions > summary.generated
    assert not summary.violations, summary.violations[:3]


def test_a_bf16_kv_cache_matches_the_reference_that_rounds_its_keys_and_values(cupy_stand_in):
    """`kv_cache="bf16"`: the caches hold BF16 bits, and every row diffs within the spec's tolerances against the
    numpy engine that rounds each key and value to BF16 as it caches them, far closer than against the FP32
    one (the rounding is where the engines agree)."""
    from cupy_getp.reference import NumpyEngine

    weights = Weights(SyntheticStore(TINY, seed=4))
    requests = prompts(5, 2)
    worst = {}
    for kv_cache in ("bf16", "fp32"):  # the reference's cache
        reference = NumpyEngine(weights, kv_cache)
        reference.warm_up()
        batched = batched_engine(weights, 2, 3, 30, "exact", kv_cache="bf16")
        assert all(keys.dtype == np.uint16 for keys in batched.model.cache.keys + batched.model.cache.values)
        summary = DiffSummary()
        for _, step in diff_batched(reference, batched, requests, 20):
            summary.add(step)
        worst[kv_cache] = summary.worst["attn_out"]
        if kv_cache == "bf16":
            assert not summary.violations, summary.violations[:3]
    assert 0 < 100 * worst["bf16"] < worst["fp32"], worst


def test_a_non_finite_logit_stops_with_the_request_and_position(cupy_stand_in):
    from cupy_getp.errors import NumericalError

    weights = Weights(SyntheticStore(TINY, seed=4))
    batched = batched_engine(weights, 2, 3, 30, "exact")
    batched.engine.w.out[5] = np.inf if batched.engine.w.out.dtype == np.float32 else 0x7F80  # +inf bits: logit 5
    with np.errstate(invalid="ignore"), pytest.raises(NumericalError, match=r"request 1: non-finite logits at "
                                                                          r"position \d+"):
        run_batched(batched, GREEDY, prompts(1, 3), 20)
    # A part of the input (a worker's chunk, a shard): the request is named by its number in the whole input.
    with np.errstate(invalid="ignore"), pytest.raises(NumericalError, match=r"request 17: non-finite logits"):
        run_batched(batched, GREEDY, prompts(1, 3), 20, numbers=[16])


def test_one_slot_runs_one_row_steps_like_the_reference(cupy_stand_in):
    """One slot, chunks of 1: every step is one row (the matvec and fused-expert path of batch-1 decode)."""
    weights = Weights(SyntheticStore(TINY, seed=6))
    requests, steps = prompts(2, 7), 30
    batched = batched_engine(weights, 1, 1, steps, "exact")
    assert run_batched(batched, GREEDY, requests, steps) == reference_lines(weights, requests, steps)
    assert set(batched.model.views) == {1}  # one sequence, chunks of 1: every step is one row


def test_above_temperature_zero_each_request_draws_its_own_stream(cupy_stand_in):
    """4 slots or 2, the same lines; request 0's generator is the original's (seed + 0), so its line is
    the single-sequence decode's with the same seed."""
    from cupy_getp.generation import decode
    from cupy_getp.tokenizer import STOP_TOKENS

    weights = Weights(SyntheticStore(TINY, seed=8))
    requests, steps = prompts(6, 9), 30
    lines = [run_batched(batched_engine(weights, slots, 3, steps, "exact"), Sampler(0.9, 0.9, 7), requests, steps)
             for slots in (4, 2)]
    assert lines[0] == lines[1]
    reference = reference_engine(weights)
    assert lines[0][0] == list(decode(reference, Sampler(0.9, 0.9, 7), requests[0], steps, STOP_TOKENS))
    assert lines[0] != run_requests(reference, GREEDY, requests, steps)  # really sampled


def test_a_budget_of_one_position(cupy_stand_in):
    """-n 1 with one-token prompts: one token a request, the reference's."""
    weights = Weights(SyntheticStore(TINY, seed=8))
    requests = [[3], [40], [96]]
    got = run_batched(batched_engine(weights, 2, 1, 1, "exact"), GREEDY, requests, 1)
    assert got == reference_lines(weights, requests, 1) and all(len(line) == 1 for line in got)


@pytest.mark.parametrize("precision", ["exact", "fp32"])
def test_pad_rows_take_no_expert_products(cupy_stand_in, monkeypatch, precision):
    """Steps of 3 and 5 rows run in the buckets of 4 and 7: on every layer the pad rows (the spare slot's)
    place no pair in the MoE grouping (they would lengthen their experts' tiles; nobody reads their results),
    and every pair of the step's own rows is placed."""
    from batch_fakes import FakeKernels

    groupings = []
    align = FakeKernels.moe_align

    def recording_align(self, pair_of_padded, padded_of_pair, *args, **kwargs):
        align(self, pair_of_padded, padded_of_pair, *args, **kwargs)
        groupings.append(np.array(padded_of_pair))

    monkeypatch.setattr(FakeKernels, "moe_align", recording_align)
    weights = Weights(SyntheticStore(TINY, seed=5))
    batched = batched_engine(weights, 4, 3, 8, precision)
    assert batched.shape.buckets == (1, 2, 4, 7)
    top_k = TINY.experts_per_token
    for slots, positions, bucket in [([0, 1, 2], [0, 0, 0], 4), ([0, 0, 0, 1, 3], [1, 2, 3, 1, 0], 7)]:
        groupings.clear()
        v = batched.step(np.array(slots), np.array(positions), np.array([5, 17, 80, 3, 9])[:len(slots)])
        assert v.R == bucket and len(groupings) == TINY.n_layers
        for padded_of_pair in groupings:
            placed = padded_of_pair.reshape(bucket, top_k) >= 0
            assert placed[:len(slots)].all() and not placed[len(slots):].any()


def test_many_rows_take_the_tensor_core_path_like_the_reference(cupy_stand_in):
    """40 slots on the mma.sync path: every step, one row included, goes through the split pieces and the
    tensor-core kernels' contracts (dense and grouped), and still gives the reference's lines."""
    weights = Weights(SyntheticStore(TINY, seed=5))
    requests, steps = prompts(40, 4, longest=3), 6
    batched = batched_engine(weights, 40, 2, steps, "exact")
    assert run_batched(batched, GREEDY, requests, steps) == reference_lines(weights, requests, steps)
    views = batched.model.views
    assert any(R > 32 for R in views) and all(v.tensor_cores for v in views.values())


def test_wgmma_products_take_every_step_one_row_included_like_the_reference(cupy_stand_in, monkeypatch):
    """Where the wgmma kernels run (sm_90), every step takes the tensor-core products, one row included
    (batch invariance), with MoE tiles as small as 8 positions: the lines are still the reference's, and
    no step uses a CUDA-core product or the single-sequence engine's one-row kernels."""
    from batch_fakes import FakeKernels

    monkeypatch.setattr(FakeKernels, "wgmma", True)
    for name in ("gemm", "gemm_grouped_swiglu", "gemm_grouped", "matvec", "moe_mlp1_swiglu", "moe_mlp2_accumulate"):
        monkeypatch.setattr(FakeKernels, name, None)  # any call fails: not on this path
    weights = Weights(SyntheticStore(TINY, seed=5))
    requests, steps = prompts(7, 6, longest=4), 8
    batched = batched_engine(weights, 3, 2, steps, "exact")
    assert run_batched(batched, GREEDY, requests, steps) == reference_lines(weights, requests, steps)
    views = batched.model.views
    assert 1 in views and len(views) > 1 and all(v.tensor_cores for v in views.values())
    assert {v.block_m for v in views.values()} <= {8, 16, 32, 64}


def test_tensor_core_steps_take_attention_its_merge_and_att_pieces_in_one_launch(cupy_stand_in, monkeypatch):
    """On tensor cores, steps of few rows take a layer's attention in one launch: the partials, their merge and
    att's pieces for the output projection (attn_rows_partial with its merge): no merge or tc_split_rows launch
    in any step, one attention launch a layer; the lines stay the reference's."""
    from batch_fakes import FakeKernels

    monkeypatch.setattr(FakeKernels, "wgmma", True)
    weights = Weights(SyntheticStore(TINY, seed=5))
    requests, steps = prompts(5, 7, longest=4), 5
    batched = batched_engine(weights, 3, 2, steps, "exact")
    assert run_batched(batched, GREEDY, requests, steps) == reference_lines(weights, requests, steps)
    launches = batched.model.kernels.launches
    n_steps = launches.count("embedding_rows_f32")
    assert n_steps > 1 and not {"tc_split_rows", "attn_rows_merge_f32", "attn_rows_merge_split"} & set(launches)
    assert launches.count("attn_rows_partial_d64_g8_f32") == n_steps * TINY.n_layers
