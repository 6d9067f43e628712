"""The HTTP routes: /v1/models, /v1/completions, /v1/chat/completions, /health, /metrics.

A handler checks the request, submits a job to the engine loop and turns its tokens into the answer,
whole or as server-sent events in the OpenAI chunk format (ending with `data: [DONE]`). A client that
leaves cancels its job (the slot is free for the next step)."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ..chat import harmony_prompt
from ..sampler import Sampler, request_seed
from ..tokenizer import Tokenizer
from .engine_loop import Draining, End, EngineLoop, Job, QueueFull, prompt_fits
from .http_errors import ApiError, ApiKeyCheck, BodyLimit, error_body, install_error_handlers
from .metrics import Metrics
from .replies import Answer, ChatText, CompletionText
from .schemas import ChatRequest, CompletionRequest, SamplingFields

DISCONNECT_POLL_S = 0.5  # how often a non-streaming request looks for a client that left
RETRY_AFTER_S = 1


@dataclass
class ServerState:
    engine: EngineLoop
    tokenizer: Tokenizer
    metrics: Metrics
    model_id: str
    steps: int  # the context: positions per request
    temperature: float  # defaults for requests that do not say (the command's -t, -p, -s)
    top_p: float
    seed: int
    api_key: str | None = None
    created: int = field(default_factory=lambda: int(time.time()))
    counter: itertools.count = field(default_factory=itertools.count)


class EngineFailed(Exception):
    pass


class ClientLeft(Exception):
    pass


class Generation:
    """One job as its handler sees it: the answer's pieces as they come, then how it ended."""

    def __init__(self, state: ServerState, job: Job, answer: Answer):
        self.state, self.job, self.answer = state, job, answer
        self.tokens: list[int] = []
        self.finish_reason: str | None = None
        self.next_check = time.monotonic() + DISCONNECT_POLL_S  # for a client that left

    async def pieces(self, request: Request | None = None):
        """Yield (pieces, new token ids) until the job ends; raise EngineFailed if the engine failed.
        `request`: watch it for a client that leaves (streams are cancelled by the server instead)."""
        try:
            while self.finish_reason is None:
                pieces, ids = [], []
                for event in await self._available(request):  # several when the server falls behind
                    if isinstance(event, End):
                        if event.reason == "error":
                            raise EngineFailed(event.message)
                        self.finish_reason = event.reason
                        pieces += self.answer.finish()
                        break
                    self.tokens.append(event.token)
                    ids.append(event.token)
                    pieces += self.answer.push(event.token)
                    if self.answer.stopped:
                        self.finish_reason = "stop"
                        break
                yield pieces, ids
        finally:
            self.state.engine.cancel(self.job)  # a no-op for a job that ended
            self.state.metrics.generated_tokens.inc(len(self.tokens))

    async def _available(self, request: Request | None) -> list:
        """The next event and every one already queued after it; with `request`, every
        DISCONNECT_POLL_S, whether its client left (tokens may keep coming for a client that did)."""
        events = self.job.events
        while request is not None:
            if time.monotonic() >= self.next_check:
                self.next_check = time.monotonic() + DISCONNECT_POLL_S
                if await request.is_disconnected():
                    raise ClientLeft
            try:
                first = await asyncio.wait_for(events.get(), DISCONNECT_POLL_S)
                break
            except asyncio.TimeoutError:
                continue
        else:
            first = await events.get()
        taken = [first]
        while not events.empty():
            taken.append(events.get_nowait())
        return taken

    def usage(self) -> dict:
        prompt = len(self.job.prompt)
        return {"prompt_tokens": prompt, "completion_tokens": len(self.tokens),
                "total_tokens": prompt + len(self.tokens)}


# -- building a job -----------------------------------------------------------------------------------
def check_model(state: ServerState, body: SamplingFields) -> None:
    if body.model != state.model_id:
        raise ApiError(404, f"the model {body.model!r} does not exist: this server serves {state.model_id!r}",
                       "model", "model_not_found")


def prompt_ids(state: ServerState, prompt) -> list[int]:
    if isinstance(prompt, str):
        return state.tokenizer.encode(prompt)
    vocab = state.tokenizer.vocab_size
    bad = [t for t in prompt if not 0 <= t < vocab]
    if bad:
        raise ApiError(400, f"token id {bad[0]} is outside the vocabulary (0..{vocab - 1})", "prompt")
    return list(prompt)


def sampler_of(state: ServerState, body: SamplingFields) -> Sampler:
    """The request's sampling; what it leaves out comes from the server's options. Without a seed, a
    request gets its own stream of the server's seed (as getp's requests do)."""
    temperature = state.temperature if body.temperature is None else body.temperature
    top_p = state.top_p if body.top_p is None else body.top_p
    seed = request_seed(state.seed, next(state.counter)) if body.seed is None else request_seed(body.seed, 0)
    return Sampler(temperature, top_p, seed)


def start_job(state: ServerState, endpoint: str, body: SamplingFields, prompt: list[int], max_tokens: int | None,
              renderer) -> Generation:
    problem = prompt_fits(prompt, max_tokens, state.steps)
    if problem:
        raise ApiError(400, problem, "max_tokens" if "max_tokens" in problem else "prompt", "context_length_exceeded")
    job = Job(prompt, max_tokens, renderer.stop, sampler_of(state, body), asyncio.get_running_loop())
    try:
        state.engine.submit(job)
    except QueueFull as e:
        state.metrics.count(endpoint, "queue_full")
        raise ApiError(429, f"the server is busy: {e}; retry later", code="queue_full",
                       headers={"Retry-After": str(RETRY_AFTER_S)}) from None
    except Draining as e:
        raise ApiError(503, str(e), code="shutting_down") from None
    state.metrics.prompt_tokens.inc(len(prompt))
    return Generation(state, job, Answer(renderer, body.stop or []))


