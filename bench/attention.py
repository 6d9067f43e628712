"""The batched engine's attention alone (attn_rows: the partials and their merge) against the copy bandwidth.

The 20b shape (64 query heads, 8 kv heads, head_dim 64), KV caches of random values (FP32, or BF16 with
`--kv-cache fp32,bf16`: the engine's `--kv-cache`), the engine's
split over positions (`attn_split_len`); a full-attention layer and a windowed one (window 128, a ring
of window + chunk positions) reported apart. Every row of a launch sits at the same position (context - 1)
in its own slot. On CUDA the calls are captured in a CUDA graph (`--reps` calls back to back) so the time
is the device's, not the launches'; each configuration reports the median of a few timed replays.

KV bytes read per row: positions read x kv_dim x 2 (K and V) x 4 (2 in BF16). The copy bandwidth is a 1 GiB
device-to-device copy's, measured in the same run as bench/matvec.py measures it (each copy timed alone
between two events, the median; bytes read + written): ~4.2 TB/s on the H200. of_copy = (KV bytes / time) /
that bandwidth. (A graph of 50 copies back to back, this bench's first reference, ran at only ~2.8 TB/s,
cudaMemcpy or a copy kernel alike, which flattered every fraction: bench/RESULTS.md, run 16.) Small cases fit
in the L2 cache.

    python bench/attention.py [--rows 1,64,512,1024] [--contexts 512,2048] [--kv-cache fp32,bf16] [--out attn.jsonl]
    ncu --clock-control none python bench/attention.py --reps 3 --warmup 1 --no-copy --eager --rows 1024 --contexts 512
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Callable
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cupy_getp.config import preset  # noqa: E402
from cupy_getp.errors import DeviceError  # noqa: E402
from cupy_getp.kv_cache import KV_CACHE_DTYPES  # noqa: E402
from matvec import copy_bandwidth  # noqa: E402 (bench/ is on sys.path when run as a script)
from timing import time_ms  # noqa: E402

LAYERS = ("full", "window")
CHUNK = 128  # prompt positions of one request per step: a windowed layer's ring is window + CHUNK long
TIMED_REPLAYS = 5  # timed launches of a configuration's graph, after timing.time_ms's warm-up


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):
        sys.exit(f"error: {message}")


def positive_ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of integers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every value must be >= 1")
    return values


def choices_list(what: str, allowed) -> Callable[[str], list[str]]:
    """An argparse type: a comma list of `allowed` values, one line naming the first unknown one."""
    def parse(text: str) -> list[str]:
        values = text.split(",")
        unknown = [x for x in values if x not in allowed]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {what} {unknown[0]!r} (expected {', '.join(allowed)})")
        return values
    return parse


def parse_args(argv=None) -> argparse.Namespace:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="20b", help="the model shape (heads, head_dim, window)")
    parser.add_argument("--rows", type=positive_ints, default=[1, 64, 512, 1024], help="rows per launch, a comma list")
    parser.add_argument("--contexts", type=positive_ints, default=[512, 2048], help="positions per row, a comma list")
    parser.add_argument("--layers", type=choices_list("layer", LAYERS), default=list(LAYERS),
                        help="full, window or both")
    parser.add_argument("--kv-cache", type=choices_list("KV cache", tuple(KV_CACHE_DTYPES)), default=["fp32"],
                        help="fp32, bf16 or both (comma list)")
    parser.add_argument("--reps", type=int, default=50, help="calls timed per configuration (one graph of them)")
    parser.add_argument("--warmup", type=int, default=5, help="calls before timing")
    parser.add_argument("--no-copy", action="store_true", help="skip the copy bandwidth (e.g. under ncu)")
    parser.add_argument("--eager", action="store_true", help="time eager launches instead of a CUDA graph")
    parser.add_argument("--out", type=Path, default=None, help="append the JSON lines here too")
    args = parser.parse_args(argv)
    if args.reps < 1 or args.warmup < 0:
        parser.error(f"--reps {args.reps} must be >= 1 and --warmup {args.warmup} >= 0")
    if args.out is not None and args.out.is_dir():
        parser.error(f"--out {args.out} is a directory; give a file to append JSON lines to")
    try:
        args.config = preset(args.preset)
    except Exception as e:  # CheckpointError: an unknown preset
        parser.error(str(e))
    return args


# -- one configuration ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    layer: str
    rows: int
    context: int
    kv_cache: str = "fp32"

    def window(self, config) -> int:
        return config.sliding_window if self.layer == "window" else 0

    def cache_len(self, config) -> int:
        """C as the engine sizes it: n_ctx on a full layer, a ring of window + CHUNK on a windowed one."""
        return min(self.context, config.sliding_window + CHUNK) if self.window(config) else self.context

    def positions_read(self, config) -> int:
        return min(self.window(config), self.context) if self.window(config) else self.context

    def kv_bytes(self, config) -> int:
        item = np.dtype(KV_CACHE_DTYPES[self.kv_cache]).itemsize
        return self.rows * self.positions_read(config) * config.kv_dim * 2 * item


class Caches:
    """Random K and V of one layer kind, context and KV cache element for the most rows asked (slots 0..R-1, one
    spare), reused by every row count (BF16: the top halves of FP32 values)."""

    def __init__(self, config, case: Case, max_rows: int, seed: int):
        import cupy

        rng = cupy.random.default_rng(seed)
        shape = (max_rows + 1, case.cache_len(config), config.kv_dim)  # (S + 1, C, nkv D)
        self.keys, self.values = (self.held(rng.standard_normal(shape, dtype=np.float32), case.kv_cache)
                                  for _ in range(2))

    @staticmethod
    def held(values, kv_cache: str):
        return (values.view(np.uint32) >> 16).astype(np.uint16) if kv_cache == "bf16" else values


def attention_call(kernels, config, case: Case, caches: Caches, split_len: int, seed: int):
    """A function running the engine's attention over this case's rows, on buffers made once here."""
    import cupy

    from cupy_getp.gpu.batch_shape import attn_splits

    c, R = config, case.rows
    rng = cupy.random.default_rng(seed)
    window = case.window(c)
    span = min(window, case.cache_len(c)) if window else case.cache_len(c)
    n_split = attn_splits(c, span)  # as the engine sizes its partial buffers
    qkv = rng.standard_normal((R, c.qkv_dim), dtype=np.float32)
    sinks = rng.standard_normal(c.n_attn_heads, dtype=np.float32)
    row_slot = cupy.arange(R, dtype=np.int32)  # distinct slots
    row_pos = cupy.full(R, case.context - 1, np.int32)
    partial_acc = cupy.zeros((R, c.n_attn_heads, n_split, c.head_dim), np.float32)
    partial_ml = cupy.zeros((R, c.n_attn_heads, n_split, 2), np.float32)
    att = cupy.zeros((R, c.q_dim), np.float32)
    counters = cupy.zeros((R, c.n_kv_heads), np.uint32)

    def call():  # as the engine launches it: in one launch up to ATTN_FUSED_MAX_ROWS rows, else two
        kernels.attn_rows(att, partial_acc, partial_ml, qkv, caches.keys, caches.values, row_slot, row_pos, sinks,
                          counters, c.n_attn_heads, c.n_kv_heads, c.head_dim, window, split_len)

    return call, n_split, (att, partial_acc, partial_ml)


# -- timing ----------------------------------------------------------------------------------------------------
def ms_per_call(stream, call, reps: int, warmup: int, eager: bool) -> float:
    """Event time of `reps` calls back to back, / reps (timing.time_ms: the median of TIMED_REPLAYS after
    its warm-up): one CUDA graph of the `reps` calls, or eager launches (ROCm, --eager)."""
    for _ in range(warmup):
        call()
    if eager:
        return time_ms(stream, lambda: [call() for _ in range(reps)], TIMED_REPLAYS) / reps
    stream.begin_capture()
    try:
        for _ in range(reps):
            call()
    finally:
        graph = stream.end_capture()
    return time_ms(stream, lambda: graph.launch(stream=stream), TIMED_REPLAYS) / reps


# attn_rows's kernels: the partials and merges, the pieces of att past 64 rows (gemm_tc's tc_split_rows), and
# argmax_rows (softmax) for the warm-up's programmatic-launch probe, so the graphs launch as the engine's do
BUILT_FAMILIES = ("attention", "gemm_tc", "softmax")


# -- the run -----------------------------------------------------------------------------------------------------
def run(args) -> list[dict]:
    from cupy_getp.gpu.device import Device

    device = Device.open()  # first: without a GPU, the one-line error and nothing else
    import cupy

    from cupy_getp.gpu.batch_shape import attn_split_len
    from cupy_getp.gpu.kernels import Kernels

    kernels = Kernels(device, only=BUILT_FAMILIES)
    config, stream = args.config, device.stream
    eager = args.eager or device.is_hip  # CuPy on ROCm cannot capture graphs
    device.sync_check = device.sync_check and eager  # no synchronisation while capturing
    split_len = attn_split_len(config)
    with stream:
        copy_gb_s = None if args.no_copy else copy_bandwidth(cupy.random.default_rng(0), stream, 20)
        results = [emit(setup_record(device, args, split_len, eager, copy_gb_s), args.out)]
        for kv_cache in args.kv_cache:
            for layer in args.layers:
                for context in args.contexts:
                    group = [Case(layer, rows, context, kv_cache) for rows in args.rows]
                    caches = Caches(config, group[0], max(c.rows for c in group), seed=context)
                    for case in group:
                        results.append(emit(measure(kernels, config, case, caches, split_len, copy_gb_s, args,
                                                    eager), args.out))
                    del caches
                    cupy.get_default_memory_pool().free_all_blocks()
    return results


def setup_record(device, args, split_len: int, eager: bool, copy_gb_s) -> dict:
    c = args.config
    return {"bench": "attention_setup", "device": device.describe(), "date": time.strftime("%Y-%m-%d"),
            "preset": args.preset, "n_heads": c.n_attn_heads, "n_kv_heads": c.n_kv_heads, "head_dim": c.head_dim,
            "window": c.sliding_window, "split_len": split_len, "reps": args.reps,
            "timing": "eager" if eager else "cuda graph",
            "copy_gb_s_1gib": copy_gb_s}


def measure(kernels, config, case: Case, caches: Caches, split_len: int, copy_gb_s, args, eager: bool) -> dict:
    call, n_split, outputs = attention_call(kernels, config, case, caches, split_len, seed=case.rows)
    ms = ms_per_call(kernels.device.stream, call, args.reps, args.warmup, eager)
    digest = outputs_digest(outputs)
    kv_bytes = case.kv_bytes(config)
    gb_s = kv_bytes / ms / 1e6
    return {"bench": "attention", "layer": case.layer, "kv_cache": case.kv_cache, "rows": case.rows,
            "context": case.context,
            "positions_read": case.positions_read(config), "cache_len": case.cache_len(config),
            "split_len": split_len, "n_split": n_split, "ms": round(ms, 5), "kv_bytes": kv_bytes,
            "gb_s": round(gb_s, 1), "copy_gb_s": round(copy_gb_s, 1) if copy_gb_s else None,
            "of_copy": round(gb_s / copy_gb_s, 3) if copy_gb_s else None, "digest": digest}


def outputs_digest(outputs) -> str:
    """sha256 (16 hex digits) of att and the partials after the timed calls: the inputs are seeded, so two builds
    (a tree before a kernel change and after) that compute the same bits print the same digest."""
    h = hashlib.sha256()
    for a in outputs:
        h.update(a.get().tobytes())
    return h.hexdigest()[:16]


def emit(record: dict, out: Path | None) -> dict:
    print(json.dumps(record), flush=True)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "a") as f:
            f.write(json.dumps(record) + "\n")
    return record


def print_table(results: list[dict]) -> None:
    print("\n| layer | KV cache | rows | context | ms/call | KV MB read | GB/s | copy GB/s | of copy | digest |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        if r["bench"] == "attention":
            print(f"| {r['layer']} | {r['kv_cache']} | {r['rows']} | {r['context']} | {r['ms']} | "
                  f"{r['kv_bytes'] / 1e6:.1f} | "
                  f"{r['gb_s']} | {r['copy_gb_s'] or '-'} | {r['of_copy'] or '-'} | {r['digest']} |")


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        results = run(args)
    except DeviceError as e:
        sys.exit(f"error: {e}")
    print_table(results)


if __name__ == "__main__":
    main()
