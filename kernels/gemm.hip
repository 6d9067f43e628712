// gemm.hip: CUDA-core FP32 products C = A @ W^T. A (M, K) f32 row-major activations, W (N, K) row-major
// weights, f32 or bf16 (uint16 bits, widened exactly before each FMA), FP32 accumulation.
//
// One core per kernel shape, shared by every entry point through templates on the weight type and a mode:
//   GEMM_DENSE   c[m, n] = a[m] . w[n] (+ bias[n]) (+ c[m, n] when accumulate)
//   GEMM_SWIGLU  grouped MoE mlp1: tile t of the padded positions has expert e = tile_expert[t] (skipped if < 0);
//                position p with pair = pair_of_padded[p] >= 0 reads A row a[pair / experts_per_token]; columns
//                2j, 2j + 1 of w1[e] @ arow + b1[e] are (gate, up); g[p, j] = swiglu_f32 (common.h)
//   GEMM_GROUPED grouped MoE mlp2: y[p] = w2[e] @ g[p] + b2[e] for pair_of_padded[p] >= 0
// Pad positions (pair < 0) and rows >= M are neither read nor written.
//
// Two shapes:
//   skinny: few rows. A warp owns 2 adjacent output columns (so the SwiGLU pair is in one warp) and streams
//           both weight rows once per tile of SKINNY_BM rows with 16-byte loads; the tile's activation rows
//           are read through the cache. Grid (tile groups, column blocks); a block loops over its tiles.
//   tiled:  TILE_BM x TILE_BN block tile, TILE_BK deep, 256 threads, each a 4 x 8 register micro-tile
//           (rows ty*4 + i, columns (j / 4) * 64 + tx*4 + j % 4, so both columns of a SwiGLU pair are in
//           one thread). A and W tiles k-major in shared memory, double buffered through registers.
//           Grid (N / TILE_BN, M / TILE_BM).
// vec (checked by the launch helper): K % 8 == 0 (bf16) or K % 4 == 0 (f32) and a, w 16-byte aligned;
// otherwise every load is a scalar one.
#include "common.h"

#define GEMM_DENSE 0
#define GEMM_SWIGLU 1
#define GEMM_GROUPED 2

// SKINNY_BM (rows per skinny tile, the grouped small block_m), TILE_BM x TILE_BN (the tiled block tile;
// TILE_BM is the grouped large block_m): cupy_getp/gpu/constants.py.
#define TILE_BK 16   // k per shared-memory stage
#define TILE_PAD 4   // keeps float4 alignment, spreads the transposing stores over banks
#define TILE_THREADS BLOCK_SIZE
static_assert(TILE_THREADS == 256, "the tiled kernel's thread layout (16 x 16 threads of 4 x 8) needs 256");

// gfx90a: tell the compiler a block has 256 threads (its default, 1024, caps a thread at 128 VGPRs and the
// tiled kernel spills).
#ifdef GETP_HIP
#define GEMM_BOUNDS __attribute__((amdgpu_flat_work_group_size(1, TILE_THREADS)))
#else
#define GEMM_BOUNDS
#endif

struct GemmArgs {
  float* out;                 // c (M, N), g (P, N / 2) or y (P, N)
  const float* a;             // (M, K) dense and mlp2, (R, K) mlp1
  const void* w;              // (N, K) or (E, N, K)
  const float* bias;          // (N,) or (E, N); may be NULL for dense
  const int* pair_of_padded;    // (P,) grouped
  const int* tile_expert;     // (P / block_m,) grouped
  int M, N, K;                // M: rows (dense) or padded positions P (grouped)
  int accumulate;             // dense
  int experts_per_token;              // experts per token (mlp1)
  float limit;                // swiglu limit (mlp1)
  int vec;
  const unsigned char* scales;  // MXFP4 weights: (E, N, G) E8M0 scales beside the codes in w; NULL otherwise
};

// -- weight types: 16-byte vector and exact widening -------------------------------------------------------
template <typename WT>
struct WVec;
template <>
struct WVec<float> {
  typedef float4 V;
  enum { N = 4 };
};
template <>
struct WVec<unsigned short> {
  typedef uint4 V;
  enum { N = 8 };
};

