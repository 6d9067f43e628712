"""Output files that appear whole or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from .errors import GetpError


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, binary: bool = False) -> Iterator[IO]:
    """Open a temporary file beside `path`, yield it, and rename it to `path` once the block ends
    without an exception; on any exception the temporary file is removed and `path` is untouched.

    The temporary file is created on entry, so an unwritable destination fails before any work.
    """
    target = Path(path)
    if target.is_dir():
        raise GetpError(f"cannot write output file {path}: it is a directory")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    except OSError as e:
        raise GetpError(f"cannot write output file {path}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb" if binary else "w", encoding=None if binary else "utf-8") as f:
            yield f
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would surprise; use what open() would give
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
