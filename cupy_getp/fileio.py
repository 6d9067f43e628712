"""Reading and writing files: every failure is one line, `cannot read|write PATH: REASON`, and outputs
appear whole or not at all, never replacing an input, a read-only file or a device."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from .errors import GetpError

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # what the command line turns into a clean stop


def cannot(action: str, path: str | os.PathLike, error: OSError | str) -> GetpError:
    """`cannot read|write PATH: REASON`, the reason being the system's (strerror) where there is one."""
    reason = error if isinstance(error, str) else error.strerror or str(error)
    return GetpError(f"cannot {action} {path}: {reason}")


def read_bytes(path: str | os.PathLike, regular: bool = False) -> bytes:
    """The file's bytes; with `regular`, a FIFO, device or socket is refused instead of read."""
    if not regular:
        try:
            return Path(path).read_bytes()
        except OSError as e:
            raise cannot("read", path, e) from None
    with open_regular(path) as f:
        try:
            return f.read()
        except OSError as e:
            raise cannot("read", path, e) from None


def open_regular(path: str | os.PathLike):
    """`path` opened for binary reading, if it is a regular file (a symlink to one is). A FIFO would
    block until someone writes to it and a device never ends: both are refused, without blocking."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise cannot("read", path, e) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise cannot("read", path, os.strerror(errno.EISDIR) if stat.S_ISDIR(mode) else
                     "not a regular file (a FIFO, a device or a socket)")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_text(path: str | os.PathLike, regular: bool = False) -> str:
    """UTF-8 text with its line endings as they are: a '\\r' inside a line is data, not a newline."""
    data = read_bytes(path, regular)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise cannot("read", path, f"not UTF-8 text (byte {e.start})") from None


def utf8_text(text: str | bytes, what: str) -> str:
    """The one door for text typed by the user (a prompt, instructions, a line of standard input) on its
    way to the tokenizer or openai-harmony: bytes, or a str as Python decodes the command line and
    standard input (bytes that are not UTF-8 kept as lone surrogates), become valid UTF-8 text, or
    GetpError naming `what` and the first bad byte."""
    if isinstance(text, str):
        try:
            text = text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError as e:  # a lone surrogate that no byte explains (the Python API)
            raise GetpError(f"{what}: not UTF-8 text (a lone surrogate at character {e.start})") from None
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError as e:
        raise GetpError(f"{what}: not UTF-8 text (byte 0x{text[e.start]:02x} at offset {e.start})") from None


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
    tmp = None
    try:
        try:
            with _stop_signals_held():  # a stop signal's exception cannot come between the file and `tmp`
                fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        except OSError as e:
            raise cannot("write", path, e) from None
        if size is not None:
            _check_free_space(path, target.parent, size)
        with _opened(path, lambda: os.fdopen(fd, mode, encoding=encoding)) as f:
            yield OutputFile(f, path)
        _install(tmp, target, existing, path)
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)  # gone already once renamed


@contextlib.contextmanager
def _stop_signals_held():
    """INT, TERM and HUP wait until the block ends, then arrive as usual (the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


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
