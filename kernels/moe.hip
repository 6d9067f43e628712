// moe.hip: router top-k, and the expert MLPs with BF16 or MXFP4 weights (widened exactly to FP32 before every
// FMA).
#include "common.h"

// Expert weight rows of n values, by row index (expert e's row r is e * rows + r): BF16 bits, or MXFP4 codes
// and scales (cupy_getp/gpu/launch/common.py Mxfp4Matrix: G = ceil(n / MXFP4_BLOCK) scales and G * 16 code
// bytes a row). warp_dot_mxfp4 widens each value exactly to the BF16 value it stands for and adds in
// warp_dot_bf16's order, so the mxfp4w kernels' results equal the bf16w kernels' bit for bit.
struct Bf16Rows {
  const unsigned short* w;
  int n, vec8;
  GETP_DEVICE float dot(size_t row, const float* __restrict__ x) const {
    return warp_dot_bf16(w + row * n, x, n, vec8);
  }
};
struct Mxfp4Rows {
  const unsigned char* codes;
  const unsigned char* scales;
  int n, vec8;
  GETP_DEVICE float dot(size_t row, const float* __restrict__ x) const {
    const size_t groups = (n + MXFP4_BLOCK - 1) / MXFP4_BLOCK;
    return warp_dot_mxfp4(codes + row * groups * (MXFP4_BLOCK / 2), scales + row * groups, x, n, vec8);
  }
};

// For each choice s (the s-th chosen expert, e = experts[s]) and j < I: the gate row 2j and up row 2j + 1
// of w_mlp1[e], plus bias, then SwiGLU: gate = min(gate, limit), up = clamp(up, +-limit),
// g = gate * sigmoid(1.702 gate) * (up + 1). Grid (ceil(I / WARPS_PER_BLOCK), top_k): a warp per (s, j).
template <typename Rows>
GETP_DEVICE void moe_mlp1_swiglu_core(float* __restrict__ g, const Rows& w_mlp1, const float* __restrict__ b_mlp1,
                                      const float* __restrict__ t, const int* __restrict__ experts, int inter,
                                      float limit) {
  const int j = blockIdx.x * WARPS_PER_BLOCK + threadIdx.x / WARP_SIZE, s = blockIdx.y;
  if (j >= inter) return;
  const size_t gate_row = (size_t)experts[s] * 2 * inter + 2 * (size_t)j;
  float gate = w_mlp1.dot(gate_row, t);
  float up = w_mlp1.dot(gate_row + 1, t);
  if (threadIdx.x % WARP_SIZE == 0)
    g[(size_t)s * inter + j] = swiglu_f32(gate + b_mlp1[gate_row], up + b_mlp1[gate_row + 1], limit);
}

extern "C" __global__ void moe_mlp1_swiglu_bf16w(float* __restrict__ g, const unsigned short* __restrict__ w_mlp1,
                                                 const float* __restrict__ b_mlp1, const float* __restrict__ t,
                                                 const int* __restrict__ experts, int hidden, int inter,
                                                 float limit, int vec8) {
  grid_begin();
  moe_mlp1_swiglu_core(g, Bf16Rows{w_mlp1, hidden, vec8}, b_mlp1, t, experts, inter, limit);
}

extern "C" __global__ void moe_mlp1_swiglu_mxfp4w(float* __restrict__ g, const unsigned char* __restrict__ codes,
                                                  const unsigned char* __restrict__ scales,
                                                  const float* __restrict__ b_mlp1, const float* __restrict__ t,
                                                  const int* __restrict__ experts, int hidden, int inter,
                                                  float limit, int vec8) {
  grid_begin();
  moe_mlp1_swiglu_core(g, Mxfp4Rows{codes, scales, hidden, vec8}, b_mlp1, t, experts, inter, limit);
}

