// attention.hip: decode attention over rows, split over positions (flash-decoding: attn_rows_partial_*,
// attn_rows_merge_f32), for every GPU path (one row of the single-sequence engine too).
#include "common.h"

// ---------------------------------------------------------------------------------------------------
// Batched engine: decode attention over rows of different lengths, split over positions
// (flash-decoding), sinks applied at the merge. docs/batched-engine.md, section "attention".
//
// The split is a fixed number of positions (split_len, chosen from the model alone: batch.py
// attn_split_len), so a row's result depends on its own position and cache only, never on the other rows
// of the step or on how many there are (batch invariance). Each split is one pass, its softmax exact within
// the split (no online rescaling); the merge combines the splits in split order.
//
// attn_rows_partial_d{64,128}_g{8,16}_{f32,bf16kv} (an FP32 or a BF16 KV cache; FP32-accurate on either): grid
// (n_split, n_kv_heads, R), BLOCK_SIZE threads. Block (s, j, r)
// takes row r's positions [lo + s split_len, min(lo + (s + 1) split_len, pos + 1)) of kv head j, for the G
// query heads sharing it (K and V read once for all of them); lo = max(0, pos - window + 1) when window > 0,
// else 0. split_len <= AttnRows::TILE (128 positions at head_dim <= 64 and G <= 8: the 20b and 120b).
//   1. loads, all issued first: thread (pair of positions t, t + TILE/2; 16-dim part) holds those 16 dims of
//      both K rows in registers (16-byte loads, widened from BF16 where the cache holds it); V goes to shared
//      memory as the cache holds it by asynchronous 16-byte copies (cp.async) that land while the scores are
//      computed; q of the G heads to shared memory (zero-padded).
//   2. scores: per head g, thread (pair, part) dots its two K pieces with q_g (float4 broadcasts, each q
//      load serving both positions), the PARTS lanes of a position add theirs with SHFL_XOR.
//   3. softmax within the split, a warp per head: m = max_t S, p_t = exp(S - m) into P[t][g], l = sum p.
//   4. P.V: thread (slice, pair of dims) accumulates acc[g] over its positions (ascending) for all G heads
//      from shared V; the slices' accumulators are then added through shared memory in slice order.
// Output: partial_acc[r, h, s, :] (R, nh, n_split, D) and partial_ml[r, h, s, :] = (m, l) (R, nh, n_split, 2).
// A split beyond the row's last position is not written (attn_rows_merge reads only the splits a row uses).
template <int DMAX, int GMAX>
struct AttnRows {
  static const int PARTS = DMAX / 16;          // threads per position (pair) in the scores: 16 dims each
  static const int PER_THREAD = GMAX <= 8 ? 2 : 1;  // positions a thread scores (registers: 16 each)
  static const int TILE = PER_THREAD * BLOCK_SIZE / PARTS;  // the most positions a split may hold
  static const int PAIRS = DMAX / 2;           // P.V: threads per position, a pair of dims each
  static const int SLICES = BLOCK_SIZE / PAIRS;
  static const int PER_SLICE = TILE / SLICES;  // positions per thread in P.V
  static const int Q_STRIDE = PARTS * 20;      // q_g in shared memory: per part 16 dims + 4 pad (no conflicts)
  static const int S_STRIDE = TILE + 1;
  static const int P_STRIDE = GMAX + 4;        // P[t][g]: float4-aligned rows
  static const int Q_AT = 0, S_AT = GMAX * Q_STRIDE, P_AT = S_AT + GMAX * S_STRIDE;
  static const int V_AT = (P_AT + TILE * P_STRIDE + 3) / 4 * 4;  // V[t][d], DMAX floats a row
  static const int RED = 8 * SLICES * DMAX;    // the slices' accumulators of 8 heads (reuses V)
  static const int ML_AT = V_AT + (TILE * DMAX > RED ? TILE * DMAX : RED);  // m, l per head
  static const int TOTAL = ML_AT + 2 * GMAX;
  static_assert(GMAX % 8 == 0 && GMAX <= ATTN_MAX_GROUP, "group bounds: multiples of 8, at most ATTN_MAX_GROUP");
  static_assert(BLOCK_SIZE % PARTS == 0 && BLOCK_SIZE % PAIRS == 0 && TILE % SLICES == 0, "thread mappings");
  static_assert(S_AT % 4 == 0 && P_AT % 4 == 0 && P_STRIDE % 4 == 0 && TOTAL % 4 == 0, "float4 alignment");
  static_assert(TOTAL * 4 <= 48 * 1024, "static shared memory");
};

// CUDA: blocks per SM the register allocation must allow. HIP's second __launch_bounds__ argument means
// something else: not given.
#ifdef GETP_HIP
#define ATTN_BOUNDS(GMAX) __launch_bounds__(BLOCK_SIZE)
#else
#define ATTN_BOUNDS(GMAX) __launch_bounds__(BLOCK_SIZE, (GMAX) <= 8 ? 4 : 3)
#endif

// Cache index of the split's t-th position: (first + t) mod C without a division (first < C, t < C).
GETP_DEVICE int attn_ring_index(int first, int t, int cache_len) {
  const int i = first + t;
  return i < cache_len ? i : i - cache_len;
}

// A row's first position: lo = max(0, pos - window + 1) with a window, else 0.
GETP_DEVICE int attn_first_position(int pos, int window) { return window > 0 ? max(0, pos - window + 1) : 0; }

// The splits a row at pos reaches (those attn_rows_partial writes): ceil((pos + 1 - lo) / split_len), at most n_split.
GETP_DEVICE int attn_used_splits(int pos, int lo, int n_split, int split_len) {
  return min(n_split, (pos - lo + split_len) / split_len);
}

