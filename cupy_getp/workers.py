"""getp over several engine processes (`--gpus 0,1,...`): one worker process per GPU, each with its own
engine, all fed from one queue of chunks of requests (a worker that has room takes the next chunk: one that
runs faster takes more); the results come back to this process, which writes them in input order.

Workers are started with `spawn` (a fresh interpreter: a forked CUDA context is unusable), and each sets
its device (HIP_DEVICE_ID, read by `gpu/device.py`) before it creates its engine. Nothing in a worker is
GPU-specific: with no device (`--workers N`, the test-only way) the workers run whatever engine the run
names, the numpy engine on a CPU-only machine, through the same code.

Tasks, here -> workers, on one queue: ("chunk", numbers, prompts) for the run, then one ("end",) per worker
(no more requests), later one None per worker (free the engine and exit). Messages, workers -> here, on one
queue: ("note", worker, line), ("load", n), ("ready", worker), ("result", number, tokens), ("freed", worker),
("error", worker, line).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import queue
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .checkpoint import open_weights
from .engine.factory import create_engine
from .errors import GetpError
from .getp_session import GetpHooks, GetpOptions, Session, infer, run_fed, warm_up_engine
from .sampler import Sampler

POLL_S = 0.2  # how often a waiting side looks whether the other is still alive
CHUNKS_PER_WORKER = 16  # a batched engine's chunks: see `chunk_size`


@dataclass(frozen=True)
class WorkerJob:
    """What one worker needs, all of it picklable: the model as the user named it (a path or a preset:
    each worker opens it), the run's options with its resolved steps, the sampler's settings (the seed
    resolved, so that a clock seed is the same in every worker), and the requests it sizes its batched
    engine for (its even share of the run). `expert_parallel`: (ranks, NCCL unique id) where the workers are
    the ranks of one model (rank = `number`), None where each runs a whole model."""
    number: int
    device: int | None
    model: str
    options: GetpOptions
    sampling: tuple[float, float, int]
    share: int
    expert_parallel: tuple[int, object] | None = None


def chunk_size(n_requests: int, n_workers: int, one_at_a_time: bool) -> int:
    """Requests per chunk. An engine that runs requests one at a time takes one: the finest balance. A
    batched engine takes chunks as its slots free (`getp_session.run_fed`): small ones balance the end of
    the run best, each costs a message; CHUNKS_PER_WORKER of them make a worker's share."""
    if one_at_a_time:
        return 1
    return max(1, math.ceil(n_requests / (n_workers * CHUNKS_PER_WORKER)))


def parse_gpus(text: str, visible: Callable[[], int]) -> tuple[int, ...]:
    """'0,1,3' or 'all' (every device `visible()` counts): distinct device numbers, else GetpError."""
    count = visible()
    if text == "all":
        return tuple(range(count))
    words = text.split(",")
    if not all(w.isascii() and w.isdigit() for w in words):
        raise GetpError(f"--gpus expects device numbers separated by commas (e.g. 0,1) or all, got {text!r}")
    devices = tuple(int(w) for w in words)
    if len(set(devices)) != len(devices):
        raise GetpError(f"--gpus names a device twice: {text!r}")
    bad = [d for d in devices if d >= count]
    if bad:
        raise GetpError(f"--gpus: device {bad[0]} is out of range: {count} device(s) visible (0..{count - 1})")
    return devices


def visible_gpus() -> int:
    """How many GPUs this process sees, else GetpError saying why the GPU engine cannot run."""
    from .gpu.device import probe

    reason = probe()
    if reason:
        raise GetpError(f"--gpus needs the cupy engine, which cannot run: {reason}")
    import cupy

    return cupy.cuda.runtime.getDeviceCount()


def nccl_missing() -> str | None:
    """Why CuPy's NCCL (RCCL) binding cannot be used here, or None."""
    try:
        from cupy.cuda import nccl
    except ImportError as e:
        return f"CuPy's NCCL module does not load ({e}); install NCCL (e.g. pip install nvidia-nccl-cu13) or RCCL"
    if not getattr(nccl, "available", True):
        return "CuPy finds no NCCL library; install NCCL (e.g. pip install nvidia-nccl-cu13) or RCCL"
    return None


def use_device(device: int | None) -> None:
    """Make `device` the GPU engine's (gpu/device.py reads HIP_DEVICE_ID when the engine opens it)."""
    if device is not None:
        os.environ["HIP_DEVICE_ID"] = str(device)


