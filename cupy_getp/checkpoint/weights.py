"""`Weights`: a model's tensors by their spec names, over any `TensorStore`.

A store knows how to produce one tensor, or one slice of it along its leading dimensions
(`read("w_mlp1", (layer, expert))`), in its own storage dtype: float32, or bfloat16 bit patterns as
uint16. `Weights` gives float32 (for compute) or bfloat16 (for the device's MoE buffers) on top of
that, converting only the slice asked for, so nothing ever holds a whole model in host memory unless
the store itself does.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..bf16 import bf16_to_f32, f32_to_bf16
from ..config import ModelConfig
from .layout import LAYER_TENSORS, TENSOR_NAMES, tensor_shapes

FLOAT32 = "float32"
BFLOAT16 = "bfloat16"


class TensorStore(Protocol):
    config: ModelConfig
    storage_dtype: str  # FLOAT32 or BFLOAT16 (uint16 bit patterns)
    description: str  # for messages: a path, "preset 7m (random weights, seed 42)", ...

    def read(self, name: str, index: tuple[int, ...] = ()) -> np.ndarray:
        """Tensor `name` indexed along its leading dimensions, C-contiguous, storage dtype."""
        ...


def source_files(store: TensorStore) -> tuple:
    """The files a store reads its tensors from (none for synthetic and in-memory models): an output
    must never replace one of them."""
    return tuple(getattr(store, "files", ()))


@dataclass(frozen=True)
class ExpertWeights:
    w_mlp1: np.ndarray  # (2I, H), rows interleaved gate/up
    b_mlp1: np.ndarray  # (2I,)
    w_mlp2: np.ndarray  # (H, I)
    b_mlp2: np.ndarray  # (H,)


class LayerWeights:
    """float32 views of one layer's tensors: `layer.w_qkv`, `layer.expert(e)`."""

    def __init__(self, weights: Weights, layer: int):
        self._weights = weights
        self.index = layer

    def __getattr__(self, name: str) -> np.ndarray:
        if name not in LAYER_TENSORS:
            raise AttributeError(name)
        return self._weights.f32(name, self.index)

    def expert(self, e: int) -> ExpertWeights:
        f32 = self._weights.f32
        return ExpertWeights(*(f32(n, self.index, e) for n in ("w_mlp1", "b_mlp1", "w_mlp2", "b_mlp2")))


class Weights:
    """Named float32 / bfloat16 access to a store's tensors."""

    def __init__(self, store: TensorStore):
        self.store = store
        self.config = store.config
        self.shapes = tensor_shapes(store.config)

    @property
    def description(self) -> str:
        return self.store.description

    def f32(self, name: str, *index: int) -> np.ndarray:
        a = self.store.read(name, index)
        return bf16_to_f32(a) if a.dtype == np.uint16 else a

    def bf16(self, name: str, *index: int) -> np.ndarray:
        a = self.store.read(name, index)
        return a if a.dtype == np.uint16 else f32_to_bf16(a)

    def mxfp4(self, name: str, *index: int) -> tuple[np.ndarray, np.ndarray] | None:
        """An expert matrix's slice as its store holds it in MXFP4, nothing widened: ((..., rows, G, 16)
        uint8 codes, (..., rows, G) uint8 E8M0 scales), rows padded to whole blocks of 32; None when the
        store has no MXFP4 form of it (a .bin, plain experts, BF16-only synthetic experts)."""
        read = getattr(self.store, "read_mxfp4", None)
        return read(name, index) if read else None

    def layer(self, layer: int) -> LayerWeights:
        return LayerWeights(self, layer)

    def embedding_row(self, token: int) -> np.ndarray:
        return self.f32("embedding", token)


class ArrayStore:
    """Tensors held in host memory as float32 arrays (materialised synthetic models, tests)."""

    storage_dtype = FLOAT32

    def __init__(self, config: ModelConfig, arrays: dict[str, np.ndarray], description: str = "in-memory model"):
        shapes = tensor_shapes(config)
        missing = [n for n in TENSOR_NAMES if n not in arrays]
        if missing:
            raise ValueError(f"ArrayStore: missing tensors {missing}")
        for name, shape in shapes.items():
            if tuple(arrays[name].shape) != shape:
                raise ValueError(f"ArrayStore: {name} has shape {arrays[name].shape}, expected {shape}")
        self.config = config
        self.arrays = {n: np.ascontiguousarray(arrays[n], dtype=np.float32) for n in TENSOR_NAMES}
        self.description = description

    def read(self, name: str, index: tuple[int, ...] = ()) -> np.ndarray:
        return self.arrays[name][index]

    @classmethod
    def materialize(cls, store: TensorStore) -> ArrayStore:
        """Read every tensor once into float32 host arrays."""
        weights = Weights(store)
        return cls(store.config, {n: weights.f32(n) for n in TENSOR_NAMES}, store.description)


def chunk_indices(shape: tuple[int, ...], max_elements: int) -> Iterator[tuple]:
    """Index tuples that split a tensor into C-order slices of at most `max_elements` elements (but
    never less than one innermost row), in storage order: integer indices on the leading dimensions,
    then a range (a slice) of the next one. `()` when the whole tensor fits."""
    if math.prod(shape) <= max_elements:
        yield ()
        return
    depth = 0  # the dimension to cut into ranges: one entry of it must fit
    while depth < len(shape) - 1 and math.prod(shape[depth + 1:]) > max_elements:
        depth += 1
    step = max(1, max_elements // math.prod(shape[depth + 1:]))
    for lead in np.ndindex(*shape[:depth]):
        for start in range(0, shape[depth], step):
            yield (*lead, slice(start, min(start + step, shape[depth])))


def per_layer_indices(index: tuple, n_layers: int) -> list[tuple] | None:
    """For stores that build layered tensors a layer at a time: the per-layer indices an index covers
    when it spans layers (no index, or a range on the layer axis), else None (one layer asked for)."""
    if index and not isinstance(index[0], slice):
        return None
    layers = range(n_layers)[index[0]] if index else range(n_layers)
    return [(l, *index[1:]) for l in layers]


def flat_range(shape: tuple[int, ...], index: tuple) -> tuple[int, int, tuple[int, ...]]:
    """(first element, element count, result shape) in C order of `array[index]`, for an index of
    integers optionally ending in a step-1 slice (what `chunk_indices` yields)."""
    ints, last = (index[:-1], index[-1]) if index and isinstance(index[-1], slice) else (index, None)
    depth = len(ints)
    start = sum(i * math.prod(shape[j + 1:]) for j, i in enumerate(ints))
    if last is None:
        return start, math.prod(shape[depth:]), tuple(shape[depth:])
    begin, end, step = last.indices(shape[depth])
    assert step == 1, "flat_range: slices must be contiguous"
    inner = math.prod(shape[depth + 1:])
    return start + begin * inner, (end - begin) * inner, (end - begin, *shape[depth + 1:])
