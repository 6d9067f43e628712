"""Several GPUs (two or more, NCCL): getp data-parallel (`--gpus 0,1`) and expert-parallel (`--expert-parallel
2`) against one GPU's output byte for byte, and expert parallelism's logits over NCCL against one GPU's bit for
bit (`gpu/ep_check.py`). Skipped on a machine of one GPU (tests/test_gpu_spread.py and
tests/test_gpu_expert_parallel.py stand in for these there)."""

from __future__ import annotations

import pytest

from conftest import ROOT, cli

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module", autouse=True)
def two_gpus():
    import cupy

    from cupy_getp.workers import nccl_missing

    count = cupy.cuda.runtime.getDeviceCount()
    if count < 2:
        pytest.skip(f"needs two GPUs, this machine has {count}")
    reason = nccl_missing()
    if reason:
        pytest.skip(reason)


def getp_output(tmp_path, name: str, *extra: str) -> str:
    out = tmp_path / f"{name}.txt"
    result = cli("getp", "7m", "-i", str(ROOT / "data/input.txt"), "-o", str(out), "-n", "96", "--engine", "cupy",
                 *extra)
    assert result.returncode == 0, result.stderr
    return out.read_text()


@pytest.mark.parametrize("precision", ["exact", "fast"])
def test_two_gpus_write_one_gpus_output(tmp_path, precision):
    """Batch invariance makes a request's line the same wherever it ran: one GPU, a replica a GPU, or one
    model whose experts are split over two GPUs (sampled too: each request its own stream)."""
    for sampling in ([], ["-t", "0.8", "-s", "5"]):
        one = getp_output(tmp_path, "one", "--precision", precision, *sampling)
        assert one.count("\n") == 32
        assert getp_output(tmp_path, "replicas", "--precision", precision, "--gpus", "0,1", *sampling) == one
        assert getp_output(tmp_path, "experts", "--precision", precision, "--expert-parallel", "2",
                           *sampling) == one


@pytest.mark.parametrize("precision", ["exact", "fast"])
def test_expert_parallel_logits_over_nccl_are_one_gpus_bits(precision):
    from cupy_getp.gpu.ep_check import compare

    record = compare("7m", [0, 1], "bf16", "bf16", precision, rows=6, steps=4)
    assert record.get("rows_compared") == 4 * 2 * 6, record
    assert record["equal"], record

