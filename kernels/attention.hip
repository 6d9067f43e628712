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
// attn_rows_partial_d{64,128}_g{8,16}_f32: grid (n_split, n_kv_heads, R), BLOCK_SIZE threads. Block (s, j, r)
// takes row r's positions [lo + s * split_len, min(lo + (s + 1) * split_len, pos + 1)) of kv head j,
// ATTN_TILE positions at a time:
//   1. K and V of the tile: global -> shared, coalesced (16-byte loads when vec4); K rows are stored as
//      32-float chunks padded to ATTN_KPAD floats (bank-conflict-free float4 reads in step 2).
//   2. scores: thread (position group, head g, chunk c) keeps its 32-float chunk c of q_g in registers
//      (loaded once per block) and reads K chunks as float4; nch (1, 2 or 4) lanes add their chunk dots
//      with SHFL_XOR. Scores scaled by 1/sqrt(D) go to S[g][t].
//   3. online softmax: a warp per head: tile max, new running max m, alpha = exp(m_old - m),
//      p = exp(s - m) into P[t][g], l = l alpha + sum p.
//   4. P.V: thread (slice, pair of dims) accumulates acc[g] for all G heads of its dims over the tile's
//      positions slice, slice + slices, ...; V read as float2, P as float4 (broadcast).
// At the end the slices' accumulators are added through shared memory (fixed order) and each of the
// G query heads writes partial_acc[r, h, s, :] (R, nh, n_split, D) and partial_ml[r, h, s, :] = (m, l)
// (R, nh, n_split, 2). An empty split writes m = -inf, l = 0, acc = 0.
#define ATTN_TILE 32       // positions per tile; <= WARP_SIZE (step 3 gives a lane one position)
// ATTN_MAX_GROUP (query heads per kv head): cupy_getp/gpu/constants.py.
#define ATTN_KPAD 36       // a 32-float chunk of a K row in shared memory, padded against bank conflicts
#define ATTN_S_STRIDE (ATTN_TILE + 1)
#define ATTN_P_STRIDE 20   // P[t][g]: float4-aligned rows; 4-way conflicts on the (rare) writes instead of 16
// CUDA: blocks per SM the register allocation must allow (G <= 8: 3 blocks, 80 registers, no spills in
// the loop; G <= 16: 2 blocks). HIP's second __launch_bounds__ argument means something else: not given.
#ifdef GETP_HIP
#define ATTN_BOUNDS(GMAX) __launch_bounds__(BLOCK_SIZE)
#else
#define ATTN_BOUNDS(GMAX) __launch_bounds__(BLOCK_SIZE, (GMAX) <= 8 ? 3 : 2)
#endif

template <int NCH>
struct AttnSmem {  // sizes in floats; every offset a multiple of 4 (float4 alignment)
  static const int K = ATTN_TILE * NCH * ATTN_KPAD;
  static const int V = ATTN_TILE * NCH * 32;
  static const int S = ATTN_MAX_GROUP * ATTN_S_STRIDE + 0;  // 528
  static const int P = ATTN_TILE * ATTN_P_STRIDE;
  static const int STATE = 3 * ATTN_MAX_GROUP;
  static const int TOTAL = K + V + S + P + STATE;
};

