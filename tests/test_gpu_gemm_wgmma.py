"""gemm_wgmma kernels (Hopper wgmma, sm_90a): the contracts of the gemm_tc kernels, at every row count.

Each kernel against float64 numpy products on odd shapes (M of 1, 7, 64, 333, 1152; K and N not multiples
of the tiles; experts with no rows, one row, all rows), with the bounds of tests/test_gpu_gemm_tc.py
(pieces=3: <= 1e-6 of |A| @ |W|^T and <= 5e-5 absolute; pieces=1: <= 1e-2). Then the promise of these
kernels: a row's bits do not depend on how many rows the product has, where the row sits, or the tile
height, for each precision; and they equal the mma.sync kernels' bits (same k order, same promotion). The TMA
twins of the dense kernels (W by tensor maps) give the cp.async kernels' bits.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from cupy_getp.gpu.launch.gemm_tc import (WG_DENSE_TILES, WG_GROUPED_ROWS, WG_GROUPED_TILES,
                                          WG_WIDE_KIND, WG_WIDE_TALL, pieces_lda, wg_grouped_rows)
from cupy_getp.gpu.launch.moe import moe_align_host
from gpu_helpers import host, kernel_settings, poisoned
from gpu_helpers import to_device as dev
from test_gpu_gemm_tc import (LIMIT, activations, assert_accurate, bf16_weights, check_dense, check_grouped,
                              check_grouped_swiglu, choose_experts, product, split)
from batch_fakes import FakeDevice, FakeKernels, host_array
from kernel_oracles import stand_in_tensor_map
from cupy_getp.gpu.launch.tensor_map import MAP_BYTES, TensorMaps, map_argument, tma_eligible, wg_tma_enabled


@pytest.fixture
def gpu(gpu):
    """conftest's (Device, Kernels) where the wgmma kernels are live (compute capability 9.0), split-K off:
    these tests are about the unsplit kernels (tests/test_gpu_gemm_wgmma_splitk.py sets it per test)."""
    if not gpu[1].wgmma:
        pytest.skip(f"no wgmma kernels on {gpu[0].describe()}: {gpu[1].not_built.get('gemm_wgmma', 'disabled')}")
    with kernel_settings(gpu[1], wg_splitk=False):
        yield gpu


@pytest.mark.gpu
def test_wgmma_path_is_live_on_hopper(gpu_module):
    """On compute capability 9.0 the sm_90a build must succeed and report its wgmma bodies (else the engine
    would silently run the slower kernels)."""
    device, kernels = gpu_module
    if device.is_hip or device.arch != "sm_90":
        pytest.skip(f"not a Hopper GPU: {device.describe()}")
    assert "gemm_wgmma" not in kernels.not_built, kernels.not_built
    assert kernels.wgmma


# -- dense ---------------------------------------------------------------------------------------------
DENSE = [  # m, k, n, bias, accumulate
    (1, 2880, 37, False, False), (7, 100, 5760, True, False), (64, 33, 130, False, True),
    (333, 2880, 300, True, True), (2, 7, 3, False, False), (1152, 2880, 640, True, False),
]


TILES = [(pieces, tile) for pieces in (3, 1) for tile in WG_DENSE_TILES[pieces]]


@pytest.mark.gpu
@pytest.mark.parametrize("pieces, tile", TILES, ids=str)
@pytest.mark.parametrize("m, k, n, bias, accumulate", DENSE)
def test_gemm_wg_dense(gpu, rng, pieces, tile, m, k, n, bias, accumulate):
    check_dense(gpu, rng, m, k, n, bias, accumulate, pieces, tile)


@pytest.mark.gpu
def test_gemm_wg_unaligned_weights_take_the_scalar_loads(gpu, rng):
    """W 2 bytes past a 16-byte boundary (and K = 2880): the scalar staging path must give the same bits."""
    m, k, n = 9, 2880, 70
    a, w = activations(rng, (m, k), heavy=True), bf16_weights(rng, (n, k))
    ap = split(gpu[1], dev(a), 3)
    outputs = []
    for offset in (0, 2):
        c = poisoned((m, n))
        gpu[1].gemm_tc(c, ap, dev(w, offset), tile=(16, 1))
        outputs.append(host(c, gpu))
    np.testing.assert_array_equal(outputs[1], outputs[0])
    assert_accurate(outputs[0], *product(a, w), pieces=3, exact_abs=False)


@pytest.mark.gpu
@pytest.mark.parametrize("pieces", [3, 1])
@pytest.mark.parametrize("k, n", [(2880, 5120), (4096, 2880), (100, 77)])
def test_dense_row_count_invariance(gpu, rng, pieces, k, n):
    """The same rows inside products of 1, 7, 64, 333 and 1152 rows, at different places and with every
    tile height, give the same bits as inside the 1152-row product."""
    total = 1152
    a = activations(rng, (total, k), heavy=True)
    w = dev(bf16_weights(rng, (n, k)))
    c = poisoned((total, n))
    gpu[1].gemm_tc(c, split(gpu[1], dev(a), pieces), w)
    full = host(c, gpu)
    for m in (1, 7, 64, 333):
        for start in (0, 5, total - m):
            part = dev(np.ascontiguousarray(a[start:start + m]))
            for tile in [t for p, t in TILES if p == pieces]:
                c = poisoned((m, n))
                gpu[1].gemm_tc(c, split(gpu[1], part, pieces), w, tile=tile)
                np.testing.assert_array_equal(host(c, gpu), full[start:start + m], err_msg=f"{m} rows at {start}, "
                                              f"tile {tile}")


@pytest.mark.gpu
@pytest.mark.parametrize("pieces", [3, 1])
@pytest.mark.parametrize("m, k, n", [(1, 2880, 5120), (333, 2880, 300), (1152, 4096, 2880), (7, 100, 130)])
def test_dense_bits_equal_the_mma_sync_kernels(gpu, rng, pieces, m, k, n):
    """Same products, same k order, same promotion interval: the wgmma kernels give the mma.sync kernels'
    bits, so sm_80 and sm_90 engines agree too (not with CUPY_GETP_WG_SPLITK=1: its twins sum K in slices)."""
    ap, w = split(gpu[1], dev(activations(rng, (m, k), heavy=True)), pieces), dev(bf16_weights(rng, (n, k)))
    c_wg, c_mma = poisoned((m, n)), poisoned((m, n))
    gpu[1].gemm_tc(c_wg, ap, w)
    with kernel_settings(gpu[1], wgmma=False):
        gpu[1].gemm_tc(c_mma, ap, w, tile=(64, 128))
    np.testing.assert_array_equal(host(c_wg, gpu), host(c_mma, gpu))


# -- dense through tensor maps (TMA) -------------------------------------------------------------------
def launches_of(kernels, prefix: str) -> int:
    """How many kernels named prefix... this device's Kernels launched so far (gemm_wg_tma_: the TMA products;
    gemm_wg_tma_half_: the half blocks; gemm_wg_tma_grouped: the grouped TMA products)."""
    return sum(n for name, n in kernels.device.counters.launches.items() if name.startswith(prefix))


@pytest.mark.gpu
@pytest.mark.parametrize("pieces", [3, 1])
@pytest.mark.parametrize("k, n", [(2880, 32), (2880, 300), (2880, 5120), (4096, 32), (4096, 300), (4096, 5120)])
def test_tma_dense_bits_equal_the_cp_async_kernels(gpu, rng, pieces, k, n):
    """W staged by one TMA copy a stage (rows in order, zeros past N and K from the copy) gives the cp.async
    kernels' bits at 1, 7, 64, 333 and 1024 rows with every tile, bias added, and accumulating into c."""
    w, bias = dev(bf16_weights(rng, (n, k))), dev(rng.standard_normal(n).astype(np.float32))
    for m in (1, 7, 64, 333, 1024):
        ap = split(gpu[1], dev(activations(rng, (m, k), heavy=True)), pieces)
        c0 = dev(rng.standard_normal((m, n)).astype(np.float32))
        for tile in [t for p, t in TILES if p == pieces]:
            for accumulate in (False, True):
                assert_off_and_on_agree(gpu, "wg_tma", "gemm_wg_tma_", c0 if accumulate else (m, n),
                                        lambda c: gpu[1].gemm_tc(c, ap, w, bias, accumulate, tile=tile),
                                        f"{m} rows, tile {tile}, accumulate {accumulate}")


