"""Layer-by-layer comparison of two engines on the same token stream (`cupy-getp diff --layers`).

Both engines decode the same tokens: the prompt, then the reference's greedy continuation. At every
position the per-layer trace points and the logits are compared by max abs diff against the spec's
tolerances (docs/spec.md); the chosen experts must match; and at every generated step both greedy tokens must agree.
With --batch, two batched runs of different shapes must also agree bit for bit (`invariance.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from .checkpoint import Weights
from .engine.base import TRACE_POINTS, Engine, Trace
from .engine.factory import create_engine
from .errors import GetpError
from .generation import check_prompt
from .invariance import SECOND_CHUNK, InvarianceCheck, RowDigests, compare_rows, describe_shape

# The parity tolerances of docs/spec.md (max abs diff): the attention block 5e-4; where the BF16 MoE weights
# are involved (the MoE output, the residual after it, and so the logits) 2e-3.
TOLERANCES = {"attn_out": 5e-4, "x_attn": 5e-4, "router": 5e-4, "moe_out": 2e-3, "x_moe": 2e-3, "logits": 2e-3}
VALUE_POINTS = tuple(p for p in TRACE_POINTS if p != "experts")


@dataclass
class StepDiff:
    pos: int
    token: int  # fed at this position
    layers: list[dict[str, float]]  # per layer: point -> max abs diff
    experts_differ: list[int]  # layers whose chosen experts differ
    logits: float
    generated: bool  # a sampled position (greedy tokens compared)
    reference_token: int
    other_token: int
    violations: list[str] = field(default_factory=list)

    @property
    def token_parity(self) -> bool:
        return self.reference_token == self.other_token


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    finite = np.isfinite(a64) & np.isfinite(b64)
    if not np.array_equal(np.isfinite(a64), np.isfinite(b64)) or np.any(a64[~finite] != b64[~finite]):
        return float("inf")  # a NaN or inf on one side only is never within tolerance
    return float(np.max(np.abs(a64[finite] - b64[finite]))) if finite.any() else 0.0


def compare_step(pos: int, token: int, ref: Trace, other: Trace, generated: bool) -> StepDiff:
    layers, experts_differ, violations = [], [], []
    for l, (a, b) in enumerate(zip(ref.values, other.values)):
        diffs = {p: max_abs_diff(a[p], b[p]) for p in VALUE_POINTS}
        layers.append(diffs)
        violations += [f"layer {l} {p} {d:.3g} > {TOLERANCES[p]:g}" for p, d in diffs.items() if d > TOLERANCES[p]]
        if not np.array_equal(a["experts"], b["experts"]):
            experts_differ.append(l)
            violations.append(f"layer {l} experts {a['experts'].tolist()} != {b['experts'].tolist()}")
    logits = max_abs_diff(ref.logits, other.logits)
    if logits > TOLERANCES["logits"]:
        violations.append(f"logits {logits:.3g} > {TOLERANCES['logits']:g}")
    ref_token, other_token = int(np.argmax(ref.logits)), int(np.argmax(other.logits))
    if generated and ref_token != other_token:
        violations.append(f"greedy token {other_token} != reference {ref_token}")
    return StepDiff(pos, token, layers, experts_differ, logits, generated, ref_token, other_token, violations)


def diff_positions(prompts: Sequence[Sequence[int]], steps: int, seq_len: int) -> int:
    """Positions a diff runs: the longest prompt, then `steps` greedy tokens (the last one not fed)."""
    return min(max(map(len, prompts)) + steps - 1, seq_len)


def greedy_steps(prompts: Sequence[Sequence[int]], steps: int, seq_len: int) -> str:
    """The greedy steps a diff compares, as its heading says them: fewer than `--steps` asked for
    where seq_len ends the run first."""
    done = diff_positions(prompts, steps, seq_len) - max(map(len, prompts)) + 1
    return f"{done} greedy steps" + (f" (seq_len {seq_len} ends the run before {steps})" if done < steps else "")


def diff_engines(reference: Engine, other: Engine, prompt: Sequence[int], steps: int) -> Iterator[StepDiff]:
    """Feed `prompt`, then `steps` greedy tokens of the reference (the last one is not fed)."""
    positions = diff_positions([prompt], steps, reference.config.seq_len)
    token = prompt[0]
    for pos in range(positions):
        ref_trace, other_trace = Trace(), Trace()
        reference.forward(token, pos, ref_trace)
        other.forward(token, pos, other_trace)
        yield compare_step(pos, token, ref_trace, other_trace, pos + 1 >= len(prompt))
        token = next_fed_token(prompt, pos, ref_trace.logits)


def next_fed_token(prompt: Sequence[int], pos: int, reference_logits: np.ndarray) -> int:
    """The token a diff feeds at pos + 1: the prompt's, then the reference's greedy choice."""
    return prompt[pos + 1] if pos + 1 < len(prompt) else int(np.argmax(reference_logits))


def format_header(layers: bool) -> str:
    columns = ["pos", "token", "layer", *VALUE_POINTS, "experts"] if layers else ["pos", "token"]
    columns += ["logits", "greedy ref/other"]
    return "  ".join(f"{c:>10}" for c in columns)


def format_step(step: StepDiff, layers: bool) -> list[str]:
    """Table rows: one per layer (with --layers), then the step's logits row. '!' marks a violation."""

    def cell(point: str, value: float) -> str:
        return f"{value:9.2e}{'!' if value > TOLERANCES[point] else ' '}"

    rows = []
    if layers:
        for l, diffs in enumerate(step.layers):
            experts = "differ!" if l in step.experts_differ else "same"
            rows.append("  ".join([f"{step.pos:>10}", f"{step.token:>10}", f"{l:>10}",
                                   *(f"{cell(p, diffs[p]):>10}" for p in VALUE_POINTS), f"{experts:>10}"]))
    greedy = f"{step.reference_token}/{step.other_token}" + ("" if step.token_parity else " !")
    pad = [""] * (len(VALUE_POINTS) + 2) if layers else []
    rows.append("  ".join([f"{step.pos:>10}", f"{step.token:>10}", *(f"{p:>10}" for p in pad),
                           f"{cell('logits', step.logits):>10}", f"{greedy if step.generated else '-':>10}"]))
    return rows


