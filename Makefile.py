#!/usr/bin/env python3
"""The project's task runner: `python Makefile.py <task> [args...]`.

Each task sets up what it needs on a fresh machine: a virtual environment in .venv with the package
installed in editable mode and the extras the task needs (reinstalled when pyproject.toml changes).
`gpu-test` and `bench` run with the current interpreter instead: the GPU machine has no package
registry, so they use what is installed there plus this checkout on PYTHONPATH.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
TASKS = {}


def task(fn):
    TASKS[fn.__name__.replace("_", "-")] = fn
    return fn


def sh(*cmd, env=None) -> None:
    print("+", " ".join(map(str, cmd)), flush=True)
    result = subprocess.run([str(c) for c in cmd], cwd=ROOT, env=env)
    if result.returncode:
        sys.exit(result.returncode)


def venv(*extras: str) -> Path:
    """.venv's python, with cupy-getp[extras] installed; extras already installed are kept."""
    python = VENV / "bin" / "python"
    stamp = VENV / ".cupy-getp-installed"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    installed = stamp.read_text().split() if stamp.exists() else []
    have = set(installed[1:]) if installed[:1] == [digest] else None
    if have is not None and set(extras) <= have:
        return python
    if not python.exists():
        print(f"setting up {VENV} (first run only)", flush=True)
        sh(sys.executable, "-m", "venv", VENV)
        sh(python, "-m", "pip", "install", "-q", "--upgrade", "pip")
    wanted = sorted(set(extras) | (have or set()))
    spec = f".[{','.join(wanted)}]" if wanted else "."
    sh(python, "-m", "pip", "install", "-q", "-e", spec)
    stamp.write_text(" ".join([digest, *wanted]))
    return python


def source_env() -> dict:
    """The environment for running from this checkout without installing it."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


@task
def setup(*extras):
    """Create .venv with cupy-getp installed in editable mode, plus the given extras (e.g. test)."""
    print(venv(*extras))


@task
def run(*args):
    """getp over data/input.txt on the embedded default (preset 7m): data/output.txt + timing lines."""
    python = venv()
    sh(python, "-m", "cupy_getp", "run", "-m", "getp", "-i", "data/input.txt", "-o", "data/output.txt", *args)


@task
def test(*args):
    """The test suite (CPU; gpu tests skip with a reason where no GPU is visible)."""
    python = venv("test")
    sh(python, "-m", "pytest", *args)


@task
def gpu_test(*args):
    """On a GPU machine: the gpu-marked tests, with this interpreter and this checkout."""
    sh(sys.executable, "-m", "pytest", "-m", "gpu", *args, env=source_env())


@task
def kernels(*args):
    """Compile every kernels/*.hip for gfx90a (hipcc) and sm_90 (nvcc), as the runtime compilers see them."""
    python = venv()
    sh(python, "-m", "cupy_getp.gpu.portability", *args)


@task
def bench(*args):
    """On a GPU machine: getp throughput of the batched engine (args go to bench/getp_throughput.py, e.g.
    --quick), then single-sequence decode tok/s, BF16 matvec bandwidth and attention's fraction of the copy
    bandwidth."""
    sh(sys.executable, "bench/getp_throughput.py", *args, env=source_env())
    sh(sys.executable, "bench/decode.py", env=source_env())
    sh(sys.executable, "bench/matvec.py", env=source_env())
    sh(sys.executable, "bench/attention.py", env=source_env())


@task
def clean():
    """Remove .venv, caches and build outputs."""
    import shutil

    for path in [VENV, ROOT / ".pytest_cache", ROOT / "build", ROOT / "dist", *ROOT.rglob("__pycache__")]:
        shutil.rmtree(path, ignore_errors=True)


def usage(out) -> None:
    print("usage: python3 Makefile.py <task> [args...]\n\ntasks:", file=out)
    for name, fn in TASKS.items():
        print(f"  {name:10} {fn.__doc__.strip().splitlines()[0]}", file=out)


def main(argv: list[str]) -> None:
    if not argv:
        usage(sys.stdout)
        sys.exit(0)
    if argv[0] not in TASKS:
        print(f"error: unknown task {argv[0]!r}\n", file=sys.stderr)
        usage(sys.stderr)
        sys.exit(2)
    TASKS[argv[0]](*argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
