"""An independent float64 implementation of spec section 2, written from the spec with plain loops.

It shares nothing with `cupy_getp.reference` but the weights: different code, double precision
everywhere, so agreement means both read the spec the same way and the reference's float32 is sound.
"""

from __future__ import annotations

import math

import numpy as np


class Oracle64:
    def __init__(self, weights):
        self.w = weights
        self.c = c = weights.config
        self.k_cache = np.zeros((c.n_layers, c.seq_len, c.kv_dim))
        self.v_cache = np.zeros((c.n_layers, c.seq_len, c.kv_dim))
        self.trace: list[dict] = []

    def t(self, name, *index):
        return self.w.f32(name, *index).astype(np.float64)

    def rmsnorm(self, x, weight):
        return weight * x / math.sqrt(sum(v * v for v in x) / len(x) + 1e-5)

    def cos_sin(self, pos):
        c, half = self.c, self.c.head_dim // 2
        cos, sin = np.zeros(half), np.zeros(half)
        s, theta = c.rope_scaling_factor, c.rope_theta
        concentration = 0.1 * math.log(s) + 1 if s > 1 else 1.0
        low = half * math.log(c.initial_context_length / (32 * 2 * math.pi)) / math.log(theta)
        high = half * math.log(c.initial_context_length / (1 * 2 * math.pi)) / math.log(theta)
        for i in range(half):
            freq = theta ** (2 * i / c.head_dim)
            if s > 1:
                ramp = min(max((i - low) / (high - low), 0.0), 1.0)
                inv = (1 / (s * freq)) * ramp + (1 / freq) * (1 - ramp)
            else:
                inv = 1 / freq
            cos[i], sin[i] = math.cos(pos * inv) * concentration, math.sin(pos * inv) * concentration
        return cos, sin

    def rotate(self, head, cos, sin):
        half = len(head) // 2
        out = head.copy()
        for i in range(half):
            x1, x2 = head[i], head[half + i]
            out[i] = x1 * cos[i] - x2 * sin[i]
            out[half + i] = x2 * cos[i] + x1 * sin[i]
        return out

    def forward(self, token, pos):
        c, D = self.c, self.c.head_dim
        x = self.t("embedding", token)
        cos, sin = self.cos_sin(pos)
        self.trace = []
        for l in range(c.n_layers):
            rec = {}
            t = self.rmsnorm(x, self.t("rms_attn_w", l))
            qkv = self.t("w_qkv", l) @ t + self.t("b_qkv", l)
            q = qkv[: c.q_dim]
            k = qkv[c.q_dim: c.q_dim + c.kv_dim]
            v = qkv[c.q_dim + c.kv_dim:]
            q = np.concatenate([self.rotate(q[h * D:(h + 1) * D], cos, sin) for h in range(c.n_attn_heads)])
            k = np.concatenate([self.rotate(k[h * D:(h + 1) * D], cos, sin) for h in range(c.n_kv_heads)])
            self.k_cache[l, pos], self.v_cache[l, pos] = k, v
            att = np.zeros(c.q_dim)
            sinks = self.t("attn_sinks", l)
            for h in range(c.n_attn_heads):
                g = h // (c.n_attn_heads // c.n_kv_heads)
                scores = []
                for s_pos in range(pos + 1):
                    kt = self.k_cache[l, s_pos, g * D:(g + 1) * D]
                    score = float(np.dot(q[h * D:(h + 1) * D], kt)) / math.sqrt(D)
                    if c.sliding_window > 0 and l % 2 == 0 and pos - s_pos >= c.sliding_window:
                        score = -math.inf
                    scores.append(score)
                scores.append(sinks[h])
                m = max(scores)
                e = [math.exp(s - m) for s in scores]
                total = sum(e)
                for s_pos in range(pos + 1):
                    att[h * D:(h + 1) * D] += e[s_pos] / total * self.v_cache[l, s_pos, g * D:(g + 1) * D]
            x = x + self.t("w_o", l) @ att + self.t("b_o", l)
            rec["attn_out"], rec["x_attn"] = att, x.copy()

            t = self.rmsnorm(x, self.t("rms_ffn_w", l))
            r = self.t("w_router", l) @ t + self.t("b_router", l)
            chosen = sorted(range(c.n_experts), key=lambda e_: (-r[e_], e_))[: c.experts_per_token]
            top = [r[e_] for e_ in chosen]
            ex = [math.exp(v_ - max(top)) for v_ in top]
            agg = np.zeros(c.hidden_dim)
            for e_, weight in zip(chosen, [v_ / sum(ex) for v_ in ex]):
                m = self.t("w_mlp1", l, e_) @ t + self.t("b_mlp1", l, e_)
                gate = np.minimum(m[0::2], c.swiglu_limit)
                up = np.clip(m[1::2], -c.swiglu_limit, c.swiglu_limit)
                g_ = gate / (1 + np.exp(-1.702 * gate)) * (up + 1)
                agg += weight * (self.t("w_mlp2", l, e_) @ g_ + self.t("b_mlp2", l, e_))
            x = x + agg
            rec.update(router=r, experts=np.array(chosen), moe_out=agg, x_moe=x.copy())
            self.trace.append(rec)
        x = self.rmsnorm(x, self.t("rms_out_w"))
        return self.t("out") @ x
