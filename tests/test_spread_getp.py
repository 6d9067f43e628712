"""getp spread out: `--shard K/N` and `merge`, and worker processes (`--workers`, the CPU stand-in of
`--gpus`), each against a run of the whole input in one process (numpy engine, 7m preset)."""

from __future__ import annotations

import multiprocessing
import random
import re

import pytest

import worker_faults
from cupy_getp import workers
from cupy_getp.errors import GetpError
from cupy_getp.getp import GetpHooks, GetpOptions, Spread, getp, make_spread
from cupy_getp.merge import merge
from cupy_getp.sampler import RequestSamplers, Sampler, request_seed
from cupy_getp.shards import Shard
from cupy_getp.workers import parse_gpus

from conftest import cli

TIMING = [
    r"warm up elapsed time\(s\): \d+\.\d{6}",
    r"elapsed time\(s\): \d+\.\d{6}, achieved throughput TPS \(tok/s\): \d+\.\d{6}",
    r"finish elapsed time\(s\): \d+\.\d{6}",
]
PROMPTS = ["Hello world", "The quick brown fox", "One two three", "Why is the sky blue?", "Tell me a story"]
STEPS = 8


def run(tmp_path, name: str, tokenizer, spread: Spread = Spread(), steps: int = STEPS, prompts=PROMPTS,
        hooks: GetpHooks | None = None):
    """getp of PROMPTS on the numpy engine: the output path and the echoed lines."""
    requests = tmp_path / f"{name}.in"
    requests.write_text(f"{len(prompts)}\n" + "".join(p + "\n" for p in prompts))
    output, lines = tmp_path / f"{name}.out", []
    getp("7m", requests, output, tokenizer=tokenizer, sampler=Sampler(0.0),
         options=GetpOptions(engine="numpy", steps=steps), hooks=hooks or GetpHooks(echo=lines.append), spread=spread)
    return output, lines


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tokenizer):
    """The whole input in one process, and its three shards."""
    tmp = tmp_path_factory.mktemp("spread")
    whole, _ = run(tmp, "whole", tokenizer)
    shards = [run(tmp, f"shard{k}", tokenizer, Spread(shard=Shard(k, 3)))[0] for k in (1, 2, 3)]
    return whole, shards


@pytest.mark.parametrize("n_requests", [0, 1, 7, 32])
@pytest.mark.parametrize("n_shards", [1, 2, 3, 5, 8])
def test_shards_cover_every_request_once(n_requests, n_shards):
    slices = [Shard(k, n_shards).numbers(n_requests) for k in range(1, n_shards + 1)]
    assert sorted(i for s in slices for i in s) == list(range(n_requests))
    assert max(map(len, slices)) - min(map(len, slices)) <= 1
    assert all(list(s) == sorted(s) for s in slices)  # input order inside a shard


@pytest.mark.parametrize("text", ["0/2", "3/2", "1/0", "1", "a/2", "1/2/3", "-1/2", "1/ 2"])
def test_shard_parse_refuses(text):
    with pytest.raises(GetpError, match="--shard expects K/N"):
        Shard.parse(text)
    assert Shard.parse("2/4") == Shard(2, 4)


def test_merge_of_shards_is_the_whole_run(tmp_path, runs):
    whole, shards = runs
    assert whole.read_text().count("\n") == len(PROMPTS)
    assert all(s.read_text().startswith("#cupy-getp-shard ") for s in shards)
    out, lines = tmp_path / "merged.txt", []
    assert merge(out, random.Random(1).sample(shards, 3), echo=lines.append) == len(PROMPTS)
    assert out.read_bytes() == whole.read_bytes()
    assert [re.fullmatch(t, line) is not None for t, line in zip(TIMING, lines)] == [True] * 3


def test_merge_takes_the_slowest_shards_times(tmp_path, runs):
    """Each timing line is the largest of the shards' (they run at the same time)."""
    import json

    _, shards = runs
    headers = [json.loads(s.read_text().split("\n")[0].split(" ", 1)[1]) for s in shards]
    lines = []
    merge(tmp_path / "m.txt", shards, echo=lines.append)
    seconds = [float(re.search(r"time\(s\): (\d+\.\d+)", line).group(1)) for line in lines]
    assert seconds == [pytest.approx(max(h[k] for h in headers), abs=1e-6)
                       for k in ("warm_up_s", "inference_s", "finish_s")]