# -- the worker process --------------------------------------------------------------------------------
def worker_main(job: WorkerJob, tasks, results) -> None:
    """Open and warm up an engine, run the requests it takes until the run's end, then free the engine
    when told. Any failure becomes one ("error", ...) message; the run's process decides what happens next."""
    # A terminal's ^C reaches the whole process group: the run's process handles it (and ends us).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    use_device(job.device)
    session = Session()
    try:
        weights = open_weights(job.model, job.options.seed, job.options.config)
        hooks = GetpHooks(echo=None, note=lambda line: results.put(("note", job.number, line)),
                          load_progress=lambda n: results.put(("load", n)))
        if job.expert_parallel is not None:
            _expert_parallel_rank(job, weights, session, hooks, tasks, results)
        else:
            session.model = create_engine(weights, job.options.engine, job.options.experts, job.options.steps,
                                          job.options.kv_cache)
            session.batched = warm_up_engine(session.model, job.share, job.options.steps, job.options, hooks)
            results.put(("ready", job.number))
            _serve(session, Sampler(*job.sampling), job.options.steps, tasks, results)
        _next_task(tasks)  # the None after the output is written (or the run's process gone)
        session.free()
        results.put(("freed", job.number))
    except BaseException as e:  # noqa: BLE001 (reported, whatever it is)
        results.put(("error", job.number, one_line(e)))
        session.free(failing=True)


def _expert_parallel_rank(job: WorkerJob, weights, session: Session, hooks: GetpHooks, tasks, results) -> None:
    """Rank `job.number` of an expert-parallel run: the dense weights and its slice of the experts, an NCCL
    communicator with the other ranks, its requests from the shared queue, stepped in lockstep."""
    from .gpu.engine import CupyEngine
    from .getp_session import describe_batch, run_lockstep

    n_ranks, unique_id = job.expert_parallel
    o = job.options
    session.model = model = CupyEngine(weights, o.experts, o.steps, expert_parallel=(job.number, n_ranks))
    model.warm_up(progress=hooks.load_progress)
    for line in model.storage_notes():
        hooks.note(line)
    comm = model.communicator(unique_id)
    session.batched = model.expert_parallel_batched(job.share, o.steps, comm, o.batch or None, o.precision, o.chunk,
                                                    o.kv_cache)
    hooks.note(describe_batch(session.batched))
    results.put(("ready", job.number))
    take = lambda block: _take_in_lockstep(tasks)  # noqa: E731
    with model.device.cuda_device:
        run_lockstep(session.batched, Sampler(*job.sampling), o.steps, [take],
                     lambda number, tokens: results.put(("result", number, tokens)))


def _serve(session: Session, sampler: Sampler, steps: int, tasks, results) -> None:
    """The run's requests, as this worker takes them, until its ("end",)."""
    def report(number: int, tokens: list[int]) -> None:
        results.put(("result", number, tokens))

    take = lambda block: _take(tasks, block)  # noqa: E731
    if session.batched is not None:
        run_fed(session.batched, sampler, steps, take, report)
        return
    while (given := take(True)) is not None:
        for number, prompt in given:
            report(number, infer(session, sampler, [prompt], steps, None)[0])


def _take(tasks, block: bool) -> list | None:
    """(number, prompt) pairs of the next chunk; [] if none is there now (unless `block`); None at the end."""
    if block:
        task = _next_task(tasks)
    else:
        try:
            task = tasks.get_nowait()
        except queue.Empty:
            return []
    if task is None or task[0] == "end":
        return None
    return list(zip(task[1], task[2]))


def _take_in_lockstep(tasks) -> list | None:
    """`_take` for a lockstep rank, which never waits (the other ranks step with it: it steps pad rows). With
    the run's process gone (killed) no end will come: None, so that every rank finishes its rows and exits."""
    given = _take(tasks, False)
    if given == [] and not _parent_alive():
        return None
    return given


def _parent_alive() -> bool:
    parent = multiprocessing.parent_process()
    return parent is None or parent.is_alive()


def _next_task(tasks):
    """The next task; None when the run's process is gone (killed: no one will ever send one)."""
    while True:
        try:
            return tasks.get(timeout=POLL_S * 5)
        except queue.Empty:
            if not _parent_alive():
                return None


def one_line(error: BaseException) -> str:
    """An error as one line: a GetpError's own words, anything else with its type."""
    text = " ".join(str(error).split())
    return text if isinstance(error, GetpError) else f"{type(error).__name__}: {text}" if text else type(error).__name__


