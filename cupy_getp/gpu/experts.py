"""Which storage the MoE expert matrices get on the device (`--experts bf16|mxfp4|auto`), decided in one
place, `choose_expert_storage`, from what the GPU engine will allocate.

BF16 is the spec's storage. MXFP4 keeps the experts as the published checkpoints store them (17 bytes per
32 weights instead of 64); every MXFP4 value is a BF16 value and the kernels widen it exactly, so both give
the same bits. `auto` keeps BF16 where the model fits with room for at least one request slot (its KV cache of
the element `--kv-cache` names), and takes MXFP4 where it does not and the experts come in MXFP4.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..checkpoint import Weights
from ..errors import GetpError
from .batch_shape import MAX_SLOTS, batch_bytes, one_slot_bytes, slots_that_fit
from .device import gib
from .weights import DENSE_GEMM_WEIGHTS, check_mxfp4_source, has_mxfp4_source, upload_bytes

EXPERT_CHOICES = ("auto", "bf16", "mxfp4")


@dataclass(frozen=True)
class ExpertStorage:
    """The chosen storage and why; `mxfp4_saves`: the bytes `--experts mxfp4` would free, where the experts
    are BF16 and come in MXFP4 (0 otherwise), for the out-of-memory lines' remedies."""

    storage: str | None  # "bf16" or "mxfp4"; None: auto with no device to decide on (`info` without a GPU)
    reason: str
    mxfp4_saves: int = 0

    def describe(self) -> str:
        kind = self.storage.upper() if self.storage else "BF16 or MXFP4"
        return f"experts: {kind} ({self.reason})"

    def hint(self) -> str:
        """`--experts mxfp4` and what it frees, where it would free memory; else nothing."""
        return f"--experts mxfp4 ({gib(self.mxfp4_saves)} less for the weights)" if self.mxfp4_saves > 0 else ""

    def remedy(self, remedy: str) -> str:
        """`remedy`, and `--experts mxfp4` where it would free memory."""
        return f"{remedy}, or {self.hint()}" if self.hint() else remedy


def check_expert_choice(requested: str) -> str:
    if requested not in EXPERT_CHOICES:
        raise GetpError(f"unknown expert storage {requested!r} (expected {', '.join(EXPERT_CHOICES)})")
    return requested


def check_expert_request(weights: Weights, requested: str) -> None:
    """Before anything loads: a known storage, and for `mxfp4` experts that come in MXFP4 (one line if not)."""
    check_expert_choice(requested)
    if requested == "mxfp4":
        check_mxfp4_source(weights)


def choose_expert_storage(weights: Weights, free_bytes: int | None, requested: str = "auto",
                          steps: int | None = None, kv_cache: str = "fp32") -> ExpertStorage:
    """The expert storage for `weights` on a device with `free_bytes` allocatable (None: not known), for
    requests of `steps` positions (default seq_len) in a batched engine whose KV cache holds `kv_cache` elements
    (KV_CACHE_DTYPES). `mxfp4` is refused in one line unless every expert comes in MXFP4; `auto` is BF16 when
    `device_bytes(..., "bf16", steps, kv_cache)` fit (its request slots counted with that cache), else MXFP4 when
    the experts come in MXFP4, else BF16 (whose weights or slots then end in the out-of-memory line)."""
    check_expert_request(weights, requested)
    if requested == "mxfp4":
        return ExpertStorage("mxfp4", "--experts mxfp4")
    mxfp4 = has_mxfp4_source(weights)
    saves = upload_bytes(weights, "bf16") - upload_bytes(weights, "mxfp4") if mxfp4 else 0
    if requested == "bf16":
        return ExpertStorage("bf16", "--experts bf16", saves)
    steps = steps or weights.config.seq_len
    need, at = device_bytes(weights, "bf16", steps, kv_cache), f"at -n {steps} with {kv_cache} KV caches"
    if free_bytes is None:
        otherwise = f"else MXFP4 ({gib(device_bytes(weights, 'mxfp4', steps, kv_cache))})" if mxfp4 else \
            "the experts do not come in MXFP4"
        return ExpertStorage(None, f"auto: depends on the device: BF16 where {gib(need)} are free {at}; {otherwise}")
    if need <= free_bytes:
        free = free_bytes - resident_bytes(weights, "bf16")
        slots = min(MAX_SLOTS, slots_that_fit(weights.config, steps, free, kv_cache=kv_cache))
        return ExpertStorage("bf16", f"auto: fits with room for {slots} request slots {at}", saves)
    short = f"BF16 experts need {gib(need)} {at}, {gib(free_bytes)} free"
    if mxfp4:
        return ExpertStorage("mxfp4", f"auto: {short}")
    return ExpertStorage("bf16", f"auto: {short}, and the experts do not come in MXFP4", saves)


def rank_expert_storage(requested: str, held_experts: tuple[int, int], rank: int, ranks: int) -> ExpertStorage:
    """A rank's storage under expert parallelism (it holds experts [lo, hi) of each layer): as asked, `auto`
    taking BF16 (the spec's storage, which is what spreading the experts over several GPUs makes room for;
    where a rank's slice does not fit, the weights' out-of-memory line names `--experts mxfp4`)."""
    lo, hi = held_experts
    held = f"experts {lo}..{hi - 1} of each layer on this GPU (rank {rank} of {ranks})"
    storage = "bf16" if requested == "auto" else requested
    return ExpertStorage(storage, f"--expert-parallel: {held}" + (", auto: BF16" if requested == "auto" else ""))


def device_bytes(weights: Weights, experts: str, steps: int, kv_cache: str = "fp32") -> int:
    """Everything the GPU engine allocates for requests of `steps` positions with one request slot: the
    single-sequence engine's one-slot model (its KV cache FP32 whatever `kv_cache`), the weights as uploaded, then
    the larger of the dense weights' BF16 conversion temporaries and one slot's batched engine with a KV cache of
    `kv_cache` elements (the conversion ends before the batch is sized)."""
    return (resident_bytes(weights, experts)
            + max(conversion_bytes(weights), batch_bytes(weights.config, steps, 1, kv_cache=kv_cache)))


def resident_bytes(weights: Weights, experts: str) -> int:
    """The single-sequence engine's one-slot model (allocated on its first `forward`, counted whether or not it
    comes: `generate` and `diff` have it, getp does not) and the weights as uploaded (dense ones FP32 until
    converted)."""
    return one_slot_bytes(weights.config) + upload_bytes(weights, experts)


def conversion_bytes(weights: Weights) -> int:
    """Temporaries of a dense weight's lossless BF16 conversion (`bf16_bits_if_exact`): a bool per value and
    the BF16 result, for the largest of them."""
    return 3 * max(math.prod(weights.shapes[name]) for name in DENSE_GEMM_WEIGHTS)
