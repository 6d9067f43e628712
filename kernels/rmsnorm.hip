// rmsnorm.hip: out = w * x / sqrt(mean(x^2) + 1e-5), FP32 accumulation. One or a few blocks per vector.
#include "common.h"

// Values of a row a thread holds in registers: a row of up to RMS_HELD x BLOCK_SIZE values (3072: the 20b's and
// 120b's 2880) is read from memory once, every load of x and w issued before the first is used; a longer row is
// read again past them. At one row the block's chain of loads is the kernel's time: ncu (tenth session, H100)
// timed rmsnorm_split_rows at 10.4 us a launch when each loop iteration waited for its own loads of x and w.
#define RMS_HELD 12

// Slabs: a row's columns in runs of blockDim.x, slab j holding columns [j blockDim, (j + 1) blockDim). With a
// grid of (R, S) blocks, block (r, s) writes row r's slabs j = s, s + S, s + 2S, ...: at few rows one block a row
// would run the whole row's arithmetic (the output, its BF16 pieces) on one SM with 8 warps, its instructions'
// latencies the kernel's time. Every block of a row sums the whole row's squares, in the same order, so S (which
// the launch helper takes from the row count) changes no bit.

// One row x (n values) and the weights w as this thread of the block sees them, and 1 / sqrt(mean(x^2) + 1e-5)
// of the row, to every thread: the sum of squares in one order of additions for every kernel of this file and
// every S (rmsnorm_split_rows gives rmsnorm_rows_f32's bits through it): each thread its x[tid + j blockDim] in
// increasing j from 0.0f, then block_sum.
struct RmsRow {
  const float* x;
  const float* w;
  int n;
  int slab0, slabs;                          // this block's first slab, the stride between its slabs (S)
  unsigned held_mine;                        // bit j: slab j < RMS_HELD is this block's
  float held_x[RMS_HELD], held_w[RMS_HELD];  // x at tid + j blockDim (0 from n on); w there in this block's slabs
  float inv_rms;

  GETP_DEVICE RmsRow(const float* __restrict__ x_, const float* __restrict__ w_, int n_, float* scratch)
      : x(x_), w(w_), n(n_), slab0(blockIdx.y), slabs(gridDim.y), held_mine(0u) {
    for (int j = slab0; j < RMS_HELD; j += slabs) held_mine |= 1u << j;
    #pragma unroll
    for (int j = 0; j < RMS_HELD; ++j) {
      const int i = threadIdx.x + j * blockDim.x;
      held_x[j] = i < n ? x[i] : 0.0f;
      held_w[j] = i < n && mine(j) ? w[i] : 0.0f;
    }
    float ss = 0.0f;
    #pragma unroll
    for (int j = 0; j < RMS_HELD; ++j)
      if (threadIdx.x + j * blockDim.x < n) ss += held_x[j] * held_x[j];
    for (int i = threadIdx.x + RMS_HELD * blockDim.x; i < n; i += blockDim.x) ss += x[i] * x[i];
    ss = block_sum(ss, scratch);
    inv_rms = 1.0f / sqrtf(ss / (float)n + 1e-5f);
  }

  GETP_DEVICE bool mine(int j) const { return (held_mine >> j) & 1u; }  // j < RMS_HELD

  // f(i, w_i * (inv_rms * x_i)) for this thread's i < end (0 from n on) in this block's slabs, the held ones first.
  template <class F>
  GETP_DEVICE void each(int end, F f) const {
    #pragma unroll
    for (int j = 0; j < RMS_HELD; ++j) {
      const int i = threadIdx.x + j * blockDim.x;
      if (i < end && mine(j)) f(i, i < n ? held_w[j] * (inv_rms * held_x[j]) : 0.0f);
    }
    const int first = RMS_HELD + (slab0 - RMS_HELD % slabs + slabs) % slabs;  // this block's first slab past them
    for (int i = threadIdx.x + first * blockDim.x; i < end; i += slabs * blockDim.x)
      f(i, i < n ? w[i] * (inv_rms * x[i]) : 0.0f);
  }
};

// Batched engine: every row of (R, n) out and x. Grid (R, S): S blocks a row (slabs, above).
extern "C" __global__ void rmsnorm_rows_f32(float* __restrict__ out, const float* __restrict__ x,
                                            const float* __restrict__ w, int n) {
  grid_begin();
  __shared__ float scratch[WARPS_PER_BLOCK];
  float* row_out = out + (size_t)blockIdx.x * n;
  const RmsRow row(x + (size_t)blockIdx.x * n, w, n, scratch);
  row.each(n, [&](int i, float v) { row_out[i] = v; });
}

// The batched engine's rmsnorm folded into the split that the tensor-core products read: out (R, n) =
// rmsnorm_rows_f32's values, and pieces (n_pieces, R, lda) bf16 = tc_split_rows's pieces of them (zeros in
// columns n..lda-1): the same bits as the two kernels in a row, one launch and one pass over out instead of
// two. Grid (R, S): S blocks a row (slabs, above).
extern "C" __global__ void rmsnorm_split_rows(float* __restrict__ out, unsigned short* __restrict__ pieces,
                                              const float* __restrict__ x, const float* __restrict__ w, int n,
                                              int lda, int n_pieces) {
  grid_begin();
  __shared__ float scratch[WARPS_PER_BLOCK];
  const size_t r = blockIdx.x, plane = (size_t)gridDim.x * lda;
  const RmsRow row(x + r * n, w, n, scratch);
  row.each(lda, [&](int i, float v) {
    if (i < n) out[r * n + i] = v;
    unsigned piece[3];
    tc_split_n(v, n_pieces, piece);
    for (int p = 0; p < n_pieces; ++p) pieces[p * plane + r * lda + i] = (unsigned short)piece[p];
  });
}
