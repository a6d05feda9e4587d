"""OTLP/HTTP trace ingest: OpenTelemetry spans (protobuf or JSON) become Voltline spans.

Any agent instrumented with an OpenTelemetry library (OpenInference, OpenLLMetry, the GenAI
instrumentations, autogen-core's own tracing) can export to `http://server/v1/traces`.
Each span must say which rollout and attempt it belongs to, by attribute (on the span or its
resource: `voltline.rollout_id`, `voltline.attempt_id`) or, for a whole export, by the
`Voltline-Rollout-Id` / `Voltline-Attempt-Id` headers. Spans without one are refused and
counted in the OTLP partial-success answer, as the protocol prescribes.

The kind comes from `voltline.kind`, else OpenInference's `openinference.span.kind`, else
GenAI's `gen_ai.operation.name`; the agent from `gen_ai.agent.name`. Attribute names are
kept as sent, so GenAI spans keep `gen_ai.request.model`, `gen_ai.usage.input_tokens`, ...
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from .._errors import InvalidInput
from .._store import Store
from ._responses import json_response
from .ingest import add_spans_idempotent

__all__ = ["handle", "spans_from_json", "spans_from_protobuf", "voltline_kind"]

log = logging.getLogger("voltline.server.otlp")

ROLLOUT_ATTR, ATTEMPT_ATTR, KIND_ATTR = "voltline.rollout_id", "voltline.attempt_id", "voltline.kind"
ROLLOUT_HEADER, ATTEMPT_HEADER = "voltline-rollout-id", "voltline-attempt-id"

_OPENINFERENCE_KINDS = {
    "LLM": "llm", "TOOL": "tool", "AGENT": "agent", "CHAIN": "chain", "RETRIEVER": "retriever",
}  # fmt: skip
_GENAI_OPERATIONS = {
    "chat": "llm", "text_completion": "llm", "generate_content": "llm", "execute_tool": "tool",
    "invoke_agent": "agent", "create_agent": "agent", "invoke_workflow": "agent", "retrieval": "retriever",
}  # fmt: skip
_VOLTLINE_KINDS = {"llm", "tool", "agent", "chain", "retriever", "message", "reward", "exception", "custom"}
_STATUS_ERROR = 2  # OTLP Status.code: 0 unset, 1 ok, 2 error


def voltline_kind(attributes: Mapping[str, Any]) -> str:
    """The Voltline span kind an OpenTelemetry span's attributes imply."""
    explicit = attributes.get(KIND_ATTR)
    if explicit in _VOLTLINE_KINDS:
        return str(explicit)
    openinference = attributes.get("openinference.span.kind")
    if isinstance(openinference, str) and openinference.upper() in _OPENINFERENCE_KINDS:
        return _OPENINFERENCE_KINDS[openinference.upper()]
    operation = attributes.get("gen_ai.operation.name")
    if isinstance(operation, str) and operation in _GENAI_OPERATIONS:
        return _GENAI_OPERATIONS[operation]
    return "custom"


def _span(
    *, span_id: str, parent_id: str | None, name: str, start_ns: int, end_ns: int, status_code: int,
    status_message: str, trace_id: str, attributes: dict[str, Any], resource: Mapping[str, Any],
    defaults: Mapping[str, str | None],
) -> dict[str, Any] | None:  # fmt: skip
    merged = {**resource, **attributes}
    rollout_id = merged.get(ROLLOUT_ATTR) or defaults.get("rollout_id")
    attempt_id = merged.get(ATTEMPT_ATTR) or defaults.get("attempt_id")
    if not isinstance(rollout_id, str) or not isinstance(attempt_id, str) or not span_id:
        return None
    attributes = {k: v for k, v in attributes.items() if k not in (ROLLOUT_ATTR, ATTEMPT_ATTR, KIND_ATTR)}
    attributes["otel.trace_id"] = trace_id
    if status_message:
        attributes["otel.status_message"] = status_message
    agent = merged.get("gen_ai.agent.name")
    return {
        "span_id": span_id,
        "rollout_id": rollout_id,
        "attempt_id": attempt_id,
        "parent_id": parent_id or None,
        "kind": voltline_kind(merged),
        "name": (name or "span")[:512],
        "agent_name": agent[:256] if isinstance(agent, str) else None,
        "start_time": start_ns / 1e9,
        "end_time": end_ns / 1e9 if end_ns else None,
        "status": "error" if status_code == _STATUS_ERROR else "ok",
        "attributes": attributes,
    }


# JSON (the OTLP/JSON mapping: camelCase fields, hex ids, 64-bit integers as strings) ------------
def _json_value(value: Any) -> Any:
    if not isinstance(value, Mapping):
        return None
    if "stringValue" in value:
        return value["stringValue"]
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "arrayValue" in value:
        return [_json_value(v) for v in (value["arrayValue"] or {}).get("values", [])]
    if "kvlistValue" in value:
        return _json_attributes((value["kvlistValue"] or {}).get("values", []))
    if "bytesValue" in value:
        return value["bytesValue"]  # already base64 text
    return None


