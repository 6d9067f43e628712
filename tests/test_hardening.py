"""Issue 8's classes of failure, one section each: malformed metadata, filesystem failures, outputs
never clobbered. Each ends in one `error:` line, a non-zero exit and nothing half-written."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from cupy_getp.checkpoint import SyntheticStore, TENSOR_NAMES, open_store
from cupy_getp.errors import CheckpointError

from checkpoints import hf_config, hf_tensors, openai_config, openai_tensors, write_checkpoint
from conftest import ROOT, TINY, cli
from test_cli_errors import assert_clean_failure

INPUT = str(ROOT / "data/input.txt")


@pytest.fixture(scope="module")
def requests(tmp_path_factory):
    """Two short requests, outside the tests' own directories."""
    path = tmp_path_factory.mktemp("requests") / "in.txt"
    path.write_text("2\nhello\nworld\n")
    return path


@pytest.fixture(scope="module")
def tiny_tensors():
    store = SyntheticStore(TINY, seed=3)
    return {n: store.read(n) for n in TENSOR_NAMES}


# -- 1. malformed checkpoint metadata --------------------------------------------------------------------
@pytest.mark.parametrize("change, field", [
    (lambda c: [c], "the config must be a JSON object"),
    (lambda c: c | {"hidden_size": "24"}, "hidden_size must be an integer, got a string"),
    (lambda c: c | {"num_hidden_layers": 2.5}, "num_hidden_layers must be an integer, got a number 2.5"),
    (lambda c: c | {"rope_parameters": [1, 2]}, "rope_parameters must be an object, got a list"),
    (lambda c: c | {"rope_parameters": c["rope_parameters"] | {"factor": "4"}}, "rope_parameters.factor must be a number"),
    (lambda c: c | {"layer_types": "sliding"}, "layer_types must be a list of strings"),
    (lambda c: c | {"rms_norm_eps": None}, "rms_norm_eps must be a number, got null"),
    (lambda c: c | {"vocab_size": True}, "vocab_size must be an integer, got a boolean"),
])
def test_config_json_of_the_wrong_type_names_file_and_field(tmp_path, tiny_tensors, change, field):
    path = write_checkpoint(tmp_path / "hf", hf_tensors(tiny_tensors, TINY), change(hf_config(TINY)))
    with pytest.raises(CheckpointError, match=f"config.json: {field}"):
        open_store(path)


def test_openai_config_of_the_wrong_type(tmp_path, tiny_tensors):
    config = openai_config(TINY) | {"rope_theta": [10000.0]}
    path = write_checkpoint(tmp_path / "oai", openai_tensors(tiny_tensors, TINY), config)
    with pytest.raises(CheckpointError, match="config.json: rope_theta must be a number, got a list"):
        open_store(path)


