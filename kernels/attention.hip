// attention.hip: single-sequence decode attention (KV-cache write, scores with sinks and the sliding
// window, weighted sum of values; the softmax between scores and weighted sum is softmax.hip's, over
// pos + 2 entries per head), then the batched engine's flash-decoding over rows (attn_rows_partial_*,
// attn_rows_merge_f32).
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

// ---------------------------------------------------------------------------------------------------
// Batched engine: decode attention over rows of different lengths, split over positions
// (flash-decoding), sinks applied at the merge. docs/batched-engine.md, section "attention".
//
// The split is a fixed number of positions (split_len, chosen from the model alone: batch.py
// attn_split_len), so a row's result depends on its own position and cache only, never on the other rows
// of the step or on how many there are (batch invariance). Each split is one pass: its positions' K and V
// go straight from global memory into registers (16-byte loads, all issued before any arithmetic, so a
// block keeps its whole split in flight), and the split's softmax is exact within the split (no online
// rescaling): the merge combines the splits in split order.
//
// attn_rows_partial_d{64,128}_g{8,16}_f32: grid (n_split, n_kv_heads, R), BLOCK_SIZE threads. Block (s, j, r)
// takes row r's positions [lo + s split_len, min(lo + (s + 1) split_len, pos + 1)) of kv head j, for the G
// query heads sharing it (K and V read once for all of them); lo = max(0, pos - window + 1) when window > 0,
// else 0. split_len <= AttnRows<DMAX>::TILE (64 positions for head_dim <= 64, 32 up to 128).
//   1. loads: thread (t, part) holds 16 dims of K row t; thread (slice, pair) holds dims 2 pair, 2 pair + 1
//      of the V rows slice, slice + SLICES, ...; q of the G heads goes to shared memory (zero-padded to DMAX).
//   2. scores: per head g, thread (t, part) dots its 16 dims with q_g (float4 broadcasts), the PARTS lanes
//      of a position add theirs with SHFL_XOR; S[g][t] = dot / sqrt(D).
//   3. softmax within the split, a warp per head: m = max_t S, p_t = exp(S - m) into P[t][g], l = sum p.
//   4. P.V: thread (slice, pair) accumulates acc[g] over its positions (ascending) for all G heads; the
//      slices' accumulators are then added through shared memory in slice order.
// Output: partial_acc[r, h, s, :] (R, nh, n_split, D) and partial_ml[r, h, s, :] = (m, l) (R, nh, n_split, 2).
// A split beyond the row's last position is not written (attn_rows_merge reads only the splits a row uses).
template <int DMAX, int GMAX>
struct AttnRows {
  static const int PARTS = DMAX / 16;          // threads per position in the scores: 16 dims each
  static const int TILE = BLOCK_SIZE / PARTS;  // the most positions a split may hold: 64 (d64), 32 (d128)
  static const int PAIRS = DMAX / 2;           // P.V: threads per position, a pair of dims each
  static const int SLICES = BLOCK_SIZE / PAIRS;
  static const int PER_SLICE = TILE / SLICES;  // positions per thread in P.V
  static const int Q_STRIDE = PARTS * 20;      // q_g in shared memory: per part 16 dims + 4 pad (no conflicts)
  static const int S_STRIDE = TILE + 1;
  static const int P_STRIDE = GMAX + 4;        // P[t][g]: float4-aligned rows
  static const int WORK = GMAX * Q_STRIDE + GMAX * S_STRIDE + TILE * P_STRIDE;
  static const int RED = 8 * SLICES * DMAX;    // the slices' accumulators of 8 heads (reuses Q, S, P)
  static const int TOTAL = (WORK > RED ? WORK : RED) + 2 * GMAX;  // + m, l per head
  static_assert(GMAX % 8 == 0 && GMAX <= ATTN_MAX_GROUP, "group bounds: multiples of 8, at most ATTN_MAX_GROUP");
  static_assert(BLOCK_SIZE % PARTS == 0 && BLOCK_SIZE % PAIRS == 0 && TILE % SLICES == 0, "thread mappings");
  static_assert(TOTAL % 4 == 0 && (GMAX * Q_STRIDE) % 4 == 0 && (GMAX * Q_STRIDE + GMAX * S_STRIDE) % 4 == 0 &&
                    P_STRIDE % 4 == 0, "float4 alignment of Qs, P and their rows");
};

