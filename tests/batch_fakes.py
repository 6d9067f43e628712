"""numpy stand-ins for the batched engine's device side, so that its orchestration (the model over rows,
the KV ring, attention splits, MoE grouping, the scheduler loop) runs on a CPU machine.

Each `FakeKernels` method is the contract of docs/batched-engine.md written with the reference's
functions; `fake_cupy` is just enough of CuPy (arrays with `.get()`) for gpu/batch.py. The real kernels
are checked against these contracts on the GPU (tests/test_gpu_batch_*.py).
"""

from __future__ import annotations

import contextlib
import types

import numpy as np

from cupy_getp.bf16 import bf16_to_f32, f32_to_bf16
from cupy_getp.checkpoint import MOE_WEIGHTS, TENSOR_NAMES
from cupy_getp.checkpoint.layout import LAYER_TENSORS
from cupy_getp.gpu.launch.moe import moe_align_host
from cupy_getp.gpu.weights import DENSE_GEMM_WEIGHTS
from cupy_getp.reference import rmsnorm, rope, route, swiglu


class HostArray(np.ndarray):
    """A numpy array that answers CuPy's `.get()`."""

    def get(self, stream=None, out=None, blocking=True):
        if out is None:
            return np.array(self)
        out[...] = self
        return out


def _host(a) -> HostArray:
    return np.asarray(a).view(HostArray)


fake_cupy = types.SimpleNamespace(
    zeros=lambda shape, dtype=np.float32: _host(np.zeros(shape, dtype)),
    zeros_like=lambda a: _host(np.zeros_like(a)),
    asarray=lambda a: _host(np.array(a)),
)


def f32(w) -> np.ndarray:
    return bf16_to_f32(w) if w.dtype == np.uint16 else np.asarray(w, np.float32)


