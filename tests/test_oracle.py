"""Our model against an implementation nobody here wrote: Hugging Face transformers' GptOssForCausalLM
(eager attention, float32, CPU). Random tiny models are saved with `save_pretrained` (or rewritten in
the MXFP4 / openai layouts), loaded through our code, and our logits compared with transformers' over
48 positions, past the sliding window: relative error <= 1e-4 and identical greedy tokens."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cupy_getp.checkpoint import ArrayStore, TENSOR_NAMES, Weights, open_store
from cupy_getp.checkpoint.safetensors import dequantize_mxfp4
from cupy_getp.engine.factory import create_engine

from checkpoints import hf_tensors, openai_config, openai_tensors, random_mxfp4, write_checkpoint

pytestmark = pytest.mark.oracle

REL_TOL = 1e-4
POSITIONS = 48


def hf_model(seed: int, *, n_kv_heads=2, yarn=True, window=6, layer_types=None):
    import torch
    from transformers import GptOssConfig, GptOssForCausalLM

    rope = ({"rope_type": "yarn", "factor": 4.0, "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False,
             "original_max_position_embeddings": 512, "rope_theta": 10000.0} if yarn
            else {"rope_type": "default", "rope_theta": 10000.0})
    config = GptOssConfig(vocab_size=300, hidden_size=64, intermediate_size=64, num_hidden_layers=3,
                          num_local_experts=8, num_experts_per_tok=2, head_dim=16, num_attention_heads=4,
                          num_key_value_heads=n_kv_heads, sliding_window=window, max_position_embeddings=2048,
                          rope_parameters=rope, layer_types=layer_types, tie_word_embeddings=False)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = GptOssForCausalLM(config).eval()
    randomize(model, seed)
    return model


def randomize(model, seed: int) -> None:
    """Scales as our synthetic models' (activations O(1), non-zero biases and sinks); expert matrices
    rounded to bfloat16, as published gpt-oss experts (MXFP4) are exactly."""
    import torch

    gen = torch.Generator().manual_seed(seed)

    def uniform(shape, scale, offset=0.0):
        return (torch.rand(shape, generator=gen) * 2 - 1) * scale + offset

    for name, p in model.named_parameters():
        shape = p.shape
        if name.endswith("norm.weight"):
            value = uniform(shape, 0.2, 1.0)
        elif name.endswith("sinks"):
            value = uniform(shape, 2.0)
        elif name.endswith(("bias", "_bias")):
            value = uniform(shape, 0.2)
        elif name.endswith("embed_tokens.weight"):
            value = uniform(shape, 1.0)
        elif name.endswith("lm_head.weight"):
            value = uniform(shape, 3 * math.sqrt(3 / shape[1]))
        elif name.endswith("gate_up_proj"):  # (E, H, 2I)
            value = uniform(shape, math.sqrt(3 / shape[1])).to(torch.bfloat16).float()
        elif name.endswith("down_proj"):  # (E, I, H)
            value = uniform(shape, 0.5 * math.sqrt(3 / shape[1])).to(torch.bfloat16).float()
        else:  # Linear (out, in)
            value = uniform(shape, (0.5 if "o_proj" in name else 1.0) * math.sqrt(3 / shape[1]))
        p.data.copy_(value)


def transformers_logits(model, tokens) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(input_ids=torch.tensor([tokens])).logits[0].double().numpy()


def our_logits(source, tokens, engine="numpy") -> np.ndarray:
    model = create_engine(Weights(open_store(source) if not isinstance(source, ArrayStore) else source), engine)
    model.warm_up()
    try:
        return np.stack([model.forward(t, pos) for pos, t in enumerate(tokens)]).astype(np.float64)
    finally:
        model.finish()


def assert_logits_match(ours, theirs) -> None:
    for pos in range(len(theirs)):
        rel = np.max(np.abs(ours[pos] - theirs[pos])) / np.max(np.abs(theirs[pos]))
        assert rel <= REL_TOL, f"position {pos}: relative error {rel:.2e}"
    np.testing.assert_array_equal(ours.argmax(-1), theirs.argmax(-1))
    print(f"max relative error {max(np.max(np.abs(o - t)) / np.max(np.abs(t)) for o, t in zip(ours, theirs)):.2e}")


def tokens(seed=0) -> list[int]:
    return np.random.default_rng(seed).integers(0, 300, POSITIONS).tolist()


def saved(model, tmp_path):
    path = tmp_path / "hf"
    model.save_pretrained(path, safe_serialization=True)
    return path


def spec_weights(path) -> dict[str, np.ndarray]:
    store = ArrayStore.materialize(open_store(path))
    return dict(store.arrays)


VARIANTS = {
    "gqa-yarn-window": dict(n_kv_heads=2, yarn=True, window=6),
    "mha-no-yarn": dict(n_kv_heads=4, yarn=False, window=6),
    "all-full-attention": dict(n_kv_heads=1, yarn=True, window=6, layer_types=["full_attention"] * 3),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_hugging_face_checkpoint_matches_transformers(tmp_path, variant):
    model = hf_model(1, **VARIANTS[variant])
    path = saved(model, tmp_path)
    assert_logits_match(our_logits(path, tokens()), transformers_logits(model, tokens()))


def test_mxfp4_dequantization_matches_transformers():
    import torch
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors

    rng = np.random.default_rng(4)
    for experts, rows, cols in ((1, 1, 32), (3, 7, 64), (8, 128, 2880)):
        blocks, scales = random_mxfp4(rng, experts, rows, cols)
        scales[..., 0] = rng.integers(100, 140, scales[..., 0].shape)  # wider exponents too
        theirs = convert_moe_packed_tensors(torch.from_numpy(blocks), torch.from_numpy(scales), dtype=torch.float32)
        np.testing.assert_array_equal(dequantize_mxfp4(blocks, scales), theirs.transpose(1, 2).numpy())


def quantized_model(tmp_path, seed: int):
    """A model whose experts are MXFP4 values: transformers holds them dequantized by its own code."""
    import torch
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors

    model = hf_model(seed)
    rng = np.random.default_rng(seed)
    c = open_store(saved(model, tmp_path / "plain")).config
    packed = {"w_mlp1": [], "w_mlp2": []}
    for layer in model.model.layers:
        experts = layer.mlp.experts
        for ours, param, rows, cols in (("w_mlp1", experts.gate_up_proj, 2 * c.intermediate_dim, c.hidden_dim),
                                        ("w_mlp2", experts.down_proj, c.hidden_dim, c.intermediate_dim)):
            blocks, scales = random_mxfp4(rng, c.n_experts, rows, cols)
            dense = convert_moe_packed_tensors(torch.from_numpy(blocks), torch.from_numpy(scales),
                                               dtype=torch.float32)  # (E, in, out), as the parameter
            param.data.copy_(dense)
            packed[ours].append((blocks, scales))
    mxfp4 = {n: (np.stack([b for b, _ in v]), np.stack([s for _, s in v])) for n, v in packed.items()}
    return model, c, mxfp4


def test_hugging_face_mxfp4_checkpoint_matches_transformers(tmp_path):
    model, c, mxfp4 = quantized_model(tmp_path, 2)
    weights = spec_weights(saved(model, tmp_path))
    path = write_checkpoint(tmp_path / "hf-mxfp4", hf_tensors(weights, c, mxfp4),
                            {**model.config.to_dict(), "swiglu_limit": 7.0})
    assert_logits_match(our_logits(path, tokens(1)), transformers_logits(model, tokens(1)))


def test_openai_checkpoint_matches_transformers(tmp_path):
    """openai original layout: dense tensors in bfloat16 (as published), experts MXFP4."""
    import torch

    model, c, mxfp4 = quantized_model(tmp_path, 3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "experts" not in name or name.endswith("bias"):
                p.data.copy_(p.data.to(torch.bfloat16).float())
    weights = spec_weights(saved(model, tmp_path))
    tensors = openai_tensors(weights, c, mxfp4)
    dense = tuple(n for n in tensors if not n.endswith((".blocks", ".scales")))
    path = write_checkpoint(tmp_path / "openai", tensors, openai_config(c), bf16=dense)
    assert_logits_match(our_logits(path, tokens(2)), transformers_logits(model, tokens(2)))


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["hugging-face", "openai"])
def test_gpu_engine_matches_transformers(tmp_path, layout):
    if layout == "hugging-face":
        model = hf_model(5)
        path = saved(model, tmp_path)
    else:
        import torch

        model, c, mxfp4 = quantized_model(tmp_path, 6)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "experts" not in name or name.endswith("bias"):
                    p.data.copy_(p.data.to(torch.bfloat16).float())
        tensors = openai_tensors(spec_weights(saved(model, tmp_path)), c, mxfp4)
        dense = tuple(n for n in tensors if not n.endswith((".blocks", ".scales")))
        path = write_checkpoint(tmp_path / "openai", tensors, openai_config(c), bf16=dense)
    assert_logits_match(our_logits(path, tokens(3), engine="cupy"), transformers_logits(model, tokens(3)))


def test_every_tensor_round_trips_through_save_pretrained(tmp_path):
    """Our reading of transformers' own files: each spec tensor equals the model parameter it names."""
    model = hf_model(7)
    weights = spec_weights(saved(model, tmp_path))
    layer = model.model.layers[1]
    attn, experts = layer.self_attn, layer.mlp.experts
    np.testing.assert_array_equal(weights["w_qkv"][1], np.concatenate(
        [attn.q_proj.weight.detach().numpy(), attn.k_proj.weight.detach().numpy(), attn.v_proj.weight.detach().numpy()]))
    np.testing.assert_array_equal(weights["w_mlp1"][1], experts.gate_up_proj.detach().numpy().transpose(0, 2, 1))
    np.testing.assert_array_equal(weights["w_mlp2"][1], experts.down_proj.detach().numpy().transpose(0, 2, 1))
    np.testing.assert_array_equal(weights["attn_sinks"][1], attn.sinks.detach().numpy())
    assert set(weights) == set(TENSOR_NAMES)
