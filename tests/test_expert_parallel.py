"""Expert parallelism on the CPU: the exchange plan and the in-process communicator on their own (no
kernels), then G ranks in one process on the kernels' numpy stand-ins against the unsharded batched engine,
bit for bit (tests/test_gpu_expert_parallel.py runs the same comparisons on the kernels)."""

from __future__ import annotations

import numpy as np
import pytest

from cupy_getp.checkpoint import SyntheticStore, Weights
from cupy_getp.config import preset
from cupy_getp.errors import DeviceError
from cupy_getp.gpu import expert_plan
from cupy_getp.gpu.comm import InProcessCommunicator
from cupy_getp.gpu.expert_plan import check_divisible, plan_exchange

from batch_fakes import FakeDevice, FakeEngine, FakeKernels
from conftest import TINY
from ep_helpers import TINY_EP, device_weights, moe_chain, step_logits
from test_batch_model import cupy_stand_in  # noqa: F401 (a fixture: CuPy's numpy stand-in)


# -- the plan and the communicator, no kernels ----------------------------------------------------------------
def random_experts(rng, n_ranks, rows, n_experts, k):
    """Every rank's (rows, k) distinct expert ids; rank 0's all on the first rank's experts (others get none
    of its pairs), the rest at random."""
    experts = [np.argsort(rng.random((rows, n_experts)), axis=1)[:, :k].astype(np.int32) for _ in range(n_ranks)]
    experts[0] = np.argsort(rng.random((rows, n_experts // n_ranks)), axis=1)[:, :k].astype(np.int32)
    return experts


@pytest.mark.parametrize("n_ranks", [1, 2, 4])
def test_plan_sends_every_pair_once_to_the_rank_holding_its_expert(rng, n_ranks):
    n_experts, k, rows = 16, 4, 9
    experts = random_experts(rng, n_ranks, rows, n_experts, k)
    plan = plan_exchange(experts, n_experts)
    per_rank = n_experts // n_ranks
    assert plan.counts(0)[1:] == [0] * (n_ranks - 1)  # rank 0's pairs all stay
    for src in range(n_ranks):
        sent = np.concatenate(plan.send_pairs[src])
        np.testing.assert_array_equal(np.sort(sent), np.arange(rows * k))  # each pair once
        for dst in range(n_ranks):
            pairs = plan.send_pairs[src][dst]
            assert np.all(np.diff(pairs) > 0)  # pair order
            np.testing.assert_array_equal(experts[src].reshape(-1)[pairs] // per_rank, dst)
            np.testing.assert_array_equal(plan.sent_experts[src][dst], experts[src].reshape(-1)[pairs])
        np.testing.assert_array_equal(plan.dispatch_rows(src), sent // k)
    for dst in range(n_ranks):
        local = plan.local_experts(dst)
        assert local.shape == (sum(plan.received_counts(dst)), 1)
        assert np.all((local >= 0) & (local < per_rank))
        want = np.concatenate([experts[src].reshape(-1)[plan.send_pairs[src][dst]] for src in range(n_ranks)])
        np.testing.assert_array_equal(local[:, 0] + dst * per_rank, want)  # source order


@pytest.mark.parametrize("n_ranks", [2, 4])
def test_outputs_come_back_to_each_pair_in_slot_order(rng, n_ranks):
    """The plan and the in-process all-to-all together: each rank 'computes' its received pairs' outputs as
    (source rank, pair id, expert); after the return, row r's slot s reads its own pair's output at
    return_positions[r k + s], in slot order."""
    n_experts, k, rows = 16, 3, 7
    experts = random_experts(rng, n_ranks, rows, n_experts, k)
    plan = plan_exchange(experts, n_experts)
    comm = InProcessCommunicator(n_ranks)
    # what each rank receives: (source rank, pair id) of each pair, then "computed": + the global expert
    sends = [np.stack([np.full(rows * k, src), np.arange(rows * k)], 1)[np.concatenate(plan.send_pairs[src])]
             for src in range(n_ranks)]
    received = [np.full((n_ranks * rows * k, 2), -1) for _ in range(n_ranks)]
    comm.all_to_all(sends, [plan.counts(r) for r in range(n_ranks)], received,
                    [plan.received_counts(r) for r in range(n_ranks)])
    outputs = []
    for dst in range(n_ranks):
        n = sum(plan.received_counts(dst))
        outputs.append(np.concatenate([received[dst][:n], plan.local_experts(dst) + dst * plan.experts_per_rank], 1))
    returned = [np.full((rows * k, 3), -1) for _ in range(n_ranks)]
    comm.all_to_all(outputs, [plan.received_counts(r) for r in range(n_ranks)], returned,
                    [plan.counts(r) for r in range(n_ranks)])
    for src in range(n_ranks):
        got = returned[src][plan.return_positions(src)].reshape(rows, k, 3)
        np.testing.assert_array_equal(got[..., 0], src)
        np.testing.assert_array_equal(got[..., 1], np.arange(rows * k).reshape(rows, k))
        np.testing.assert_array_equal(got[..., 2], experts[src])


def test_in_process_all_to_all_refuses_counts_that_disagree():
    comm = InProcessCommunicator(2)
    sends = [np.zeros((4, 2)), np.zeros((4, 2))]
    recvs = [np.zeros((8, 2)), np.zeros((8, 2))]
    with pytest.raises(ValueError, match="rank 1 sends 3 rows to rank 0, which expects 2"):
        comm.all_to_all(sends, [[1, 3], [3, 1]], recvs, [[1, 2], [3, 1]])


def test_in_process_all_gather_is_rank_order():
    comm = InProcessCommunicator(3)
    recvs = [np.zeros((3, 2)) for _ in range(3)]
    comm.all_gather([np.full(2, r) for r in range(3)], recvs)
    for recv in recvs:
        np.testing.assert_array_equal(recv, [[0, 0], [1, 1], [2, 2]])


def test_experts_that_do_not_split_evenly_are_one_clear_error(cupy_stand_in, tiny_weights):
    with pytest.raises(DeviceError, match=r"over 2 ranks needs the experts \(5\) to split evenly"):
        check_divisible(TINY.n_experts, 2)
    with pytest.raises(DeviceError, match="split evenly"):
        moe_chain(TINY, device_weights(tiny_weights), FakeKernels(), FakeDevice(), "fp32", 2, 2, 0)
    assert check_divisible(128, 4) == 32


# -- G ranks on the kernels' stand-ins against one GPU's engine ---------------------------------------------------
@pytest.fixture(scope="module")
def tiny_ep_weights():
    return Weights(SyntheticStore(TINY_EP, seed=11))


def stand_in_kernels(precision):
    """The stand-ins with the wgmma kernels for exact / fast (tensor cores at every row count, as on an H200)."""
    kernels = FakeKernels()
    kernels.wgmma = precision != "fp32"
    return kernels


@pytest.mark.parametrize("precision", ["exact", "fast", "fp32"])
@pytest.mark.parametrize("n_ranks", [2, 4])
def test_tiny_moe_of_g_ranks_is_one_gpus_bits(cupy_stand_in, tiny_ep_weights, n_ranks, precision):
    kernels = stand_in_kernels(precision)
    (want_x, want_moe), (got_x, got_moe) = moe_chain(TINY_EP, device_weights(tiny_ep_weights), kernels, FakeDevice(),
                                                     precision, n_ranks, 5, 1)
    np.testing.assert_array_equal(got_moe, want_moe)
    np.testing.assert_array_equal(got_x, want_x)


@pytest.mark.parametrize("n_ranks", [2, 4])
def test_7m_moe_of_g_ranks_is_one_gpus_bits(cupy_stand_in, weights_7m, n_ranks):
    (want_x, _), (got_x, _) = moe_chain(preset("7m"), device_weights(weights_7m), stand_in_kernels("exact"),
                                        FakeDevice(), "exact", n_ranks, 3, 2)
    np.testing.assert_array_equal(got_x, want_x)


@pytest.mark.parametrize("precision", ["exact", "fp32"])
def test_tiny_step_logits_of_g_ranks_are_one_gpus_bits(cupy_stand_in, tiny_ep_weights, precision):
    """Whole steps (attention on each rank's own rows and KV cache, the MoE shared): the same logits."""
    want, got = step_logits(TINY_EP, device_weights(tiny_ep_weights), stand_in_kernels(precision), FakeDevice(),
                            precision, 2, 3, 3, 4)
    np.testing.assert_array_equal(got, want)


def test_a_wrong_combine_order_is_caught(cupy_stand_in, tiny_ep_weights, monkeypatch):
    """The comparison sees the order: slots combined in reverse give other bits."""
    in_order = expert_plan.ExchangePlan.return_positions

    def reversed_slots(plan, src):
        return in_order(plan, src).reshape(-1, plan.top_k)[:, ::-1].reshape(-1).copy()

    monkeypatch.setattr(expert_plan.ExchangePlan, "return_positions", reversed_slots)
    (want_x, want_moe), (got_x, got_moe) = moe_chain(TINY_EP, device_weights(tiny_ep_weights), FakeKernels(),
                                                     FakeDevice(), "fp32", 2, 5, 1)
    assert not np.array_equal(got_moe, want_moe)


# -- the NCCL communicator's arithmetic, over a fake NCCL (no GPU, no NCCL here) ------------------------------
class FakeNccl:
    """`cupy.cuda.nccl` for G communicators in one thread: calls are recorded and delivered afterwards
    (`deliver`), sends matched with receives in order per (source, destination), as NCCL does."""

    NCCL_FLOAT32, NCCL_INT32 = 7, 2

    def __init__(self, buffers):
        self.sends, self.recvs, self.gathers = {}, {}, []
        self.buffers = buffers  # every array the calls may touch: a copy outside them is a failure, not a crash

    def copy(self, dst: int, src: int, n: int) -> None:
        import ctypes

        for ptr in (dst, src):
            assert any(a.ctypes.data <= ptr and ptr + n <= a.ctypes.data + a.nbytes for a in self.buffers), \
                "a copy outside the buffers"
        ctypes.memmove(dst, src, n)

    def groupStart(self):
        pass

    def groupEnd(self):
        pass

    def NcclCommunicator(self, n_ranks, unique_id, rank):
        net = self

        class Comm:
            def send(self, ptr, count, dtype, peer, stream):
                net.sends.setdefault((rank, peer), []).append((ptr, 4 * count))

            def recv(self, ptr, count, dtype, peer, stream):
                net.recvs.setdefault((peer, rank), []).append((ptr, 4 * count))

            def allGather(self, send_ptr, recv_ptr, count, dtype, stream):
                net.gathers.append((rank, send_ptr, recv_ptr, 4 * count))

        return Comm()

    def deliver(self):
        assert self.sends.keys() == self.recvs.keys()
        for pair, sends in self.sends.items():
            for (src, n), (dst, m) in zip(sends, self.recvs[pair], strict=True):
                assert n == m, pair
                self.copy(dst, src, n)
        for _, _, recv_ptr, n in self.gathers:
            for src, send_ptr, _, _ in sorted(self.gathers):
                self.copy(recv_ptr + src * n, send_ptr, n)


def test_nccl_communicator_moves_what_the_in_process_one_does(rng, monkeypatch):
    import sys
    import types

    from batch_fakes import host_array
    from cupy_getp.gpu.comm import NcclCommunicator

    n_ranks, width = 3, 5
    counts = rng.integers(0, 4, (n_ranks, n_ranks)).tolist()  # counts[src][dst], zeros included
    counts[1][2] = 0
    sends = [host_array(rng.standard_normal((sum(c), width)).astype(np.float32)) for c in counts]
    received = [[counts[src][dst] for src in range(n_ranks)] for dst in range(n_ranks)]
    ids = [host_array(np.full((2, 2), r, np.int32)) for r in range(n_ranks)]
    want = [np.full((sum(r) + 1, width), np.nan, np.float32) for r in received]
    want_ids = [np.zeros((n_ranks, 2, 2), np.int32) for _ in range(n_ranks)]
    InProcessCommunicator(n_ranks).all_to_all(sends, counts, want, received)
    InProcessCommunicator(n_ranks).all_gather(ids, want_ids)
    got = [host_array(np.full_like(w, np.nan)) for w in want]
    got_ids = [host_array(np.zeros_like(w)) for w in want_ids]
    net = FakeNccl([*sends, *ids, *got, *got_ids])
    cuda = types.SimpleNamespace(nccl=net)
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(cuda=cuda))
    monkeypatch.setitem(sys.modules, "cupy.cuda", cuda)
    stream = types.SimpleNamespace(ptr=0)
    for rank in range(n_ranks):
        comm = NcclCommunicator(n_ranks, rank, b"id", stream)
        comm.all_to_all([sends[rank]], [counts[rank]], [got[rank]], [received[rank]])
        comm.all_gather([ids[rank]], [got_ids[rank]])
    net.deliver()
    for rank in range(n_ranks):
        np.testing.assert_array_equal(got[rank], want[rank])  # the spare last row stays NaN in both
        np.testing.assert_array_equal(got_ids[rank], want_ids[rank])


# -- a device holding only its experts ----------------------------------------------------------------------
def device_weights_of(weights, experts, expert_range=None):
    from cupy_getp.gpu.weights import DeviceWeights

    return DeviceWeights(weights, FakeDevice(), FakeKernels(), experts=experts, expert_range=expert_range)


def expert_arrays(w, name):
    a = w.arrays[name]
    return (a.blocks, a.scales) if hasattr(a, "blocks") else (a,)


def weights_case(case, tmp_path):
    """(weights, expert storage) of a case: generated on the device, uploaded, or an MXFP4 checkpoint."""
    from cupy_getp.checkpoint import ArrayStore
    from test_device_weights import mxfp4_checkpoint

    if case == "checkpoint mxfp4":
        return mxfp4_checkpoint(tmp_path), "mxfp4"
    store = SyntheticStore(TINY_EP, seed=5)
    return Weights(ArrayStore.materialize(store) if case == "uploaded bf16" else store), case.split()[-1]


@pytest.mark.parametrize("case", ["synthetic bf16", "synthetic mxfp4", "uploaded bf16", "checkpoint mxfp4"])
def test_device_weights_of_an_expert_range_are_that_slice(cupy_stand_in, tmp_path, case):
    """Generated on the device (the stream started past the experts before) or uploaded (per layer and
    expert): experts [lo, hi) of every layer as the full weights hold them, the dense tensors whole."""
    from cupy_getp.gpu.weights import EXPERT_TENSORS, upload_bytes

    weights, storage = weights_case(case, tmp_path)
    E = weights.config.n_experts
    full = device_weights_of(weights, storage)
    for lo, hi in [(0, E // 2), (E // 2, E), (1, E - 1)]:
        part = device_weights_of(weights, storage, (lo, hi))
        assert part.expert_range == (lo, hi)
        for name in full.arrays:
            for got, whole in zip(expert_arrays(part, name), expert_arrays(full, name), strict=True):
                want = whole[:, lo:hi] if name in EXPERT_TENSORS else whole
                np.testing.assert_array_equal(got, want, err_msg=f"{name} {lo}..{hi}")
    assert upload_bytes(weights, storage, (0, E // 2)) < upload_bytes(weights, storage)
    with pytest.raises(ValueError, match=f"expert range 1..{E + 1} outside the model's {E} experts"):
        device_weights_of(weights, storage, (1, E + 1))


@pytest.mark.parametrize("experts", ["bf16", "mxfp4"])
def test_ranks_holding_only_their_experts_give_one_gpus_bits(cupy_stand_in, experts):
    weights = Weights(SyntheticStore(TINY_EP, seed=5))
    full = device_weights_of(weights, experts)
    shards = [device_weights_of(weights, experts, (q * 3, q * 3 + 3)) for q in range(4)]
    kernels = stand_in_kernels("exact")
    (want_x, want_moe), (got_x, got_moe) = moe_chain(TINY_EP, full, kernels, FakeDevice(), "exact", 4, 4, 3,
                                                     shard_weights=shards)
    np.testing.assert_array_equal(got_moe, want_moe)
    np.testing.assert_array_equal(got_x, want_x)
    with pytest.raises(ValueError, match="rank 0 needs experts 0..3; its weights hold experts 3..6"):
        moe_chain(TINY_EP, full, kernels, FakeDevice(), "exact", 4, 4, 3, shard_weights=shards[1:] + shards[:1])


# -- getp's lockstep loop over G in-process ranks, against one GPU's batched engine -------------------------------
def lockstep_lines(weights, requests, steps, n_ranks, n_slots, precision, sampler):
    """Every request's tokens through G ranks in one process (rank q fed requests q, q + G, ... in one
    chunk), stepped in lockstep by `run_lockstep`: in input order."""
    from cupy_getp.getp_session import run_lockstep
    from cupy_getp.gpu.batch_shape import BatchShape
    from cupy_getp.gpu.ep_engine import ExpertParallelBatch

    engine = FakeEngine(weights)
    engine.kernels = stand_in_kernels(precision)
    batched = ExpertParallelBatch(engine, BatchShape(n_slots, n_slots + 3, 3, steps), precision,
                                  InProcessCommunicator(n_ranks))
    shares = [[(i, requests[i]) for i in range(q, len(requests), n_ranks)] for q in range(n_ranks)]

    def take(q):
        def given(block):
            assert not block  # lockstep ranks never wait for requests
            share, shares[q] = shares[q], None
            return share
        return given

    results = {}
    run_lockstep(batched, sampler, steps, [take(q) for q in range(n_ranks)], results.__setitem__)
    return [results[i] for i in range(len(requests))]


@pytest.mark.parametrize("precision, temperature", [("exact", 0.0), ("exact", 0.8), ("fast", 0.0)])
def test_getp_over_g_ranks_gives_one_gpus_lines(cupy_stand_in, tiny_ep_weights, precision, temperature):
    """7 requests over 2 ranks of 2 slots (ranks with unequal work: one ends first and steps pad rows while
    the other runs) against one batched engine of 3 slots: the same tokens, greedy and sampled."""
    from cupy_getp.getp_session import run_batched
    from cupy_getp.gpu.batch import BatchedEngine
    from cupy_getp.gpu.batch_shape import BatchShape
    from cupy_getp.sampler import Sampler
    from test_batch_model import prompts

    requests, steps = [p[:6] for p in prompts(7, 3)], 14
    requests = [[t % TINY_EP.vocab_size for t in p] for p in requests]
    engine = FakeEngine(tiny_ep_weights)
    engine.kernels = stand_in_kernels(precision)
    one = BatchedEngine(engine, BatchShape(3, 6, 3, steps), precision, use_graphs=False)
    want = run_batched(one, Sampler(temperature, 0.9, 5), requests, steps)
    got = lockstep_lines(tiny_ep_weights, requests, steps, 2, 2, precision, Sampler(temperature, 0.9, 5))
    assert got == want
    assert len({len(line) for line in want}) > 1  # requests of different lengths: the ranks' work differs


def test_expert_parallel_on_the_command_line_refuses_the_numpy_engine(tmp_path):
    from conftest import ROOT, cli

    out = tmp_path / "out.txt"
    result = cli("getp", "7m", "-i", str(ROOT / "data/input.txt"), "-o", str(out), "--expert-parallel", "2",
                 "--engine", "numpy")
    assert result.returncode != 0 and not out.exists()
    assert "--expert-parallel runs the cupy engine, not the numpy engine" in result.stderr, result.stderr
    assert result.stderr.count("error:") == 1, result.stderr


@pytest.mark.parametrize("ranks, workers, shard, message", [
    (1, 0, None, "needs 2 or more GPUs, got 1"),
    (2, 2, None, "--expert-parallel and --workers exclude each other"),
    (2, 0, "1/2", "--shard at temperature > 0 needs a seed"),  # the clock's seed would differ in each shard
])
def test_expert_parallel_spread_refuses_what_cannot_run(ranks, workers, shard, message):
    from cupy_getp.errors import GetpError
    from cupy_getp.getp import make_spread

    with pytest.raises(GetpError, match=message):
        make_spread(shard, None, workers, "cupy", 0.8 if shard else 0.0, 0, expert_parallel=ranks)


def test_a_lockstep_rank_whose_run_process_is_gone_takes_no_more(monkeypatch):
    """A rank never waits for requests (the others step with it); with the run's process killed no end
    will come, so an empty queue then means the end: the ranks finish their rows and exit instead of
    stepping pad rows forever."""
    import queue

    from cupy_getp import workers

    tasks = queue.Queue()
    monkeypatch.setattr(workers, "_parent_alive", lambda: True)
    assert workers._take_in_lockstep(tasks) == []
    tasks.put(("chunk", [3], [[1, 2]]))
    monkeypatch.setattr(workers, "_parent_alive", lambda: False)
    assert workers._take_in_lockstep(tasks) == [(3, [1, 2])]  # what is there is still taken
    assert workers._take_in_lockstep(tasks) is None


def test_a_rank_holding_a_slice_of_the_experts_runs_nothing_else(tiny_ep_weights):
    """Its weights lack the other experts: a batched engine of its own or a single sequence would read
    experts it does not hold, so both are one clear error (before any device work)."""
    from cupy_getp.errors import GetpError
    from cupy_getp.gpu.engine import CupyEngine

    rank = CupyEngine(tiny_ep_weights, "bf16", 8, expert_parallel=(1, 2))
    rank.device, rank.finished = FakeDevice(), False
    assert rank.expert_range() == (6, 12)
    with pytest.raises(GetpError, match=r"holds experts \(6, 12\) of each layer only: it cannot run a batched"):
        rank.batched(4, 8)
    with pytest.raises(GetpError, match="cannot run single sequences"):
        rank.one_slot_model()


def test_the_shape_the_ranks_agree_on_keeps_the_kv_cache(cupy_stand_in):
    """The ranks' agreed shape (the fewest slots any planned) keeps the rest of the plan: its KV cache too."""
    from cupy_getp.gpu.batch_shape import BatchShape
    from cupy_getp.gpu.ep_engine import agree_on_shape

    assert agree_on_shape(InProcessCommunicator(2), BatchShape(5, 5 + 3, 3, 40, "bf16")) == BatchShape(5, 8, 3, 40,
                                                                                                      "bf16")
