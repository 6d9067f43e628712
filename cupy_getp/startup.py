"""Starting an engine: what is checked before any inference (the tokenizer and the model agree; a
large model on the numpy engine fits in memory, and what it will cost), then the warm-up."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .checkpoint import Weights
from .checkpoint.layout import moe_params, n_params
from .config import ModelConfig
from .engine.base import Engine
from .engine.factory import create_engine
from .errors import InputError
from .hostmem import HostMemoryError, available_memory
from .reference import numpy_holds_experts, numpy_host_bytes, numpy_kv_bytes
from .tokenizer import Tokenizer

# Rates of the numpy engine, measured on a 2-core x86 VM (numpy 2, OpenBLAS): float32 matvecs read
# ~13 GB/s of weights (the 20b unembedding, 2.3 GB, in 0.17 s); a 20b-shaped synthetic model, whose
# expert slices are generated on every step (4 experts x 24 layers = 2.4e9 weights), took 77.6 s per
# token, i.e. ~3e7 expert weights produced per second. Estimates only: more cores, more speed.
NUMPY_WEIGHT_BYTES_PER_S = 1e10
NUMPY_EXPERT_WEIGHTS_PER_S = 3e7
# A model whose numpy engine needs more than this is large enough to say what it costs first.
NOTE_BYTES = 1 << 30


@dataclass(frozen=True)
class Footprint:
    memory_bytes: int  # host memory held: converted weights and the KV cache
    tokens_per_s: float  # rough decode speed


def check_vocabularies(tokenizer: Tokenizer, config: ModelConfig) -> None:
    """Every id the tokenizer produces is a model input, and every id the model samples decodes."""
    if tokenizer.vocab_size != config.vocab_size:
        raise InputError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model's vocabulary is "
                         f"{config.vocab_size}: they must be the same size (pick the model's tokenizer with -z)")


def numpy_footprint(weights: Weights) -> Footprint:
    """A token reads the dense weights and k experts of every layer once; experts not held in memory
    are produced (converted or generated) on every step."""
    c = weights.config
    active_experts = moe_params(c) * c.experts_per_token // c.n_experts
    seconds = 4 * (n_params(c) - moe_params(c) + active_experts) / NUMPY_WEIGHT_BYTES_PER_S
    if not numpy_holds_experts(weights):
        seconds += active_experts / NUMPY_EXPERT_WEIGHTS_PER_S
    return Footprint(numpy_host_bytes(weights) + numpy_kv_bytes(c), 1 / seconds)


def check_startup(weights: Weights, engine: str, tokenizer: Tokenizer | None, experts: str = "auto") -> list[str]:
    """Raise GetpError for a run that cannot work; return notes on what an odd but valid one costs. `experts`:
    the GPU engine's expert storage asked for (`mxfp4` needs experts that come in MXFP4, on any engine)."""
    from .gpu.experts import check_expert_request

    if tokenizer is not None:
        check_vocabularies(tokenizer, weights.config)
    check_expert_request(weights, experts)
    if engine != "numpy":
        return []
    notes = [] if experts == "auto" else [f"--experts {experts} applies to the GPU engine, not the numpy engine"]
    return notes + _numpy_cost(weights)


def _numpy_cost(weights: Weights) -> list[str]:
    """Refuse a numpy run whose memory is not available; a note on what a large one costs."""
    cost = numpy_footprint(weights)
    available = available_memory()
    if available is not None and cost.memory_bytes > available:
        raise HostMemoryError(f"the numpy engine needs ~{cost.memory_bytes / 1e9:.1f} GB of memory for "
                        f"{weights.description}, {available / 1e9:.1f} GB is available (use --engine cupy)")
    if cost.memory_bytes < NOTE_BYTES:
        return []
    return [f"the numpy engine will hold ~{cost.memory_bytes / 1e9:.1f} GB of memory and run at roughly "
            f"{cost.tokens_per_s:.2g} tok/s on {weights.description}"]


def start_engine(weights: Weights, engine: str, progress: Callable[[int], None] | None = None,
                 experts: str = "auto", steps: int | None = None, kv_cache: str = "fp32") -> Engine:
    """A warmed-up engine; `progress(n)` hears of every n weights loaded; `experts`, `steps` and `kv_cache` as
    `create_engine`'s."""
    model = create_engine(weights, engine, experts, steps, kv_cache)
    model.warm_up(progress=progress)
    return model