// x[h] += sum_s weight[s] * (w_mlp2[e_s, h, :] . g[s, :] + b_mlp2[e_s, h]), also written to moe_out.
// Choices are summed in order, as the reference does. A block takes MOE_MLP2_ROWS rows h; its warps split
// the top_k dot products of each (warp w: row w / ks, choices w % ks, + ks, ... with ks = min(top_k, warps)),
// so top_k weight rows stream at once; the first warp of a row adds the choices' results in order.
// Grid (ceil(hidden / (WARPS_PER_BLOCK / ks))); top_k <= MOE_MAX_K (cupy_getp/gpu/constants.py).
template <typename Rows>
GETP_DEVICE void moe_mlp2_accumulate_core(float* __restrict__ x, float* __restrict__ moe_out, const Rows& w_mlp2,
                                          const float* __restrict__ b_mlp2, const float* __restrict__ g,
                                          const int* __restrict__ experts, const float* __restrict__ weights,
                                          int top_k, int hidden, int inter) {
  __shared__ float y_s[WARPS_PER_BLOCK][MOE_MAX_K];
  const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
  const int ks = top_k < WARPS_PER_BLOCK ? top_k : WARPS_PER_BLOCK;  // warps per row
  const int row_in_block = warp / ks, h = blockIdx.x * (WARPS_PER_BLOCK / ks) + row_in_block;
  const bool active = row_in_block < WARPS_PER_BLOCK / ks && h < hidden;
  if (active)
    for (int s = warp % ks; s < top_k; s += ks) {
      const size_t e = (size_t)experts[s];
      const float y = w_mlp2.dot(e * hidden + h, g + (size_t)s * inter);
      if (lane == 0) y_s[row_in_block][s] = y;
    }
  __syncthreads();
  if (active && warp % ks == 0 && lane == 0) {
    float total = 0.0f;
    for (int s = 0; s < top_k; ++s)
      total += weights[s] * (y_s[row_in_block][s] + b_mlp2[(size_t)experts[s] * hidden + h]);
    moe_out[h] = total;
    x[h] += total;
  }
}

extern "C" __global__ void moe_mlp2_accumulate_bf16w(float* __restrict__ x, float* __restrict__ moe_out,
                                                     const unsigned short* __restrict__ w_mlp2,
                                                     const float* __restrict__ b_mlp2, const float* __restrict__ g,
                                                     const int* __restrict__ experts,
                                                     const float* __restrict__ weights, int top_k, int hidden,
                                                     int inter, int vec8) {
  grid_begin();
  moe_mlp2_accumulate_core(x, moe_out, Bf16Rows{w_mlp2, inter, vec8}, b_mlp2, g, experts, weights, top_k, hidden,
                           inter);
}

extern "C" __global__ void moe_mlp2_accumulate_mxfp4w(float* __restrict__ x, float* __restrict__ moe_out,
                                                      const unsigned char* __restrict__ codes,
                                                      const unsigned char* __restrict__ scales,
                                                      const float* __restrict__ b_mlp2, const float* __restrict__ g,
                                                      const int* __restrict__ experts,
                                                      const float* __restrict__ weights, int top_k, int hidden,
                                                      int inter, int vec8) {
  grid_begin();
  moe_mlp2_accumulate_core(x, moe_out, Mxfp4Rows{codes, scales, inter, vec8}, b_mlp2, g, experts, weights, top_k,
                           hidden, inter);
}

// ---- batched engine: router over rows, expert grouping (align), combine ---------------------------

// Warp-wide ballot as 64 bits: HIP's __ballot is 64 bits (wavefront 64), CUDA's 32 (upper bits 0).
#ifdef GETP_HIP
#define MOE_BALLOT(p) ((unsigned long long)__ballot(p))
#define MOE_WARP_SYNC() __builtin_amdgcn_wave_barrier()
#else
#define MOE_BALLOT(p) ((unsigned long long)__ballot_sync(0xffffffffu, (p)))
#define MOE_WARP_SYNC() __syncwarp()
#endif

// A strict total order of (score, index) as one unsigned 64-bit key, larger = chosen first: the score's
// order-preserving bits (+0 and -0 equal, NaN below everything as numpy's argsort of -scores puts NaN
// last), then the lower index first.
GETP_DEVICE unsigned long long moe_route_key(float score, int index) {
  unsigned int u = __float_as_uint(score == 0.0f ? 0.0f : score);
  unsigned int key;
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) key = 0u;  // NaN
  else key = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return ((unsigned long long)key << 32) | (unsigned long long)(0xFFFFFFFFu - (unsigned int)index);
}

