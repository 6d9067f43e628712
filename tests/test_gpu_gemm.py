"""kernels/gemm.hip against its oracles (tests/kernel_oracles.py: float64 products, rounded once): dense f32 /
bf16-weight products (bias, accumulate, unaligned views, odd shapes) and the grouped MoE products (mlp1 +
SwiGLU, mlp2) over expert-sorted padded positions.
Tolerance: the project's matvec tolerance, 5e-5 max abs diff, O(1) activations, weights ~ 1/sqrt(K).

The launch helpers' kernel and grid choice is also checked here without a GPU (a recording stand-in)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from cupy_getp.bf16 import bf16_to_f32, f32_to_bf16
from cupy_getp.gpu.launch.common import Mxfp4Matrix
from cupy_getp.gpu.launch.gemm import GROUPED_BLOCK_M, GemmLaunches
from cupy_getp.gpu.launch.moe import moe_align_host
from batch_fakes import expected
from gpu_helpers import host, poisoned, to_device

TOL = 5e-5
gpu_test = pytest.mark.gpu

def moe_align(experts, n_experts: int, block_m: int):
    """(pair_of_padded, tile_expert) of `moe_align_host` (the moe family's contract)."""
    pair_of_padded, _, tile_expert = moe_align_host(experts, n_experts, block_m)
    return pair_of_padded, tile_expert


def weights(rng, shape, bf16: bool):
    """Weights ~ N(0, 1/K) (K = last axis): (what the kernel gets, the float32 values it sees). Made one
    leading-axis slice at a time to bound host memory at the expert shapes."""
    out = np.empty(shape, np.uint16 if bf16 else np.float32)
    for part in out if out.ndim == 3 else out[None]:  # views into out
        w = rng.standard_normal(part.shape, dtype=np.float32) / np.float32(np.sqrt(shape[-1]))
        part[...] = f32_to_bf16(w) if bf16 else w
    return out, (bf16_to_f32(out) if bf16 else out)


def routing(rng, kind: str, rows: int, k: int, n_experts: int) -> np.ndarray:
    """(rows, k) distinct experts per row: random, all pairs on a few experts (others empty), or one expert."""
    if kind == "one":  # every row's first slot is expert E - 1 (one expert with many tiles), the rest spread
        experts = np.stack([rng.permutation(n_experts - 1)[:k] for _ in range(rows)]).astype(np.int32)
        experts[:, 0] = n_experts - 1
        return experts
    pool = n_experts if kind == "random" else min(n_experts, k + 1)  # "few": experts >= k + 1 get nothing
    return np.stack([rng.permutation(pool)[:k] for _ in range(rows)]).astype(np.int32)


# -- dense ---------------------------------------------------------------------------------------------------
@gpu_test
@pytest.mark.parametrize("m", [1, 7, 16, 17, 64, 333])
@pytest.mark.parametrize("k, n", [(19, 3), (1000, 257), (2880, 133)])
@pytest.mark.parametrize("bf16", [False, True], ids=["f32w", "bf16w"])
@pytest.mark.parametrize("epilogue", ["plain", "bias", "bias+accumulate"])
def test_gemm(gpu, rng, m, k, n, bf16, epilogue):
    a = rng.standard_normal((m, k), dtype=np.float32)
    w, w_val = weights(rng, (n, k), bf16)
    bias = rng.standard_normal(n, dtype=np.float32) if epilogue != "plain" else None
    accumulate = epilogue.endswith("accumulate")
    old = rng.standard_normal((m, n), dtype=np.float32)
    c = to_device(old) if accumulate else poisoned((m, n))
    want, *_ = expected("gemm", old if accumulate else np.zeros((m, n), np.float32), a, w, bias, accumulate=accumulate)
    gpu[1].gemm(c, to_device(a), to_device(w), None if bias is None else to_device(bias), accumulate=accumulate)
    assert np.max(np.abs(host(c, gpu) - want)) <= TOL


@gpu_test
@pytest.mark.parametrize("m", [1, 9, 100])
@pytest.mark.parametrize("bf16", [False, True], ids=["f32w", "bf16w"])
@pytest.mark.parametrize("which", ["a", "w", "bias"])
def test_gemm_unaligned_views(gpu, rng, m, bf16, which):
    """Views 4 bytes past alignment (K a multiple of 8): the scalar-load fallback."""
    k, n = 2880, 77
    a = rng.standard_normal((m, k), dtype=np.float32)
    w, w_val = weights(rng, (n, k), bf16)
    bias = rng.standard_normal(n, dtype=np.float32)
    c = poisoned((m, n))
    gpu[1].gemm(c, to_device(a, 4 * (which == "a")), to_device(w, 4 * (which == "w")),
                to_device(bias, 4 * (which == "bias")))
    assert np.max(np.abs(host(c, gpu) - (a.astype(np.float64) @ w_val.astype(np.float64).T + bias))) <= TOL


@gpu_test
def test_gemm_qkv_shape(gpu, rng):
    m, k, n = 64, 2880, 5120
    a = rng.standard_normal((m, k), dtype=np.float32)
    w, w_val = weights(rng, (n, k), False)
    c = poisoned((m, n))
    gpu[1].gemm(c, to_device(a), to_device(w))
    assert np.max(np.abs(host(c, gpu) - a.astype(np.float64) @ w_val.T)) <= TOL


# -- grouped -------------------------------------------------------------------------------------------------
def grouped_case(rng, rows, k, n_experts, hidden, inter, kind, block_m):
    experts = routing(rng, kind, rows, k, n_experts)
    pair_of_padded, tile_expert = moe_align(experts, n_experts, block_m)
    return experts, pair_of_padded, tile_expert


GROUPED_SHAPES = [  # rows, k, E, H, I, routing
    (1, 4, 32, 40, 24, "random"),
    (37, 3, 7, 100, 45, "random"),
    (37, 3, 7, 100, 45, "few"),
    (70, 2, 5, 64, 64, "one"),
    (5, 2, 4, 19, 33, "few"),
]


@gpu_test
@pytest.mark.parametrize("block_m", GROUPED_BLOCK_M)
@pytest.mark.parametrize("rows, k, n_experts, hidden, inter, kind", GROUPED_SHAPES)
def test_gemm_grouped_swiglu(gpu, rng, block_m, rows, k, n_experts, hidden, inter, kind, limit=1.5):
    check_grouped_swiglu(gpu, rng, block_m, rows, k, n_experts, hidden, inter, kind, limit)


def check_grouped_swiglu(gpu, rng, block_m, rows, k, n_experts, hidden, inter, kind, limit):
    _, pair_of_padded, tile_expert = grouped_case(rng, rows, k, n_experts, hidden, inter, kind, block_m)
    a = rng.standard_normal((rows, hidden), dtype=np.float32)
    w1, w1_val = weights(rng, (n_experts, 2 * inter, hidden), True)
    b1 = rng.standard_normal((n_experts, 2 * inter), dtype=np.float32)
    g = poisoned((pair_of_padded.size, inter))
    gpu[1].gemm_grouped_swiglu(g, to_device(a), to_device(pair_of_padded), to_device(tile_expert), to_device(w1),
                               to_device(b1), k, limit, block_m)
    got = host(g, gpu)
    want, *_ = expected("gemm_grouped_swiglu", g, a, pair_of_padded, tile_expert, w1, b1, k, limit, block_m)
    pads = pair_of_padded < 0
    assert np.isnan(got[pads]).all() and np.isnan(want[pads]).all(), "pad positions were written"
    assert np.max(np.abs(got[~pads] - want[~pads]), initial=0.0) <= TOL


@gpu_test
@pytest.mark.parametrize("block_m", GROUPED_BLOCK_M)
@pytest.mark.parametrize("rows, k, n_experts, hidden, inter, kind", GROUPED_SHAPES)
def test_gemm_grouped(gpu, rng, block_m, rows, k, n_experts, hidden, inter, kind):
    check_grouped(gpu, rng, block_m, rows, k, n_experts, hidden, inter, kind)


def check_grouped(gpu, rng, block_m, rows, k, n_experts, hidden, inter, kind):
    _, pair_of_padded, tile_expert = grouped_case(rng, rows, k, n_experts, hidden, inter, kind, block_m)
    pads = pair_of_padded < 0
    g = rng.standard_normal((pair_of_padded.size, inter), dtype=np.float32)
    g[pads] = np.nan  # pad rows must not be read
    w2, w2_val = weights(rng, (n_experts, hidden, inter), True)
    b2 = rng.standard_normal((n_experts, hidden), dtype=np.float32)
    y = poisoned((pair_of_padded.size, hidden))
    gpu[1].gemm_grouped(y, to_device(g), to_device(pair_of_padded), to_device(tile_expert), to_device(w2),
                        to_device(b2), block_m)
    got = host(y, gpu)
    want, *_ = expected("gemm_grouped", y, g, pair_of_padded, tile_expert, w2, b2, block_m)
    assert np.isnan(got[pads]).all(), "pad positions were written"
    assert np.max(np.abs(got[~pads] - want[~pads]), initial=0.0) <= TOL


@gpu_test
@pytest.mark.parametrize("block_m", GROUPED_BLOCK_M)
def test_gemm_grouped_realistic(gpu, rng, block_m):
    """The 20b expert shapes: R = 96 rows, k = 4, E = 32, H = I = 2880. Limit 1.5 as test_moe_kernels: with 7,
    outputs reach ~50 and float32 rounding of the SwiGLU alone nears the absolute tolerance."""
    check_grouped_swiglu(gpu, rng, block_m, 96, 4, 32, 2880, 2880, "random", 1.5)
    check_grouped(gpu, rng, block_m, 96, 4, 32, 2880, 2880, "random")


# -- launch helpers without a GPU: kernel and grid from shapes ------------------------------------------------
class FakeArray:
    def __init__(self, shape, dtype, ptr: int = 1 << 20):
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.ndim = len(self.shape)
        self.flags = SimpleNamespace(c_contiguous=True)
        self.data = SimpleNamespace(ptr=ptr)


class Recorder(GemmLaunches):
    def __init__(self, warps_per_block: int):
        self.warps_per_block = warps_per_block
        self.launches = []

    def _launch(self, name, grid, block, args):
        self.launches.append((name, grid, block, args))


@pytest.mark.parametrize("warps", [8, 4])
def test_gemm_helper_picks_kernel_and_grid(warps):
    rec = Recorder(warps)
    f32, bf16 = np.float32, np.uint16
    rec.gemm(FakeArray((7, 2880), f32), FakeArray((7, 2880), f32), FakeArray((2880, 2880), bf16), None)
    rec.gemm(FakeArray((333, 5121), f32), FakeArray((333, 2879), f32), FakeArray((5121, 2879), f32),
             FakeArray((5121,), f32), accumulate=True)
    (n1, g1, b1, args1), (n2, g2, b2, args2) = rec.launches
    assert (n1, g1, b1) == ("gemm_bf16w_skinny", (1, -(-2880 // (2 * warps))), (256,))
    assert (n2, g2, b2) == ("gemm_f32w_tiled", (41, 6), (256,))
    assert args1[-1] == 1 and args2[-1] == 0  # vec: K % 8 == 0 and aligned; K odd
    assert all(isinstance(x, (np.int32, np.float32)) for x in args2[4:])


@pytest.mark.parametrize("block_m", GROUPED_BLOCK_M)
def test_grouped_helpers_grid_from_shapes(block_m):
    rec = Recorder(8)
    p, e, h, i, r, k = 8 * 64, 32, 2880, 2880, 64, 4
    rec.gemm_grouped_swiglu(FakeArray((p, i), np.float32), FakeArray((r, h), np.float32),
                            FakeArray((p,), np.int32), FakeArray((p // block_m,), np.int32),
                            FakeArray((e, 2 * i, h), np.uint16), FakeArray((e, 2 * i), np.float32), k, 7.0, block_m)
    rec.gemm_grouped(FakeArray((p, h), np.float32), FakeArray((p, i), np.float32), FakeArray((p,), np.int32),
                     FakeArray((p // block_m,), np.int32), FakeArray((e, h, i), np.uint16),
                     FakeArray((e, h), np.float32), block_m)
    (n1, g1, _, a1), (n2, g2, _, _) = rec.launches
    if block_m == 8:
        assert (n1, g1) == ("gemm_grouped_swiglu_skinny", (4, 2 * i // 16))
        assert (n2, g2) == ("gemm_grouped_skinny", (4, h // 16))
    else:
        assert (n1, g1) == ("gemm_grouped_swiglu_tiled", (2 * i // 128, p // 64))
        assert (n2, g2) == ("gemm_grouped_tiled", (-(-h // 128), p // 64))
    assert isinstance(a1[-2], np.float32) and isinstance(a1[-3], np.int32)


def test_grouped_helpers_reject_unsupported_block_m():
    rec = Recorder(8)
    with pytest.raises(ValueError, match="block_m"):
        rec.gemm_grouped(FakeArray((96, 8), np.float32), FakeArray((96, 8), np.float32), FakeArray((96,), np.int32),
                         FakeArray((3,), np.int32), FakeArray((2, 8, 8), np.uint16), FakeArray((2, 8), np.float32), 32)


def test_gemm_entry_points_are_the_helpers_kernels():
    """kernels.ENTRY_POINTS["gemm"] is exactly what the helpers launch: every dense and grouped shape."""
    from cupy_getp.gpu.kernels import ENTRY_POINTS

    rec = Recorder(8)
    for m in (1, 100):
        for dtype in (np.float32, np.uint16):
            rec.gemm(FakeArray((m, 64), np.float32), FakeArray((m, 64), np.float32), FakeArray((64, 64), dtype))
    for block_m in GROUPED_BLOCK_M:
        p = 2 * block_m
        for w1, w2 in ((FakeArray((2, 16, 32), np.uint16), FakeArray((2, 32, 8), np.uint16)),
                       (Mxfp4Matrix(FakeArray((2, 16, 1, 16), np.uint8), FakeArray((2, 16, 1), np.uint8), 32),
                        Mxfp4Matrix(FakeArray((2, 32, 1, 16), np.uint8), FakeArray((2, 32, 1), np.uint8), 8))):
            rec.gemm_grouped_swiglu(FakeArray((p, 8), np.float32), FakeArray((4, 32), np.float32),
                                    FakeArray((p,), np.int32), FakeArray((2,), np.int32), w1,
                                    FakeArray((2, 16), np.float32), 2, 7.0, block_m)
            rec.gemm_grouped(FakeArray((p, 32), np.float32), FakeArray((p, 8), np.float32), FakeArray((p,), np.int32),
                             FakeArray((2,), np.int32), w2, FakeArray((2, 32), np.float32), block_m)
    assert {name for name, *_ in rec.launches} == set(ENTRY_POINTS["gemm"])
