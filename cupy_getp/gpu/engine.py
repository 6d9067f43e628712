"""The GPU engine: `cupy_getp/reference.py` again, function for function, on device buffers.

Letters as in reference.py. One stream; every launch goes through `Kernels` (counted), every copy
through `Device` (counted). Per step the host uploads RoPE's cos/sin and copies the logits back;
sampling stays on the CPU. Top-k routing runs on the device (`router_topk`), with the same rule as
`reference.route` (ties to the lower index); with a trace, router scores and experts come back too.
"""

from __future__ import annotations

import numpy as np

from ..checkpoint import Weights
from ..engine.base import Engine, Trace
from ..rope import rope_cos_sin
from .device import Device, gib
from .experts import ExpertStorage, check_expert_choice, choose_expert_storage
from .kernels import ATTN_CHUNK, Kernels
from .weights import DeviceWeights


class DeviceState:
    """Every activation buffer, allocated once (the original runtime's DeviceState; the sliding window is a rule in
    the score kernel rather than a mask buffer). `experts.state_bytes` counts them for planning."""

    def __init__(self, config, device: Device):
        import cupy

        c = config
        f32 = np.float32
        self.x = cupy.zeros(c.hidden_dim, f32)  # (H,) residual stream
        self.t = cupy.zeros(c.hidden_dim, f32)  # (H,) normalised input of a block
        self.qkv = cupy.zeros(c.qkv_dim, f32)  # (Q,) q heads, k heads, v heads
        self.att = cupy.zeros(c.q_dim, f32)  # (nh*D,) attention output
        self.scores = cupy.zeros((c.n_attn_heads, c.seq_len + 1), f32)  # (nh, S+1) scores + sink
        chunks = -(-c.seq_len // ATTN_CHUNK)
        self.att_partial = cupy.zeros(c.n_attn_heads * chunks * c.head_dim, f32)  # (nh, chunks, D) flat
        self.router = cupy.zeros(c.n_experts, f32)  # (E,)
        self.experts = cupy.zeros(c.experts_per_token, np.int32)  # (k,)
        self.expert_weights = cupy.zeros(c.experts_per_token, f32)  # (k,)
        self.g = cupy.zeros((c.experts_per_token, c.intermediate_dim), f32)  # (k, I) SwiGLU outputs
        self.moe_out = cupy.zeros(c.hidden_dim, f32)  # (H,)
        self.logits = cupy.zeros(c.vocab_size, f32)  # (V,)
        self.key_cache = cupy.zeros((c.n_layers, c.seq_len, c.kv_dim), f32)  # (L, S, nkv*D)
        self.value_cache = cupy.zeros_like(self.key_cache)
        self.key_caches = list(self.key_cache)  # per-layer (S, nkv*D) views, built once
        self.value_caches = list(self.value_cache)
        half = c.head_dim // 2
        self.cos, self.sin = cupy.zeros(half, f32), cupy.zeros(half, f32)  # (D/2,) this step's tables
        # Pinned host buffers for what moves every step.
        self.cos_host, self.sin_host = device.pinned(half, f32), device.pinned(half, f32)
        self.logits_host = device.pinned(c.vocab_size, f32)


class CupyEngine(Engine):
    name = "cupy"
    batches = True

    def __init__(self, weights: Weights, experts: str = "auto", steps: int | None = None):
        """`experts`: the MoE experts' storage on the device, bf16, mxfp4 or auto (`gpu/experts.py`), decided
        at warm-up for requests of `steps` positions (default seq_len)."""
        super().__init__(weights)
        self.requested_experts, self.steps = check_expert_choice(experts), steps
        self.device = self.kernels = self.w = self.state = None
        self.experts: ExpertStorage | None = None

    # -- life cycle ------------------------------------------------------------------------------------
    def warm_up(self, progress=None) -> None:
        self.finished = False
        self.device = Device.open()
        with self.device.cuda_device, self.device.stream:
            self.memory_before = self.device.memory_in_use()
            # Decided from the free memory before anything of this engine is allocated (the plan counts it all).
            self.experts = choose_expert_storage(self.weights, self.device.allocatable_bytes(),
                                                 self.requested_experts, self.steps)
            self.kernels = Kernels(self.device)
            with self.device.allocating(f"the single-sequence state and KV cache ({self.config.seq_len} positions)",
                                        "a smaller seq_len (--config seq_len=N)"):
                self.state = DeviceState(self.config, self.device)
            self.w = DeviceWeights(self.weights, self.device, self.kernels, progress, self.experts.storage)
            self.memory_after_warm_up = self.device.memory_in_use()
        self.device.counters.reset()

    def storage_notes(self) -> list[str]:
        return [self.experts.describe(),
                f"device weights: {gib(self.w.nbytes())} ({self.w.nbytes():,} bytes): {self.w.describe_storage()}"]

    def memory_remedy(self, remedy: str) -> str:
        """What would help an allocation that failed: `remedy`, and `--experts mxfp4` where it frees memory."""
        return self.experts.remedy(remedy) if self.experts else remedy

    def reset(self) -> None:
        with self.device.stream:
            self.state.key_cache.fill(0)
            self.state.value_cache.fill(0)
        self.device.synchronize("reset")

    def finish(self) -> None:
        if self.device is None:
            return
        if self.w is not None:
            self.w.free()
        self.w = self.state = None
        self.device.free_all()
        self.finished = True

    def batched(self, n_requests: int, steps: int, slots: int | None = None, precision: str | None = None,
                use_graphs: bool = True, max_chunk: int | None = None):
        """A `BatchedEngine` over this engine's device, weights and kernels, sized from free memory."""
        from .batch import BatchedEngine
        from .batch_shape import MAX_CHUNK, plan_batch

        self.check_not_finished()
        with self.device.cuda_device:
            shape = plan_batch(self.config, n_requests, steps, self.device.allocatable_bytes(), slots,
                               max_chunk or MAX_CHUNK, self.experts.hint())
            return BatchedEngine(self, shape, precision, use_graphs)

    # -- forward ---------------------------------------------------------------------------------------
    def forward(self, token: int, pos: int, trace: Trace | None = None) -> np.ndarray:
        self.check_step(token, pos)
        with self.device.stream:  # CuPy's own operations (trace copies) on our stream too
            return self._forward(token, pos, trace)

    def _forward(self, token: int, pos: int, trace: Trace | None) -> np.ndarray:
        s = self.state
        self.upload_rope(pos)
        self.kernels.embedding(s.x, self.w.embedding, token)
        for l in range(self.config.n_layers):
            self.attention_block(l, pos, trace)
            self.moe_block(l, trace)
        logits = self.unembed()
        if trace is not None:
            trace.logits = logits.copy()
        return logits

    def upload_rope(self, pos: int) -> None:
        """cos/sin of this position, computed on the host (docs/spec.md) by the reference's code."""
        s = self.state
        s.cos_host[:], s.sin_host[:] = rope_cos_sin(self.config, pos)
        self.device.upload(s.cos, s.cos_host)
        self.device.upload(s.sin, s.sin_host)

    def attention_block(self, l: int, pos: int, trace: Trace | None) -> None:
        c, kernels, s, lw = self.config, self.kernels, self.state, self.w.layer(l)
        kernels.rmsnorm(s.t, s.x, lw.rms_attn_w)
        kernels.matvec(s.qkv, lw.w_qkv, s.t, lw.b_qkv)
        kernels.rope(s.qkv, s.cos, s.sin, c.n_attn_heads + c.n_kv_heads, c.head_dim)  # q heads then k heads
        kernels.kv_cache_write(s.key_caches[l], s.value_caches[l], s.qkv, c.q_dim, c.kv_dim, pos)
        self.attention(l, pos, lw.attn_sinks)
        kernels.matvec(s.x, lw.w_o, s.att, lw.b_o, accumulate=True)  # x += w_o @ att + b_o
        if trace is not None:
            trace.record(l, "attn_out", s.att.get(stream=self.device.stream))
            trace.record(l, "x_attn", s.x.get(stream=self.device.stream))

    def attention(self, l: int, pos: int, sinks) -> None:
        """Scores with sinks and the window, softmax over pos + 2, weighted sum of values -> s.att."""
        c, kernels, s = self.config, self.kernels, self.state
        window = c.sliding_window if c.uses_sliding_window(l) else 0
        kernels.attn_scores(s.scores, s.qkv, s.key_caches[l], sinks, pos, c.head_dim, c.kv_group, window)
        kernels.softmax_rows(s.scores, pos + 2)
        chunks = kernels.attn_weighted_sum_partial(s.att_partial, s.scores, s.value_caches[l], pos, c.head_dim,
                                                   c.kv_group)
        kernels.attn_combine(s.att, s.att_partial, c.n_attn_heads, c.head_dim, chunks)

    def moe_block(self, l: int, trace: Trace | None) -> None:
        c, kernels, s, lw = self.config, self.kernels, self.state, self.w.layer(l)
        kernels.rmsnorm(s.t, s.x, lw.rms_ffn_w)
        kernels.matvec(s.router, lw.w_router, s.t, lw.b_router)  # (E,)
        self.route()
        # Per chosen expert: mlp1 (BF16) + bias + SwiGLU, then mlp2 (BF16) + bias, weighted, into x.
        kernels.moe_mlp1_swiglu(s.g, lw.w_mlp1, lw.b_mlp1, s.t, s.experts, c.swiglu_limit)
        kernels.moe_mlp2_accumulate(s.x, s.moe_out, lw.w_mlp2, lw.b_mlp2, s.g, s.experts, s.expert_weights)
        if trace is not None:
            stream = self.device.stream
            trace.record(l, "router", s.router.get(stream=stream))
            trace.record(l, "experts", s.experts.get(stream=stream))
            trace.record(l, "moe_out", s.moe_out.get(stream=stream))
            trace.record(l, "x_moe", s.x.get(stream=stream))

    def route(self) -> None:
        """Top-k of the router scores and their softmax weights, on the device."""
        s = self.state
        self.kernels.router_topk(s.experts, s.expert_weights, s.router)

    def unembed(self) -> np.ndarray:
        kernels, s = self.kernels, self.state
        kernels.rmsnorm(s.t, s.x, self.w.rms_out_w)
        kernels.matvec(s.logits, self.w.out, s.t)
        return self.device.download(s.logits, s.logits_host).copy()
