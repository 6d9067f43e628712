"""Split-K of the dense wgmma products (on unless CUPY_GETP_WG_SPLITK=0, cupy_getp/gpu/launch/splitk.py):
the twins gemm_wg_splitk_* and gemm_wg_tma_splitk_* (split mode) and gemm_wg[_tma]_sliced_* (sliced mode, many
rows) give exactly the ordered FP32 sum of the unsplit kernels' products over each K slice (acc = p0; acc +=
p1; ...; + bias; + c), the two modes the same bits, a row's bits do not depend on the row count, and the tile
counters go back to zero (two launches, and a CUDA graph replayed twice, give the same bits). The CPU tests
check the split rule (S from the shape alone, 1 where the tiles give a quarter of the SMs a block, boundaries
multiples of 64) and the mode's.
"""

from __future__ import annotations

import numpy as np
import pytest

from cupy_getp.gpu.launch.splitk import (MIN_SPLIT_STAGES, SLICED_TALL_ENV, SPLITK_ENV, WG_BK, WG_SLICED_HEIGHTS,
                                         SplitKWorkspace, wg_sliced, wg_sliced_height, wg_sliced_tall_enabled,
                                         wg_split_bounds, wg_split_rows_limit, wg_splits, wg_splitk_enabled)
from gpu_helpers import host, kernel_settings, poisoned
from gpu_helpers import to_device as dev
from test_gpu_gemm_tc import activations, bf16_weights, split
import test_gpu_gemm_wgmma

gpu = test_gpu_gemm_wgmma.gpu  # the fixture: conftest's (Device, Kernels) where the wgmma kernels are live

# (N, K): 25 tiles over qkv's K, the output projection, the router, a few tiles with a partial last stage,
# K % 8 != 0 (neither 16-byte copies nor a tensor map). qkv itself (40 tiles) is not split.
SHAPES = [(3200, 2880), (2880, 4096), (32, 2880), (300, 1000), (130, 1100)]


def splitk_launches(kernels, modes=("_splitk_", "_sliced_")) -> int:
    return sum(n for name, n in kernels.device.counters.launches.items() if any(m in name for m in modes))


def split_product(gpu, a, w, bias, c0, pieces: int, accumulate: bool):
    """gemm_tc with split-K on: the output, after checking that a split-K kernel ran."""
    kernels = gpu[1]
    c = c0.copy() if accumulate else poisoned(c0.shape)
    launched = splitk_launches(kernels)
    with kernel_settings(kernels, wg_splitk=True):
        kernels.gemm_tc(c, split(kernels, dev(a), pieces), dev(w), bias, accumulate)
    assert splitk_launches(kernels) == launched + 1
    return host(c, gpu)


def sliced_sum(gpu, a, w, bias, c0, pieces: int, accumulate: bool, splits: int):
    """The unsplit kernels' products over each split's K slice, summed in float32 in split order, then the bias
    and c: what the split-K kernels must write, bit for bit."""
    kernels, parts = gpu[1], []
    bounds = wg_split_bounds(w.shape[1], splits)
    with kernel_settings(kernels, wg_splitk=False):
        for k0, k1 in zip(bounds, bounds[1:]):
            c = poisoned(c0.shape)
            kernels.gemm_tc(c, split(kernels, dev(np.ascontiguousarray(a[:, k0:k1])), pieces),
                            dev(np.ascontiguousarray(w[:, k0:k1])))
            parts.append(host(c, gpu))
    acc = parts[0].copy()
    for part in parts[1:]:
        acc += part
    if bias is not None:
        acc += host(bias, gpu)
    return acc + host(c0, gpu) if accumulate else acc


