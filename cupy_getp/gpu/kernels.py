"""Kernel sources -> `cupy.RawModule`s, and one launch helper per kernel.

Each `kernels/<family>.hip` is compiled once per process and device, by hiprtc on ROCm or NVRTC on
CUDA, from the same text: `#define WARP_SIZE` (from the device), then `common.h` and the file itself
inlined with `#line` directives, so compiler messages name the right file and line, and CuPy's
compile cache (which hashes the source string, not included files) sees every change.

Model code calls only the methods of `Kernels`; each one checks shapes, dtypes and contiguity, casts
scalars to exact numpy types (a bare Python float arrives as 0.0 in a `float` parameter), computes
the grid, launches on the engine's stream and counts the launch.
"""

from __future__ import annotations

import functools
import os
import re
from importlib import resources
from pathlib import Path

import numpy as np

from .device import Device
from .launch import BatchLaunches
from .launch.gemm_tc import WG_SMEM_BYTES, WG_THREADS
from .launch.common import BF16, F32, I32, _aligned, _blocks, _check

BLOCK_SIZE = 256  # threads per block, as kernels/common.h
ATTN_CHUNK = 64  # positions per block in the weighted sum of values
MOE_MAX_K = 16  # experts per token moe_mlp2_accumulate_bf16w takes (kernels/moe.hip)
# A kernel's name, after any __launch_bounds__(...); names made by macros (attention.hip's variants) are
# found in the compiled modules on first use instead.
_KERNEL = re.compile(r'extern "C" __global__ void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)')
_INCLUDE = re.compile(r'^\s*#\s*include\s+"common\.h"\s*$', re.MULTILINE)


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
    return (f"#define WARP_SIZE {warp_size}\n#define BLOCK_SIZE {BLOCK_SIZE}\n#define WG_SMEM_BYTES {WG_SMEM_BYTES}\n"
            f"#define WG_THREADS {WG_THREADS}\n"
            f'#line 1 "kernels/common.h"\n{header}\n'
            f'#line 1 "kernels/{family}.hip"\n{body}')


@functools.cache
def _source(family: str, warp_size: int) -> str:
    """The assembled source, read once per process (the module and the kernel names both need it)."""
    return assemble_source(family, warp_size)


@functools.cache
def _module(family: str, warp_size: int, device_id: int, options: tuple = ()):
    import cupy

    with cupy.cuda.Device(device_id):
        return cupy.RawModule(code=_source(family, warp_size), options=options)


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


def families() -> tuple[str, ...]:
    """Every kernels/<family>.hip: one module each."""
    return tuple(p.stem for p in kernel_files())


