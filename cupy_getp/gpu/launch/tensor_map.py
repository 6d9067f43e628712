"""Tensor maps (CUtensorMap) of bf16 weight matrices for the wgmma kernels' TMA producer (gemm_wg_tma_*,
kernels/gemm_wgmma.hip): on wherever the wgmma kernels run and `cuda.bindings` imports (CUPY_GETP_WG_TMA=0
turns them off, =1 insists on them); the same bits as the cp.async kernels, and faster: an H200's one-row qkv
product 24.9 -> 20.0 us, batch-1 getp 188.4 -> 210.8 tok/s (bench/RESULTS.md, fifth session of 2026-11-29).

A map describes W (N, K) bf16, K contiguous, and the box one copy moves: 64 K (128 bytes, the 128-byte swizzle
atom the wgmma descriptors name) x a block's feature rows (128 MB; 64 MB in the half blocks, 192 in the wide
ones), elements outside W read as zeros. It is made on the host by the
driver (`cuda.bindings.driver.cuTensorMapEncodeTiled`, imported only when a map is made: the package is a
dependency of the CUDA extras, never of the CPU tests) and reaches the kernel by value, as a size-one numpy
array of 128 bytes (CuPy passes such an array's bytes as the parameter).

A paired map (the grouped TMA kernels, gemm_wg_tma_grouped*: bf16 experts (E, N, K) as (E N, K) rows) names the
same rows in four dimensions (paired_shape), so that a box lands each row where the cp.async producer's wg_w_slot
puts it: features 2j and 2j + 1 in one thread, as the grouped kernels' SwiGLU and epilogues take them.
"""

from __future__ import annotations

import os
import struct

import numpy as np

WG_TMA_ENV = "CUPY_GETP_WG_TMA"
MAP_BYTES = 128  # sizeof(CUtensorMap)
MAP_DTYPE = np.dtype((np.void, MAP_BYTES))
BOX_K = 64  # bf16 elements along K a copy moves: gemm_wgmma.hip's WG_BK


def wg_tma_enabled() -> bool:
    """Whether the dense wgmma products read W through tensor maps: CUPY_GETP_WG_TMA=1 yes, =0 no, unset where
    the driver's Python bindings (which encode the maps) import."""
    setting = os.environ.get(WG_TMA_ENV, "")
    if setting in ("0", "1"):
        return setting == "1"
    try:
        from cuda.bindings import driver  # noqa: F401
    except ImportError:
        return False
    return True


def tma_eligible(w) -> bool:
    """Whether a tensor map can describe W (N, K): C-contiguous, starting on a 16-byte boundary, rows a
    multiple of 16 bytes (the driver's rules for the address and the row stride)."""
    n, k = w.shape
    return bool(w.flags.c_contiguous) and w.data.ptr % 16 == 0 and (2 * k) % 16 == 0 and n > 0 and k > 0


def paired_eligible(w, n: int) -> bool:
    """Whether a paired map can describe W (rows, K), read in blocks of n rows (an expert's): tma_eligible, and
    n a multiple of 16 (a box starts on a 16-row group)."""
    return tma_eligible(w) and n % 16 == 0 and w.shape[0] % n == 0


def paired_shape(n: int, k: int, box_rows: int) -> tuple[list, list, list]:
    """(sizes, byte strides past the first, box) of the paired map of a bf16 (n, k) matrix, innermost first:
    K; 8 pairs, two rows apart; the 2 rows of a pair; groups of 16 rows. A box of box_rows rows lands row
    16 g + 2 i + q in shared-memory row 16 g + 8 q + i (gemm_wgmma.hip's wg_w_slot: a SwiGLU pair in one thread)."""
    row = 2 * k
    return [k, 8, 2, n // 16], [2 * row, row, 16 * row], [BOX_K, 8, 2, box_rows // 16]


def encode_bf16_map(ptr: int, n: int, k: int, box_rows: int, paired: bool = False) -> np.ndarray:
    """The map of a bf16 (n, k) matrix at device address ptr, boxes of BOX_K x box_rows (paired: paired_shape's
    four dimensions), 128-byte swizzle, zeros outside: a size-one array of MAP_DTYPE."""
    from cuda.bindings import driver

    u64, u32 = driver.cuuint64_t, driver.cuuint32_t
    # sizes innermost first; the strides (bytes) of the dimensions past the first
    sizes, strides, box = paired_shape(n, k, box_rows) if paired else ([k, n], [2 * k], [BOX_K, box_rows])
    err, tensor_map = driver.cuTensorMapEncodeTiled(
        driver.CUtensorMapDataType.CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, len(sizes), ptr,
        [u64(s) for s in sizes], [u64(s) for s in strides], [u32(b) for b in box], [u32(1)] * len(sizes),
        driver.CUtensorMapInterleave.CU_TENSOR_MAP_INTERLEAVE_NONE,
        driver.CUtensorMapSwizzle.CU_TENSOR_MAP_SWIZZLE_128B,
        driver.CUtensorMapL2promotion.CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
        driver.CUtensorMapFloatOOBfill.CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE)  # NONE: out-of-range elements are 0
    if err != driver.CUresult.CUDA_SUCCESS:
        off = "CUPY_GETP_WG_TMA_GROUPED=0" if paired else "CUPY_GETP_WG_TMA=0"
        raise RuntimeError(f"cuTensorMapEncodeTiled of a bf16 ({n}, {k}) matrix, box ({box_rows}, {BOX_K})"
                           f"{', paired' if paired else ''}: {err} ({off} reads these weights without a map)")
    return map_argument(struct.pack("<16Q", *(int(word) for word in tensor_map.opaque)))


def map_argument(raw: bytes) -> np.ndarray:
    """128 map bytes as the kernel argument CuPy passes by value."""
    if len(raw) != MAP_BYTES:
        raise ValueError(f"a tensor map has {MAP_BYTES} bytes, not {len(raw)}")
    return np.frombuffer(raw, MAP_DTYPE).copy()


class TensorMaps:
    """Maps made once per (address, shape, box, paired or not): everything a map encodes, so a cached map stays
    right even where a freed weight's address is reused by another of the same shape. Host work only (no device
    call): safe while a CUDA graph is captured."""

    def __init__(self, encode=encode_bf16_map):
        self._encode = encode
        self._maps: dict[tuple[int, int, int, int, bool], np.ndarray] = {}

    def of(self, w, box_rows: int, paired: bool = False) -> np.ndarray:
        n, k = w.shape
        key = (int(w.data.ptr), n, k, box_rows, paired)
        found = self._maps.get(key)
        if found is None:
            found = self._maps[key] = self._encode(*key)
        return found

    def __len__(self) -> int:
        return len(self._maps)
