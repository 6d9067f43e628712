// gemm_wgmma.hip: the tensor-core products of gemm_tc.hip on Hopper's warpgroup instructions (wgmma,
// sm_90a only), with the same contracts and the same numerics, for every row count.
//
// Numerics: as gemm_tc.hip. The activations come as BF16 pieces (tc_split_rows); W is BF16. pieces = 3
// ("exact"): per k16 step a fresh product t = x3 W, t += x2 W, t += x1 W on the tensor cores (smallest
// first), then acc += t with an ordinary FP32 add ("promotion" at every k = 16, the same interval and
// order as the mma.sync kernels). pieces = 1 ("fast"): the tensor cores accumulate over all of K. Every
// output element sees the same sequence of operations whatever the tile it sits in, the number of rows
// in the product or its place among them: the k order is 0, 16, 32, ... for every tile shape (row-count
// invariance, tests/test_gpu_gemm_wgmma.py). The split-K twins (gemm_wg_splitk_*, gemm_wg_tma_splitk_* and
// their sliced mode gemm_wg[_tma]_sliced_*; on unless CUPY_GETP_WG_SPLITK=0) cut K at fixed boundaries chosen
// from N and K alone and sum the splits' FP32 results in a fixed order: other bits than these kernels', but
// again the same whatever the row count.
//
// Operands are swapped with respect to gemm_tc.hip: the weights are wgmma's A operand (the 64-row M side
// of the instruction: 64 output features per warpgroup) and the activation rows its N side (8 to 128
// rows a tile: WG_ROWS, chosen by the launch helper from the row count), so a product of a few rows still
// fills the instruction and reads each weight tile once for all pieces of its rows.
//
// Tiles. A block of WG_THREADS = 384 threads is one producer warpgroup and two consumer warpgroups (the half
// blocks, WG_HALF_THREADS = 256: one consumer, 64 MB features; the wide ones, WG_WIDE_THREADS = 512: three,
// 192 MB features); it
// computes 128 MB output features (MB blocks of 64 per consumer) x BR rows, stepping over K by WG_BK = 64
// (one 128-byte row of bf16 per operand row: the 128-byte swizzle atom). The producer copies 16-byte
// chunks with cp.async into a ring of stages (as many as WG_SMEM_BYTES holds, at most WG_MAX_STAGES),
// written in the 128-byte swizzled layout the wgmma descriptors name; mbarriers hand each stage to the
// consumers when its copies have landed and back when their products are done. Out-of-range rows and K
// columns are zeros. MXFP4 experts: the producer loads their code words a stage ahead into registers and
// stores them widened to the very BF16 bits (common.h mxfp4_bf16x8), so every product is the bf16 kernels'
// bit for bit. With pieces = 3 a consumer reads its W fragment once per k16 step into registers
// (ldmatrix) for the three products. The launch helper picks BR, MB by shape (MB = 1 doubles the blocks of a
// product of few rows); the bits do not depend on either.
// W rows are placed so that a thread's accumulators hold output features 2j and 2j + 1 of the same row
// (SwiGLU's pair, and neighbouring stores in the dense epilogue): tile row n goes to the smem row
// 16 (n / 16) + 8 (n % 2) + (n % 16) / 2, whose accumulator rows are r and r + 8 of a warp's 16.
//
// TMA variant of the dense kernels (gemm_wg_tma_*, bf16 W with K % 8 == 0): the producer's W copies are one
// tensor-memory-accelerator instruction a stage instead of 128 threads x BN / 16 cp.async with the swizzle
// computed per chunk; W rows then sit in order (no wg_w_slot), which changes only which thread stores which
// output, not a bit of it. The grouped TMA kernels' paired map lands rows in wg_w_slot's places instead.
//
// Built only for sm_90a (the launch helper compiles this family with -arch=sm_90a on compute capability
// 9.0); on every other target (sm_90 without the 'a' features, other CUDA GPUs, HIP) the kernels compile
// to an immediate return, `wg_available` reports 0, and the engine keeps the mma.sync / MFMA kernels.
#include "common.h"

#if !defined(GETP_HIP) && defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define GETP_WGMMA 1
#else
#define GETP_WGMMA 0
#endif

// WG_SMEM_BYTES (dynamic shared memory of every block) and WG_THREADS (a producer warpgroup and two
// consumer warpgroups; WG_HALF_THREADS one, WG_WIDE_THREADS three): cupy_getp/gpu/constants.py.
#define WG_BK 64         // K per stage (bf16): one 128-byte swizzle row
#define WG_MAX_STAGES 8
#define WG_IN_FLIGHT_ROWS 16  // exact tiles of at most this many rows keep a stage's k16 steps in flight (wg_product)
// ... and where rows x blocks (BR MB) is at most this, two stages' (wg_overlapped_stages: two sets of t)
#define WG_OVERLAP_FEATURE_ROWS 16
#define WG_ALIGN 1024    // a 128-byte-swizzle atom: 8 rows of 128 bytes

static_assert(WG_THREADS == 384, "gemm_wgmma blocks are one producer and two consumer warpgroups");
static_assert(WG_HALF_THREADS == 256, "half blocks (gemm_wg_tma_half_*) are a producer and one consumer");
static_assert(WG_WIDE_THREADS == 512, "wide blocks (gemm_wg_tma_grouped_swiglu_wide_*): a producer, three consumers");
// The tall wide blocks (three consumers of two feature blocks each, WgRegisters): 512 threads get 128 registers
// each at launch, where an exact consumer of two blocks needs ~152 (acc and t: 2 BR registers); the producer,
// which only issues copies, gives back what the consumers take: 128 x 56 + 384 x 152 = 65536, the register file.
#define WG_WIDE_PRODUCER_REGS 56
#define WG_WIDE_CONSUMER_REGS 152
static_assert(128 * WG_WIDE_PRODUCER_REGS + 3 * 128 * WG_WIDE_CONSUMER_REGS <= 65536, "the tall wide blocks");

// The ring of one product: STAGES stages of W (BN = 64 MB rows a consumer warpgroup: CONS = 2, 1 in the half
// blocks, 3 in the wide ones) then PIECES x BR activation rows, 128 B each.
template <int BR, int PIECES, int MB, int CONS = 2>
struct WgStage {
  static const int BN = 64 * CONS * MB;
  static const int W_BYTES = BN * 128;
  static const int A_ROWS = PIECES * BR;
  static const int BYTES = W_BYTES + A_ROWS * 128;
  static const int FIT = (WG_SMEM_BYTES - WG_ALIGN) / BYTES;
  static const int STAGES = FIT < WG_MAX_STAGES ? FIT : WG_MAX_STAGES;
  static_assert(STAGES >= 2, "the ring needs two stages: one filling while one is read");
};

// The file's kernels come in parts (FAMILY_PARTS in cupy_getp/gpu/kernels.py), each its own program where the
// run-time compiler is given -DGETP_PART=k, built side by side (the whole file is ~90 s of NVRTC on one core);
// without GETP_PART, one program has them all. Which part a kernel is in changes none of its machine code.
#ifndef GETP_PART
#define GETP_PART -1
#endif
#define WG_PART_HAS(k) (GETP_PART < 0 || GETP_PART == (k))

#if WG_PART_HAS(0)
extern "C" __global__ void wg_available(int* out) { grid_begin(); out[0] = GETP_WGMMA; }
#endif

// A CUtensorMap (cuTensorMapEncodeTiled, cupy_getp/gpu/launch/tensor_map.py): 128 opaque bytes, passed by value
// as a kernel's first parameter. __grid_constant__ keeps it in parameter space, where a TMA copy may name it.
struct alignas(64) WgTensorMap {
  unsigned long long words[16];
};
#ifdef GETP_HIP
#define WG_GRID_CONSTANT
#else
#define WG_GRID_CONSTANT __grid_constant__
#endif

// How wg_product cuts K: WgWhole, not at all (every product but the sliced ones); WgTotalInRegisters, in
// `splits` slices, each summed from zero into acc and folded into a running total in slice order at its end
// (`fold`): total = p0, then total += p1, ...; the last fold leaves total + acc in acc. These are the split
// mode's fixup sums, bit for bit.
struct WgWhole {
  static const bool SLICED = false;
  int splits;
  template <int MB, int N>
  GETP_DEVICE void fold(float (&)[MB][N], int, bool) {}
};

#if GETP_WGMMA
extern __shared__ __align__(1024) unsigned char wg_smem[];

// Shared-memory matrix descriptor: K-major, 128-byte swizzle, 8-row groups 1024 bytes apart.
GETP_DEVICE unsigned long long wg_desc(unsigned addr) {
  return (unsigned long long)((addr & 0x3FFFF) >> 4) | (1ull << 16) | ((unsigned long long)(1024 >> 4) << 32) |
         (1ull << 62);
}

// Byte offset of 16-byte chunk c of row r in a 128-byte-swizzled tile (tile start 1024-byte aligned).
GETP_DEVICE unsigned wg_swizzled(int r, int c) { return (unsigned)(r * 128 + ((c ^ (r & 7)) << 4)); }

// Where a block's warpgroups need other register counts than the launch's even share (the tall wide blocks: three
// consumers of two feature blocks), the producer gives registers back and the consumers take them (setmaxnreg, as
// CUTLASS's warp-specialised kernels do); ptxas then allocates each side's code within its own count.
template <int CONS, int MB>
struct WgRegisters {
  static const bool SHIFTED = CONS == 3 && MB == 2;
};
template <int CONS, int MB>
GETP_DEVICE void wg_producer_registers() {
  if constexpr (WgRegisters<CONS, MB>::SHIFTED)
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(WG_WIDE_PRODUCER_REGS));
}
// ... and leaves the kernel where it is done: returning, its path would join the consumers' (the caller's test of
// wg_product's result), and ptxas would fit the code past the join, the epilogue with its accumulators, in the
// producer's count (spilling). Either way the producer is gone once its copies have landed.
template <int CONS, int MB>
GETP_DEVICE void wg_producer_exit() {
  if constexpr (WgRegisters<CONS, MB>::SHIFTED) asm volatile("exit;\n" ::: "memory");
}
template <int CONS, int MB>
GETP_DEVICE void wg_consumer_registers() {
  if constexpr (WgRegisters<CONS, MB>::SHIFTED)
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(WG_WIDE_CONSUMER_REGS));
}

GETP_DEVICE void wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
GETP_DEVICE void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
GETP_DEVICE void wg_wait0() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
GETP_DEVICE void wg_wait1() { asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory"); }

// After a wait: the compiler must not move reads of the accumulators above it (CUTLASS's
// warpgroup_fence_operand).
template <int N>
GETP_DEVICE void wg_fence_operands(float (&d)[N]) {
  #pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// d (64 x N, FP32) = A (64 x 16, bf16, descriptor) B (16 x N, bf16, descriptor, K-major) (+ d when scale_d).
// Per thread of the warpgroup (warp q, lane l): d[4 c + e] is row 16 q + l / 4 + 8 (e / 2), column
// 8 c + 2 (l % 4) + e % 2.
GETP_DEVICE void wg_mma_n8(float (&d)[4], unsigned long long desc_a, unsigned long long desc_b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %6, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16 {%0, %1, %2, %3}, %4, %5, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "l"(desc_a), "l"(desc_b), "r"(scale_d));
}

GETP_DEVICE void wg_mma_n16(float (&d)[8], unsigned long long desc_a, unsigned long long desc_b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %10, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7}, %8, %9, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
      : "l"(desc_a), "l"(desc_b), "r"(scale_d));
}

