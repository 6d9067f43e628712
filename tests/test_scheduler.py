"""Continuous batching (engine/scheduler.py) on the CPU: a toy model whose next token depends on the
whole history of its sequence, run one request at a time through `generation.decode` and through the
scheduler with few slots, prompt chunks and stops. The token lines must be identical."""

from __future__ import annotations

import numpy as np
import pytest

from cupy_getp.engine.scheduler import Scheduler, run_overlapped, run_scheduled
from cupy_getp.generation import decode

VOCAB, STOP = 50, frozenset({7})


def next_of(history) -> int:
    """The toy model: a hash of every token fed so far in this sequence."""
    return hash(tuple(int(t) for t in history)) % VOCAB  # int tuples hash the same in every process


class ToyEngine:
    """Single sequence: a cache of the tokens by position, as a KV cache (never reset)."""

    def __init__(self, steps):
        self.cache = np.full(steps, -1)

    def forward(self, token, pos):
        self.cache[pos] = token
        logits = np.zeros(VOCAB, np.float32)
        logits[next_of(self.cache[: pos + 1])] = 1
        return logits


class ToyBatched:
    """Rows of a step: every row's token is written to its slot's cache first, then each row reads
    its own slot's positions <= its position (the batched engine's contract)."""

    def __init__(self, n_slots, steps, max_rows, max_chunk):
        self.cache = np.full((n_slots, steps), -1)
        self.max_rows, self.max_chunk = max_rows, max_chunk
        self.row_counts = []

    def __call__(self, rows):
        assert 0 < len(rows) <= self.max_rows
        self.row_counts.append(len(rows))
        for s in set(rows.slots.tolist()):  # a sequence's rows in a step: consecutive, at most a chunk
            positions = sorted(rows.positions[rows.slots == s].tolist())
            assert positions == list(range(positions[0], positions[0] + len(positions)))
            assert len(positions) <= max(1, self.max_chunk)
        self.cache[rows.slots, rows.positions] = rows.tokens
        return np.array([next_of(self.cache[s, : p + 1]) for s, p in zip(rows.slots, rows.positions)])


def sequential(prompts, steps):
    engine = ToyEngine(steps)
    return [list(decode(engine, lambda logits: int(np.argmax(logits)), p, steps, STOP)) for p in prompts]


def prompts_of(rng, n, longest):
    return [rng.integers(0, VOCAB, rng.integers(1, longest + 1)).tolist() for _ in range(n)]


@pytest.mark.parametrize("n_requests, n_slots, extra_rows, max_chunk, steps", [
    (1, 1, 1, 1, 12),  # one slot, one position per step
    (9, 3, 4, 4, 30),  # requests outnumber slots; chunks split prompts
    (20, 20, 64, 128, 40),  # everything at once
    (13, 5, 1, 2, 25),  # a tight row budget: prefill waits for decode rows
])
def test_batched_lines_equal_sequential(n_requests, n_slots, extra_rows, max_chunk, steps):
    rng = np.random.default_rng(n_requests * 100 + n_slots)
    prompts = prompts_of(rng, n_requests, min(steps, 17))
    model = ToyBatched(n_slots, steps, n_slots + extra_rows, max_chunk)
    scheduler = Scheduler(prompts, steps, n_slots, n_slots + extra_rows, max_chunk, STOP)
    finished = []
    results = run_scheduled(scheduler, model, finished.append)
    assert results == sequential(prompts, steps)
    assert sorted(finished) == sorted(map(len, results))
    assert any(r and r[-1] in STOP for r in results) or steps < 20  # stops really happen in the toy


def rows_by_request(active, max_rows, max_chunk) -> list[tuple]:
    """A step's rows as (request, position, token, wants a token), written the plain way from the requests in
    flight: each decoding request's next position, then prompt chunks in order while the row budget lasts."""
    rows = [(s, s.fed) for s in active if s.fed >= len(s.prompt)]
    for seq in active:
        budget = max_rows - len(rows)
        if budget > 0 and seq.fed < len(seq.prompt):
            rows += [(seq, seq.fed + i) for i in range(min(len(seq.prompt) - seq.fed, max_chunk, budget))]
    return [(s, p, s.token_at(p), p >= len(s.prompt) - 1) for s, p in rows]


