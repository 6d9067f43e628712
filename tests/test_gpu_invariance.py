"""Batch invariance on the GPU (issue 15, item 3): a request's getp line is a function of the request alone,
byte for byte, whatever the batch (--batch 1, 7, the default), the prompt chunk (16, 128) and the request's
place in the input, in exact and fast; above temperature 0 its sampled tokens too (each request draws its
own stream). 7m at -n 256 and the 20b shape at -n 128 on the 32 standard prompts, the tiny odd config
on random ones; getp and `diff --batch` through the command line too.

Each shape's runs share one engine load (the 20b synthetic load takes about a minute): the batched engines
are built over it as getp builds its own (`Engine.batched`, `run_batched`), and the lines compared are
what getp writes (`format_output`)."""

from __future__ import annotations

import numpy as np
import pytest

from cupy_getp.checkpoint import SyntheticStore, Weights
from cupy_getp.config import preset
from cupy_getp.getp import format_output, read_requests, run_batched
from cupy_getp.sampler import Sampler

from conftest import ROOT, TINY, cli
from test_gpu_batch_engine import engine_7m, engine_tiny, standard_prompts, tiny_prompts, warmed_cupy  # noqa: F401

pytestmark = pytest.mark.gpu

PRECISIONS = ("exact", "fast")
GREEDY = Sampler(0.0, 0.9, 1)
SAMPLED = Sampler(0.8, 0.9, 7)  # -t 0.8 -s 7 (-p 0.9, the default)

# The runs compared with the default (every request a slot, prompt chunks of 128), as getp's options say
# them: engine.batched's keywords, and `shuffled` (the input's lines in another order, each request's
# line put back in its place).
RUNS = {
    "--batch 1": {"slots": 1},
    "--batch 7": {"slots": 7},
    "--chunk 16": {"max_chunk": 16},
    "--chunk 128": {"max_chunk": 128},
    "--batch 7 --chunk 16": {"slots": 7, "max_chunk": 16},
    "shuffled input": {"shuffled": True},
}
FEW_RUNS = ("--batch 1", "--batch 7", "--chunk 16", "shuffled input")  # where runs are slow (20b, sampling)


def shuffle_order(n: int) -> list[int]:
    """Line i of the shuffled input holds request order[i]."""
    return np.random.default_rng(11).permutation(n).tolist()


def getp_lines(engine, prompts, steps, precision, sampler=GREEDY, shuffled=False, **shape) -> list[list[int]]:
    """getp's lines for `prompts`, in input order. `shuffled`: the requests fed in `shuffle_order`, each
    keeping its number in the input (so its own stream above temperature 0), its line put back in place."""
    order = shuffle_order(len(prompts)) if shuffled else list(range(len(prompts)))
    batched = engine.batched(len(prompts), steps, precision=precision, **shape)
    try:
        lines = run_batched(batched, sampler, [prompts[i] for i in order], steps, numbers=order)
    finally:
        batched.free()
    in_place = [None] * len(lines)
    for line, request in zip(lines, order):
        in_place[request] = line
    return in_place