// att[r, h D + d] = sum_s acc_s[d] exp(m_s - M) / L with M = max(max_s m_s, sink_h),
// L = sum_s l_s exp(m_s - M) + exp(sink_h - M), over the splits s row r reaches (split order; the others
// are not written), for item = r nh + h, by one warp. R: the rows of the step. pieces (n_pieces, R, lda), or null:
// att's BF16 pieces too, as tc_split_rows would write them from att (zeros in columns nh D..lda-1), for the output
// projection on tensor cores: one launch fewer. Partials are read from L2 (load_cg): in attn_rows_partial's last
// block they were written by other blocks.
GETP_DEVICE void attn_merge_item(int item, int R, float* __restrict__ att, unsigned short* __restrict__ pieces,
                                 const float* __restrict__ partial_acc, const float* __restrict__ partial_ml,
                                 const float* __restrict__ sinks, const int* __restrict__ row_pos, int n_heads,
                                 int n_split, int head_dim, int window, int split_len, int lda, int n_pieces,
                                 bool pairs = true) {
  const int lane = threadIdx.x % WARP_SIZE;
  const int pos = row_pos[item / n_heads];
  const int used = attn_used_splits(pos, attn_first_position(pos, window), n_split, split_len);
  const float* ml = partial_ml + (size_t)item * n_split * 2;
  const float* acc = partial_acc + (size_t)item * n_split * head_dim;
  const float sink = sinks[item % n_heads];
  float m = sink;
  for (int s = lane; s < used; s += WARP_SIZE) m = fmaxf(m, load_cg(ml + 2 * s));
  m = warp_max(m);
  float l = 0.0f;
  for (int s = lane; s < used; s += WARP_SIZE) l += load_cg(ml + 2 * s + 1) * expf(load_cg(ml + 2 * s) - m);
  l = warp_sum(l) + expf(sink - m);
  const float inv_l = 1.0f / l;
  const size_t r = item / n_heads, plane = (size_t)R * lda;
  const int h = item % n_heads, row_len = n_heads * head_dim;
  // (head_dim even, so every item's acc and att sit at even offsets; the bases checked too: they may be views.
  // pairs false: one dim a lane, the same bits; launch/attention.py's MERGE_PAIRS, to time the two.)
  const bool in_pairs =
      pairs && head_dim % 2 == 0 && ((size_t)partial_acc % 8 | (size_t)att % 8 | (size_t)pieces % 4) == 0;
  if (in_pairs) {
    // Two adjacent dims a lane: 8-byte loads of acc and stores of att, each piece stored 4 bytes a lane (a warp's
    // 128 bytes in one store), and one exp a split for both. Each value's operations are the one-dim loop's below.
    for (int d = 2 * lane; d < head_dim; d += 2 * WARP_SIZE) {
      float o0 = 0.0f, o1 = 0.0f;
      for (int s = 0; s < used; ++s) {
        const float2 a = load_cg2(acc + (size_t)s * head_dim + d);
        const float scale = expf(load_cg(ml + 2 * s) - m);
        o0 += a.x * scale;
        o1 += a.y * scale;
      }
      const float v0 = o0 * inv_l, v1 = o1 * inv_l;
      *(float2*)(att + (size_t)item * head_dim + d) = make_float2(v0, v1);
      if (pieces) {
        unsigned piece0[3], piece1[3];
        tc_split_n(v0, n_pieces, piece0);
        tc_split_n(v1, n_pieces, piece1);
        for (int p = 0; p < n_pieces; ++p)  // lda even (a multiple of 8), head_dim even: 4-byte aligned
          *(unsigned*)(pieces + p * plane + r * lda + h * head_dim + d) = piece0[p] | (piece1[p] << 16);
      }
    }
  } else {
    for (int d = lane; d < head_dim; d += WARP_SIZE) {
      float o = 0.0f;
      for (int s = 0; s < used; ++s) o += load_cg(acc + (size_t)s * head_dim + d) * expf(load_cg(ml + 2 * s) - m);
      const float v = o * inv_l;
      att[(size_t)item * head_dim + d] = v;
      if (pieces) {
        unsigned piece[3];
        tc_split_n(v, n_pieces, piece);
        for (int p = 0; p < n_pieces; ++p) pieces[p * plane + r * lda + h * head_dim + d] = (unsigned short)piece[p];
      }
    }
  }
  if (pieces && h == n_heads - 1)  // the row's padding columns
    for (int i = row_len + lane; i < lda; i += WARP_SIZE)
      for (int p = 0; p < n_pieces; ++p) pieces[p * plane + r * lda + i] = 0;
}

// The merge in attn_rows_partial's launch (counters not null; else the partials alone, merged by
// attn_rows_merge_*): att, its pieces (or null), the sinks, and a counter per (row, kv head), zero between
// launches.
struct AttnMerge {
  float* att;
  unsigned short* pieces;
  const float* sinks;
  unsigned* counters;
  int lda, n_pieces;
};

// The split a block of attn_rows_partial(_mma) takes: row r = blockIdx.z, kv head kvh = blockIdx.y, split =
// blockIdx.x of n_split = gridDim.x; its positions t_begin .. t_begin + tn - 1 (tn <= 0: the row does not reach
// it), the first at ring index `first`; head g's partial row out_row + g n_split; the row's slot's kv head kvh in
// the cache at slot_at. One prologue and one epilogue (finish) for both kernels.
struct AttnSplit {
  int split, kvh, r, n_split;
  int n_heads, n_kv_heads, D, G, kv_dim, window, split_len;
  int pos, lo, t_begin, tn, first;
  size_t out_row, slot_at;

  GETP_DEVICE AttnSplit(const int* __restrict__ row_slot, const int* __restrict__ row_pos, int n_heads_,
                        int n_kv_heads_, int head_dim, int cache_len, int window_, int split_len_)
      : split(blockIdx.x), kvh(blockIdx.y), r(blockIdx.z), n_split(gridDim.x), n_heads(n_heads_),
        n_kv_heads(n_kv_heads_), D(head_dim), G(n_heads_ / n_kv_heads_), kv_dim(n_kv_heads_ * head_dim),
        window(window_), split_len(split_len_) {
    pos = row_pos[r];
    lo = attn_first_position(pos, window);
    t_begin = lo + split * split_len;
    tn = min(t_begin + split_len, pos + 1) - t_begin;
    first = t_begin % cache_len;  // one division a block
    out_row = ((size_t)r * n_heads + (size_t)kvh * G) * n_split + split;
    slot_at = (size_t)row_slot[r] * cache_len * kv_dim + (size_t)kvh * D;
  }

  GETP_DEVICE bool reached() const { return tn > 0; }  // block-uniform

  // After the split's acc partials: each head's (m, l) from shared memory to partial_ml, then, where the launch
  // merges (merge.counters not null), the last of the row's splits of kv head kvh to finish (a counter per (row,
  // kv head), set back to 0 by that block, so graph replays need no memset) merges its G heads, a warp a head,
  // with attn_merge_item: the bits of attn_rows_merge_* (the same function).
  GETP_DEVICE void finish(float* __restrict__ partial_acc, float* __restrict__ partial_ml, const float* m_s,
                          const float* l_s, const int* __restrict__ row_pos, const AttnMerge& merge) const {
    if (threadIdx.x < G) {
      partial_ml[(out_row + (size_t)threadIdx.x * n_split) * 2] = m_s[threadIdx.x];
      partial_ml[(out_row + (size_t)threadIdx.x * n_split) * 2 + 1] = l_s[threadIdx.x];
    }
    if (!merge.counters) return;
    __shared__ int last;
    __threadfence();  // this block's partials are visible to the whole GPU before the count says so
    __syncthreads();
    if (threadIdx.x == 0) {
      const int used = attn_used_splits(pos, lo, n_split, split_len);
      unsigned* counter = merge.counters + (size_t)r * n_kv_heads + kvh;
      last = atomicAdd(counter, 1u) == (unsigned)used - 1;
      if (last) *counter = 0;  // every split has counted: none touches it again in this launch
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    for (int g = threadIdx.x / WARP_SIZE; g < G; g += blockDim.x / WARP_SIZE)
      attn_merge_item(r * n_heads + kvh * G + g, gridDim.z, merge.att, merge.pieces, partial_acc, partial_ml,
                      merge.sinks, row_pos, n_heads, n_split, D, window, split_len, merge.lda, merge.n_pieces);
  }
};

// A KV cache holds FP32 values or BF16 ones (uint16 bit patterns, rope_kv_write's round to nearest even); the
// attention arithmetic is FP32 either way, on the exactly widened values.
GETP_DEVICE float kv_value(float v) { return v; }
GETP_DEVICE float kv_value(unsigned short v) { return bf16_to_f32(v); }

// Cache values d, d + 1 (d even) of a row in shared memory.
GETP_DEVICE float2 kv_pair(const float* v) { return *(const float2*)v; }
GETP_DEVICE float2 kv_pair(const unsigned short* v) {
  const unsigned int w = *(const unsigned int*)v;
  return make_float2(bf16_lo(w), bf16_hi(w));
}

// Dims d0..d0+15 of a head's cache row by 16-byte loads (4 of FP32, 2 of BF16); a load at or past the head's D
// dims, or any where !ok, gives zeros. d0, D and the row's address: multiples of 4 (FP32) or 8 (BF16) values.
GETP_DEVICE void attn_load16(float (&k)[16], const float* src, bool ok, int d0, int D) {
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const float4 v = (ok && d0 + 4 * j < D) ? *(const float4*)(src + 4 * j) : make_float4(0.f, 0.f, 0.f, 0.f);
    k[4 * j] = v.x;
    k[4 * j + 1] = v.y;
    k[4 * j + 2] = v.z;
    k[4 * j + 3] = v.w;
  }
}
GETP_DEVICE void attn_load16(float (&k)[16], const unsigned short* src, bool ok, int d0, int D) {
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const uint4 w = (ok && d0 + 8 * j < D) ? *(const uint4*)(src + 8 * j) : make_uint4(0u, 0u, 0u, 0u);
    const unsigned int words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      k[8 * j + 2 * i] = bf16_lo(words[i]);
      k[8 * j + 2 * i + 1] = bf16_hi(words[i]);
    }
  }
}

