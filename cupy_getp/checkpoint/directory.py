"""Published gpt-oss checkpoints: a directory of `config.json` + safetensors files in the openai
"original" or the Hugging Face layout (`safetensors_layouts`), read as a `TensorStore` of the spec's
tensors."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np

from ..config import ModelConfig
from ..errors import CheckpointError
from ..fileio import read_text
from .layout import LAYER_TENSORS, MOE_WEIGHTS, TENSOR_NAMES, tensor_shapes
from .safetensors import MXFP4_BLOCK, TensorDirectory
from .safetensors_layouts import check_config_json, detect_layout
from .weights import FLOAT32, flat_range, per_layer_indices


class CheckpointStore:
    """A `TensorStore` over a checkpoint directory; `layout` maps spec names to the checkpoint's."""

    storage_dtype = FLOAT32

    def __init__(self, tensors: TensorDirectory, config: ModelConfig, layout, config_path: Path):
        self.tensors, self.config, self.layout = tensors, config, layout
        self.shapes = tensor_shapes(config)
        self.description = f"{tensors.directory} ({layout.name} layout)"
        self.files = (config_path, *sorted({file.path for file in tensors.files.values()}))
        self._check_complete()
        for name in ("embedding", "out"):  # cheap up-front check: a mismatched config fails here
            got = tuple(layout.global_shape(tensors, name))
            if got != self.shapes[name]:
                raise CheckpointError(f"{self.description}: {name} has shape {got}, config says {self.shapes[name]}")

    def _check_complete(self) -> None:
        """Every tensor the model needs is in the files (names only, nothing read): a checkpoint that
        cannot run fails at open, not halfway through loading."""
        keys = [key for name in TENSOR_NAMES for layer in (range(self.config.n_layers) if name in LAYER_TENSORS
                                                           else [None])
                for key in self.layout.keys(self.tensors, name, layer)]
        missing = [key for key in keys if key not in self.tensors]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise CheckpointError(f"checkpoint {self.tensors.directory}: tensor {missing[0]} is missing{more}")

    def read(self, name: str, index: tuple = ()) -> np.ndarray:
        if name not in LAYER_TENSORS:
            return self.layout.global_tensor(self.tensors, name, index)
        parts = per_layer_indices(index, self.config.n_layers)
        if parts is not None:
            return np.stack([self.read(name, part) for part in parts])
        out = self.layout.layer_tensor(self.tensors, name, index[0], tuple(index[1:]))
        if out.shape != flat_range(self.shapes[name][1:], tuple(index[1:]))[2]:
            raise CheckpointError(f"{self.description}: layer {index[0]} {name} has shape {out.shape}, "
                                  f"expected {self.shapes[name][1:]}")
        return out

    def read_mxfp4(self, name: str, index: tuple = ()) -> tuple[np.ndarray, np.ndarray] | None:
        """`Weights.mxfp4`: the blocks and scales of both published layouts, (E, rows, G, 16) and (E, rows, G)
        per layer, sliced on their leading dimensions and copied (one slice in host memory, never more)."""
        if name not in MOE_WEIGHTS:
            return None
        parts = per_layer_indices(index, self.config.n_layers)
        if parts is not None:
            pairs = [self.read_mxfp4(name, part) for part in parts]
            return None if pairs[0] is None else (np.stack([b for b, _ in pairs]), np.stack([s for _, s in pairs]))
        keys = self.layout.keys(self.tensors, name, index[0])
        if len(keys) != 2:
            return None
        blocks, scales = (self.tensors.raw(key) for key in keys)
        rows, cols = self.shapes[name][2:]
        want = (self.shapes[name][1], rows, -(-cols // MXFP4_BLOCK))
        if blocks.shape != (*want, MXFP4_BLOCK // 2) or scales.shape != want or blocks.dtype != np.uint8:
            raise CheckpointError(f"{self.description}: layer {index[0]} {name}: MXFP4 blocks {blocks.shape} and "
                                  f"scales {scales.shape}, expected {(*want, MXFP4_BLOCK // 2)} and {want} (uint8)")
        rest = tuple(index[1:])
        return np.ascontiguousarray(blocks[rest]), np.ascontiguousarray(scales[rest])


def open_safetensors(directory: str | os.PathLike, overrides: dict | None = None) -> CheckpointStore:
    """A checkpoint directory in either layout. `overrides` sets ModelConfig fields the source config
    lacks or gets wrong (seq_len, say)."""
    path = Path(directory)
    config_path = path / "config.json"
    source_config = read_config_json(config_path)
    tensors = TensorDirectory(path)
    layout = detect_layout(tensors, path)
    config = build_config(layout.config_fields(source_config, str(config_path)), overrides or {}, str(config_path))
    return CheckpointStore(tensors, config, layout, config_path)


def read_config_json(path: Path) -> dict:
    if not path.exists() and path.parent.is_dir():
        raise CheckpointError(f"checkpoint directory {path.parent} has no config.json")
    try:
        return check_config_json(json.loads(read_text(path, regular=True)), str(path))
    except ValueError as e:
        raise CheckpointError(f"{path}: invalid JSON ({e})") from None


def _override_value(key: str, text, real: bool) -> int | float:
    """`--config KEY=TEXT` as the field's type: a real number, or an integer written in any float
    notation that is exactly one (seq_len=1e3); else an error naming the option, not config.json."""
    if not isinstance(text, str):
        return text  # the Python API's dict of numbers
    if not real:
        with contextlib.suppress(ValueError):
            return int(text)  # exactly, however large
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if math.isfinite(value) and (real or value.is_integer()):
        return value if real else int(value)
    raise CheckpointError(f"--config {key}={text}: not {'a finite number' if real else 'an integer'}")


def build_config(fields: dict, overrides: dict, source: str) -> ModelConfig:
    """A validated ModelConfig from a checkpoint's fields, `overrides` (`--config key=value`) winning."""
    names = {f.name: f.type for f in dataclasses.fields(ModelConfig)}
    for key in overrides:
        if key not in names:
            raise CheckpointError(f"unknown config field {key!r} (fields: {', '.join(names)})")
    merged = {**fields, **{k: _override_value(k, v, names[k] in ("float", float)) for k, v in overrides.items()}}
    missing = [name for name in names if merged.get(name) is None]
    if missing:
        raise CheckpointError(f"{source}: no value for {', '.join(missing)}; set it with --config "
                              f"{missing[0]}=VALUE")
    values = {}
    for name, kind in names.items():
        cast = float if kind in ("float", float) else int
        try:
            values[name] = cast(merged[name])
        except (TypeError, ValueError):
            raise CheckpointError(f"{source}: {name} = {merged[name]!r} is not a number") from None
    return ModelConfig(**values).validate(source)
