"""The engine interface shared by the numpy reference and the GPU engine.

An engine turns (token, pos) into logits with its own KV cache. Life cycle, as in the getp flow:
`warm_up()` (allocate, upload: no inference), any number of `forward()` calls, `finish()` (free
everything). `engine.factory.load()` returns an engine already warmed up.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..checkpoint import Weights
from ..config import ModelConfig
from ..errors import ArgumentError, EngineFinishedError, GetpError

# What `diff --layers` compares, recorded per layer in forward order.
TRACE_POINTS = (
    "attn_out",  # (n_attn_heads * D,) attention output before w_o
    "x_attn",  # (H,) residual after attention
    "router",  # (E,) router scores incl. bias
    "experts",  # (k,) chosen experts, int
    "moe_out",  # (H,) weighted sum of the experts' outputs
    "x_moe",  # (H,) residual after the MoE
)


@dataclass
class Trace:
    """Values recorded during one forward call: `values[layer][point]` and the logits."""

    values: list[dict[str, np.ndarray]] = field(default_factory=list)
    logits: np.ndarray | None = None

    def record(self, layer: int, point: str, value) -> None:
        while len(self.values) <= layer:
            self.values.append({})
        self.values[layer][point] = np.array(value, copy=True)


class Engine(ABC):
    """One model on one backend; `forward` is single-token, single-sequence decoding."""

    name: str
    batches = False  # has a batched mode (`batched()`)
    finished = False  # engines set it in finish(), and clear it in warm_up()

    def __init__(self, weights: Weights):
        self.weights = weights
        self.config: ModelConfig = weights.config

    @abstractmethod
    def warm_up(self, progress: Callable[[int], None] | None = None) -> None:
        """Allocate state and prepare weights; no inference. `progress(n)` hears of n weights loaded."""

    @abstractmethod
    def forward(self, token: int, pos: int, trace: Trace | None = None) -> np.ndarray:
        """Logits (V,) float32 for `token` at position `pos`; writes the KV cache at `pos`."""

    @abstractmethod
    def reset(self) -> None:
        """Forget the KV cache (positions restart at 0)."""

    @abstractmethod
    def finish(self) -> None:
        """Free everything `warm_up` allocated."""

    def batched(self, n_requests: int, steps: int, slots: int | None = None, precision: str | None = None,
                use_graphs: bool = True, max_chunk: int | None = None, kv_cache: str = "fp32",
                overlap: bool | None = None):
        """A batched engine over this one's weights (`gpu/batch.py`), or None where the engine runs one
        sequence at a time (the numpy reference)."""
        return None

    def storage_notes(self) -> list[str]:
        """What a warm-up note says of how the weights are held (the GPU engine: which expert storage and why,
        the device bytes); nothing for an engine with one way."""
        return []

    def check_not_finished(self) -> None:
        if self.finished:
            raise EngineFinishedError("the engine has been finished: warm_up() it again, or load a new one")

    def check_step(self, token: int, pos: int) -> None:
        self.check_not_finished()
        for name, value in (("token", token), ("pos", pos)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise ArgumentError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
        if not 0 <= token < self.config.vocab_size:
            raise GetpError(f"token id {token} out of range for a vocabulary of {self.config.vocab_size}")
        if not 0 <= pos < self.config.seq_len:
            raise GetpError(f"position {pos} out of range for seq_len {self.config.seq_len}")

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.finish()