template <int NCH, int GMAX>
GETP_DEVICE void attn_rows_partial(float* __restrict__ smem, float* __restrict__ partial_acc,
                                   float* __restrict__ partial_ml, const float* __restrict__ qkv,
                                   const float* __restrict__ key_cache, const float* __restrict__ value_cache,
                                   const int* __restrict__ row_slot, const int* __restrict__ row_pos,
                                   int n_heads, int n_kv_heads, int head_dim, int cache_len, int window,
                                   int split_len, int vec4) {
  typedef AttnSmem<NCH> L;
  float* Ks = smem;
  float* Vs = Ks + L::K;
  float* S = Vs + L::V;
  float* P = S + L::S;
  float* m_s = P + L::P;
  float* l_s = m_s + ATTN_MAX_GROUP;
  float* alpha_s = l_s + ATTN_MAX_GROUP;
  float* red = smem;  // after the tile loop: reuses Ks and Vs

  const int split = blockIdx.x, kvh = blockIdx.y, r = blockIdx.z, n_split = gridDim.x;
  const int tid = threadIdx.x, lane = tid % WARP_SIZE, warp = tid / WARP_SIZE;
  const int D = head_dim, G = n_heads / n_kv_heads, kv_dim = n_kv_heads * D;
  const int pos = row_pos[r];
  const int lo = window > 0 ? max(0, pos - window + 1) : 0;
  const int t_begin = lo + split * split_len, t_end = min(t_begin + split_len, pos + 1);
  const size_t out_row = ((size_t)r * n_heads + (size_t)kvh * G) * n_split + split;  // head g: + g n_split

  if (t_begin >= t_end) {  // block-uniform
    for (int i = tid; i < G * D; i += blockDim.x)
      partial_acc[(out_row + (size_t)(i / D) * n_split) * D + i % D] = 0.0f;
    if (tid < G) {
      partial_ml[(out_row + (size_t)tid * n_split) * 2] = GETP_NEG_INF;
      partial_ml[(out_row + (size_t)tid * n_split) * 2 + 1] = 0.0f;
    }
    return;
  }

  // Step 2's mapping: lanes (c, g, pg) with c fastest; nch a power of two, so chunk groups stay in a warp.
  const int nch = D <= 32 ? 1 : (D <= 64 ? 2 : 4);
  const int kstride = nch * ATTN_KPAD;
  const int per_pos = nch * G, n_pg = BLOCK_SIZE / per_pos;
  const int c = tid % nch, g_qk = (tid / nch) % G, pg = tid / per_pos;
  const bool qk_active = pg < n_pg;
  const int qk_iters = (ATTN_TILE + n_pg - 1) / n_pg;
  const float scale = 1.0f / sqrtf((float)D);
  float q[32];
  {
    const float* qh = qkv + (size_t)r * (n_heads + 2 * n_kv_heads) * D + (size_t)(kvh * G + g_qk) * D + c * 32;
#pragma unroll
    for (int j = 0; j < 32; ++j) q[j] = (qk_active && c * 32 + j < D) ? qh[j] : 0.0f;
  }
  // Step 4's mapping: thread (slice, pair dp) owns dims 2 dp, 2 dp + 1 (the second absent for odd D).
  const int n_pairs = (D + 1) / 2, vstride = 2 * n_pairs;
  const int slices = min(BLOCK_SIZE / n_pairs, ATTN_TILE);
  const int dp = tid % n_pairs, sl = tid / n_pairs;
  const bool pv_active = sl < slices;
  float acc0[GMAX], acc1[GMAX];
#pragma unroll
  for (int g = 0; g < GMAX; ++g) acc0[g] = acc1[g] = 0.0f;

  for (int i = tid; i < L::K; i += blockDim.x) Ks[i] = 0.0f;  // pads stay 0 (q pads are 0 too)
  if (vstride != D)
    for (int i = tid; i < L::V; i += blockDim.x) Vs[i] = 0.0f;
  if (tid < ATTN_MAX_GROUP) {
    m_s[tid] = GETP_NEG_INF;
    l_s[tid] = 0.0f;
  }

  const size_t slot_base = (size_t)row_slot[r] * cache_len;
  const float* kbase = key_cache + (size_t)kvh * D;
  const float* vbase = value_cache + (size_t)kvh * D;
  for (int t0 = t_begin; t0 < t_end; t0 += ATTN_TILE) {
    const int tn = min(ATTN_TILE, t_end - t0);
    __syncthreads();  // the previous tile's readers are done (and the zeroing above)
    // 1. K, V -> shared
    if (vec4) {
      const int per = D / 4;
      for (int i = tid; i < tn * per; i += blockDim.x) {
        const int t = i / per, e = (i % per) * 4;
        const size_t at = (slot_base + (t0 + t) % cache_len) * kv_dim + e;
        const float4 kv = *(const float4*)(kbase + at);
        const float4 vv = *(const float4*)(vbase + at);
        *(float4*)(Ks + t * kstride + (e / 32) * ATTN_KPAD + e % 32) = kv;
        *(float4*)(Vs + t * vstride + e) = vv;
      }
    } else {
      for (int i = tid; i < tn * D; i += blockDim.x) {
        const int t = i / D, e = i % D;
        const size_t at = (slot_base + (t0 + t) % cache_len) * kv_dim + e;
        Ks[t * kstride + (e / 32) * ATTN_KPAD + e % 32] = kbase[at];
        Vs[t * vstride + e] = vbase[at];
      }
    }
    __syncthreads();
    // 2. scores
    for (int k = 0; k < qk_iters; ++k) {  // uniform trip count: every lane reaches the shuffles
      const int t = pg + k * n_pg;
      const bool valid = qk_active && t < tn;
      float s = 0.0f;
      if (valid) {
        const float4* kr = (const float4*)(Ks + t * kstride + c * ATTN_KPAD);
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const float4 kk = kr[j];
          s += q[4 * j] * kk.x + q[4 * j + 1] * kk.y + q[4 * j + 2] * kk.z + q[4 * j + 3] * kk.w;
        }
      }
      if (nch > 1) s += SHFL_XOR(s, 1);
      if (nch > 2) s += SHFL_XOR(s, 2);
      if (valid && c == 0) S[g_qk * ATTN_S_STRIDE + t] = s * scale;
    }
    __syncthreads();
    // 3. online softmax, a warp per head; lane = position (ATTN_TILE <= WARP_SIZE)
    for (int g = warp; g < G; g += (int)(blockDim.x / WARP_SIZE)) {
      const bool valid = lane < tn;
      const float v = valid ? S[g * ATTN_S_STRIDE + lane] : GETP_NEG_INF;
      const float m_old = m_s[g];
      const float m_new = fmaxf(m_old, warp_max(v));
      const float p = valid ? expf(v - m_new) : 0.0f;
      if (lane < ATTN_TILE) P[lane * ATTN_P_STRIDE + g] = p;
      const float sum = warp_sum(p);
      if (lane == 0) {
        const float alpha = expf(m_old - m_new);  // 0 on the first tile (m_old = -inf)
        alpha_s[g] = alpha;
        l_s[g] = l_s[g] * alpha + sum;
        m_s[g] = m_new;
      }
    }
    __syncthreads();
    // 4. acc = acc alpha + P.V
    if (pv_active) {
#pragma unroll
      for (int g = 0; g < GMAX; ++g) {
        if (g < G) {
          const float a = alpha_s[g];
          acc0[g] *= a;
          acc1[g] *= a;
        }
      }
      for (int t = sl; t < tn; t += slices) {
        const float2 v = *(const float2*)(Vs + t * vstride + 2 * dp);
        const float4* p4 = (const float4*)(P + t * ATTN_P_STRIDE);
#pragma unroll
        for (int k = 0; k < GMAX / 4; ++k) {
          if (4 * k < G) {
            const float4 p = p4[k];
            acc0[4 * k] += p.x * v.x;
            acc1[4 * k] += p.x * v.y;
            acc0[4 * k + 1] += p.y * v.x;
            acc1[4 * k + 1] += p.y * v.y;
            acc0[4 * k + 2] += p.z * v.x;
            acc1[4 * k + 2] += p.z * v.y;
            acc0[4 * k + 3] += p.w * v.x;
            acc1[4 * k + 3] += p.w * v.y;
          }
        }
      }
    }
  }

  // Add the slices' accumulators, 8 heads at a time (8 * slices * vstride <= 4096 floats <= K + V).
