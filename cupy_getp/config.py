"""`ModelConfig`: the 60-byte `.bin` header as a frozen dataclass, plus the named presets.

Field names and order are the header's (spec section 1), so `ModelConfig(*struct.unpack(...))` and
`ModelConfig(**dict)` both build one. Derived sizes are properties.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from dataclasses import dataclass

from .errors import CheckpointError

# 11 int32, then rope_theta f32, rope_scaling_factor f32, sliding_window i32, swiglu_limit f32.
HEADER_FORMAT = "<11iffif"
HEADER_SIZE = struct.calcsize(HEADER_FORMAT)  # 60 bytes

# YaRN constants of the original runtime (spec 2.4).
NTK_ALPHA = 1.0
NTK_BETA = 32.0


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    hidden_dim: int
    n_experts: int
    experts_per_token: int
    intermediate_dim: int
    n_layers: int
    head_dim: int
    n_attn_heads: int
    n_kv_heads: int
    seq_len: int
    initial_context_length: int
    rope_theta: float
    rope_scaling_factor: float
    sliding_window: int
    swiglu_limit: float

    # -- derived sizes ------------------------------------------------------------------------------
    @property
    def q_dim(self) -> int:
        return self.head_dim * self.n_attn_heads

    @property
    def kv_dim(self) -> int:
        return self.head_dim * self.n_kv_heads

    @property
    def qkv_dim(self) -> int:
        return self.q_dim + 2 * self.kv_dim

    @property
    def kv_group(self) -> int:
        """Query heads sharing one kv head."""
        return self.n_attn_heads // self.n_kv_heads

    def uses_sliding_window(self, layer: int) -> bool:
        """Even layers attend to the last `sliding_window` positions only (spec 2.6)."""
        return self.sliding_window > 0 and layer % 2 == 0

    # -- header -------------------------------------------------------------------------------------
    def to_header(self) -> bytes:
        return struct.pack(HEADER_FORMAT, *dataclasses.astuple(self))

    @classmethod
    def from_header(cls, data: bytes, source: str = "header") -> ModelConfig:
        if len(data) < HEADER_SIZE:
            raise CheckpointError(f"{source}: {len(data)} bytes, shorter than the {HEADER_SIZE}-byte header")
        config = cls(*struct.unpack(HEADER_FORMAT, data[:HEADER_SIZE]))
        config.validate(source)
        return config

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    # -- validation ---------------------------------------------------------------------------------
    def validate(self, source: str = "config") -> ModelConfig:
        """Raise CheckpointError naming the first field that no gpt-oss runtime could use."""
        for name in ("vocab_size", "hidden_dim", "n_experts", "experts_per_token", "intermediate_dim",
                     "n_layers", "head_dim", "n_attn_heads", "n_kv_heads", "seq_len", "initial_context_length"):
            value = getattr(self, name)
            if not 0 < value <= 1 << 24:
                raise CheckpointError(f"{source}: invalid header: {name} = {value} (must be in 1..{1 << 24})")
        if self.head_dim % 2:
            raise CheckpointError(f"{source}: invalid header: head_dim = {self.head_dim} must be even (RoPE pairs)")
        if self.n_attn_heads % self.n_kv_heads:
            raise CheckpointError(f"{source}: invalid header: n_attn_heads = {self.n_attn_heads} is not a multiple "
                                  f"of n_kv_heads = {self.n_kv_heads}")
        if self.experts_per_token > self.n_experts:
            raise CheckpointError(f"{source}: invalid header: experts_per_token = {self.experts_per_token} > "
                                  f"n_experts = {self.n_experts}")
        if self.sliding_window < 0:
            raise CheckpointError(f"{source}: invalid header: sliding_window = {self.sliding_window} < 0")
        for name in ("rope_theta", "rope_scaling_factor", "swiglu_limit"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise CheckpointError(f"{source}: invalid header: {name} = {value} (must be finite and > 0)")
        if self.rope_theta <= 1:
            raise CheckpointError(f"{source}: invalid header: rope_theta = {self.rope_theta} (must be > 1)")
        if self.rope_scaling_factor > 1:
            low, high = self.yarn_bounds()
            half = self.head_dim / 2
            # The original runtime asserts this; transformers clamps instead (spec section 2).
            if not 0 < low < high < half - 1:
                raise CheckpointError(f"{source}: invalid header: YaRN needs 0 < low < high < head_dim/2 - 1, "
                                      f"got low = {low:.3f}, high = {high:.3f}, head_dim/2 - 1 = {half - 1:g}")
        return self

    def yarn_bounds(self) -> tuple[float, float]:
        """(low, high) dimension indices of the YaRN ramp (spec 2.4)."""
        half = self.head_dim / 2
        icl = self.initial_context_length
        log_theta = math.log(self.rope_theta)
        low = half * math.log(icl / (NTK_BETA * 2 * math.pi)) / log_theta
        high = half * math.log(icl / (NTK_ALPHA * 2 * math.pi)) / log_theta
        return low, high


def _preset(**changes) -> ModelConfig:
    base = ModelConfig(
        vocab_size=201088, hidden_dim=2880, n_experts=32, experts_per_token=4, intermediate_dim=2880,
        n_layers=24, head_dim=64, n_attn_heads=64, n_kv_heads=8, seq_len=2048, initial_context_length=4096,
        rope_theta=150000.0, rope_scaling_factor=32.0, sliding_window=128, swiglu_limit=7.0,
    )
    return base.replace(**changes).validate("preset")


PRESETS: dict[str, ModelConfig] = {
    "7m": _preset(hidden_dim=32, intermediate_dim=64, n_layers=2, head_dim=32, n_attn_heads=2, n_kv_heads=1),
    "20b": _preset(),
    "120b": _preset(n_layers=36, n_experts=128),
}


def preset(name: str) -> ModelConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise CheckpointError(f"unknown preset {name!r} (expected one of {', '.join(PRESETS)})") from None
