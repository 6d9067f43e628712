// rmsnorm.hip: out = w * x / sqrt(mean(x^2) + 1e-5), FP32 accumulation. One block per vector.
#include "common.h"

GETP_DEVICE void rmsnorm_block(float* __restrict__ out, const float* __restrict__ x, const float* __restrict__ w,
                               int n, float* scratch) {
  float ss = 0.0f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) ss += x[i] * x[i];
  ss = block_sum(ss, scratch);
  const float inv_rms = 1.0f / sqrtf(ss / (float)n + 1e-5f);
  for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = w[i] * (inv_rms * x[i]);
}

extern "C" __global__ void rmsnorm_f32(float* __restrict__ out, const float* __restrict__ x,
                                       const float* __restrict__ w, int n) {
  __shared__ float scratch[WARPS_PER_BLOCK];
  rmsnorm_block(out, x, w, n, scratch);
}

// Batched engine: every row of (R, n) out and x. Grid (R,): one block per row.
extern "C" __global__ void rmsnorm_rows_f32(float* __restrict__ out, const float* __restrict__ x,
                                            const float* __restrict__ w, int n) {
  __shared__ float scratch[WARPS_PER_BLOCK];
  rmsnorm_block(out + (size_t)blockIdx.x * n, x + (size_t)blockIdx.x * n, w, n, scratch);
}
