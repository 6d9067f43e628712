"""Worker functions that fail, for `WorkerPool` tests: importable by name in a spawned worker process
(a test's monkeypatch does not reach another process; the pool sends its worker function by name)."""

from __future__ import annotations

import os

from cupy_getp import workers


def failing_worker(job, tasks, results):
    """Worker 1's engine fails on its first chunk (a device fault); the others run as usual."""
    if job.number == 1:
        def broken(*args, **kwargs):
            raise RuntimeError("device fault\n(second line of the message)")

        workers.infer = broken
    workers.worker_main(job, tasks, results)


def dying_worker(job, tasks, results):
    """Worker 1 is killed (as by the OOM killer) once warm, without a word; the others run as usual."""
    if job.number == 1:
        results.put(("ready", job.number))
        tasks.get()
        os._exit(9)
    workers.worker_main(job, tasks, results)
