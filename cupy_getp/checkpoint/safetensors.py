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
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..bf16 import bf16_to_f32
from ..errors import CheckpointError

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