@dataclass
class DiffSummary:
    positions: int = 0
    generated: int = 0
    token_matches: int = 0
    worst: dict[str, float] = field(default_factory=lambda: {p: 0.0 for p in TOLERANCES})
    violations: list[str] = field(default_factory=list)

    def add(self, step: StepDiff) -> None:
        self.positions += 1
        self.generated += step.generated
        self.token_matches += step.generated and step.token_parity
        for diffs in step.layers:
            for p, d in diffs.items():
                self.worst[p] = max(self.worst[p], d)
        self.worst["logits"] = max(self.worst["logits"], step.logits)
        self.violations += [f"pos {step.pos}: {v}" for v in step.violations]

    def lines(self) -> list[str]:
        worst = ", ".join(f"{p} {d:.2e} (tol {TOLERANCES[p]:g})" for p, d in self.worst.items())
        return [f"max abs diff over {self.positions} positions: {worst}",
                f"token parity: {self.token_matches}/{self.generated} greedy steps",
                f"violations: {len(self.violations)}", *self.violations[:20]]


@dataclass
class ReferenceRun:
    """A request through the reference: the token fed and the trace at every position."""

    tokens: list[int]
    traces: list[Trace]


def reference_run(reference: Engine, prompt: Sequence[int], positions: int) -> ReferenceRun:
    """Feed `prompt`, then the reference's own greedy tokens, for `positions` positions."""
    tokens, traces = [prompt[0]], []
    for pos in range(positions):
        trace = Trace()
        reference.forward(tokens[pos], pos, trace)
        traces.append(trace)
        tokens.append(next_fed_token(prompt, pos, trace.logits))
    return ReferenceRun(tokens, traces)


@dataclass
class BatchedRow:
    """One row of a batched step: its request and position, the token fed there, whether it samples, its
    values, the device's greedy token, and the token fed at pos + 1."""

    request: int
    pos: int
    token: int
    wants_token: bool
    trace: Trace
    device_token: int
    next_token: int