GETP_DEVICE unsigned long long warp_max_u64(unsigned long long v) {
  for (int offset = WARP_SIZE / 2; offset > 0; offset >>= 1) {
    const unsigned int lo = (unsigned int)SHFL_XOR((int)(unsigned int)v, offset);
    const unsigned int hi = (unsigned int)SHFL_XOR((int)(unsigned int)(v >> 32), offset);
    const unsigned long long other = ((unsigned long long)hi << 32) | lo;
    v = other > v ? other : v;
  }
  return v;
}

// The choice of one row's experts, by one warp: out_e[s] = the s-th best expert by score (ties to the lower
// index), out_w = softmax of the k chosen scores (exp(score - the largest chosen), normalised). The s-th chosen
// is the largest key below the (s-1)-th, so no per-expert state is kept.
GETP_DEVICE void route_row(int* __restrict__ out_e, float* __restrict__ out_w, const float* row, int n_experts,
                           int top_k) {
  const int lane = threadIdx.x % WARP_SIZE;
  unsigned long long bound = ~0ull;  // every key is below: the first pick is the maximum
  for (int s = 0; s < top_k; ++s) {
    unsigned long long best = 0ull;  // keys are never 0: the index part of a key is > 0 for index < 2^32 - 1
    for (int e = lane; e < n_experts; e += WARP_SIZE) {
      const unsigned long long key = moe_route_key(row[e], e);
      if (key < bound && key > best) best = key;
    }
    best = warp_max_u64(best);
    if (lane == 0) out_e[s] = (int)(0xFFFFFFFFu - (unsigned int)best);
    bound = best;
  }
  if (lane == 0) {
    const float m = row[out_e[0]];  // the first chosen is the largest
    float sum = 0.0f;
    for (int s = 0; s < top_k; ++s) {
      out_w[s] = expf(row[out_e[s]] - m);
      sum += out_w[s];
    }
    for (int s = 0; s < top_k; ++s) out_w[s] /= sum;
  }
}

// A row x of t (n values, n % 4 == 0, 16-byte aligned) into shared memory by the block's threads, the copies a
// commit group of their own.
GETP_DEVICE void router_stage_row(float4* staged, const float* __restrict__ x, int n) {
  for (int j = threadIdx.x; j < n / 4; j += blockDim.x) copy16_async(staged + j, (const float4*)x + j, true);
  copy_async_commit();
}

