// synthetic.hip: synthetic weights generated on the device, bit-identical to
// cupy_getp/checkpoint/synthetic.py: element i of a (tensor, layer) stream is
//   h = lowbias32(lowbias32(i) ^ key), u = (h >> 8) * 2^-23 - 1, w = u * scale + offset,
// and an MXFP4 expert matrix's element p of its rows padded to whole blocks is the E2M1 code
//   lowbias32(lowbias32(p) ^ key) >> 28, scaled by block b's E8M0 exponent + (h & 1) - ((h >> 1) & 1),
//   h = lowbias32(lowbias32(b) ^ scale_key).
#include "common.h"

GETP_DEVICE unsigned int lowbias32(unsigned int x) {
  x ^= x >> 16;
  x *= 0x7FEB352Du;
  x ^= x >> 15;
  x *= 0x846CA68Bu;
  x ^= x >> 16;
  return x;
}

GETP_DEVICE float synthetic_value(unsigned int i, unsigned int key, float scale, float offset) {
  const unsigned int h = lowbias32(lowbias32(i) ^ key);
  const float u = (float)(h >> 8) * 1.1920928955078125e-07f - 1.0f;  // exact: 24 bits times 2^-23
  return mul_add_unfused(u, scale, offset);
}

// out[j] = value(start + j), j < n, rounded to a bf16 value when round_bf16 != 0 (BF16-exact synthetic
// models); a grid-stride loop (n may exceed the grid).
extern "C" __global__ void synthetic_f32(float* __restrict__ out, unsigned int start, unsigned int n,
                                         unsigned int key, float scale, float offset, int round_bf16) {
  grid_begin();
  for (unsigned int j = blockIdx.x * blockDim.x + threadIdx.x; j < n; j += gridDim.x * blockDim.x) {
    const float v = synthetic_value(start + j, key, scale, offset);
    out[j] = round_bf16 ? bf16_to_f32(f32_to_bf16_rne(v)) : v;
  }
}

// The same, rounded to bf16 (the MoE matrices).
extern "C" __global__ void synthetic_bf16(unsigned short* __restrict__ out, unsigned int start, unsigned int n,
                                          unsigned int key, float scale, float offset) {
  grid_begin();
  for (unsigned int j = blockIdx.x * blockDim.x + threadIdx.x; j < n; j += gridDim.x * blockDim.x)
    out[j] = f32_to_bf16_rne(synthetic_value(start + j, key, scale, offset));
}

// The E2M1 code and E8M0 scale of element i (unpadded C order) of an MXFP4 synthetic matrix of `cols`
// columns (rows padded to whole MXFP4_BLOCKs; padding is never asked for).
GETP_DEVICE float synthetic_mxfp4_value(unsigned int i, unsigned int cols, unsigned int key, unsigned int scale_key,
                                        int exponent) {
  const unsigned int row = i / cols, col = i - row * cols;
  const unsigned int p = row * ((cols + MXFP4_BLOCK - 1) / MXFP4_BLOCK) * MXFP4_BLOCK + col;
  const unsigned int code = lowbias32(lowbias32(p) ^ key) >> 28;
  const unsigned int h = lowbias32(lowbias32(p / MXFP4_BLOCK) ^ scale_key);
  const int e8m0 = exponent + (int)(h & 1u) - (int)((h >> 1) & 1u);
  return mxfp4_value(code, (unsigned int)e8m0);
}

// out[j] = element start + j of an MXFP4 synthetic matrix as bf16 bits (every MXFP4 value is a bf16
// value: the rounding is exact), j < n, a grid-stride loop.
extern "C" __global__ void synthetic_mxfp4_bf16(unsigned short* __restrict__ out, unsigned int start, unsigned int n,
                                                unsigned int cols, unsigned int key, unsigned int scale_key,
                                                int exponent) {
  grid_begin();
  for (unsigned int j = blockIdx.x * blockDim.x + threadIdx.x; j < n; j += gridDim.x * blockDim.x)
    out[j] = f32_to_bf16_rne(synthetic_mxfp4_value(start + j, cols, key, scale_key, exponent));
}

// Rows row0..row0+rows of an MXFP4 synthetic matrix as stored: blocks (rows, G, 16) code bytes, low nibble
// first, codes past `cols` 0; scales (rows, G) E8M0; G = ceil(cols / MXFP4_BLOCK). A grid-stride loop over
// the code bytes; the first byte of each block writes its scale.
extern "C" __global__ void synthetic_mxfp4_codes(unsigned char* __restrict__ blocks, unsigned char* __restrict__ scales,
                                                 unsigned int row0, unsigned int rows, unsigned int cols,
                                                 unsigned int key, unsigned int scale_key, int exponent) {
  grid_begin();
  const unsigned int groups = (cols + MXFP4_BLOCK - 1) / MXFP4_BLOCK, row_bytes = groups * (MXFP4_BLOCK / 2);
  for (unsigned int j = blockIdx.x * blockDim.x + threadIdx.x; j < rows * row_bytes; j += gridDim.x * blockDim.x) {
    const unsigned int row = j / row_bytes, col = 2u * (j - row * row_bytes);
    const unsigned int p = (row0 + row) * groups * MXFP4_BLOCK + col;  // element index of the padded rows
    const unsigned int lo = col < cols ? lowbias32(lowbias32(p) ^ key) >> 28 : 0u;
    const unsigned int hi = col + 1u < cols ? lowbias32(lowbias32(p + 1u) ^ key) >> 28 : 0u;
    blocks[j] = (unsigned char)(lo | (hi << 4));
    if (col % MXFP4_BLOCK == 0u) {
      const unsigned int h = lowbias32(lowbias32(p / MXFP4_BLOCK) ^ scale_key);
      scales[j / (MXFP4_BLOCK / 2)] = (unsigned char)(exponent + (int)(h & 1u) - (int)((h >> 1) & 1u));
    }
  }
}

// out[j] = the MXFP4 value of code (codes[j / 2] >> 4 (j & 1)) & 15 and scale scales[j / MXFP4_BLOCK], as
// float32 (the widening every MXFP4 kernel does, on its own: tested against numpy on every code and scale).
extern "C" __global__ void mxfp4_widen_f32(float* __restrict__ out, const unsigned char* __restrict__ codes,
                                           const unsigned char* __restrict__ scales, unsigned int n) {
  grid_begin();
  for (unsigned int j = blockIdx.x * blockDim.x + threadIdx.x; j < n; j += gridDim.x * blockDim.x)
    out[j] = mxfp4_value((codes[j >> 1] >> ((j & 1u) * 4u)) & 15u, scales[j / MXFP4_BLOCK]);
}
