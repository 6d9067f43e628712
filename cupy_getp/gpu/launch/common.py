"""What every launch helper shares: argument checks, grid arithmetic, exact scalar types.

Scalars must reach a kernel as exact numpy types (a bare Python float arrives as 0.0 in a `float`
parameter), arrays C-contiguous (kernels ignore strides). Launch helpers run inside CUDA-graph
capture too, so nothing here may synchronise or allocate. Every check raises KernelArgumentError (or
KernelDtypeError) with a message, never a bare `assert` (gone under `python -O`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...errors import KernelArgumentError, KernelDtypeError
from ..constants import MXFP4_BLOCK

F32, BF16, I32 = np.float32, np.uint16, np.int32
# A KV cache's dtype -> its kernels' name suffix (rope_kv_write_*, attn_rows_partial_*): FP32, or BF16 bit patterns.
KV_CACHE_SUFFIX = {np.dtype(F32): "f32", np.dtype(BF16): "bf16kv"}


class DeviceSms:
    """A launch mixin's `self.sm_count()`: the device's multiprocessors (compute units on ROCm), read once; launch
    helpers size grids by it."""

    def sm_count(self) -> int:
        count = getattr(self, "_sm_count", None)
        if count is None:  # a device attribute, not device data: fine during graph capture
            count = self._sm_count = int(self.device.cuda_device.attributes["MultiProcessorCount"])
        return count


@dataclass(frozen=True)
class Mxfp4Matrix:
    """Expert weights kept in MXFP4 on the device, as the checkpoints store them: blocks (..., rows, G, 16)
    code bytes (E2M1, low nibble first) and scales (..., rows, G) E8M0 bytes, G = ceil(cols / 32), codes past
    `cols` zero; kernels widen code x 2^(scale - 127), which is exactly a BF16 value."""

    blocks: object
    scales: object
    cols: int

    @property
    def shape(self) -> tuple:
        return (*self.scales.shape[:-1], self.cols)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def __getitem__(self, index) -> Mxfp4Matrix:  # leading dimensions (layer, expert, rows) only
        return Mxfp4Matrix(self.blocks[index], self.scales[index], self.cols)


def _check(name: str, array, dtype, shape=None) -> None:
    if array.dtype != dtype:
        raise KernelDtypeError(f"{name}: dtype {array.dtype}, expected {np.dtype(dtype)}")
    if shape is not None and tuple(array.shape) != tuple(shape):
        raise KernelArgumentError(f"{name}: shape {tuple(array.shape)}, expected {tuple(shape)}")
    if not array.flags.c_contiguous:
        raise KernelArgumentError(f"{name}: must be C-contiguous (kernels ignore strides)")


def _require(condition: bool, message: str) -> None:
    """A launch argument check that is not a dtype or exact shape: KernelArgumentError(message) when false."""
    if not condition:
        raise KernelArgumentError(message)


def _aligned(*arrays, multiple: int = 16) -> bool:
    return all(a.data.ptr % multiple == 0 for a in arrays)


def _blocks(n: int, per_block: int) -> int:
    return (n + per_block - 1) // per_block


def _expert_weights(name: str, w) -> tuple[str, tuple, object]:
    """(kernel name suffix, the weight's kernel arguments, the array vector loads read) of an expert matrix:
    bf16 bits, or an `Mxfp4Matrix` (codes and scales, whole rows of blocks)."""
    if isinstance(w, Mxfp4Matrix):
        _check(f"{name}.scales", w.scales, np.uint8)
        _check(f"{name}.blocks", w.blocks, np.uint8, (*w.scales.shape, MXFP4_BLOCK // 2))
        _require(w.scales.shape[-1] == -(-w.cols // MXFP4_BLOCK),
                 f"{name}: {w.scales.shape[-1]} MXFP4 blocks a row for {w.cols} columns")
        return "mxfp4w", (w.blocks, w.scales), w.blocks
    _check(name, w, BF16)
    return "bf16w", (w,), w


def _grouped_suffix(kind: str) -> str:
    """The grouped kernels' name suffix for `_expert_weights`' kind: none for bf16 experts (their kernels keep
    their names), _mxfp4w for MXFP4."""
    return "" if kind == "bf16w" else f"_{kind}"


def kv_cache_suffix(cache_dtype) -> str:
    """The kernels' name suffix of a KV cache's dtype: f32 (float32) or bf16kv (uint16 bit patterns)."""
    suffix = KV_CACHE_SUFFIX.get(np.dtype(cache_dtype))
    _require(suffix is not None, f"KV cache: dtype {np.dtype(cache_dtype)}, expected float32 or uint16 (bf16)")
    return suffix


def check_kv_caches(key_cache, value_cache, kv_dim: int) -> None:
    """Keys and values (slots, C, kv_dim), both float32 or both bf16 bits (uint16), C-contiguous."""
    kv_cache_suffix(key_cache.dtype)
    _check("key_cache", key_cache, key_cache.dtype)
    _require(key_cache.ndim == 3 and key_cache.shape[2] == kv_dim,
             f"key_cache: shape {tuple(key_cache.shape)}, expected (slots, C, {kv_dim})")
    _check("value_cache", value_cache, key_cache.dtype, key_cache.shape)
