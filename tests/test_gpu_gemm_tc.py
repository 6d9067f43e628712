"""gemm_tc kernels (BF16 tensor cores, exact split) against float64 numpy products on odd shapes.

Error measure: |y - ref| / (|A| @ |W|^T), the row-column sum of absolute products, so a bound holds
whatever the cancellation. pieces=3 must be FP32-accurate (<= 1e-6 relative, <= 5e-5 absolute on
matvec-scale inputs, the project's matvec tolerance); pieces=1 only BF16-accurate (<= 1e-2), and
measurably worse than pieces=3 on heavy-tailed activations.
"""

from __future__ import annotations

import numpy as np
import pytest

from cupy_getp.bf16 import bf16_to_f32, f32_to_bf16
from cupy_getp.gpu.launch.gemm_tc import DENSE_TILES, TC_BLOCK_M, pieces_lda, tc_shared_bytes, tensor_cores_supported
from cupy_getp.gpu.launch.moe import moe_align_host
from batch_fakes import expected
from gpu_helpers import host, poisoned
from kernel_oracles import joined
from gpu_helpers import to_device as dev

EXACT_REL, EXACT_ABS = 1e-6, 5e-5
BF16_REL = 1e-2
LIMIT = 7.0

def group_pairs(experts, n_experts: int, block_m: int = TC_BLOCK_M):
    """(pair_of_padded, tile_expert) of `moe_align_host` (the moe family's contract)."""
    pair_of_padded, _, tile_expert = moe_align_host(experts, n_experts, block_m)
    return pair_of_padded, tile_expert


@pytest.fixture
def gpu(gpu):
    """conftest's (Device, Kernels), where the tensor-core kernels may run, on the mma.sync / MFMA kernels
    (kernels/gemm_tc.hip) even where the wgmma ones would be chosen (tests/test_gpu_gemm_wgmma.py)."""
    if not tensor_cores_supported(gpu[0]):
        pytest.skip(f"no tensor-core path on {gpu[0].describe()}")
    wgmma, gpu[1].wgmma = gpu[1].wgmma, False
    yield gpu
    gpu[1].wgmma = wgmma


def activations(rng, shape, heavy: bool) -> np.ndarray:
    """Standard normal, or heavy-tailed (magnitudes over ~6 decades) so BF16 rounding of x shows."""
    x = rng.standard_normal(shape)
    if heavy:
        x *= np.exp(2.0 * rng.standard_normal(shape))
    return x.astype(np.float32)


def bf16_weights(rng, shape) -> np.ndarray:
    """bf16 bits of N(0, 1/K) weights: outputs O(1) for normal activations (matvec-scale)."""
    return f32_to_bf16((rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32))


