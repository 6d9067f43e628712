"""The standard streams, checked once at the command line's edge (`guard_standard_streams`).

A stream the caller closed (`>&-`, `<&-`) leaves its descriptor free, and the next file the run opens
would take that number: an output written through a closed stdout would land in the model file, say.
Each closed descriptor is therefore held by /dev/null first. Then: a closed standard input reads as
empty (chat ends at once, as at EOF), a closed standard output is refused before any work, and a
standard output that fails later (a full disk, /dev/full) ends the run with one line, `error: cannot
write standard output: REASON`, instead of a traceback at the next flush; a pipe whose reader has gone
(`| head`) ends it quietly with SIGPIPE's exit code, 141.
"""

from __future__ import annotations

import errno
import io
import os
import sys

from ..errors import GetpError
from ..fileio import cannot

STANDARD_OUTPUT = "standard output"


class ReaderGone(GetpError):
    """Standard output is a pipe whose reader has gone (`| head`): the run ends quietly, as a program
    killed by SIGPIPE would, after its clean-up."""


class _CheckedOutput(io.FileIO):
    """A standard descriptor whose first write error is reported (`loud`: as GetpError) once; later
    writes, the interpreter's last flush included, are dropped so that the error stays one line."""

    def __init__(self, fd: int, loud: bool):
        super().__init__(fd, "wb", closefd=False)
        self.loud, self.failed = loud, False

    def write(self, data) -> int:
        if self.failed:
            return len(data)
        try:
            return super().write(data)
        except OSError as e:
            self.failed = True
            if self.loud and e.errno == errno.EPIPE:
                raise ReaderGone(str(e)) from None
            if self.loud:
                raise cannot("write", STANDARD_OUTPUT, e) from None
            return len(data)


def _hold_if_closed(fd: int) -> bool:
    """True if `fd` was closed; it is then /dev/null, so that no file the run opens takes its number."""
    try:
        os.fstat(fd)
        return False
    except OSError:
        pass
    null = os.open(os.devnull, os.O_RDWR)
    if null != fd:
        os.dup2(null, fd)
        os.close(null)
    return True


def _checked_text(stream, fd: int, loud: bool):
    """`stream` (sys.stdout or sys.stderr) rebuilt over a _CheckedOutput of `fd`, with its encoding
    and buffering; a stream that is not on `fd` (a test's capture) is left alone."""
    try:
        if stream is not None and stream.fileno() != fd:
            return stream
    except (OSError, ValueError, AttributeError):
        return stream
    if stream is not None:
        stream.flush()
    like = stream or sys.__stdout__
    encoding = getattr(like, "encoding", None) or "utf-8"
    errors = getattr(like, "errors", None) or "strict"
    buffered = io.BufferedWriter(_CheckedOutput(fd, loud))
    return io.TextIOWrapper(buffered, encoding=encoding, errors=errors,
                            line_buffering=bool(getattr(stream, "line_buffering", False)), write_through=False)


def guard_standard_streams() -> None:
    """Make the three standard streams safe to use (see the module's docstring); call before any file
    is opened. GetpError if standard output is closed."""
    closed = [_hold_if_closed(fd) for fd in (0, 1, 2)]
    if closed[0] or sys.stdin is None:
        sys.stdin = open(os.devnull, encoding="utf-8")
    sys.stderr = _checked_text(None if closed[2] else sys.stderr, 2, loud=False)
    if closed[1] or sys.stdout is None:
        raise GetpError(f"{STANDARD_OUTPUT} is closed: every command writes its results there")
    sys.stdout = _checked_text(sys.stdout, 1, loud=True)


def flush_standard_output() -> None:
    """The last buffered output, written while a failure can still be reported as one line."""
    sys.stdout.flush()
