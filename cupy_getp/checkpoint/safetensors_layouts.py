"""The two published gpt-oss layouts, each as: config.json -> ModelConfig fields, and spec tensor name
(+ layer, + index within the layer) -> float32 array.

openai original: `block.N.attn.qkv.weight`, `block.N.mlp.mlp1_weight.blocks/.scales` (MXFP4),
`unembedding.weight`, ... already in the spec's shapes (experts (E, out, in), mlp1 rows interleaved).
Hugging Face: `model.layers.N.self_attn.q_proj.weight`, ...: q/k/v are concatenated, and plain experts
are stored (E, in, out) and transposed here; MXFP4 experts are (E, out, in/32, 16) like openai's.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..errors import CheckpointError
from .layout import MOE_WEIGHTS
from .safetensors import TensorDirectory

DEFAULT_SEQ_LEN = 2048  # the original runtime's exports (docs/spec.md); override with seq_len=...


# -- config.json: every key either layout reads, with its JSON type ---------------------------------------
_INT, _NUMBER, _BOOL, _STR, _OBJECT, _STRINGS = "an integer", "a number", "true or false", "a string", "an object", \
    "a list of strings"
CONFIG_KEYS = {
    **dict.fromkeys(("vocab_size", "hidden_size", "num_experts", "num_local_experts", "experts_per_token",
                     "num_experts_per_tok", "intermediate_size", "num_hidden_layers", "head_dim",
                     "num_attention_heads", "num_key_value_heads", "initial_context_length", "sliding_window",
                     "max_position_embeddings"), _INT),
    **dict.fromkeys(("rope_theta", "rope_scaling_factor", "swiglu_limit", "rope_ntk_alpha", "rope_ntk_beta",
                     "rms_norm_eps"), _NUMBER),
    "rope_parameters": _OBJECT, "rope_scaling": _OBJECT, "layer_types": _STRINGS,
}
ROPE_KEYS = {
    "rope_type": _STR, "type": _STR, "rope_theta": _NUMBER, "factor": _NUMBER, "original_max_position_embeddings": _INT,
    "truncate": _BOOL, "beta_fast": _NUMBER, "beta_slow": _NUMBER, "attention_factor": _NUMBER, "mscale": _NUMBER,
    "mscale_all_dim": _NUMBER,
}
# Keys Hugging Face writes as null to mean "not set"; the layouts read null as absent.
NULLABLE = {"sliding_window", "rope_parameters", "rope_scaling", "head_dim", "layer_types", "max_position_embeddings",
            "attention_factor", "mscale", "mscale_all_dim"}


def check_config_json(cfg, source: str) -> dict:
    """`cfg` if every key the layouts read has its JSON type (a layer count 24, not 24.5 or "24");
    else CheckpointError naming the file and the field. The one place config.json is type-checked."""
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{source}: the config must be a JSON object, got {_json_type(cfg)}")
    _check_keys(cfg, CONFIG_KEYS, source, "")
    for key in ("rope_parameters", "rope_scaling"):
        if isinstance(cfg.get(key), dict):
            _check_keys(cfg[key], ROPE_KEYS, source, f"{key}.")
    return cfg


def _check_keys(values: dict, types: dict[str, str], source: str, prefix: str) -> None:
    for key, kind in types.items():
        if key not in values or (values[key] is None and key in NULLABLE):
            continue
        if not _has_type(values[key], kind):
            raise CheckpointError(f"{source}: {prefix}{key} must be {kind}, got {_json_type(values[key])} "
                                  f"{json.dumps(values[key])[:40]}")


def _has_type(value, kind: str) -> bool:
    if kind == _BOOL:
        return isinstance(value, bool)
    if isinstance(value, bool):  # JSON true is no number
        return False
    return {_INT: isinstance(value, int), _NUMBER: isinstance(value, (int, float)), _STR: isinstance(value, str),
            _OBJECT: isinstance(value, dict),
            _STRINGS: isinstance(value, list) and all(isinstance(v, str) for v in value)}[kind]


def _json_type(value) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
             dict: "an object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


class OpenAILayout:
    name = "openai original"
    GLOBAL = {"embedding": "embedding.weight", "out": "unembedding.weight", "rms_out_w": "norm.scale"}
    LAYER = {
        "rms_attn_w": "attn.norm.scale", "w_qkv": "attn.qkv.weight", "b_qkv": "attn.qkv.bias",
        "w_o": "attn.out.weight", "b_o": "attn.out.bias", "attn_sinks": "attn.sinks",
        "rms_ffn_w": "mlp.norm.scale", "w_router": "mlp.gate.weight", "b_router": "mlp.gate.bias",
        "w_mlp1": "mlp.mlp1_weight", "b_mlp1": "mlp.mlp1_bias", "w_mlp2": "mlp.mlp2_weight", "b_mlp2": "mlp.mlp2_bias",
    }

    def config_fields(self, cfg: dict, source: str) -> dict:
        """ModelConfig fields from the openai config.json (gpt_oss/torch/model.py's ModelConfig)."""
        if (cfg.get("rope_ntk_alpha", 1.0), cfg.get("rope_ntk_beta", 32.0)) != (1.0, 32.0):
            raise CheckpointError(f"{source}: rope_ntk_alpha/beta must be 1/32 (the runtime's YaRN), "
                                  f"got {cfg.get('rope_ntk_alpha')}/{cfg.get('rope_ntk_beta')}")
        keys = {"vocab_size": "vocab_size", "hidden_dim": "hidden_size", "n_experts": "num_experts",
                "experts_per_token": "experts_per_token", "intermediate_dim": "intermediate_size",
                "n_layers": "num_hidden_layers", "head_dim": "head_dim", "n_attn_heads": "num_attention_heads",
                "n_kv_heads": "num_key_value_heads", "initial_context_length": "initial_context_length",
                "rope_theta": "rope_theta", "rope_scaling_factor": "rope_scaling_factor",
                "sliding_window": "sliding_window", "swiglu_limit": "swiglu_limit"}
        fields = {ours: cfg[theirs] for ours, theirs in keys.items() if theirs in cfg}
        fields.setdefault("seq_len", DEFAULT_SEQ_LEN)  # the openai config has no maximum length
        return fields

    def global_shape(self, tensors: TensorDirectory, name: str) -> tuple:
        return tensors.raw(self.GLOBAL[name]).shape

    def global_tensor(self, tensors: TensorDirectory, name: str, index: tuple) -> np.ndarray:
        return tensors.f32(self.GLOBAL[name], index)

    def keys(self, tensors: TensorDirectory, name: str, layer: int | None) -> list[str]:
        """The checkpoint tensors spec tensor `name` (of `layer`; None for the global ones) is read from."""
        if layer is None:
            return [self.GLOBAL[name]]
        key = f"block.{layer}.{self.LAYER[name]}"
        if name in MOE_WEIGHTS and key + ".blocks" in tensors:
            return [key + ".blocks", key + ".scales"]
        return [key]

    def layer_tensor(self, tensors: TensorDirectory, name: str, layer: int, index: tuple) -> np.ndarray:
        keys = self.keys(tensors, name, layer)
        if len(keys) == 2:  # MXFP4 blocks and scales
            return tensors.mxfp4(keys[0].removesuffix("blocks"), index)
        return tensors.f32(keys[0], index)


class HuggingFaceLayout:
    name = "Hugging Face"
    GLOBAL = {"embedding": "model.embed_tokens.weight", "out": "lm_head.weight", "rms_out_w": "model.norm.weight"}
    LAYER = {
        "rms_attn_w": "input_layernorm.weight", "rms_ffn_w": "post_attention_layernorm.weight",
        "w_o": "self_attn.o_proj.weight", "b_o": "self_attn.o_proj.bias", "attn_sinks": "self_attn.sinks",
        "w_router": "mlp.router.weight", "b_router": "mlp.router.bias",
        "b_mlp1": "mlp.experts.gate_up_proj_bias", "b_mlp2": "mlp.experts.down_proj_bias",
    }
    EXPERTS = {"w_mlp1": "mlp.experts.gate_up_proj", "w_mlp2": "mlp.experts.down_proj"}
    QKV = {"w_qkv": "weight", "b_qkv": "bias"}

    def config_fields(self, cfg: dict, source: str) -> dict:
        rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        fields = {"vocab_size": cfg.get("vocab_size"), "hidden_dim": cfg.get("hidden_size"),
                  "n_experts": cfg.get("num_local_experts"), "experts_per_token": cfg.get("num_experts_per_tok"),
                  "intermediate_dim": cfg.get("intermediate_size"), "n_layers": cfg.get("num_hidden_layers"),
                  "n_attn_heads": cfg.get("num_attention_heads"), "n_kv_heads": cfg.get("num_key_value_heads"),
                  "rope_theta": rope.get("rope_theta", cfg.get("rope_theta")),
                  "swiglu_limit": cfg.get("swiglu_limit", 7.0)}
        fields["head_dim"] = cfg.get("head_dim") or (fields["hidden_dim"] // fields["n_attn_heads"]
                                                     if fields["hidden_dim"] and fields["n_attn_heads"] else None)
        fields["seq_len"] = min(cfg.get("max_position_embeddings") or DEFAULT_SEQ_LEN, DEFAULT_SEQ_LEN)
        if rope_type == "yarn":
            self._check_yarn(rope, source)
            fields["rope_scaling_factor"] = rope.get("factor")
            fields["initial_context_length"] = rope.get("original_max_position_embeddings")
        elif rope_type == "default":
            fields["rope_scaling_factor"] = 1.0
            fields["initial_context_length"] = cfg.get("initial_context_length", 4096)
        else:
            raise CheckpointError(f"{source}: rope_type {rope_type!r} is not supported (yarn or default)")
        fields["sliding_window"] = self._sliding_window(cfg, source)
        if not math.isclose(cfg.get("rms_norm_eps", 1e-5), 1e-5, rel_tol=1e-6):
            raise CheckpointError(f"{source}: rms_norm_eps {cfg['rms_norm_eps']} differs from the runtime's 1e-5")
        return {k: v for k, v in fields.items() if v is not None}

    @staticmethod
    def _check_yarn(rope: dict, source: str) -> None:
        # transformers' YaRN equals the runtime's only with these settings (spec section 2).
        if rope.get("truncate", True):
            raise CheckpointError(f"{source}: YaRN with truncate=true differs from the runtime's; needs truncate: false")
        if (rope.get("beta_fast", 32.0), rope.get("beta_slow", 1.0)) != (32.0, 1.0):
            raise CheckpointError(f"{source}: YaRN beta_fast/beta_slow must be 32/1 (the runtime's ntk constants)")
        if any(rope.get(k) is not None for k in ("attention_factor", "mscale", "mscale_all_dim")):
            raise CheckpointError(f"{source}: YaRN attention_factor/mscale overrides are not supported")

    @staticmethod
    def _sliding_window(cfg: dict, source: str) -> int:
        """The runtime windows even layers; the config must say the same (or window nothing)."""
        window = cfg.get("sliding_window") or 0
        types = cfg.get("layer_types")
        if types is None:  # transformers' default: alternating, from sliding (none when no layers)
            types = ["sliding_attention", "full_attention"] if cfg.get("num_hidden_layers") else []
        if all(t == "full_attention" for t in types):
            return 0
        expected = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(len(types))]
        if types != expected or not window:
            raise CheckpointError(f"{source}: layer_types must alternate sliding/full starting with sliding "
                                  f"(the runtime's rule), with a sliding_window")
        return window

    def global_shape(self, tensors: TensorDirectory, name: str) -> tuple:
        return tensors.raw(self._global_key(tensors, name)).shape

    def _global_key(self, tensors: TensorDirectory, name: str) -> str:
        key = self.GLOBAL[name]
        if name == "out" and key not in tensors:  # tie_word_embeddings
            return self.GLOBAL["embedding"]
        return key

    def global_tensor(self, tensors: TensorDirectory, name: str, index: tuple) -> np.ndarray:
        return tensors.f32(self._global_key(tensors, name), index)

    def keys(self, tensors: TensorDirectory, name: str, layer: int | None) -> list[str]:
        """The checkpoint tensors spec tensor `name` (of `layer`; None for the global ones) is read from."""
        if layer is None:
            return [self._global_key(tensors, name)]
        prefix = f"model.layers.{layer}."
        if name in self.QKV:
            return [f"{prefix}self_attn.{p}_proj.{self.QKV[name]}" for p in "qkv"]
        if name in self.EXPERTS:
            key = prefix + self.EXPERTS[name]
            return [key + "_blocks", key + "_scales"] if key + "_blocks" in tensors else [key]
        return [prefix + self.LAYER[name]]

    def layer_tensor(self, tensors: TensorDirectory, name: str, layer: int, index: tuple) -> np.ndarray:
        keys = self.keys(tensors, name, layer)
        if name in self.QKV:
            return np.ascontiguousarray(np.concatenate([tensors.f32(key) for key in keys])[index])
        if len(keys) == 2:  # MXFP4 blocks and scales
            return tensors.mxfp4(keys[0].removesuffix("blocks"), index)
        if name in self.EXPERTS:
            return tensors.f32(keys[0], index, transpose=True)  # stored (E, in, out)
        return tensors.f32(keys[0], index)


def detect_layout(tensors: TensorDirectory, path: Path):
    if "embedding.weight" in tensors or "block.0.attn.qkv.weight" in tensors:
        return OpenAILayout()
    if "model.embed_tokens.weight" in tensors:
        return HuggingFaceLayout()
    raise CheckpointError(f"{path}: not a gpt-oss checkpoint (neither openai original nor Hugging Face tensor names)")
