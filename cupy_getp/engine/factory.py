"""Which engine runs a model: `resolve_engine`, `create_engine`, and `load` (open + warm up).

Kept apart from the interface (`engine/base.py`) so that the engines import the interface without
importing each other.
"""

from __future__ import annotations

import os

from ..checkpoint import DEFAULT_SEED, TensorStore, Weights, open_weights
from ..errors import GetpError
from .base import Engine

ENGINES = ("numpy", "cupy", "auto")


def gpu_available() -> bool:
    """True when the GPU engine can run here (CuPy importable and a device visible)."""
    from ..gpu.device import probe

    return probe() is None


def resolve_engine(name: str) -> str:
    if name not in ENGINES:
        raise GetpError(f"unknown engine {name!r} (expected {', '.join(ENGINES)})")
    if name == "auto":
        return "cupy" if gpu_available() else "numpy"
    return name


def create_engine(weights: Weights, engine: str = "numpy", experts: str = "auto", steps: int | None = None,
                  kv_cache: str = "fp32") -> Engine:
    """An engine for `weights`, not yet warmed up. The GPU engine's `experts` storage (bf16, mxfp4 or auto:
    `gpu/experts.py`) is decided at warm-up for requests of `steps` positions (default seq_len) in batches whose
    KV cache holds `kv_cache` elements (the one its `batched` will be asked for); the numpy engine has one way
    (its KV cache is NumpyEngine's to choose)."""
    from ..gpu.experts import check_expert_choice

    check_expert_choice(experts)
    engine = resolve_engine(engine)
    if engine == "numpy":
        from ..reference import NumpyEngine

        return NumpyEngine(weights)
    from ..gpu.engine import CupyEngine

    return CupyEngine(weights, experts, steps, kv_cache=kv_cache)


def load(source: str | os.PathLike | TensorStore, engine: str = "numpy", seed: int = DEFAULT_SEED,
         config: dict | None = None, experts: str = "auto") -> Engine:
    """Open a model (`.bin` path, checkpoint directory, preset name "7m"/"20b"/"120b", or a store)
    and return a warmed-up engine: "numpy" (reference), "cupy" (GPU) or "auto". `seed` picks a
    preset's weights; `config` overrides a checkpoint directory's config fields ({"seq_len": 4096});
    `experts` is the GPU engine's expert storage: "bf16", "mxfp4" (the experts must come in MXFP4) or
    "auto" (BF16 where the model fits, else MXFP4)."""
    model = create_engine(open_weights(source, seed, config), engine, experts)
    model.warm_up()
    return model
