"""`cupy-getp`: a thin typer front end. Parses, calls the library, prints.

`run` mirrors the original runtime's flags exactly; the other commands are friendlier shortcuts.
Every user error ends in one line, `error: ...`, and a non-zero exit (2 for usage, 1 otherwise).
"""

from __future__ import annotations

import contextlib
import inspect
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from .checkpoint import DEFAULT_SEED, is_preset, open_weights
from .checkpoint.layout import n_params
from .diff import BatchDiffShape
from .errors import GetpError, InputError

# typer >= 0.24 vendors click as typer._click; find its exceptions wherever they are.
_click_errors = sys.modules[typer.BadParameter.__module__]
UsageError, ClickException = _click_errors.UsageError, _click_errors.ClickException

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="gpt-oss inference on GPUs through CuPy, with a numpy reference of the same model.")

DEFAULT_MODEL = "7m"


MODES = ("generate", "chat", "getp")
DTYPES = ("float32", "bfloat16")


def _choice(value: str, choices: tuple[str, ...], what: str) -> str:
    if value not in choices:
        raise GetpError(f"unknown {what} {value!r} (expected {', '.join(choices)})")
    return value


# -- the options run, getp, generate and chat share (the original's letters) -------------------------
Model = Annotated[str, typer.Argument(help="Model: a .bin file, a checkpoint directory, or a preset "
                                           "(7m, 20b, 120b: random weights).")]
TokenizerPath = Annotated[Optional[Path], typer.Option("-z", "--tokenizer", help="The original runtime's "
                                                                                 "tokenizer.bin (default: "
                                                                                 "o200k_harmony).")]
WeightsSeed = Annotated[int, typer.Option("--weights-seed", help="Seed of a preset's random weights.")]
Batch = Annotated[int, typer.Option("--batch", min=0, help="getp on the GPU: request slots run at once "
                                                         "(0 = as many as free device memory allows).")]
Precision = Annotated[Optional[str], typer.Option("--precision", help="getp on the GPU: exact (tensor cores, "
                                                                      "FP32-accurate; default where available), "
                                                                      "fast (BF16 activations) or fp32 (CUDA "
                                                                      "cores).")]
ConfigOverrides = Annotated[Optional[list[str]], typer.Option(
    "--config", help="KEY=VALUE: set a checkpoint directory's config field, e.g. seq_len=4096 (repeatable).")]

# name -> (annotation, default). One definition for every command decorated with `with_run_options`;
# a new shared option is one entry here and one field of RunOptions.
RUN_OPTIONS = {
    "model": (Model, DEFAULT_MODEL),
    "temperature": (Annotated[float, typer.Option("-t", "--temperature", help="0 = greedy.")], 0.0),
    "topp": (Annotated[float, typer.Option("-p", "--topp", help="Nucleus sampling in (0, 1); 0 or 1 = off.")], 0.9),
    "seed": (Annotated[int, typer.Option("-s", "--seed", help="Sampler seed; 0 = from the clock.")], 0),
    "steps": (Annotated[int, typer.Option("-n", "--steps", min=0, help="Positions per request (prompt + "
                                                                       "generated); 0 = seq_len.")], 1024),
    "tokenizer": (TokenizerPath, None),
    "engine": (Annotated[str, typer.Option("--engine", help="numpy, cupy, or auto (cupy when a GPU can "
                                                            "run).")], "auto"),
    "weights_seed": (WeightsSeed, DEFAULT_SEED),
    "config": (ConfigOverrides, None),
}


@dataclass(frozen=True)
class RunOptions:
    model: str
    temperature: float
    topp: float
    seed: int
    steps: int
    tokenizer: Optional[Path]
    engine: str
    weights_seed: int
    config: Optional[list[str]]


def with_run_options(command):
    """`command(options: RunOptions, **own)` as a typer command taking MODEL, its own parameters, then
    the shared options. typer builds a command from the signature, so the wrapper's signature lists
    them all, and the wrapper packs the shared ones into a RunOptions."""
    keyword = inspect.Parameter.KEYWORD_ONLY  # any order, defaults or not
    own = [p.replace(kind=keyword) for p in inspect.signature(command, eval_str=True).parameters.values()][1:]
    shared = [inspect.Parameter(name, keyword, annotation=annotation, default=default)
              for name, (annotation, default) in RUN_OPTIONS.items()]

    def wrapper(**values):
        return command(RunOptions(**{name: values.pop(name) for name in RUN_OPTIONS}), **values)

    wrapper.__name__, wrapper.__doc__ = command.__name__, command.__doc__
    wrapper.__signature__ = inspect.Signature([shared[0], *own, *shared[1:]])
    return wrapper


