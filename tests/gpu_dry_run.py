"""A dry run of the GPU kernel tests on a CPU machine: CuPy arrays become numpy arrays and `Kernels` the
CPU stand-in (tests/batch_fakes.py FakeKernels: the real launch helpers, the kernels' oracles in place of
the launches). It runs the tests' own code (shapes, helper calls, `expected`, the comparisons against the
reference engine) before GPU time is spent on them; it says nothing about the kernels themselves.

    PYTHONPATH=tests python -m pytest -p gpu_dry_run tests/test_gpu_kernels.py tests/test_gpu_batch_attention.py \
        tests/test_gpu_batch_moe.py tests/test_gpu_gemm.py tests/test_gpu_gemm_tc.py tests/test_gpu_expert_parallel.py

Loaded only with `-p gpu_dry_run`; the engine-level GPU tests (test_gpu_engine, test_gpu_batch_engine,
test_gpu_weight_storage) need more of CuPy than this and are not meant to run under it.
"""

from __future__ import annotations

import sys
import types

import numpy as np

from batch_fakes import FakeDevice, FakeKernels, HostArray


class DeviceArray(HostArray):
    """What the tests and `expected` take for a CuPy array."""

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.shape, "typestr": self.dtype.str}

    def set(self, a):
        self[...] = a


def _device(a) -> DeviceArray:
    return np.asarray(a).view(DeviceArray)


def _full(shape, value, dtype=np.float32):
    if np.issubdtype(np.dtype(dtype), np.integer) and isinstance(value, float) and np.isnan(value):
        value = -0x5EED  # CuPy casts NaN to some integer; any poison will do
    return _device(np.full(shape, value, dtype))


class DryRunDevice(FakeDevice):
    stream = types.SimpleNamespace(use=lambda: None)

    def synchronize(self, what: str = "") -> None:
        pass


sys.modules["cupy"] = types.SimpleNamespace(
    asarray=lambda a, dtype=None: _device(np.array(a, dtype=dtype)), full=_full,
    empty=lambda shape, dtype=np.float32: _device(np.empty(shape, dtype)),
    zeros=lambda shape, dtype=np.float32: _device(np.zeros(shape, dtype)),
    zeros_like=lambda a: _device(np.zeros_like(a)), ndarray=DeviceArray,
    # what gpu/weights.py's lossless-BF16 test of the dense weights uses
    any=np.any, ascontiguousarray=lambda a: _device(np.ascontiguousarray(a)), uint16=np.uint16)

import cupy_getp.gpu.device as _device_module  # noqa: E402
import cupy_getp.gpu.kernels as _kernels_module  # noqa: E402

_device_module.probe = lambda: None  # conftest's gpu skip asks probe()
_device_module.Device.open = staticmethod(lambda *args, **kwargs: DryRunDevice())
_kernels_module.Kernels = FakeKernels
