"""`cupy-getp`: a thin typer front end. Parses, calls the library, prints.

`run` mirrors the original runtime's flags exactly; the other commands are friendlier shortcuts.
Every user error ends in one line, `error: ...`, and a non-zero exit (2 for usage, 1 otherwise).
The commands live in `cupy_getp.commands`, by family; this module registers them and runs the app.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

import typer

from .commands.common import app
from .commands.streams import ReaderGone, flush_standard_output, guard_standard_streams
from .errors import GetpError
from .fileio import STOP_SIGNALS

# -- the command families: importing a module registers its commands on `app`, in --help's order. A new
# family is one more line here.
from .commands import inference  # noqa: F401  run, getp, generate, chat
from .commands import model_tools  # noqa: F401  decode, random-model, export, export-tokenizer, info
from .commands import diff  # noqa: F401  diff
from .commands import serve  # noqa: F401  serve

# typer >= 0.24 vendors click as typer._click; find its exceptions wherever they are.
_click_errors = sys.modules[typer.BadParameter.__module__]
UsageError, ClickException = _click_errors.UsageError, _click_errors.ClickException


# -- entry point: signals and errors to one line and an exit code ----------------------------------------
class Interrupted(BaseException):
    """A stop signal, raised where the program is, so that every `finally` and the output's clean-up
    run. Not a KeyboardInterrupt: typer turns that into a silent exit 130."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_stopping: list[int] = []  # the stop signal being handled, once one has arrived


def _raise_interrupted(signum: int, frame) -> None:
    """Raise for the first stop signal only. Later ones (a burst: INT, TERM and HUP milliseconds apart)
    would raise again inside the clean-up the first one started, skipping what is left of it (the
    removal of a temporary file) and leaving an exit code that disagrees with the message. (Setting
    SIG_IGN instead would race with signals already caught: Python reports those as errors.)"""
    if _stopping:
        return
    _stopping.append(signum)
    raise Interrupted(signum)


def _catch_stop_signals() -> None:
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:  # nohup, a background job: stay immune
            signal.signal(signum, _raise_interrupted)


def _exit_now(code: int) -> None:
    """Exit once the clean-up is done, without the interpreter's shutdown: that restores the default
    action of every signal with a Python handler, and a stop signal still arriving would then kill the
    process, its exit code no longer the one the message names."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> None:
    _catch_stop_signals()
    command = typer.main.get_command(app)
    try:
        guard_standard_streams()
        code = command.main(args=argv, prog_name="cupy-getp", standalone_mode=False)
        flush_standard_output()
    except UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # bare `cupy-getp`: help, as a usage error
            typer.echo(e.ctx.get_help(), err=True)
            sys.exit(2)
        hint = f" (see '{e.ctx.command_path} --help')" if e.ctx else ""
        typer.echo(f"error: {e.format_message()}{hint}", err=True)
        sys.exit(2)
    except ReaderGone:
        sys.exit(128 + signal.SIGPIPE)
    except ClickException as e:
        typer.echo(f"error: {e.format_message()}", err=True)
        sys.exit(1)
    except GetpError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(1)
    except MemoryError as e:  # one the library did not name (hostmem.allocating names the large ones)
        typer.echo(f"error: cannot allocate host memory{f' ({e})' if str(e) else ''}", err=True)
        sys.exit(1)
    except Interrupted as e:
        typer.echo(f"\ninterrupted ({e})", err=True)
        _exit_now(128 + e.signum)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
