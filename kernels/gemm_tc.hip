// gemm_tc.hip: C = A @ W^T on tensor cores, A (M, K) FP32 activations, W (N, K) BF16 weights (uint16
// bits), FP32-accurate by splitting A ("exact split", docs/batched-engine.md, gemm_tc).
//
// Numerics. Each FP32 activation x is split once, before the product (tc_split_rows), into `pieces`
// BF16 values x1 = bf16(x), x2 = bf16(x - x1), x3 = bf16(x - x1 - x2) (both differences are exact in
// FP32), stored as (pieces, rows, lda) bf16 in global memory. W is BF16 already, so every BF16 x BF16
// product is exact in FP32 and W x = W x1 + W x2 + W x3 up to the order of additions. The tensor core's
// own accumulation keeps fewer bits than an FP32 add, so per k16 step each output fragment starts a
// fresh product tmp = 0, tmp += x3 W, tmp += x2 W, tmp += x1 W (smallest first), and tmp is added into
// FP32 accumulators with an ordinary add ("promotion"; without it 3 pieces are no better than 2). The
// grouped kernels take MXFP4 experts too (*_mxfp4w): staged widened to the very BF16 bits, the same products.
// pieces = 1 is plain BF16 activations, and its mma accumulates straight into the accumulators (no
// promotion: BF16 rounding of x dominates). The grouped mlp1 kernel writes its output g as pieces.
//
// Tiles. A block (BLOCK_SIZE = 256 threads) computes BM x BN outputs over K in steps of TC_BK = 32,
// copying bf16 tiles of the pieces and of W into a ring of TC_STAGES shared-memory stages: on CUDA with
// cp.async, TC_STAGES - 1 steps ahead of the tensor cores, one barrier per step; on HIP (no cp.async)
// with plain loads and two stages. Shared rows are padded to TC_LDS = 40 bf16 (80 bytes): the 8 row
// addresses of an ldmatrix phase then hit 8 disjoint groups of 4 banks. Out-of-range rows and K columns
// are staged as zeros, so M, N, K need no multiple. Dynamic shared memory: TC_STAGES x (pieces BM + BN)
// x TC_LDS x 2 bytes (launch/gemm_tc.py). An earlier version split A while staging it (registers, two
// stages); this one is bit-identical to it and 1.2-1.3x faster (bench/RESULTS.md, 2026-11-25).
//
// CUDA (sm_80+): per warp a (BM / WARPS_M) x (BN / WARPS_N) tile of m16n8k16 fragments, loaded with
// ldmatrix.x4 and multiplied with mma.sync (PTX; the fragment layout is in the notes of tc_mma_bf16).
// HIP (gfx90a / gfx94x): the same tiles per wavefront of 64 with __builtin_amdgcn_mfma_f32_16x16x16bf16_1k.
// THE HIP PATH IS COMPILED (hipcc, gfx90a) BUT HAS NEVER RUN ON AN AMD GPU: the launch helpers refuse it
// unless CUPY_GETP_ROCM_MFMA=1. On other architectures (CUDA < sm_80, other AMD GPUs) the kernels
// compile to an immediate return and must never be launched (tensor_cores_supported() is False).
#include "common.h"

// TC_BK (K per pipeline step), TC_LDS (shared-memory row in bf16), TC_BLOCK_M x TC_BLOCK_N (tile of the
// grouped MoE kernels) and TC_STAGES_{CUDA,HIP}: cupy_getp/gpu/constants.py.
#define TC_BN TC_BLOCK_N
#define TC_GROUP_M TC_BLOCK_M

#ifdef GETP_HIP
#if defined(__gfx90a__) || defined(__gfx940__) || defined(__gfx941__) || defined(__gfx942__)
#define GETP_TC 1
#endif
#define TC_NT 16  // output columns of one MFMA fragment
typedef short tc_bf16x4 __attribute__((ext_vector_type(4)));
typedef float tc_f32x4 __attribute__((ext_vector_type(4)));
#else
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define GETP_TC 1
#endif
#define TC_NT 8  // output columns of one mma.m16n8k16 fragment
#endif
#ifndef GETP_TC
#define GETP_TC 0
#endif

static_assert(BLOCK_SIZE == 256, "gemm_tc tiles assume 256 threads per block");