def _mismatched(tmp, tokenizer):
    return run(tmp, "other", tokenizer, Spread(shard=Shard(3, 3)), steps=STEPS - 2)[0]


@pytest.mark.parametrize("case, message", [
    ("overlap", "both hold shard 1/3"),
    ("missing", "shard 3/3 missing"),
    ("mismatch", "not from the same run .*steps 8 vs 6"),
    ("whole", "not a shard's output"),
    ("split", "split in 3 vs 2 shards"),
])
def test_merge_refuses_with_one_line_and_writes_nothing(tmp_path, runs, tokenizer, case, message):
    whole, (s1, s2, s3) = runs
    given = {"overlap": lambda: [s1, s2, s3, s1], "missing": lambda: [s1, s2],
             "mismatch": lambda: [s1, s2, _mismatched(tmp_path, tokenizer)], "whole": lambda: [s1, s2, s3, whole],
             "split": lambda: [s1, s2, s3, run(tmp_path, "half", tokenizer, Spread(shard=Shard(1, 2)))[0]]}[case]()
    out = tmp_path / "merged.txt"
    with pytest.raises(GetpError, match=message) as error:
        merge(out, given, echo=lambda line: None)
    assert "\n" not in str(error.value)
    assert not out.exists()


def test_merge_command_refuses_with_exit_1(tmp_path, runs):
    _, (s1, s2, _) = runs
    out = tmp_path / "merged.txt"
    result = cli("merge", str(out), str(s1), str(s2))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert not out.exists()


def test_workers_write_the_whole_runs_output(tmp_path, runs, tokenizer):
    """Two worker processes fed from one queue, one request per chunk (numpy engine): the same bytes, every
    request's progress heard, the three timing lines."""
    whole, _ = runs
    lines, progress = [], []
    hooks = GetpHooks(echo=lines.append, progress=lambda total: progress.append)
    out, _ = run(tmp_path, "workers", tokenizer, Spread(workers=(None, None)), hooks=hooks)
    assert out.read_bytes() == whole.read_bytes()
    assert len(progress) == len(PROMPTS) and sum(progress) == sum(len(l.split()) for l in out.read_text().splitlines())
    assert [re.fullmatch(t, line) is not None for t, line in zip(TIMING, lines)] == [True] * 3
    assert multiprocessing.active_children() == []


def test_workers_command_writes_the_whole_runs_output(tmp_path, runs):
    """The CLI's --workers with a shard: the shard of a one-process run, byte for byte."""
    whole, (s1, _, _) = runs
    requests, out = tmp_path / "in.txt", tmp_path / "out.txt"
    requests.write_text(f"{len(PROMPTS)}\n" + "".join(p + "\n" for p in PROMPTS))
    result = cli("getp", "7m", "-i", str(requests), "-o", str(out), "-n", str(STEPS), "--engine", "numpy",
                 "--workers", "2", "--shard", "1/3")
    assert result.returncode == 0, result.stderr
    assert out.read_text().split("\n", 1)[1] == s1.read_text().split("\n", 1)[1]
    assert [re.fullmatch(t, line) is not None for t, line in zip(TIMING, result.stdout.splitlines())] == [True] * 3


@pytest.mark.parametrize("worker, message", [
    (worker_faults.failing_worker, r"worker 1: RuntimeError: device fault \(second line of the message\)$"),
    (worker_faults.dying_worker, r"worker 1: the worker process ended unexpectedly \(exit code 9\)$"),
])
def test_a_failing_worker_ends_the_run_with_one_line_and_no_output(tmp_path, tokenizer, monkeypatch, worker,
                                                                    message):
    monkeypatch.setattr(workers, "worker_main", worker)
    with pytest.raises(GetpError, match=message) as error:
        run(tmp_path, "failing", tokenizer, Spread(workers=(None, None)))
    assert "\n" not in str(error.value)
    assert not (tmp_path / "failing.out").exists()
    assert multiprocessing.active_children() == []  # every worker ended


