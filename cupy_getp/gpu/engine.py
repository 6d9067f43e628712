"""The GPU engine: one model over rows (`gpu/batch.py`'s `RowModel`) for every GPU path.

`batched()` sizes a `BatchedEngine` of many request slots for getp. `forward(token, pos)` (generate, chat,
diff) is one step of the same model with one request slot: the row (slot 0, pos, token), on CUDA a replayed
CUDA graph, its logits copied back for the host's sampler. One stream; every launch goes through `Kernels`
(counted), every copy through `Device` (counted). A traced step runs eagerly and records every row's values
(`BatchTrace`); `forward` hands row 0's to the caller's `Trace`.
"""

from __future__ import annotations

import numpy as np

from ..checkpoint import Weights
from ..engine.base import Engine, Trace
from ..errors import GetpError
from ..kv_cache import check_kv_cache
from .batch import BatchedEngine, overlap_enabled
from .batch_shape import one_slot_shape
from .batch_trace import BatchTrace
from .device import Device, gib
from .comm import NcclCommunicator
from .ep_engine import ExpertParallelBatch, agree_on_shape, exchange_bytes
from .expert_plan import rank_experts
from .experts import ExpertStorage, check_expert_choice, choose_expert_storage, rank_expert_storage
from .kernels import Kernels
from .weights import DeviceWeights

# The one-slot model's precision: `fp32`, the single-sequence engine's numerics as they have always been (FP32 on
# the CUDA cores; at one row the matvec and the fused one-row expert kernels). The tensor-core products of
# `exact` and `fast` are latency-bound at one row today: 211 tok/s (TMA products) against 281 for these on an
# H200 (20b shape, bench/RESULTS.md, the fourth and fifth sessions of 2026-11-29).
ONE_ROW_PRECISION = "fp32"
ONE_SLOT = np.zeros(1, np.int32)  # the rows' slots of a one-slot step: slot 0