def product(a: np.ndarray, w_bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 a @ w^T and |a| @ |w|^T."""
    a64, w64 = a.astype(np.float64), bf16_to_f32(w_bits).astype(np.float64)
    return a64 @ w64.T, np.abs(a64) @ np.abs(w64).T


def relative(got: np.ndarray, want: np.ndarray, scale: np.ndarray) -> float:
    return float(np.max(np.abs(got - want) / np.maximum(scale, 1e-30), initial=0.0))


def assert_accurate(got, want, scale, pieces: int, exact_abs: bool = True) -> None:
    assert np.all(np.isfinite(got))
    if pieces == 3:
        assert relative(got, want, scale) <= EXACT_REL
        if exact_abs:
            assert np.max(np.abs(got - want), initial=0.0) <= EXACT_ABS
    else:
        assert relative(got, want, scale) <= BF16_REL


def choose_experts(rng, rows: int, k: int, n_experts: int, used: int) -> np.ndarray:
    """(rows, k) distinct experts per row, drawn from the first `used` experts only (the rest get none)."""
    return np.stack([rng.permutation(used)[:k] for _ in range(rows)]).astype(np.int32)


def split(kernels, a, pieces: int):
    """a's BF16 pieces on the device (split_pieces)."""
    import cupy

    ap = cupy.full((pieces, a.shape[0], pieces_lda(a.shape[1])), 0xFFFF, np.uint16)  # NaN bits: all rewritten
    kernels.split_pieces(ap, a)
    return ap


def dense_product(kernels, tile, c, a, w, bias=None, accumulate=False, pieces=3):
    """c = a @ w^T (+ bias) (+ c) on a's pieces, with this tile shape."""
    kernels.gemm_tc(c, split(kernels, a, pieces), w, bias, accumulate, tile=tile)


TILES = list(DENSE_TILES)


# -- split ---------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("pieces", [3, 1])
@pytest.mark.parametrize("m, k", [(1, 2880), (5, 13), (64, 4096)])
def test_split_pieces(gpu, rng, pieces, m, k):
    """Each piece is the RNE BF16 of what the pieces before it left (exact FP32 differences); columns past
    K are zeros; three pieces add up to x within 2^-24 |x|, one piece is bf16(x)."""
    a = activations(rng, (m, k), heavy=True)
    a[0, :3] = [np.inf, -0.0, np.nan] if k >= 3 else a[0, :3]
    got = host(split(gpu[1], dev(a), pieces), gpu)
    want, _ = expected("split_pieces", np.full_like(got, 0xFFFF), a)  # the oracle: RNE of each remainder
    np.testing.assert_array_equal(got, want)
    assert np.all(got[:, :, k:] == 0)
    finite = np.isfinite(a)
    total = sum(bf16_to_f32(got[p, :, :k]).astype(np.float64) for p in range(pieces))
    bound = (2.0 ** -24 if pieces == 3 else 2.0 ** -8) * np.abs(a[finite])
    assert np.all(np.abs(total[finite] - a[finite]) <= bound)


# -- dense ---------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("tile", TILES, ids=str)
@pytest.mark.parametrize("pieces", [3, 1])
@pytest.mark.parametrize("m, k, n, bias, accumulate", [
    (1, 2880, 37, False, False), (7, 100, 5760, True, False), (64, 33, 130, False, True),
    (333, 2880, 300, True, True), (129, 16, 128, True, False), (2, 7, 3, False, False),
    (333, 2880, 5760, False, False),
])
def test_gemm_tc(gpu, rng, tile, pieces, m, k, n, bias, accumulate):
    check_dense(gpu, rng, m, k, n, bias, accumulate, pieces, tile)


def check_dense(gpu, rng, m: int, k: int, n: int, bias: bool, accumulate: bool, pieces: int, tile) -> None:
    """gemm_tc with this tile on random operands (bias, accumulation into c as asked) against float64."""
    a = activations(rng, (m, k), heavy=False)
    w = bf16_weights(rng, (n, k))
    b = rng.standard_normal(n).astype(np.float32) if bias else None
    c0 = rng.standard_normal((m, n)).astype(np.float32)
    c = dev(c0) if accumulate else poisoned((m, n))
    dense_product(gpu[1], tile, c, dev(a), dev(w), dev(b) if bias else None, accumulate, pieces)
    want, scale = product(a, w)
    for term in ([b] if bias else []) + ([c0] if accumulate else []):  # added in FP32 after the product
        want, scale = want + term, scale + np.abs(term)
    assert_accurate(host(c, gpu), want, scale, pieces)


@pytest.mark.gpu
def test_split_of_an_unaligned_view_uses_the_scalar_path(gpu, rng):
    """A view 4 bytes into an allocation (K = 2880 would otherwise take 16-byte loads) must be right."""
    m, k, n = 9, 2880, 70
    a = activations(rng, (m, k), heavy=False)
    w = bf16_weights(rng, (n, k))
    ad = dev(np.concatenate([[0.0], a.reshape(-1)]).astype(np.float32))[1:].reshape(m, k)
    c = poisoned((m, n))
    gpu[1].gemm_tc(c, split(gpu[1], ad, 3), dev(w))
    assert_accurate(host(c, gpu), *product(a, w), pieces=3)


@pytest.mark.gpu
def test_misaligned_or_misshapen_pieces_are_refused(gpu, rng):
    import cupy

    w, c = dev(bf16_weights(rng, (8, 16))), poisoned((2, 8))
    flat = cupy.zeros(3 * 2 * 16 + 1, np.uint16)
    with pytest.raises(ValueError, match="16-byte boundary"):
        gpu[1].gemm_tc(c, flat[1:].reshape(3, 2, 16), w)
    with pytest.raises(ValueError, match="expected"):
        gpu[1].gemm_tc(c, flat[:2 * 2 * 16].reshape(2, 2, 16), w)  # 2 pieces


@pytest.mark.gpu
@pytest.mark.parametrize("pieces", [3, 1])
@pytest.mark.parametrize("m, k, n", [(333, 2880, 5760), (7, 100, 130), (129, 4096, 2880)])
def test_every_tile_gives_the_same_bits(gpu, rng, pieces, m, k, n):
    """Each output adds the same products in the same order whatever the tile: a row's result does not
    depend on the step's size (the engine picks tiles by M)."""
    a, w = dev(activations(rng, (m, k), heavy=True)), dev(bf16_weights(rng, (n, k)))
    outputs = []
    for tile in TILES:
        c = poisoned((m, n))
        dense_product(gpu[1], tile, c, a, w, pieces=pieces)
        outputs.append(host(c, gpu))
    for got in outputs[1:]:
        np.testing.assert_array_equal(got, outputs[0])


@pytest.mark.gpu
@pytest.mark.parametrize("tile", TILES[::2], ids=str)
@pytest.mark.parametrize("m, k, n", [(64, 2880, 256), (333, 1000, 77)])
def test_split_matters_on_heavy_tailed_activations(gpu, rng, tile, m, k, n):
    """pieces=3 is FP32-accurate where pieces=1 (plain BF16 activations) is not."""
    a = activations(rng, (m, k), heavy=True)
    w = bf16_weights(rng, (n, k))
    want, scale = product(a, w)
    errors = {}
    for pieces in (1, 3):
        c = poisoned((m, n))
        dense_product(gpu[1], tile, c, dev(a), dev(w), pieces=pieces)
        got = host(c, gpu)
        assert_accurate(got, want, scale, pieces, exact_abs=False)
        errors[pieces] = relative(got, want, scale)
    assert errors[1] > 1e-5 and errors[1] > 30 * errors[3], errors


# -- grouped MoE ---------------------------------------------------------------------------------------
def swiglu64(m: np.ndarray, limit: float) -> np.ndarray:
    gate, up = np.minimum(m[..., 0::2], limit), np.clip(m[..., 1::2], -limit, limit)
    with np.errstate(over="ignore"):
        return gate / (1.0 + np.exp(-1.702 * gate)) * (up + 1.0)


GROUPED = [  # rows R, k, experts E, experts that get rows, H, I
    (7, 2, 5, 4, 100, 37),       # odd sizes, one expert without rows
    (1, 4, 32, 32, 2880, 300),    # one row: four tiles of one pair each
    (130, 1, 3, 1, 33, 64),       # every row on one expert: three tiles of it, two experts empty
    (333, 4, 8, 6, 2880, 192),    # many rows, realistic K
    (40, 3, 6, 5, 64, 2880),      # mlp2 with K = I = 2880
]


def grouped_case(rng, rows: int, k: int, n_experts: int, used: int, n_out: int, k_in: int,
                 block_m: int = TC_BLOCK_M):
    """Routing of `rows` rows to `used` of the experts in tiles of block_m (pair_of_padded, tile_expert) and
    expert weights (E, n_out, k_in) bf16 with biases (E, n_out)."""
    pair_of_padded, tile_expert = group_pairs(choose_experts(rng, rows, k, n_experts, used), n_experts, block_m)
    w = bf16_weights(rng, (n_experts, n_out, k_in))
    return pair_of_padded, tile_expert, w, rng.standard_normal((n_experts, n_out)).astype(np.float32)


@pytest.mark.gpu
@pytest.mark.parametrize("pieces", [3, 1])
@pytest.mark.parametrize("rows, k, n_experts, used, hidden, inter", GROUPED)
def test_gemm_tc_grouped_swiglu(gpu, rng, pieces, rows, k, n_experts, used, hidden, inter):
    check_grouped_swiglu(gpu, rng, pieces, rows, k, n_experts, used, hidden, inter, TC_BLOCK_M)


def check_grouped_swiglu(gpu, rng, pieces: int, rows: int, k: int, n_experts: int, used: int, hidden: int,
                         inter: int, block_m: int) -> None:
    """gemm_tc_grouped_swiglu on a random routing in tiles of block_m: g comes out as its pieces (what mlp2
    reads), checked by assert_swiglu_pieces."""
    import cupy

    pair_of_padded, tile_expert, w1, b1 = grouped_case(rng, rows, k, n_experts, used, 2 * inter, hidden, block_m)
    a = activations(rng, (rows, hidden), heavy=False)
    gp = cupy.full((pieces, pair_of_padded.size, pieces_lda(inter)), 0xFFFF, np.uint16)  # NaN bits
    gpu[1].gemm_tc_grouped_swiglu(gp, split(gpu[1], dev(a), pieces), dev(pair_of_padded), dev(tile_expert), dev(w1),
                                  dev(b1), k, LIMIT)
    assert_swiglu_pieces(host(gp, gpu), a, pair_of_padded, tile_expert, block_m, w1, b1, k, inter, pieces)


def assert_swiglu_pieces(bits, a, pair_of_padded, tile_expert, block_m: int, w1, b1, k: int, inter: int,
                         pieces: int) -> None:
    """gemm_tc_grouped_swiglu's output g, as pieces (what mlp2 reads): their sum against float64, the zero
    padding after I, pads never written."""
    got = joined(bits, inter)
    valid = pair_of_padded >= 0
    assert np.all(bits[:, valid, inter:] == 0)
    assert np.all(np.isnan(got[~valid]))  # pads never written
    worst = 0.0
    for p in np.flatnonzero(valid):
        e = tile_expert[p // block_m]
        m, scale = product(a[pair_of_padded[p] // k][None], w1[e])
        m, scale = m[0] + b1[e], scale[0]
        want = swiglu64(m, LIMIT)
        # |d g / d gate| <= 1.1 (|up| + 1), |d g / d up| <= |gate|: the error of m carried through SwiGLU,
        # plus the FP32 rounding of SwiGLU itself
        gate, up = np.minimum(m[0::2], LIMIT), np.clip(m[1::2], -LIMIT, LIMIT)
        bound = 1.1 * (np.abs(up) + 1) * scale[0::2] + (np.abs(gate) + 1) * scale[1::2] + np.abs(want)
        worst = max(worst, relative(got[p], want, bound))
        if pieces == 3:  # SwiGLU reaches |g| ~ 8 limit: the matvec tolerance, relative above 1
            assert np.all(np.abs(got[p] - want) <= EXACT_ABS * np.maximum(1.0, np.abs(want)))
    assert worst <= (EXACT_REL if pieces == 3 else BF16_REL)


@pytest.mark.gpu
@pytest.mark.parametrize("pieces", [3, 1])
@pytest.mark.parametrize("rows, k, n_experts, used, hidden, inter", GROUPED)
def test_gemm_tc_grouped(gpu, rng, pieces, rows, k, n_experts, used, hidden, inter):
    check_grouped(gpu, rng, pieces, rows, k, n_experts, used, hidden, inter, TC_BLOCK_M)


def check_grouped(gpu, rng, pieces: int, rows: int, k: int, n_experts: int, used: int, hidden: int, inter: int,
                  block_m: int) -> None:
    """gemm_tc_grouped on a random routing in tiles of block_m, pad rows of g NaN, checked by
    assert_grouped_outputs."""
    pair_of_padded, tile_expert, w2, b2 = grouped_case(rng, rows, k, n_experts, used, hidden, inter, block_m)
    valid = pair_of_padded >= 0
    g = activations(rng, (pair_of_padded.size, inter), heavy=False)
    g[~valid] = np.nan  # pad rows of g must not be read into valid rows
    y = poisoned((pair_of_padded.size, hidden))
    gpu[1].gemm_tc_grouped(y, split(gpu[1], dev(g), pieces), dev(pair_of_padded), dev(tile_expert), dev(w2), dev(b2))
    assert_grouped_outputs(host(y, gpu), g, pair_of_padded, tile_expert, block_m, w2, b2, pieces)


def assert_grouped_outputs(got, g, pair_of_padded, tile_expert, block_m: int, w2, b2, pieces: int) -> None:
    """gemm_tc_grouped's y against float64 per expert; pad rows never written."""
    valid = pair_of_padded >= 0
    assert np.all(np.isnan(got[~valid]))
    for e in range(tile_expert.max(initial=-1) + 1):
        rows_e = np.flatnonzero(valid & (np.repeat(tile_expert, block_m) == e))
        if rows_e.size:
            want, scale = product(g[rows_e], w2[e])
            assert_accurate(got[rows_e], want + b2[e], scale, pieces)


# -- host side (no GPU) ----------------------------------------------------------------------------------
class FakeDevice:
    def __init__(self, arch: str, is_hip: bool = False):
        self.arch, self.is_hip = arch, is_hip


def test_tensor_cores_supported_by_arch(monkeypatch):
    assert tensor_cores_supported(FakeDevice("sm_80")) and tensor_cores_supported(FakeDevice("sm_90"))
    assert tensor_cores_supported(FakeDevice("sm_120"))
    assert not tensor_cores_supported(FakeDevice("sm_75")) and not tensor_cores_supported(FakeDevice("sm_70"))
    monkeypatch.delenv("CUPY_GETP_ROCM_MFMA", raising=False)
    assert not tensor_cores_supported(FakeDevice("gfx90a:sramecc+:xnack-", is_hip=True))
    monkeypatch.setenv("CUPY_GETP_ROCM_MFMA", "1")
    assert tensor_cores_supported(FakeDevice("gfx90a:sramecc+:xnack-", is_hip=True))
    assert not tensor_cores_supported(FakeDevice("gfx1100", is_hip=True))


def test_dense_tile_choice_follows_the_measured_costs():
    """At the 20b shapes on 132 SMs, 64 x 128 (the fastest measured at 512 rows, bench/RESULTS.md); at few
    rows the tile that makes the most blocks; on ROCm only 64-row tiles."""
    from cupy_getp.gpu.launch.gemm_tc import TensorCoreGemmLaunches

    class Launches(TensorCoreGemmLaunches):
        def __init__(self, device):
            self.device, self._sm_count = device, 132

    cuda, rocm = Launches(FakeDevice("sm_90")), Launches(FakeDevice("gfx90a", is_hip=True))
    for n in (5760, 5120, 2880, 201088):
        assert cuda.tc_dense_tile(512, n) == (64, 128), n
    assert cuda.tc_dense_tile(64, 2880) == (64, 64)  # 45 blocks of 64 x 128 would leave 87 SMs idle
    assert cuda.tc_dense_tile(4096, 201088) == (64, 128)  # 128 x 128 cost 1.34x per output, as measured
    assert all(rocm.tc_dense_tile(m, n)[0] == 64 for m in (64, 512, 4096) for n in (2880, 201088))


def test_shared_memory_fits():
    """CUDA: four stages within the 227 KiB a block may opt into (two blocks a SM at 64 rows); ROCm: two
    stages of 64-row tiles within gfx90a's 64 KiB."""
    assert tc_shared_bytes(3, 128, 128, is_hip=False) <= 227 * 1024
    assert 2 * tc_shared_bytes(3, 64, 128, is_hip=False) <= 227 * 1024
    assert tc_shared_bytes(3, TC_BLOCK_M, 128, is_hip=True) <= 64 * 1024
    assert pieces_lda(2880) == 2880 and pieces_lda(13) == 16


def test_group_pairs_helper():
    experts = np.array([[2, 0], [2, 1], [0, 2]], np.int32)
    pair_of_padded, tile_expert = group_pairs(experts, 4, block_m=2)
    assert pair_of_padded.size == 2 * -(-(6 + 4) // 2)
    assert list(pair_of_padded[:8]) == [1, 4, 3, -1, 0, 2, 5, -1]
    assert list(tile_expert) == [0, 1, 2, 2, -1]
