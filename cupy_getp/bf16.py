"""bfloat16 stored as uint16 bit patterns, on the host.

The same bit tricks as `kernels/common.h` (`f32_to_bf16_rne`, `bf16_to_f32`), so host-converted and
device-converted weights are identical bit for bit.
"""

from __future__ import annotations

import numpy as np


def f32_to_bf16(a: np.ndarray) -> np.ndarray:
    """Round float32 to bfloat16 (round-to-nearest-even); NaN stays NaN (quiet, sign kept)."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    rounded = (u + (np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1)))) >> np.uint32(16)
    nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    # Rounding could carry a NaN's payload into the exponent and sign; keep the top bits, set quiet.
    quiet_nan = (u >> np.uint32(16)) | np.uint32(0x0040)
    return np.where(nan, quiet_nan, rounded).astype(np.uint16)


def bf16_to_f32(h: np.ndarray) -> np.ndarray:
    """Exact widening of bfloat16 bit patterns to float32."""
    return (np.asarray(h, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


def round_to_bf16(a: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest bfloat16, as float32."""
    return bf16_to_f32(f32_to_bf16(a))
