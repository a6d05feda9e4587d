"""The HTTP layer: OpenAI routes (also under `/rollout/{rid}/attempt/{aid}`), errors, SSE, recording.

Backends (`LocalBackend`, `UpstreamBackend`) turn a validated request into a `Result`; this
module owns everything they share, so both answer and record calls the same way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .errors import ProxyError, error_body
from .protocol import ChatRequest, CompletionRequest, parse_request
from .record import CallRecord, attribution, record_call

__all__ = ["create_app"]

log = logging.getLogger("voltline.proxy")
PREFIX = "/rollout/{rollout_id}/attempt/{attempt_id}"


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # orjson: the response body is mostly token id lists, and this is the hot path.
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def _error(exc: ProxyError) -> Response:
    return _json(exc.body(), exc.status)


def create_app(backend: Any, store: Any = None) -> FastAPI:
    """An ASGI app serving `backend`; calls attributed to a rollout are recorded in `store`."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        close = getattr(backend, "close", None)
        if close is not None:  # stop the engine thread, close upstream connections
            result = close()
            if hasattr(result, "__await__"):
                await result

    app = FastAPI(
        title="Voltline LLM proxy", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )
    app.state.backend = backend
    app.state.store = store

    @app.exception_handler(ProxyError)
    async def _proxy_error(request: Request, exc: ProxyError) -> Response:
        return _error(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _json(
            error_body(str(exc.detail), "invalid_request_error", code=str(exc.status_code)), exc.status_code
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        return _json(error_body(str(exc.errors()[:1]), "invalid_request_error"), 400)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("voltline proxy: unexpected error")
        return _json(error_body(f"internal error: {type(exc).__name__}: {exc}", "server_error"), 500)

    async def health() -> Response:
        return _json({"status": "ok", "backend": backend.kind})

    async def models() -> Response:
        names = await backend.models()
        data = [{"id": n, "object": "model", "created": 0, "owned_by": "voltline"} for n in names]
        return _json({"object": "list", "data": data})

    async def serve(request: Request, kind: type, handler: Any) -> Response:
        body = await request.body()
        req, data = parse_request(body, kind)
        who = attribution(request.path_params, request.headers)
        start = time.time()
        result = await handler(req, data)
        result.record.start_time = start
        headers = {"x-voltline-completion-id": result.record.response_id}
        if result.chunks is None:
            record_call(store, who, result.record)
            return _json(result.response, headers=headers)
        return StreamingResponse(
            _sse(result.chunks, result.record, who), media_type="text/event-stream", headers=headers
        )

    async def _sse(chunks: AsyncIterator[dict[str, Any]], rec: CallRecord, who: Any) -> AsyncIterator[bytes]:
        recorded = False
        try:
            async for chunk in chunks:
                yield b"data: " + orjson.dumps(chunk) + b"\n\n"
            # Record before [DONE]: a client that flushes the store once the stream ends must
            # find the span there.
            recorded = True
            record_call(store, who, rec)
            yield b"data: [DONE]\n\n"
        except ProxyError as exc:  # headers are gone already: report in-band, as OpenAI does
            rec.error = exc.message
            yield b"data: " + orjson.dumps(exc.body()) + b"\n\n"
        except BaseException as exc:  # client disconnects arrive as cancellation
            rec.error = f"stream ended early: {type(exc).__name__}"
            raise
        finally:
            if not recorded:
                record_call(store, who, rec)

    async def chat(request: Request) -> Response:
        return await serve(request, ChatRequest, backend.chat)

    async def completions(request: Request) -> Response:
        return await serve(request, CompletionRequest, backend.completion)

    for prefix in ("", PREFIX):
        app.add_api_route(prefix + "/health", health, methods=["GET"])
        app.add_api_route(prefix + "/v1/models", models, methods=["GET"])
        app.add_api_route(prefix + "/v1/chat/completions", chat, methods=["POST"])
        app.add_api_route(prefix + "/v1/completions", completions, methods=["POST"])

    return app
