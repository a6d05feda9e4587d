"""The FastAPI application: one route per `Store` method, span batches, OTLP traces.

Handlers are plain `def` functions, so FastAPI runs them in its thread pool: the store is
synchronous and thread-safe, and one slow query never stalls the event loop. Responses are
encoded with orjson straight from the models (no second validation on the way out).
Errors travel as `{"error": <exception class>, "detail": <message>}` with a fitting status,
and the client raises the same class again.
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Any

import orjson
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy import exc as sa_exc
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from .._errors import InvalidInput, VoltlineError
from .._models import Attempt, Claim, ResourceVersion, Rollout, Span
from .._store import Store
from . import otlp
from ._responses import ERROR_STATUS, error_body, json_response
from .auth import BearerAuth
from .ingest import add_spans_idempotent
from .limits import DEFAULT_MAX_BODY_BYTES, BodyLimit
from .schemas import (
    MAX_INT,
    SPAN_BATCH_SCHEMA,
    ClaimRequest,
    EnqueueRequest,
    ExpireRequest,
    FinishRequest,
    PutResourceRequest,
    QueryRolloutsRequest,
    QuerySpansRequest,
    RecordResourcesRequest,
    StartRolloutRequest,
    WaitRequest,
)

__all__ = ["API_PREFIX", "MAX_WAIT", "create_app"]

log = logging.getLogger("voltline.server")

API_PREFIX = "/v1"
# A wait answers within this many seconds at most; the client asks again. Keeps proxies and
# load balancers (idle timeouts of 60 s are common) from cutting long waits.
MAX_WAIT = 20.0


def _dump(model: Any) -> Any:
    if isinstance(model, list):
        return [m.model_dump(mode="json") for m in model]
    return model.model_dump(mode="json")


def _error(status: int, error: str, detail: str) -> Response:
    return Response(error_body(error, detail[:4000]), status_code=status, media_type="application/json")


def _validation_message(exc: RequestValidationError) -> str:
    problems = []
    for err in exc.errors()[:5]:
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        where = ""
        for part in loc:
            where += f"[{part}]" if part.isdigit() else (f".{part}" if where else part)
        problems.append(f"{where or 'body'}: {err.get('msg')}")
    return "; ".join(problems)


def create_app(
    store: Store,
    *,
    token: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> FastAPI:
    """The store server's ASGI app over `store`. With `token`, every request except the
    health check and the API description needs `Authorization: Bearer <token>`."""
    app = FastAPI(
        title="Voltline store",
        version="1",
        description="Rollouts, attempts, spans and resource versions over HTTP, and OTLP/HTTP "
        "trace ingest at /v1/traces. Errors: {'error': <class>, 'detail': <message>}.",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.store = store

    # errors ------------------------------------------------------------------------------
    @app.exception_handler(VoltlineError)
    async def _voltline_error(_: Request, exc: VoltlineError) -> Response:
        name = type(exc).__name__
        status = ERROR_STATUS.get(name)
        if status is None:  # a subclass someone added: report it as its nearest known base
            name = next((c.__name__ for c in type(exc).__mro__ if c.__name__ in ERROR_STATUS), "InvalidInput")
            status = ERROR_STATUS[name]
        return _error(status, name, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_: Request, exc: RequestValidationError) -> Response:
        return _error(422, "InvalidInput", _validation_message(exc))

    @app.exception_handler(sa_exc.DBAPIError)
    async def _database_error(_: Request, exc: sa_exc.DBAPIError) -> Response:
        # A value the database refused (a NUL byte PostgreSQL will not store, ...) is the
        # request's fault; a lost connection is the store's.
        if isinstance(exc, sa_exc.DataError):
            return _error(422, "InvalidInput", f"the database refused a value: {exc.orig}")
        if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
            return _error(503, "StoreUnavailable", f"store failed: {exc.orig}")
        log.exception("voltline: unexpected database error")
        return _error(500, "InternalError", f"database error: {exc.orig}")

    @app.exception_handler(ValueError)
    async def _value_error(_: Request, exc: ValueError) -> Response:
        # The driver refusing to bind a value (a NUL in a PostgreSQL string, a lone surrogate
        # SQLite cannot encode, an integer too wide) raises ValueError or a subclass.
        return _error(422, "InvalidInput", f"invalid value: {exc}")

    @app.exception_handler(OverflowError)
    async def _overflow(_: Request, exc: OverflowError) -> Response:
        return _error(422, "InvalidInput", f"number out of range: {exc}")

    # health ------------------------------------------------------------------------------
    @app.get(f"{API_PREFIX}/health", tags=["server"])
    def health() -> dict[str, str]:
        return {"status": "ok"}

    # rollouts and attempts -----------------------------------------------------------------
    @app.post(f"{API_PREFIX}/rollouts", response_model=list[Rollout], tags=["rollouts"])
    def enqueue_many(body: EnqueueRequest) -> Response:
        items = [item.model_dump(exclude_unset=True) for item in body.rollouts]
        return json_response(_dump(store.enqueue_many(items)))

    @app.post(f"{API_PREFIX}/rollouts/start", response_model=Claim, tags=["rollouts"])
    def start_rollout(body: StartRolloutRequest) -> Response:
        fields = body.model_dump(exclude_unset=True)
        task = fields.pop("input", None)
        worker_id = fields.pop("worker_id", None)
        return json_response(_dump(store.start_rollout(task, worker_id=worker_id, **fields)))

    @app.post(f"{API_PREFIX}/claims", response_model=list[Claim], tags=["rollouts"])
    def claim(body: ClaimRequest) -> Response:
        return json_response(_dump(store.claim(body.worker_id, body.n)))

    @app.post(f"{API_PREFIX}/attempts/{{attempt_id}}/heartbeat", response_model=Attempt, tags=["rollouts"])
    def heartbeat(attempt_id: str) -> Response:
        return json_response(_dump(store.heartbeat(attempt_id)))

    @app.post(f"{API_PREFIX}/attempts/{{attempt_id}}/finish", response_model=Rollout, tags=["rollouts"])
    def finish_attempt(attempt_id: str, body: FinishRequest) -> Response:
        return json_response(_dump(store.finish_attempt(attempt_id, body.status, body.error)))

    @app.post(f"{API_PREFIX}/attempts/expire", response_model=list[Attempt], tags=["rollouts"])
    def expire_attempts(body: ExpireRequest | None = None) -> Response:
        return json_response(_dump(store.expire_attempts(body.now if body else None)))

    @app.post(f"{API_PREFIX}/rollouts/{{rollout_id}}/cancel", response_model=Rollout, tags=["rollouts"])
    def cancel(rollout_id: str) -> Response:
        return json_response(_dump(store.cancel(rollout_id)))

    @app.get(f"{API_PREFIX}/rollouts/{{rollout_id}}", response_model=Rollout, tags=["rollouts"])
    def get_rollout(rollout_id: str) -> Response:
        return json_response(_dump(store.get_rollout(rollout_id)))

    @app.get(
        f"{API_PREFIX}/rollouts/{{rollout_id}}/attempts", response_model=list[Attempt], tags=["rollouts"]
    )
    def get_attempts(rollout_id: str) -> Response:
        return json_response(_dump(store.get_attempts(rollout_id)))

    @app.post(f"{API_PREFIX}/rollouts/query", response_model=list[Rollout], tags=["rollouts"])
    def query_rollouts(body: QueryRolloutsRequest) -> Response:
        return json_response(_dump(store.query_rollouts(**body.model_dump())))

    @app.post(f"{API_PREFIX}/rollouts/wait", response_model=list[Rollout], tags=["rollouts"])
    def wait(body: WaitRequest) -> Response:
        timeout = MAX_WAIT if body.timeout is None else min(body.timeout, MAX_WAIT)
        return json_response(_dump(store.wait(body.rollout_ids, timeout=timeout)))

    @app.post(f"{API_PREFIX}/rollouts/{{rollout_id}}/resources", response_model=Rollout, tags=["resources"])
    def record_resources(rollout_id: str, body: RecordResourcesRequest) -> Response:
        return json_response(_dump(store.record_resources(rollout_id, body.versions)))

    # spans ------------------------------------------------------------------------------------
    @app.post(
        f"{API_PREFIX}/spans",
        tags=["spans"],
        openapi_extra={
            "requestBody": {"required": True, "content": {"application/json": {"schema": SPAN_BATCH_SCHEMA}}}
        },
        responses={200: {"description": "the number of spans stored", "content": {"application/json": {}}}},
    )
    async def add_spans(request: Request) -> Response:
        spans, retry = _parse_span_batch(await request.body())
        count = await run_in_threadpool(add_spans_idempotent, store, spans, retry)
        return json_response({"count": count})

    @app.post(f"{API_PREFIX}/spans/query", response_model=list[Span], tags=["spans"])
    def query_spans(body: QuerySpansRequest) -> Response:
        return json_response(_dump(store.query_spans(**body.model_dump())))

    # resources --------------------------------------------------------------------------------
    @app.post(f"{API_PREFIX}/resources", response_model=ResourceVersion, tags=["resources"])
    def put_resource(body: PutResourceRequest) -> Response:
        artifact = None
        if body.artifact_base64 is not None:
            try:
                artifact = base64.b64decode(body.artifact_base64, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidInput("artifact_base64: not valid base64") from None
        version = store.put_resource(
            body.name, body.kind, body.payload, artifact=artifact, created_by=body.created_by,
            metrics=body.metrics,
        )  # fmt: skip
        return json_response(_dump(version))

    @app.get(f"{API_PREFIX}/resources", response_model=list[ResourceVersion], tags=["resources"])
    def list_resources() -> Response:
        return json_response(_dump(store.list_resources()))

    # Names go in the query string, not the path: a name may contain "/".
    @app.get(f"{API_PREFIX}/resources/version", response_model=ResourceVersion, tags=["resources"])
    def get_resource(name: str, version: int | None = Query(default=None, ge=0, le=MAX_INT)) -> Response:
        return json_response(_dump(store.get_resource(name, version)))

    @app.get(f"{API_PREFIX}/resources/history", response_model=list[ResourceVersion], tags=["resources"])
    def resource_history(name: str) -> Response:
        return json_response(_dump(store.resource_history(name)))

    @app.get(
        f"{API_PREFIX}/artifacts/{{artifact_hash}}",
        tags=["resources"],
        responses={200: {"content": {"application/octet-stream": {}}, "description": "the artifact's bytes"}},
    )
    def get_artifact(artifact_hash: str) -> Response:
        return Response(store.get_artifact(artifact_hash), media_type="application/octet-stream")

    # OpenTelemetry ------------------------------------------------------------------------------
    @app.post(
        f"{API_PREFIX}/traces",
        tags=["otlp"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"type": "object"}},
                    "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
                },
            }
        },
        responses={
            200: {"description": "OTLP ExportTraceServiceResponse", "content": {"application/json": {}}}
        },
    )
    async def otlp_traces(request: Request) -> Response:
        return await otlp.handle(request, store)

    if max_body_bytes:
        app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    if token:
        app.add_middleware(BearerAuth, token=token)  # added last: runs first
    return app


def _parse_span_batch(raw: bytes) -> tuple[list[Any], bool]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"span batch is not JSON: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("spans"), list):
        raise InvalidInput('span batch: expected {"spans": [...]}')
    unknown = set(body) - {"spans", "retry"}
    if unknown:
        raise InvalidInput(f"span batch: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    retry = body.get("retry", False)
    if not isinstance(retry, bool):
        raise InvalidInput("retry: must be a boolean")
    return body["spans"], retry
