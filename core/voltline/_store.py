"""The `Store` interface and `connect(url)`, which picks a backend by URL scheme."""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ._errors import InvalidInput
from ._models import Attempt, AttemptStatus, Claim, ResourceVersion, Rollout, Span

__all__ = ["DEFAULT_URL", "NewRollout", "Store", "connect", "redact_url"]

DEFAULT_URL = "sqlite:///voltline.db"

# What `enqueue_many` accepts per rollout: the keyword arguments of `enqueue`.
NewRollout = Mapping[str, Any]


class Store(ABC):
    """Where rollouts, attempts, spans and resource versions live.

    Every write is one transaction: it happens whole or not at all. Methods raise
    `InvalidInput` for bad values (naming the field), `NotFound` for unknown ids and
    `AttemptLost` when a worker acts on an attempt that is no longer running.
    """

    url: str

    # rollouts and attempts -------------------------------------------------------
    def enqueue(
        self,
        input: Any = None,
        *,
        mode: str = "train",
        timeout: float | None = None,
        heartbeat_timeout: float | None = None,
        max_attempts: int = 1,
        metadata: Mapping[str, Any] | None = None,
    ) -> Rollout:
        """Queue one rollout. `timeout` bounds an attempt's run time and `heartbeat_timeout`
        the silence between heartbeats (seconds); a failed, timed-out or unresponsive attempt
        is retried until `max_attempts` attempts have run."""
        return self.enqueue_many(
            [dict(input=input, mode=mode, timeout=timeout, heartbeat_timeout=heartbeat_timeout,
                  max_attempts=max_attempts, metadata=metadata)]
        )[0]  # fmt: skip

    @abstractmethod
    def enqueue_many(self, rollouts: Iterable[NewRollout]) -> list[Rollout]:
        """Queue many rollouts in one transaction; each item holds `enqueue`'s arguments."""

    @abstractmethod
    def claim(self, worker_id: str, n: int = 1) -> list[Claim]:
        """Atomically take up to `n` queued rollouts (oldest first), starting an attempt on each.
        A rollout is never held by two running attempts."""

    @abstractmethod
    def start_rollout(self, input: Any = None, *, worker_id: str | None = None, **options: Any) -> Claim:
        """Create a rollout and its first attempt at once, skipping the queue."""

    @abstractmethod
    def heartbeat(self, attempt_id: str) -> Attempt:
        """Tell the store the attempt's worker is alive. Raises `AttemptLost` if it is not running."""

    @abstractmethod
    def finish_attempt(
        self, attempt_id: str, status: AttemptStatus | str = "succeeded", error: str | None = None
    ) -> Rollout:
        """End a running attempt as `succeeded` or `failed`; a failure requeues the rollout
        while attempts remain. Returns the rollout as it now stands."""

    @abstractmethod
    def expire_attempts(self, now: float | None = None) -> list[Attempt]:
        """Mark running attempts past their timeout (`timeout`) or heartbeat deadline
        (`unresponsive`) and requeue or fail their rollouts. Claims and waits call this too."""

    @abstractmethod
    def cancel(self, rollout_id: str) -> Rollout:
        """Cancel a rollout that has not finished; its running attempt is cancelled too."""

    @abstractmethod
    def get_rollout(self, rollout_id: str) -> Rollout: ...

    @abstractmethod
    def get_attempts(self, rollout_id: str) -> list[Attempt]:
        """The rollout's attempts, first to last."""

    @abstractmethod
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
        """Rollouts, oldest first, filtered by status(es), mode, creation time
        (`since <= created_at < until`) and metadata values (equality per key)."""

    @abstractmethod
    def wait(self, rollout_ids: Sequence[str], timeout: float | None = None) -> list[Rollout]:
        """Block until every rollout has finished or `timeout` seconds pass; returns them in
        the order given, finished or not."""

    # spans -----------------------------------------------------------------------
    @abstractmethod
    def add_spans(self, spans: Iterable[Span | Mapping[str, Any]]) -> int:
        """Store a batch of spans in one transaction; a bad span rejects the whole batch.
        Spans without a `sequence` get the next number of their attempt. Returns the count."""

    @abstractmethod
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
        """Spans ordered by attempt, then sequence; `agent_name` selects one agent's spans."""

    # resources ---------------------------------------------------------------------
    @abstractmethod
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
        """Publish the next version of `name`. A binary artifact is stored once per sha256."""

    @abstractmethod
    def get_resource(self, name: str, version: int | None = None) -> ResourceVersion:
        """The given version of `name`, or its latest."""

    @abstractmethod
    def resource_history(self, name: str) -> list[ResourceVersion]:
        """Every version of `name`, oldest first."""

    @abstractmethod
    def list_resources(self) -> list[ResourceVersion]:
        """The latest version of every resource, by name."""

    @abstractmethod
    def get_artifact(self, artifact_hash: str) -> bytes: ...

    @abstractmethod
    def record_resources(self, rollout_id: str, versions: Mapping[str, int]) -> Rollout:
        """Note which resource versions the rollout ran with (merged with earlier notes)."""

    # lifecycle -------------------------------------------------------------------
    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def redact_url(url: str) -> str:
    """The URL with its password hidden, for messages."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def connect(url: str | None = None, *, create: bool = True, token: str | None = None) -> Store:
    """Open the store at `url`.

    `sqlite:///path.db` (the default is `./voltline.db`, or `$VOLTLINE_STORE_URL` when set),
    `postgresql://user@host:port/db`, or `http://host:port` (a `voltline store serve` server;
    `token` is its bearer token, default `$VOLTLINE_STORE_TOKEN`). With `create=True` a
    missing SQLite file is created and the schema brought up to date; with `create=False` a
    missing database is an error.
    """
    url = url or os.environ.get("VOLTLINE_STORE_URL") or DEFAULT_URL
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower() if "://" in url else ""
    if scheme in ("sqlite", "postgresql", "postgres"):
        from ._sqlstore import SqlStore

        return SqlStore(url, create=create)
    if scheme in ("http", "https"):
        from ._httpstore import HttpStore

        return HttpStore(url, token=token)
    raise InvalidInput(
        f"unsupported store URL {redact_url(url)!r}: use sqlite:///path/to/file.db, "
        "postgresql://user@host:port/database or http://host:port (a store server)"
    )