GETP_DEVICE void wg_mma_n32(float (&d)[16], unsigned long long desc_a, unsigned long long desc_b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, %16, %17, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
      : "l"(desc_a), "l"(desc_b), "r"(scale_d));
}

GETP_DEVICE void wg_mma_n48(float (&d)[24], unsigned long long desc_a, unsigned long long desc_b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %26, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n48k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23}, %24, %25, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23])
      : "l"(desc_a), "l"(desc_b), "r"(scale_d));
}

GETP_DEVICE void wg_mma_n64(float (&d)[32], unsigned long long desc_a, unsigned long long desc_b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(desc_a), "l"(desc_b), "r"(scale_d));
}

GETP_DEVICE void wg_mma_n128(float (&d)[64], unsigned long long desc_a, unsigned long long desc_b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(desc_a), "l"(desc_b), "r"(scale_d));
}


// The same with A (64 x 16) from registers: per warp q of the warpgroup, rows 16 q .. 16 q + 15 as the
// m16n8k16 A fragment of mma.sync (a[0] = (r, k 2t..2t+1), a[1] = (r + 8, ...), a[2] = (r, k 2t+8..),
// a[3] = (r + 8, k 2t+8..), r = lane / 4, t = lane % 4).
GETP_DEVICE void wg_mma_ra_n8(float (&d)[4], const unsigned (&a)[4], unsigned long long desc_b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %9, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16 {%0, %1, %2, %3}, {%4, %5, %6, %7}, %8, p, 1, 1, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d));
}

GETP_DEVICE void wg_mma_ra_n16(float (&d)[8], const unsigned (&a)[4], unsigned long long desc_b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %13, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7}, {%8, %9, %10, %11}, %12, p, 1, 1, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d));
}

GETP_DEVICE void wg_mma_ra_n32(float (&d)[16], const unsigned (&a)[4], unsigned long long desc_b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %21, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, {%16, %17, %18, %19}, %20, p, 1, 1, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d));
}

GETP_DEVICE void wg_mma_ra_n48(float (&d)[24], const unsigned (&a)[4], unsigned long long desc_b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %29, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n48k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23}, {%24, %25, %26, %27}, %28, p, 1, 1, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d));
}

GETP_DEVICE void wg_mma_ra_n64(float (&d)[32], const unsigned (&a)[4], unsigned long long desc_b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d));
}

GETP_DEVICE void wg_mma_ra_n128(float (&d)[64], const unsigned (&a)[4], unsigned long long desc_b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d));
}

template <int BR>
GETP_DEVICE void wg_mma_ra(float (&d)[BR / 2], const unsigned (&a)[4], unsigned long long b, int scale_d) {
  if constexpr (BR == 8) wg_mma_ra_n8(d, a, b, scale_d);
  if constexpr (BR == 16) wg_mma_ra_n16(d, a, b, scale_d);
  if constexpr (BR == 32) wg_mma_ra_n32(d, a, b, scale_d);
  if constexpr (BR == 48) wg_mma_ra_n48(d, a, b, scale_d);
  if constexpr (BR == 64) wg_mma_ra_n64(d, a, b, scale_d);
  if constexpr (BR == 128) wg_mma_ra_n128(d, a, b, scale_d);
  static_assert(BR == 8 || BR == 16 || BR == 32 || BR == 48 || BR == 64 || BR == 128, "no wgmma of this N");
}

// This warp's A fragment (rows 16 q .. + 15 of the 64 at `tile`, k 16 kk .. + 15) from a 128-byte-swizzled
// tile: lane l addresses row (l / 8 % 2) 8 + l % 8 of matrix l / 8, in chunk 2 kk + l / 16.
GETP_DEVICE void wg_load_a(unsigned (&a)[4], unsigned tile, int kk) {
  const int lane = threadIdx.x % 32, q = (threadIdx.x % 128) / 32;
  const int row = 16 * q + 8 * ((lane / 8) % 2) + lane % 8, chunk = 2 * kk + lane / 16;
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3])
               : "r"(tile + wg_swizzled(row, chunk)));
}

// One k16 step of an exact (3-piece) product: t = W x3, t += W x2, t += W x1 (smallest piece first, from zero:
// the promotion of gemm_tc.hip), W from registers, the pieces' rows at b (x1), b + BR rows (x2), b + 2 BR (x3).
// N: the rows the products cover, BR or a part of the tile's BR rows starting at b (a row's products do not
// depend on the instruction's width).
template <int BR, int N = BR>
GETP_DEVICE void wg_piece_products(float (&t)[N / 2], const unsigned (&a)[4], unsigned b) {
  wg_mma_ra<N>(t, a, wg_desc(b + 2 * BR * 128), 0);
  wg_mma_ra<N>(t, a, wg_desc(b + BR * 128), 1);
  wg_mma_ra<N>(t, a, wg_desc(b), 1);
}

// The registers of an accumulator array (R of them) that hold its rows first .. first + N - 1, the accumulator
// of an instruction N rows wide over them (a thread's registers go by column blocks of 8, in order): half h of a
// tile is wg_rows<BR / 2>(t, h BR / 2), its first N rows wg_rows<N>(t).
template <int N, int R>
GETP_DEVICE auto wg_rows(float (&t)[R], int first = 0) -> float (&)[N / 2] {
  static_assert(N / 2 <= R, "a part of the array");
  return *reinterpret_cast<float(*)[N / 2]>(t + first / 2);
}

template <int BR>
GETP_DEVICE void wg_mma(float (&d)[BR / 2], unsigned long long a, unsigned long long b, int scale_d) {
  if constexpr (BR == 8) wg_mma_n8(d, a, b, scale_d);
  if constexpr (BR == 16) wg_mma_n16(d, a, b, scale_d);
  if constexpr (BR == 32) wg_mma_n32(d, a, b, scale_d);
  if constexpr (BR == 48) wg_mma_n48(d, a, b, scale_d);
  if constexpr (BR == 64) wg_mma_n64(d, a, b, scale_d);
  if constexpr (BR == 128) wg_mma_n128(d, a, b, scale_d);
  static_assert(BR == 8 || BR == 16 || BR == 32 || BR == 48 || BR == 64 || BR == 128, "no wgmma of this N");
}

// A width N for the products of a tile's first rows (wg_product's consumer loop).
template <int W>
struct WgWidth {
  static constexpr int N = W;
};

// The tile's products for its rows 0 .. N - 1 alone, by an instruction N rows wide (N <= BR): an expert's last
// tile, or a product's last row tile, holds fewer rows than the tile (grouped tiles fill from their first row), and
// the tensor cores' work goes with the width. A row's products do not depend on the instruction's width, so the
// bits are the full width's; the registers of the rows past N (padding, which no epilogue stores) keep what they
// held. wg_piece_products_of: an exact product's k16 step (3 pieces, W from registers); wg_mma_of: a 1-piece one,
// into acc.
template <int BR, int N>
GETP_DEVICE void wg_piece_products_of(float (&t)[BR / 2], const unsigned (&a)[4], unsigned b) {
  wg_piece_products<BR, N>(wg_rows<N>(t), a, b);
}

template <int BR, int N>
GETP_DEVICE void wg_mma_of(float (&d)[BR / 2], unsigned long long a, unsigned long long b) {
  wg_mma<N>(wg_rows<N>(d), a, b, 1);
}

GETP_DEVICE void wg_store16(unsigned dst, uint4 v) {
  asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};\n" ::"r"(dst), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w));
}


// The smem row of W tile row n (see the header: a thread then holds features 2j and 2j + 1).
GETP_DEVICE int wg_w_slot(int n) { return (n & ~15) + 8 * (n & 1) + (n & 15) / 2; }

GETP_DEVICE void mbar_init(unsigned bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}

GETP_DEVICE void mbar_wait(unsigned bar, int parity) {
  asm volatile(
      "{\n.reg .pred done;\nWG_WAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WG_WAIT;\n}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}

GETP_DEVICE void mbar_arrive(unsigned bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}

// One arrival on `bar` once every cp.async this thread issued so far has landed.
GETP_DEVICE void mbar_arrive_copies(unsigned bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}

// One arrival on `bar` that also makes its phase wait for `bytes` more of asynchronous copies.
GETP_DEVICE void mbar_arrive_expect_tx(unsigned bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}

// The box of `map` at (k, n) (elements along K, rows) into shared memory at dst (1024-byte aligned: the map's
// 128-byte swizzle is then wg_swizzled's), completing its bytes on `bar`. Out-of-range elements are zeros.
GETP_DEVICE void wg_tma_load(unsigned dst, const WgTensorMap& map, unsigned bar, int k, int n) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n"
      ::"r"(dst), "l"(&map), "r"(k), "r"(n), "r"(bar) : "memory");
}

// The same copy through a paired map (launch/tensor_map.py, the grouped kernels' experts): four dimensions (K, 8
// pairs two rows apart, 2 rows of a pair, groups of 16 rows), so that row 16 g + 2 i + q of the box lands in
// slot 16 g + 8 q + i, where wg_w_slot places it: features 2j and 2j + 1 in one thread (the SwiGLU pair, the
// grouped epilogues' WG_PAIRED). n: the box's first row, a multiple of 16.
GETP_DEVICE void wg_tma_load_paired(unsigned dst, const WgTensorMap& map, unsigned bar, int k, int n) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, %5}], "
      "[%6];\n" ::"r"(dst), "l"(&map), "r"(k), "r"(0), "r"(0), "r"(n / 16), "r"(bar) : "memory");
}

// What one producer thread (i of 128) copies: chunk i % 8 of W rows i / 8 + 16 u and of activation rows
// i / 8 + 16 u (piece-major: row r is piece r / BR of tile row r % BR). Their sources are found once per
// block (the grouped kernels read pair_of_padded there, not in every stage); null: a row outside the
// product (zeros). W rows: bf16 pointers or Mxfp4Rows (common.h).
template <int BR, int PIECES, int MB, class WRow>
struct WgSources {
  typedef WgStage<BR, PIECES, MB> S;
  static const int W_LOADS = S::BN / 16, A_LOADS = (S::A_ROWS + 15) / 16;
  WRow w[W_LOADS];
  const unsigned short* a[A_LOADS];

  template <class WRowOf, class ARow>
  GETP_DEVICE WgSources(WRowOf w_row, ARow a_row, size_t plane) {
    const int i = threadIdx.x % 128;
    #pragma unroll
    for (int u = 0; u < W_LOADS; ++u) w[u] = w_row(i / 8 + 16 * u);
    #pragma unroll
    for (int u = 0; u < A_LOADS; ++u) {
      const int r = i / 8 + 16 * u;
      const unsigned short* row = r < S::A_ROWS ? a_row(r % BR) : nullptr;
      a[u] = row != nullptr ? row + (r / BR) * plane : nullptr;
    }
  }
};