// Warp layout of a BM x TC_BN block tile. CUDA (8 warps): 2 x 4 warps of 32 x 32 (BM 64) or 4 x 2 warps
// of 32 x 64 (BM 128). HIP (4 wavefronts): 2 x 2 of 32 x 64 (BM 64) or 64 x 64 (BM 128).
template <int BM, int BN = TC_BN>
struct TcTile {
  static const int WARPS_M = (BM / 32 < WARPS_PER_BLOCK / 2) ? BM / 32 : WARPS_PER_BLOCK / 2;
  static const int WARPS_N = WARPS_PER_BLOCK / WARPS_M;
  static const int WTM = BM / WARPS_M, WTN = BN / WARPS_N;  // one warp's output tile
  static const int MI = WTM / 16, NJ = WTN / TC_NT;            // its fragments
};

template <int BM, int BN = TC_BN>
struct TcAcc {
  float v[TcTile<BM, BN>::MI][TcTile<BM, BN>::NJ][4];
};

extern __shared__ __attribute__((aligned(16))) unsigned short tc_smem[];

// Eight bf16 values (low halves of h) as one 16-byte vector, element 0 first.
GETP_DEVICE uint4 tc_pack8(const unsigned (&h)[8]) {
  return make_uint4(h[0] | h[1] << 16, h[2] | h[3] << 16, h[4] | h[5] << 16, h[6] | h[7] << 16);
}

