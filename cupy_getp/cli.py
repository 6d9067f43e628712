"""`cupy-getp`: a thin typer front end. Parses, calls the library, prints.

`run` mirrors the original runtime's flags exactly; the other commands are friendlier shortcuts.
Every user error ends in one line, `error: ...`, and a non-zero exit (2 for usage, 1 otherwise).
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from .checkpoint import DEFAULT_SEED, is_preset, open_weights
from .errors import GetpError

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


# -- shared options (the original's letters) -----------------------------------------------------------
Model = Annotated[str, typer.Argument(help="Model: a .bin file, a checkpoint directory, or a preset "
                                           "(7m, 20b, 120b: random weights).")]
Temperature = Annotated[float, typer.Option("-t", "--temperature", min=0.0, help="0 = greedy.")]
TopP = Annotated[float, typer.Option("-p", "--topp", help="Nucleus sampling; outside (0, 1) = off.")]
Seed = Annotated[int, typer.Option("-s", "--seed", help="Sampler seed; 0 = from the clock.")]
Steps = Annotated[int, typer.Option("-n", "--steps", min=0, help="Positions per request (prompt + generated); "
                                                                 "0 = seq_len.")]
TokenizerPath = Annotated[Optional[Path], typer.Option("-z", "--tokenizer", help="The original runtime's "
                                                                                 "tokenizer.bin (default: "
                                                                                 "o200k_harmony).")]
EngineName = Annotated[str, typer.Option("--engine", help="numpy, cupy, or auto (cupy when a GPU can run).")]
WeightsSeed = Annotated[int, typer.Option("--weights-seed", help="Seed of a preset's random weights.")]
Batch = Annotated[int, typer.Option("--batch", min=0, help="getp on the GPU: request slots run at once "
                                                         "(0 = as many as free device memory allows).")]
Precision = Annotated[Optional[str], typer.Option("--precision", help="getp on the GPU: exact (tensor cores, "
                                                                      "FP32-accurate; default where available), "
                                                                      "fast (BF16 activations) or fp32 (CUDA "
                                                                      "cores).")]
ConfigOverrides = Annotated[Optional[list[str]], typer.Option(
    "--config", help="KEY=VALUE: set a checkpoint directory's config field, e.g. seq_len=4096 (repeatable).")]


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


def _loaded(model: str, engine: str, weights_seed: int, config: list[str] | None):
    """A warmed-up engine for an interactive command, after saying what runs (the context manager
    frees it)."""
    from .engine.factory import load

    _describe_model(model, weights_seed)
    return load(model, _resolve_engine(engine), weights_seed, _overrides(config))


def _sampler(temperature: float, topp: float, seed: int):
    from .sampler import Sampler

    return Sampler(temperature, topp, seed)


def _tokenizer(path: Path | None):
    from .tokenizer import load_tokenizer

    return load_tokenizer(path)


@contextlib.contextmanager
def _request_progress():
    """A progress bar over getp requests on stderr, when stderr is a terminal."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("requests"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[tokens]} tok"),
               TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        def start(total: int):
            task, done = bar.add_task("getp", total=total, tokens=0), [0, 0]

            def advance(tokens: int) -> None:
                done[0] += 1
                done[1] += tokens
                bar.update(task, advance=1, tokens=done[1])
                if done[0] == total:
                    bar.stop()  # before the timing lines reach the same terminal

            return advance

        yield start


