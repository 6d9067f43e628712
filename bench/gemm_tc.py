"""TFLOP/s of the tensor-core products: dense gemm_tc at the 20b shape's projection sizes and the grouped
MoE pair (mlp1 + SwiGLU, mlp2) with E=32, k=4, H=I=2880, on the mma.sync kernels (kernels/gemm_tc.hip,
every dense tile) and, where the device has them, the wgmma kernels (kernels/gemm_wgmma.hip, "wg"), in
the same run.

FLOPs are counted per piece (pieces=3 does three BF16 products: 3 x 2 M N K), so the figure is what the
tensor cores executed; the split of the activations into pieces is inside the timings (mlp1's output g
comes out as pieces for mlp2); `of_peak` divides by 790 TFLOP/s (measured BF16 on random data, H100 and
H200). Times
are the median of device-event timings after warm-up. Under a minute on an H100; `--quick` one M only.

    python bench/gemm_tc.py [--quick] [--rows 606,1024] [--repeats 20] [--experts bf16,mxfp4] [--grouped-only]

`--experts mxfp4` times the grouped products on MXFP4 experts too (the *_mxfp4w kernels: a quarter of the
expert bytes, widened to BF16 while staged), beside BF16 experts in the same run. The grouped wgmma products
run at the engine's tile height and every other one (`block_m`), bf16 experts both by cp.async ("wg") and by TMA
("wg tma") where the device takes tensor maps; `padded` counts the rows the tiles hold, the figures only the
pairs' rows.
"""

from __future__ import annotations

import argparse
import json
from cupy_getp.gpu.launch.moe import moe_align_host
from functools import partial

import numpy as np
from routing import even_routes, used_tile_rows  # bench/ is on sys.path when run as a script
from timing import time_ms

BF16_PEAK_TFLOPS = 790.0
DENSE = ((2880, 5760), (2880, 5120), (4096, 2880))  # (K, N): mlp1 of one expert's width, qkv, attention out
ROWS = (1, 64, 256, 512, 1024)
N_EXPERTS, TOP_K, HIDDEN, INTER = 32, 4, 2880, 2880

def group_pairs(experts, n_experts: int, block_m: int):
    """(pair_of_padded, tile_expert) of `moe_align_host` (the moe family's contract)."""
    pair_of_padded, _, tile_expert = moe_align_host(experts, n_experts, block_m)
    return pair_of_padded, tile_expert


def random_bf16(rng, shape):
    """bf16 bits of N(0, 1/K) values (truncated: fine for timing)."""
    import cupy

    x = rng.standard_normal(shape, dtype=np.float32) / np.float32(np.sqrt(shape[-1]))
    return (x.view(cupy.uint32) >> 16).astype(cupy.uint16)