// Rows t < TILE of a split (tn of them, from the ring at `first`) of one kv head to shared memory, STRIDE elements
// a row: 16-byte asynchronous copies where vec (16-byte rows: head_dim a multiple of 4 FP32 or 8 BF16 values), else
// element by element; zeros past tn and past D. A block of BLOCK_SIZE threads (every launch's).
// With vec each thread keeps one 16-byte column of rows t0, t0 + ROWS, ... and carries the rows' ring index from
// one to the next: no division a copy (sm_90 SASS: ~17 instructions a copy where a loop over i / per took ~45, a
// fifth of the FP32 kernel's; ncu found that kernel bound by its issue slots as much as by DRAM).
template <int TILE, int DMAX, int STRIDE, typename KV>
GETP_DEVICE void attn_rows_to_shared(KV* dst, const KV* base, int tn, int D, int first, int cache_len, int kv_dim,
                                     int vec) {
  if (vec) {
    enum { N16 = 16 / sizeof(KV), PER = DMAX / N16, ROWS = BLOCK_SIZE / PER };  // values a copy, copies a row
    static_assert(BLOCK_SIZE % PER == 0 && TILE % ROWS == 0, "whole rows a pass, whole passes a tile");
    const int e = (int)(threadIdx.x % PER) * N16, t0 = (int)(threadIdx.x / PER);
    const bool e_ok = e < D;
    // Row t's ring index and offset from base (32 bits: a slot's rows of a layer, launch/attention.py checks):
    // right for every row read (t < tn <= cache_len): row t0 < min(ROWS, tn) needs one wrap at most, and each
    // pass adds ROWS <= cache_len where a later row is read (else t >= ROWS > cache_len). A row not read copies
    // zeros from `base` (its own index may then lie past the ring).
    int ring = first + t0;
    if (ring >= cache_len) ring -= cache_len;
    unsigned at = (unsigned)ring * kv_dim + e;
    KV* to = dst + t0 * STRIDE + e;
#pragma unroll
    for (int k = 0; k < TILE / ROWS; ++k) {
      const bool ok = t0 + k * ROWS < tn && e_ok;
      copy16_async(to + k * ROWS * STRIDE, ok ? base + at : base, ok);
      ring += ROWS;
      at += ROWS * kv_dim;
      if (ring >= cache_len) {
        ring -= cache_len;
        at -= cache_len * kv_dim;
      }
    }
  } else {
    for (int i = threadIdx.x; i < TILE * DMAX; i += blockDim.x) {
      const int t = i / DMAX, e = i % DMAX;
      dst[STRIDE == DMAX ? i : t * STRIDE + e] =
          (t < tn && e < D) ? base[(size_t)attn_ring_index(first, t, cache_len) * kv_dim + e] : (KV)0;
    }
  }
}

// Step 3's softmax of one head within a split (a warp's): m = max of its tn scores S[0 .. tn), p_t = exp(S_t - m)
// handed to store(t, p) for t < TILE (zeros past tn), l = sum p; lane 0 writes m and l. Both kernels' order.
template <int TILE, class Store>
GETP_DEVICE void attn_head_softmax(const float* S, int tn, int lane, float* m_out, float* l_out, Store store) {
  float mx = GETP_NEG_INF;
  for (int t = lane; t < tn; t += WARP_SIZE) mx = fmaxf(mx, S[t]);
  mx = warp_max(mx);
  float sum = 0.0f;
  for (int t = lane; t < TILE; t += WARP_SIZE) {
    const float p = t < tn ? expf(S[t] - mx) : 0.0f;
    store(t, p);
    sum += p;
  }
  sum = warp_sum(sum);
  if (lane == 0) {
    *m_out = mx;
    *l_out = sum;
  }
}

