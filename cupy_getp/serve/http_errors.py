"""Every refusal as an OpenAI-style error body, `{"error": {"message", "type", "param", "code"}}`, with
its 4xx status; the request-body size limit; the API key."""

from __future__ import annotations

import hmac
import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("cupy_getp.serve")

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
               413: "invalid_request_error", 429: "rate_limit_exceeded", 503: "service_unavailable"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    kind = ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(e: ApiError) -> JSONResponse:
    return JSONResponse(error_body(e.status, e.message, e.param, e.code), e.status, headers=e.headers)


def validation_error(e: RequestValidationError) -> ApiError:
    """pydantic's first complaint, naming the field; malformed JSON is its own message."""
    first = e.errors()[0]
    if first.get("type") == "json_invalid":
        return ApiError(400, f"the body is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}")
    path = [str(p) for p in first.get("loc", ()) if p != "body"]
    if not path and first.get("type") in ("model_attributes_type", "dict_type"):
        return ApiError(400, "the body must be a JSON object (sent as Content-Type: application/json)")
    if not path:
        return ApiError(400, f"the body: {first['msg']}")
    # the field is the parameter; deeper parts (a list index, a union's member) say where inside it
    where = f" (at {'.'.join(path)})" if len(path) > 1 else ""
    return ApiError(400, f"{path[0]}: {first['msg']}{where}", path[0])


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        return error_response(e)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        return error_response(validation_error(e))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        return error_response(ApiError(e.status_code, str(e.detail), headers=getattr(e, "headers", None)))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, e: Exception):
        log.exception("request failed")
        return error_response(ApiError(500, f"internal error: {type(e).__name__}: {e}"))


def api_key_refusal(authorization: str, api_key: str | None) -> ApiError | None:
    """The 401 for an Authorization header that does not carry the key, or None (no key set, or it does)."""
    if api_key is None:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        return ApiError(401, "a valid API key is needed: Authorization: Bearer KEY" if authorization
                        else "missing API key: send Authorization: Bearer KEY", code="invalid_api_key")
    return None


class ApiKeyCheck:
    """ASGI middleware: every /v1/ request without the key is answered 401 before its body is read or
    validated (nothing about the model, its vocabulary or the request's fields reaches an unauthenticated
    client, and it costs no tokenizing)."""

    def __init__(self, app, api_key: str | None):
        self.app, self.api_key = app, api_key

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            refusal = api_key_refusal(header, self.api_key)
            if refusal is not None:
                return await error_response(refusal)(scope, receive, send)
        await self.app(scope, receive, send)


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes is answered 413 before the app sees it (the
    body is read here, at most `limit` + one chunk, then handed on)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                chunks.append(message)  # a disconnect: hand it on
                break
            chunks.append(message)
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
            if size > self.limit:
                return await self._refuse(send)

        async def replay():
            return chunks.pop(0) if chunks else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send) -> None:
        body = json.dumps(error_body(413, f"the request body is over the limit of {self.limit} bytes")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
