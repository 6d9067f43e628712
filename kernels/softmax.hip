// softmax.hip: the greedy token of each row of logits (the argmax; the softmaxes are fused into attention and routing).
#include "common.h"

// (value, index) a beats (value, index) b: larger value, or the same value at a lower index.
GETP_DEVICE bool argmax_better(float av, int ai, float bv, int bi) { return av > bv || (av == bv && ai < bi); }

// Batched engine: next_token[r] = first index of the maximum of logits[r, :n], -1 if the row holds a
// NaN or an infinity (the engine stops there, as the single-sequence decode loop does). Grid (R,): one block per row; each thread scans its indices in increasing order, then a
// butterfly over (value, index) pairs (deterministic: a total order without NaN).
// vec4: n % 4 == 0 and logits 16-byte aligned.
#define ARGMAX_IN_FLIGHT 16
// The comparisons' loop, which breaks at the row's end: nvcc unrolls it (the machine code the GPU tests and
// benchmarks ran, tenth session); hipcc cannot unroll a loop that breaks (-Wpass-failed under -Werror), so
// there it is left to the compiler.
#ifdef GETP_HIP
#define ARGMAX_UNROLL_BREAKING
#else
#define ARGMAX_UNROLL_BREAKING _Pragma("unroll")
#endif
extern "C" __global__ void argmax_rows_f32(int* __restrict__ next_token, const float* __restrict__ logits, int n,
                                           int vec4) {
  grid_begin();
  __shared__ float best_v[WARPS_PER_BLOCK];
  __shared__ int best_i[WARPS_PER_BLOCK];
  __shared__ int any_nan;
  const float* row = logits + (size_t)blockIdx.x * n;
  const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
  if (threadIdx.x == 0) any_nan = 0;
  float bv = GETP_NEG_INF;
  int bi = 0x7fffffff, nan_seen = 0;
  if (vec4) {
    // ARGMAX_IN_FLIGHT 16-byte loads a thread issued before the first is compared: at one row the block's chain
    // of loads is the kernel's time (ncu, tenth session, H100: 84 us over the 20b's 201,088 logits when every
    // iteration waited for its own load). The thread still sees its indices in increasing order.
    const float4* row4 = (const float4*)row;
    const int n4 = n / 4;
    for (int j0 = threadIdx.x; j0 < n4; j0 += ARGMAX_IN_FLIGHT * blockDim.x) {
      float4 v[ARGMAX_IN_FLIGHT];
#pragma unroll
      for (int u = 0; u < ARGMAX_IN_FLIGHT; ++u)
        if (j0 + u * (int)blockDim.x < n4) v[u] = row4[j0 + u * blockDim.x];
      ARGMAX_UNROLL_BREAKING
      for (int u = 0; u < ARGMAX_IN_FLIGHT; ++u) {
        const int j = j0 + u * blockDim.x;
        if (j >= n4) break;
        const float e[4] = {v[u].x, v[u].y, v[u].z, v[u].w};
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          if (!is_finite_f32(e[k])) nan_seen = 1;
          else if (argmax_better(e[k], 4 * j + k, bv, bi)) { bv = e[k]; bi = 4 * j + k; }
        }
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