def batched_rows(batched, prompts: Sequence[Sequence[int]], positions: int,
                 feed: Callable[[int, int], int] | None = None) -> Iterator[BatchedRow]:
    """`prompts` through a batched engine (`gpu/batch.py`) with continuous batching, `positions` positions
    each, every row as its step ends; after its prompt, request r is fed `feed(r, pos)` at pos + 1 (without
    `feed`, the device's greedy token)."""
    from .engine.scheduler import Scheduler
    from .gpu.batch import BatchTrace

    shape = batched.shape
    scheduler = Scheduler(prompts, positions, shape.n_slots, shape.max_rows, shape.max_chunk, frozenset())
    while not scheduler.done:
        rows = scheduler.next_rows()
        trace = BatchTrace()
        view = batched.step(rows.slots, rows.positions, rows.tokens, trace)
        device_tokens = batched.tokens(view, len(rows))
        forced = np.zeros(len(rows), np.int32)
        for i, owner in enumerate(rows.owners):
            pos = int(rows.positions[i])
            forced[i] = feed(owner.index, pos) if feed is not None else device_tokens[i]
            yield BatchedRow(owner.index, pos, int(rows.tokens[i]), bool(rows.wants_token[i]), trace.row(i),
                             int(device_tokens[i]), int(forced[i]))
        scheduler.record(rows, forced)


def diff_budget(prompts: Sequence[Sequence[int]], steps: int, batched) -> int:
    """Positions each request of a batched diff runs."""
    return min(diff_positions(prompts, steps, batched.shape.n_ctx), batched.shape.n_ctx)


def diff_batched(reference: Engine, batched, prompts: Sequence[Sequence[int]], steps: int,
                 record: Callable[[BatchedRow], None] | None = None) -> Iterator[tuple[int, StepDiff]]:
    """Run `prompts` through a batched engine (`gpu/batch.py`) with continuous batching, every row fed the
    reference's tokens, and compare each row, layer by layer, with the reference run of its request
    at that position. Yields (request index, StepDiff) in step order; `record(row)` hears each row."""
    budget = diff_budget(prompts, steps, batched)
    runs = [reference_run(reference, p, budget) for p in prompts]
    for row in batched_rows(batched, prompts, budget, lambda request, pos: runs[request].tokens[pos + 1]):
        step = compare_step(row.pos, row.token, runs[row.request].traces[row.pos], row.trace, row.wants_token)
        if step.generated and row.device_token != step.other_token:  # the device's argmax, not numpy's
            step.violations.append(f"device greedy token {row.device_token} != argmax {step.other_token} "
                                   f"of the same logits")
        if record is not None:
            record(row)
        yield row.request, step


@dataclass(frozen=True)
class BatchDiffShape:
    """How `diff --batch` runs the batched engine: by default half as many slots as requests (admission
    while others decode) and prompt chunks of 3 (prompts span several steps); more slots and longer
    chunks reach the many-row kernels (tensor cores above 32 rows)."""

    slots: int | None = None
    chunk: int = 3
    precision: str | None = None
    kv_cache: str = "fp32"