# -- commands ------------------------------------------------------------------------------------------
@app.command()
def run(
    model: Model = DEFAULT_MODEL,
    temperature: Temperature = 0.0,
    topp: TopP = 0.9,
    seed: Seed = 0,
    steps: Steps = 1024,
    input: Annotated[Optional[str], typer.Option("-i", "--input", help="generate/chat: the prompt; "
                                                                       "getp: the input file.")] = None,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="getp: the output file.")] = None,
    tokenizer: TokenizerPath = None,
    mode: Annotated[str, typer.Option("-m", "--mode", help="generate, chat or getp.")] = "generate",
    system: Annotated[Optional[str], typer.Option("-y", "--system", help="chat: developer instructions.")] = None,
    engine: EngineName = "auto",
    weights_seed: WeightsSeed = DEFAULT_SEED,
    config: ConfigOverrides = None,
    batch: Batch = 0,
    precision: Precision = None,
) -> None:
    """The original runtime's command line: run MODEL [-t -p -s -n -i -o -z -m -y]."""
    _choice(mode, MODES, "mode")
    if mode == "getp":
        if input is None or output is None:
            raise GetpError("getp mode needs an input file (-i FILE) and an output file (-o FILE)")
        getp(model, Path(input), output, steps, temperature, topp, seed, tokenizer, engine, weights_seed, config,
             batch, precision)
    elif mode == "generate":
        generate(model, input or "", temperature, topp, seed, steps, tokenizer, engine, weights_seed, config)
    else:
        chat(model, input, system, temperature, topp, seed, steps, tokenizer, engine, weights_seed, config)


@app.command()
def getp(
    model: Model = DEFAULT_MODEL,
    input: Annotated[Path, typer.Option("-i", "--input", help="Requests: a count line, then one prompt per "
                                                              "line.")] = Path("data/input.txt"),
    output: Annotated[Path, typer.Option("-o", "--output", help="Token ids, one line per request.")] = Path(
        "data/output.txt"),
    steps: Steps = 1024,
    temperature: Temperature = 0.0,
    topp: TopP = 0.9,
    seed: Seed = 0,
    tokenizer: TokenizerPath = None,
    engine: EngineName = "auto",
    weights_seed: WeightsSeed = DEFAULT_SEED,
    config: ConfigOverrides = None,
    batch: Batch = 0,
    precision: Precision = None,
) -> None:
    """Batch evaluation: every request's token ids to OUTPUT, and the three timing lines."""
    from .getp import getp as run_getp

    _describe_model(model, weights_seed)
    engine = _resolve_engine(engine)
    with _request_progress() as progress:
        run_getp(model, input, output, tokenizer=_tokenizer(tokenizer), sampler=_sampler(temperature, topp, seed),
                 engine=engine, steps=steps, seed=weights_seed, config=_overrides(config), echo=typer.echo,
                 progress=progress, batch=batch, precision=precision, note=_note)


@app.command()
def generate(
    model: Model = DEFAULT_MODEL,
    prompt: Annotated[str, typer.Option("-i", "--input", help="The prompt.")] = "",
    temperature: Temperature = 0.0,
    topp: TopP = 0.9,
    seed: Seed = 0,
    steps: Steps = 1024,
    tokenizer: TokenizerPath = None,
    engine: EngineName = "auto",
    weights_seed: WeightsSeed = DEFAULT_SEED,
    config: ConfigOverrides = None,
) -> None:
    """Stream a completion of PROMPT; `achieved tok/s` goes to stderr."""
    from .generation import generate as run_generate, resolve_steps

    tok = _tokenizer(tokenizer)
    with _loaded(model, engine, weights_seed, config) as m:
        positions, seconds = run_generate(m, _sampler(temperature, topp, seed), tok, prompt,
                                          resolve_steps(steps, m.config.seq_len), _write)
    typer.echo("")
    typer.echo(f"achieved tok/s: {positions / seconds if seconds > 0 else 0.0:f}", err=True)


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


@app.command()
def chat(
    model: Model = DEFAULT_MODEL,
    prompt: Annotated[Optional[str], typer.Option("-i", "--input", help="The first user message.")] = None,
    system: Annotated[Optional[str], typer.Option("-y", "--system", help="Developer instructions.")] = None,
    temperature: Temperature = 0.0,
    topp: TopP = 0.9,
    seed: Seed = 0,
    steps: Steps = 1024,
    tokenizer: TokenizerPath = None,
    engine: EngineName = "auto",
    weights_seed: WeightsSeed = DEFAULT_SEED,
    config: ConfigOverrides = None,
) -> None:
    """Chat in the harmony format (system, developer, user, assistant); end with an empty line or EOF."""
    from .chat import ChatSession
    from .generation import resolve_steps

    tok = _tokenizer(tokenizer)
    with _loaded(model, engine, weights_seed, config) as m:
        session = ChatSession(m, _sampler(temperature, topp, seed), tok, resolve_steps(steps, m.config.seq_len),
                              system)
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
    with _weights_progress(weights.config.n_params(), f"writing {output}") as progress:
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