template <int DMAX, int GMAX, typename KV>
GETP_DEVICE void attn_rows_partial(float* __restrict__ smem, float* __restrict__ partial_acc,
                                   float* __restrict__ partial_ml, const float* __restrict__ qkv,
                                   const KV* __restrict__ key_cache, const KV* __restrict__ value_cache,
                                   const int* __restrict__ row_slot, const int* __restrict__ row_pos,
                                   int n_heads, int n_kv_heads, int head_dim, int cache_len, int window,
                                   int split_len, int vec, const AttnMerge merge) {
  typedef AttnRows<DMAX, GMAX> L;
  float* Qs = smem + L::Q_AT;
  float* S = smem + L::S_AT;
  float* P = smem + L::P_AT;
  KV* Vs = (KV*)(smem + L::V_AT);  // V[t][d] as the cache holds it (a BF16 cache: half the region)
  float* red = smem + L::V_AT;  // after P.V
  float* m_s = smem + L::ML_AT;
  float* l_s = m_s + GMAX;

  const AttnSplit sp(row_slot, row_pos, n_heads, n_kv_heads, head_dim, cache_len, window, split_len);
  if (!sp.reached()) return;
  const int tid = threadIdx.x, lane = tid % WARP_SIZE, warp = tid / WARP_SIZE;
  const int D = sp.D, G = sp.G, kv_dim = sp.kv_dim, tn = sp.tn, first = sp.first, n_split = sp.n_split;
  const int r = sp.r, kvh = sp.kvh;
  const size_t out_row = sp.out_row;
  const KV* kbase = key_cache + sp.slot_at;
  const KV* vbase = value_cache + sp.slot_at;

  // 1. Every load of the split, issued before any use: V (asynchronous, to shared), K (registers), q.
  attn_rows_to_shared<L::TILE, DMAX, DMAX>(Vs, vbase, tn, D, first, cache_len, kv_dim, vec);
  const int pair_qk = tid / L::PARTS, part = tid % L::PARTS, d_qk = part * 16;
  float k[L::PER_THREAD][16];
#pragma unroll
  for (int u = 0; u < L::PER_THREAD; ++u) {
    const int t = pair_qk + u * (L::TILE / L::PER_THREAD);
    const bool ok = t < tn;
    const KV* src = kbase + (size_t)attn_ring_index(first, ok ? t : 0, cache_len) * kv_dim + d_qk;
    if (vec) {
      attn_load16(k[u], src, ok, d_qk, D);
    } else {
#pragma unroll
      for (int j = 0; j < 16; ++j) k[u][j] = (ok && d_qk + j < D) ? kv_value(src[j]) : 0.0f;
    }
  }
  {
    const float* q = qkv + (size_t)r * (n_heads + 2 * n_kv_heads) * D + (size_t)kvh * G * D;
    // (all GMAX heads, zeros past G and D; every load issued before the first store waits on one)
    enum { NQ = GMAX * DMAX / BLOCK_SIZE };
    static_assert(GMAX * DMAX % BLOCK_SIZE == 0, "whole passes over q");
    float qv[NQ];
#pragma unroll
    for (int n = 0; n < NQ; ++n) {
      const unsigned i = threadIdx.x + n * BLOCK_SIZE, g = i / DMAX, d = i % DMAX;
      qv[n] = g < (unsigned)G && d < (unsigned)D ? q[g * D + d] : 0.0f;
    }
#pragma unroll
    for (int n = 0; n < NQ; ++n) {
      const unsigned i = threadIdx.x + n * BLOCK_SIZE, g = i / DMAX, d = i % DMAX;
      Qs[g * L::Q_STRIDE + (d / 16) * 20 + d % 16] = qv[n];
    }
  }
  __syncthreads();

  // 2. Scores.
  const float scale = 1.0f / sqrtf((float)D);
  const auto score_head = [&](int g) {
    const float4* qg = (const float4*)(Qs + g * L::Q_STRIDE + part * 20);
    float s[L::PER_THREAD];
#pragma unroll
    for (int u = 0; u < L::PER_THREAD; ++u) s[u] = 0.0f;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float4 q4 = qg[j];
#pragma unroll
      for (int u = 0; u < L::PER_THREAD; ++u)
        s[u] += k[u][4 * j] * q4.x + k[u][4 * j + 1] * q4.y + k[u][4 * j + 2] * q4.z + k[u][4 * j + 3] * q4.w;
    }
#pragma unroll
    for (int u = 0; u < L::PER_THREAD; ++u) {
#pragma unroll
      for (int off = 1; off < L::PARTS; off <<= 1) s[u] += SHFL_XOR(s[u], off);
      const int t = pair_qk + u * (L::TILE / L::PER_THREAD);
      if (part == 0 && t < tn) S[g * L::S_STRIDE + t] = s[u] * scale;
    }
  };
  if (G == GMAX) {  // (unrolled: q's and S's shared addresses become constants)
#pragma unroll
    for (int g = 0; g < GMAX; ++g) score_head(g);
  } else {
    for (int g = 0; g < G; ++g) score_head(g);
  }
  copy_async_wait_all();  // V has landed (this thread's copies; the barrier makes it everyone's)
  __syncthreads();

  // 3. Softmax within the split, a warp per head; heads past G get zero p (P.V then takes all GMAX heads with no
  // test a position: their accumulators are never stored).
  for (int g = warp; g < GMAX; g += BLOCK_SIZE / WARP_SIZE) {
    if (g < G) {
      attn_head_softmax<L::TILE>(S + g * L::S_STRIDE, tn, lane, m_s + g, l_s + g,
                                 [&](int t, float p) { P[t * L::P_STRIDE + g] = p; });
    } else {
      for (int t = lane; t < L::TILE; t += WARP_SIZE) P[t * L::P_STRIDE + g] = 0.0f;
    }
  }
  __syncthreads();

  // 4. P.V over this thread's positions, ascending.
  const int pair = tid % L::PAIRS, sl = tid / L::PAIRS, d_pv = 2 * pair;
  float acc0[GMAX], acc1[GMAX];
#pragma unroll
  for (int g = 0; g < GMAX; ++g) acc0[g] = acc1[g] = 0.0f;
  const int t_stop = min(tn, L::TILE);
  for (int t = sl; t < t_stop; t += L::SLICES) {
    const float2 v = kv_pair(Vs + t * DMAX + d_pv);
    const float4* p4 = (const float4*)(P + t * L::P_STRIDE);
#pragma unroll
    for (int j = 0; j < GMAX / 4; ++j) {
      const float4 p = p4[j];
      acc0[4 * j] += p.x * v.x;
      acc1[4 * j] += p.x * v.y;
      acc0[4 * j + 1] += p.y * v.x;
      acc1[4 * j + 1] += p.y * v.y;
      acc0[4 * j + 2] += p.z * v.x;
      acc1[4 * j + 2] += p.z * v.y;
      acc0[4 * j + 3] += p.w * v.x;
      acc1[4 * j + 3] += p.w * v.y;
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
      // (i over DMAX dims a head, not D: no division by the run-time D; dims past D skipped)
      for (int i = tid; i < ng * DMAX; i += BLOCK_SIZE) {
        const int gi = i / DMAX, d = i % DMAX;
        if (d < D) {
          const float* src = red + gi * L::SLICES * DMAX + d;
          float sum = 0.0f;
#pragma unroll
          for (int s = 0; s < L::SLICES; ++s) sum += src[s * DMAX];
          partial_acc[(out_row + (size_t)(g0 + gi) * n_split) * D + d] = sum;
        }
      }
    }
  }
  sp.finish(partial_acc, partial_ml, m_s, l_s, row_pos, merge);
}