class FakeKernels:
    """The batched launch helpers, as numpy."""

    def embedding_rows(self, x, table, tokens):
        x[...] = table[tokens]

    def rmsnorm_rows(self, out, x, w):
        out[...] = np.stack([rmsnorm(r, w) for r in x])

    def gemm(self, c, a, w, bias=None, accumulate=False):
        y = a @ f32(w).T + (0 if bias is None else bias)
        c[...] = y + c if accumulate else y

    def rope_kv_write(self, qkv, cos, sin, key_cache, value_cache, row_slot, row_pos, n_heads, n_kv_heads, head_dim):
        q_dim, kv_dim = n_heads * head_dim, n_kv_heads * head_dim
        for r, (slot, pos) in enumerate(zip(row_slot, row_pos)):
            qkv[r, :q_dim] = rope(qkv[r, :q_dim].reshape(n_heads, head_dim), cos[pos], sin[pos]).reshape(-1)
            k = rope(qkv[r, q_dim:q_dim + kv_dim].reshape(n_kv_heads, head_dim), cos[pos], sin[pos]).reshape(-1)
            qkv[r, q_dim:q_dim + kv_dim] = k
            key_cache[slot, pos % key_cache.shape[1]] = k
            value_cache[slot, pos % key_cache.shape[1]] = qkv[r, q_dim + kv_dim:]

    def attn_rows_partial(self, acc, ml, qkv, key_cache, value_cache, row_slot, row_pos, n_heads, n_kv_heads,
                          head_dim, window, split_len):
        n_split, group, C = acc.shape[2], n_heads // n_kv_heads, key_cache.shape[1]
        for r, (slot, pos) in enumerate(zip(row_slot, row_pos)):
            lo = max(0, pos - window + 1) if window else 0
            for s in range(n_split):
                ts = np.arange(lo + s * split_len, min(lo + (s + 1) * split_len, pos + 1))
                for h in range(n_heads):
                    if ts.size == 0:
                        acc[r, h, s], ml[r, h, s] = 0, (-np.inf, 0)
                        continue
                    kv = slice((h // group) * head_dim, (h // group + 1) * head_dim)
                    q = qkv[r, h * head_dim:(h + 1) * head_dim]
                    scores = key_cache[slot, ts % C, kv] @ q / np.float32(np.sqrt(head_dim))
                    m = scores.max()
                    p = np.exp(scores - m)
                    acc[r, h, s] = p @ value_cache[slot, ts % C, kv]
                    ml[r, h, s] = (m, p.sum())

    def attn_rows_merge(self, att, acc, ml, sinks):
        R, nh, _, D = acc.shape
        for r in range(R):
            for h in range(nh):
                m_s, l_s = ml[r, h, :, 0], ml[r, h, :, 1]
                m = max(m_s.max(), sinks[h])
                scale = np.exp(m_s - m)
                att[r, h * D:(h + 1) * D] = (scale @ acc[r, h]) / (scale @ l_s + np.exp(sinks[h] - m))

    def router_topk_rows(self, experts, weights, scores):
        for r in range(scores.shape[0]):
            experts[r], weights[r] = route(scores[r], experts.shape[1])

    def moe_align(self, pair_of_slot, slot_of_pair, tile_expert, experts, block_m, n_experts=None):
        pair_of_slot[...], slot_of_pair[...], tile_expert[...] = moe_align_host(experts, n_experts, block_m)

    def _grouped(self, out, a, rows_of, pair_of_slot, tile_expert, w, b, block_m, epilogue):
        for t, e in enumerate(tile_expert):
            for p in range(t * block_m, (t + 1) * block_m):
                pair = pair_of_slot[p]
                if e >= 0 and pair >= 0:
                    out[p] = epilogue(f32(w[e]) @ a[rows_of(p, pair)] + b[e])

    def gemm_grouped_swiglu(self, g, a, pair_of_slot, tile_expert, w1, b1, k, limit, block_m):
        self._grouped(g, a, lambda p, pair: pair // k, pair_of_slot, tile_expert, w1, b1, block_m,
                      lambda m: swiglu(m, limit))

    def gemm_grouped(self, y, g, pair_of_slot, tile_expert, w2, b2, block_m):
        self._grouped(y, g, lambda p, pair: p, pair_of_slot, tile_expert, w2, b2, block_m, lambda m: m)

    # the tensor-core kernels: activations as kernels/gemm_tc.hip splits them, products of the pieces' sum
    def split_pieces(self, ap, a):
        k = a.shape[1]
        rest = np.asarray(a, np.float32)
        for p in range(ap.shape[0]):
            ap[p] = 0
            ap[p, :, :k] = f32_to_bf16(rest)
            rest = rest - bf16_to_f32(ap[p, :, :k])

    @staticmethod
    def _joined(ap, k):
        return sum(bf16_to_f32(ap[p, :, :k]).astype(np.float64) for p in range(ap.shape[0])).astype(np.float32)

    def gemm_tc(self, c, ap, w, bias=None, accumulate=False):
        self.gemm(c, self._joined(ap, w.shape[1]), w, bias, accumulate)

    def gemm_tc_grouped_swiglu(self, gp, ap, pair_of_slot, tile_expert, w1, b1, k, limit):
        g = np.zeros((gp.shape[1], w1.shape[1] // 2), np.float32)
        self.gemm_grouped_swiglu(g, self._joined(ap, w1.shape[2]), pair_of_slot, tile_expert, w1, b1, k, limit, 64)
        self.split_pieces(gp, g)

    def gemm_tc_grouped(self, y, gp, pair_of_slot, tile_expert, w2, b2):
        self.gemm_grouped(y, self._joined(gp, w2.shape[2]), pair_of_slot, tile_expert, w2, b2, 64)

    def moe_combine(self, x, moe_out, y, weights, slot_of_pair):
        k = weights.shape[1]
        for r in range(x.shape[0]):
            total = np.zeros(x.shape[1], np.float32)
            for s in range(k):
                total += weights[r, s] * y[slot_of_pair[r * k + s]]
            moe_out[r] = total
        x += moe_out

    # the single-sequence kernels a one-row step uses
    def matvec(self, y, w, x, b=None, accumulate=False):
        self.gemm(y[None], x[None], w, b, accumulate)  # one row: y[None] is a view of y

    def router_topk(self, experts, weights, scores):
        experts[...], weights[...] = route(scores, experts.shape[0])

    def moe_mlp1_swiglu(self, g, w_mlp1, b_mlp1, t, experts, limit):
        for s, e in enumerate(experts):
            g[s] = swiglu(f32(w_mlp1[e]) @ t + b_mlp1[e], limit)

    def moe_mlp2_accumulate(self, x, moe_out, w_mlp2, b_mlp2, g, experts, weights):
        moe_out[...] = sum(wt * (f32(w_mlp2[e]) @ g[s] + b_mlp2[e]) for s, (e, wt) in enumerate(zip(experts, weights)))
        x += moe_out

    def argmax_rows(self, next_token, logits):
        next_token[...] = [int(np.argmax(row)) if np.isfinite(row).all() else -1 for row in logits]


class _Current(contextlib.nullcontext):
    """A stream or device: usable in `with`, and made current with `use()` (a no-op here)."""

    def use(self):
        return self


class FakeDevice:
    is_hip, arch, sync_check = False, "sm_90", False
    stream = _Current()
    cuda_device = _Current()

    def describe(self):
        return "numpy stand-in"

    def pinned(self, shape, dtype):
        return np.zeros(shape, dtype)

    def upload(self, dst, host):
        dst[...] = host

    def download(self, src, out):
        out[...] = src
        return out


class FakeEngine:
    """What BatchedEngine needs of a CupyEngine: config, device weights (MoE and, where lossless, the
    dense GEMM weights as bf16 bits), kernels, device."""

    def __init__(self, weights):
        self.config, self.device, self.kernels = weights.config, FakeDevice(), FakeKernels()
        self.finished = False
        arrays = {}
        for name in TENSOR_NAMES:
            values = weights.f32(name)
            lossless = np.array_equal(bf16_to_f32(f32_to_bf16(values)), values)
            bf16 = name in MOE_WEIGHTS or (name in DENSE_GEMM_WEIGHTS and lossless)  # as gpu/weights.py
            arrays[name] = _host(f32_to_bf16(values) if bf16 else values)
        layers = [types.SimpleNamespace(**{n: arrays[n][l] for n in LAYER_TENSORS})
                  for l in range(self.config.n_layers)]
        self.w = types.SimpleNamespace(layer=lambda l: layers[l], **{n: arrays[n] for n in TENSOR_NAMES})

    def check_not_finished(self):
        assert not self.finished, "the engine has been finished"
