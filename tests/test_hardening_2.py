"""Issue 18's classes of failure, one section each (the second hardening round): text that is not
UTF-8, closed or full standard streams, tampered tokenizer.bin, tokenizer source and cache integrity,
an empty diff prompt, a FIFO as the model, host memory limits, signals in bursts; then the minor points.
Each ends in one `error:` line (or a documented quiet exit) and nothing left behind."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import re
import resource
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

from cupy_getp.errors import GetpError

from conftest import ROOT, TINY, cli
from test_cli_errors import assert_clean_failure

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
CUPY_GETP = [sys.executable, "-m", "cupy_getp"]


def shell(command: str, stdin: bytes | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """`cupy-getp` run by sh with COMMAND's redirections ("$0" is the interpreter); output as text."""
    result = subprocess.run(["sh", "-c", f'"$0" -m cupy_getp {command}', sys.executable], input=stdin,
                            capture_output=True, env=ENV, timeout=timeout)
    return subprocess.CompletedProcess(result.args, result.returncode, result.stdout.decode(errors="replace"),
                                       result.stderr.decode(errors="replace"))


# -- 1. text that is not UTF-8 ------------------------------------------------------------------------
@pytest.mark.parametrize("args, what", [
    (["chat", "7m", "-n", "8", "-i", "\udcffhi"], "the message"),  # \udcff: how Python hands over byte 0xff
    (["chat", "7m", "-n", "8", "-y", "be \udcfe"], "the instructions"),
    (["generate", "7m", "-n", "8", "-i", "caf\udce9"], "the prompt"),  # latin-1 é
    (["diff", "7m", "--steps", "2", "--prompt", "\udcff"], "the prompt"),
])
def test_command_line_text_that_is_not_utf8_is_one_line(args, what):
    assert_clean_failure(cli(*args, "--engine", "numpy", stdin="\n"), f"{what}: not UTF-8 text (byte 0x")


def test_standard_input_that_is_not_utf8_is_one_line():
    result = shell("chat 7m -n 8 --engine numpy", stdin=b"caf\xe9\n\n")
    assert_clean_failure(result, "the message: not UTF-8 text (byte 0xe9 at offset 3)")


def test_text_from_the_python_api_is_checked_in_the_same_place():
    from cupy_getp.fileio import utf8_text

    assert utf8_text("caf\u00e9", "x") == utf8_text(b"caf\xc3\xa9", "x") == "caf\u00e9"
    with pytest.raises(GetpError, match="x: not UTF-8 text \\(a lone surrogate at character 1\\)"):
        utf8_text("a\ud800", "x")


# -- 2. closed or full standard streams ----------------------------------------------------------------
@pytest.mark.parametrize("command, problem", [
    ("info 7m >&-", "standard output is closed"),
    ("info 7m >/dev/full", "cannot write standard output: No space left on device"),
    ("generate 7m -i hi -n 4 --engine numpy >/dev/full", "cannot write standard output: No space left on device"),
])
def test_closed_or_full_standard_output_is_one_line(command, problem):
    assert_clean_failure(shell(command), problem)


def test_closed_standard_input_ends_a_chat_like_eof():
    result = shell("chat 7m -n 8 --engine numpy <&-")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert result.stdout == "User: "