def assert_off_and_on_agree(gpu, setting: str, prefix: str, c0, product, label: str) -> None:
    """product(c) with the Kernels attribute `setting` off, then on, into a copy of c0 (or, given a shape, a
    poisoned array): the same bits, and the launches of the kernels the setting picks (named prefix...) up by
    one only when on."""
    outputs = []
    for on in (False, True):
        c = poisoned(c0) if isinstance(c0, tuple) else c0.copy()
        launched = launches_of(gpu[1], prefix)
        with kernel_settings(gpu[1], **{setting: on}):
            product(c)
        assert launches_of(gpu[1], prefix) - launched == on, f"{label}: {setting} picks its kernels only when on"
        outputs.append(host(c, gpu))
    np.testing.assert_array_equal(outputs[1], outputs[0], err_msg=label)


@pytest.mark.gpu
@pytest.mark.parametrize("pieces", [3, 1])
@pytest.mark.parametrize("k, n", [(2880, 5120), (4096, 2880), (2880, 300), (2880, 72), (200, 5120)])
def test_half_blocks_give_the_two_consumer_tiles_bits(gpu, rng, pieces, k, n):
    """One consumer warpgroup of 64 features a block (the half blocks, W by 64-row boxes) gives the
    two-consumer TMA tiles' bits at 1, 5, 8, 13 and 16 rows, with both heights, bias added, and accumulating
    into c; they run wherever wg_half_blocks says (here every case: few feature tiles)."""
    if not gpu[1].wg_tma:
        pytest.skip("the half blocks read W by TMA: the tensor maps are off here")
    w, bias = dev(bf16_weights(rng, (n, k))), dev(rng.standard_normal(n).astype(np.float32))
    for m in (1, 5, 8, 13, 16):
        ap = split(gpu[1], dev(activations(rng, (m, k), heavy=True)), pieces)
        c0 = dev(rng.standard_normal((m, n)).astype(np.float32))
        for rows in [r for r in (8, 16) if r >= m]:
            for accumulate in (False, True):
                assert_off_and_on_agree(gpu, "wg_half", "gemm_wg_tma_half_", c0 if accumulate else (m, n),
                                        lambda c: gpu[1].gemm_tc(c, ap, w, bias, accumulate, tile=(rows, 1)),
                                        f"{m} rows, tile ({rows}, 1), accumulate {accumulate}")


@pytest.mark.gpu
def test_tma_leaves_weights_no_tensor_map_can_describe_to_the_cp_async_kernels(gpu, rng):
    """K = 100 (rows of 200 bytes) and W 2 bytes past a 16-byte boundary: the cp.async kernels, right bits."""
    for k, offset in ((100, 0), (2880, 2)):
        a, w = activations(rng, (9, k), heavy=True), bf16_weights(rng, (70, k))
        ap, c = split(gpu[1], dev(a), 3), poisoned((9, 70))
        launched = launches_of(gpu[1], "gemm_wg_tma_")
        with kernel_settings(gpu[1], wg_tma=True):
            gpu[1].gemm_tc(c, ap, dev(w, offset))
        assert launches_of(gpu[1], "gemm_wg_tma_") == launched
        assert_accurate(host(c, gpu), *product(a, w), pieces=3, exact_abs=False)


# -- grouped MoE ---------------------------------------------------------------------------------------
GROUPED = [  # rows R, k, experts E, experts that get rows, H, I
    (7, 2, 5, 4, 100, 37),       # odd sizes, one expert without rows
    (1, 4, 32, 32, 2880, 300),    # one row: four tiles of one pair each
    (130, 1, 3, 1, 33, 64),       # every row on one expert, two experts empty
    (333, 4, 8, 6, 2880, 192),    # many rows, realistic K
    (40, 3, 6, 5, 64, 2880),      # mlp2 with K = I = 2880
]


def grouping(experts, n_experts: int, block_m: int):
    pair_of_padded, padded_of_pair, tile_expert = moe_align_host(experts, n_experts, block_m)
    return pair_of_padded, padded_of_pair, tile_expert


def moe_inputs(gpu, rng, rows, k, n_experts, used, hidden, inter, pieces):
    """A grouped MoE problem on the device: (rows, k) experts among the first `used`, t's pieces (heavy-tailed
    rows), bf16 w1 (E, 2I, H) and w2 (E, H, I), FP32 biases."""
    experts = choose_experts(rng, rows, k, n_experts, used)
    ap = split(gpu[1], dev(activations(rng, (rows, hidden), heavy=True)), pieces)
    w1 = dev(bf16_weights(rng, (n_experts, 2 * inter, hidden)))
    b1 = dev(rng.standard_normal((n_experts, 2 * inter)).astype(np.float32))
    w2 = dev(bf16_weights(rng, (n_experts, hidden, inter)))
    b2 = dev(rng.standard_normal((n_experts, hidden)).astype(np.float32))
    return experts, ap, w1, b1, w2, b2


