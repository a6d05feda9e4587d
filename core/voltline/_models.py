"""The data model: what the store keeps and what the API hands out.

These are plain pydantic models (validated, JSON-friendly). How they are laid out in a
database lives in `_schema.py`; the two are kept apart because the stored form packs
JSON into text columns and keeps artifacts once per content hash.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from enum import StrEnum
from math import isfinite
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, Strict

from .capture import jsonable

__all__ = [
    "MAX_ATTRIBUTES_BYTES",
    "SPAN_FIELDS",
    "Attempt",
    "AttemptStatus",
    "Claim",
    "EncodedSpan",
    "Mode",
    "ResourceKind",
    "ResourceVersion",
    "Rollout",
    "RolloutStatus",
    "Span",
    "SpanKind",
    "SpanStatus",
    "dump_json",
]

# A span is one record, not a blob store: token ids of a 100k-token prompt fit well under this.
MAX_ATTRIBUTES_BYTES = 8 * 1024 * 1024


class RolloutStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (RolloutStatus.SUCCEEDED, RolloutStatus.FAILED, RolloutStatus.CANCELLED)


class AttemptStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMEOUT = "timeout"
    UNRESPONSIVE = "unresponsive"
    CANCELLED = "cancelled"


class Mode(StrEnum):
    TRAIN = "train"
    VAL = "val"
    TEST = "test"


class SpanKind(StrEnum):
    LLM = "llm"
    TOOL = "tool"
    AGENT = "agent"
    CHAIN = "chain"
    RETRIEVER = "retriever"
    MESSAGE = "message"
    REWARD = "reward"
    EXCEPTION = "exception"
    CUSTOM = "custom"


class SpanStatus(StrEnum):
    OK = "ok"
    ERROR = "error"


class ResourceKind(StrEnum):
    PROMPT_TEMPLATE = "prompt_template"
    LLM = "llm"
    LORA_ADAPTER = "lora_adapter"
    FEW_SHOT = "few_shot"
    JSON = "json"


def dump_json(value: Any, what: str, limit: int | None = None) -> str:
    """Serialize `value` as strict JSON or raise ValueError naming `what`.

    orjson keeps span ingest fast (token id lists dominate, ~14x faster than `json`), but it
    writes NaN and Infinity as null; those are not JSON and would be silently lost, so when
    the output holds a null we look for them and refuse.
    """
    try:
        data = orjson.dumps(value)
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        raise ValueError(f"{what} must be JSON-serializable: {exc}") from None
    if b"null" in data and _has_non_finite(value):
        raise ValueError(f"{what} must be JSON-serializable: NaN and Infinity are not JSON")
    if limit is not None and len(data) > limit:
        raise ValueError(f"{what} is {len(data):,} bytes as JSON; the limit is {limit:,}")
    return data.decode()


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_non_finite(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _has_non_finite(dataclasses.asdict(value))
    return False


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False)


class Rollout(_Model):
    """One task run to optimize, possibly over several attempts."""

    rollout_id: str
    input: Any = None
    mode: Mode = Mode.TRAIN
    status: RolloutStatus = RolloutStatus.QUEUED
    timeout: float | None = Field(default=None, description="seconds an attempt may run")
    heartbeat_timeout: float | None = Field(default=None, description="seconds without a heartbeat")
    max_attempts: int = 1
    num_attempts: int = 0
    metadata: dict[str, Any] = Field(default_factory=dict)
    resources: dict[str, int] = Field(default_factory=dict, description="resource versions it ran with")
    error: str | None = None
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None


class Attempt(_Model):
    """One execution of a rollout by one worker."""

    attempt_id: str
    rollout_id: str
    number: int
    worker_id: str | None = None
    status: AttemptStatus = AttemptStatus.RUNNING
    started_at: float
    last_heartbeat: float
    finished_at: float | None = None
    error: str | None = None


class Claim(_Model):
    """What a worker gets when it claims a rollout: the rollout and its fresh attempt."""

    rollout: Rollout
    attempt: Attempt


class Span(_Model):
    """One captured operation (an LLM call, a tool call, an agent step, a reward, ...).

    Times are Unix seconds. `sequence` orders spans within an attempt; when it is None the
    store assigns the next number. LLM spans use the OpenTelemetry GenAI attribute names.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    span_id: str = Field(min_length=1, max_length=64)
    rollout_id: str = Field(min_length=1, max_length=64)
    attempt_id: str = Field(min_length=1, max_length=64)
    parent_id: str | None = Field(default=None, max_length=64)
    sequence: int | None = Field(default=None, ge=0)
    # Lax only for these two, so the plain strings everyone writes ("llm") are accepted; the
    # check stays in pydantic-core (no Python validator per span on the writer's hot path).
    kind: Annotated[SpanKind, Strict(False)]
    name: str = Field(min_length=1, max_length=512)
    agent_name: str | None = Field(default=None, max_length=256, description="the agent it ran under")
    start_time: float = Field(allow_inf_nan=False, description="Unix seconds")
    end_time: float | None = Field(default=None, allow_inf_nan=False)
    status: Annotated[SpanStatus, Strict(False)] = SpanStatus.OK
    attributes: dict[str, Any] = Field(default_factory=dict)
    resources: dict[str, int] = Field(default_factory=dict)


