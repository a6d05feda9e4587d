"""Request bodies of the store server's routes.

They mirror the `Store` methods' arguments. Integers are bounded so that a hostile or
fuzzed request is refused with 422 here instead of overflowing a database column (a 500).
Values the store itself validates (mode, status, timeouts, JSON payloads) are passed through
so the error messages stay the store's own, naming the field.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "SPAN_BATCH_SCHEMA",
    "ClaimRequest",
    "EnqueueItem",
    "EnqueueRequest",
    "ExpireRequest",
    "FinishRequest",
    "PutResourceRequest",
    "QueryRolloutsRequest",
    "QuerySpansRequest",
    "RecordResourcesRequest",
    "StartRolloutRequest",
    "WaitRequest",
]

MAX_INT = 2**31 - 1  # fits every integer column on both backends


class _Body(BaseModel):
    # NaN and Infinity are not JSON; refusing them here keeps them out of every comparison.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class EnqueueItem(_Body):
    input: Any = None
    mode: str = "train"
    timeout: float | None = None
    heartbeat_timeout: float | None = None
    max_attempts: int = Field(default=1, le=MAX_INT, ge=-MAX_INT)
    metadata: dict[str, Any] | None = None


class EnqueueRequest(_Body):
    rollouts: list[EnqueueItem] = Field(max_length=100_000)


class StartRolloutRequest(EnqueueItem):
    worker_id: str | None = Field(default=None, max_length=256)


class ClaimRequest(_Body):
    worker_id: str = Field(max_length=256)
    n: int = Field(default=1, ge=-MAX_INT, le=MAX_INT)


class FinishRequest(_Body):
    status: str = "succeeded"
    error: str | None = None


class ExpireRequest(_Body):
    now: float | None = None


class QueryRolloutsRequest(_Body):
    status: str | list[str] | None = None
    mode: str | None = None
    since: float | None = None
    until: float | None = None
    metadata: dict[str, Any] | None = None
    limit: int = Field(default=100, ge=0, le=MAX_INT)
    offset: int = Field(default=0, ge=0, le=MAX_INT)


class WaitRequest(_Body):
    rollout_ids: list[str] = Field(max_length=100_000)
    # The server answers within `timeout` seconds, at most `MAX_WAIT`; clients poll again.
    timeout: float | None = Field(default=None, ge=0)


class QuerySpansRequest(_Body):
    rollout_id: str | None = None
    attempt_id: str | None = None
    kind: str | list[str] | None = None
    name: str | None = None
    agent_name: str | None = None
    limit: int | None = Field(default=None, ge=0, le=MAX_INT)
    offset: int = Field(default=0, ge=0, le=MAX_INT)


class PutResourceRequest(_Body):
    name: str
    kind: str
    payload: Any = None
    artifact_base64: str | None = Field(default=None, description="the binary artifact, base64")
    created_by: str | None = Field(default=None, max_length=512)
    metrics: dict[str, Any] | None = None


class RecordResourcesRequest(_Body):
    versions: dict[str, int]


# The span batch is parsed by hand (orjson, no per-request model building: this is the hot
# route); this schema documents it in the OpenAPI spec so clients and fuzzers know the shape.
SPAN_BATCH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["spans"],
    "additionalProperties": False,
    "properties": {
        "spans": {"type": "array", "items": {"$ref": "#/components/schemas/Span"}},
        "retry": {
            "type": "boolean",
            "description": "set on a re-send: spans already stored with identical content count as stored",
        },
    },
}