@pytest.mark.parametrize("n_requests, n_slots, extra_rows, max_chunk, steps", [
    (9, 3, 4, 4, 30), (13, 5, 1, 2, 25), (40, 16, 3, 5, 60), (6, 6, 0, 1, 20)])
def test_each_step_holds_the_rows_of_the_plain_rule_in_its_order(n_requests, n_slots, extra_rows, max_chunk, steps):
    """next_rows' loops (written for speed: the host's time between steps is the GPU's idle time) give, step by
    step, the very rows of the plain rule, in its order: the same requests, slots, positions, tokens and wants."""
    rng = np.random.default_rng(n_requests + 7 * n_slots)
    prompts = prompts_of(rng, n_requests, min(steps, 23))
    model = ToyBatched(n_slots, steps, n_slots + extra_rows, max_chunk)
    scheduler = Scheduler(prompts, steps, n_slots, n_slots + extra_rows, max_chunk, STOP)
    chunked = 0
    while not scheduler.done:
        rows = scheduler.next_rows()
        want = rows_by_request(scheduler.active, n_slots + extra_rows, max_chunk)
        assert [s for s, *_ in want] == rows.owners  # identity: Request compares by object
        assert rows.slots.tolist() == [s.slot for s, *_ in want]
        assert rows.positions.tolist() == [p for _, p, *_ in want]
        assert rows.tokens.tolist() == [t for *_, t, _ in want]
        assert rows.wants_token.tolist() == [w for *_, w in want]
        chunked += len(set(map(id, rows.owners))) < len(rows)
        scheduler.record(rows, model(rows))
    assert scheduler.results == sequential(prompts, steps)
    assert chunked or max_chunk == 1  # steps with several rows of one request did happen


class ToyAhead(ToyBatched):
    """ToyBatched stepping ahead (run_overlapped's launch and collect): a row that names a `sources` row takes
    the token the step before sampled there, as the device does; `launch` computes at once and `collect` hands
    the tokens over later, as a device and its copy would."""

    def __init__(self, *args):
        super().__init__(*args)
        self.last = None  # the tokens of the step launched last
        self.fed_ahead = 0  # rows that took their token from the step before

    def launch(self, rows):
        assert self.last is not None or rows.sources is None
        if rows.sources is not None:
            ahead = rows.sources >= 0
            assert (rows.tokens[ahead] == 0).all()  # the host does not know them yet
            rows.tokens = np.where(ahead, self.last[np.maximum(rows.sources, 0)], rows.tokens)
            self.fed_ahead += int(ahead.sum())
        self.last = self(rows)
        return self.last

    @staticmethod
    def collect(pending):
        return pending


@pytest.mark.parametrize("n_requests, n_slots, extra_rows, max_chunk, steps", [
    (1, 1, 1, 1, 12), (9, 3, 4, 4, 30), (20, 20, 64, 128, 40), (13, 5, 1, 2, 25), (40, 16, 3, 5, 60)])
def test_steps_run_ahead_give_the_sequential_lines(n_requests, n_slots, extra_rows, max_chunk, steps):
    """run_overlapped (each step built and launched before the last one's tokens are read, decoding rows fed on
    the device) gives every request the tokens of one-at-a-time decoding, with stops, chunks and more requests
    than slots; a request a stop token ends has one row more (dropped), so its slot frees a step later."""
    rng = np.random.default_rng(n_requests * 100 + n_slots)
    prompts = prompts_of(rng, n_requests, min(steps, 17))
    model = ToyAhead(n_slots, steps, n_slots + extra_rows, max_chunk)
    scheduler = Scheduler(prompts, steps, n_slots, n_slots + extra_rows, max_chunk, STOP)
    finished = []
    results = run_overlapped(scheduler, model.launch, model.collect, finished.append)
    assert results == sequential(prompts, steps)
    assert sorted(finished) == sorted(map(len, results))
    assert model.fed_ahead > 0 and scheduler.done and not scheduler.active
    assert sorted(scheduler.free_slots) == list(range(n_slots))  # every slot back, none twice


