"""The getp flow: decoding loop semantics, then end to end through the CLI."""

from __future__ import annotations

import re

import numpy as np
import pytest

from cupy_getp.checkpoint import ArrayStore, SyntheticStore, Weights, write_bin
from cupy_getp.checkpoint.layout import bin_size
from cupy_getp.config import preset
from cupy_getp.engine.base import Engine
from cupy_getp.generation import decode, resolve_steps
from cupy_getp.getp import format_output, read_requests
from cupy_getp.sampler import Sampler
from cupy_getp.tokenizer import ENDOFTEXT, RETURN, STOP_TOKENS

from conftest import ROOT, cli

TIMING = [
    r"warm up elapsed time\(s\): \d+\.\d{6}",
    r"elapsed time\(s\): \d+\.\d{6}, achieved throughput TPS \(tok/s\): \d+\.\d{6}",
    r"finish elapsed time\(s\): \d+\.\d{6}",
]


class ScriptedEngine(Engine):
    """Logits that make greedy sampling pick `script[pos]`; records every (token, pos) it is fed."""

    name = "scripted"

    def __init__(self, script: dict[int, int], vocab: int = 201088):
        self.script, self.vocab, self.calls = script, vocab, []

    def warm_up(self):
        pass

    def reset(self):
        pass

    def finish(self):
        pass

    def forward(self, token, pos, trace=None):
        self.calls.append((token, pos))
        logits = np.zeros(self.vocab, np.float32)
        logits[self.script.get(pos, 7)] = 1.0
        return logits


def test_decode_feeds_the_prompt_then_samples():
    engine = ScriptedEngine({2: 11, 3: 12, 4: 13})
    out = list(decode(engine, Sampler(0.0), [100, 101, 102], steps=6, stop=STOP_TOKENS))
    # positions 0..5: the prompt fills 0..2, a token is sampled after each of 2..5
    assert out == [11, 12, 13, 7]
    assert engine.calls == [(100, 0), (101, 1), (102, 2), (11, 3), (12, 4), (13, 5)]


@pytest.mark.parametrize("eos", [ENDOFTEXT, RETURN])
def test_decode_records_the_terminating_eos_and_stops(eos):
    engine = ScriptedEngine({1: 50, 2: eos, 3: 60})
    out = list(decode(engine, Sampler(0.0), [5, 6], steps=100, stop=STOP_TOKENS))
    assert out == [50, eos]
    assert engine.calls[-1] == (50, 2)


def test_steps_count_prompt_and_generated_positions():
    engine = ScriptedEngine({})
    out = list(decode(engine, Sampler(0.0), [1, 2, 3], steps=3, stop=STOP_TOKENS))
    assert out == [7] and len(engine.calls) == 3
    assert resolve_steps(0, 2048) == 2048 and resolve_steps(5000, 2048) == 2048 and resolve_steps(9, 2048) == 9


def test_output_format_and_requests(tmp_path):
    assert format_output([[1, 2, 3], [199999]]) == "1 2 3\n199999\n"
    path = tmp_path / "in.txt"
    path.write_text("2\r\nfirst line\r\n  second\tline  \nignored\n")
    assert read_requests(path) == ["first line", "  second\tline  "]


@pytest.fixture(scope="module")
def eos_model(tmp_path_factory):
    """A 7m-shaped model whose greedy choice is always an end token: logits are +-y0 on the two end
    tokens and 0 elsewhere (rms_out_w keeps one dimension), so every request records exactly one."""
    store = SyntheticStore(preset("7m"), seed=3)
    arrays = {n: store.read(n) for n in ("embedding",)} | ArrayStore.materialize(store).arrays
    arrays["rms_out_w"] = np.zeros(32, np.float32)
    arrays["rms_out_w"][0] = 1.0
    arrays["out"] = np.zeros((201088, 32), np.float32)
    arrays["out"][ENDOFTEXT, 0], arrays["out"][RETURN, 0] = 1.0, -1.0
    path = tmp_path_factory.mktemp("eos") / "eos.bin"
    write_bin(path, Weights(ArrayStore(preset("7m"), arrays)))
    return path


def test_getp_cli_end_to_end(tmp_path):
    out = tmp_path / "out.txt"
    result = cli("run", "7m", "-m", "getp", "-i", str(ROOT / "data/input.txt"), "-o", str(out), "-n", "48",
                 "--engine", "numpy")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and all(re.fullmatch(p, l) for p, l in zip(TIMING, lines)), result.stdout
    assert "random weights" in result.stderr
    rows = out.read_text().splitlines()
    assert len(rows) == 32
    prompts = read_requests(ROOT / "data/input.txt")
    from cupy_getp.tokenizer import harmony_tokenizer

    tok = harmony_tokenizer()
    generated = 0
    for prompt, row in zip(prompts, rows):
        ids = [int(t) for t in row.split(" ")]
        assert len(ids) == 48 - len(tok.encode(prompt)) + 1
        generated += len(ids)
    tps = float(lines[1].rsplit(" ", 1)[1])
    seconds = float(lines[1].split(",")[0].split(": ")[1])
    assert tps == pytest.approx(generated / seconds, rel=1e-3)
    assert len(set(rows)) > 20, "outputs should differ between prompts"