def mlp1(kernels, ap, experts, n_experts, block_m, w1, b1, k, inter, pieces):
    """g's pieces (pieces, P, lda) of gemm_tc_grouped_swiglu on this grouping, and the grouping."""
    import cupy

    pair_of_padded, padded_of_pair, tile_expert = grouping(experts, n_experts, block_m)
    gp = cupy.full((pieces, pair_of_padded.size, pieces_lda(inter)), 0xFFFF, np.uint16)  # NaN bits
    kernels.gemm_tc_grouped_swiglu(gp, ap, dev(pair_of_padded), dev(tile_expert), w1, b1, k, LIMIT)
    return host(gp, (kernels.device,)), pair_of_padded, padded_of_pair, tile_expert


@pytest.mark.gpu
@pytest.mark.parametrize("check", [check_grouped_swiglu, check_grouped], ids=["mlp1_swiglu", "mlp2"])
@pytest.mark.parametrize("block_m", WG_GROUPED_ROWS)
@pytest.mark.parametrize("pieces", [3, 1])
@pytest.mark.parametrize("rows, k, n_experts, used, hidden, inter", GROUPED)
def test_gemm_wg_grouped_products(gpu, rng, check, block_m, pieces, rows, k, n_experts, used, hidden, inter):
    check(gpu, rng, pieces, rows, k, n_experts, used, hidden, inter, block_m)


@pytest.mark.gpu
@pytest.mark.parametrize("pieces", [3, 1])
@pytest.mark.parametrize("rows, k, n_experts, used, hidden, inter", GROUPED[1:4])
def test_grouped_bits_do_not_depend_on_the_tile_or_the_kernels(gpu, rng, pieces, rows, k, n_experts, used, hidden,
                                                               inter):
    """A pair's g and y are the same bits with every tile height (a step's size picks it), with one or two
    feature blocks per consumer (the launch helper picks by the tiles that hold a pair), whatever width the
    products of an expert's last tile take (the rows it holds), and the same as the mma.sync kernels'
    (64-position tiles)."""
    experts = choose_experts(rng, rows, k, n_experts, used)
    a = activations(rng, (rows, hidden), heavy=True)
    w1 = dev(bf16_weights(rng, (n_experts, 2 * inter, hidden)))
    b1 = dev(rng.standard_normal((n_experts, 2 * inter)).astype(np.float32))
    w2 = dev(bf16_weights(rng, (n_experts, hidden, inter)))
    b2 = dev(rng.standard_normal((n_experts, hidden)).astype(np.float32))
    ap = split(gpu[1], dev(a), pieces)
    results = {}
    chosen = gpu[1]._wg_features
    # one and two feature blocks forced at 8, 32 and 64 rows: an expert's last tile is narrowed to the rows it
    # holds (a quarter, a half or the whole of the tile) in both
    forced = [(f"wgmma {b} x{f}", b, f) for b in (8, 32, 64) for f in (1, 2)]
    for label, block_m, features in [*((f"wgmma {b}", b, None) for b in WG_GROUPED_ROWS), *forced,
                                     ("mma.sync 64", 64, None)]:
        if label.startswith("mma.sync"):
            gpu[1].wgmma = False
        if features is not None:
            gpu[1]._wg_features = lambda *args, f=features, **kw: f
        try:
            bits, pair_of_padded, padded_of_pair, tile_expert = mlp1(gpu[1], ap, experts, n_experts, block_m, w1, b1, k,
                                                                 inter, pieces)
            y = poisoned((pair_of_padded.size, hidden))
            gpu[1].gemm_tc_grouped(y, dev(bits), dev(pair_of_padded), dev(tile_expert), w2, b2)
            results[label] = (bits[:, padded_of_pair], host(y, gpu)[padded_of_pair])  # in pair order
        finally:
            gpu[1].wgmma, gpu[1]._wg_features = True, chosen
    first = results["wgmma 8"]
    for label, (g_bits, y) in results.items():
        np.testing.assert_array_equal(g_bits, first[0], err_msg=label)
        np.testing.assert_array_equal(y, first[1], err_msg=label)


@pytest.mark.gpu
@pytest.mark.parametrize("pieces", [3, 1])
@pytest.mark.parametrize("rows, k, n_experts, used, hidden, inter",
                         [(1, 4, 32, 32, 2880, 2880), GROUPED[1], GROUPED[3], GROUPED[4]])
def test_grouped_tma_bits_equal_the_cp_async_kernels(gpu, rng, pieces, rows, k, n_experts, used, hidden, inter):
    """bf16 experts by TMA through a paired map (rows in wg_w_slot's places; past an expert's N the next
    expert's rows, past the last zeros) give the cp.async kernels' g and y bits, tiles of every height, one and
    two feature blocks; the TMA kernels run wherever the expert's N (mlp1: 2I, mlp2: H) is a multiple of 16 and
    its K (H, I) of 8."""
    if not gpu[1].wg_tma:
        pytest.skip("the grouped TMA kernels read W by TMA: the tensor maps are off here")
    experts, ap, w1, b1, w2, b2 = moe_inputs(gpu, rng, rows, k, n_experts, used, hidden, inter, pieces)
    chosen = gpu[1]._wg_features
    try:
        for block_m, features in WG_GROUPED_TILES:
            gpu[1]._wg_features = lambda *args, f=features, **kw: f
            results = []
            for on in (False, True):
                launched = launches_of(gpu[1], "gemm_wg_tma_grouped")
                with kernel_settings(gpu[1], wg_tma_grouped=on, wg_wide=False):  # wide: the test below
                    bits, pair_of_padded, padded_of_pair, tile_expert = mlp1(gpu[1], ap, experts, n_experts,
                                                                         block_m, w1, b1, k, inter, pieces)
                    y = poisoned((pair_of_padded.size, hidden))
                    gpu[1].gemm_tc_grouped(y, dev(bits), dev(pair_of_padded), dev(tile_expert), w2, b2)
                # a map's rows: K a multiple of 8 (16 bytes); its boxes: N a multiple of 16
                want = on * ((2 * inter) % 16 == 0 and hidden % 8 == 0) + on * (hidden % 16 == 0 and inter % 8 == 0)
                assert launches_of(gpu[1], "gemm_wg_tma_grouped") - launched == want, (block_m, features, on)
                results.append((bits[:, padded_of_pair], host(y, gpu)[padded_of_pair]))
            label = f"tiles of {block_m} rows, {features} feature blocks"
            np.testing.assert_array_equal(results[1][0], results[0][0], err_msg=f"g, {label}")
            np.testing.assert_array_equal(results[1][1], results[0][1], err_msg=f"y, {label}")
    finally:
        gpu[1]._wg_features = chosen