def test_a_stopped_request_frees_its_slot_for_the_next_at_once():
    steps = 30
    prompts = [[3], [4], [5]]
    scheduler = Scheduler(prompts, steps, 1, 2, 4, STOP)
    model = ToyBatched(1, steps, 2, 4)
    slots_in_use = []

    def spy(rows):
        slots_in_use.append({(r.index, r.slot) for r in rows.owners})
        return model(rows)

    results = run_scheduled(scheduler, spy)
    assert results == sequential(prompts, steps)
    indices_per_step = [{i for i, _ in step} for step in slots_in_use]
    assert all(len(s) == 1 for s in indices_per_step)  # one slot: one request per step
    starts = [min(k for k, s in enumerate(indices_per_step) if i in s) for i in range(3)]
    ends = [max(k for k, s in enumerate(indices_per_step) if i in s) for i in range(3)]
    assert starts[1] == ends[0] + 1 and starts[2] == ends[1] + 1  # admitted the step after the end


def test_scheduler_refuses_a_prompt_longer_than_the_budget():
    with pytest.raises(ValueError, match="prompt of 5 tokens"):
        Scheduler([[1] * 5], 4, 1, 2, 2, STOP)


def test_requests_added_while_running_equal_sequential_with_their_own_limits_and_stops():
    """A server's use: requests join between steps, each with its own token limit and stop tokens."""
    steps, rng = 30, np.random.default_rng(5)
    prompts = prompts_of(rng, 9, 12)
    limits = [None, 1, 3, 8, None, 2, 5, None, 4]
    stops = [STOP, frozenset(), STOP, frozenset({next_of(prompts[3])}), frozenset(), STOP, STOP, frozenset(), STOP]
    model = ToyBatched(3, steps, 3 + 4, 4)
    scheduler = Scheduler([], steps, 3, 3 + 4, 4, STOP)
    added = []
    for step in range(200):
        if step % 2 == 0 and len(added) < len(prompts):  # one more every other step
            i = len(added)
            added.append(scheduler.add(prompts[i], limits[i], stops[i]))
        if scheduler.done and len(added) == len(prompts):
            break
        if not scheduler.done:
            scheduler.step(model)
    for i, seq in enumerate(added):
        engine = ToyEngine(steps)
        last = steps if limits[i] is None else len(prompts[i]) + limits[i] - 1
        want = list(decode(engine, lambda logits: int(np.argmax(logits)), prompts[i], last, stops[i]))
        assert seq.output == want, i
    assert scheduler.results == []  # requests added later are not getp's results


def test_cancel_frees_the_slot_for_the_next_request_at_once():
    scheduler = Scheduler([], 30, 1, 2, 4, frozenset())
    first, second = scheduler.add([3, 4]), scheduler.add([5])
    model = ToyBatched(1, 30, 2, 4)
    scheduler.step(model)
    assert first.slot == 0 and scheduler.active == [first]
    scheduler.cancel(first)
    rows = scheduler.step(model)
    assert {s.index for s in rows.owners} == {second.index} and second.slot == 0
    scheduler.cancel(first)  # ended already: nothing happens
    assert scheduler.active == [second]


def test_add_refuses_what_does_not_fit_the_budget():
    scheduler = Scheduler([], 4, 1, 2, 2, STOP)
    scheduler.add([1, 2], max_tokens=3)  # positions 0..3: the last sampled token is never fed
    with pytest.raises(ValueError, match="do not fit"):
        scheduler.add([1, 2], max_tokens=4)
    with pytest.raises(ValueError, match="do not fit"):
        scheduler.add([], max_tokens=1)