def test_getp_stops_at_eos(tmp_path, eos_model):
    out = tmp_path / "out.txt"
    result = cli("getp", str(eos_model), "-i", str(ROOT / "data/input.txt"), "-o", str(out), "--engine", "numpy")
    assert result.returncode == 0, result.stderr
    rows = out.read_text().splitlines()
    assert len(rows) == 32 and all(row in (str(ENDOFTEXT), str(RETURN)) for row in rows)
    assert "random weights" not in result.stderr


def test_getp_with_tokenizer_bin_gives_the_same_ids(tmp_path):
    tok = tmp_path / "tokenizer.bin"
    assert cli("export-tokenizer", "-o", str(tok)).returncode == 0
    outs = []
    for extra in ([], ["-z", str(tok)]):
        out = tmp_path / f"out{len(extra)}.txt"
        result = cli("run", "7m", "-m", "getp", "-i", str(ROOT / "data/input.txt"), "-o", str(out), "-n", "44",
                     "--engine", "numpy", *extra)
        assert result.returncode == 0, result.stderr
        outs.append(out.read_text())
    assert outs[0] == outs[1]


def test_random_model_cli_writes_the_preset(tmp_path):
    path = tmp_path / "m.bin"
    result = cli("random-model", "--preset", "7m", "--seed", "42", "-o", str(path), "--dtype", "bfloat16")
    assert result.returncode == 0, result.stderr
    assert path.stat().st_size == bin_size(preset("7m"), 2)
    from cupy_getp.checkpoint import BinStore

    store = BinStore(path)
    np.testing.assert_array_equal(Weights(store).f32("w_mlp1", 1, 3), SyntheticStore(preset("7m"), 42).read(
        "w_mlp1", (1, 3)))


def test_generate_streams_text_and_reports_speed(tmp_path):
    result = cli("generate", "7m", "-i", "Hello world", "-n", "12", "--engine", "numpy")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Hello world") and len(result.stdout) > len("Hello world\n")
    assert re.search(r"achieved tok/s: \d+\.\d+", result.stderr)


def test_chat_renders_harmony_and_answers(tmp_path):
    result = cli("chat", "7m", "-n", "140", "--engine", "numpy", "-y", "Be brief", stdin="Hello world\n\n")
    assert result.returncode == 0, result.stderr
    # one answer, then the second "User: " prompt reads the empty line and ends the chat
    assert result.stdout.startswith("User: Assistant: ") and result.stdout.count("User: ") == 2
    answer = result.stdout.split("Assistant: ", 1)[1].rsplit("User: ", 1)[0]
    assert answer.strip(), "a random model's reply must still be shown (as raw text)"


def test_harmony_rendering_matches_the_spec():
    from cupy_getp.chat import harmony_encoding
    import openai_harmony as oh

    conversation = oh.Conversation.from_messages([oh.Message.from_role_and_content(oh.Role.USER, "Hello world")])
    tokens = harmony_encoding().render_conversation_for_completion(conversation, oh.Role.ASSISTANT)
    assert tokens == [200006, 1428, 200008, 13225, 2375, 200007, 200006, 173781]