// The router over rows with its choice, one launch: per row r, scores[r, e] = w_router[e] . t[r] + b[e] (one
// warp an expert, warp_dot's FP32 products and order of additions: matvec's bits, the same for every row count
// and place), then route_row on the row's scores from shared memory. Grid (ceil(R / rows_per_block),): block i
// takes rows [i rows_per_block, (i + 1) rows_per_block) of up to ROUTER_MAX_ROWS, with up to ROUTER_THREADS threads
// (a warp an expert where they reach: at one row the dots' load latencies are the time, so as many run at once as
// a block holds; which warp takes an expert changes no bit). A warp loads its experts' weights once and takes
// every row of its block with them: one block a row streamed the router's weights (184 KB at the 20b) through an
// SM for every row, 37 us a layer at 640 rows (bench/RESULTS.md, twenty-second session). With `staged` (rows of
// up to ROUTER_STAGED values, 16-byte aligned), the block copies each row of t into shared memory, the next row's
// copies in flight while the warps take this one: the held weights leave no registers for a row's loads, which
// would otherwise wait one after another. Which block takes a row, how many rows it takes and where its x is read
// from change no bit: each row's dots are the same additions in the same order. On the CUDA cores at every row
// count: E = 32 or 128 experts make a product too narrow for the tensor-core kernels (one 128-feature tile,
// latency-bound at one row: 9 us a launch, then 3.7 us for the choice's own kernel: ncu, tenth session).
template <class Dot>
GETP_DEVICE void router_rows_core(int* __restrict__ experts, float* __restrict__ weights,
                                  float* __restrict__ scores, const Dot& dot, const float* __restrict__ t,
                                  const float* __restrict__ b, int hidden, int n_rows, int rows_per_block,
                                  int n_experts, int top_k, int staged) {
  __shared__ float row_scores[ROUTER_MAX_ROWS][MOE_MAX_EXPERTS];
  __shared__ float4 x_staged[2][ROUTER_STAGED / 4];  // rows of t, two at a time (this one, the next one)
  const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
  const int n_warps = blockDim.x / WARP_SIZE;
  const int r0 = blockIdx.x * rows_per_block;
  const int mine = min(rows_per_block, n_rows - r0);  // this block's rows, r0 .. r0 + mine - 1
  // A pass: experts e0 + k n_warps, k < ROUTER_EXPERTS, one round of loads of their weights for all the rows.
  // Every warp takes every pass (experts past E are not written), so that the block's barriers are all reached.
  const int passes = (n_experts + ROUTER_EXPERTS * n_warps - 1) / (ROUTER_EXPERTS * n_warps);
  for (int pass = 0; pass < passes; ++pass) {
    const int e0 = warp + pass * ROUTER_EXPERTS * n_warps;
    const typename Dot::Held held = dot.hold(e0, n_warps);
    if (staged) router_stage_row(x_staged[0], t + (size_t)r0 * hidden, hidden);
    for (int i = 0; i < mine; ++i) {
      const int r = r0 + i;
      float score[ROUTER_EXPERTS];
      const float* x = t + (size_t)r * hidden;
      if (staged) {
        copy_async_wait_all();
        __syncthreads();  // row i's copies landed, and every warp is done with row i - 1's buffer
        if (i + 1 < mine) router_stage_row(x_staged[(i + 1) % 2], t + (size_t)(r + 1) * hidden, hidden);
        x = (const float*)x_staged[i % 2];
      }
      dot.experts(held, e0, n_warps, x, score);
      #pragma unroll
      for (int k = 0; k < ROUTER_EXPERTS; ++k) {
        const int e = e0 + k * n_warps;
        if (e >= n_experts) break;
        score[k] += b[e];
        if (lane == 0) {
          row_scores[i][e] = score[k];
          scores[(size_t)r * n_experts + e] = score[k];
        }
      }
    }
    if (staged) __syncthreads();  // the last row's buffer read before the next pass stages into it
  }
  __syncthreads();
  for (int i = warp; i < mine; i += n_warps) {
    const int r = r0 + i;
    route_row(experts + (size_t)r * top_k, weights + (size_t)r * top_k, row_scores[i], n_experts, top_k);
  }
}

// ROUTER_EXPERTS rows of bf16 weights (rows e0 + k stride, k < ROUTER_EXPERTS, those below n_w) held in a
// lane's registers, up to ROUTER_HELD 16-byte loads a lane a row (rows of up to 3072 values, the 20b's and 120b's
// 2880), every load issued before the first product is added; rows of other lengths or alignments are not held
// (bf16_rows_held false) and their dots take warp_dot_bf16. At one row the dots' latencies are the router's time
// (10.4 us a launch with warp_dot_bf16 and a warp an expert, ncu, eleventh session).
#define ROUTER_HELD 12
struct HeldBf16Rows {
  uint4 v[ROUTER_EXPERTS][ROUTER_HELD];
};

GETP_DEVICE bool bf16_rows_held(int n, int vec8) { return vec8 && n / 8 <= ROUTER_HELD * WARP_SIZE; }

GETP_DEVICE HeldBf16Rows hold_bf16_rows(const unsigned short* __restrict__ w, int e0, int stride, int n_w, int n,
                                        int vec8) {
  const int lane = threadIdx.x % WARP_SIZE, n8 = n / 8;
  HeldBf16Rows h = {};  // zeros where not held (not read there)
  if (!bf16_rows_held(n, vec8)) return h;
  #pragma unroll
  for (int k = 0; k < ROUTER_EXPERTS; ++k) {
    const int e = e0 + k * stride;
    const uint4* row = (const uint4*)(w + (size_t)(e < n_w ? e : 0) * n);  // a row past n_w: row 0's, unused
    #pragma unroll
    for (int u = 0; u < ROUTER_HELD; ++u) {
      const int i = lane + u * WARP_SIZE;
      if (i < n8) h.v[k][u] = row[i];
    }
  }
  return h;
}

