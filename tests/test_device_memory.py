"""Out of device memory is one line: what was being allocated, how much, how much is free, what would help.
CPU tests drive `Device` with a stand-in of CuPy's memory API; the gpu ones simulate a small device with a
memory pool limit (CUPY_GPU_MEMORY_LIMIT for the CLI)."""

from __future__ import annotations

import types

import numpy as np
import pytest

from cupy_getp.checkpoint import SyntheticStore, Weights
from cupy_getp.config import preset
from cupy_getp.errors import DeviceError
from cupy_getp.gpu.device import Device
from cupy_getp.gpu.weights import check_weights_fit, upload_bytes

from conftest import ROOT, cli

GiB = 2**30


class _OutOfMemory(MemoryError):
    def __init__(self, size):
        super().__init__(f"Out of memory allocating {size:,} bytes")
        self._size = size


def small_device(free: int, total: int = 8 * GiB, pool_free: int = 0, limit: int = 0, used: int = 0) -> Device:
    """A `Device` whose CuPy is a stand-in of the memory calls it makes (driver free/total, the pool)."""
    pool = types.SimpleNamespace(free_bytes=lambda: pool_free, get_limit=lambda: limit, used_bytes=lambda: used)
    device = Device.__new__(Device)
    device.cupy = types.SimpleNamespace(
        cuda=types.SimpleNamespace(memory=types.SimpleNamespace(OutOfMemoryError=_OutOfMemory),
                                   runtime=types.SimpleNamespace(memGetInfo=lambda: (free, total))),
        get_default_memory_pool=lambda: pool)
    return device


def test_allocatable_bytes_honour_the_pools_limit():
    assert small_device(3 * GiB, pool_free=GiB).allocatable_bytes() == 4 * GiB
    assert small_device(3 * GiB, limit=2 * GiB, used=GiB // 2).allocatable_bytes() == 3 * GiB // 2
    assert small_device(3 * GiB, limit=GiB, used=2 * GiB).allocatable_bytes() == 0


def test_an_allocation_that_fails_is_one_line_naming_what_and_what_would_help():
    device = small_device(GiB // 4)
    with pytest.raises(DeviceError) as caught:
        with device.allocating("the KV cache", "a smaller -n"):
            raise _OutOfMemory(3 * GiB)
    assert str(caught.value) == ("out of device memory allocating the KV cache (3.00 GiB more): 0.25 GiB free of "
                                 "8.00 GiB; a smaller -n")
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    with pytest.raises(ValueError):  # anything else is not an out-of-memory line
        with device.allocating("the KV cache", "a smaller -n"):
            raise ValueError("a bug")


def test_weights_that_cannot_fit_are_refused_before_any_allocation():
    """The issue's 120b case: BF16 experts need ~230 GB; the line says so, with free memory and the MXFP4 size."""
    weights = Weights(SyntheticStore(preset("120b")))
    with pytest.raises(DeviceError) as caught:
        check_weights_fit(weights, small_device(139 * GiB, total=143 * GiB))
    line = str(caught.value)
    assert line.startswith(f"out of device memory allocating the weights ({upload_bytes(weights) / GiB:.2f} GiB, "
                           "BF16 experts): 139.00 GiB free of 143.00 GiB; ")
    assert "\n" not in line and line.endswith(f"; --experts mxfp4 (the weights then need "
                                              f"{upload_bytes(weights, 'mxfp4') / GiB:.2f} GiB), or a device with "
                                              f"more free memory")
    assert 60 * GiB < upload_bytes(weights, "mxfp4") < 70e9
    check_weights_fit(Weights(SyntheticStore(preset("7m"))), small_device(GiB))  # fits: no error


@pytest.mark.gpu
def test_a_pool_limit_turns_an_allocation_into_one_line(gpu):
    import cupy

    device = gpu[0]
    pool = cupy.get_default_memory_pool()
    before = pool.get_limit()
    pool.set_limit(size=64 << 20)
    try:
        with pytest.raises(DeviceError, match=r"^out of device memory allocating a test buffer \(1\.00 GiB more\)"):
            with device.allocating("a test buffer", "nothing"):
                cupy.empty(GiB, np.uint8)
    finally:
        pool.set_limit(size=before)


@pytest.mark.gpu
@pytest.mark.parametrize("args, start", [
    (("run", "20b", "-m", "getp", "--engine", "cupy"), "error: out of device memory allocating the weights"),
    (("getp", "7m", "--engine", "cupy", "--batch", "4096"), "error: --batch 4096 does not fit"),
])
def test_the_cli_says_out_of_memory_in_one_line(gpu, tmp_path, args, start):
    """A 3 GiB device (CuPy's pool limit; 2 GiB of it the batched engine's reserve): the 20b's weights, and
    a batch too large for what the 7m leaves."""
    out = tmp_path / "out.txt"
    proc = cli(*args, "-n", "1024", "-i", str(ROOT / "data" / "input.txt"), "-o", str(out),
               env={"CUPY_GPU_MEMORY_LIMIT": str(3 * GiB)})
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(start), proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()