class ResourceVersion(_Model):
    """One immutable version of a named resource (prompt template, LoRA adapter, ...)."""

    name: str
    version: int
    kind: ResourceKind
    payload: Any = None
    artifact_hash: str | None = Field(default=None, description="sha256 of the binary artifact")
    artifact_size: int | None = None
    created_at: float
    created_by: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)


# The order of the spans table's columns; an EncodedSpan's row follows it.
SPAN_FIELDS = (
    "span_id", "rollout_id", "attempt_id", "parent_id", "sequence", "kind", "name", "agent_name",
    "start_time", "end_time", "status", "attributes", "resources",
)  # fmt: skip
_FIELD_INDEX = {name: i for i, name in enumerate(SPAN_FIELDS)}
_FIELD_SET = frozenset(SPAN_FIELDS)
_JSON_FIELDS = (_FIELD_INDEX["attributes"], _FIELD_INDEX["resources"])
# Both the values and the enum members map to the plain value (StrEnum members hash as their value).
_KINDS = {kind.value: kind.value for kind in SpanKind}
_STATUSES = {status.value: status.value for status in SpanStatus}


_EMPTY: dict[str, Any] = {}
_new = object.__new__


class EncodedSpan(Mapping[str, Any]):
    """A span checked against `Span`'s rules and encoded once, as the store's row.

    This is what the emitter buffers and hands to `Store.add_spans`: a row of plain values in
    `SPAN_FIELDS` order with attributes and resources as JSON text. Building it on the
    emitting thread means the writer neither validates nor re-encodes, and the buffer holds a
    few strings per span instead of the attribute dicts (which the garbage collector would
    otherwise traverse again and again while they wait). SQL stores insert the row as it is
    and the HTTP store sends its JSON as it is; any other store reads it as a mapping of
    `Span` fields, JSON decoded on access.
    """

    __slots__ = ("coerced", "row")

    def __init__(self, row: tuple[Any, ...], coerced: bool = False) -> None:
        self.row = row
        self.coerced = coerced  # attribute values that were not JSON were stored as text

    def __getitem__(self, key: str) -> Any:
        i = _FIELD_INDEX[key]
        return orjson.loads(self.row[i]) if i in _JSON_FIELDS else self.row[i]

    def __iter__(self) -> Iterator[str]:
        return iter(SPAN_FIELDS)

    def __len__(self) -> int:
        return len(SPAN_FIELDS)

    def __repr__(self) -> str:
        return f"EncodedSpan({dict(zip(SPAN_FIELDS, self.row, strict=True))!r})"

    def to_span(self) -> Span:
        return Span.model_validate(dict(self))

    @classmethod
    def encode(cls, fields: Mapping[str, Any]) -> EncodedSpan:
        """Check `fields` (a mapping of `Span` fields) by `Span`'s rules and encode them.

        Raises ValueError naming the first bad field. Attribute values that are not JSON
        (objects, sets, bytes, NaN, non-text keys) are stored as text, lists or base64 instead,
        and the result is marked `coerced`: a span is refused for bad fields, never for its payload.
        """
        if not _FIELD_SET.issuperset(fields):
            unknown = fields.keys() - _FIELD_SET
            raise ValueError(f"unknown span field(s): {', '.join(sorted(unknown))}")
        try:
            return cls.build(**fields)
        except TypeError as exc:  # a required field missing, or a value of a type beyond checking
            raise ValueError(str(exc)) from None

    @classmethod
    def build(
        cls,
        span_id: Any,
        rollout_id: Any,
        attempt_id: Any,
        kind: Any,
        name: Any,
        start_time: Any,
        parent_id: Any = None,
        sequence: Any = None,
        agent_name: Any = None,
        end_time: Any = None,
        status: Any = "ok",
        attributes: Any = _EMPTY,
        resources: Any = _EMPTY,
    ) -> EncodedSpan:
        """`encode` with the fields as arguments (the emit API's path: no dict in between)."""
        # Spans from Voltline's own code take this one-expression path; anything else (a str
        # subclass, an int time, a bad value) goes through the checks that convert or explain.
        if not (
            type(span_id) is str and 0 < len(span_id) <= 64
            and type(rollout_id) is str and 0 < len(rollout_id) <= 64
            and type(attempt_id) is str and 0 < len(attempt_id) <= 64
            and (parent_id is None or (type(parent_id) is str and len(parent_id) <= 64))
            and type(name) is str and 0 < len(name) <= 512
            and (agent_name is None or (type(agent_name) is str and len(agent_name) <= 256))
            and type(start_time) is float and isfinite(start_time)
            and (end_time is None or (type(end_time) is float and isfinite(end_time)))
        ):  # fmt: skip
            span_id, rollout_id = _text(span_id, "span_id", 1, 64), _text(rollout_id, "rollout_id", 1, 64)
            attempt_id = _text(attempt_id, "attempt_id", 1, 64)
            parent_id = _text(parent_id, "parent_id", 0, 64, optional=True)
            name = _text(name, "name", 1, 512)
            agent_name = _text(agent_name, "agent_name", 0, 256, optional=True)
            start_time = _time(start_time, "start_time")
            end_time = _time(end_time, "end_time", optional=True)
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {', '.join(_KINDS)}; got {kind!r}")
        if status not in _STATUSES:
            raise ValueError(f"status must be 'ok' or 'error'; got {status!r}")
        if sequence is not None and (type(sequence) is not int or sequence < 0):
            if isinstance(sequence, bool) or not isinstance(sequence, int) or sequence < 0:
                raise ValueError(f"sequence must be a whole number >= 0; got {sequence!r}")
            sequence = int(sequence)
        if type(attributes) is not dict and not isinstance(attributes, dict):
            raise ValueError(f"attributes must be a dict; got {type(attributes).__name__}")
        # dump_json's checks, inline: this runs once per captured span. A "null" in the output may
        # be a NaN orjson wrote as null, and too large a span is refused: both take the slow path.
        try:
            data = orjson.dumps(attributes)
        except TypeError:
            data = None
        if data is not None and b"null" not in data and len(data) <= MAX_ATTRIBUTES_BYTES:
            attributes_json, coerced = data.decode(), False
        else:
            attributes_json, coerced = _encode_attributes(attributes, data)
        last = _last_resources  # every span of a rollout carries the same resources dict
        if resources is last[0] and resources == last[1]:
            resources_json = last[2]
        elif type(resources) is dict and not resources:
            resources_json = "{}"
        else:
            resources_json = _encode_resources(resources)
        span = _new(cls)  # not cls(...): no __init__ frame on the per-span path
        span.row = (
            span_id, rollout_id, attempt_id, parent_id, sequence, _KINDS[kind], name, agent_name,
            start_time, end_time, _STATUSES[status], attributes_json, resources_json,
        )  # fmt: skip
        span.coerced = coerced
        return span