GETP_DEVICE void widen(float4 v, float* o) {
  o[0] = v.x;
  o[1] = v.y;
  o[2] = v.z;
  o[3] = v.w;
}
GETP_DEVICE void widen(uint4 v, float* o) {
  o[0] = bf16_lo(v.x);
  o[1] = bf16_hi(v.x);
  o[2] = bf16_lo(v.y);
  o[3] = bf16_hi(v.y);
  o[4] = bf16_lo(v.z);
  o[5] = bf16_hi(v.z);
  o[6] = bf16_lo(v.w);
  o[7] = bf16_hi(v.w);
}
GETP_DEVICE float widen1(float x) { return x; }
GETP_DEVICE float widen1(unsigned short h) { return bf16_to_f32(h); }

// MXFP4 weights (cupy_getp/gpu/launch/common.py Mxfp4Matrix): a row of K values is G = ceil(K / MXFP4_BLOCK)
// blocks of 16 code bytes (element 2i in byte i's low nibble) and G scales. A row handle holds both; its
// vector is 8 values (4 code bytes, one scale), widened exactly (mxfp4_value) to the BF16 values they are.
struct Mxfp4 {};
template <>
struct WVec<Mxfp4> {
  enum { N = 8 };
};

// Row handles: `const T*` for float and bf16 weights (unchanged), Mxfp4Row for MXFP4; WRows<T> makes them.
template <typename T>
struct WRows {
  typedef const T* Row;
  static GETP_DEVICE Row null() { return (Row)0; }
  static GETP_DEVICE Row row(const GemmArgs& g, size_t r) { return (const T*)g.w + r * g.K; }  // row r of (E*N, K)
  static GETP_DEVICE float at(Row row, int k) { return widen1(row[k]); }
  static GETP_DEVICE void vec(Row row, int i, float* o) { widen(((const typename WVec<T>::V*)row)[i], o); }
};
template <>
struct WRows<Mxfp4> {
  typedef Mxfp4Row Row;
  static GETP_DEVICE Row null() { return Mxfp4Row{(const unsigned char*)0, (const unsigned char*)0}; }
  static GETP_DEVICE Row row(const GemmArgs& g, size_t r) {
    return mxfp4_row((const unsigned char*)g.w, g.scales, r, g.K);
  }
  static GETP_DEVICE float at(Row row, int k) {
    return mxfp4_value((row.codes[k >> 1] >> ((k & 1) * 4)) & 15u, row.scales[k / MXFP4_BLOCK]);
  }
  static GETP_DEVICE void vec(Row row, int i, float* o) {  // values 8i .. 8i + 7
    float w[8];
    mxfp4_values8(((const unsigned int*)row.codes)[i], row.scales[i / (MXFP4_BLOCK / 8)], w);
#pragma unroll
    for (int q = 0; q < 8; ++q) o[q] = w[q];
  }
};
GETP_DEVICE bool row_ok(const float* row) { return row != 0; }  // bf16 and MXFP4 rows: common.h

// The WVec<T>::N elements row[k..k+N) as floats, zero past K or for a NULL row.
template <typename T>
GETP_DEVICE void load_elems(typename WRows<T>::Row row, int k, int K, int vec, float* o) {
  const int VN = WVec<T>::N;
  if (row_ok(row) && vec) {  // vec: K % VN == 0, so a vector is all in or all out
    if (k < K) {
      WRows<T>::vec(row, k / VN, o);
    } else {
#pragma unroll
      for (int q = 0; q < VN; ++q) o[q] = 0.0f;
    }
  } else {
#pragma unroll
    for (int q = 0; q < VN; ++q) o[q] = (row_ok(row) && k + q < K) ? WRows<T>::at(row, k + q) : 0.0f;
  }
}

// -- modes: where a row's activations come from, where a result goes ------------------------------------------
// Activation row of output row m (dense row or padded position), NULL when the row is not computed.
template <int MODE>
GETP_DEVICE const float* a_row(const GemmArgs& g, int m) {
  if (MODE == GEMM_DENSE) return m < g.M ? g.a + (size_t)m * g.K : (const float*)0;
  const int pair = g.pair_of_padded[m];
  if (pair < 0) return (const float*)0;
  if (MODE == GEMM_SWIGLU) return g.a + (size_t)(pair / g.experts_per_token) * g.K;
  return g.a + (size_t)m * g.K;
}

// Results v0, v1 of columns n (even, < N) and n + 1 (may be N when N is odd: dense only) of row m.
template <int MODE>
GETP_DEVICE void store_pair(const GemmArgs& g, const float* __restrict__ bias, int m, int n, float v0, float v1) {
  if (MODE == GEMM_SWIGLU) {
    g.out[(size_t)m * (g.N / 2) + n / 2] = swiglu_f32(v0 + bias[n], v1 + bias[n + 1], g.limit);
    return;
  }
  float* out = g.out + (size_t)m * g.N + n;
  if (bias) {
    v0 += bias[n];
    if (n + 1 < g.N) v1 += bias[n + 1];
  }
  if (MODE == GEMM_DENSE && g.accumulate) {
    v0 += out[0];
    if (n + 1 < g.N) v1 += out[1];
  }
  out[0] = v0;
  if (n + 1 < g.N) out[1] = v1;
}

