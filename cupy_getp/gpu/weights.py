"""Weights on the device: FP32, except the MoE matrices `w_mlp1`, `w_mlp2` as BF16 (uint16 bits), and
the dense GEMM weights (`w_qkv`, `w_o`, `w_router`, `out`) as BF16 where every value is exactly a
BF16 value (published gpt-oss checkpoints: all of them), which changes no product and halves their bytes.

Filled slice by slice (an expert at a time for the MoE), so the host never holds more than one
slice: a `.bin` is read through its memmap and converted to BF16 per slice; a bfloat16 `.bin` is
uploaded as it is; a synthetic model is generated directly on the device by `kernels/synthetic.hip`
(bit-identical to the host generator), which is how a 20b-shaped model runs with no file at all.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ..checkpoint import MOE_WEIGHTS, SyntheticStore, TENSOR_NAMES, Weights
from ..checkpoint.layout import LAYER_TENSORS
from ..checkpoint.safetensors import MXFP4_BLOCK
from ..checkpoint.synthetic import stream_key
from ..checkpoint.weights import BFLOAT16, chunk_indices
from ..errors import DeviceError
from ..hostmem import allocating as allocating_on_host
from .device import Device, gib, out_of_memory_line
from .kernels import Kernels
from .launch.common import Mxfp4Matrix

UPLOAD_CHUNK = 16 << 20  # weights per host slice: 64 MiB of float32

EXPERT_STORAGES = ("bf16", "mxfp4")  # the MoE matrices on the device: BF16 bits, or MXFP4 as stored

# Tensors with an expert axis (axis 1): a device of expert parallelism holds experts [lo, hi) of them only.
EXPERT_TENSORS = ("w_mlp1", "b_mlp1", "w_mlp2", "b_mlp2")

# Dense weights read by matvecs / GEMMs, stored as BF16 when that is lossless (tested at warm-up).
DENSE_GEMM_WEIGHTS = ("w_qkv", "w_o", "w_router", "out")


class DeviceWeights:
    """`w.<name>`: one CuPy array per tensor of the spec's table; `w.layer(l)` for per-layer views.
    `expert_range` (lo, hi): only experts [lo, hi) of every layer (expert parallelism, gpu/expert_parallel.py)."""

    def __init__(self, weights: Weights, device: Device, kernels: Kernels,
                 progress: Callable[[int], None] | None = None, experts: str = "bf16",
                 expert_range: tuple[int, int] | None = None):
        if experts not in EXPERT_STORAGES:
            raise ValueError(f"expert storage {experts!r}, expected one of {EXPERT_STORAGES}")
        self.config = weights.config
        self.expert_range = expert_range or (0, self.config.n_experts)
        self.arrays: dict[str, object] = {}
        if experts == "mxfp4":
            check_mxfp4_source(weights)
        shapes = device_shapes(weights, self.expert_range)
        check_weights_fit(weights, device, experts, self.expert_range)
        with device.allocating("the weights", weights_remedy(weights, experts)):
            for name in TENSOR_NAMES:
                self.arrays[name] = _empty(shapes[name], experts if name in MOE_WEIGHTS else "fp32")
            if isinstance(weights.store, SyntheticStore):
                self._generate(weights.store, kernels, progress)
            else:
                self._upload(weights, device, progress)
            device.synchronize("weight upload")
            self.storage = {name: experts if name in MOE_WEIGHTS else "fp32" for name in self.arrays}
            for name in DENSE_GEMM_WEIGHTS:
                self._store_bf16_if_exact(name)
        # Views built once: slicing a CuPy array costs microseconds, and a step takes ~12 per layer.
        self._layers = [_DeviceLayer({n: self.arrays[n][l] for n in LAYER_TENSORS})
                        for l in range(self.config.n_layers)]

    def __getattr__(self, name: str):
        try:
            return self.__dict__["arrays"][name]
        except KeyError:
            raise AttributeError(name) from None

    def layer(self, l: int) -> _DeviceLayer:
        return self._layers[l]

    def _upload(self, weights: Weights, device: Device, progress) -> None:
        for name, dst in self.arrays.items():
            convert = weights.bf16 if name in MOE_WEIGHTS else weights.f32
            for index, host_index in self._upload_indices(name, dst.shape):
                part = dst[index]
                if isinstance(part, Mxfp4Matrix):  # as stored: blocks and scales, nothing widened
                    blocks, scales = _host_slice(weights, name, host_index, part.size, weights.mxfp4)
                    device.upload(part.blocks, blocks)
                    device.upload(part.scales, scales)
                else:
                    device.upload(part, _host_slice(weights, name, host_index, part.size, convert))
                if progress:
                    progress(part.size)

    def _upload_indices(self, name: str, shape: tuple):
        """(device index, host index) of each upload slice: the same, or per (layer, expert) with the host's
        expert lo + e where the device holds experts [lo, hi) only."""
        lo, hi = self.expert_range
        if name not in EXPERT_TENSORS or (lo, hi) == (0, self.config.n_experts):
            yield from ((index, index) for index in chunk_indices(shape, UPLOAD_CHUNK))
            return
        for layer, expert in np.ndindex(*shape[:2]):
            for index in chunk_indices(shape[2:], UPLOAD_CHUNK):
                yield (layer, expert, *index), (layer, lo + expert, *index)

    def _generate(self, store: SyntheticStore, kernels: Kernels, progress) -> None:
        for name, dst in self.arrays.items():
            init = store.inits[name]
            layers = range(dst.shape[0]) if name in LAYER_TENSORS else [None]
            # the experts before this device's: their elements (or MXFP4 rows) come first in a layer's stream
            skipped = self.expert_range[0] if name in EXPERT_TENSORS else 0
            for layer in layers:
                part = dst if layer is None else dst[layer]
                start = skipped * math.prod(part.shape[1:])
                if isinstance(part, Mxfp4Matrix):
                    kernels.synthetic_mxfp4_codes(part.blocks, part.scales, skipped * part.shape[1],
                                                  store.mxfp4_stream(name, layer))
                elif store.is_mxfp4(name):
                    kernels.synthetic_mxfp4(part.reshape(-1), start, store.mxfp4_stream(name, layer))
                else:
                    kernels.synthetic(part.reshape(-1), start, stream_key(store.seed, name, layer), init.scale,
                                      init.offset, store.rounds_to_bf16(name))
                if progress:
                    progress(part.size)

    def _store_bf16_if_exact(self, name: str) -> None:
        import cupy

        bits = bf16_bits_if_exact(cupy, self.arrays[name])
        if bits is not None:
            self.arrays[name] = bits
            self.storage[name] = "bf16 (lossless)"

    def describe_storage(self) -> str:
        return describe_storage(self.storage)

    def nbytes(self) -> int:
        """Device bytes the weights hold (an MXFP4 tensor's blocks and scales)."""
        return sum(a.blocks.nbytes + a.scales.nbytes if isinstance(a, Mxfp4Matrix) else a.nbytes
                   for a in self.arrays.values())

    def free(self) -> None:
        self.arrays.clear()
        self._layers.clear()


class _DeviceLayer:
    """Views of layer l's tensors, named as `LayerWeights`' (the reference's per-layer access)."""

    def __init__(self, views: dict):
        self.__dict__.update(views)


def bf16_bits_if_exact(xp, values):
    """The BF16 bits (uint16) of float32 `values` when every value is a BF16 value (its low 16 bits are
    zero), else None. `xp` is numpy or cupy; little-endian, so half 2i + 1 of the uint16 view is value i's
    high half. Temporaries: a bool per value and the result, never a full-size uint32 copy."""
    halves = values.view(xp.uint16).reshape(-1, 2)  # (n, 2): low, high
    if bool(xp.any(halves[:, 0])):
        return None
    return xp.ascontiguousarray(halves[:, 1]).reshape(values.shape)


def describe_storage(storage: dict[str, str]) -> str:
    """One line: which tensors are (or will be) stored how on the device."""
    kinds: dict[str, list[str]] = {}
    for name, kind in storage.items():
        kinds.setdefault(kind, []).append(name)
    return "; ".join(f"{kind}: {', '.join(names)}" for kind, names in kinds.items())


def _host_slice(weights: Weights, name: str, index: tuple, n_weights: int, read):
    """`read(name, *index)`: a slice read and converted on the host; running out of host memory there is
    one line naming the slice and its size (FP32 bytes: the most a conversion holds)."""
    with allocating_on_host(f"{name}{_index_text(index)} of {weights.description} while loading the weights",
                            4 * n_weights):
        return read(name, *index)


def _index_text(index: tuple) -> str:
    """`[0, 8:16]` for a slice of a tensor; nothing for the whole of it."""
    if not index:
        return ""
    return "[" + ", ".join(f"{i.start}:{i.stop}" if isinstance(i, slice) else str(i) for i in index) + "]"


def planned_storage(weights: Weights, experts: str = "bf16") -> dict[str, str]:
    """How `DeviceWeights` will store each tensor with `experts` storage, decided on the host with no GPU
    (for `info`)."""
    storage = {}
    for name in TENSOR_NAMES:
        if name in MOE_WEIGHTS:
            storage[name] = experts
        elif name in DENSE_GEMM_WEIGHTS and bf16_exact_on_host(weights, name):
            storage[name] = "bf16 (lossless)"
        else:
            storage[name] = "fp32"
    return storage


def bf16_exact_on_host(weights: Weights, name: str) -> bool:
    """Whether every value of `name` is a bfloat16 value: known for synthetic and bfloat16 stores, else
    read slice by slice."""
    store = weights.store
    if isinstance(store, SyntheticStore):
        return store.rounds_to_bf16(name)
    if store.storage_dtype == BFLOAT16:
        return True
    for index in chunk_indices(weights.shapes[name], UPLOAD_CHUNK):
        if bf16_bits_if_exact(np, np.ascontiguousarray(weights.f32(name, *index))) is None:
            return False
    return True


def storage_bytes(weights: Weights, storage: dict[str, str]) -> int:
    """Device bytes of the weights stored as `storage` says (BF16: 2 bytes a weight, FP32: 4, MXFP4: 17 per
    32 of a row, the last block padded)."""
    return sum(tensor_bytes(weights.shapes[name], kind) for name, kind in storage.items())


def tensor_bytes(shape: tuple, kind: str) -> int:
    if kind == "mxfp4":
        return math.prod(shape[:-1]) * -(-shape[-1] // MXFP4_BLOCK) * (MXFP4_BLOCK // 2 + 1)
    return math.prod(shape) * (4 if kind == "fp32" else 2)


def _empty(shape: tuple, kind: str):
    """An uninitialised device tensor of `kind`: fp32, bf16 (uint16 bits) or mxfp4 (an `Mxfp4Matrix`)."""
    import cupy

    if kind == "mxfp4":
        groups = -(-shape[-1] // MXFP4_BLOCK)
        return Mxfp4Matrix(cupy.empty((*shape[:-1], groups, MXFP4_BLOCK // 2), np.uint8),
                           cupy.empty((*shape[:-1], groups), np.uint8), shape[-1])
    return cupy.empty(shape, np.float32 if kind == "fp32" else np.uint16)


def check_mxfp4_source(weights: Weights) -> None:
    """MXFP4 storage keeps experts as stored: every layer's must come in MXFP4 (read one row of each)."""
    missing = _first_without_mxfp4(weights)
    if missing is not None:
        layer, name = missing
        raise DeviceError(f"MXFP4 expert storage needs experts stored as MXFP4 (a published checkpoint or a "
                                  f"synthetic preset); {weights.description} holds layer {layer} {name} otherwise: "
                                  f"use BF16 expert storage")


def has_mxfp4_source(weights: Weights) -> bool:
    """Whether every expert matrix comes in MXFP4 (what MXFP4 storage needs)."""
    return _first_without_mxfp4(weights) is None


def _first_without_mxfp4(weights: Weights) -> tuple[int, str] | None:
    """(layer, name) of the first expert matrix with no MXFP4 form (one row of each read), or None."""
    for name in MOE_WEIGHTS:
        for layer in range(weights.config.n_layers):
            if weights.mxfp4(name, layer, 0, slice(0, 1)) is None:
                return layer, name
    return None


def device_shapes(weights: Weights, expert_range: tuple[int, int] | None = None) -> dict[str, tuple]:
    """Every tensor's shape on the device: with `expert_range` (lo, hi), experts [lo, hi) only."""
    lo, hi = expert_range or (0, weights.config.n_experts)
    if not 0 <= lo < hi <= weights.config.n_experts:
        raise ValueError(f"expert range {lo}..{hi} outside the model's {weights.config.n_experts} experts")
    return {name: (shape[0], hi - lo, *shape[2:]) if name in EXPERT_TENSORS else shape
            for name, shape in weights.shapes.items()}


def upload_bytes(weights: Weights, experts: str = "bf16", expert_range: tuple[int, int] | None = None) -> int:
    """Device bytes `DeviceWeights` allocates before any dense tensor turns to BF16: experts as `experts`, FP32 rest
    (experts [lo, hi) only with `expert_range`)."""
    shapes = device_shapes(weights, expert_range)
    return sum(tensor_bytes(shapes[name], experts if name in MOE_WEIGHTS else "fp32") for name in TENSOR_NAMES)


def weights_remedy(weights: Weights, experts: str = "bf16") -> str:
    """What would help weights that do not fit: a device with more free memory; with BF16 experts that
    come in MXFP4, `--experts mxfp4` and its size."""
    if experts == "mxfp4" or not has_mxfp4_source(weights):
        return "a device with more free memory"
    return (f"--experts mxfp4 (the weights then need {gib(upload_bytes(weights, 'mxfp4'))}), or a device with "
            f"more free memory")


def check_weights_fit(weights: Weights, device: Device, experts: str = "bf16",
                      expert_range: tuple[int, int] | None = None) -> None:
    """Refuse, before allocating anything, weights larger than what the device can still allocate."""
    needed, free = upload_bytes(weights, experts, expert_range), device.allocatable_bytes()
    if needed > free:
        raise DeviceError(out_of_memory_line(f"the weights ({gib(needed)}, {experts.upper()} experts)", None, free,
                                             device.device_free_bytes()[1], weights_remedy(weights, experts)))
