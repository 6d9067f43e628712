"""The server's engine loop without HTTP: requests submitted while it runs join the batch as slots
free (the batched engine's orchestration on the CPU, with tests/batch_fakes.py's stand-ins), each gets
exactly the tokens of the reference run alone; a full queue and a draining loop refuse; drain ends
running requests with "abort"."""

from __future__ import annotations

import asyncio
import threading

import pytest

pytest.importorskip("prometheus_client", reason="the server needs the serve extra: pip install '.[serve]'")

from cupy_getp.checkpoint import SyntheticStore, Weights  # noqa: E402
from cupy_getp.engine.factory import create_engine  # noqa: E402
from cupy_getp.getp import run_requests  # noqa: E402
from cupy_getp.sampler import Sampler  # noqa: E402
from cupy_getp.serve.engine_loop import (BatchedStepper, Draining, End, EngineLoop, Job, QueueFull,  # noqa: E402
                                         SequentialStepper, stepper_for)
from cupy_getp.serve.metrics import Metrics  # noqa: E402

from batch_fakes import FakeEngine, fake_cupy  # noqa: E402
from conftest import TINY  # noqa: E402
from test_batch_model import prompts  # noqa: E402

STEPS, NO_STOP = 24, frozenset()


@pytest.fixture
def cupy_stand_in(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)


@pytest.fixture(scope="module")
def weights():
    return Weights(SyntheticStore(TINY, seed=9))


def reference(weights, requests, steps=STEPS):
    engine = create_engine(weights, "numpy")
    engine.warm_up()
    return run_requests(engine, Sampler(0.0, 0.9, 1), requests, steps)


class Spy:
    """A stepper that records how many requests each step ran."""

    def __init__(self, stepper):
        self.stepper, self.per_step = stepper, []
        self.n_slots, self.max_rows, self.max_chunk = stepper.n_slots, stepper.max_rows, stepper.max_chunk

    def bind_thread(self):
        self.stepper.bind_thread()

    def next_tokens(self, rows, samplers):
        self.per_step.append(len({s.index for s in rows.owners}))
        return self.stepper.next_tokens(rows, samplers)


async def generate(loop: EngineLoop, prompt, delay: float = 0.0, max_tokens=None):
    await asyncio.sleep(delay)
    job = Job(prompt, max_tokens, NO_STOP, Sampler(0.0, 0.9, 1), asyncio.get_running_loop())
    loop.submit(job)
    tokens = []
    while not isinstance(event := await job.events.get(), End):
        tokens.append(event.token)
    return tokens, event.reason


def run_loop(loop: EngineLoop, coroutine):
    loop.start()
    try:
        return asyncio.run(coroutine)
    finally:
        loop.stop()


def test_requests_joining_while_it_runs_get_their_tokens_alone(cupy_stand_in, weights):
    from cupy_getp.gpu.batch import BatchedEngine
    from cupy_getp.gpu.batch_shape import BatchShape

    requests = prompts(9, 3)
    batched = BatchedEngine(FakeEngine(weights), BatchShape(3, 3 + 3, 3, STEPS), "exact", use_graphs=False)
    spy = Spy(BatchedStepper(batched))
    loop = EngineLoop(spy, STEPS, NO_STOP, max_queue=64, metrics=Metrics(3))

    async def all_requests():
        return await asyncio.gather(*(generate(loop, p, 0.02 * i) for i, p in enumerate(requests)))

    results = run_loop(loop, all_requests())
    assert [tokens for tokens, _ in results] == reference(weights, requests)
    assert {reason for _, reason in results} == {"length"}
    assert max(spy.per_step) == 3  # the slots were shared, and never more than them


def test_one_request_at_a_time_with_max_tokens(weights):
    engine = create_engine(weights, "numpy")
    engine.warm_up()
    loop = EngineLoop(SequentialStepper(engine), STEPS, NO_STOP, max_queue=64, metrics=Metrics(1))
    requests = prompts(4, 8)

    async def all_requests():
        return await asyncio.gather(*(generate(loop, p, max_tokens=3) for p in requests))

    results = run_loop(loop, all_requests())
    assert [tokens for tokens, _ in results] == [r[:3] for r in reference(weights, requests)]


class Blocked:
    """A one-slot stepper that waits for `release` before each step."""

    n_slots = max_rows = max_chunk = 1

    def __init__(self):
        self.release, self.entered = threading.Event(), threading.Event()

    def bind_thread(self):
        pass

    def next_tokens(self, rows, samplers):
        self.entered.set()
        self.release.wait(10)
        import numpy as np

        return np.ones(len(rows), np.int32)