// The W values of a thread's next stage where the producer widens them itself: MXFP4 rows, whose code words
// and scales are loaded one stage ahead into registers (their latency then overlaps the wait for a free
// stage). bf16 rows keep nothing here: cp.async copies them when staged.
template <class WRow, int N>
struct WgWNext {
  GETP_DEVICE void prepare() {}
  GETP_DEVICE void fetch(const WRow (&)[N], int, int) {}
};
template <int N>
struct WgWNext<Mxfp4Row, N> {
  unsigned codes[N], scales[N];
  const unsigned* table;  // mxfp4_bf16x8_table's, in shared memory

  GETP_DEVICE void prepare() {  // by the producer warpgroup alone (named barrier 1)
    __shared__ unsigned pairs[256];
    for (int b = threadIdx.x; b < 256; b += 128) pairs[b] = mxfp4_pair_at_unit_scale(b);
    asm volatile("bar.sync 1, 128;\n" ::: "memory");
    table = pairs;
  }
  GETP_DEVICE void fetch(const Mxfp4Row (&rows)[N], int k, int K) {  // values k .. k + 7 of every row
    #pragma unroll
    for (int u = 0; u < N; ++u) {
      const bool valid = rows[u].codes != nullptr && k < K;  // codes past K are zero: 8 values all in or out
      codes[u] = valid ? *(const unsigned*)(rows[u].codes + k / 2) : 0u;
      scales[u] = valid ? rows[u].scales[k / MXFP4_BLOCK] : 0u;
    }
  }
};

// W columns k .. k + 7 of bf16 rows: 16-byte copies when vec8 (K % 8 == 0, aligned), else 8 scalar loads and
// a plain shared store. dst(u): the shared address of row u's chunk.
template <int N, class Dst>
GETP_DEVICE void wg_stage_w(Dst dst, const unsigned short* const (&rows)[N], const WgWNext<const unsigned short*, N>&,
                            const unsigned short* dummy, int k, int K, int vec8) {
  #pragma unroll
  for (int u = 0; u < N; ++u) {
    const unsigned short* row = rows[u];
    if (vec8) {
      const bool valid = row != nullptr && k < K;
      cp_async16(dst(u), valid ? row + k : dummy, valid);
    } else {
      unsigned h[8];
      #pragma unroll
      for (int j = 0; j < 8; ++j) h[j] = row != nullptr && k + j < K ? row[k + j] : 0u;
      wg_store16(dst(u), make_uint4(h[0] | h[1] << 16, h[2] | h[3] << 16, h[4] | h[5] << 16, h[6] | h[7] << 16));
    }
  }
}

// The same of MXFP4 rows, from the code words fetched a stage ahead: widened to the BF16 bits a bf16 row of
// the same values holds, and stored.
template <int N, class Dst>
GETP_DEVICE void wg_stage_w(Dst dst, const Mxfp4Row (&)[N], const WgWNext<Mxfp4Row, N>& next, const unsigned short*,
                            int, int, int) {
  #pragma unroll
  for (int u = 0; u < N; ++u) wg_store16(dst(u), mxfp4_bf16x8_table(next.codes[u], next.scales[u], next.table));
}

// Stage K columns k0 .. k0 + 63 of this thread's rows (W as wg_stage_w, unless a TMA copy stages it: W_ROWS
// false); piece rows hold zeros from K to lda.
template <bool W_ROWS, int CONS = 2, int BR, int PIECES, int MB, class WRow>
GETP_DEVICE void wg_load_stage(unsigned stage, const WgSources<BR, PIECES, MB, WRow>& src,
                               const WgWNext<WRow, WgSources<BR, PIECES, MB, WRow>::W_LOADS>& w_next,
                               const unsigned short* dummy, int k0, int K, int vec8) {
  typedef WgStage<BR, PIECES, MB, CONS> S;
  static_assert(CONS == 2 || !W_ROWS, "the producer's own W rows are a two-consumer block's");
  const int i = threadIdx.x % 128, c = i % 8, k = k0 + 8 * c;
  if constexpr (W_ROWS)
    wg_stage_w([&](int u) { return stage + wg_swizzled(wg_w_slot(i / 8 + 16 * u), c); }, src.w, w_next, dummy, k, K,
               vec8);
  #pragma unroll
  for (int u = 0; u < src.A_LOADS; ++u) {
    const int r = i / 8 + 16 * u;
    if (r < S::A_ROWS) {
      const bool valid = src.a[u] != nullptr && k < K;
      cp_async16(stage + S::W_BYTES + wg_swizzled(r, c), valid ? src.a[u] + k : dummy, valid);
    }
  }
}

// W read by the tensor memory accelerator (the TMA kernels): the block's rows n0 .. n0 + 64 CONS MB of the matrix
// `map` describes (its box: 64 K x 64 CONS MB rows, 128-byte swizzle, zeros outside the matrix), from column k0 on
// (0, or a split's first column: the map names the whole of W).
struct WgTmaW {
  const WgTensorMap* map;
  int n0, k0;
  bool paired = false;  // a paired map (wg_tma_load_paired): rows in wg_w_slot's places, the WG_PAIRED epilogues
};

// Stage s's W copy of the block's box.
GETP_DEVICE void wg_tma_w(unsigned dst, const WgTmaW& w, unsigned bar, int s) {
  if (w.paired)
    wg_tma_load_paired(dst, *w.map, bar, w.k0 + s * WG_BK, w.n0);
  else
    wg_tma_load(dst, *w.map, bar, w.k0 + s * WG_BK, w.n0);
}
template <class WRowOf>
struct WgByTma {
  static const bool value = false;
};
template <>
struct WgByTma<WgTmaW> {
  static const bool value = true;
};

// The TMA producer's stages: one elected thread issues a stage's whole W tile, rows in order (not placed by
// wg_w_slot: the epilogue's WG_IN_ORDER; by a paired map in wg_w_slot's places), as one copy, and arrives on
// `full` expecting its bytes; the 128
// threads copy the activation rows with cp.async as wg_product's own producer does, each arriving once they
// have landed: 128 + 1 arrivals a stage.
template <int BR, int PIECES, int MB, int CONS, class ARow>
GETP_DEVICE void wg_produce_tma(WgTmaW w, ARow a_row, size_t plane, const unsigned short* dummy, int K,
                                unsigned base, unsigned full, unsigned empty, int steps) {
  typedef WgStage<BR, PIECES, MB, CONS> S;
  typedef const unsigned short* WRow;
  const WgSources<BR, PIECES, MB, WRow> src([](int) { return (WRow) nullptr; }, a_row, plane);  // pieces only
  const WgWNext<WRow, WgSources<BR, PIECES, MB, WRow>::W_LOADS> none{};
  const bool elected = threadIdx.x == 0;
  // The first ring's weights before grid_begin: a step never writes W, so they may stream in while the kernel
  // ahead in the stream finishes (programmatic dependent launch); the activations come after it. (The grouped
  // kernels call grid_begin first: their tile's expert comes from the kernel ahead.)
  const int ahead = steps < S::STAGES ? steps : S::STAGES;
  if (elected) {
    asm volatile("prefetch.tensormap [%0];\n" ::"l"(w.map) : "memory");
    for (int s = 0; s < ahead; ++s) {
      mbar_arrive_expect_tx(full + 8 * s, S::W_BYTES);
      wg_tma_w(base + s * S::BYTES, w, full + 8 * s, s);
    }
  }
  grid_begin();
  for (int s = 0; s < steps; ++s) {
    const int b = s % S::STAGES;
    if (s >= S::STAGES) mbar_wait(empty + 8 * b, (s / S::STAGES - 1) & 1);
    const unsigned stage = base + b * S::BYTES, bar = full + 8 * b;
    if (elected && s >= ahead) {
      mbar_arrive_expect_tx(bar, S::W_BYTES);
      wg_tma_w(stage, w, bar, s);
    }
    wg_load_stage<false, CONS>(stage, src, none, dummy, s * WG_BK, K, 1);
    mbar_arrive_copies(bar);
  }
}

// Split-K's sliced mode (wg_product's `slices`): the K stages [j steps / S, (j + 1) steps / S) are slice j, as
// the split mode's blockIdx.z = j runs them (wg_split_k); the step after which slice j ends.
GETP_DEVICE int wg_slice_end(int steps, int splits, int slice) { return (slice + 1) * steps / splits; }

// One stage's products of an exact (3-piece) tile, one commit group: for each k16 step kk and block mb,
// tb[kk][mb] = x3 W + x2 W + x1 W from zero (wg_piece_products' order and promotion), W by descriptor from the
// stage at a0 (so no W fragment is held in registers while the group runs), the pieces' rows at b0.
template <int BR, int MB, int KK>
GETP_DEVICE void wg_issue_stage(float (&tb)[KK][MB][BR / 2], unsigned a0, unsigned b0) {
  #pragma unroll
  for (int kk = 0; kk < KK; ++kk)
    #pragma unroll
    for (int mb = 0; mb < MB; ++mb) wg_fence_operands(tb[kk][mb]);  // their last additions stay above the fence
  wg_fence();
  #pragma unroll
  for (int kk = 0; kk < KK; ++kk)
    #pragma unroll
    for (int mb = 0; mb < MB; ++mb) {
      const unsigned long long w = wg_desc(a0 + mb * 64 * 128 + 32 * kk);
      const unsigned b = b0 + 32 * kk;
      wg_mma<BR>(tb[kk][mb], w, wg_desc(b + 2 * BR * 128), 0);
      wg_mma<BR>(tb[kk][mb], w, wg_desc(b + BR * 128), 1);
      wg_mma<BR>(tb[kk][mb], w, wg_desc(b), 1);
    }
  wg_commit();
}

// acc += tb, k16 step by k16 step (the order of wg_product's other exact paths).
template <int BR, int MB, int KK>
GETP_DEVICE void wg_add_stage(float (&acc)[MB][BR / 2], float (&tb)[KK][MB][BR / 2]) {
  #pragma unroll
  for (int kk = 0; kk < KK; ++kk)
    #pragma unroll
    for (int mb = 0; mb < MB; ++mb) {
      wg_fence_operands(tb[kk][mb]);
      #pragma unroll
      for (int i = 0; i < BR / 2; ++i) acc[mb][i] += tb[kk][mb][i];
    }
}

