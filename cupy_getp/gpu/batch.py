"""The batched GPU engine: `reference.py`'s model again, over the R rows of a step.

Letters as in reference.py, plus R rows, S slots, C a layer's cache length, P padded (row, expert)
pairs (docs/batched-engine.md has every buffer and kernel contract). It is the only GPU model:
`BatchedEngine` is built over a warmed-up `CupyEngine` (its device, weights and kernels) for getp's
batches, and with one request slot for the engine's own single-sequence `forward` (`gpu/engine.py`).

Per step the host uploads the row descriptors (one copy, 12 bytes for each row of capacity) and
downloads the chosen tokens; everything between runs on the device: on CUDA as one graph per row-count
bucket, captured on first use and replayed; on ROCm (CuPy 13.3 cannot capture) the same launches eagerly.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import numpy as np

from ..errors import DeviceError, NumericalError
from ..rope import rope_cos_sin
from .batch_trace import BatchTrace
from .batch_shape import BLOCK_MS, BatchShape, attn_split_len, attn_splits
from .launch.gemm import GROUPED_BLOCK_M
from .launch.gemm_tc import (TC_BLOCK_M, describe_products, pieces_lda, pieces_view, tensor_cores_supported,
                              wg_grouped_rows)
from .launch.moe import moe_padded_pairs
from .moe_products import ExpertWeights, Grouping, expert_products

OVERLAP_ENV = "CUPY_GETP_OVERLAP"
SKINNY_ROWS = 32  # up to this many rows the MoE uses the weight-streaming kernels (bandwidth-bound)
PRECISIONS = ("exact", "fast", "fp32")  # tensor cores with 3 BF16 pieces / 1 piece / CUDA cores only


# -- device state ------------------------------------------------------------------------------------------
class StepBuffers:
    """Every buffer of a step at capacity (max_rows rows); `view(R)` are the first R rows of each."""

    def __init__(self, config, shape: BatchShape, n_pieces: int, feeds_tokens: bool = False):
        import cupy

        c, R = config, shape.max_rows
        f32, i32 = np.float32, np.int32
        # slot, pos, token per row (and with feeds_tokens, overlapped steps: the row of the step before whose
        # sampled token it takes, or -1): one upload per step
        self.rows_packed = cupy.zeros((4 if feeds_tokens else 3, R), i32)
        self.x = cupy.zeros((R, c.hidden_dim), f32)
        self.t = cupy.zeros((R, c.hidden_dim), f32)
        self.qkv = cupy.zeros((R, c.qkv_dim), f32)
        self.att = cupy.zeros((R, c.q_dim), f32)
        self.n_ctx = shape.n_ctx
        # (rows x splits) partial results of attention: the full layers' splits (the windowed ones need fewer).
        splits = R * attn_splits(c, shape.n_ctx)
        self.partial_acc = cupy.zeros(splits * c.n_attn_heads * c.head_dim, f32)
        self.partial_ml = cupy.zeros(splits * c.n_attn_heads * 2, f32)
        # A count of finished splits per (row, kv head) for the merge in attention's launch: zero between launches.
        self.attn_counters = cupy.zeros((R, c.n_kv_heads), np.uint32)
        self.router = cupy.zeros((R, c.n_experts), f32)
        self.experts = cupy.zeros((R, c.experts_per_token), i32)
        self.expert_weights = cupy.zeros((R, c.experts_per_token), f32)
        P = max(moe_padded_pairs(R * c.experts_per_token, c.n_experts, bm) for bm in BLOCK_MS)
        self.pair_of_padded = cupy.zeros(P, i32)
        self.padded_of_pair = cupy.zeros(R * c.experts_per_token, i32)
        self.tile_expert = cupy.zeros(P // min(BLOCK_MS), i32)
        self.g = cupy.zeros((P, c.intermediate_dim), f32)
        self.y = cupy.zeros((P, c.hidden_dim), f32)
        self.moe_out = cupy.zeros((R, c.hidden_dim), f32)
        self.logits = cupy.zeros((R, c.vocab_size), f32)
        self.next_token = cupy.zeros(R, i32)
        # Tensor cores: BF16 pieces of one GEMM's activations at a time, and of g (mlp1's output, mlp2's
        # input); (pieces, rows, lda) views of them.
        self.pieces_a = cupy.zeros(n_pieces * R * pieces_lda(max(c.hidden_dim, c.q_dim)), np.uint16)
        self.pieces_g = cupy.zeros(n_pieces * P * pieces_lda(c.intermediate_dim), np.uint16)


class KVCache:
    """Per layer (S + 1, C_l, kv_dim) keys and values, FP32 or BF16 bits (`shape.kv_cache`); slot S is the pad
    rows' spare slot."""

    def __init__(self, config, shape: BatchShape):
        import cupy

        self.lengths = [shape.cache_len(config, l) for l in range(config.n_layers)]
        self.keys = [cupy.zeros((shape.n_slots + 1, n, config.kv_dim), shape.kv_dtype) for n in self.lengths]
        self.values = [cupy.zeros_like(key) for key in self.keys]


