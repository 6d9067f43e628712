"""Numbers shared by the launch helpers and the kernels, defined once.

`KERNEL_CONSTANTS` is emitted as `#define NAME value` at the top of every assembled kernel source
(`kernels.assemble_source`) and given as `-D NAME=value` to the standalone builds of
`portability.py`; no kernel file defines these names itself (tests/test_kernel_contracts.py).
"""

from __future__ import annotations

from ..checkpoint.safetensors import MXFP4_BLOCK  # the format's block: defined with its decoder

BLOCK_SIZE = 256  # threads per block of every kernel (WARPS_PER_BLOCK = BLOCK_SIZE / WARP_SIZE)

# attention.hip
ATTN_MAX_GROUP = 16  # query heads per kv head attn_rows_partial handles (its largest variant)
ATTN_MAX_HEAD_DIM = 128  # head_dim of attn_rows_partial's largest variant (host only: the variants name it)

# moe.hip
MOE_MAX_K = 16  # experts per token moe_mlp2_accumulate_bf16w takes
MOE_ALIGN_THREADS = 1024  # moe_align runs as one block of this many threads
MOE_MAX_EXPERTS = 256  # experts moe_align's and router_rows's shared arrays hold
ROUTER_THREADS = 256  # router_rows: a block of at most this many threads ...
ROUTER_EXPERTS = 4  # ... a warp this many experts a pass (one round of loads: 32 experts, 8 warps) ...
ROUTER_MAX_ROWS = 8  # ... and at most this many rows a block, every row with the weights loaded once ...
ROUTER_STAGED = 3072  # ... each row of t through shared memory where it has at most this many values

# gemm.hip: the two kernel shapes' tiles; their row counts are the block_m values moe_align groups by
SKINNY_BM = 8  # activation rows per skinny tile
TILE_BM, TILE_BN = 64, 128  # rows and columns of a tiled block tile

# gemm_tc.hip
TC_BLOCK_M = 64  # rows per tile of the grouped tensor-core kernels: their block_m for moe_align
TC_BLOCK_N = 128  # output columns per block of the grouped tensor-core kernels
TC_BK = 32  # K per pipeline step (two k16 tensor-core steps)
TC_LDS = TC_BK + 8  # shared-memory row in bf16: 80 bytes, conflict-free ldmatrix
TC_STAGES_CUDA, TC_STAGES_HIP = 4, 2  # shared-memory pipeline stages (HIP: 64 KiB of LDS on gfx90a)

# gemm_wgmma.hip
WG_THREADS = 384  # a producer warpgroup and two consumer warpgroups per block
WG_HALF_THREADS = 256  # the half blocks (gemm_wg_tma_half_*): a producer warpgroup and one consumer warpgroup
WG_WIDE_THREADS = 512  # the wide blocks (gemm_wg_tma_grouped_swiglu_wide_*): a producer and three consumers
WG_SMEM_BYTES = 225 * 1024  # dynamic shared memory of every block: sizes its ring of stages

KERNEL_CONSTANTS = {
    "BLOCK_SIZE": BLOCK_SIZE,
    "ATTN_MAX_GROUP": ATTN_MAX_GROUP,
    "MXFP4_BLOCK": MXFP4_BLOCK,
    "MOE_MAX_K": MOE_MAX_K,
    "MOE_ALIGN_THREADS": MOE_ALIGN_THREADS,
    "MOE_MAX_EXPERTS": MOE_MAX_EXPERTS,
    "ROUTER_THREADS": ROUTER_THREADS,
    "ROUTER_EXPERTS": ROUTER_EXPERTS,
    "ROUTER_MAX_ROWS": ROUTER_MAX_ROWS,
    "ROUTER_STAGED": ROUTER_STAGED,
    "SKINNY_BM": SKINNY_BM,
    "TILE_BM": TILE_BM,
    "TILE_BN": TILE_BN,
    "TC_BLOCK_M": TC_BLOCK_M,
    "TC_BLOCK_N": TC_BLOCK_N,
    "TC_BK": TC_BK,
    "TC_LDS": TC_LDS,
    "TC_STAGES_CUDA": TC_STAGES_CUDA,
    "TC_STAGES_HIP": TC_STAGES_HIP,
    "WG_THREADS": WG_THREADS,
    "WG_HALF_THREADS": WG_HALF_THREADS,
    "WG_WIDE_THREADS": WG_WIDE_THREADS,
    "WG_SMEM_BYTES": WG_SMEM_BYTES,
}


def kernel_defines() -> str:
    """The #define lines every assembled kernel source starts with (after WARP_SIZE)."""
    return "".join(f"#define {name} {value}\n" for name, value in KERNEL_CONSTANTS.items())