#pragma unroll
  for (int half = 0; half < GMAX / 8; ++half) {
    const int g0 = 8 * half;
    if (g0 < G) {  // block-uniform
      const int ng = min(8, G - g0);
      __syncthreads();  // the tile loop (or the previous half) is done with shared memory
      if (pv_active) {
#pragma unroll
        for (int g = g0; g < g0 + 8; ++g) {
          if (g < G) {
            float* dst = red + ((g - g0) * slices + sl) * vstride + 2 * dp;
            dst[0] = acc0[g];
            dst[1] = acc1[g];
          }
        }
      }
      __syncthreads();
      for (int i = tid; i < ng * D; i += blockDim.x) {
        const int gi = i / D, d = i % D;
        const float* src = red + gi * slices * vstride + d;
        float sum = 0.0f;
        for (int k = 0; k < slices; ++k) sum += src[k * vstride];
        partial_acc[(out_row + (size_t)(g0 + gi) * n_split) * D + d] = sum;
      }
    }
  }
  if (tid < G) {
    partial_ml[(out_row + (size_t)tid * n_split) * 2] = m_s[tid];
    partial_ml[(out_row + (size_t)tid * n_split) * 2 + 1] = l_s[tid];
  }
}

// One kernel per (head_dim bound, group bound): attn_rows_partial_d{64,128}_g{8,16}_f32. Shared memory
// per block: 22.3 KB (d64), 39.7 KB (d128).
#define ATTN_ROWS_PARTIAL_KERNEL(DMAX, GMAX)                                                                     \
  extern "C" __global__ void ATTN_BOUNDS(GMAX) attn_rows_partial_d##DMAX##_g##GMAX##_f32(                              \
      float* __restrict__ partial_acc, float* __restrict__ partial_ml, const float* __restrict__ qkv,             \
      const float* __restrict__ key_cache, const float* __restrict__ value_cache, const int* __restrict__ row_slot, \
      const int* __restrict__ row_pos, int n_heads, int n_kv_heads, int head_dim, int cache_len, int window,       \
      int split_len, int vec4) {                                                                                  \
    __shared__ float4 smem4[AttnSmem<DMAX / 32>::TOTAL / 4];                                                      \
    attn_rows_partial<DMAX / 32, GMAX>((float*)smem4, partial_acc, partial_ml, qkv, key_cache, value_cache,       \
                                       row_slot, row_pos, n_heads, n_kv_heads, head_dim, cache_len, window,       \
                                       split_len, vec4);                                                          \
  }
