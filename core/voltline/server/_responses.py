"""JSON responses: orjson for data (fast, strict), and the error body every route shares."""

from __future__ import annotations

import json
from typing import Any

import orjson
from starlette.responses import Response

__all__ = ["ERROR_STATUS", "error_body", "json_response"]

# Exception class name -> HTTP status. The client maps the name back to the same class.
ERROR_STATUS = {
    "InvalidInput": 422,
    "NotFound": 404,
    "AttemptLost": 409,
    "StoreUnavailable": 503,
    "SchemaOutOfDate": 503,
}


def error_body(error: str, detail: str) -> bytes:
    # json, not orjson: a message may quote a lone surrogate the client sent, which orjson
    # refuses; ensure_ascii escapes it instead.
    return json.dumps({"error": error, "detail": detail}).encode()


def json_response(data: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status_code, media_type="application/json")
