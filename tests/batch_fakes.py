"""numpy stand-ins for the batched engine's device side, so that its orchestration (the model over rows,
the KV ring, attention splits, MoE grouping, the scheduler loop) runs on a CPU machine.

`FakeKernels` runs the real launch helpers and replaces only the launch, by the kernel's oracle
(tests/kernel_oracles.py, the contracts of docs/batched-engine.md); the GPU tests check the real kernels
against the same oracles (`expected`). `fake_cupy` is just enough of CuPy (arrays with `.get()` and a
device pointer) for gpu/batch.py.
"""

from __future__ import annotations

import contextlib
import sys
import types

import numpy as np

from cupy_getp.bf16 import bf16_to_f32, f32_to_bf16
from cupy_getp.checkpoint import MOE_WEIGHTS, TENSOR_NAMES
from cupy_getp.checkpoint.layout import LAYER_TENSORS
from cupy_getp.gpu.constants import BLOCK_SIZE
from cupy_getp.gpu.kernels import Kernels
from cupy_getp.gpu.launch.tensor_map import TensorMaps
from cupy_getp.gpu.weights import DENSE_GEMM_WEIGHTS

from kernel_oracles import ORACLES, stand_in_tensor_map


class HostArray(np.ndarray):
    """A numpy array that answers CuPy's `.get()` and `.data.ptr` (the helpers' alignment checks)."""

    def get(self, stream=None, out=None, blocking=True):
        if out is None:
            return np.array(self)
        out[...] = self
        return out

    @property
    def data(self):
        return types.SimpleNamespace(ptr=self.ctypes.data)


def host_array(a) -> HostArray:
    return np.asarray(a).view(HostArray)


fake_cupy = types.SimpleNamespace(
    zeros=lambda shape, dtype=np.float32: host_array(np.zeros(shape, dtype)),
    zeros_like=lambda a: host_array(np.zeros_like(a)),
    asarray=lambda a: host_array(np.array(a)),
    # what gpu/weights.py's DeviceWeights uses (uninitialised memory, the lossless-BF16 test)
    empty=lambda shape, dtype=np.float32: host_array(np.empty(shape, dtype)),
    any=np.any,
    ascontiguousarray=lambda a: host_array(np.ascontiguousarray(a)),
    uint16=np.uint16,
)


class FakeKernels(Kernels):
    """`gpu.kernels.Kernels` with its launch helpers as they are (checks, grids, kernel choice) and only
    the launch replaced: kernel `name` runs as its numpy oracle (tests/kernel_oracles.py)."""

    wgmma = False  # Kernels probes it at warm-up: True takes the wgmma products (every step in exact / fast)
    tensor_maps = TensorMaps(encode=stand_in_tensor_map)  # what wg_tma = True reads W through
    not_built: dict = {}  # optional kernel families not built (Kernels.not_built)

    def __init__(self, device=None, only=None):  # only: the families built (every oracle stands in, whatever)
        self.device = device or FakeDevice()
        self.warps_per_block = BLOCK_SIZE // self.device.warp_size
        self.launches: list[str] = []  # kernel names, in launch order

    def _launch(self, name: str, grid: tuple, block: tuple, args: tuple, shared_mem: int = 0) -> None:
        if grid[0] == 0:  # as Kernels._launch: nothing to run
            return
        self.launches.append(name)
        captured = getattr(self.device.stream, "captured", None)
        if captured is not None:  # a CapturingStream capturing: recorded, not run (as CUDA does)
            captured.append((name, args))
            return
        ORACLES[name](*args)


def expected(method: str, *args, **kwargs):
    """What launch helper `method` must write, on host copies of `args` (numpy or CuPy), through the same
    helper and the kernel's oracle: the host arrays after the call, in argument order (None stays None)."""
    host = [_host_copy(a) for a in args]
    getattr(FakeKernels(), method)(*host, **kwargs)
    return [np.asarray(a) if isinstance(a, np.ndarray) else a for a in host]


