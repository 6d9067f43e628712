// common.h: what differs between HIP (hiprtc, wavefront 64) and CUDA (NVRTC, warp 32), reductions, bf16.
//
// cupy_getp/gpu/kernels.py inlines this header into every module's source (CuPy's compile cache hashes
// the source string, not included files) after `#define WARP_SIZE <device warpSize>` and the constants
// of cupy_getp/gpu/constants.py. With those as -D options (`python -m cupy_getp.gpu.portability` passes
// them) and the defaults below, each kernel file compiles on its own:
//   hipcc -include hip/hip_runtime.h -I kernels -DBLOCK_SIZE=256 ... -c kernels/FILE.hip       (gfx90a)
//   nvcc -x cu -arch=sm_90 -I kernels -DBLOCK_SIZE=256 ... -c kernels/FILE.hip                 (sm_90)
// Rules for one source on both compilers: extern "C" kernels, __device__ on every helper (hiprtc has
// no --device-as-default-execution-space), no standard headers, no -D options (hiprtc 3.5-4.1 drops
// them): anything configurable is a #define, emitted into the assembled source by kernels.py (the numbers
// shared with Python) or given a default here.
#ifndef GETP_COMMON_H
#define GETP_COMMON_H

#if defined(__HIPCC_RTC__) || defined(__HIPCC__) || defined(__HIP_PLATFORM_AMD__) || defined(__HIP_PLATFORM_HCC__)
#define GETP_HIP 1
#endif

#ifndef WARP_SIZE
#ifdef GETP_HIP
#define WARP_SIZE 64  // gfx90a (MI250) wavefront
#else
#define WARP_SIZE 32
#endif
#endif

// BLOCK_SIZE (threads per block of every kernel) and the other numbers the launch helpers share with the
// kernels (tile sizes, pipeline stages, MOE_MAX_K, ...) are defined once, in cupy_getp/gpu/constants.py,
// and #defined before this header (kernels.assemble_source; -D options for a standalone build).
#ifndef BLOCK_SIZE
#error "BLOCK_SIZE and the shared constants come from cupy_getp/gpu/constants.py (kernels.assemble_source)"
#endif
#define WARPS_PER_BLOCK (BLOCK_SIZE / WARP_SIZE)

#define GETP_DEVICE __device__ __forceinline__

// ROCm 5 has only the non-sync shuffles; CUDA >= 9 on sm_70+ has only the _sync ones.
#ifdef GETP_HIP
#define SHFL_XOR(v, mask) __shfl_xor((v), (mask))
#else
#define SHFL_XOR(v, mask) __shfl_xor_sync(0xffffffffu, (v), (mask))
#endif

#define GETP_NEG_INF __int_as_float(0xff800000)

// Programmatic dependent launch (CUDA, sm_90 on). The engine launches a step graph's kernels with programmatic
// stream serialization (cupy_getp/gpu/launch/pdl.py), so a kernel's blocks may be resident before the kernel
// ahead of it in the stream has finished: the launch and the blocks' start leave the step's critical path.
// grid_begin(): wait until the kernels ahead have finished and their writes are visible (griddepcontrol.wait),
// then let the next kernel's blocks launch (they wait in their own grid_begin). Every kernel calls it before its
// first access to global memory (tests/test_kernel_contracts.py checks the sources); the TMA products call it
// after issuing their first weight copies (weights are never written by a step). A no-op on ROCm, before sm_90,
// and in a launch without the attribute (eager launches).
#if !defined(GETP_HIP) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
GETP_DEVICE void grid_begin() {
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
}
#else
GETP_DEVICE void grid_begin() {}
#endif

// A load from L2, past this SM's L1: for values other blocks wrote in this launch, read after a __threadfence()
// that followed their count (CUDA's L1 is not coherent). HIP: a plain load: on gfx90a the fence's acquire
// invalidates the L1 (not run on AMD hardware here).
#ifdef GETP_HIP
GETP_DEVICE float load_cg(const float* p) { return *p; }
GETP_DEVICE float2 load_cg2(const float* p) { return *(const float2*)p; }
#else
GETP_DEVICE float load_cg(const float* p) { return __ldcg(p); }
GETP_DEVICE float2 load_cg2(const float* p) { return __ldcg((const float2*)p); }  // p 8-byte aligned
#endif

