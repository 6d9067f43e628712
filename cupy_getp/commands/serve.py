"""`serve`: an OpenAI-compatible HTTP server over the engine (`cupy_getp.serve`, the `serve` extra)."""

from __future__ import annotations

import importlib.util
from typing import Annotated, Optional

import typer

from ..errors import GetpError
from ..kv_cache import check_kv_cache
from .common import Batch, KvCache, Precision, RunOptions, app, check_precision, choice, loaded_engine, make_sampler, \
    note, open_tokenizer, with_run_options

SERVE_PACKAGES = ("fastapi", "uvicorn", "prometheus_client")
LOG_LEVELS = ("debug", "info", "warning", "error")


@app.command()
@with_run_options
def serve(
    options: RunOptions,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port (0: any free one, printed).")] = 8000,
    api_key: Annotated[Optional[str], typer.Option("--api-key", envvar="CUPY_GETP_API_KEY",
                                                   help="Requests must send Authorization: Bearer KEY.")] = None,
    batch: Batch = 0,
    precision: Precision = None,
    kv_cache: KvCache = "fp32",
    max_queue: Annotated[int, typer.Option("--max-queue", min=0, help="Requests waiting for a slot (beyond "
                                                                      "those a free slot takes at the next step) "
                                                                      "before the next gets 429; 0: none wait.")] = 256,
    drain_timeout: Annotated[float, typer.Option("--drain-timeout", min=0, help="After SIGTERM, seconds running "
                                                                                "requests may go on.")] = 30.0,
    max_body: Annotated[int, typer.Option("--max-body", min=1, help="Largest request body, bytes.")] = 1 << 20,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn's: debug (with every request), info, "
                                                               "warning, error.")] = "info",
    model_name: Annotated[Optional[str], typer.Option("--model-name", help="The model's id in the API "
                                                                           "(default: MODEL as given).")] = None,
) -> None:
    """Serve the OpenAI API (/v1/completions, /v1/chat/completions, /v1/models, /health, /metrics)."""
    missing = [name for name in SERVE_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise GetpError(f"serve needs {', '.join(missing)}: pip install 'cupy-getp[serve]'")
    from ..generation import resolve_steps
    from ..serve.server import Listen, bind, exposure_warning, serve as run_server, server_state, url

    check_precision(precision)
    check_kv_cache(kv_cache)
    log_level = choice(log_level, LOG_LEVELS, "log level")
    warning = exposure_warning(host, api_key)
    if warning:
        typer.echo(f"warning: {warning}", err=True)
    sampler, tokenizer = make_sampler(options), open_tokenizer(options.tokenizer)
    with bind(host, port) as sock, loaded_engine(options, tokenizer, kv_cache) as engine:
        steps = resolve_steps(options.steps, engine.config.seq_len)
        state = server_state(engine, tokenizer, sampler, steps, model_name or options.model, slots=batch,
                             precision=precision, max_queue=max_queue, api_key=api_key, kv_cache=kv_cache)
        if state.engine.n_slots == 1 and (batch or precision or kv_cache != "fp32"):
            note(f"--batch, --precision and --kv-cache apply to the GPU engine; the {engine.name} engine serves one "
                 f"request at a time")
        note(f"serving {state.model_id!r} at {url(sock)} ({state.engine.n_slots} request slots, context {steps})")
        run_server(state, sock, Listen(max_body, drain_timeout, log_level))
