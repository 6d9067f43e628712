"""The numpy reference engine: spec section 2, step by step. The oracle every GPU result is diffed
against, so it favours being obviously right over being fast.

Letters: H hidden_dim, V vocab, E experts, k experts_per_token, I intermediate_dim, D head_dim,
nh / nkv attention / kv heads, T positions so far (pos + 1).

Numerics: activations float32. Where the C runtime accumulates in double (rmsnorm, softmax and
attention sums), so do we; matvecs are float32 BLAS (blocked float32 sums: ~1e-7 relative, far
under every tolerance). The GPU engine (`gpu/engine.py`) has one function per function here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .bf16 import round_to_bf16
from .checkpoint import ArrayStore, BinStore, MOE_WEIGHTS, TENSOR_NAMES, Weights
from .checkpoint.weights import FLOAT32
from .config import ModelConfig
from .engine.base import Engine, Trace
from .hostmem import allocating
from .kv_cache import check_kv_cache
from .rope import rope_cos_sin

RMS_EPS = 1e-5
SWIGLU_ALPHA = 1.702

# A model whose MoE fits in this many float32 bytes is kept fully converted in host memory.
MOE_CACHE_BYTES = 1 << 30


# -- ops ---------------------------------------------------------------------------------------------
def rmsnorm(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """w * x / sqrt(mean(x^2) + eps), computed in float64 as the C runtime does, rounded once."""
    x64 = x.astype(np.float64)
    inv_rms = 1.0 / np.sqrt(np.dot(x64, x64) / x.size + RMS_EPS)
    return (w * (inv_rms * x64)).astype(np.float32)


def matvec(w: np.ndarray, x: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """w (N, M) @ x (M,) [+ b (N,)], float32."""
    y = w @ x
    return y + b if b is not None else y


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax along the last axis; max-subtracted, sums in float64, float32 result."""
    z = np.exp(x.astype(np.float64) - x.max(axis=-1, keepdims=True))
    return (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)


