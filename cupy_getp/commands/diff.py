"""`diff`: an engine against the numpy reference, layer by layer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..checkpoint import DEFAULT_SEED, open_weights
from ..diff import BatchDiffShape
from ..errors import InputError
from ..kv_cache import check_kv_cache
from .common import (DEFAULT_MODEL, ConfigOverrides, Experts, KvCache, Model, Precision, TokenizerPath, WeightsSeed,
                     app, check_precision, choice, config_overrides, describe_model, given_path, open_tokenizer,
                     refuse_unless)


@app.command("diff")
def diff_command(
    ctx: typer.Context,
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
    input: Annotated[Path, typer.Option("-i", "--input", parser=given_path,
                                        help="With --batch: the requests file.")] = Path("data/input.txt"),
    precision: Precision = None,
    kv_cache: KvCache = "fp32",
    reference: Annotated[str, typer.Option("--reference", help="With --batch: numpy, or cupy (the single-sequence "
                                                               "GPU engine, for shapes numpy is too slow for)."
                                           )] = "numpy",
    slots: Annotated[int, typer.Option("--slots", min=0, help="With --batch: request slots (0 = half the "
                                                              "requests).")] = 0,
    chunk: Annotated[int, typer.Option("--chunk", min=1, help="With --batch: prompt positions of a request per "
                                                              "step.")] = BatchDiffShape.chunk,
    experts: Experts = "auto",
) -> None:
    """Run numpy and ENGINE on the same tokens; print max abs diffs per layer and position; exit 1 on
    any value over the spec's tolerances, differing experts, or a differing greedy token. With --batch,
    the same rows run again through a batched engine of another shape (other slots, prompt chunks of 16)
    and must agree bit for bit (exact and fast)."""
    from ..diff import check_reference, diff_batched_model, diff_model
    from ..gpu.experts import check_expert_request

    if batch:
        refuse_unless(ctx, "--batch N", ["prompt"], applies=False)
    else:
        refuse_unless(ctx, "--batch N", ["input", "precision", "kv_cache", "reference", "slots", "chunk"])
    check_precision(precision)
    check_kv_cache(kv_cache)
    describe_model(model, weights_seed)
    weights = open_weights(model, weights_seed, config_overrides(config))
    check_expert_request(weights, experts)
    if batch:
        from ..getp import encode_requests, read_requests

        choice(reference, ("numpy", "cupy"), "reference")
        check_reference(reference, kv_cache)
        requests = read_requests(input)
        if len(requests) < batch:
            raise InputError(f"diff --batch {batch}: {input} has only {len(requests)} requests")
        prompts = encode_requests(open_tokenizer(tokenizer), requests[:batch], weights.config.seq_len, str(input))
        summary = diff_batched_model(weights, engine, reference, prompts, steps, layers, typer.echo,
                                     BatchDiffShape(slots or None, chunk, precision, kv_cache), experts)
    else:
        summary = diff_model(weights, engine, open_tokenizer(tokenizer).encode(prompt), steps, layers, typer.echo,
                             experts)
    if summary.violations:
        raise typer.Exit(1)


