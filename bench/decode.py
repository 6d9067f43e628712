"""Batch-1 decode throughput of the GPU engine on synthetic 7m- and 20b-shaped models.

First the single-sequence engine (`generate`, `chat`, `diff`): each step is a forward, one step of the
one-slot model over rows in `fp32` (a CUDA graph replayed per step; `gpu/engine.py`), its logits copied
back, then greedy sampling on the CPU. Timed with a host clock over whole steps (each step ends in a device
sync). Also reports the device memory of the weights and of the one-slot model (made by the first forward),
launches and copies per token (a replay launches nothing of ours: 0 after the first step), and the summed
kernel time of one forward run eagerly (each launch event-timed).

Then the batched engine at one row in its precision (the device's default, or --precision), as getp runs a
lone request (a CUDA graph replayed per step, the token chosen on the device): host ms per step of the
step's call alone (it enqueues without waiting) and with its token read back (which waits), device ms per
step (events around graph replays back to back), and the launches of one eager step (what the graph replays)
with their summed kernel time. --profile-replay: then one more graph replay inside cudaProfilerStart/Stop, for
`ncu --profile-from-start off --graph-profiling node` (gpu_session.sh's `stepkernels`).

    python bench/decode.py [--presets 7m,20b] [--steps 256] [--experts bf16,mxfp4] [--precision exact]
        [--profile-replay]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cupy_getp.checkpoint.synthetic import synthetic_store  # noqa: E402
from cupy_getp.checkpoint.weights import Weights  # noqa: E402
from cupy_getp.config import preset  # noqa: E402
from cupy_getp.engine.factory import create_engine  # noqa: E402
from cupy_getp.errors import GetpError  # noqa: E402
from timing import ONE_ROW_TOKEN, eager_step_profile, graph_replay_ms, one_row_step, profiled_replay  # noqa: E402

FIRST_POS = 8  # steps before it warm the caches, the allocator and (batched) the graph
TOKEN = ONE_ROW_TOKEN


def decode_rate(engine, start_pos: int, steps: int) -> float:
    token = TOKEN
    begin = time.perf_counter()
    for pos in range(start_pos, start_pos + steps):
        token = int(np.argmax(engine.forward(token, pos)))
    return steps / (time.perf_counter() - begin)


def bench_preset(name: str, steps: int, experts: str = "auto", precision: str | None = None,
                 profile_replay: bool = False) -> list[dict]:
    """The single-sequence engine's record (its one-slot model), then the batched engine's at one row (same
    engine)."""
    engine = create_engine(Weights(synthetic_store(name)), "cupy", experts=experts)
    begin = time.perf_counter()
    engine.warm_up()
    warm_up_s = time.perf_counter() - begin
    decode_rate(engine, 0, FIRST_POS)  # warm caches and the allocator
    counters = engine.device.counters
    counters.reset()
    short = decode_rate(engine, FIRST_POS, steps)
    per_token = {"launches": counters.total_launches() / steps, "h2d_copies": counters.h2d_copies / steps,
                 "d2h_copies": counters.d2h_copies / steps, "d2h_bytes": counters.d2h_bytes / steps}
    end = FIRST_POS + steps
    kernel_ms, _ = eager_step_profile(engine.one_slot_model(), lambda: engine.forward(TOKEN, end))
    per_token["kernel_ms"] = round(sum(kernel_ms.values()), 3)  # one forward at position `end`, eagerly
    late_start = engine.config.seq_len - steps
    long = decode_rate(engine, late_start, steps)
    result = {
        "preset": name, "experts": engine.experts.describe(), "device": engine.device.describe(),
        "warm_up_s": round(warm_up_s, 2), "weights_gib": round(engine.w.nbytes() / 2**30, 2),
        "device_gib": round((engine.memory_after_warm_up - engine.memory_before) / 2**30, 3),
        "one_slot_gib": round((engine.device.memory_in_use() - engine.memory_after_warm_up) / 2**30, 3),
        f"tok_s_pos_{FIRST_POS}_{end}": round(short, 1), f"tok_s_pos_{late_start}_{late_start + steps}": round(long, 1),
        f"host_ms_per_step_pos_{FIRST_POS}_{end}": round(1e3 / short, 3),
        "per_token": per_token,
    }
    batched = batched_one_row(engine, steps, precision, profile_replay)
    batched.update(preset=name, experts=result["experts"])
    engine.finish()
    return [result, batched]


def batched_one_row(engine, steps: int, precision: str | None, profile_replay: bool = False) -> dict:
    """The batched engine's one-row step as getp runs it: host and device time per step, launches per step;
    with profile_replay, then one replay for the profiler (profiled_replay)."""
    n_ctx = engine.config.seq_len
    batched = engine.batched(1, n_ctx, slots=1, precision=precision)
    slot, token = np.zeros(1, np.int32), TOKEN
    call_s, step_s = [], []  # the step's call alone; with its token read back
    for pos in range(FIRST_POS + steps):
        t0 = time.perf_counter()
        v = batched.step(slot, np.array([pos], np.int32), np.array([token], np.int32))
        t1 = time.perf_counter()
        token = int(batched.tokens(v, 1)[0])
        call_s.append(t1 - t0)
        step_s.append(time.perf_counter() - t0)
    end = FIRST_POS + steps

    def step():
        batched.tokens(one_row_step(batched, end), 1)

    kernel_ms, launches = eager_step_profile(batched, step)
    result = {
        "bench": "batch1_batched", "precision": batched.precision, "products": batched.products_path,
        f"tok_s_pos_{FIRST_POS}_{end}": round(1 / statistics.median(step_s[FIRST_POS:]), 1),
        "host_ms_per_step_call": round(1e3 * statistics.median(call_s[FIRST_POS:]), 3),
        "host_ms_per_step_with_token": round(1e3 * statistics.median(step_s[FIRST_POS:]), 3),
        f"device_ms_per_step_pos_{end}": graph_replay_ms(batched, end),
        f"device_ms_per_step_pos_{n_ctx - 1}": graph_replay_ms(batched, n_ctx - 1),
        "launches_per_step": sum(launches.values()),
        "kernel_ms_per_step_eager": round(sum(kernel_ms.values()), 3),
        "launches_by_kernel": dict(sorted(launches.items(), key=lambda kv: -kv[1])),
        "kernel_ms_by_kernel": {n: round(v, 3) for n, v in sorted(kernel_ms.items(), key=lambda kv: -kv[1])},
    }
    if profile_replay:
        profiled_replay(batched, end)
    batched.free()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="7m,20b")
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--experts", default="auto", help="expert storages, comma-separated: bf16, mxfp4, auto")
    parser.add_argument("--precision", default=None, help="the batched engine's: exact, fast or fp32 (default: "
                                                          "the device's)")
    parser.add_argument("--profile-replay", action="store_true",
                        help="one more graph replay of the one-row step inside cudaProfilerStart/Stop (for ncu)")
    args = parser.parse_args()
    try:
        longest = min(preset(name).seq_len for name in args.presets.split(","))
        if not 0 < args.steps <= longest - FIRST_POS - 1:
            raise GetpError(f"--steps {args.steps} must be in 1..{longest - FIRST_POS - 1} (the shortest seq_len "
                            f"of --presets, {longest}, less the warm-up steps)")
        for name in args.presets.split(","):
            for experts in args.experts.split(","):
                for record in bench_preset(name, args.steps, experts, args.precision, args.profile_replay):
                    print(json.dumps(record), flush=True)
    except GetpError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