@pytest.mark.parametrize("entry, problem", [
    ({"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}, "shape must be a list of non-negative integers"),
    ({"dtype": "F32", "shape": "4"}, "shape must be a list of non-negative integers"),
    ({"dtype": "F32", "shape": [1]}, "data_offsets must be two non-negative integers, got None"),
    ({"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}, "data_offsets must be two non-negative integers"),
    ({"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}, "shape must be a list of non-negative integers"),
    ({"dtype": 7, "shape": [1], "data_offsets": [0, 4]}, "dtype must be a string"),
    ([1, 2], "entry is not a JSON object"),
])
def test_safetensors_header_of_the_wrong_type_names_file_and_field(tmp_path, entry, problem):
    from cupy_getp.checkpoint.safetensors import SafetensorsFile

    blob = json.dumps({"x": entry}).encode()
    path = tmp_path / "bad.safetensors"
    path.write_bytes(len(blob).to_bytes(8, "little") + blob + b"\0" * 4)
    with pytest.raises(CheckpointError, match=f"bad.safetensors: tensor x: {problem}"):
        SafetensorsFile(path)


def test_safetensors_header_not_an_object(tmp_path):
    from cupy_getp.checkpoint.safetensors import SafetensorsFile

    path = tmp_path / "list.safetensors"
    path.write_bytes((2).to_bytes(8, "little") + b"[]")
    with pytest.raises(CheckpointError, match="list.safetensors: safetensors header is not a JSON object"):
        SafetensorsFile(path)


def test_malformed_config_is_one_line_from_the_cli(tmp_path, tiny_tensors):
    path = write_checkpoint(tmp_path / "hf", hf_tensors(tiny_tensors, TINY), [hf_config(TINY)])
    assert_clean_failure(cli("info", str(path)), "config.json: the config must be a JSON object, got a list")


# -- 2. filesystem failures ------------------------------------------------------------------------------
def test_directory_where_a_file_belongs(tmp_path, tiny_tensors):
    (tmp_path / "in.txt").mkdir()
    assert_clean_failure(cli("getp", "7m", "-i", str(tmp_path / "in.txt"), "-o", str(tmp_path / "o.txt"),
                             "--engine", "numpy"), f"cannot read {tmp_path / 'in.txt'}: Is a directory")
    bad = write_checkpoint(tmp_path / "cfg", hf_tensors(tiny_tensors, TINY), hf_config(TINY))
    (bad / "config.json").unlink()
    (bad / "config.json").mkdir()
    assert_clean_failure(cli("info", str(bad)), f"cannot read {bad / 'config.json'}: Is a directory")
    shard = write_checkpoint(tmp_path / "shard", hf_tensors(tiny_tensors, TINY), hf_config(TINY))
    (shard / "model-2.safetensors").mkdir()
    assert_clean_failure(cli("info", str(shard)), f"cannot read {shard / 'model-2.safetensors'}: Is a directory")


def _limit_file_size():
    import resource

    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))


def test_file_size_limit_is_one_line_and_leaves_nothing(tmp_path):
    out = tmp_path / "model.bin"
    result = subprocess.run([sys.executable, "-m", "cupy_getp", "random-model", "-o", str(out)],
                            capture_output=True, text=True, preexec_fn=_limit_file_size,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert_clean_failure(result, f"cannot write {out}: File too large")
    assert list(tmp_path.iterdir()) == []


def _device_node(path, minor: int):
    """A character device like /dev/null (minor 3) or /dev/full (minor 7), where the test may make one."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, minor))
        with open(path, "wb"):
            pass
    except OSError as e:
        pytest.skip(f"cannot make a device node here: {e.strerror}")
    return path


def test_full_disk_is_one_line_and_the_device_stays(tmp_path):
    full = _device_node(tmp_path / "full", 7)
    result = cli("export-tokenizer", "-o", str(full))
    assert_clean_failure(result, f"cannot write {full}: No space left on device")
    assert stat.S_ISCHR(full.stat().st_mode) and sorted(p.name for p in tmp_path.iterdir()) == ["full"]


def test_unusable_home_falls_back_to_a_temporary_cache(tmp_path):
    env = {"HOME": "/proc/no-such-home", "XDG_CACHE_HOME": "", "CUPY_GETP_CACHE": "", "TMPDIR": str(tmp_path)}
    result = cli("decode", str(ROOT / "data/input.txt"), env=env)
    # data/input.txt is no token file; what matters is that the tokenizer loaded to say so
    assert_clean_failure(result, "not a list of plain integer token ids")
    assert list(tmp_path.glob("cupy-getp-*/cupy-getp/tiktoken/o200k_base.tiktoken"))


def test_unwritable_explicit_cache_names_the_variable(tmp_path):
    result = cli("generate", "7m", "-i", "hi", "--engine", "numpy", env={"CUPY_GETP_CACHE": "/proc/no-cache"})
    assert_clean_failure(result, "cannot write /proc/no-cache/cupy-getp/tiktoken: No such file or directory "
                                 "(tokenizer cache; set CUPY_GETP_CACHE to a writable directory)")


# -- 3. outputs never clobbered --------------------------------------------------------------------------
def _getp(tmp_path, input_path, output, *args):
    return cli("getp", "7m", "-i", str(input_path), "-o", str(output), "-n", "8", "--engine", "numpy", *args)


def test_output_that_is_the_input_is_refused(tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("1\nhello\n")
    assert_clean_failure(_getp(tmp_path, source, source), f"cannot write {source}: it is the input {source}")
    alias = tmp_path / "alias.txt"
    alias.symlink_to(source)
    assert_clean_failure(_getp(tmp_path, source, alias), "it is the input")
    assert source.read_text() == "1\nhello\n" and sorted(p.name for p in tmp_path.iterdir()) == ["alias.txt",
                                                                                                   "in.txt"]


def test_export_onto_its_own_source_is_refused(tmp_path):
    model = tmp_path / "m.bin"
    assert cli("random-model", "-o", str(model)).returncode == 0
    before = model.read_bytes()
    assert_clean_failure(cli("export", str(model), "-o", str(model)), "it is the input")
    assert model.read_bytes() == before


def test_symlinked_output_writes_its_target(tmp_path, requests):
    target, link = tmp_path / "real.txt", tmp_path / "link.txt"
    target.write_text("old\n")
    link.symlink_to(target)
    result = _getp(tmp_path, requests, link)
    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and len(target.read_text().splitlines()) == 2


def test_fifo_output_is_written_in_place(tmp_path, requests):
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()), daemon=True)
    reader.start()
    result = _getp(tmp_path, requests, fifo)
    reader.join(timeout=60)
    assert result.returncode == 0, result.stderr
    assert stat.S_ISFIFO(fifo.stat().st_mode) and len(received[0].splitlines()) == 2


def test_device_output_is_written_in_place(tmp_path, requests):
    null = _device_node(tmp_path / "null", 3)
    result = _getp(tmp_path, requests, null)
    assert result.returncode == 0, result.stderr
    assert stat.S_ISCHR(null.stat().st_mode) and sorted(p.name for p in tmp_path.iterdir()) == ["null"]


def test_read_only_output_is_refused(tmp_path, requests):
    out = tmp_path / "out.txt"
    out.write_text("keep me\n")
    out.chmod(0o444)
    assert_clean_failure(_getp(tmp_path, requests, out), f"cannot write {out}: the file is read-only")
    assert out.read_text() == "keep me\n"


def test_replaced_output_keeps_its_mode(tmp_path, requests):
    out = tmp_path / "out.txt"
    out.write_text("old\n")
    out.chmod(0o640)
    assert _getp(tmp_path, requests, out).returncode == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o640 and out.read_text() != "old\n"


def _default_signals():
    """A child that dies on SIGINT/SIGHUP even when this test runs as a background job, which
    starts with them ignored (and cupy-getp, like any program, keeps an ignored signal ignored)."""
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_stop_signals_end_a_run_like_ctrl_c(tmp_path, signum):
    out = tmp_path / "out.txt"
    proc = subprocess.Popen([sys.executable, "-m", "cupy_getp", "getp", "7m", "-i", INPUT, "-o", str(out),
                             "--engine", "numpy"], env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_signals)
    deadline = time.time() + 60
    while time.time() < deadline and not any(p.name.startswith(".out.txt") for p in tmp_path.iterdir()):
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum
    assert stderr.splitlines()[-1] == f"interrupted ({signal.Signals(signum).name})"
    assert "Traceback" not in stderr and list(tmp_path.iterdir()) == []



# -- 4. inputs read as the spec says ---------------------------------------------------------------------
def test_a_carriage_return_inside_a_prompt_is_kept(tmp_path):
    from cupy_getp.getp import read_requests

    path = tmp_path / "in.txt"
    path.write_bytes(b"2\r\nbefore\rafter\r\nlast\r\n")
    assert read_requests(path) == ["before\rafter", "last"]


@pytest.mark.parametrize("count", ["\u00b2", "\u0663", " 2", "+2", "2.0"])
def test_the_count_line_is_ascii_digits(tmp_path, count):
    from cupy_getp.errors import InputError
    from cupy_getp.getp import read_requests

    path = tmp_path / "in.txt"
    path.write_text(f"{count}\na\nb\nc\n")
    with pytest.raises(InputError, match=r"number of requests \(ASCII digits\)"):
        read_requests(path)


@pytest.mark.parametrize("word", ["+5", "1_0", "\u0663", "-1", "0x1"])
def test_decode_takes_plain_integers_only(tmp_path, word):
    from cupy_getp.errors import InputError
    from cupy_getp.getp import read_token_lines

    path = tmp_path / "ids.txt"
    path.write_text(f"1 {word}\n")
    with pytest.raises(InputError, match="ids.txt:1: not a list of plain integer token ids"):
        read_token_lines(path, 100)


@pytest.mark.parametrize("args, problem", [
    ((float("nan"), 0.9, 1), r"temperature \(-t\) must be a finite number >= 0"),
    ((float("inf"), 0.9, 1), r"temperature \(-t\) must be a finite number >= 0"),
    ((-0.5, 0.9, 1), r"temperature \(-t\) must be a finite number >= 0"),
    ((1.0, float("nan"), 1), r"top-p \(-p\) must be in \[0, 1\]"),
    ((1.0, 1.5, 1), r"top-p \(-p\) must be in \[0, 1\]"),
    ((1.0, -0.1, 1), r"top-p \(-p\) must be in \[0, 1\]"),
    ((1.0, 0.9, -3), r"seed \(-s\) must be in 0\.\."),
])
def test_sampler_parameters_are_checked(args, problem):
    from cupy_getp.errors import InputError
    from cupy_getp.sampler import Sampler

    with pytest.raises(InputError, match=problem):
        Sampler(*args)


def test_a_temperature_so_small_that_logits_overflow_is_greedy():
    from cupy_getp.sampler import Sampler

    logits = np.array([1.0, -2.0, 3.0, 2.5], np.float32)
    assert [Sampler(1e-40, topp, 7)(logits) for topp in (0.9, 1.0)] == [2, 2]


def test_a_bad_sampler_flag_is_one_line():
    assert_clean_failure(cli("generate", "7m", "-t", "nan", "--engine", "numpy"), "temperature (-t) must be")


# -- 5. tokenizer and model agree ------------------------------------------------------------------------
def test_a_model_whose_vocabulary_differs_from_the_tokenizer_is_refused(tmp_path, requests):
    from cupy_getp.checkpoint import Weights, write_bin

    model = tmp_path / "tiny.bin"
    write_bin(model, Weights(SyntheticStore(TINY, 1)))
    result = cli("getp", str(model), "-i", str(requests), "-o", str(tmp_path / "o.txt"), "--engine", "numpy")
    assert_clean_failure(result, "the tokenizer has 201088 tokens but the model's vocabulary is 97")
    assert not any(l.startswith("warm up") for l in result.stdout.splitlines())


def test_a_tokenizer_bin_smaller_than_the_model_is_refused(tmp_path, requests):
    import struct

    tokenizer = tmp_path / "bytes.bin"
    tokenizer.write_bytes(struct.pack("<i", 1) + b"".join(struct.pack("<fi", -i, 1) + bytes([i]) for i in range(256)))
    result = cli("generate", "7m", "-i", "hi", "-z", str(tokenizer), "--engine", "numpy")
    assert_clean_failure(result, "the tokenizer has 256 tokens but the model's vocabulary is 201088")


# -- 6. the Python API raises GetpError subclasses -------------------------------------------------------
def test_api_argument_types_and_use_after_finish(tiny_weights):
    import cupy_getp
    from cupy_getp.errors import GetpError

    engine = cupy_getp.load(tiny_weights.store, engine="numpy")
    for token, pos in ((1.5, 0), (1, "0"), (True, 0), (None, 0)):
        with pytest.raises(GetpError, match="must be an integer"):
            engine.forward(token, pos)
    assert engine.forward(np.int64(3), 0).shape == (TINY.vocab_size,)
    engine.finish()
    for use in (lambda: engine.forward(1, 0), engine.reset):
        with pytest.raises(GetpError, match="the engine has been finished"):
            use()
    for source in (None, 3, [1]):
        with pytest.raises(GetpError, match="a model is a path, a preset name or a TensorStore"):
            cupy_getp.load(source)


# -- 7. odd but valid requests say what they cost --------------------------------------------------------
def test_20b_on_numpy_says_what_it_costs_and_refuses_without_the_memory(monkeypatch):
    from cupy_getp.checkpoint import Weights, synthetic_store
    from cupy_getp.errors import GetpError
    from cupy_getp.startup import check_startup

    weights = Weights(synthetic_store("20b"))
    [note] = check_startup(weights, "numpy", None)
    assert "the numpy engine will hold ~7.4 GB of memory and run at roughly" in note and "tok/s" in note
    assert check_startup(weights, "cupy", None) == []
    monkeypatch.setattr("cupy_getp.startup.available_memory", lambda: 4 << 30)
    with pytest.raises(GetpError, match=r"needs ~7.4 GB of memory .* 4.3 GB is available"):
        check_startup(weights, "numpy", None)


def test_info_fails_on_a_checkpoint_missing_a_tensor(tmp_path, tiny_tensors):
    tensors = hf_tensors(tiny_tensors, TINY)
    del tensors["model.layers.1.mlp.router.bias"]
    path = write_checkpoint(tmp_path / "hf", tensors, hf_config(TINY))
    assert_clean_failure(cli("info", str(path)), "tensor model.layers.1.mlp.router.bias is missing")


def test_non_finite_logits_stop_generation_naming_position_and_layer(tiny_tensors):
    from cupy_getp.checkpoint import ArrayStore
    from cupy_getp.engine.factory import load
    from cupy_getp.errors import NumericalError
    from cupy_getp.generation import decode
    from cupy_getp.sampler import Sampler

    broken = dict(tiny_tensors)
    broken["rms_ffn_w"] = broken["rms_ffn_w"].copy()
    broken["rms_ffn_w"][1, 0] = np.nan  # every router score of layer 1 becomes NaN
    engine = load(ArrayStore(TINY, broken), "numpy")
    with pytest.raises(NumericalError, match=r"non-finite logits at position 0 \(token 5\).* layer 1 \(router\)"):
        list(decode(engine, Sampler(0.0), [5, 6], steps=4, stop=frozenset()))


def test_loading_reports_progress(tiny_weights):
    from cupy_getp.checkpoint.layout import n_params
    from cupy_getp.startup import start_engine

    loaded = []
    start_engine(tiny_weights, "numpy", loaded.append).finish()
    assert sum(loaded) == n_params(TINY)


# -- 8. first run ----------------------------------------------------------------------------------------
def test_makefile_names_an_unknown_task():
    result = subprocess.run([sys.executable, str(ROOT / "Makefile.py"), "unknown"], capture_output=True, text=True)
    assert result.returncode == 2 and "unknown task 'unknown'" in result.stderr