// ---------------------------------------------------------------------------------------------------
// Over a BF16 cache on CUDA sm_80 on (GETP_MMA_SYNC): the same contract on the tensor cores (mma.sync m16n8k16).
// A BF16 cache halves the bytes, and the CUDA-core kernel above is then bound by its arithmetic (ncu, an H100:
// 49 % of the copy bandwidth, 71 % of the issue slots); here the two products go to the tensor cores, exactly:
// K and V are BF16 values, q and p are split into three BF16 pieces (tc_split: their sum is the FP32 value to
// 2^-24), each BF16 x BF16 product is exact in FP32, and each 16-wide k step is summed on the tensor cores
// (smallest piece first) before it joins an FP32 accumulator, as the exact products do (gemm_tc.hip). The same
// split of positions (TILE of the kernel above), the same softmax and merge; other bits than the CUDA cores'
// (other sums), the same whatever the step (each row, split and head takes one fixed order).
//   1. K and V of the split to shared memory by 16-byte asynchronous copies, two groups (K first), zeros outside
//      the split and past head_dim; q's three pieces to shared memory (zeros for heads past G, dims past D).
//   2. scores: warp w takes 16-position by 8-head tiles w, w + 8, ...: S = K q (A: K by ldmatrix; B: q's pieces).
//   3. the softmax, a warp a head; p's three pieces to shared memory (where K was), zeros past tn.
//   4. P.V: warp w takes 8-dim tiles w, w + 8, ...: acc = P V over all the split's positions (A: p's pieces, rows
//      past G zero; B: V by ldmatrix.trans), written straight to partial_acc: no slices to add.
template <int DMAX, int GMAX>
struct AttnMma {
  static const int TILE = AttnRows<DMAX, GMAX>::TILE;  // positions of a split: the CUDA-core kernel's
  static const int KS = DMAX + 8;                      // bf16 row stride of K, V and q's pieces: 16-byte rows,
  static const int PS = TILE + 8;                      // and of p's pieces: no bank conflicts in the fragments
  static const int S_STRIDE = TILE + 1;
  static const int K_AT = 0, V_AT = K_AT + TILE * KS * 2, Q_AT = V_AT + TILE * KS * 2;  // bytes
  static const int S_AT = Q_AT + 3 * GMAX * KS * 2, ML_AT = S_AT + GMAX * S_STRIDE * 4;
  static const int TOTAL = ML_AT + 2 * GMAX * 4;
  static_assert(TILE % 16 == 0 && DMAX % 16 == 0 && GMAX % 8 == 0 && GMAX <= 16, "mma tiles");
  static_assert(3 * GMAX * PS <= TILE * KS, "p's pieces fit where K was");
  static_assert(V_AT % 16 == 0 && Q_AT % 16 == 0 && S_AT % 16 == 0 && ML_AT % 4 == 0, "alignment");
  static_assert(TOTAL <= 48 * 1024, "static shared memory");
};

#if GETP_MMA_SYNC
// Three BF16 pieces of v at pieces[p * plane + at], p = 0 the largest.
GETP_DEVICE void attn_store_pieces(unsigned short* pieces, int plane, int at, float v) {
  unsigned piece[3];
  tc_split<3>(v, piece);
#pragma unroll
  for (int p = 0; p < 3; ++p) pieces[p * plane + at] = (unsigned short)piece[p];
}

