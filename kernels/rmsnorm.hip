// rmsnorm.hip: out = w * x / sqrt(mean(x^2) + 1e-5), FP32 accumulation. One block per vector.
#include "common.h"

// 1 / sqrt(mean(x^2) + 1e-5) of one vector, to every thread of the block (one order of additions for every
// kernel of this file: rmsnorm_split_rows gives rmsnorm_rows_f32's bits through it).
GETP_DEVICE float rmsnorm_inv(const float* __restrict__ x, int n, float* scratch) {
  float ss = 0.0f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) ss += x[i] * x[i];
  ss = block_sum(ss, scratch);
  return 1.0f / sqrtf(ss / (float)n + 1e-5f);
}

GETP_DEVICE void rmsnorm_block(float* __restrict__ out, const float* __restrict__ x, const float* __restrict__ w,
                               int n, float* scratch) {
  const float inv_rms = rmsnorm_inv(x, n, scratch);
  for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = w[i] * (inv_rms * x[i]);
}

// Batched engine: every row of (R, n) out and x. Grid (R,): one block per row.
extern "C" __global__ void rmsnorm_rows_f32(float* __restrict__ out, const float* __restrict__ x,
                                            const float* __restrict__ w, int n) {
  __shared__ float scratch[WARPS_PER_BLOCK];
  rmsnorm_block(out + (size_t)blockIdx.x * n, x + (size_t)blockIdx.x * n, w, n, scratch);
}

// The batched engine's rmsnorm folded into the split that the tensor-core products read: out (R, n) =
// rmsnorm_rows_f32's values, and pieces (n_pieces, R, lda) bf16 = tc_split_rows's pieces of them (zeros in
// columns n..lda-1): the same bits as the two kernels in a row, one launch and one pass over out instead of
// two. Grid (R,): one block per row.
extern "C" __global__ void rmsnorm_split_rows(float* __restrict__ out, unsigned short* __restrict__ pieces,
                                              const float* __restrict__ x, const float* __restrict__ w, int n,
                                              int lda, int n_pieces) {
  __shared__ float scratch[WARPS_PER_BLOCK];
  const size_t r = blockIdx.x, plane = (size_t)gridDim.x * lda;
  const float* xr = x + r * n;
  const float inv_rms = rmsnorm_inv(xr, n, scratch);
  for (int i = threadIdx.x; i < lda; i += blockDim.x) {
    const float v = i < n ? w[i] * (inv_rms * xr[i]) : 0.0f;
    if (i < n) out[r * n + i] = v;
    unsigned piece[3];
    tc_split_n(v, n_pieces, piece);
    for (int p = 0; p < n_pieces; ++p) pieces[p * plane + r * lda + i] = (unsigned short)piece[p];
  }
}
