"""The SQL store: one implementation for SQLite (embedded default) and PostgreSQL.

The two dialects differ in three places only: how a write transaction starts (SQLite takes
the write lock up front with BEGIN IMMEDIATE so read-then-write never deadlocks), how rows
are claimed (PostgreSQL uses FOR UPDATE SKIP LOCKED so workers don't queue behind each
other), and how spans are bulk-loaded (COPY on PostgreSQL).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext, suppress
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError
from sqlalchemy import (
    Connection,
    Engine,
    and_,
    cast,
    create_engine,
    event,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import make_url

from . import _migrate
from ._errors import AttemptLost, InvalidInput, NotFound, SchemaOutOfDate, StoreUnavailable
from ._ids import random_hex
from ._models import (
    MAX_ATTRIBUTES_BYTES,
    SPAN_FIELDS,
    Attempt,
    AttemptStatus,
    Claim,
    EncodedSpan,
    Mode,
    ResourceKind,
    ResourceVersion,
    Rollout,
    RolloutStatus,
    Span,
    SpanKind,
    SpanStatus,
    dump_json,
)
from ._schema import ArtifactRow, AttemptRow, ResourceRow, RolloutRow, SpanRow
from ._store import NewRollout, Store, redact_url

__all__ = ["SqlStore"]

R = RolloutRow.__table__
A = AttemptRow.__table__
S = SpanRow.__table__
RV = ResourceRow.__table__
AR = ArtifactRow.__table__

_RUNNING = AttemptStatus.RUNNING.value


def _new_id(prefix: str) -> str:
    return f"{prefix}-{random_hex(10)}"


# Rows per multi-row INSERT of spans, largest first: a batch goes in as whole 64-row statements and
# a few smaller ones for the rest (64 x 13 values: under any SQLite's 999-variable limit). One
# statement per size keeps each one prepared.
_CHUNK_SIZES = (64, 16, 4, 1)
# Columns of a span row, read in C rather than in a Python loop over the batch.
_SPAN_ID, _ATTEMPT_ID, _SEQUENCE = (
    itemgetter(SPAN_FIELDS.index(f)) for f in ("span_id", "attempt_id", "sequence")
)
_ONE_SPAN = f"({', '.join('?' * len(SPAN_FIELDS))})"
_INSERT_SPANS = {
    n: f"INSERT INTO spans ({', '.join(SPAN_FIELDS)}) VALUES {', '.join([_ONE_SPAN] * n)}"
    for n in _CHUNK_SIZES
}


class SqlStore(Store):
    def __init__(self, url: str, *, create: bool = True) -> None:
        self.url = url
        try:
            sa_url = make_url(url)
            self.dialect = "sqlite" if sa_url.get_backend_name() == "sqlite" else "postgresql"
            if self.dialect == "sqlite":
                self._engine = self._sqlite_engine(sa_url, create)
            else:
                self._engine = create_engine(
                    sa_url.set(drivername="postgresql+psycopg"), pool_pre_ping=True, pool_size=4
                )
        except (ValueError, sa_exc.ArgumentError) as exc:  # what SQLAlchemy says of a malformed URL
            raise InvalidInput(f"invalid store URL {redact_url(url)}: {exc}") from None
        self._pid = os.getpid()
        # SQLite has one writer at a time. Threads of this process queue for it here, handed
        # over at once, instead of in SQLite's busy handler, which sleeps up to 100 ms between
        # tries (dozens of rollout threads then wait tens of ms for a 1 ms transaction).
        # Other processes still meet in the busy handler.
        self._write_lock: threading.RLock | None = threading.RLock() if self.dialect == "sqlite" else None
        try:
            with self._engine.begin() as conn:
                self._check_schema(conn, create)
        except sa_exc.DatabaseError as exc:
            self._engine.dispose()
            raise StoreUnavailable(
                f"cannot open the store at {redact_url(url)}: {exc.orig}. Check that the server is "
                "running and the URL (host, port, database, user) is right."
            ) from None
        except BaseException:
            self._engine.dispose()
            raise

    def _check_schema(self, conn: Connection, create: bool) -> None:
        current, head = _migrate.current_revision(conn), _migrate.head_revision()
        if current == head:
            return
        where = redact_url(self.url)
        if current is not None and not _migrate.known(current):
            raise SchemaOutOfDate(
                f"the database at {where} has schema revision {current}, which this Voltline (head "
                f"{head}) does not know: a newer Voltline migrated it; upgrade Voltline, not the database",
                current=current, head=head, newer=True,
            )  # fmt: skip
        if not create:
            raise SchemaOutOfDate(
                f"the database at {where} has schema {current or 'none'}, this Voltline needs {head}: "
                f"run `voltline db upgrade --url {where}`",
                current=current, head=head,
            )  # fmt: skip
        _migrate.upgrade(conn)

    @staticmethod
    def _sqlite_engine(sa_url: Any, create: bool) -> Engine:
        database = sa_url.database or ""
        if database in ("", ":memory:"):
            raise InvalidInput(
                "use a SQLite file (sqlite:///path.db): an in-memory database is per connection"
            )
        path = Path(database)
        if not path.exists():
            if not create:
                raise StoreUnavailable(
                    f"no Voltline database at {path.resolve()}: pass the right --url, or create one "
                    f"with `voltline db upgrade --url sqlite:///{database}`"
                )
            if not path.parent.exists():
                raise StoreUnavailable(f"cannot create {path}: folder {path.parent} does not exist")
        engine = create_engine(sa_url, connect_args={"timeout": 60, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves, below
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a killed process (the WAL is in the OS page cache);
            # only a power cut can lose the last commits.
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            # Reads take no lock in WAL mode; taking the write lock for them too would queue
            # every runner's resource lookup behind the span writer's transactions.
            read = conn.get_execution_options().get("voltline_read", False)
            conn.exec_driver_sql("BEGIN" if read else "BEGIN IMMEDIATE")

        return engine

    @contextmanager
    def _tx(self, *, read: bool = False, driver: bool = False) -> Iterator[Connection]:
        """A transaction; `read=True` for ones that only read (on SQLite they take no lock).

        `driver=True` (SQLite) begins and commits it on the driver's connection, for writes made
        only through the driver's cursor: SQLAlchemy's begin and commit cost as much as
        inserting a batch of spans."""
        if os.getpid() != self._pid:  # forked: never share the parent's sockets or file handles
            self._engine.dispose(close=False)
            self._pid = os.getpid()
            if self._write_lock is not None:
                self._write_lock = threading.RLock()  # the parent's may have been held at fork
        try:
            with (
                self._write_lock if self._write_lock is not None and not read else nullcontext(),
                self._engine.connect() as conn,
            ):
                if read:
                    conn.execution_options(voltline_read=True)
                if driver:
                    raw = conn.connection.driver_connection
                    raw.execute("BEGIN IMMEDIATE")  # type: ignore[union-attr]
                    try:
                        yield conn
                    except BaseException:
                        with suppress(Exception):  # the pool rolls back on return all the same
                            raw.execute("ROLLBACK")  # type: ignore[union-attr]
                        raise
                    raw.execute("COMMIT")  # type: ignore[union-attr]
                else:
                    with conn.begin():
                        yield conn
        except sa_exc.OperationalError as exc:
            raise StoreUnavailable(f"store at {redact_url(self.url)} failed: {exc.orig}") from exc
        except self._engine.dialect.loaded_dbapi.OperationalError as exc:  # raw cursor paths (spans)
            raise StoreUnavailable(f"store at {redact_url(self.url)} failed: {exc}") from exc

    def close(self) -> None:
        self._engine.dispose()

    # rows -> models ------------------------------------------------------------------
    @staticmethod
    def _rollout(row: Any) -> Rollout:
        m = row._mapping
        return Rollout(
            rollout_id=m["rollout_id"], input=orjson.loads(m["input"]), mode=m["mode"],
            status=m["status"], timeout=m["timeout"], heartbeat_timeout=m["heartbeat_timeout"],
            max_attempts=m["max_attempts"], num_attempts=m["num_attempts"],
            metadata=orjson.loads(m["metadata"]), resources=orjson.loads(m["resources"]),
            error=m["error"], created_at=m["created_at"], started_at=m["started_at"],
            finished_at=m["finished_at"],
        )  # fmt: skip

    @staticmethod
    def _attempt(row: Any) -> Attempt:
        return Attempt(**{k: row._mapping[k] for k in Attempt.model_fields})

    @staticmethod
    def _span(row: Any) -> Span:
        m = row._mapping
        return Span.model_construct(
            span_id=m["span_id"], rollout_id=m["rollout_id"], attempt_id=m["attempt_id"],
            parent_id=m["parent_id"], sequence=m["sequence"], kind=SpanKind(m["kind"]), name=m["name"],
            agent_name=m["agent_name"], start_time=m["start_time"], end_time=m["end_time"],
            status=SpanStatus(m["status"]),
            attributes=orjson.loads(m["attributes"]), resources=orjson.loads(m["resources"]),
        )  # fmt: skip

    @staticmethod
    def _resource(row: Any, size: int | None = None) -> ResourceVersion:
        m = row._mapping
        return ResourceVersion(
            name=m["name"], version=m["version"], kind=m["kind"], payload=orjson.loads(m["payload"]),
            artifact_hash=m["artifact_hash"], artifact_size=m.get("size"), created_at=m["created_at"],
            created_by=m["created_by"], metrics=orjson.loads(m["metrics"]),
        )  # fmt: skip

    # rollouts ------------------------------------------------------------------------
    @staticmethod
    def _rollout_row(now: float, where: str, **kw: Any) -> dict[str, Any]:
        unknown = set(kw) - {"input", "mode", "timeout", "heartbeat_timeout", "max_attempts", "metadata"}
        if unknown:
            raise InvalidInput(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        mode = kw.get("mode", "train")
        try:
            mode = Mode(mode).value
        except ValueError:
            raise InvalidInput(f"{where}.mode: {mode!r} is not one of train, val, test") from None
        for field in ("timeout", "heartbeat_timeout"):
            value = kw.get(field)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or not value > 0
            ):
                raise InvalidInput(f"{where}.{field}: must be a positive number of seconds, got {value!r}")
        max_attempts = kw.get("max_attempts", 1)
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise InvalidInput(f"{where}.max_attempts: must be an integer >= 1, got {max_attempts!r}")
        metadata = kw.get("metadata") or {}
        if not isinstance(metadata, Mapping):
            raise InvalidInput(f"{where}.metadata: must be a mapping, got {type(metadata).__name__}")
        try:
            input_json = dump_json(kw.get("input"), f"{where}.input", MAX_ATTRIBUTES_BYTES)
            metadata_json = dump_json(dict(metadata), f"{where}.metadata", MAX_ATTRIBUTES_BYTES)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        return {
            "rollout_id": _new_id("ro"), "input": input_json, "mode": mode,
            "status": RolloutStatus.QUEUED.value, "timeout": kw.get("timeout"),
            "heartbeat_timeout": kw.get("heartbeat_timeout"), "max_attempts": max_attempts,
            "num_attempts": 0, "metadata": metadata_json, "resources": "{}", "error": None,
            "created_at": now, "started_at": None, "finished_at": None,
        }  # fmt: skip

    def enqueue_many(self, rollouts: Iterable[NewRollout]) -> list[Rollout]:
        now = time.time()
        rows = []
        for i, spec in enumerate(rollouts):
            if not isinstance(spec, Mapping):
                raise InvalidInput(f"rollouts[{i}]: expected a mapping of enqueue() arguments")
            # Equal timestamps would make FIFO order depend on random ids.
            rows.append(self._rollout_row(now + i * 1e-6, f"rollouts[{i}]", **spec))
        if not rows:
            return []
        with self._tx() as conn:
            conn.execute(R.insert(), rows)
        return [self._rollout(_Row(r)) for r in rows]

    def _start_attempts(
        self, conn: Connection, rollout_ids: list[str], worker_id: str | None, now: float
    ) -> list[Claim]:
        if not rollout_ids:
            return []
        conn.execute(
            update(R)
            .where(R.c.rollout_id.in_(rollout_ids))
            .values(
                status=RolloutStatus.RUNNING.value,
                num_attempts=R.c.num_attempts + 1,
                started_at=func.coalesce(R.c.started_at, now),
            )
        )
        rollouts = {
            r.rollout_id: self._rollout(r)
            for r in conn.execute(select(R).where(R.c.rollout_id.in_(rollout_ids)))
        }
        attempts = [
            {
                "attempt_id": _new_id("at"),
                "rollout_id": rid,
                "number": rollouts[rid].num_attempts,
                "worker_id": worker_id,
                "status": _RUNNING,
                "started_at": now,
                "last_heartbeat": now,
                "finished_at": None,
                "error": None,
            }
            for rid in rollout_ids
        ]
        conn.execute(A.insert(), attempts)
        return [Claim(rollout=rollouts[a["rollout_id"]], attempt=Attempt(**a)) for a in attempts]

    def claim(self, worker_id: str, n: int = 1) -> list[Claim]:
        if not isinstance(n, int) or n < 1:
            raise InvalidInput(f"n: must be an integer >= 1, got {n!r}")
        now = time.time()
        with self._tx() as conn:
            self._expire(conn, now)
            ids = list(
                conn.execute(
                    select(R.c.rollout_id)
                    .where(R.c.status == RolloutStatus.QUEUED.value)
                    .order_by(R.c.created_at, R.c.rollout_id)
                    .limit(n)
                    .with_for_update(skip_locked=True)
                ).scalars()
            )
            return self._start_attempts(conn, ids, worker_id, now)

    def start_rollout(self, input: Any = None, *, worker_id: str | None = None, **options: Any) -> Claim:
        now = time.time()
        row = self._rollout_row(now, "rollout", input=input, **options)
        with self._tx() as conn:
            conn.execute(R.insert(), [row])
            return self._start_attempts(conn, [row["rollout_id"]], worker_id, now)[0]

    def _running_attempt(self, conn: Connection, attempt_id: str) -> Any:
        # Locked so a concurrent expiry or cancel cannot be overwritten by this worker's verdict.
        row = conn.execute(select(A).where(A.c.attempt_id == attempt_id).with_for_update()).first()
        if row is None:
            raise NotFound(f"no attempt {attempt_id!r} in the store")
        if row.status != _RUNNING:
            raise AttemptLost(f"attempt {attempt_id} is {row.status}, not running; stop working on it")
        return row

    def heartbeat(self, attempt_id: str) -> Attempt:
        now = time.time()
        with self._tx() as conn:
            row = self._running_attempt(conn, attempt_id)
            conn.execute(update(A).where(A.c.attempt_id == attempt_id).values(last_heartbeat=now))
        return self._attempt(row).model_copy(update=dict(last_heartbeat=now))

    def _end_attempt(
        self, conn: Connection, attempt: Any, status: str, error: str | None, now: float
    ) -> None:
        """Close `attempt` and move its rollout on: done, requeued, or failed for good."""
        conn.execute(
            update(A)
            .where(A.c.attempt_id == attempt.attempt_id)
            .values(status=status, finished_at=now, error=error)
        )
        rollout = conn.execute(select(R).where(R.c.rollout_id == attempt.rollout_id)).one()
        if rollout.status != RolloutStatus.RUNNING.value:
            return  # cancelled meanwhile: the cancellation stands
        if status == AttemptStatus.SUCCEEDED.value:
            values = {"status": RolloutStatus.SUCCEEDED.value, "finished_at": now, "error": None}
        elif rollout.num_attempts < rollout.max_attempts:
            values = {"status": RolloutStatus.QUEUED.value, "error": error}
        else:
            values = {"status": RolloutStatus.FAILED.value, "finished_at": now, "error": error}
        conn.execute(update(R).where(R.c.rollout_id == attempt.rollout_id).values(**values))

    def finish_attempt(
        self, attempt_id: str, status: AttemptStatus | str = "succeeded", error: str | None = None
    ) -> Rollout:
        if status not in (AttemptStatus.SUCCEEDED, AttemptStatus.FAILED):
            raise InvalidInput(f"status: an attempt finishes as 'succeeded' or 'failed', not {status!r}")
        if error is not None and not isinstance(error, str):
            raise InvalidInput(f"error: must be a string, got {type(error).__name__}")
        now = time.time()
        with self._tx() as conn:
            attempt = self._running_attempt(conn, attempt_id)
            self._end_attempt(conn, attempt, AttemptStatus(status).value, error, now)
            return self._rollout(conn.execute(select(R).where(R.c.rollout_id == attempt.rollout_id)).one())

    def _expire(self, conn: Connection, now: float) -> list[Attempt]:
        timed_out = and_(R.c.timeout.is_not(None), A.c.started_at + R.c.timeout < now)
        silent = and_(R.c.heartbeat_timeout.is_not(None), A.c.last_heartbeat + R.c.heartbeat_timeout < now)
        rows = conn.execute(
            select(A, R.c.timeout.label("rollout_timeout"))
            .join(R, R.c.rollout_id == A.c.rollout_id)
            .where(A.c.status == _RUNNING, or_(timed_out, silent))
            .with_for_update(of=A, skip_locked=True)
        ).all()
        expired = []
        for row in rows:
            over_time = row.rollout_timeout is not None and row.started_at + row.rollout_timeout < now
            status = AttemptStatus.TIMEOUT if over_time else AttemptStatus.UNRESPONSIVE
            reason = (
                f"attempt {row.number} exceeded its {row.rollout_timeout:g}s timeout"
                if over_time
                else f"attempt {row.number} sent no heartbeat since {now - row.last_heartbeat:.1f}s ago"
            )
            self._end_attempt(conn, row, status.value, reason, now)
            expired.append(
                self._attempt(row).model_copy(update=dict(status=status, finished_at=now, error=reason))
            )
        return expired

    def expire_attempts(self, now: float | None = None) -> list[Attempt]:
        with self._tx() as conn:
            return self._expire(conn, time.time() if now is None else now)

    def cancel(self, rollout_id: str) -> Rollout:
        now = time.time()
        with self._tx() as conn:
            rollout = self._rollout(self._get_rollout_row(conn, rollout_id))
            if rollout.status.finished:
                return rollout
            conn.execute(
                update(A)
                .where(A.c.rollout_id == rollout_id, A.c.status == _RUNNING)
                .values(status=AttemptStatus.CANCELLED.value, finished_at=now)
            )
            conn.execute(
                update(R)
                .where(R.c.rollout_id == rollout_id)
                .values(status=RolloutStatus.CANCELLED.value, finished_at=now)
            )
            return rollout.model_copy(update=dict(status=RolloutStatus.CANCELLED, finished_at=now))

    @staticmethod
    def _get_rollout_row(conn: Connection, rollout_id: str) -> Any:
        row = conn.execute(select(R).where(R.c.rollout_id == rollout_id)).first()
        if row is None:
            raise NotFound(f"no rollout {rollout_id!r} in the store")
        return row

    def get_rollout(self, rollout_id: str) -> Rollout:
        with self._tx(read=True) as conn:
            return self._rollout(self._get_rollout_row(conn, rollout_id))

    def get_attempts(self, rollout_id: str) -> list[Attempt]:
        with self._tx(read=True) as conn:
            self._get_rollout_row(conn, rollout_id)
            rows = conn.execute(select(A).where(A.c.rollout_id == rollout_id).order_by(A.c.number))
            return [self._attempt(r) for r in rows]

    def query_rollouts(
        self,
        *,
        status: str | Sequence[str] | None = None,
        mode: str | None = None,
        since: float | None = None,
        until: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Rollout]:
        query = select(R).order_by(R.c.created_at, R.c.rollout_id).limit(limit).offset(offset)
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            for s in statuses:
                if s not in RolloutStatus._value2member_map_:
                    raise InvalidInput(f"status: unknown rollout status {s!r}")
            query = query.where(R.c.status.in_(statuses))
        if mode is not None:
            if mode not in Mode._value2member_map_:
                raise InvalidInput(f"mode: {mode!r} is not one of train, val, test")
            query = query.where(R.c.mode == mode)
        if since is not None:
            query = query.where(R.c.created_at >= since)
        if until is not None:
            query = query.where(R.c.created_at < until)
        for key, value in (metadata or {}).items():
            query = query.where(self._metadata_equals(key, value))
        with self._tx(read=True) as conn:
            return [self._rollout(r) for r in conn.execute(query)]

    def _metadata_equals(self, key: str, value: Any) -> Any:
        if isinstance(value, (dict, list)) or value is None:
            raise InvalidInput(f"metadata[{key!r}]: filter on a string, number or boolean value")
        path = "$." + json.dumps(key)
        if self.dialect == "sqlite":
            # json_extract turns JSON true/false into 1/0: compare the JSON type as well, so
            # that True never matches 1 (nor 1 matches true), as with jsonb on PostgreSQL.
            json_type = func.json_type(R.c.metadata, path)
            if isinstance(value, bool):
                return json_type == ("true" if value else "false")
            return and_(json_type.not_in(("true", "false")), func.json_extract(R.c.metadata, path) == value)
        # PostgreSQL: jsonb equality is exact for every scalar type.
        # (the right side is bound as JSONB, so SQLAlchemy serializes the value itself)
        return cast(R.c.metadata, JSONB)[key] == literal(value, JSONB)

    def wait(self, rollout_ids: Sequence[str], timeout: float | None = None) -> list[Rollout]:
        ids = list(rollout_ids)
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.02
        while True:
            with self._tx() as conn:
                self._expire(conn, time.time())
                rows = {r.rollout_id: r for r in conn.execute(select(R).where(R.c.rollout_id.in_(ids)))}
            missing = [i for i in ids if i not in rows]
            if missing:
                raise NotFound(f"no rollout(s) {', '.join(missing[:5])} in the store")
            rollouts = [self._rollout(rows[i]) for i in ids]
            if all(r.status.finished for r in rollouts):
                return rollouts
            if deadline is not None and time.monotonic() >= deadline:
                return rollouts
            sleep = delay if deadline is None else min(delay, max(0.0, deadline - time.monotonic()))
            time.sleep(sleep)
            delay = min(delay * 1.5, 0.2)

    # spans -------------------------------------------------------------------------
    @staticmethod
    def _span_rows(spans: Iterable[Span | Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        """Each span as a row of the spans table; the whole batch is refused at the first bad span."""
        # An EncodedSpan was checked and encoded when it was emitted.
        rows = [
            span.row if type(span) is EncodedSpan else _encode_span(span, i)  # type: ignore[union-attr]
            for i, span in enumerate(spans)
        ]
        if len(set(map(_SPAN_ID, rows))) != len(rows):  # rare: find the first repeated id to name it
            first_index: dict[str, int] = {}
            for i, row in enumerate(rows):
                j = first_index.setdefault(row[0], i)
                if j != i:
                    raise InvalidInput(
                        f"spans[{i}].span_id: {row[0]!r} is also the id of spans[{j}]; "
                        "nothing from this batch was stored"
                    )
        return rows

    def add_spans(self, spans: Iterable[Span | Mapping[str, Any]]) -> int:
        rows = self._span_rows(spans)
        if not rows:
            return 0
        numbered = None not in map(_SEQUENCE, rows)  # as every emitted span is
        try:
            with self._tx(driver=numbered and self.dialect == "sqlite") as conn:
                if not numbered:
                    rows = self._number_spans(conn, rows)
                self._write_spans(conn, rows)
        except (sa_exc.IntegrityError, self._engine.dialect.loaded_dbapi.IntegrityError) as exc:
            # Spans go in through the driver's own cursor (COPY, multi-row INSERT), so its
            # IntegrityError arrives unwrapped: both mean a span_id is already stored.
            raise InvalidInput(self._integrity_message(rows, getattr(exc, "orig", exc))) from None
        return len(rows)

    def _integrity_message(self, rows: list[tuple[Any, ...]], error: BaseException) -> str:
        span_ids = [r[0] for r in rows]
        stored: set[str] = set()
        try:
            with self._tx() as conn:
                for start in range(0, len(span_ids), 500):
                    chunk = span_ids[start : start + 500]
                    stored.update(conn.execute(select(S.c.span_id).where(S.c.span_id.in_(chunk))).scalars())
        except Exception:  # only the message suffers
            pass
        for i, span_id in enumerate(span_ids):
            if span_id in stored:
                return (
                    f"spans[{i}].span_id: {span_id!r} is already stored; nothing from this batch was stored"
                )
        return f"span batch rejected, nothing stored: {error} (a span_id is already stored?)"

    @staticmethod
    def _number_spans(conn: Connection, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        attempt_ids = sorted({r[2] for r in rows if r[4] is None})
        next_seq = dict.fromkeys(attempt_ids, 0)
        for r in rows:  # numbers given explicitly in this same batch are taken too
            if r[4] is not None and r[2] in next_seq:
                next_seq[r[2]] = max(next_seq[r[2]], r[4] + 1)
        for attempt_id, top in conn.execute(
            select(S.c.attempt_id, func.max(S.c.sequence))
            .where(S.c.attempt_id.in_(attempt_ids))
            .group_by(S.c.attempt_id)
        ):
            next_seq[attempt_id] = max(next_seq[attempt_id], top + 1)
        numbered = []
        for r in rows:
            if r[4] is None:
                r = (*r[:4], next_seq[r[2]], *r[5:])
                next_seq[r[2]] += 1
            numbered.append(r)
        return numbered

    def _write_spans(self, conn: Connection, rows: list[tuple[Any, ...]]) -> None:
        """Insert the rows and count them as a heartbeat of their attempts, through the driver's
        own cursor: SQLAlchemy's statement building and execution took as long as the inserts."""
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            if self.dialect == "postgresql":
                with cursor.copy(f"COPY spans ({', '.join(SPAN_FIELDS)}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            else:
                # Few statements per batch rather than one step per row: sqlite3 releases and retakes
                # the GIL around every step, and binding a chunk takes fewer calls than its rows do.
                start = 0
                for size in _CHUNK_SIZES:
                    statement = _INSERT_SPANS[size]
                    while len(rows) - start >= size:
                        cursor.execute(statement, list(chain.from_iterable(rows[start : start + size])))
                        start += size
            # A span is a sign of life. Sorted: concurrent writers lock attempt rows in one order.
            attempt_ids = sorted(set(map(_ATTEMPT_ID, rows)))
            mark = "?" if self.dialect == "sqlite" else "%s"
            cursor.execute(
                f"UPDATE attempts SET last_heartbeat = {mark} WHERE status = {mark} "
                f"AND attempt_id IN ({', '.join([mark] * len(attempt_ids))})",
                [time.time(), _RUNNING, *attempt_ids],
            )
        finally:
            cursor.close()

    def query_spans(
        self,
        *,
        rollout_id: str | None = None,
        attempt_id: str | None = None,
        kind: str | Sequence[str] | None = None,
        name: str | None = None,
        agent_name: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Span]:
        if rollout_id is None and attempt_id is None:
            raise InvalidInput("query_spans needs rollout_id or attempt_id")
        query = (
            select(S)
            .outerjoin(A, A.c.attempt_id == S.c.attempt_id)
            .order_by(A.c.number, S.c.attempt_id, S.c.sequence)
            .offset(offset)
        )
        if limit is not None:
            query = query.limit(limit)
        if rollout_id is not None:
            query = query.where(S.c.rollout_id == rollout_id)
        if attempt_id is not None:
            query = query.where(S.c.attempt_id == attempt_id)
        if kind is not None:
            kinds = [kind] if isinstance(kind, str) else list(kind)
            query = query.where(S.c.kind.in_(kinds))
        if name is not None:
            query = query.where(S.c.name == name)
        if agent_name is not None:
            query = query.where(S.c.agent_name == agent_name)
        with self._tx(read=True) as conn:
            return [self._span(r) for r in conn.execute(query)]

    # resources -------------------------------------------------------------------------
    def put_resource(
        self,
        name: str,
        kind: str,
        payload: Any = None,
        *,
        artifact: bytes | None = None,
        created_by: str | None = None,
        metrics: Mapping[str, float] | None = None,
    ) -> ResourceVersion:
        if not isinstance(name, str) or not name or len(name) > 256:
            raise InvalidInput(f"name: must be a non-empty string of at most 256 characters, got {name!r}")
        try:
            kind = ResourceKind(kind).value
        except ValueError:
            raise InvalidInput(
                f"kind: unknown resource kind {kind!r}; expected one of "
                + ", ".join(k.value for k in ResourceKind)
            ) from None
        if artifact is not None and not isinstance(artifact, bytes | bytearray | memoryview):
            raise InvalidInput(f"artifact: must be bytes, got {type(artifact).__name__}")
        metrics = dict(metrics or {})
        for key, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidInput(f"metrics[{key!r}]: must be a number, got {value!r}")
        try:
            payload_json = dump_json(payload, "payload", MAX_ATTRIBUTES_BYTES)
            metrics_json = dump_json(metrics, "metrics")
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        artifact_hash = hashlib.sha256(artifact).hexdigest() if artifact is not None else None
        for _ in range(5):  # two writers may race for the next version number on PostgreSQL
            try:
                with self._tx() as conn:
                    if artifact is not None:
                        self._put_artifact(conn, artifact_hash, bytes(artifact))
                    top = conn.execute(select(func.max(RV.c.version)).where(RV.c.name == name)).scalar()
                    row = {
                        "name": name, "version": (top or 0) + 1, "kind": kind, "payload": payload_json,
                        "artifact_hash": artifact_hash, "created_at": time.time(),
                        "created_by": created_by, "metrics": metrics_json,
                    }  # fmt: skip
                    conn.execute(RV.insert(), [row])
                return self._resource(_Row({**row, "size": None if artifact is None else len(artifact)}))
            except sa_exc.IntegrityError:
                continue
        raise StoreUnavailable(f"could not publish a new version of {name!r}: too many concurrent writers")

    def _put_artifact(self, conn: Connection, artifact_hash: str | None, data: bytes) -> None:
        if self.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        conn.execute(
            insert(AR).values(hash=artifact_hash, size=len(data), data=data).on_conflict_do_nothing()
        )

    def _resource_query(self) -> Any:
        return select(RV, AR.c.size).outerjoin(AR, AR.c.hash == RV.c.artifact_hash)

    def get_resource(self, name: str, version: int | None = None) -> ResourceVersion:
        query = self._resource_query().where(RV.c.name == name)
        query = (
            query.order_by(RV.c.version.desc()).limit(1)
            if version is None
            else query.where(RV.c.version == version)
        )
        with self._tx(read=True) as conn:
            row = conn.execute(query).first()
        if row is None:
            which = "any version" if version is None else f"version {version}"
            raise NotFound(f"no resource {name!r} ({which}) in the store")
        return self._resource(row)

    def resource_history(self, name: str) -> list[ResourceVersion]:
        with self._tx(read=True) as conn:
            rows = conn.execute(self._resource_query().where(RV.c.name == name).order_by(RV.c.version))
            return [self._resource(r) for r in rows]

    def list_resources(self) -> list[ResourceVersion]:
        latest = select(RV.c.name, func.max(RV.c.version).label("version")).group_by(RV.c.name).subquery()
        query = self._resource_query().join(
            latest, and_(latest.c.name == RV.c.name, latest.c.version == RV.c.version)
        )
        with self._tx(read=True) as conn:
            return [self._resource(r) for r in conn.execute(query.order_by(RV.c.name))]

    def get_artifact(self, artifact_hash: str) -> bytes:
        with self._tx(read=True) as conn:
            data = conn.execute(select(AR.c.data).where(AR.c.hash == artifact_hash)).scalar()
        if data is None:
            raise NotFound(f"no artifact with sha256 {artifact_hash!r} in the store")
        return bytes(data)

    def record_resources(self, rollout_id: str, versions: Mapping[str, int]) -> Rollout:
        with self._tx() as conn:
            row = self._get_rollout_row(conn, rollout_id)
            for name, version in versions.items():
                found = conn.execute(
                    select(RV.c.version).where(RV.c.name == name, RV.c.version == version)
                ).first()
                if found is None:
                    raise NotFound(f"resources[{name!r}]: no version {version!r} of {name!r} in the store")
            merged = {**orjson.loads(row.resources), **versions}
            conn.execute(update(R).where(R.c.rollout_id == rollout_id).values(resources=json.dumps(merged)))
            return self._rollout(row).model_copy(update=dict(resources=merged))


class _Row:
    """Lets a dict we just inserted go through the same row -> model code as a fetched row."""

    def __init__(self, mapping: dict[str, Any]) -> None:
        self._mapping = mapping


def _encode_span(span: Span | Mapping[str, Any], i: int) -> tuple[Any, ...]:
    """A span given to `add_spans` by a caller (not the emitter) as a row, validated by `Span`."""
    if not isinstance(span, Span):
        if not isinstance(span, Mapping):
            raise InvalidInput(f"spans[{i}]: expected a Span or a mapping, got {type(span).__name__}")
        try:
            span = Span.model_validate(dict(span))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'span'}: {err['msg']}" for err in exc.errors()
            )
            raise InvalidInput(
                f"spans[{i}] rejected ({problems}); nothing from this batch was stored"
            ) from None
    try:
        attributes = dump_json(span.attributes, f"spans[{i}].attributes", MAX_ATTRIBUTES_BYTES)
        resources = dump_json(span.resources, f"spans[{i}].resources") if span.resources else "{}"
    except ValueError as exc:
        raise InvalidInput(f"{exc}; nothing from this batch was stored") from None
    return (
        span.span_id, span.rollout_id, span.attempt_id, span.parent_id, span.sequence, span.kind.value,
        span.name, span.agent_name, span.start_time, span.end_time, span.status.value, attributes, resources,
    )  # fmt: skip