template <int DMAX, int GMAX>
GETP_DEVICE void attn_rows_partial_mma(unsigned char* __restrict__ smem, float* __restrict__ partial_acc,
                                       float* __restrict__ partial_ml, const float* __restrict__ qkv,
                                       const unsigned short* __restrict__ key_cache,
                                       const unsigned short* __restrict__ value_cache, const int* __restrict__ row_slot,
                                       const int* __restrict__ row_pos, int n_heads, int n_kv_heads, int head_dim,
                                       int cache_len, int window, int split_len, int vec, const AttnMerge merge) {
  typedef AttnMma<DMAX, GMAX> L;
  unsigned short* Ks = (unsigned short*)(smem + L::K_AT);
  unsigned short* Vs = (unsigned short*)(smem + L::V_AT);
  unsigned short* Qp = (unsigned short*)(smem + L::Q_AT);  // [3][GMAX][KS]
  unsigned short* Pp = Ks;                                 // [3][GMAX][PS], once the scores are done
  float* S = (float*)(smem + L::S_AT);
  float* m_s = (float*)(smem + L::ML_AT);
  float* l_s = m_s + GMAX;

  const AttnSplit sp(row_slot, row_pos, n_heads, n_kv_heads, head_dim, cache_len, window, split_len);
  if (!sp.reached()) return;
  const int tid = threadIdx.x, lane = tid % WARP_SIZE, warp = tid / WARP_SIZE, warps = blockDim.x / WARP_SIZE;
  const int gq = lane / 4, tq = lane % 4;  // the mma fragments' row and column pair
  const int D = sp.D, G = sp.G, kv_dim = sp.kv_dim, tn = sp.tn, first = sp.first, n_split = sp.n_split;
  const int r = sp.r, kvh = sp.kvh;
  const size_t out_row = sp.out_row, slot_at = sp.slot_at;

  // 1. K, then V (two copy groups), q's pieces.
  attn_rows_to_shared<L::TILE, DMAX, L::KS>(Ks, key_cache + slot_at, tn, D, first, cache_len, kv_dim, vec);
  copy_async_commit();
  attn_rows_to_shared<L::TILE, DMAX, L::KS>(Vs, value_cache + slot_at, tn, D, first, cache_len, kv_dim, vec);
  copy_async_commit();
  {
    const float* q = qkv + (size_t)r * (n_heads + 2 * n_kv_heads) * D + (size_t)kvh * G * D;
    for (int i = tid; i < GMAX * DMAX; i += blockDim.x) {
      const int g = i / DMAX, d = i % DMAX;
      attn_store_pieces(Qp, GMAX * L::KS, g * L::KS + d, (g < G && d < D) ? q[g * D + d] : 0.0f);
    }
  }
  copy_async_wait_groups<1>();  // this thread's K copies have landed (the barrier makes it everyone's)
  __syncthreads();

  // 2. Scores: S[g][t] = (K q_g)[t] / sqrt(D).
  const float scale = 1.0f / sqrtf((float)D);
  const int m_tiles = L::TILE / 16;
  for (int item = warp; item < m_tiles * (GMAX / 8); item += warps) {
    const int m0 = (item % m_tiles) * 16, n0 = (item / m_tiles) * 8;
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int kk = 0; kk < DMAX; kk += 16) {
      unsigned a[4];
      tc_ldmatrix_x4(a, Ks + (m0 + lane % 8 + 8 * ((lane / 8) % 2)) * L::KS + kk + 8 * (lane / 16));
      float t[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
      for (int p = 2; p >= 0; --p) {
        const unsigned short* b = Qp + (p * GMAX + n0 + gq) * L::KS + kk + 2 * tq;
        tc_mma_bf16(t, a, *(const unsigned*)b, *(const unsigned*)(b + 8), t);
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[i] += t[i];
    }
#pragma unroll
    for (int i = 0; i < 4; ++i)  // (position m0 + gq (+ 8), head n0 + 2 tq (+ 1))
      S[(n0 + 2 * tq + i % 2) * L::S_STRIDE + m0 + gq + 8 * (i / 2)] = acc[i] * scale;
  }
  __syncthreads();  // the scores are written, K is read: p's pieces take its place

  // 3. Softmax within the split, a warp a head; heads past G get zero pieces (rows of the P.V fragments).
  for (int g = warp; g < GMAX; g += warps) {
    if (g >= G) {
      for (int t = lane; t < L::TILE; t += WARP_SIZE) attn_store_pieces(Pp, GMAX * L::PS, g * L::PS + t, 0.0f);
      continue;
    }
    attn_head_softmax<L::TILE>(S + g * L::S_STRIDE, tn, lane, m_s + g, l_s + g,
                               [&](int t, float p) { attn_store_pieces(Pp, GMAX * L::PS, g * L::PS + t, p); });
  }
  copy_async_wait_groups<0>();  // V has landed
  __syncthreads();

  // 4. P.V: acc[g][d] = sum_t p_g[t] V[t][d], 8 dims a tile, every position of the split.
  for (int n0 = 8 * warp; n0 < DMAX; n0 += 8 * warps) {
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll 2
    for (int kk = 0; kk < L::TILE; kk += 16) {
      unsigned b[2];
      tc_ldmatrix_x2_trans(b, Vs + (kk + lane % 16) * L::KS + n0);
      float t[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
      for (int p = 2; p >= 0; --p) {
        const unsigned short* pa = Pp + (p * GMAX + gq) * L::PS + kk + 2 * tq;
        const unsigned a[4] = {*(const unsigned*)pa, GMAX > 8 ? *(const unsigned*)(pa + 8 * L::PS) : 0u,
                               *(const unsigned*)(pa + 8), GMAX > 8 ? *(const unsigned*)(pa + 8 * L::PS + 8) : 0u};
        tc_mma_bf16(t, a, b[0], b[1], t);
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[i] += t[i];
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {  // (head gq (+ 8), dim n0 + 2 tq (+ 1))
      const int g = gq + 8 * (i / 2), d = n0 + 2 * tq + i % 2;
      if (g < G && d < D) partial_acc[(out_row + (size_t)g * n_split) * D + d] = acc[i];
    }
  }
  sp.finish(partial_acc, partial_ml, m_s, l_s, row_pos, merge);
}
#endif

// ---------------------------------------------------------------------------------------------------
// Over an FP32 cache on CUDA sm_80 on, opt-in (launch/attention.py ATTN_TF32): the same contract on the tensor
// cores in TF32, three products a pair of FP32 values (x = hi + lo, hi and lo TF32: hi hi + hi lo + lo hi, the
// smallest first; each to ~2^-22 of it, the CUDA-core kernel's FMAs to 2^-24), so a split costs a fraction of the
// CUDA-core kernel's instructions, that kernel being bound by its issue slots as much as by DRAM. Head dims up to
// 64, groups up to 8 (the 20b and 120b shape). The same split of positions (TILE), softmax and merge; other bits
// than the CUDA cores' (other sums), the same whatever the step.
//   1. K: warp w's 16 positions 16 w + (0..15) in registers, 16-byte loads: lane (g, t) = (lane / 4, lane % 4)
//      holds dims 16 c + 4 t .. + 3 (c = 0..3) of positions 16 w + g and + 8, the mma's A fragments of all eight
//      8-dim k steps (k step s: dims 16 (s / 2) + 4 t + 2 (s % 2) + {0, 1} as its k t and t + 4; q's pieces are
//      stored in that order). V to shared memory (asynchronous 16-byte copies), q's TF32 pieces to shared memory.
//   2. scores: warp w: S[g][16 w + i] = (K q_g) / sqrt(D), 3 mmas a k step (hi hi in one accumulator, the two
//      smaller products in another, added at the end).
//   3. the softmax, a warp a head, p's TF32 pieces: hi in place of S, lo where q's pieces were (zeros past tn;
//      heads past G all zero).
//   4. P.V: warp w takes dims 16 (w % 4) .. + 15 (A = V^T: its rows 2 g and 2 g + 1 of the tile as m rows g and
//      g + 8) over positions 64 (w / 4) .. + 63 (k step s: positions 8 s + 2 t, + 1 as k t and t + 4; B = P^T); the
//      two halves of the positions added in order (warps w and w + 4), written straight to partial_acc.
template <int DMAX, int GMAX>
struct AttnTf32 {
  static const int TILE = AttnRows<DMAX, GMAX>::TILE;  // positions of a split: the CUDA-core kernel's
  static const int QS = DMAX + 8;    // q's pieces a head: k step s's 8 values of lane t at 8 s + 2 t (no conflicts)
  static const int SS = TILE + 8;    // S and P a head: P.V's B reads 8-byte pairs, no conflicts
  static const int VS = DMAX + 4;    // V a position: 16-byte rows, P.V's A pairs without conflicts
  static const int QHI_AT = 0, QLO_AT = GMAX * QS, S_AT = 2 * GMAX * QS, V_AT = S_AT + GMAX * SS;
  static const int ML_AT = V_AT + TILE * VS, TOTAL = ML_AT + 2 * GMAX;
  static const int PLO_AT = 0;       // p's lo pieces, where q's pieces were (GMAX x SS)
  static const int RED_AT = 0;       // then the P.V halves' sums: 4 warps x 32 lanes x 4
  static_assert(DMAX == 64 && GMAX == 8 && TILE == 16 * (BLOCK_SIZE / WARP_SIZE), "the 20b/120b shape");
  static_assert(GMAX * SS <= 2 * GMAX * QS && 4 * WARP_SIZE * 4 <= 2 * GMAX * QS, "p's lo, the sums fit there");
  static_assert(V_AT % 4 == 0 && VS % 4 == 0 && TOTAL % 4 == 0 && TOTAL * 4 <= 48 * 1024,
                "16-byte rows, static shared memory");
};

#if GETP_MMA_SYNC
template <int DMAX, int GMAX>
GETP_DEVICE void attn_rows_partial_tf32(float* __restrict__ smem, float* __restrict__ partial_acc,
                                        float* __restrict__ partial_ml, const float* __restrict__ qkv,
                                        const float* __restrict__ key_cache, const float* __restrict__ value_cache,
                                        const int* __restrict__ row_slot, const int* __restrict__ row_pos,
                                        int n_heads, int n_kv_heads, int head_dim, int cache_len, int window,
                                        int split_len, int vec, const AttnMerge merge) {
  typedef AttnTf32<DMAX, GMAX> L;
  unsigned* Qhi = (unsigned*)(smem + L::QHI_AT);
  unsigned* Qlo = (unsigned*)(smem + L::QLO_AT);
  float* S = smem + L::S_AT;  // S[g][t], then p's hi pieces in its place
  unsigned* Plo = (unsigned*)(smem + L::PLO_AT);
  float* Vs = smem + L::V_AT;
  float* red = smem + L::RED_AT;
  float* m_s = smem + L::ML_AT;
  float* l_s = m_s + GMAX;

  const AttnSplit sp(row_slot, row_pos, n_heads, n_kv_heads, head_dim, cache_len, window, split_len);
  if (!sp.reached()) return;
  const int tid = threadIdx.x, lane = tid % WARP_SIZE, warp = tid / WARP_SIZE;
  const int gq = lane / 4, tq = lane % 4;
  const int D = sp.D, G = sp.G, kv_dim = sp.kv_dim, tn = sp.tn, first = sp.first, n_split = sp.n_split;
  const size_t out_row = sp.out_row;
  const float* kbase = key_cache + sp.slot_at;

  // 1. V (asynchronous), K of this lane's two positions (registers), q's pieces.
  attn_rows_to_shared<L::TILE, DMAX, L::VS>(Vs, value_cache + sp.slot_at, tn, D, first, cache_len, kv_dim, vec);
  float k[2][16];  // [position 16 w + g, + 8][16 c + 4 t + i as 4 c + i]
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int t = 16 * warp + gq + 8 * h;
    const bool ok = t < tn;
    const float* src = kbase + (size_t)attn_ring_index(first, ok ? t : 0, cache_len) * kv_dim;
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int d0 = 16 * c + 4 * tq;
      if (vec) {
        const float4 v = ok && d0 < D ? *(const float4*)(src + d0) : make_float4(0.f, 0.f, 0.f, 0.f);
        k[h][4 * c] = v.x;
        k[h][4 * c + 1] = v.y;
        k[h][4 * c + 2] = v.z;
        k[h][4 * c + 3] = v.w;
      } else {
#pragma unroll
        for (int i = 0; i < 4; ++i) k[h][4 * c + i] = ok && d0 + i < D ? src[d0 + i] : 0.0f;
      }
    }
  }
  {
    const float* q = qkv + (size_t)sp.r * (n_heads + 2 * n_kv_heads) * D + (size_t)sp.kvh * G * D;
    for (int i = tid; i < GMAX * DMAX; i += BLOCK_SIZE) {
      const int g = i / DMAX, slot = i % DMAX, s = slot / 8, t = (slot % 8) / 2, j = slot % 2;
      const int d = 16 * (s / 2) + 4 * t + 2 * (s % 2) + j;  // the dim k step s pairs with lane t's K
      unsigned hi, lo;
      tc_split_tf32(g < G && d < D ? q[g * D + d] : 0.0f, hi, lo);
      Qhi[g * L::QS + slot] = hi;
      Qlo[g * L::QS + slot] = lo;
    }
  }
  __syncthreads();

  // 2. Scores of positions 16 warp + (0..15), all GMAX heads.
  {
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f}, small[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int s = 0; s < DMAX / 8; ++s) {
      const int i0 = 4 * (s / 2) + 2 * (s % 2);
      const float a[4] = {k[0][i0], k[1][i0], k[0][i0 + 1], k[1][i0 + 1]};
      unsigned ahi[4], alo[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) tc_split_tf32(a[i], ahi[i], alo[i]);
      const uint2 bhi = *(const uint2*)(Qhi + gq * L::QS + 8 * s + 2 * tq);
      const uint2 blo = *(const uint2*)(Qlo + gq * L::QS + 8 * s + 2 * tq);
      tc_mma_tf32(small, alo, bhi.x, bhi.y, small);
      tc_mma_tf32(small, ahi, blo.x, blo.y, small);
      tc_mma_tf32(acc, ahi, bhi.x, bhi.y, acc);
    }
    const float scale = 1.0f / sqrtf((float)D);
#pragma unroll
    for (int i = 0; i < 4; ++i)  // (position 16 warp + g (+ 8), head 2 t (+ 1))
      S[(2 * tq + i % 2) * L::SS + 16 * warp + gq + 8 * (i / 2)] = (acc[i] + small[i]) * scale;
  }
  copy_async_wait_all();  // V has landed (this thread's copies; the barrier makes it everyone's)
  __syncthreads();

  // 3. Softmax within the split, a warp a head: p's pieces, hi over S; heads past G all zero.
  for (int g = warp; g < GMAX; g += BLOCK_SIZE / WARP_SIZE) {
    float* row = S + g * L::SS;
    unsigned* row_lo = Plo + g * L::SS;
    const auto store = [&](int t, float p) {
      unsigned hi, lo;
      tc_split_tf32(p, hi, lo);
      row[t] = __uint_as_float(hi);
      row_lo[t] = lo;
    };
    if (g < G) {
      attn_head_softmax<L::TILE>(row, tn, lane, m_s + g, l_s + g, store);
    } else {
      for (int t = lane; t < L::TILE; t += WARP_SIZE) store(t, 0.0f);
    }
  }
  __syncthreads();

  // 4. P.V: out[d][g] over positions 64 half .. + 63 of dims 16 mt .. + 15.
  const int mt = warp % 4, half = warp / 4;
  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f}, small[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
  for (int s = 0; s < L::TILE / 16; ++s) {
    const int t0 = L::TILE / 2 * half + 8 * s + 2 * tq;
    const float2 v0 = *(const float2*)(Vs + t0 * L::VS + 16 * mt + 2 * gq);        // (m g, k t), (m g + 8, k t)
    const float2 v1 = *(const float2*)(Vs + (t0 + 1) * L::VS + 16 * mt + 2 * gq);  // k t + 4
    const uint2 bhi = *(const uint2*)(S + gq * L::SS + t0);  // head g: k t, k t + 4
    const uint2 blo = *(const uint2*)(Plo + gq * L::SS + t0);
    const float a[4] = {v0.x, v0.y, v1.x, v1.y};
    unsigned ahi[4], alo[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) tc_split_tf32(a[i], ahi[i], alo[i]);
    tc_mma_tf32(small, alo, bhi.x, bhi.y, small);
    tc_mma_tf32(small, ahi, blo.x, blo.y, small);
    tc_mma_tf32(acc, ahi, bhi.x, bhi.y, acc);
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) acc[i] += small[i];
  __syncthreads();  // every warp has read p's lo pieces: the second halves' sums go there
  if (half == 1) {
#pragma unroll
    for (int i = 0; i < 4; ++i) red[(mt * WARP_SIZE + lane) * 4 + i] = acc[i];
  }
  __syncthreads();
  if (half == 0) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {  // (dim 16 mt + 2 g + i / 2, head 2 t + i % 2)
      const int d = 16 * mt + 2 * gq + i / 2, g = 2 * tq + i % 2;
      const float sum = acc[i] + red[(mt * WARP_SIZE + lane) * 4 + i];
      if (g < G && d < D) partial_acc[(out_row + (size_t)g * n_split) * D + d] = sum;
    }
  }
  sp.finish(partial_acc, partial_ml, m_s, l_s, row_pos, merge);
}
#endif

