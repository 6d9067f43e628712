"""Batch invariance, checked (`cupy-getp diff --batch`): the same requests through two batched engines of
different shapes (slot counts, prompt chunks: steps of other row counts, rows in other places) must give
every row the same values, bit for bit: a request's output is a function of the request alone.

The first run's values are kept as digests, not arrays: one 16-byte hash of the bits of each recorded
value (a layer's trace point, or the logits) of each request and position. At the 20b shape a row's values
take ~2 MB (the logits 0.8 MB), so 32 requests of 64 positions would hold 4 GB; their digests take a few MB.
A digest tells whether a value differs, not by how much: the line counts differing values.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .engine.base import TRACE_POINTS, Trace

# The precisions the promise covers. fp32 (CUDA-core products) is not covered for now: its line is
# printed, a difference there is not a violation.
INVARIANT_PRECISIONS = ("exact", "fast")
SECOND_CHUNK = 16  # the second run's prompt chunk (the first's is diff's default, 3)


def value_names(n_layers: int) -> list[str]:
    """What each digest of a row is, in order: every layer's trace points, then the logits."""
    return [f"layer {l} {point}" for l in range(n_layers) for point in TRACE_POINTS] + ["logits"]


def digest(value: np.ndarray) -> bytes:
    """The value's bits (and shape and dtype: a value of another shape differs too) as 16 bytes."""
    value = np.ascontiguousarray(value)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{value.dtype.str}{value.shape}".encode())
    h.update(value.view(np.uint8).data)
    return h.digest()


def row_digests(trace: Trace) -> list[bytes]:
    """One row's values as digests, in `value_names` order."""
    points = [digest(values[point]) for values in trace.values for point in TRACE_POINTS]
    return points + [digest(trace.logits)]


class RowDigests:
    """The first run: each (request, position)'s digests and the token it fed next (the second run is fed
    the same tokens)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[int, int], list[bytes]] = {}
        self.next_tokens: dict[tuple[int, int], int] = {}

    def record(self, row) -> None:
        """Keep a row (diff.BatchedRow) of the first run."""
        self.rows[row.request, row.pos] = row_digests(row.trace)
        self.next_tokens[row.request, row.pos] = row.next_token

    def next_token(self, request: int, pos: int) -> int:
        return self.next_tokens[request, pos]


def describe_shape(shape) -> str:
    """A batched engine's shape (gpu/batch_shape.py BatchShape) as the check's line names it."""
    return f"{shape.n_slots} slot{'s' if shape.n_slots != 1 else ''} with prompt chunks of {shape.max_chunk}"


@dataclass
class InvarianceCheck:
    """The second run against the first's digests: values compared and differing, and the first
    difference by (request, position, value)."""

    first: str  # the two runs' shapes, described
    second: str
    precision: str
    rows: int = 0
    values: int = 0
    differing: int = 0
    first_difference: tuple[int, int, int, str] | None = None  # request, position, value index and name
    missing_rows: int = 0  # rows of one run that the other never ran

    @property
    def agree(self) -> bool:
        return self.differing == 0 and self.missing_rows == 0

    @property
    def covered(self) -> bool:
        return self.precision in INVARIANT_PRECISIONS

    def add_difference(self, request: int, pos: int, index: int, name: str) -> None:
        self.differing += 1
        if self.first_difference is None or (request, pos, index) < self.first_difference[:3]:
            self.first_difference = (request, pos, index, name)

    def line(self) -> str:
        runs = f"batch invariance ({self.precision}): {self.first} and {self.second}"
        if self.agree:
            return f"{runs} agree bit for bit ({self.values:,} values over {self.rows:,} rows)"
        where = ""
        if self.first_difference is not None:
            request, pos, _, name = self.first_difference
            where = f", the first at request {request} position {pos} {name}"
        missing = f", {self.missing_rows} rows run by one only" if self.missing_rows else ""
        cover = "" if self.covered else f" (not a violation: {self.precision} is not covered)"
        return f"{runs} differ in {self.differing:,} of {self.values:,} values{where}{missing}{cover}"


def compare_rows(first: RowDigests, rows: Iterable, n_layers: int, check: InvarianceCheck) -> InvarianceCheck:
    """Every row (diff.BatchedRow) of the second run against the first's digests, which are let go as
    they are matched."""
    names = value_names(n_layers)
    for row in rows:
        want = first.rows.pop((row.request, row.pos), None)
        if want is None:
            check.missing_rows += 1
            continue
        check.rows += 1
        for index, (a, b) in enumerate(zip(want, row_digests(row.trace), strict=True)):
            check.values += 1
            if a != b:
                check.add_difference(row.request, row.pos, index, names[index])
    check.missing_rows += len(first.rows)
    return check