// Bias of tile t and the index of its weights' first row (expert tile_expert[t] of the grouped products: row
// e * N); -1 when the tile is unused.
template <int MODE>
GETP_DEVICE long long tile_weights(const GemmArgs& g, int t, const float** bias) {
  *bias = g.bias;
  if (MODE == GEMM_DENSE) return 0;
  const int e = g.tile_expert[t];
  if (e < 0) return -1;
  *bias = g.bias + (size_t)e * g.N;
  return (long long)e * g.N;
}

// -- skinny: one warp, two weight rows, MT activation rows ------------------------------------------------
// Lane-strided partial dot products of w0, w1 with the MT rows ap[r], then warp sums; lane r stores row r.
template <typename WT, int MODE, int MT>
GETP_DEVICE void skinny_tile(const GemmArgs& g, typename WRows<WT>::Row w0, typename WRows<WT>::Row w1,
                             const float* const* ap, const bool* ok, const float* bias, int row0, int n) {
  const int VN = WVec<WT>::N;
  const int lane = threadIdx.x % WARP_SIZE;
  float acc[MT][2];
#pragma unroll
  for (int r = 0; r < MT; ++r) acc[r][0] = acc[r][1] = 0.0f;
  if (g.vec) {
    const int nv = g.K / VN;
#pragma unroll 2
    for (int i = lane; i < nv; i += WARP_SIZE) {
      float x0[VN], x1[VN];
      WRows<WT>::vec(w0, i, x0);
      WRows<WT>::vec(w1, i, x1);
#pragma unroll
      for (int r = 0; r < MT; ++r) {
        const float4* a4 = (const float4*)(ap[r] + (size_t)i * VN);
#pragma unroll
        for (int q = 0; q < VN / 4; ++q) {
          const float4 v = a4[q];
          acc[r][0] += x0[4 * q] * v.x + x0[4 * q + 1] * v.y + x0[4 * q + 2] * v.z + x0[4 * q + 3] * v.w;
          acc[r][1] += x1[4 * q] * v.x + x1[4 * q + 1] * v.y + x1[4 * q + 2] * v.z + x1[4 * q + 3] * v.w;
        }
      }
    }
  } else {
    for (int k = lane; k < g.K; k += WARP_SIZE) {
      const float x0 = WRows<WT>::at(w0, k), x1 = WRows<WT>::at(w1, k);
#pragma unroll
      for (int r = 0; r < MT; ++r) {
        const float v = ap[r][k];
        acc[r][0] += x0 * v;
        acc[r][1] += x1 * v;
      }
    }
  }
#pragma unroll
  for (int r = 0; r < MT; ++r) {
    const float s0 = warp_sum(acc[r][0]), s1 = warp_sum(acc[r][1]);
    if (ok[r] && lane == r) store_pair<MODE>(g, bias, row0 + r, n, s0, s1);
  }
}

template <typename WT, int MODE>
GETP_DEVICE void gemm_skinny_core(const GemmArgs& g) {
  const int n = 2 * (blockIdx.y * WARPS_PER_BLOCK + threadIdx.x / WARP_SIZE);
  if (n >= g.N) return;
  const int n_tiles = (g.M + SKINNY_BM - 1) / SKINNY_BM;
  for (int t = blockIdx.x; t < n_tiles; t += gridDim.x) {
    const float* bias;
    const long long first_row = tile_weights<MODE>(g, t, &bias);
    if (first_row < 0) continue;
    const typename WRows<WT>::Row w0 = WRows<WT>::row(g, (size_t)first_row + n);
    // odd N: the last warp computes column n twice
    const typename WRows<WT>::Row w1 = n + 1 < g.N ? WRows<WT>::row(g, (size_t)first_row + n + 1) : w0;
    const int row0 = t * SKINNY_BM;
    const float* ap[SKINNY_BM];
    bool ok[SKINNY_BM];
    const float* first = (const float*)0;
    int used = 0;  // 1 + the last computed row of the tile
#pragma unroll
    for (int r = 0; r < SKINNY_BM; ++r) {
      ap[r] = a_row<MODE>(g, row0 + r);
      ok[r] = ap[r] != 0;
      if (ok[r]) {
        used = r + 1;
        if (!first) first = ap[r];
      }
    }
    if (!used) continue;
#pragma unroll
    for (int r = 0; r < SKINNY_BM; ++r)
      if (!ok[r]) ap[r] = first;  // computed, never stored
    // Rows are dense from the start of a tile (grouped: pads at the end), so `used` picks the cheapest variant.
    if (used == 1)
      skinny_tile<WT, MODE, 1>(g, w0, w1, ap, ok, bias, row0, n);
    else if (used == 2)
      skinny_tile<WT, MODE, 2>(g, w0, w1, ap, ok, bias, row0, n);
    else if (used <= 4)
      skinny_tile<WT, MODE, 4>(g, w0, w1, ap, ok, bias, row0, n);
    else
      skinny_tile<WT, MODE, SKINNY_BM>(g, w0, w1, ap, ok, bias, row0, n);
  }
}

