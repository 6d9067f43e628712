"""The `.bin` weight table (spec section 1): names, shapes and order, in one place.

Letters: L layers, H hidden_dim, V vocab_size, E n_experts, I intermediate_dim, D head_dim,
Q = D * (n_attn_heads + 2 * n_kv_heads).
"""

from __future__ import annotations

import math

from ..config import HEADER_SIZE, ModelConfig

# File order. Names are the spec's, used verbatim everywhere (weights, GPU buffers, exporters).
TENSOR_NAMES: tuple[str, ...] = (
    "embedding", "out", "rms_attn_w", "rms_ffn_w", "rms_out_w", "w_qkv", "b_qkv", "w_o", "b_o",
    "attn_sinks", "w_router", "b_router", "w_mlp1", "b_mlp1", "w_mlp2", "b_mlp2",
)

# The MoE expert matrices: stored as BF16 on the device (the one exception to FP32: docs/spec.md).
MOE_WEIGHTS = ("w_mlp1", "w_mlp2")

# Tensors whose leading dimension is the layer.
LAYER_TENSORS = tuple(n for n in TENSOR_NAMES if n not in ("embedding", "out", "rms_out_w"))


def tensor_shapes(c: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Shape of every tensor, in file order."""
    L, H, V, E, I = c.n_layers, c.hidden_dim, c.vocab_size, c.n_experts, c.intermediate_dim
    return {
        "embedding": (V, H),
        "out": (V, H),  # logits = out @ x
        "rms_attn_w": (L, H),
        "rms_ffn_w": (L, H),
        "rms_out_w": (H,),
        "w_qkv": (L, c.qkv_dim, H),  # rows: q heads, then k heads, then v heads
        "b_qkv": (L, c.qkv_dim),
        "w_o": (L, H, c.q_dim),
        "b_o": (L, H),
        "attn_sinks": (L, c.n_attn_heads),
        "w_router": (L, E, H),
        "b_router": (L, E),
        "w_mlp1": (L, E, 2 * I, H),  # rows interleaved: gate = 2j, up = 2j + 1
        "b_mlp1": (L, E, 2 * I),
        "w_mlp2": (L, E, H, I),
        "b_mlp2": (L, E, H),
    }


def n_params(c: ModelConfig) -> int:
    return sum(math.prod(shape) for shape in tensor_shapes(c).values())


def bin_size(c: ModelConfig, bytes_per_weight: int = 4) -> int:
    """Bytes of a `.bin` file: the header, then every weight (4 bytes as float32, 2 as bfloat16)."""
    return HEADER_SIZE + bytes_per_weight * n_params(c)


def moe_params(c: ModelConfig) -> int:
    shapes = tensor_shapes(c)
    return sum(math.prod(shapes[n]) for n in MOE_WEIGHTS)
