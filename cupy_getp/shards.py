"""`--shard K/N`: the K-th of N disjoint slices of getp's requests, and the header its output file starts with
so that `merge` (`merge.py`) can join the shards' files into the output of a run of the whole input.

Slicing is round-robin: shard K (1..N) holds the requests numbered K-1, K-1+N, K-1+2N, ... (0-based, in
input order). Contiguous ranges would be as simple, but an input's cost is rarely spread evenly along it
(files grouped or sorted by prompt length, a block of long prompts): every N-th request gives each shard
the same mix, and the shards' sizes differ by at most one either way.

A shard's file is the spec's output lines of its requests, in input order, after one header line:
`#cupy-getp-shard {JSON}` with the shard, the input's request count and digest, the settings that decide
the tokens, and the shard's three times. A '#' line can never be a line of token ids, so a shard's file
is never mistaken for a whole output.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import GetpError

HEADER_MARK = "#cupy-getp-shard "
VERSION = 1


@dataclass(frozen=True)
class Shard:
    k: int  # 1..n
    n: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """'K/N' with 1 <= K <= N, else GetpError."""
        k, sep, n = text.partition("/")
        if not (sep and k.isascii() and k.isdigit() and n.isascii() and n.isdigit() and 1 <= int(k) <= int(n)):
            raise GetpError(f"--shard expects K/N with 1 <= K <= N (e.g. 2/4), got {text!r}")
        return cls(int(k), int(n))

    def numbers(self, n_requests: int) -> range:
        """The 0-based input numbers of this shard's requests, in input order."""
        return range(self.k - 1, n_requests, self.n)

    def __str__(self) -> str:
        return f"{self.k}/{self.n}"


def run_identity(prompts: Sequence[str], steps: int, temperature: float, topp: float, seed: int) -> dict:
    """What shards must share to be parts of one run: the input (its request count and a digest of its
    prompts) and the settings that decide the tokens. Greedy decoding ignores the sampler's seed and
    top-p, so they are left out there. The weights are not in it (hashing a model costs as much as
    reading it): shards of one run must be given the same model."""
    digest = hashlib.sha256("\n".join(prompts).encode("utf-8", "surrogateescape")).hexdigest()
    sampling = {"temperature": temperature} if temperature == 0 else {"temperature": temperature, "topp": topp,
                                                                       "seed": seed}
    return {"requests": len(prompts), "input_sha256": digest, "steps": steps, **sampling}


def shard_header(shard: Shard, identity: dict, warm_up_s: float, inference_s: float, finish_s: float) -> str:
    fields = {"version": VERSION, "shard": shard.k, "of": shard.n, "run": identity,
              "warm_up_s": warm_up_s, "inference_s": inference_s, "finish_s": finish_s}
    return HEADER_MARK + json.dumps(fields, sort_keys=True) + "\n"


@dataclass(frozen=True)
class ShardHeader:
    shard: Shard
    run: dict
    warm_up_s: float
    inference_s: float
    finish_s: float


def parse_header(line: str, path) -> ShardHeader:
    """The header line of a shard's file, else GetpError naming `path`."""
    if not line.startswith(HEADER_MARK):
        raise GetpError(f"{path}: not a shard's output (no '{HEADER_MARK.strip()}' first line): "
                        f"made without --shard?")
    try:
        fields = json.loads(line[len(HEADER_MARK):])
        if fields["version"] != VERSION:
            raise GetpError(f"{path}: shard format version {fields['version']}, this program reads {VERSION}")
        shard = Shard(int(fields["shard"]), int(fields["of"]))
        times = [float(fields[name]) for name in ("warm_up_s", "inference_s", "finish_s")]
        run = fields["run"]
        valid = 1 <= shard.k <= shard.n and isinstance(run, dict) and isinstance(run.get("requests"), int)
    except (ValueError, KeyError, TypeError):
        valid = False
    if not valid:
        raise GetpError(f"{path}: a damaged shard header")
    return ShardHeader(shard, run, *times)
