"""Expert parallelism over NCCL against one GPU, bit for bit: the logits of whole decode steps of the same rows
through G rank processes (one GPU each, each holding 1/G of the experts, NCCL between them) and through one
process's `RowModel` (every expert, any storage: MXFP4 experts widen to the very BF16 values), compared as the
sha256 of each row's logits bits. The one-GPU side runs after the ranks have ended, on the first of their
devices: a model whose experts fit only when split (the 120b with BF16 experts) is compared with its MXFP4 run.

    python -m cupy_getp.gpu.ep_check 7m --gpus 0,1          # bench/gpu_session.sh's `eplogits120b`: the 120b

Rows: rank q's rows are requests q R .. (q + 1) R - 1 of the step (slot = request, position = step, random tokens).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import queue
import time
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Job:
    model: str
    device: int
    rank: int  # -1: one GPU, every expert (a RowModel)
    ranks: int
    unique_id: object
    experts: str
    precision: str
    rows: int  # a rank's rows (one GPU: every rank's)
    steps: int
    seed: int


def _tokens(job: Job, total: int, vocab_size: int) -> np.ndarray:
    return np.random.default_rng(job.seed).integers(0, vocab_size, (job.steps, total)).astype(np.int32)


def _digests(logits) -> list[str]:
    bits = np.ascontiguousarray(logits.get()).view(np.uint32)
    return [hashlib.sha256(row.tobytes()).hexdigest() for row in bits]


def run_job(job: Job, results) -> None:
    """One process: the one-GPU model or rank `job.rank`; puts (rank, digests [step][row], seconds, note)."""
    try:
        results.put((job.rank, *_run(job)))
    except BaseException as e:  # noqa: BLE001 (reported to the parent, whatever it is)
        results.put((job.rank, None, 0.0, " ".join(f"{type(e).__name__}: {e}".split())))  # one line


def _run(job: Job):
    from ..checkpoint import DEFAULT_SEED, open_weights
    from ..workers import use_device
    from .batch import RowModel, pack_rows
    from .batch_shape import BatchShape
    from .engine import CupyEngine
    from .ep_engine import ExpertParallelBatch

    use_device(job.device)
    weights = open_weights(job.model, DEFAULT_SEED, None)
    c = weights.config
    one_gpu = job.rank < 0
    engine = CupyEngine(weights, job.experts, job.steps, None if one_gpu else (job.rank, job.ranks))
    engine.warm_up()
    device = engine.device
    total = job.rows if one_gpu else job.ranks * job.rows
    tokens = _tokens(job, total, c.vocab_size)
    mine = slice(0, total) if one_gpu else slice(job.rank * job.rows, (job.rank + 1) * job.rows)
    with device.cuda_device, device.stream:
        shape = BatchShape(job.rows, job.rows, 1, job.steps)
        if one_gpu:
            model = RowModel(c, engine.w, engine.kernels, shape, job.precision)
            view, step = model.view(job.rows), model.step
        else:
            batch = ExpertParallelBatch(engine, shape, job.precision, engine.communicator(job.unique_id))
            view = batch.ep.shards[0].model.view(job.rows)
            step = lambda v: batch.ep.step([v])  # noqa: E731
        host = device.pinned((3, job.rows), np.int32)
        digests, start = [], time.perf_counter()
        for s in range(job.steps):
            row_tokens = tokens[s, mine]
            pack_rows(host, job.rows, np.arange(job.rows), np.full(job.rows, s), row_tokens)
            device.upload(view.rows_packed, host)
            step(view)
            digests.append(_digests(view.logits))
        seconds = time.perf_counter() - start
    note = f"{engine.experts.describe()}; device weights {engine.w.nbytes():,} bytes"
    engine.finish()
    return digests, seconds, note


def compare(model: str, devices: list[int], experts: str, one_gpu_experts: str, precision: str, rows: int,
            steps: int, seed: int = 1, timeout_s: float = 540.0) -> dict:
    """G = len(devices) ranks of `rows` rows each, then one GPU of G rows: {equal, differing rows, ...}. A side
    that takes longer than `timeout_s` (ranks waiting in NCCL for one that stalled) ends as a failure."""
    from cupy.cuda import nccl

    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    ranks, unique_id = len(devices), nccl.get_unique_id()

    def run(jobs: list[Job]) -> dict:
        """rank -> (digests, seconds, note) of each job's process (a process gone without a word: its note)."""
        processes = [context.Process(target=run_job, args=(job, results), daemon=True) for job in jobs]
        for p in processes:
            p.start()
        got: dict = {}
        deadline = time.monotonic() + timeout_s
        while len(got) < len(jobs):
            if time.monotonic() > deadline:
                got.update({job.rank: (None, 0.0, f"no result after {timeout_s:.0f} s") for job in jobs
                            if job.rank not in got})
            try:
                rank, *rest = results.get(timeout=1.0)
                got[rank] = rest
            except queue.Empty:
                for job, p in zip(jobs, processes):
                    if not p.is_alive() and job.rank not in got and results.empty():
                        got[job.rank] = (None, 0.0, f"the process ended without a result (exit code {p.exitcode})")
            if any(r[0] is None for r in got.values()):  # its peers would wait for it in NCCL forever
                for job, p in zip(jobs, processes):
                    if job.rank not in got:
                        got[job.rank] = (None, 0.0, "terminated: another rank failed")
                    if p.is_alive():
                        p.terminate()
        for p in processes:
            p.join()
        return got

    start = time.perf_counter()
    split = run([Job(model, d, q, ranks, unique_id, experts, precision, rows, steps, seed)
                 for q, d in enumerate(devices)])
    split_s = time.perf_counter() - start
    one = run([Job(model, devices[0], -1, 1, None, one_gpu_experts, precision, ranks * rows, steps, seed)])
    failures = {rank: note for rank, (digests, _, note) in {**split, **one}.items() if digests is None}
    record = {"model": model, "devices": devices, "experts": experts, "one_gpu_experts": one_gpu_experts,
              "precision": precision, "rows_per_rank": rows, "steps": steps, "wall_s_ranks": round(split_s, 1)}
    if failures:
        return {**record, "equal": False, "failures": failures}
    got = [sum((split[q][0][s] for q in range(ranks)), []) for s in range(steps)]
    want = one[-1][0]
    differing = sum(a != b for g, w in zip(got, want) for a, b in zip(g, w))
    return {**record, "equal": differing == 0, "rows_compared": steps * ranks * rows, "rows_differing": differing,
            "steps_s_ranks": round(max(split[q][1] for q in range(ranks)), 3), "steps_s_one_gpu": round(one[-1][1], 3),
            "notes": {str(k): v[2] for k, v in {**split, **one}.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--gpus", default="0,1")
    parser.add_argument("--experts", default="bf16", help="the ranks' expert storage")
    parser.add_argument("--one-gpu-experts", default="bf16", help="the one-GPU run's expert storage")
    parser.add_argument("--precision", default="exact")
    parser.add_argument("--rows", type=int, default=4, help="rows a rank")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    record = compare(args.model, [int(d) for d in args.gpus.split(",")], args.experts, args.one_gpu_experts,
                     args.precision, args.rows, args.steps)
    print(json.dumps(record))
    raise SystemExit(0 if record["equal"] else 1)


if __name__ == "__main__":
    main()