// warp_dot_bf16 of the held rows (h: rows e0 + k stride of w) with x (n values): each row's additions in
// warp_dot_bf16's order, so its bits.
GETP_DEVICE void warp_dots_bf16_held(const HeldBf16Rows& h, const unsigned short* __restrict__ w, int e0, int stride,
                                     int n_w, const float* __restrict__ x, int n, int vec8,
                                     float (&out)[ROUTER_EXPERTS]) {
  const int lane = threadIdx.x % WARP_SIZE, n8 = n / 8;
  if (!bf16_rows_held(n, vec8)) {
    #pragma unroll
    for (int k = 0; k < ROUTER_EXPERTS; ++k) {
      const int e = e0 + k * stride;
      out[k] = e < n_w ? warp_dot_bf16(w + (size_t)e * n, x, n, vec8) : 0.0f;
    }
    return;
  }
  const float4* x4 = (const float4*)x;
  float acc[ROUTER_EXPERTS];
  #pragma unroll
  for (int k = 0; k < ROUTER_EXPERTS; ++k) acc[k] = 0.0f;
  #pragma unroll
  for (int u = 0; u < ROUTER_HELD; ++u) {
    const int i = lane + u * WARP_SIZE;
    if (i < n8) {
      #pragma unroll
      for (int k = 0; k < ROUTER_EXPERTS; ++k) acc[k] += dot8_bf16(h.v[k][u], x4 + 2 * i);
    }
  }
  #pragma unroll
  for (int k = 0; k < ROUTER_EXPERTS; ++k) out[k] = warp_sum(acc[k]);
}

// Router weight rows (E, H) . a row x of t (R, H): BF16 bits (stored so where lossless) or FP32. hold(e0, stride):
// what a warp keeps of experts e0 + k stride (k < ROUTER_EXPERTS) across the rows; experts(held, e0, stride, x,
// out): the scores of x for those experts (those >= E: not used), each the warp's dot in warp_dot's order.
struct RouterBf16 {
  const unsigned short* w;
  int hidden, n_experts, vec8;
  typedef HeldBf16Rows Held;
  GETP_DEVICE Held hold(int e0, int stride) const { return hold_bf16_rows(w, e0, stride, n_experts, hidden, vec8); }
  GETP_DEVICE void experts(const Held& h, int e0, int stride, const float* x, float (&out)[ROUTER_EXPERTS]) const {
    warp_dots_bf16_held(h, w, e0, stride, n_experts, x, hidden, vec8, out);
  }
};
struct RouterF32 {
  const float* w;
  int hidden, n_experts, vec4;
  struct Held {};  // FP32 rows: not held
  GETP_DEVICE Held hold(int, int) const { return Held{}; }
  GETP_DEVICE void experts(const Held&, int e0, int stride, const float* x, float (&out)[ROUTER_EXPERTS]) const {
    #pragma unroll
    for (int k = 0; k < ROUTER_EXPERTS; ++k) {
      const int e = e0 + k * stride;
      out[k] = e < n_experts ? warp_dot_f32(w + (size_t)e * hidden, x, hidden, vec4) : 0.0f;
    }
  }
};

extern "C" __global__ void __launch_bounds__(ROUTER_THREADS)
router_rows_bf16w(int* __restrict__ experts, float* __restrict__ weights, float* __restrict__ scores,
                  const unsigned short* __restrict__ w, const float* __restrict__ b, const float* __restrict__ t,
                  int hidden, int n_experts, int top_k, int vec8, int n_rows, int rows_per_block, int staged) {
  grid_begin();
  router_rows_core(experts, weights, scores, RouterBf16{w, hidden, n_experts, vec8}, t, b, hidden, n_rows,
                   rows_per_block, n_experts, top_k, staged);
}

extern "C" __global__ void __launch_bounds__(ROUTER_THREADS)
router_rows_f32w(int* __restrict__ experts, float* __restrict__ weights, float* __restrict__ scores,
                 const float* __restrict__ w, const float* __restrict__ b, const float* __restrict__ t, int hidden,
                 int n_experts, int top_k, int vec4, int n_rows, int rows_per_block, int staged) {
  grid_begin();
  router_rows_core(experts, weights, scores, RouterF32{w, hidden, n_experts, vec4}, t, b, hidden, n_rows,
                   rows_per_block, n_experts, top_k, staged);
}

