// rope.hip: rotary embedding of the q and k heads with the KV-cache write, per row. Pairs are (i, i + head_dim/2),
// not adjacent elements; the cos/sin tables (YaRN concentration included) are computed on the host once, as
// docs/spec.md asks.
#include "common.h"

#define ROPE_IN_FLIGHT 12  // (i, i + half) pairs a thread rotates at a time: 12 x 256 = 3072 (the 20b: 72 heads x 32)

// Batched engine: per row r (grid (R,)), position p = row_pos[r]: rotate the q and k heads of qkv[r] in
// place with row p of the (n_pos, head_dim/2) cos/sin tables, write the rotated k heads to
// key_cache[row_slot[r], p % C] and copy the v heads to value_cache at the same place. Caches are
// (S + 1, C, n_kv_heads * head_dim): FP32 (rope_kv_write_f32) or BF16 (rope_kv_write_bf16kv: each value
// rounded to nearest even, as cupy_getp/bf16.py; qkv keeps the FP32 values).
GETP_DEVICE float kv_store(float v, float) { return v; }
GETP_DEVICE unsigned short kv_store(float v, unsigned short) { return f32_to_bf16_rne(v); }

template <typename KV>
GETP_DEVICE void rope_kv_write(float* __restrict__ qkv, const float* __restrict__ cos_t,
                               const float* __restrict__ sin_t, KV* __restrict__ key_cache,
                               KV* __restrict__ value_cache, const int* __restrict__ row_slot,
                               const int* __restrict__ row_pos, int n_heads, int n_kv_heads, int head_dim,
                               int cache_len) {
  const int r = blockIdx.x, half = head_dim / 2;
  const int pos = row_pos[r];
  const int q_dim = n_heads * head_dim, kv_dim = n_kv_heads * head_dim;
  float* row = qkv + (size_t)r * (q_dim + 2 * kv_dim);
  const float* c = cos_t + (size_t)pos * half;
  const float* s = sin_t + (size_t)pos * half;
  const size_t at = ((size_t)row_slot[r] * cache_len + pos % cache_len) * kv_dim;
  // The v heads' copy first (its stores go to value_cache, not qkv, so the rotation's loads need not wait for
  // them), then the rotation ROPE_IN_FLIGHT pairs a thread at a time: every pair's loads issued before the first
  // store. At one row the block's chain of loads is the kernel's time (ncu, tenth session, H100: 5.7 us a launch
  // when each pair waited for its own loads). A pair is read and written by its own thread only.
  for (int i = threadIdx.x; i < kv_dim; i += blockDim.x) value_cache[at + i] = kv_store(row[q_dim + kv_dim + i], KV());
  const int pairs = (n_heads + n_kv_heads) * half;
  for (int idx0 = threadIdx.x; idx0 < pairs; idx0 += ROPE_IN_FLIGHT * blockDim.x) {
    float x1[ROPE_IN_FLIGHT], x2[ROPE_IN_FLIGHT], cu[ROPE_IN_FLIGHT], su[ROPE_IN_FLIGHT];
    #pragma unroll
    for (int u = 0; u < ROPE_IN_FLIGHT; ++u) {
      const int idx = idx0 + u * blockDim.x;
      if (idx >= pairs) break;
      const int h = idx / half, i = idx % half;  // heads h >= n_heads are the k heads
      x1[u] = row[(size_t)h * head_dim + i];
      x2[u] = row[(size_t)h * head_dim + half + i];
      cu[u] = c[i];
      su[u] = s[i];
    }
    #pragma unroll
    for (int u = 0; u < ROPE_IN_FLIGHT; ++u) {
      const int idx = idx0 + u * blockDim.x;
      if (idx >= pairs) break;
      const int h = idx / half, i = idx % half;
      float* head = row + (size_t)h * head_dim;
      const float y1 = x1[u] * cu[u] - x2[u] * su[u], y2 = x2[u] * cu[u] + x1[u] * su[u];
      head[i] = y1;
      head[half + i] = y2;
      if (h >= n_heads) {
        KV* k = key_cache + at + (size_t)(h - n_heads) * head_dim;
        k[i] = kv_store(y1, KV());
        k[half + i] = kv_store(y2, KV());
      }
    }
  }
}

#define ROPE_KV_WRITE_KERNEL(KV, CACHE)                                                                            \
  extern "C" __global__ void rope_kv_write_##CACHE(float* __restrict__ qkv, const float* __restrict__ cos_t,        \
                                                   const float* __restrict__ sin_t, KV* __restrict__ key_cache,    \
                                                   KV* __restrict__ value_cache, const int* __restrict__ row_slot, \
                                                   const int* __restrict__ row_pos, int n_heads, int n_kv_heads,   \
                                                   int head_dim, int cache_len) {                                  \
    grid_begin();                                                                                                  \
    rope_kv_write<KV>(qkv, cos_t, sin_t, key_cache, value_cache, row_slot, row_pos, n_heads, n_kv_heads, head_dim, \
                      cache_len);                                                                                  \
  }
ROPE_KV_WRITE_KERNEL(float, f32)
ROPE_KV_WRITE_KERNEL(unsigned short, bf16kv)