// CUDA: blocks per SM the register allocation must allow. HIP's second __launch_bounds__ argument means
// something else: not given.
#ifdef GETP_HIP
#define ATTN_BOUNDS(GMAX) __launch_bounds__(BLOCK_SIZE)
#else
#define ATTN_BOUNDS(GMAX) __launch_bounds__(BLOCK_SIZE, (GMAX) <= 8 ? 4 : 2)
#endif

// Cache index of the split's t-th position: (first + t) mod C without a division (first < C, t < C).
GETP_DEVICE int attn_ring_index(int first, int t, int cache_len) {
  const int i = first + t;
  return i < cache_len ? i : i - cache_len;
}

template <int DMAX, int GMAX>
GETP_DEVICE void attn_rows_partial(float* __restrict__ smem, float* __restrict__ partial_acc,
                                   float* __restrict__ partial_ml, const float* __restrict__ qkv,
                                   const float* __restrict__ key_cache, const float* __restrict__ value_cache,
                                   const int* __restrict__ row_slot, const int* __restrict__ row_pos,
                                   int n_heads, int n_kv_heads, int head_dim, int cache_len, int window,
                                   int split_len, int vec4) {
  typedef AttnRows<DMAX, GMAX> L;
  float* Qs = smem;
  float* S = Qs + GMAX * L::Q_STRIDE;
  float* P = S + GMAX * L::S_STRIDE;
  float* red = smem;  // after P.V: reuses Qs, S and P
  float* m_s = smem + (L::TOTAL - 2 * GMAX);
  float* l_s = m_s + GMAX;

  const int split = blockIdx.x, kvh = blockIdx.y, r = blockIdx.z, n_split = gridDim.x;
  const int tid = threadIdx.x, lane = tid % WARP_SIZE, warp = tid / WARP_SIZE;
  const int D = head_dim, G = n_heads / n_kv_heads, kv_dim = n_kv_heads * D;
  const int pos = row_pos[r];
  const int lo = window > 0 ? max(0, pos - window + 1) : 0;
  const int t_begin = lo + split * split_len, t_end = min(t_begin + split_len, pos + 1);
  if (t_begin >= t_end) return;  // block-uniform: a split this row does not reach
  const int tn = t_end - t_begin;
  const size_t out_row = ((size_t)r * n_heads + (size_t)kvh * G) * n_split + split;  // head g: + g n_split
  const size_t slot_base = (size_t)row_slot[r] * cache_len;
  const float* kbase = key_cache + (size_t)kvh * D;
  const float* vbase = value_cache + (size_t)kvh * D;
  const int first = t_begin % cache_len;  // the split's first position in the ring (one division a block)

  // 1. Every load of the split, issued before any use.
  const int t_qk = tid / L::PARTS, part = tid % L::PARTS, d_qk = part * 16;
  float k[16];
  {
    const bool ok = t_qk < tn;
    const float* src = kbase + (slot_base + attn_ring_index(first, t_qk, cache_len)) * kv_dim + d_qk;
    if (vec4) {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float4 v = (ok && d_qk + 4 * j < D) ? *(const float4*)(src + 4 * j) : make_float4(0.f, 0.f, 0.f, 0.f);
        k[4 * j] = v.x;
        k[4 * j + 1] = v.y;
        k[4 * j + 2] = v.z;
        k[4 * j + 3] = v.w;
      }
    } else {
#pragma unroll
      for (int j = 0; j < 16; ++j) k[j] = (ok && d_qk + j < D) ? src[j] : 0.0f;
    }
  }
  const int pair = tid % L::PAIRS, sl = tid / L::PAIRS, d_pv = 2 * pair;
  float2 v[L::PER_SLICE];
