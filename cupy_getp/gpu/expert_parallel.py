"""Expert parallelism: G ranks, each holding the dense weights and experts [q E/G, (q + 1) E/G) of every
layer, each running attention for its own rows; per layer the MoE's (row, slot) pairs go to the ranks that
hold their experts and the outputs come back (gpu/expert_plan.py has the plan, gpu/comm.py the
communicators). The grouped products are gpu/moe_products.py's, as on one GPU; the combine is one GPU's
`moe_combine` in slot order over the returned outputs, so a row's MoE output is one GPU's bits.

Exchange: an all-to-all of pairs each way (activation rows out, expert outputs back), planned on the host
from the all-gathered expert ids of the layer (one synchronisation per layer: these steps run eagerly, not
as CUDA graphs). docs/multi-gpu.md compares it with an all-gather of rows, in bytes per step.
"""

from __future__ import annotations

import numpy as np

from .batch import RowModel, RowView
from .batch_shape import BLOCK_MS
from .expert_plan import ExchangePlan, check_divisible, plan_exchange, rank_experts
from .launch.gemm_tc import pieces_lda
from .launch.moe import moe_padded_pairs
from .moe_products import ExpertWeights, Grouping, expert_products


class ShardRowModel(RowModel):
    """A rank's `RowModel`: its products take the kernels one GPU takes for the whole step (G times its
    rows), so that a row's bits do not depend on how the step is split (their bits do not depend on the
    row count within a path, nor on the tile height)."""

    def __init__(self, n_ranks: int, *args):
        self.n_ranks = n_ranks
        super().__init__(*args)

    def products(self, R: int) -> tuple[int, bool]:
        return super().products(self.n_ranks * R)

    def moe_block(self, l: int, v: RowView, trace=None) -> None:
        raise RuntimeError("a rank's MoE runs through ExpertParallel.moe_layer: it holds a slice of the experts")


def exchange_sizes(config, max_rows: int, n_ranks: int) -> tuple[int, int, int]:
    """A rank's exchange buffers in pairs: (its own pairs out, every rank's pairs in, those padded to the
    largest tile of any expert's grouping)."""
    own = max_rows * config.experts_per_token
    capacity = n_ranks * own
    padded = max(moe_padded_pairs(capacity, check_divisible(config.n_experts, n_ranks), bm) for bm in BLOCK_MS)
    return own, capacity, padded


