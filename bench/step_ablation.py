"""Where a step's graph time goes: each kernel group's marginal cost inside the graph, and launch choices against
the default in one process.

The batched engine's one-row step (getp's lone request, 20b shape, synthetic weights; or, with --rows, a step of
that many decode rows at --context) is captured as a CUDA graph once whole and once for each group of kernels left
out (their launches skipped at capture), and each graph is replayed back to back between two events
(`timing.graph_replay_ms`). A group's cost in the step is the whole step's device time less the step's without
it. --set measures the whole step again with a launch module's constants set otherwise (`attention.
ATTN_FUSED_MAX_ROWS=100000`: module cupy_getp.gpu.launch.attention; several joined by `+`), each against the
default: choices that give the same bits (every launch helper's does), timed side by side. Per-kernel profilers
(ncu) time each kernel alone, with its launch and without its neighbours; under programmatic dependent launch a
kernel's start and its neighbours' ends overlap, so the sum of their times is not the step's (bench/RESULTS.md,
thirteenth session). This is a timing tool only: a step without some kernels computes nothing meaningful (skipped
kernels leave their outputs stale).

    python bench/step_ablation.py [--preset 20b] [--precision exact] [--groups rmsnorm,router,...] [--repeats 50]
        [--rows 1 --context 264] [--set attention.ATTN_FUSED_MAX_ROWS=100000,moe.ROUTER_MAX_ROWS=1]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cupy_getp.checkpoint.synthetic import synthetic_store  # noqa: E402
from cupy_getp.checkpoint.weights import Weights  # noqa: E402
from cupy_getp.engine.factory import create_engine  # noqa: E402
from timing import graph_replay_ms, rows_step  # noqa: E402

# Kernel groups by kernel-name pattern (the one-row step's kernels at the 20b shape, exact or fast; at many rows qkv
# takes unembed_argmax's dense tiles, and a group upstream of the router, left out, changes the rows' routes).
GROUPS = {
    "rmsnorm": r"^rmsnorm",
    "rope_kv_write": r"^rope",
    "attention": r"^attn",
    "router": r"^router",
    "moe_align": r"^moe_align",
    "moe_combine": r"^moe_combine",
    "qkv": r"^gemm_wg_tma_half",
    "out_proj": r"splitk|_sliced_",  # split-K: split blocks at few rows, sliced ones at many
    "mlp1": r"grouped_swiglu",
    "mlp2": r"^gemm_wg_(tma_)?grouped_r",
    "unembed_argmax": r"^gemm_wg_tma_r|^argmax",
    "small": r"^(rmsnorm|rope|attn|router|moe_align|moe_combine)",
    "products": r"^gemm_",
}
POSITION = 264  # the one-row step's position: where bench/decode.py's default 256 steps end
LAUNCH_PACKAGE = "cupy_getp.gpu.launch"


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


@contextlib.contextmanager
def constants_set(assignments: str):
    """Inside: each `module.NAME=value` of `assignments` (joined by `+`) set in cupy_getp.gpu.launch.module, an
    existing integer constant that the launch helpers read when they launch; each set back afterwards."""
    kept = []
    try:
        for assignment in assignments.split("+"):
            target, _, value = assignment.partition("=")
            module_name, _, name = target.strip().rpartition(".")
            module = importlib.import_module(f"{LAUNCH_PACKAGE}.{module_name}")
            if not isinstance(getattr(module, name, None), int) or not value.strip().lstrip("-").isdigit():
                raise ValueError(f"--set {assignment!r}: expected module.NAME=integer, NAME an integer constant "
                                 f"of {LAUNCH_PACKAGE}.{module_name}")
            kept.append((module, name, getattr(module, name)))
            setattr(module, name, int(value))
        yield
    finally:
        for module, name, value in reversed(kept):
            setattr(module, name, value)


def step_ms(batched, repeats: int, pattern: re.Pattern | None, pos: int, rows: int) -> tuple[float, int]:
    """(device ms of the step's graph with `pattern`'s kernels left out, launches in it)."""
    batched.runner.graphs.clear()
    counters = batched.device.counters
    with launches_left_out(batched.model.kernels, pattern) if pattern else contextlib.nullcontext():
        counters.reset()
        rows_step(batched, pos, rows)  # captures the graph
        launches = sum(counters.launches.values())
        ms = graph_replay_ms(batched, pos, repeats, rows)
    batched.runner.graphs.clear()
    return ms, launches


def warm_batched(engine, precision: str, rows: int, context: int | None):
    """The batched engine of the measured step, its graphs' buffers warm: one row with its slot's cache filled up
    to POSITION by one-row steps; more rows stepped once at `context` (their caches are not filled: attention reads
    the same bytes whatever they hold)."""
    if rows == 1 and context is None:
        batched = engine.batched(1, engine.config.seq_len, slots=1, precision=precision)
        for pos in range(POSITION):
            rows_step(batched, pos, 1)
        return batched, POSITION
    pos = POSITION if context is None else context
    batched = engine.batched(rows, pos + 1, slots=rows, precision=precision)
    rows_step(batched, pos, rows)
    return batched, pos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="20b")
    parser.add_argument("--precision", default="exact", help="the batched engine's: exact, fast or fp32")
    parser.add_argument("--groups", default=",".join(GROUPS), help=f"comma list of {', '.join(GROUPS)} (or none)")
    parser.add_argument("--repeats", type=int, default=50, help="graph replays timed a measurement")
    parser.add_argument("--rows", type=int, default=1, help="decode rows in the step")
    parser.add_argument("--context", type=int, default=None, help=f"the rows' position (default {POSITION})")
    parser.add_argument("--set", default="", help="comma list of launch constants to time against the default, "
                        "each module.NAME=value[+module.NAME=value]")
    args = parser.parse_args()
    groups = [g for g in args.groups.split(",") if g and g != "none"]
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        sys.exit(f"error: unknown group {unknown[0]!r} (expected {', '.join(GROUPS)})")
    if args.rows < 1:
        sys.exit(f"error: --rows {args.rows}: at least 1")
    variants = [v for v in args.set.split(",") if v]
    for variant in variants:  # a bad assignment fails here, before the engine is built
        try:
            with constants_set(variant):
                pass
        except (ValueError, ImportError) as e:
            sys.exit(f"error: {e}")
    engine = create_engine(Weights(synthetic_store(args.preset)), "cupy")
    engine.warm_up()
    batched, pos = warm_batched(engine, args.precision, args.rows, args.context)
    measure = dict(repeats=args.repeats, pos=pos, rows=args.rows)
    whole, launches = step_ms(batched, pattern=None, **measure)
    print(json.dumps({"bench": "step_ablation", "preset": args.preset, "precision": batched.precision,
                      "rows": args.rows, "position": pos, "left_out": None, "device_ms_per_step": whole,
                      "launches": launches}), flush=True)
    for group in groups:
        ms, left = step_ms(batched, pattern=re.compile(GROUPS[group]), **measure)
        print(json.dumps({"bench": "step_ablation", "left_out": group, "pattern": GROUPS[group],
                          "device_ms_per_step": ms, "launches": left, "launches_left_out": launches - left,
                          "its_cost_ms": round(whole - ms, 3)}), flush=True)
    for variant in variants:
        with constants_set(variant):
            ms, count = step_ms(batched, pattern=None, **measure)
        print(json.dumps({"bench": "step_ablation", "set": variant, "device_ms_per_step": ms, "launches": count,
                          "default_saves_ms": round(ms - whole, 3)}), flush=True)
    again, _ = step_ms(batched, pattern=None, **measure)  # the whole step again: the spread of the measurement
    print(json.dumps({"bench": "step_ablation", "left_out": None, "device_ms_per_step": again, "repeat": True}))
    batched.free()
    engine.finish()


if __name__ == "__main__":
    main()
