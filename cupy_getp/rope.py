"""RoPE with YaRN scaling: the cos/sin tables of one position (spec 2.4).

Computed on the host in float64 and rounded once to float32, for both engines: the GPU engine
uploads these same tables each step (docs/spec.md, numerics), so RoPE inputs are identical on both sides.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from .config import ModelConfig


@functools.lru_cache(maxsize=8)
def _inv_freq_and_concentration(config: ModelConfig) -> tuple[np.ndarray, float]:
    i = np.arange(config.head_dim // 2, dtype=np.float64)
    freq = config.rope_theta ** (2.0 * i / config.head_dim)
    scaling = config.rope_scaling_factor
    if scaling <= 1.0:
        return 1.0 / freq, 1.0
    # YaRN (arXiv:2309.00071): interpolate low frequencies by 1/s, keep high ones, ramp in between.
    concentration = 0.1 * math.log(scaling) + 1.0
    low, high = config.yarn_bounds()
    ramp = np.clip((i - low) / (high - low), 0.0, 1.0)
    mask = 1.0 - ramp
    inv_freq = (1.0 / (scaling * freq)) * (1.0 - mask) + (1.0 / freq) * mask
    return inv_freq, concentration


def rope_cos_sin(config: ModelConfig, pos: int) -> tuple[np.ndarray, np.ndarray]:
    """(cos, sin), each (head_dim/2,) float32, for position `pos`, concentration included."""
    inv_freq, concentration = _inv_freq_and_concentration(config)
    angle = pos * inv_freq
    return ((np.cos(angle) * concentration).astype(np.float32),
            (np.sin(angle) * concentration).astype(np.float32))
