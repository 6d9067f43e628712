"""MXFP4 expert storage on the GPU: bit-identical logits to BF16 storage of the same weights (7m and a 20b shape
cut to three layers; one sequence, and batched in every precision), `diff` with `--experts mxfp4`, what `auto`
picks on a device made small by CuPy's pool limit, the remedies that name `--experts mxfp4`, and the 120b shape
on one GPU."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from cupy_getp.checkpoint import SyntheticStore, Weights
from cupy_getp.config import preset
from cupy_getp.engine.factory import create_engine
from cupy_getp.engine.scheduler import Scheduler
from cupy_getp.getp import encode_requests, read_requests
from cupy_getp.gpu.batch import PRECISIONS
from cupy_getp.gpu.experts import device_bytes

from conftest import ROOT, cli

pytestmark = pytest.mark.gpu

GiB = 2**30
SHAPES = {"7m": preset("7m"), "20b-3-layers": dataclasses.replace(preset("20b"), n_layers=3)}


@pytest.fixture(scope="module", params=list(SHAPES))
def engine_pair(request):
    """{storage: warmed-up GPU engine} over the same synthetic weights (experts in MXFP4)."""
    weights = Weights(SyntheticStore(SHAPES[request.param], seed=42, name=request.param))
    engines = {}
    try:
        for storage in ("bf16", "mxfp4"):
            engines[storage] = create_engine(weights, "cupy", storage)
            engines[storage].warm_up()
            assert engines[storage].w.storage["w_mlp1"] == storage
        yield engines
    finally:
        for engine in engines.values():
            engine.finish()


@pytest.fixture(scope="module")
def prompts(tokenizer):
    return encode_requests(tokenizer, read_requests(ROOT / "data" / "input.txt"), 2048, "input.txt")


def test_one_sequence_gives_the_same_logits_bit_for_bit(engine_pair, prompts):
    """The single-sequence engine: a prompt, then 8 greedy steps; every position's logits equal to the bit."""
    bf16, mxfp4 = engine_pair["bf16"], engine_pair["mxfp4"]
    tokens = list(prompts[0])
    for pos in range(len(prompts[0]) + 8):
        want, got = bf16.forward(tokens[pos], pos), mxfp4.forward(tokens[pos], pos)
        assert np.array_equal(want.view(np.uint32), got.view(np.uint32)), f"position {pos}"
        if pos + 1 >= len(tokens):
            tokens.append(int(np.argmax(want)))
    bf16.reset()
    mxfp4.reset()


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("n_requests", [1, 8])
def test_batched_steps_give_the_same_logits_bit_for_bit(engine_pair, prompts, precision, n_requests):
    """Both batched engines fed the same rows (continuous batching of `n_requests` prompts, chunks of 64: steps
    from one row to past the tensor cores' threshold): every row's logits and greedy token equal to the bit."""
    steps = 40  # the prompt chunk too (at most -n): the 8 prompts' 39 tokens in one step
    batched = {storage: engine.batched(n_requests, steps, slots=n_requests, precision=precision, max_chunk=64)
               for storage, engine in engine_pair.items()}
    try:
        shape = batched["bf16"].shape
        scheduler = Scheduler(prompts[:n_requests], steps, shape.n_slots, shape.max_rows, shape.max_chunk,
                              frozenset())
        counts = set()
        while not scheduler.done:
            rows = scheduler.next_rows()
            n = len(rows)
            counts.add(n)
            views = {s: b.step(rows.slots, rows.positions, rows.tokens) for s, b in batched.items()}
            tokens = {s: batched[s].tokens(v, n) for s, v in views.items()}
            logits = {s: v.logits[:n].get() for s, v in views.items()}
            assert np.array_equal(logits["bf16"].view(np.uint32), logits["mxfp4"].view(np.uint32)), \
                f"{n} rows at positions {rows.positions.tolist()}"
            assert np.array_equal(tokens["bf16"], tokens["mxfp4"])
            scheduler.record(rows, tokens["bf16"])
        assert counts == {1} if n_requests == 1 else max(counts) > 32, counts
    finally:
        for b in batched.values():
            b.free()


