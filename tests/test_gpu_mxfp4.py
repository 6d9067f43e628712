"""MXFP4 expert storage on the device: the grouped products with MXFP4 experts (the mxfp4w entry points of
kernels/gemm.hip, gemm_tc.hip and gemm_wgmma.hip) give the bf16 kernels' results on the same values bit for
bit, pad positions unwritten; the CUDA-core ones also the oracle's within the matvec tolerance. (The one-row
kernels and the widening itself: test_gpu_kernels.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from cupy_getp.bf16 import f32_to_bf16
from cupy_getp.gpu.launch.common import Mxfp4Matrix
from cupy_getp.gpu.launch.gemm import GROUPED_BLOCK_M
from cupy_getp.gpu.constants import TC_BLOCK_M
from cupy_getp.gpu.launch.gemm_tc import WG_GROUPED_ROWS, tensor_cores_supported

from batch_fakes import expected
from gpu_helpers import host, poisoned, random_mxfp4_matrix, to_device
from kernel_oracles import widened
from test_gpu_gemm import GROUPED_SHAPES, TOL, grouped_case
from test_gpu_gemm_tc import activations, choose_experts, group_pairs, split

pytestmark = pytest.mark.gpu


def stored(mx, cols, bits=None):
    """{storage: device weights} of one expert matrix: its MXFP4 blocks and scales, and their BF16 values (`bits`,
    where the caller has widened them already: at the 20b shape that takes longer than the products)."""
    bits = f32_to_bf16(widened(*mx, cols)) if bits is None else bits
    return {"bf16": to_device(bits), "mxfp4": Mxfp4Matrix(to_device(mx[0]), to_device(mx[1]), cols)}


@pytest.mark.parametrize("block_m", GROUPED_BLOCK_M)
@pytest.mark.parametrize("rows, k, n_experts, hidden, inter, kind",
                         [*GROUPED_SHAPES, (96, 4, 32, 2880, 2880, "random")])  # the last: the 20b shape
def test_grouped_products_with_mxfp4_experts_equal_bf16(gpu, rng, block_m, rows, k, n_experts, hidden, inter, kind):
    _, pair_of_padded, tile_expert = grouped_case(rng, rows, k, n_experts, hidden, inter, kind, block_m)
    a = to_device(rng.standard_normal((rows, hidden), dtype=np.float32))
    mx1 = random_mxfp4_matrix(rng, (n_experts, 2 * inter, hidden))
    mx2 = random_mxfp4_matrix(rng, (n_experts, hidden, inter))
    b1 = to_device(rng.standard_normal((n_experts, 2 * inter), dtype=np.float32))
    b2 = to_device(rng.standard_normal((n_experts, hidden), dtype=np.float32))
    pairs, tiles = to_device(pair_of_padded), to_device(tile_expert)
    w1_bits = f32_to_bf16(widened(*mx1, hidden))
    w1s, w2s = stored(mx1, hidden, w1_bits), stored(mx2, inter)
    got = {}
    for storage in ("bf16", "mxfp4"):
        w1, w2 = w1s[storage], w2s[storage]
        g, y = poisoned((pair_of_padded.size, inter)), poisoned((pair_of_padded.size, hidden))
        gpu[1].gemm_grouped_swiglu(g, a, pairs, tiles, w1, b1, k, 1.5, block_m)
        gpu[1].gemm_grouped(y, g, pairs, tiles, w2, b2, block_m)
        got[storage] = host(g, gpu), host(y, gpu)
    for name, bf16, mxfp4 in zip(("g", "y"), got["bf16"], got["mxfp4"]):
        np.testing.assert_array_equal(bf16.view(np.uint32), mxfp4.view(np.uint32), err_msg=name)  # pads: NaN both
    g = got["mxfp4"][0]
    want, *_ = expected("gemm_grouped_swiglu", poisoned(g.shape), host(a, gpu), pair_of_padded, tile_expert,
                        w1_bits, host(b1, gpu), k, 1.5, block_m)
    real = pair_of_padded >= 0
    assert np.max(np.abs(g[real] - want[real]), initial=0.0) <= TOL


TC_SHAPES = [  # rows R, k, experts E, experts that get rows, H, I
    (7, 2, 5, 4, 100, 37),       # K not a multiple of 8 or of the 32 of a block: padded MXFP4 rows
    (1, 4, 32, 32, 2880, 300),    # one row
    (333, 4, 32, 30, 2880, 2880),  # the 20b shape, two experts without rows
]


def tc_paths(kernels):
    """(label, use wgmma, tile height) of the tensor-core products this device has."""
    paths = [("mma.sync", False, TC_BLOCK_M)]
    if kernels.wgmma:
        paths += [(f"wgmma {rows}", True, rows) for rows in WG_GROUPED_ROWS]
    return paths


@pytest.mark.parametrize("pieces", [3, 1])
@pytest.mark.parametrize("rows, k, n_experts, used, hidden, inter", TC_SHAPES)
def test_tensor_core_products_with_mxfp4_experts_equal_bf16(gpu, rng, pieces, rows, k, n_experts, used, hidden,
                                                            inter):
    """mlp1 + SwiGLU (its pieces g) and mlp2 on the tensor cores, every kernel this device has: MXFP4
    experts give the bits of BF16 experts holding the same values."""
    if not tensor_cores_supported(gpu[0]):
        pytest.skip(f"no tensor-core path on {gpu[0].describe()}")
    experts = choose_experts(rng, rows, k, n_experts, used)
    ap = split(gpu[1], to_device(activations(rng, (rows, hidden), heavy=True)), pieces)
    mx1 = random_mxfp4_matrix(rng, (n_experts, 2 * inter, hidden))
    mx2 = random_mxfp4_matrix(rng, (n_experts, hidden, inter))
    w1, w2 = stored(mx1, hidden), stored(mx2, inter)
    b1 = to_device(rng.standard_normal((n_experts, 2 * inter), dtype=np.float32))
    b2 = to_device(rng.standard_normal((n_experts, hidden), dtype=np.float32))
    wgmma = gpu[1].wgmma
    try:
        for label, use_wgmma, block_m in tc_paths(gpu[1]):
            gpu[1].wgmma = use_wgmma
            pair_of_padded, tile_expert = group_pairs(experts, n_experts, block_m)
            pairs, tiles = to_device(pair_of_padded), to_device(tile_expert)
            got = {}
            for storage in ("bf16", "mxfp4"):
                gp = split(gpu[1], to_device(np.zeros((pair_of_padded.size, inter), np.float32)), pieces)
                y = poisoned((pair_of_padded.size, hidden))
                gpu[1].gemm_tc_grouped_swiglu(gp, ap, pairs, tiles, w1[storage], b1, k, 7.0)
                gpu[1].gemm_tc_grouped(y, gp, pairs, tiles, w2[storage], b2)
                got[storage] = host(gp, gpu), host(y, gpu)
            (gp_bf16, y_bf16), (gp_mxfp4, y_mxfp4) = got["bf16"], got["mxfp4"]
            np.testing.assert_array_equal(gp_bf16, gp_mxfp4, err_msg=f"{label}: g pieces")  # uint16 bits
            np.testing.assert_array_equal(y_bf16.view(np.uint32), y_mxfp4.view(np.uint32), err_msg=f"{label}: y")
            real = pair_of_padded >= 0
            assert np.isfinite(y_mxfp4[real]).all() and np.isnan(y_mxfp4[~real]).all(), label
    finally:
        gpu[1].wgmma = wgmma