// A kernel's body by its cache: FP32 on the CUDA cores; BF16 on the tensor cores where mma.sync is (else the
// CUDA cores, widening it).
template <int DMAX, int GMAX>
GETP_DEVICE void attn_rows_partial_of(float* partial_acc, float* partial_ml, const float* qkv, const float* key_cache,
                                      const float* value_cache, const int* row_slot, const int* row_pos, int n_heads,
                                      int n_kv_heads, int head_dim, int cache_len, int window, int split_len, int vec,
                                      const AttnMerge merge) {
  __shared__ float4 smem4[AttnRows<DMAX, GMAX>::TOTAL / 4];
  attn_rows_partial<DMAX, GMAX, float>((float*)smem4, partial_acc, partial_ml, qkv, key_cache, value_cache, row_slot,
                                       row_pos, n_heads, n_kv_heads, head_dim, cache_len, window, split_len, vec,
                                       merge);
}
template <int DMAX, int GMAX>
GETP_DEVICE void attn_rows_partial_of(float* partial_acc, float* partial_ml, const float* qkv,
                                      const unsigned short* key_cache, const unsigned short* value_cache,
                                      const int* row_slot, const int* row_pos, int n_heads, int n_kv_heads,
                                      int head_dim, int cache_len, int window, int split_len, int vec,
                                      const AttnMerge merge) {
#if GETP_MMA_SYNC
  __shared__ float4 smem4[(AttnMma<DMAX, GMAX>::TOTAL + 15) / 16];
  attn_rows_partial_mma<DMAX, GMAX>((unsigned char*)smem4, partial_acc, partial_ml, qkv, key_cache, value_cache,
                                    row_slot, row_pos, n_heads, n_kv_heads, head_dim, cache_len, window, split_len,
                                    vec, merge);
#else
  __shared__ float4 smem4[AttnRows<DMAX, GMAX>::TOTAL / 4];
  attn_rows_partial<DMAX, GMAX, unsigned short>((float*)smem4, partial_acc, partial_ml, qkv, key_cache, value_cache,
                                                row_slot, row_pos, n_heads, n_kv_heads, head_dim, cache_len, window,
                                                split_len, vec, merge);
#endif
}

