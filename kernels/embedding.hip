// embedding.hip: x = embedding[token].
#include "common.h"

extern "C" __global__ void embedding_f32(float* __restrict__ x, const float* __restrict__ embedding, int token,
                                         int hidden) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < hidden) x[i] = embedding[(size_t)token * hidden + i];
}
