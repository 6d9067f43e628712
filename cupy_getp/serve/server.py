"""Running the app under uvicorn, with one engine loop; SIGTERM (or Ctrl-C) drains: no new request,
running ones finish within the grace period or end with finish_reason "abort", then the server exits."""

from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass

import uvicorn

from ..errors import GetpError
from .app import ServerState, create_app
from .engine_loop import EngineLoop, stepper_for
from .metrics import Metrics

log = logging.getLogger("cupy_getp.serve")


@dataclass(frozen=True)
class Listen:
    max_body: int = 1 << 20  # bytes of a request body
    drain_s: float = 30.0  # after SIGTERM, how long running requests may go on
    log_level: str = "info"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, api_key: str | None) -> str | None:
    """A warning for a server reachable from other machines that anyone may call."""
    if api_key is None and not is_loopback(host):
        return (f"serving on {host} without an API key: anyone who can reach this port can use the engine "
                f"(set --api-key, or bind to 127.0.0.1)")
    return None


def server_state(engine, tokenizer, sampler, steps: int, model_id: str, slots: int = 0, precision: str | None = None,
                 max_queue: int = 256, api_key: str | None = None, kv_cache: str = "fp32") -> ServerState:
    """Everything the app needs around a warmed-up engine: its stepper (batched where it can, `slots`
    request slots, 0 = as many as fit), the engine loop, the metrics; `sampler` holds the defaults of
    requests that do not say."""
    stepper = stepper_for(engine, steps, slots, precision, kv_cache)
    metrics = Metrics(stepper.n_slots)
    loop = EngineLoop(stepper, steps, frozenset(), max_queue, metrics)  # every job brings its stop tokens
    return ServerState(loop, tokenizer, metrics, model_id, steps, sampler.temperature, sampler.topp, sampler.seed,
                       api_key)


class DrainingServer(uvicorn.Server):
    """uvicorn's server, whose stop signal first tells the engine loop to drain. uvicorn then stops
    listening, waits for the open responses (at most the grace period and a little more for the last
    chunks); `serve` then stops the engine thread."""

    def __init__(self, config: uvicorn.Config, state: ServerState, drain_s: float):
        super().__init__(config)
        self.state, self.drain_s = state, drain_s

    def handle_exit(self, sig, frame) -> None:
        self.state.engine.drain(self.drain_s)  # only takes the loop's lock, never held across a step
        super().handle_exit(sig, frame)


def serve(state: ServerState, sock: socket.socket, listen: Listen) -> None:
    """Serve on a listening socket (`bind`) until a stop signal."""
    app = create_app(state, listen.max_body)
    config = uvicorn.Config(app, log_level=listen.log_level, timeout_graceful_shutdown=listen.drain_s + 5,
                            access_log=listen.log_level == "debug")
    server = DrainingServer(config, state, listen.drain_s)
    state.engine.start()
    try:
        server.run(sockets=[sock])
    finally:
        state.engine.stop()


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the model loads: a port in use is said at once, and port 0
    (any free port) can be told (`url`)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except (OSError, OverflowError) as e:
        sock.close()
        raise GetpError(f"cannot listen on {host}:{port}: {getattr(e, 'strerror', None) or e}") from None
    return sock


def url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"