// ---- one TC_BK step on the tensor cores ---------------------------------------------------------------
template <int BM, int PIECES, int BN = TC_BN>
GETP_DEVICE void tc_compute_stage(TcAcc<BM, BN>& acc, const unsigned short* stage) {
#if GETP_TC
  typedef TcTile<BM, BN> T;
  const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
  const int wm = warp / T::WARPS_N, wn = warp % T::WARPS_N;
  const unsigned short* sa = stage + wm * T::WTM * TC_LDS;
  const unsigned short* sw = stage + PIECES * BM * TC_LDS + wn * T::WTN * TC_LDS;
#ifdef GETP_HIP
  // MFMA 16x16x16: lane holds A row lane % 16 (B column lane % 16), k = 4 (lane / 16) + 0..3.
  #pragma unroll
  for (int kk = 0; kk < TC_BK; kk += 16) {
    tc_bf16x4 af[PIECES][T::MI], bf[T::NJ];
    const int offset = (lane % 16) * TC_LDS + kk + 4 * (lane / 16);
    #pragma unroll
    for (int p = 0; p < PIECES; ++p)
      #pragma unroll
      for (int mi = 0; mi < T::MI; ++mi) af[p][mi] = *(const tc_bf16x4*)(sa + (p * BM + mi * 16) * TC_LDS + offset);
    #pragma unroll
    for (int nj = 0; nj < T::NJ; ++nj) bf[nj] = *(const tc_bf16x4*)(sw + nj * 16 * TC_LDS + offset);
    #pragma unroll
    for (int mi = 0; mi < T::MI; ++mi)
      #pragma unroll
      for (int nj = 0; nj < T::NJ; ++nj) {
        if (PIECES == 1) {  // plain BF16: no promotion, the MFMA accumulates
          tc_f32x4 c = {acc.v[mi][nj][0], acc.v[mi][nj][1], acc.v[mi][nj][2], acc.v[mi][nj][3]};
          c = __builtin_amdgcn_mfma_f32_16x16x16bf16_1k(af[0][mi], bf[nj], c, 0, 0, 0);
          #pragma unroll
          for (int i = 0; i < 4; ++i) acc.v[mi][nj][i] = c[i];
          continue;
        }
        tc_f32x4 t = {0.0f, 0.0f, 0.0f, 0.0f};
        #pragma unroll
        for (int p = PIECES - 1; p >= 0; --p) t = __builtin_amdgcn_mfma_f32_16x16x16bf16_1k(af[p][mi], bf[nj], t, 0, 0, 0);
        #pragma unroll
        for (int i = 0; i < 4; ++i) acc.v[mi][nj][i] += t[i];
      }
  }
#else
  #pragma unroll 1  // fragments of one k16 step at a time: unrolled, ptxas hoists both and spills
  for (int kk = 0; kk < TC_BK; kk += 16) {
    unsigned af[PIECES][T::MI][4], bf[T::NJ][2];
    // A: matrices (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15).
    const int a_offset = (lane % 16) * TC_LDS + kk + 8 * (lane / 16);
    #pragma unroll
    for (int p = 0; p < PIECES; ++p)
      #pragma unroll
      for (int mi = 0; mi < T::MI; ++mi) tc_ldmatrix_x4(af[p][mi], sa + (p * BM + mi * 16) * TC_LDS + a_offset);
    // W rows are B's columns: matrices (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15).
    const int w_offset = (lane % 8 + 8 * (lane / 16)) * TC_LDS + kk + 8 * ((lane / 8) % 2);
    #pragma unroll
    for (int nj = 0; nj < T::NJ; nj += 2) {
      unsigned r[4];
      tc_ldmatrix_x4(r, sw + nj * 8 * TC_LDS + w_offset);
      bf[nj][0] = r[0];
      bf[nj][1] = r[1];
      bf[nj + 1][0] = r[2];
      bf[nj + 1][1] = r[3];
    }
    const float zero[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    #pragma unroll
    for (int mi = 0; mi < T::MI; ++mi)
      #pragma unroll
      for (int nj = 0; nj < T::NJ; ++nj) {
        if (PIECES == 1) {  // plain BF16: no promotion, the tensor core accumulates
          tc_mma_bf16(acc.v[mi][nj], af[0][mi], bf[nj][0], bf[nj][1], acc.v[mi][nj]);
          continue;
        }
        float t[4];
        tc_mma_bf16(t, af[PIECES - 1][mi], bf[nj][0], bf[nj][1], zero);
        #pragma unroll
        for (int p = PIECES - 2; p >= 0; --p) tc_mma_bf16(t, af[p][mi], bf[nj][0], bf[nj][1], t);
        #pragma unroll
        for (int i = 0; i < 4; ++i) acc.v[mi][nj][i] += t[i];
      }
  }
#endif
#endif
}

// Calls emit(row, col, v_col, v_col_plus_1) for every even output column of the block tile (row and col
// relative to the tile). Both values of a pair sit in one thread (CUDA) or in lanes l, l ^ 1 (HIP:
// exchanged first, so every lane runs the shuffle). col + 1 may lie beyond N: emit checks.
template <int BM, class Emit, int BN = TC_BN>
GETP_DEVICE void tc_epilogue(const TcAcc<BM, BN>& acc, Emit emit) {
  typedef TcTile<BM, BN> T;
  const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
  const int row0 = (warp / T::WARPS_N) * T::WTM, col0 = (warp % T::WARPS_N) * T::WTN;
  #pragma unroll
  for (int mi = 0; mi < T::MI; ++mi)
    #pragma unroll
    for (int nj = 0; nj < T::NJ; ++nj) {
#ifdef GETP_HIP
      // MFMA 16x16 result: acc[i] at row 4 (lane / 16) + i, column lane % 16.
      #pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float v = acc.v[mi][nj][i], other = SHFL_XOR(v, 1);
        if (lane % 2 == 0) emit(row0 + mi * 16 + 4 * (lane / 16) + i, col0 + nj * 16 + lane % 16, v, other);
      }
#else
      const int row = row0 + mi * 16 + lane / 4, col = col0 + nj * 8 + 2 * (lane % 4);
      emit(row, col, acc.v[mi][nj][0], acc.v[mi][nj][1]);
      emit(row + 8, col, acc.v[mi][nj][2], acc.v[mi][nj][3]);
#endif
    }
}

// ---- split: FP32 rows -> BF16 pieces in global memory ----------------------------------------------
// pieces (n_pieces, rows, lda) bf16 = the pieces of a (rows, K) f32, zeros in columns K..lda-1 (lda a
// multiple of 8: every 16-byte chunk of a piece row is whole). Grid (ceil(rows * lda / 8 / BLOCK_SIZE)):
// a thread per 8 columns of a row (two 16-byte loads when vec4, one 16-byte store per piece).
extern "C" __global__ void tc_split_rows(unsigned short* __restrict__ pieces, const float* __restrict__ a, int rows,
                                         int K, int lda, int n_pieces, int vec4) {
  grid_begin();
  const int chunks = lda / 8;
  const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (size_t)rows * chunks) return;
  const int r = (int)(i / chunks), k0 = 8 * (int)(i % chunks);
  const float* row = a + (size_t)r * K;
  float x[8];
  if (vec4 && k0 + 8 <= K) {
    const float4 lo = *(const float4*)(row + k0), hi = *(const float4*)(row + k0 + 4);
    x[0] = lo.x, x[1] = lo.y, x[2] = lo.z, x[3] = lo.w, x[4] = hi.x, x[5] = hi.y, x[6] = hi.z, x[7] = hi.w;
  } else {
    #pragma unroll
    for (int j = 0; j < 8; ++j) x[j] = k0 + j < K ? row[k0 + j] : 0.0f;
  }
  unsigned h[3][8];
  #pragma unroll
  for (int j = 0; j < 8; ++j) {
    unsigned piece[3];
    tc_split_n(x[j], n_pieces, piece);
    h[0][j] = piece[0], h[1][j] = piece[1], h[2][j] = piece[2];
  }
  const size_t plane = (size_t)rows * lda;
  unsigned short* out = pieces + (size_t)r * lda + k0;
  #pragma unroll
  for (int p = 0; p < 3; ++p)  // registers, not a stack array: the loop is unrolled and cut at n_pieces
    if (p < n_pieces)
      *(uint4*)(out + p * plane) = tc_pack8(h[p]);
}

