"""One-row tensor-core products at the 20b shape: every kernel choice that gives the same bits, timed.

The one-row step (batch-1 decode, the tail of a batch) must use the products of bigger steps (batch
invariance), so its speed comes from which of them the launch helpers pick at one row: the wgmma kernels
with one or two 64-feature blocks per consumer (MB), the mma.sync kernels' tiles (the same bits: same k
order and promotion), the wgmma kernels that read W through tensor maps (`wg tma`: one TMA copy a stage, the
same bits; where cuda-bindings is installed), and for the grouped expert products MB as well, their experts
read by the producer's copies or through a paired tensor map (`wg tma`, the same bits), mlp1 also in wide blocks
where they fit (`wg tma wide`: 192 features, the same bits); then the dense
products split along K where the rule of launch/splitk.py splits them (`wg splitk`, `wg tma splitk`: other
bits, the same at every row count; the engine's default, CUPY_GETP_WG_SPLITK=0 turns it off). Each product is
launched `--launches` times back to back between two events, cycling through enough copies of its weights
that L2 (50 MB on an H200) does not hold them, like 24 layers do; GB/s counts the weight bytes read. The copy
bandwidth of bench/matvec.py is the reference.

    python bench/onerow.py [--rows 1] [--launches 48] [--pieces 3,1]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from matvec import copy_bandwidth  # noqa: E402 (bench/ is on sys.path when run as a script)
from gemm_tc import random_bf16  # noqa: E402
from timing import time_ms  # noqa: E402

DENSE = {"qkv": (2880, 5120), "attn_out": (4096, 2880), "router": (2880, 32), "unembedding": (2880, 201088)}
N_EXPERTS, TOP_K, HIDDEN, INTER = 32, 4, 2880, 2880
L2_DEFEAT_BYTES = 256 << 20  # weight copies cycled through: more than L2 holds
MAX_COPIES = 2048  # the router's 184 KB: ~1400 copies


def graph_of(stream, fn, items, launches: int):
    """A CUDA graph of fn(item) over max(launches, len(items)) items taken in turn (each copy of a small
    matrix read once a replay, from DRAM), and its launch count. A graph, so that host time between
    launches is not measured."""
    n = max(launches, len(items))
    with stream:
        stream.begin_capture()
        try:
            for i in range(n):
                fn(items[i % len(items)])
        finally:
            graph = stream.end_capture()
    return graph, n


def record(kind: str, choice: str, ms: float, launches: int, weight_bytes: int, copy_gb_s: float) -> dict:
    us = 1e3 * ms / launches
    gb_s = weight_bytes / (us * 1e3)
    return {"kind": kind, "choice": choice, "us_per_launch": round(us, 2), "weight_gb_s": round(gb_s, 1),
            "of_copy": round(gb_s / copy_gb_s, 3)}


def tma_unavailable(kernels) -> str | None:
    """Why the `wg tma` choices cannot run here, or None."""
    if not kernels.wgmma:
        return "no wgmma kernels"
    try:
        found = importlib.util.find_spec("cuda.bindings.driver") is not None  # the tensor maps are made with it
    except ImportError:
        found = False
    return None if found else "cuda-bindings not installed"


def main() -> None:
    import cupy

    from cupy_getp.gpu.device import Device
    from cupy_getp.gpu.kernels import Kernels
    from cupy_getp.gpu.launch.gemm_tc import DENSE_TILES, WG_DENSE_TILES, pieces_lda
    from cupy_getp.gpu.launch.moe import moe_align_host, moe_padded_pairs
    from cupy_getp.gpu.launch.splitk import wg_splits

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--launches", type=int, default=48)
    parser.add_argument("--pieces", default="3,1")
    args = parser.parse_args()
    device = Device.open()
    kernels = Kernels(device)
    stream, rng, m = device.stream, cupy.random.default_rng(0), args.rows
    copy_gb_s = copy_bandwidth(rng, stream, 10)
    print(json.dumps({"device": device.describe(), "wgmma": kernels.wgmma, "rows": m, "copy_gb_s": copy_gb_s}),
          flush=True)
    has_wgmma, has_tma, no_tma = kernels.wgmma, kernels.wg_tma, tma_unavailable(kernels)
    if no_tma:
        print(json.dumps({"wg_tma": f"skipped: {no_tma}"}), flush=True)

    has_half = getattr(kernels, "wg_half", False)  # the half blocks (trees before them have none)

    def timed(items, fn, wgmma: bool = has_wgmma, tma: bool = False, splitk: bool = False,
              half: bool = False) -> tuple[float, int]:
        """(ms of one replay, launches in it) of fn over items, captured on the wgmma (W by the producer's
        copies or, with tma, by tensor maps, in half blocks with half; split along K with splitk) or mma.sync
        kernels."""
        kernels.wgmma, kernels.wg_tma, kernels.wg_splitk, sync_check = wgmma, tma, splitk, device.sync_check
        kernels.wg_half = half
        device.sync_check = False  # none while capturing
        try:
            graph, n = graph_of(stream, fn, items, args.launches)
        finally:
            kernels.wgmma, kernels.wg_tma, kernels.wg_splitk, device.sync_check = has_wgmma, has_tma, False, sync_check
            kernels.wg_half = has_half
        return time_ms(stream, lambda: graph.launch(stream), 5), n

    for pieces in map(int, args.pieces.split(",")):
        for kind, (k, n) in DENSE.items():
            copies = min(MAX_COPIES, -(-L2_DEFEAT_BYTES // (2 * n * k)))
            w = random_bf16(rng, (n, k))
            ws = [w] + [w.copy() for _ in range(copies - 1)]
            ap = cupy.zeros((pieces, m, pieces_lda(k)), np.uint16)
            c = cupy.empty((m, n), np.float32)
            height = kernels.wg_tile(m, n, pieces)[0] if has_wgmma else 0
            choices = {f"wg {r}x{f}": (True, False, (r, f), False, False) for r, f in WG_DENSE_TILES[pieces]
                       if r == height}
            if not no_tma:
                choices.update({f"wg tma {r}x{f}": (True, True, (r, f), False, False) for r, f in WG_DENSE_TILES[pieces]
                                if r == height})
                if has_half and kernels.wg_half_blocks(m, n, height, 1):
                    choices[f"wg tma half {height}x1"] = (True, True, (height, 1), False, True)
            splits = wg_splits(n, k, kernels.sm_count())
            if has_wgmma and splits > 1:  # the workspace made before the capture (as RowModel does)
                kernels.wg_splitk = True
                kernels.reserve_splitk(m, [(n, k)])
                kernels.wg_splitk = False
                for tma in (False, True) if not no_tma else (False,):
                    choices[f"wg {'tma ' if tma else ''}splitk {height}x1 S={splits}"] = (True, tma, (height, 1), True,
                                                                                       False)
            choices.update({f"mma.sync {bm}x{bn}": (False, False, (bm, bn), False, False) for bm, bn in DENSE_TILES})
            for choice, (wgmma, tma, tile, splitk, half) in choices.items():
                try:  # a choice that cannot run (a tensor map refused, say) is reported, not the end of the run
                    ms, launches = timed(ws, lambda w, tile=tile: kernels.gemm_tc(c, ap, w, tile=tile), wgmma, tma,
                                         splitk, half)
                except Exception as e:
                    print(json.dumps({"pieces": pieces, "product": kind, "choice": choice, "error": str(e)[:300]}),
                          flush=True)
                    continue
                print(json.dumps({"pieces": pieces, **record(kind, choice, ms, launches, 2 * n * k, copy_gb_s)}),
                      flush=True)

        # the expert pair of one row: TOP_K experts, a different set each launch (as layers differ)
        w1 = random_bf16(rng, (N_EXPERTS, 2 * INTER, HIDDEN))
        w2 = random_bf16(rng, (N_EXPERTS, HIDDEN, INTER))
        b1 = cupy.zeros((N_EXPERTS, 2 * INTER), np.float32)
        b2 = cupy.zeros((N_EXPERTS, HIDDEN), np.float32)
        host_rng = np.random.default_rng(0)
        block_m = 8
        p = moe_padded_pairs(m * TOP_K, N_EXPERTS, block_m)  # the engine's buffer: its tiles mostly empty
        groupings = []
        for _ in range(8):
            experts = np.stack([host_rng.permutation(N_EXPERTS)[:TOP_K] for _ in range(m)]).astype(np.int32)
            pair_of_padded, _, tile_expert = moe_align_host(experts, N_EXPERTS, block_m)
            groupings.append((cupy.asarray(pair_of_padded), cupy.asarray(tile_expert)))
        assert groupings[0][0].size == p
        ap = cupy.zeros((pieces, m, pieces_lda(HIDDEN)), np.uint16)
        gp = cupy.zeros((pieces, p, pieces_lda(INTER)), np.uint16)
        y = cupy.empty((p, HIDDEN), np.float32)
        bytes1, bytes2 = TOP_K * 2 * (2 * INTER * HIDDEN), TOP_K * 2 * (HIDDEN * INTER)  # at one row
        real_features = kernels._wg_features
        has_tma_grouped = getattr(kernels, "wg_tma_grouped", False)  # the experts by TMA (trees before them have none)
        has_wide = getattr(kernels, "wg_wide", False)  # mlp1 in wide blocks where they fit (trees before: none)
        # (feature blocks, experts by TMA, wide blocks allowed); mma.sync groups by TC_BLOCK_M: not this grouping
        runs = [(f, t, False) for f in ((1, 2) if has_wgmma else ()) for t in (False, True) if t <= has_tma_grouped]
        runs += [(1, True, True)] if has_wide else []
        for features, tma, wide in runs:
            kernels._wg_features = lambda *a, f=features, **kw: f
            kernels.wg_tma_grouped, kernels.wg_wide = tma, wide
            try:
                mlp1 = partial(timed, groupings,
                               lambda g: kernels.gemm_tc_grouped_swiglu(gp, ap, g[0], g[1], w1, b1, TOP_K, 7.0),
                               tma=tma)
                mlp2 = partial(timed, groupings, lambda g: kernels.gemm_tc_grouped(y, gp, g[0], g[1], w2, b2), tma=tma)
                for kind, run, nbytes in (("mlp1_swiglu", mlp1, bytes1), ("mlp2", mlp2, bytes2))[:2 - wide]:
                    ms, launches = run()
                    choice = f"wg {'tma ' if tma else ''}{'wide ' if wide else ''}{block_m}x{features}"
                    print(json.dumps({"pieces": pieces, **record(kind, choice, ms, launches, nbytes, copy_gb_s)}),
                          flush=True)
            finally:
                kernels._wg_features, kernels.wg_tma_grouped = real_features, has_tma_grouped
                kernels.wg_wide = has_wide


if __name__ == "__main__":
    main()