// -- tiled: 64 x 128 block tile, 4 x 8 per thread ---------------------------------------------------------
template <typename WT, int MODE>
GETP_DEVICE void gemm_tiled_core(const GemmArgs& g) {
  const int VN = WVec<WT>::N;
  const int W_LOADS = TILE_BN * TILE_BK / VN / TILE_THREADS;  // 16-byte weight vectors per thread and stage
  __shared__ __attribute__((aligned(16))) float As[2][TILE_BK][TILE_BM + TILE_PAD];
  __shared__ __attribute__((aligned(16))) float Ws[2][TILE_BK][TILE_BN + TILE_PAD];

  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int m0 = blockIdx.y * TILE_BM, n0 = blockIdx.x * TILE_BN;
  const float* bias;
  const long long first_row = tile_weights<MODE>(g, blockIdx.y, &bias);
  if (first_row < 0) return;  // the whole block: no barrier reached yet

  // Loaders: A row tid / 4 at k offset (tid % 4) * 4; weight vector i: row idx / (BK / VN), k (idx % (BK / VN)) * VN.
  const int a_r = tid / 4, a_k = (tid % 4) * 4;
  const float* arow = a_row<MODE>(g, m0 + a_r);
  typename WRows<WT>::Row wrow[W_LOADS];
  int w_n[W_LOADS], w_k[W_LOADS];
#pragma unroll
  for (int i = 0; i < W_LOADS; ++i) {
    const int idx = tid + i * TILE_THREADS;
    w_n[i] = idx / (TILE_BK / VN);
    w_k[i] = (idx % (TILE_BK / VN)) * VN;
    wrow[i] = n0 + w_n[i] < g.N ? WRows<WT>::row(g, (size_t)first_row + n0 + w_n[i]) : WRows<WT>::null();
  }
  float ra[4], rw[W_LOADS][VN];

  float acc[4][8];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[i][j] = 0.0f;

  const int n_k = (g.K + TILE_BK - 1) / TILE_BK;
  // Stage 0
  load_elems<float>(arow, a_k, g.K, g.vec, ra);
#pragma unroll
  for (int i = 0; i < W_LOADS; ++i) load_elems<WT>(wrow[i], w_k[i], g.K, g.vec, rw[i]);
#pragma unroll
  for (int q = 0; q < 4; ++q) As[0][a_k + q][a_r] = ra[q];
#pragma unroll
  for (int i = 0; i < W_LOADS; ++i)
#pragma unroll
    for (int q = 0; q < VN; ++q) Ws[0][w_k[i] + q][w_n[i]] = rw[i][q];
  __syncthreads();

  for (int kt = 0; kt < n_k; ++kt) {
    const int buf = kt & 1;
    const bool more = kt + 1 < n_k;
    if (more) {  // next stage's global loads in flight during this stage's FMAs
      const int k1 = (kt + 1) * TILE_BK;
      load_elems<float>(arow, k1 + a_k, g.K, g.vec, ra);
#pragma unroll
      for (int i = 0; i < W_LOADS; ++i) load_elems<WT>(wrow[i], k1 + w_k[i], g.K, g.vec, rw[i]);
    }
#pragma unroll
    for (int kk = 0; kk < TILE_BK; ++kk) {
      const float4 av = *(const float4*)&As[buf][kk][ty * 4];
      const float4 b0 = *(const float4*)&Ws[buf][kk][tx * 4];
      const float4 b1 = *(const float4*)&Ws[buf][kk][64 + tx * 4];
      const float x[4] = {av.x, av.y, av.z, av.w};
      const float y[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] += x[i] * y[j];
    }
    if (more) {  // the other buffer was last read before the previous barrier
#pragma unroll
      for (int q = 0; q < 4; ++q) As[buf ^ 1][a_k + q][a_r] = ra[q];
#pragma unroll
      for (int i = 0; i < W_LOADS; ++i)
#pragma unroll
        for (int q = 0; q < VN; ++q) Ws[buf ^ 1][w_k[i] + q][w_n[i]] = rw[i][q];
    }
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int m = m0 + ty * 4 + i;
    if (!a_row<MODE>(g, m)) continue;
#pragma unroll
    for (int j = 0; j < 8; j += 2) {
      const int n = n0 + (j / 4) * 64 + tx * 4 + j % 4;
      if (n < g.N) store_pair<MODE>(g, bias, m, n, acc[i][j], acc[i][j + 1]);
    }
  }
}

