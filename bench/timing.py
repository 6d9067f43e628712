"""Event timing shared by the benchmarks: warm up, then the median of `repeats` event-timed calls."""

from __future__ import annotations

import numpy as np


def time_ms(stream, fn, repeats: int) -> float:
    import cupy

    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record(stream)
        fn()
        end.record(stream)
        end.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, end))
    return float(np.median(times))
