"""Helpers shared by the GPU kernel tests: device copies (optionally misaligned), reading back after a
synchronisation, and NaN-poisoned outputs (every element a kernel should write must be written)."""

from __future__ import annotations

import contextlib

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


def random_mxfp4_matrix(rng, shape) -> tuple[np.ndarray, np.ndarray]:
    """Random MXFP4 (blocks, scales) of a matrix of `shape` (..., cols): uniform codes (those past cols 0) and
    scales within a factor 2 of the one that gives values ~ 1/sqrt(cols), as the kernel tests' weights."""
    import math

    *lead, cols = shape
    groups = -(-cols // 32)
    codes = rng.integers(0, 16, (*lead, groups * 32), dtype=np.uint8)
    codes[..., cols:] = 0
    pairs = codes.reshape(*lead, groups, 16, 2)
    middle = 127 + round(math.log2(1 / math.sqrt(cols) / 2.93))  # 2.93: the E2M1 codes' rms
    return pairs[..., 0] | (pairs[..., 1] << 4), rng.integers(middle - 1, middle + 2, (*lead, groups), dtype=np.uint8)


@contextlib.contextmanager
def kernel_settings(kernels, **settings):
    """A context in which `kernels` has these attributes (wgmma=False: the mma.sync kernels; wg_tma: W by TMA or
    by cp.async; wg_splitk: split-K on or off), each set back as it was afterwards."""
    kept = {name: getattr(kernels, name) for name in settings}
    for name, value in settings.items():
        setattr(kernels, name, value)
    try:
        yield
    finally:
        for name, value in kept.items():
            setattr(kernels, name, value)