// -- entry points --------------------------------------------------------------------------------------------
// Dense: c (M, N) = a (M, K) @ w (N, K)^T (+ bias) (+ c). Grid skinny (min(ceil(M / 8), G), ceil(N / (2 *
// WARPS_PER_BLOCK))), tiled (ceil(N / 128), ceil(M / 64)); 256 threads.
extern "C" __global__ void gemm_f32w_skinny(float* __restrict__ c, const float* __restrict__ a,
                                            const float* __restrict__ w, const float* __restrict__ bias, int M,
                                            int N, int K, int accumulate, int vec) GEMM_BOUNDS {
  grid_begin();
  const GemmArgs g = {c, a, w, bias, 0, 0, M, N, K, accumulate, 1, 0.0f, vec};
  gemm_skinny_core<float, GEMM_DENSE>(g);
}

extern "C" __global__ void gemm_bf16w_skinny(float* __restrict__ c, const float* __restrict__ a,
                                             const unsigned short* __restrict__ w, const float* __restrict__ bias,
                                             int M, int N, int K, int accumulate, int vec) GEMM_BOUNDS {
  grid_begin();
  const GemmArgs g = {c, a, w, bias, 0, 0, M, N, K, accumulate, 1, 0.0f, vec};
  gemm_skinny_core<unsigned short, GEMM_DENSE>(g);
}

extern "C" __global__ void gemm_f32w_tiled(float* __restrict__ c, const float* __restrict__ a,
                                           const float* __restrict__ w, const float* __restrict__ bias, int M, int N,
                                           int K, int accumulate, int vec) GEMM_BOUNDS {
  grid_begin();
  const GemmArgs g = {c, a, w, bias, 0, 0, M, N, K, accumulate, 1, 0.0f, vec};
  gemm_tiled_core<float, GEMM_DENSE>(g);
}

extern "C" __global__ void gemm_bf16w_tiled(float* __restrict__ c, const float* __restrict__ a,
                                            const unsigned short* __restrict__ w, const float* __restrict__ bias,
                                            int M, int N, int K, int accumulate, int vec) GEMM_BOUNDS {
  grid_begin();
  const GemmArgs g = {c, a, w, bias, 0, 0, M, N, K, accumulate, 1, 0.0f, vec};
  gemm_tiled_core<unsigned short, GEMM_DENSE>(g);
}

// Grouped mlp1 + SwiGLU: g (P, N / 2), a (R, K), w1 (E, N, K) bf16, b1 (E, N); P a multiple of the block_m
// (8: skinny, grid (min(P / 8, G), ceil(N / (2 * WARPS_PER_BLOCK))); 64: tiled, grid (ceil(N / 128), P / 64)).
extern "C" __global__ void gemm_grouped_swiglu_skinny(float* __restrict__ g, const float* __restrict__ a,
                                                      const int* __restrict__ pair_of_padded,
                                                      const int* __restrict__ tile_expert,
                                                      const unsigned short* __restrict__ w1,
                                                      const float* __restrict__ b1, int P, int N, int K,
                                                      int experts_per_token, float limit, int vec) GEMM_BOUNDS {
  grid_begin();
  const GemmArgs args = {g, a, w1, b1, pair_of_padded, tile_expert, P, N, K, 0, experts_per_token, limit, vec};
  gemm_skinny_core<unsigned short, GEMM_SWIGLU>(args);
}

