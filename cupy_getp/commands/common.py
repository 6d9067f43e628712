"""What the commands share: the typer app, the options of the original's letters, and the steps every
inference command takes (say what runs, open the tokenizer, load and warm up the engine)."""

from __future__ import annotations

import contextlib
import inspect
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Optional, get_type_hints

import typer

from ..checkpoint import DEFAULT_SEED, is_preset, open_weights
from ..checkpoint.layout import n_params
from ..errors import GetpError
from ..gpu.batch_shape import MAX_CHUNK

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="gpt-oss inference on GPUs through CuPy, with a numpy reference of the same model.")

DEFAULT_MODEL = "7m"


MODES = ("generate", "chat", "getp")
DTYPES = ("float32", "bfloat16")


def choice(value: str, choices: tuple[str, ...], what: str) -> str:
    if value not in choices:
        raise GetpError(f"unknown {what} {value!r} (expected {', '.join(choices)})")
    return value


def given_path(value: str, option: str | None = None) -> Path:
    """Every path option's parser: an empty argument is refused as such (Path("") would be ".")."""
    if not value:
        raise typer.BadParameter("an empty path", param_hint=option)
    return Path(value)


def given_model(value: str) -> str:
    if not value:
        raise typer.BadParameter("an empty model name or path")
    return value


# -- the options run, getp, generate and chat share (the original's letters) -------------------------
Model = Annotated[str, typer.Argument(parser=given_model, help="Model: a .bin file, a checkpoint directory, "
                                                                "or a preset (7m, 20b, 120b: random weights).")]
TokenizerPath = Annotated[Optional[Path], typer.Option("-z", "--tokenizer", parser=given_path,
                                                      help="The original runtime's tokenizer.bin (default: "
                                                           "o200k_harmony).")]
WeightsSeed = Annotated[int, typer.Option("--weights-seed", help="Seed of a preset's random weights.")]
Batch = Annotated[int, typer.Option("--batch", min=0, help="getp on the GPU: request slots run at once "
                                                         "(0 = as many as free device memory allows).")]
Chunk = Annotated[Optional[int], typer.Option("--chunk", min=1, max=MAX_CHUNK,
                                              help=f"getp on the GPU: prompt positions of one request per step "
                                                   f"(1..{MAX_CHUNK}; default {MAX_CHUNK}). A request's output "
                                                   f"does not depend on it.")]
Precision = Annotated[Optional[str], typer.Option("--precision", help="getp on the GPU: exact (tensor cores, "
                                                                      "FP32-accurate; default where available), "
                                                                      "fast (BF16 activations) or fp32 (CUDA "
                                                                      "cores).")]
KvCache = Annotated[str, typer.Option("--kv-cache", help="getp on the GPU: the KV cache's element: fp32 (default) "
                                                      "or bf16 (half the bytes, so more request slots, and "
                                                      "attention reads half as much; each key and value "
                                                      "rounded to BF16: not FP32-accurate, whatever the "
                                                      "precision).")]
ShardOption = Annotated[Optional[str], typer.Option("--shard", help="getp: run the K-th of N slices of the input "
                                                                  "(K/N: requests K-1, K-1+N, ...) into a file "
                                                                  "that `merge` joins with the others.")]
Gpus = Annotated[Optional[str], typer.Option("--gpus", help="getp: one engine process per GPU (0,1,... or all), "
                                                           "fed from one queue; one output in input order.")]
ExpertParallel = Annotated[int, typer.Option("--expert-parallel", min=0, metavar="G",
                                             help="getp on the GPU: one model over G GPUs (--gpus's, else 0..G-1), "
                                                  "each holding 1/G of every layer's experts (NCCL/RCCL), for "
                                                  "models whose experts do not fit one GPU.")]
Workers = Annotated[int, typer.Option("--workers", min=0, hidden=True,
                                      help="getp, for tests: N engine processes without a device (numpy engine).")]
Experts = Annotated[str, typer.Option("--experts", help="GPU engine: the MoE experts on the device: bf16, mxfp4 "
                                                      "(as published checkpoints store them: a quarter of the "
                                                      "bytes, the same results) or auto (bf16 where the model "
                                                      "fits with a request slot, else mxfp4).")]
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
    "experts": (Experts, "auto"),
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
    experts: str = "auto"


@dataclass(frozen=True)
class GetpFlags:
    """getp's own options, for `getp` and for `run -m getp` (`with_getp_flags`): each field's annotation is
    its typer option."""
    batch: Batch = 0
    chunk: Chunk = None
    precision: Precision = None
    kv_cache: KvCache = "fp32"
    shard: ShardOption = None
    gpus: Gpus = None
    expert_parallel: ExpertParallel = 0
    workers: Workers = 0

    def batched_options(self) -> list[str]:
        """The batched engine's options given (getp's alone), as the command line spells them."""
        given = {"--batch": self.batch, "--chunk": self.chunk, "--precision": self.precision,
                 "--kv-cache": self.kv_cache != "fp32"}
        return [flag for flag, value in given.items() if value]

    def spreads(self) -> bool:
        """Whether any option that spreads the run over shards, processes or GPUs was given."""
        return (self.shard, self.gpus, self.expert_parallel, self.workers) != (None, None, 0, 0)


