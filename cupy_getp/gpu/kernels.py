"""Kernel sources -> `cupy.RawModule`s, and one launch helper per kernel.

Each `kernels/<family>.hip` is compiled once per process and device, by hiprtc on ROCm or NVRTC on
CUDA, from the same text: `#define WARP_SIZE` (from the device) and the constants of `constants.py`,
then `common.h` and the file itself inlined with `#line` directives, so compiler messages name the
right file and line, and CuPy's compile cache (which hashes the source string, not included files)
sees every change. `ENTRY_POINTS` lists every kernel of every family; all are opened at warm-up.

Model code calls only the methods of `Kernels`; each one checks shapes, dtypes and contiguity, casts
scalars to exact numpy types (a bare Python float arrives as 0.0 in a `float` parameter), computes
the grid, launches on the engine's stream and counts the launch.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

import numpy as np

from ..errors import DeviceError, KernelDtypeError
from .constants import BLOCK_SIZE, MOE_MAX_K, MXFP4_BLOCK, kernel_defines
from .device import Device
from .launch import BatchLaunches
from .launch.attention import ATTN_PARTIAL_VARIANTS, ATTN_TF32_KERNEL
from .launch.common import BF16, F32, I32, KV_CACHE_SUFFIX, _aligned, _blocks, _check, _expert_weights, _require
from .launch.gemm_tc import (DENSE_TILES, WG_DENSE_TILES, WG_GROUPED_TILES, WG_HALF_ROWS, WG_ROWS,
                              WG_WIDE_KIND, WG_WIDE_PLAIN_KIND, WG_WIDE_ROWS, WG_WIDE_TALL, wg_half_enabled,
                              wg_tma_grouped_enabled, wg_wide_enabled, wgmma_disabled)
from .launch.pdl import ProgrammaticLaunch, pdl_wanted
from .launch.splitk import WG_SLICED_HEIGHTS, wg_sliced_tall_enabled, wg_splitk_enabled
from .launch.tensor_map import TensorMaps, wg_tma_enabled

_INCLUDE = re.compile(r'^\s*#\s*include\s+"common\.h"\s*$', re.MULTILINE)

# The tensor-core grouped products: mlp1 + SwiGLU and mlp2, with bf16 experts and with MXFP4 experts.
GROUPED_KINDS = ("grouped_swiglu", "grouped", "grouped_swiglu_mxfp4w", "grouped_mxfp4w")

# Every kernel of every family, by name (macro-made ones included): the launch helpers' targets.
ENTRY_POINTS: dict[str, tuple[str, ...]] = {
    "attention": (*ATTN_PARTIAL_VARIANTS, ATTN_TF32_KERNEL, "attn_rows_merge_f32", "attn_rows_merge_split"),
    "embedding": ("embedding_rows_f32", "embedding_rows_fed_f32"),
    "gemm": tuple(f"gemm_{kind}_{shape}" for kind in ("f32w", "bf16w", "grouped_swiglu", "grouped",
                                                      "grouped_swiglu_mxfp4w", "grouped_mxfp4w")
                  for shape in ("skinny", "tiled")),
    "gemm_tc": ("tc_split_rows", *(f"gemm_tc_m{bm}_n{bn}" for bm, bn in DENSE_TILES),
                *(f"gemm_tc_{kind}" for kind in GROUPED_KINDS)),
    "gemm_wgmma": ("wg_available",
                   *(f"gemm_wg{tma}_r{rows}_p{pieces}_b{blocks}" for tma in ("", "_tma") for pieces in (3, 1)
                     for rows, blocks in WG_DENSE_TILES[pieces]),
                   *(f"gemm_wg{tma}_splitk_r{rows}_p{pieces}_b1" for tma in ("", "_tma") for pieces in (3, 1)
                     for rows in WG_ROWS[pieces]),
                   *(f"gemm_wg{tma}_sliced_r{rows}_p{pieces}_b1" for tma in ("", "_tma")
                     for pieces in (3, 1) for rows in WG_SLICED_HEIGHTS[pieces]),
                   *(f"gemm_wg_tma_half_r{rows}_p{pieces}_b1" for pieces in (3, 1) for rows in WG_HALF_ROWS),
                   *(f"gemm_wg_tma_{kind}_r{rows}_p{pieces}_b{blocks}" for kind in ("grouped_swiglu", "grouped")
                     for pieces in (3, 1) for rows, blocks in WG_GROUPED_TILES),
                   *(f"gemm_wg{WG_WIDE_KIND}_r{rows}_p{pieces}_b1" for pieces in (3, 1) for rows in WG_WIDE_ROWS),
                   *(f"gemm_wg{kind}_r{rows}_p{pieces}_b{blocks}" for kind in (WG_WIDE_KIND, WG_WIDE_PLAIN_KIND)
                     for (rows, pieces), blocks in WG_WIDE_TALL.items()),
                   *(f"gemm_wg_{kind}_r{rows}_p{pieces}_b{blocks}" for kind in GROUPED_KINDS
                     for pieces in (3, 1) for rows, blocks in WG_GROUPED_TILES)),
    "matvec": ("matvec_f32", "matvec_bf16w_f32"),
    "moe": ("moe_mlp1_swiglu_bf16w", "moe_mlp2_accumulate_bf16w", "moe_mlp1_swiglu_mxfp4w",
            "moe_mlp2_accumulate_mxfp4w", "router_rows_bf16w", "router_rows_f32w", "moe_align",
            "moe_combine"),
    "rmsnorm": ("rmsnorm_rows_f32", "rmsnorm_split_rows"),
    "rope": tuple(f"rope_kv_write_{cache}" for cache in KV_CACHE_SUFFIX.values()),
    "softmax": ("argmax_rows_f32",),
    "synthetic": ("synthetic_f32", "synthetic_bf16", "synthetic_mxfp4_bf16", "synthetic_mxfp4_codes",
                  "mxfp4_widen_f32"),
}


def kernel_dir() -> Path:
    """kernels/ of a source checkout, or the copy installed in the wheel as cupy_getp/_kernels."""
    installed = resources.files("cupy_getp") / "_kernels"
    if installed.is_dir():
        return Path(str(installed))
    return Path(__file__).resolve().parents[2] / "kernels"


def kernel_files() -> list[Path]:
    return sorted(kernel_dir().glob("*.hip"))


def assemble_source(family: str, warp_size: int) -> str:
    """The exact text handed to hiprtc / NVRTC for one kernel family."""
    directory = kernel_dir()
    header = (directory / "common.h").read_text()
    body = (directory / f"{family}.hip").read_text()
    if not _INCLUDE.search(body):
        raise ValueError(f"kernels/{family}.hip must include \"common.h\"")
    body = _INCLUDE.sub("", body, count=1)
    return (f"#define WARP_SIZE {warp_size}\n{kernel_defines()}"
            f'#line 1 "kernels/common.h"\n{header}\n'
            f'#line 1 "kernels/{family}.hip"\n{body}')


@functools.cache
def _module(family: str, warp_size: int, device_id: int, options: tuple = ()):
    import cupy

    with cupy.cuda.Device(device_id):
        return cupy.RawModule(code=assemble_source(family, warp_size), options=options)


# Families built only where the device has their instructions, with the compiler options that reach
# them; a failed build leaves the engine on the other kernels (the launch helpers check `wgmma`).
OPTIONAL_FAMILIES = ("gemm_wgmma",)


def family_options(family: str, device: Device) -> tuple | None:
    """Compile options of a family on this device, or None where it is not built at all. gemm_wgmma:
    compute capability 9.0 with the sm_90a features (CuPy appends its own -arch=sm_90 after these; the
    sm_90a one takes effect, as wg_available confirms at run time)."""
    if family == "gemm_wgmma":
        return ("-arch=sm_90a",) if not device.is_hip and device.arch == "sm_90" else None
    return ()


# Families compiled as several programs, one a part (their .hip's GETP_PART blocks, -DGETP_PART=k): a kernel's
# machine code is the same in its part as in the whole file, and the parts build side by side (gemm_wgmma alone
# is ~90 s of NVRTC on one core, two thirds of a fresh machine's warm-up).
FAMILY_PARTS = {"gemm_wgmma": 8}


def family_parts(family: str) -> tuple[tuple[str, ...], ...]:
    """The extra compile options of each program of the family: one program without any, or one a part."""
    parts = FAMILY_PARTS.get(family)
    return ((),) if parts is None else tuple((f"-DGETP_PART={k}",) for k in range(parts))


def _compile(module, device_id: int) -> None:
    """Compiles (or finds in CuPy's cache) and loads one program: NVRTC and hiprtc let go of the GIL meanwhile."""
    import cupy

    with cupy.cuda.Device(device_id):
        module.compile()


def build_threads(device: Device, jobs: int) -> int:
    """Threads compiling at warm-up: one a program up to the CPUs on CUDA (NVRTC compiles programs concurrently),
    one on ROCm (hiprtc's thread safety is not proven here) or with CUPY_GETP_BUILD_THREADS=1; that variable sets
    the count."""
    asked = os.environ.get("CUPY_GETP_BUILD_THREADS", "")
    if asked:
        if not asked.isdigit() or int(asked) < 1:
            raise DeviceError(f"CUPY_GETP_BUILD_THREADS={asked!r} is not a number of threads (1 or more)")
        return min(int(asked), max(jobs, 1))
    return 1 if device.is_hip else max(1, min(jobs, os.cpu_count() or 1))


def _compile_all(programs: dict[str, list], device: Device) -> dict[str, Exception]:
    """Every program of every family, in `build_threads` threads; a program that failed in a pool thread is
    compiled again in this one, so that only the source's own errors count (not a thread's: the side-by-side
    builds had not run on a GPU machine when they landed). family -> the first error of its parts."""
    jobs = [(family, module) for family, modules in programs.items() for module in modules]
    with ThreadPoolExecutor(build_threads(device, len(jobs))) as pool:
        futures = [(family, module, pool.submit(_compile, module, device.id)) for family, module in jobs]
    failed: dict[str, Exception] = {}
    for family, module, future in futures:
        if future.exception() is not None and family not in failed:
            try:
                _compile(module, device.id)
            except Exception as e:
                failed[family] = e
    return failed


def _open_function(family: str, modules: list, name: str):
    """Kernel `name` of kernels/<family>.hip, from the one program (of the family's parts) that has it."""
    if len(modules) > 1:
        modules = [m for m in modules if _has_function(m, name)]
    if len(modules) != 1:
        raise RuntimeError(f"kernels/{family}.hip has kernel {name} in {len(modules)} of its parts, not one "
                           f"(FAMILY_PARTS, its GETP_PART blocks)")
    try:
        return modules[0].get_function(name)
    except Exception as e:  # CUDADriverError (CUDA_ERROR_NOT_FOUND) / hipErrorNotFound
        raise RuntimeError(f"kernels/{family}.hip has no kernel {name} (ENTRY_POINTS): {e}") from e


def _has_function(module, name: str) -> bool:
    """Whether a compiled program has kernel `name`: a look-up in its loaded module, nothing loaded again."""
    try:
        module.module.get_function(name)
    except Exception:  # CUDADriverError (CUDA_ERROR_NOT_FOUND) / hipErrorNotFound
        return False
    return True


def families() -> tuple[str, ...]:
    """Every kernels/<family>.hip: one module each."""
    return tuple(p.stem for p in kernel_files())


class Kernels(BatchLaunches):
    """Every kernel of the engine, bound to one device and its stream. The one-row products' launch helpers
    (matvec, the fused one-row experts) and the weight generator's are here; the rest are per family in
    `launch/` (mixed in)."""

    pdl: ProgrammaticLaunch | None = None  # set by the probe at warm-up
    pdl_off = "not probed"
    _graph_launch: ProgrammaticLaunch | None = None  # inside capturing(): what launches the graph's kernels

    def __init__(self, device: Device, only: tuple[str, ...] | None = None):
        """Builds every family, or those of `only` (benchmarks and tests of a few kernels: seconds of NVRTC
        instead of minutes; a kernel of another family then fails its launch with the family's name)."""
        unknown = set(only or ()) - set(families())
        if unknown:
            raise ValueError(f"no kernel families {sorted(unknown)}: kernels/ has {', '.join(families())}")
        self.device = device
        self.warps_per_block = BLOCK_SIZE // device.warp_size
        self.functions = {}  # name -> kernel of every built family's ENTRY_POINTS
        self.modules = {}
        self.not_built: dict[str, str] = {}  # optional family -> why it is not available
        programs = {}  # family -> its programs (RawModules), one a part
        for family in families():
            if only is not None and family not in only:
                self.not_built[family] = "not asked for"
                continue
            options = family_options(family, device)
            if options is None:
                self.not_built[family] = f"not built for {device.arch}"
                continue
            programs[family] = [_module(family, device.warp_size, device.id, options + part)
                                for part in family_parts(family)]
        failed = _compile_all(programs, device)
        for family, modules in programs.items():
            try:
                if family in failed:
                    raise failed[family]
                self._open_family(family, modules)
            except Exception as e:
                if family not in OPTIONAL_FAMILIES:
                    raise
                self.not_built[family] = f"build failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        self.profile: dict[str, list] | None = None  # name -> [(start, end) events] while profiling (eager)
        self._shared_limit = {}  # kernel -> dynamic shared bytes it was opened up to (CUDA, > 48 KiB)
        self.wgmma = self._probe_wgmma()  # the products take the wgmma kernels (launch/gemm_tc.py)
        self.wg_tma = self.wgmma and wg_tma_enabled()  # ... and their dense ones read W by TMA
        self.wg_splitk = self.wgmma and wg_splitk_enabled()  # ... split along K where few tiles
        self.wg_sliced_tall = self.wg_splitk and wg_sliced_tall_enabled()  # ... sliced 128 rows high in `fast`
        self.wg_half = self.wg_tma and wg_half_enabled()  # ... in half blocks where few tiles of few rows
        self.wg_tma_grouped = self.wg_tma and wg_tma_grouped_enabled()  # ... and the bf16 experts too
        self.wg_wide = self.wg_tma_grouped and wg_wide_enabled()  # ... in wide blocks (few tiles; many, opt-in)
        self.tensor_maps = TensorMaps()
        self.pdl, self.pdl_off = self._probe_pdl()  # a step graph's launches overlap (launch/pdl.py), or why not

    def _open_family(self, family: str, modules: list) -> None:
        """Every entry point of the family, from its compiled programs (compile errors belong to the warm-up).
        The family is recorded only once all of them opened (a failed optional build leaves nothing behind)."""
        functions = {name: _open_function(family, modules, name) for name in ENTRY_POINTS[family]}
        self.modules[family] = modules
        self.functions.update(functions)

    def _probe_wgmma(self) -> bool:
        """True when the gemm_wgmma kernels were built with their wgmma bodies (the device says so, once, at
        warm-up: never during graph capture). CUPY_GETP_WGMMA=0 keeps the mma.sync kernels."""
        if "gemm_wgmma" not in self.modules or wgmma_disabled():
            return False
        import cupy

        flag = cupy.zeros(1, np.int32)
        self._launch("wg_available", (1,), (1,), (flag,))
        return bool(int(flag.get(stream=self.device.stream)[0]))

    def _launch(self, name: str, grid: tuple, block: tuple, args: tuple, shared_mem: int = 0) -> None:
        if grid[0] == 0:  # CuPy would still launch one block
            return
        function = self.functions.get(name)
        if function is None:
            raise RuntimeError(f"no kernel {name} on this device: not in ENTRY_POINTS (cupy_getp/gpu/kernels.py), "
                               f"or its family is not built ({self.not_built})")
        # Over 48 KiB of dynamic shared memory must be opted into per kernel on CUDA; on ROCm (CuPy 13)
        # the setter is a stub that fails, and up to 64 KiB work without it.
        if shared_mem > 48 * 1024 and not self.device.is_hip and self._shared_limit.get(name, 0) < shared_mem:
            function.max_dynamic_shared_size_bytes = shared_mem
            self._shared_limit[name] = shared_mem
        events = self._profile_start(name)
        try:
            if self._graph_launch is not None:
                self._graph_launch.launch(function, grid, block, args, shared_mem, self.device.stream.ptr)
            else:
                function(grid, block, args, shared_mem=shared_mem, stream=self.device.stream)
        except Exception as e:
            raise RuntimeError(f"launch of kernel {name} (grid {grid}, block {block}) failed: {e}") from e
        if events:
            events[1].record(self.device.stream)
        counters = self.device.counters
        counters.launches[name] = counters.launches.get(name, 0) + 1
        if self.device.sync_check:
            self.device.synchronize(f"kernel {name}")

    @contextlib.contextmanager
    def capturing(self, pdl: ProgrammaticLaunch | None = None):
        """The launches inside are a CUDA graph's, being captured: through `pdl` (by default the probed one;
        None: CuPy's launches), each kernel's blocks may start while the kernel ahead finishes (launch/pdl.py)."""
        self._graph_launch = pdl or self.pdl
        try:
            yield
        finally:
            self._graph_launch = None

    def _probe_pdl(self) -> tuple[ProgrammaticLaunch | None, str]:
        """(the programmatic launch, "") where this device takes it: CUDA compute capability 9.0 on, the
        driver's cuLaunchKernelEx, CUPY_GETP_PDL not 0, and a graph captured through it giving the right answer
        (once, at warm-up); else (None, why not)."""
        if not pdl_wanted():
            return None, "off (CUPY_GETP_PDL=0)"
        if self.device.is_hip or not self.device.arch.startswith("sm_") or int(self.device.arch[3:]) < 90:
            return None, f"not on {self.device.arch} (CUDA sm_90 on)"
        try:
            pdl = ProgrammaticLaunch()
        except (OSError, AttributeError) as e:
            return None, f"no cuLaunchKernelEx: {e}"
        import cupy

        logits = cupy.zeros((1, 8), np.float32)
        logits[0, 5] = 1.0
        token = cupy.full(1, -1, np.int32)
        stream = self.device.stream
        try:
            stream.begin_capture()
            try:
                with self.capturing(pdl):
                    self.argmax_rows(token, logits)
            finally:
                graph = stream.end_capture()
            graph.launch(stream=stream)
            got = int(token.get(stream=stream)[0])
        except Exception as e:  # any failure here: the plain launches, as before
            return None, f"probe failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        return (pdl, "") if got == 5 else (None, f"probe gave token {got}, not 5")

    def _profile_start(self, name: str):
        """(start, end) events around this launch when profiling (bench/getp_throughput.py --profile)."""
        if self.profile is None:
            return None
        import cupy

        events = (cupy.cuda.Event(), cupy.cuda.Event())
        events[0].record(self.device.stream)
        self.profile.setdefault(name, []).append(events)
        return events

    def _rows_grid(self, rows: int, y: int = 1) -> tuple:
        return (_blocks(rows, self.warps_per_block), y)

    # -- matvec.hip -----------------------------------------------------------------------------------
    def matvec(self, y, w, x, b=None, accumulate: bool = False) -> None:
        """y = w @ x (+ b) (+ y when accumulate). w (rows, cols) float32, or bfloat16 bits (dense weights
        stored as BF16 where that is lossless)."""
        rows, cols = w.shape
        if w.dtype == BF16:
            self.matvec_bf16w(y, w, x, b, accumulate)
            return
        _check("w", w, F32)
        _check("x", x, F32, (cols,))
        _check("y", y, F32, (rows,))
        if b is not None:
            _check("b", b, F32, (rows,))
        vec4 = cols % 4 == 0 and _aligned(w, x)
        self._launch("matvec_f32", self._rows_grid(rows), (BLOCK_SIZE,),
                     (y, w, x, b, I32(rows), I32(cols), I32(accumulate), I32(vec4)))

    def matvec_bf16w(self, y, w, x, b=None, accumulate: bool = False) -> None:
        """y = w @ x (+ b) (+ y) with w (rows, cols) bfloat16 bits, FP32 accumulation."""
        rows, cols = w.shape
        _check("w", w, BF16)
        _check("x", x, F32, (cols,))
        _check("y", y, F32, (rows,))
        if b is not None:
            _check("b", b, F32, (rows,))
        vec8 = cols % 8 == 0 and _aligned(w, x)
        self._launch("matvec_bf16w_f32", self._rows_grid(rows), (BLOCK_SIZE,),
                     (y, w, x, b, I32(rows), I32(cols), I32(accumulate), I32(vec8)))

    # -- moe.hip: the fused one-row experts (RowModel's one-row step on the CUDA cores) ----------------------
    def moe_mlp1_swiglu(self, g, w_mlp1, b_mlp1, t, experts, limit: float) -> None:
        """g (top_k, I) = SwiGLU(w_mlp1[e] @ t + b_mlp1[e]) for each chosen expert e; w_mlp1 (E, 2I, H) bf16
        or an Mxfp4Matrix (the same results, bit for bit)."""
        n_experts, two_inter, hidden = w_mlp1.shape
        top_k, inter = g.shape
        _check("g", g, F32)
        kind, w_args, w_first = _expert_weights("w_mlp1", w_mlp1)
        _check("b_mlp1", b_mlp1, F32, (n_experts, two_inter))
        _check("t", t, F32, (hidden,))
        _check("experts", experts, I32, (top_k,))
        _require(two_inter == 2 * inter, f"moe_mlp1_swiglu: w_mlp1 has {two_inter} rows for g of {inter} columns")
        vec8 = hidden % 8 == 0 and _aligned(w_first, t)
        self._launch(f"moe_mlp1_swiglu_{kind}", self._rows_grid(inter, top_k), (BLOCK_SIZE,),
                     (g, *w_args, b_mlp1, t, experts, I32(hidden), I32(inter), F32(limit), I32(vec8)))

    def moe_mlp2_accumulate(self, x, moe_out, w_mlp2, b_mlp2, g, experts, weights) -> None:
        """x += moe_out = sum_s weights[s] * (w_mlp2[e_s] @ g[s] + b_mlp2[e_s]); w_mlp2 (E, H, I) bf16 or an
        Mxfp4Matrix."""
        n_experts, hidden, inter = w_mlp2.shape
        top_k = experts.shape[0]
        _check("x", x, F32, (hidden,))
        _check("moe_out", moe_out, F32, (hidden,))
        kind, w_args, w_first = _expert_weights("w_mlp2", w_mlp2)
        _check("b_mlp2", b_mlp2, F32, (n_experts, hidden))
        _check("g", g, F32, (top_k, inter))
        _check("experts", experts, I32, (top_k,))
        _check("weights", weights, F32, (top_k,))
        _require(0 < top_k <= MOE_MAX_K, f"moe_mlp2_accumulate: {top_k} experts per token, at most {MOE_MAX_K}")
        vec8 = inter % 8 == 0 and _aligned(w_first, g)
        rows_per_block = self.warps_per_block // min(top_k, self.warps_per_block)
        self._launch(f"moe_mlp2_accumulate_{kind}", (_blocks(hidden, rows_per_block),), (BLOCK_SIZE,),
                     (x, moe_out, *w_args, b_mlp2, g, experts, weights, I32(top_k), I32(hidden), I32(inter),
                      I32(vec8)))

    # -- synthetic.hip --------------------------------------------------------------------------------
    def synthetic(self, out, start: int, key: int, scale: float, offset: float, round_bf16: bool = False) -> None:
        """Fill `out` (float32, or uint16 = bf16) with elements start.. of a synthetic stream (float32 ones
        rounded to bf16 values when `round_bf16`)."""
        _check("out", out, out.dtype)
        if out.dtype not in (np.float32, np.uint16):
            raise KernelDtypeError(f"synthetic: dtype {out.dtype}, expected float32 or uint16 (bf16)")
        _require(start + out.size <= 1 << 32, f"synthetic: elements {start}..{start + out.size} past 2^32")
        grid = (min(_blocks(out.size, BLOCK_SIZE), 65535),)
        args = (out, np.uint32(start), np.uint32(out.size), np.uint32(key), F32(scale), F32(offset))
        if out.dtype == np.float32:
            self._launch("synthetic_f32", grid, (BLOCK_SIZE,), args + (I32(round_bf16),))
        else:
            self._launch("synthetic_bf16", grid, (BLOCK_SIZE,), args)

    def synthetic_mxfp4(self, out, start: int, stream) -> None:
        """Fill `out` (uint16 = bf16) with elements start.. of an MXFP4 synthetic matrix (`Mxfp4Stream`)."""
        _check("out", out, BF16)
        _require(stream.cols > 0 and start + out.size <= 1 << 32,
                 f"synthetic_mxfp4: elements {start}..{start + out.size} past 2^32")
        grid = (min(_blocks(out.size, BLOCK_SIZE), 65535),)
        self._launch("synthetic_mxfp4_bf16", grid, (BLOCK_SIZE,),
                     (out, np.uint32(start), np.uint32(out.size), np.uint32(stream.cols), np.uint32(stream.key),
                      np.uint32(stream.scale_key), I32(stream.exponent)))

    def synthetic_mxfp4_codes(self, blocks, scales, row0: int, stream) -> None:
        """Rows row0.. of an MXFP4 synthetic matrix as stored: blocks (..., G, 16), scales (..., G) uint8."""
        groups = -(-stream.cols // MXFP4_BLOCK)
        _check("scales", scales, np.uint8)
        _check("blocks", blocks, np.uint8, (*scales.shape, MXFP4_BLOCK // 2))
        _require(scales.ndim >= 1 and scales.shape[-1] == groups,
                 f"synthetic_mxfp4_codes: scales {scales.shape}, expected (..., {groups}) for {stream.cols} columns")
        rows = scales.size // groups
        _require((row0 + rows) * groups * MXFP4_BLOCK <= 1 << 32, "synthetic_mxfp4_codes: rows past 2^32 elements")
        grid = (min(_blocks(blocks.size, BLOCK_SIZE), 65535),)
        self._launch("synthetic_mxfp4_codes", grid, (BLOCK_SIZE,),
                     (blocks, scales, np.uint32(row0), np.uint32(rows), np.uint32(stream.cols), np.uint32(stream.key),
                      np.uint32(stream.scale_key), I32(stream.exponent)))

    def mxfp4_widen(self, out, codes, scales) -> None:
        """out (n,) float32 = MXFP4 values of `codes` (n / 2 bytes, low nibble first) and `scales` (n / 32)."""
        n = out.size
        _check("out", out, F32, (n,))
        _check("codes", codes, np.uint8, (n // 2,))
        _check("scales", scales, np.uint8, (n // MXFP4_BLOCK,))
        _require(n % MXFP4_BLOCK == 0, f"mxfp4_widen: {n} values, not whole blocks of {MXFP4_BLOCK}")
        grid = (min(_blocks(n, BLOCK_SIZE), 65535),)
        self._launch("mxfp4_widen_f32", grid, (BLOCK_SIZE,), (out, codes, scales, np.uint32(n)))
