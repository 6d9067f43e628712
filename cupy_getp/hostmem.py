"""Host memory: how much a new allocation can get, and large allocations that fail in one line.

The kernel's MemAvailable is not the whole answer: an address-space limit (`ulimit -v`, `prlimit --as`)
or a cgroup's memory.max (a container, a systemd slice) can refuse far less. The smallest wins.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
from pathlib import Path

from .errors import GetpError


class HostMemoryError(GetpError):
    """An allocation on the host that the system refused."""


def available_memory() -> int | None:
    """Bytes a new allocation can get: the least of MemAvailable, what the address-space limit leaves
    and what the cgroup's limit leaves; None where none of them can be read."""
    known = [b for b in (_mem_available(), _address_space_left(), _cgroup_left()) if b is not None]
    return min(known) if known else None


@contextlib.contextmanager
def allocating(what: str, nbytes: int):
    """Turn numpy's MemoryError (a traceback), or an OSError ENOMEM (a memory map's read, a file system
    that ran out), into `cannot allocate WHAT (SIZE) on the host: ...`."""
    try:
        yield
    except (MemoryError, OSError) as e:
        if isinstance(e, OSError) and e.errno != errno.ENOMEM:
            raise
        available = available_memory()
        free = f"{_gb(available)} available" if available is not None else "the system refused it"
        raise HostMemoryError(f"cannot allocate {what} ({_gb(nbytes)}) on the host: {free} "
                              f"(a memory limit, ulimit -v or a cgroup, may be lower than the machine's memory)"
                              ) from None


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 10**7 else f"{n / 1e6:.2f} MB"


def _mem_available() -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return None


def _address_space_left() -> int | None:
    """RLIMIT_AS less the address space this process already maps (VmSize)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return max(0, soft - int(line.split()[1]) * 1024)
    return soft


def _cgroup_left() -> int | None:
    """The cgroup v2 memory.max less memory.current, for this process's cgroup (v1: limit_in_bytes)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            hierarchy, controllers, path = line.split(":", 2)
            if hierarchy == "0":
                base = Path("/sys/fs/cgroup") / path.lstrip("/")
                limit_name, usage_name = "memory.max", "memory.current"
            elif "memory" in controllers.split(","):
                base = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
                limit_name, usage_name = "memory.limit_in_bytes", "memory.usage_in_bytes"
            else:
                continue
            limit = (base / limit_name).read_text().strip()
            if limit == "max" or int(limit) >= 1 << 60:  # v1 says "no limit" with a huge number
                return None
            return max(0, int(limit) - int((base / usage_name).read_text()))
    return None
