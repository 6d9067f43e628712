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


ONE_ROW_TOKEN = 13225  # the token the one-row steps below feed (bench/decode.py's TOKEN)
SPREAD_STRIDE = 7919  # a prime: the tokens of a step of many rows, ONE_ROW_TOKEN + i SPREAD_STRIDE


def one_row_step(batched, pos: int):
    """A batched engine's step of its single row (slot 0) at `pos`, fed ONE_ROW_TOKEN; returns the step."""
    return rows_step(batched, pos, 1)


def rows_step(batched, pos: int, rows: int):
    """A batched engine's step of `rows` decode rows, row i in slot i at `pos`: one row fed ONE_ROW_TOKEN, more rows
    tokens spread over the vocabulary (so that their routes spread over the experts, as real rows' do; one token
    for all would send every row to the same experts); returns the step."""
    vocab = batched.model.config.vocab_size
    tokens = (ONE_ROW_TOKEN + SPREAD_STRIDE * np.arange(rows)) % vocab
    slots = np.arange(rows, dtype=np.int32)
    return batched.step(slots, np.full(rows, pos, np.int32), tokens.astype(np.int32))


def graph_replay_ms(batched, pos: int, repeats: int = 50, rows: int = 1) -> float:
    """Device time of one step of a batched engine's `rows` rows at `pos` (rows_step): its graph replayed back to
    back (no host work between the replays), between two events."""
    import cupy

    v = rows_step(batched, pos, rows)
    stream = batched.device.stream
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    with stream:
        start.record(stream)
        for _ in range(repeats):
            batched.runner.run(v)
        end.record(stream)
    end.synchronize()
    return round(cupy.cuda.get_elapsed_time(start, end) / repeats, 3)


def profiled_replay(batched, pos: int) -> None:
    """One graph replay of a batched engine's single row at `pos` between cudaProfilerStart and Stop, so that
    `ncu --profile-from-start off --graph-profiling node` times that step's kernels one by one, as the graph
    runs them (gpu_session.sh's `stepkernels`)."""
    import cupyx.profiler

    v = one_row_step(batched, pos)
    batched.device.synchronize("the step before the profiled replay")
    with cupyx.profiler.profile():
        batched.runner.run(v)
        batched.device.synchronize("the profiled replay")


def kernel_profile(device, kernels, fn) -> tuple[dict[str, float], dict[str, int]]:
    """Run `fn` (eager launches) with every kernel launch event-timed: (kernel -> summed device ms, kernel ->
    launches). The launch counters start from zero here."""
    import cupy

    device.counters.reset()
    kernels.profile = {}
    try:
        fn()
        device.synchronize("profile")
        events = kernels.profile
    finally:
        kernels.profile = None
    times = {name: sum(cupy.cuda.get_elapsed_time(a, b) for a, b in pairs) for name, pairs in events.items()}
    return times, dict(device.counters.launches)


def eager_step_profile(batched, step) -> tuple[dict[str, float], dict[str, int]]:
    """kernel_profile of one step of a batched engine launched kernel by kernel (`step()` runs it; its
    graphs set aside meanwhile): the launches that a graph of that step replays."""
    graphs, batched.runner.use_graphs = batched.runner.use_graphs, False
    try:
        return kernel_profile(batched.device, batched.model.kernels, step)
    finally:
        batched.runner.use_graphs = graphs