extern "C" __global__ void gemm_grouped_swiglu_tiled(float* __restrict__ g, const float* __restrict__ a,
                                                     const int* __restrict__ pair_of_padded,
                                                     const int* __restrict__ tile_expert,
                                                     const unsigned short* __restrict__ w1,
                                                     const float* __restrict__ b1, int P, int N, int K,
                                                     int experts_per_token, float limit, int vec) GEMM_BOUNDS {
  grid_begin();
  const GemmArgs args = {g, a, w1, b1, pair_of_padded, tile_expert, P, N, K, 0, experts_per_token, limit, vec};
  gemm_tiled_core<unsigned short, GEMM_SWIGLU>(args);
}

// Grouped mlp2: y (P, N), g (P, K), w2 (E, N, K) bf16, b2 (E, N); grids as the mlp1 kernels.
extern "C" __global__ void gemm_grouped_skinny(float* __restrict__ y, const float* __restrict__ g,
                                               const int* __restrict__ pair_of_padded,
                                               const int* __restrict__ tile_expert,
                                               const unsigned short* __restrict__ w2, const float* __restrict__ b2,
                                               int P, int N, int K, int vec) GEMM_BOUNDS {
  grid_begin();
  const GemmArgs args = {y, g, w2, b2, pair_of_padded, tile_expert, P, N, K, 0, 1, 0.0f, vec};
  gemm_skinny_core<unsigned short, GEMM_GROUPED>(args);
}

extern "C" __global__ void gemm_grouped_tiled(float* __restrict__ y, const float* __restrict__ g,
                                              const int* __restrict__ pair_of_padded,
                                              const int* __restrict__ tile_expert,
                                              const unsigned short* __restrict__ w2, const float* __restrict__ b2,
                                              int P, int N, int K, int vec) GEMM_BOUNDS {
  grid_begin();
  const GemmArgs args = {y, g, w2, b2, pair_of_padded, tile_expert, P, N, K, 0, 1, 0.0f, vec};
  gemm_tiled_core<unsigned short, GEMM_GROUPED>(args);
}

// The grouped products with MXFP4 experts: codes (E, N, G, 16) and scales (E, N, G), G = ceil(K / MXFP4_BLOCK),
// in place of the bf16 w; each value widened exactly (mxfp4_value) where the bf16 kernels widen theirs, the
// products and their order unchanged, so the results equal the bf16 kernels' on the same values bit for bit.
// vec: K % 8 == 0 (the codes of 8 values are one 4-byte load). Grids as the bf16 kernels.
#define GEMM_GROUPED_SWIGLU_MXFP4(NAME, CORE)                                                                      \
  extern "C" __global__ void NAME(float* __restrict__ g, const float* __restrict__ a,                             \
                                  const int* __restrict__ pair_of_padded, const int* __restrict__ tile_expert,     \
                                  const unsigned char* __restrict__ codes, const unsigned char* __restrict__ scales, \
                                  const float* __restrict__ b1, int P, int N, int K, int experts_per_token,        \
                                  float limit, int vec) GEMM_BOUNDS {                                              \
    grid_begin();                                                                                                  \
    const GemmArgs args = {g, a, codes, b1, pair_of_padded, tile_expert, P, N, K, 0, experts_per_token, limit,    \
                           vec, scales};                                                                           \
    CORE<Mxfp4, GEMM_SWIGLU>(args);                                                                                \
  }
GEMM_GROUPED_SWIGLU_MXFP4(gemm_grouped_swiglu_mxfp4w_skinny, gemm_skinny_core)
GEMM_GROUPED_SWIGLU_MXFP4(gemm_grouped_swiglu_mxfp4w_tiled, gemm_tiled_core)

#define GEMM_GROUPED_MXFP4(NAME, CORE)                                                                             \
  extern "C" __global__ void NAME(float* __restrict__ y, const float* __restrict__ g,                             \
                                  const int* __restrict__ pair_of_padded, const int* __restrict__ tile_expert,     \
                                  const unsigned char* __restrict__ codes, const unsigned char* __restrict__ scales, \
                                  const float* __restrict__ b2, int P, int N, int K, int vec) GEMM_BOUNDS {        \
    grid_begin();                                                                                                  \
    const GemmArgs args = {y, g, codes, b2, pair_of_padded, tile_expert, P, N, K, 0, 1, 0.0f, vec, scales};       \
    CORE<Mxfp4, GEMM_GROUPED>(args);                                                                               \
  }
GEMM_GROUPED_MXFP4(gemm_grouped_mxfp4w_skinny, gemm_skinny_core)
GEMM_GROUPED_MXFP4(gemm_grouped_mxfp4w_tiled, gemm_tiled_core)