// ---- global -> shared: a ring of stages --------------------------------------------------------------
#ifdef GETP_HIP
#define TC_STAGES TC_STAGES_HIP
#else
#define TC_STAGES TC_STAGES_CUDA
#endif

// One stage holds PIECES x BM A rows (piece-major) then BN W rows, TC_LDS bf16 each. Thread tid copies
// the 16-byte chunk 8 (tid % 4) .. + 7 of the step's columns of A rows tid / 4 + 64 i and of W rows
// tid / 4 + 64 j.
template <int BM, int BN, int PIECES>
struct TcStage {
  static const int A_ROWS = PIECES * BM;
  static const int ROWS = A_ROWS + BN;
  static const int A_LOADS = A_ROWS / 64, W_LOADS = BN / 64;  // rows per thread
  static const int SIZE = ROWS * TC_LDS;
  static_assert(A_ROWS % 64 == 0 && BN % 64 == 0, "a block of 256 threads stages 64 rows at a time");
};

// The rows a thread stages: piece 0 of A rows (piece p is p * plane elements further) and W rows, a
// bf16 pointer or an Mxfp4Row (null: a row outside the product, staged as zeros).
template <int BM, int BN, int PIECES, class WRow>
struct TcSources {
  const unsigned short* a[TcStage<BM, BN, PIECES>::A_LOADS];
  WRow w[TcStage<BM, BN, PIECES>::W_LOADS];
};

// W columns k .. k + 7 of a bf16 row into the stage: a 16-byte copy when vec8 (K % 8 == 0, aligned), else
// 8 scalar loads.
GETP_DEVICE void tc_stage_w8(unsigned short* d, const unsigned short* row, const unsigned short* dummy, int k, int K,
                             int vec8) {
  if (vec8) {
    const bool valid = row != nullptr && k < K;
    copy16_async(d, valid ? row + k : dummy, valid);
  } else {
    unsigned h[8];
    #pragma unroll
    for (int j = 0; j < 8; ++j) h[j] = row != nullptr && k + j < K ? row[k + j] : 0u;
    *(uint4*)d = tc_pack8(h);
  }
}

// The same of an MXFP4 row: one 4-byte load of codes and a scale, widened to the BF16 bits a bf16 row of
// the same values holds (k % 8 == 0 and codes past K are zero, so 8 values are all in or all out).
GETP_DEVICE void tc_stage_w8(unsigned short* d, Mxfp4Row row, const unsigned short*, int k, int K, int) {
  *(uint4*)d = row.codes != nullptr && k < K
                   ? mxfp4_bf16x8(*(const unsigned int*)(row.codes + k / 2), row.scales[k / MXFP4_BLOCK])
                   : make_uint4(0u, 0u, 0u, 0u);
}

// Stage the K columns k .. k + 7 of this thread's rows (k = step * TC_BK + 8 (tid % 4)). A rows: piece rows
// padded to lda (whole chunks), 16-byte copies. A null source is a row outside the product: zeros.
template <int BM, int BN, int PIECES, class WRow>
GETP_DEVICE void tc_load_stage(unsigned short* stage, const TcSources<BM, BN, PIECES, WRow>& src,
                               const unsigned short* dummy, int k, int K, int vec8) {
  typedef TcStage<BM, BN, PIECES> S;
  unsigned short* dst = stage + (threadIdx.x / 4) * TC_LDS + 8 * (threadIdx.x % 4);
  #pragma unroll
  for (int i = 0; i < S::A_LOADS; ++i) {
    const bool valid = src.a[i] != nullptr && k < K;
    copy16_async(dst + 64 * i * TC_LDS, valid ? src.a[i] + k : dummy, valid);
  }
  #pragma unroll
  for (int j = 0; j < S::W_LOADS; ++j) tc_stage_w8(dst + (S::A_ROWS + 64 * j) * TC_LDS, src.w[j], dummy, k, K, vec8);
}

