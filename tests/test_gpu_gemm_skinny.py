"""The skinny tensor-core kernels (kernels/gemm_tc.hip gemm_tc_skinny*, CUDA): products of a few rows with
the tile kernels' contracts and their very bits.

Each skinny product is compared bit for bit (float32 and bf16 bits) with the mma.sync tile kernels on the
same operands, and with the wgmma kernels where the device has them, and against float64 numpy within the
bounds of tests/test_gpu_gemm_tc.py: a row's result must not depend on which kernel a step's row count
picked. Shapes: 1, 2, 3, 5, 8 rows (and up to 16, and 20: two row blocks), K and N odd (K = 37 and 100 take
the scalar weight loads and a last k16 step of zeros), one-row MoE steps (4 experts, pad positions), rows
sharing experts, unused tiles (-1).
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from cupy_getp.gpu.constants import TC_BLOCK_M, TC_SKINNY_GROUP_M
from cupy_getp.gpu.launch.gemm_tc import SKINNY_TILE, pieces_lda, tensor_cores_supported
from cupy_getp.gpu.launch.moe import moe_align_host
from gpu_helpers import host, poisoned, random_mxfp4_matrix
from gpu_helpers import to_device as dev
from test_gpu_gemm_tc import (LIMIT, activations, assert_accurate, bf16_weights, check_grouped, check_grouped_swiglu,
                              choose_experts, product, split)
from test_gpu_mxfp4 import stored


@pytest.fixture
def gpu(gpu):
    """conftest's (Device, Kernels) where the skinny kernels run (CUDA sm_80+)."""
    if gpu[0].is_hip or not tensor_cores_supported(gpu[0]):
        pytest.skip(f"no skinny tensor-core kernels on {gpu[0].describe()} (CUDA sm_80+ only)")
    return gpu


@contextlib.contextmanager
def path(kernels, wgmma: bool, skinny: bool):
    """Products on the wgmma kernels or not, the skinny kernels preferred or not."""
    saved = kernels.wgmma, kernels.skinny
    kernels.wgmma, kernels.skinny = wgmma, skinny
    try:
        yield
    finally:
        kernels.wgmma, kernels.skinny = saved


def bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint32) if a.dtype == np.float32 else a


# -- dense ---------------------------------------------------------------------------------------------
ROWS = [1, 2, 3, 5, 8, 16, 20]
SHAPES = [(2880, 5120), (4096, 2880), (100, 72), (37, 13)]  # K, N
EPILOGUES = [(False, False), (True, False), (True, True)]  # bias, accumulate


def dense(kernels, c0, ap, w, bias, accumulate, tile):
    import cupy

    c = cupy.array(c0) if accumulate else poisoned(c0.shape)
    kernels.gemm_tc(c, ap, w, bias, accumulate, tile=tile)
    return host(c, (kernels.device,))


@pytest.mark.gpu
@pytest.mark.parametrize("bias, accumulate", EPILOGUES, ids=str)
@pytest.mark.parametrize("pieces", [3, 1])
@pytest.mark.parametrize("k, n", SHAPES, ids=str)
@pytest.mark.parametrize("m", ROWS)
def test_skinny_dense_bits_equal_the_tiles(gpu, rng, m, k, n, pieces, bias, accumulate):
    """gemm_tc_skinny gives the mma.sync tiles' bits (and the wgmma kernels') and float64's value within the
    tile kernels' bounds."""
    kernels = gpu[1]
    a = activations(rng, (m, k), heavy=False)
    w_host = bf16_weights(rng, (n, k))
    b_host = rng.standard_normal(n).astype(np.float32) if bias else None
    c0 = rng.standard_normal((m, n)).astype(np.float32)
    ap, w, b = split(kernels, dev(a), pieces), dev(w_host), dev(b_host) if bias else None
    skinny = dense(kernels, c0, ap, w, b, accumulate, SKINNY_TILE)
    with path(kernels, wgmma=False, skinny=False):
        for tile in [(64, 128), (64, 64)]:
            np.testing.assert_array_equal(bits(skinny), bits(dense(kernels, c0, ap, w, b, accumulate, tile)),
                                          err_msg=f"mma.sync {tile}")
    if kernels.wgmma:
        with path(kernels, wgmma=True, skinny=False):
            tile = kernels.wg_tile(m, n, pieces)
            np.testing.assert_array_equal(bits(skinny), bits(dense(kernels, c0, ap, w, b, accumulate, None)),
                                          err_msg=f"wgmma {tile}")
    want, scale = product(a, w_host)
    for term in ([b_host] if bias else []) + ([c0] if accumulate else []):
        want, scale = want + term, scale + np.abs(term)
    assert_accurate(skinny, want, scale, pieces)


