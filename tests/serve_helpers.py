"""A live `cupy-getp serve` in a subprocess on a free 127.0.0.1 port, for tests and the load benchmark."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
READY = re.compile(r"serving .* at (http://\S+) ")


class LiveServer:
    """`cupy-getp serve ARGS --port 0`; `url` once it listens. Use as a context manager."""

    def __init__(self, *args: str, start_timeout: float = 120.0):
        self.log = tempfile.NamedTemporaryFile("w+", prefix="serve-", suffix=".log", delete=False)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        self.proc = subprocess.Popen([sys.executable, "-m", "cupy_getp", "serve", *args, "--port", "0"],
                                     stdout=subprocess.DEVNULL, stderr=self.log, env=env, cwd=ROOT)
        self.url = self._wait_ready(start_timeout)

    def _wait_ready(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = READY.search(self.stderr())
            if found:
                return found.group(1)
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.stderr()}")
            time.sleep(0.1)
        self.close()
        raise RuntimeError(f"the server did not start in {timeout} s:\n{self.stderr()}")

    def stderr(self) -> str:
        return Path(self.log.name).read_text()

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self.log.close()
        os.unlink(self.log.name)

    def __enter__(self) -> LiveServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def metric(text: str, name: str, **labels) -> float | None:
    """The value of one sample of a Prometheus text page, or None."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    full = f"{name}{{{want}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(full + " "):
            return float(line.split()[-1])
    return None
