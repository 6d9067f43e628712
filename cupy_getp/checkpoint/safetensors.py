"""Published gpt-oss checkpoints: safetensors directories in the openai "original" or the Hugging Face
layout, MXFP4 or plain experts, read as a `TensorStore` of the spec's tensors.

Files are memory-mapped by reading the safetensors header ourselves (8-byte little-endian length,
JSON of name -> dtype, shape, data_offsets, then the data): numpy has no bfloat16, and the
`safetensors` package's numpy frontend refuses BF16 tensors, while a memmap gives zero-copy slices of
any tensor (BF16 as uint16 bits). Everything is converted to float32 slice by slice on read, so
memory stays bounded by the slice being read (an expert, a range of rows), never the model.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..bf16 import bf16_to_f32
from ..config import ModelConfig
from ..errors import CheckpointError
from .layout import LAYER_TENSORS, tensor_shapes
from .weights import FLOAT32, flat_range, per_layer_indices

# dtype name -> (numpy dtype of the stored bits, converter to float32 or None for integer data)
_DTYPES: dict[str, tuple[str, Callable | None]] = {
    "F32": ("<f4", lambda a: a),
    "F16": ("<f2", lambda a: a.astype(np.float32)),
    "BF16": ("<u2", bf16_to_f32),
    "F64": ("<f8", lambda a: a.astype(np.float32)),
    "U8": ("u1", None),
    "I8": ("i1", None),
}

# MXFP4: 4-bit e2m1 codes, low nibble first, each block of 32 values scaled by 2^(scale - 127).
FP4_VALUES = np.array([+0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0],
                      dtype=np.float32)

DEFAULT_SEQ_LEN = 2048  # the original runtime's exports (spec table); override with seq_len=...


def dequantize_mxfp4(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """(..., G, 16) uint8 codes and (..., G) uint8 exponents -> (..., G * 32) float32."""
    if blocks.shape[:-1] != scales.shape or blocks.shape[-1] != 16:
        raise CheckpointError(f"MXFP4 blocks {blocks.shape} and scales {scales.shape} do not match")
    blocks = np.asarray(blocks, np.uint8)
    values = np.stack([FP4_VALUES[blocks & 0x0F], FP4_VALUES[blocks >> 4]], axis=-1)  # (..., G, 16, 2)
    values = values.reshape(*blocks.shape[:-1], 32)
    values = np.ldexp(values, (np.asarray(scales, np.int32) - 127)[..., None]).astype(np.float32)
    return values.reshape(*blocks.shape[:-2], -1)


class SafetensorsFile:
    """One .safetensors file, memory-mapped; `get(name)` is a zero-copy view in the stored dtype."""

    def __init__(self, path: Path):
        self.path = path
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path}: not a safetensors file (too short)")
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                raise CheckpointError(f"{path}: not a safetensors file (header length {n} > file size)")
            try:
                header = json.loads(f.read(n))
            except ValueError:
                raise CheckpointError(f"{path}: not a safetensors file (bad JSON header)") from None
        header.pop("__metadata__", None)
        self.entries = header
        self.data_start = 8 + n
        self.map = np.memmap(path, dtype=np.uint8, mode="r") if size > self.data_start else None
        for name, entry in header.items():
            begin, end = entry["data_offsets"]
            if entry["dtype"] not in _DTYPES:
                continue  # unused dtypes only matter if asked for
            width = np.dtype(_DTYPES[entry["dtype"]][0]).itemsize
            if end - begin != width * math.prod(entry["shape"]) or self.data_start + end > size:
                raise CheckpointError(f"{path}: tensor {name} is truncated or malformed")

    def get(self, name: str) -> np.ndarray:
        entry = self.entries[name]
        if entry["dtype"] not in _DTYPES:
            raise CheckpointError(f"{self.path}: tensor {name} has unsupported dtype {entry['dtype']}")
        begin, end = entry["data_offsets"]
        raw = self.map[self.data_start + begin: self.data_start + end]
        return raw.view(_DTYPES[entry["dtype"]][0]).reshape(entry["shape"])

    def dtype(self, name: str) -> str:
        return self.entries[name]["dtype"]


class TensorDirectory:
    """Every tensor of every *.safetensors file in a directory (sharded checkpoints included)."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.files: dict[str, SafetensorsFile] = {}
        paths = sorted(directory.glob("*.safetensors"))
        if not paths:
            raise CheckpointError(f"checkpoint directory {directory} has no .safetensors files")
        for path in paths:
            file = SafetensorsFile(path)
            for name in file.entries:
                self.files[name] = file

    def __contains__(self, name: str) -> bool:
        return name in self.files

    def raw(self, name: str) -> np.ndarray:
        if name not in self.files:
            raise CheckpointError(f"checkpoint {self.directory}: tensor {name} is missing")
        return self.files[name].get(name)

    def f32(self, name: str, index: tuple = (), transpose: bool = False) -> np.ndarray:
        """float32 copy of tensor[index] (of its last two axes swapped first, when transpose)."""
        raw = self.raw(name)
        to_f32 = _DTYPES[self.files[name].dtype(name)][1]
        if to_f32 is None:
            raise CheckpointError(f"checkpoint {self.directory}: tensor {name} is not floating point")
        view = np.swapaxes(raw, -1, -2) if transpose else raw
        return np.ascontiguousarray(to_f32(view[index]), dtype=np.float32)

    def mxfp4(self, prefix: str, index: tuple = ()) -> np.ndarray:
        """Dequantized {prefix}blocks / {prefix}scales, indexed on their shared leading dimensions."""
        blocks, scales = self.raw(prefix + "blocks"), self.raw(prefix + "scales")
        return dequantize_mxfp4(blocks[index], scales[index])


class CheckpointStore:
    """A `TensorStore` over a checkpoint directory; `layout` maps spec names to the checkpoint's."""

    storage_dtype = FLOAT32

    def __init__(self, tensors: TensorDirectory, config: ModelConfig, layout):
        self.tensors, self.config, self.layout = tensors, config, layout
        self.shapes = tensor_shapes(config)
        self.description = f"{tensors.directory} ({layout.name} layout)"
        for name in ("embedding", "out"):  # cheap up-front check: a mismatched config fails here
            got = tuple(layout.global_shape(tensors, name))
            if got != self.shapes[name]:
                raise CheckpointError(f"{self.description}: {name} has shape {got}, config says {self.shapes[name]}")

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


def open_safetensors(directory: str | os.PathLike, overrides: dict | None = None) -> CheckpointStore:
    """A checkpoint directory in either layout. `overrides` sets ModelConfig fields the source config
    lacks or gets wrong (seq_len, say)."""
    from .layouts import detect_layout

    path = Path(directory)
    config_path = path / "config.json"
    try:
        source_config = json.loads(config_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint directory {path} has no config.json") from None
    except ValueError as e:
        raise CheckpointError(f"{config_path}: invalid JSON ({e})") from None
    tensors = TensorDirectory(path)
    layout = detect_layout(tensors, path)
    config = build_config(layout.config_fields(source_config, str(config_path)), overrides or {}, str(config_path))
    return CheckpointStore(tensors, config, layout)


def build_config(fields: dict, overrides: dict, source: str) -> ModelConfig:
    """A validated ModelConfig from a checkpoint's fields, `overrides` (`--config key=value`) winning."""
    names = {f.name: f.type for f in dataclasses.fields(ModelConfig)}
    for key in overrides:
        if key not in names:
            raise CheckpointError(f"unknown config field {key!r} (fields: {', '.join(names)})")
    merged = {**fields, **overrides}
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