def random_mxfp4(rng, shape):
    """An `Mxfp4Matrix` of random codes, scales around 2^-6 (values ~ N(0, 1/K) at K = 2880)."""
    import cupy

    from cupy_getp.gpu.launch.common import Mxfp4Matrix

    *lead, cols = shape
    groups = -(-cols // 32)
    blocks = rng.integers(0, 256, (*lead, groups, 16), dtype=np.uint8)
    return Mxfp4Matrix(blocks, rng.integers(120, 122, (*lead, groups), dtype=np.uint8).astype(cupy.uint8), cols)


def rate(flops: float, ms: float) -> dict:
    tflops = flops / ms / 1e9
    return {"ms": round(ms, 4), "tflops": round(tflops, 1), "of_peak": round(tflops / BF16_PEAK_TFLOPS, 3)}


def main() -> None:
    import cupy

    from cupy_getp.gpu.device import Device
    from cupy_getp.gpu.kernels import Kernels
    from cupy_getp.gpu.launch.gemm_tc import (DENSE_TILES, TC_BLOCK_M, WG_DENSE_TILES, WG_GROUPED_ROWS, pieces_lda,
                                              tensor_cores_supported, wg_grouped_rows)

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="M = 512 and 1024 only")
    parser.add_argument("--rows", default=None, help="comma-separated M (rows of a step), instead of the defaults")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--experts", default="bf16", help="expert storages of the grouped products: bf16, mxfp4")
    parser.add_argument("--grouped-only", action="store_true", help="skip the dense products")
    args = parser.parse_args()
    storages = args.experts.split(",")
    if not set(storages) <= {"bf16", "mxfp4"}:
        raise SystemExit(f"error: --experts {args.experts}: expected bf16, mxfp4 or both")
    device = Device.open()
    if not tensor_cores_supported(device):
        raise SystemExit(f"no tensor-core path on {device.describe()}")
    kernels = Kernels(device)
    stream = device.stream
    rng = cupy.random.default_rng(0)
    host_rng = np.random.default_rng(0)
    rows = tuple(int(r) for r in args.rows.split(",")) if args.rows else (512, 1024) if args.quick else ROWS
    has_wgmma = kernels.wgmma
    print(json.dumps({"device": device.describe(), "bf16_peak_tflops": BF16_PEAK_TFLOPS, "wgmma": has_wgmma,
                      "not_built": kernels.not_built}), flush=True)

    has_tma_grouped = kernels.wg_tma_grouped

    def on(wgmma: bool, fn, *a, tma_grouped: bool = has_tma_grouped, **kw):
        kernels.wgmma, kernels.wg_tma_grouped = wgmma, tma_grouped
        try:
            return fn(*a, **kw)
        finally:
            kernels.wgmma, kernels.wg_tma_grouped = has_wgmma, has_tma_grouped

    def split_then(product, a, ap, *rest, **options):
        """What the engine does: split a, then the product on its pieces (both timed)."""
        kernels.split_pieces(ap, a)
        product(ap, *rest, **options)

    for k, n in () if args.grouped_only else DENSE:
        w = random_bf16(rng, (n, k))
        for m in rows:
            a = rng.standard_normal((m, k), dtype=np.float32)
            c = cupy.empty((m, n), np.float32)
            for pieces in (3, 1):
                ap = cupy.empty((pieces, m, pieces_lda(k)), np.uint16)
                flops = 2.0 * m * n * k * pieces
                result = {"kernel": "gemm_tc", "m": m, "k": k, "n": n, "pieces": pieces,
                          "auto_tile": "x".join(map(str, kernels.tc_dense_tile(m, n)))}
                result["split_ms"] = round(time_ms(stream, partial(kernels.split_pieces, ap, a), args.repeats), 4)
                for tile in DENSE_TILES:
                    ms = on(False, time_ms, stream, partial(split_then, partial(kernels.gemm_tc, c), a, ap, w,
                                                            tile=tile), args.repeats)
                    result[f"{tile[0]}x{tile[1]}"] = rate(flops, ms)
                if has_wgmma:  # the automatic choice, then the larger tiles
                    result["wg_tile"] = "x".join(map(str, kernels.wg_tile(m, n, pieces)))
                    ms = time_ms(stream, partial(split_then, partial(kernels.gemm_tc, c), a, ap, w), args.repeats)
                    result["wg"] = rate(flops, ms)
                    for tile in [t for t in WG_DENSE_TILES[pieces] if t[0] >= 64]:
                        ms = time_ms(stream, partial(split_then, partial(kernels.gemm_tc, c), a, ap, w, tile=tile),
                                     args.repeats)
                        result[f"wg_{tile[0]}x{tile[1]}"] = rate(flops, ms)
                print(json.dumps(result), flush=True)

    make = {"bf16": random_bf16, "mxfp4": random_mxfp4}
    experts_w = {s: (make[s](rng, (N_EXPERTS, 2 * INTER, HIDDEN)), make[s](rng, (N_EXPERTS, HIDDEN, INTER)))
                 for s in storages}
    b1 = rng.standard_normal((N_EXPERTS, 2 * INTER), dtype=np.float32)
    b2 = rng.standard_normal((N_EXPERTS, HIDDEN), dtype=np.float32)
    for r in rows:
        experts = even_routes(host_rng, r, N_EXPERTS, TOP_K)
        a = rng.standard_normal((r, HIDDEN), dtype=np.float32)
        pairs = r * TOP_K  # useful rows: padding is not counted
        for pieces in (3, 1):
            paths = [("mma.sync", False, TC_BLOCK_M, False)]
            if has_wgmma:  # the engine's tile height first, then every other; by cp.async, then by TMA
                heights = dict.fromkeys((wg_grouped_rows(pairs, N_EXPERTS, pieces), *WG_GROUPED_ROWS))
                paths += [(label, True, b, tma) for b in heights
                          for label, tma in (("wg", False), ("wg tma", True)) if tma <= has_tma_grouped]
            for (label, wgmma, block_m, tma), storage in ((p, s) for p in paths for s in storages):
                if tma and storage != "bf16":
                    continue  # the TMA kernels take bf16 experts only
                w1, w2 = experts_w[storage]
                pair_host, tile_host = group_pairs(experts, N_EXPERTS, block_m)
                pair_of_padded, tile_expert = cupy.asarray(pair_host), cupy.asarray(tile_host)
                y = cupy.empty((pair_host.size, HIDDEN), np.float32)
                ap = cupy.empty((pieces, r, pieces_lda(HIDDEN)), np.uint16)
                gp = cupy.zeros((pieces, pair_host.size, pieces_lda(INTER)), np.uint16)
                ms1 = on(wgmma, time_ms, stream, partial(split_then, partial(kernels.gemm_tc_grouped_swiglu, gp), a,
                                                         ap, pair_of_padded, tile_expert, w1, b1, TOP_K, 7.0),
                         args.repeats, tma_grouped=tma)
                ms2 = on(wgmma, time_ms, stream, partial(kernels.gemm_tc_grouped, y, gp, pair_of_padded, tile_expert,
                                                         w2, b2), args.repeats, tma_grouped=tma)
                print(json.dumps({"kernel": "grouped", "path": label, "experts": storage, "block_m": block_m, "rows": r, "pairs": pairs,
                                  "padded": int(pair_host.size), "slots": used_tile_rows(tile_host, block_m),
                                  "pieces": pieces,
                                  "mlp1_swiglu": rate(2.0 * pairs * 2 * INTER * HIDDEN * pieces, ms1),
                                  "mlp2": rate(2.0 * pairs * HIDDEN * INTER * pieces, ms2)}), flush=True)


if __name__ == "__main__":
    main()
