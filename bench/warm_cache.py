"""Fill CuPy's compile cache with every kernel family (or some), and say how long the build took.

A fresh machine's first engine spends its warm-up in NVRTC; `Kernels` builds the families and gemm_wgmma's parts
side by side (cupy_getp/gpu/kernels.py FAMILY_PARTS), and every later process of the same tree (same sources, same
CUPY_CACHE_DIR) opens them from the cache. Run in the background of a device session while focused tests build only
their own families (tests/conftest.py CUPY_GETP_TEST_FAMILIES). Prints one JSON line.

    python bench/warm_cache.py [--families attention,gemm_tc]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", help="comma-separated (default: every kernels/<family>.hip)")
    args = parser.parse_args(argv)
    from cupy_getp.gpu.device import Device
    from cupy_getp.gpu.kernels import Kernels

    device = Device.open()  # first: without a GPU, the one-line error and nothing else
    start = time.perf_counter()
    with device.cuda_device:
        kernels = Kernels(device, only=tuple(args.families.split(",")) if args.families else None)
    print(json.dumps({"bench": "warm_cache", "seconds": round(time.perf_counter() - start, 1),
                      "built": sorted(kernels.modules), "not_built": kernels.not_built, "cpus": os.cpu_count(),
                      "cache": os.environ.get("CUPY_CACHE_DIR", "~/.cupy/kernel_cache")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
