"""Helpers shared by the GPU kernel tests: device copies (optionally misaligned), reading back after a
synchronisation, and NaN-poisoned outputs (every element a kernel should write must be written)."""

from __future__ import annotations

import numpy as np


def to_device(a, offset_bytes: int = 0):
    """A device copy of `a`, C-contiguous; offset_bytes > 0 puts it that far past a 256-byte boundary."""
    import cupy

    if not offset_bytes:
        return cupy.asarray(a)
    pad = offset_bytes // a.itemsize
    buf = cupy.empty(a.size + pad, a.dtype)
    view = buf[pad:].reshape(a.shape)
    view.set(np.ascontiguousarray(a))
    assert view.flags.c_contiguous and view.data.ptr % 16 == offset_bytes % 16
    return view


def host(a, gpu):
    gpu[0].synchronize("test")
    return a.get()


def poisoned(shape, dtype=np.float32):
    import cupy

    return cupy.full(shape, np.nan, dtype)