def _host_copy(a):
    if hasattr(a, "__cuda_array_interface__"):  # a CuPy array
        return host_array(a.get())
    return host_array(np.array(a)) if isinstance(a, np.ndarray) else a


class _Current(contextlib.nullcontext):
    """A stream or device: usable in `with`, and made current with `use()` (a no-op here)."""

    def use(self):
        return self


class FakeGraph:
    """A captured step: its launches with the arguments they had, run again by `launch` (what a CUDA graph
    replays: the same buffers and the same scalars, whatever the host holds now)."""

    def __init__(self, launches: list):
        self.launches, self.replays = launches, 0

    def launch(self, stream=None):
        self.replays += 1
        for name, args in self.launches:
            ORACLES[name](*args)


class CapturingStream(_Current):
    """A stream that captures like CUDA's (`begin_capture` / `end_capture`): FakeKernels records the launches
    in between instead of running them, and `end_capture` returns them as a `FakeGraph`."""

    captured: list | None = None

    def begin_capture(self):
        self.captured = []

    def end_capture(self) -> FakeGraph:
        graph, self.captured = FakeGraph(self.captured), None
        return graph


class _FakeCudaDevice(_Current):
    attributes = {"MultiProcessorCount": 132}  # an H100's: the dense tensor-core tile choice reads it


class FakeDevice:
    is_hip, arch, sync_check, warp_size = False, "sm_90", False, 32
    stream = _Current()
    cuda_device = _FakeCudaDevice()

    def describe(self):
        return "numpy stand-in"

    def pinned(self, shape, dtype):
        return np.zeros(shape, dtype)

    def upload(self, dst, host):
        dst[...] = host

    def download(self, src, out):
        out[...] = src
        return out

    def download_started(self, src, out):  # the launches ran already: the copy, and its event, are done
        out[...] = src
        return None

    def wait(self, event, what):
        pass

    def synchronize(self, what):
        pass

    def allocatable_bytes(self):
        return 1 << 40

    def device_free_bytes(self):
        return 1 << 40, 1 << 40

    def allocating(self, what, remedy):  # host memory: an allocation that fails stays numpy's MemoryError
        return contextlib.nullcontext()

    def memory_in_use(self):  # nothing held on a device
        return 0

    def free_all(self):
        pass


class FakeEngine:
    """What BatchedEngine needs of a CupyEngine: config, device weights (MoE and, where lossless, the
    dense GEMM weights as bf16 bits), kernels, device."""

    def __init__(self, weights):
        self.config, self.device, self.kernels = weights.config, FakeDevice(), FakeKernels()
        self.finished = False
        arrays = {}
        for name in TENSOR_NAMES:
            values = weights.f32(name)
            lossless = np.array_equal(bf16_to_f32(f32_to_bf16(values)), values)
            bf16 = name in MOE_WEIGHTS or (name in DENSE_GEMM_WEIGHTS and lossless)  # as gpu/weights.py
            arrays[name] = host_array(f32_to_bf16(values) if bf16 else values)
        layers = [types.SimpleNamespace(**{n: arrays[n][l] for n in LAYER_TENSORS})
                  for l in range(self.config.n_layers)]
        self.w = types.SimpleNamespace(layer=lambda l: layers[l], **{n: arrays[n] for n in TENSOR_NAMES})

    def check_not_finished(self):
        assert not self.finished, "the engine has been finished"

    def memory_remedy(self, remedy):  # CupyEngine's: what would help an allocation that failed
        return remedy


def use_stand_ins(monkeypatch, cupy_module, open_device) -> None:
    """CuPy, the GPU engine's kernels and `Device.open` replaced by the CPU stand-ins for one test: `cupy_module`
    (fake_cupy, or a counting one) and `open_device()`, the device the engine opens."""
    import cupy_getp.gpu.engine as engine_module
    from cupy_getp.gpu.device import Device

    monkeypatch.setitem(sys.modules, "cupy", cupy_module)
    monkeypatch.setattr(engine_module, "Kernels", FakeKernels)
    monkeypatch.setattr(Device, "open", classmethod(lambda cls: open_device()))