@pytest.mark.gpu
@pytest.mark.parametrize("pieces", [3, 1])
@pytest.mark.parametrize("m, k, n", [(1, 2880, 5120), (5, 2880, 2880), (8, 4096, 2880), (3, 37, 13)])
def test_skinny_dense_heavy_tailed_bits(gpu, rng, m, k, n, pieces):
    """Activations over ~6 decades (every piece matters, promotion shows): still the tiles' bits; and a row's
    bits do not depend on the rows beside it (the last row alone, and among the others)."""
    kernels = gpu[1]
    a = activations(rng, (m, k), heavy=True)
    w = dev(bf16_weights(rng, (n, k)))
    ap = split(kernels, dev(a), pieces)
    c0 = np.zeros((m, n), np.float32)
    skinny = dense(kernels, c0, ap, w, None, False, SKINNY_TILE)
    with path(kernels, wgmma=False, skinny=False):
        np.testing.assert_array_equal(bits(skinny), bits(dense(kernels, c0, ap, w, None, False, (64, 128))))
    alone = dense(kernels, c0[-1:], split(kernels, dev(a[-1:]), pieces), w, None, False, SKINNY_TILE)
    np.testing.assert_array_equal(bits(alone[0]), bits(skinny[-1]))


@pytest.mark.gpu
@pytest.mark.parametrize("offset", [0, 2])
def test_skinny_dense_unaligned_weights_take_the_scalar_loads(gpu, rng, offset):
    """W 2 bytes past a 16-byte boundary (K = 2880 would otherwise take cp.async): the same bits as aligned."""
    m, k, n = 3, 2880, 70
    a, w = activations(rng, (m, k), heavy=True), bf16_weights(rng, (n, k))
    ap = split(gpu[1], dev(a), 3)
    c0 = np.zeros((m, n), np.float32)
    got = dense(gpu[1], c0, ap, dev(w, offset), None, False, SKINNY_TILE)
    with path(gpu[1], wgmma=False, skinny=False):
        np.testing.assert_array_equal(bits(got), bits(dense(gpu[1], c0, ap, dev(w), None, False, (64, 128))))
    assert_accurate(got, *product(a, w), pieces=3, exact_abs=False)


@pytest.mark.gpu
def test_gemm_tc_takes_the_skinny_kernel_at_few_rows(gpu, rng, monkeypatch):
    """Without a tile, gemm_tc launches gemm_tc_skinny up to SKINNY_MAX_ROWS rows (wgmma devices too)."""
    kernels = gpu[1]
    launched = []
    launch = kernels._launch
    monkeypatch.setattr(kernels, "_launch", lambda name, *args, **kw: (launched.append(name), launch(name, *args,
                                                                                                      **kw)))
    for m in (1, 8, 9):
        ap = split(kernels, dev(activations(rng, (m, 64), heavy=False)), 3)
        kernels.gemm_tc(poisoned((m, 40)), ap, dev(bf16_weights(rng, (40, 64))))
    assert [name == "gemm_tc_skinny" for name in launched if name != "tc_split_rows"] == [True, True, False]


# -- grouped MoE ---------------------------------------------------------------------------------------
GROUPED = [  # rows R, k, experts E, experts that get rows, H, I
    (1, 4, 32, 32, 2880, 300),   # one row: four tiles of one pair each (7 pad positions each), unused tiles
    (1, 4, 8, 8, 100, 37),       # one row, odd sizes
    (3, 4, 6, 4, 2880, 72),      # a few rows sharing experts
    (5, 2, 5, 4, 37, 2880),      # mlp2 with K = I = 2880, mlp1 with K = 37
    (12, 1, 3, 1, 64, 64),       # every row on one expert: two tiles of it, two experts empty
]


