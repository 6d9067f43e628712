"""The batched engine's MoE kernels (kernels/moe.hip, launch/moe.py): router over rows with its choice, grouping
of the (row, top-k choice) pairs by expert into tiles (moe_align), the weighted combine. GPU tests compare with
the kernels' oracles (tests/kernel_oracles.py, through `expected`) and reference.route; the CPU tests
check the padding bound, the grouping oracle itself and the launch helpers' arguments and grids."""

from __future__ import annotations

import numpy as np
import pytest

from cupy_getp.bf16 import f32_to_bf16, round_to_bf16
from cupy_getp.gpu.launch.common import BF16, F32, I32
from cupy_getp.gpu.launch.moe import MOE_ALIGN_THREADS, MoeLaunches, moe_padded_pairs, router_rows_per_block
from cupy_getp.gpu.launch.moe import moe_align_host as align_oracle
from cupy_getp.reference import route
from batch_fakes import FakeDevice, expected, host_array
from gpu_helpers import kernel_settings
from kernel_oracles import f32
from seeding import seeded

ELEMENT_TOL = 5e-6
COMBINE_TOL = 1e-5
GARBAGE = 0x5EED5EED  # an int32 no kernel writes by itself

gpu = pytest.mark.gpu


# -- CPU: the padding bound, the oracle, the launch helpers ---------------------------------------------
def test_moe_padded_pairs_bounds_every_grouping():
    rng = seeded("bounds")
    for _ in range(2000):
        n_experts = int(rng.integers(1, 200))
        block_m = int(rng.choice([1, 2, 8, 16, 32, 64, 128]))
        n_pairs = int(rng.integers(0, 5000))
        padded = moe_padded_pairs(n_pairs, n_experts, block_m)
        assert padded % block_m == 0 and padded >= n_pairs
        assert padded == block_m * -(-(n_pairs + n_experts * (block_m - 1)) // block_m)
        # random counts (uniform, skewed, all on one expert, as many experts as possible just past a tile)
        shapes = [rng.multinomial(n_pairs, np.full(n_experts, 1 / n_experts)),
                  rng.multinomial(n_pairs, rng.dirichlet(np.full(n_experts, 0.1))),
                  np.eye(n_experts, dtype=np.int64)[rng.integers(n_experts)] * n_pairs]
        # the most tiles n_pairs can need: one pair per expert, then every further BM pairs one more tile
        worst = np.zeros(n_experts, np.int64)
        worst[: min(n_pairs, n_experts)] = 1
        extra = max(0, n_pairs - n_experts)
        worst[0] += block_m * (extra // block_m) + extra % block_m
        assert np.sum(-(-worst // block_m)) == (n_pairs if n_pairs <= n_experts else n_experts + extra // block_m)
        shapes.append(worst)
        for counts in shapes:
            assert counts.sum() == n_pairs
            assert int(np.sum(-(-counts // block_m))) <= padded // block_m


def test_moe_padded_pairs_is_tight_for_one_pair_per_expert():
    for n_experts, block_m in [(5, 8), (32, 64), (128, 16)]:
        padded = moe_padded_pairs(n_experts, n_experts, block_m)
        assert padded == n_experts * block_m  # every expert one pair: one tile each, nothing spare


def test_align_oracle_is_a_consistent_grouping():
    rng = seeded("oracle")
    experts = rng.integers(0, 9, (50, 3)).astype(np.int32)
    pair_of_padded, padded_of_pair, tile_expert = align_oracle(experts, 9, 8)
    flat = experts.reshape(-1)
    assert np.array_equal(pair_of_padded[padded_of_pair], np.arange(flat.size))
    used = pair_of_padded >= 0
    assert used.sum() == flat.size
    assert np.array_equal(tile_expert[np.flatnonzero(used) // 8], flat[pair_of_padded[used]])
    ordered = pair_of_padded[used]
    assert np.array_equal(ordered, np.lexsort((np.arange(flat.size), flat)))  # by expert, then pair id
    n_used = int((tile_expert >= 0).sum())
    assert np.all(tile_expert[:n_used] >= 0) and np.all(np.diff(tile_expert[:n_used]) >= 0)


class _Recorder(MoeLaunches):
    warps_per_block = 8

    def __init__(self):
        self.calls = []
        self.device = FakeDevice()
        self._sm_count = 132  # an H100's, an H200's

    def _launch(self, name, grid, block, args):
        assert isinstance(grid, tuple) and isinstance(block, tuple) and grid[0] > 0
        self.calls.append((name, grid, block, args))


def test_launch_helpers_check_shapes_and_size_grids_from_shapes():
    k = _Recorder()
    rows, top, n_experts, block_m, hidden = 100, 4, 32, 16, 24
    padded = moe_padded_pairs(rows * top, n_experts, block_m)
    experts = np.zeros((rows, top), I32)
    k.router_rows(experts, np.zeros((rows, top), F32), np.zeros((rows, n_experts), F32),
                  host_array(np.zeros((n_experts, hidden), BF16)), np.zeros(n_experts, F32),
                  host_array(np.zeros((rows, hidden), F32)))
    k.moe_align(np.zeros(padded, I32), np.zeros(rows * top, I32), np.zeros(padded // block_m, I32), experts,
                block_m, n_experts, np.zeros(rows, I32), 7)
    k.moe_combine(np.zeros((rows, hidden), F32), np.zeros((rows, hidden), F32), np.zeros((padded, hidden), F32),
                  np.zeros((rows, top), F32), np.zeros(rows * top, I32))
    (n1, g1, b1, a1), (n2, g2, b2, a2), (n3, g3, b3, a3) = k.calls
    assert (n1, g1, b1) == ("router_rows_bf16w", (rows,), (256,))  # a warp 4 experts a pass: 8 warps of 32
    assert (n2, g2, b2) == ("moe_align", (1,), (13 * 32,))  # a warp a 32 pairs: 400 pairs
    assert (n3, g3, b3) == ("moe_combine", (1, rows), (256,))
    for args in (a1, a2, a3):
        assert all(isinstance(a, (np.ndarray, np.int32)) for a in args)
    with pytest.raises(ValueError, match="row_slot"):  # a slot for each row of experts, no more
        k.moe_align(np.zeros(padded, I32), np.zeros(rows * top, I32), np.zeros(padded // block_m, I32), experts,
                    block_m, n_experts, np.zeros(rows + 1, I32), 7)
    with pytest.raises(ValueError, match="moe_padded_pairs"):
        k.moe_align(np.zeros(padded + block_m, I32), np.zeros(rows * top, I32),
                    np.zeros(padded // block_m + 1, I32), experts, block_m, n_experts)
    with pytest.raises(ValueError, match="top_k = 33 of 32 experts"):
        k.router_rows(np.zeros((rows, 33), I32), np.zeros((rows, 33), F32), np.zeros((rows, 32), F32),
                      np.zeros((32, hidden), F32), np.zeros(32, F32), np.zeros((rows, hidden), F32))
    with pytest.raises(ValueError, match="scores"):  # scores of other rows than t's
        k.router_rows(experts, np.zeros((rows, top), F32), np.zeros((rows + 1, n_experts), F32),
                      np.zeros((n_experts, hidden), F32), np.zeros(n_experts, F32), np.zeros((rows, hidden), F32))
    with pytest.raises(TypeError):
        k.router_rows(experts, np.zeros((rows, top), F32), np.zeros((rows, n_experts), F32),
                      np.zeros((n_experts, hidden), np.float64), np.zeros(n_experts, F32), np.zeros((rows, hidden), F32))
    k.router_rows(np.zeros((rows, 2), I32), np.zeros((rows, 2), F32), np.zeros((rows, 5), F32),
                  host_array(np.zeros((5, hidden), F32)), np.zeros(5, F32), host_array(np.zeros((rows, hidden), F32)))
    assert k.calls[-1][:3] == ("router_rows_f32w", (rows,), (2 * 32,))  # fewer experts, fewer warps
    for many, blocks, per_block in ((132, 132, 1), (133, 67, 2), (640, 128, 5), (2000, 250, 8)):
        k.router_rows(np.zeros((many, top), I32), np.zeros((many, top), F32), np.zeros((many, n_experts), F32),
                      host_array(np.zeros((n_experts, hidden), BF16)), np.zeros(n_experts, F32),
                      host_array(np.zeros((many, hidden), F32)))
        _, grid, _, args = k.calls[-1]
        assert (grid, args[-3:]) == ((blocks,), (many, per_block, 1)), many  # rows a block: the SMs filled, <= 8
    k.router_rows(np.zeros((rows, top), I32), np.zeros((rows, top), F32), np.zeros((rows, n_experts), F32),
                  host_array(np.zeros((n_experts, 3080), BF16)), np.zeros(n_experts, F32),
                  host_array(np.zeros((rows, 3080), F32)))
    assert k.calls[-1][3][-1] == 0  # rows of t past ROUTER_STAGED values: read from global memory
    for pairs, experts_n, threads in ((4, 32, 32), (4, 128, 128), (4096, 32, MOE_ALIGN_THREADS), (32, 5, 32)):
        k.moe_align(np.zeros(moe_padded_pairs(pairs, experts_n, 8), I32), np.zeros(pairs, I32),
                    np.zeros(moe_padded_pairs(pairs, experts_n, 8) // 8, I32), np.zeros((pairs, 1), I32), 8, experts_n)
        assert k.calls[-1][2] == (threads,), (pairs, experts_n)
    with pytest.raises(TypeError):
        k.moe_combine(np.zeros((rows, hidden), F32), np.zeros((rows, hidden), F32), np.zeros((padded, hidden), F32),
                      np.zeros((rows, top), F32), np.zeros(rows * top, np.int64))


# -- GPU -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dev():
    from cupy_getp.gpu.device import Device
    from cupy_getp.gpu.kernels import Kernels

    device = Device.open()
    return device, Kernels(device)


def to_device(a):
    import cupy

    return cupy.asarray(a)


def host(a, dev):
    dev[0].synchronize("test")
    return a.get()


def garbage(shape, dtype):
    import cupy

    return cupy.full(shape, GARBAGE if dtype == np.int32 else np.nan, dtype)


def router_scores(rng, rows, n_experts):
    """Scores with ties of every kind; BF16 values, so that router weights of either dtype hold them exactly."""
    scores = round_to_bf16(rng.standard_normal((rows, n_experts)).astype(np.float32))
    for r in range(0, rows, 3):  # ties at the top: several experts share the row's maximum
        scores[r, rng.integers(0, n_experts, 3)] = scores[r].max()
    for r in range(1, rows, 3):  # many ties everywhere
        scores[r] = np.round(scores[r] * 2) / 2
    scores[2 % rows, :] = 0.25  # every expert tied
    if rows > 5:
        scores[5, : n_experts // 2] = -0.0  # -0 and +0 tie
        scores[5, n_experts // 2:] = 0.0
    return scores


def route_scores(dev, scores, dtype, k):
    """router_rows made to route given scores (R, E): t = the identity (R, R), w = scores^T (E, R) in `dtype`
    (F32 or BF16 bits), b = 0, so that row r's dot with w[e] is scores[r, e] exactly (every other product 0).
    Returns (experts, weights, the scores it wrote), on the device."""
    rows, n_experts = scores.shape
    w = np.ascontiguousarray(scores.T)
    w = f32_to_bf16(w) if dtype == BF16 else w
    experts, weights = garbage((rows, k), np.int32), garbage((rows, k), np.float32)
    got_scores = garbage((rows, n_experts), np.float32)
    dev[1].router_rows(experts, weights, got_scores, to_device(w), to_device(np.zeros(n_experts, F32)),
                       to_device(np.eye(rows, dtype=F32)))
    return experts, weights, got_scores


@gpu
@pytest.mark.parametrize("dtype", [F32, BF16], ids=["f32w", "bf16w"])
@pytest.mark.parametrize("n_experts", [5, 32, 128])
@pytest.mark.parametrize("k", [1, 2, 4, "E"])
@pytest.mark.parametrize("rows", [1, 37])
def test_router_rows_chooses_as_route(dev, rng, dtype, n_experts, k, rows):
    k = n_experts if k == "E" else k
    if k > n_experts:
        pytest.skip("k > E")
    scores = router_scores(rng, rows, n_experts)
    experts, weights, got_scores = route_scores(dev, scores, dtype, k)
    np.testing.assert_array_equal(host(got_scores, dev), scores)  # -0 == +0: the choice does not tell them apart
    got_experts, got_weights = host(experts, dev), host(weights, dev)
    for r in range(rows):
        want_experts, want_weights = route(scores[r], k)
        np.testing.assert_array_equal(got_experts[r], want_experts, err_msg=f"row {r}")
        assert np.max(np.abs(got_weights[r] - want_weights)) <= ELEMENT_TOL, f"row {r}"


@gpu
def test_router_rows_4096_rows_gpt_oss_120b(dev, rng):
    rows, n_experts, k = 4096, 128, 4
    scores = router_scores(rng, rows, n_experts)
    experts, weights, _ = route_scores(dev, scores, BF16, k)  # 4096 columns: the vector loads
    want = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(host(experts, dev), want)
    want_weights = np.stack([route(scores[r], k)[1] for r in range(rows)])
    assert np.max(np.abs(host(weights, dev) - want_weights)) <= ELEMENT_TOL


@gpu
@pytest.mark.parametrize("dtype", [F32, BF16], ids=["f32w", "bf16w"])
@pytest.mark.parametrize("n_experts, hidden",
                         [(32, 2880), (128, 2880), (7, 33), (30, 3072), (32, 3080), (33, 2880)])
def test_router_rows_scores_and_their_bits_for_every_row_count(dev, rng, dtype, n_experts, hidden):
    """The scores against the float64 product, and bit for bit the matvec's of the same row (warp_dot's order:
    the held loads change no bit; rows of up to 3072 values held and staged in shared memory, longer ones not); a
    row's scores, experts and weights the same bits alone, first or 17th of 37 rows (the batch invariance the
    engine's step needs of it), and with several rows a block. E = 33: a second pass of experts that only one warp
    has (every warp reaches the staging's barriers)."""
    rows, k = 37, 4
    t = rng.standard_normal((rows, hidden)).astype(np.float32)
    w = (rng.standard_normal((n_experts, hidden)) / np.sqrt(hidden)).astype(np.float32)
    w = f32_to_bf16(w) if dtype == BF16 else w
    b = rng.standard_normal(n_experts).astype(np.float32)
    outs = (garbage((rows, k), np.int32), garbage((rows, k), np.float32), garbage((rows, n_experts), np.float32))
    _, _, want_scores = expected("router_rows", *outs, w, b, t)[:3]
    d_w, d_b = to_device(w), to_device(b)
    dev[1].router_rows(*outs, d_w, d_b, to_device(t))
    experts, weights, scores = (host(a, dev) for a in outs)
    # FP32 rounding bound of the longest chain of additions a score takes (a lane's share of the row, a vector
    # load's 8 products, the warp's tree, the bias), over the sum of the terms' magnitudes
    chain = hidden // 32 + 8 + 6 + 1
    magnitude = np.abs(t).astype(np.float64) @ np.abs(f32(w)).T.astype(np.float64) + np.abs(b)
    assert np.all(np.abs(scores - want_scores) <= chain * 2.0**-24 * magnitude)
    for r in range(rows):  # the choice is route's of the scores it computed
        want_experts, want_weights = route(scores[r], k)
        np.testing.assert_array_equal(experts[r], want_experts, err_msg=f"row {r}")
        assert np.max(np.abs(weights[r] - want_weights)) <= ELEMENT_TOL, f"row {r}"
    for r in (0, 16, rows - 1):
        y = garbage(n_experts, np.float32)
        dev[1].matvec(y, d_w, to_device(t[r]), d_b)
        np.testing.assert_array_equal(host(y, dev).view(np.uint32), scores[r].view(np.uint32), err_msg=f"row {r}")
        alone = (garbage((1, k), np.int32), garbage((1, k), np.float32), garbage((1, n_experts), np.float32))
        dev[1].router_rows(*alone, d_w, d_b, to_device(t[r:r + 1]))
        for name, got, batched in zip(("experts", "weights", "scores"), alone, (experts, weights, scores)):
            np.testing.assert_array_equal(host(got, dev)[0].view(np.uint32), batched[r].view(np.uint32),
                                          err_msg=f"{name} of row {r} alone")
    dev[1].sm_count()  # read once, so that kernel_settings can set it back
    for sms in (5, 13):  # 8 rows a block (the last block 5), then 3 (the last 1): the same bits as a row a block
        assert router_rows_per_block(rows, sms) > 1 and rows % router_rows_per_block(rows, sms)
        several = tuple(garbage(a.shape, a.dtype) for a in outs)
        with kernel_settings(dev[1], _sm_count=sms):
            dev[1].router_rows(*several, d_w, d_b, to_device(t))
        for name, got, one in zip(("experts", "weights", "scores"), several, (experts, weights, scores)):
            np.testing.assert_array_equal(host(got, dev).view(np.uint32), one.view(np.uint32),
                                          err_msg=f"{name}, {router_rows_per_block(rows, sms)} rows a block")


def align_cases():
    rng = seeded("align cases")
    return [
        ("one row", np.array([[3, 1]]), 5, 8),
        ("one row k=1", np.array([[0]]), 5, 64),
        ("all on one expert", np.full((40, 2), 2), 5, 8),  # note: rows' experts need not be distinct here
        ("all on one expert, 64", np.full((300, 1), 4), 5, 64),
        ("experts without rows", rng.integers(0, 3, (500, 2)) * 3, 9, 8),
        ("last expert only", np.full((17, 3), 31), 32, 8),
        ("random 1024x4 E32 BM8", rng.integers(0, 32, (1024, 4)), 32, 8),
        ("random 1024x4 E32 BM64", rng.integers(0, 32, (1024, 4)), 32, 64),
        ("E128", rng.integers(0, 128, (256, 4)), 128, 16),
        ("E128 top-4 of scores", np.argsort(-rng.standard_normal((4096, 128)), axis=1, kind="stable")[:, :4], 128, 64),
        ("E128 k8 skewed", rng.choice(128, (777, 8), p=rng.dirichlet(np.full(128, 0.05))), 128, 8),
        ("BM 1", rng.integers(0, 5, (33, 5)), 5, 1),
    ]


def pad_row_slots(rows: int, pad: str):
    """(row_slot, spare slot) for moe_align: None, or rows in slots 0..6 with the pad rows in slot 7 (the last
    third of the rows, or every third row: the kernel reads each pair's row, wherever it is)."""
    if pad == "none":
        return None, -1
    row_slot = (np.arange(rows) % 7).astype(np.int32)
    if pad == "last third":
        row_slot[rows - rows // 3:] = 7
    else:
        row_slot[::3] = 7
    return row_slot, 7


@gpu
@pytest.mark.parametrize("case", align_cases(), ids=lambda c: c[0])
@pytest.mark.parametrize("pass_n_experts, pad", [(True, "none"), (False, "none"), (True, "last third"),
                                                 (True, "every third")])
def test_moe_align(dev, case, pass_n_experts, pad):
    """Against moe_align's oracle, with and without n_experts, and with pad rows (the spare slot's) whose pairs
    are not placed."""
    _, experts, n_experts, block_m = case
    experts = np.ascontiguousarray(experts, np.int32)
    row_slot, spare = pad_row_slots(experts.shape[0], pad)
    padded = moe_padded_pairs(experts.size, n_experts, block_m)
    outs = (garbage(padded, np.int32), garbage(experts.size, np.int32), garbage(padded // block_m, np.int32))
    want = expected("moe_align", *outs, experts, block_m, n_experts if pass_n_experts else None, row_slot,
                    spare)[:3]
    if row_slot is not None:  # the oracle's pad rows: none of their pairs placed, every other pair placed
        placed = want[1].reshape(experts.shape) >= 0
        assert not placed[row_slot == spare].any() and placed[row_slot != spare].all()
    d_experts, d_row_slot = to_device(experts), None if row_slot is None else to_device(row_slot)
    for _ in range(2):  # the same buffers again: every element rewritten, the same result
        dev[1].moe_align(*outs, d_experts, block_m, n_experts if pass_n_experts else None, d_row_slot, spare)
        for name, got, want_one in zip(("pair_of_padded", "padded_of_pair", "tile_expert"), outs, want):
            np.testing.assert_array_equal(host(got, dev), want_one, err_msg=name)
        for out in outs:
            out.fill(GARBAGE)


@gpu
@pytest.mark.parametrize("rows, k, n_experts, block_m, hidden", [(1, 1, 5, 8, 24), (37, 2, 5, 8, 300),
                                                                 (256, 4, 32, 16, 2880), (64, 8, 128, 64, 33)])
def test_moe_combine(dev, rng, rows, k, n_experts, block_m, hidden):
    experts = np.argsort(rng.random((rows, n_experts)), axis=1)[:, :k].astype(np.int32)
    _, padded_of_pair, _ = align_oracle(experts, n_experts, block_m)
    padded = moe_padded_pairs(rows * k, n_experts, block_m)
    x = rng.standard_normal((rows, hidden)).astype(np.float32)
    y = rng.standard_normal((padded, hidden)).astype(np.float32)
    weights = rng.dirichlet(np.ones(k), rows).astype(np.float32)
    d_x, moe_out = to_device(x), garbage((rows, hidden), np.float32)
    want_x, want_out, *_ = expected("moe_combine", x, moe_out, y, weights, padded_of_pair)
    dev[1].moe_combine(d_x, moe_out, to_device(y), to_device(weights), to_device(padded_of_pair))
    assert np.max(np.abs(host(moe_out, dev) - want_out)) <= COMBINE_TOL
    assert np.max(np.abs(host(d_x, dev) - want_x)) <= COMBINE_TOL


@gpu
def test_batched_moe_pipeline_matches_route_per_row(dev, rng):
    """router_rows -> moe_align -> (y = a function of pair) -> moe_combine, against the reference per row."""
    rows, n_experts, k, block_m, hidden = 50, 32, 4, 8, 40
    scores = router_scores(rng, rows, n_experts)
    padded = moe_padded_pairs(rows * k, n_experts, block_m)
    pair_of_padded, padded_of_pair = garbage(padded, np.int32), garbage(rows * k, np.int32)
    tile_expert = garbage(padded // block_m, np.int32)
    k_ = dev[1]
    experts, weights, _ = route_scores(dev, scores, F32, k)
    k_.moe_align(pair_of_padded, padded_of_pair, tile_expert, experts, block_m, n_experts)
    out_of_pair = rng.standard_normal((rows * k, hidden)).astype(np.float32)
    pos = host(pair_of_padded, dev)
    y = np.zeros((padded, hidden), np.float32)
    y[pos >= 0] = out_of_pair[pos[pos >= 0]]
    x = rng.standard_normal((rows, hidden)).astype(np.float32)
    d_x, moe_out = to_device(x), garbage((rows, hidden), np.float32)
    k_.moe_combine(d_x, moe_out, to_device(y), weights, padded_of_pair)
    got = host(d_x, dev)
    for r in range(rows):
        _, w = route(scores[r], k)
        agg = np.zeros(hidden, np.float32)
        for s in range(k):
            agg += w[s] * out_of_pair[r * k + s]
        assert np.max(np.abs(got[r] - (x[r] + agg))) <= COMBINE_TOL