def _overrides(items: list[str] | None) -> dict | None:
    if not items:
        return None
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise GetpError(f"--config expects KEY=VALUE, got {item!r}")
        overrides[key.strip()] = value.strip()
    return overrides


def _note(message: str) -> None:
    typer.echo(f"note: {message}", err=True)


def _describe_model(source: str, seed: int) -> None:
    if is_preset(source):
        _note(f"model {source!r} is a synthetic preset with random weights (seed {seed}): "
              "its output is not meaningful text")


def _resolve_engine(name: str) -> str:
    from .engine.factory import resolve_engine
    from .gpu.device import probe

    resolved = resolve_engine(name)
    if name == "auto" and resolved == "numpy":
        _note(f"using the numpy engine ({probe()})")
    return resolved


def _loaded(options: RunOptions, tokenizer):
    """A warmed-up engine for an interactive command, after saying what runs and checking it can (the
    context manager frees it)."""
    from .startup import check_startup, start_engine

    _describe_model(options.model, options.weights_seed)
    weights = open_weights(options.model, options.weights_seed, _overrides(options.config))
    engine = _resolve_engine(options.engine)
    for line in check_startup(weights, engine, tokenizer):
        _note(line)
    with _weights_progress(n_params(weights.config), "loading weights") as progress:
        return start_engine(weights, engine, progress)


def _sampler(options: RunOptions):
    from .sampler import Sampler

    return Sampler(options.temperature, options.topp, options.seed)


def _tokenizer(path: Path | None):
    from .tokenizer import load_tokenizer

    return load_tokenizer(path)


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


# -- commands ------------------------------------------------------------------------------------------
@app.command()
@with_run_options
def run(
    options: RunOptions,
    input: Annotated[Optional[str], typer.Option("-i", "--input", help="generate/chat: the prompt; "
                                                                       "getp: the input file.")] = None,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="getp: the output file.")] = None,
    mode: Annotated[str, typer.Option("-m", "--mode", help="generate, chat or getp.")] = "generate",
    system: Annotated[Optional[str], typer.Option("-y", "--system", help="chat: developer instructions.")] = None,
    batch: Batch = 0,
    precision: Precision = None,
) -> None:
    """The original runtime's command line: run MODEL [-t -p -s -n -i -o -z -m -y]."""
    _choice(mode, MODES, "mode")
    if mode == "getp":
        if input is None or output is None:
            raise GetpError("getp mode needs an input file (-i FILE) and an output file (-o FILE)")
        _run_getp(options, Path(input), output, batch, precision)
    elif mode == "generate":
        _run_generate(options, input or "")
    else:
        _run_chat(options, input, system)


@app.command()
@with_run_options
def getp(
    options: RunOptions,
    input: Annotated[Path, typer.Option("-i", "--input", help="Requests: a count line, then one prompt per "
                                                              "line.")] = Path("data/input.txt"),
    output: Annotated[Path, typer.Option("-o", "--output", help="Token ids, one line per request.")] = Path(
        "data/output.txt"),
    batch: Batch = 0,
    precision: Precision = None,
) -> None:
    """Batch evaluation: every request's token ids to OUTPUT, and the three timing lines."""
    _run_getp(options, input, output, batch, precision)


def _check_precision(precision: str | None) -> None:
    """Refuse an unknown --precision before anything loads."""
    if precision is not None:
        from .gpu.batch import PRECISIONS

        _choice(precision, PRECISIONS, "precision")


def _run_getp(options: RunOptions, input: Path, output: Path, batch: int = 0, precision: str | None = None) -> None:
    from .getp import GetpHooks, GetpOptions, getp as run_getp

    _check_precision(precision)
    _describe_model(options.model, options.weights_seed)
    engine = _resolve_engine(options.engine)
    weights = open_weights(options.model, options.weights_seed, _overrides(options.config))
    with _getp_progress(n_params(weights.config)) as (load, progress):
        run_getp(weights.store, input, output, tokenizer=_tokenizer(options.tokenizer), sampler=_sampler(options),
                 options=GetpOptions(engine=engine, steps=options.steps, batch=batch, precision=precision),
                 hooks=GetpHooks(echo=typer.echo, note=_note, progress=progress, load_progress=load))


@app.command()
@with_run_options
def generate(
    options: RunOptions,
    prompt: Annotated[str, typer.Option("-i", "--input", help="The prompt.")] = "",
) -> None:
    """Stream a completion of PROMPT; `achieved tok/s` goes to stderr."""
    _run_generate(options, prompt)