@pytest.mark.gpu
@pytest.mark.parametrize("tma", [False, True])
@pytest.mark.parametrize("pieces", [3, 1])
@pytest.mark.parametrize("n, k", SHAPES)
def test_splitk_is_the_ordered_sum_of_the_slices(gpu, rng, tma, pieces, n, k):
    splits = wg_splits(n, k, gpu[1].sm_count())
    assert splits > 1, f"({n}, {k}) is not split on this GPU: pick shapes with fewer tiles"
    w = bf16_weights(rng, (n, k))
    bias = dev(rng.standard_normal(n).astype(np.float32))
    for m in (1, 3, 64, 1024):
        a = activations(rng, (m, k), heavy=True)
        c0 = dev(rng.standard_normal((m, n)).astype(np.float32))
        for accumulate in (False, True):
            with kernel_settings(gpu[1], wg_tma=tma):
                want = sliced_sum(gpu, a, w, bias, c0, pieces, accumulate, splits)
                got = split_product(gpu, a, w, bias, c0, pieces, accumulate)
            np.testing.assert_array_equal(got, want, err_msg=f"{m} rows, {splits} splits, "
                                          f"accumulate {accumulate}")


@pytest.mark.gpu
@pytest.mark.parametrize("tma", [False, True])
@pytest.mark.parametrize("pieces", [3, 1])
@pytest.mark.parametrize("n, k", SHAPES[:3])
def test_splitk_rows_do_not_depend_on_the_row_count(gpu, rng, tma, pieces, n, k):
    """The same rows inside split products of 1, 7, 128 and 1024 rows, at different places: the bits of the
    1024-row product."""
    total = 1024
    a, w = activations(rng, (total, k), heavy=True), bf16_weights(rng, (n, k))
    bias = dev(rng.standard_normal(n).astype(np.float32))
    c0 = dev(np.zeros((total, n), np.float32))

    def run():
        full = split_product(gpu, a, w, bias, c0, pieces, False)
        for m in (1, 7, 128):
            for start in (0, 5, total - m):
                part = split_product(gpu, a[start:start + m], w, bias, c0[:m], pieces, False)
                np.testing.assert_array_equal(part, full[start:start + m], err_msg=f"{m} rows at {start}")

    with kernel_settings(gpu[1], wg_tma=tma):
        run()


@pytest.mark.gpu
@pytest.mark.parametrize("tma", [False, True])
@pytest.mark.parametrize("pieces", [3, 1])
@pytest.mark.parametrize("n, k", SHAPES)
def test_sliced_and_split_modes_give_the_same_bits(gpu, rng, monkeypatch, tma, pieces, n, k):
    """The same split product in each mode, forced (the launch helper picks by the tiles): sliced at each of its
    heights and split, bit-identical, with and without bias and c; and the forced mode's kernels (and height)
    are the ones that ran."""
    kernels = gpu[1]
    w = bf16_weights(rng, (n, k))
    bias = dev(rng.standard_normal(n).astype(np.float32))
    for m in (65, 300, 1024):
        a = activations(rng, (m, k), heavy=True)
        c0 = dev(rng.standard_normal((m, n)).astype(np.float32))
        for accumulate, b in ((False, None), (True, bias)):
            outputs = {}
            for mode, sliced_rows in (*(("_sliced_", h) for h in WG_SLICED_HEIGHTS[pieces]), ("_splitk_", None)):
                monkeypatch.setattr(kernels, "wg_dense_sliced", lambda *args, rows=sliced_rows: rows)
                kind = f"{mode}r{sliced_rows}_" if sliced_rows else mode
                launched = splitk_launches(kernels, (kind,))
                with kernel_settings(kernels, wg_tma=tma):
                    outputs[kind] = split_product(gpu, a, w, b, c0, pieces, accumulate)
                assert splitk_launches(kernels, (kind,)) == launched + 1, kind
            for kind, got in outputs.items():
                np.testing.assert_array_equal(got, outputs["_splitk_"],
                                              err_msg=f"{kind}: {m} rows, accumulate {accumulate}")


