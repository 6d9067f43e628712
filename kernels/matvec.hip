// matvec.hip: y = W x (+ b) (+ y) for one vector, W float32 (matvec_f32) or bfloat16 bits (matvec_bf16w_f32),
// FP32 accumulation; one warp per output row. (The MoE experts' bf16 matvecs are in moe.hip, fused with
// the SwiGLU and the weighted sum; the batched engine's products are gemm.hip's and gemm_tc.hip's.)
#include "common.h"

// rows x cols row-major W. accumulate != 0 adds the old y (residual connections: x += W a + b).
// vec4: cols % 4 == 0 and W, x 16-byte aligned, checked by the launch helper.
extern "C" __global__ void matvec_f32(float* __restrict__ y, const float* __restrict__ W,
                                      const float* __restrict__ x, const float* __restrict__ b,
                                      int rows, int cols, int accumulate, int vec4) {
  grid_begin();
  const int row = blockIdx.x * WARPS_PER_BLOCK + threadIdx.x / WARP_SIZE;
  if (row >= rows) return;
  float acc = warp_dot_f32(W + (size_t)row * cols, x, cols, vec4);
  if (threadIdx.x % WARP_SIZE == 0) {
    if (b) acc += b[row];
    if (accumulate) acc += y[row];
    y[row] = acc;
  }
}

// y = W x (+ b) (+ y) with W bf16 rows x cols: the dense weights stored as BF16 where that is lossless
// (cupy_getp/gpu/weights.py), and the building block of moe.hip's fused kernels.
extern "C" __global__ void matvec_bf16w_f32(float* __restrict__ y, const unsigned short* __restrict__ W,
                                            const float* __restrict__ x, const float* __restrict__ b, int rows,
                                            int cols, int accumulate, int vec8) {
  grid_begin();
  const int row = blockIdx.x * WARPS_PER_BLOCK + threadIdx.x / WARP_SIZE;
  if (row >= rows) return;
  float acc = warp_dot_bf16(W + (size_t)row * cols, x, cols, vec8);
  if (threadIdx.x % WARP_SIZE == 0) {
    if (b) acc += b[row];
    if (accumulate) acc += y[row];
    y[row] = acc;
  }
}