def moe_step(kernels, ap, experts, n_experts, block_m, w1, b1, w2, b2, k, inter, hidden, pieces):
    """(g's pieces, y) in pair order of mlp1 + SwiGLU then mlp2 on a grouping in tiles of block_m."""
    import cupy

    pair_of_padded, padded_of_pair, tile_expert = moe_align_host(experts, n_experts, block_m)
    pairs, tiles = dev(pair_of_padded), dev(tile_expert)
    gp = cupy.full((pieces, pair_of_padded.size, pieces_lda(inter)), 0xFFFF, np.uint16)  # NaN bits
    kernels.gemm_tc_grouped_swiglu(gp, ap, pairs, tiles, w1, b1, k, LIMIT)
    y = poisoned((pair_of_padded.size, hidden))
    kernels.gemm_tc_grouped(y, gp, pairs, tiles, w2, b2)
    device = (kernels.device,)
    g_bits, y_host = host(gp, device), host(y, device)
    real = pair_of_padded >= 0
    assert np.all(np.isnan(y_host[~real])), "pad positions written"
    return g_bits[:, padded_of_pair], y_host[padded_of_pair]


def grouped_operands(rng, n_experts, hidden, inter):
    w1 = bf16_weights(rng, (n_experts, 2 * inter, hidden))
    w2 = bf16_weights(rng, (n_experts, hidden, inter))
    b1 = rng.standard_normal((n_experts, 2 * inter)).astype(np.float32)
    b2 = rng.standard_normal((n_experts, hidden)).astype(np.float32)
    return dev(w1), dev(b1), dev(w2), dev(b2)


@pytest.mark.gpu
@pytest.mark.parametrize("pieces", [3, 1])
@pytest.mark.parametrize("rows, k, n_experts, used, hidden, inter", GROUPED)
def test_skinny_grouped_bits_equal_the_tiles(gpu, rng, pieces, rows, k, n_experts, used, hidden, inter):
    """g's pieces and y of the skinny grouped kernels (tiles of 8) equal the mma.sync tiles' (64) and the
    wgmma kernels' (8, 64) bit for bit, pair by pair."""
    kernels = gpu[1]
    experts = choose_experts(rng, rows, k, n_experts, used)
    ap = split(kernels, dev(activations(rng, (rows, hidden), heavy=True)), pieces)
    weights = grouped_operands(rng, n_experts, hidden, inter)
    args = (experts, n_experts)
    tail = (*weights, k, inter, hidden, pieces)
    skinny = moe_step(kernels, ap, *args, TC_SKINNY_GROUP_M, *tail)
    others = {}
    with path(kernels, wgmma=False, skinny=False):
        others["mma.sync 64"] = moe_step(kernels, ap, *args, TC_BLOCK_M, *tail)
    if gpu[1].wgmma:
        with path(kernels, wgmma=True, skinny=False):
            for block_m in (8, 64):
                others[f"wgmma {block_m}"] = moe_step(kernels, ap, *args, block_m, *tail)
    for label, (g_bits, y) in others.items():
        np.testing.assert_array_equal(skinny[0], g_bits, err_msg=f"{label}: g pieces")
        np.testing.assert_array_equal(bits(skinny[1]), bits(y), err_msg=f"{label}: y")


@pytest.mark.gpu
@pytest.mark.parametrize("pieces", [3, 1])
@pytest.mark.parametrize("rows, k, n_experts, used, hidden, inter", GROUPED)
def test_skinny_grouped_against_float64(gpu, rng, pieces, rows, k, n_experts, used, hidden, inter):
    """The tile kernels' checks (tests/test_gpu_gemm_tc.py) on tiles of 8: the skinny kernels take them."""
    with path(gpu[1], wgmma=gpu[1].wgmma, skinny=True):
        check_grouped_swiglu(gpu, rng, pieces, rows, k, n_experts, used, hidden, inter, TC_SKINNY_GROUP_M)
        check_grouped(gpu, rng, pieces, rows, k, n_experts, used, hidden, inter, TC_SKINNY_GROUP_M)