def _run_generate(options: RunOptions, prompt: str) -> None:
    from .generation import generate as run_generate, resolve_steps

    tok = _tokenizer(options.tokenizer)
    with _loaded(options, tok) as m:
        positions, seconds = run_generate(m, _sampler(options), tok, prompt,
                                          resolve_steps(options.steps, m.config.seq_len), _write)
    typer.echo("")
    typer.echo(f"achieved tok/s: {positions / seconds if seconds > 0 else 0.0:f}", err=True)


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


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
    from .chat import ChatSession
    from .generation import resolve_steps

    tok = _tokenizer(options.tokenizer)
    with _loaded(options, tok) as m:
        session = ChatSession(m, _sampler(options), tok, resolve_steps(options.steps, m.config.seq_len), system)
        while True:
            user = prompt if prompt is not None else _ask("User: ")
            prompt = None
            if not user:
                break
            _write("Assistant: ")
            channel = None
            for piece_channel, text in session.reply(user):
                if piece_channel != channel and piece_channel is not None:
                    _write(f"\n[{piece_channel}] ")
                    channel = piece_channel
                _write(text)
            _write("\n")


def _ask(label: str) -> str:
    _write(label)
    line = sys.stdin.readline()
    return line.rstrip("\n")


@app.command()
def decode(
    file: Annotated[Path, typer.Argument(help="Token ids: one sequence per line, separated by spaces.")],
    tokenizer: TokenizerPath = None,
) -> None:
    """Print the text of every line of token ids (a getp output file, say)."""
    from .getp import read_token_lines

    tok = _tokenizer(tokenizer)
    for tokens in read_token_lines(file, tok.vocab_size):
        typer.echo(tok.decode(tokens))


@app.command("random-model")
def random_model(
    output: Annotated[Path, typer.Option("-o", "--output", help="The .bin file to write.")],
    preset: Annotated[str, typer.Option("--preset", help="7m, 20b or 120b.")] = "7m",
    seed: Annotated[int, typer.Option("--seed", help="Weights seed.")] = DEFAULT_SEED,
    dtype: Annotated[str, typer.Option("--dtype", help="float32, or the bfloat16 variant.")] = "float32",
) -> None:
    """Write a synthetic model (random weights of a preset's shape) as a .bin file."""
    from .checkpoint.synthetic import synthetic_store
    from .checkpoint.weights import Weights

    weights = Weights(synthetic_store(preset, seed))
    _write_bin(weights, output, _choice(dtype, DTYPES, "dtype"))


def _write_bin(weights, output: Path, dtype: str) -> None:
    from .checkpoint import write_bin

    start = time.perf_counter()
    with _weights_progress(n_params(weights.config), f"writing {output}") as progress:
        size = write_bin(output, weights, dtype, progress)
    typer.echo(f"wrote {output}: {size} bytes ({dtype}) in {time.perf_counter() - start:.1f} s")


@contextlib.contextmanager
def _weights_progress(total: int, label: str):
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn(label), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.update(task, advance=n)


@app.command("diff")
def diff_command(
    model: Model = DEFAULT_MODEL,
    layers: Annotated[bool, typer.Option("--layers", help="One row per layer and position (else one per "
                                                          "position).")] = False,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Greedy steps compared after the prompt.")] = 32,
    prompt: Annotated[str, typer.Option("--prompt", help="The prompt fed first.")] = "Hello world",
    engine: Annotated[str, typer.Option("--engine", help="The engine diffed against numpy.")] = "cupy",
    tokenizer: TokenizerPath = None,
    weights_seed: WeightsSeed = DEFAULT_SEED,
    config: ConfigOverrides = None,
    batch: Annotated[int, typer.Option("--batch", min=0, help="Diff the batched engine instead: this many "
                                                              "prompts of --input, continuous batching over "
                                                              "half as many slots, prompts fed in chunks.")] = 0,
    input: Annotated[Path, typer.Option("-i", "--input", help="With --batch: the requests file.")] = Path(
        "data/input.txt"),
    precision: Precision = None,
    reference: Annotated[str, typer.Option("--reference", help="With --batch: numpy, or cupy (the single-sequence "
                                                               "GPU engine, for shapes numpy is too slow for)."
                                           )] = "numpy",
    slots: Annotated[int, typer.Option("--slots", min=0, help="With --batch: request slots (0 = half the "
                                                              "requests).")] = 0,
    chunk: Annotated[int, typer.Option("--chunk", min=1, help="With --batch: prompt positions of a request per "
                                                              "step.")] = BatchDiffShape.chunk,
) -> None:
    """Run numpy and ENGINE on the same tokens; print max abs diffs per layer and position; exit 1 on
    any value over the spec's tolerances, differing experts, or a differing greedy token."""
    from .diff import diff_batched_model, diff_model

    _check_precision(precision)
    _describe_model(model, weights_seed)
    weights = open_weights(model, weights_seed, _overrides(config))
    if batch:
        from .getp import encode_requests, read_requests

        _choice(reference, ("numpy", "cupy"), "reference")
        requests = read_requests(input)
        if len(requests) < batch:
            raise InputError(f"diff --batch {batch}: {input} has only {len(requests)} requests")
        prompts = encode_requests(_tokenizer(tokenizer), requests[:batch], weights.config.seq_len, str(input))
        summary = diff_batched_model(weights, engine, reference, prompts, steps, layers, typer.echo,
                                     BatchDiffShape(slots or None, chunk, precision))
    else:
        summary = diff_model(weights, engine, _tokenizer(tokenizer).encode(prompt), steps, layers, typer.echo)
    if summary.violations:
        raise typer.Exit(1)


