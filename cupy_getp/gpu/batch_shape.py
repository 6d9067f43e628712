"""Shapes and sizes of the batched engine (`gpu/batch.py`), getp's batches and the single-sequence engine's one
slot: how many request slots and rows a step, the KV caches' lengths, attention's split over positions, and the
device bytes all of it takes, from the model's configuration and free memory alone (no device work: `--experts
auto` and the planners use it before anything is allocated)."""

from __future__ import annotations

import bisect
import functools
from dataclasses import dataclass

import numpy as np

from ..errors import DeviceError
from ..kv_cache import KV_CACHE_DTYPES, check_kv_cache
from .launch.attention import attn_split_positions
from .launch.gemm import GROUPED_BLOCK_M
from .launch.gemm_tc import TC_BLOCK_M, WG_GROUPED_ROWS, pieces_lda

MAX_CHUNK = 128  # prompt positions of one request per step
MAX_SLOTS = 1024
RESERVE_BYTES = 2 << 30  # device memory left free for CuPy, the graphs and the driver
# Every MoE tile height a bucket may use (the buffers fit them all).
BLOCK_MS = (*GROUPED_BLOCK_M, TC_BLOCK_M, *WG_GROUPED_ROWS)


@dataclass(frozen=True)
class BatchShape:
    """How many sequences run at once and how long their caches are."""

    n_slots: int  # request slots (one more, the spare slot of pad rows, is allocated)
    max_rows: int  # rows per step
    max_chunk: int  # prompt positions of one request per step
    n_ctx: int  # positions per request (the step budget): the full layers' cache length
    kv_cache: str = "fp32"  # the KV cache's element: a key of KV_CACHE_DTYPES

    def __post_init__(self) -> None:
        check_kv_cache(self.kv_cache)

    def cache_len(self, config, layer: int) -> int:
        """C of a layer: a ring of window + max_chunk positions where that is shorter than n_ctx."""
        if config.uses_sliding_window(layer):
            return min(self.n_ctx, config.sliding_window + self.max_chunk)
        return self.n_ctx

    @property
    def kv_dtype(self):
        return KV_CACHE_DTYPES[self.kv_cache]

    def slot_bytes(self, config) -> int:
        """KV-cache bytes of one slot (K and V, every layer)."""
        item = np.dtype(self.kv_dtype).itemsize
        return sum(2 * item * self.cache_len(config, l) * config.kv_dim for l in range(config.n_layers))

    @functools.cached_property
    def buckets(self) -> tuple[int, ...]:
        """Row counts a step is padded to (one graph each): powers of two to 64, then steps of 64."""
        sizes = [b for b in (1, 2, 4, 8, 16, 32, 64) if b < self.max_rows]
        sizes += list(range(128, self.max_rows, 64))
        return (*sizes, self.max_rows)

    def bucket(self, rows: int) -> int:
        return self.buckets[bisect.bisect_left(self.buckets, rows)]