@pytest.mark.gpu
@pytest.mark.parametrize("pieces", [3, 1])
@pytest.mark.parametrize("rows, k, n_experts, used, hidden, inter", [
    (1, 4, 32, 32, 2880, 300), (5, 2, 5, 4, 100, 37),
    (6, 2, 5, 5, 37, 72),  # mlp2: 37 rows of 3 scales an expert, so a block's scales start 1-3 bytes past a word
])
def test_skinny_grouped_mxfp4_experts_equal_bf16_tiles(gpu, rng, pieces, rows, k, n_experts, used, hidden, inter):
    """The *_mxfp4w skinny kernels: MXFP4 experts give the bits of the mma.sync tiles on BF16 experts holding
    the same values (the scales copied from the word boundary before a block's first, the last block's
    rows partly past N)."""
    kernels = gpu[1]
    experts = choose_experts(rng, rows, k, n_experts, used)
    ap = split(kernels, dev(activations(rng, (rows, hidden), heavy=True)), pieces)
    w1 = stored(random_mxfp4_matrix(rng, (n_experts, 2 * inter, hidden)), hidden)
    w2 = stored(random_mxfp4_matrix(rng, (n_experts, hidden, inter)), inter)
    b1 = dev(rng.standard_normal((n_experts, 2 * inter)).astype(np.float32))
    b2 = dev(rng.standard_normal((n_experts, hidden)).astype(np.float32))
    tail = (k, inter, hidden, pieces)
    skinny = moe_step(kernels, ap, experts, n_experts, TC_SKINNY_GROUP_M, w1["mxfp4"], b1, w2["mxfp4"], b2, *tail)
    with path(kernels, wgmma=False, skinny=False):
        tiles = moe_step(kernels, ap, experts, n_experts, TC_BLOCK_M, w1["bf16"], b1, w2["bf16"], b2, *tail)
    np.testing.assert_array_equal(skinny[0], tiles[0], err_msg="g pieces")
    np.testing.assert_array_equal(bits(skinny[1]), bits(tiles[1]), err_msg="y")


# -- host side (no GPU): which kernels the launch helpers pick ---------------------------------------------
def fake_products(device=None):
    """FakeKernels (the real launch helpers, kernels replaced by their oracles) and a product's operands."""
    from batch_fakes import FakeKernels, host_array

    kernels = FakeKernels(device)
    rng = np.random.default_rng(0)

    def dense(m: int, tile=None) -> str:
        a = host_array(rng.standard_normal((m, 64)).astype(np.float32))
        ap = host_array(np.zeros((3, m, 64), np.uint16))
        kernels.split_pieces(ap, a)
        kernels.launches.clear()
        kernels.gemm_tc(host_array(np.zeros((m, 40), np.float32)), ap, host_array(bf16_weights(rng, (40, 64))),
                        tile=tile)
        return kernels.launches[-1]

    def expert_matrices(shape, mxfp4: bool):
        if not mxfp4:
            return host_array(bf16_weights(rng, shape))
        from cupy_getp.gpu.launch.common import Mxfp4Matrix

        blocks, scales = random_mxfp4_matrix(rng, shape)
        return Mxfp4Matrix(host_array(blocks), host_array(scales), shape[-1])

    def grouped(rows: int, block_m: int, mxfp4: bool = False) -> list[str]:
        experts = np.array([rng.permutation(8)[:2] for _ in range(rows)], np.int32)
        pair_of_padded, _, tile_expert = moe_align_host(experts, 8, block_m)
        ap = host_array(np.zeros((3, rows, 64), np.uint16))
        gp = host_array(np.zeros((3, pair_of_padded.size, 40), np.uint16))
        y = host_array(np.zeros((pair_of_padded.size, 64), np.float32))
        pairs, tiles = host_array(pair_of_padded), host_array(tile_expert)
        kernels.launches.clear()
        kernels.gemm_tc_grouped_swiglu(gp, ap, pairs, tiles, expert_matrices((8, 80, 64), mxfp4),
                                       host_array(np.zeros((8, 80), np.float32)), 2, LIMIT)
        kernels.gemm_tc_grouped(y, gp, pairs, tiles, expert_matrices((8, 64, 40), mxfp4),
                                host_array(np.zeros((8, 64), np.float32)))
        return kernels.launches

    return kernels, dense, grouped


