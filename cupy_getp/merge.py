"""`merge OUT SHARD...`: the output of a getp run of the whole input, from its shards' files (`shards.py`).

The shards must be one run's (same input, same settings), disjoint and complete; otherwise one GetpError
and nothing is written. The lines come out in the input's order, as a run of the whole input writes them.

The three timing lines describe the whole run as if its shards ran at the same time, one machine each
(what `--shard` is for): each phase ends when its slowest shard's does, so each line gives the largest of
the shards' times, and the throughput is all the shards' tokens over the largest inference time. Shards run
one after another took the sum instead: a note says it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .errors import GetpError
from .fileio import atomic_output, read_text
from .getp import is_plain_integer, text_lines
from .getp_session import elapsed_line, finish_line, format_output, warm_up_line
from .shards import ShardHeader, parse_header


@dataclass(frozen=True)
class ShardFile:
    path: str | os.PathLike
    header: ShardHeader
    results: list[list[int]]


def read_shard(path: str | os.PathLike) -> ShardFile:
    lines = text_lines(read_text(path, regular=True))
    header = parse_header(lines[0] if lines else "", path)
    results = []
    for number, line in enumerate(lines[1:], start=2):
        words = line.split(" ") if line else []
        if not all(is_plain_integer(word) for word in words):
            raise GetpError(f"{path}:{number}: not a line of token ids: {line[:40]!r}")
        results.append([int(word) for word in words])
    expected = len(header.shard.numbers(header.run["requests"]))
    if len(results) != expected:
        raise GetpError(f"{path}: shard {header.shard} of {header.run['requests']} requests should hold "
                        f"{expected} lines, it holds {len(results)}")
    return ShardFile(path, header, results)


def check_shards(shards: Sequence[ShardFile]) -> None:
    """One run's shards, each once, all of them; else GetpError."""
    first = shards[0]
    seen: dict[int, ShardFile] = {}
    for shard in shards:
        if shard.header.run != first.header.run or shard.header.shard.n != first.header.shard.n:
            raise GetpError(f"{shard.path} is not from the same run as {first.path}: "
                            f"{_difference(first.header, shard.header)}")
        k = shard.header.shard.k
        if k in seen:
            raise GetpError(f"{seen[k].path} and {shard.path} both hold shard {shard.header.shard}")
        seen[k] = shard
    n = first.header.shard.n
    missing = [f"{k}/{n}" for k in range(1, n + 1) if k not in seen]
    if missing:
        raise GetpError(f"shard{'s' if len(missing) > 1 else ''} {', '.join(missing)} missing: "
                        f"merge needs all {n} shards of the run")


def _difference(a: ShardHeader, b: ShardHeader) -> str:
    if a.shard.n != b.shard.n:
        return f"split in {a.shard.n} vs {b.shard.n} shards"
    names = sorted(set(a.run) | set(b.run))
    return ", ".join(f"{name} {a.run.get(name, '-')} vs {b.run.get(name, '-')}"
                     for name in names if a.run.get(name) != b.run.get(name))


def merged_results(shards: Sequence[ShardFile]) -> list[list[int]]:
    results: list[list[int] | None] = [None] * shards[0].header.run["requests"]
    for shard in shards:
        for number, tokens in zip(shard.header.shard.numbers(len(results)), shard.results):
            results[number] = tokens
    return results


def merge(output_path: str | os.PathLike, shard_paths: Sequence[str | os.PathLike],
          echo: Callable[[str], None] = print, note: Callable[[str], None] | None = None) -> int:
    """Write the merged output; echo the three timing lines of the whole run. Returns the request count."""
    if not shard_paths:
        raise GetpError("merge needs the shards' files")
    shards = [read_shard(path) for path in shard_paths]
    check_shards(shards)
    results = merged_results(shards)
    with atomic_output(output_path, inputs=shard_paths) as out:
        out.write(format_output(results))
    headers = [shard.header for shard in shards]
    inference = [h.inference_s for h in headers]
    generated = sum(map(len, results))
    echo(warm_up_line(max(h.warm_up_s for h in headers)))
    echo(elapsed_line(max(inference), generated))
    echo(finish_line(max(h.finish_s for h in headers)))
    if note is not None:
        note(f"the timing lines take the slowest of {len(shards)} shards (run at the same time); one after "
             f"another, their inference took {sum(inference):f} s, {_rate(generated, sum(inference))} tok/s")
    return len(results)


def _rate(tokens: int, seconds: float) -> str:
    return f"{tokens / seconds if seconds > 0 else 0.0:f}"
