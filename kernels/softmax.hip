// softmax.hip: in-place softmax of each row x[row * stride + i], i < n. One block per row.
#include "common.h"

extern "C" __global__ void softmax_rows_f32(float* __restrict__ x, int n, int stride) {
  __shared__ float scratch[WARPS_PER_BLOCK];
  float* row = x + (size_t)blockIdx.x * stride;
  float m = GETP_NEG_INF;
  for (int i = threadIdx.x; i < n; i += blockDim.x) m = fmaxf(m, row[i]);
  m = block_max(m, scratch);
  float sum = 0.0f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const float e = expf(row[i] - m);  // -inf (masked) gives 0
    row[i] = e;
    sum += e;
  }
  sum = block_sum(sum, scratch);
  const float inv = 1.0f / sum;
  for (int i = threadIdx.x; i < n; i += blockDim.x) row[i] *= inv;
}
