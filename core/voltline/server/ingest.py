"""Span batch ingest that tolerates re-sends.

A client re-sends a batch when it never saw the answer to the first send, which may well
have been committed; the re-send must then succeed, not fail as a duplicate. The store
itself stays strict (a duplicate span id is an error): the leniency lives here, applies
only to batches marked as re-sent, and only when every span of the batch is already stored
with identical content, so a real id clash still fails.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from .._errors import InvalidInput
from .._models import Span
from .._store import Store

__all__ = ["add_spans_idempotent"]

_locks: weakref.WeakKeyDictionary[Store, threading.Lock] = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


def _writer_lock(store: Store) -> contextlib.AbstractContextManager[Any]:
    """One span writer at a time on a SQLite store.

    SQLite has one write lock; concurrent writers that miss it sleep in SQLite's busy handler
    (1, 2, 5, ... up to 100 ms) and wake late. Queuing them on a Python lock instead hands
    the lock over at once: with 32 concurrent clients this is most of the throughput.
    PostgreSQL writers run in parallel.
    """
    if getattr(store, "dialect", None) != "sqlite":
        return contextlib.nullcontext()
    with _locks_guard:
        return _locks.setdefault(store, threading.Lock())


def add_spans_idempotent(store: Store, spans: list[Any], retry: bool) -> int:
    """Store a batch; on a re-send, a batch already stored exactly counts as stored."""
    try:
        with _writer_lock(store):
            return store.add_spans(spans)
    except InvalidInput:
        if not retry or not _already_stored(store, spans):
            raise
        return len(spans)


def _already_stored(store: Store, spans: Sequence[Any]) -> bool:
    try:
        sent = [s if isinstance(s, Span) else Span.model_validate(dict(s)) for s in spans]
    except Exception:
        return False
    stored: dict[str, Span] = {}
    for attempt_id in {s.attempt_id for s in sent}:
        stored.update((s.span_id, s) for s in store.query_spans(attempt_id=attempt_id))
    return all(_same_span(s, stored.get(s.span_id)) for s in sent)


def _same_span(sent: Span, stored: Span | None) -> bool:
    if stored is None:
        return False
    if sent.sequence is not None and sent.sequence != stored.sequence:
        return False
    exclude = {"sequence"}
    a: Mapping[str, Any] = sent.model_dump(exclude=exclude)
    b: Mapping[str, Any] = stored.model_dump(exclude=exclude)
    return a == b
