"""Reading and writing files: every failure is one line, `cannot read|write PATH: REASON`, and outputs
appear whole or not at all, never replacing an input, a read-only file or a device."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from .errors import GetpError


def cannot(action: str, path: str | os.PathLike, error: OSError | str) -> GetpError:
    """`cannot read|write PATH: REASON`, the reason being the system's (strerror) where there is one."""
    reason = error if isinstance(error, str) else error.strerror or str(error)
    return GetpError(f"cannot {action} {path}: {reason}")


def read_bytes(path: str | os.PathLike) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise cannot("read", path, e) from None


def read_text(path: str | os.PathLike) -> str:
    """UTF-8 text with its line endings as they are: a '\\r' inside a line is data, not a newline."""
    data = read_bytes(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise cannot("read", path, f"not UTF-8 text (byte {e.start})") from None


class OutputFile:
    """An open output whose write errors (a full disk, a file-size limit) name the output path.
    `tell()` counts what was written, which a device such as /dev/null does not."""

    def __init__(self, file, path: str | os.PathLike):
        self._file, self.path, self._written = file, path, 0

    def write(self, data) -> int:
        try:
            n = self._file.write(data)
        except OSError as e:
            raise cannot("write", self.path, e) from None
        self._written += len(data)
        return n

    def tell(self) -> int:
        return self._written


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, binary: bool = False, inputs: Sequence[str | os.PathLike] = (),
                  size: int | None = None) -> Iterator[OutputFile]:
    """Yield an `OutputFile` that becomes `path` only once the block ends without an exception.

    A regular file is written beside its destination and renamed over it, so an interruption leaves
    `path` as it was; a symlink is followed and its target written; an existing FIFO or device
    (/dev/null) is written in place. Refused before any work: a directory, a read-only existing file,
    one of `inputs` (the files the run reads), or, where `size` bytes are announced, a disk without
    room for them.
    """
    target = Path(os.path.realpath(path))
    existing = _existing(target, path, inputs)
    mode = "wb" if binary else "w"
    encoding = None if binary else "utf-8"
    if existing is not None and not stat.S_ISREG(existing.st_mode):
        with _opened(path, lambda: open(target, mode, encoding=encoding)) as f:
            yield OutputFile(f, path)
        return
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as e:
        raise cannot("write", path, e) from None
    try:
        if size is not None:
            _check_free_space(path, target.parent, size)
        with _opened(path, lambda: os.fdopen(fd, mode, encoding=encoding)) as f:
            yield OutputFile(f, path)
        _install(tmp, target, existing, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # gone already once renamed


def _existing(target: Path, path, inputs) -> os.stat_result | None:
    """The stat of an output that may be written, None if it does not exist yet; GetpError if not."""
    try:
        st = target.stat()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise cannot("write", path, e) from None
    if stat.S_ISDIR(st.st_mode):
        raise cannot("write", path, "it is a directory")
    for source in inputs:
        with contextlib.suppress(OSError):
            if os.path.samefile(target, source):
                raise cannot("write", path, f"it is the input {source}; choose another output file")
    # Checked on the mode bits, not os.access: root may write anything, but a file made read-only
    # says it should not be replaced.
    if stat.S_ISREG(st.st_mode) and not st.st_mode & 0o222:
        raise cannot("write", path, "the file is read-only")
    return st


def _install(tmp: str, target: Path, existing: os.stat_result | None, path) -> None:
    """Rename the finished temporary file over the target. mkstemp's 0600 would surprise: keep the
    replaced file's mode, else give what open() would."""
    try:
        os.chmod(tmp, stat.S_IMODE(existing.st_mode) if existing else 0o666 & ~_umask())
        os.replace(tmp, target)
    except OSError as e:
        raise cannot("write", path, e) from None


@contextlib.contextmanager
def _opened(path, opener):
    """`opener()`'s file as a context; open and close (flush) errors name `path`."""
    try:
        f = opener()
    except OSError as e:
        raise cannot("write", path, e) from None
    try:
        yield f
    finally:
        try:
            f.close()
        except OSError as e:
            raise cannot("write", path, e) from None


def _check_free_space(path, directory: Path, size: int) -> None:
    free = shutil.disk_usage(directory).free
    if free < size:
        raise cannot("write", path, f"not enough disk space: it needs {_size(size)}, {_size(free)} free")


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