def _text(value: Any, key: str, low: int, high: int, optional: bool = False) -> str | None:
    if value is None:
        if optional:
            return None
        raise ValueError(f"{key} is required")
    if type(value) is not str:
        if not isinstance(value, str):
            raise ValueError(f"{key} must be a string; got {type(value).__name__}")
        value = str(value)
    if not low <= len(value) <= high:
        raise ValueError(f"{key} must be {low} to {high} characters long; got {len(value)}")
    return value


def _time(value: Any, key: str, optional: bool = False) -> float | None:
    if value is None:
        if optional:
            return None
        raise ValueError(f"{key} is required")
    if type(value) is not float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{key} must be a number of Unix seconds; got {type(value).__name__}")
        value = float(value)
    if not isfinite(value):
        raise ValueError(f"{key} must be a finite number; got {value!r}")
    return value


# The last resources dict encoded, a copy to tell if it changed since, and its JSON.
_last_resources: tuple[dict[str, Any], dict[str, Any], str] = ({}, {}, "{}")


def _encode_resources(resources: Any) -> str:
    global _last_resources
    if not resources:
        if not isinstance(resources, dict):
            raise ValueError(f"resources must map names to version numbers; got {resources!r}")
        return "{}"
    if not isinstance(resources, dict) or not all(
        isinstance(k, str) and type(v) is int for k, v in resources.items()
    ):
        raise ValueError(f"resources must map names to version numbers; got {resources!r}")
    encoded = orjson.dumps(resources).decode()
    _last_resources = (resources, dict(resources), encoded)
    return encoded


def _encode_attributes(attributes: dict[str, Any], data: bytes | None) -> tuple[str, bool]:
    """Attributes as JSON text, and whether values that are not JSON had to be coerced.

    `data` is orjson's output for them (None if orjson refused them), not encoded again here.
    """
    if data is not None and len(data) <= MAX_ATTRIBUTES_BYTES and not _has_non_finite(attributes):
        return data.decode(), False  # the "null" in it was a None, not a NaN
    # Not JSON, or too large (which coercing will not change: dump_json raises again).
    return dump_json(jsonable(attributes), "attributes", MAX_ATTRIBUTES_BYTES), True
