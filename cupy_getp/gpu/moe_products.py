"""The grouped expert products of a MoE step, shared by the batched engine (gpu/batch.py, every expert of the
layer, pairs (row, top-k slot)) and expert parallelism (gpu/expert_parallel.py, one rank's slice of the
experts, pairs received from every rank): group the pairs by expert (moe_align), mlp1 + SwiGLU, mlp2.

A pair's output depends only on its activation row and its expert's weights, never on which other pairs
share the product (the grouped kernels are row-count and tile-height invariant: tests/test_gpu_gemm_wgmma.py),
which is what lets expert parallelism split the pairs over ranks and still give one GPU's bits.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Grouping:
    """Where the products of one step's pairs go: moe_align's outputs over P padded positions, mlp1's output
    g (FP32 on CUDA cores, its BF16 pieces on tensor cores) and mlp2's output y at those positions."""

    block_m: int  # moe_align's tile height
    tensor_cores: bool
    pair_of_padded: object  # (P,) i32
    padded_of_pair: object  # (pairs,) i32
    tile_expert: object  # (P / block_m,) i32
    g: object  # (P, I) f32, CUDA cores
    g_pieces: object  # (pieces, P, lda_I) bf16, tensor cores (None otherwise)
    y: object  # (P, H) f32
    # Rows whose pairs are not placed: those whose slot (row_slot (rows,) i32) is spare_slot, a step's pad rows
    # (their results are never read; they would all lengthen the same experts' tiles). None: every row's.
    row_slot: object = None
    spare_slot: int = -1


@dataclass(frozen=True)
class ExpertWeights:
    """The MoE matrices of one layer's experts (all of them, or one rank's slice [lo, hi))."""

    w_mlp1: object  # (E', 2I, H) bf16 bits or an Mxfp4Matrix
    b_mlp1: object  # (E', 2I) f32
    w_mlp2: object  # (E', H, I)
    b_mlp2: object  # (E', H)

    @classmethod
    def of(cls, layer, lo: int = 0, hi: int | None = None) -> ExpertWeights:
        """Experts [lo, hi) of a layer's views (`DeviceWeights.layer(l)`): views, nothing copied (all of them:
        the layer's own views, no new slice objects in the step)."""
        if lo == 0 and hi is None:
            return cls(layer.w_mlp1, layer.b_mlp1, layer.w_mlp2, layer.b_mlp2)
        part = slice(lo, hi)
        return cls(layer.w_mlp1[part], layer.b_mlp1[part], layer.w_mlp2[part], layer.b_mlp2[part])

    @property
    def n_experts(self) -> int:
        return self.b_mlp1.shape[0]


def expert_products(kernels, grouping: Grouping, experts, a, a_pieces, w: ExpertWeights, top_k: int,
                    limit: float) -> None:
    """y at pair p's padded position = w_mlp2[e] @ SwiGLU(w_mlp1[e] @ a[p // top_k] + b_mlp1[e]) + b_mlp2[e],
    e = experts.flat[p] (ids in [0, E'), E' = w's experts; other ids, and the grouping's pad rows, are not
    placed). experts (rows, top_k); a (rows, H) f32, or on tensor cores its pieces a_pieces."""
    G = grouping
    kernels.moe_align(G.pair_of_padded, G.padded_of_pair, G.tile_expert, experts, G.block_m, w.n_experts,
                      G.row_slot, G.spare_slot)
    if G.tensor_cores:
        kernels.gemm_tc_grouped_swiglu(G.g_pieces, a_pieces, G.pair_of_padded, G.tile_expert, w.w_mlp1, w.b_mlp1,
                                       top_k, limit)
        kernels.gemm_tc_grouped(G.y, G.g_pieces, G.pair_of_padded, G.tile_expert, w.w_mlp2, w.b_mlp2,
                                pairs=experts.size)
    else:
        kernels.gemm_grouped_swiglu(G.g, a, G.pair_of_padded, G.tile_expert, w.w_mlp1, w.b_mlp1, top_k, limit,
                                    G.block_m)
        kernels.gemm_grouped(G.y, G.g, G.pair_of_padded, G.tile_expert, w.w_mlp2, w.b_mlp2, G.block_m)
