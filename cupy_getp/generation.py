"""The decoding loop shared by getp, generate and chat: feed a prompt, then sample until a stop token
or the step budget."""

from __future__ import annotations

import codecs
import math
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from .engine.base import TRACE_POINTS, Engine, Trace
from .errors import InputError, NumericalError
from .tokenizer import STOP_TOKENS, Tokenizer


def resolve_steps(steps: int, seq_len: int) -> int:
    """`-n`: 0 or more than the model's seq_len means seq_len (spec section 4)."""
    if steps < 0:
        raise InputError(f"steps must be >= 0, got {steps}")
    return seq_len if steps == 0 or steps > seq_len else steps


def check_prompt(prompt: Sequence[int], steps: int, what: str = "prompt", seq_len: int | None = None) -> None:
    """A prompt of at least one token that fits in `steps` positions. `seq_len`, where -n set `steps`:
    raising -n is advised only while it can still help."""
    if not prompt:
        raise InputError(f"{what} is empty: it must encode to at least one token")
    if len(prompt) > steps:
        if seq_len is None:
            limit = f"the {steps} positions it may use"
        elif steps < seq_len:
            limit = f"the step budget of {steps} (raise -n, up to the model's seq_len {seq_len})"
        else:
            limit = f"the model's seq_len of {seq_len}"
        raise InputError(f"{what} is {len(prompt)} tokens, longer than {limit}")


def decode(engine: Engine, sample: Callable[[np.ndarray], int], prompt: Sequence[int], steps: int,
           stop: frozenset[int]) -> Iterator[int]:
    """Yield every sampled token, a terminating stop token included.

    The prompt is fed one position at a time from position 0; logits are ignored while the next
    position is still inside the prompt. `steps` counts prompt and generated positions."""
    check_prompt(prompt, steps)
    token = prompt[0]
    for pos in range(steps):
        logits = engine.forward(token, pos)
        check_logits(engine, token, pos, logits)
        if pos + 1 < len(prompt):
            token = prompt[pos + 1]
            continue
        token = sample(logits)
        yield token
        if token in stop:
            return


def check_logits(engine: Engine, token: int, pos: int, logits: np.ndarray) -> None:
    """NumericalError for NaN or infinite logits, naming the position and the first layer where a
    value stopped being finite: sampling them would silently give token 0."""
    with np.errstate(over="ignore", invalid="ignore"):  # the sum alone may overflow: no warning for it
        if math.isfinite(float(logits.sum())) or np.isfinite(logits).all():
            return
    trace = Trace()
    engine.forward(token, pos, trace)  # the same step again, traced: it rewrites the same cache entry
    raise NumericalError(f"non-finite logits at position {pos} (token {token}): the first non-finite value "
                         f"is in {_first_non_finite(trace)}")


def _first_non_finite(trace: Trace) -> str:
    for layer, values in enumerate(trace.values):
        for point in TRACE_POINTS:
            if point in values and not np.isfinite(values[point]).all():
                return f"layer {layer} ({point})"
    return "the final norm or the unembedding, after the last layer"


class TextStream:
    """Token ids to text as they come: a character split over several tokens appears once complete."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token: int) -> str:
        return self._utf8.decode(self.tokenizer.token_bytes(token))

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


def generate(engine: Engine, sample: Callable[[np.ndarray], int], tokenizer: Tokenizer, prompt: str,
             steps: int, write: Callable[[str], None]) -> tuple[int, float]:
    """The original's generate mode: write the prompt, then the completion as it is sampled (a stop
    token ends it and is not written). Returns (positions decoded, seconds)."""
    tokens = tokenizer.encode(prompt)
    check_prompt(tokens, steps, seq_len=engine.config.seq_len)
    write(prompt)
    text = TextStream(tokenizer)
    start, generated = time.perf_counter(), 0
    for token in decode(engine, sample, tokens, steps, STOP_TOKENS):
        generated += 1
        if token not in STOP_TOKENS:
            write(text.push(token))
    write(text.flush())
    return len(tokens) + generated - 1, time.perf_counter() - start
