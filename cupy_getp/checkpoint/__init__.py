"""Model sources: `.bin` files, safetensors checkpoint directories, synthetic presets."""

from __future__ import annotations

import os
from pathlib import Path

from ..config import PRESETS
from ..errors import ArgumentError, CheckpointError
from .bin import BinStore, write_bin
from .layout import MOE_WEIGHTS, TENSOR_NAMES, tensor_shapes
from .synthetic import DEFAULT_SEED, SyntheticStore, synthetic_store
from .weights import ArrayStore, LayerWeights, TensorStore, Weights

__all__ = [
    "ArrayStore", "BinStore", "DEFAULT_SEED", "LayerWeights", "MOE_WEIGHTS", "SyntheticStore", "TENSOR_NAMES",
    "TensorStore", "Weights", "is_preset", "open_store", "open_weights", "tensor_shapes", "write_bin",
]


def is_preset(source: str | os.PathLike) -> bool:
    """A preset name that is not also an existing path (a path always wins)."""
    return str(source) in PRESETS and not Path(source).exists()


def open_store(source: str | os.PathLike | TensorStore, seed: int = DEFAULT_SEED,
               config: dict | None = None) -> TensorStore:
    """A `.bin` path, a checkpoint directory, a preset name ("7m", "20b", "120b") or a store.
    `config` overrides fields of a checkpoint directory's config (seq_len, say)."""
    if not isinstance(source, (str, os.PathLike)):
        if not (hasattr(source, "read") and hasattr(source, "config")):
            raise ArgumentError(f"a model is a path, a preset name or a TensorStore, got {type(source).__name__} "
                                f"{source!r:.40}")
        return source
    path = Path(source)
    if config and not path.is_dir():
        raise CheckpointError(f"config overrides apply to checkpoint directories, and {source} is not one")
    if is_preset(source):
        return synthetic_store(str(source), seed)
    if path.is_dir():
        from .directory import open_safetensors

        return open_safetensors(path, config)
    if path.exists():
        return BinStore(path)
    raise CheckpointError(f"no model file, checkpoint directory or preset named {str(source)!r} "
                          f"(presets: {', '.join(PRESETS)})")


def open_weights(source: str | os.PathLike | TensorStore, seed: int = DEFAULT_SEED,
                 config: dict | None = None) -> Weights:
    return Weights(open_store(source, seed, config))
