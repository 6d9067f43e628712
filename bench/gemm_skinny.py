"""One-row tensor-core products: GB/s of weights streamed, and its fraction of a device-to-device copy measured in
the same run, for the skinny kernels (kernels/gemm_tc.hip gemm_tc_skinny*) against the mma.sync tiles and,
where the device has them, the wgmma kernels, at the 20b shape with M = 1 (`--rows`: other few-row counts, to
place SKINNY_MAX_ROWS): QKV 2880 -> 5120, attention out 4096 -> 2880, unembedding 2880 -> 201088, and the
grouped mlp1 + SwiGLU (2880 -> 5760) and mlp2 (2880 -> 2880) of the rows' experts (4 a row, of 32).

Bytes counted: the weights the product must read (the grouped ones: the matrices of the distinct experts its
rows chose), not the activations. Each timed call reads a different copy of the weights (or a different set of 4 experts), so
repeated calls stream from HBM rather than the L2 cache. The split of the activations is not timed. Times are
the median of device-event timings after warm-up.

    python bench/gemm_skinny.py [--repeats 50] [--experts bf16,mxfp4] [--rows 1,2,4,8]
"""

from __future__ import annotations

import argparse
import itertools
import json

import numpy as np
from gemm_tc import random_bf16, random_mxfp4  # bench/ is on sys.path when run as a script
from matvec import copy_bandwidth
from timing import time_ms

DENSE = {"qkv": (2880, 5120), "attn_out": (4096, 2880), "unembedding": (2880, 201088)}  # K, N
N_EXPERTS, TOP_K, HIDDEN, INTER = 32, 4, 2880, 2880
L2_SAFE_BYTES = 256 << 20  # weight copies per product: at least this many bytes between two reads of one


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--experts", default="bf16", help="expert storages of the grouped products: bf16, mxfp4")
    parser.add_argument("--rows", default="1", help="row counts, comma-separated (default 1)")
    args = parser.parse_args()
    row_counts = [int(r) for r in args.rows.split(",")]
    storages = args.experts.split(",")
    if not set(storages) <= {"bf16", "mxfp4"}:
        raise SystemExit(f"error: --experts {args.experts}: expected bf16, mxfp4 or both")
    from cupy_getp.errors import DeviceError
    from cupy_getp.gpu.device import Device

    try:
        device = Device.open()  # first: without a GPU, one line and nothing else
    except DeviceError as e:
        raise SystemExit(f"error: {e}") from None
    import cupy

    from cupy_getp.gpu.constants import TC_BLOCK_M, TC_SKINNY_GROUP_M
    from cupy_getp.gpu.kernels import Kernels
    from cupy_getp.gpu.launch.gemm_tc import SKINNY_TILE, pieces_lda, tensor_cores_supported
    from cupy_getp.gpu.launch.moe import moe_align_host

    if device.is_hip or not tensor_cores_supported(device):
        raise SystemExit(f"error: no skinny tensor-core kernels on {device.describe()} (CUDA sm_80+)")
    kernels = Kernels(device)
    stream = device.stream
    rng = cupy.random.default_rng(0)
    host_rng = np.random.default_rng(0)
    has_wgmma = kernels.wgmma
    copy = copy_bandwidth(rng, stream, args.repeats)
    print(json.dumps({"device": device.describe(), "d2d_copy_gb_s": copy, "wgmma": has_wgmma}), flush=True)
    # (label, wgmma, skinny preferred, dense tile, grouped block_m)
    paths = [("skinny", has_wgmma, True, SKINNY_TILE, TC_SKINNY_GROUP_M),
             ("mma.sync", False, False, None, TC_BLOCK_M)]
    if has_wgmma:
        paths.append(("wgmma", True, False, None, 8))

    def timed(wgmma: bool, skinny: bool, calls, nbytes: int) -> dict:
        """GB/s of `nbytes` per call, cycling through `calls`, on this path."""
        kernels.wgmma, kernels.skinny = wgmma, skinny
        try:
            ms = time_ms(stream, lambda: next(calls)(), args.repeats)
        finally:
            kernels.wgmma, kernels.skinny = has_wgmma, True
        gb_s = nbytes / ms / 1e6
        return {"ms": round(ms, 4), "gb_s": round(gb_s, 1), "of_copy": round(gb_s / copy, 3)}

    for (name, (k, n)), m, pieces in itertools.product(DENSE.items(), row_counts, (3, 1)):
        nbytes = n * k * 2
        weights = [random_bf16(rng, (n, k)) for _ in range(max(1, -(-L2_SAFE_BYTES // nbytes)))]
        c = cupy.empty((m, n), np.float32)
        ap = cupy.empty((pieces, m, pieces_lda(k)), np.uint16)
        kernels.split_pieces(ap, rng.standard_normal((m, k), dtype=np.float32))
        result = {"product": name, "rows": m, "k": k, "n": n, "pieces": pieces, "weight_mb": round(nbytes / 1e6, 1)}
        for label, wgmma, skinny, tile, _ in paths:
            calls = itertools.cycle([lambda w=w: kernels.gemm_tc(c, ap, w, tile=tile) for w in weights])
            result[label] = timed(wgmma, skinny, calls, nbytes)
        print(json.dumps(result), flush=True)
        del weights

    make = {"bf16": random_bf16, "mxfp4": random_mxfp4}
    b1 = rng.standard_normal((N_EXPERTS, 2 * INTER), dtype=np.float32)
    b2 = rng.standard_normal((N_EXPERTS, HIDDEN), dtype=np.float32)
    for storage in storages:
        w1, w2 = make[storage](rng, (N_EXPERTS, 2 * INTER, HIDDEN)), make[storage](rng, (N_EXPERTS, HIDDEN, INTER))
        per_expert = {"mlp1_swiglu": w1.size // N_EXPERTS, "mlp2": w2.size // N_EXPERTS}  # elements
        element_bytes = 2 if storage == "bf16" else 0.5 + 1 / 32  # MXFP4: codes and one scale per 32
        for m, pieces in itertools.product(row_counts, (3, 1)):
            expert_sets = [np.stack([host_rng.permutation(N_EXPERTS)[:TOP_K] for _ in range(m)]).astype(np.int32)
                           for _ in range(8)]
            distinct = np.mean([np.unique(e).size for e in expert_sets])  # experts read per call, on average
            ap = cupy.empty((pieces, m, pieces_lda(HIDDEN)), np.uint16)
            kernels.split_pieces(ap, rng.standard_normal((m, HIDDEN), dtype=np.float32))
            result = {"product": "grouped", "rows": m, "experts": storage, "pieces": pieces}
            for label, wgmma, skinny, _, block_m in paths:
                groupings = [tuple(cupy.asarray(x) for x in moe_align_host(e, N_EXPERTS, block_m)[::2])
                             for e in expert_sets]
                padded = groupings[0][0].size
                gp = cupy.zeros((pieces, padded, pieces_lda(INTER)), np.uint16)
                y = cupy.empty((padded, HIDDEN), np.float32)
                mlp1 = itertools.cycle([lambda g=g: kernels.gemm_tc_grouped_swiglu(gp, ap, *g, w1, b1, TOP_K, 7.0)
                                        for g in groupings])
                mlp2 = itertools.cycle([lambda g=g: kernels.gemm_tc_grouped(y, gp, *g, w2, b2) for g in groupings])
                for product, calls in (("mlp1_swiglu", mlp1), ("mlp2", mlp2)):
                    nbytes = int(distinct * per_expert[product] * element_bytes)
                    result[f"{product}_{label}"] = timed(wgmma, skinny, calls, nbytes)
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
