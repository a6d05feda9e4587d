"""The data model: what the store keeps and what the API hands out.

These are plain pydantic models (validated, JSON-friendly). How they are laid out in a
database lives in `_schema.py`; the two are kept apart because the stored form packs
JSON into text columns and keeps artifacts once per content hash.
"""

from __future__ import annotations

import dataclasses
import math
from enum import StrEnum
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, Strict

__all__ = [
    "MAX_ATTRIBUTES_BYTES",
    "Attempt",
    "AttemptStatus",
    "Claim",
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
        return not math.isfinite(value)
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
