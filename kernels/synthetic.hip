// synthetic.hip: synthetic weights generated on the device, bit-identical to
// cupy_getp/checkpoint/synthetic.py: element i of a (tensor, layer) stream is
//   h = lowbias32(lowbias32(i) ^ key), u = (h >> 8) * 2^-23 - 1, w = u * scale + offset.
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
  for (unsigned int j = blockIdx.x * blockDim.x + threadIdx.x; j < n; j += gridDim.x * blockDim.x) {
    const float v = synthetic_value(start + j, key, scale, offset);
    out[j] = round_bf16 ? bf16_to_f32(f32_to_bf16_rne(v)) : v;
  }
}

// The same, rounded to bf16 (the MoE matrices).
extern "C" __global__ void synthetic_bf16(unsigned short* __restrict__ out, unsigned int start, unsigned int n,
                                          unsigned int key, float scale, float offset) {
  for (unsigned int j = blockIdx.x * blockDim.x + threadIdx.x; j < n; j += gridDim.x * blockDim.x)
    out[j] = f32_to_bf16_rne(synthetic_value(start + j, key, scale, offset));
}
