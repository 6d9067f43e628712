"""One engine's part of a getp run, wherever it runs (this process or a worker process: `workers.py`):
its options and hooks, its warm-up, its requests through the engine, and its freeing; and the three
timing lines of spec section 4.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .checkpoint import DEFAULT_SEED
from .engine.base import Engine
from .engine.scheduler import Scheduler, run_overlapped, run_scheduled
from .errors import GetpError
from .generation import decode
from .sampler import RequestSamplers, Sampler
from .tokenizer import STOP_TOKENS

IDLE_S = 0.001  # run_lockstep's wait when no rank of the run had rows to step


@dataclass(frozen=True)
class GetpOptions:
    """How getp runs: the engine, the positions per request, a preset's weights and config overrides, the
    batched engine's request slots (None or 0: as many as free device memory allows), prompt positions of
    one request per step (None: gpu/batch_shape.py's MAX_CHUNK), precision and KV cache element (fp32, bf16), and
    the GPU engine's expert storage (bf16, mxfp4 or auto: `gpu/experts.py`)."""
    engine: str = "auto"
    steps: int = 1024
    seed: int = DEFAULT_SEED
    config: dict | None = None
    batch: int | None = None
    precision: str | None = None
    experts: str = "auto"
    chunk: int | None = None
    kv_cache: str = "fp32"

    def __post_init__(self) -> None:
        if self.chunk is not None:
            from .gpu.batch_shape import MAX_CHUNK

            if not 1 <= self.chunk <= MAX_CHUNK:
                raise GetpError(f"the prompt chunk (--chunk) must be in 1..{MAX_CHUNK}, got {self.chunk}")


@dataclass(frozen=True)
class GetpHooks:
    """Who hears what: `echo` the three timing lines; `note` what an odd but valid run costs and what the
    batched engine chose; `progress(n_requests)` returns a per-request callback; `load_progress(n)` hears
    of weights loaded."""
    echo: Callable[[str], None] = print
    note: Callable[[str], None] | None = None
    progress: Callable[[int], Callable[[int], None]] | None = None
    load_progress: Callable[[int], None] | None = None


def warm_up_line(seconds: float) -> str:
    return f"warm up elapsed time(s): {seconds:f}"


def elapsed_line(seconds: float, generated: int) -> str:
    return (f"elapsed time(s): {seconds:f}, achieved throughput TPS (tok/s): "
            f"{generated / seconds if seconds > 0 else 0.0:f}")


def finish_line(seconds: float) -> str:
    return f"finish elapsed time(s): {seconds:f}"


def format_output(results: Sequence[Sequence[int]]) -> str:
    return "".join(" ".join(map(str, tokens)) + "\n" for tokens in results)


def run_requests(engine: Engine, sampler: Sampler, requests: Sequence[Sequence[int]], steps: int,
                 on_request: Callable[[int], None] | None = None) -> list[list[int]]:
    """One request after another, each from position 0 (earlier cache entries are never read:
    attention stops at pos). The original's flow, and its single shared sampler."""
    results = []
    for prompt in requests:
        results.append(list(decode(engine, sampler, prompt, steps, STOP_TOKENS)))
        if on_request:
            on_request(len(results[-1]))
    return results


def run_batched(batched, sampler: Sampler, requests: Sequence[Sequence[int]], steps: int,
                on_request: Callable[[int], None] | None = None, stop: frozenset[int] = STOP_TOKENS,
                numbers: Sequence[int] | None = None) -> list[list[int]]:
    """Every request through a batched engine with continuous batching (`engine/scheduler.py`).
    Greedy tokens come from the device; above temperature 0 each request samples with its own
    generator (`RequestSamplers`), seeded by its number in the whole input (`numbers`, where the
    requests are a part of it)."""
    shape = batched.shape
    scheduler = Scheduler(requests, steps, shape.n_slots, shape.max_rows, shape.max_chunk, stop)
    samplers = None if sampler.temperature == 0 else RequestSamplers(sampler, numbers)
    if samplers is None and batched.overlap:  # greedy steps run ahead of the host (unless CUPY_GETP_OVERLAP=0)
        return run_overlapped(scheduler, batched.launch, lambda pending: batched.collect(pending, numbers),
                              on_request)
    return run_scheduled(scheduler, lambda rows: batched.next_tokens(rows, samplers, numbers), on_request)


def feed(scheduler: Scheduler, take: Callable[[bool], list | None], may_wait: bool, numbers: dict[int, int]) -> bool:
    """Requests from `take(block)` into the scheduler while fewer wait than slots are free (no more than the
    next step can start: the rest stay in the queue for the other workers), blocking only where `may_wait`
    and the scheduler has nothing to run; each request's number in the input kept in `numbers` by scheduler
    index. False once `take` says there will be no more."""
    while len(scheduler.waiting) < len(scheduler.free_slots):
        given = take(may_wait and scheduler.done)
        if given is None:
            return False
        if not given:
            break
        for number, prompt in given:
            numbers[scheduler.add(prompt).index] = number
    return True


def run_fed(batched, sampler: Sampler, steps: int, take: Callable[[bool], list | None],
            on_result: Callable[[int, list[int]], None]) -> None:
    """Continuous batching fed while it runs (a worker of `workers.py`, from the run's shared queue).
    Before each step, while fewer requests wait than slots are free (taking no more than the step can start:
    the rest stay in the queue for the other workers), `take(block)` gives more as (number,
    prompt) pairs: [] when there are none now (it blocks only when nothing is left to run), None once
    there will be no more. `on_result(number, tokens)` hears each request as it ends. A request's number
    in the whole input seeds its generator (above temperature 0), as in `run_batched` of the whole input."""
    shape = batched.shape
    scheduler = Scheduler([], steps, shape.n_slots, shape.max_rows, shape.max_chunk, STOP_TOKENS)
    numbers: dict[int, int] = {}  # the scheduler's index of a request -> its number in the input
    samplers = None if sampler.temperature == 0 else RequestSamplers(sampler, numbers)
    more = True
    while True:
        more = more and feed(scheduler, take, True, numbers)
        if scheduler.done:
            if not more:
                return
            continue
        scheduler.step(lambda rows: batched.next_tokens(rows, samplers, numbers))
        for seq in scheduler.finished:
            on_result(numbers[seq.index], seq.output)


def run_lockstep(batched, sampler: Sampler, steps: int, takes: Sequence[Callable[[bool], list | None]],
                 on_result: Callable[[int, list[int]], None]) -> None:
    """Continuous batching on the expert-parallel ranks of this process (`gpu/ep_engine.py`), each fed by its
    `take` as `run_fed`'s (never blocking: the ranks step together, a rank with nothing to run steps pad
    rows), in lockstep with the ranks of the other processes, until every rank of the run has finished."""
    shape = batched.shape
    schedulers = [Scheduler([], steps, shape.n_slots, shape.max_rows, shape.max_chunk, STOP_TOKENS) for _ in takes]
    numbers: list[dict[int, int]] = [{} for _ in takes]  # per local rank: scheduler index -> number in the input
    samplers = [None if sampler.temperature == 0 else RequestSamplers(sampler, n) for n in numbers]
    more = [True] * len(takes)
    while True:
        more = [m and feed(s, take, False, n) for m, s, take, n in zip(more, schedulers, takes, numbers)]
        rows = [None if s.done else s.next_rows() for s in schedulers]
        views = batched.step(rows, [not m and s.done for m, s in zip(more, schedulers)])
        if views is None:
            return
        if not any(v is not None for v in views):
            time.sleep(IDLE_S)  # no rank had rows: more requests are on their way to some of them
        for q, (scheduler, r, v) in enumerate(zip(schedulers, rows, views)):
            if r is None or v is None:
                continue
            scheduler.record(r, batched.next_tokens(q, v, r, samplers[q], numbers[q]))
            for seq in scheduler.finished:
                on_result(numbers[q][seq.index], seq.output)


@dataclass
class Session:
    """The engine of one getp run and its batched engine, freed on one path whatever happens."""
    model: Engine | None = None
    batched: object | None = None

    def free(self, failing: bool = False) -> None:
        """Free the batched engine, then the engine, whatever the first does. While another error is on
        its way out (`failing`), an error of freeing (a device already in a bad state) does not replace it."""
        try:
            try:
                if self.batched is not None:
                    self.batched.free()
            finally:
                if self.model is not None:
                    self.model.finish()
        except Exception:
            if not failing:
                raise


def note(hooks: GetpHooks, line: str) -> None:
    if hooks.note is not None:
        hooks.note(line)


def warm_up_engine(model: Engine, n_requests: int, steps: int, options: GetpOptions, hooks: GetpHooks):
    """Load the weights, then size the batched engine (None where the engine runs one request at a time)."""
    model.warm_up(progress=hooks.load_progress)
    for line in model.storage_notes():
        note(hooks, line)
    batched = model.batched(n_requests, steps, slots=options.batch or None, precision=options.precision,
                            max_chunk=options.chunk, kv_cache=options.kv_cache)
    if batched is not None:
        note(hooks, describe_batch(batched))
    if batched is None and (options.batch or options.chunk or options.precision or options.kv_cache != "fp32"):
        note(hooks, f"--batch, --chunk, --precision and --kv-cache apply to the GPU engine; the {model.name} engine "
                     f"runs one request at a time")
    return batched


def infer(session: Session, sampler: Sampler, requests: Sequence[Sequence[int]], steps: int,
           on_request: Callable[[int], None] | None, numbers: Sequence[int] | None = None) -> list[list[int]]:
    if session.batched is not None:
        return run_batched(session.batched, sampler, requests, steps, on_request, numbers=numbers)
    return run_requests(session.model, sampler, requests, steps, on_request)


def describe_batch(batched) -> str:
    """What the batched engine chose, in one line: slots, rows, precision and the products' kernels,
    graphs."""
    shape = batched.shape
    graphs = "CUDA graphs" if batched.uses_graphs else "eager launches"
    return (f"batched engine: {shape.n_slots} request slots, up to {shape.max_rows} rows per step, "
            f"precision {batched.precision} ({batched.products_path}), {shape.kv_cache} KV cache, {graphs}")
