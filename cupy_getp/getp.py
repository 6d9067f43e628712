"""The getp batch-evaluation flow (spec section 4): requests in, token ids out, three timing lines.

    warm up elapsed time(s): X                                   load, allocate, upload
    elapsed time(s): X, achieved throughput TPS (tok/s): Y       inference only
    finish elapsed time(s): X                                    free everything, after the output
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .checkpoint import DEFAULT_SEED, open_weights
from .checkpoint.weights import source_files
from .engine.base import Engine
from .engine.factory import create_engine, resolve_engine
from .engine.scheduler import Scheduler, run_scheduled
from .errors import InputError
from .fileio import atomic_output, read_text
from .generation import check_prompt, decode, resolve_steps
from .sampler import RequestSamplers, Sampler
from .startup import check_startup
from .tokenizer import STOP_TOKENS, Tokenizer


@dataclass
class GetpReport:
    requests: int
    generated: int  # tokens recorded over all requests (terminating EOS included)
    warm_up_s: float
    inference_s: float
    finish_s: float


def read_requests(path: str | os.PathLike) -> list[str]:
    """First line: the number of requests N, ASCII digits; then N lines, one prompt each (lines after
    those are ignored). Only '\n' ends a line, and a '\r' just before it is dropped: a '\r' elsewhere
    is part of the prompt."""
    lines = text_lines(read_text(path))
    if not lines or not is_plain_integer(lines[0]):
        first = lines[0] if lines else ""
        raise InputError(f"input file {path}: the first line must be the number of requests (ASCII digits), "
                         f"got {first[:40]!r}")
    count = int(lines[0])
    prompts = lines[1:1 + count]
    if len(prompts) < count:
        raise InputError(f"input file {path}: the first line announces {count} requests "
                         f"but only {len(prompts)} prompt lines follow")
    return prompts


def text_lines(text: str) -> list[str]:
    """Lines ended by '\n' (a final one ends the last line, it does not start an empty one), each
    without the '\r' of a CRLF ending. Empty text has no lines (not one empty line)."""
    if not text:
        return []
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def is_plain_integer(word: str) -> bool:
    """ASCII digits only: no sign, no '_', no other script's digits (which int() would take)."""
    return word.isascii() and word.isdigit()


def encode_requests(tokenizer: Tokenizer, prompts: Sequence[str], steps: int, source: str,
                    seq_len: int | None = None) -> list[list[int]]:
    """Every prompt's ids, checked against `steps` (`seq_len` where -n set them: see check_prompt)."""
    requests = [tokenizer.encode(p) for p in prompts]
    for i, tokens in enumerate(requests):
        check_prompt(tokens, steps, what=f"{source}: request {i + 1} (line {i + 2})", seq_len=seq_len)
    return requests


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
                ) -> list[list[int]]:
    """Every request through a batched engine with continuous batching (`engine/scheduler.py`).
    Greedy tokens come from the device; above temperature 0 each request samples with its own
    generator (`RequestSamplers`)."""
    shape = batched.shape
    scheduler = Scheduler(requests, steps, shape.n_slots, shape.max_rows, shape.max_chunk, stop)
    samplers = None if sampler.temperature == 0 else RequestSamplers(sampler)
    return run_scheduled(scheduler, lambda rows: batched.next_tokens(rows, samplers), on_request)


def format_output(results: Sequence[Sequence[int]]) -> str:
    return "".join(" ".join(map(str, tokens)) + "\n" for tokens in results)


def read_token_lines(path: str | os.PathLike, vocab_size: int) -> list[list[int]]:
    """The inverse of `format_output`: one list of token ids per line, each a plain integer inside the
    vocabulary."""
    result = []
    for number, line in enumerate(text_lines(read_text(path)), start=1):
        words = line.split()
        if not all(is_plain_integer(word) for word in words):
            raise InputError(f"{path}:{number}: not a list of plain integer token ids: {line[:40]!r}")
        tokens = [int(word) for word in words]
        bad = [t for t in tokens if t >= vocab_size]
        if bad:
            raise InputError(f"{path}:{number}: token id {bad[0]} outside the vocabulary (0..{vocab_size - 1})")
        result.append(tokens)
    return result


@dataclass(frozen=True)
class GetpOptions:
    """How getp runs: the engine, the positions per request, a preset's weights and config overrides, the
    batched engine's request slots (None or 0: as many as free device memory allows) and precision, and the
    GPU engine's expert storage (bf16, mxfp4 or auto: `gpu/experts.py`)."""
    engine: str = "auto"
    steps: int = 1024
    seed: int = DEFAULT_SEED
    config: dict | None = None
    batch: int | None = None
    precision: str | None = None
    experts: str = "auto"


