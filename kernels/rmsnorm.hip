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

// One row of rmsnorm_split_rows: out_row (n) = rmsnorm of xr (n) with w, its pieces at pieces + r lda, planes
// `plane` apart (zeros in columns n..lda-1). Shared by the kernels below: the same bits.
GETP_DEVICE void rmsnorm_split_row(float* __restrict__ out_row, unsigned short* __restrict__ pieces, size_t plane,
                                   size_t r, const float* __restrict__ xr, const float* __restrict__ w, int n,
                                   int lda, int n_pieces, float* scratch) {
  const float inv_rms = rmsnorm_inv(xr, n, scratch);
  for (int i = threadIdx.x; i < lda; i += blockDim.x) {
    const float v = i < n ? w[i] * (inv_rms * xr[i]) : 0.0f;
    if (i < n) out_row[i] = v;
    unsigned piece[3];
    tc_split_n(v, n_pieces, piece);
    for (int p = 0; p < n_pieces; ++p) pieces[p * plane + r * lda + i] = (unsigned short)piece[p];
  }
}

// The batched engine's rmsnorm folded into the split that the tensor-core products read: out (R, n) =
// rmsnorm_rows_f32's values, and pieces (n_pieces, R, lda) bf16 = tc_split_rows's pieces of them (zeros in
// columns n..lda-1): the same bits as the two kernels in a row, one launch and one pass over out instead of
// two. Grid (R,): one block per row.
extern "C" __global__ void rmsnorm_split_rows(float* __restrict__ out, unsigned short* __restrict__ pieces,
                                              const float* __restrict__ x, const float* __restrict__ w, int n,
                                              int lda, int n_pieces) {
  __shared__ float scratch[WARPS_PER_BLOCK];
  const size_t r = blockIdx.x;
  rmsnorm_split_row(out + r * n, pieces, (size_t)gridDim.x * lda, r, x + r * n, w, n, lda, n_pieces, scratch);
}

// The MoE's combine (moe.hip's moe_combine: x += moe_out) and the next rmsnorm_split_rows in one launch, the
// bits of the two in a row: row r's new x is kept in shared memory (n <= COMBINE_NORM_MAX_HIDDEN) and the
// rmsnorm reads it there. Grid (R,): one block per row, so a thread combines COMBINE_COLUMNS columns at a time
// (their y loads in flight together: at one row this block is the whole GPU's work). top_k <= MOE_MAX_K.
#define COMBINE_COLUMNS 4
extern "C" __global__ void moe_combine_rmsnorm_split(float* __restrict__ x, float* __restrict__ moe_out,
                                                     const float* __restrict__ y, const float* __restrict__ weights,
                                                     const int* __restrict__ padded_of_pair, int top_k,
                                                     float* __restrict__ out, unsigned short* __restrict__ pieces,
                                                     const float* __restrict__ w, int n, int lda, int n_pieces) {
  __shared__ float scratch[WARPS_PER_BLOCK];
  __shared__ float xs[COMBINE_NORM_MAX_HIDDEN];
  __shared__ int slot_pos[MOE_MAX_K];
  __shared__ float slot_w[MOE_MAX_K];
  const size_t r = blockIdx.x;
  const int stride = blockDim.x;
  if (threadIdx.x < top_k) {
    slot_pos[threadIdx.x] = padded_of_pair[r * top_k + threadIdx.x];
    slot_w[threadIdx.x] = weights[r * top_k + threadIdx.x];
  }
  __syncthreads();
  for (int h0 = threadIdx.x; h0 < n; h0 += COMBINE_COLUMNS * stride) {
    float total[COMBINE_COLUMNS];
    moe_combine_sum<COMBINE_COLUMNS>(total, slot_pos, slot_w, y, h0, stride, n, top_k);
#pragma unroll
    for (int j = 0; j < COMBINE_COLUMNS; ++j) {
      const int h = h0 + j * stride;
      if (h < n) {
        moe_out[r * n + h] = total[j];
        xs[h] = x[r * n + h] + total[j];
        x[r * n + h] = xs[h];
      }
    }
  }
  __syncthreads();
  rmsnorm_split_row(out + r * n, pieces, (size_t)gridDim.x * lda, r, xs, w, n, lda, n_pieces, scratch);
}