def test_full_queue_and_draining_refuse_and_drain_aborts():
    stepper = Blocked()
    loop = EngineLoop(stepper, STEPS, NO_STOP, max_queue=1, metrics=Metrics(1))

    async def scenario():
        running = asyncio.ensure_future(generate(loop, [1, 2]))
        await asyncio.get_running_loop().run_in_executor(None, stepper.entered.wait, 10)
        queued = asyncio.ensure_future(generate(loop, [3]))
        await asyncio.sleep(0.05)
        with pytest.raises(QueueFull):
            loop.submit(Job([4], None, NO_STOP, Sampler(0.0), asyncio.get_running_loop()))
        loop.drain(0.0)
        with pytest.raises(Draining):
            loop.submit(Job([4], None, NO_STOP, Sampler(0.0), asyncio.get_running_loop()))
        stepper.release.set()
        return await asyncio.wait_for(asyncio.gather(running, queued), 10)

    (_, first), (tokens, second) = run_loop(loop, scenario())
    assert first == second == "abort" and tokens == []


class FailsOnce:
    """A one-slot stepper whose first step fails as a NaN would (then it works)."""

    n_slots = max_rows = max_chunk = 1

    def __init__(self):
        self.failed = False

    def bind_thread(self):
        pass

    def next_tokens(self, rows, samplers):
        import numpy as np

        from cupy_getp.errors import NumericalError

        if not self.failed:
            self.failed = True
            raise NumericalError("non-finite logits at position 0")
        return np.full(len(rows), 5, np.int32)


def test_a_failing_step_ends_its_requests_with_the_error_and_the_loop_goes_on():
    loop = EngineLoop(FailsOnce(), STEPS, NO_STOP, max_queue=4, metrics=Metrics(1))

    async def scenario():
        failed = await generate(loop, [1, 2])
        return failed, await generate(loop, [3], max_tokens=2)

    (tokens, reason), after = run_loop(loop, scenario())
    assert reason == "error" and tokens == []
    assert after == ([5, 5], "length")


class BlockedWide(Blocked):
    """Blocked with eight slots."""

    n_slots = max_rows = max_chunk = 8


def test_requests_a_free_slot_will_take_do_not_count_against_the_queue():
    """Eight slots, one busy mid-step, --max-queue 2: seven requests go to the free slots at the next step
    and two more may wait; the tenth is refused."""
    stepper = BlockedWide()
    loop = EngineLoop(stepper, STEPS, NO_STOP, max_queue=2, metrics=Metrics(8))

    async def scenario():
        running = asyncio.ensure_future(generate(loop, [1, 2], max_tokens=1))
        await asyncio.get_running_loop().run_in_executor(None, stepper.entered.wait, 10)
        jobs = [Job([3], 1, NO_STOP, Sampler(0.0), asyncio.get_running_loop()) for _ in range(10)]
        for job in jobs[:9]:
            loop.submit(job)
        with pytest.raises(QueueFull):
            loop.submit(jobs[9])
        stepper.release.set()
        ends = [await asyncio.wait_for(_end(job), 10) for job in jobs[:9]]
        return await asyncio.wait_for(running, 10), ends

    (_, first), ends = run_loop(loop, scenario())
    assert first == "length" and ends == ["length"] * 9


async def _end(job):
    while not isinstance(event := await job.events.get(), End):
        pass
    return event.reason


class Crashes(Blocked):
    """A stepper whose step escapes the step's own error handling (not an Exception)."""

    def next_tokens(self, rows, samplers):
        raise SystemExit("the device went away")


def test_an_engine_loop_that_stops_ends_every_job_and_refuses_new_ones():
    loop = EngineLoop(Crashes(), STEPS, NO_STOP, max_queue=4, metrics=Metrics(1))

    async def scenario():
        ended = await asyncio.wait_for(generate(loop, [1, 2]), 10)
        with pytest.raises(Draining, match="engine stopped"):
            loop.submit(Job([4], None, NO_STOP, Sampler(0.0), asyncio.get_running_loop()))
        return ended

    tokens, reason = run_loop(loop, scenario())
    assert reason == "error" and tokens == [] and "SystemExit" in loop.failed


def test_the_stepper_asks_the_engine_for_the_slots_precision_and_kv_cache():
    """`serve --batch --precision --kv-cache` reach the engine's batched mode, its steps not run ahead (a server's
    requests come and go between steps); without one, one request at a time."""
    asked = []

    class AskingEngine:
        def batched(self, n_requests, steps, **options):
            asked.append(options)
            return None

    stepper = stepper_for(AskingEngine(), 16, slots=4, precision="fast", kv_cache="bf16")
    assert isinstance(stepper, SequentialStepper)
    assert asked == [{"slots": 4, "precision": "fast", "kv_cache": "bf16", "overlap": False}]