def attn_split_len(config) -> int:
    """Positions per attention split, on every layer and at every row count: fixed by the model alone, so a
    row's attention depends on its own position and cache only (batch invariance). As many as one block of
    attn_rows_partial holds."""
    return attn_split_positions(config.head_dim, config.n_attn_heads // config.n_kv_heads)


def attn_splits(config, span: int) -> int:
    """Splits that cover `span` positions (the full layers' n_ctx, or the window)."""
    return -(-span // attn_split_len(config))


def row_bytes(config, n_split: int) -> int:
    """Step-buffer bytes per row (activations, partials, MoE pairs with their padding share, logits)."""
    c = config
    floats = (3 * c.hidden_dim + c.qkv_dim + c.q_dim + c.n_attn_heads * n_split * (c.head_dim + 2) + c.n_experts
              + 2 * c.experts_per_token + c.experts_per_token * (c.intermediate_dim + c.hidden_dim + 2)
              + c.vocab_size + 4)
    pieces = 3 * (pieces_lda(max(c.q_dim, c.hidden_dim)) + c.experts_per_token * pieces_lda(c.intermediate_dim))
    return 4 * floats + 2 * pieces  # pieces: bf16


def _shape_for(config, steps: int, max_chunk: int, kv_cache: str = "fp32") -> tuple[int, int, int]:
    """(prompt chunk, one slot's KV-cache bytes, one row's step-buffer bytes) of a batch at -n `steps`."""
    chunk = max(1, min(max_chunk, steps))
    probe = BatchShape(1, 1 + chunk, chunk, steps, kv_cache)
    return chunk, probe.slot_bytes(config), row_bytes(config, attn_splits(config, steps))


def model_bytes(config, steps: int, n_slots: int, max_chunk: int = MAX_CHUNK, kv_cache: str = "fp32") -> int:
    """Device bytes of a model over rows (`gpu/batch.py`'s `RowModel`) of `n_slots` request slots at -n `steps`:
    their KV caches and rows, the spare slot of pad rows, the prompt-chunk rows, the MoE's tile padding and
    RoPE's tables."""
    chunk, slot, row = _shape_for(config, steps, max_chunk, kv_cache)
    pad = config.n_experts * max(BLOCK_MS) * (config.intermediate_dim * (4 + 6) + config.hidden_dim * 4)
    rope = 2 * 4 * steps * (config.head_dim // 2)  # cos, sin: (n_ctx, D/2) FP32 each
    return pad + rope + slot + chunk * row + n_slots * (slot + row)


def batch_bytes(config, steps: int, n_slots: int, max_chunk: int = MAX_CHUNK, kv_cache: str = "fp32") -> int:
    """Device bytes a batched engine of `n_slots` request slots at -n `steps` takes: its model (`model_bytes`)
    and RESERVE_BYTES left for CuPy, the graphs and the driver."""
    return RESERVE_BYTES + model_bytes(config, steps, n_slots, max_chunk, kv_cache)


def one_slot_shape(config) -> BatchShape:
    """The single-sequence engine's model (`gpu/engine.py`): one request slot of seq_len positions, fed one
    position a step; rows for the slot and one prompt chunk, as `plan_batch` shapes every batch."""
    return BatchShape(1, 1 + 1, 1, config.seq_len)


def one_slot_bytes(config) -> int:
    """Device bytes of the single-sequence engine's one-slot model (`model_bytes` of `one_slot_shape`)."""
    shape = one_slot_shape(config)
    return model_bytes(config, shape.n_ctx, shape.n_slots, shape.max_chunk)


def slots_that_fit(config, steps: int, free_bytes: int, max_chunk: int = MAX_CHUNK, kv_cache: str = "fp32") -> int:
    """Request slots `batch_bytes` fits in `free_bytes` (0 or less: not one)."""
    _, slot, row = _shape_for(config, steps, max_chunk, kv_cache)
    return (free_bytes - batch_bytes(config, steps, 0, max_chunk, kv_cache)) // (slot + row)


def plan_batch(config, n_requests: int, steps: int, free_bytes: int, slots: int | None = None,
               max_chunk: int = MAX_CHUNK, hint: str = "", kv_cache: str = "fp32") -> BatchShape:
    """Slots and rows from free device memory and the step budget (`slots` overrides the count); `hint`:
    what else would help when they do not fit (`--experts mxfp4`, where it frees memory); `kv_cache`: the KV
    cache's element (KV_CACHE_DTYPES)."""
    also = f", or {hint}" if hint else ""
    chunk, slot, row = _shape_for(config, steps, max_chunk, kv_cache)
    fit = slots_that_fit(config, steps, free_bytes, max_chunk, kv_cache)  # refuses an unknown kv_cache
    wanted = slots if slots else min(n_requests, MAX_SLOTS)
    if fit < 1:
        one = batch_bytes(config, steps, 1, max_chunk, kv_cache)
        raise DeviceError(f"not even one request slot fits: one needs {(slot + row) / 2**20:.0f} MiB of KV cache and "
                          f"buffers at -n {steps} ({one / 2**30:.2f} GiB with the step buffers and "
                          f"{RESERVE_BYTES / 2**30:.0f} GiB of reserve), {free_bytes / 2**30:.2f} GiB are free after "
                          f"the weights; a smaller -n{also}")
    if slots and slots > fit:
        raise DeviceError(f"--batch {slots} does not fit: at most {fit} request slots fit in free device memory "
                          f"at -n {steps}" + (f"; a smaller --batch or -n{also}" if hint else ""))
    n_slots = int(max(1, min(wanted, fit)))
    return BatchShape(n_slots, n_slots + chunk, chunk, steps, kv_cache)