class Kernels(BatchLaunches):
    """Every kernel of the engine, bound to one device and its stream. The single-sequence launch helpers
    are here; the batched engine's are per family in `launch/` (mixed in)."""

    def __init__(self, device: Device):
        self.device = device
        self.warps_per_block = BLOCK_SIZE // device.warp_size
        self.functions = {}  # name -> kernel; macro-made names are added on first use
        self._family_of = {}
        self.modules = {}
        self.not_built: dict[str, str] = {}  # optional family -> why it is not available
        for family in families():
            options = family_options(family, device)
            if options is None:
                self.not_built[family] = f"not built for {device.arch}"
                continue
            try:
                self._open_family(family, _module(family, device.warp_size, device.id, options))
            except Exception as e:
                if family not in OPTIONAL_FAMILIES:
                    raise
                self.not_built[family] = f"build failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        self.profile: dict[str, list] | None = None  # name -> [(start, end) events] while profiling (eager)
        self._shared_limit = {}  # kernel -> dynamic shared bytes it was opened up to (CUDA, > 48 KiB)
        self.wgmma = self._probe_wgmma()  # the products take the wgmma kernels (launch/gemm_tc.py)

    def _open_family(self, family: str, module) -> None:
        self.modules[family] = module
        for name in _KERNEL.findall(_source(family, self.device.warp_size)):
            self._family_of[name] = family
            self._open(module, name)  # compiles the module: compile errors belong to warm-up

    def _probe_wgmma(self) -> bool:
        """True when the gemm_wgmma kernels were built with their wgmma bodies (the device says so, once, at
        warm-up: never during graph capture). CUPY_GETP_WGMMA=0 keeps the mma.sync kernels."""
        if "gemm_wgmma" not in self.modules or os.environ.get("CUPY_GETP_WGMMA", "") == "0":
            return False
        import cupy

        flag = cupy.zeros(1, np.int32)
        self._launch("wg_available", (1,), (1,), (flag,))
        return bool(int(flag.get(stream=self.device.stream)[0]))

    def _launch(self, name: str, grid: tuple, block: tuple, args: tuple, shared_mem: int = 0) -> None:
        if grid[0] == 0:  # CuPy would still launch one block
            return
        function = self.functions.get(name) or self._function(name)
        # Over 48 KiB of dynamic shared memory must be opted into per kernel on CUDA; on ROCm (CuPy 13)
        # the setter is a stub that fails, and up to 64 KiB work without it.
        if shared_mem > 48 * 1024 and not self.device.is_hip and self._shared_limit.get(name, 0) < shared_mem:
            function.max_dynamic_shared_size_bytes = shared_mem
            self._shared_limit[name] = shared_mem
        events = self._profile_start(name)
        try:
            function(grid, block, args, shared_mem=shared_mem, stream=self.device.stream)
        except Exception as e:
            raise RuntimeError(f"launch of kernel {name} (grid {grid}, block {block}) failed: {e}") from e
        if events:
            events[1].record(self.device.stream)
        counters = self.device.counters
        counters.launches[name] = counters.launches.get(name, 0) + 1
        if self.device.sync_check:
            self.device.synchronize(f"kernel {name}")

    def _profile_start(self, name: str):
        """(start, end) events around this launch when profiling (bench/getp_throughput.py --profile)."""
        if self.profile is None:
            return None
        import cupy

        events = (cupy.cuda.Event(), cupy.cuda.Event())
        events[0].record(self.device.stream)
        self.profile.setdefault(name, []).append(events)
        return events

    def _open(self, module, name: str):
        """`name` from `module` (compiling it on first use), or None when the module has no such kernel."""
        from cupy.cuda.compiler import CompileException

        try:
            function = self.functions[name] = module.get_function(name)
            return function
        except CompileException:
            raise
        except Exception as e:  # CUDADriverError (CUDA_ERROR_NOT_FOUND) / hipErrorNotFound
            if "notfound" in str(e).lower().replace("_", "").replace(" ", ""):
                return None  # no such symbol here (a macro matched the pattern, or another module has it)
            raise

    def _function(self, name: str):
        """Kernel `name` from its family's module (the one whose source declares it, else any)."""
        hinted = self._family_of.get(name)
        for family in sorted(self.modules, key=lambda f: f != hinted):
            function = self._open(self.modules[family], name)
            if function is not None:
                return function
        raise RuntimeError(f"no kernel named {name} in kernels/*.hip")

    def _rows_grid(self, rows: int, y: int = 1) -> tuple:
        return (_blocks(rows, self.warps_per_block), y)

    # -- rmsnorm.hip, softmax.hip, rope.hip, embedding.hip --------------------------------------------
    def rmsnorm(self, out, x, w) -> None:
        n = x.shape[0]
        for name, a in (("out", out), ("x", x), ("w", w)):
            _check(name, a, F32, (n,))
        self._launch("rmsnorm_f32", (1,), (BLOCK_SIZE,), (out, x, w, I32(n)))

    def softmax_rows(self, x, n: int) -> None:
        """Softmax of x[r, :n] for every row r of a 2-D buffer, in place."""
        _check("x", x, F32)
        rows, stride = x.shape
        assert 0 < n <= stride
        self._launch("softmax_rows_f32", (rows,), (BLOCK_SIZE,), (x, I32(n), I32(stride)))

    def rope(self, heads, cos, sin, n_heads: int, head_dim: int) -> None:
        """Rotate the first n_heads heads of `heads` in place."""
        _check("heads", heads, F32)
        _check("cos", cos, F32, (head_dim // 2,))
        _check("sin", sin, F32, (head_dim // 2,))
        assert heads.size >= n_heads * head_dim
        total = n_heads * head_dim // 2
        self._launch("rope_f32", (_blocks(total, BLOCK_SIZE),), (BLOCK_SIZE,),
                     (heads, cos, sin, I32(n_heads), I32(head_dim)))

    def embedding(self, x, table, token: int) -> None:
        _check("x", x, F32, (table.shape[1],))
        _check("table", table, F32)
        assert 0 <= token < table.shape[0]
        self._launch("embedding_f32", (_blocks(x.size, BLOCK_SIZE),), (BLOCK_SIZE,),
                     (x, table, I32(token), I32(x.size)))

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

    # -- attention.hip --------------------------------------------------------------------------------
    def kv_cache_write(self, key_cache, value_cache, qkv, q_dim: int, kv_dim: int, pos: int) -> None:
        """Rotated k and v of this position into one layer's caches (seq_len, kv_dim)."""
        for name, a in (("key_cache", key_cache), ("value_cache", value_cache)):
            _check(name, a, F32)
            assert a.shape[1] == kv_dim and 0 <= pos < a.shape[0]
        _check("qkv", qkv, F32, (q_dim + 2 * kv_dim,))
        self._launch("kv_cache_write_f32", (_blocks(kv_dim, BLOCK_SIZE),), (BLOCK_SIZE,),
                     (key_cache, value_cache, qkv, I32(q_dim), I32(kv_dim), I32(pos)))

    def attn_scores(self, scores, q, key_cache, sinks, pos: int, head_dim: int, kv_group: int, window: int) -> None:
        """scores[h, :pos + 2]: q.k / sqrt(D) over the cache (masked outside the window), then the sink."""
        n_heads, stride = scores.shape
        _check("scores", scores, F32)
        _check("q", q, F32)
        _check("key_cache", key_cache, F32)
        _check("sinks", sinks, F32, (n_heads,))
        assert q.size >= n_heads * head_dim and pos + 2 <= stride
        grid = (_blocks(pos + 1, self.warps_per_block), n_heads)
        self._launch("attn_scores_f32", grid, (BLOCK_SIZE,),
                     (scores, q, key_cache, sinks, I32(pos), I32(head_dim), I32(key_cache.shape[1]), I32(kv_group),
                      I32(window), I32(stride)))

    def attn_weighted_sum_partial(self, partial, probs, value_cache, pos: int, head_dim: int, kv_group: int) -> int:
        """Chunk sums of the weighted values: partial, flat, holds [h, c, :] = sum over the positions t of
        chunk c (ATTN_CHUNK positions each) of probs[h, t] * v_t, packed (n_heads, n_chunks, head_dim).
        Returns n_chunks."""
        n_heads, stride = probs.shape
        n_chunks = _blocks(pos + 1, ATTN_CHUNK)
        _check("partial", partial, F32)
        _check("probs", probs, F32)
        _check("value_cache", value_cache, F32)
        assert partial.ndim == 1 and partial.size >= n_heads * n_chunks * head_dim
        if head_dim > BLOCK_SIZE:
            raise ValueError(f"head_dim {head_dim} > {BLOCK_SIZE} is not supported by attn_weighted_sum_partial")
        block = head_dim * (BLOCK_SIZE // head_dim)
        self._launch("attn_weighted_sum_partial_f32", (n_chunks, n_heads), (block,),
                     (partial, probs, value_cache, I32(pos), I32(head_dim), I32(value_cache.shape[1]), I32(kv_group),
                      I32(stride), I32(ATTN_CHUNK)))
        return n_chunks

    def attn_combine(self, out, partial, n_heads: int, head_dim: int, n_chunks: int) -> None:
        """out (n_heads * head_dim,) = the chunk sums of `attn_weighted_sum_partial` added in chunk order."""
        _check("out", out, F32, (n_heads * head_dim,))
        _check("partial", partial, F32)
        assert partial.ndim == 1 and partial.size >= n_heads * n_chunks * head_dim
        self._launch("attn_combine_f32", (_blocks(out.size, BLOCK_SIZE),), (BLOCK_SIZE,),
                     (out, partial, I32(n_heads), I32(head_dim), I32(n_chunks)))

    # -- moe.hip --------------------------------------------------------------------------------------
    def router_topk(self, experts, weights, scores) -> None:
        """One vector's top-k experts and their softmax weights: router_topk_rows on one row."""
        k = experts.shape[0]
        _check("experts", experts, I32, (k,))
        assert 0 < k <= scores.shape[0]
        self.router_topk_rows(experts[None], weights[None], scores[None])

    def moe_mlp1_swiglu(self, g, w_mlp1, b_mlp1, t, experts, limit: float) -> None:
        """g (k, I) = SwiGLU(w_mlp1[e] @ t + b_mlp1[e]) for each chosen expert e; w_mlp1 (E, 2I, H) bf16."""
        n_experts, two_inter, hidden = w_mlp1.shape
        k, inter = g.shape
        _check("g", g, F32)
        _check("w_mlp1", w_mlp1, BF16)
        _check("b_mlp1", b_mlp1, F32, (n_experts, two_inter))
        _check("t", t, F32, (hidden,))
        _check("experts", experts, I32, (k,))
        assert two_inter == 2 * inter
        vec8 = hidden % 8 == 0 and _aligned(w_mlp1, t)
        self._launch("moe_mlp1_swiglu_bf16w", self._rows_grid(inter, k), (BLOCK_SIZE,),
                     (g, w_mlp1, b_mlp1, t, experts, I32(hidden), I32(inter), F32(limit), I32(vec8)))

    def moe_mlp2_accumulate(self, x, moe_out, w_mlp2, b_mlp2, g, experts, weights) -> None:
        """x += moe_out = sum_s weights[s] * (w_mlp2[e_s] @ g[s] + b_mlp2[e_s]); w_mlp2 (E, H, I) bf16."""
        n_experts, hidden, inter = w_mlp2.shape
        k = experts.shape[0]
        _check("x", x, F32, (hidden,))
        _check("moe_out", moe_out, F32, (hidden,))
        _check("w_mlp2", w_mlp2, BF16)
        _check("b_mlp2", b_mlp2, F32, (n_experts, hidden))
        _check("g", g, F32, (k, inter))
        _check("experts", experts, I32, (k,))
        _check("weights", weights, F32, (k,))
        if not 0 < k <= MOE_MAX_K:
            raise ValueError(f"moe_mlp2_accumulate: {k} experts per token, at most {MOE_MAX_K}")
        vec8 = inter % 8 == 0 and _aligned(w_mlp2, g)
        rows_per_block = self.warps_per_block // min(k, self.warps_per_block)
        self._launch("moe_mlp2_accumulate_bf16w", (_blocks(hidden, rows_per_block),), (BLOCK_SIZE,),
                     (x, moe_out, w_mlp2, b_mlp2, g, experts, weights, I32(k), I32(hidden), I32(inter), I32(vec8)))

    # -- synthetic.hip --------------------------------------------------------------------------------
    def synthetic(self, out, start: int, key: int, scale: float, offset: float, round_bf16: bool = False) -> None:
        """Fill `out` (float32, or uint16 = bf16) with elements start.. of a synthetic stream (float32 ones
        rounded to bf16 values when `round_bf16`)."""
        _check("out", out, out.dtype)
        if out.dtype not in (np.float32, np.uint16):
            raise TypeError(f"synthetic: dtype {out.dtype}")
        assert start + out.size <= 1 << 32
        grid = (min(_blocks(out.size, BLOCK_SIZE), 65535),)
        args = (out, np.uint32(start), np.uint32(out.size), np.uint32(key), F32(scale), F32(offset))
        if out.dtype == np.float32:
            self._launch("synthetic_f32", grid, (BLOCK_SIZE,), args + (I32(round_bf16),))
        else:
            self._launch("synthetic_bf16", grid, (BLOCK_SIZE,), args)