# -- answers ---------------------------------------------------------------------------------------------
def merged(pieces) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, text in pieces:
        out[name] = out.get(name, "") + text
    return out


async def whole(state: ServerState, endpoint: str, request: Request, gen: Generation, build):
    """Collect the answer; `build(fields)` makes the response object of its fields' text."""
    collected = []
    try:
        async for pieces, _ in gen.pieces(request):
            collected += pieces
    except EngineFailed as e:
        state.metrics.count(endpoint, "error")
        raise ApiError(500, f"the engine failed: {e}") from None
    except ClientLeft:
        state.metrics.count(endpoint, "cancelled")
        return Response(status_code=499)  # nobody reads it: nginx's "client closed request"
    finish(state, endpoint, gen)
    return build(merged(collected))


def answer_object(chunk: Chunks, gen: Generation, fields: dict[str, str], return_ids: bool) -> dict:
    """A whole answer: a `chat.completion` (the message, reasoning apart) or a `text_completion`."""
    if chunk.chat:
        message = {"role": "assistant", "content": fields.get("content", "")}
        if "reasoning_content" in fields:
            message["reasoning_content"] = fields["reasoning_content"]
        choice = {"index": 0, "message": message, "finish_reason": gen.finish_reason}
    else:
        choice = {"index": 0, "text": fields.get("text", ""), "logprobs": None, "finish_reason": gen.finish_reason}
    if return_ids:
        choice["token_ids"] = gen.tokens
    kind = "chat.completion" if chunk.chat else "text_completion"
    return {**chunk([choice]), "object": kind, "usage": gen.usage()}


def finish(state: ServerState, endpoint: str, gen: Generation) -> None:
    state.metrics.count(endpoint, "aborted" if gen.finish_reason == "abort" else "completed")


def sse(data) -> str:
    return f"data: {json.dumps(data)}\n\n"


def streamed(state: ServerState, endpoint: str, gen: Generation, chunk, first_delta: dict | None,
             return_ids: bool, include_usage: bool) -> StreamingResponse:
    """`chunk(choices)` wraps choices in the endpoint's chunk object; `first_delta` opens the stream."""

    async def events():
        done = False
        try:
            if first_delta is not None:
                yield sse(chunk([{"index": 0, "delta": first_delta, "finish_reason": None}]))
            async for pieces, ids in gen.pieces():
                last = gen.finish_reason is not None
                if not pieces and not last and not return_ids:
                    continue
                choice = {"index": 0, **chunk.delta(merged(pieces)), "finish_reason": gen.finish_reason}
                if return_ids:
                    choice["token_ids"] = ids
                yield sse(chunk([choice]))
            if include_usage:
                yield sse({**chunk([]), "usage": gen.usage()})
            done = True
            finish(state, endpoint, gen)
        except EngineFailed as e:
            state.metrics.count(endpoint, "error")
            yield sse(error_body(500, f"the engine failed: {e}"))
            done = True
        finally:
            if not done:
                state.metrics.count(endpoint, "cancelled")
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


class Chunks:
    """The chunk objects of one stream: `chunks(choices)`, and `delta(fields)`, a choice's fields."""

    def __init__(self, state: ServerState, kind: str, prefix: str, chat: bool):
        self.base = {"id": f"{prefix}-{uuid.uuid4().hex}", "object": kind, "created": int(time.time()),
                     "model": state.model_id}
        self.chat = chat

    def __call__(self, choices: list) -> dict:
        return {**self.base, "choices": choices}

    def delta(self, fields: dict) -> dict:
        if self.chat:
            return {"delta": fields}
        return {"text": fields.get("text", ""), "logprobs": None}


# -- the app --------------------------------------------------------------------------------------------
def create_app(state: ServerState, max_body: int) -> FastAPI:
    app = FastAPI(title="cupy-getp", docs_url=None, redoc_url=None)
    install_error_handlers(app)
    app.add_middleware(BodyLimit, limit=max_body)
    app.add_middleware(ApiKeyCheck, api_key=state.api_key)  # added last: runs first

    @app.get("/health")
    async def health():
        if state.engine.failed is not None:
            return JSONResponse({"status": "engine stopped", "error": state.engine.failed}, 503)
        if state.engine.deadline is not None:
            return JSONResponse({"status": "shutting down"}, 503)
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics():
        return Response(state.metrics.text(), media_type=state.metrics.content_type)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": state.model_id, "object": "model", "created": state.created,
                                            "owned_by": "cupy-getp", "max_model_len": state.steps}]}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        return await answer(request, body, "completions", prompt_ids(state, body.prompt), body.max_tokens,
                            CompletionText(state.tokenizer))

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request):
        prompt = harmony_prompt(body.harmony_messages(), body.reasoning_effort)
        return await answer(request, body, "chat", prompt, body.token_limit, ChatText(state.tokenizer))

    async def answer(request: Request, body: SamplingFields, endpoint: str, prompt: list[int],
                     max_tokens: int | None, renderer):
        try:
            check_model(state, body)
            gen = start_job(state, endpoint, body, prompt, max_tokens, renderer)
        except ApiError as e:
            if e.status != 429:
                state.metrics.count(endpoint, "rejected")
            raise
        chat = endpoint == "chat"
        chunk = Chunks(state, "chat.completion.chunk" if chat else "text_completion", "chatcmpl" if chat else "cmpl",
                       chat)
        if body.stream:
            return streamed(state, endpoint, gen, chunk, {"role": "assistant", "content": ""} if chat else None,
                            body.return_token_ids, body.include_usage)
        return await whole(state, endpoint, request, gen,
                           lambda fields: answer_object(chunk, gen, fields, body.return_token_ids))

    return app
