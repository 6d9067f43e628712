// moe.hip: router top-k, and the expert MLPs with BF16 weights (upcast to FP32 before every FMA).
#include "common.h"

// Top-k experts by score, ties to the lower index, and softmax weights over the k chosen.
// One thread: E <= a few hundred, k <= E; a serial scan keeps the tie rule obvious.
extern "C" __global__ void router_topk_f32(int* __restrict__ experts, float* __restrict__ weights,
                                           const float* __restrict__ scores, int n_experts, int k) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  for (int s = 0; s < k; ++s) {
    int best = -1;
    for (int e = 0; e < n_experts; ++e) {
      bool taken = false;
      for (int j = 0; j < s; ++j) taken |= experts[j] == e;
      if (!taken && (best < 0 || scores[e] > scores[best])) best = e;
    }
    experts[s] = best;
  }
  float m = scores[experts[0]], sum = 0.0f;  // the first chosen is the largest
  for (int s = 0; s < k; ++s) {
    weights[s] = expf(scores[experts[s]] - m);
    sum += weights[s];
  }
  for (int s = 0; s < k; ++s) weights[s] /= sum;
}

// For each chosen expert slot s and j < I: the gate row 2j and up row 2j + 1 of w_mlp1[e] (bf16),
// plus bias, then SwiGLU: gate = min(gate, limit), up = clamp(up, +-limit),
// g = gate * sigmoid(1.702 gate) * (up + 1). Grid (ceil(I / WARPS_PER_BLOCK), k): a warp per (s, j).
extern "C" __global__ void moe_mlp1_swiglu_bf16w(float* __restrict__ g, const unsigned short* __restrict__ w_mlp1,
                                                 const float* __restrict__ b_mlp1, const float* __restrict__ t,
                                                 const int* __restrict__ experts, int hidden, int inter,
                                                 float limit, int vec8) {
  const int j = blockIdx.x * WARPS_PER_BLOCK + threadIdx.x / WARP_SIZE, s = blockIdx.y;
  if (j >= inter) return;
  const size_t e = (size_t)experts[s];
  const unsigned short* gate_row = w_mlp1 + (e * 2 * inter + 2 * (size_t)j) * hidden;
  float gate = warp_dot_bf16(gate_row, t, hidden, vec8);
  float up = warp_dot_bf16(gate_row + hidden, t, hidden, vec8);
  if (threadIdx.x % WARP_SIZE == 0) {
    gate = fminf(gate + b_mlp1[e * 2 * inter + 2 * j], limit);
    up = fmaxf(fminf(up + b_mlp1[e * 2 * inter + 2 * j + 1], limit), -limit);
    const float sig = 1.0f / (1.0f + expf(-1.702f * gate));
    g[(size_t)s * inter + j] = gate * sig * (up + 1.0f);
  }
}

// x[h] += sum_s weight[s] * (w_mlp2[e_s, h, :] . g[s, :] + b_mlp2[e_s, h]), also written to moe_out.
// Slots are summed in order, as the reference does. One warp per h, all slots.
extern "C" __global__ void moe_mlp2_accumulate_bf16w(float* __restrict__ x, float* __restrict__ moe_out,
                                                     const unsigned short* __restrict__ w_mlp2,
                                                     const float* __restrict__ b_mlp2, const float* __restrict__ g,
                                                     const int* __restrict__ experts,
                                                     const float* __restrict__ weights, int k, int hidden,
                                                     int inter, int vec8) {
  const int h = blockIdx.x * WARPS_PER_BLOCK + threadIdx.x / WARP_SIZE;
  if (h >= hidden) return;
  float total = 0.0f;
  for (int s = 0; s < k; ++s) {
    const size_t e = (size_t)experts[s];
    const float y = warp_dot_bf16(w_mlp2 + (e * hidden + h) * inter, g + (size_t)s * inter, inter, vec8);
    total += weights[s] * (y + b_mlp2[e * hidden + h]);
  }
  if (threadIdx.x % WARP_SIZE == 0) {
    moe_out[h] = total;
    x[h] += total;
  }
}