def batch_diff_engine(engine: Engine, prompts: Sequence[Sequence[int]], steps: int,
                      shape: BatchDiffShape = BatchDiffShape()):
    """A batched engine over `engine` shaped as `shape` says, with room for the diff's positions."""
    from .gpu.batch import BatchedEngine
    from .gpu.batch_shape import BatchShape

    if not engine.batches:
        raise GetpError(f"the {engine.name} engine has no batched mode")
    n_ctx = diff_positions(prompts, steps, engine.config.seq_len)
    n_slots = shape.slots or max(1, len(prompts) // 2)
    chunk = min(shape.chunk, n_ctx)
    return BatchedEngine(engine, BatchShape(n_slots, n_slots + chunk, chunk, n_ctx, shape.kv_cache), shape.precision)


def second_shape(first, n_requests: int, precision: str) -> BatchDiffShape:
    """The shape of the invariance check's second run (`invariance.py`), in the first's precision: another
    slot count (every request at once where the first runs fewer, else half as many; 2 where it runs one
    slot for one request), so that steps have other row counts and rows other places, and prompt chunks of
    SECOND_CHUNK (the default's where the first's are SECOND_CHUNK)."""
    slots = n_requests if first.n_slots < n_requests else max(1, first.n_slots // 2)
    chunk = SECOND_CHUNK if first.max_chunk != SECOND_CHUNK else BatchDiffShape.chunk
    return BatchDiffShape(slots if slots != first.n_slots else slots + 1, chunk, precision, first.kv_cache)


def check_invariance(engine: Engine, first_shape, precision: str, digests: RowDigests,
                     prompts: Sequence[Sequence[int]], steps: int) -> InvarianceCheck:
    """The same rows as the first batched run (its digests, the tokens it fed) through a batched engine of
    another shape, compared bit for bit."""
    second = batch_diff_engine(engine, prompts, steps, second_shape(first_shape, len(prompts), precision))
    try:
        check = InvarianceCheck(describe_shape(first_shape), describe_shape(second.shape), second.precision)
        rows = batched_rows(second, prompts, diff_budget(prompts, steps, second), digests.next_token)
        return compare_rows(digests, rows, engine.config.n_layers, check)
    finally:
        second.free()


def diff_model(weights: Weights, engine: str, prompt: Sequence[int], steps: int, layers: bool,
               echo: Callable[[str], None], experts: str = "auto") -> DiffSummary:
    """`cupy-getp diff`: the numpy reference and `engine` (the GPU one with `experts` storage) on the same
    tokens, one table row per position (per layer too with `layers`) through `echo` as they come, then the
    summary lines."""
    check_prompt(prompt, weights.config.seq_len, "the diff prompt")
    with create_engine(weights, "numpy") as reference, create_engine(weights, engine, experts) as other:
        reference.warm_up()
        other.warm_up()
        echo(f"diff: numpy vs {other.name} on {weights.description}, {len(prompt)} prompt tokens, "
             f"{greedy_steps([prompt], steps, weights.config.seq_len)}{_storage(other)}")
        echo(format_header(layers))
        summary = DiffSummary()
        for step in diff_engines(reference, other, prompt, steps):
            summary.add(step)
            for row in format_step(step, layers):
                echo(row)
    for line in summary.lines():
        echo(line)
    return summary


def check_reference(reference_name: str, kv_cache: str) -> None:
    """`diff --batch`'s reference must hold its KV cache as the batched engine does: numpy rounds it as asked, the
    single-sequence GPU engine (`cupy`) keeps FP32."""
    if reference_name == "cupy" and kv_cache != "fp32":
        raise GetpError(f"diff --kv-cache {kv_cache} runs against the numpy reference (--reference numpy): the "
                        f"single-sequence GPU engine's KV cache is FP32")


def diff_batched_model(weights: Weights, engine: str, reference_name: str, prompts: Sequence[Sequence[int]],
                       steps: int, layers: bool, echo: Callable[[str], None],
                       shape: BatchDiffShape = BatchDiffShape(), experts: str = "auto") -> DiffSummary:
    """`cupy-getp diff --batch`: `prompts` through the batched `engine`, every row against the reference
    run of its request: numpy, or "cupy", the single-sequence GPU engine (the same engine object's
    one-slot model: the same model over rows with one request slot in `fp32`, its own KV cache apart from the
    batched engine's), for shapes numpy is too slow for. Then the same rows
    through a batched engine of another shape, bit for bit against the first (`invariance.py`): one line,
    and a violation where they differ in a precision the promise covers."""
    from .reference import NumpyEngine

    check_reference(reference_name, shape.kv_cache)
    with create_engine(weights, engine, experts, kv_cache=shape.kv_cache) as other:
        other.warm_up()
        reference = other if reference_name == "cupy" else NumpyEngine(weights, shape.kv_cache)
        if reference is not other:
            reference.warm_up()
        batched = batch_diff_engine(other, prompts, steps, shape)
        echo(f"diff: {reference.name} (one sequence at a time) vs the batched {other.name} engine on "
             f"{weights.description}: {len(prompts)} requests over {batched.shape.n_slots} slots, prompt chunks "
             f"of {batched.shape.max_chunk}, {batched.shape.n_ctx} positions each (the longest prompt, then "
             f"{greedy_steps(prompts, steps, batched.shape.n_ctx)}), precision {batched.precision}, "
             f"{batched.shape.kv_cache} KV cache{_storage(other)}")
        echo(format_header(layers))
        summary, digests = DiffSummary(), RowDigests()
        for request, step in diff_batched(reference, batched, prompts, steps, digests.record):
            summary.add(step)
            for row in format_step(step, layers):
                echo(f"r{request:<3}{row}")
        first_shape, precision = batched.shape, batched.precision
        batched.free()
        invariance = check_invariance(other, first_shape, precision, digests, prompts, steps)
    echo(invariance.line())
    if not invariance.agree and invariance.covered:
        summary.violations.append(invariance.line())
    for line in summary.lines():
        echo(line)
    return summary


def _storage(engine: Engine) -> str:
    """The heading's mention of how the engine holds its weights (the GPU engine's expert storage)."""
    notes = engine.storage_notes()
    return f"; {notes[0]}" if notes else ""