def test_cuda_products_take_the_skinny_kernels_at_few_rows():
    """Up to SKINNY_MAX_ROWS rows gemm_tc launches gemm_tc_skinny (mma.sync and wgmma devices), above it the
    tiles; a grouping in tiles of TC_SKINNY_GROUP_M takes the skinny grouped kernels, and tc_grouped_rows
    gives that height where an expert's average share fits in it."""
    from cupy_getp.gpu.launch.gemm_tc import SKINNY_MAX_ROWS

    kernels, dense, grouped = fake_products()
    assert [dense(m) for m in (1, SKINNY_MAX_ROWS)] == ["gemm_tc_skinny"] * 2
    assert dense(SKINNY_MAX_ROWS + 1).startswith("gemm_tc_m")
    assert dense(16, tile=SKINNY_TILE) == "gemm_tc_skinny"
    assert grouped(1, TC_SKINNY_GROUP_M) == ["gemm_tc_skinny_grouped_swiglu", "gemm_tc_skinny_grouped"]
    assert grouped(1, TC_BLOCK_M) == ["gemm_tc_grouped_swiglu", "gemm_tc_grouped"]
    assert grouped(3, TC_SKINNY_GROUP_M, mxfp4=True) == ["gemm_tc_skinny_grouped_swiglu_mxfp4w",
                                                         "gemm_tc_skinny_grouped_mxfp4w"]
    assert kernels.tc_grouped_rows(4, 32, 3) == TC_SKINNY_GROUP_M  # one row of the 20b: 4 pairs, 32 experts
    assert kernels.tc_grouped_rows(1024 * 4, 32, 3) == TC_BLOCK_M
    kernels.wgmma = True
    assert dense(1) == "gemm_tc_skinny" and dense(SKINNY_MAX_ROWS + 1).startswith("gemm_wg_r16")
    assert grouped(1, 8) == ["gemm_tc_skinny_grouped_swiglu", "gemm_tc_skinny_grouped"]
    assert kernels.tc_grouped_rows(1024 * 4, 32, 3) == 64  # wg_grouped_rows
    kernels.skinny = False  # as the tests that compare the kernels set it
    assert dense(1) == "gemm_wg_r8_p3_b1" and grouped(1, 8)[0].startswith("gemm_wg_grouped_swiglu_r8")
    assert kernels.tc_grouped_rows(4, 32, 3) == 8


def test_hip_keeps_the_mfma_tiles(monkeypatch):
    """On ROCm the skinny kernels are an immediate return: every row count takes the MFMA tiles, and a
    grouping in tiles of 8 is refused."""
    from batch_fakes import FakeDevice

    from cupy_getp.errors import KernelArgumentError

    class RocmDevice(FakeDevice):
        is_hip, arch, warp_size = True, "gfx90a:sramecc+:xnack-", 64

    monkeypatch.setenv("CUPY_GETP_ROCM_MFMA", "1")
    kernels, dense, grouped = fake_products(RocmDevice())
    assert dense(1) == "gemm_tc_m64_n64" and not kernels.skinny_available()
    assert kernels.tc_grouped_rows(4, 32, 3) == TC_BLOCK_M
    assert grouped(1, TC_BLOCK_M) == ["gemm_tc_grouped_swiglu", "gemm_tc_grouped"]
    with pytest.raises(KernelArgumentError, match="tiles of"):
        grouped(1, TC_SKINNY_GROUP_M)
    with pytest.raises(RuntimeError, match="CUDA sm_80"):
        dense(1, tile=SKINNY_TILE)


def test_skinny_shared_memory_fits():
    """A block may opt into 227 KiB: the 16 rows a dense skinny block takes fit; at the 8 rows gemm_tc gives it
    (and the grouped tiles), two blocks a SM; at one row, five (a one-row product has 1-3 warps a SM)."""
    from cupy_getp.gpu.launch.gemm_tc import SKINNY_MAX_ROWS, tc_skinny_shared_bytes

    assert tc_skinny_shared_bytes(3, 16) <= 227 * 1024
    assert 2 * tc_skinny_shared_bytes(3, max(SKINNY_MAX_ROWS, TC_SKINNY_GROUP_M)) <= 227 * 1024
    assert 5 * tc_skinny_shared_bytes(3, 1) <= 227 * 1024
    assert 2 * tc_skinny_shared_bytes(3, TC_SKINNY_GROUP_M, mxfp4_k=2880) <= 227 * 1024  # + 16 rows' scales
    assert tc_skinny_shared_bytes(1, 8, mxfp4_k=2880) - tc_skinny_shared_bytes(1, 8) == 16 * 90 + 16