// moe_align: one block of up to MOE_ALIGN_THREADS threads, at least one a valid expert (launch/moe.py sizes it
// from the pairs and E: a warp a step at one row, where the kernel is its barriers' latency); warp w owns the
// pairs [w L, (w + 1) L) in order.
//   1. each warp counts its pairs per expert (peers found with ballots over the expert id's bits);
//   2. per expert, an exclusive prefix over warps (the warp's base rank) and the total n_e;
//      tiles_e = ceil(n_e / BM), their inclusive scan over the E experts (Hillis-Steele in shared memory);
//   3. pair_of_padded = -1 everywhere, tile_expert from the scan (-1 past the used tiles);
//   4. each warp walks its pairs again in order: position = BM * first tile of e + base rank + rank
//      among its peers of this chunk. Ranks follow pair ids; nothing depends on scheduling or the block size.
// Pairs whose expert id is outside [0, E), or that would land past P, are not placed: padded_of_pair = -1.
// With row_slot (not null), neither are the pairs of the rows in slot spare_slot (row = pair / top_k): a step's
// pad rows, whose results nobody reads. They all hold the same token and position, so they would all take the
// same top_k experts and lengthen their tiles (a pair's products do not depend on the others of its tile).
// MOE_ALIGN_THREADS and MOE_MAX_EXPERTS: cupy_getp/gpu/constants.py.
#define MOE_ALIGN_WARPS (MOE_ALIGN_THREADS / WARP_SIZE)
static_assert(MOE_ALIGN_THREADS >= MOE_MAX_EXPERTS, "moe_align scans the experts with one thread each");

// Lanes of this warp holding the same valid expert id as this lane (ballot per bit of the id).
GETP_DEVICE unsigned long long moe_peers(int e, bool valid, int id_bits) {
  unsigned long long peers = MOE_BALLOT(valid);
  for (int b = 0; b < id_bits; ++b) {
    const bool bit = (e >> b) & 1;
    const unsigned long long set = MOE_BALLOT(bit);
    peers &= bit ? set : ~set;
  }
  return peers;
}

// The expert of pair `pair` (< last) as moe_align places it: -1 (not placed) for a pad row's pair.
GETP_DEVICE int moe_align_expert(const int* __restrict__ experts, const int* __restrict__ row_slot, int spare_slot,
                                 int top_k, int pair) {
  return row_slot != nullptr && row_slot[pair / top_k] == spare_slot ? -1 : experts[pair];
}