@pytest.mark.gpu
@pytest.mark.parametrize("tma", [False, True])
def test_splitk_counters_reset_for_the_next_launch_and_graph_replays(gpu, rng, tma):
    """Two launches in a row give the same bits and leave every counter zero; so does a captured graph
    replayed twice (its workspace reserved before the capture: none is made while capturing)."""
    import cupy

    device, kernels = gpu
    m, n, k = 7, 2880, 4096
    ap = split(kernels, dev(activations(rng, (m, k), heavy=True)), 3)
    w, bias = dev(bf16_weights(rng, (n, k))), dev(rng.standard_normal(n).astype(np.float32))

    def run():
        outputs = []
        with kernel_settings(kernels, wg_splitk=True):
            kernels.reserve_splitk(m, [(n, k)])
            for _ in range(2):
                c = poisoned((m, n))
                kernels.gemm_tc(c, ap, w, bias)
                outputs.append(host(c, gpu))
            assert not host(kernels._splitk.counters, gpu).any()
            c = poisoned((m, n))
            device.stream.begin_capture()
            kernels.gemm_tc(c, ap, w, bias)
            graph = device.stream.end_capture()
            for _ in range(2):
                c.fill(cupy.nan)
                graph.launch(stream=device.stream)
                outputs.append(host(c, gpu))
            assert not host(kernels._splitk.counters, gpu).any()
        for out in outputs[1:]:
            np.testing.assert_array_equal(out, outputs[0])

    with kernel_settings(kernels, wg_tma=tma):
        run()


