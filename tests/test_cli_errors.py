"""Every bad input: one clear line on stderr, a non-zero exit, and no output file left behind."""

from __future__ import annotations

import pytest

from cupy_getp.checkpoint import write_bin

from conftest import ROOT, TINY, cli


def assert_clean_failure(result, pattern: str, code: int = 1):
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    errors = [l for l in result.stderr.splitlines() if l.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert pattern in errors[0], errors[0]
    assert not any(l.startswith("elapsed time") for l in result.stdout.splitlines())


@pytest.fixture
def inputs(tmp_path):
    def write(name: str, text: str):
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


@pytest.fixture(scope="module")
def tiny_bin(tmp_path_factory):
    from cupy_getp.checkpoint import SyntheticStore, Weights

    path = tmp_path_factory.mktemp("models") / "tiny.bin"
    write_bin(path, Weights(SyntheticStore(TINY, 1)))
    return path


def getp(tmp_path, *args, model="7m"):
    out = tmp_path / "out.txt"
    return cli("run", str(model), "-m", "getp", "-o", str(out), "--engine", "numpy", *args), out


def head_dim_7(data: bytes) -> bytes:
    header = bytearray(data)
    header[24:28] = (7).to_bytes(4, "little")  # head_dim = 7
    return bytes(header)


@pytest.mark.parametrize("corrupt, message", [
    (lambda data: data[:-100], "truncated"),
    (lambda data: data + b"\0" * 8, "oversized"),
    (head_dim_7, "head_dim = 7 must be even"),
], ids=["truncated", "oversized", "invalid-header"])
def test_a_bad_model_file_fails_cleanly(tmp_path, tiny_bin, corrupt, message):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(corrupt(tiny_bin.read_bytes()))
    result, out = getp(tmp_path, "-i", str(ROOT / "data/input.txt"), model=bad)
    assert_clean_failure(result, message)
    assert not out.exists()


def test_missing_input_file(tmp_path):
    result, out = getp(tmp_path, "-i", str(tmp_path / "nope.txt"))
    assert_clean_failure(result, f"cannot read {tmp_path / 'nope.txt'}: No such file or directory")
    assert not out.exists()


@pytest.mark.parametrize("text, args, message", [
    ("three\na\nb\nc\n", (), "first line must be the number of requests (ASCII digits), got 'three'"),
    ("5\na\nb\n", (), "announces 5 requests but only 2 prompt lines follow"),
    ("2\nshort\n" + "word " * 50 + "\n", ("-n", "20"),
     "request 2 (line 3) is 51 tokens, longer than the step budget of 20"),
    ("2\nfine\n\n", (), "request 2 (line 3) is empty"),
], ids=["count-not-a-number", "fewer-prompts-than-the-count", "prompt-longer-than-the-step-budget", "empty-prompt"])
def test_a_bad_input_file_fails_cleanly(tmp_path, inputs, text, args, message):
    result, out = getp(tmp_path, "-i", str(inputs("in.txt", text)), *args)
    assert_clean_failure(result, message)
    assert not out.exists()


def test_unknown_mode(tmp_path):
    result = cli("run", "7m", "-m", "train")
    assert_clean_failure(result, "unknown mode 'train'")


def test_unknown_flag(tmp_path):
    result = cli("run", "7m", "-q", "1")
    assert_clean_failure(result, "No such option: -q", code=2)


def test_bad_flag_value(tmp_path):
    result = cli("run", "7m", "-n", "many")
    assert_clean_failure(result, "'-n'", code=2)


def test_unwritable_output_path(tmp_path):
    out = tmp_path / "no" / "such" / "dir" / "out.txt"
    result = cli("run", "7m", "-m", "getp", "-i", str(ROOT / "data/input.txt"), "-o", str(out), "--engine", "numpy")
    assert_clean_failure(result, f"cannot write {out}: No such file or directory")
    assert not (tmp_path / "no").exists()


def test_output_path_is_a_directory(tmp_path):
    result = cli("run", "7m", "-m", "getp", "-i", str(ROOT / "data/input.txt"), "-o", str(tmp_path),
                 "--engine", "numpy")
    assert_clean_failure(result, f"cannot write {tmp_path}: it is a directory")


def test_getp_without_files(tmp_path):
    assert_clean_failure(cli("run", "7m", "-m", "getp"), "getp mode needs an input file")


def test_unknown_model():
    assert_clean_failure(cli("run", "13b", "-m", "getp", "-i", str(ROOT / "data/input.txt"), "-o", "y"),
                         "no model file")


def test_unknown_engine(tmp_path):
    out = tmp_path / "out.txt"
    result = cli("getp", "7m", "-i", str(ROOT / "data/input.txt"), "-o", str(out), "--engine", "tpu")
    assert_clean_failure(result, "unknown engine 'tpu'")
    assert not out.exists()


def test_bad_token_file(tmp_path, inputs):
    assert_clean_failure(cli("decode", str(inputs("ids.txt", "1 2 x\n"))), "ids.txt:1: not a list of plain integer")
    assert_clean_failure(cli("decode", str(inputs("ids2.txt", "1\n999999\n"))), "ids2.txt:2: token id 999999")


def test_nothing_half_written_when_interrupted(tmp_path):
    """A run killed mid-inference leaves neither the output nor its temporary file."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out.txt"
    proc = subprocess.Popen([sys.executable, "-m", "cupy_getp", "run", "7m", "-m", "getp", "-i",
                             str(ROOT / "data/input.txt"), "-o", str(out), "--engine", "numpy"],
                            env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # even as a background job
    deadline = time.time() + 60
    while time.time() < deadline and not any(p.name.startswith(".out.txt") for p in tmp_path.iterdir()):
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_precision_is_refused_before_loading(tmp_path):
    result = cli("getp", "20b", "-o", str(tmp_path / "out.txt"), "--precision", "half")
    assert result.returncode != 0 and result.stderr.strip().splitlines()[-1] == (
        "error: unknown precision 'half' (expected exact, fast, fp32)")
    assert not (tmp_path / "out.txt").exists()


def test_an_unknown_kv_cache_is_refused_before_loading(tmp_path):
    result = cli("getp", "20b", "-o", str(tmp_path / "out.txt"), "--kv-cache", "fp8")
    assert result.returncode != 0 and result.stderr.strip().splitlines()[-1] == (
        "error: unknown KV cache 'fp8' (expected fp32, bf16)")
    assert not (tmp_path / "out.txt").exists()


def test_a_kv_cache_without_the_batched_engine_is_refused_by_diff():
    result = cli("diff", "7m", "--kv-cache", "bf16")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == "error: --kv-cache applies only with --batch N"


@pytest.mark.parametrize("options, flags", [(["--kv-cache", "bf16"], "--kv-cache applies"),
                                            (["--batch", "4", "--precision", "fast"], "--batch, --precision apply")])
def test_the_batched_engines_options_outside_getp_are_refused(options, flags):
    """`run -m generate` runs the single-sequence engine: getp's batched-engine options would be ignored."""
    result = cli("run", "7m", "-m", "generate", "-n", "4", *options)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == f"error: {flags} only with -m getp"


def test_a_bf16_kv_cache_is_diffed_against_numpy_only():
    """The single-sequence GPU engine (--reference cupy) keeps an FP32 cache: not the same model."""
    result = cli("diff", "7m", "--batch", "2", "--kv-cache", "bf16", "--reference", "cupy")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "error: diff --kv-cache bf16 runs against the numpy reference (--reference numpy): the single-sequence GPU "
        "engine's KV cache is FP32")


@pytest.mark.parametrize("option", [["--batch", "4"], ["--chunk", "16"], ["--kv-cache", "bf16"]])
def test_batch_options_on_the_numpy_engine_are_noted(tmp_path, option):
    (tmp_path / "in.txt").write_text("1\nHello world\n")
    result = cli("getp", "7m", "-i", str(tmp_path / "in.txt"), "-o", str(tmp_path / "out.txt"), "-n", "8",
                 "--engine", "numpy", *option)
    assert result.returncode == 0, result.stderr
    assert "--batch, --chunk, --precision and --kv-cache apply to the GPU engine" in result.stderr


@pytest.mark.parametrize("command", [["getp", "7m"], ["run", "7m", "-m", "getp"]])
@pytest.mark.parametrize("chunk", ["0", "129", "many"])
def test_a_prompt_chunk_out_of_range_is_refused(tmp_path, command, chunk):
    out = tmp_path / "out.txt"
    result = cli(*command, "-i", str(ROOT / "data/input.txt"), "-o", str(out), "--engine", "numpy", "--chunk", chunk)
    assert_clean_failure(result, "'--chunk'", code=2)
    assert not out.exists()