def _diff_batch(weights, input: Path, n: int, steps: int, layers: bool, engine: str, tokenizer, precision,
                reference_name: str, slots: int, chunk: int) -> None:
    from .diff import DiffSummary, batch_diff_engine, diff_batched, format_header, format_step
    from .engine.factory import create_engine
    from .getp import encode_requests, read_requests

    _choice(reference_name, ("numpy", "cupy"), "reference")
    prompts = encode_requests(_tokenizer(tokenizer), read_requests(input)[:n], weights.config.seq_len, str(input))
    with create_engine(weights, engine) as other:
        other.warm_up()
        # The single-sequence GPU engine can be the reference where numpy is too slow (20b): the same
        # engine object, whose own KV cache is apart from the batched engine's.
        reference = other if reference_name == "cupy" else create_engine(weights, "numpy")
        if reference is not other:
            reference.warm_up()
        batched = batch_diff_engine(other, prompts, steps, precision, slots or None, chunk)
        typer.echo(f"diff: {reference.name} (one sequence at a time) vs the batched {other.name} engine on "
                   f"{weights.description}: {len(prompts)} "
                   f"requests over {batched.shape.n_slots} slots, prompt chunks of {batched.shape.max_chunk}, "
                   f"{steps} greedy steps each, precision {batched.precision}")
        typer.echo(format_header(layers))
        summary = DiffSummary()
        for request, step in diff_batched(reference, batched, prompts, steps):
            summary.add(step)
            for row in format_step(step, layers):
                typer.echo(f"r{request:<3}{row}")
        batched.free()
    for line in summary.lines():
        typer.echo(line)
    if summary.violations:
        raise typer.Exit(1)


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
                                                              "step.")] = 3,
) -> None:
    """Run numpy and ENGINE on the same tokens; print max abs diffs per layer and position; exit 1 on
    any value over the seed's tolerances, differing experts, or a differing greedy token."""
    from .diff import DiffSummary, diff_engines, format_header, format_step
    from .engine.factory import create_engine

    _describe_model(model, weights_seed)
    weights = open_weights(model, weights_seed, _overrides(config))
    if batch:
        _diff_batch(weights, input, batch, steps, layers, engine, tokenizer, precision, reference, slots, chunk)
        return
    tokens = _tokenizer(tokenizer).encode(prompt)
    with create_engine(weights, "numpy") as reference, create_engine(weights, engine) as other:
        reference.warm_up()
        other.warm_up()
        typer.echo(f"diff: numpy vs {other.name} on {weights.description}, {len(tokens)} prompt tokens, "
                   f"{steps} greedy steps")
        typer.echo(format_header(layers))
        summary = DiffSummary()
        for step in diff_engines(reference, other, tokens, steps):
            summary.add(step)
            for row in format_step(step, layers):
                typer.echo(row)
    for line in summary.lines():
        typer.echo(line)
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
    typer.echo(f"exporting {weights.description}: {weights.config.n_params():,} weights")
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
    from .checkpoint.layout import device_bytes, moe_params

    weights = open_weights(model, weights_seed, _overrides(config))
    c = weights.config
    typer.echo(f"model: {weights.description} ({weights.store.storage_dtype})")
    for name, value in c.as_dict().items():
        typer.echo(f"  {name}: {value}")
    typer.echo(f"parameters: {c.n_params():,} ({moe_params(c):,} in the MoE matrices)")
    typer.echo(f"float32 .bin: {c.bin_size(4) / 1e9:.2f} GB; device weights with BF16 MoE: "
               f"{device_bytes(c) / 2**30:.2f} GiB")


# -- entry point ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
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
    except (KeyboardInterrupt, typer.Abort):
        typer.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
