"""The host's work between two getp steps: the scheduler's rows and bookkeeping, with no GPU.

A getp step needs the last step's tokens, so the GPU waits while the host records them and builds the next
step's rows: at 1024 decode rows that is once a row in Python, every step. This times `run_scheduled` over a
stand-in for the GPU step that returns its tokens at once (never a stop token, so every request runs its whole
budget, as the headline's synthetic weights do), with the headline's own bookkeeping (`rows.positions.mean()`,
`rows.wants_token.sum()`), and the check of the tokens that `read_next_tokens` makes. It runs the `cupy_getp`
found first on sys.path: give PYTHONPATH another tree's root to time that tree in the same command.

    python bench/scheduler_host.py [--requests 1024] [--steps 1024] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.append(str(Path(__file__).resolve().parents[1]))  # after PYTHONPATH: another tree may come first


def host_seconds(n_requests: int, steps: int, seed: int = 0) -> tuple[float, int]:
    """(seconds, steps run) of run_scheduled over n_requests prompts of 10..59 tokens, one slot each."""
    from cupy_getp.engine.scheduler import Scheduler, run_scheduled

    rng = np.random.default_rng(seed)
    prompts = [rng.integers(0, 200_000, rng.integers(10, 60)).tolist() for _ in range(n_requests)]
    scheduler = Scheduler(prompts, steps, n_requests, n_requests + 128, 128, frozenset({200_002}))
    count = 0

    def step(rows):
        nonlocal count
        count += 1
        tokens = np.full(len(rows), 5, np.int32)  # as downloaded: int32, one a row
        wanted = np.flatnonzero(rows.wants_token)
        assert not (tokens[wanted] < 0).any()  # read_next_tokens' check for NaN logits
        float(rows.positions.mean()), int(rows.wants_token.sum())  # the headline's own bookkeeping
        return tokens

    begin = time.perf_counter()
    run_scheduled(scheduler, step)
    return time.perf_counter() - begin, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import cupy_getp

    runs = [host_seconds(args.requests, args.steps) for _ in range(args.repeats)]
    best, count = min(runs)
    print(json.dumps({"bench": "scheduler_host", "tree": str(Path(cupy_getp.__file__).parents[1]),
                      "requests": args.requests, "steps_run": count, "seconds": [round(s, 3) for s, _ in runs],
                      "ms_a_step": round(1e3 * best / count, 4)}))


if __name__ == "__main__":
    main()
