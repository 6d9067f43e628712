"""Synthetic models: random weights of a preset's shape, deterministic from a seed, needing no file.

Every weight is a pure function of (seed, tensor, layer, element index): a counter-based hash, not a
PRNG stream. So any slice can be generated on its own (an expert of a 20b layer without the rest of
the model), and `kernels/synthetic.hip` generates exactly the same values directly on the device,
where a 20b model in float32 would not fit on disk.

Value of element i of (tensor, layer):  h = lowbias32(lowbias32(i) ^ key(seed, tensor, layer)),
u = (h >> 8) * 2^-23 - 1 in [-1, 1),  w = u * scale + offset  (float32 operations, each rounded).
Every value is then rounded to bfloat16 (`bf16_exact`, the default): published gpt-oss checkpoints store
their MoE matrices in MXFP4 and everything else in bfloat16, so every published weight is exactly a
bfloat16 value, and the synthetic models keep that property (the GPU engine then stores the dense
matrices as BF16 losslessly and runs them on tensor cores). `bf16_exact=False` keeps full float32
values outside the MoE matrices, for the FP32 fallback's tests.

Scales keep activations O(1) through any number of layers and 2048 positions: projections use
sqrt(3 / fan_in) (unit variance out for unit variance in), residual branches are halved, and the
unembedding gives logits a standard deviation of about 3 so greedy decoding depends on the context.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..bf16 import round_to_bf16
from ..config import ModelConfig, preset
from ..errors import ArgumentError, GetpError
from .layout import LAYER_TENSORS, MOE_WEIGHTS, TENSOR_NAMES, tensor_shapes
from .weights import FLOAT32, flat_range, per_layer_indices

DEFAULT_SEED = 42

_M32 = 0xFFFFFFFF
_M64 = (1 << 64) - 1


@dataclass(frozen=True)
class Init:
    scale: float
    offset: float = 0.0


def tensor_inits(c: ModelConfig) -> dict[str, Init]:
    def fan_in(n: int) -> float:
        return math.sqrt(3.0 / n)

    return {
        "embedding": Init(1.0),
        "out": Init(3.0 * fan_in(c.hidden_dim)),
        "rms_attn_w": Init(0.2, 1.0),
        "rms_ffn_w": Init(0.2, 1.0),
        "rms_out_w": Init(0.2, 1.0),
        "w_qkv": Init(fan_in(c.hidden_dim)),
        "b_qkv": Init(0.2),
        "w_o": Init(0.5 * fan_in(c.q_dim)),
        "b_o": Init(0.1),
        "attn_sinks": Init(2.0),
        "w_router": Init(fan_in(c.hidden_dim)),
        "b_router": Init(0.2),
        "w_mlp1": Init(fan_in(c.hidden_dim)),
        "b_mlp1": Init(0.2),
        "w_mlp2": Init(0.5 * fan_in(c.intermediate_dim)),
        "b_mlp2": Init(0.1),
    }


def _lowbias32_int(x: int) -> int:
    """Chris Wellons' lowbias32 integer hash on a Python int (for keys)."""
    x &= _M32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & _M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & _M32
    x ^= x >> 16
    return x


def lowbias32(x: np.ndarray) -> np.ndarray:
    """lowbias32 on a uint32 array (wrapping multiplies), as in kernels/synthetic.hip."""
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))


def stream_key(seed: int, tensor: str, layer: int | None) -> int:
    """The 32-bit key of one (tensor, layer) stream; `layer` is None for tensors without layers."""
    k = _lowbias32_int((seed & _M32) ^ _lowbias32_int(seed >> 32))
    k = _lowbias32_int(k ^ ((TENSOR_NAMES.index(tensor) + 1) * 0x9E3779B9))
    return _lowbias32_int(k ^ ((0 if layer is None else layer + 1) * 0x85EBCA6B))


def uniform_values(key: int, start: int, count: int, init: Init) -> np.ndarray:
    """Elements start..start+count of a stream, float32 (before any bfloat16 rounding)."""
    if start + count > 1 << 32:
        raise ValueError("synthetic tensor slice larger than 2^32 elements per layer")
    i = np.arange(start, start + count, dtype=np.uint32)
    h = lowbias32(lowbias32(i) ^ np.uint32(key))
    u = (h >> np.uint32(8)).astype(np.float32) * np.float32(2.0 ** -23) - np.float32(1.0)
    w = u * np.float32(init.scale)
    return w + np.float32(init.offset) if init.offset else w


def checked_seed(seed) -> int:
    """A weights seed as `-s` takes a sampler's: an integer in 0..2^64-1, never silently wrapped."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise ArgumentError(f"the weights seed must be an integer, got {type(seed).__name__} {seed!r:.40}")
    if not 0 <= seed <= _M64:
        raise GetpError(f"the weights seed (--weights-seed, random-model --seed) must be in 0..{_M64}, got {seed}")
    return int(seed)


class SyntheticStore:
    """A `TensorStore` that computes weights on demand from (config, seed)."""

    storage_dtype = FLOAT32

    def __init__(self, config: ModelConfig, seed: int = DEFAULT_SEED, name: str | None = None,
                 bf16_exact: bool = True):
        self.config = config
        self.seed = checked_seed(seed)
        self.bf16_exact = bf16_exact
        self.shapes = tensor_shapes(config)
        self.inits = tensor_inits(config)
        label = f"preset {name}" if name else "synthetic model"
        exact = "" if bf16_exact else ", float32 values outside the MoE"
        self.description = f"{label} (random weights, seed {seed}{exact})"

    def read(self, name: str, index: tuple = ()) -> np.ndarray:
        shape = self.shapes[name]
        layered = name in LAYER_TENSORS
        parts = per_layer_indices(index, shape[0]) if layered else None
        if parts is not None:  # one stream per layer: stack them
            return np.stack([self.read(name, part) for part in parts])
        layer = index[0] if layered else None
        start, count, out_shape = flat_range(shape[1:] if layered else shape, index[1:] if layered else index)
        values = uniform_values(stream_key(self.seed, name, layer), start, count, self.inits[name])
        if self.rounds_to_bf16(name):
            values = round_to_bf16(values)
        return values.reshape(out_shape)


    def rounds_to_bf16(self, name: str) -> bool:
        return self.bf16_exact or name in MOE_WEIGHTS


def synthetic_store(preset_name: str, seed: int = DEFAULT_SEED) -> SyntheticStore:
    return SyntheticStore(preset(preset_name), seed, name=preset_name)
