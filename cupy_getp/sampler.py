"""Sampling on the CPU (spec section 3): argmax, temperature + full-distribution or nucleus sampling,
with the original runtime's xorshift generator reproduced bit for bit."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence

import numpy as np

from .errors import InputError

_M64 = (1 << 64) - 1


class XorShift:
    """xorshift64* of the original runtime: `random_u32`, `random_f32`."""

    def __init__(self, seed: int):
        self.state = seed & _M64

    def u32(self) -> int:
        s = self.state
        s ^= s >> 12
        s = (s ^ (s << 25)) & _M64
        s ^= s >> 27
        self.state = s
        return ((s * 0x2545F4914F6CDD1D) & _M64) >> 32

    def f32(self) -> np.float32:
        """A coin in [0, 1) with 24 random bits, as float32."""
        return np.float32(self.u32() >> 8) / np.float32(16777216.0)


def clock_seed() -> int:
    """Seed 0 means "seed from the clock", as `time(NULL)` in the original."""
    return int(time.time())


class Sampler:
    def __init__(self, temperature: float = 0.0, topp: float = 0.9, seed: int = 0):
        check_sampling(temperature, topp, seed)
        self.temperature = temperature
        self.topp = topp
        self.seed = seed if seed > 0 else clock_seed()
        self.rng = XorShift(self.seed)

    def __call__(self, logits: np.ndarray) -> int:
        if self.temperature == 0.0:
            return int(np.argmax(logits))  # first maximum
        with np.errstate(over="ignore", divide="ignore"):
            scaled = np.asarray(logits, np.float32) / np.float32(self.temperature)
        if not np.isfinite(scaled.max()):
            # So small a temperature that a logit overflowed float32: the distribution is the limit
            # temperature -> 0, all mass on the maximum, i.e. greedy.
            return int(np.argmax(logits))
        probs = softmax_f32(scaled)
        coin = self.rng.f32()
        if self.topp <= 0 or self.topp >= 1:
            return sample_mult(probs, coin)
        return sample_topp(probs, self.topp, coin)


def request_seed(seed: int, index: int) -> int:
    """The generator seed of request `index` in a batch: seed + index * 0x9E3779B97F4A7C15 (mod 2^64,
    the golden-ratio increment of splitmix64), never 0 (xorshift's fixed point)."""
    return (seed + index * 0x9E3779B97F4A7C15) & _M64 or 1


class RequestSamplers:
    """One sampler per request, each with its own xorshift stream, so that a request's tokens do not
    depend on what it was batched with (the original's single shared generator cannot be reproduced
    once requests interleave)."""

    def __init__(self, sampler: Sampler, numbers: Sequence[int] | Mapping[int, int] | None = None):
        self.template = sampler
        # The requests' numbers in the whole input, where the batch holds a part of it (a shard, a worker's
        # chunk): request `index` of the batch then draws the same stream as in a run of the whole input.
        self.numbers = numbers
        self.samplers: dict[int, Sampler] = {}

    def __getitem__(self, index: int) -> Sampler:
        if index not in self.samplers:
            t = self.template
            number = index if self.numbers is None else self.numbers[index]
            self.samplers[index] = Sampler(t.temperature, t.topp, request_seed(t.seed, number))
        return self.samplers[index]


def check_sampling(temperature: float, topp: float, seed: int) -> None:
    """`-t`, `-p` and `-s` as the runtime can use them, else InputError with the allowed range."""
    if not (math.isfinite(temperature) and temperature >= 0):
        raise InputError(f"temperature (-t) must be a finite number >= 0 (0 = greedy), got {temperature}")
    if not (math.isfinite(topp) and 0 <= topp <= 1):
        raise InputError(f"top-p (-p) must be in [0, 1] (0 or 1 = sample from the full distribution), got {topp}")
    if not 0 <= seed <= _M64:
        raise InputError(f"seed (-s) must be in 0..{_M64} (0 = from the clock), got {seed}")


def softmax_f32(x: np.ndarray) -> np.ndarray:
    """The runtime's in-place softmax: float32 exp of (x - max), sum in double, float32 divide."""
    e = np.exp(x - x.max())
    return (e / e.sum(dtype=np.float64)).astype(np.float32)  # float / double, rounded to float


def sample_mult(probs: np.ndarray, coin: float) -> int:
    """First index whose running float32 CDF exceeds the coin; the last index if none does."""
    cdf = np.cumsum(probs, dtype=np.float32)  # sequential float32 sums, as the C loop
    i = int(np.searchsorted(cdf, coin, side="right"))
    return min(i, probs.size - 1)


def sample_topp(probs: np.ndarray, topp: float, coin: float) -> int:
    """Nucleus sampling: keep probabilities >= (1 - topp) / (V - 1), sort them descending, cut where
    the running sum first exceeds topp, and sample inside the kept mass.

    The C runtime sorts with qsort, whose order among equal probabilities is unspecified; here equal
    probabilities keep token-id order (stable sort)."""
    cutoff = (np.float32(1) - np.float32(topp)) / np.float32(probs.size - 1)
    candidates = np.flatnonzero(probs >= cutoff)
    order = candidates[np.argsort(-probs[candidates], kind="stable")]
    kept = probs[order]
    cumulative = np.cumsum(kept, dtype=np.float32)
    over = np.flatnonzero(cumulative > np.float32(topp))
    last = int(over[0]) if over.size else kept.size - 1
    r = np.float32(coin) * cumulative[last]
    i = int(np.searchsorted(cumulative[: last + 1], r, side="right"))
    return int(order[min(i, last)])