// Asynchronous 16-byte copies from global to shared memory: cp.async on CUDA sm_80+, a plain copy
// elsewhere (HIP, older CUDA). Then copy_async_wait_all() and a barrier before the bytes are read. An
// invalid copy fills zeros and reads nothing (src must still be a valid address).
#if !defined(GETP_HIP) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define GETP_CP_ASYNC 1
#else
#define GETP_CP_ASYNC 0
#endif

#if GETP_CP_ASYNC
// The 32-bit shared-state-space address of a generic pointer into shared memory: the operand cp.async,
// ldmatrix, the mbarriers and the wgmma descriptors take (gemm_tc.hip and gemm_wgmma.hip use it too).
GETP_DEVICE unsigned shared_addr(const void* p) {
  unsigned addr;
  asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(addr) : "l"(p));
  return addr;
}

// cp.async of 16 bytes from src to the shared address dst; !valid: 16 zero bytes, nothing read.
GETP_DEVICE void cp_async16(unsigned dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0));
}
#endif

GETP_DEVICE void copy16_async(void* dst, const void* src, bool valid) {
#if GETP_CP_ASYNC
  cp_async16(shared_addr(dst), src, valid);
  asm volatile("" ::: "memory");  // no memory access moves across the copy's issue
#else
  *(float4*)dst = valid ? *(const float4*)src : make_float4(0.f, 0.f, 0.f, 0.f);
#endif
}

// Tensor-core primitives of CUDA sm_80 on (gemm_tc.hip's products, attention.hip's over a BF16 cache).
#if !defined(GETP_HIP) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define GETP_MMA_SYNC 1
// Four 8x8 b16 matrices; lane l gives the row address of matrix l / 8, row l % 8; register i of every
// lane receives (row lane / 4, columns 2 (lane % 4) .. + 1) of matrix i.
GETP_DEVICE void tc_ldmatrix_x4(unsigned (&r)[4], const unsigned short* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_addr(p)));
}

// Two 8x8 b16 matrices, transposed: lanes 0-15 give the row addresses (matrix l / 8, row l % 8); register i of
// every lane receives (rows 2 (lane % 4) .. + 1, column lane / 4) of matrix i: an mma's B fragment from a
// k-major (row = k) tile.
GETP_DEVICE void tc_ldmatrix_x2_trans(unsigned (&r)[2], const unsigned short* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(shared_addr(p)));
}

// d = A (16 x 16) B (16 x 8) + c. Per lane, g = lane / 4, t = lane % 4: a = {(g, 2t..2t+1), (g+8, 2t..),
// (g, 2t+8..), (g+8, 2t+8..)}, b = {k 2t..2t+1, k 2t+8..2t+9} of column g, c/d = {(g, 2t), (g, 2t+1),
// (g+8, 2t), (g+8, 2t+1)}.
GETP_DEVICE void tc_mma_bf16(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1, const float (&c)[4]) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%10, %11, %12, %13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "f"(c[0]), "f"(c[1]), "f"(c[2]),
        "f"(c[3]));
}

// TF32 of x (an FP32 bit pattern, its low 13 mantissa bits cleared), to nearest, ties away from zero:
// cvt.rna.tf32.f32's value in a few integer instructions (sm_90 emulates the cvt in about six; a value within
// 2^-11 of FLT_MAX rounds to inf here). Inf passes unchanged and a NaN becomes 0x7fffffff, a NaN in its top
// 10 mantissa bits too (the tensor cores read no others): the add would turn a NaN into zero or inf, and
// attention would then give finite, wrong values where the CUDA-core kernel gives NaN.
GETP_DEVICE unsigned tc_tf32(float x) {
  const unsigned u = __float_as_uint(x);
  if ((u & 0x7f800000u) != 0x7f800000u) return (u + 0x1000u) & 0xffffe000u;
  return (u & 0x007fffffu) ? 0x7fffffffu : u;
}

