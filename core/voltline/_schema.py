"""How the data model is laid out in SQL (SQLite and PostgreSQL alike).

The tables are SQLModel classes so the schema reads as Python; the store talks to them
through SQLAlchemy Core for speed. Any change here needs a migration in `_migrations/`.
JSON fields are text columns we serialize ourselves: one strict encoder everywhere, and
the span insert path skips a per-row type processor.
"""

from __future__ import annotations

from sqlalchemy import Column, Index, LargeBinary, Text
from sqlmodel import Field, SQLModel

__all__ = ["ArtifactRow", "AttemptRow", "ResourceRow", "RolloutRow", "SpanRow", "metadata"]

metadata = SQLModel.metadata


class RolloutRow(SQLModel, table=True):
    __tablename__ = "rollouts"
    __table_args__ = (Index("ix_rollouts_status_created", "status", "created_at"),)

    rollout_id: str = Field(primary_key=True, max_length=64)
    input: str = Field(sa_column=Column(Text, nullable=False))
    mode: str = Field(max_length=16, index=True)
    status: str = Field(max_length=16)
    timeout: float | None = None
    heartbeat_timeout: float | None = None
    max_attempts: int = 1
    num_attempts: int = 0
    metadata_: str = Field(sa_column=Column("metadata", Text, nullable=False))
    resources: str = Field(sa_column=Column(Text, nullable=False))
    error: str | None = Field(default=None, sa_column=Column(Text))
    created_at: float = Field(index=True)
    started_at: float | None = None
    finished_at: float | None = None


class AttemptRow(SQLModel, table=True):
    __tablename__ = "attempts"
    __table_args__ = (Index("ix_attempts_status", "status"),)

    attempt_id: str = Field(primary_key=True, max_length=64)
    rollout_id: str = Field(foreign_key="rollouts.rollout_id", index=True, max_length=64)
    number: int
    worker_id: str | None = Field(default=None, max_length=256)
    status: str = Field(max_length=16)
    started_at: float
    last_heartbeat: float
    finished_at: float | None = None
    error: str | None = Field(default=None, sa_column=Column(Text))


class SpanRow(SQLModel, table=True):
    __tablename__ = "spans"
    __table_args__ = (
        Index("ix_spans_attempt_seq", "attempt_id", "sequence"),
        Index("ix_spans_rollout_agent", "rollout_id", "agent_name"),
    )

    span_id: str = Field(primary_key=True, max_length=64)
    rollout_id: str = Field(max_length=64)
    attempt_id: str = Field(max_length=64)
    parent_id: str | None = Field(default=None, max_length=64)
    sequence: int
    kind: str = Field(max_length=16)
    name: str = Field(max_length=512)
    agent_name: str | None = Field(default=None, max_length=256)
    start_time: float
    end_time: float | None = None
    status: str = Field(max_length=8)
    attributes: str = Field(sa_column=Column(Text, nullable=False))
    resources: str = Field(sa_column=Column(Text, nullable=False))


class ResourceRow(SQLModel, table=True):
    __tablename__ = "resource_versions"

    name: str = Field(primary_key=True, max_length=256)
    version: int = Field(primary_key=True)
    kind: str = Field(max_length=32)
    payload: str = Field(sa_column=Column(Text, nullable=False))
    artifact_hash: str | None = Field(default=None, foreign_key="artifacts.hash", max_length=64)
    created_at: float
    created_by: str | None = Field(default=None, max_length=256)
    metrics: str = Field(sa_column=Column(Text, nullable=False))


class ArtifactRow(SQLModel, table=True):
    __tablename__ = "artifacts"

    hash: str = Field(primary_key=True, max_length=64)
    size: int
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
