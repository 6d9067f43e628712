"""getp's batched engine under expert parallelism: the ranks of this process (one a process over NCCL, all G
in one process for the tests), each with its own request slots, KV cache and step buffers, stepped in
lockstep with every other rank of the run (`ExpertParallel.step`: the MoE of each layer is shared).

Every step, each rank says how many rows it has and whether it has finished for good (an all-gather of two
numbers); all of them then step the largest count's bucket, a rank with fewer rows padding as one GPU pads
(the spare slot), and a rank with none stepping pad rows only, until every rank has finished. A row's values
do not depend on the step's row count or its place in `exact` and `fast` (batch invariance), so the output
is one GPU's. Steps run eagerly (no CUDA graphs): the exchange plan is read on the host once a layer.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .batch import RowView, check_precision, pack_rows, products_path, read_next_tokens
from .batch_shape import BatchShape
from .expert_parallel import ExpertParallel, ExpertShard, exchange_sizes


def gather_ints(comm, values: list[np.ndarray]) -> np.ndarray:
    """Every rank's small int32 vector (one per local rank, in `comm.local_ranks` order): (G, n) in rank order,
    on the host (a synchronisation)."""
    import cupy

    sends = [cupy.asarray(np.asarray(v, np.int32)) for v in values]
    recvs = [cupy.zeros((comm.n_ranks, sends[0].size), np.int32) for _ in values]
    comm.all_gather(sends, recvs)
    return np.asarray(recvs[0].get())


def agree_on_shape(comm, shape: BatchShape) -> BatchShape:
    """One shape for every rank (each planned its own from its free memory): the fewest slots any rank
    planned, so that every rank has every bucket of the run's steps."""
    planned = gather_ints(comm, [np.array([shape.n_slots])] * len(comm.local_ranks))
    n_slots = int(planned[:, 0].min())
    return replace(shape, n_slots=n_slots, max_rows=n_slots + shape.max_chunk)


class ExpertParallelBatch:
    """The expert-parallel ranks of this process over an engine's device, weights (every expert, or this
    rank's: `DeviceWeights(expert_range=...)`) and kernels; every rank of the run has the same `shape`."""

    uses_graphs = False  # eager steps: the exchange plan is read on the host once a layer
    overlap = False  # no steps run ahead (run_overlapped): each waits for the exchange's plan on the host

    def __init__(self, engine, shape: BatchShape, precision: str | None, comm):
        device = engine.device
        self.precision = check_precision(device, engine.kernels, precision)
        self.products_path = products_path(device, engine.kernels, self.precision)
        self.engine, self.config, self.shape, self.device, self.comm = engine, engine.config, shape, device, comm
        n_ranks = comm.n_ranks
        what = (f"the step buffers, KV cache and exchange buffers of {shape.n_slots} request slots at "
                f"-n {shape.n_ctx}")
        with device.stream, device.allocating(what, engine.memory_remedy("a smaller --batch or -n")):
            shards = [ExpertShard(q, n_ranks, engine.config, engine.w, engine.kernels, shape, self.precision)
                      for q in comm.local_ranks]
        self.ep = ExpertParallel(shards, comm, device)
        self.rows_host = [device.pinned((3, shape.max_rows), np.int32) for _ in shards]
        self.tokens_host = [device.pinned(shape.max_rows, np.int32) for _ in shards]

    def step(self, rows: list, finished: list[bool]) -> list[RowView | None] | None:
        """One lockstep step of the local ranks' `StepRows` (None: no rows now): their views after the
        step; [None, ...] where no rank of the run had rows (nothing ran); None once every rank of the run
        has finished (`finished`: the local ranks' word)."""
        self.engine.check_not_finished()
        counts = [np.array([len(r) if r is not None else 0, done]) for r, done in zip(rows, finished)]
        with self.device.stream:
            every = gather_ints(self.comm, counts)
        if every[:, 1].all():
            return None
        most = int(every[:, 0].max())
        if most == 0:
            return [None] * len(rows)
        if most > self.shape.max_rows:
            raise ValueError(f"a step takes 1..{self.shape.max_rows} rows, got {most}")
        views = [shard.model.view(self.shape.bucket(most)) for shard in self.ep.shards]
        none = (np.zeros(0, np.int32),) * 3  # a rank without rows: pad rows only
        with self.device.stream:
            for v, r, host in zip(views, rows, self.rows_host):
                pack_rows(host, self.shape.n_slots, *((r.slots, r.positions, r.tokens) if r is not None else none))
                self.device.upload(v.rows_packed, host)
            self.ep.step(views)
        return views

    def next_tokens(self, q: int, v: RowView, rows, samplers=None, numbers=None) -> np.ndarray:
        """Local rank q's next tokens of its rows after a step (as `BatchedEngine.next_tokens`)."""
        return read_next_tokens(self.device, v, self.tokens_host[q], rows, samplers, numbers)

    def free(self) -> None:
        self.ep = None


def exchange_bytes(config, shape: BatchShape, n_ranks: int) -> int:
    """Device bytes of a rank's exchange buffers (`ExpertShard`'s) beyond its RowModel, at most: pairs out and
    back, every rank's pairs in with their outputs, the grouping of those (padded to the largest tile) and
    their BF16 pieces (3, `exact`)."""
    from .batch_shape import BLOCK_MS
    from .launch.gemm_tc import pieces_lda

    c = config
    own, capacity, padded = exchange_sizes(c, shape.max_rows, n_ranks)
    floats = 2 * own * c.hidden_dim + 2 * capacity * c.hidden_dim + padded * (c.intermediate_dim + c.hidden_dim)
    pieces = 3 * (capacity * pieces_lda(c.hidden_dim) + padded * pieces_lda(c.intermediate_dim))
    ints = 3 * capacity + 2 * own + padded + padded // min(BLOCK_MS)
    return 4 * floats + 2 * pieces + 4 * ints