// acc = A_tile @ W_tile^T over K: stages loaded TC_STAGES - 1 steps ahead; one barrier per step (the
// stage loaded in step s was last read in step s - 1, before that barrier).
template <int BM, int BN, int PIECES, class WRow>
GETP_DEVICE void tc_mainloop(TcAcc<BM, BN>& acc, const TcSources<BM, BN, PIECES, WRow>& src,
                             const unsigned short* dummy, int K, int vec8) {
  typedef TcStage<BM, BN, PIECES> S;
  const int kc = 8 * (threadIdx.x % 4);
  const int steps = (K + TC_BK - 1) / TC_BK;
  #pragma unroll
  for (int s = 0; s < TC_STAGES - 1; ++s) {
    if (s < steps) tc_load_stage(tc_smem + s * S::SIZE, src, dummy, s * TC_BK + kc, K, vec8);
    copy_async_commit();
  }
  for (int s = 0; s < steps; ++s) {
    copy_async_wait_groups<TC_STAGES - 2>();
    __syncthreads();
    const int next = s + TC_STAGES - 1;
    if (next < steps)
      tc_load_stage(tc_smem + (next % TC_STAGES) * S::SIZE, src, dummy, next * TC_BK + kc, K, vec8);
    copy_async_commit();
    tc_compute_stage<BM, PIECES, BN>(acc, tc_smem + (s % TC_STAGES) * S::SIZE);
  }
}

// The product for a block whose stage rows come from a_row(r) (piece 0 of tile row r, or null) and
// w_row(n) (W row of tile column n: a bf16 pointer or an Mxfp4Row, null outside the product); piece p of a
// row is p * plane elements after piece 0. dummy: a valid 16-byte-aligned address (the source of
// zero-filled copies).
template <int BM, int BN, int PIECES, class ARow, class WRowOf>
GETP_DEVICE void tc_product_pieces(TcAcc<BM, BN>& acc, ARow a_row, WRowOf w_row, size_t plane,
                                   const unsigned short* dummy, int K, int vec8) {
  typedef TcStage<BM, BN, PIECES> S;
  TcSources<BM, BN, PIECES, decltype(w_row(0))> src;
  #pragma unroll
  for (int i = 0; i < S::A_LOADS; ++i) {
    const int row = threadIdx.x / 4 + 64 * i;
    const unsigned short* a = a_row(row % BM);
    src.a[i] = a != nullptr ? a + (row / BM) * plane : nullptr;
  }
  #pragma unroll
  for (int j = 0; j < S::W_LOADS; ++j) src.w[j] = w_row(threadIdx.x / 4 + 64 * j);
  #pragma unroll
  for (int mi = 0; mi < TcTile<BM, BN>::MI; ++mi)
    #pragma unroll
    for (int nj = 0; nj < TcTile<BM, BN>::NJ; ++nj)
      #pragma unroll
      for (int i = 0; i < 4; ++i) acc.v[mi][nj][i] = 0.0f;
  tc_mainloop(acc, src, dummy, K, vec8);
}

template <int BM, int BN, class ARow, class WRow>
GETP_DEVICE void tc_product(TcAcc<BM, BN>& acc, ARow a_row, WRow w_row, size_t plane, const unsigned short* dummy,
                            int K, int pieces, int vec8) {
  if (pieces == 3)
    tc_product_pieces<BM, BN, 3>(acc, a_row, w_row, plane, dummy, K, vec8);
  else
    tc_product_pieces<BM, BN, 1>(acc, a_row, w_row, plane, dummy, K, vec8);
}

// ---- dense: c = a @ w^T (+ bias) (+ c), a given as pieces (pieces, M, lda) -----------------------------
GETP_DEVICE float tc_dense_out(float v, const float* bias, int n, int accumulate, const float* old) {
  if (bias != nullptr) v += bias[n];
  return accumulate ? v + *old : v;
}