def test_spread_options_are_checked_before_anything_runs(tmp_path, tokenizer):
    with pytest.raises(GetpError, match="exclude each other"):
        make_spread(None, "0", 2, "numpy", 0.0, 0)
    with pytest.raises(GetpError, match="use --gpus"):
        make_spread(None, None, 2, "cupy", 0.0, 0)
    with pytest.raises(GetpError, match="needs a seed"):
        make_spread("1/2", None, 0, "cupy", 0.7, 0)
    with pytest.raises(GetpError, match="need the batched"):
        requests = tmp_path / "in.txt"
        requests.write_text("1\nhi\n")
        getp("7m", requests, tmp_path / "out.txt", tokenizer=tokenizer, sampler=Sampler(0.7, 0.9, 5),
             options=GetpOptions(engine="numpy", steps=4), spread=Spread(shard=Shard(1, 2)))
    assert not (tmp_path / "out.txt").exists()
    assert make_spread("2/3", None, 2, "numpy", 0.0, 0) == Spread(shard=Shard(2, 3), workers=(None, None))


def test_parse_gpus():
    assert parse_gpus("all", lambda: 3) == (0, 1, 2) and parse_gpus("2,0", lambda: 3) == (2, 0)
    for text, message in [("0,0", "twice"), ("3", "out of range"), ("a", "device numbers"), ("", "device numbers")]:
        with pytest.raises(GetpError, match=message):
            parse_gpus(text, lambda: 3)


def test_request_samplers_draw_by_input_number():
    """A shard's or a chunk's request samples with the generator of its number in the whole input."""
    part = RequestSamplers(Sampler(0.8, 0.9, 11), numbers=[5, 9])
    assert part[1].seed == request_seed(11, 9) != RequestSamplers(Sampler(0.8, 0.9, 11))[1].seed


FAILING_RUN = """
import sys
import worker_faults
from cupy_getp import workers
from cupy_getp.errors import GetpError
from cupy_getp.getp import GetpHooks, GetpOptions, Spread, getp
from cupy_getp.sampler import Sampler
from cupy_getp.tokenizer import harmony_tokenizer

if __name__ == "__main__":
    workers.worker_main = worker_faults.failing_worker
    try:
        getp("7m", sys.argv[1], sys.argv[2], tokenizer=harmony_tokenizer(), sampler=Sampler(0.0),
             options=GetpOptions(engine="numpy", steps=12), spread=Spread(workers=(None, None)),
             hooks=GetpHooks(echo=lambda line: None))
    except GetpError as e:
        print(e)
"""


def test_a_failed_run_exits_with_chunks_left_in_the_queue(tmp_path):
    """Thousands of one-request chunks no worker will take (more than a pipe holds): the run's process still
    exits at once (it does not wait to push them to workers that are gone)."""
    import subprocess
    import sys

    from conftest import ROOT

    requests = tmp_path / "in.txt"
    requests.write_text("3000\n" + "a prompt of a few words\n" * 3000)
    result = subprocess.run([sys.executable, "-c", FAILING_RUN, str(requests), str(tmp_path / "out.txt")],
                            capture_output=True, text=True, timeout=60,
                            env={**__import__("os").environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"})
    assert result.returncode == 0 and "device fault" in result.stdout, result.stderr
    assert not (tmp_path / "out.txt").exists()


@pytest.mark.parametrize("args, message", [
    (["run", "7m", "-m", "generate", "--shard", "1/2"], "apply only with -m getp"),
    (["getp", "7m", "--gpus", "0", "--engine", "numpy"], "--gpus"),
])
def test_spread_command_errors(tmp_path, args, message):
    result = cli(*args, "-o", str(tmp_path / "out.txt")) if args[0] == "getp" else cli(*args)
    assert result.returncode == 1 and result.stderr.splitlines()[-1].startswith("error: ")
    assert message in result.stderr.splitlines()[-1] and not (tmp_path / "out.txt").exists()


def test_a_worker_takes_chunks_until_the_end_of_the_run():
    """The shared queue as a worker reads it: a chunk's (number, prompt) pairs, [] when nothing is there and
    it must not wait, None at the run's end."""
    tasks = multiprocessing.get_context("spawn").Queue()
    tasks.put(("chunk", [4, 7], [[1, 2], [3]]))
    assert workers._take(tasks, True) == [(4, [1, 2]), (7, [3])]
    assert workers._take(tasks, False) == []
    tasks.put(("end",))
    assert workers._take(tasks, True) is None
