"""Batch-1 decode throughput of the GPU engine on synthetic 7m- and 20b-shaped models.

Each step is what getp does per generated token: forward (logits copied back) + greedy sampling on
the CPU. Timed with a host clock over whole steps (each step ends in a device sync). Also reports
the device memory of the weights and state, and launches and copies per token.

    python bench/decode.py [--presets 7m,20b] [--steps 256] [--experts bf16,mxfp4]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from cupy_getp.checkpoint.synthetic import synthetic_store
from cupy_getp.checkpoint.weights import Weights
from cupy_getp.engine.factory import create_engine


def decode_rate(engine, start_pos: int, steps: int) -> float:
    token = 13225
    begin = time.perf_counter()
    for pos in range(start_pos, start_pos + steps):
        token = int(np.argmax(engine.forward(token, pos)))
    return steps / (time.perf_counter() - begin)


def bench_preset(name: str, steps: int, experts: str = "auto") -> dict:
    engine = create_engine(Weights(synthetic_store(name)), "cupy", experts=experts)
    begin = time.perf_counter()
    engine.warm_up()
    warm_up_s = time.perf_counter() - begin
    decode_rate(engine, 0, 8)  # warm caches and the allocator
    counters = engine.device.counters
    counters.reset()
    short = decode_rate(engine, 8, steps)
    per_token = {"launches": counters.total_launches() / steps, "h2d_copies": counters.h2d_copies / steps,
                 "d2h_copies": counters.d2h_copies / steps, "d2h_bytes": counters.d2h_bytes / steps}
    late_start = engine.config.seq_len - steps
    long = decode_rate(engine, late_start, steps)
    result = {
        "preset": name, "experts": engine.experts.describe(), "device": engine.device.describe(),
        "warm_up_s": round(warm_up_s, 2), "weights_gib": round(engine.w.nbytes() / 2**30, 2),
        "device_gib": round((engine.memory_after_warm_up - engine.memory_before) / 2**30, 3),
        f"tok_s_pos_8_{8 + steps}": round(short, 1), f"tok_s_pos_{late_start}_{late_start + steps}": round(long, 1),
        "per_token": per_token,
    }
    engine.finish()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="7m,20b")
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--experts", default="auto", help="expert storages, comma-separated: bf16, mxfp4, auto")
    args = parser.parse_args()
    for name in args.presets.split(","):
        for experts in args.experts.split(","):
            print(json.dumps(bench_preset(name, args.steps, experts)), flush=True)


if __name__ == "__main__":
    main()
