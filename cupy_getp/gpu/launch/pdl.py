"""Programmatic dependent launch (CUDA, compute capability 9.0 on): the kernels of a step's CUDA graph are launched
with CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION, so each kernel's blocks may be resident before the
kernel ahead of it in the stream has finished, waiting in grid_begin() (kernels/common.h) for its writes. The
launch and the blocks' start leave the critical path of a step of few rows, which is a chain of ~270 short
kernels; the TMA products also stream their first weights in that time. Nothing a kernel computes changes.

CuPy's kernel call takes no launch attributes, so these launches go through the driver's cuLaunchKernelEx by
ctypes (libcuda, which CuPy has loaded already), their arguments packed as CuPy packs them. Only launches made
while a graph is captured take this path (Kernels.capturing): eager launches stay CuPy's. On by default where the
device takes it (batch-1 decode 4.080 -> 3.935 ms a step on an H100, bench/RESULTS.md run 75; its logits bit test
and the batch-invariance suite pass with it on, run 78); CUPY_GETP_PDL=0 turns it off. Kernels probes it once at
warm-up (a captured launch through it must give the right answer)."""

from __future__ import annotations

import ctypes
import os

import numpy as np

PDL_ENV = "CUPY_GETP_PDL"
PROGRAMMATIC_STREAM_SERIALIZATION = 6  # CUlaunchAttributeID (cuda.h, CUDA 12 and 13)


class LaunchAttribute(ctypes.Structure):
    """CUlaunchAttribute: the id, 4 bytes of padding, the value (a 64-byte union; this one's first int)."""

    _fields_ = [("id", ctypes.c_int), ("pad", ctypes.c_char * 4), ("value", ctypes.c_int * 16)]


class LaunchConfig(ctypes.Structure):
    """CUlaunchConfig."""

    _fields_ = [("grid", ctypes.c_uint * 3), ("block", ctypes.c_uint * 3), ("shared_mem", ctypes.c_uint),
                ("stream", ctypes.c_void_p), ("attrs", ctypes.POINTER(LaunchAttribute)), ("n_attrs", ctypes.c_uint)]


def pdl_wanted() -> bool:
    """False where CUPY_GETP_PDL=0 (on by default); whether the device takes it is Kernels' probe."""
    return os.environ.get(PDL_ENV, "") != "0"


def dims(sizes: tuple) -> tuple[int, int, int]:
    """A grid or block of 1 to 3 sizes as (x, y, z)."""
    if not 1 <= len(sizes) <= 3 or any(int(s) < 1 for s in sizes):
        raise ValueError(f"a grid or block of 1 to 3 positive sizes, not {sizes}")
    return tuple(int(s) for s in sizes) + (1,) * (3 - len(sizes))


def kernel_arguments(args: tuple) -> tuple[list, ctypes.Array]:
    """(the values, kernelParams) for cuLaunchKernelEx: each argument's bytes as CuPy passes them (a device
    array its address, None a null pointer, a numpy scalar or one-element value such as a tensor map its bytes,
    a Python bool, int or float as numpy's bool, int64 or float64) and an array of pointers to them. The values
    must outlive the launch call (the driver copies them during it, also while capturing)."""
    values = []
    for i, arg in enumerate(args):
        if arg is None:
            values.append(ctypes.c_void_p(0))
        elif hasattr(arg, "__cuda_array_interface__"):
            values.append(ctypes.c_void_p(arg.data.ptr))
        else:
            if isinstance(arg, (bool, int, float)):
                arg = np.array(arg)  # numpy's bool_, int64, float64
            if not isinstance(arg, (np.generic, np.ndarray)) or arg.size != 1:
                raise TypeError(f"kernel argument {i}: {type(arg).__name__} is neither a device array, None nor "
                                "a scalar")
            raw = np.ascontiguousarray(arg).tobytes()
            values.append(ctypes.create_string_buffer(raw, len(raw)))
    pointers = (ctypes.c_void_p * max(1, len(values)))(*(ctypes.addressof(v) for v in values))
    return values, pointers


def function_handle(function) -> int:
    """The CUfunction of a CuPy kernel (RawModule.get_function's RawKernel, or a cupy.cuda.Function)."""
    ptr = getattr(function, "ptr", None)
    if ptr is None:
        ptr = function.kernel.ptr
    return int(ptr)


class ProgrammaticLaunch:
    """cuLaunchKernelEx with programmatic stream serialization. Raises OSError or AttributeError where the
    driver library or the entry point is missing."""

    def __init__(self, library: str = "libcuda.so.1"):
        driver = ctypes.CDLL(library)
        self._launch = driver.cuLaunchKernelEx
        self._launch.argtypes = [ctypes.POINTER(LaunchConfig), ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        self._launch.restype = ctypes.c_int
        self._error_name = driver.cuGetErrorName
        self._error_name.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]
        self._attribute = LaunchAttribute(id=PROGRAMMATIC_STREAM_SERIALIZATION)
        self._attribute.value[0] = 1  # programmaticStreamSerializationAllowed

    def launch(self, function, grid: tuple, block: tuple, args: tuple, shared_mem: int, stream_ptr: int) -> None:
        config = LaunchConfig(grid=dims(grid), block=dims(block), shared_mem=shared_mem, stream=stream_ptr,
                              attrs=ctypes.pointer(self._attribute), n_attrs=1)
        held, pointers = kernel_arguments(args)  # held: alive until the call has copied them
        result = self._launch(ctypes.byref(config), function_handle(function), pointers, None)
        if result != 0:
            raise RuntimeError(f"cuLaunchKernelEx: {self._name(result)}")

    def _name(self, result: int) -> str:
        name = ctypes.c_char_p()
        if self._error_name(result, ctypes.byref(name)) != 0 or not name.value:
            return f"error {result}"
        return name.value.decode()
