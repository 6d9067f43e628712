"""The decoding loop shared by getp, generate and chat: feed a prompt, then sample until a stop token
or the step budget."""

from __future__ import annotations

import codecs
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from .engine.base import Engine
from .errors import InputError
from .tokenizer import STOP_TOKENS, Tokenizer


def resolve_steps(steps: int, seq_len: int) -> int:
    """`-n`: 0 or more than the model's seq_len means seq_len (spec section 4)."""
    if steps < 0:
        raise InputError(f"steps must be >= 0, got {steps}")
    return seq_len if steps == 0 or steps > seq_len else steps


def check_prompt(prompt: Sequence[int], steps: int, what: str = "prompt") -> None:
    if not prompt:
        raise InputError(f"{what} is empty: it must encode to at least one token")
    if len(prompt) > steps:
        raise InputError(f"{what} is {len(prompt)} tokens, longer than the step budget of {steps} "
                         f"(raise -n, up to the model's seq_len)")


def decode(engine: Engine, sample: Callable[[np.ndarray], int], prompt: Sequence[int], steps: int,
           stop: frozenset[int]) -> Iterator[int]:
    """Yield every sampled token, a terminating stop token included.

    The prompt is fed one position at a time from position 0; logits are ignored while the next
    position is still inside the prompt. `steps` counts prompt and generated positions."""
    check_prompt(prompt, steps)
    token = prompt[0]
    for pos in range(steps):
        logits = engine.forward(token, pos)
        if pos + 1 < len(prompt):
            token = prompt[pos + 1]
            continue
        token = sample(logits)
        yield token
        if token in stop:
            return


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
    check_prompt(tokens, steps)
    write(prompt)
    text = TextStream(tokenizer)
    start, generated = time.perf_counter(), 0
    for token in decode(engine, sample, tokens, steps, STOP_TOKENS):
        generated += 1
        if token not in STOP_TOKENS:
            write(text.push(token))
    write(text.flush())
    return len(tokens) + generated - 1, time.perf_counter() - start