#pragma unroll
  for (int i = 0; i < L::PER_SLICE; ++i) {
    const int t = sl + i * L::SLICES;
    const float* src = vbase + (slot_base + attn_ring_index(first, t, cache_len)) * kv_dim + d_pv;
    if (vec4) {
      v[i] = (t < tn && d_pv < D) ? *(const float2*)src : make_float2(0.f, 0.f);
    } else {
      v[i].x = (t < tn && d_pv < D) ? src[0] : 0.0f;
      v[i].y = (t < tn && d_pv + 1 < D) ? src[1] : 0.0f;
    }
  }
  {
    const float* q = qkv + (size_t)r * (n_heads + 2 * n_kv_heads) * D + (size_t)kvh * G * D;
    for (int i = tid; i < G * DMAX; i += blockDim.x) {
      const int g = i / DMAX, d = i % DMAX;
      Qs[g * L::Q_STRIDE + (d / 16) * 20 + d % 16] = d < D ? q[g * D + d] : 0.0f;
    }
  }
  __syncthreads();

  // 2. Scores.
  const float scale = 1.0f / sqrtf((float)D);
  for (int g = 0; g < G; ++g) {
    const float4* qg = (const float4*)(Qs + g * L::Q_STRIDE + part * 20);
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float4 q4 = qg[j];
      s += k[4 * j] * q4.x + k[4 * j + 1] * q4.y + k[4 * j + 2] * q4.z + k[4 * j + 3] * q4.w;
    }
#pragma unroll
    for (int off = 1; off < L::PARTS; off <<= 1) s += SHFL_XOR(s, off);
    if (part == 0 && t_qk < tn) S[g * L::S_STRIDE + t_qk] = s * scale;
  }
  __syncthreads();

  // 3. Softmax within the split, a warp per head.
  for (int g = warp; g < G; g += (int)(blockDim.x / WARP_SIZE)) {
    float mx = GETP_NEG_INF;
    for (int t = lane; t < tn; t += WARP_SIZE) mx = fmaxf(mx, S[g * L::S_STRIDE + t]);
    mx = warp_max(mx);
    float sum = 0.0f;
    for (int t = lane; t < L::TILE; t += WARP_SIZE) {
      const float p = t < tn ? expf(S[g * L::S_STRIDE + t] - mx) : 0.0f;
      P[t * L::P_STRIDE + g] = p;
      sum += p;
    }
    sum = warp_sum(sum);
    if (lane == 0) {
      m_s[g] = mx;
      l_s[g] = sum;
    }
  }
  __syncthreads();

  // 4. P.V over this thread's positions, ascending.
  float acc0[GMAX], acc1[GMAX];
#pragma unroll
  for (int g = 0; g < GMAX; ++g) acc0[g] = acc1[g] = 0.0f;
#pragma unroll
  for (int i = 0; i < L::PER_SLICE; ++i) {
    const int t = sl + i * L::SLICES;
    if (t < tn) {
      const float4* p4 = (const float4*)(P + t * L::P_STRIDE);
#pragma unroll
      for (int j = 0; j < GMAX / 4; ++j) {
        if (4 * j < G) {
          const float4 p = p4[j];
          acc0[4 * j] += p.x * v[i].x;
          acc1[4 * j] += p.x * v[i].y;
          acc0[4 * j + 1] += p.y * v[i].x;
          acc1[4 * j + 1] += p.y * v[i].y;
          acc0[4 * j + 2] += p.z * v[i].x;
          acc1[4 * j + 2] += p.z * v[i].y;
          acc0[4 * j + 3] += p.w * v[i].x;
          acc1[4 * j + 3] += p.w * v[i].y;
        }
      }
    }
  }

  // The slices' accumulators, 8 heads at a time, added in slice order.
#pragma unroll
  for (int half = 0; half < GMAX / 8; ++half) {
    const int g0 = 8 * half;
    if (g0 < G) {  // block-uniform
      const int ng = min(8, G - g0);
      __syncthreads();  // P.V (or the previous half) is done with shared memory
#pragma unroll
      for (int g = g0; g < g0 + 8; ++g) {
        if (g < G) {
          float* dst = red + ((g - g0) * L::SLICES + sl) * DMAX + d_pv;
          dst[0] = acc0[g];
          dst[1] = acc1[g];
        }
      }
      __syncthreads();
      for (int i = tid; i < ng * D; i += blockDim.x) {
        const int gi = i / D, d = i % D;
        const float* src = red + gi * L::SLICES * DMAX + d;
        float sum = 0.0f;
#pragma unroll
        for (int s = 0; s < L::SLICES; ++s) sum += src[s * DMAX];
        partial_acc[(out_row + (size_t)(g0 + gi) * n_split) * D + d] = sum;
      }
    }
  }
  if (tid < G) {
    partial_ml[(out_row + (size_t)tid * n_split) * 2] = m_s[tid];
    partial_ml[(out_row + (size_t)tid * n_split) * 2 + 1] = l_s[tid];
  }
}

