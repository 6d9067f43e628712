"""The device layer: which GPU (HIP_DEVICE_ID), one stream, pinned host buffers, launch accounting.

CuPy owns allocation, streams and pinned memory; this module adds the policy: a clear one-line error
when CuPy is missing, no device is visible or the id is out of range, and a debug switch
(CUPY_GETP_SYNC_CHECK=1) that synchronises after every launch so a failing kernel is named.
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import DeviceError

INSTALL_HINT = "pip install 'cupy-getp[cuda13]' (or [cuda12], or [rocm] for MI250)"


def requested_device_id() -> int:
    raw = os.environ.get("HIP_DEVICE_ID", "0")
    try:
        return int(raw)
    except ValueError:
        raise DeviceError(f"HIP_DEVICE_ID={raw!r} is not a device number") from None


@functools.cache
def _probe() -> str | None:
    try:
        import cupy
    except ImportError:
        return f"CuPy is not installed: {INSTALL_HINT}"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDARuntimeError / HIP errors / missing driver libraries
        return f"no GPU visible to CuPy ({e})"
    if count == 0:
        return "no GPU visible to CuPy"
    try:
        device_id = requested_device_id()
    except DeviceError as e:
        return str(e)
    if not 0 <= device_id < count:
        return f"HIP_DEVICE_ID={device_id} is out of range: {count} device(s) visible (0..{count - 1})"
    return None


def probe() -> str | None:
    """None when the GPU engine can run here, else why not (one line)."""
    return _probe()


@dataclass
class Counters:
    """Everything the engine asks of the device: launches by kernel, copies by direction."""

    launches: dict[str, int] = field(default_factory=dict)
    h2d_bytes: int = 0
    d2h_bytes: int = 0
    h2d_copies: int = 0
    d2h_copies: int = 0

    def total_launches(self) -> int:
        return sum(self.launches.values())

    def reset(self) -> None:
        self.launches.clear()
        self.h2d_bytes = self.d2h_bytes = self.h2d_copies = self.d2h_copies = 0


class Device:
    """The chosen GPU with its one stream. Use `Device.open()`."""

    def __init__(self, device_id: int):
        import cupy

        self.cupy = cupy
        self.id = device_id
        self.cuda_device = cupy.cuda.Device(device_id)
        self.cuda_device.use()
        props = cupy.cuda.runtime.getDeviceProperties(device_id)
        self.is_hip = bool(cupy.cuda.runtime.is_hip)
        self.name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        self.warp_size = int(props["warpSize"])
        arch = props.get("gcnArchName", b"") if self.is_hip else f"sm_{props['major']}{props['minor']}"
        self.arch = arch.decode() if isinstance(arch, bytes) else str(arch)
        # The one stream, made current: every CuPy operation (allocation fills, copies) and every
        # kernel of ours is then ordered on it. A non-blocking stream is not ordered with the null
        # stream, so anything left on the null stream could race with our kernels.
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.stream.use()
        self.sync_check = os.environ.get("CUPY_GETP_SYNC_CHECK", "") not in ("", "0")
        self.counters = Counters()

    @classmethod
    def open(cls) -> Device:
        reason = probe()
        if reason:
            raise DeviceError(f"the cupy engine cannot run: {reason}")
        return cls(requested_device_id())

    def describe(self) -> str:
        backend = "ROCm/HIP" if self.is_hip else "CUDA"
        return f"{self.name} ({backend}, {self.arch}, warp {self.warp_size}, device {self.id})"

    # -- memory ---------------------------------------------------------------------------------------
    def pinned(self, shape, dtype) -> np.ndarray:
        import cupyx

        return cupyx.empty_pinned(shape, dtype)

    def upload(self, dst, host: np.ndarray) -> None:
        """Host -> device into an existing contiguous device array, on the engine's stream."""
        dst.set(np.ascontiguousarray(host, dtype=dst.dtype), stream=self.stream)
        self.counters.h2d_copies += 1
        self.counters.h2d_bytes += dst.nbytes

    def download(self, src, out: np.ndarray) -> np.ndarray:
        """Device -> host into `out` (pinned for speed); synchronises the stream."""
        src.get(stream=self.stream, out=out, blocking=False)
        self.synchronize("copy to host")
        self.counters.d2h_copies += 1
        self.counters.d2h_bytes += src.nbytes
        return out

    def download_started(self, src, out: np.ndarray):
        """Device -> host into pinned `out` behind the work already on the engine's stream, without waiting;
        returns the event after the copy (`wait` for it: later work on the stream need not be done)."""
        import cupy

        src.get(stream=self.stream, out=out, blocking=False)
        done = cupy.cuda.Event(block=False, disable_timing=True)
        done.record(self.stream)
        self.counters.d2h_copies += 1
        self.counters.d2h_bytes += src.nbytes
        return done

    def wait(self, event, what: str) -> None:
        """Wait for an event of `download_started` (one line naming `what` if the device failed)."""
        try:
            event.synchronize()
        except Exception as e:
            raise RuntimeError(f"GPU error detected at {what}: {e}") from e

    def synchronize(self, what: str) -> None:
        try:
            self.stream.synchronize()
        except Exception as e:
            raise RuntimeError(f"GPU error detected at {what}: {e}") from e

    def memory_in_use(self) -> int:
        """Bytes the CuPy pool holds for arrays now."""
        return self.cupy.get_default_memory_pool().used_bytes()

    def free_all(self) -> None:
        self.stream.synchronize()
        self.cupy.get_default_memory_pool().free_all_blocks()
        self.cupy.get_default_pinned_memory_pool().free_all_blocks()

    def device_free_bytes(self) -> tuple[int, int]:
        """(free, total) bytes on the device, as the driver sees them."""
        return self.cupy.cuda.runtime.memGetInfo()

    def allocatable_bytes(self) -> int:
        """What CuPy can still allocate: the driver's free memory and the pool's unused blocks, within the
        pool's limit where one is set (`cupy.get_default_memory_pool().set_limit`)."""
        free, _ = self.device_free_bytes()
        pool = self.cupy.get_default_memory_pool()
        available = free + pool.free_bytes()
        limit = pool.get_limit()
        return min(available, max(0, limit - pool.used_bytes())) if limit else available

    @contextlib.contextmanager
    def allocating(self, what: str, remedy: str):
        """Device allocations of `what` inside: running out of memory ends in one line (DeviceError) with
        how much was asked for, how much is free and `remedy`, not CuPy's traceback."""
        try:
            yield
        except self.cupy.cuda.memory.OutOfMemoryError as e:
            size = getattr(e, "_size", None)  # CuPy keeps the request's size there
            raise DeviceError(out_of_memory_line(what, size, self.allocatable_bytes(),
                                                 self.device_free_bytes()[1], remedy)) from None


def out_of_memory_line(what: str, size: int | None, free: int, total: int, remedy: str) -> str:
    """`out of device memory ...`: what, how much (when known), free of total, what would help."""
    asked = f" ({gib(size)} more)" if size else ""
    return f"out of device memory allocating {what}{asked}: {gib(free)} free of {gib(total)}; {remedy}"


def gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"
