"""Expert storage, `--experts bf16|mxfp4|auto` (gpu/experts.py), on the CPU: the option on every command that
builds an engine, `mxfp4` refused in one line where the experts do not come in MXFP4, what `auto` picks on
simulated devices (its slots sized with the KV cache `--kv-cache` names, which reaches the engine from every
command that takes it), the plan against what the engine allocates (the CPU stand-ins count it), the remedies that
name `--experts mxfp4`, and a host slice that cannot be allocated while loading."""

from __future__ import annotations

import os
import re
from dataclasses import replace
import subprocess
import sys

import numpy as np
import pytest

from cupy_getp.checkpoint import BinStore, SyntheticStore, Weights, write_bin
from cupy_getp.config import preset
from cupy_getp.errors import DeviceError, GetpError
from cupy_getp.gpu.batch_shape import MAX_SLOTS, RESERVE_BYTES, batch_bytes, one_slot_bytes, slots_that_fit
from cupy_getp.gpu.experts import ExpertStorage, choose_expert_storage, device_bytes, resident_bytes
from cupy_getp.gpu.weights import upload_bytes

from batch_fakes import FakeDevice, FakeKernels, HostArray, fake_cupy, use_stand_ins
from conftest import ROOT, TINY, cli

GiB = 2**30
NOT_MXFP4 = "MXFP4 expert storage needs experts stored as MXFP4"


@pytest.fixture(scope="module")
def bin_7m(tmp_path_factory, weights_7m):
    """The 7m model as a .bin: experts with no MXFP4 form."""
    path = tmp_path_factory.mktemp("bin") / "7m.bin"
    write_bin(path, weights_7m)
    return path