def first_difference(want: list[list[int]], got: list[list[int]]) -> str | None:
    """The first line (request) where `got` differs from `want`, and its first differing token."""
    if len(want) != len(got):
        return f"{len(got)} lines, not {len(want)}"
    for request, (a, b) in enumerate(zip(want, got)):
        if a != b:
            at = next((j for j, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            return (f"request {request} (line {request + 1}) first differs at token {at} of {len(a)}/{len(b)}: "
                    f"{b[at:at + 4]} here, {a[at:at + 4]} in the default run")
    return None


def assert_same_output(want, got, what: str) -> None:
    assert first_difference(want, got) is None, f"{what}: {first_difference(want, got)}"
    assert format_output(got).encode() == format_output(want).encode(), what  # the file, byte for byte


def assert_invariant(engine, prompts, steps, precision, runs=tuple(RUNS), sampler=GREEDY,
                     kv_cache="fp32") -> list[list[int]]:
    """Every run of `runs` writes the default run's file (all with a KV cache of `kv_cache` elements); returns the
    default's lines."""
    want = getp_lines(engine, prompts, steps, precision, sampler, kv_cache=kv_cache)
    for name in runs:
        got = getp_lines(engine, prompts, steps, precision, sampler, kv_cache=kv_cache, **RUNS[name])
        assert_same_output(want, got, f"{name} against the default run, precision {precision}, {kv_cache} KV cache")
    return want


@pytest.fixture(scope="module")
def engine_20b():
    with warmed_cupy(Weights(SyntheticStore(preset("20b"), seed=42, name="20b"))) as engine:
        yield engine


@pytest.mark.parametrize("precision", PRECISIONS)
def test_7m_lines_do_not_depend_on_batch_chunk_or_order(engine_7m, standard_prompts, precision):
    assert len(standard_prompts) == 32
    assert_invariant(engine_7m, standard_prompts, 256, precision)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_tiny_odd_config_lines_do_not_depend_on_batch_chunk_or_order(engine_tiny, precision):
    """Odd sizes everywhere; chunks of 3 too: the windowed layers' ring (window + chunk) wraps many times."""
    prompts = tiny_prompts(19, np.random.default_rng(3))
    want = assert_invariant(engine_tiny, prompts, TINY.seq_len, precision)
    assert_same_output(want, getp_lines(engine_tiny, prompts, TINY.seq_len, precision, slots=5, max_chunk=3),
                       f"--batch 5 --chunk 3 against the default run, precision {precision}")


@pytest.mark.parametrize("precision", PRECISIONS)
def test_bf16_kv_cache_lines_do_not_depend_on_batch_chunk_or_order(engine_7m, engine_tiny, standard_prompts,
                                                                   precision):
    """--kv-cache bf16 keeps the promise (each key and value rounded as it is written, whatever the batch): 7m,
    and the tiny odd config with chunks of 3, the batched engines' caches holding BF16 bits."""
    batched = engine_7m.batched(4, 16, precision=precision, kv_cache="bf16")
    assert {keys.dtype for keys in batched.model.cache.keys + batched.model.cache.values} == {np.dtype(np.uint16)}
    batched.free()
    assert_invariant(engine_7m, standard_prompts, 256, precision, kv_cache="bf16")
    prompts = tiny_prompts(19, np.random.default_rng(3))
    want = assert_invariant(engine_tiny, prompts, TINY.seq_len, precision, FEW_RUNS, kv_cache="bf16")
    assert_same_output(want, getp_lines(engine_tiny, prompts, TINY.seq_len, precision, slots=5, max_chunk=3,
                                        kv_cache="bf16"),
                       f"--batch 5 --chunk 3 against the default run, precision {precision}, bf16 KV cache")


@pytest.mark.parametrize("precision", PRECISIONS)
def test_7m_sampled_tokens_do_not_depend_on_batch_chunk_or_order(engine_7m, standard_prompts, precision):
    """-t 0.8 -s 7: each request draws its own stream, so its tokens are reproducible whatever it ran with;
    and they are sampled (not the greedy line). 12 prompts at -n 128: the host samples every token from
    the 201k logits (~3 ms each)."""
    prompts, steps = standard_prompts[:12], 128
    sampled = assert_invariant(engine_7m, prompts, steps, precision, FEW_RUNS, sampler=SAMPLED)
    greedy = getp_lines(engine_7m, prompts, steps, precision)
    assert sum(a != b for a, b in zip(sampled, greedy)) >= len(greedy) // 2


@pytest.mark.parametrize("precision", PRECISIONS)
def test_20b_lines_do_not_depend_on_batch_chunk_or_order(engine_20b, standard_prompts, precision):
    assert_invariant(engine_20b, standard_prompts, 128, precision, FEW_RUNS)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_getp_command_writes_the_same_file_whatever_the_batch_chunk_or_order(tmp_path, precision):
    """Through the command line: the default run's file, and `--batch 7 --chunk 16` on the input with its
    lines shuffled: the same lines, each in its request's place (a greedy run: above temperature 0 a
    request's stream is seeded by its line number, which shuffling changes)."""
    prompts = read_requests(ROOT / "data" / "input.txt")
    order = shuffle_order(len(prompts))
    shuffled = tmp_path / "shuffled.txt"
    shuffled.write_text("".join(f"{line}\n" for line in [str(len(prompts)), *(prompts[i] for i in order)]))
    files = {}
    for name, source, options in (("default", ROOT / "data" / "input.txt", []),
                                  ("shuffled", shuffled, ["--batch", "7", "--chunk", "16"])):
        files[name] = tmp_path / f"out-{name}.txt"  # not shuffled.txt: the input
        result = cli("getp", "7m", "-n", "256", "-i", str(source), "-o", str(files[name]), "--engine", "cupy",
                     "--precision", precision, *options)
        assert result.returncode == 0, result.stderr[-2000:]
    want = [list(map(int, line.split())) for line in files["default"].read_text().splitlines()]
    got = [None] * len(order)
    for line, request in zip(files["shuffled"].read_text().splitlines(), order):
        got[request] = list(map(int, line.split()))
    assert len(want) == 32
    assert_same_output(want, got, f"--batch 7 --chunk 16 on the shuffled input, precision {precision}")
    assert format_output(got).encode() == files["default"].read_bytes()


@pytest.mark.parametrize("precision", PRECISIONS)
def test_cli_diff_batch_runs_of_two_shapes_agree_bit_for_bit(precision):
    """In `exact` the diff passes whole; `fast` drifts from numpy beyond the spec's tolerances by design (its
    violations make the exit 1), but its two batched shapes still agree bit for bit."""
    result = cli("diff", "7m", "--batch", "8", "--steps", "16", "--precision", precision)
    line = next((l for l in result.stdout.splitlines() if l.startswith("batch invariance")), None)
    assert line is not None and "agree bit for bit" in line, result.stdout[-3000:] + result.stderr[-2000:]
    if precision == "exact":
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
        assert "violations: 0" in result.stdout


def test_cli_diff_batch_with_a_bf16_kv_cache_passes_against_the_reference_that_rounds_it():
    """`--kv-cache bf16` (exact): every row within the spec's tolerances of the numpy engine that rounds each key
    and value to BF16 as it caches them, and two batched shapes bit for bit."""
    result = cli("diff", "7m", "--batch", "8", "--steps", "16", "--precision", "exact", "--kv-cache", "bf16")
    out = result.stdout[-3000:] + result.stderr[-2000:]
    assert result.returncode == 0 and "violations: 0" in result.stdout, out
    assert "bf16 KV cache" in result.stdout, out
    line = next((l for l in result.stdout.splitlines() if l.startswith("batch invariance")), "")
    assert "agree bit for bit" in line, out