// A consumer's whole K for exact tiles of few rows (WG_OVERLAP_FEATURE_ROWS), two stages at a time: both
// stages' products issued (two commit groups, each stage into its own set of t), then the first stage's t added
// while the second's products run, then the second's (wg_product's in-flight path waits for each stage's group
// before adding it, the tensor cores idle meanwhile). The same products, the same additions in the same order:
// the same bits. Both stages' copies are waited for first, with nothing in flight: a wait's spin loop between a
// group's issue and the reading of its t makes ptxas serialise every product (C7518).
template <class S, int BR, int MB>
GETP_DEVICE void wg_overlapped_stages(float (&acc)[MB][BR / 2], unsigned base, unsigned w_off, unsigned full,
                                      unsigned empty, int steps) {
  static_assert(S::STAGES >= 2, "two stages at a time");
  constexpr int KK = WG_BK / 16;
  float tb[2][KK][MB][BR / 2];
  #pragma unroll
  for (int h = 0; h < 2; ++h)
    #pragma unroll
    for (int kk = 0; kk < KK; ++kk)
      #pragma unroll
      for (int mb = 0; mb < MB; ++mb)
        #pragma unroll
        for (int i = 0; i < BR / 2; ++i) tb[h][kk][mb][i] = 0.0f;
  auto landed = [&](int s) {  // stage s's address, once its copies have landed
    mbar_wait(full + 8 * (s % S::STAGES), (s / S::STAGES) & 1);
    return base + (s % S::STAGES) * S::BYTES;
  };
  auto retire = [&](int s, float (&t)[KK][MB][BR / 2]) {  // t: stage s's, its group done
    mbar_arrive(empty + 8 * (s % S::STAGES));  // the stage is read: the producer may refill it
    wg_add_stage<BR, MB, KK>(acc, t);
  };
  int s = 0;
  for (; s + 1 < steps; s += 2) {
    const unsigned first = landed(s), second = landed(s + 1);
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");  // generic-proxy writes -> wgmma reads
    wg_issue_stage<BR, MB, KK>(tb[0], first + w_off, first + S::W_BYTES);
    wg_issue_stage<BR, MB, KK>(tb[1], second + w_off, second + S::W_BYTES);
    wg_wait1();  // stage s's group is done, s + 1's runs
    retire(s, tb[0]);
    wg_wait0();
    retire(s + 1, tb[1]);
  }
  if (s < steps) {  // an odd count: the last stage alone
    const unsigned last = landed(s);
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    wg_issue_stage<BR, MB, KK>(tb[0], last + w_off, last + S::W_BYTES);
    wg_wait0();
    retire(s, tb[0]);
  }
}