ATTN_ROWS_PARTIAL_KERNEL(64, 8)
ATTN_ROWS_PARTIAL_KERNEL(64, 16)
ATTN_ROWS_PARTIAL_KERNEL(128, 8)
ATTN_ROWS_PARTIAL_KERNEL(128, 16)

// att[r, h D + d] = sum_s acc_s[d] exp(m_s - M) / L with M = max(max_s m_s, sink_h),
// L = sum_s l_s exp(m_s - M) + exp(sink_h - M). A warp per (row, head): grid ceil(R nh / WARPS_PER_BLOCK).
extern "C" __global__ void attn_rows_merge_f32(float* __restrict__ att, const float* __restrict__ partial_acc,
                                               const float* __restrict__ partial_ml, const float* __restrict__ sinks,
                                               int n_items, int n_heads, int n_split, int head_dim) {
  const int lane = threadIdx.x % WARP_SIZE;
  const int item = blockIdx.x * (int)(blockDim.x / WARP_SIZE) + (int)(threadIdx.x / WARP_SIZE);  // r nh + h
  if (item >= n_items) return;  // warp-uniform
  const float* ml = partial_ml + (size_t)item * n_split * 2;
  const float* acc = partial_acc + (size_t)item * n_split * head_dim;
  const float sink = sinks[item % n_heads];
  float m = sink;
  for (int s = lane; s < n_split; s += WARP_SIZE) m = fmaxf(m, ml[2 * s]);
  m = warp_max(m);
  float l = 0.0f;
  for (int s = lane; s < n_split; s += WARP_SIZE) l += ml[2 * s + 1] * expf(ml[2 * s] - m);
  l = warp_sum(l) + expf(sink - m);
  const float inv_l = 1.0f / l;
  for (int d = lane; d < head_dim; d += WARP_SIZE) {
    float o = 0.0f;
    for (int s = 0; s < n_split; ++s) o += acc[(size_t)s * head_dim + d] * expf(ml[2 * s] - m);
    att[(size_t)item * head_dim + d] = o * inv_l;
  }
}
