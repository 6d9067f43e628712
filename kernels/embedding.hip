// embedding.hip: x = embedding[token].
#include "common.h"

// Row blockIdx.x of x = embedding[token], by the block's threads.
GETP_DEVICE void embedding_row(float* __restrict__ x, const float* __restrict__ embedding, int token, int hidden) {
  const float* src = embedding + (size_t)token * hidden;
  float* dst = x + (size_t)blockIdx.x * hidden;
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = src[i];
}

// Batched engine: x[r] = embedding[tokens[r]]. Grid (R,): one block per row.
extern "C" __global__ void embedding_rows_f32(float* __restrict__ x, const float* __restrict__ embedding,
                                              const int* __restrict__ tokens, int hidden) {
  grid_begin();
  embedding_row(x, embedding, tokens[blockIdx.x], hidden);
}

// The same with tokens fed on the device (overlapped steps: a step launched before the host has read the tokens
// of the step before): row r's token is last_tokens[sources[r]], the token row sources[r] of that step sampled,
// where sources[r] >= 0, else tokens[r].
extern "C" __global__ void embedding_rows_fed_f32(float* __restrict__ x, const float* __restrict__ embedding,
                                                  const int* __restrict__ tokens, const int* __restrict__ sources,
                                                  const int* __restrict__ last_tokens, int hidden) {
  grid_begin();
  const int source = sources[blockIdx.x];
  embedding_row(x, embedding, source >= 0 ? last_tokens[source] : tokens[blockIdx.x], hidden);
}
