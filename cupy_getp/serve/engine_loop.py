"""One thread owns the engine: it steps the scheduler while requests come and go.

HTTP handlers `submit` a `Job` and read its events (`Token`, then one `End`) from an asyncio queue
that the engine thread fills; `cancel` ends a job whose client left, freeing its slot before the next
step. A batched engine (the GPU's) runs many requests per step; a single-sequence engine (numpy) runs
as a batched engine of one slot and one row, so its requests are served in turn.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..engine.scheduler import Request, Scheduler
from ..generation import check_logits
from ..sampler import Sampler

log = logging.getLogger("cupy_getp.serve")

IDLE_WAIT_S = 0.05  # how often an idle loop looks at the drain deadline


@dataclass(frozen=True)
class Token:
    token: int


@dataclass(frozen=True)
class End:
    reason: str  # "stop" (a stop token), "length" (max_tokens or the context), "abort" (shutdown), "error"
    message: str = ""


class QueueFull(Exception):
    """More requests wait than the queue takes (HTTP 429)."""


class Draining(Exception):
    """The server is shutting down and takes no new request (HTTP 503)."""


@dataclass(eq=False)
class Job:
    """One generation: what to run, and where its events go (an asyncio queue of the server's loop)."""

    prompt: list[int]
    max_tokens: int | None  # None: up to the context
    stop: frozenset[int]
    sampler: Sampler
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    seq: Request | None = None  # the scheduler's, once the engine thread took the job



def deliver(events: list[tuple[Job, object]]) -> None:
    """On the server's loop: each event to its job's queue."""
    for job, event in events:
        job.events.put_nowait(event)


def post(events: list[tuple[Job, object]]) -> None:
    """From the engine thread: a step's events in one call per event loop (not one wake-up a token)."""
    by_loop: dict[asyncio.AbstractEventLoop, list] = {}
    for job, event in events:
        by_loop.setdefault(job.loop, []).append((job, event))
    for loop, batch in by_loop.items():
        if not loop.is_closed():
            loop.call_soon_threadsafe(deliver, batch)


class SequentialStepper:
    """A single-sequence engine (numpy) as a batched one of one slot and one row per step: one
    request at a time, fed from position 0 like getp's `decode` (earlier cache entries are never read)."""

    n_slots = max_rows = max_chunk = 1

    def __init__(self, engine):
        self.engine = engine

    def bind_thread(self) -> None:
        """The numpy engine needs nothing of the thread that runs it."""

    def next_tokens(self, rows, samplers) -> np.ndarray:
        token, pos = int(rows.tokens[0]), int(rows.positions[0])
        logits = self.engine.forward(token, pos)
        check_logits(self.engine, token, pos, logits)
        if not rows.wants_token[0]:
            return np.zeros(1, np.int32)
        sample = samplers[rows.owners[0].index] if samplers is not None else np.argmax
        return np.array([sample(logits)], np.int32)


class BatchedStepper:
    """The GPU's batched engine (`gpu/batch.py`): greedy tokens from the device, others drawn on the
    host by each request's own sampler."""

    def __init__(self, batched):
        self.batched = batched
        shape = batched.shape
        self.n_slots, self.max_rows, self.max_chunk = shape.n_slots, shape.max_rows, shape.max_chunk

    def bind_thread(self) -> None:
        """CuPy's current device and stream are per thread: the engine thread takes the engine's."""
        device = self.batched.device
        device.cuda_device.use()
        device.stream.use()

    def next_tokens(self, rows, samplers) -> np.ndarray:
        return self.batched.next_tokens(rows, samplers)


class EngineLoop:
    """The scheduler and its stepper, driven by one thread; every other thread talks to it through
    `submit`, `cancel` and `drain`, which only touch the inbox under the lock."""

    def __init__(self, stepper, steps: int, stop: frozenset[int], max_queue: int, metrics):
        self.stepper, self.steps, self.max_queue, self.metrics = stepper, steps, max_queue, metrics
        self.scheduler = Scheduler([], steps, stepper.n_slots, stepper.max_rows, stepper.max_chunk, stop)
        self.jobs: dict[int, Job] = {}  # request index -> job, engine thread only
        self.inbox: deque[Job] = deque()
        self.cancelled: list[Job] = []
        self.waiting = 0  # jobs submitted and not yet in a slot
        self.free_slots = stepper.n_slots  # slots no job takes at the next step: so many wait for none
        self.failed: str | None = None  # why the engine thread stopped, when it did
        self.lock = threading.Condition()
        self.deadline: float | None = None  # draining: monotonic time when running jobs are ended
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="engine-loop", daemon=True)

    # -- any thread --------------------------------------------------------------------------------
    @property
    def n_slots(self) -> int:
        return self.stepper.n_slots

    def start(self) -> None:
        self.thread.start()

    def submit(self, job: Job) -> None:
        with self.lock:
            if self.failed is not None:
                raise Draining(f"the engine stopped: {self.failed}")
            if self.deadline is not None:
                raise Draining("the server is shutting down")
            queued = self.waiting - self.free_slots  # the ones a free slot takes do not queue
            if queued >= self.max_queue:
                raise QueueFull(f"{queued} requests are waiting for a slot, the queue's limit")
            self.waiting += 1
            self.inbox.append(job)
            self.metrics.queue_depth.set(self.waiting)
            self.lock.notify()

    def cancel(self, job: Job) -> None:
        with self.lock:
            self.cancelled.append(job)
            self.lock.notify()

    def drain(self, grace_s: float) -> None:
        """Take no new job; end those still running after `grace_s` seconds."""
        with self.lock:
            if self.deadline is None:
                self.deadline = time.monotonic() + grace_s
            self.lock.notify()

    def stop(self, timeout_s: float = 10.0) -> None:
        """End every job now and stop the thread."""
        with self.lock:
            self.stopping = True
            self.deadline = self.deadline or time.monotonic()
            self.lock.notify()
        if self.thread.is_alive():
            self.thread.join(timeout_s)

    # -- the engine thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        """The loop, guarded: anything that escapes it ends every job with an error and marks the loop failed
        (/health answers 503, new requests are refused) instead of leaving streams waiting forever."""
        try:
            self._loop()
        except BaseException as e:
            log.exception("the engine loop stopped")
            with self.lock:
                self.failed = f"{type(e).__name__}: {e}"
                orphans, self.inbox = list(self.inbox), deque()
            end = End("error", f"the engine stopped: {self.failed}")
            post([(job, end) for job in [*self.jobs.values(), *orphans]])
            self.jobs.clear()

    def _loop(self) -> None:
        self.stepper.bind_thread()
        while True:
            self._take_inbox()
            if self.deadline is not None and time.monotonic() >= self.deadline:
                self._end_all(End("abort", "the server is shutting down"))
                if self.stopping:
                    return
            if self.scheduler.done:
                with self.lock:
                    if not self.inbox and not self.cancelled and not self.stopping:
                        self.lock.wait(IDLE_WAIT_S)
                continue
            self._step()

    def _take_inbox(self) -> None:
        with self.lock:
            new, self.inbox = list(self.inbox), deque()
            cancelled, self.cancelled = self.cancelled, []
        for job in new:
            job.seq = self.scheduler.add(job.prompt, job.max_tokens, job.stop)
            self.jobs[job.seq.index] = job
        for job in cancelled:
            if job.seq is not None and self.jobs.pop(job.seq.index, None) is not None:
                self.scheduler.cancel(job.seq)
        if new or cancelled:
            self._publish()

    def _step(self) -> None:
        samplers = self._samplers()
        start = time.perf_counter()
        try:
            rows = self.scheduler.step(lambda r: self.stepper.next_tokens(r, samplers))
        except Exception as e:  # the step's requests cannot go on; the loop serves the next ones
            log.exception("engine step failed")
            self._end_all(End("error", f"{type(e).__name__}: {e}"))
            return
        self.metrics.step_seconds.observe(time.perf_counter() - start)
        sampled = {seq.index: seq for seq, wants in zip(rows.owners, rows.wants_token) if wants}.values()
        events = [(self.jobs[seq.index], Token(seq.output[-1])) for seq in sampled]
        for seq in self.scheduler.finished:
            events.append((self.jobs.pop(seq.index), End("stop" if seq.output[-1] in seq.stop else "length")))
        post(events)
        self._publish()

    def _samplers(self):
        """None when every running request is greedy (the device's argmax), else request -> sampler."""
        if all(job.sampler.temperature == 0 for job in self.jobs.values()):
            return None
        return {index: job.sampler for index, job in self.jobs.items()}

    def _end_all(self, end: End) -> None:
        for job in self.jobs.values():
            self.scheduler.cancel(job.seq)
        post([(job, end) for job in self.jobs.values()])
        self.jobs.clear()
        self._publish()

    def _publish(self) -> None:
        """Queue depth and running slots as of the next step: waiting requests that a free slot takes at
        its start count as running already (a step may be long; the queue's limit should not wait for it)."""
        scheduler = self.scheduler
        admitted = min(len(scheduler.waiting), len(scheduler.free_slots))
        with self.lock:
            self.waiting = len(self.inbox) + len(scheduler.waiting) - admitted
            self.free_slots = len(scheduler.free_slots) - admitted
        self.metrics.queue_depth.set(self.waiting)
        self.metrics.running.set(len(scheduler.active) + admitted)


def stepper_for(engine, steps: int, slots: int = 0, precision: str | None = None, kv_cache: str = "fp32"):
    """The stepper of a warmed-up engine: its batched engine where it has one (the GPU's: `slots`
    request slots, 0 = as many as fit, its KV cache of `kv_cache` elements), else one request at a time."""
    # overlap=False: a server's requests join and leave between steps, and may sample on the host
    batched = engine.batched(slots or 1024, steps, slots=slots or None, precision=precision, kv_cache=kv_cache,
                             overlap=False)
    return SequentialStepper(engine) if batched is None else BatchedStepper(batched)


def prompt_fits(prompt: Sequence[int], max_tokens: int | None, steps: int) -> str | None:
    """Why a prompt and a token limit do not fit the context of `steps` positions, or None. The last
    sampled token is never fed, so a prompt of L tokens leaves room for steps - L + 1 more."""
    room = steps - len(prompt) + 1
    if room < 1:
        return f"the prompt is {len(prompt)} tokens, longer than the context of {steps} positions"
    if max_tokens is not None and max_tokens > room:
        return (f"max_tokens {max_tokens} is past the context: a prompt of {len(prompt)} tokens leaves room for "
                f"{room} in {steps} positions")
    return None
