"""The model tools: decode, random-model, export, export-tokenizer and info."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from ..checkpoint import DEFAULT_SEED, open_weights
from ..checkpoint.layout import n_params
from .common import (DEFAULT_MODEL, DTYPES, ConfigOverrides, Experts, Model, TokenizerPath, WeightsSeed, app, choice,
                     config_overrides, given_model, given_path, open_tokenizer,
                     weights_progress)


@app.command()
def decode(
    file: Annotated[Path, typer.Argument(parser=given_path,
                                         help="Token ids: one sequence per line, separated by spaces.")],
    tokenizer: TokenizerPath = None,
) -> None:
    """Print the text of every line of token ids (a getp output file, say)."""
    from ..getp import read_token_lines

    tok = open_tokenizer(tokenizer)
    for tokens in read_token_lines(file, tok.vocab_size):
        typer.echo(tok.decode(tokens))


@app.command("random-model")
def random_model(
    output: Annotated[Path, typer.Option("-o", "--output", parser=given_path, help="The .bin file to write.")],
    preset: Annotated[str, typer.Option("--preset", help="7m, 20b or 120b.")] = "7m",
    seed: Annotated[int, typer.Option("--seed", help="Weights seed.")] = DEFAULT_SEED,
    dtype: Annotated[str, typer.Option("--dtype", help="float32, or the bfloat16 variant.")] = "float32",
) -> None:
    """Write a synthetic model (random weights of a preset's shape) as a .bin file."""
    from ..checkpoint.synthetic import synthetic_store
    from ..checkpoint.weights import Weights

    weights = Weights(synthetic_store(preset, seed))
    _write_bin(weights, output, choice(dtype, DTYPES, "dtype"))


def _write_bin(weights, output: Path, dtype: str) -> None:
    from ..checkpoint import write_bin

    start = time.perf_counter()
    with weights_progress(n_params(weights.config), f"writing {output}") as progress:
        size = write_bin(output, weights, dtype, progress)
    typer.echo(f"wrote {output}: {size} bytes ({dtype}) in {time.perf_counter() - start:.1f} s")


@app.command()
def export(
    source: Annotated[str, typer.Argument(parser=given_model, help="A checkpoint directory (openai original or "
                                                                   "Hugging Face safetensors), a .bin file or a "
                                                                   "preset.")],
    output: Annotated[Path, typer.Option("-o", "--output", parser=given_path, help="The .bin file to write.")],
    dtype: Annotated[str, typer.Option("--dtype", help="float32, or the bfloat16 variant.")] = "float32",
    config: ConfigOverrides = None,
) -> None:
    """Convert a checkpoint to the original runtime's .bin, tensor by tensor (memory bounded by one
    slice), with a progress bar; the written size is verified."""
    weights = open_weights(source, DEFAULT_SEED, config_overrides(config))
    typer.echo(f"exporting {weights.description}: {n_params(weights.config):,} weights")
    _write_bin(weights, output, choice(dtype, DTYPES, "dtype"))


@app.command("export-tokenizer")
def export_tokenizer(
    output: Annotated[Path, typer.Option("-o", "--output", parser=given_path, help="The tokenizer.bin to write.")],
) -> None:
    """Write o200k_harmony as the original runtime's tokenizer.bin (for -z)."""
    from ..tokenizer import harmony_tokenizer, write_tokenizer_bin

    count = write_tokenizer_bin(output, harmony_tokenizer())
    typer.echo(f"wrote {output}: {count} tokens")


@app.command()
def info(
    model: Model = DEFAULT_MODEL,
    weights_seed: WeightsSeed = DEFAULT_SEED,
    config: ConfigOverrides = None,
    experts: Experts = "auto",
) -> None:
    """Print a model's configuration and sizes, and the expert storage the GPU engine would take."""
    from ..checkpoint.layout import bin_size, moe_params
    from ..gpu.experts import choose_expert_storage

    weights = open_weights(model, weights_seed, config_overrides(config))
    c = weights.config
    typer.echo(f"model: {weights.description} ({weights.store.storage_dtype})")
    for name, value in c.as_dict().items():
        typer.echo(f"  {name}: {value}")
    typer.echo(f"parameters: {n_params(c):,} ({moe_params(c):,} in the MoE matrices)")
    device, gpu = open_gpu()
    chosen = choose_expert_storage(weights, device.allocatable_bytes() if device else None, experts)
    typer.echo(f"float32 .bin: {bin_size(c, 4) / 1e9:.2f} GB; device weights: "
               f"{device_weights_size(weights, chosen.storage)}")
    typer.echo(chosen.describe())
    typer.echo(f"GPU: {gpu}")


def device_weights_size(weights, experts: str | None) -> str:
    """The device weights' size and storage with `experts` storage; both sizes where it is not decided."""
    from ..checkpoint import MOE_WEIGHTS
    from ..gpu.weights import describe_storage, has_mxfp4_source, planned_storage, storage_bytes

    kinds = [experts] if experts else ["bf16", *(["mxfp4"] if has_mxfp4_source(weights) else [])]
    dense = planned_storage(weights)  # read once: a checkpoint's dense tensors are checked slice by slice
    sizes = {kind: {**dense, **dict.fromkeys(MOE_WEIGHTS, kind)} for kind in kinds}
    text = " or ".join(f"{storage_bytes(weights, storage) / 2**30:.2f} GiB with {kind.upper()} experts"
                       for kind, storage in sizes.items())
    return f"{text} ({describe_storage(sizes[kinds[-1]])})"


def open_gpu():
    """(the Device the engine would use or None, a line on it: the kernels its tensor-core products take,
    expected from the architecture (`info` builds no kernels), or why there is none)."""
    from ..gpu.device import Device, probe
    from ..gpu.launch.gemm_tc import describe_products

    reason = probe()
    if reason is not None:
        return None, f"none ({reason})"
    device = Device.open()
    return device, f"{device.describe()}; products on {describe_products(device)}"


