"""Continuous batching for getp: which rows each step runs, and what their tokens mean.

A row is (slot, position, token) of one request. Per step: every decoding request gets one row, then
requests still feeding their prompt get chunks of consecutive positions within the row budget, and
waiting requests are admitted into free slots in input order. After the step, each row that needed
a next token records it; a request ends at a stop token or at its last position (the decode loop of
`generation.decode`, spec section 4), and its slot is free for the next step at once.

getp gives every request at the start; a server `add`s them while the scheduler runs (each with its own
token limit and stop tokens) and `cancel`s those whose client left.

No GPU here: `Scheduler` is plain bookkeeping, driven by a model that runs rows (`gpu/batch.py`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(eq=False)
class Request:
    """One request in flight. Tokens fed at positions 0.. are the prompt, then what it generated. Two requests
    are the same only if they are one object (the scheduler's lists find them by identity, not by comparing
    prompts and outputs)."""

    index: int  # in the input
    prompt: list[int]
    slot: int = -1
    fed: int = 0  # positions fed so far (the next row's position)
    output: list[int] = field(default_factory=list)
    last_pos: int = -1  # the last position it may feed: it ends when the token sampled there is recorded
    stop: frozenset[int] = frozenset()  # tokens that end it
    released: bool = False  # its slot is free again (it ended, or it is ending: overlapped steps)
    ended: bool = False  # its last token is recorded (a row of it in a step run ahead is then dropped)

    def token_at(self, pos: int) -> int:
        return self.prompt[pos] if pos < len(self.prompt) else self.output[pos - len(self.prompt)]

    @property
    def prefilling(self) -> bool:
        return self.fed < len(self.prompt)


@dataclass
class StepRows:
    """The rows of one step, in order: int32 arrays (n,) and, per row, whether it needs a next token
    and which sequence it belongs to."""

    slots: np.ndarray
    positions: np.ndarray
    tokens: np.ndarray
    wants_token: np.ndarray  # bool
    owners: list[Request]
    # overlapped steps (next_rows_ahead): per row, the row of the step before whose sampled token it feeds (its
    # `tokens` entry is then 0: the device feeds it), else -1; None: every token is in `tokens`
    sources: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.owners)


class Scheduler:
    """Rows for each step over `n_slots` KV-cache slots and at most `max_rows` rows.

    `steps` positions per request (prompt + generated); `max_chunk` prompt positions of one request
    per step (the windowed layers' ring has room for a chunk of that many); `stop` ends a request.
    """

    def __init__(self, prompts: Sequence[Sequence[int]], steps: int, n_slots: int, max_rows: int,
                 max_chunk: int, stop: frozenset[int]):
        if n_slots < 1 or max_rows < n_slots or max_chunk < 1:
            raise ValueError(f"invalid batch shape: {n_slots} slots, {max_rows} rows, chunks of {max_chunk}")
        for i, p in enumerate(prompts):
            if not 0 < len(p) <= steps:
                raise ValueError(f"request {i}: prompt of {len(p)} tokens for a budget of {steps} positions")
        self.steps, self.max_rows, self.max_chunk, self.stop = steps, max_rows, max_chunk, stop
        self.waiting = deque(Request(i, list(p), last_pos=steps - 1, stop=stop) for i, p in enumerate(prompts))
        self.next_index = len(prompts)
        self.free_slots = list(range(n_slots - 1, -1, -1))  # pop() gives the lowest slot first
        self.active: list[Request] = []
        self.results: list[list[int] | None] = [None] * len(prompts)  # of the requests given here
        self.finished: list[Request] = []  # ended during the last `record`

    @property
    def done(self) -> bool:
        return not self.waiting and not self.active

    def add(self, prompt: Sequence[int], max_tokens: int | None = None,
            stop: frozenset[int] | None = None) -> Request:
        """Queue one more request (a server's, while the scheduler runs): it is admitted as a slot frees
        and ends after `max_tokens` tokens (None: at the step budget) or at a token of `stop` (None: the
        scheduler's). Its tokens are in its own `output`, not in `results`."""
        last_pos = self.steps - 1 if max_tokens is None else len(prompt) + max_tokens - 2
        if not 0 < len(prompt) <= last_pos + 1 <= self.steps:
            raise ValueError(f"a prompt of {len(prompt)} tokens and {max_tokens} tokens to generate do not fit "
                             f"a budget of {self.steps} positions")
        seq = Request(self.next_index, list(prompt), last_pos=last_pos, stop=self.stop if stop is None else stop)
        self.next_index += 1
        self.waiting.append(seq)
        return seq

    def cancel(self, seq: Request) -> None:
        """End a request now, waiting or running (its client left); its slot is free for the next step."""
        if seq in self.waiting:
            self.waiting.remove(seq)
        elif seq in self.active:
            self._release(seq)

    def step(self, next_tokens) -> StepRows:
        """Run one step: `next_tokens(rows)` returns one token per row (read where the row wants one)."""
        rows = self.next_rows()
        self.record(rows, next_tokens(rows))
        return rows

    def next_rows_ahead(self, rows: StepRows) -> StepRows:
        """The step after `rows`, built before `rows`' tokens are known (overlapped steps: run_overlapped).
        Every request is advanced past its rows there; one whose row samples its last position is ending, and
        its slot is free for this step (its token is recorded with `rows`'); a decoding row feeds the token its
        request's row in `rows` samples, named in `sources` (the device takes it from that step's output). A
        request that a stop token ends in `rows` still has its row here: `record` drops it, and its slot frees
        a step later than in `step`'s order. The tokens of every request are the same either way."""
        sampled: dict[Request, int] = {}  # request -> its row in `rows` that samples a token
        for i, (seq, pos, wanted) in enumerate(zip(rows.owners, rows.positions.tolist(), rows.wants_token.tolist())):
            if seq.ended:
                continue
            seq.fed = pos + 1
            if wanted and pos == seq.last_pos:
                self._release(seq)
            elif wanted:
                sampled[seq] = i
        return self.next_rows(sampled)

    def next_rows(self, sampled: dict[Request, int] | None = None) -> StepRows:
        """The next step's rows: decode rows first, then prompt chunks, admitting as slots allow.

        The host's time between two steps is time the GPU waits (a step needs the last one's tokens): at 1024
        decode rows these loops run once a row, so they are written as plain loops over local lists (a
        decoding request feeds its last token: `output[fed - len(prompt)]`, token_at's)."""
        while self.waiting and self.free_slots:
            seq = self.waiting.popleft()
            seq.slot = self.free_slots.pop()
            self.active.append(seq)
        owners, prefilling = [], []  # decoding requests (one row each), then those feeding their prompt
        for seq in self.active:
            (owners if seq.fed >= len(seq.prompt) else prefilling).append(seq)
        positions = [s.fed for s in owners]
        if sampled is None:
            tokens = [s.output[s.fed - len(s.prompt)] for s in owners]
            sources = None
        else:  # run ahead: a decoding request's token is the one its last row samples, on the device
            tokens = [0] * len(owners)
            sources = [sampled[s] for s in owners]
        wants = [True] * len(owners)
        for seq in prefilling:
            budget = self.max_rows - len(owners)
            if budget <= 0:
                break
            count = min(len(seq.prompt) - seq.fed, self.max_chunk, budget)
            chunk = range(seq.fed, seq.fed + count)
            owners += [seq] * count
            positions += chunk
            tokens += seq.prompt[seq.fed:seq.fed + count]
            wants += [p >= len(seq.prompt) - 1 for p in chunk]
            if sources is not None:
                sources += [-1] * count
        return StepRows(
            slots=np.array([s.slot for s in owners], np.int32),
            positions=np.array(positions, np.int32),
            tokens=np.array(tokens, np.int32),
            wants_token=np.array(wants, bool),
            owners=owners,
            sources=None if sources is None else np.array(sources, np.int32),
        )

    def record(self, rows: StepRows, tokens: np.ndarray) -> None:
        """Advance every sequence past its rows; `tokens[i]` is row i's next token where it wants one."""
        self.finished = []
        # Python ints once for all rows (indexing numpy arrays row by row costs ~10x as much)
        positions, wants, tokens = rows.positions.tolist(), rows.wants_token.tolist(), np.asarray(tokens).tolist()
        for seq, pos, wanted, token in zip(rows.owners, positions, wants, tokens):
            if seq.ended:  # a row run ahead of a request a stop token ended: dropped
                continue
            seq.fed = pos + 1
            if not wanted:
                continue
            seq.output.append(token)
            if token in seq.stop or pos == seq.last_pos:
                self._finish(seq)

    def _finish(self, seq: Request) -> None:
        self._release(seq)
        seq.ended = True
        if seq.index < len(self.results):
            self.results[seq.index] = seq.output
        self.finished.append(seq)

    def _release(self, seq: Request) -> None:
        if seq.released:  # ending already (next_rows_ahead)
            return
        seq.released = True
        self.active.remove(seq)
        self.free_slots.append(seq.slot)
        self.free_slots.sort(reverse=True)


def run_scheduled(scheduler: Scheduler, next_tokens, on_finish=None) -> list[list[int]]:
    """Step until every request has ended. `next_tokens(rows)` runs a step and returns one token per
    row (read where the row wants one); `on_finish(n_tokens)` is called as each request ends."""
    while not scheduler.done:
        scheduler.step(next_tokens)
        if on_finish:
            for seq in scheduler.finished:
                on_finish(len(seq.output))
    return scheduler.results


def run_overlapped(scheduler: Scheduler, launch, collect, on_finish=None) -> list[list[int]]:
    """run_scheduled with each step started before the last one's tokens are read, so that the host's work (the
    next step's rows, its upload and launch, then recording the last step's tokens) runs while the device
    computes. `launch(rows)` starts a step and returns at once, feeding each row that names a `sources` row the
    token the step before sampled there; `collect(pending)` waits for that step's tokens. Greedy tokens only: a
    sampler on the host would need the logits first."""
    rows = scheduler.next_rows()
    pending = launch(rows)
    while True:
        ahead = scheduler.next_rows_ahead(rows)
        pending_ahead = launch(ahead) if len(ahead) else None
        scheduler.record(rows, collect(pending))
        if on_finish:
            for seq in scheduler.finished:
                on_finish(len(seq.output))
        if pending_ahead is None:
            if scheduler.done:
                return scheduler.results
            ahead = scheduler.next_rows()  # nothing ran ahead (every request was ending): start afresh
            pending_ahead = launch(ahead)
        rows, pending = ahead, pending_ahead
