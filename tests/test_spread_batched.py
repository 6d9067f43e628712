"""A `--gpus` worker's continuous batching fed from the shared queue while it runs (`getp_session.run_fed`),
on the CPU through the batched engine's stand-ins (`batch_fakes.py`), against `run_batched` of the whole input."""

from __future__ import annotations

import pytest

from cupy_getp.checkpoint import SyntheticStore, Weights
from cupy_getp.getp_session import run_batched, run_fed
from cupy_getp.sampler import Sampler

from conftest import TINY
from test_batch_model import batched_engine, cupy_stand_in, prompts  # noqa: F401 (a fixture)

STEPS = 30


class Feed:
    """The shared queue as one worker sees it: chunks of (number, prompt) of some of the input's requests,
    [] now and then (another worker took the chunk first), then None; it records what was taken when."""

    def __init__(self, numbers, requests, chunk, gaps=()):
        pairs = [(n, requests[n]) for n in numbers]
        self.chunks = [pairs[i:i + chunk] for i in range(0, len(pairs), chunk)]
        self.gaps, self.calls = set(gaps), 0

    def __call__(self, block: bool):
        self.calls += 1
        if not block and self.calls in self.gaps:
            return []
        return self.chunks.pop(0) if self.chunks else None


@pytest.mark.parametrize("sampler", [Sampler(0.0, 0.9, 1), Sampler(0.9, 0.9, 7)], ids=["greedy", "sampled"])
def test_fed_worker_gives_each_request_the_whole_runs_tokens(cupy_stand_in, sampler):  # noqa: F811
    """Every other request of 11 (a worker's part), in chunks of 2 with gaps, over 3 slots: each request's tokens
    are those of the whole input's run (above temperature 0 too: its generator goes by its input number)."""
    weights = Weights(SyntheticStore(TINY, seed=9))
    requests = prompts(11, 5)
    whole = run_batched(batched_engine(weights, 4, 3, STEPS, "exact"), sampler, requests, STEPS)
    mine, results = range(1, 11, 2), {}
    feed = Feed(mine, requests, chunk=2, gaps=(2, 4))
    run_fed(batched_engine(weights, 3, 3, STEPS, "exact"), sampler, STEPS, feed, results.__setitem__)
    assert results == {n: whole[n] for n in mine}
    assert not feed.chunks


def test_fed_worker_takes_only_what_its_free_slots_need(cupy_stand_in):  # noqa: F811
    """With 2 slots and chunks of 1, a worker never holds more than 2 requests not yet ended: the rest stay in the
    queue for the other workers (one whose engine is faster takes more)."""
    weights = Weights(SyntheticStore(TINY, seed=9))
    feed = Feed(range(8), prompts(8, 6), chunk=1)
    held, most = [0], []

    def take(block):
        given = feed(block)
        held[0] += len(given or ())
        most.append(held[0])
        return given

    def ended(number, tokens):
        held[0] -= 1

    run_fed(batched_engine(weights, 2, 3, STEPS, "exact"), Sampler(0.0), STEPS, take, ended)
    assert max(most) == 2 and held[0] == 0 and not feed.chunks