// acc[mb] (64 features x BR rows of each of a consumer warpgroup's MB blocks) = W_tile A_tile^T over K.
// Warpgroup 0 produces: it stages the ring, W rows w_row(n) (bf16 or MXFP4, placed by wg_w_slot) and the
// activation rows with cp.async, each stage's `full` barrier completing once its copies have landed (or, with
// w_row a WgTmaW, as wg_produce_tma); warpgroups 1 and 2 consume: wait for `full`, run the tensor cores, and
// arrive on `empty` once the products that read the stage are done, which lets the producer refill it.
// pieces = 3: every k16 step, for each block, t = x3 W + x2 W + x1 W from zero, then a wait and acc += t
// (a t is read only once its products are done: reading it while a wgmma that writes it runs would make ptxas
// serialise every wgmma, warning C7514; the other consumer warpgroup keeps the tensor cores busy). Tiles of at
// most WG_IN_FLIGHT_ROWS rows issue a stage's k16 steps together, each into its own t, before one wait; where
// BR MB <= WG_OVERLAP_FEATURE_ROWS (one row's tiles), two stages, the first added while the second's run
// (wg_overlapped_stages; not in split-K's sliced mode).
// Tiles of two blocks (MB = 2) alternate the blocks' k16 steps: one block's t is added while the other's
// products run (wait_group 1); tiles of one block and 32 rows or more, the two halves of its rows.
// pieces = 1: the tensor cores accumulate into acc, one stage's products in flight while the next is
// issued. `dummy`: the source of zero-filled copies, a valid 16-byte-aligned address (the activation pieces,
// whose alignment the launch helper checks; W need not be aligned). `slices` (split-K's sliced mode): K in
// slices, each summed from zero and folded into a running total in slice order (WgTotalInRegisters): the bits of
// the split mode's S blocks. CONS = 1 (the half blocks, W by TMA only): one consumer warpgroup, 64 MB features;
// CONS = 3 (the wide blocks, W by TMA only): three, 192 MB features.
// Returns true on consumers (their acc holds the result).
template <int BR, int PIECES, int MB, int CONS = 2, class WRowOf, class ARow, class Slices = WgWhole>
GETP_DEVICE bool wg_product(float (&acc)[MB][BR / 2], WRowOf w_row, ARow a_row, size_t plane,
                            const unsigned short* dummy, int K, int vec8, Slices slices = WgWhole{1}) {
  typedef WgStage<BR, PIECES, MB, CONS> S;
  static_assert(CONS == 2 || ((CONS == 1 || CONS == 3) && WgByTma<WRowOf>::value),
                "half and wide blocks take W by TMA");
  __shared__ __align__(8) unsigned long long bars[2 * WG_MAX_STAGES];  // full[STAGES], then empty[STAGES]
  const unsigned base = (shared_addr(wg_smem) + WG_ALIGN - 1) & ~(unsigned)(WG_ALIGN - 1);
  const unsigned full = shared_addr(bars), empty = full + 8 * WG_MAX_STAGES;
  const int steps = (K + WG_BK - 1) / WG_BK, role = threadIdx.x / 128;
  const bool by_tma = WgByTma<WRowOf>::value;
  if (threadIdx.x == 0) {
    for (int b = 0; b < S::STAGES; ++b) {
      // 128 producers x (copies landed + plain stores released); by TMA: copies landed + the W copy's arrival
      mbar_init(full + 8 * b, by_tma ? 128 + 1 : 256);
      mbar_init(empty + 8 * b, 128 * CONS);  // the consumer threads
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();
  if constexpr (WgByTma<WRowOf>::value) {
    if (role == 0) {
      wg_producer_registers<CONS, MB>();
      wg_produce_tma<BR, PIECES, MB, CONS>(w_row, a_row, plane, dummy, K, base, full, empty, steps);
      asm volatile("cp.async.wait_all;\n" ::: "memory");
      wg_producer_exit<CONS, MB>();
      return false;
    }
  } else if (role == 0) {
    typedef WgSources<BR, PIECES, MB, decltype(w_row(0))> Sources;
    typedef WgWNext<decltype(w_row(0)), Sources::W_LOADS> WNext;
    const Sources src(w_row, a_row, plane);
    const int kc = 8 * (threadIdx.x % 8);  // this thread's columns of a stage
    WNext w_next;
    w_next.fetch(src.w, kc, K);
    w_next.prepare();
    for (int s = 0; s < steps; ++s) {
      const int b = s % S::STAGES;
      if (s >= S::STAGES) mbar_wait(empty + 8 * b, (s / S::STAGES - 1) & 1);
      wg_load_stage<true>(base + b * S::BYTES, src, w_next, dummy, s * WG_BK, K, vec8);
      mbar_arrive_copies(full + 8 * b);
      mbar_arrive(full + 8 * b);
      if (s + 1 < steps) w_next.fetch(src.w, (s + 1) * WG_BK + kc, K);  // in flight during the next wait
    }
    asm volatile("cp.async.wait_all;\n" ::: "memory");
    return false;
  }
  wg_consumer_registers<CONS, MB>();
  if constexpr (WgByTma<WRowOf>::value) grid_begin();  // the TMA kernels' own (their producer's: above)
  const unsigned w_off = (role - 1) * MB * 64 * 128;  // this warpgroup's MB x 64 W rows
  #pragma unroll
  for (int mb = 0; mb < MB; ++mb)
    #pragma unroll
    for (int i = 0; i < BR / 2; ++i) acc[mb][i] = 0.0f;
  float t[MB][BR / 2];
  #pragma unroll
  for (int mb = 0; mb < MB; ++mb)
    #pragma unroll
    for (int i = 0; i < BR / 2; ++i) t[mb][i] = 0.0f;
  // Tiles of few rows (WG_IN_FLIGHT_ROWS): a stage's k16 steps in flight together, each in its own t.
  constexpr bool IN_FLIGHT = PIECES == 3 && BR <= WG_IN_FLIGHT_ROWS;
  constexpr int KK = WG_BK / 16;
  float tk[IN_FLIGHT ? KK : 1][MB][BR / 2];
  #pragma unroll
  for (int kk = 0; kk < (IN_FLIGHT ? KK : 1); ++kk)
    #pragma unroll
    for (int mb = 0; mb < MB; ++mb)
      #pragma unroll
      for (int i = 0; i < BR / 2; ++i) tk[kk][mb][i] = 0.0f;
  if constexpr (IN_FLIGHT && !Slices::SLICED && BR * MB <= WG_OVERLAP_FEATURE_ROWS) {
    wg_overlapped_stages<S, BR, MB>(acc, base, w_off, full, empty, steps);
    return true;
  }
  // The paths whose products narrow (tiles of 16 rows or more): the 1-piece products, and the exact ones of two
  // feature blocks (or of one where no half-split path takes them); the halves and in-flight paths keep the full
  // width. `used`: 1 + the last row of the tile that holds data (a_row not null); past it, padding. Every warp
  // finds it alone, 32 rows a ballot.
  constexpr bool NARROWS = BR >= 16 && !IN_FLIGHT && !(PIECES == 3 && MB == 1 && BR >= 32);
  int used = BR;
  if constexpr (NARROWS) {
    used = 1;
    #pragma unroll
    for (int r0 = 0; r0 < BR; r0 += 32) {
      const int r = r0 + threadIdx.x % 32;
      const unsigned held = __ballot_sync(0xffffffffu, r < BR && a_row(r) != nullptr);
      if (held != 0) used = r0 + 32 - __clz(held);
    }
  }
  // The consumers' loop over K, its products N rows wide (WgWidth): the narrowest that holds the used rows (a
  // quarter, a half, three quarters (64-row tiles) or the whole of the tile), chosen once a tile, so that each
  // width's loop is its own code (a width chosen inside the loop would merge the accumulators' definitions, and
  // ptxas would fence every product: its C7519 notes).
  auto consume = [&](auto width) {
    constexpr int N = decltype(width)::N;
    (void)N;  // the halves' and in-flight paths keep BR
    // The exact paths add only t's first N rows: its others are never written (0 since the start), and the rows
    // past `used` that they would add to are pad rows, never stored: the stored rows' bits do not change.
    // Slices::SLICED: a loop a slice, its stages then (every product done) its fold, so that ptxas sees no
    // non-wgmma write to acc while products are in flight (its C7515 serialisation, met with the fold inside
    // the loop over stages); WgWhole: one slice of every stage, the plain loop over K.
    const int n_slices = Slices::SLICED ? slices.splits : 1;
    for (int slice = 0, s = 0; slice < n_slices; ++slice) {
      const int end = Slices::SLICED ? wg_slice_end(steps, slices.splits, slice) : steps;
      for (; s < end; ++s) {
        const int b = s % S::STAGES;
        mbar_wait(full + 8 * b, (s / S::STAGES) & 1);
        asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");  // generic-proxy writes -> wgmma reads
        const unsigned stage = base + b * S::BYTES, a0 = stage + w_off, b0 = stage + S::W_BYTES;
        if constexpr (IN_FLIGHT) {
          // The last loop below with its wait a k16 step gone: every k16 step's three products (smallest piece first,
          // into its own t) issued, one wait, then acc += t in k16 order: the same additions, the same bits. With
          // few rows the consumers' chain of dependent products and waits bounds the product, not the memory
          // (ncu, ninth session: the producer waits for free stages, ~840 cycles a stage at one row).
          unsigned a[KK][MB][4];
          #pragma unroll
          for (int kk = 0; kk < KK; ++kk)
            #pragma unroll
            for (int mb = 0; mb < MB; ++mb) {
              wg_load_a(a[kk][mb], a0 + mb * 64 * 128, kk);
              wg_fence_operands(tk[kk][mb]);  // the last stage's reads of t stay above the fence (as CUTLASS does)
            }
          wg_fence();
          #pragma unroll
          for (int kk = 0; kk < KK; ++kk)
            #pragma unroll
            for (int mb = 0; mb < MB; ++mb) wg_piece_products<BR>(tk[kk][mb], a[kk][mb], b0 + 32 * kk);
          wg_commit();
          wg_wait0();
          mbar_arrive(empty + 8 * b);  // the stage is read: the producer may refill it during the additions
          #pragma unroll
          for (int kk = 0; kk < KK; ++kk)
            #pragma unroll
            for (int mb = 0; mb < MB; ++mb) {
              wg_fence_operands(tk[kk][mb]);
              #pragma unroll
              for (int i = 0; i < BR / 2; ++i) acc[mb][i] += tk[kk][mb][i];
            }
        } else if constexpr (PIECES == 3 && MB == 2) {
          // The two feature blocks' k16 steps staggered: block 0's products of step kk + 1 run while block 1's
          // of step kk are added, and the other way round (a wait for one commit group, not for both). Each
          // block's t and acc += t keep their order: the bits of the loop below. One block's products are in
          // flight at every wait, so the tensor cores are not left idle through the additions.
          unsigned a[2][4];
          #pragma unroll
          for (int mb = 0; mb < 2; ++mb) {
            wg_load_a(a[mb], a0 + mb * 64 * 128, 0);
            wg_fence_operands(t[mb]);  // the last stage's reads of t stay above the fence (as CUTLASS does)
            wg_fence();
            wg_piece_products_of<BR, N>(t[mb], a[mb], b0);
            wg_commit();
          }
          // Both loops unrolled: the waits' counts are constants, a and t stay in registers.
          #pragma unroll
          for (int kk = 0; kk < KK; ++kk)
            #pragma unroll
            for (int mb = 0; mb < 2; ++mb) {
              if (kk + 1 < KK || mb == 0) wg_wait1(); else wg_wait0();  // this block's step kk is done
              wg_fence_operands(t[mb]);
              #pragma unroll
              for (int i = 0; i < N / 2; ++i) acc[mb][i] += t[mb][i];  // t's rows past N stay 0
              if (kk + 1 < KK) {  // its step kk + 1, behind the other block's step kk (or kk + 1)
                wg_load_a(a[mb], a0 + mb * 64 * 128, kk + 1);
                wg_fence_operands(t[mb]);
                wg_fence();
                wg_piece_products_of<BR, N>(t[mb], a[mb], b0 + 32 * (kk + 1));
                wg_commit();
              }
            }
          mbar_arrive(empty + 8 * b);
        } else if constexpr (PIECES == 3 && MB == 1 && BR >= 32) {
          // One block as two halves of BR / 2 rows staggered as the two blocks above (the same bits: a row's
          // products do not depend on the instruction's width). Both halves read the same W fragment, so it is
          // double-buffered by k16 step: step kk + 1's is loaded while half 1 of step kk still reads step kk's.
          constexpr int H = BR / 2;
          unsigned a[2][4];
          wg_load_a(a[0], a0, 0);
          #pragma unroll
          for (int h = 0; h < 2; ++h) {
            wg_fence_operands(wg_rows<H>(t[0], h * H));
            wg_fence();
            wg_piece_products<BR, H>(wg_rows<H>(t[0], h * H), a[0], b0 + h * H * 128);
            wg_commit();
          }
          // Both loops unrolled: the waits' counts are constants, a and t stay in registers.
          #pragma unroll
          for (int kk = 0; kk < KK; ++kk)
            #pragma unroll
            for (int h = 0; h < 2; ++h) {
              if (kk + 1 < KK || h == 0) wg_wait1(); else wg_wait0();  // this half's step kk is done
              float(&th)[H / 2] = wg_rows<H>(t[0], h * H);
              wg_fence_operands(th);
              #pragma unroll
              for (int i = 0; i < H / 2; ++i) acc[0][h * (H / 2) + i] += th[i];
              if (kk + 1 < KK) {  // its step kk + 1, behind the other half's step kk (or kk + 1)
                if (h == 0) wg_load_a(a[(kk + 1) % 2], a0, kk + 1);
                wg_fence_operands(th);
                wg_fence();
                wg_piece_products<BR, H>(th, a[(kk + 1) % 2], b0 + 32 * (kk + 1) + h * H * 128);
                wg_commit();
              }
            }
          mbar_arrive(empty + 8 * b);
        } else if constexpr (PIECES == 3) {
          #pragma unroll
          for (int kk = 0; kk < WG_BK / 16; ++kk) {
            unsigned a[MB][4];  // W from registers: read from shared memory once for the three pieces
            #pragma unroll
            for (int mb = 0; mb < MB; ++mb) wg_load_a(a[mb], a0 + mb * 64 * 128, kk);
            wg_fence();
            #pragma unroll
            for (int mb = 0; mb < MB; ++mb) wg_piece_products_of<BR, N>(t[mb], a[mb], b0 + 32 * kk);
            wg_commit();
            wg_wait0();
            #pragma unroll
            for (int mb = 0; mb < MB; ++mb) {
              wg_fence_operands(t[mb]);
              #pragma unroll
              for (int i = 0; i < N / 2; ++i) acc[mb][i] += t[mb][i];  // t's rows past N stay 0
            }
          }
          mbar_arrive(empty + 8 * b);
        } else {
          wg_fence();
          #pragma unroll
          for (int kk = 0; kk < WG_BK / 16; ++kk)
            #pragma unroll
            for (int mb = 0; mb < MB; ++mb)
              wg_mma_of<BR, N>(acc[mb], wg_desc(a0 + mb * 64 * 128 + 32 * kk), wg_desc(b0 + 32 * kk));
          wg_commit();
          if (s > 0) {
            asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
            mbar_arrive(empty + 8 * ((s - 1) % S::STAGES));  // step s - 1's products are done
          }
        }
      }
      if constexpr (Slices::SLICED) {
        if constexpr (PIECES == 1) {
          wg_wait0();
          #pragma unroll
          for (int mb = 0; mb < MB; ++mb) wg_fence_operands(acc[mb]);
        }
        slices.fold(acc, slice, end == steps);
      }
    }
    if constexpr (PIECES == 1) {
      wg_wait0();
      #pragma unroll
      for (int mb = 0; mb < MB; ++mb) wg_fence_operands(acc[mb]);
    }
  };
  if constexpr (NARROWS && BR >= 32) {
    if (used <= BR / 4) {
      consume(WgWidth<BR / 4>{});
      return true;
    }
  }
  if constexpr (NARROWS) {  // NARROWS: BR >= 16
    if (used <= BR / 2) {
      consume(WgWidth<BR / 2>{});
      return true;
    }
  }
  if constexpr (NARROWS && BR == 64) {  // three quarters: the one such width with an instruction here (48)
    if (used <= 48) {
      consume(WgWidth<48>{});
      return true;
    }
  }
  consume(WgWidth<BR>{});
  return true;
}

// Where a thread's second accumulator row (r + 8 of a warp's 16) sits among the features: the next one when
// W rows were placed by wg_w_slot or a paired map (WG_PAIRED), 8 further when staged in order (WG_IN_ORDER: the
// dense TMA copies).
#define WG_PAIRED 1
#define WG_IN_ORDER 8

// Calls at(mb, i, row, feature) for this consumer thread's first accumulator rows: acc[mb][i] sits at (row,
// feature) of the block tile, acc[mb][i + 2] at (row, feature + NEXT); with WG_PAIRED the even features.
template <int BR, int MB, int NEXT, class At>
GETP_DEVICE void wg_acc_places(At at) {
  static_assert(NEXT == WG_PAIRED || NEXT == WG_IN_ORDER, "W rows are placed in pairs or in order");
  const int lane = threadIdx.x % 32, q = (threadIdx.x % 128) / 32;
  #pragma unroll
  for (int mb = 0; mb < MB; ++mb) {
    const int feature = ((threadIdx.x / 128 - 1) * MB + mb) * 64 + 16 * q + (NEXT == WG_PAIRED ? 2 : 1) * (lane / 4);
    #pragma unroll
    for (int c = 0; c < BR / 8; ++c) {
      const int row = 8 * c + 2 * (lane % 4);
      at(mb, 4 * c, row, feature);
      at(mb, 4 * c + 1, row + 1, feature);
    }
  }
}

// Calls emit(row, feature, v_feature, v_feature_plus_NEXT) for every row of the tile and every feature of this
// consumer warpgroup's first accumulator rows (row and feature relative to the block tile).
template <int BR, int MB, int NEXT, class Emit>
GETP_DEVICE void wg_epilogue(const float (&acc)[MB][BR / 2], Emit emit) {
  wg_acc_places<BR, MB, NEXT>([&](int mb, int i, int row, int feature) {
    emit(row, feature, acc[mb][i], acc[mb][i + 2]);
  });
}
#endif  // GETP_WGMMA

// ---- dense: c (M, N) = a @ w^T (+ bias) (+ c), a given as pieces (pieces, M, lda) --------------------------
#if GETP_WGMMA
// A consumer's share of the block tile at (m0, n0): c (+ bias) (+ c). NEXT: wg_epilogue's.
template <int BR, int MB, int NEXT>
GETP_DEVICE void wg_dense_store(const float (&acc)[MB][BR / 2], float* __restrict__ c, const float* __restrict__ bias,
                                int m0, int n0, int M, int N, int accumulate) {
  wg_epilogue<BR, MB, NEXT>(acc, [&](int row, int feature, float v0, float v1) {
    const int m = m0 + row, n = n0 + feature;
    if (m >= M || n >= N) return;
    float* out = c + (size_t)m * N + n;
    if (bias != nullptr) v0 += bias[n];
    out[0] = accumulate ? v0 + out[0] : v0;
    if (n + NEXT < N) {
      if (bias != nullptr) v1 += bias[n + NEXT];
      out[NEXT] = accumulate ? v1 + out[NEXT] : v1;
    }
  });
}
#endif

// Grid (ceil(N / (128 MB)), ceil(M / BR)). `slices`: wg_product's (split-K's sliced mode: WgTotalInRegisters).
template <int BR, int PIECES, int MB, class Slices = WgWhole>
GETP_DEVICE void wg_dense(float* __restrict__ c, const unsigned short* __restrict__ ap,
                          const unsigned short* __restrict__ w, const float* __restrict__ bias, int M, int N, int K,
                          int lda, int accumulate, int vec8, Slices slices = WgWhole{1}) {
#if GETP_WGMMA
  const int m0 = blockIdx.y * BR, n0 = blockIdx.x * 128 * MB;
  float acc[MB][BR / 2];
  auto w_row = [&](int n) { return n0 + n < N ? w + (size_t)(n0 + n) * K : nullptr; };
  auto a_row = [&](int r) { return m0 + r < M ? ap + (size_t)(m0 + r) * lda : nullptr; };
  if (!wg_product<BR, PIECES, MB>(acc, w_row, a_row, (size_t)M * lda, ap, K, vec8, slices)) return;
  wg_dense_store<BR, MB, WG_PAIRED>(acc, c, bias, m0, n0, M, N, accumulate);
#endif
}

// The same product with W (N, K) bf16 read through w_map (box 64 x 64 CONS MB rows, WgTmaW): the same bits.
// CONS = 1: the half blocks (gemm_wg_tma_half_*, WG_HALF_THREADS), 64 MB features a block: at few rows twice the
// blocks of the two-consumer tiles, so a product of few feature tiles streams its weights through twice the SMs;
// each feature's sum is the same, so are the bits.
template <int BR, int PIECES, int MB, int CONS = 2, class Slices = WgWhole>
GETP_DEVICE void wg_dense_tma(const WgTensorMap& w_map, float* __restrict__ c, const unsigned short* __restrict__ ap,
                              const float* __restrict__ bias, int M, int N, int K, int lda, int accumulate,
                              Slices slices = WgWhole{1}) {
#if GETP_WGMMA
  const int m0 = blockIdx.y * BR, n0 = blockIdx.x * 64 * CONS * MB;
  float acc[MB][BR / 2];
  auto a_row = [&](int r) { return m0 + r < M ? ap + (size_t)(m0 + r) * lda : nullptr; };
  if (!wg_product<BR, PIECES, MB, CONS>(acc, WgTmaW{&w_map, n0, 0}, a_row, (size_t)M * lda, ap, K, 1, slices))
    return;
  wg_dense_store<BR, MB, WG_IN_ORDER>(acc, c, bias, m0, n0, M, N, accumulate);
#endif
}

// ---- dense split-K (on unless CUPY_GETP_WG_SPLITK=0): the few feature tiles of a product of few rows, cut along K
// Grid (ceil(N / 128), ceil(M / BR), S), S from the product's shape alone (launch/splitk.py: never from M, so a
// row's bits do not depend on the rows beside it). Split s runs wg_product over K stages [s steps / S,
// (s + 1) steps / S) (steps = ceil(K / WG_BK)): the k order inside a split is 0, 16, ... from its start,
// promotion as ever. Its FP32 accumulators go to work (S, M, N); the last of a tile's S blocks to finish (a
// counter per (feature tile, row tile)) sums them in the fixed order acc = p0, acc += p1, ... (whichever block
// that is), adds bias and c as wg_dense_store does, and sets the counter back to 0 for the next launch (a CUDA
// graph's replay needs no memset).

// Split s's first K column (s = S: K). Mirrored by launch/splitk.py's wg_split_bounds.
GETP_DEVICE int wg_split_k(int K, int S, int s) {
  const int k = (s * ((K + WG_BK - 1) / WG_BK) / S) * WG_BK;
  return k < K ? k : K;
}

#if GETP_WGMMA
// A consumer's share of split blockIdx.z's partial, then, in the tile's last block, the fixup (see above).
template <int BR, int MB, int NEXT>
GETP_DEVICE void wg_splitk_store(float (&acc)[MB][BR / 2], float* __restrict__ c, const float* __restrict__ bias,
                                 int m0, int n0, int M, int N, int accumulate, float* __restrict__ work,
                                 unsigned* __restrict__ counters) {
  const int splits = gridDim.z;
  const size_t plane = (size_t)M * N;
  wg_epilogue<BR, MB, NEXT>(acc, [&](int row, int feature, float v0, float v1) {
    const int m = m0 + row, n = n0 + feature;
    if (m >= M || n >= N) return;
    float* out = work + blockIdx.z * plane + (size_t)m * N + n;
    out[0] = v0;
    if (n + NEXT < N) out[NEXT] = v1;
  });
  __threadfence();  // this thread's partial is visible to the whole GPU before the count says so
  __shared__ int last;
  asm volatile("bar.sync 2, 256;\n" ::: "memory");  // the two consumer warpgroups (the producer has left)
  if (threadIdx.x == 128) {
    unsigned* counter = counters + blockIdx.y * gridDim.x + blockIdx.x;
    last = atomicAdd(counter, 1u) == (unsigned)splits - 1;
    if (last) *counter = 0;  // all S have counted: none touches it again in this launch
  }
  asm volatile("bar.sync 2, 256;\n" ::: "memory");
  if (!last) return;
  __threadfence();
  wg_acc_places<BR, MB, NEXT>([&](int mb, int i, int row, int feature) {
    const int m = m0 + row, n = n0 + feature;
    if (m >= M || n >= N) return;
    const float* p = work + (size_t)m * N + n;  // __ldcg: from L2, where the other blocks' partials are
    acc[mb][i] = __ldcg(p);
    for (int s = 1; s < splits; ++s) acc[mb][i] += __ldcg(p + s * plane);
    if (n + NEXT < N) {
      acc[mb][i + 2] = __ldcg(p + NEXT);
      for (int s = 1; s < splits; ++s) acc[mb][i + 2] += __ldcg(p + s * plane + NEXT);
    }
  });
  wg_dense_store<BR, MB, NEXT>(acc, c, bias, m0, n0, M, N, accumulate);
}
#endif

// wg_dense over split blockIdx.z's K columns: W rows and activation rows from its first column on.
template <int BR, int PIECES, int MB>
GETP_DEVICE void wg_dense_splitk(float* __restrict__ c, const unsigned short* __restrict__ ap,
                                 const unsigned short* __restrict__ w, const float* __restrict__ bias, int M, int N,
                                 int K, int lda, int accumulate, int vec8, float* __restrict__ work,
                                 unsigned* __restrict__ counters) {
#if GETP_WGMMA
  const int m0 = blockIdx.y * BR, n0 = blockIdx.x * 128 * MB;
  const int k0 = wg_split_k(K, gridDim.z, blockIdx.z), k1 = wg_split_k(K, gridDim.z, blockIdx.z + 1);
  float acc[MB][BR / 2];
  auto w_row = [&](int n) { return n0 + n < N ? w + (size_t)(n0 + n) * K + k0 : nullptr; };
  auto a_row = [&](int r) { return m0 + r < M ? ap + (size_t)(m0 + r) * lda + k0 : nullptr; };
  if (!wg_product<BR, PIECES, MB>(acc, w_row, a_row, (size_t)M * lda, ap, k1 - k0, vec8)) return;
  wg_splitk_store<BR, MB, WG_PAIRED>(acc, c, bias, m0, n0, M, N, accumulate, work, counters);
#endif
}

// The same with W through w_map (wg_dense_tma's).
template <int BR, int PIECES, int MB>
GETP_DEVICE void wg_dense_tma_splitk(const WgTensorMap& w_map, float* __restrict__ c,
                                     const unsigned short* __restrict__ ap, const float* __restrict__ bias, int M,
                                     int N, int K, int lda, int accumulate, float* __restrict__ work,
                                     unsigned* __restrict__ counters) {
#if GETP_WGMMA
  const int m0 = blockIdx.y * BR, n0 = blockIdx.x * 128 * MB;
  const int k0 = wg_split_k(K, gridDim.z, blockIdx.z), k1 = wg_split_k(K, gridDim.z, blockIdx.z + 1);
  float acc[MB][BR / 2];
  auto a_row = [&](int r) { return m0 + r < M ? ap + (size_t)(m0 + r) * lda + k0 : nullptr; };
  if (!wg_product<BR, PIECES, MB>(acc, WgTmaW{&w_map, n0, k0}, a_row, (size_t)M * lda, ap, k1 - k0, 1)) return;
  wg_splitk_store<BR, MB, WG_IN_ORDER>(acc, c, bias, m0, n0, M, N, accumulate, work, counters);
#endif
}

// ---- dense split-K, sliced mode: the same bits in one block a tile ------------------------------------------
// Where the one-block tiles already give every SM a block (many rows), split mode's S blocks a tile would each
// refill and drain a pipeline for a third of the stages (the 1024-row step: 68.6 -> 75.6 ms, bench/RESULTS.md).
// The sliced kernels run the same S slices one after the other in one block and sum them in the split mode's
// order (wg_product's `slices`): the same bits, so the launch helper may pick a mode by the row count. Grid
// (ceil(N / 128), ceil(M / BR)); `splits` from launch/splitk.py. With 3 pieces BR <= 64: beside t and acc, the
// total of 128 rows would spill (kept in memory instead, it made the 1024-row qkv product 1.65x slower on an
// H100). With 1 piece (no t) acc and the total of 128 rows take 128 registers a thread: BR = 128 too, the height
// the unsplit products of many rows take (a 64-row tile reads as much W a stage for half the products).
// The total in registers (t, acc and the total take 3 BR / 2 registers a thread with 3 pieces).
template <int MB, int N>
struct WgTotalInRegisters {
  static const bool SLICED = true;
  int splits;
  float total[MB][N];
  GETP_DEVICE void fold(float (&acc)[MB][N], int slice, bool last) {
    #pragma unroll
    for (int mb = 0; mb < MB; ++mb)
      #pragma unroll
      for (int i = 0; i < N; ++i) {
        const float sum = slice == 0 ? acc[mb][i] : total[mb][i] + acc[mb][i];
        if (last) {
          acc[mb][i] = sum;
        } else {
          total[mb][i] = sum;
          acc[mb][i] = 0.0f;
        }
      }
  }
};

// ---- grouped MoE: tiles of BR padded positions of one expert (moe_align with block_m = BR) ----------------
#if GETP_WGMMA
// The grouped mlp1's epilogue, by the CONS consumer warpgroups once the producer has left: g = SwiGLU(acc + bias)
// of the block tile split into its pieces in shared memory (the ring, free once every warpgroup's products are
// done: a tile of PIECES x BR rows x 32 CONS MB columns of bf16), then each valid row's columns out in 16-byte chunks
// (zeros from column inter to ldg), pad positions not written. The same values as one 2-byte store an element:
// those cost ~15 % of the kernel's warp samples in integer work (ncu, eighth session) while the tensor cores wait.
template <int BR, int PIECES, int MB, int CONS = 2>
GETP_DEVICE void wg_swiglu_store(const float (&acc)[MB][BR / 2], unsigned short* __restrict__ gp, int padded,
                                 int ldg, const int* __restrict__ pair_of_padded, const float* __restrict__ bias,
                                 int p0, int n0, int inter, float limit) {
  // bf16 a tile row (+ 16 bytes: fewer conflicts); the consumers' threads
  constexpr int COLS = 32 * CONS * MB, STRIDE = COLS + 8, CHUNKS = COLS / 8, THREADS = 128 * CONS;
  static_assert(PIECES * BR * STRIDE * 2 <= WG_SMEM_BYTES, "the output tile fits in the ring");
  unsigned short* tile = (unsigned short*)wg_smem;  // [PIECES][BR][STRIDE]
  const int N = 2 * inter, c0 = n0 / 2;  // c0: the block's first output column
  asm volatile("bar.sync 2, %0;\n" ::"n"(THREADS) : "memory");  // every consumer warpgroup is done with the ring
  wg_epilogue<BR, MB, WG_PAIRED>(acc, [&](int row, int feature, float v0, float v1) {
    const int n = n0 + feature;  // n even, N even: n + 1 < N whenever n < N
    if (n >= N) return;
    unsigned piece[3];
    tc_split<PIECES>(swiglu_f32(v0 + bias[n], v1 + bias[n + 1], limit), piece);
    #pragma unroll
    for (int q = 0; q < PIECES; ++q) tile[(q * BR + row) * STRIDE + feature / 2] = (unsigned short)piece[q];
  });
  asm volatile("bar.sync 2, %0;\n" ::"n"(THREADS) : "memory");
  const size_t plane = (size_t)padded * ldg;
  for (int i = threadIdx.x - 128; i < PIECES * BR * CHUNKS; i += THREADS) {  // consecutive threads: a row's chunks
    const int q = i / (BR * CHUNKS), row = (i / CHUNKS) % BR, col = c0 + 8 * (i % CHUNKS);
    if (col >= ldg || pair_of_padded[p0 + row] < 0) continue;
    const unsigned short* src = tile + (q * BR + row) * STRIDE + (col - c0);
    uint4 v;
    if (col + 8 <= inter) {
      v = *(const uint4*)src;
    } else {  // the row's last columns, then zeros to ldg
      unsigned h[8];
      #pragma unroll
      for (int j = 0; j < 8; ++j) h[j] = col + j < inter ? src[j] : 0u;
      v = make_uint4(h[0] | h[1] << 16, h[2] | h[3] << 16, h[4] | h[5] << 16, h[6] | h[7] << 16);
    }
    *(uint4*)(gp + q * plane + (size_t)(p0 + row) * ldg + col) = v;
  }
}
#endif

// The grouped kernels' W: expert e's rows n0 .. of its N (each K long), as wg_product takes them: a row function of
// Bf16Experts or Mxfp4Experts (zeros past N), or, for WgPairedMap (bf16 experts by TMA: the experts as (E N, K)
// rows of a paired map), the box from global row e N + n0 (past N the next expert's rows, zeros past the last:
// the epilogues drop features n >= N either way).
struct WgPairedMap {
  const WgTensorMap* map;
};
#if GETP_WGMMA
template <class W>
GETP_DEVICE auto wg_expert_rows(const W& w, int e, int N, int n0, int K) {
  return [=](int n) { return n0 + n < N ? w.row((size_t)e * N + n0 + n, K) : W::none(); };
}
GETP_DEVICE WgTmaW wg_expert_rows(const WgPairedMap& w, int e, int N, int n0, int) {
  return WgTmaW{w.map, e * N + n0, 0, true};
}
#endif

// mlp1 + SwiGLU, the contract of gemm_tc_grouped_swiglu (gemm_tc.hip). Grid (ceil(2I / (64 CONS MB)), P / BR).
// W: Bf16Experts, Mxfp4Experts (common.h) or WgPairedMap, the same products of the same BF16 values. CONS = 3
// (the wide blocks, WgPairedMap only): 192 MB features a block, each computed as the two-consumer blocks do.
template <int BR, int PIECES, int MB, int CONS = 2, class W>
GETP_DEVICE void wg_grouped_swiglu(unsigned short* __restrict__ gp, int padded, int ldg,
                                   const unsigned short* __restrict__ ap, int rows, int lda,
                                   const int* __restrict__ pair_of_padded, const int* __restrict__ tile_expert, W w1,
                                   const float* __restrict__ b1, int hidden, int inter, int experts_per_token,
                                   float limit, int vec8) {
#if GETP_WGMMA
  const int e = tile_expert[blockIdx.y];
  if (e < 0) return;
  const int p0 = blockIdx.y * BR, n0 = blockIdx.x * 64 * CONS * MB, N = 2 * inter;
  float acc[MB][BR / 2];
  const auto w_row = wg_expert_rows(w1, e, N, n0, hidden);
  auto a_row = [&](int r) {
    const int pair = pair_of_padded[p0 + r];
    return pair >= 0 ? ap + (size_t)(pair / experts_per_token) * lda : nullptr;
  };
  if (!wg_product<BR, PIECES, MB, CONS>(acc, w_row, a_row, (size_t)rows * lda, ap, hidden, vec8)) return;
  wg_swiglu_store<BR, PIECES, MB, CONS>(acc, gp, padded, ldg, pair_of_padded, b1 + (size_t)e * N, p0, n0, inter,
                                        limit);
#endif
}

// mlp2, the contract of gemm_tc_grouped (gemm_tc.hip). Grid (ceil(H / (64 CONS MB)), P / BR). CONS = 3 (the wide
// blocks, WgPairedMap only): 192 MB features a block, as for mlp1.
template <int BR, int PIECES, int MB, int CONS = 2, class W>
GETP_DEVICE void wg_grouped(float* __restrict__ y, const unsigned short* __restrict__ gp, int padded, int lda,
                            const int* __restrict__ pair_of_padded, const int* __restrict__ tile_expert, W w2,
                            const float* __restrict__ b2, int hidden, int inter, int vec8) {
#if GETP_WGMMA
  const int e = tile_expert[blockIdx.y];
  if (e < 0) return;
  const int p0 = blockIdx.y * BR, n0 = blockIdx.x * 64 * CONS * MB;
  float acc[MB][BR / 2];
  const auto w_row = wg_expert_rows(w2, e, hidden, n0, inter);
  auto a_row = [&](int r) { return pair_of_padded[p0 + r] >= 0 ? gp + (size_t)(p0 + r) * lda : nullptr; };
  if (!wg_product<BR, PIECES, MB, CONS>(acc, w_row, a_row, (size_t)padded * lda, gp, inter, vec8)) return;
  const float* bias = b2 + (size_t)e * hidden;
  wg_epilogue<BR, MB, WG_PAIRED>(acc, [&](int row, int feature, float v0, float v1) {
    const int p = p0 + row, n = n0 + feature;
    if (n >= hidden || pair_of_padded[p] < 0) return;
    float* out = y + (size_t)p * hidden + n;
    out[0] = v0 + bias[n];
    if (n + 1 < hidden) out[1] = v1 + bias[n + 1];
  });
#endif
}

// One kernel per (row-tile height BR, pieces P, 64-feature blocks per consumer MB): gemm_wg_r{BR}_p{P}_b{MB},
// gemm_wg_grouped_swiglu_r..., gemm_wg_grouped_r... (bf16 experts) and gemm_wg_grouped_swiglu_mxfp4w_r...,
// gemm_wg_grouped_mxfp4w_r... (MXFP4 experts: codes (E, N, G, 16), scales (E, N, G)); every dense tile also as
// gemm_wg_tma_r{BR}_p{P}_b{MB} (W through a tensor map: WgTmaW).
// With pieces = 3, t and acc take BR MB registers a thread: BR = 128 only with MB = 1 (and the grouped kernels
// with 128 rows, whose epilogue would spill, only with MB = 1).
#define WG_DENSE_KERNEL(BR, P, MB)                                                                                  \
  extern "C" __global__ void __launch_bounds__(WG_THREADS, 1) gemm_wg_r##BR##_p##P##_b##MB(                      \
      float* __restrict__ c, const unsigned short* __restrict__ ap, const unsigned short* __restrict__ w,           \
      const float* __restrict__ bias, int M, int N, int K, int lda, int accumulate, int vec8) {                     \
    grid_begin();                                                                                                   \
    wg_dense<BR, P, MB>(c, ap, w, bias, M, N, K, lda, accumulate, vec8);                                             \
  }
#define WG_DENSE_TMA_KERNEL(BR, P, MB)                                                                              \
  extern "C" __global__ void __launch_bounds__(WG_THREADS, 1) gemm_wg_tma_r##BR##_p##P##_b##MB(                  \
      const WG_GRID_CONSTANT WgTensorMap w_map, float* __restrict__ c, const unsigned short* __restrict__ ap,       \
      const float* __restrict__ bias, int M, int N, int K, int lda, int accumulate) {                               \
    wg_dense_tma<BR, P, MB>(w_map, c, ap, bias, M, N, K, lda, accumulate);                                           \
  }