// Grid (ceil(N / BN), ceil(M / BM)).
template <int BM, int BN>
GETP_DEVICE void tc_dense(float* __restrict__ c, const unsigned short* __restrict__ ap, const unsigned short* __restrict__ w,
                          const float* __restrict__ bias, int M, int N, int K, int lda, int accumulate, int pieces,
                          int vec8) {
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
  TcAcc<BM, BN> acc;
  tc_product<BM, BN>(
      acc, [&](int r) { return m0 + r < M ? ap + (size_t)(m0 + r) * lda : nullptr; },
      [&](int n) { return n0 + n < N ? w + (size_t)(n0 + n) * K : nullptr; }, (size_t)M * lda, w, K, pieces, vec8);
  tc_epilogue<BM>(acc, [&](int row, int col, float v0, float v1) {
    const int m = m0 + row, n = n0 + col;
    if (m >= M) return;
    float* out = c + (size_t)m * N + n;
    if (n < N) out[0] = tc_dense_out(v0, bias, n, accumulate, out);
    if (n + 1 < N) out[1] = tc_dense_out(v1, bias, n + 1, accumulate, out + 1);
  });
}

// gemm_tc_m{BM}_n{BN}: one kernel per tile shape (launch/gemm_tc.py picks by M and N).
#define TC_DENSE_KERNEL(BM, BN, MIN_BLOCKS)                                                                       \
  extern "C" __global__ void __launch_bounds__(BLOCK_SIZE, MIN_BLOCKS) gemm_tc_m##BM##_n##BN(                      \
      float* __restrict__ c, const unsigned short* __restrict__ ap, const unsigned short* __restrict__ w,         \
      const float* __restrict__ bias, int M, int N, int K, int lda, int accumulate, int pieces, int vec8) {       \
    grid_begin();                                                                                                 \
    if (GETP_TC) tc_dense<BM, BN>(c, ap, w, bias, M, N, K, lda, accumulate, pieces, vec8);                        \
  }
TC_DENSE_KERNEL(128, 128, 1)
TC_DENSE_KERNEL(64, 128, 2)
TC_DENSE_KERNEL(64, 64, 2)

// ---- grouped MoE: tiles of TC_GROUP_M padded positions of one expert (moe_align) --------------------
// mlp1 + SwiGLU: for padded position p of tile blockIdx.y with pair = pair_of_padded[p] >= 0,
// m = w1[e] (2I x H) @ a[pair / k] + b1[e], g[p, j] = swiglu(m[2j], m[2j + 1]) as moe.hip, written as
// its pieces gp (pieces, P, ldg) for mlp2 (columns I..ldg-1 zero). a is given as pieces (pieces, R, lda).
// Grid (ceil(2I / TC_BN), P / TC_GROUP_M). Pad positions are neither read nor written. W: Bf16Experts or
// Mxfp4Experts (common.h), the same products of the same BF16 values.
template <class W>
GETP_DEVICE void tc_grouped_swiglu(unsigned short* __restrict__ gp, int padded, int ldg,
                                   const unsigned short* __restrict__ ap, int rows, int lda,
                                   const int* __restrict__ pair_of_padded, const int* __restrict__ tile_expert, W w1,
                                   const float* __restrict__ b1, int hidden, int inter, int experts_per_token,
                                   float limit, int pieces, int vec8) {
  const int e = tile_expert[blockIdx.y];
  if (!GETP_TC || e < 0) return;
  const int p0 = blockIdx.y * TC_GROUP_M, n0 = blockIdx.x * TC_BN, N = 2 * inter;
  TcAcc<TC_GROUP_M> acc;
  tc_product<TC_GROUP_M, TC_BN>(
      acc,
      [&](int r) {
        const int pair = pair_of_padded[p0 + r];
        return pair >= 0 ? ap + (size_t)(pair / experts_per_token) * lda : nullptr;
      },
      [&](int n) { return n0 + n < N ? w1.row((size_t)e * N + n0 + n, hidden) : W::none(); }, (size_t)rows * lda,
      ap, hidden, pieces, vec8);
  const float* bias = b1 + (size_t)e * N;
  const size_t plane = (size_t)padded * ldg;
  tc_epilogue<TC_GROUP_M>(acc, [&](int row, int col, float v0, float v1) {
    const int p = p0 + row, n = n0 + col;  // n even, N even: n + 1 < N whenever n < N
    if (n >= N || pair_of_padded[p] < 0) return;
    unsigned piece[3];
    tc_split_n(swiglu_f32(v0 + bias[n], v1 + bias[n + 1], limit), pieces, piece);
    unsigned short* out = gp + (size_t)p * ldg;
    #pragma unroll
    for (int q = 0; q < 3; ++q) {
      if (q < pieces) {
        out[q * plane + n / 2] = (unsigned short)piece[q];
        if (n / 2 == inter - 1)  // the last column's thread zeroes the row's padding
          for (int j = inter; j < ldg; ++j) out[q * plane + j] = 0;
      }
    }
  });
}