// The opt-in TF32 kernel: its body where mma.sync is, else the CUDA-core kernel's (the same bits as _f32).
template <int DMAX, int GMAX>
GETP_DEVICE void attn_rows_partial_tf32_of(float* partial_acc, float* partial_ml, const float* qkv,
                                           const float* key_cache, const float* value_cache, const int* row_slot,
                                           const int* row_pos, int n_heads, int n_kv_heads, int head_dim,
                                           int cache_len, int window, int split_len, int vec,
                                           const AttnMerge merge) {
#if GETP_MMA_SYNC
  __shared__ float4 smem4[AttnTf32<DMAX, GMAX>::TOTAL / 4];
  attn_rows_partial_tf32<DMAX, GMAX>((float*)smem4, partial_acc, partial_ml, qkv, key_cache, value_cache, row_slot,
                                     row_pos, n_heads, n_kv_heads, head_dim, cache_len, window, split_len, vec,
                                     merge);
#else
  attn_rows_partial_of<DMAX, GMAX>(partial_acc, partial_ml, qkv, key_cache, value_cache, row_slot, row_pos, n_heads,
                                   n_kv_heads, head_dim, cache_len, window, split_len, vec, merge);
#endif
}

// One kernel per (head_dim bound, group bound, cache): attn_rows_partial_d{64,128}_g{8,16}_{f32,bf16kv}
// (ATTN_MAX_GROUP: cupy_getp/gpu/constants.py); f32: an FP32 KV cache, bf16kv: a BF16 one (uint16).
#define ATTN_ROWS_PARTIAL_KERNEL(DMAX, GMAX, KV, CACHE)                                                          \
  extern "C" __global__ void ATTN_BOUNDS(GMAX) attn_rows_partial_d##DMAX##_g##GMAX##_##CACHE(                    \
      float* __restrict__ partial_acc, float* __restrict__ partial_ml, const float* __restrict__ qkv,             \
      const KV* __restrict__ key_cache, const KV* __restrict__ value_cache, const int* __restrict__ row_slot,     \
      const int* __restrict__ row_pos, int n_heads, int n_kv_heads, int head_dim, int cache_len, int window,       \
      int split_len, int vec, float* __restrict__ att, unsigned short* __restrict__ pieces,                      \
      const float* __restrict__ sinks, unsigned* __restrict__ counters, int lda, int n_pieces) {                   \
    grid_begin();                                                                                                  \
    attn_rows_partial_of<DMAX, GMAX>(partial_acc, partial_ml, qkv, key_cache, value_cache, row_slot, row_pos,       \
                                     n_heads, n_kv_heads, head_dim, cache_len, window, split_len, vec,             \
                                     AttnMerge{att, pieces, sinks, counters, lda, n_pieces});                       \
  }
ATTN_ROWS_PARTIAL_KERNEL(64, 8, float, f32)
ATTN_ROWS_PARTIAL_KERNEL(64, 16, float, f32)
ATTN_ROWS_PARTIAL_KERNEL(128, 8, float, f32)
ATTN_ROWS_PARTIAL_KERNEL(128, 16, float, f32)
ATTN_ROWS_PARTIAL_KERNEL(64, 8, unsigned short, bf16kv)
ATTN_ROWS_PARTIAL_KERNEL(64, 16, unsigned short, bf16kv)
ATTN_ROWS_PARTIAL_KERNEL(128, 8, unsigned short, bf16kv)
ATTN_ROWS_PARTIAL_KERNEL(128, 16, unsigned short, bf16kv)

// attn_rows_partial_d64_g8_f32tc: an FP32 cache on the tensor cores (TF32, three products), opt-in.
extern "C" __global__ void ATTN_BOUNDS(8) attn_rows_partial_d64_g8_f32tc(
    float* __restrict__ partial_acc, float* __restrict__ partial_ml, const float* __restrict__ qkv,
    const float* __restrict__ key_cache, const float* __restrict__ value_cache, const int* __restrict__ row_slot,
    const int* __restrict__ row_pos, int n_heads, int n_kv_heads, int head_dim, int cache_len, int window,
    int split_len, int vec, float* __restrict__ att, unsigned short* __restrict__ pieces,
    const float* __restrict__ sinks, unsigned* __restrict__ counters, int lda, int n_pieces) {
  grid_begin();
  attn_rows_partial_tf32_of<64, 8>(partial_acc, partial_ml, qkv, key_cache, value_cache, row_slot, row_pos, n_heads,
                                   n_kv_heads, head_dim, cache_len, window, split_len, vec,
                                   AttnMerge{att, pieces, sinks, counters, lda, n_pieces});
}

// The merge alone: a warp per (row, head), grid ceil(R nh / WARPS_PER_BLOCK).
GETP_DEVICE void attn_rows_merge(float* __restrict__ att, unsigned short* __restrict__ pieces,
                                 const float* __restrict__ partial_acc, const float* __restrict__ partial_ml,
                                 const float* __restrict__ sinks, const int* __restrict__ row_pos, int n_items,
                                 int n_heads, int n_split, int head_dim, int window, int split_len, int lda,
                                 int n_pieces, int pairs) {
  const int item = blockIdx.x * (int)(blockDim.x / WARP_SIZE) + (int)(threadIdx.x / WARP_SIZE);  // r nh + h
  if (item >= n_items) return;  // warp-uniform
  attn_merge_item(item, n_items / n_heads, att, pieces, partial_acc, partial_ml, sinks, row_pos, n_heads, n_split,
                  head_dim, window, split_len, lda, n_pieces, pairs != 0);
}

extern "C" __global__ void attn_rows_merge_f32(float* __restrict__ att, const float* __restrict__ partial_acc,
                                               const float* __restrict__ partial_ml, const float* __restrict__ sinks,
                                               const int* __restrict__ row_pos, int n_items, int n_heads, int n_split,
                                               int head_dim, int window, int split_len, int pairs) {
  grid_begin();
  attn_rows_merge(att, (unsigned short*)0, partial_acc, partial_ml, sinks, row_pos, n_items, n_heads, n_split,
                  head_dim, window, split_len, 0, 0, pairs);
}

extern "C" __global__ void attn_rows_merge_split(float* __restrict__ att, unsigned short* __restrict__ pieces,
                                                 const float* __restrict__ partial_acc,
                                                 const float* __restrict__ partial_ml, const float* __restrict__ sinks,
                                                 const int* __restrict__ row_pos, int n_items, int n_heads,
                                                 int n_split, int head_dim, int window, int split_len, int lda,
                                                 int n_pieces, int pairs) {
  grid_begin();
  attn_rows_merge(att, pieces, partial_acc, partial_ml, sinks, row_pos, n_items, n_heads, n_split, head_dim,
                  window, split_len, lda, n_pieces, pairs);
}
