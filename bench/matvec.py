"""Achieved bandwidth of the matvec kernels against a device-to-device copy measured in the same run.

Bytes counted: every weight read once, plus x read and y written (the minimum traffic). Matrices are
larger than the L2 cache (50 MB on an H100) so repeated launches stream from HBM. Times are the
median of device-event timings over repeated launches, after warm-up.

    python bench/matvec.py [--repeats 50]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from timing import time_ms  # bench/ is on sys.path when run as a script


def copy_bandwidth(rng, stream, repeats: int) -> float:
    """GB/s of a 1 GiB device-to-device memcpy, counting bytes read and written."""
    import cupy

    n = 1 << 28  # 1 GiB of float32
    src, dst = rng.standard_normal(n, dtype=np.float32), cupy.empty(n, np.float32)
    ms = time_ms(stream, lambda: dst.data.copy_from_device_async(src.data, src.nbytes, stream), repeats)
    return round(2 * src.nbytes / ms / 1e6, 1)


def main() -> None:
    import cupy

    from cupy_getp.gpu.device import Device
    from cupy_getp.gpu.kernels import Kernels

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    device = Device.open()
    kernels = Kernels(device)
    stream = device.stream
    rng = cupy.random.default_rng(0)
    results = {"device": device.describe()}

    results["d2d_copy_gb_s"] = copy_bandwidth(rng, stream, args.repeats)

    shapes = {  # the 20b shape's MoE layer as one matrix, and its unembedding
        "bf16_matvec_184320x2880": (184320, 2880, np.uint16, kernels.matvec_bf16w),
        "f32_matvec_201088x2880": (201088, 2880, np.float32, kernels.matvec),
        "f32_matvec_5120x2880_w_qkv": (5120, 2880, np.float32, kernels.matvec),
    }
    for label, (rows, cols, dtype, launch) in shapes.items():
        x = rng.standard_normal(cols, dtype=np.float32)
        y = cupy.empty(rows, np.float32)
        if dtype == np.uint16:
            w = (rng.integers(0, 1 << 16, (rows, cols), dtype=np.uint32) & 0x3FFF | 0x3800).astype(np.uint16)
        else:
            w = rng.standard_normal((rows, cols), dtype=np.float32)
        ms = time_ms(stream, lambda: launch(y, w, x), args.repeats)
        moved = w.nbytes + x.nbytes + y.nbytes
        results[label] = {"ms": round(ms, 4), "gb_s": round(moved / ms / 1e6, 1),
                          "of_copy": round(moved / ms / 1e6 / results["d2d_copy_gb_s"], 3)}
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