def _json_attributes(items: Iterable[Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        if isinstance(item, Mapping) and isinstance(item.get("key"), str):
            out[item["key"]] = _json_value(item.get("value"))
    return out


def _json_id(value: Any) -> str:
    # The spec says hex; some exporters send the protobuf JSON default, base64. Accept both.
    if not isinstance(value, str) or not value:
        return ""
    try:
        bytes.fromhex(value)
        return value.lower()
    except ValueError:
        try:
            return base64.b64decode(value, validate=True).hex()
        except (binascii.Error, ValueError):
            return ""


def spans_from_json(doc: Any, defaults: Mapping[str, str | None]) -> tuple[list[dict[str, Any]], int]:
    """Voltline spans from an OTLP/JSON ExportTraceServiceRequest, and how many were refused."""
    if not isinstance(doc, Mapping):
        raise InvalidInput("OTLP/JSON: expected an ExportTraceServiceRequest object")
    spans, rejected = [], 0
    try:
        for resource_spans in doc.get("resourceSpans") or []:
            resource = _json_attributes((resource_spans.get("resource") or {}).get("attributes"))
            for scope_spans in resource_spans.get("scopeSpans") or []:
                for s in scope_spans.get("spans") or []:
                    status = s.get("status") or {}
                    span = _span(
                        span_id=_json_id(s.get("spanId")), parent_id=_json_id(s.get("parentSpanId")),
                        name=str(s.get("name") or ""), start_ns=int(s.get("startTimeUnixNano") or 0),
                        end_ns=int(s.get("endTimeUnixNano") or 0), status_code=int(status.get("code") or 0),
                        status_message=str(status.get("message") or ""), trace_id=_json_id(s.get("traceId")),
                        attributes=_json_attributes(s.get("attributes")), resource=resource,
                        defaults=defaults,
                    )  # fmt: skip
                    if span is None:
                        rejected += 1
                    else:
                        spans.append(span)
    except (AttributeError, TypeError, ValueError) as exc:
        raise InvalidInput(f"OTLP/JSON: malformed ExportTraceServiceRequest ({exc})") from None
    return spans, rejected


# protobuf -----------------------------------------------------------------------------------------
def _pb_value(value: Any) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [_pb_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _pb_value(kv.value) for kv in value.kvlist_value.values}
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return getattr(value, which) if which else None


def spans_from_protobuf(raw: bytes, defaults: Mapping[str, str | None]) -> tuple[list[dict[str, Any]], int]:
    """Voltline spans from a protobuf ExportTraceServiceRequest, and how many were refused."""
    try:
        from google.protobuf.message import DecodeError
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    except ImportError:  # not a core dependency: OTLP/JSON works without it
        raise InvalidInput(
            "OTLP protobuf needs the opentelemetry-proto package on the server "
            "(pip install opentelemetry-proto), or send OTLP/JSON"
        ) from None
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(raw)
    except DecodeError as exc:
        raise InvalidInput(f"OTLP protobuf: cannot decode ExportTraceServiceRequest ({exc})") from None
    spans, rejected = [], 0
    for resource_spans in request.resource_spans:
        resource = {kv.key: _pb_value(kv.value) for kv in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for s in scope_spans.spans:
                span = _span(
                    span_id=s.span_id.hex(), parent_id=s.parent_span_id.hex(), name=s.name,
                    start_ns=s.start_time_unix_nano, end_ns=s.end_time_unix_nano, status_code=s.status.code,
                    status_message=s.status.message, trace_id=s.trace_id.hex(),
                    attributes={kv.key: _pb_value(kv.value) for kv in s.attributes},
                    resource=resource, defaults=defaults,
                )  # fmt: skip
                if span is None:
                    rejected += 1
                else:
                    spans.append(span)
    return spans, rejected


def _protobuf_response(rejected: int, message: str) -> Response:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    answer = ExportTraceServiceResponse()
    if rejected:
        answer.partial_success.rejected_spans = rejected
        answer.partial_success.error_message = message
    return Response(answer.SerializeToString(), media_type="application/x-protobuf")


async def handle(request: Request, store: Store) -> Response:
    """The `/v1/traces` route: decode, map, store in one batch, answer OTLP-style."""
    defaults = {
        "rollout_id": request.headers.get(ROLLOUT_HEADER),
        "attempt_id": request.headers.get(ATTEMPT_HEADER),
    }
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    raw = await request.body()
    protobuf = content_type in ("application/x-protobuf", "application/protobuf")
    if protobuf:
        spans, rejected = spans_from_protobuf(raw, defaults)
    elif content_type == "application/json":
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"OTLP/JSON: body is not JSON ({exc})") from None
        spans, rejected = spans_from_json(doc, defaults)
    else:
        raise InvalidInput(
            f"OTLP: unsupported content type {content_type!r}; send application/x-protobuf or json"
        )
    # Exporters retry a failed export as a whole, and the store numbers spans as they arrive:
    # sort by start time so auto-numbered sequences follow the order spans began.
    spans.sort(key=lambda s: s["start_time"])
    if spans:
        # OTLP exporters re-send whole exports: treat every export as a possible re-send.
        await run_in_threadpool(add_spans_idempotent, store, spans, True)
    message = (
        f"{rejected} span(s) named no rollout: set the {ROLLOUT_ATTR} and {ATTEMPT_ATTR} attributes "
        "(on the span or resource) or the Voltline-Rollout-Id and Voltline-Attempt-Id headers"
        if rejected
        else ""
    )
    if protobuf:
        return _protobuf_response(rejected, message)
    if rejected:
        return json_response({"partialSuccess": {"rejectedSpans": str(rejected), "errorMessage": message}})
    return json_response({})
