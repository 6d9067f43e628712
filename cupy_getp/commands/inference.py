"""The inference commands: run (the original's flags), getp, generate and chat."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..checkpoint import open_weights
from ..checkpoint.layout import n_params
from ..errors import GetpError
from ..kv_cache import check_kv_cache
from .common import (MODES, GetpFlags, RunOptions, app, check_precision, choice, config_overrides, describe_model,
                     given_path, loaded_engine, make_sampler, note, open_tokenizer, pick_engine, with_getp_flags,
                     with_run_options, write_out)


@contextlib.contextmanager
def _getp_progress(weights_total: int):
    """Progress on stderr, when it is a terminal: (load, start). `load(n)` for n weights loaded;
    `start(requests)` ends the loading bar and returns the per-request callback."""
    if not sys.stderr.isatty():
        yield None, None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[detail]}"),
               TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        loading = bar.add_task("loading", total=weights_total, detail="weights")

        def start(total: int):
            bar.remove_task(loading)
            task, done = bar.add_task("requests", total=total, detail=f"0/{total}, 0 tok"), [0, 0]

            def advance(tokens: int) -> None:
                done[0] += 1
                done[1] += tokens
                bar.update(task, advance=1, detail=f"{done[0]}/{total}, {done[1]} tok")
                if done[0] == total:
                    bar.stop()  # before the timing lines reach the same terminal

            return advance

        yield (lambda n: bar.update(loading, advance=n)), start


@app.command()
@with_run_options
@with_getp_flags
def run(
    options: RunOptions,
    input: Annotated[Optional[str], typer.Option("-i", "--input", help="generate/chat: the prompt; "
                                                                       "getp: the input file.")] = None,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", parser=given_path,
                                                   help="getp: the output file.")] = None,
    mode: Annotated[str, typer.Option("-m", "--mode", help="generate, chat or getp.")] = "generate",
    system: Annotated[Optional[str], typer.Option("-y", "--system", help="chat: developer instructions.")] = None,
    flags: GetpFlags = GetpFlags(),
) -> None:
    """The original runtime's command line: run MODEL [-t -p -s -n -i -o -z -m -y]."""
    choice(mode, MODES, "mode")
    if mode != "getp" and flags.spreads():
        raise GetpError("--shard, --gpus, --expert-parallel and --workers apply only with -m getp")
    given = flags.batched_options()
    if mode != "getp" and given:
        raise GetpError(f"{', '.join(given)} appl{'y' if len(given) > 1 else 'ies'} only with -m getp")
    if mode == "getp":
        if input is None or output is None:
            raise GetpError("getp mode needs an input file (-i FILE) and an output file (-o FILE)")
        _run_getp(options, given_path(input, "'-i' / '--input'"), output, flags)
    elif mode == "generate":
        _run_generate(options, input or "")
    else:
        _run_chat(options, input, system)


@app.command()
@with_run_options
@with_getp_flags
def getp(
    options: RunOptions,
    input: Annotated[Path, typer.Option("-i", "--input", parser=given_path, help="Requests: a count line, then one "
                                                                                 "prompt per line.")] = Path(
        "data/input.txt"),
    output: Annotated[Path, typer.Option("-o", "--output", parser=given_path,
                                         help="Token ids, one line per request.")] = Path("data/output.txt"),
    flags: GetpFlags = GetpFlags(),
) -> None:
    """Batch evaluation: every request's token ids to OUTPUT, and the three timing lines."""
    _run_getp(options, input, output, flags)


def _run_getp(options: RunOptions, input: Path, output: Path, flags: GetpFlags) -> None:
    from ..getp import GetpHooks, GetpOptions, getp as run_getp, make_spread

    check_precision(flags.precision)
    check_kv_cache(flags.kv_cache)
    describe_model(options.model, options.weights_seed)
    engine = pick_engine(options.engine)
    spread = make_spread(flags.shard, flags.gpus, flags.workers, engine, options.temperature, options.seed,
                         flags.expert_parallel)
    overrides = config_overrides(options.config)
    weights = open_weights(options.model, options.weights_seed, overrides)
    with _getp_progress(n_params(weights.config)) as (load, progress):
        # The model as named (worker processes open it themselves), with its seed and overrides.
        run_getp(options.model, input, output, tokenizer=open_tokenizer(options.tokenizer),
                 sampler=make_sampler(options),
                 options=GetpOptions(engine=engine, steps=options.steps, seed=options.weights_seed, config=overrides,
                                     batch=flags.batch, chunk=flags.chunk, precision=flags.precision,
                                     kv_cache=flags.kv_cache, experts=options.experts),
                 hooks=GetpHooks(echo=typer.echo, note=note, progress=progress, load_progress=load),
                 spread=spread)


@app.command()
def merge(
    output: Annotated[Path, typer.Argument(parser=given_path, help="The output file of the whole run.")],
    shards: Annotated[list[Path], typer.Argument(parser=given_path, help="The files of its shards (getp "
                                                                          "--shard K/N), in any order.")],
) -> None:
    """Join the files of a getp run's shards into its output, in input order, and print its timing lines."""
    from ..merge import merge as run_merge

    run_merge(output, shards, echo=typer.echo, note=note)


@app.command()
@with_run_options
def generate(
    options: RunOptions,
    prompt: Annotated[str, typer.Option("-i", "--input", help="The prompt.")] = "",
) -> None:
    """Stream a completion of PROMPT; `achieved tok/s` goes to stderr."""
    _run_generate(options, prompt)


def _run_generate(options: RunOptions, prompt: str) -> None:
    from ..generation import generate as run_generate, resolve_steps

    tok = open_tokenizer(options.tokenizer)
    with loaded_engine(options, tok) as m:
        positions, seconds = run_generate(m, make_sampler(options), tok, prompt,
                                          resolve_steps(options.steps, m.config.seq_len), write_out)
    typer.echo("")
    typer.echo(f"achieved tok/s: {positions / seconds if seconds > 0 else 0.0:f}", err=True)


@app.command()
@with_run_options
def chat(
    options: RunOptions,
    prompt: Annotated[Optional[str], typer.Option("-i", "--input", help="The first user message.")] = None,
    system: Annotated[Optional[str], typer.Option("-y", "--system", help="Developer instructions.")] = None,
) -> None:
    """Chat in the harmony format (system, developer, user, assistant); end with an empty line or EOF."""
    _run_chat(options, prompt, system)


def _run_chat(options: RunOptions, prompt: str | None, system: str | None) -> None:
    from ..chat import ChatSession
    from ..generation import resolve_steps

    tok = open_tokenizer(options.tokenizer)
    with loaded_engine(options, tok) as m:
        session = ChatSession(m, make_sampler(options), tok, resolve_steps(options.steps, m.config.seq_len), system)
        while True:
            user = prompt if prompt is not None else _ask("User: ")
            prompt = None
            if not user:
                break
            answer = session.reply(user)
            write_out("Assistant: ")
            channel = None
            for piece_channel, text in answer:
                if piece_channel != channel and piece_channel is not None:
                    write_out(f"\n[{piece_channel}] ")
                    channel = piece_channel
                write_out(text)
            write_out("\n")


def _ask(label: str) -> str:
    write_out(label)
    # Bytes, as the command line's are: the chat session says if they are not UTF-8 (fileio.utf8_text).
    line = sys.stdin.buffer.readline().decode("utf-8", "surrogateescape")
    return line.rstrip("\n")