# -- the run's side --------------------------------------------------------------------------------------
class WorkerPool:
    """The getp runner over worker processes: `warm_up()`, `infer(requests, numbers)`, `free(failing)`, as
    the in-process runner (`getp.py`). The workers run `worker_main`, looked up here when the pool is
    made: a test puts one that fails in its place (a module's function, which spawn sends by name)."""

    def __init__(self, jobs: Sequence[WorkerJob], hooks: GetpHooks, chunk: int):
        target = worker_main
        self.chunk = chunk
        context = multiprocessing.get_context("spawn")
        self.tasks, self.results = context.Queue(), context.Queue()
        self.jobs, self.hooks = list(jobs), hooks
        self.processes = [context.Process(target=target, args=(job, self.tasks, self.results), daemon=True,
                                          name=f"cupy-getp worker {job.number}") for job in jobs]
        self.ready: set[int] = set()
        self.freed: set[int] = set()
        self.done: dict[int, list[int]] = {}  # request number -> tokens
        self.on_request: Callable[[int], None] | None = None
        self.ended = False

    def warm_up(self) -> None:
        for process in self.processes:
            process.start()
        self._receive(lambda: len(self.ready) == len(self.jobs))

    def infer(self, requests: Sequence[Sequence[int]], numbers: Sequence[int]) -> list[list[int]]:
        """Every request's tokens, in the order given."""
        self.on_request = self.hooks.progress(len(requests)) if self.hooks.progress else None
        size = self.chunk
        for start in range(0, len(requests), size):
            self.tasks.put(("chunk", list(numbers[start:start + size]), list(requests[start:start + size])))
        for _ in self.processes:
            self.tasks.put(("end",))
        self._receive(lambda: len(self.done) == len(requests))
        return [self.done[n] for n in numbers]

    def free(self, failing: bool = False) -> None:
        """End every worker: after a success, each frees its engine and says so (its errors raised unless
        `failing`); after a failure, they are terminated. Once only."""
        if self.ended:
            return
        self.ended = clean = True
        try:
            if not failing:
                for _ in self.processes:
                    self.tasks.put(None)
                clean = False  # until every worker has said it freed its engine
                self._receive(lambda: len(self.freed) == len(self.jobs))
                clean = True
        finally:
            if failing or not clean:
                # Chunks no worker will take: this process must not wait at its exit to push them into
                # the pipe (a full pipe would never drain).
                self.tasks.cancel_join_thread()
            for process in self.processes:
                if process.pid is None:  # never started
                    continue
                if (failing or not clean) and process.is_alive():
                    process.terminate()
                process.join()

    def _receive(self, until: Callable[[], bool]) -> None:
        while not until():
            try:
                message = self.results.get(timeout=POLL_S)
            except queue.Empty:
                self._check_alive()
                continue
            self._handle(message)

    def _handle(self, message: tuple) -> None:
        kind, *body = message
        if kind == "error":
            raise GetpError(f"{self._where(body[0])}: {body[1]}")
        if kind == "result":
            self.done[body[0]] = body[1]
            if self.on_request:
                self.on_request(len(body[1]))
        elif kind == "load" and self.hooks.load_progress:
            self.hooks.load_progress(body[0] / len(self.jobs))  # the bar counts one model's weights
        elif kind == "note" and self.hooks.note:
            self.hooks.note(f"{self._where(body[0])}: {body[1]}")
        elif kind in ("ready", "freed"):
            (self.ready if kind == "ready" else self.freed).add(body[0])

    def _check_alive(self) -> None:
        """A worker gone without a word (killed, crashed): its last messages first, then GetpError."""
        for job, process in zip(self.jobs, self.processes):
            if job.number not in self.freed and not process.is_alive():
                self._drain()
                if job.number not in self.freed:
                    raise GetpError(f"{self._where(job.number)}: the worker process ended unexpectedly "
                                    f"(exit code {process.exitcode})")

    def _drain(self) -> None:
        while True:
            try:
                self._handle(self.results.get(timeout=POLL_S))
            except queue.Empty:
                return

    def _where(self, number: int) -> str:
        device = self.jobs[number].device
        return f"worker {number}" + (f" (GPU {device})" if device is not None else "")


def worker_pool(model: str, options: GetpOptions, sampler: Sampler, devices: Sequence[int | None],
                n_requests: int, one_at_a_time: bool, hooks: GetpHooks, expert_parallel: bool = False) -> WorkerPool:
    """A pool of one worker per entry of `devices` for a run of `n_requests`: a model each, or the ranks of
    one model whose experts they split (`expert_parallel`, over NCCL/RCCL)."""
    share = math.ceil(n_requests / len(devices))
    sampling = (sampler.temperature, sampler.topp, sampler.seed)
    ranks = None
    if expert_parallel:
        from cupy.cuda import nccl

        ranks = (len(devices), nccl.get_unique_id())
    jobs = [WorkerJob(i, device, model, options, sampling, share, ranks) for i, device in enumerate(devices)]
    return WorkerPool(jobs, hooks, chunk_size(n_requests, len(devices), one_at_a_time))