def test_a_pipe_whose_reader_has_gone_ends_quietly():
    proc = subprocess.Popen([*CUPY_GETP, "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    proc.stdout.close()  # the reader goes before the help is written
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 128 + signal.SIGPIPE and stderr == "", stderr


# -- 3. a tampered tokenizer.bin -----------------------------------------------------------------------
def _tokenizer_bin(path, pieces: list[bytes], specials: set[int] = frozenset()):
    """A small tokenizer.bin: token i is `pieces[i]`, marked special when i is in `specials`."""
    blob = struct.pack("<i", max(map(len, pieces)))
    for i, piece in enumerate(pieces):
        blob += struct.pack("<fi", -1e30 if i in specials else -float(i), len(piece)) + piece
    path.write_bytes(blob)
    return path


BYTES = [bytes([b]) for b in range(256)]


@pytest.mark.parametrize("pieces, specials, problem", [
    (BYTES + [b"he", b"ll", b"he"], set(), "token 258 repeats token 256 (b'he')"),
    (BYTES + [b"<|end|>", b"<|end|>"], {256, 257}, "token 257 repeats token 256"),
    (BYTES + [b"he"], {ord("A")}, "byte 0x41 is not a regular token"),
])
def test_tampered_tokenizer_bin_is_refused_before_tiktoken(tmp_path, pieces, specials, problem):
    from cupy_getp.tokenizer import read_tokenizer_bin

    path = _tokenizer_bin(tmp_path / "tokenizer.bin", pieces, specials)
    with pytest.raises(GetpError, match=re.escape(f"tokenizer file {path}: {problem}")):
        tokenizer = read_tokenizer_bin(path)  # before the check: tiktoken's Rust core panics below
        tokenizer.decode(range(tokenizer.vocab_size))
        tokenizer.encode("A hello")


def test_a_valid_small_tokenizer_bin_still_reads(tmp_path):
    from cupy_getp.tokenizer import read_tokenizer_bin

    tokenizer = read_tokenizer_bin(_tokenizer_bin(tmp_path / "t.bin", BYTES + [b"he", b"<|end|>"], {257}))
    assert tokenizer.encode("he") == [256] and tokenizer.vocab_size == 258


# -- 4. tokenizer source and cache integrity -------------------------------------------------------------
OFFLINE = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}


def test_a_damaged_cache_is_rebuilt_from_the_source_offline(tmp_path, inputs_ids):
    from cupy_getp.tokenizer import O200K_BASE_SHA256

    env = {"CUPY_GETP_CACHE": str(tmp_path), **OFFLINE}
    assert cli("decode", str(inputs_ids), env=env).returncode == 0
    files = sorted((tmp_path / "cupy-getp" / "tiktoken").iterdir())
    assert len(files) == 2
    files[0].write_bytes(files[0].read_bytes()[:1000])  # truncated
    files[1].write_bytes(b"x" + files[1].read_bytes()[1:])  # one byte changed, same size
    result = cli("decode", str(inputs_ids), env=env)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert result.stdout == "Hello world\n"
    assert all(hashlib.sha256(f.read_bytes()).hexdigest() == O200K_BASE_SHA256 for f in files)


@pytest.fixture
def inputs_ids(tmp_path):
    path = tmp_path / "ids.txt"
    path.write_text("13225 2375\n")
    return path


@pytest.mark.parametrize("damage, problem", [
    (lambda gz: gz[: len(gz) // 2], "not a complete gzip file"),
    (lambda gz: gz[:10] + bytes(len(gz) - 10), "not a complete gzip file"),
    (lambda gz: gzip.compress(gzip.decompress(gz)[:-100]), "is not o200k_base's"),
])
def test_a_damaged_tokenizer_source_is_one_line(tmp_path, inputs_ids, damage, problem):
    from cupy_getp.tokenizer import _o200k_source

    source = tmp_path / "o200k_base.tiktoken.gz"
    source.write_bytes(damage(_o200k_source().read_bytes()))
    env = {"CUPY_GETP_CACHE": str(tmp_path / "cache"), "CUPY_GETP_O200K_BASE": str(source), **OFFLINE}
    assert_clean_failure(cli("decode", str(inputs_ids), env=env), problem)


# -- 5. an empty diff prompt ----------------------------------------------------------------------------
def test_diff_with_an_empty_prompt_is_one_line():
    assert_clean_failure(cli("diff", "7m", "--engine", "numpy", "--prompt", ""),
                         "the diff prompt is empty: it must encode to at least one token")


# -- 6. a FIFO as the model -----------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["info", "generate"])
def test_a_fifo_given_as_the_model_is_refused_without_blocking(tmp_path, command):
    fifo = tmp_path / "model.bin"
    os.mkfifo(fifo)
    result = cli(command, str(fifo), "--engine", "numpy", timeout=60) if command == "generate" else \
        cli(command, str(fifo), timeout=60)
    assert_clean_failure(result, f"cannot read {fifo}: not a regular file (a FIFO, a device or a socket)")


def test_a_fifo_as_config_json_is_refused(tmp_path):
    os.mkfifo(tmp_path / "config.json")
    assert_clean_failure(cli("info", str(tmp_path), timeout=60), "config.json: not a regular file")


# -- 7. host memory limits -------------------------------------------------------------------------------
def test_an_address_space_limit_is_seen_before_loading():
    def limit():  # 4 GB of address space: Python and numpy start, the 20b shape's 7.4 GB cannot
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    result = subprocess.run([*CUPY_GETP, "generate", "20b", "-i", "hi", "-n", "2", "--engine", "numpy"],
                            capture_output=True, text=True, env=ENV, preexec_fn=limit, timeout=300)
    assert_clean_failure(result, "the numpy engine needs ~7.4 GB of memory")


def test_a_kv_cache_that_cannot_be_allocated_is_one_line():
    from cupy_getp.checkpoint import SyntheticStore, Weights
    from cupy_getp.reference import NumpyEngine

    huge = dataclasses.replace(TINY, seq_len=1 << 46)  # a KV cache of ~2e15 bytes
    engine = NumpyEngine(Weights(SyntheticStore(huge, 1)))
    with pytest.raises(GetpError, match=r"cannot allocate the KV cache of 70368744177664 positions "
                                              r"\(\d+\.\d\d GB\) on the host: "):
        engine.warm_up()


# -- 8. signals in bursts ---------------------------------------------------------------------------------
def _default_signals():
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


@pytest.mark.parametrize("order", [(signal.SIGINT, signal.SIGTERM, signal.SIGHUP),
                                   (signal.SIGHUP, signal.SIGINT, signal.SIGTERM)])
def test_a_burst_of_stop_signals_leaves_nothing_and_one_exit_code(tmp_path, order):
    out = tmp_path / "model.bin"
    proc = subprocess.Popen([*CUPY_GETP, "random-model", "--preset", "7m", "-o", str(out)], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_signals)
    deadline = time.time() + 60
    while time.time() < deadline and not any(tmp_path.iterdir()):
        time.sleep(0.01)
    for _ in range(20):  # signals a millisecond apart, while the first one's clean-up runs
        for signum in order:
            if proc.poll() is not None:
                break
            proc.send_signal(signum)
            time.sleep(0.001)
    _, stderr = proc.communicate(timeout=60)
    assert "Traceback" not in stderr, stderr
    # Signals caught together are handled in number order, so the first handled need not be the
    # first sent; what must hold: one message, and the exit code of the signal it names.
    [named] = [line for line in stderr.splitlines() if line.startswith("interrupted")]
    assert named in {f"interrupted ({signal.Signals(s).name})" for s in order}, stderr
    assert proc.returncode == 128 + signal.Signals[named[len("interrupted ("):-1]]
    assert list(tmp_path.iterdir()) == []


# -- minor points -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, problem", [
    (["decode", ""], "Invalid value for 'file': an empty path"),
    (["getp", "7m", "-o", ""], "Invalid value for '-o' / '--output': an empty path"),
    (["run", "7m", "-m", "getp", "-i", "", "-o", "x"], "Invalid value for '-i' / '--input': an empty path"),
    (["info", ""], "an empty model name or path"),
])
def test_an_empty_path_is_called_empty_not_dot(args, problem):
    assert_clean_failure(cli(*args), problem, code=2)


def test_raising_n_is_advised_only_where_it_helps():
    from cupy_getp.generation import check_prompt

    with pytest.raises(GetpError, match=r"step budget of 3 \(raise -n, up to the model's seq_len 64\)"):
        check_prompt([1] * 5, 3, seq_len=64)
    for steps, seq_len in ((64, 64), (3, None)):
        with pytest.raises(GetpError) as error:
            check_prompt([1] * 65, steps, seq_len=seq_len)
        assert "-n" not in str(error.value)


def test_config_override_in_float_notation_and_blamed_on_the_option(tmp_path):
    from cupy_getp.checkpoint.directory import _override_value

    assert _override_value("seq_len", "1e3", real=False) == 1000
    assert _override_value("rope_theta", "1e4", real=True) == 10000.0
    for text in ("1.5", "x", "inf"):
        with pytest.raises(GetpError, match=f"--config seq_len={text}: not an integer"):
            _override_value("seq_len", text, real=False)


@pytest.mark.parametrize("args", [["info", "7m", "--weights-seed", str(1 << 64)],
                                  ["random-model", "--seed", "-1", "-o", "never.bin"]])
def test_weights_seeds_out_of_range_are_refused_like_s(tmp_path, args):
    assert_clean_failure(cli(*args, cwd=tmp_path), "the weights seed (--weights-seed, random-model --seed) must be")
    assert list(tmp_path.iterdir()) == []


def test_api_seed_of_the_wrong_type_is_an_argument_error():
    import cupy_getp
    from cupy_getp.errors import ArgumentError

    with pytest.raises(ArgumentError, match="the weights seed must be an integer, got str 'abc'"):
        cupy_getp.load("7m", seed="abc")


def test_diff_says_how_many_steps_it_runs():
    from cupy_getp.diff import greedy_steps

    assert greedy_steps([[1, 2]], 5, 64) == "5 greedy steps"
    assert greedy_steps([[1, 2]], 100, 64) == "63 greedy steps (seq_len 64 ends the run before 100)"


@pytest.mark.parametrize("args, problem", [(["--slots", "3"], "--slots applies only with --batch N"),
                                           (["--reference", "cupy"], "--reference applies only with --batch N"),
                                           (["--batch", "2", "--prompt", "x"], "--prompt applies only without")])
def test_diff_options_that_would_be_ignored_are_refused(args, problem):
    assert_clean_failure(cli("diff", "7m", "--engine", "numpy", *args), problem)


def test_numpy_warnings_do_not_come_before_the_error_line(tmp_path):
    from cupy_getp.checkpoint import SyntheticStore, TENSOR_NAMES, ArrayStore, Weights, write_bin
    from cupy_getp.config import preset

    config = dataclasses.replace(preset("7m"), n_layers=1)
    store = SyntheticStore(config, 1)
    tensors = {n: np.array(store.read(n)) for n in TENSOR_NAMES}
    tensors["w_o"][:] = 1e38  # overflows in the first layer
    write_bin(tmp_path / "m.bin", Weights(ArrayStore(config, tensors)))
    result = cli("generate", str(tmp_path / "m.bin"), "-i", "hi", "-n", "3", "--engine", "numpy")
    assert_clean_failure(result, "non-finite logits at position 0")
    assert "Warning" not in result.stderr, result.stderr


def test_decode_of_an_empty_file_prints_nothing(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    result = cli("decode", str(tmp_path / "empty.txt"))
    assert result.returncode == 0 and result.stdout == ""
