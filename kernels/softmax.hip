// softmax.hip: the greedy token of each row of logits (the argmax; the softmaxes are fused into attention and routing).
#include "common.h"

// (value, index) a beats (value, index) b: larger value, or the same value at a lower index.
GETP_DEVICE bool argmax_better(float av, int ai, float bv, int bi) { return av > bv || (av == bv && ai < bi); }

// Batched engine: next_token[r] = first index of the maximum of logits[r, :n], -1 if the row holds a
// NaN or an infinity (the engine stops there, as the single-sequence decode loop does). Grid (R,): one block per row; each thread scans its indices in increasing order, then a
// butterfly over (value, index) pairs (deterministic: a total order without NaN).
// vec4: n % 4 == 0 and logits 16-byte aligned.
extern "C" __global__ void argmax_rows_f32(int* __restrict__ next_token, const float* __restrict__ logits, int n,
                                           int vec4) {
  __shared__ float best_v[WARPS_PER_BLOCK];
  __shared__ int best_i[WARPS_PER_BLOCK];
  __shared__ int any_nan;
  const float* row = logits + (size_t)blockIdx.x * n;
  const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
  if (threadIdx.x == 0) any_nan = 0;
  float bv = GETP_NEG_INF;
  int bi = 0x7fffffff, nan_seen = 0;
  if (vec4) {
    const float4* row4 = (const float4*)row;
    for (int j = threadIdx.x; j < n / 4; j += blockDim.x) {
      const float4 v = row4[j];
      const float e[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        if (!is_finite_f32(e[k])) nan_seen = 1;
        else if (argmax_better(e[k], 4 * j + k, bv, bi)) { bv = e[k]; bi = 4 * j + k; }
      }
    }
  } else {
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      const float e = row[i];
      if (!is_finite_f32(e)) nan_seen = 1;
      else if (argmax_better(e, i, bv, bi)) { bv = e; bi = i; }
    }
  }
  for (int offset = WARP_SIZE / 2; offset > 0; offset >>= 1) {
    const float ov = SHFL_XOR(bv, offset);
    const int oi = SHFL_XOR(bi, offset);
    if (argmax_better(ov, oi, bv, bi)) { bv = ov; bi = oi; }
  }
  __syncthreads();  // any_nan = 0 is written
  if (nan_seen) any_nan = 1;
  if (lane == 0) {
    best_v[warp] = bv;
    best_i[warp] = bi;
  }
  __syncthreads();
  if (warp == 0) {
    const int nw = (int)(blockDim.x / WARP_SIZE);
    bv = lane < nw ? best_v[lane] : GETP_NEG_INF;
    bi = lane < nw ? best_i[lane] : 0x7fffffff;
    for (int offset = WARP_SIZE / 2; offset > 0; offset >>= 1) {
      const float ov = SHFL_XOR(bv, offset);
      const int oi = SHFL_XOR(bi, offset);
      if (argmax_better(ov, oi, bv, bi)) { bv = ov; bi = oi; }
    }
    if (lane == 0) next_token[blockIdx.x] = any_nan ? -1 : bi;
  }
}