@dataclass(frozen=True)
class GetpHooks:
    """Who hears what: `echo` the three timing lines; `note` what an odd but valid run costs and what the
    batched engine chose; `progress(n_requests)` returns a per-request callback; `load_progress(n)` hears
    of weights loaded."""
    echo: Callable[[str], None] = print
    note: Callable[[str], None] | None = None
    progress: Callable[[int], Callable[[int], None]] | None = None
    load_progress: Callable[[int], None] | None = None


@dataclass
class _Session:
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


def getp(source, input_path: str | os.PathLike, output_path: str | os.PathLike, *, tokenizer: Tokenizer,
         sampler: Sampler, options: GetpOptions = GetpOptions(), hooks: GetpHooks = GetpHooks()) -> GetpReport:
    """Run getp end to end. Everything that can be checked is checked before the warm-up; the output file
    appears only when complete; the device is freed (timed as the finish) after it, or on any failure.

    An engine that batches (the GPU engine) runs the requests with continuous batching, sized during the
    warm-up."""
    prompts = read_requests(input_path)
    weights = open_weights(source, options.seed, options.config)
    for line in check_startup(weights, resolve_engine(options.engine), tokenizer, options.experts):
        _note(hooks, line)
    steps = resolve_steps(options.steps, weights.config.seq_len)
    requests = encode_requests(tokenizer, prompts, steps, str(input_path), weights.config.seq_len)
    session = _Session()
    try:
        with atomic_output(output_path, inputs=[input_path, *source_files(weights.store)]) as out:
            start = time.perf_counter()
            session.model = create_engine(weights, options.engine, options.experts, steps)
            session.batched = _warm_up(session.model, len(requests), steps, options, hooks)
            warm_up_s = time.perf_counter() - start
            hooks.echo(f"warm up elapsed time(s): {warm_up_s:f}")

            start = time.perf_counter()
            results = _infer(session, sampler, requests, steps, hooks)
            inference_s = time.perf_counter() - start
            generated = sum(map(len, results))
            hooks.echo(f"elapsed time(s): {inference_s:f}, achieved throughput TPS (tok/s): "
                       f"{generated / inference_s if inference_s > 0 else 0.0:f}")
            out.write(format_output(results))
        start = time.perf_counter()
    except BaseException:
        session.free(failing=True)  # on a failure or an interrupt: the device freed, the first error kept
        raise
    session.free()  # after the output is complete
    finish_s = time.perf_counter() - start
    hooks.echo(f"finish elapsed time(s): {finish_s:f}")
    return GetpReport(len(requests), generated, warm_up_s, inference_s, finish_s)


def _note(hooks: GetpHooks, line: str) -> None:
    if hooks.note is not None:
        hooks.note(line)


def _warm_up(model: Engine, n_requests: int, steps: int, options: GetpOptions, hooks: GetpHooks):
    """Load the weights, then size the batched engine (None where the engine runs one request at a time)."""
    model.warm_up(progress=hooks.load_progress)
    for line in model.storage_notes():
        _note(hooks, line)
    batched = model.batched(n_requests, steps, slots=options.batch or None, precision=options.precision)
    if batched is not None:
        _note(hooks, describe_batch(batched))
    if batched is None and (options.batch or options.precision):
        _note(hooks, f"--batch and --precision apply to the GPU engine; the {model.name} engine runs one request "
                     f"at a time")
    return batched


def _infer(session: _Session, sampler: Sampler, requests: Sequence[Sequence[int]], steps: int,
           hooks: GetpHooks) -> list[list[int]]:
    on_request = hooks.progress(len(requests)) if hooks.progress else None
    if session.batched is not None:
        return run_batched(session.batched, sampler, requests, steps, on_request)
    return run_requests(session.model, sampler, requests, steps, on_request)


def describe_batch(batched) -> str:
    """What the batched engine chose, in one line: slots, rows, precision and the products' kernels,
    graphs."""
    shape = batched.shape
    graphs = "CUDA graphs" if batched.runner.use_graphs else "eager launches"
    return (f"batched engine: {shape.n_slots} request slots, up to {shape.max_rows} rows per step, "
            f"precision {batched.precision} ({batched.products_path}), {graphs}")