@app.command()
def export(
    source: Annotated[str, typer.Argument(help="A checkpoint directory (openai original or Hugging Face "
                                               "safetensors), a .bin file or a preset.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The .bin file to write.")],
    dtype: Annotated[str, typer.Option("--dtype", help="float32, or the bfloat16 variant.")] = "float32",
    config: ConfigOverrides = None,
) -> None:
    """Convert a checkpoint to the original runtime's .bin, tensor by tensor (memory bounded by one
    slice), with a progress bar; the written size is verified."""
    weights = open_weights(source, DEFAULT_SEED, _overrides(config))
    typer.echo(f"exporting {weights.description}: {n_params(weights.config):,} weights")
    _write_bin(weights, output, _choice(dtype, DTYPES, "dtype"))


@app.command("export-tokenizer")
def export_tokenizer(
    output: Annotated[Path, typer.Option("-o", "--output", help="The tokenizer.bin to write.")],
) -> None:
    """Write o200k_harmony as the original runtime's tokenizer.bin (for -z)."""
    from .tokenizer import harmony_tokenizer, write_tokenizer_bin

    count = write_tokenizer_bin(output, harmony_tokenizer())
    typer.echo(f"wrote {output}: {count} tokens")


@app.command()
def info(
    model: Model = DEFAULT_MODEL,
    weights_seed: WeightsSeed = DEFAULT_SEED,
    config: ConfigOverrides = None,
) -> None:
    """Print a model's configuration and sizes."""
    from .checkpoint.layout import bin_size, moe_params
    from .gpu.weights import describe_storage, planned_storage, storage_bytes

    weights = open_weights(model, weights_seed, _overrides(config))
    c = weights.config
    typer.echo(f"model: {weights.description} ({weights.store.storage_dtype})")
    for name, value in c.as_dict().items():
        typer.echo(f"  {name}: {value}")
    typer.echo(f"parameters: {n_params(c):,} ({moe_params(c):,} in the MoE matrices)")
    storage = planned_storage(weights)
    typer.echo(f"float32 .bin: {bin_size(c, 4) / 1e9:.2f} GB; device weights: "
               f"{storage_bytes(weights, storage) / 2**30:.2f} GiB ({describe_storage(storage)})")


# -- entry point ---------------------------------------------------------------------------------------
class Interrupted(BaseException):
    """A stop signal, raised where the program is, so that every `finally` and the output's clean-up
    run. Not a KeyboardInterrupt: typer turns that into a silent exit 130."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _raise_interrupted(signum: int, frame) -> None:
    raise Interrupted(signum)


def _catch_stop_signals() -> None:
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:  # nohup, a background job: stay immune
            signal.signal(signum, _raise_interrupted)


def main(argv: list[str] | None = None) -> None:
    _catch_stop_signals()
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="cupy-getp", standalone_mode=False)
    except UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # bare `cupy-getp`: help, as a usage error
            typer.echo(e.ctx.get_help(), err=True)
            sys.exit(2)
        hint = f" (see '{e.ctx.command_path} --help')" if e.ctx else ""
        typer.echo(f"error: {e.format_message()}{hint}", err=True)
        sys.exit(2)
    except ClickException as e:
        typer.echo(f"error: {e.format_message()}", err=True)
        sys.exit(1)
    except GetpError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(1)
    except Interrupted as e:
        typer.echo(f"\ninterrupted ({e})", err=True)
        sys.exit(128 + e.signum)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
