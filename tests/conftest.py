"""Shared fixtures: tiny odd-shaped configs, synthetic weights, the tokenizer; gpu/oracle skips."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cupy_getp.checkpoint import SyntheticStore, Weights
from cupy_getp.config import ModelConfig, preset
from seeding import pytest_runtest_makereport, rng  # noqa: F401 (the rng fixture and its seed report)

ROOT = Path(__file__).resolve().parents[1]

# Odd sizes everywhere (not multiples of a warp or a block), grouped-query heads, a sliding window
# shorter than the tests' sequences, YaRN on, a swiglu limit that actually clamps.
TINY = ModelConfig(
    vocab_size=97, hidden_dim=24, n_experts=5, experts_per_token=2, intermediate_dim=20, n_layers=3,
    head_dim=8, n_attn_heads=6, n_kv_heads=2, seq_len=64, initial_context_length=256, rope_theta=10000.0,
    rope_scaling_factor=4.0, sliding_window=5, swiglu_limit=1.5,
).validate()


@functools.cache
def gpu_skip_reason() -> str | None:
    from cupy_getp.gpu.device import probe

    return probe()


@functools.cache
def oracle_skip_reason() -> str | None:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        return f"transformers oracle unavailable: {e} (.ci/run installs torch and transformers)"
    return None


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "gpu" in item.keywords and gpu_skip_reason():
            item.add_marker(pytest.mark.skip(reason=f"no GPU engine here: {gpu_skip_reason()}"))
        if "oracle" in item.keywords and oracle_skip_reason():
            item.add_marker(pytest.mark.skip(reason=oracle_skip_reason()))


@pytest.fixture(scope="module")
def gpu_module():
    from cupy_getp.gpu.device import Device
    from cupy_getp.gpu.kernels import Kernels

    device = Device.open()
    # CUPY_GETP_TEST_FAMILIES=attention,gemm_tc,...: build only these (a device session's focused run: the
    # whole warm-up is minutes of NVRTC on a fresh machine); a test needing another family then fails by name
    only = os.environ.get("CUPY_GETP_TEST_FAMILIES")
    return device, Kernels(device, only=tuple(only.split(",")) if only else None)


@pytest.fixture
def gpu(gpu_module):
    """(Device, Kernels) of the GPU kernel tests, its stream made current: CuPy's own copies and fills
    (cupy.asarray, .get) then run in order with our kernels, whatever engine an earlier test opened."""
    gpu_module[0].stream.use()
    return gpu_module


@pytest.fixture(scope="session")
def tiny_weights() -> Weights:
    return Weights(SyntheticStore(TINY, seed=7))


@pytest.fixture(scope="session")
def weights_7m() -> Weights:
    return Weights(SyntheticStore(preset("7m"), seed=42, name="7m"))


@pytest.fixture(scope="session")
def tokenizer():
    from cupy_getp.tokenizer import harmony_tokenizer

    return harmony_tokenizer()


def cli(*args: str, stdin: str | None = None, cwd: Path | None = None, timeout: int = 600,
        env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `cupy-getp ARGS` in a fresh interpreter, as a user would."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "cupy_getp", *args], input=stdin, capture_output=True,
                          text=True, cwd=cwd, timeout=timeout, env=full_env)
