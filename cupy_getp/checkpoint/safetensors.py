"""The safetensors file format: memory-mapped tensors of any dtype, and MXFP4 dequantization.

Files are memory-mapped by reading the safetensors header ourselves (8-byte little-endian length,
JSON of name -> dtype, shape, data_offsets, then the data): numpy has no bfloat16, and the
`safetensors` package's numpy frontend refuses BF16 tensors, while a memmap gives zero-copy slices of
any tensor (BF16 as uint16 bits). Everything is converted to float32 slice by slice on read, so
memory stays bounded by the slice being read (an expert, a range of rows), never the model.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..bf16 import bf16_to_f32
from ..errors import CheckpointError
from ..fileio import cannot, open_regular

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
MXFP4_BLOCK = 32
FP4_VALUES = np.array([+0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0],
                      dtype=np.float32)


def dequantize_mxfp4(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """(..., G, 16) uint8 codes and (..., G) uint8 exponents -> (..., G * 32) float32."""
    if blocks.shape[:-1] != scales.shape or blocks.shape[-1] != 16:
        raise CheckpointError(f"MXFP4 blocks {blocks.shape} and scales {scales.shape} do not match")
    blocks = np.asarray(blocks, np.uint8)
    values = np.stack([FP4_VALUES[blocks & 0x0F], FP4_VALUES[blocks >> 4]], axis=-1)  # (..., G, 16, 2)
    values = values.reshape(*blocks.shape[:-1], MXFP4_BLOCK)
    values = np.ldexp(values, (np.asarray(scales, np.int32) - 127)[..., None]).astype(np.float32)
    return values.reshape(*blocks.shape[:-2], -1)


class SafetensorsFile:
    """One .safetensors file, memory-mapped; `get(name)` is a zero-copy view in the stored dtype."""

    def __init__(self, path: Path):
        self.path = path
        try:
            with open_regular(path) as f:
                size = os.fstat(f.fileno()).st_size
                head = f.read(8)
                if len(head) < 8:
                    raise CheckpointError(f"{path}: not a safetensors file (too short)")
                (n,) = struct.unpack("<Q", head)
                if n > size - 8:
                    raise CheckpointError(f"{path}: not a safetensors file (header length {n} > file size)")
                text = f.read(n)
        except OSError as e:
            raise cannot("read", path, e) from None
        try:
            header = json.loads(text)
        except ValueError:
            raise CheckpointError(f"{path}: not a safetensors file (bad JSON header)") from None
        self.data_start = 8 + n
        self.entries = checked_header(header, size - self.data_start, str(path))
        self.map = np.memmap(path, dtype=np.uint8, mode="r") if size > self.data_start else None

    def get(self, name: str) -> np.ndarray:
        entry = self.entries[name]
        if entry["dtype"] not in _DTYPES:
            raise CheckpointError(f"{self.path}: tensor {name} has unsupported dtype {entry['dtype']}")
        begin, end = entry["data_offsets"]
        raw = self.map[self.data_start + begin: self.data_start + end]
        return raw.view(_DTYPES[entry["dtype"]][0]).reshape(entry["shape"])

    def dtype(self, name: str) -> str:
        return self.entries[name]["dtype"]


def checked_header(header, data_size: int, source: str) -> dict[str, dict]:
    """The header's tensor entries, every field of the right type and inside the data: the one place
    safetensors JSON is checked, so nothing later meets a list where an object belongs."""
    if not isinstance(header, dict):
        raise CheckpointError(f"{source}: safetensors header is not a JSON object")
    entries = {name: entry for name, entry in header.items() if name != "__metadata__"}
    for name, entry in entries.items():
        problem = _entry_problem(entry, data_size)
        if problem:
            raise CheckpointError(f"{source}: tensor {name}: {problem}")
    return entries


def _entry_problem(entry, data_size: int) -> str | None:
    if not isinstance(entry, dict):
        return "entry is not a JSON object"
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str):
        return f"dtype must be a string, got {dtype!r}"
    if not (isinstance(shape, list) and all(_is_count(d) for d in shape)):
        return f"shape must be a list of non-negative integers, got {shape!r}"
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)):
        return f"data_offsets must be two non-negative integers, got {offsets!r}"
    begin, end = offsets
    if not begin <= end <= data_size:
        return f"data_offsets {offsets} outside the file's {data_size} data bytes (truncated?)"
    if dtype in _DTYPES and end - begin != np.dtype(_DTYPES[dtype][0]).itemsize * math.prod(shape):
        return f"data_offsets {offsets} do not hold a {dtype} tensor of shape {shape}"
    return None  # unknown dtypes only matter if asked for (get)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class TensorDirectory:
    """Every tensor of every *.safetensors file in a directory (sharded checkpoints included)."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.files: dict[str, SafetensorsFile] = {}
        try:  # glob would say nothing of a directory it may not list
            paths = sorted(directory / name for name in os.listdir(directory)
                           if name.endswith(".safetensors") and not name.startswith("."))
        except OSError as e:
            raise cannot("read", directory, e) from None
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
