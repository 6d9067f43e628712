// rope.hip: rotary embedding in place on n_heads consecutive heads of head_dim.
// Pairs are (i, i + head_dim/2), not adjacent elements; cos/sin (head_dim/2,) come from the host
// per step (YaRN concentration included), as the seed asks.
#include "common.h"

extern "C" __global__ void rope_f32(float* __restrict__ x, const float* __restrict__ cos_t,
                                    const float* __restrict__ sin_t, int n_heads, int head_dim) {
  const int half = head_dim / 2;
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= n_heads * half) return;
  const int h = idx / half, i = idx % half;
  float* head = x + (size_t)h * head_dim;
  const float x1 = head[i], x2 = head[half + i];
  head[i] = x1 * cos_t[i] - x2 * sin_t[i];
  head[half + i] = x2 * cos_t[i] + x1 * sin_t[i];
}