// mlp2: y[p] = w2[e] (H x I) @ g[p] + b2[e] for every non-pad position p, g given as pieces (pieces, P,
// lda). Grid (ceil(H / TC_BN), P / TC_GROUP_M).
template <class W>
GETP_DEVICE void tc_grouped(float* __restrict__ y, const unsigned short* __restrict__ gp, int padded, int lda,
                            const int* __restrict__ pair_of_padded, const int* __restrict__ tile_expert, W w2,
                            const float* __restrict__ b2, int hidden, int inter, int pieces, int vec8) {
  const int e = tile_expert[blockIdx.y];
  if (!GETP_TC || e < 0) return;
  const int p0 = blockIdx.y * TC_GROUP_M, n0 = blockIdx.x * TC_BN;
  TcAcc<TC_GROUP_M> acc;
  tc_product<TC_GROUP_M, TC_BN>(
      acc, [&](int r) { return pair_of_padded[p0 + r] >= 0 ? gp + (size_t)(p0 + r) * lda : nullptr; },
      [&](int n) { return n0 + n < hidden ? w2.row((size_t)e * hidden + n0 + n, inter) : W::none(); },
      (size_t)padded * lda, gp, inter, pieces, vec8);
  const float* bias = b2 + (size_t)e * hidden;
  tc_epilogue<TC_GROUP_M>(acc, [&](int row, int col, float v0, float v1) {
    const int p = p0 + row, n = n0 + col;
    if (n >= hidden || pair_of_padded[p] < 0) return;
    float* out = y + (size_t)p * hidden + n;
    out[0] = v0 + bias[n];
    if (n + 1 < hidden) out[1] = v1 + bias[n + 1];
  });
}

// The grouped entry points: gemm_tc_grouped_swiglu / gemm_tc_grouped with bf16 experts (w), and *_mxfp4w with
// MXFP4 experts (codes (E, N, G, 16), scales (E, N, G)): results bit-identical for the same values.
#define TC_GROUPED_KERNELS(SUFFIX, W_PARAMS, W_VALUE)                                                             \
  extern "C" __global__ void __launch_bounds__(BLOCK_SIZE, 2) gemm_tc_grouped_swiglu##SUFFIX(                      \
      unsigned short* __restrict__ gp, int padded, int ldg, const unsigned short* __restrict__ ap, int rows,       \
      int lda, const int* __restrict__ pair_of_padded, const int* __restrict__ tile_expert, W_PARAMS,              \
      const float* __restrict__ b1, int hidden, int inter, int experts_per_token, float limit, int pieces,         \
      int vec8) {                                                                                                   \
    grid_begin();                                                                                                   \
    tc_grouped_swiglu(gp, padded, ldg, ap, rows, lda, pair_of_padded, tile_expert, W_VALUE, b1, hidden, inter,       \
                      experts_per_token, limit, pieces, vec8);                                                     \
  }                                                                                                                 \
  extern "C" __global__ void __launch_bounds__(BLOCK_SIZE, 2) gemm_tc_grouped##SUFFIX(                             \
      float* __restrict__ y, const unsigned short* __restrict__ gp, int padded, int lda,                           \
      const int* __restrict__ pair_of_padded, const int* __restrict__ tile_expert, W_PARAMS,                        \
      const float* __restrict__ b2, int hidden, int inter, int pieces, int vec8) {                                  \
    grid_begin();                                                                                                   \
    tc_grouped(y, gp, padded, lda, pair_of_padded, tile_expert, W_VALUE, b2, hidden, inter, pieces, vec8);          \
  }
#define TC_COMMA ,
TC_GROUPED_KERNELS(, const unsigned short* __restrict__ w, Bf16Experts{w})
TC_GROUPED_KERNELS(_mxfp4w, const unsigned char* __restrict__ codes TC_COMMA const unsigned char* __restrict__ scales,
                   Mxfp4Experts{codes TC_COMMA scales})