// gemm_wg_tma_half_r{BR}_p{P}_b1: the half blocks (one consumer warpgroup, 64 features a block).
#define WG_DENSE_TMA_HALF_KERNEL(BR, P)                                                                             \
  extern "C" __global__ void __launch_bounds__(WG_HALF_THREADS, 1) gemm_wg_tma_half_r##BR##_p##P##_b1(           \
      const WG_GRID_CONSTANT WgTensorMap w_map, float* __restrict__ c, const unsigned short* __restrict__ ap,       \
      const float* __restrict__ bias, int M, int N, int K, int lda, int accumulate) {                               \
    wg_dense_tma<BR, P, 1, 1>(w_map, c, ap, bias, M, N, K, lda, accumulate);                                         \
  }
#define WG_GROUPED_KERNELS_OF(BR, P, MB, SUFFIX, W_PARAMS, W_VALUE)                                              \
  extern "C" __global__ void __launch_bounds__(WG_THREADS, 1) gemm_wg_grouped_swiglu##SUFFIX##_r##BR##_p##P##_b##MB( \
      unsigned short* __restrict__ gp, int padded, int ldg, const unsigned short* __restrict__ ap, int rows,       \
      int lda, const int* __restrict__ pair_of_padded, const int* __restrict__ tile_expert, W_PARAMS,              \
      const float* __restrict__ b1, int hidden, int inter, int experts_per_token, float limit, int vec8) {         \
    grid_begin();                                                                                                  \
    wg_grouped_swiglu<BR, P, MB>(gp, padded, ldg, ap, rows, lda, pair_of_padded, tile_expert, W_VALUE, b1, hidden,   \
                                 inter, experts_per_token, limit, vec8);                                            \
  }                                                                                                                 \
  extern "C" __global__ void __launch_bounds__(WG_THREADS, 1) gemm_wg_grouped##SUFFIX##_r##BR##_p##P##_b##MB(     \
      float* __restrict__ y, const unsigned short* __restrict__ gp, int padded, int lda,                           \
      const int* __restrict__ pair_of_padded, const int* __restrict__ tile_expert, W_PARAMS,                        \
      const float* __restrict__ b2, int hidden, int inter, int vec8) {                                              \
    grid_begin();                                                                                                   \
    wg_grouped<BR, P, MB>(y, gp, padded, lda, pair_of_padded, tile_expert, W_VALUE, b2, hidden, inter, vec8);         \
  }
