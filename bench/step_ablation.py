"""Where a one-row step's graph time goes: each kernel group's marginal cost inside the graph.

The batched engine's one-row step (getp's lone request, 20b shape, synthetic weights) is captured as a CUDA graph
once whole and once for each group of kernels left out (their launches skipped at capture), and each graph is
replayed back to back between two events (`timing.graph_replay_ms`). A group's cost in the step is the whole
step's device time less the step's without it. Per-kernel profilers (ncu) time each kernel alone, with its launch
and without its neighbours; under programmatic dependent launch a kernel's start and its neighbours' ends overlap,
so the sum of their times is not the step's (bench/RESULTS.md, thirteenth session). This is a timing tool only:
a step without some kernels computes nothing meaningful (skipped kernels leave their outputs stale).

    python bench/step_ablation.py [--preset 20b] [--precision exact] [--groups rmsnorm,router,...] [--repeats 50]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cupy_getp.checkpoint.synthetic import synthetic_store  # noqa: E402
from cupy_getp.checkpoint.weights import Weights  # noqa: E402
from cupy_getp.engine.factory import create_engine  # noqa: E402
from timing import graph_replay_ms, one_row_step  # noqa: E402

# Kernel groups by kernel-name pattern (the one-row step's kernels at the 20b shape, exact or fast).
GROUPS = {
    "rmsnorm": r"^rmsnorm",
    "rope_kv_write": r"^rope",
    "attention": r"^attn",
    "router": r"^router",
    "moe_align": r"^moe_align",
    "moe_combine": r"^moe_combine",
    "qkv": r"^gemm_wg_tma_half",
    "out_proj": r"splitk",
    "mlp1": r"grouped_swiglu",
    "mlp2": r"^gemm_wg_(tma_)?grouped_r",
    "unembed_argmax": r"^gemm_wg_tma_r|^argmax",
    "small": r"^(rmsnorm|rope|attn|router|moe_align|moe_combine)",
    "products": r"^gemm_",
}
POSITION = 264  # the step's position: where bench/decode.py's default 256 steps end


@contextlib.contextmanager
def launches_left_out(kernels, pattern: re.Pattern):
    """Inside: kernels whose name `pattern` finds are not launched (the instance's _launch shadows the class's)."""
    launch = kernels._launch

    def launch_unless_left_out(name, *args, **kwargs):
        if not pattern.search(name):
            launch(name, *args, **kwargs)

    kernels._launch = launch_unless_left_out
    try:
        yield
    finally:
        del kernels._launch


def step_ms(batched, repeats: int, pattern: re.Pattern | None) -> tuple[float, int]:
    """(device ms of the one-row step's graph with `pattern`'s kernels left out, launches in it)."""
    batched.runner.graphs.clear()
    counters = batched.device.counters
    with launches_left_out(batched.model.kernels, pattern) if pattern else contextlib.nullcontext():
        counters.reset()
        one_row_step(batched, POSITION)  # captures the graph
        launches = sum(counters.launches.values())
        ms = graph_replay_ms(batched, POSITION, repeats)
    batched.runner.graphs.clear()
    return ms, launches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="20b")
    parser.add_argument("--precision", default="exact", help="the batched engine's: exact, fast or fp32")
    parser.add_argument("--groups", default=",".join(GROUPS), help=f"comma list of {', '.join(GROUPS)}")
    parser.add_argument("--repeats", type=int, default=50, help="graph replays timed a measurement")
    args = parser.parse_args()
    unknown = [g for g in args.groups.split(",") if g not in GROUPS]
    if unknown:
        sys.exit(f"error: unknown group {unknown[0]!r} (expected {', '.join(GROUPS)})")
    engine = create_engine(Weights(synthetic_store(args.preset)), "cupy")
    engine.warm_up()
    batched = engine.batched(1, engine.config.seq_len, slots=1, precision=args.precision)
    for pos in range(POSITION):  # the slot's cache filled up to the measured position, the buffers warm
        one_row_step(batched, pos)
    whole, launches = step_ms(batched, args.repeats, None)
    print(json.dumps({"bench": "step_ablation", "preset": args.preset, "precision": batched.precision,
                      "left_out": None, "device_ms_per_step": whole, "launches": launches}), flush=True)
    for group in args.groups.split(","):
        ms, left = step_ms(batched, args.repeats, re.compile(GROUPS[group]))
        print(json.dumps({"bench": "step_ablation", "left_out": group, "pattern": GROUPS[group],
                          "device_ms_per_step": ms, "launches": left, "launches_left_out": launches - left,
                          "its_cost_ms": round(whole - ms, 3)}), flush=True)
    again, _ = step_ms(batched, args.repeats, None)  # the whole step again: the spread of the measurement
    print(json.dumps({"bench": "step_ablation", "left_out": None, "device_ms_per_step": again, "repeat": True}))
    batched.free()
    engine.finish()


if __name__ == "__main__":
    main()