@pytest.mark.gpu
@pytest.mark.parametrize("pieces", [3, 1])
@pytest.mark.parametrize("inter", [2880, 2912])
def test_wide_blocks_give_the_two_consumer_blocks_bits(gpu, rng, pieces, inter):
    """One row's mlp1 + SwiGLU at the 20b shape (4 of 32 experts, 5760 features) in wide blocks (three consumer
    warpgroups, 192 features a block: 120 blocks on 132 SMs) gives the bits of the two-consumer TMA blocks (one
    and two feature blocks) and of the cp.async kernels; only the wide run launches a wide kernel. With 5824
    features (31 blocks, the last a third full) and the last expert among the four, a block's box reads past its
    expert's rows (the next expert's, zeros past the last), which the epilogue must drop."""
    if not gpu[1].wg_tma:
        pytest.skip("the wide blocks read W by TMA: the tensor maps are off here")
    k, n_experts, hidden = 4, 32, 2880
    experts = np.array([[3, 30, 17, n_experts - 1]], np.int32)
    ap = split(gpu[1], dev(activations(rng, (1, hidden), heavy=True)), pieces)
    w1 = dev(bf16_weights(rng, (n_experts, 2 * inter, hidden)))
    b1 = dev(rng.standard_normal((n_experts, 2 * inter)).astype(np.float32))
    chosen, results = gpu[1]._wg_features, {}
    gpu[1].sm_count()  # counted once (kernel_settings sets it back after each run)
    runs = [("wide", dict(wg_tma_grouped=True, wg_wide=True), None),
            *((f"two consumers x{f}", dict(wg_tma_grouped=True, wg_wide=False), f) for f in (1, 2)),
            ("cp.async", dict(wg_tma_grouped=False, wg_wide=False), None)]
    try:
        for label, settings, features in runs:
            gpu[1]._wg_features = chosen if features is None else (lambda *args, f=features, **kw: f)
            launched = launches_of(gpu[1], f"gemm_wg{WG_WIDE_KIND}")
            with kernel_settings(gpu[1], _sm_count=132, **settings):  # the rule's count: an H100's, an H200's
                bits, _, padded_of_pair, _ = mlp1(gpu[1], ap, experts, n_experts, 8, w1, b1, k, inter, pieces)
            assert launches_of(gpu[1], f"gemm_wg{WG_WIDE_KIND}") - launched == (label == "wide"), label
            results[label] = bits[:, padded_of_pair]  # in pair order
    finally:
        gpu[1]._wg_features = chosen
    for label, bits in results.items():
        np.testing.assert_array_equal(bits, results["wide"], err_msg=label)


@pytest.mark.gpu
@pytest.mark.parametrize("pieces", [3, 1])
@pytest.mark.parametrize("inter", [2880, 2912])
def test_tall_wide_blocks_give_the_two_consumer_blocks_bits(gpu, rng, pieces, inter, monkeypatch):
    """Many rows' mlp1 + SwiGLU and mlp2 (200 rows, 4 of 8 experts, tiles of 64 rows exact and 128 fast) in the tall
    wide blocks (three consumers; 384 features a block exact, with the registers shifted from the producer to them;
    192 fast) give the bits of the two-consumer TMA blocks; only the wide runs launch wide kernels. mlp2's 2880
    features are 7.5 blocks of 384 and mlp1's 5824 are 15.2: the last block's box reads past its expert's rows (the
    next expert's, zeros past the last), which the epilogues must drop."""
    from cupy_getp.gpu.launch import gemm_tc

    if not gpu[1].wg_tma:
        pytest.skip("the wide blocks read W by TMA: the tensor maps are off here")
    monkeypatch.setattr(gemm_tc, "WG_WIDE_TALL_ON", 1)
    rows, k, n_experts, hidden = 200, 4, 8, 2880
    block_m = wg_grouped_rows(rows * k, n_experts, pieces)
    assert WG_WIDE_TALL.get((block_m, pieces)), (block_m, pieces)
    experts, ap, w1, b1, w2, b2 = moe_inputs(gpu, rng, rows, k, n_experts, n_experts, hidden, inter, pieces)
    gpu[1].sm_count()  # counted once (kernel_settings sets it back after each run)
    results = {}
    for wide in (True, False):
        kinds = ("gemm_wg_tma_grouped_swiglu_wide", "gemm_wg_tma_grouped_wide")
        launched = [launches_of(gpu[1], kind) for kind in kinds]
        # 4 SMs for the rule: this product's 8 (fast) or ~16 (exact) tiles then give every SM a wide block
        with kernel_settings(gpu[1], _sm_count=4, wg_tma_grouped=True, wg_wide=wide):
            bits, pair_of_padded, padded_of_pair, tile_expert = mlp1(gpu[1], ap, experts, n_experts, block_m, w1, b1,
                                                                     k, inter, pieces)
            y = poisoned((pair_of_padded.size, hidden))
            gpu[1].gemm_tc_grouped(y, dev(bits), dev(pair_of_padded), dev(tile_expert), w2, b2)
        assert [launches_of(gpu[1], kind) - n for kind, n in zip(kinds, launched)] == [int(wide)] * 2, wide
        results[wide] = (bits[:, padded_of_pair], host(y, gpu)[padded_of_pair])  # in pair order
    np.testing.assert_array_equal(results[True][0], results[False][0], err_msg="g")
    np.testing.assert_array_equal(results[True][1], results[False][1], err_msg="y")
    assert np.isfinite(results[True][1]).all()


# -- host side (no GPU) ----------------------------------------------------------------------------------
def test_wgmma_tiles_fill_the_gpu():
    """Two feature blocks per consumer where the product has blocks for every SM, else one (twice the
    blocks); the smallest row tile that holds M."""
    from cupy_getp.gpu.launch.gemm_tc import TensorCoreGemmLaunches

    class Launches(TensorCoreGemmLaunches):
        def __init__(self):
            self._sm_count = 132

    k = Launches()
    assert k.wg_tile(1, 5120, 3) == (8, 1)  # one row: 40 blocks of 128 features
    assert k.wg_tile(1, 201088, 3) == (8, 2)
    assert k.wg_tile(1024, 5120, 3) == (128, 1) and k.wg_tile(512, 5120, 3) == (64, 1)
    assert k.wg_tile(1024, 2880, 3) == (64, 1)  # the output projection: measured faster in 64-row tiles
    assert k.wg_tile(1024, 5120, 1) == (128, 2) and k.wg_tile(333, 300, 1) == (128, 1)
    # grouped, by the tiles that hold a pair: one row's 4 experts of mlp2 (2880 features) in blocks of one
    # (92 blocks), of mlp1 (5760) in blocks of two (90: 180 of one would be two waves); many tiles: two
    assert k._wg_features(8, 3, 4, 2880, grouped=True) == 1 and k._wg_features(8, 3, 4, 5760, grouped=True) == 2
    assert k._wg_features(64, 3, 64, 2880, grouped=True) == 2 and k._wg_features(128, 1, 4, 2880, grouped=True) == 1


