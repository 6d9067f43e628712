"""Fill CuPy's compile cache with every kernel family, one process a family, all at once.

A fresh machine's first engine spends minutes in NVRTC building the families one after another (150-230 s on an
H200, bench/RESULTS.md); built side by side, the whole takes about as long as the largest family, and every later
process of the same tree (same sources, same CUPY_CACHE_DIR) opens them from the cache. Prints one JSON line a
family: its seconds, or why it was not built.

    python bench/warm_cache.py [--families attention,gemm_tc]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build(family: str) -> dict:
    """Builds one family in this (spawned) process: the seconds, or the build's own reason it was not built."""
    from cupy_getp.gpu.device import Device
    from cupy_getp.gpu.kernels import Kernels

    start = time.perf_counter()
    kernels = Kernels(Device.open(), only=(family,))
    record = {"family": family, "seconds": round(time.perf_counter() - start, 1)}
    if family in kernels.not_built:
        record["not_built"] = kernels.not_built[family]
    return record


def main(argv=None) -> int:
    from cupy_getp.gpu.kernels import families

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", help="comma-separated (default: every kernels/<family>.hip)")
    args = parser.parse_args(argv)
    names = args.families.split(",") if args.families else list(families())
    start, failed = time.perf_counter(), 0
    # spawn: a forked child would share the parent's CUDA state; the parent never opens the device
    with ProcessPoolExecutor(len(names), mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(build, name): name for name in names}
        for future in as_completed(futures):
            try:
                print(json.dumps(future.result()), flush=True)
            except Exception as e:  # a build error: its first line, and the others go on
                failed += 1
                why = str(e).splitlines()[0] if str(e) else type(e).__name__
                print(json.dumps({"family": futures[future], "error": why}), flush=True)
    print(json.dumps({"families": len(names), "failed": failed, "seconds": round(time.perf_counter() - start, 1)}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