# name -> (annotation, default), as RUN_OPTIONS, from GetpFlags's fields.
_GETP_FLAG_TYPES = get_type_hints(GetpFlags, include_extras=True)
GETP_FLAGS = {f.name: (_GETP_FLAG_TYPES[f.name], f.default) for f in fields(GetpFlags)}


def _packing(command, into: str, options: dict, pack, leading: int = 0):
    """`command` as a typer command: its parameter `into` becomes the options of `options` (name ->
    (annotation, default)), passed to it packed as pack(**values). typer builds a command from the
    signature, so the wrapper's lists them all: the first `leading` of `options`, the command's own
    parameters, then the rest."""
    keyword = inspect.Parameter.KEYWORD_ONLY  # any order, defaults or not
    own = [p.replace(kind=keyword) for p in inspect.signature(command, eval_str=True).parameters.values()
           if p.name != into]
    packed = [inspect.Parameter(name, keyword, annotation=annotation, default=default)
              for name, (annotation, default) in options.items()]

    def wrapper(**values):
        return command(**{into: pack(**{name: values.pop(name) for name in options})}, **values)

    wrapper.__name__, wrapper.__doc__ = command.__name__, command.__doc__
    wrapper.__signature__ = inspect.Signature([*packed[:leading], *own, *packed[leading:]])
    return wrapper


def with_run_options(command):
    """`command(options: RunOptions, **own)` as a typer command taking MODEL, its own parameters, then
    the shared options, packed into a RunOptions."""
    return _packing(command, "options", RUN_OPTIONS, RunOptions, leading=1)


def with_getp_flags(command):
    """`command(..., flags: GetpFlags)` as a typer command taking its own parameters, then getp's
    options, packed into a GetpFlags."""
    return _packing(command, "flags", GETP_FLAGS, GetpFlags)


def refuse_unless(ctx: typer.Context, condition: str, names: list[str], applies: bool = True) -> None:
    """Refuse the options of `names` given on the command line where they would be ignored: they
    apply only with `condition` (or, `applies=False`, only without it)."""
    given = [p for p in ctx.command.params if p.name in names and
             ctx.get_parameter_source(p.name).name in ("COMMANDLINE", "ENVIRONMENT")]
    if given:
        flag = given[0].opts[-1]
        raise GetpError(f"{flag} applies only {'with' if applies else 'without'} {condition}")


def config_overrides(items: list[str] | None) -> dict | None:
    if not items:
        return None
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise GetpError(f"--config expects KEY=VALUE, got {item!r}")
        overrides[key.strip()] = value.strip()
    return overrides


def note(message: str) -> None:
    typer.echo(f"note: {message}", err=True)


def describe_model(source: str, seed: int) -> None:
    if is_preset(source):
        note(f"model {source!r} is a synthetic preset with random weights (seed {seed}): "
              "its output is not meaningful text")


def pick_engine(name: str) -> str:
    from ..engine.factory import resolve_engine
    from ..gpu.device import probe

    resolved = resolve_engine(name)
    if name == "auto" and resolved == "numpy":
        note(f"using the numpy engine ({probe()})")
    return resolved


def loaded_engine(options: RunOptions, tokenizer, kv_cache: str = "fp32"):
    """A warmed-up engine for an interactive command, after saying what runs and checking it can (the
    context manager frees it); `kv_cache`: the KV cache's element of the batches it will run (serve's
    `--kv-cache`), which the GPU engine's `--experts auto` sizes them with."""
    from ..generation import resolve_steps
    from ..startup import check_startup, start_engine

    describe_model(options.model, options.weights_seed)
    weights = open_weights(options.model, options.weights_seed, config_overrides(options.config))
    engine = pick_engine(options.engine)
    for line in check_startup(weights, engine, tokenizer, options.experts):
        note(line)
    steps = resolve_steps(options.steps, weights.config.seq_len)
    with weights_progress(n_params(weights.config), "loading weights") as progress:
        model = start_engine(weights, engine, progress, options.experts, steps, kv_cache)
    for line in model.storage_notes():
        note(line)
    return model


def make_sampler(options: RunOptions):
    from ..sampler import Sampler

    return Sampler(options.temperature, options.topp, options.seed)


def open_tokenizer(path: Path | None):
    from ..tokenizer import load_tokenizer

    return load_tokenizer(path)


def check_precision(precision: str | None) -> None:
    """Refuse an unknown --precision before anything loads."""
    if precision is not None:
        from ..gpu.batch import PRECISIONS

        choice(precision, PRECISIONS, "precision")


def write_out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


@contextlib.contextmanager
def weights_progress(total: int, label: str):
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    count = TextColumn("{task.completed:,.0f}/{task.total:,.0f} weights")  # weights, not bytes (no "MB")
    with Progress(TextColumn(label), BarColumn(), count, TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.update(task, advance=n)
