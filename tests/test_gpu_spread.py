"""`--gpus` on one GPU: the in-process device pick, and worker processes on the GPU engine (two on device 0,
the one-GPU stand-in for `--gpus 0,1`), against the one-process run."""

from __future__ import annotations

import multiprocessing

import pytest

from cupy_getp.getp import GetpHooks, GetpOptions, Spread, getp
from cupy_getp.sampler import Sampler
from cupy_getp.shards import Shard

from conftest import ROOT, cli

pytestmark = pytest.mark.gpu


def run(tmp_path, name, tokenizer, spread: Spread, sampler=None):
    """getp of data/input.txt on the GPU engine with one request slot (every step's rows are then one
    request's, wherever it runs, so the lines are comparable bit for bit without batch invariance)."""
    output = tmp_path / f"{name}.txt"
    getp("7m", ROOT / "data/input.txt", output, tokenizer=tokenizer, sampler=sampler or Sampler(0.0),
         options=GetpOptions(engine="cupy", steps=64, batch=1), hooks=GetpHooks(echo=lambda line: None),
         spread=spread)
    return output.read_text()


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_gpu_workers_write_the_one_process_output(tmp_path, tokenizer, temperature):
    sampler = lambda: Sampler(temperature, 0.9, 5)  # noqa: E731
    whole = run(tmp_path, "whole", tokenizer, Spread(), sampler())
    assert run(tmp_path, "workers", tokenizer, Spread(workers=(0, 0)), sampler()) == whole
    shard = run(tmp_path, "shard", tokenizer, Spread(shard=Shard(2, 3), workers=(0, 0)), sampler())
    assert shard.split("\n", 1)[1] == "".join(whole.splitlines(keepends=True)[1::3])
    assert multiprocessing.active_children() == []


def test_gpu_one_device_runs_in_process_as_without_gpus(tmp_path):
    outputs = []
    for extra in ([], ["--gpus", "0"]):
        out = tmp_path / f"out{len(extra)}.txt"
        result = cli("getp", "7m", "-i", str(ROOT / "data/input.txt"), "-o", str(out), "-n", "64", "--engine", "cupy",
                     *extra)
        assert result.returncode == 0, result.stderr
        assert "worker" not in result.stderr  # no worker process: one engine here
        outputs.append(out.read_text())
    assert outputs[0] == outputs[1] and outputs[0].count("\n") == 32