// gemm_wg_tma_grouped_swiglu_r{BR}_p{P}_b{MB}, gemm_wg_tma_grouped_r...: bf16 experts through a paired map (boxes
// of 128 MB rows; the wide kernels' below, 192). Their tile's expert comes from moe_align, the kernel ahead: no
// weights before grid_begin.
#define WG_GROUPED_TMA_KERNELS(BR, P, MB)                                                                           \
  extern "C" __global__ void __launch_bounds__(WG_THREADS, 1) gemm_wg_tma_grouped_swiglu_r##BR##_p##P##_b##MB(   \
      const WG_GRID_CONSTANT WgTensorMap w_map, unsigned short* __restrict__ gp, int padded, int ldg,              \
      const unsigned short* __restrict__ ap, int rows, int lda, const int* __restrict__ pair_of_padded,            \
      const int* __restrict__ tile_expert, const float* __restrict__ b1, int hidden, int inter,                    \
      int experts_per_token, float limit) {                                                                         \
    grid_begin();                                                                                                   \
    wg_grouped_swiglu<BR, P, MB>(gp, padded, ldg, ap, rows, lda, pair_of_padded, tile_expert, WgPairedMap{&w_map},  \
                                 b1, hidden, inter, experts_per_token, limit, 1);                                   \
  }                                                                                                                 \
  extern "C" __global__ void __launch_bounds__(WG_THREADS, 1) gemm_wg_tma_grouped_r##BR##_p##P##_b##MB(          \
      const WG_GRID_CONSTANT WgTensorMap w_map, float* __restrict__ y, const unsigned short* __restrict__ gp,       \
      int padded, int lda, const int* __restrict__ pair_of_padded, const int* __restrict__ tile_expert,            \
      const float* __restrict__ b2, int hidden, int inter) {                                                        \
    grid_begin();                                                                                                   \
    wg_grouped<BR, P, MB>(y, gp, padded, lda, pair_of_padded, tile_expert, WgPairedMap{&w_map}, b2, hidden, inter, 1); \
  }