def test_decode_command(tmp_path):
    path = tmp_path / "ids.txt"
    path.write_text("13225 2375\n200006\n")
    result = cli("decode", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["Hello world", "<|start|>"]


class CountingEngine(ScriptedEngine):
    """A ScriptedEngine that counts finish() and can fail at a given position."""

    def __init__(self, fail_at: int | None = None):
        super().__init__({})
        self.fail_at, self.finished = fail_at, 0

    def warm_up(self, progress=None):
        pass

    def finish(self):
        self.finished += 1

    def forward(self, token, pos, trace=None):
        if pos == self.fail_at:
            raise RuntimeError("device fault")
        return super().forward(token, pos, trace)


@pytest.mark.parametrize("fail_at", [None, 2])
def test_getp_frees_the_engine_once_whether_it_succeeds_or_fails(tmp_path, monkeypatch, tokenizer, fail_at):
    """One cleanup path: the engine is finished exactly once, after a complete output or on a failure
    (then no output appears)."""
    from cupy_getp import getp as getp_module

    engine = CountingEngine(fail_at)
    monkeypatch.setattr(getp_module, "create_engine", lambda weights, kind, *storage: engine)
    requests, output, lines = tmp_path / "in.txt", tmp_path / "out.txt", []
    requests.write_text("2\nhello\nworld\n")
    options = getp_module.GetpOptions(engine="numpy", steps=4)
    run = lambda: getp_module.getp("7m", requests, output, tokenizer=tokenizer, sampler=Sampler(0.0),  # noqa: E731
                                   options=options, hooks=getp_module.GetpHooks(echo=lines.append))
    if fail_at is None:
        report = run()
        assert report.requests == 2 and output.read_text().count("\n") == 2
        assert [re.fullmatch(t, line) is not None for t, line in zip(TIMING, lines)] == [True] * 3
    else:
        with pytest.raises(RuntimeError, match="device fault"):
            run()
        assert not output.exists() and len(lines) == 1  # the warm-up line only
    assert engine.finished == 1


def test_freeing_after_a_failure_finishes_the_engine_and_keeps_the_first_error():
    """A batched engine whose free fails (a device already in a bad state): the engine is still finished,
    and during a failure the first error is the one that surfaces; after a success the free error does."""
    from cupy_getp.getp_session import Session as _Session

    class Batched:
        def free(self):
            raise RuntimeError("free failed")

    class Model:
        finished = 0

        def finish(self):
            self.finished += 1

    session = _Session(Model(), Batched())
    session.free(failing=True)  # the error of freeing does not replace the one on its way out
    assert session.model.finished == 1
    with pytest.raises(RuntimeError, match="free failed"):
        session.free()
    assert session.model.finished == 2


class BatchAskingEngine(CountingEngine):
    """A CountingEngine that records what getp asks of its batched mode, and has none (None: one
    request at a time, as the numpy engine)."""

    def __init__(self):
        super().__init__()
        self.asked = []

    def batched(self, n_requests, steps, slots=None, precision=None, use_graphs=True, max_chunk=None,
                kv_cache="fp32"):
        self.asked.append({"slots": slots, "precision": precision, "max_chunk": max_chunk, "kv_cache": kv_cache})
        return None


@pytest.mark.parametrize("chunk, kv_cache", [(None, "fp32"), (1, "bf16"), (16, "fp32"), (128, "fp32")])
def test_getp_passes_the_prompt_chunk_and_kv_cache_to_the_batched_engine(tmp_path, monkeypatch, tokenizer, chunk,
                                                                         kv_cache):
    from cupy_getp import getp as getp_module

    engine, notes = BatchAskingEngine(), []
    monkeypatch.setattr(getp_module, "create_engine", lambda weights, kind, *storage: engine)
    requests = tmp_path / "in.txt"
    requests.write_text("2\nhello\nworld\n")
    getp_module.getp("7m", requests, tmp_path / "out.txt", tokenizer=tokenizer, sampler=Sampler(0.0),
                     options=getp_module.GetpOptions(engine="numpy", steps=4, batch=3, chunk=chunk,
                                                     kv_cache=kv_cache),
                     hooks=getp_module.GetpHooks(echo=lambda line: None, note=notes.append))
    assert engine.asked == [{"slots": 3, "precision": None, "max_chunk": chunk, "kv_cache": kv_cache}]
    assert any("--batch, --chunk, --precision and --kv-cache apply to the GPU engine" in n for n in notes), notes


@pytest.mark.parametrize("chunk", [0, -3, 129])
def test_a_prompt_chunk_out_of_range_is_refused_by_the_library(chunk):
    from cupy_getp.errors import GetpError
    from cupy_getp.getp import GetpOptions

    with pytest.raises(GetpError, match=rf"the prompt chunk \(--chunk\) must be in 1\.\.128, got {chunk}"):
        GetpOptions(chunk=chunk)


@pytest.mark.parametrize("command", [["getp", "7m"], ["run", "7m", "-m", "getp"]])
@pytest.mark.parametrize("given, want", [([], None), (["--chunk", "16"], 16), (["--chunk", "128"], 128)])
def test_the_chunk_option_travels_to_getp(tmp_path, monkeypatch, command, given, want):
    """getp and run -m getp: --chunk reaches GetpOptions.chunk (None when not given: the engine's most)."""
    from typer.testing import CliRunner

    import cupy_getp.cli  # noqa: F401  (registers the commands)
    from cupy_getp import getp as getp_module
    from cupy_getp.commands.common import app

    seen = []
    monkeypatch.setattr(getp_module, "getp", lambda *args, options, **kw: seen.append(options))
    result = CliRunner().invoke(app, [*command, "-i", str(ROOT / "data/input.txt"), "-o", str(tmp_path / "out.txt"),
                                      "--engine", "numpy", "--batch", "5", *given])
    assert result.exit_code == 0, result.output
    assert [(o.chunk, o.batch) for o in seen] == [(want, 5)]