@pytest.mark.parametrize("batch", [[], ["--batch", "8"]], ids=["one-sequence", "batch-8"])
def test_diff_with_mxfp4_experts_exits_zero(batch):
    result = cli("diff", "7m", "--layers", *batch, "--experts", "mxfp4")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "violations: 0" in result.stdout and "experts: MXFP4 (--experts mxfp4)" in result.stdout


@pytest.mark.parametrize("storage", ["bf16", "mxfp4"])
def test_auto_on_a_device_made_small_by_the_pool_limit(storage, tmp_path):
    """7m, -n 64: a pool limit of `device_bytes` with BF16 experts keeps BF16 (and getp runs in it: the plan
    holds everything it allocates); 64 KiB less takes MXFP4, whose plan is smaller, and runs too."""
    weights = Weights(SyntheticStore(preset("7m"), seed=42, name="7m"))
    limit = device_bytes(weights, "bf16", 64) - (0 if storage == "bf16" else 65536)
    assert device_bytes(weights, "mxfp4", 64) < limit
    out = tmp_path / "out.txt"
    result = cli("getp", "7m", "--engine", "cupy", "-n", "64", "-i", str(ROOT / "data/input.txt"), "-o", str(out),
                 env={"CUPY_GPU_MEMORY_LIMIT": str(limit)})
    assert result.returncode == 0, result.stderr
    assert f"note: experts: {storage.upper()} (auto: " in result.stderr
    assert len(out.read_text().splitlines()) == 32


def test_weights_too_large_with_bf16_experts_suggest_mxfp4(tmp_path):
    """20b, BF16 experts asked for, on a 3 GiB device: the weights' line names --experts mxfp4 and its size."""
    result = cli("getp", "20b", "--engine", "cupy", "--experts", "bf16", "-n", "64", "-i",
                 str(ROOT / "data/input.txt"), "-o", str(tmp_path / "out.txt"),
                 env={"CUPY_GPU_MEMORY_LIMIT": str(3 * GiB)})
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert re.fullmatch(r"error: out of device memory allocating the weights \([\d.]+ GiB, BF16 experts\): "
                        r"[\d.]+ GiB free of [\d.]+ GiB; --experts mxfp4 \(the weights then need 1[56]\.\d\d GiB\), "
                        r"or a device with more free memory", result.stderr.strip().splitlines()[-1]), result.stderr


@pytest.mark.parametrize("experts", ["mxfp4", "auto"])
def test_120b_runs_a_few_requests_on_one_gpu(experts, tmp_path, capsys):
    """The 120b shape with MXFP4 experts (auto takes them: BF16 ones need ~225 GiB): 4 requests at -n 4, exit
    0, weights under 70 GB on the device. Needs more than 75 GB free."""
    from cupy_getp.gpu.device import Device

    free = Device.open().device_free_bytes()[0]
    if free <= 75e9:
        pytest.skip(f"the 120b shape needs more than 75 GB free, the device has {free / 1e9:.1f} GB")
    requests, out = tmp_path / "in.txt", tmp_path / "out.txt"
    requests.write_text("4\nHi\nThe\nA\nHello\n")
    result = cli("run", "120b", "-m", "getp", "--engine", "cupy", "--experts", experts, "-i", str(requests),
                 "-o", str(out), "-n", "4")
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(out.read_text().splitlines()) == 4
    assert re.search(r"note: experts: MXFP4 \((--experts mxfp4|auto: BF16 experts need)", result.stderr)
    weights_bytes = int(re.search(r"note: device weights: [\d.]+ GiB \(([\d,]+) bytes\)", result.stderr)[1]
                        .replace(",", ""))
    with capsys.disabled():
        print(f"\n120b, --experts {experts}: device weights {weights_bytes:,} bytes "
              f"({weights_bytes / 1e9:.2f} GB); {result.stdout.strip().splitlines()[1]}")
    assert weights_bytes <= 70e9
