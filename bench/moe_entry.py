"""The MoE block's entry at the 20b shape, timed in a CUDA graph: t = rmsnorm(x) with its BF16 pieces, the router
scores and each row's experts, for `--layers` layers back to back (as the step runs them), at each `--rows`.

The engine's launches, `rmsnorm_split_rows` then `router_rows`: a branch with other kernels there carries its own
copy of this file (`norm-route`'s launched its fused `rmsnorm_route_rows`). Run it from each tree (PYTHONPATH=TREE)
in the same session to compare them; it builds only the rmsnorm and moe kernel families (seconds, not the minutes
of the whole engine's). One JSON record a row count:
us a layer (graph replays between two events, median of --repeats). `--dump DIR` also writes each row count's
outputs of one more launch (t, pieces, scores, experts, weights) to DIR/rows-R.npz, to compare trees' bits.

    PYTHONPATH=. python bench/moe_entry.py --rows 1,32,1024
"""

from __future__ import annotations

import argparse
import json

import numpy as np

HIDDEN, EXPERTS, TOP_K, PIECES = 2880, 32, 4, 3  # the 20b's


def entry(kernels, b, rows: int):
    """A function launching one layer's MoE entry on the buffers `b` (first `rows` rows), and its kernels' names."""
    t, ap, x = b["t"][:rows], pieces_of(b, rows), b["x"][:rows]
    scores, experts, weights = b["scores"][:rows], b["experts"][:rows], b["weights"][:rows]

    def launch():
        kernels.rmsnorm_split_rows(t, ap, x, b["w_rms"])
        kernels.router_rows(experts, weights, scores, b["w_router"], b["b_router"], t)
    return launch, "rmsnorm_split_rows + router_rows"


def pieces_of(b: dict, rows: int):
    """The pieces of the first `rows` rows, as the engine's pieces_view gives them."""
    from cupy_getp.gpu.launch.gemm_tc import pieces_view

    return pieces_view(b["ap"], PIECES, rows, HIDDEN)


def buffers(max_rows: int, rng) -> dict:
    import cupy

    from cupy_getp.bf16 import f32_to_bf16
    from cupy_getp.gpu.launch.gemm_tc import pieces_lda

    return {
        "x": cupy.asarray(rng.standard_normal((max_rows, HIDDEN)).astype(np.float32)),
        "t": cupy.zeros((max_rows, HIDDEN), np.float32),
        "ap": cupy.zeros(PIECES * max_rows * pieces_lda(HIDDEN), np.uint16),
        "w_rms": cupy.asarray(rng.random(HIDDEN).astype(np.float32)),
        "w_router": cupy.asarray(f32_to_bf16((rng.standard_normal((EXPERTS, HIDDEN)) / 54).astype(np.float32))),
        "b_router": cupy.asarray(rng.standard_normal(EXPERTS).astype(np.float32)),
        "scores": cupy.zeros((max_rows, EXPERTS), np.float32),
        "experts": cupy.zeros((max_rows, TOP_K), np.int32),
        "weights": cupy.zeros((max_rows, TOP_K), np.float32),
    }


def layer_us(device, launch, layers: int, repeats: int) -> float:
    """us a layer: a graph of `layers` launches of the entry, replayed back to back between two events."""
    import cupy

    stream = device.stream
    with stream:
        launch()  # compiled and checked outside the capture
        stream.begin_capture()
        for _ in range(layers):
            launch()
        graph = stream.end_capture()
        times = []
        for _ in range(repeats):
            start, end = cupy.cuda.Event(), cupy.cuda.Event()
            start.record(stream)
            for _ in range(10):
                graph.launch(stream=stream)
            end.record(stream)
            end.synchronize()
            times.append(cupy.cuda.get_elapsed_time(start, end) * 1000 / (10 * layers))
    return round(float(np.median(times)), 3)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1,32,1024")
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--dump", help="a folder for each row count's outputs (.npz)")
    args = parser.parse_args(argv)
    import cupy_getp.gpu.kernels as kernel_module
    from cupy_getp.gpu.device import Device

    device = Device.open()
    kernels = kernel_module.Kernels(device, only=("rmsnorm", "moe"))  # only what the entry takes
    rows_list = [int(r) for r in args.rows.split(",")]
    b = buffers(max(rows_list), np.random.default_rng(7))
    for rows in rows_list:
        launch, what = entry(kernels, b, rows)
        us = layer_us(device, launch, args.layers, args.repeats)
        print(json.dumps({"bench": "moe_entry", "kernels": what, "rows": rows, "us_a_layer": us,
                          "device": device.describe()}), flush=True)
        if args.dump:
            dump(device, launch, b, rows, args.dump)


def dump(device, launch, b: dict, rows: int, folder: str) -> None:
    """One more launch's outputs for the first `rows` rows, to folder/rows-R.npz."""
    import os

    with device.stream:
        launch()
    device.synchronize("the dumped launch")
    os.makedirs(folder, exist_ok=True)
    np.savez(os.path.join(folder, f"rows-{rows}.npz"), t=b["t"][:rows].get(), pieces=pieces_of(b, rows).get(),
             scores=b["scores"][:rows].get(), experts=b["experts"][:rows].get(), weights=b["weights"][:rows].get())


if __name__ == "__main__":
    main()
