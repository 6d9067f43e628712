"""Test helpers: write gpt-oss checkpoint directories (Hugging Face or openai layout, plain or MXFP4
experts) from spec-named float32 arrays, with a minimal safetensors writer (BF16 needs one: numpy
has no bfloat16, so `safetensors.numpy.save_file` cannot write it)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from cupy_getp.bf16 import f32_to_bf16
from cupy_getp.config import ModelConfig

_CODES = {np.dtype("<f4"): "F32", np.dtype("u1"): "U8", np.dtype("<f2"): "F16"}


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], bf16: tuple[str, ...] = ()) -> None:
    """Tensors named in `bf16` are float32 arrays stored as BF16 (round to nearest even)."""
    header, chunks, offset = {}, [], 0
    for name, array in tensors.items():
        if name in bf16:
            data, code = f32_to_bf16(np.asarray(array, np.float32)), "BF16"
        else:
            data = np.ascontiguousarray(array)
            code = _CODES[data.dtype]
        raw = data.tobytes()
        header[name] = {"dtype": code, "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob + b"".join(chunks))


def random_mxfp4(rng, n_experts: int, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Random codes (E, rows, cols/32, 16) and exponents around 2^-6, for weights of O(0.1)."""
    blocks = rng.integers(0, 256, (n_experts, rows, cols // 32, 16), dtype=np.uint8)
    scales = rng.integers(119, 124, (n_experts, rows, cols // 32), dtype=np.uint8)
    return blocks, scales


def hf_tensors(w: dict[str, np.ndarray], c: ModelConfig, mxfp4: dict | None = None) -> dict[str, np.ndarray]:
    """Spec tensors -> Hugging Face names; plain experts stored (E, in, out); `mxfp4` maps w_mlp1 /
    w_mlp2 to (blocks, scales) stored instead."""
    t = {"model.embed_tokens.weight": w["embedding"], "lm_head.weight": w["out"], "model.norm.weight": w["rms_out_w"]}
    q, kv = c.q_dim, c.kv_dim
    for l in range(c.n_layers):
        p = f"model.layers.{l}."
        t[p + "input_layernorm.weight"] = w["rms_attn_w"][l]
        t[p + "post_attention_layernorm.weight"] = w["rms_ffn_w"][l]
        for name, rows in (("q", slice(0, q)), ("k", slice(q, q + kv)), ("v", slice(q + kv, q + 2 * kv))):
            t[p + f"self_attn.{name}_proj.weight"] = w["w_qkv"][l][rows]
            t[p + f"self_attn.{name}_proj.bias"] = w["b_qkv"][l][rows]
        t[p + "self_attn.o_proj.weight"] = w["w_o"][l]
        t[p + "self_attn.o_proj.bias"] = w["b_o"][l]
        t[p + "self_attn.sinks"] = w["attn_sinks"][l]
        t[p + "mlp.router.weight"] = w["w_router"][l]
        t[p + "mlp.router.bias"] = w["b_router"][l]
        for ours, theirs in (("w_mlp1", "gate_up_proj"), ("w_mlp2", "down_proj")):
            if mxfp4:
                t[p + f"mlp.experts.{theirs}_blocks"], t[p + f"mlp.experts.{theirs}_scales"] = \
                    (a[l] for a in mxfp4[ours])
            else:
                t[p + f"mlp.experts.{theirs}"] = np.ascontiguousarray(np.swapaxes(w[ours][l], -1, -2))
        t[p + "mlp.experts.gate_up_proj_bias"] = w["b_mlp1"][l]
        t[p + "mlp.experts.down_proj_bias"] = w["b_mlp2"][l]
    return {k: np.ascontiguousarray(v) for k, v in t.items()}


def openai_tensors(w: dict[str, np.ndarray], c: ModelConfig, mxfp4: dict | None = None) -> dict[str, np.ndarray]:
    t = {"embedding.weight": w["embedding"], "unembedding.weight": w["out"], "norm.scale": w["rms_out_w"]}
    for l in range(c.n_layers):
        p = f"block.{l}."
        t.update({p + "attn.norm.scale": w["rms_attn_w"][l], p + "attn.qkv.weight": w["w_qkv"][l],
                  p + "attn.qkv.bias": w["b_qkv"][l], p + "attn.sinks": w["attn_sinks"][l],
                  p + "attn.out.weight": w["w_o"][l], p + "attn.out.bias": w["b_o"][l],
                  p + "mlp.norm.scale": w["rms_ffn_w"][l], p + "mlp.gate.weight": w["w_router"][l],
                  p + "mlp.gate.bias": w["b_router"][l], p + "mlp.mlp1_bias": w["b_mlp1"][l],
                  p + "mlp.mlp2_bias": w["b_mlp2"][l]})
        for ours, theirs in (("w_mlp1", "mlp1_weight"), ("w_mlp2", "mlp2_weight")):
            if mxfp4:
                t[p + f"mlp.{theirs}.blocks"], t[p + f"mlp.{theirs}.scales"] = (a[l] for a in mxfp4[ours])
            else:
                t[p + f"mlp.{theirs}"] = w[ours][l]
    return {k: np.ascontiguousarray(v) for k, v in t.items()}


def hf_config(c: ModelConfig, **extra) -> dict:
    rope = {"rope_type": "yarn", "factor": c.rope_scaling_factor, "beta_fast": 32.0, "beta_slow": 1.0,
            "truncate": False, "original_max_position_embeddings": c.initial_context_length,
            "rope_theta": c.rope_theta} if c.rope_scaling_factor > 1 else {"rope_type": "default",
                                                                            "rope_theta": c.rope_theta}
    config = {
        "architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss", "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_dim, "num_local_experts": c.n_experts, "num_experts_per_tok": c.experts_per_token,
        "intermediate_size": c.intermediate_dim, "num_hidden_layers": c.n_layers, "head_dim": c.head_dim,
        "num_attention_heads": c.n_attn_heads, "num_key_value_heads": c.n_kv_heads,
        "max_position_embeddings": c.seq_len, "sliding_window": c.sliding_window, "rms_norm_eps": 1e-5,
        "rope_parameters": rope, "swiglu_limit": c.swiglu_limit, "attention_bias": True,
        "layer_types": ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(c.n_layers)],
    }
    return config | extra


def openai_config(c: ModelConfig) -> dict:
    return {"num_hidden_layers": c.n_layers, "num_experts": c.n_experts, "experts_per_token": c.experts_per_token,
            "vocab_size": c.vocab_size, "hidden_size": c.hidden_dim, "intermediate_size": c.intermediate_dim,
            "swiglu_limit": c.swiglu_limit, "head_dim": c.head_dim, "num_attention_heads": c.n_attn_heads,
            "num_key_value_heads": c.n_kv_heads, "sliding_window": c.sliding_window,
            "initial_context_length": c.initial_context_length, "rope_theta": c.rope_theta,
            "rope_scaling_factor": c.rope_scaling_factor, "rope_ntk_alpha": 1.0, "rope_ntk_beta": 32.0}


def write_checkpoint(directory: Path, tensors: dict[str, np.ndarray], config: dict, bf16: tuple[str, ...] = (),
                     shards: int = 1) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    names = list(tensors)
    for i in range(shards):
        part = {n: tensors[n] for n in names[i::shards]}
        file = "model.safetensors" if shards == 1 else f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        write_safetensors(directory / file, part, tuple(n for n in bf16 if n in part))
    return directory
