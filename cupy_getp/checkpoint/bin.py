"""The original runtime's `.bin` checkpoint: read through a memmap, validate, write.

Layout: the 60-byte header (`ModelConfig`), then every tensor of `layout.TENSOR_NAMES` back to back,
C order, little-endian, float32 (4 bytes per weight) or bfloat16 (2 bytes per weight, the variant
written by the original project's exporters). The two are told apart by the file size.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..config import HEADER_SIZE, ModelConfig
from ..errors import CheckpointError
from ..fileio import atomic_output, cannot, open_regular
from .layout import TENSOR_NAMES, bin_size, tensor_shapes
from .weights import BFLOAT16, FLOAT32, Weights, chunk_indices, source_files

_STORAGE = {FLOAT32: (np.dtype("<f4"), 4), BFLOAT16: (np.dtype("<u2"), 2)}

# Write in slices of at most this many weights (256 MiB of float32): memory stays bounded for 120b.
WRITE_CHUNK = 64 << 20


class BinStore:
    """Memory-mapped `.bin` file. Tensors are views into the map; nothing is read until used."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.files = (self.path,)
        self.description = str(path)
        try:
            with open_regular(self.path) as f:  # a FIFO would block, a device never end
                size = os.fstat(f.fileno()).st_size
                header = f.read(HEADER_SIZE)
        except OSError as e:
            raise cannot("read", path, e) from None
        self.config = ModelConfig.from_header(header, source=f"model file {path}")
        self.storage_dtype = storage_dtype_for_size(self.config, size, str(path))
        dtype, _ = _STORAGE[self.storage_dtype]
        flat = np.memmap(self.path, dtype=dtype, mode="r", offset=HEADER_SIZE)
        self.tensors: dict[str, np.ndarray] = {}
        offset = 0
        for name, shape in tensor_shapes(self.config).items():
            n = math.prod(shape)
            self.tensors[name] = flat[offset:offset + n].reshape(shape)
            offset += n

    def read(self, name: str, index: tuple[int, ...] = ()) -> np.ndarray:
        return self.tensors[name][index]


def storage_dtype_for_size(config: ModelConfig, size: int, source: str) -> str:
    """FLOAT32 or BFLOAT16 from the exact file size; anything else is a malformed file."""
    for dtype, (_, width) in _STORAGE.items():
        if size == bin_size(config, width):
            return dtype
    fp32, bf16 = bin_size(config, 4), bin_size(config, 2)
    problem = "truncated" if size < fp32 else "oversized"
    raise CheckpointError(f"model file {source} is {problem}: {size} bytes, but its header describes "
                          f"{fp32} bytes as float32 or {bf16} bytes as bfloat16")


def write_bin(path: str | os.PathLike, weights: Weights, dtype: str = FLOAT32,
              progress: Callable[[int], None] | None = None) -> int:
    """Write `weights` as a `.bin` file, tensor by tensor in file order, slice by slice.

    The file appears at `path` only once complete (temporary file + rename), and its size is checked.
    `progress(n)` is called with the number of weights written since the last call. Returns the size.
    """
    if dtype not in _STORAGE:
        raise CheckpointError(f"unknown .bin dtype {dtype!r} (expected float32 or bfloat16)")
    file_dtype, width = _STORAGE[dtype]
    config = weights.config
    expected = bin_size(config, width)
    with atomic_output(path, binary=True, inputs=source_files(weights.store), size=expected) as f:
        f.write(config.to_header())
        for name in TENSOR_NAMES:
            for index in chunk_indices(weights.shapes[name], WRITE_CHUNK):
                part = weights.f32(name, *index) if dtype == FLOAT32 else weights.bf16(name, *index)
                f.write(np.ascontiguousarray(part, dtype=file_dtype).tobytes())
                if progress:
                    progress(part.size)
        written = f.tell()
        if written != expected:  # a bug, not bad input: the temporary file is removed, nothing appears
            raise RuntimeError(f"write_bin wrote {written} bytes, expected {expected}")
    return written
