"""Throughput of the CUDA-core FP32 GEMMs (kernels/gemm.hip) at the 20b engine's shapes, one table.

Dense: QKV (K=2880, N=5120), output projection (K=4096, N=2880), unembedding (K=2880, N=201088, M <= 256),
f32 weights (and bf16 for QKV / output projection), with cuBLAS FP32 (cupy.matmul) alongside on CUDA. Grouped:
MoE mlp1 + SwiGLU (E=32, 2I=5760, H=2880) and mlp2 (H=2880, I=2880) with k=4 random routing of M rows. TFLOP/s
counts useful FLOPs (2 M N K; grouped: 2 M k N K); GB/s counts the weight bytes that must be read (grouped: the
experts that got a row). Times: median of device-event timings after warm-up.

    python bench/gemm.py [--quick]
"""

from __future__ import annotations

import argparse
import time
from cupy_getp.gpu.launch.moe import moe_align_host

import numpy as np

ROWS = (1, 64, 256, 512, 1024)
QUICK_ROWS = (1, 256)
E, K_TOP, HIDDEN, INTER = 32, 4, 2880, 2880

def moe_align(experts, n_experts: int, block_m: int):
    """(pair_of_padded, tile_expert) of `moe_align_host` (the moe family's contract)."""
    pair_of_padded, _, tile_expert = moe_align_host(experts, n_experts, block_m)
    return pair_of_padded, tile_expert


def time_ms(stream, fn, *args, budget_s: float = 0.25) -> float:
    """Median ms of fn(*args) over as many repeats (3 to 50) as fit in about budget_s, after a warm-up."""
    import cupy

    fn(*args)
    stream.synchronize()
    t0 = time.perf_counter()
    fn(*args)
    stream.synchronize()
    once = time.perf_counter() - t0
    times = []
    for _ in range(int(min(50, max(3, budget_s / max(once, 1e-6))))):
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record(stream)
        fn(*args)
        end.record(stream)
        end.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, end))
    return float(np.median(times))


def main() -> None:
    import cupy

    from cupy_getp.gpu.device import Device
    from cupy_getp.gpu.kernels import Kernels
    from cupy_getp.gpu.launch.gemm import GROUPED_BLOCK_M, SKINNY_MAX_M

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="M in (1, 256), no unembedding")
    args = parser.parse_args()
    device = Device.open()
    kernels = Kernels(device)
    stream = device.stream
    rows = QUICK_ROWS if args.quick else ROWS
    rng = cupy.random.default_rng(0)
    host_rng = np.random.default_rng(0)
    is_cuda = not cupy.cuda.runtime.is_hip
    table = []

    def weights(shape, bf16: bool):
        w = rng.standard_normal(shape, dtype=np.float32) / np.float32(np.sqrt(shape[-1]))
        return (w.view(np.uint32) >> 16).astype(np.uint16) if bf16 else w  # bf16 by truncation: timing only

    def cublas(c, a, w):
        cupy.matmul(a, w.T, out=c)

    def row(name, m, shape, ms, flops, nbytes, ref_ms=None):
        table.append((name, m, shape, ms, flops / ms / 1e9, nbytes / ms / 1e6,
                      None if ref_ms is None else flops / ref_ms / 1e9))

    with stream:
        dense = [("qkv", 2880, 5120, (False, True)), ("out_proj", 4096, 2880, (False, True))]
        if not args.quick:
            dense.append(("unembed", 2880, 201088, (False,)))
        for label, k, n, dtypes in dense:
            for bf16 in dtypes:
                w = weights((n, k), bf16)
                for m in rows:
                    if label == "unembed" and m > 256:
                        continue
                    a = rng.standard_normal((m, k), dtype=np.float32)
                    c = cupy.empty((m, n), np.float32)
                    ms = time_ms(stream, kernels.gemm, c, a, w)
                    ref = None
                    if is_cuda and not bf16:
                        ref = time_ms(stream, cublas, c, a, w)
                    kind = ("skinny" if m <= SKINNY_MAX_M else "tiled") + ("/bf16w" if bf16 else "/f32w")
                    row(f"gemm {label} {kind}", m, f"K={k} N={n}", ms, 2 * m * n * k, w.nbytes, ref)

        w1, w2 = weights((E, 2 * INTER, HIDDEN), True), weights((E, HIDDEN, INTER), True)
        b1, b2 = cupy.zeros((E, 2 * INTER), np.float32), cupy.zeros((E, HIDDEN), np.float32)
        for m in rows:
            experts = np.stack([host_rng.permutation(E)[:K_TOP] for _ in range(m)]).astype(np.int32)
            used = len(np.unique(experts))
            small, large = GROUPED_BLOCK_M
            for block_m in [b for b in (small, large) if (b == small and m <= 64) or (b == large and m >= 64)]:
                pair_of_padded, tile_expert = (cupy.asarray(x) for x in moe_align(experts, E, block_m))
                p = pair_of_padded.size
                a = rng.standard_normal((m, HIDDEN), dtype=np.float32)
                g = rng.standard_normal((p, INTER), dtype=np.float32)
                y = cupy.empty((p, HIDDEN), np.float32)
                ms = time_ms(stream, kernels.gemm_grouped_swiglu, g, a, pair_of_padded, tile_expert, w1, b1, K_TOP, 7.0,
                             block_m)
                row(f"grouped mlp1+swiglu bm={block_m}", m, f"E={E} k={K_TOP} 2I={2 * INTER} H={HIDDEN}", ms,
                    2 * m * K_TOP * 2 * INTER * HIDDEN, used * w1[0].nbytes)
                ms = time_ms(stream, kernels.gemm_grouped, y, g, pair_of_padded, tile_expert, w2, b2, block_m)
                row(f"grouped mlp2 bm={block_m}", m, f"E={E} k={K_TOP} H={HIDDEN} I={INTER}", ms,
                    2 * m * K_TOP * HIDDEN * INTER, used * w2[0].nbytes)

    print(device.describe())
    print(f"{'kernel':34} {'M':>5} {'shape':32} {'ms':>9} {'TFLOP/s':>8} {'GB/s':>8} {'cuBLAS TFLOP/s':>14}")
    for name, m, shape, ms, tflops, gbs, ref in table:
        ref_s = "" if ref is None else f"{ref:14.2f}"
        print(f"{name:34} {m:5d} {shape:32} {ms:9.4f} {tflops:8.2f} {gbs:8.0f} {ref_s:>14}")


if __name__ == "__main__":
    main()