class ExpertShard:
    """Rank q of G: its `RowModel` (its rows, step buffers and KV cache), its experts of every layer, and
    the exchange buffers: at most max_rows k pairs out, G max_rows k in (every rank's pairs on its experts).
    `model_args`: RowModel's (config, weights, kernels, shape, precision)."""

    def __init__(self, rank: int, n_ranks: int, *model_args):
        import cupy

        c = model_args[0]
        lo, hi = rank_experts(c.n_experts, rank, n_ranks)
        model = ShardRowModel(n_ranks, *model_args)
        self.rank, self.model, self.per_rank = rank, model, hi - lo
        self.experts = [ExpertWeights.of(model.w.layer(l), *self._held(model.w, lo, hi))
                        for l in range(c.n_layers)]
        own, capacity, P = exchange_sizes(c, model.shape.max_rows, n_ranks)
        f32, i32, H = np.float32, np.int32, c.hidden_dim
        self.gathered_experts = cupy.zeros(capacity, i32)  # every rank's expert ids, rank order
        self.dispatch_rows = cupy.zeros(own, i32)  # the row of each pair sent, destination order
        self.sent = cupy.zeros((own, H), f32)  # activation rows out
        self.returned = cupy.zeros((own, H), f32)  # their outputs back, in the order of the ranks that made them
        self.return_positions = cupy.zeros(own, i32)  # moe_combine's padded_of_pair over `returned`
        self.received = cupy.zeros((capacity, H), f32)  # pairs' activation rows in, source order
        self.received_experts = cupy.zeros((capacity, 1), i32)  # their local expert ids
        self.outputs = cupy.zeros((capacity, H), f32)  # their outputs, in the order received
        self.pair_of_padded, self.padded_of_pair = cupy.zeros(P, i32), cupy.zeros(capacity, i32)
        self.tile_expert = cupy.zeros(P // min(BLOCK_MS), i32)
        self.g, self.y = cupy.zeros((P, c.intermediate_dim), f32), cupy.zeros((P, H), f32)
        pieces = 0 if model.precision == "fp32" else model.pieces
        self.pieces_received = cupy.zeros(pieces * capacity * pieces_lda(H), np.uint16)
        self.pieces_g = cupy.zeros(pieces * P * pieces_lda(c.intermediate_dim), np.uint16)

    def _held(self, w, lo: int, hi: int) -> tuple[int, int]:
        """Where experts [lo, hi) lie in the weights: weights of every expert (`DeviceWeights`' default, or
        one device's weights shared by in-process ranks), or of these only (`expert_range`)."""
        held = getattr(w, "expert_range", (0, self.model.config.n_experts))
        if held == (lo, hi):
            return 0, hi - lo
        if held == (0, self.model.config.n_experts):
            return lo, hi
        raise ValueError(f"rank {self.rank} needs experts {lo}..{hi}; its weights hold experts {held[0]}..{held[1]}")

    def grouping(self, n: int, block_m: int, tensor_cores: bool) -> Grouping:
        """The first n received pairs' grouping buffers, cut to their padded size."""
        P = moe_padded_pairs(n, self.per_rank, block_m)
        g_pieces = self.model.pieces_view(self.pieces_g, P, self.model.config.intermediate_dim) \
            if tensor_cores else None
        return Grouping(block_m, tensor_cores, self.pair_of_padded[:P], self.padded_of_pair[:n],
                        self.tile_expert[: P // block_m], self.g[:P], g_pieces, self.y[:P])

    def products(self, l: int, n: int, block_m: int, tensor_cores: bool) -> None:
        """The grouped products of the n received pairs (one pair a row: top_k 1), outputs in receive order."""
        model, kernels = self.model, self.model.kernels
        a = self.received[:n]
        a_pieces = None
        if tensor_cores:  # the same pieces as the sender's split of these rows: splitting is per element
            a_pieces = model.pieces_view(self.pieces_received, n, model.config.hidden_dim)
            kernels.split_pieces(a_pieces, a)
        grouping = self.grouping(n, block_m, tensor_cores)
        expert_products(kernels, grouping, self.received_experts[:n], a, a_pieces, self.experts[l], 1,
                        model.config.swiglu_limit)
        grouping.y.take(grouping.padded_of_pair, axis=0, out=self.outputs[:n])


class ExpertParallel:
    """Steps of G ranks' rows with the experts split over the ranks; `comm` moves data between them and
    drives the shards of this process (all G in process, one over NCCL). Every rank's step has the same
    number of rows (pad rows as on one GPU)."""

    def __init__(self, shards: list[ExpertShard], comm, device):
        if tuple(s.rank for s in shards) != tuple(comm.local_ranks):
            raise ValueError(f"shards of ranks {[s.rank for s in shards]}, the communicator drives "
                             f"{list(comm.local_ranks)}")
        self.shards, self.comm, self.device = shards, comm, device
        self.config = shards[0].model.config

    def step(self, views: list[RowView]) -> None:
        """The batched engine's step (RowModel.step) over every rank's rows, the MoE of each layer shared."""
        for shard, v in zip(self.shards, views):
            shard.model.kernels.embedding_rows(v.x, shard.model.w.embedding, v.row_token)
        for l in range(self.config.n_layers):
            for shard, v in zip(self.shards, views):
                shard.model.attention_block(l, v, None)
            self.moe_layer(l, views)
        for shard, v in zip(self.shards, views):
            shard.model.unembed(v, None)

    def moe_layer(self, l: int, views: list[RowView]) -> None:
        """x += MoE(x) of every rank's rows for layer l: route, exchange, products, return, combine."""
        rows = {v.R for v in views}
        if len(rows) != 1:
            raise ValueError(f"every rank's step needs the same number of rows, got {sorted(rows)}")
        for shard, v in zip(self.shards, views):
            shard.model.route(l, v)
        plan = self.plan(views)
        self.dispatch(plan, views)
        block_m, tensor_cores = views[0].block_m, views[0].tensor_cores  # one GPU's for the whole step
        for shard in self.shards:
            n = sum(plan.received_counts(shard.rank))
            if n:
                self.device.upload(shard.received_experts[:n], plan.local_experts(shard.rank))
                shard.products(l, n, block_m, tensor_cores)
        self.comm.all_to_all([s.outputs for s in self.shards], [plan.received_counts(s.rank) for s in self.shards],
                             [s.returned for s in self.shards], [plan.counts(s.rank) for s in self.shards])
        for shard, v in zip(self.shards, views):
            pairs = v.experts.size
            self.device.upload(shard.return_positions[:pairs], plan.return_positions(shard.rank))
            shard.model.kernels.moe_combine(v.x, v.moe_out, shard.returned[:pairs], v.expert_weights,
                                            shard.return_positions[:pairs])  # x += moe_out, slot order

    def plan(self, views: list[RowView]) -> ExchangePlan:
        """Every rank's expert ids, all-gathered, read on the host (a synchronisation), planned."""
        R, k, G = views[0].R, self.config.experts_per_token, self.comm.n_ranks
        gathered = [s.gathered_experts[: G * R * k].reshape(G, R, k) for s in self.shards]
        self.comm.all_gather([v.experts for v in views], gathered)
        experts = self.device.download(gathered[0], np.empty((G, R, k), np.int32))
        return plan_exchange(list(experts), self.config.n_experts)

    def dispatch(self, plan: ExchangePlan, views: list[RowView]) -> None:
        """Each pair's activation row (t = rmsnorm(x)) to the rank holding its expert."""
        for shard, v in zip(self.shards, views):
            rows = plan.dispatch_rows(shard.rank)
            if rows.size:
                self.device.upload(shard.dispatch_rows[: rows.size], rows)
                v.t.take(shard.dispatch_rows[: rows.size], axis=0, out=shard.sent[: rows.size])
        self.comm.all_to_all([s.sent for s in self.shards], [plan.counts(s.rank) for s in self.shards],
                             [s.received for s in self.shards], [plan.received_counts(s.rank) for s in self.shards])