// x = hi + lo to ~2^-22 of x: hi = tf32(x), lo = tf32(x - hi) (the subtraction exact).
GETP_DEVICE void tc_split_tf32(float x, unsigned& hi, unsigned& lo) {
  hi = tc_tf32(x);
  lo = tc_tf32(x - __uint_as_float(hi));
}

// d = A (16 x 8) B (8 x 8) + c on TF32 values. Per lane, g = lane / 4, t = lane % 4: a = {(g, t), (g+8, t),
// (g, t+4), (g+8, t+4)}, b = {k t, k t+4} of column g, c/d = {(g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1)}.
GETP_DEVICE void tc_mma_tf32(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1, const float (&c)[4]) {
  asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%10, %11, %12, %13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "f"(c[0]), "f"(c[1]), "f"(c[2]),
        "f"(c[3]));
}
#else
#define GETP_MMA_SYNC 0
#endif

// cp.async groups (gemm_tc.hip's stages, attention.hip's K then V): close the copies issued so far into a group;
// wait until at most N groups are in flight (a memory clobber: no read of the copied bytes moves above it, barrier
// or not). No-ops where the copies are plain stores.
GETP_DEVICE void copy_async_commit() {
#if GETP_CP_ASYNC
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}

template <int N>
GETP_DEVICE void copy_async_wait_groups() {
#if GETP_CP_ASYNC
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

GETP_DEVICE void copy_async_wait_all() {
#if GETP_CP_ASYNC
  asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}

// False for NaN and +-inf (no <cmath> under hiprtc): NaN fails every comparison.
GETP_DEVICE bool is_finite_f32(float v) { return fabsf(v) <= 3.402823466e+38f; }

GETP_DEVICE float warp_sum(float v) {
  for (int offset = WARP_SIZE / 2; offset > 0; offset >>= 1) v += SHFL_XOR(v, offset);
  return v;
}

GETP_DEVICE float warp_max(float v) {
  for (int offset = WARP_SIZE / 2; offset > 0; offset >>= 1) v = fmaxf(v, SHFL_XOR(v, offset));
  return v;
}

// Sum over the whole block, returned to every thread. `scratch` holds WARPS_PER_BLOCK floats.
GETP_DEVICE float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
  v = warp_sum(v);
  __syncthreads();  // a previous reduction may still be reading scratch
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < (int)(blockDim.x / WARP_SIZE) ? scratch[lane] : 0.0f;
  return warp_sum(v);
}

// bfloat16 held as uint16 bit patterns (no hip_bf16.h before ROCm 5.6): widening is exact.
GETP_DEVICE float bf16_to_f32(unsigned short h) { return __uint_as_float(((unsigned int)h) << 16); }

// Both halves of a 32-bit word of two bf16 values (little endian: element 2i in the low half).
GETP_DEVICE float bf16_lo(unsigned int w) { return __uint_as_float(w << 16); }
GETP_DEVICE float bf16_hi(unsigned int w) { return __uint_as_float(w & 0xFFFF0000u); }