// gemm_wg_tma_grouped_swiglu_wide_r{BR}_p{P}_b{MB}, gemm_wg_tma_grouped_wide_r...: the wide blocks (three consumer
// warpgroups, 192 MB features a block). At one row (8-row tiles, MB = 1: mlp1 only) mlp1's 4 experts x 30 tiles fill
// 120 of an H100's 132 SMs, where 128-feature tiles are two waves (180 blocks) and 256-feature ones leave 40 idle
// (92). Tall (many rows: 64-row exact tiles of two blocks, WgRegisters, and 128-row 1-piece tiles of one): each
// tile's activation rows are read by a third fewer blocks than in 256- (128-) feature tiles, where the products of
// many rows are bound by L2's throughput (ncu, twenty-seventh session).
#define WG_GROUPED_TMA_WIDE_SWIGLU_KERNEL(BR, P, MB)                                                              \
  extern "C" __global__ void __launch_bounds__(WG_WIDE_THREADS, 1)                                                \
      gemm_wg_tma_grouped_swiglu_wide_r##BR##_p##P##_b##MB(                                                         \
      const WG_GRID_CONSTANT WgTensorMap w_map, unsigned short* __restrict__ gp, int padded, int ldg,              \
      const unsigned short* __restrict__ ap, int rows, int lda, const int* __restrict__ pair_of_padded,            \
      const int* __restrict__ tile_expert, const float* __restrict__ b1, int hidden, int inter,                    \
      int experts_per_token, float limit) {                                                                         \
    grid_begin();                                                                                                   \
    wg_grouped_swiglu<BR, P, MB, 3>(gp, padded, ldg, ap, rows, lda, pair_of_padded, tile_expert, WgPairedMap{&w_map}, \
                                    b1, hidden, inter, experts_per_token, limit, 1);                                \
  }
#define WG_GROUPED_TMA_WIDE_KERNELS(BR, P, MB)                                                                     \
  WG_GROUPED_TMA_WIDE_SWIGLU_KERNEL(BR, P, MB)                                                                      \
  extern "C" __global__ void __launch_bounds__(WG_WIDE_THREADS, 1) gemm_wg_tma_grouped_wide_r##BR##_p##P##_b##MB( \
      const WG_GRID_CONSTANT WgTensorMap w_map, float* __restrict__ y, const unsigned short* __restrict__ gp,       \
      int padded, int lda, const int* __restrict__ pair_of_padded, const int* __restrict__ tile_expert,            \
      const float* __restrict__ b2, int hidden, int inter) {                                                        \
    grid_begin();                                                                                                   \
    wg_grouped<BR, P, MB, 3>(y, gp, padded, lda, pair_of_padded, tile_expert, WgPairedMap{&w_map}, b2, hidden, inter, \
                             1);                                                                                    \
  }
#define WG_COMMA ,
// Every grouped tile in three kinds: bf16 experts by cp.async, MXFP4 experts, bf16 experts by TMA.
#define WG_GROUPED_KERNELS(BR, P, MB)                                                                               \
  WG_GROUPED_KERNELS_OF(BR, P, MB, , const unsigned short* __restrict__ w, Bf16Experts{w})                         \
  WG_GROUPED_KERNELS_OF(BR, P, MB, _mxfp4w,                                                                         \
                        const unsigned char* __restrict__ codes WG_COMMA const unsigned char* __restrict__ scales,  \
                        Mxfp4Experts{codes WG_COMMA scales})                                                        \
  WG_GROUPED_TMA_KERNELS(BR, P, MB)
// Split-K twins of the one-block (MB = 1) dense tiles: gemm_wg_splitk_r{BR}_p{P}_b1, gemm_wg_tma_splitk_r..._b1.
#define WG_SPLITK_KERNELS(BR, P)                                                                                    \
  extern "C" __global__ void __launch_bounds__(WG_THREADS, 1) gemm_wg_splitk_r##BR##_p##P##_b1(                  \
      float* __restrict__ c, const unsigned short* __restrict__ ap, const unsigned short* __restrict__ w,           \
      const float* __restrict__ bias, int M, int N, int K, int lda, int accumulate, int vec8,                      \
      float* __restrict__ work, unsigned* __restrict__ counters) {                                                  \
    grid_begin();                                                                                                   \
    wg_dense_splitk<BR, P, 1>(c, ap, w, bias, M, N, K, lda, accumulate, vec8, work, counters);                      \
  }                                                                                                                 \
  extern "C" __global__ void __launch_bounds__(WG_THREADS, 1) gemm_wg_tma_splitk_r##BR##_p##P##_b1(              \
      const WG_GRID_CONSTANT WgTensorMap w_map, float* __restrict__ c, const unsigned short* __restrict__ ap,       \
      const float* __restrict__ bias, int M, int N, int K, int lda, int accumulate, float* __restrict__ work,      \
      unsigned* __restrict__ counters) {                                                                            \
    wg_dense_tma_splitk<BR, P, 1>(w_map, c, ap, bias, M, N, K, lda, accumulate, work, counters);                    \
  }
// Their sliced mode: gemm_wg_sliced_r{BR}_p{P}_b1, gemm_wg_tma_sliced_r..._b1.
#define WG_SLICED_KERNELS(BR, P)                                                                                    \
  extern "C" __global__ void __launch_bounds__(WG_THREADS, 1) gemm_wg_sliced_r##BR##_p##P##_b1(                  \
      float* __restrict__ c, const unsigned short* __restrict__ ap, const unsigned short* __restrict__ w,           \
      const float* __restrict__ bias, int M, int N, int K, int lda, int accumulate, int vec8, int splits) {         \
    grid_begin();                                                                                                   \
    wg_dense<BR, P, 1>(c, ap, w, bias, M, N, K, lda, accumulate, vec8, WgTotalInRegisters<1, BR / 2>{splits});      \
  }                                                                                                                 \
  extern "C" __global__ void __launch_bounds__(WG_THREADS, 1) gemm_wg_tma_sliced_r##BR##_p##P##_b1(              \
      const WG_GRID_CONSTANT WgTensorMap w_map, float* __restrict__ c, const unsigned short* __restrict__ ap,       \
      const float* __restrict__ bias, int M, int N, int K, int lda, int accumulate, int splits) {                   \
    wg_dense_tma<BR, P, 1>(w_map, c, ap, bias, M, N, K, lda, accumulate, WgTotalInRegisters<1, BR / 2>{splits});    \
  }
#define WG_DENSE_KERNELS(BR, P, MB) WG_DENSE_KERNEL(BR, P, MB) WG_DENSE_TMA_KERNEL(BR, P, MB)
#define WG_KERNELS(BR, P)                                                                                           \
  WG_DENSE_KERNELS(BR, P, 1) WG_DENSE_KERNELS(BR, P, 2) WG_GROUPED_KERNELS(BR, P, 1) WG_GROUPED_KERNELS(BR, P, 2)
#if WG_PART_HAS(0)
WG_KERNELS(8, 3)
WG_KERNELS(16, 3)
#endif
#if WG_PART_HAS(1)
WG_KERNELS(32, 3)
WG_KERNELS(8, 1)
#endif
#if WG_PART_HAS(2)
WG_KERNELS(64, 3)
#endif
#if WG_PART_HAS(3)
WG_KERNELS(16, 1)
WG_KERNELS(32, 1)
#endif
#if WG_PART_HAS(4)
WG_KERNELS(64, 1)
WG_DENSE_TMA_HALF_KERNEL(8, 3)
WG_DENSE_TMA_HALF_KERNEL(16, 3)
WG_DENSE_TMA_HALF_KERNEL(8, 1)
WG_DENSE_TMA_HALF_KERNEL(16, 1)
#endif
#if WG_PART_HAS(5)
WG_DENSE_KERNELS(128, 3, 1)
WG_DENSE_KERNELS(128, 1, 1)
WG_DENSE_KERNELS(128, 1, 2)
WG_GROUPED_KERNELS(128, 3, 1)
WG_GROUPED_KERNELS(128, 1, 1)
#endif
#if WG_PART_HAS(6)
WG_GROUPED_TMA_WIDE_SWIGLU_KERNEL(8, 3, 1)
WG_GROUPED_TMA_WIDE_SWIGLU_KERNEL(8, 1, 1)
WG_GROUPED_TMA_WIDE_KERNELS(64, 3, 2)
WG_GROUPED_TMA_WIDE_KERNELS(128, 1, 1)
WG_SLICED_KERNELS(64, 3)
WG_SLICED_KERNELS(64, 1)
WG_SLICED_KERNELS(128, 1)
WG_SPLITK_KERNELS(8, 1)
WG_SPLITK_KERNELS(16, 1)
WG_SPLITK_KERNELS(32, 1)
WG_SPLITK_KERNELS(64, 1)
WG_SPLITK_KERNELS(128, 1)
#endif
#if WG_PART_HAS(7)
WG_SPLITK_KERNELS(8, 3)
WG_SPLITK_KERNELS(16, 3)
WG_SPLITK_KERNELS(32, 3)
WG_SPLITK_KERNELS(64, 3)
WG_SPLITK_KERNELS(128, 3)
#endif