@dataclass
class RowView:
    """The first R rows of every step buffer, built once per bucket (slicing costs microseconds)."""

    R: int
    block_m: int
    tensor_cores: bool
    attn_split: int  # positions per attention split (attn_split_len)
    rows_packed: object
    row_slot: object
    row_pos: object
    row_token: object
    row_source: object  # overlapped steps: the row of the step before whose token a row takes (-1: row_token); None
    x: object
    t: object
    qkv: object
    att: object
    partial_acc_full: object
    partial_ml_full: object
    partial_acc_window: object
    partial_ml_window: object
    attn_counters: object
    router: object
    experts: object
    expert_weights: object
    pair_of_padded: object
    padded_of_pair: object
    tile_expert: object
    g: object
    y: object
    moe_out: object
    logits: object
    next_token: object


def row_view(b: StepBuffers, config, R: int, block_m: int, tensor_cores: bool) -> RowView:
    c, top_k = config, config.experts_per_token
    P = moe_padded_pairs(R * top_k, c.n_experts, block_m)
    nh, D = c.n_attn_heads, c.head_dim

    def partials(n_split):
        return (b.partial_acc[: R * nh * n_split * D].reshape(R, nh, n_split, D),
                b.partial_ml[: R * nh * n_split * 2].reshape(R, nh, n_split, 2))

    attn_split = attn_split_len(c)
    acc_full, ml_full = partials(attn_splits(c, b.n_ctx))
    acc_win, ml_win = partials(attn_splits(c, min(c.sliding_window, b.n_ctx)))  # views: unused without windows
    return RowView(
        R=R, block_m=block_m, tensor_cores=tensor_cores, attn_split=attn_split, rows_packed=b.rows_packed,
        row_slot=b.rows_packed[0, :R], row_pos=b.rows_packed[1, :R], row_token=b.rows_packed[2, :R],
        row_source=b.rows_packed[3, :R] if b.rows_packed.shape[0] > 3 else None,
        x=b.x[:R], t=b.t[:R], qkv=b.qkv[:R], att=b.att[:R], partial_acc_full=acc_full, partial_ml_full=ml_full,
        partial_acc_window=acc_win, partial_ml_window=ml_win, attn_counters=b.attn_counters[:R], router=b.router[:R],
        experts=b.experts[:R], expert_weights=b.expert_weights[:R], pair_of_padded=b.pair_of_padded[:P],
        padded_of_pair=b.padded_of_pair[: R * top_k],
        tile_expert=b.tile_expert[: P // block_m], g=b.g[:P], y=b.y[:P], moe_out=b.moe_out[:R], logits=b.logits[:R],
        next_token=b.next_token[:R],
    )


# -- the model over rows -------------------------------------------------------------------------------------
class RowModel:
    """`NumpyEngine.forward` over rows: the same functions at the same points, on step buffers."""

    def __init__(self, config, weights, kernels, shape: BatchShape, precision: str, feeds_tokens: bool = False):
        """feeds_tokens (overlapped steps): a row may take its token from the step before's `next_token` on the
        device (RowView.row_source) instead of the host's upload."""
        self.config, self.w, self.kernels, self.shape = config, weights, kernels, shape
        self.precision = precision
        self.pieces = 1 if precision == "fast" else 3
        self.buffers = StepBuffers(config, shape, 0 if precision == "fp32" else self.pieces, feeds_tokens)
        if precision != "fp32":  # the dense products' split-K workspace, before any graph is captured
            c = config
            kernels.reserve_splitk(shape.max_rows, [(c.qkv_dim, c.hidden_dim), (c.hidden_dim, c.q_dim),
                                                    (c.vocab_size, c.hidden_dim)])
        self.cache = KVCache(config, shape)
        cos, sin = zip(*(rope_cos_sin(config, p) for p in range(shape.n_ctx)))
        import cupy

        self.cos, self.sin = cupy.asarray(np.stack(cos)), cupy.asarray(np.stack(sin))  # (n_ctx, D/2), once
        self.views: dict[int, RowView] = {}

    def view(self, R: int) -> RowView:
        if R not in self.views:
            self.views[R] = row_view(self.buffers, self.config, R, *self.products(R))
        return self.views[R]

    def products(self, R: int) -> tuple[int, bool]:
        """(MoE tile height, tensor cores) of a step of R rows. In `exact` and `fast` the tensor-core products
        take every step, one row included: their bits do not depend on the row count, the tile or a row's
        place (one k order; split-K's slices come from the product's shape alone), which is what makes
        a request's output independent of its batch.
        `fp32` runs on the CUDA cores, whose kernels are chosen by row count (not batch-invariant)."""
        tensor_cores = self.precision != "fp32"
        if tensor_cores:
            c = self.config
            rows = wg_grouped_rows(R * c.experts_per_token, c.n_experts, self.pieces)
            return (rows if self.kernels.wgmma else TC_BLOCK_M), True
        return (GROUPED_BLOCK_M[0] if R <= SKINNY_ROWS else GROUPED_BLOCK_M[1]), False

    def step(self, v: RowView, trace: BatchTrace | None = None) -> None:
        # (overlapped steps: the step before's next_token is the buffer's, whatever its row count)
        self.kernels.embedding_rows(v.x, self.w.embedding, v.row_token, v.row_source,
                                    None if v.row_source is None else self.buffers.next_token)
        for l in range(self.config.n_layers):
            self.attention_block(l, v, trace)
            self.moe_block(l, v, trace)
        self.unembed(v, trace)

    def matmul(self, v: RowView, c, a, w, bias=None, accumulate=False, a_pieces=None) -> None:
        """c = a @ w^T (+ bias) (+ c): tensor cores for BF16 weights where the precision allows (on a's
        pieces: `a_pieces` when already split); otherwise the CUDA cores, one row on the matvec (FP32
        weights that are not BF16 values, and `fp32`: not batch-invariant)."""
        if v.tensor_cores and w.dtype == np.uint16:
            self.kernels.gemm_tc(c, self.split(a) if a_pieces is None else a_pieces, w, bias, accumulate)
        elif v.R == 1:
            self.kernels.matvec(c[0], w, a[0], bias, accumulate)
        else:
            self.kernels.gemm(c, a, w, bias, accumulate)

    def split(self, a):
        """a (M, K) f32 -> its BF16 pieces (pieces, M, pieces_lda(K)) in the step's buffer for them (one
        GEMM's activations at a time)."""
        ap = self.pieces_view(self.buffers.pieces_a, *a.shape)
        self.kernels.split_pieces(ap, a)
        return ap

    def norm(self, v: RowView, w):
        """t = rmsnorm(x) (R, H) with weights w; on tensor cores t's BF16 pieces too, in the same launch, for
        the products that read t (returned; None on the CUDA cores)."""
        if not v.tensor_cores:
            self.kernels.rmsnorm_rows(v.t, v.x, w)
            return None
        t_pieces = self.pieces_view(self.buffers.pieces_a, *v.t.shape)
        self.kernels.rmsnorm_split_rows(v.t, t_pieces, v.x, w)
        return t_pieces

    def pieces_for(self, v: RowView, w, a):
        """A view for a (R, K)'s pieces in the step's buffer for them where the tensor-core product with
        weights w will read them, else None (the product then runs on the CUDA cores)."""
        if not v.tensor_cores or w.dtype != np.uint16:
            return None
        return self.pieces_view(self.buffers.pieces_a, *a.shape)

    def pieces_view(self, flat, rows: int, k: int):
        return pieces_view(flat, self.pieces, rows, k)

    def attention_block(self, l: int, v: RowView, trace: BatchTrace | None) -> None:
        c, kernels, lw = self.config, self.kernels, self.w.layer(l)
        t_pieces = self.norm(v, lw.rms_attn_w)
        self.matmul(v, v.qkv, v.t, lw.w_qkv, lw.b_qkv, a_pieces=t_pieces)
        kernels.rope_kv_write(v.qkv, self.cos, self.sin, self.cache.keys[l], self.cache.values[l], v.row_slot,
                              v.row_pos, c.n_attn_heads, c.n_kv_heads, c.head_dim)
        # A windowed row reads at most `window` positions: fewer splits cover them.
        windowed = c.uses_sliding_window(l)
        window = c.sliding_window if windowed else 0
        acc, ml = (v.partial_acc_window, v.partial_ml_window) if windowed else (v.partial_acc_full, v.partial_ml_full)
        att_pieces = self.pieces_for(v, lw.w_o, v.att)  # the merge writes them for the output projection
        kernels.attn_rows(v.att, acc, ml, v.qkv, self.cache.keys[l], self.cache.values[l], v.row_slot, v.row_pos,
                          lw.attn_sinks, v.attn_counters, c.n_attn_heads, c.n_kv_heads, c.head_dim, window,
                          v.attn_split, att_pieces)
        self.matmul(v, v.x, v.att, lw.w_o, lw.b_o, accumulate=True, a_pieces=att_pieces)  # x += w_o @ att + b_o
        if trace is not None:
            trace.record(l, "attn_out", v.att)
            trace.record(l, "x_attn", v.x)

    def moe_block(self, l: int, v: RowView, trace: BatchTrace | None) -> None:
        t_pieces = self.route(l, v)
        if v.R == 1 and not v.tensor_cores:
            self.moe_one_row(l, v)
        else:
            self.moe_rows(l, v, t_pieces)
        if trace is not None:
            trace.record(l, "router", v.router)
            trace.record(l, "experts", v.experts)
            trace.record(l, "moe_out", v.moe_out)
            trace.record(l, "x_moe", v.x)

    def route(self, l: int, v: RowView):
        """t = rmsnorm(x), router scores (R, E) = w_router @ t + b and each row's experts and their weights
        (reference.route), the router on the CUDA cores in every precision (one launch with the choice); returns
        t's pieces on tensor cores (mlp1's), else None. Expert parallelism (gpu/expert_parallel.py) starts here
        too."""
        lw = self.w.layer(l)
        t_pieces = self.norm(v, lw.rms_ffn_w)
        self.kernels.router_rows(v.experts, v.expert_weights, v.router, lw.w_router, lw.b_router, v.t)
        return t_pieces

    def moe_one_row(self, l: int, v: RowView) -> None:
        """One row on the CUDA cores: the fused one-row expert kernels (each chosen expert read once)."""
        c, kernels, lw = self.config, self.kernels, self.w.layer(l)
        g = v.g[: c.experts_per_token]  # (top_k, I)
        kernels.moe_mlp1_swiglu(g, lw.w_mlp1, lw.b_mlp1, v.t[0], v.experts[0], c.swiglu_limit)
        kernels.moe_mlp2_accumulate(v.x[0], v.moe_out[0], lw.w_mlp2, lw.b_mlp2, g, v.experts[0], v.expert_weights[0])

    def moe_rows(self, l: int, v: RowView, t_pieces=None) -> None:
        """Rows grouped by expert: the grouped products (gpu/moe_products.py), combine in slot order (on tensor
        cores: t given as its pieces, g kept as pieces)."""
        c, kernels = self.config, self.kernels
        expert_products(kernels, self.grouping(v), v.experts, v.t, t_pieces, ExpertWeights.of(self.w.layer(l)),
                        c.experts_per_token, c.swiglu_limit)
        kernels.moe_combine(v.x, v.moe_out, v.y, v.expert_weights, v.padded_of_pair)  # x += moe_out

    def grouping(self, v: RowView) -> Grouping:
        """The step's grouping; the pad rows (the spare slot's) take no expert products: nobody reads them."""
        g_pieces = self.pieces_view(self.buffers.pieces_g, v.g.shape[0], self.config.intermediate_dim) \
            if v.tensor_cores else None
        return Grouping(v.block_m, v.tensor_cores, v.pair_of_padded, v.padded_of_pair, v.tile_expert, v.g, g_pieces,
                        v.y, row_slot=v.row_slot, spare_slot=self.shape.n_slots)

    def unembed(self, v: RowView, trace: BatchTrace | None) -> None:
        """Logits of every row (pad and mid-prompt rows included: the graph's shape is the bucket's),
        then the greedy token of each on the device."""
        t_pieces = self.norm(v, self.w.rms_out_w)
        self.matmul(v, v.logits, v.t, self.w.out, a_pieces=t_pieces)
        self.kernels.argmax_rows(v.next_token, v.logits)
        if trace is not None:
            trace.logits = v.logits.get()


# -- running steps -------------------------------------------------------------------------------------------
class StepRunner:
    """Runs a `RowModel` step for a bucket: a CUDA graph per bucket (captured on first use), or eagerly."""

    def __init__(self, model: RowModel, device, use_graphs: bool, remedy: str = "a smaller --batch or -n"):
        self.model, self.device, self.remedy = model, device, remedy
        self.use_graphs = use_graphs and not device.is_hip  # CuPy 13.3 on ROCm refuses capture
        self.graphs: dict[int, object] = {}

    def run(self, v: RowView, trace: BatchTrace | None = None) -> None:
        if trace is not None or not self.use_graphs:
            self.model.step(v, trace)
            return
        graph = self.graphs.get(v.R)
        if graph is None:
            with self.device.allocating(f"the CUDA graph of a {v.R}-row step", self.remedy):
                graph = self.graphs[v.R] = self._capture(v)
        graph.launch(stream=self.device.stream)

    def _capture(self, v: RowView):
        stream = self.device.stream
        sync_check, self.device.sync_check = self.device.sync_check, False  # no synchronisation while capturing
        try:
            stream.begin_capture()
            try:
                with self.model.kernels.capturing():
                    self.model.step(v)
            except BaseException:
                with contextlib.suppress(Exception):  # leave capture mode; the launch's error is the news
                    stream.end_capture()
                raise
            return stream.end_capture()
        finally:
            self.device.sync_check = sync_check


class BatchedEngine:
    """Steps over rows on a warmed-up `CupyEngine`'s device, weights and kernels: getp's batches, and the
    engine's own one-slot model behind `forward`."""

    def __init__(self, engine, shape: BatchShape, precision: str | None = None, use_graphs: bool = True,
                 memory: tuple[str, str] | None = None, overlap: bool = False):
        """`memory`: (what, remedy) of the out-of-memory line; by default a batch's (request slots, --batch or -n).
        `overlap`: greedy steps may run ahead (`launch`, `collect`: getp's batches, `CupyEngine.batched`)."""
        self.engine, self.config, self.shape = engine, engine.config, shape
        device = engine.device
        precision = check_precision(device, engine.kernels, precision)
        self.precision = precision
        what, remedy = memory or (f"the step buffers and KV cache of {shape.n_slots} request slots at -n {shape.n_ctx}",
                                  engine.memory_remedy("a smaller --batch or -n"))
        self.overlap = overlap
        with device.stream, device.allocating(what, remedy):
            self.model = RowModel(engine.config, engine.w, engine.kernels, shape, precision, self.overlap)
        self.runner = StepRunner(self.model, device, use_graphs, remedy)
        self.products_path = products_path(device, engine.kernels, precision)
        self.device = device
        # Two of each host buffer where steps run ahead: a step's rows go up, and its tokens come down, while
        # the host writes the next step's rows and reads the last step's tokens in the other.
        turns = 2 if self.overlap else 1
        packed = self.model.buffers.rows_packed.shape  # (fields, max_rows): the upload's shape
        self.rows_hosts = [device.pinned(packed, np.int32) for _ in range(turns)]
        self.tokens_hosts = [device.pinned(shape.max_rows, np.int32) for _ in range(turns)]
        self.rows_host, self.tokens_host = self.rows_hosts[0], self.tokens_hosts[0]
        self._turn = 0  # the buffers of the next step launched ahead

    @property
    def uses_graphs(self) -> bool:
        return self.runner.use_graphs

    def step(self, slots: np.ndarray, positions: np.ndarray, tokens: np.ndarray,
             trace: BatchTrace | None = None, sources=None, rows_host=None) -> RowView:
        """Run one step over these rows (padded to their bucket); returns the bucket's view, whose
        `next_token` and `logits` hold the results (read them with `tokens()`, or `.get(stream=device.stream)`:
        the step runs on the device's non-blocking stream, which a plain `.get()` outside it does not wait for).
        The rows go up from one pinned buffer without waiting: read the step's results (which synchronises)
        before the next step rewrites it. `sources`, `rows_host`: `launch`'s (a step run ahead)."""
        self.engine.check_not_finished()  # the graphs hold the weights' addresses
        n = len(slots)
        if not 0 < n <= self.shape.max_rows:
            raise ValueError(f"a step takes 1..{self.shape.max_rows} rows, got {n}")
        if np.any(positions >= self.shape.n_ctx) or np.any(positions < 0):
            raise ValueError(f"positions must be in 0..{self.shape.n_ctx - 1}")
        v = self.model.view(self.shape.bucket(n))
        rows_host = self.rows_host if rows_host is None else rows_host
        pack_rows(rows_host, self.shape.n_slots, slots, positions, tokens, sources)
        with self.device.stream:
            self.device.upload(v.rows_packed, rows_host)
            self.runner.run(v, trace)
        return v

    def launch(self, rows) -> PendingStep:
        """Start a greedy step over a scheduler's `StepRows` and return at once (overlapped steps,
        `run_overlapped`): a row whose `sources` entry is a row of the step launched before takes the token that
        row samples, on the device; the step's tokens come down into this turn's pinned buffer behind it."""
        if not self.overlap:
            raise RuntimeError("launch: this batched engine was built without overlap (its steps do not run ahead)")
        turn, self._turn = self._turn, 1 - self._turn
        v = self.step(rows.slots, rows.positions, rows.tokens, sources=rows.sources, rows_host=self.rows_hosts[turn])
        with self.device.stream:
            done = self.device.download_started(v.next_token, self.tokens_hosts[turn][: v.R])
        return PendingStep(rows, done, self.tokens_hosts[turn])

    def collect(self, pending: PendingStep, numbers=None) -> np.ndarray:
        """The tokens of a step `launch` started (waits for them alone, not for a step launched after it)."""
        self.device.wait(pending.done, "copy to host")
        tokens = pending.tokens_host[: len(pending.rows)].copy()
        check_tokens(tokens, pending.rows, numbers)
        return tokens

    def next_tokens(self, rows, samplers=None, numbers=None) -> np.ndarray:
        """Run a scheduler's `StepRows`; one next token per row (greedy on the device, or drawn by the
        row's request sampler from its logits when `samplers` is given); `numbers`: the requests' numbers
        in the input, by scheduler index (an error names the request by it; None: the index)."""
        v = self.step(rows.slots, rows.positions, rows.tokens)
        return read_next_tokens(self.device, v, self.tokens_host, rows, samplers, numbers)

    def free(self) -> None:
        """Drop the graphs and every buffer (the pool gets them back at the engine's finish)."""
        self.runner.graphs.clear()
        self.model = self.runner = None

    def tokens(self, v: RowView, n: int) -> np.ndarray:
        """The greedy tokens of the first n rows (-1 where a row's logits hold a NaN)."""
        return greedy_tokens(self.device, v, self.tokens_host, n)


@dataclass
class PendingStep:
    """A step `BatchedEngine.launch` started: its rows, the event after its tokens' copy to `tokens_host`."""

    rows: object
    done: object
    tokens_host: np.ndarray


def overlap_enabled() -> bool:
    """Whether greedy getp steps run ahead of the host (`run_overlapped`): yes unless CUPY_GETP_OVERLAP=0 (the
    exact headline's first 25 s +1.6 %, fast +3.5 % on an H100, twenty-eighth session; the same lines)."""
    return os.environ.get(OVERLAP_ENV, "") != "0"


# -- shared by the engines over rows (this one, and expert parallelism's: gpu/ep_engine.py) -----------------
def check_precision(device, kernels, precision: str | None) -> str:
    """The precision asked for (None: the device's default), or one line saying why it cannot run here."""
    precision = precision or default_precision(device)
    if precision not in PRECISIONS:
        raise DeviceError(f"unknown precision {precision!r} (expected {', '.join(PRECISIONS)})")
    if precision != "fp32" and not tensor_cores_supported(device):
        raise DeviceError(f"precision {precision!r} needs BF16 tensor cores (CUDA sm_80 or later); "
                          f"{device.describe()} has none usable here: use --precision fp32")
    return precision


def products_path(device, kernels, precision: str) -> str:
    """Which kernels the products take, in words (the warm-up note)."""
    if precision == "fp32":
        return "CUDA cores"
    path = describe_products(device, kernels.wgmma, kernels.not_built.get("gemm_wgmma"))
    if kernels.wg_tma:
        path += ", dense weights by TMA"
        if kernels.wg_tma_grouped:
            path += ", experts by TMA"
    if kernels.pdl is not None:
        path += ", a step graph's kernels overlapping (PDL)"
    return f"{path} at every row count"


def pack_rows(rows_host: np.ndarray, spare_slot: int, slots, positions, tokens, sources=None) -> None:
    """A step's row descriptors into the pinned (3, max_rows) buffer: (slot, position, token) of each row,
    then pad rows (the spare slot, position 0, token 0) to the end; a (4, max_rows) buffer (overlapped steps)
    also holds each row's source (`sources`, or -1: every token from the host)."""
    n = len(slots)
    rows_host[0, :] = spare_slot
    rows_host[1, :] = 0
    rows_host[2, :] = 0
    rows_host[0, :n], rows_host[1, :n], rows_host[2, :n] = slots, positions, tokens
    if rows_host.shape[0] > 3:
        rows_host[3, :] = -1
        if sources is not None:
            rows_host[3, :n] = sources


def greedy_tokens(device, v: RowView, tokens_host: np.ndarray, n: int) -> np.ndarray:
    """The greedy tokens of a step's first n rows (-1 where a row's logits hold a NaN); synchronises."""
    out = device.download(v.next_token, tokens_host[: v.R])
    return out[:n].copy()


def check_tokens(tokens: np.ndarray, rows, numbers=None) -> np.ndarray:
    """The rows of a scheduler's `StepRows` that want a token; a NaN's -1 among them is one line naming the
    request by its number in the input (`numbers`, by scheduler index; None: the index)."""
    wanted = np.flatnonzero(rows.wants_token)
    bad = wanted[tokens[wanted] < 0]  # vectorised: a loop over 1024 rows costs ~0.13 ms of the GPU's waiting
    if bad.size:
        index = rows.owners[bad[0]].index
        number = index if numbers is None else numbers[index]
        raise NumericalError(f"request {number + 1}: non-finite logits at position "
                             f"{int(rows.positions[bad[0]])} (NaN or infinite); `cupy-getp diff --batch` "
                             f"names the first layer")
    return wanted


def read_next_tokens(device, v: RowView, tokens_host: np.ndarray, rows, samplers=None, numbers=None) -> np.ndarray:
    """One next token per row of a scheduler's `StepRows` after its step: greedy from the device, or drawn by
    the row's request sampler from its logits (`samplers`); a NaN where a row wants a token is one line naming
    the request by its number in the input (`numbers`, by scheduler index; None: the index)."""
    tokens = greedy_tokens(device, v, tokens_host, len(rows))
    wanted = check_tokens(tokens, rows, numbers)
    if samplers is not None and wanted.size:
        import cupy

        with device.stream:
            logits = v.logits[cupy.asarray(wanted.astype(np.int32))].get(stream=device.stream)
        for j, i in enumerate(wanted):
            tokens[i] = samplers[rows.owners[i].index](logits[j])
    return tokens


def default_precision(device) -> str:
    return "exact" if tensor_cores_supported(device) else "fp32"