def test_grouped_tile_height_follows_the_rows_per_expert():
    assert wg_grouped_rows(4, 32, 3) == 8  # one row of the 20b: 4 pairs over 32 experts
    assert wg_grouped_rows(64 * 4, 32, 3) == 8
    assert wg_grouped_rows(128 * 4, 32, 3) == 16
    assert wg_grouped_rows(1024 * 4, 32, 3) == 64 and wg_grouped_rows(1024 * 4, 32, 1) == 128
    assert wg_grouped_rows(0, 32, 3) == 8 and wg_grouped_rows(1152 * 4, 32, 3) == 64


def test_the_products_path_is_named_per_device(monkeypatch):
    """What `info` and the warm-up note say runs the tensor-core products."""
    from cupy_getp.gpu.launch.gemm_tc import describe_products

    class Device:
        def __init__(self, arch, is_hip=False):
            self.arch, self.is_hip = arch, is_hip

    monkeypatch.delenv("CUPY_GETP_ROCM_MFMA", raising=False)
    assert describe_products(Device("sm_90")).startswith("wgmma")
    assert describe_products(Device("sm_90"), wgmma=True).startswith("wgmma")
    fallback = describe_products(Device("sm_90"), wgmma=False, not_built="build failed: no sm_90a")
    assert fallback.startswith("mma.sync") and "no sm_90a" in fallback
    assert describe_products(Device("sm_80"), wgmma=False) == "mma.sync tensor cores"
    assert describe_products(Device("gfx90a:sramecc+:xnack-", is_hip=True)).startswith("CUDA cores")
    monkeypatch.setenv("CUPY_GETP_ROCM_MFMA", "1")
    assert describe_products(Device("gfx90a:sramecc+:xnack-", is_hip=True)).startswith("MFMA")


def test_a_failed_wgmma_build_leaves_the_mma_sync_kernels(monkeypatch):
    """On compute capability 9.0, an sm_90a build that fails (an older NVRTC, say) must leave the engine on
    the mma.sync kernels with the reason recorded, not stop it."""
    import contextlib
    import sys
    import types

    from cupy_getp.gpu import kernels as kernels_module

    class CompileException(Exception):
        pass

    compiler = types.SimpleNamespace(CompileException=CompileException)
    cuda = types.SimpleNamespace(compiler=compiler, Device=lambda device_id: contextlib.nullcontext())
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(cuda=cuda))
    monkeypatch.setitem(sys.modules, "cupy.cuda", sys.modules["cupy"].cuda)
    monkeypatch.setitem(sys.modules, "cupy.cuda.compiler", compiler)

    class Module:
        def __init__(self, family):
            self.family = family

        def compile(self):
            if self.family == "gemm_wgmma":
                raise CompileException("ptxas fatal: 'wgmma.fence' not supported on .target 'sm_90'")

        def get_function(self, name):
            return f"{self.family}:{name}"

    monkeypatch.setattr(kernels_module, "_module", lambda family, *args: Module(family))

    class Device:
        arch, is_hip, warp_size, id = "sm_90", False, 32, 0

    k = kernels_module.Kernels(Device())
    assert not k.wgmma and "gemm_wgmma" not in k.modules
    assert k.not_built["gemm_wgmma"].startswith("build failed: ptxas fatal")
    assert not any(name.startswith("gemm_wg") for name in k.functions)
    assert k.functions["gemm_tc_grouped"] == "gemm_tc:gemm_tc_grouped"


def test_a_family_in_parts_opens_each_kernel_from_the_one_part_that_has_it(monkeypatch):
    """FAMILY_PARTS: each program of gemm_wgmma is one part (-DGETP_PART=k); a kernel is taken from the part whose
    loaded module has it, and a kernel found in no part or in two is an error naming it (for the optional wgmma
    family: recorded as not built, the engine on the other kernels)."""
    import contextlib
    import sys
    import threading
    import types

    from cupy_getp.gpu import kernels as kernels_module

    cuda = types.SimpleNamespace(compiler=types.SimpleNamespace(CompileException=RuntimeError),
                                 Device=lambda device_id: contextlib.nullcontext())
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(cuda=cuda))
    names = kernels_module.ENTRY_POINTS["gemm_wgmma"]
    parts = kernels_module.FAMILY_PARTS["gemm_wgmma"]
    holds = {k: set(names[k::parts]) for k in range(parts)}  # part k -> its kernels

    class Program:
        def __init__(self, family, options):
            self.family, self.compiled = family, False
            self.part = next((int(o.split("=")[1]) for o in options if o.startswith("-DGETP_PART=")), None)
            self.module = self  # the loaded module's look-up

        def compile(self):
            self.compiled = True

        def get_function(self, name):
            assert self.compiled, "looked up before it was compiled"
            if self.part is not None and name not in holds[self.part]:
                raise LookupError(f"CUDA_ERROR_NOT_FOUND: {name}")
            return (self.family, self.part, name)

    monkeypatch.setattr(kernels_module, "_module", lambda family, w, i, options: Program(family, options))

    class Device:
        arch, is_hip, warp_size, id = "sm_90", False, 32, 0

    monkeypatch.setattr(kernels_module.Kernels, "_probe_wgmma", lambda self: False)
    monkeypatch.setattr(kernels_module.Kernels, "_probe_pdl", lambda self: (None, "not probed here"))
    k = kernels_module.Kernels(Device())
    assert len(k.modules["gemm_wgmma"]) == parts and len(k.modules["gemm_tc"]) == 1
    assert all(k.functions[name] == ("gemm_wgmma", part, name) for part in holds for name in holds[part])
    assert k.functions["gemm_tc_grouped"] == ("gemm_tc", None, "gemm_tc_grouped")

    holds[1].add(names[0])  # a kernel of part 0 in part 1 too: the family is not built, and says why
    k = kernels_module.Kernels(Device())
    assert "gemm_wgmma" not in k.modules and not any(name.startswith("gemm_wg") for name in k.functions)
    assert k.not_built["gemm_wgmma"] == (f"build failed: kernels/gemm_wgmma.hip has kernel {names[0]} in 2 of its "
                                         "parts, not one (FAMILY_PARTS, its GETP_PART blocks)")
    holds[0].discard(names[0]), holds[1].discard(names[0])  # ... in none
    programs = [Program("gemm_wgmma", options) for options in kernels_module.family_parts("gemm_wgmma")]
    for program in programs:
        program.compile()
    assert kernels_module._open_function("gemm_wgmma", programs, names[1]) == ("gemm_wgmma", 1, names[1])
    with pytest.raises(RuntimeError, match=f"has kernel {names[0]} in 0 of its parts"):
        kernels_module._open_function("gemm_wgmma", programs, names[0])

    def fails_in_pool_threads(self):  # a thread's own trouble: the program compiles again in the warm-up's thread
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("CUDA_ERROR_INVALID_CONTEXT")
        self.compiled = True

    monkeypatch.setattr(Program, "compile", fails_in_pool_threads)
    holds[0].add(names[0])
    k = kernels_module.Kernels(Device())
    assert len(k.modules["gemm_wgmma"]) == parts and k.functions[names[0]] == ("gemm_wgmma", 0, names[0])

    def broken(self):  # a required family's compile error stops the warm-up, whichever thread compiled it
        if self.family == "gemm_tc":
            raise RuntimeError("gemm_tc.hip(3): error: identifier undefined")
        self.compiled = True

    monkeypatch.setattr(Program, "compile", broken)
    with pytest.raises(RuntimeError, match="gemm_tc.hip.3.: error"):
        kernels_module.Kernels(Device())