// One kernel per (head_dim bound, group bound): attn_rows_partial_d{64,128}_g{8,16}_f32 (ATTN_MAX_GROUP:
// cupy_getp/gpu/constants.py).
#define ATTN_ROWS_PARTIAL_KERNEL(DMAX, GMAX)                                                                     \
  extern "C" __global__ void ATTN_BOUNDS(GMAX) attn_rows_partial_d##DMAX##_g##GMAX##_f32(                        \
      float* __restrict__ partial_acc, float* __restrict__ partial_ml, const float* __restrict__ qkv,             \
      const float* __restrict__ key_cache, const float* __restrict__ value_cache, const int* __restrict__ row_slot, \
      const int* __restrict__ row_pos, int n_heads, int n_kv_heads, int head_dim, int cache_len, int window,       \
      int split_len, int vec4) {                                                                                  \
    __shared__ float4 smem4[AttnRows<DMAX, GMAX>::TOTAL / 4];                                                     \
    attn_rows_partial<DMAX, GMAX>((float*)smem4, partial_acc, partial_ml, qkv, key_cache, value_cache, row_slot,  \
                                  row_pos, n_heads, n_kv_heads, head_dim, cache_len, window, split_len, vec4);    \
  }
ATTN_ROWS_PARTIAL_KERNEL(64, 8)
ATTN_ROWS_PARTIAL_KERNEL(64, 16)
ATTN_ROWS_PARTIAL_KERNEL(128, 8)
ATTN_ROWS_PARTIAL_KERNEL(128, 16)

// att[r, h D + d] = sum_s acc_s[d] exp(m_s - M) / L with M = max(max_s m_s, sink_h),
// L = sum_s l_s exp(m_s - M) + exp(sink_h - M), over the splits s row r reaches (split order; the others
// are not written). A warp per (row, head): grid ceil(R nh / WARPS_PER_BLOCK).
extern "C" __global__ void attn_rows_merge_f32(float* __restrict__ att, const float* __restrict__ partial_acc,
                                               const float* __restrict__ partial_ml, const float* __restrict__ sinks,
                                               const int* __restrict__ row_pos, int n_items, int n_heads, int n_split,
                                               int head_dim, int window, int split_len) {
  const int lane = threadIdx.x % WARP_SIZE;
  const int item = blockIdx.x * (int)(blockDim.x / WARP_SIZE) + (int)(threadIdx.x / WARP_SIZE);  // r nh + h
  if (item >= n_items) return;  // warp-uniform
  const int pos = row_pos[item / n_heads];
  const int lo = window > 0 ? max(0, pos - window + 1) : 0;
  const int used = min(n_split, (pos - lo + split_len) / split_len);  // ceil((pos + 1 - lo) / split_len)
  const float* ml = partial_ml + (size_t)item * n_split * 2;
  const float* acc = partial_acc + (size_t)item * n_split * head_dim;
  const float sink = sinks[item % n_heads];
  float m = sink;
  for (int s = lane; s < used; s += WARP_SIZE) m = fmaxf(m, ml[2 * s]);
  m = warp_max(m);
  float l = 0.0f;
  for (int s = lane; s < used; s += WARP_SIZE) l += ml[2 * s + 1] * expf(ml[2 * s] - m);
  l = warp_sum(l) + expf(sink - m);
  const float inv_l = 1.0f / l;
  for (int d = lane; d < head_dim; d += WARP_SIZE) {
    float o = 0.0f;
    for (int s = 0; s < used; ++s) o += acc[(size_t)s * head_dim + d] * expf(ml[2 * s] - m);
    att[(size_t)item * head_dim + d] = o * inv_l;
  }
}
