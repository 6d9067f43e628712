// rmsnorm.hip: out = w * x / sqrt(mean(x^2) + 1e-5), FP32 accumulation. One block per vector.
#include "common.h"

extern "C" __global__ void rmsnorm_f32(float* __restrict__ out, const float* __restrict__ x,
                                       const float* __restrict__ w, int n) {
  __shared__ float scratch[WARPS_PER_BLOCK];
  float ss = 0.0f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) ss += x[i] * x[i];
  ss = block_sum(ss, scratch);
  const float inv_rms = 1.0f / sqrtf(ss / (float)n + 1e-5f);
  for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = w[i] * (inv_rms * x[i]);
}

// Batched engine: out[i] = rmsnorm(x[src]) with src = rows[i] (the unembedding's gather) or i when rows
// is NULL. Grid (M,): one block per output row; the same formula as rmsnorm_f32.
extern "C" __global__ void rmsnorm_rows_f32(float* __restrict__ out, const float* __restrict__ x,
                                            const float* __restrict__ w, const int* __restrict__ rows, int n) {
  __shared__ float scratch[WARPS_PER_BLOCK];
  const int src = rows ? rows[blockIdx.x] : (int)blockIdx.x;
  const float* xr = x + (size_t)src * n;
  float* outr = out + (size_t)blockIdx.x * n;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) ss += xr[i] * xr[i];
  ss = block_sum(ss, scratch);
  const float inv_rms = 1.0f / sqrtf(ss / (float)n + 1e-5f);
  for (int i = threadIdx.x; i < n; i += blockDim.x) outr[i] = w[i] * (inv_rms * xr[i]);
}