class CupyEngine(Engine):
    name = "cupy"
    batches = True

    def __init__(self, weights: Weights, experts: str = "auto", steps: int | None = None,
                 expert_parallel: tuple[int, int] | None = None, kv_cache: str = "fp32"):
        """`experts`: the MoE experts' storage on the device, bf16, mxfp4 or auto (`gpu/experts.py`), decided
        at warm-up for requests of `steps` positions (default seq_len) in batches whose KV cache holds `kv_cache`
        elements (what `batched` will be asked for; the one-slot model's cache is FP32). `expert_parallel` (rank,
        ranks): this engine holds that rank's slice of every layer's experts (`gpu/ep_engine.py`) and runs getp's
        batches only (`expert_parallel_batched`)."""
        super().__init__(weights)
        check_kv_cache(kv_cache)
        self.requested_experts, self.steps, self.kv_cache = check_expert_choice(experts), steps, kv_cache
        self.expert_parallel = expert_parallel
        self.device = self.kernels = self.w = None
        self.one_slot: BatchedEngine | None = None  # forward's model, made by its first call (`one_slot_model`)
        self.experts: ExpertStorage | None = None

    # -- life cycle ------------------------------------------------------------------------------------
    def warm_up(self, progress=None) -> None:
        self.finished = False
        self.device = Device.open()
        with self.device.cuda_device, self.device.stream:
            self.memory_before = self.device.memory_in_use()
            # Decided from the free memory before anything of this engine is allocated (the plan counts it all).
            if self.expert_parallel:
                self.experts = rank_expert_storage(self.requested_experts, self.expert_range(), *self.expert_parallel)
            else:
                self.experts = choose_expert_storage(self.weights, self.device.allocatable_bytes(),
                                                     self.requested_experts, self.steps, self.kv_cache)
            self.kernels = Kernels(self.device)
            self.w = DeviceWeights(self.weights, self.device, self.kernels, progress, self.experts.storage,
                                   expert_range=self.expert_range())
            self.memory_after_warm_up = self.device.memory_in_use()
        self.device.counters.reset()

    def storage_notes(self) -> list[str]:
        return [self.experts.describe(),
                f"device weights: {gib(self.w.nbytes())} ({self.w.nbytes():,} bytes): {self.w.describe_storage()}"]

    def memory_remedy(self, remedy: str) -> str:
        """What would help an allocation that failed: `remedy`, and `--experts mxfp4` where it frees memory."""
        return self.experts.remedy(remedy) if self.experts else remedy

    def reset(self) -> None:
        """Positions restart at 0. Nothing on the device is cleared, for nothing stale is ever read: the step at
        position pos reads the slot's positions <= pos only (within the window on windowed layers, whose ring
        holds window + 1 of them), and writes pos's keys and values before its attention reads them; a sequence
        fed from 0 again has so rewritten every entry it reads."""
        self.check_not_finished()

    def finish(self) -> None:
        if self.device is None:
            return
        if self.one_slot is not None:
            self.one_slot.free()
        if self.w is not None:
            self.w.free()
        self.w = self.one_slot = None
        self.device.free_all()
        self.finished = True

    def batched(self, n_requests: int, steps: int, slots: int | None = None, precision: str | None = None,
                use_graphs: bool = True, max_chunk: int | None = None, kv_cache: str = "fp32",
                overlap: bool | None = None):
        """A `BatchedEngine` over this engine's device, weights and kernels, sized from free memory, its KV cache
        of `kv_cache` elements (fp32, bf16); its greedy steps run ahead of the host (`overlap`; None: unless
        CUPY_GETP_OVERLAP=0)."""
        from .batch_shape import MAX_CHUNK, plan_batch

        self.check_not_finished()
        self.check_whole_model("a batched engine of its own")
        with self.device.cuda_device:
            shape = plan_batch(self.config, n_requests, steps, self.device.allocatable_bytes(), slots,
                               max_chunk or MAX_CHUNK, self.experts.hint(), kv_cache)
            return BatchedEngine(self, shape, precision, use_graphs,
                                 overlap=overlap_enabled() if overlap is None else overlap)

    # -- expert parallelism --------------------------------------------------------------------------------
    def expert_range(self) -> tuple[int, int] | None:
        """The experts [lo, hi) of every layer this engine holds (None: all of them)."""
        if not self.expert_parallel:
            return None
        return rank_experts(self.config.n_experts, *self.expert_parallel)

    def check_whole_model(self, what: str) -> None:
        """A rank of expert parallelism holds a slice of the experts: it runs only its rank's steps."""
        if self.expert_parallel:
            raise GetpError(f"an expert-parallel rank holds experts {self.expert_range()} of each layer only: it "
                            f"cannot run {what}")

    def communicator(self, unique_id) -> NcclCommunicator:
        """This rank's NCCL (RCCL) communicator with the other ranks (waits until every rank has joined)."""
        rank, ranks = self.expert_parallel
        with self.device.cuda_device:
            return NcclCommunicator(ranks, rank, unique_id, self.device.stream)

    def expert_parallel_batched(self, n_requests: int, steps: int, comm, slots: int | None = None,
                                precision: str | None = None, max_chunk: int | None = None,
                                kv_cache: str = "fp32") -> ExpertParallelBatch:
        """The expert-parallel batched engine of this rank, sized from free memory as `batched` (less the
        exchange buffers), the same shape on every rank (the fewest slots any rank can hold)."""
        from .batch_shape import MAX_CHUNK, plan_batch

        self.check_not_finished()
        with self.device.cuda_device, self.device.stream:  # the shape's all-gather: on the stream NCCL uses
            free = self.device.allocatable_bytes()
            plan = lambda free_bytes: plan_batch(self.config, n_requests, steps, free_bytes, slots,  # noqa: E731
                                                 max_chunk or MAX_CHUNK, self.experts.hint(), kv_cache)
            shape = plan(free)
            shape = plan(free - exchange_bytes(self.config, shape, comm.n_ranks))
            return ExpertParallelBatch(self, agree_on_shape(comm, shape), precision, comm)

    # -- forward ---------------------------------------------------------------------------------------
    def forward(self, token: int, pos: int, trace: Trace | None = None) -> np.ndarray:
        """One step of the one-slot model at (slot 0, pos, token): the logits (V,) of the row."""
        self.check_step(token, pos)
        model = self.one_slot_model()
        batch_trace = None if trace is None else BatchTrace()  # a traced step runs eagerly (StepRunner)
        v = model.step(ONE_SLOT, np.array([pos], np.int32), np.array([token], np.int32), batch_trace)
        logits = self.device.download(v.logits[0], self.logits_host).copy()
        if trace is not None:
            batch_trace.row(0, into=trace)
        return logits

    def one_slot_model(self) -> BatchedEngine:
        """The model of `forward`: one request slot of seq_len positions (its KV cache, the windowed layers'
        ring, the step buffers, the graph), made on the first call, so that getp, which never calls `forward`,
        does not pay for it (`experts.resident_bytes` counts it all the same)."""
        self.check_not_finished()
        self.check_whole_model("single sequences (generate, chat, diff)")
        if self.one_slot is None:
            what = f"the single-sequence state and KV cache ({self.config.seq_len} positions)"
            remedy = self.memory_remedy("a smaller seq_len (--config seq_len=N)")
            with self.device.cuda_device:
                self.one_slot = BatchedEngine(self, one_slot_shape(self.config), ONE_ROW_PRECISION,
                                              memory=(what, remedy))
            self.logits_host = self.device.pinned(self.config.vocab_size, np.float32)
        return self.one_slot
