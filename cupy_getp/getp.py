"""The getp batch-evaluation flow (spec section 4): requests in, token ids out, three timing lines.

    warm up elapsed time(s): X                                   load, allocate, upload
    elapsed time(s): X, achieved throughput TPS (tok/s): Y       inference only
    finish elapsed time(s): X                                    free everything, after the output
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from .checkpoint import open_weights
from .checkpoint.weights import source_files
from .engine.factory import create_engine, resolve_engine
from .errors import GetpError, InputError
from .fileio import atomic_output, read_text
from .generation import check_prompt, resolve_steps
from .gpu.expert_plan import check_divisible
from .getp_session import (GetpHooks, GetpOptions, Session, elapsed_line, finish_line, format_output, infer, note,
                           warm_up_engine, warm_up_line)
from .getp_session import describe_batch, run_batched, run_requests  # noqa: F401 (the getp API, as before)
from .sampler import Sampler
from .shards import Shard, run_identity, shard_header
from .startup import check_startup
from .tokenizer import Tokenizer
from .workers import nccl_missing, parse_gpus, use_device, visible_gpus, worker_pool


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
class Spread:
    """Where a getp run's requests go. `shard`: a slice of the input (`shards.py`; None: all of it), whose
    file `merge` joins with the others'. `workers`: one engine process per entry, on that GPU (None: no
    device, the test-only `--workers`), fed from one queue (`workers.py`); empty: one engine in this
    process, on `device` (None: HIP_DEVICE_ID's, as ever). `expert_parallel`: the workers are the ranks of one
    model whose experts they split (`gpu/ep_engine.py`), not a model each."""
    shard: Shard | None = None
    workers: tuple[int | None, ...] = ()
    device: int | None = None
    expert_parallel: bool = False


def make_spread(shard: str | None, gpus: str | None, workers: int, engine: str, temperature: float,
                seed: int, expert_parallel: int = 0) -> Spread:
    """The command line's `--shard K/N`, `--gpus LIST|all`, `--expert-parallel G` and test-only `--workers N`
    as a Spread, for a run of `engine` (resolved) with the sampler's `temperature` and `seed` as the user
    gave it."""
    if gpus is not None and workers:
        raise GetpError("--gpus and --workers exclude each other")
    if shard is not None and temperature > 0 and seed == 0:
        raise GetpError("--shard at temperature > 0 needs a seed (-s N): seed 0 takes one from the clock, a "
                        "different one in each shard")
    if expert_parallel:
        return _expert_parallel_spread(shard, gpus, workers, engine, expert_parallel)
    devices = parse_gpus(gpus, visible_gpus) if gpus is not None else ()  # first: why no GPU, if none
    if gpus is not None and engine != "cupy":
        raise GetpError(f"--gpus runs the cupy engine, not the {engine} engine")
    if workers and engine == "cupy":
        raise GetpError("--workers runs engine processes without a device (for tests); use --gpus for the cupy engine")
    return Spread(shard=Shard.parse(shard) if shard is not None else None,
                  workers=(None,) * workers if workers else devices if len(devices) > 1 else (),
                  device=devices[0] if len(devices) == 1 else None)


def _expert_parallel_spread(shard: str | None, gpus: str | None, workers: int, engine: str, ranks: int) -> Spread:
    """`--expert-parallel G`: G worker processes, one a GPU (--gpus's, which must name G, else devices 0..G-1)."""
    if engine != "cupy":
        raise GetpError(f"--expert-parallel runs the cupy engine, not the {engine} engine")
    if workers:
        raise GetpError("--expert-parallel and --workers exclude each other")
    if ranks < 2:
        raise GetpError(f"--expert-parallel needs 2 or more GPUs, got {ranks}")
    devices = parse_gpus(gpus if gpus is not None else ",".join(map(str, range(ranks))), visible_gpus)
    if len(devices) != ranks:
        raise GetpError(f"--expert-parallel {ranks} needs {ranks} GPUs; --gpus names {len(devices)}")
    reason = nccl_missing()
    if reason:
        raise GetpError(f"--expert-parallel needs NCCL (RCCL on ROCm) through cupy.cuda.nccl: {reason}")
    return Spread(shard=Shard.parse(shard) if shard is not None else None, workers=devices, expert_parallel=True)


def getp(source, input_path: str | os.PathLike, output_path: str | os.PathLike, *, tokenizer: Tokenizer,
         sampler: Sampler, options: GetpOptions = GetpOptions(), hooks: GetpHooks = GetpHooks(),
         spread: Spread = Spread()) -> GetpReport:
    """Run getp end to end. Everything that can be checked is checked before the warm-up; the output file
    appears only when complete; the device is freed (timed as the finish) after it, or on any failure.

    An engine that batches (the GPU engine) runs the requests with continuous batching, sized during the
    warm-up. A shard's file starts with a header holding its times, so it is written after its finish."""
    prompts = read_requests(input_path)
    weights = open_weights(source, options.seed, options.config)
    engine = resolve_engine(options.engine)
    use_device(spread.device)  # before the checks of the device's memory
    for line in check_startup(weights, engine, tokenizer, options.experts):
        note(hooks, line)
    steps = resolve_steps(options.steps, weights.config.seq_len)
    _check_spread(spread, source, engine, sampler)
    requests = encode_requests(tokenizer, prompts, steps, str(input_path), weights.config.seq_len)
    numbers = spread.shard.numbers(len(requests)) if spread.shard else range(len(requests))
    options = replace(options, engine=engine, steps=steps)
    if spread.workers:
        if spread.expert_parallel:
            check_divisible(weights.config.n_experts, len(spread.workers))
        runner = worker_pool(os.fspath(source), options, sampler, spread.workers, len(numbers),
                             _one_at_a_time(engine), hooks, spread.expert_parallel)
    else:
        runner = _InProcess(weights, len(numbers), options, sampler, hooks)
    header = None
    if spread.shard is not None:
        identity = run_identity(prompts, steps, sampler.temperature, sampler.topp, sampler.seed)
        header = lambda *times: shard_header(spread.shard, identity, *times)  # noqa: E731
    return _timed_run(runner, [requests[i] for i in numbers], numbers, output_path,
                      [input_path, *source_files(weights.store)], hooks, header)


def _one_at_a_time(engine: str) -> bool:
    """The numpy engine runs one request after another with the original's one shared sampler."""
    return engine == "numpy"


def _check_spread(spread: Spread, source, engine: str, sampler: Sampler) -> None:
    if not (spread.shard or spread.workers):
        return
    if sampler.temperature > 0 and _one_at_a_time(engine):
        raise GetpError("--shard, --gpus and --workers at temperature > 0 need the batched (cupy) engine: the numpy "
                        "engine's one shared sampler makes each request's tokens depend on the requests before it")
    if spread.workers and not isinstance(source, (str, os.PathLike)):
        raise GetpError("worker processes open the model themselves: give its path or preset name")


class _InProcess:
    """The getp runner of one engine in this process: `warm_up()`, `infer(requests, numbers)`,
    `free(failing)`, as `workers.WorkerPool`."""

    def __init__(self, weights, n_requests: int, options: GetpOptions, sampler: Sampler, hooks: GetpHooks):
        self.weights, self.n_requests, self.options = weights, n_requests, options
        self.sampler, self.hooks = sampler, hooks
        self.session, self.freed = Session(), False

    def warm_up(self) -> None:
        o = self.options
        self.session.model = create_engine(self.weights, o.engine, o.experts, o.steps, o.kv_cache)
        self.session.batched = warm_up_engine(self.session.model, self.n_requests, o.steps, o, self.hooks)

    def infer(self, requests: Sequence[Sequence[int]], numbers: Sequence[int]) -> list[list[int]]:
        on_request = self.hooks.progress(len(requests)) if self.hooks.progress else None
        return infer(self.session, self.sampler, requests, self.options.steps, on_request, numbers)

    def free(self, failing: bool = False) -> None:
        if not self.freed:  # once, whoever asks again (a failure after the finish)
            self.freed = True
            self.session.free(failing)


def _timed_run(runner, requests: Sequence[Sequence[int]], numbers: Sequence[int], output_path, inputs,
               hooks: GetpHooks, header: Callable[..., str] | None) -> GetpReport:
    """Warm up, infer, write, finish: the three timing lines; `header(warm_up_s, inference_s, finish_s)`,
    a shard's, goes first in the file, which is then written after the finish."""
    try:
        with atomic_output(output_path, inputs=inputs) as out:
            start = time.perf_counter()
            runner.warm_up()
            warm_up_s = time.perf_counter() - start
            hooks.echo(warm_up_line(warm_up_s))

            start = time.perf_counter()
            results = runner.infer(requests, numbers)
            inference_s = time.perf_counter() - start
            generated = sum(map(len, results))
            hooks.echo(elapsed_line(inference_s, generated))
            if header is not None:
                finish_s = _finish(runner, hooks)
                out.write(header(warm_up_s, inference_s, finish_s))
            out.write(format_output(results))
        if header is None:
            finish_s = _finish(runner, hooks)  # after the output is complete
    except BaseException:
        runner.free(failing=True)  # on a failure or an interrupt: the device freed, the first error kept
        raise
    return GetpReport(len(requests), generated, warm_up_s, inference_s, finish_s)


def _finish(runner, hooks: GetpHooks) -> float:
    start = time.perf_counter()
    runner.free()
    finish_s = time.perf_counter() - start
    hooks.echo(finish_line(finish_s))
    return finish_s
