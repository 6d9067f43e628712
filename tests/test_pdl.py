"""Programmatic dependent launch (gpu/launch/pdl.py) without a GPU: the driver's structures as cuda.h lays them
out, kernel arguments packed as CuPy packs them, the launch path taken only while a graph is captured, and the
probe's answers where the device or the setting rules it out. On the GPU: test_gpu_batch_engine's
test_graph_steps_give_the_eager_steps_logits_bits."""

from __future__ import annotations

import ctypes
import struct

import numpy as np
import pytest

from cupy_getp.gpu.kernels import Kernels
from cupy_getp.gpu.launch import pdl
from cupy_getp.gpu.launch.tensor_map import map_argument

from batch_fakes import FakeDevice


def test_structures_have_the_driver_layout():
    # cuda.h (CUDA 12, 13): CUlaunchAttribute = id, pad[4], a 64-byte union; CUlaunchConfig's stream after the
    # seven unsigned ints, 8-byte aligned.
    assert ctypes.sizeof(pdl.LaunchAttribute) == 72
    assert pdl.LaunchAttribute.value.offset == 8
    assert ctypes.sizeof(pdl.LaunchConfig) == 56
    assert (pdl.LaunchConfig.stream.offset, pdl.LaunchConfig.attrs.offset, pdl.LaunchConfig.n_attrs.offset) == \
        (32, 40, 48)


class DeviceArray:
    """What the packer reads of a CuPy array: the CUDA array interface's presence and data.ptr."""

    __cuda_array_interface__ = {}

    def __init__(self, ptr):
        self.data = type("Memory", (), {"ptr": ptr})()


def argument_bytes(args) -> list[bytes]:
    values, pointers = pdl.kernel_arguments(args)
    assert [pointers[i] for i in range(len(values))] == [ctypes.addressof(v) for v in values]
    return [ctypes.string_at(ctypes.addressof(v), ctypes.sizeof(v)) for v in values]


def test_arguments_are_packed_as_cupy_passes_them():
    tensor_map = map_argument(bytes(range(128)))
    got = argument_bytes((DeviceArray(0x7F0012345600), None, np.int32(-3), np.float32(1.5), np.uint32(7),
                          tensor_map, 5, 2.0, True))
    assert got[0] == struct.pack("<Q", 0x7F0012345600)
    assert got[1] == struct.pack("<Q", 0)
    assert got[2] == struct.pack("<i", -3)
    assert got[3] == struct.pack("<f", 1.5)
    assert got[4] == struct.pack("<I", 7)
    assert got[5][:128] == bytes(range(128))  # the map's 128 bytes (a string buffer holds one more, a NUL)
    assert got[6][:8] == struct.pack("<q", 5) and got[7][:8] == struct.pack("<d", 2.0) and got[8][:1] == b"\x01"


@pytest.mark.parametrize("bad", [[1, 2], np.zeros(2, np.int32), "x"])
def test_an_argument_of_no_known_kind_is_refused_by_position(bad):
    with pytest.raises(TypeError, match="kernel argument 1"):
        pdl.kernel_arguments((None, bad))


def test_grids_and_blocks_take_one_to_three_sizes():
    assert pdl.dims((5,)) == (5, 1, 1) and pdl.dims((2, 3)) == (2, 3, 1) and pdl.dims((np.int64(4), 1, 2)) == (4, 1, 2)
    for bad in ((), (1, 1, 1, 1), (0,), (3, -1)):
        with pytest.raises(ValueError):
            pdl.dims(bad)


class Recorder:
    def __init__(self):
        self.calls = []

    def launch(self, *call):
        self.calls.append(("pdl", call))

    def __call__(self, grid, block, args, shared_mem=0, stream=None):
        self.calls.append(("cupy", (grid, block, args, shared_mem)))


def bare_kernels(recorder, pdl_launch):
    """A Kernels with one kernel 'k' (the recorder) and nothing built: its _launch as it is."""
    kernels = Kernels.__new__(Kernels)
    device = FakeDevice()
    device.stream = type("Stream", (), {"ptr": 1234})()
    device.counters = type("Counters", (), {"launches": {}})()
    kernels.device, kernels.functions, kernels.profile, kernels._shared_limit = device, {"k": recorder}, None, {}
    kernels.pdl = pdl_launch
    return kernels


def test_only_launches_inside_a_capture_are_programmatic():
    recorder = Recorder()
    kernels = bare_kernels(recorder, recorder)
    kernels._launch("k", (2,), (128,), (None,))
    with kernels.capturing():
        kernels._launch("k", (3,), (128,), (None,), shared_mem=64)
    kernels._launch("k", (4,), (128,), (None,))
    assert [(how, call[0]) for how, call in recorder.calls] == [("cupy", (2,)), ("pdl", recorder), ("cupy", (4,))]
    assert recorder.calls[1][1][1:] == ((3,), (128,), (None,), 64, 1234)  # grid, block, args, shared, stream
    assert kernels.device.counters.launches == {"k": 3}


def test_without_a_programmatic_launch_a_capture_launches_as_cupy_does():
    recorder = Recorder()
    kernels = bare_kernels(recorder, None)
    with kernels.capturing():
        kernels._launch("k", (3,), (128,), (None,))
    assert [how for how, _ in recorder.calls] == ["cupy"]
    assert kernels._graph_launch is None


def test_the_probe_says_why_not(monkeypatch):
    kernels = Kernels.__new__(Kernels)
    kernels.device = FakeDevice()
    monkeypatch.setenv(pdl.PDL_ENV, "0")
    assert kernels._probe_pdl() == (None, "off (CUPY_GETP_PDL=0)")
    for setting in ("", "1"):  # on by default: only 0 turns it off
        monkeypatch.setenv(pdl.PDL_ENV, setting)
        kernels.device.arch = "sm_80"
        assert kernels._probe_pdl() == (None, "not on sm_80 (CUDA sm_90 on)")
    kernels.device.is_hip, kernels.device.arch = True, "gfx90a"
    assert kernels._probe_pdl() == (None, "not on gfx90a (CUDA sm_90 on)")