extern "C" __global__ void __launch_bounds__(MOE_ALIGN_THREADS)
moe_align(int* __restrict__ pair_of_padded, int* __restrict__ padded_of_pair, int* __restrict__ tile_expert,
          const int* __restrict__ experts, int n_pairs, int n_experts, int padded, int block_m,
          const int* __restrict__ row_slot, int spare_slot, int top_k) {
  grid_begin();
  __shared__ int warp_count[MOE_ALIGN_WARPS][MOE_MAX_EXPERTS];  // then the warp's base rank per expert
  __shared__ int tile_end[MOE_MAX_EXPERTS];                      // inclusive scan of tiles per expert
  const int tid = threadIdx.x, lane = tid % WARP_SIZE, warp = tid / WARP_SIZE;
  const int n_warps = blockDim.x / WARP_SIZE;
  const unsigned long long below = (1ull << lane) - 1ull;  // lanes < this one (lane <= 63)
  int id_bits = 0;
  while ((1 << id_bits) < n_experts) ++id_bits;
  const int per_warp = (n_pairs + n_warps - 1) / n_warps;
  const int first = warp * per_warp;
  const int last = min(first + per_warp, n_pairs);

  for (int i = tid; i < n_warps * n_experts; i += blockDim.x) warp_count[i / n_experts][i % n_experts] = 0;
  __syncthreads();

  // 1. counts per (warp, expert): only each peer group's lowest lane writes, groups differ by expert.
  for (int base = first; base < last; base += WARP_SIZE) {  // uniform over the warp
    const int pair = base + lane;
    const int e = pair < last ? moe_align_expert(experts, row_slot, spare_slot, top_k, pair) : -1;
    const bool valid = e >= 0 && e < n_experts;
    const unsigned long long peers = moe_peers(e, valid, id_bits);
    if (valid && (peers & below) == 0ull) warp_count[warp][e] += __popcll(peers);
    MOE_WARP_SYNC();
  }
  __syncthreads();

  // 2. base ranks per warp, totals, tiles and their inclusive scan over the experts (blockDim >= E).
  for (int e = tid; e < n_experts; e += blockDim.x) {
    int run = 0;
    for (int w = 0; w < n_warps; ++w) {
      const int c = warp_count[w][e];
      warp_count[w][e] = run;
      run += c;
    }
    tile_end[e] = (run + block_m - 1) / block_m;
  }
  __syncthreads();
  for (int offset = 1; offset < n_experts; offset <<= 1) {
    const int add = tid < n_experts && tid >= offset ? tile_end[tid - offset] : 0;
    __syncthreads();
    if (tid < n_experts) tile_end[tid] += add;
    __syncthreads();
  }

  // 3. padding everywhere, then the tiles' experts: the first e with tile_end[e] > i, or -1.
  for (int p = tid; p < padded; p += blockDim.x) pair_of_padded[p] = -1;
  const int n_tiles = padded / block_m;
  for (int i = tid; i < n_tiles; i += blockDim.x) {
    int lo = 0, hi = n_experts;  // search [lo, hi) for the first tile_end > i
    while (lo < hi) {
      const int mid = (lo + hi) / 2;
      if (tile_end[mid] > i) hi = mid;
      else lo = mid + 1;
    }
    tile_expert[i] = lo < n_experts ? lo : -1;
  }
  __syncthreads();  // the -1 fill is ordered before the scatter (same block)

  // 4. stable scatter.
  for (int base = first; base < last; base += WARP_SIZE) {
    const int pair = base + lane;
    const int e = pair < last ? moe_align_expert(experts, row_slot, spare_slot, top_k, pair) : -1;
    const bool valid = e >= 0 && e < n_experts;
    const unsigned long long peers = moe_peers(e, valid, id_bits);
    int pos = -1;
    if (valid) {
      const int start = (e > 0 ? tile_end[e - 1] : 0) * block_m;
      pos = start + warp_count[warp][e] + __popcll(peers & below);
      if (pos >= padded) pos = -1;  // only with ids >= the E that P was sized for: never write past P
    }
    MOE_WARP_SYNC();  // every lane has read its expert's base before the group's lowest lane moves it
    if (valid && (peers & below) == 0ull) warp_count[warp][e] += __popcll(peers);
    if (pair < last) {
      padded_of_pair[pair] = pos;
      if (pos >= 0) pair_of_padded[pos] = pair;
    }
    MOE_WARP_SYNC();
  }
}

// moe_out[r, h] = sum over s < top_k, in order, of weights[r, s] * y[padded_of_pair[r top_k + s], h] (each
// product and sum rounded, as numpy's agg += weight * out); x[r, h] += moe_out[r, h].
// Grid (ceil(H / BLOCK_SIZE), R). A pair that was not placed (padded position -1) adds nothing.
extern "C" __global__ void moe_combine(float* __restrict__ x, float* __restrict__ moe_out, const float* __restrict__ y,
                                       const float* __restrict__ weights, const int* __restrict__ padded_of_pair,
                                       int hidden, int top_k) {
  grid_begin();
  const int h = blockIdx.x * blockDim.x + threadIdx.x;
  const size_t r = blockIdx.y;
  if (h >= hidden) return;
  float total = 0.0f;
  for (int s = 0; s < top_k; ++s) {
    const int p = padded_of_pair[r * top_k + s];
    if (p >= 0) total = mul_add_unfused(weights[r * top_k + s], y[(size_t)p * hidden + h], total);
  }
  moe_out[r * hidden + h] = total;
  x[r * hidden + h] += total;
}