// Round to nearest even; NaN stays a quiet NaN with its sign (as cupy_getp/bf16.py).
GETP_DEVICE unsigned short f32_to_bf16_rne(float f) {
  unsigned int u = __float_as_uint(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (unsigned short)((u >> 16) | 0x0040u);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return (unsigned short)(u >> 16);
}

// MXFP4: E2M1 code (4 bits: sign, 2 exponent, 1 mantissa) times 2^(e8m0 - 127), exactly numpy's
// ldexp(FP4_VALUES[code], e8m0 - 127) in float32 (cupy_getp/checkpoint/safetensors.py dequantize_mxfp4) for
// every code and scale, built from its bits with integer operations only: no float arithmetic, so no
// flush of subnormal results to zero (which the H200's runtime-compiled kernels showed). The magnitude is
// 0.5 (m = 1) or (1 + (m & 1) / 2) 2^((m >> 1) - 1) (m >= 2); scaled, its exponent field is `biased`:
// >= 255 overflows to inf (as numpy's), <= 0 is subnormal (exact: at most 2 zero bits shifted out). For
// the published scales every result is a normal BF16 value.
GETP_DEVICE float mxfp4_value(unsigned int code, unsigned int e8m0) {
  const unsigned int m = code & 7u, sign = (code & 8u) << 28;
  if (m == 0u) return __uint_as_float(sign);
  const int biased = (int)e8m0 + (m == 1u ? -1 : (int)(m >> 1) - 1);
  const unsigned int frac = m == 1u ? 0u : (m & 1u);
  const unsigned int mag = biased >= 255 ? 0x7F800000u
                           : biased >= 1 ? ((unsigned int)biased << 23) | (frac << 22)
                                         : ((2u + frac) << 22) >> (1 - biased);
  return __uint_as_float(sign | mag);
}

// a * b with subnormal operands and results kept (no flush to zero, whatever the compiler's mode).
GETP_DEVICE float mul_keep_subnormals(float a, float b) {
#ifdef GETP_HIP
  return a * b;
#else
  float d;
  asm("mul.rn.f32 %0, %1, %2;\n" : "=f"(d) : "f"(a), "f"(b));
  return d;
#endif
}

// The 8 values of code word c (value q in bits 4q .. 4q + 3) with scale e8m0: mxfp4_value's, in fewer
// instructions (the one-row kernels are bound by this widening). Each code's bits are placed at float32's
// sign, exponent and top mantissa bits, which makes the float E2M1 x 2^-126 exactly (exponent 0: a subnormal,
// m x 2^-127); a product by 2^(e8m0 - 1) (two past e8m0 = 128, where that factor is no float) gives
// E2M1 x 2^(e8m0 - 127), exact while the result is normal (e8m0 in 2 .. 252; other scales: mxfp4_value).
GETP_DEVICE void mxfp4_values8(unsigned int c, unsigned int e8m0, float (&w)[8]) {
  if (e8m0 < 2u || e8m0 > 252u) {
#pragma unroll
    for (int q = 0; q < 8; ++q) w[q] = mxfp4_value((c >> (4 * q)) & 15u, e8m0);
    return;
  }
  const bool one = e8m0 <= 128u;
  const float f1 = __uint_as_float((one ? e8m0 + 126u : 253u) << 23);  // 2^(e8m0 - 1), or 2^126
  const float f2 = __uint_as_float(e8m0 << 23);                        // 2^(e8m0 - 127)
#pragma unroll
  for (int q = 0; q < 8; ++q) {
    const unsigned int n = c >> (4 * q);
    const float v = mul_keep_subnormals(__uint_as_float(((n & 7u) << 22) | ((n & 8u) << 28)), f1);
    w[q] = one ? v : v * f2;
  }
}

// An MXFP4 row of K values (launch/common.py Mxfp4Matrix): G = ceil(K / MXFP4_BLOCK) blocks of 16 code
// bytes (element 2i in byte i's low nibble, codes past K zero) and G E8M0 scales; null codes: a row outside
// the product.
struct Mxfp4Row {
  const unsigned char* codes;
  const unsigned char* scales;
};
GETP_DEVICE bool row_ok(const unsigned short* row) { return row != 0; }
GETP_DEVICE bool row_ok(Mxfp4Row row) { return row.codes != 0; }

// Row r of codes (rows, G, 16) and scales (rows, G).
GETP_DEVICE Mxfp4Row mxfp4_row(const unsigned char* codes, const unsigned char* scales, size_t r, int K) {
  const size_t groups = (K + MXFP4_BLOCK - 1) / MXFP4_BLOCK;
  return Mxfp4Row{codes + r * groups * (MXFP4_BLOCK / 2), scales + r * groups};
}

// The BF16 bits of the 8 values of code word c (value q in bits 4q .. 4q + 3) with scale e8m0, two to a word,
// the lower value low: what a 16-byte load of the same values stored as BF16 gives. Exact: every MXFP4 value
// is a BF16 value (its float32 bits end in 16 zeros, subnormal results included; inf stays inf).
GETP_DEVICE uint4 mxfp4_bf16x8(unsigned int c, unsigned int e8m0) {
  unsigned int h[8];
#pragma unroll
  for (int q = 0; q < 8; ++q) h[q] = __float_as_uint(mxfp4_value((c >> (4 * q)) & 15u, e8m0)) >> 16;
  return make_uint4(h[0] | h[1] << 16, h[2] | h[3] << 16, h[4] | h[5] << 16, h[6] | h[7] << 16);
}

// The same from a table of the 256 code bytes' BF16 pairs at scale 2^0 (mxfp4_pair_at_unit_scale): 4 table
// loads and a few integer operations instead of 8 mxfp4_value. The scale is added to the exponent field of
// each nonzero half (each half on its own, no carry between them), exact while every result is normal
// (e8m0 in 2 .. 252); other scales take mxfp4_bf16x8.
GETP_DEVICE unsigned int mxfp4_pair_at_unit_scale(unsigned int byte) {
  return (__float_as_uint(mxfp4_value(byte & 15u, 127u)) >> 16) |
         (__float_as_uint(mxfp4_value(byte >> 4, 127u)) & 0xFFFF0000u);
}

GETP_DEVICE uint4 mxfp4_bf16x8_table(unsigned int c, unsigned int e8m0, const unsigned int* table) {
  if (e8m0 < 2u || e8m0 > 252u) return mxfp4_bf16x8(c, e8m0);
  const unsigned int d = ((unsigned int)((int)e8m0 - 127) << 7) & 0xFFFFu;  // the scale in one half's exponent
  unsigned int w[4];
#pragma unroll
  for (int b = 0; b < 4; ++b) {
    const unsigned int p = table[(c >> (8 * b)) & 255u];
    const unsigned int nonzero = ((p & 0x7FFF7FFFu) + 0x7FFF7FFFu) & 0x80008000u;  // bit 15 / 31: that half
    const unsigned int add = (nonzero >> 15) * d;
    w[b] = ((p & 0xFFFF0000u) + (add & 0xFFFF0000u)) | ((p + add) & 0xFFFFu);
  }
  return make_uint4(w[0], w[1], w[2], w[3]);
}

// Expert matrices (E, N, K) as the tensor-core products read them (gemm_tc.hip, gemm_wgmma.hip): BF16 bits,
// or MXFP4 codes and scales. row(r, K): row r of the (E N, K) matrix; none(): a row outside the product.
struct Bf16Experts {
  const unsigned short* w;
  typedef const unsigned short* Row;
  GETP_DEVICE Row row(size_t r, int K) const { return w + r * K; }
  static GETP_DEVICE Row none() { return (Row)0; }
};
struct Mxfp4Experts {
  const unsigned char* codes;
  const unsigned char* scales;
  typedef Mxfp4Row Row;
  GETP_DEVICE Row row(size_t r, int K) const { return mxfp4_row(codes, scales, r, K); }
  static GETP_DEVICE Row none() { return Mxfp4Row{(const unsigned char*)0, (const unsigned char*)0}; }
};

// a * b + c with both roundings, never fused into an FMA (host numpy rounds twice too).
GETP_DEVICE float mul_add_unfused(float a, float b, float c) {
#ifdef GETP_HIP
#pragma clang fp contract(off)
  return a * b + c;
#else
  return __fadd_rn(__fmul_rn(a, b), c);
#endif
}

// gpt-oss SwiGLU of one (gate, up) pair of mlp1 outputs, bias already added: gate clamped above, up on
// both sides at `limit`, then gate * sigmoid(1.702 gate) * (up + 1). Every mlp1 kernel ends with it.
GETP_DEVICE float swiglu_f32(float gate, float up, float limit) {
  gate = fminf(gate, limit);
  up = fmaxf(fminf(up, limit), -limit);
  const float sig = 1.0f / (1.0f + expf(-1.702f * gate));
  return gate * sig * (up + 1.0f);
}

// Dot product of a row of 8 bf16 (one 16-byte load) with 8 floats (two 16-byte loads).
GETP_DEVICE float dot8_bf16(uint4 w, const float4* x2) {
  const float4 a = x2[0], b = x2[1];
  return bf16_lo(w.x) * a.x + bf16_hi(w.x) * a.y + bf16_lo(w.y) * a.z + bf16_hi(w.y) * a.w +
         bf16_lo(w.z) * b.x + bf16_hi(w.z) * b.y + bf16_lo(w.w) * b.z + bf16_hi(w.w) * b.w;
}

// One warp's dot product of a bf16 row with a float vector, FP32 accumulation; every lane gets it.
// vec8: n % 8 == 0 and both pointers 16-byte aligned (checked by the launch helper).
// The weight loads of four iterations are issued before any of their products is added (four 16-byte
// loads in flight per lane instead of one: batch-1 decode is bound by weight bandwidth); the additions
// keep their order, so the result is the one-load-at-a-time loop's, bit for bit.
GETP_DEVICE float warp_dot_bf16(const unsigned short* __restrict__ w, const float* __restrict__ x, int n, int vec8) {
  const int lane = threadIdx.x % WARP_SIZE;
  float acc = 0.0f;
  if (vec8) {
    const uint4* w8 = (const uint4*)w;
    const float4* x4 = (const float4*)x;
    const int n8 = n / 8;
    int i = lane;
    for (; i + 3 * WARP_SIZE < n8; i += 4 * WARP_SIZE) {
      const uint4 w0 = w8[i], w1 = w8[i + WARP_SIZE], w2 = w8[i + 2 * WARP_SIZE], w3 = w8[i + 3 * WARP_SIZE];
      acc += dot8_bf16(w0, x4 + 2 * i);
      acc += dot8_bf16(w1, x4 + 2 * (i + WARP_SIZE));
      acc += dot8_bf16(w2, x4 + 2 * (i + 2 * WARP_SIZE));
      acc += dot8_bf16(w3, x4 + 2 * (i + 3 * WARP_SIZE));
    }
    for (; i < n8; i += WARP_SIZE) acc += dot8_bf16(w8[i], x4 + 2 * i);
  } else {
    for (int i = lane; i < n; i += WARP_SIZE) acc += bf16_to_f32(w[i]) * x[i];
  }
  return warp_sum(acc);
}

// Dot product of 8 MXFP4 values (one 4-byte load of codes, element 2i in byte i's low nibble, all in one
// block of scale e8m0) with 8 floats: the very expression of dot8_bf16 on the widened values, so a row
// stored as MXFP4 gives dot8_bf16's result on the same values stored as BF16, bit for bit.
GETP_DEVICE float dot8_mxfp4(unsigned int c, unsigned int e8m0, const float4* x2) {
  const float4 a = x2[0], b = x2[1];
  float w[8];
  mxfp4_values8(c, e8m0, w);
  return w[0] * a.x + w[1] * a.y + w[2] * a.z + w[3] * a.w + w[4] * b.x + w[5] * b.y + w[6] * b.z + w[7] * b.w;
}

// warp_dot_bf16 for an MXFP4 row: codes (ceil(n / 32) * 16 bytes), scales (ceil(n / 32)); the same lanes
// take the same elements and add them in the same order, so the result equals warp_dot_bf16's on the
// widened row (bit-identical storage). vec8: n % 8 == 0, codes 4-byte and x 16-byte aligned.
GETP_DEVICE float warp_dot_mxfp4(const unsigned char* __restrict__ codes, const unsigned char* __restrict__ scales,
                                 const float* __restrict__ x, int n, int vec8) {
  const int lane = threadIdx.x % WARP_SIZE;
  float acc = 0.0f;
  if (vec8) {
    const unsigned int* c8 = (const unsigned int*)codes;
    const float4* x4 = (const float4*)x;
    const int n8 = n / 8;
    int i = lane;
    for (; i + 3 * WARP_SIZE < n8; i += 4 * WARP_SIZE) {
      const unsigned int c0 = c8[i], c1 = c8[i + WARP_SIZE], c2 = c8[i + 2 * WARP_SIZE], c3 = c8[i + 3 * WARP_SIZE];
      acc += dot8_mxfp4(c0, scales[i / (MXFP4_BLOCK / 8)], x4 + 2 * i);
      acc += dot8_mxfp4(c1, scales[(i + WARP_SIZE) / (MXFP4_BLOCK / 8)], x4 + 2 * (i + WARP_SIZE));
      acc += dot8_mxfp4(c2, scales[(i + 2 * WARP_SIZE) / (MXFP4_BLOCK / 8)], x4 + 2 * (i + 2 * WARP_SIZE));
      acc += dot8_mxfp4(c3, scales[(i + 3 * WARP_SIZE) / (MXFP4_BLOCK / 8)], x4 + 2 * (i + 3 * WARP_SIZE));
    }
    for (; i < n8; i += WARP_SIZE) acc += dot8_mxfp4(c8[i], scales[i / (MXFP4_BLOCK / 8)], x4 + 2 * i);
  } else {
    for (int i = lane; i < n; i += WARP_SIZE)
      acc += mxfp4_value((codes[i >> 1] >> ((i & 1) * 4)) & 15u, scales[i / MXFP4_BLOCK]) * x[i];
  }
  return warp_sum(acc);
}

// The same for a float32 row (four loads in flight too); vec4: n % 4 == 0 and both pointers 16-byte aligned.
GETP_DEVICE float warp_dot_f32(const float* __restrict__ w, const float* __restrict__ x, int n, int vec4) {
  const int lane = threadIdx.x % WARP_SIZE;
  float acc = 0.0f;
  if (vec4) {
    const float4* w4 = (const float4*)w;
    const float4* x4 = (const float4*)x;
    const int n4 = n / 4;
    int i = lane;
    for (; i + 3 * WARP_SIZE < n4; i += 4 * WARP_SIZE) {  // loads first, additions in order (as above)
      float4 a[4];
      #pragma unroll
      for (int u = 0; u < 4; ++u) a[u] = w4[i + u * WARP_SIZE];
      #pragma unroll
      for (int u = 0; u < 4; ++u) {
        const float4 b = x4[i + u * WARP_SIZE];
        acc += a[u].x * b.x + a[u].y * b.y + a[u].z * b.z + a[u].w * b.w;
      }
    }
    for (; i < n4; i += WARP_SIZE) {
      const float4 a = w4[i], b = x4[i];
      acc += a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w;
    }
  } else {
    for (int i = lane; i < n; i += WARP_SIZE) acc += w[i] * x[i];
  }
  return warp_sum(acc);
}

// FP32 -> BF16 pieces of the tensor-core products (gemm_tc.hip, gemm_wgmma.hip).
// x -> bf16 pieces; piece[0] = x1 (largest). An infinite x1 leaves no finite remainder: x2 = x3 = 0.
template <int PIECES>
GETP_DEVICE void tc_split(float x, unsigned (&piece)[3]) {
  const unsigned short h1 = f32_to_bf16_rne(x);
  piece[0] = h1;
  if (PIECES == 3) {
    float r = x - bf16_to_f32(h1);
    if ((h1 & 0x7F80u) == 0x7F80u) r = 0.0f;  // x1 = +-inf or NaN
    const unsigned short h2 = f32_to_bf16_rne(r);
    piece[1] = h2;
    piece[2] = f32_to_bf16_rne(r - bf16_to_f32(h2));
  }
}

// The same with the piece count known only at run time (1 or 3).
GETP_DEVICE void tc_split_n(float x, int pieces, unsigned (&piece)[3]) {
  if (pieces == 3)
    tc_split<3>(x, piece);
  else
    tc_split<1>(x, piece);
}

#endif  // GETP_COMMON_H
