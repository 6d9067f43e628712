"""How the router spreads rows over the experts on a model, against routes spread evenly, and what that does to
the grouped products' padding: the question behind their tile height (launch/gemm_tc.py, wg_grouped_rows).

The standard prompts run through the batched engine (prompt, then greedy tokens, as the headline runs them);
every row's chosen experts are kept, layer by layer. Then, per layer: the share of routes taken by the busiest
quarter of the experts (an even spread: a quarter), and, for steps of --rows rows drawn from the kept rows, the
padded tile rows a route costs at each tile height (grouped kernels pad each expert's routes to whole tiles),
beside the same for routes drawn evenly (each row TOP_K distinct experts, uniformly, as bench/gemm_tc.py draws
them).

    python bench/routing.py                              # 20b synthetic, the GPU engine
    python bench/routing.py --preset 7m --engine numpy   # a CPU check of the tool itself

One JSON line a layer, then a summary line.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cupy_getp.checkpoint import SyntheticStore, Weights  # noqa: E402
from cupy_getp.config import preset  # noqa: E402
from cupy_getp.engine.factory import create_engine  # noqa: E402
from cupy_getp.getp import encode_requests, read_requests  # noqa: E402
from cupy_getp.gpu.launch.moe import moe_align_host  # noqa: E402
from cupy_getp.tokenizer import harmony_tokenizer  # noqa: E402

HEIGHTS = (64, 96, 128)


def busiest_quarter_share(experts: np.ndarray, n_experts: int) -> float:
    """The share of the routes in `experts` (N, k) taken by the n_experts // 4 busiest experts."""
    load = np.sort(np.bincount(experts.reshape(-1), minlength=n_experts))[::-1]
    return float(load[: max(1, n_experts // 4)].sum() / max(1, load.sum()))


def used_tile_rows(tile_expert: np.ndarray, height: int) -> int:
    """Rows of the tiles a `moe_align` grouping uses (tile_expert >= 0), padding included: what the grouped
    products compute."""
    return int((np.asarray(tile_expert) >= 0).sum()) * height


def padded_rows_per_route(experts: np.ndarray, n_experts: int, height: int) -> float:
    """Tile rows the routes of one step (`experts`, (R, k)) take, as `moe_align` groups them in tiles of `height`
    rows (its used tiles), per route (1.0: no padding)."""
    _, _, tile_expert = moe_align_host(experts, n_experts, height)
    return used_tile_rows(tile_expert, height) / max(1, experts.size)


def even_routes(rng: np.random.Generator, rows: int, n_experts: int, top_k: int) -> np.ndarray:
    """(rows, top_k) distinct experts a row, uniformly (bench/gemm_tc.py's routes)."""
    return np.stack([rng.permutation(n_experts)[:top_k] for _ in range(rows)]).astype(np.int32)


def layer_record(experts: np.ndarray, n_experts: int, rows: int, draws: int, rng: np.random.Generator) -> dict:
    """The statistics of one layer's kept routes `experts` (N, k): busiest quarter's share, and the mean padded
    rows a route of steps of `rows` rows drawn from them (with replacement) and drawn evenly."""
    top_k = experts.shape[1]
    steps = [experts[rng.integers(0, len(experts), rows)] for _ in range(draws)]
    evens = [even_routes(rng, rows, n_experts, top_k) for _ in range(draws)]
    record = {"busiest_quarter_share": round(busiest_quarter_share(experts, n_experts), 4),
              "experts_used": int(np.unique(experts).size)}
    for h in HEIGHTS:
        record[f"padded_per_route_{h}"] = round(float(np.mean([padded_rows_per_route(s, n_experts, h)
                                                                for s in steps])), 4)
        record[f"even_padded_per_route_{h}"] = round(float(np.mean([padded_rows_per_route(s, n_experts, h)
                                                                     for s in evens])), 4)
    return record


def kept_routes(engine, prompts, positions: int, slots: int, chunk: int) -> list[np.ndarray]:
    """Every row's chosen experts through a batched engine over `engine`: one (N, k) array a layer."""
    from cupy_getp.diff import BatchDiffShape, batch_diff_engine, batched_rows

    batched = batch_diff_engine(engine, prompts, positions, BatchDiffShape(slots=slots, chunk=chunk))
    routes = routes_by_layer(row.trace for row in batched_rows(batched, prompts, min(positions, batched.shape.n_ctx)))
    batched.free()
    return routes


def single_routes(engine, prompts, positions: int) -> list[np.ndarray]:
    """The same, one request at a time through a single-sequence engine (numpy: no batched mode)."""
    from cupy_getp.diff import reference_run

    def traces():
        for prompt in prompts:
            yield from reference_run(engine, prompt, positions).traces
            engine.reset()

    return routes_by_layer(traces())


def routes_by_layer(traces: Iterable) -> list[np.ndarray]:
    """The chosen experts of single-row `Trace`s, one (N, k) array a layer (the rest of each trace let go)."""
    rows = [[np.asarray(points["experts"]).reshape(-1) for points in trace.values] for trace in traces]
    return [np.stack(layer) for layer in zip(*rows)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="20b")
    parser.add_argument("--engine", default="cupy", help="cupy (batched) or numpy (one request at a time)")
    parser.add_argument("--positions", type=int, default=96, help="positions a request: its prompt, then greedy")
    parser.add_argument("--requests", type=int, default=32, help="standard prompts run (at most 32)")
    parser.add_argument("--rows", type=int, default=606, help="rows of the steps drawn (an H100 headline's)")
    parser.add_argument("--draws", type=int, default=64)
    parser.add_argument("--out", type=Path, default=None, help="also write the lines here")
    args = parser.parse_args()
    standard = encode_requests(harmony_tokenizer(), read_requests(ROOT / "data" / "input.txt"), args.positions,
                               "input.txt")[: args.requests]
    weights = Weights(SyntheticStore(preset(args.preset), seed=42, name=args.preset))
    c = weights.config
    with create_engine(weights, args.engine) as engine:
        engine.warm_up()
        if args.engine == "numpy":
            routes = single_routes(engine, standard, args.positions)
        else:
            routes = kept_routes(engine, standard, args.positions, len(standard), 16)
    rng = np.random.default_rng(0)
    lines = []
    for l, experts in enumerate(routes):
        lines.append({"bench": "routing", "layer": l, "routes": int(experts.size),
                      **layer_record(experts, c.n_experts, args.rows, args.draws, rng)})
    summary = {"bench": "routing_summary", "preset": args.preset, "engine": args.engine, "rows": args.rows,
               "requests": len(standard), "positions": args.positions}
    for key in lines[0]:
        if key.startswith(("busiest", "padded", "even")):
            summary[key] = round(float(np.mean([r[key] for r in lines])), 4)
    lines.append(summary)
    for line in lines:
        print(json.dumps(line), flush=True)
    if args.out is not None:
        args.out.write_text("".join(json.dumps(line) + "\n" for line in lines))


if __name__ == "__main__":
    main()