def rope(h: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate each head (n, D) by (cos, sin) (D/2,): pairs are (i, i + D/2), not adjacent."""
    half = h.shape[-1] // 2
    x1, x2 = h[:, :half], h[:, half:]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def attention(q: np.ndarray, keys: np.ndarray, values: np.ndarray, sinks: np.ndarray, window: int) -> np.ndarray:
    """Grouped-query attention of one position over T cached positions, with sinks.

    q (nh, D); keys, values (T, nkv, D); sinks (nh,); window = 0 for full attention, else positions
    with pos - t >= window are masked. Returns (nh * D,).
    """
    T, nkv, D = keys.shape
    q64 = q.astype(np.float64).reshape(nkv, -1, D)  # (nkv, group, D)
    scores = np.einsum("gjd,tgd->gjt", q64, keys.astype(np.float64)) / np.sqrt(D)  # (nkv, group, T)
    if window:
        scores[:, :, : max(0, T - window)] = -np.inf  # pos - t >= window, with pos = T - 1
    # The sink is one more score per head; its probability is dropped after the softmax.
    scores = np.concatenate([scores, sinks.astype(np.float64).reshape(nkv, -1, 1)], axis=-1)
    p = np.exp(scores - scores.max(axis=-1, keepdims=True))
    p = p[:, :, :T] / p.sum(axis=-1, keepdims=True)
    out = np.einsum("gjt,tgd->gjd", p, values.astype(np.float64))  # (nkv, group, D)
    return out.reshape(-1).astype(np.float32)


def route(scores: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k experts by score (ties to the lower index) and their softmax weights. Also used by the
    GPU engine, which copies the router scores back for it (docs/spec.md allows the host top-k)."""
    experts = np.argsort(-scores, kind="stable")[:top_k]
    return experts, softmax(scores[experts])


def swiglu(m: np.ndarray, limit: float) -> np.ndarray:
    """m (2I,) interleaved gate/up -> (I,): clamp, gate * sigmoid(1.702 gate) * (up + 1)."""
    gate = np.minimum(m[0::2], np.float32(limit))
    up = np.clip(m[1::2], np.float32(-limit), np.float32(limit))
    with np.errstate(over="ignore"):  # exp(large) = inf gives sigmoid 0, as in C
        sig = np.float32(1) / (np.float32(1) + np.exp(np.float32(-SWIGLU_ALPHA) * gate))
    return gate * sig * (up + np.float32(1))


# -- engine ------------------------------------------------------------------------------------------
class NumpyEngine(Engine):
    name = "numpy"

    def __init__(self, weights: Weights, kv_cache: str = "fp32"):
        """`kv_cache`: fp32, or bf16: each key and value rounded to the nearest BF16 value as it is cached, as
        the GPU engine's `--kv-cache bf16` stores them (the reference of that mode)."""
        check_kv_cache(kv_cache)
        super().__init__(weights)
        self.kv_cache = kv_cache

    def warm_up(self, progress: Callable[[int], None] | None = None) -> None:
        with allocating("the numpy engine's weights", numpy_host_bytes(self.weights)):
            self.weights = host_weights(self.weights, progress)
        c = self.config
        with allocating(f"the KV cache of {c.seq_len} positions", numpy_kv_bytes(c)):
            self.key_cache = np.zeros((c.n_layers, c.seq_len, c.kv_dim), np.float32)  # (L, S, nkv*D)
            self.value_cache = np.zeros_like(self.key_cache)
        self.finished = False

    def reset(self) -> None:
        self.check_not_finished()
        self.key_cache[:] = 0
        self.value_cache[:] = 0

    def finish(self) -> None:
        self.key_cache = self.value_cache = None
        self.finished = True

    def forward(self, token: int, pos: int, trace: Trace | None = None) -> np.ndarray:
        self.check_step(token, pos)
        cos, sin = rope_cos_sin(self.config, pos)
        x = self.weights.embedding_row(token).copy()  # (H,)
        # Overflow and NaN are found and named (position, layer) by the logits check of generation.py;
        # numpy's RuntimeWarnings would only come first, each with a line of our source.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for l in range(self.config.n_layers):
                x = self.attention_block(l, x, pos, cos, sin, trace)
                x = self.moe_block(l, x, trace)
            logits = self.unembed(x)
        if trace is not None:
            trace.logits = logits.copy()
        return logits

    def attention_block(self, l: int, x: np.ndarray, pos: int, cos, sin, trace: Trace | None) -> np.ndarray:
        c, lw = self.config, self.weights.layer(l)
        t = rmsnorm(x, lw.rms_attn_w)
        qkv = matvec(lw.w_qkv, t, lw.b_qkv)  # (Q,)
        q = rope(qkv[: c.q_dim].reshape(c.n_attn_heads, c.head_dim), cos, sin)
        key = rope(qkv[c.q_dim: c.q_dim + c.kv_dim].reshape(c.n_kv_heads, c.head_dim), cos, sin)
        self.key_cache[l, pos] = self.cached(key.reshape(-1))
        self.value_cache[l, pos] = self.cached(qkv[c.q_dim + c.kv_dim:])
        shape = (pos + 1, c.n_kv_heads, c.head_dim)
        window = c.sliding_window if c.uses_sliding_window(l) else 0
        att = attention(q, self.key_cache[l, : pos + 1].reshape(shape),
                        self.value_cache[l, : pos + 1].reshape(shape), lw.attn_sinks, window)
        x = x + matvec(lw.w_o, att, lw.b_o)
        if trace is not None:
            trace.record(l, "attn_out", att)
            trace.record(l, "x_attn", x)
        return x

    def cached(self, values: np.ndarray) -> np.ndarray:
        """Keys or values as the KV cache holds them: as computed, or rounded to BF16."""
        return round_to_bf16(values) if self.kv_cache == "bf16" else values

    def moe_block(self, l: int, x: np.ndarray, trace: Trace | None) -> np.ndarray:
        c, lw = self.config, self.weights.layer(l)
        t = rmsnorm(x, lw.rms_ffn_w)
        scores = matvec(lw.w_router, t, lw.b_router)  # (E,)
        experts, expert_weights = route(scores, c.experts_per_token)
        agg = np.zeros(c.hidden_dim, np.float32)
        for e, weight in zip(experts, expert_weights):
            ew = lw.expert(int(e))
            g = swiglu(matvec(ew.w_mlp1, t, ew.b_mlp1), c.swiglu_limit)  # (I,)
            agg += weight * matvec(ew.w_mlp2, g, ew.b_mlp2)
        if trace is not None:
            trace.record(l, "router", scores)
            trace.record(l, "experts", experts)
            trace.record(l, "moe_out", agg)
            trace.record(l, "x_moe", x + agg)
        return x + agg

    def unembed(self, x: np.ndarray) -> np.ndarray:
        return matvec(self.weights.f32("out"), rmsnorm(x, self.weights.f32("rms_out_w")))  # (V,)


# -- host weights ------------------------------------------------------------------------------------
class _ConvertedStore:
    """A store's dense tensors converted to float32 once (and the MoE too when small); the rest is
    read through the original store slice by slice."""

    storage_dtype = FLOAT32

    def __init__(self, weights: Weights, names: list[str], progress: Callable[[int], None] | None = None):
        self.config, self.description, self._store = weights.config, weights.description, weights.store
        self.arrays = {}
        for name in names:
            self.arrays[name] = weights.f32(name)
            if progress:
                progress(self.arrays[name].size)

    def read(self, name: str, index: tuple[int, ...] = ()) -> np.ndarray:
        if name in self.arrays:
            return self.arrays[name][index]
        return self._store.read(name, index)


def host_weights(weights: Weights, progress: Callable[[int], None] | None = None) -> Weights:
    """Weights the reference can read every step at no extra cost: float32 memmaps and arrays as
    they are; bfloat16 files and synthetic models converted once (`progress(n)` per n converted)."""
    names = _converted_names(weights)
    return weights if names is None else Weights(_ConvertedStore(weights, names, progress))


def numpy_host_bytes(weights: Weights) -> int:
    """Host memory the numpy engine's weights take: all of a float32 file or array, else what
    `host_weights` converts."""
    names = _converted_names(weights)
    shapes = weights.shapes
    return 4 * sum(int(np.prod(shapes[n])) for n in (TENSOR_NAMES if names is None else names))


def numpy_kv_bytes(c: ModelConfig) -> int:
    """The numpy engine's KV cache: keys and values, float32, every layer and position."""
    return 2 * 4 * c.n_layers * c.seq_len * c.kv_dim


def numpy_holds_experts(weights: Weights) -> bool:
    """Whether the MoE matrices are in host memory as float32, rather than produced every step."""
    names = _converted_names(weights)
    return names is None or all(n in names for n in MOE_WEIGHTS)


def _converted_names(weights: Weights) -> list[str] | None:
    """The tensors `host_weights` converts to float32 arrays, None when it uses the store as it is:
    the dense ones, and the MoE too when it fits in MOE_CACHE_BYTES (else its slices are read per step)."""
    store = weights.store
    if isinstance(store, ArrayStore) or (isinstance(store, BinStore) and store.storage_dtype == FLOAT32):
        return None
    moe_bytes = sum(4 * np.prod(weights.shapes[n]) for n in MOE_WEIGHTS)
    return [n for n in TENSOR_NAMES if n not in MOE_WEIGHTS or moe_bytes <= MOE_CACHE_BYTES]
