// attention.hip: KV-cache write, scores with sinks and the sliding window, weighted sum of values.
// The softmax between scores and weighted sum is softmax.hip's, over pos + 2 entries per head.
#include "common.h"

// Copy this position's rotated k and its v from the qkv vector into the layer's caches.
extern "C" __global__ void kv_cache_write_f32(float* __restrict__ key_cache, float* __restrict__ value_cache,
                                              const float* __restrict__ qkv, int q_dim, int kv_dim, int pos) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= kv_dim) return;
  key_cache[(size_t)pos * kv_dim + i] = qkv[q_dim + i];
  value_cache[(size_t)pos * kv_dim + i] = qkv[q_dim + kv_dim + i];
}

// scores[h, t] = q_h . k_t / sqrt(D) for t <= pos; -inf where window > 0 and pos - t >= window;
// scores[h, pos + 1] = sinks[h]. Grid (ceil((pos + 1) / WARPS_PER_BLOCK), n_heads): a warp per (h, t).
extern "C" __global__ void attn_scores_f32(float* __restrict__ scores, const float* __restrict__ q,
                                           const float* __restrict__ key_cache, const float* __restrict__ sinks,
                                           int pos, int head_dim, int kv_dim, int kv_group, int window,
                                           int scores_stride) {
  const int h = blockIdx.y, lane = threadIdx.x % WARP_SIZE;
  const int t = blockIdx.x * WARPS_PER_BLOCK + threadIdx.x / WARP_SIZE;
  float* row = scores + (size_t)h * scores_stride;
  if (blockIdx.x == 0 && threadIdx.x == 0) row[pos + 1] = sinks[h];
  if (t > pos) return;
  if (window > 0 && pos - t >= window) {
    if (lane == 0) row[t] = GETP_NEG_INF;
    return;
  }
  const float* qh = q + (size_t)h * head_dim;
  const float* kt = key_cache + (size_t)t * kv_dim + (size_t)(h / kv_group) * head_dim;
  float s = 0.0f;
  for (int d = lane; d < head_dim; d += WARP_SIZE) s += qh[d] * kt[d];
  s = warp_sum(s);
  if (lane == 0) row[t] = s / sqrtf((float)head_dim);
}

// Weighted sum of values in two passes, so that long contexts spread over many blocks: block (c, h)
// sums the positions of chunk c, [c * chunk, min(pos + 1, (c + 1) * chunk)), into
// partial[h, c, :]; attn_combine_f32 adds the chunks. Thread (slice, d) of a block takes positions
// slice, slice + slices, ... of the chunk; slices = blockDim.x / head_dim.
extern "C" __global__ void attn_weighted_sum_partial_f32(float* __restrict__ partial, const float* __restrict__ probs,
                                                         const float* __restrict__ value_cache, int pos, int head_dim,
                                                         int kv_dim, int kv_group, int probs_stride, int chunk) {
  __shared__ float sums[BLOCK_SIZE];
  const int c = blockIdx.x, h = blockIdx.y, slices = blockDim.x / head_dim;
  const int d = threadIdx.x % head_dim, slice = threadIdx.x / head_dim;
  const int t_end = min(pos + 1, (c + 1) * chunk);
  float acc = 0.0f;
  if (slice < slices) {
    const float* p = probs + (size_t)h * probs_stride;
    const float* v = value_cache + (size_t)(h / kv_group) * head_dim + d;
    for (int t = c * chunk + slice; t < t_end; t += slices) acc += p[t] * v[(size_t)t * kv_dim];
  }
  sums[threadIdx.x] = acc;
  __syncthreads();
  if (slice == 0) {
    float sum = 0.0f;
    for (int s = 0; s < slices; ++s) sum += sums[s * head_dim + d];
    partial[((size_t)h * gridDim.x + c) * head_dim + d] = sum;
  }
}

// out[h, d] = sum over chunks c < n_chunks of partial[h, c, d], in chunk order.
extern "C" __global__ void attn_combine_f32(float* __restrict__ out, const float* __restrict__ partial, int n_heads,
                                            int head_dim, int n_chunks) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n_heads * head_dim) return;
  const int h = i / head_dim, d = i % head_dim;
  float sum = 0.0f;
  for (int c = 0; c < n_chunks; ++c) sum += partial[((size_t)h * n_chunks + c) * head_dim + d];
  out[i] = sum;
}
