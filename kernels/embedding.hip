// embedding.hip: x = embedding[token].
#include "common.h"

// Batched engine: x[r] = embedding[tokens[r]]. Grid (R,): one block per row.
extern "C" __global__ void embedding_rows_f32(float* __restrict__ x, const float* __restrict__ embedding,
                                              const int* __restrict__ tokens, int hidden) {
  grid_begin();
  const float* src = embedding + (size_t)tokens[blockIdx.x] * hidden;
  float* dst = x + (size_t)blockIdx.x * hidden;
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = src[i];
}