def test_the_warm_up_compiles_in_one_thread_a_program_up_to_the_cpus_on_cuda_one_on_rocm(monkeypatch):
    import os
    import types

    from cupy_getp.errors import DeviceError
    from cupy_getp.gpu.kernels import build_threads

    cuda, rocm = (types.SimpleNamespace(is_hip=hip) for hip in (False, True))
    monkeypatch.delenv("CUPY_GETP_BUILD_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert (build_threads(cuda, 18), build_threads(cuda, 5), build_threads(rocm, 18)) == (16, 5, 1)
    monkeypatch.setenv("CUPY_GETP_BUILD_THREADS", "1")
    assert build_threads(cuda, 18) == 1
    monkeypatch.setenv("CUPY_GETP_BUILD_THREADS", "4")
    assert (build_threads(cuda, 18), build_threads(rocm, 18), build_threads(cuda, 2)) == (4, 4, 2)
    for bad in ("0", "-2", "four", " 3"):
        monkeypatch.setenv("CUPY_GETP_BUILD_THREADS", bad)
        with pytest.raises(DeviceError, match="CUPY_GETP_BUILD_THREADS"):
            build_threads(cuda, 18)


# -- the TMA products' host side (no GPU) -------------------------------------------------------------------------
def test_the_tma_products_are_on_where_the_bindings_import(monkeypatch):
    import importlib.util

    monkeypatch.delenv("CUPY_GETP_WG_TMA", raising=False)
    try:
        bindings = importlib.util.find_spec("cuda.bindings") is not None
    except ModuleNotFoundError:  # no `cuda` package at all
        bindings = False
    assert wg_tma_enabled() == bindings
    monkeypatch.setitem(__import__("sys").modules, "cuda.bindings", None)  # an import that fails
    assert not wg_tma_enabled()
    monkeypatch.setenv("CUPY_GETP_WG_TMA", "0")
    assert not wg_tma_enabled()
    monkeypatch.setenv("CUPY_GETP_WG_TMA", "1")
    assert wg_tma_enabled()


def test_tma_needs_a_contiguous_aligned_weight_with_16_byte_rows():
    w = host_array(np.zeros((70, 2888), np.uint16))
    assert tma_eligible(w)
    assert not tma_eligible(w[:, :2880])  # strided
    assert not tma_eligible(host_array(np.zeros((70, 100), np.uint16)))  # rows of 200 bytes
    flat = host_array(np.zeros(70 * 2880 + 8, np.uint16))
    start = (-flat.ctypes.data % 16) // 2  # elements to the first 16-byte boundary
    assert tma_eligible(flat[start:start + 70 * 2880].reshape(70, 2880))
    assert not tma_eligible(flat[start + 1:start + 1 + 70 * 2880].reshape(70, 2880))


def test_a_tensor_map_is_made_once_per_address_shape_and_box():
    made = []

    def encode(ptr, n, k, box_rows, paired):
        made.append((ptr, n, k, box_rows, paired))
        return map_argument(bytes(MAP_BYTES))

    maps, w = TensorMaps(encode), host_array(np.zeros((300, 2880), np.uint16))
    first = maps.of(w, 128)
    assert maps.of(w, 128) is first and made == [(w.ctypes.data, 300, 2880, 128, False)]
    maps.of(w, 256)
    maps.of(w[:64], 128)  # same address, another shape
    maps.of(w, 128, paired=True)  # the same box in wg_w_slot's order: another map
    assert len(maps) == 4 == len(made)


def test_a_paired_map_places_each_row_where_wg_w_slot_does():
    """The paired map's four dimensions (K; 8 pairs two rows apart; a pair's 2 rows; 16-row groups) lay a box's
    row 16 g + 2 i + q at shared-memory row 16 g + 8 q + i: gemm_wgmma.hip's wg_w_slot, its expression read from
    the kernel source and evaluated here (C's integer / on non-negative ints is Python's //)."""
    from cupy_getp.gpu.launch.tensor_map import paired_shape

    source = (Path(__file__).resolve().parents[1] / "kernels" / "gemm_wgmma.hip").read_text()
    expression = re.search(r"int wg_w_slot\(int n\) \{ return (.+?); \}", source).group(1)

    k, n, box_rows = 2880, 5760 * 4, 256
    sizes, strides, box = paired_shape(n, k, box_rows)
    assert sizes == [k, 8, 2, n // 16] and box == [64, 8, 2, box_rows // 16] and all(s % 16 == 0 for s in strides)
    row_bytes = 2 * k
    placed = {}
    for g in range(box[3]):  # smem rows in the box's order: innermost dimension past K first
        for q in range(box[2]):
            for i in range(box[1]):
                global_row = (i * strides[0] + q * strides[1] + g * strides[2]) // row_bytes
                placed[global_row] = len(placed)
    wg_w_slot = [eval(expression.replace("/", "//"), {"n": r}) for r in range(box_rows)]
    assert [placed[r] for r in range(box_rows)] == wg_w_slot


def test_a_map_reaches_the_kernel_as_128_bytes_by_value():
    """CuPy passes a size-one numpy array's bytes as the parameter (a CUtensorMap is 128)."""
    raw = bytes(range(MAP_BYTES))
    arg = map_argument(raw)
    assert isinstance(arg, np.ndarray) and arg.size == 1 and arg.itemsize == MAP_BYTES and arg.tobytes() == raw
    with pytest.raises(ValueError):
        map_argument(raw[:64])


@pytest.mark.parametrize("k", [2880, 100])
def test_the_dense_product_takes_the_tma_kernels_where_asked_and_possible(rng, k):
    """With wg_tma, an eligible W is read through a tensor map (gemm_wg_tma_*: the map first, no W pointer),
    with the same results as the cp.async kernels; K = 100 (rows of 200 bytes) keeps those."""
    kernels = FakeKernels(FakeDevice())
    kernels.wgmma, kernels.tensor_maps = True, TensorMaps(stand_in_tensor_map)
    a, w = activations(rng, (7, k), heavy=True), host_array(bf16_weights(rng, (300, k)))
    bias = host_array(rng.standard_normal(300).astype(np.float32))
    ap = host_array(np.zeros((3, 7, pieces_lda(k)), np.uint16))
    kernels.split_pieces(ap, host_array(a))
    outputs = []
    for on in (False, True):
        kernels.wg_tma, c = on, host_array(np.zeros((7, 300), np.float32))
        kernels.gemm_tc(c, ap, w, bias, tile=(8, 2))
        outputs.append(np.array(c))
    tma = k == 2880
    assert kernels.launches[-2:] == ["gemm_wg_r8_p3_b2", "gemm_wg_tma_r8_p3_b2" if tma else "gemm_wg_r8_p3_b2"]
    assert len(kernels.tensor_maps) == tma
    np.testing.assert_array_equal(outputs[1], outputs[0])


def test_half_blocks_only_where_few_tiles_of_few_rows_leave_sms_idle():
    """wg_half_blocks: with wg_half, unsplit tiles of one feature block and 8 or 16 rows whose 64-feature
    halves fit one wave (qkv at one row: 80 halves on 132 SMs); not two-block tiles, taller tiles, more
    halves than SMs, or with wg_half off."""
    from cupy_getp.gpu.launch.gemm_tc import TensorCoreGemmLaunches

    class Launches(TensorCoreGemmLaunches):
        def __init__(self):
            self._sm_count, self.wg_half = 132, True

    k = Launches()
    assert k.wg_half_blocks(1, 5120, 8, 1) and k.wg_half_blocks(16, 5120, 16, 1) and k.wg_half_blocks(1, 72, 8, 1)
    assert k.wg_half_blocks(9, 8448, 16, 1) and not k.wg_half_blocks(9, 8512, 16, 1)  # 132 halves fit, 133 do not
    assert not k.wg_half_blocks(17, 5120, 32, 1) and not k.wg_half_blocks(1, 5120, 8, 2)
    assert not k.wg_half_blocks(24, 5120, 8, 1)  # three row tiles: 240 halves
    k.wg_half = False
    assert not k.wg_half_blocks(1, 5120, 8, 1)


def test_wide_blocks_only_where_they_fit_one_wave_and_128_feature_tiles_do_not():
    """wg_wide_blocks: with wg_wide, 8-row tiles whose 128-feature blocks take two waves and 192-feature ones one
    (one row's mlp1: 4 x 45 blocks of 128 on 132 SMs, 4 x 30 of 192); not where 128-feature blocks fit (mlp2's
    2880 features), where 192-feature ones do not (two rows: 8 tiles), 16-row tiles, or with wg_wide off."""
    from cupy_getp.gpu.launch.gemm_tc import TensorCoreGemmLaunches

    class Launches(TensorCoreGemmLaunches):
        def __init__(self):
            self._sm_count, self.wg_wide = 132, True

    k = Launches()
    assert k.wg_wide_blocks(4, 5760, 8) and not k.wg_wide_blocks(4, 2880, 8)
    assert k.wg_wide_blocks(4, 6336, 8) and not k.wg_wide_blocks(4, 6528, 8)  # 132 blocks of 192 fit, 136 do not
    assert not k.wg_wide_blocks(8, 5760, 8) and not k.wg_wide_blocks(4, 5760, 16)
    k.wg_wide = False
    assert not k.wg_wide_blocks(4, 5760, 8)


def test_tall_wide_blocks_where_their_blocks_still_fill_the_gpu(monkeypatch):
    """wg_wide_tall_blocks: with wg_wide and WG_WIDE_TALL_ON, exact 64-row tiles in blocks of 384 features and fast
    128-row ones of 192 where row_tiles x blocks gives every SM one (640 rows: mlp1's 72 tiles x 15, mlp2's x 8);
    not with few tiles, other heights, wg_wide off or WG_WIDE_TALL_ON = 0."""
    from cupy_getp.gpu.launch import gemm_tc
    from cupy_getp.gpu.launch.gemm_tc import TensorCoreGemmLaunches

    class Launches(TensorCoreGemmLaunches):
        def __init__(self):
            self._sm_count, self.wg_wide = 132, True

    k = Launches()
    monkeypatch.setattr(gemm_tc, "WG_WIDE_TALL_ON", 1)
    assert k.wg_wide_tall_blocks(72, 5760, 64, 3) == 2 and k.wg_wide_tall_blocks(72, 2880, 64, 3) == 2
    assert k.wg_wide_tall_blocks(36, 5760, 128, 1) == 1 and k.wg_wide_tall_blocks(36, 2880, 128, 1) == 1
    assert k.wg_wide_tall_blocks(9, 5760, 64, 3) == 2 and k.wg_wide_tall_blocks(8, 5760, 64, 3) == 0  # 135, 120
    assert k.wg_wide_tall_blocks(16, 2880, 64, 3) == 0 and k.wg_wide_tall_blocks(17, 2880, 64, 3) == 2  # 128, 136
    assert k.wg_wide_tall_blocks(72, 5760, 32, 3) == 0 and k.wg_wide_tall_blocks(72, 5760, 64, 1) == 0
    monkeypatch.setattr(gemm_tc, "WG_WIDE_TALL_ON", 0)
    assert k.wg_wide_tall_blocks(72, 5760, 64, 3) == 0
    monkeypatch.setattr(gemm_tc, "WG_WIDE_TALL_ON", 1)
    k.wg_wide = False
    assert k.wg_wide_tall_blocks(72, 5760, 64, 3) == 0


@pytest.mark.parametrize("value, on", [(None, 0), ("1", 1), ("0", 0), ("yes", 0)])
def test_the_tall_wide_blocks_are_switched_on_by_their_environment_variable(value, on):
    """WG_WIDE_TALL_ON's default comes from CUPY_GETP_WG_WIDE_TALL at import: on only for "1"."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "CUPY_GETP_WG_WIDE_TALL"}
    if value is not None:
        env["CUPY_GETP_WG_WIDE_TALL"] = value
    code = "from cupy_getp.gpu.launch import gemm_tc; print(gemm_tc.WG_WIDE_TALL_ON)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(on)


@pytest.mark.parametrize("n", [300, 72])
def test_the_dense_product_takes_the_half_blocks_where_asked(rng, n):
    """With wg_tma and wg_half, a product of few rows and few feature tiles runs gemm_wg_tma_half_* (its map
    of 64-row boxes: the oracle checks it) with the two-consumer kernels' results; with wg_half off, not."""
    kernels = FakeKernels(FakeDevice())
    kernels.wgmma, kernels.wg_tma, kernels._sm_count = True, True, 132
    kernels.tensor_maps = TensorMaps(stand_in_tensor_map)
    a, w = activations(rng, (7, 2880), heavy=True), host_array(bf16_weights(rng, (n, 2880)))
    bias = host_array(rng.standard_normal(n).astype(np.float32))
    ap = host_array(np.zeros((3, 7, pieces_lda(2880)), np.uint16))
    kernels.split_pieces(ap, host_array(a))
    outputs = []
    for on in (False, True):
        kernels.wg_half, c = on, host_array(np.zeros((7, n), np.float32))
        kernels.gemm_tc(c, ap, w, bias, tile=(8, 1))
        outputs.append(np.array(c))
    assert kernels.launches[-2:] == ["gemm_wg_tma_r8_p3_b1", "gemm_wg_tma_half_r8_p3_b1"]
    np.testing.assert_array_equal(outputs[1], outputs[0])


def test_the_grouped_products_take_the_paired_map_where_asked(rng):
    """With wg_tma and wg_tma_grouped, one row's mlp1 and mlp2 on bf16 experts run gemm_wg_tma_grouped* through a
    paired map of the experts as (E N, K) rows (the oracle checks its kind) with the cp.async kernels' results,
    tiles of every height; off, the cp.async kernels."""
    kernels = FakeKernels(FakeDevice())
    kernels.wgmma, kernels.wg_tma, kernels._sm_count = True, True, 132
    kernels.tensor_maps = TensorMaps(stand_in_tensor_map)
    n_experts, hidden, inter = 6, 64, 48
    experts = choose_experts(rng, 3, 2, n_experts, 4)
    w1 = host_array(bf16_weights(rng, (n_experts, 2 * inter, hidden)))
    b1 = host_array(rng.standard_normal((n_experts, 2 * inter)).astype(np.float32))
    w2 = host_array(bf16_weights(rng, (n_experts, hidden, inter)))
    b2 = host_array(rng.standard_normal((n_experts, hidden)).astype(np.float32))
    ap = host_array(np.zeros((3, 3, pieces_lda(hidden)), np.uint16))
    kernels.split_pieces(ap, host_array(activations(rng, (3, hidden), heavy=True)))
    for block_m in WG_GROUPED_ROWS:
        pair_of_padded, _, tile_expert = moe_align_host(experts, n_experts, block_m)
        outputs = []
        for on in (False, True):
            kernels.wg_tma_grouped = on
            gp = host_array(np.zeros((3, pair_of_padded.size, pieces_lda(inter)), np.uint16))
            kernels.gemm_tc_grouped_swiglu(gp, ap, host_array(pair_of_padded), host_array(tile_expert), w1, b1, 2,
                                           LIMIT)
            y = host_array(np.zeros((pair_of_padded.size, hidden), np.float32))
            kernels.gemm_tc_grouped(y, gp, host_array(pair_of_padded), host_array(tile_expert), w2, b2)
            outputs.append((np.array(gp), np.array(y)))
            tma = "_tma" if on else ""
            assert [name.split("_r")[0] for name in kernels.launches[-2:]] == \
                [f"gemm_wg{tma}_grouped_swiglu", f"gemm_wg{tma}_grouped"], (block_m, on)
        np.testing.assert_array_equal(outputs[1][0], outputs[0][0])
        np.testing.assert_array_equal(outputs[1][1], outputs[0][1])


def test_one_rows_mlp1_takes_the_wide_blocks_where_asked(rng):
    """With wg_tma, wg_tma_grouped and wg_wide, one row's mlp1 + SwiGLU at 20b's 5760 features (4 tiles x 45
    blocks of 128 on 132 SMs) runs gemm_wg_tma_grouped_swiglu_wide_r8_* (its map of 192-row boxes: the oracle
    checks it) with the cp.async kernels' g; with wg_wide off the two-consumer TMA kernel."""
    kernels = FakeKernels(FakeDevice())
    kernels.wgmma, kernels.wg_tma, kernels._sm_count = True, True, 132
    kernels.tensor_maps = TensorMaps(stand_in_tensor_map)
    n_experts, hidden, inter = 4, 64, 2880
    w1 = host_array(bf16_weights(rng, (n_experts, 2 * inter, hidden)))
    b1 = host_array(rng.standard_normal((n_experts, 2 * inter)).astype(np.float32))
    ap = host_array(np.zeros((3, 1, pieces_lda(hidden)), np.uint16))
    kernels.split_pieces(ap, host_array(activations(rng, (1, hidden), heavy=True)))
    pair_of_padded, _, tile_expert = moe_align_host(np.arange(4, dtype=np.int32)[None], n_experts, 8)
    outputs = []
    for tma, wide in ((False, False), (True, False), (True, True)):
        kernels.wg_tma_grouped, kernels.wg_wide = tma, wide
        gp = host_array(np.zeros((3, pair_of_padded.size, pieces_lda(inter)), np.uint16))
        kernels.gemm_tc_grouped_swiglu(gp, ap, host_array(pair_of_padded), host_array(tile_expert), w1, b1, 4, LIMIT)
        outputs.append(np.array(gp))
    assert kernels.launches[-3:] == ["gemm_wg_grouped_swiglu_r8_p3_b2", "gemm_wg_tma_grouped_swiglu_r8_p3_b2",
                                     "gemm_wg_tma_grouped_swiglu_wide_r8_p3_b1"]
    for gp in outputs[1:]:
        np.testing.assert_array_equal(gp, outputs[0])
    # experts no map describes (K = 100: rows of 200 bytes, not a multiple of 16): the cp.async kernel, tiled as
    # without the wide blocks
    w1 = host_array(bf16_weights(rng, (n_experts, 2 * inter, 100)))
    ap = host_array(np.zeros((3, 1, pieces_lda(100)), np.uint16))
    kernels.split_pieces(ap, host_array(activations(rng, (1, 100), heavy=True)))
    gp = host_array(np.zeros((3, pair_of_padded.size, pieces_lda(inter)), np.uint16))
    kernels.gemm_tc_grouped_swiglu(gp, ap, host_array(pair_of_padded), host_array(tile_expert), w1, b1, 4, LIMIT)
    assert kernels.launches[-1] == "gemm_wg_grouped_swiglu_r8_p3_b2"