def one_line_error(result, start: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {start}"), result.stderr


# -- the option on every command ------------------------------------------------------------------------------
def commands(model: str, tmp_path) -> dict[str, tuple[str, ...]]:
    out = str(tmp_path / "out.txt")
    return {
        "run": ("run", model, "-m", "getp", "-i", str(ROOT / "data/input.txt"), "-o", out),
        "getp": ("getp", model, "-i", str(ROOT / "data/input.txt"), "-o", out),
        "generate": ("generate", model, "-i", "hi"),
        "chat": ("chat", model, "-i", "hi"),
        "serve": ("serve", model, "--port", "0"),
        "diff": ("diff", model, "--steps", "1"),
        "info": ("info", model),
    }


@pytest.mark.parametrize("command", ["run", "getp", "generate", "chat", "serve", "diff", "info"])
def test_mxfp4_of_experts_not_stored_as_mxfp4_is_one_line_on_every_command(command, bin_7m, tmp_path):
    """Each command takes --experts and refuses mxfp4 for a .bin (no MXFP4 form) before any inference and
    before writing anything."""
    engine = ("--engine", "numpy") if command != "info" else ()
    result = cli(*commands(str(bin_7m), tmp_path)[command], *engine, "--experts", "mxfp4")
    one_line_error(result, NOT_MXFP4)
    assert not (tmp_path / "out.txt").exists()


@pytest.mark.parametrize("command", ["getp", "info", "diff"])
def test_an_unknown_expert_storage_is_one_line(command, tmp_path):
    result = cli(*commands("7m", tmp_path)[command], "--experts", "fp8")
    one_line_error(result, "unknown expert storage 'fp8' (expected auto, bf16, mxfp4)")


def test_experts_on_the_numpy_engine_is_noted_and_mxfp4_of_a_preset_accepted(tmp_path):
    requests = tmp_path / "in.txt"
    requests.write_text("2\nHi\nyo\n")
    result = cli("getp", "7m", "-i", str(requests), "-o", str(tmp_path / "out.txt"), "-n", "4", "--engine", "numpy",
                 "--experts", "mxfp4")
    assert result.returncode == 0, result.stderr
    assert "note: --experts mxfp4 applies to the GPU engine, not the numpy engine" in result.stderr


def test_info_says_what_auto_would_pick_or_that_it_depends_on_the_device(bin_7m):
    """With no GPU here: the preset's auto depends on the device (both sizes given); a .bin's experts do not
    come in MXFP4; `--experts mxfp4` says so."""
    preset_info = cli("info", "120b").stdout
    assert "experts: BF16 or MXFP4 (auto: depends on the device: BF16 where 22" in preset_info
    assert "; else MXFP4 (6" in preset_info and "GiB with MXFP4 experts" in preset_info
    assert "the experts do not come in MXFP4" in cli("info", str(bin_7m)).stdout
    assert "experts: MXFP4 (--experts mxfp4)" in cli("info", "7m", "--experts", "mxfp4").stdout


class EngineMade(Exception):
    """Raised by a stand-in create_engine once it has recorded its arguments (the run goes no further)."""


@pytest.mark.parametrize("kv_cache", ["bf16", "fp32"])
@pytest.mark.parametrize("command, module", [("getp", "getp"), ("run", "getp"), ("serve", "startup"),
                                             ("diff", "diff")])
def test_the_kv_cache_option_reaches_the_engine_auto_sizes_with(monkeypatch, tmp_path, command, module, kv_cache):
    """getp, run -m getp, serve and diff --batch: `--kv-cache` (its default when not given) reaches create_engine,
    whose GPU engine's `--experts auto` sizes its slot with it (test_warm_up_decides_with_the_kv_cache_...)."""
    import importlib
    import inspect

    from typer.testing import CliRunner

    import cupy_getp.cli  # noqa: F401  (registers the commands)
    from cupy_getp.commands.common import app
    from cupy_getp.engine.factory import create_engine

    if command == "serve":
        pytest.importorskip("fastapi", reason="serve needs the serve extra: pip install '.[serve]'")
    made = []

    def record(*args, **kwargs):
        made.append(inspect.signature(create_engine).bind(*args, **kwargs).arguments.get("kv_cache", "fp32"))
        raise EngineMade()

    monkeypatch.setattr(importlib.import_module(f"cupy_getp.{module}"), "create_engine", record)
    argv = {**commands("7m", tmp_path), "diff": ("diff", "7m", "--batch", "2", "-i", str(ROOT / "data/input.txt"))}
    given = ["--kv-cache", kv_cache] if kv_cache != "fp32" else []
    result = CliRunner().invoke(app, [*argv[command], "--engine", "numpy", *given])
    assert isinstance(result.exception, EngineMade), result.output
    assert made == [kv_cache]


# -- what auto picks --------------------------------------------------------------------------------------
def test_auto_keeps_bf16_while_it_fits_with_a_slot_then_takes_mxfp4():
    """20b shape (experts in MXFP4): BF16 exactly while `device_bytes` fit, MXFP4 one byte below, and the
    MXFP4 plan a quarter of the experts' bytes."""
    weights = Weights(SyntheticStore(preset("20b")))
    need = device_bytes(weights, "bf16", 1024)
    at = choose_expert_storage(weights, need, "auto", 1024)
    assert at.storage == "bf16" and at.reason.startswith("auto: fits with room for ") and at.mxfp4_saves > 20 * GiB
    below = choose_expert_storage(weights, need - 1, "auto", 1024)
    assert below.storage == "mxfp4"
    assert below.describe() == f"experts: MXFP4 (auto: BF16 experts need {need / GiB:.2f} GiB at -n 1024 with " \
                               f"fp32 KV caches, {(need - 1) / GiB:.2f} GiB free)"
    assert choose_expert_storage(weights, 139 * GiB, "auto", 1024).reason == \
           "auto: fits with room for 1024 request slots at -n 1024 with fp32 KV caches"
    assert device_bytes(weights, "mxfp4", 1024) < need - 25 * GiB


def test_auto_sizes_its_slot_with_the_kv_cache_asked_for():
    """20b shape, -n 1024: at the free memory BF16 experts and one slot need with a BF16 KV cache, auto keeps BF16
    with that cache and takes MXFP4 with an FP32 one (whose slot needs more); one byte less, MXFP4 with either."""
    weights = Weights(SyntheticStore(preset("20b")))
    need = {kv: device_bytes(weights, "bf16", 1024, kv) for kv in ("fp32", "bf16")}
    assert need["bf16"] < need["fp32"]
    chosen = {kv: choose_expert_storage(weights, need["bf16"], "auto", 1024, kv) for kv in ("fp32", "bf16")}
    assert chosen["bf16"].storage == "bf16" and chosen["bf16"].reason.endswith(" at -n 1024 with bf16 KV caches")
    assert chosen["fp32"].describe() == f"experts: MXFP4 (auto: BF16 experts need {need['fp32'] / GiB:.2f} GiB at " \
                                        f"-n 1024 with fp32 KV caches, {need['bf16'] / GiB:.2f} GiB free)"
    assert choose_expert_storage(weights, need["bf16"] - 1, "auto", 1024, "bf16").storage == "mxfp4"
    with pytest.raises(GetpError, match=r"^unknown KV cache 'fp16'"):
        choose_expert_storage(weights, need["bf16"], "auto", 1024, "fp16")


def test_the_slots_auto_has_room_for_are_those_of_the_kv_cache_asked_for():
    """The "room for N request slots" of a roomy 20b device is `slots_that_fit` with the cache asked for: N slots'
    batch fits beside the resident model and weights, N + 1 do not; a BF16 cache has room for more."""
    weights, free = Weights(SyntheticStore(preset("20b"))), 60 * GiB
    after = free - resident_bytes(weights, "bf16")
    room = {}
    for kv in ("fp32", "bf16"):
        reason = choose_expert_storage(weights, free, "auto", 1024, kv).reason
        n = int(re.fullmatch(rf"auto: fits with room for (\d+) request slots at -n 1024 with {kv} KV caches",
                             reason)[1])
        assert n == slots_that_fit(weights.config, 1024, after, kv_cache=kv) < MAX_SLOTS, kv
        assert batch_bytes(weights.config, 1024, n, kv_cache=kv) <= after < \
               batch_bytes(weights.config, 1024, n + 1, kv_cache=kv), kv
        room[kv] = n
    assert room["bf16"] > 1.5 * room["fp32"]


def test_auto_on_experts_not_stored_as_mxfp4_stays_bf16_and_its_weights_end_in_the_line(bin_7m):
    weights = Weights(BinStore(bin_7m))
    chosen = choose_expert_storage(weights, 1 * GiB, "auto", 64)
    assert chosen.storage == "bf16" and chosen.reason.endswith("and the experts do not come in MXFP4")
    assert chosen.mxfp4_saves == 0 and chosen.remedy("a smaller -n") == "a smaller -n"
    with pytest.raises(DeviceError, match=NOT_MXFP4):
        choose_expert_storage(weights, 100 * GiB, "mxfp4")
    with pytest.raises(GetpError, match="unknown expert storage 'BF16'"):
        choose_expert_storage(weights, 100 * GiB, "BF16")


def test_bf16_asked_for_keeps_bf16_and_its_remedies_name_mxfp4():
    weights = Weights(SyntheticStore(preset("120b")))
    chosen = choose_expert_storage(weights, 10 * GiB, "bf16")
    assert chosen == ExpertStorage("bf16", "--experts bf16", upload_bytes(weights) - upload_bytes(weights, "mxfp4"))
    assert chosen.remedy("a smaller --batch or -n") == \
           f"a smaller --batch or -n, or --experts mxfp4 ({chosen.mxfp4_saves / GiB:.2f} GiB less for the weights)"


# -- the plan against what the engine allocates (the CPU stand-ins count every array) -------------------------
class CountingCupy:
    """fake_cupy whose allocations add up their bytes."""

    def __init__(self):
        self.allocated = 0

    def __getattr__(self, name):
        make = getattr(fake_cupy, name)
        if name not in ("zeros", "zeros_like", "empty", "asarray", "ascontiguousarray"):
            return make

        def counted(*args, **kwargs):
            array = make(*args, **kwargs)
            self.allocated += array.nbytes
            return array

        return counted


class SizedDevice(FakeDevice):
    """A stand-in device with `free` bytes allocatable; steps run eagerly (as on ROCm: no graph to capture)."""

    is_hip = True

    def __init__(self, free: int):
        from cupy_getp.gpu.device import Counters

        self.free, self.counters = free, Counters()

    def allocatable_bytes(self):
        return self.free

    def device_free_bytes(self):
        return self.free, 80 * GiB


@pytest.fixture
def stand_ins(monkeypatch):
    """CuPy, the device and the kernels replaced by the CPU stand-ins; yields the counting CuPy and the list whose
    last device the engine opens."""
    counting, devices = CountingCupy(), []
    use_stand_ins(monkeypatch, counting, lambda: devices[-1])
    return counting, devices


def warmed_cupy(weights, stand_ins, free: int, experts="auto", steps=None, kv_cache="fp32"):
    from cupy_getp.engine.factory import create_engine

    stand_ins[1].append(SizedDevice(free))
    engine = create_engine(weights, "cupy", experts, steps, kv_cache)
    engine.warm_up()
    return engine


def test_the_plan_counts_everything_the_engine_allocates(stand_ins):
    """The one-slot model of `forward` stays within `one_slot_bytes`, made by the first forward only; weights,
    that model and one slot's batched engine (KV cache, step buffers, tables) stay within `device_bytes` less the
    reserve left for CuPy and the driver."""
    counting = stand_ins[0]
    weights = Weights(SyntheticStore(TINY, seed=5))
    for experts in ("bf16", "mxfp4"):
        counting.allocated = 0
        engine = warmed_cupy(weights, stand_ins, 100 * GiB, experts, steps=40)
        engine.batched(1, 40, slots=1, precision="fp32")
        assert engine.one_slot is None  # getp's path: no forward, no one-slot model
        before = counting.allocated
        engine.forward(1, 0)
        assert 0 < counting.allocated - before <= one_slot_bytes(TINY), experts
        assert counting.allocated <= device_bytes(weights, experts, 40) - RESERVE_BYTES, experts
        assert engine.w.nbytes() <= upload_bytes(weights, experts)


def test_a_batch_of_n_slots_allocates_within_batch_bytes(stand_ins):
    """With either KV cache; a BF16 one allocates half the cache bytes of an FP32 one, every slot and the spare."""
    counting = stand_ins[0]
    engine = warmed_cupy(Weights(SyntheticStore(TINY, seed=5)), stand_ins, 100 * GiB, "bf16")
    for slots, steps in ((1, 8), (5, 40), (12, TINY.seq_len)):
        allocated = {}
        for kv_cache in ("fp32", "bf16"):
            counting.allocated = 0
            batched = engine.batched(slots, steps, slots=slots, precision="fp32", kv_cache=kv_cache)
            assert batched.shape.n_slots == slots
            assert 0 < counting.allocated <= batch_bytes(TINY, steps, slots, kv_cache=kv_cache) - RESERVE_BYTES, \
                (slots, steps, kv_cache)
            allocated[kv_cache] = counting.allocated
            fp32_slot = replace(batched.shape, kv_cache="fp32").slot_bytes(TINY)
        assert allocated["fp32"] - allocated["bf16"] == (slots + 1) * fp32_slot // 2, (slots, steps)


def test_a_bf16_kv_cache_takes_half_the_bytes_so_more_slots_fit():
    """At the 20b shape, -n 1024: a slot's KV cache halves, and the same free memory holds more slots."""
    from cupy_getp.gpu.batch_shape import plan_batch

    c = preset("20b")
    shapes = {kv: plan_batch(c, 1024, 1024, 40 * GiB, kv_cache=kv) for kv in ("fp32", "bf16")}
    assert shapes["bf16"].kv_cache == "bf16" and shapes["fp32"].kv_cache == "fp32"
    assert 2 * shapes["bf16"].slot_bytes(c) == shapes["fp32"].slot_bytes(c)
    assert shapes["bf16"].n_slots > 1.5 * shapes["fp32"].n_slots
    with pytest.raises(GetpError, match=r"^unknown KV cache 'fp16' \(expected fp32, bf16\)$"):
        plan_batch(c, 4, 64, 40 * GiB, kv_cache="fp16")


def test_warm_up_takes_the_storage_auto_picks_and_says_why(stand_ins):
    weights = Weights(SyntheticStore(TINY, seed=5))
    need = device_bytes(weights, "bf16", TINY.seq_len)
    roomy = warmed_cupy(weights, stand_ins, need)
    assert roomy.experts.storage == "bf16" and roomy.w.storage["w_mlp1"] == "bf16"
    tight = warmed_cupy(weights, stand_ins, need - 1)
    assert tight.experts.storage == "mxfp4" and tight.w.storage["w_mlp2"] == "mxfp4"
    notes = tight.storage_notes()
    assert notes[0].startswith("experts: MXFP4 (auto: BF16 experts need ")
    assert notes[1].startswith("device weights: ") and f"({tight.w.nbytes():,} bytes)" in notes[1]


def test_warm_up_decides_with_the_kv_cache_the_engine_is_made_for(stand_ins):
    """create_engine's `kv_cache` reaches the warm-up's decision: at the free memory BF16 experts need with a BF16
    cache, BF16 for an engine made for one, MXFP4 for one made for an FP32 cache (the default)."""
    weights = Weights(SyntheticStore(TINY, seed=5))
    free = device_bytes(weights, "bf16", 40, "bf16")
    assert free < device_bytes(weights, "bf16", 40)
    bf16 = warmed_cupy(weights, stand_ins, free, steps=40, kv_cache="bf16")
    assert bf16.experts.storage == "bf16" and bf16.experts.reason.endswith(" with bf16 KV caches")
    assert warmed_cupy(weights, stand_ins, free, steps=40).experts.storage == "mxfp4"
    with pytest.raises(GetpError, match=r"^unknown KV cache 'fp16'"):
        warmed_cupy(weights, stand_ins, free, steps=40, kv_cache="fp16")


def test_not_even_one_slot_names_mxfp4_where_it_would_help(stand_ins):
    weights = Weights(SyntheticStore(TINY, seed=5))
    engine = warmed_cupy(weights, stand_ins, 100 * GiB, "bf16")
    stand_ins[1][-1].free = RESERVE_BYTES
    with pytest.raises(DeviceError, match=r"^not even one request slot fits: .*; a smaller -n, or --experts mxfp4 "
                                          r"\(0\.00 GiB less for the weights\)$"):
        engine.batched(4, 40)
    stand_ins[1][-1].free = 3 * GiB
    with pytest.raises(DeviceError, match=r"^--batch 1000000 does not fit: at most \d+ request slots fit .*; a smaller "
                                          r"--batch or -n, or --experts mxfp4 \("):
        engine.batched(4, 40, slots=10**6)


def test_getp_on_mxfp4_experts_writes_the_numpy_engines_lines(stand_ins, tmp_path, tokenizer):
    """The whole getp flow with `experts="mxfp4"` on the stand-ins (fp32 products): the numpy engine's ids."""
    from cupy_getp.getp import GetpHooks, GetpOptions, getp
    from cupy_getp.sampler import Sampler

    stand_ins[1].append(SizedDevice(100 * GiB))
    requests = tmp_path / "in.txt"
    requests.write_text("3\nHello\nworld\nAgain and again\n")
    store = SyntheticStore(preset("7m"), seed=42, name="7m")
    lines, outputs = [], {}
    for engine, experts in (("numpy", "auto"), ("cupy", "mxfp4")):
        out = tmp_path / f"{engine}.txt"
        getp(store, requests, out, tokenizer=tokenizer, sampler=Sampler(0.0),
             options=GetpOptions(engine=engine, steps=12, precision="fp32" if engine == "cupy" else None,
                                 experts=experts),
             hooks=GetpHooks(echo=lines.append, note=lines.append))
        outputs[engine] = out.read_text()
    assert outputs["cupy"] == outputs["numpy"] and outputs["cupy"].count("\n") == 3
    assert "experts: MXFP4 (--experts mxfp4)" in lines


@pytest.mark.parametrize("kv_cache, storage", [("bf16", "BF16"), ("fp32", "MXFP4")])
def test_getp_decides_auto_with_its_kv_cache(stand_ins, tmp_path, tokenizer, kv_cache, storage):
    """The getp flow (GetpOptions.kv_cache, as `--kv-cache` sets it) on a device with the free memory BF16 experts
    need with a BF16 cache at -n 12: BF16 experts with that cache, MXFP4 with an FP32 one; the batch takes it."""
    from cupy_getp.getp import GetpHooks, GetpOptions, getp
    from cupy_getp.sampler import Sampler

    store = SyntheticStore(preset("7m"), seed=42, name="7m")
    stand_ins[1].append(SizedDevice(device_bytes(Weights(store), "bf16", 12, "bf16")))
    requests = tmp_path / "in.txt"
    requests.write_text("2\nHello\nworld\n")
    lines = []
    getp(store, requests, tmp_path / "out.txt", tokenizer=tokenizer, sampler=Sampler(0.0),
         options=GetpOptions(engine="cupy", steps=12, precision="fp32", kv_cache=kv_cache),
         hooks=GetpHooks(echo=lines.append, note=lines.append))
    assert any(line.startswith(f"experts: {storage} (auto: ") and f" with {kv_cache} KV caches" in line
               for line in lines), lines
    assert any(line.startswith("batched engine: ") and f", {kv_cache} KV cache, " in line for line in lines), lines


# -- the host side of loading --------------------------------------------------------------------------------
RAISING_READER = """
import sys
sys.path.insert(0, {tests!r})
from cupy_getp.checkpoint import BinStore
def read(self, name, index=()):
    if name == "w_mlp1":
        raise MemoryError()
    return READ(self, name, index)
READ, BinStore.read = BinStore.read, read
{stand_ins}
from cupy_getp.cli import main
main({argv!r})
"""

STAND_INS = """
import types
import batch_fakes
import cupy_getp.gpu.device as device_module, cupy_getp.gpu.engine as engine_module
sys.modules["cupy"] = batch_fakes.fake_cupy
class Device(batch_fakes.FakeDevice):
    counters = device_module.Counters()
device_module.Device.open = classmethod(lambda cls: Device())
engine_module.Kernels = batch_fakes.FakeKernels
"""


def test_a_host_slice_that_cannot_be_allocated_while_loading_is_one_line(weights_7m, tmp_path):
    """The CLI with the .bin reader raising MemoryError on w_mlp1: the GPU engine's upload (on the CPU
    stand-ins) names the slice and its size; the numpy engine (converting a bfloat16 .bin at warm-up) names
    its weights. Exit 1, no output."""
    model, out = tmp_path / "7m-bf16.bin", tmp_path / "out.txt"
    write_bin(model, weights_7m, "bfloat16")
    argv = ["getp", str(model), "-i", str(ROOT / "data/input.txt"), "-o", str(out), "-n", "64", "--engine"]
    for options, stand_ins, start in (
            (["cupy", "--precision", "fp32"], STAND_INS, f"cannot allocate w_mlp1 of {model} while loading "),
            (["numpy"], "", "cannot allocate the numpy engine's weights (")):
        code = RAISING_READER.format(tests=str(ROOT / "tests"), stand_ins=stand_ins, argv=[*argv, *options])
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        one_line_error(result, start)
        assert re.search(r" \(\d+\.\d\d [MG]B\) on the host: ", result.stderr) and not out.exists()


def test_an_upload_slice_out_of_host_memory_names_slice_and_size(monkeypatch):
    """In process: MemoryError or ENOMEM from the reader of a slice becomes HostMemoryError naming it."""
    import errno

    from cupy_getp.checkpoint import ArrayStore
    from cupy_getp.gpu import weights as weights_module
    from cupy_getp.hostmem import HostMemoryError

    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    monkeypatch.setattr(weights_module, "UPLOAD_CHUNK", 300)  # w_o (3, 24, 48) in slices of 6 rows
    DeviceWeights = weights_module.DeviceWeights
    store = ArrayStore.materialize(SyntheticStore(TINY, seed=3))
    for error in (MemoryError(), OSError(errno.ENOMEM, "Cannot allocate memory")):
        def read(name, index=(), error=error):
            if name == "w_o" and index == (1, slice(6, 12)):
                raise error
            return store.arrays[name][index]

        monkeypatch.setattr(store, "read", read)
        with pytest.raises(HostMemoryError, match=r"^cannot allocate w_o\[1, 6:12\] of synthetic model .* while "
                                                  r"loading the weights \(0\.00 MB\) on the host: "):
            DeviceWeights(Weights(store), FakeDevice(), FakeKernels(), experts="bf16")
    monkeypatch.setattr(store, "read", lambda name, index=(): (_ for _ in ()).throw(OSError(errno.EIO, "I/O")))
    with pytest.raises(OSError, match="I/O"):  # only out-of-memory is turned into the line
        DeviceWeights(Weights(store), FakeDevice(), FakeKernels(), experts="bf16")