# -- host side (no GPU) ----------------------------------------------------------------------------------
def test_the_split_rule_depends_on_the_shape_alone():
    """S = 1 where the feature tiles give a quarter of the SMs a block; else the fewest stages on the busiest SM
    with >= 8 stages a split (one H200: qkv's 40 tiles are not split; the output projection 23 -> 5; the router
    1 -> 5, capped by its 45 stages)."""
    assert wg_splits(201088, 2880, 132) == 1 and wg_splits(132 * 128, 2880, 132) == 1  # unembedding: tiles fill
    assert wg_splits(5120, 2880, 132) == 1 and wg_splits(33 * 128, 2880, 132) == 1  # a quarter of the SMs
    assert wg_splits(2880, 4096, 132) == 5 and wg_splits(32, 2880, 132) == 5
    assert wg_splits(30 * 128, 2880, 132) == 4  # 120 blocks of 12 stages, not 150 in two waves of 9
    assert wg_splits(32, 7 * WG_BK, 132) == 1  # too few stages to split
    assert wg_splits(5120, 2880, 40) == 1  # a GPU the tiles fill
    for n, k in [*SHAPES, (64, 100), (2880, 64 * 8 * 3)]:
        splits = wg_splits(n, k, 132)
        bounds = wg_split_bounds(k, splits)
        assert bounds[0] == 0 and bounds[-1] == k and all(b % WG_BK == 0 for b in bounds[:-1])
        stages = [-(-(hi - lo) // WG_BK) for lo, hi in zip(bounds, bounds[1:])]
        assert splits == 1 or min(stages) >= MIN_SPLIT_STAGES, (n, k, stages)
        assert max(stages) - min(stages) <= 1, (n, k, stages)  # as equal as possible


def test_splitk_is_on_unless_turned_off(monkeypatch):
    monkeypatch.delenv(SPLITK_ENV, raising=False)
    assert wg_splitk_enabled()
    monkeypatch.setenv(SPLITK_ENV, "0")
    assert not wg_splitk_enabled()
    monkeypatch.setenv(SPLITK_ENV, "1")
    assert wg_splitk_enabled()


def test_the_split_products_take_the_twins_with_a_workspace(monkeypatch, rng):
    """With wg_splitk, a product of few tiles launches gemm_wg[_tma]_splitk_r{rows}_p{P}_b1 over (tiles, row
    tiles, S) with the workspace and counters, made once and grown (never while a graph is captured); one of
    many tiles keeps the unsplit kernels; results as the unsplit kernels' (the oracles)."""
    import sys
    import types

    from batch_fakes import FakeDevice, FakeKernels, fake_cupy, host_array
    from cupy_getp.errors import KernelArgumentError
    from cupy_getp.gpu.launch.gemm_tc import pieces_lda

    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    kernels = FakeKernels(FakeDevice())
    kernels.wgmma, kernels.wg_splitk, kernels._sm_count = True, True, 132
    grids = []
    launch = kernels._launch
    monkeypatch.setattr(kernels, "_launch", lambda name, grid, *args, **kw: (grids.append(grid),
                                                                               launch(name, grid, *args, **kw)))
    k = 2880
    a = activations(rng, (7, k), heavy=True)
    ap = host_array(np.zeros((3, 7, pieces_lda(k)), np.uint16))
    kernels.split_pieces(ap, host_array(a))
    outputs, weights = [], {n: host_array(bf16_weights(rng, (n, k))) for n in (300, 40000)}
    for n, on in ((300, False), (300, True), (40000, True)):
        kernels.wg_splitk, w = on, weights[n]
        c = host_array(np.zeros((7, n), np.float32))
        kernels.gemm_tc(c, ap, w, tile=(8, 2))
        outputs.append(np.array(c))
    assert kernels.launches[-3:] == ["gemm_wg_r8_p3_b2", "gemm_wg_splitk_r8_p3_b1", "gemm_wg_r8_p3_b2"]
    assert grids[-3:] == [(2, 1), (3, 1, 5), (157, 1)]
    np.testing.assert_array_equal(outputs[1], outputs[0])
    assert kernels._splitk.work.size == 5 * 7 * 300 and kernels._splitk.counters.size == 3
    capturing = types.SimpleNamespace(is_capturing=lambda: True)  # a bigger product while capturing: refused
    monkeypatch.setattr(kernels.device, "stream", capturing)
    with pytest.raises(KernelArgumentError, match="reserve_splitk"):
        kernels.gemm_tc(host_array(np.zeros((7, 2000), np.float32)), ap, host_array(bf16_weights(rng, (2000, k))))


def test_many_rows_take_the_sliced_kernels(monkeypatch, rng):
    """Where a split product's one-block tiles (64 rows high in sliced mode) give every SM a block, the helper
    launches gemm_wg_sliced_r{H}_p{P}_b1 over (tiles, row tiles) with the splits and no workspace; below, the
    split mode. H is 64, but with one piece 128 where the unsplit product would take 128-row tiles, unless
    wg_sliced_tall is off (the mode is chosen by the 64-row tiles either way)."""
    import sys

    from batch_fakes import FakeDevice, FakeKernels, fake_cupy, host_array
    from cupy_getp.gpu.launch.gemm_tc import pieces_lda

    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    kernels = FakeKernels(FakeDevice())
    kernels.wgmma, kernels.wg_splitk, kernels._sm_count = True, True, 132
    grids = []
    launch = kernels._launch
    monkeypatch.setattr(kernels, "_launch", lambda name, grid, *args, **kw: (grids.append((name, grid, args[1])),
                                                                               launch(name, grid, *args, **kw)))
    n, k = 2880, 24 * WG_BK  # the output projection's 23 tiles; K of 24 stages (quick oracles): S = 3
    assert wg_splits(n, k, 132) == 3
    w = host_array(bf16_weights(rng, (n, k)))
    expected = {(3, True): {150: ("gemm_wg_splitk_r64_p3_b1", (23, 3, 3)),
                            320: ("gemm_wg_splitk_r64_p3_b1", (23, 5, 3)),
                            321: ("gemm_wg_sliced_r64_p3_b1", (23, 6)),  # 5 x 23 < 132 <= 6 x 23 tiles
                            1024: ("gemm_wg_sliced_r64_p3_b1", (23, 16))},
                (1, True): {320: ("gemm_wg_splitk_r128_p1_b1", (23, 3, 3)),
                            321: ("gemm_wg_sliced_r128_p1_b1", (23, 3)), 1024: ("gemm_wg_sliced_r128_p1_b1", (23, 8))},
                (1, False): {321: ("gemm_wg_sliced_r64_p1_b1", (23, 6)), 1024: ("gemm_wg_sliced_r64_p1_b1", (23, 16))}}
    for (pieces, tall), cases in expected.items():
        kernels.wg_sliced_tall = tall
        for m, (name, grid) in cases.items():
            a = activations(rng, (m, k), heavy=True)
            ap = host_array(np.zeros((pieces, m, pieces_lda(k)), np.uint16))
            kernels.split_pieces(ap, host_array(a))
            kernels.gemm_tc(host_array(np.zeros((m, n), np.float32)), ap, w)
            assert grids[-1][:2] == (name, grid), (pieces, tall, m)
            if "sliced" in name:
                assert int(grids[-1][2][-1]) == 3  # the splits, as the last argument
    assert wg_sliced(2880, 4096, 32, 132) is False  # tiled below the sliced height: split mode


def test_the_sliced_height_follows_the_unsplit_tiles():
    assert wg_sliced_height(128, 1) == 128 and wg_sliced_height(128, 1, tall=False) == 64
    assert wg_sliced_height(128, 3) == 64 and wg_sliced_height(64, 1) == 64 and wg_sliced_height(64, 3) == 64
    assert all(h in (64, 128) for p in (1, 3) for h in WG_SLICED_HEIGHTS[p])


def test_tall_sliced_kernels_are_on_unless_turned_off(monkeypatch):
    monkeypatch.delenv(SLICED_TALL_ENV, raising=False)
    assert wg_sliced_tall_enabled()
    monkeypatch.setenv(SLICED_TALL_ENV, "0")
    assert not wg_sliced_tall_enabled()


def test_a_grown_workspace_keeps_the_buffers_a_graph_may_name(monkeypatch):
    import sys

    from batch_fakes import fake_cupy

    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    space = SplitKWorkspace()
    assert not space.fits(1, 1)
    space.grow(100, 4)
    first = space.work
    assert space.fits(100, 4) and not space.fits(101, 4)
    space.grow(10, 8)
    assert space.work.size == 100 and space.counters.size == 8 and space.kept[0] is first
    assert not space.counters.any()


def test_reserve_sizes_the_workspace_once_for_the_largest_product(monkeypatch):
    """RowModel's reservation at warm-up: the largest split product's workspace and counters (row tiles of 8)
    in one allocation; nothing where split-K is off or no product splits."""
    import sys

    from batch_fakes import FakeDevice, FakeKernels, fake_cupy

    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    kernels = FakeKernels(FakeDevice())
    kernels.wgmma, kernels._sm_count = True, 132
    shapes = [(5120, 2880), (2880, 4096), (32, 2880), (201088, 2880)]  # qkv, output projection, router, unembedding
    kernels.reserve_splitk(16, shapes)
    assert kernels._splitk is None  # wg_splitk off
    kernels.wg_splitk = True
    kernels.reserve_splitk(16, shapes[3:])
    assert kernels._splitk is None  # the unembedding is not split
    kernels.reserve_splitk(16, shapes)  # the output projection's 5 splits and 23 tiles (qkv is not split)
    assert kernels._splitk.work.size == 5 * 16 * 2880 and kernels._splitk.counters.size == 23 * 2
    assert kernels._splitk.kept == []
    # 1152 rows: split mode holds the output projection to 5 row tiles of 64 (320 rows), the router to all
    assert wg_split_rows_limit(2880, 132) == 320 and wg_split_rows_limit(32, 132) == 131 * 64
    assert wg_split_rows_limit(201088, 132) == 32
    kernels.reserve_splitk(1152, shapes)
    assert kernels._splitk.work.size == max(5 * 320 * 2880, 5 * 1152 * 32)
    assert kernels._splitk.counters.size == max(23 * 40, 1 * 144)
