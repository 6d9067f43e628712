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

The MoE matrices (`w_mlp1`, `w_mlp2`) are MXFP4 values by default, as the published ones are
(`mxfp4_experts`; False gives the uniform values rounded to bfloat16 of earlier versions): each row is
cut into blocks of 32 (the last one padded with code 0), element p of the padded rows takes the E2M1
code  lowbias32(lowbias32(p) ^ key) >> 28  and block b the E8M0 scale  exponent + (h & 1) - ((h >> 1) & 1),
h = lowbias32(lowbias32(b) ^ scale_key), so any slice is still generated alone, on the host or the
device. `exponent` puts the values' spread near the uniform values' (scale / sqrt(3)).

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
from .safetensors import FP4_VALUES, MXFP4_BLOCK, dequantize_mxfp4
from .weights import FLOAT32, flat_range, per_layer_indices

DEFAULT_SEED = 42

_M32 = 0xFFFFFFFF
_M64 = (1 << 64) - 1
_MXFP4_SCALE_SALT = 0x5CA1AB1E  # the scales' stream key differs from the codes'


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


@dataclass(frozen=True)
class Mxfp4Stream:
    """How one (tensor, layer) of MXFP4 experts is generated (the module docstring's formula)."""

    key: int  # codes: element p of the rows padded to whole blocks
    scale_key: int  # E8M0 scales: block b
    exponent: int  # the middle scale's E8M0 bits
    cols: int  # values per row (the tensor's last axis)

    @property
    def blocks_per_row(self) -> int:
        return -(-self.cols // MXFP4_BLOCK)


def mxfp4_exponent(init: Init) -> int:
    """E8M0 bits whose values' root mean square is nearest (in powers of two) the uniform values'
    (scale / sqrt(3)): E2M1 codes have an rms of ~2.93, the scale offsets -1, 0, 0, +1 multiply the
    variance by 1.5625 on average."""
    fp4_rms = float(np.sqrt(np.mean(FP4_VALUES.astype(np.float64) ** 2)))
    target = init.scale / math.sqrt(3.0) / (fp4_rms * 1.25)
    return 127 + round(math.log2(target))


def mxfp4_blocks(stream: Mxfp4Stream, row0: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows row0..row0+rows as MXFP4: ((rows, G, 16) uint8 codes, low nibble first, (rows, G) uint8 scales)."""
    groups = stream.blocks_per_row
    width = groups * MXFP4_BLOCK
    if (row0 + rows) * width > 1 << 32:
        raise ValueError("synthetic MXFP4 tensor larger than 2^32 elements per layer")
    p = np.arange(row0 * width, (row0 + rows) * width, dtype=np.uint32)
    codes = (lowbias32(lowbias32(p) ^ np.uint32(stream.key)) >> np.uint32(28)).astype(np.uint8)
    codes = codes.reshape(rows, width)
    codes[:, stream.cols:] = 0  # the padding of a partial last block
    pairs = codes.reshape(rows, groups, MXFP4_BLOCK // 2, 2)
    blocks = pairs[..., 0] | (pairs[..., 1] << np.uint8(4))
    b = np.arange(row0 * groups, (row0 + rows) * groups, dtype=np.uint32)
    h = lowbias32(lowbias32(b) ^ np.uint32(stream.scale_key)).astype(np.int64)
    scales = (stream.exponent + (h & 1) - ((h >> 1) & 1)).astype(np.uint8).reshape(rows, groups)
    return blocks, scales


def mxfp4_values(stream: Mxfp4Stream, start: int, count: int) -> np.ndarray:
    """Elements start..start+count of the tensor (C order, unpadded), float32, through the one MXFP4
    decoder (`dequantize_mxfp4`)."""
    cols = stream.cols
    row0, row1 = start // cols, -(-(start + count) // cols)
    rows = dequantize_mxfp4(*mxfp4_blocks(stream, row0, row1 - row0))[:, :cols]  # (rows, cols)
    first = start - row0 * cols
    return rows.reshape(-1)[first:first + count]


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
                 bf16_exact: bool = True, mxfp4_experts: bool = True):
        self.config = config
        self.seed = checked_seed(seed)
        self.bf16_exact = bf16_exact
        self.mxfp4_experts = mxfp4_experts
        self.shapes = tensor_shapes(config)
        self.inits = tensor_inits(config)
        label = f"preset {name}" if name else "synthetic model"
        exact = "" if bf16_exact else ", float32 values outside the MoE"
        experts = "" if mxfp4_experts else ", bf16 experts not MXFP4"
        self.description = f"{label} (random weights, seed {seed}{exact}{experts})"

    def read(self, name: str, index: tuple = ()) -> np.ndarray:
        shape = self.shapes[name]
        layered = name in LAYER_TENSORS
        parts = per_layer_indices(index, shape[0]) if layered else None
        if parts is not None:  # one stream per layer: stack them
            return np.stack([self.read(name, part) for part in parts])
        layer = index[0] if layered else None
        start, count, out_shape = flat_range(shape[1:] if layered else shape, index[1:] if layered else index)
        if self.is_mxfp4(name):
            return mxfp4_values(self.mxfp4_stream(name, layer), start, count).reshape(out_shape)
        values = uniform_values(stream_key(self.seed, name, layer), start, count, self.inits[name])
        if self.rounds_to_bf16(name):
            values = round_to_bf16(values)
        return values.reshape(out_shape)

    def read_mxfp4(self, name: str, index: tuple = ()) -> tuple[np.ndarray, np.ndarray] | None:
        """`Weights.mxfp4`: the codes and scales `read` decodes, for whole rows (index on the leading axes)."""
        if not self.is_mxfp4(name):
            return None
        parts = per_layer_indices(index, self.config.n_layers)
        if parts is not None:
            pairs = [self.read_mxfp4(name, part) for part in parts]
            return np.stack([b for b, _ in pairs]), np.stack([s for _, s in pairs])
        shape = self.shapes[name]
        if len(index) > len(shape) - 1:
            raise ValueError(f"read_mxfp4: index {index} goes into the rows of {name}; MXFP4 comes in whole rows")
        row0, rows, out_rows = flat_range(shape[1:-1], tuple(index[1:]))
        blocks, scales = mxfp4_blocks(self.mxfp4_stream(name, index[0]), row0, rows)
        return blocks.reshape(*out_rows, *blocks.shape[1:]), scales.reshape(*out_rows, scales.shape[1])

    def is_mxfp4(self, name: str) -> bool:
        return self.mxfp4_experts and name in MOE_WEIGHTS

    def mxfp4_stream(self, name: str, layer: int) -> Mxfp4Stream:
        key = stream_key(self.seed, name, layer)
        return Mxfp4Stream(key, _lowbias32_int(key ^ _MXFP4_SCALE_SALT), mxfp4_exponent(self.inits[name]),
                           self.shapes[name][-1])

    def rounds_to_bf16(self, name: str) -> bool:
        return self.bf16_exact or name in MOE_WEIGHTS


def synthetic_store(preset_name: str, seed: int = DEFAULT_SEED) -> SyntheticStore:
    return SyntheticStore(preset(preset_name), seed, name=preset_name)
