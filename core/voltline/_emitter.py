"""The span pipeline behind every `emit_*` call: a bounded buffer and one writer thread.

The emitting thread checks and encodes each span once (`EncodedSpan`: a row of plain values,
attributes as JSON text) and appends it to a deque (no I/O, a lock held for ~100 ns). A daemon
writer drains the buffer in batches and writes each batch to its store in one transaction
(a `flush()` that finds the writer idle does that work on its own thread).
Nothing is dropped silently: overflow, invalid spans and failed writes are counted, logged,
and readable through `stats()`. Processor/exporter split as in the
OpenTelemetry SDK: this module batches; the `Store` decides where data goes.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import itemgetter
from typing import Any

from ._errors import InvalidInput
from ._models import EncodedSpan
from ._store import Store

__all__ = ["Emitter", "get_emitter"]

log = logging.getLogger("voltline.emit")

_STORE, _SPAN = itemgetter(0), itemgetter(1)  # of a buffered (store, span) entry
_COUNTERS = (
    "emitted", "written", "dropped", "invalid", "coerced", "write_errors", "capture_errors",
    "outside_rollout",
)  # fmt: skip


class Emitter:
    """Buffers spans from any thread and writes them in batches from one background thread.

    `max_buffer` bounds memory when the store is slower than the agent: past it, new spans
    are dropped and counted (never blocking the agent). `flush()` waits for durability.
    """

    def __init__(self, max_buffer: int = 100_000, batch_size: int = 2_000, interval: float = 0.2) -> None:
        self.max_buffer = max_buffer
        self.batch_size = batch_size
        self.interval = interval
        # Capture code that holds ended spans back to hand them over in batches (the LangChain
        # handler does, per agent run) registers here, so that every flush includes them.
        self._flush_hooks: list[Callable[[], None]] = []
        self._init_state()
        atexit.register(self._at_exit)
        os.register_at_fork(after_in_child=self._init_state)

    def _init_state(self) -> None:
        # Also run in a forked child: the parent's buffer is the parent's to write, and the
        # parent's writer thread does not exist here.
        self._buffer: deque[tuple[Store, EncodedSpan]] = deque()
        self._lock = threading.Lock()  # keeps counters exact across agent threads; held for ~100ns
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._processed = 0  # spans taken off the buffer and settled (written or given up on)
        self._settled = threading.Condition()
        # Held by whoever takes batches off the buffer and writes them: the writer thread, or a
        # flushing thread that found it idle.
        self._writing = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned_drop = False

    # agent side ------------------------------------------------------------------------
    def submit(self, store: Store, span: EncodedSpan | Mapping[str, Any]) -> bool:
        """Queue one span: an `EncodedSpan`, or a mapping of `Span` fields checked and encoded
        here. Never blocks on I/O, never raises: a span with bad fields is logged and counted."""
        if type(span) is not EncodedSpan:
            try:
                span = EncodedSpan.encode(span)  # type: ignore[arg-type]
            except Exception as exc:
                self.refuse(_name(span), exc)
                return False
        return self.submit_many(((store, span),)) == 1

    def submit_many(self, spans: Sequence[tuple[Store, EncodedSpan]]) -> int:
        """Queue encoded spans, each with its store, under one lock; returns how many were
        queued (the rest found the buffer full and were dropped and counted). Never blocks."""
        for _, span in spans:
            if span.coerced:
                self.count("coerced")
                log.warning("voltline: span %r had non-JSON attribute values; stored them as text",
                            span.row[6])  # fmt: skip
        buffer = self._buffer
        with self._lock:
            room = self.max_buffer - len(buffer)
            if room >= len(spans):
                buffer.extend(spans)
                queued = len(spans)
            else:
                queued = max(room, 0)
                buffer.extend(spans[:queued])
                self._counts["dropped"] += len(spans) - queued
            self._counts["emitted"] += queued
        if queued < len(spans) and not self._warned_drop:
            self._warned_drop = True
            log.warning(
                "voltline: span buffer full (%d spans); dropping new spans until the store "
                "catches up. See voltline.emitter_stats()['dropped'].",
                self.max_buffer,
            )
        if self._thread is None:
            if queued:
                self._start()
        elif len(buffer) >= self.batch_size:
            self._wake.set()
        return queued

    def refuse(self, name: Any, error: Exception) -> None:
        """Count and log a span that could not be encoded (bad fields)."""
        self.count("invalid")
        log.warning("voltline: dropped invalid span %r: %s", name, error)

    def count(self, counter: str, n: int = 1) -> None:
        with self._lock:
            self._counts[counter] += n

    def stats(self) -> dict[str, int]:
        """Counters since start: emitted, written, dropped (buffer full), invalid (rejected by
        validation), coerced (non-JSON values stored as text), write_errors, capture_errors
        (exceptions inside capture code) and outside_rollout (emits with no rollout)."""
        return {**self._counts, "buffered": len(self._buffer)}

    def add_flush_hook(self, hook: Callable[[], None]) -> None:
        """Call `hook` at the start of every `flush()` (and at exit): capture code that holds
        ended spans back, to submit them in batches, submits them there. Never raises out."""
        self._flush_hooks.append(hook)

    def _run_flush_hooks(self) -> None:
        for hook in self._flush_hooks:
            try:
                hook()
            except Exception:
                self.count("capture_errors")
                log.exception("voltline: flush hook %r failed", hook)

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until every span emitted before this call is durable in its store (or given
        up on and counted). Returns False if that did not happen within `timeout` seconds.

        When the writer thread is idle, the spans are written on the calling thread; a write
        begun before the timeout is not cut short, so a store that hangs can hold the flush
        up to that store's own limit (SQLite waits up to 60 s for a lock held elsewhere)."""
        self._run_flush_hooks()
        target = self._counts["emitted"]
        if self._processed >= target:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        # An idle writer's work is done here: waking it and waiting to be woken back costs two
        # thread switches, about as long as writing an agent run's spans (docs/benchmarks.md).
        # One try per batch; what a store refuses goes back to the writer, which retries it.
        if self._writing.acquire(blocking=False):
            try:
                self._drain(retry=False, deadline=deadline)
            finally:
                self._writing.release()
            if self._processed >= target:
                return True
        if self._thread is None:
            self._start()
        self._wake.set()
        with self._settled:
            while self._processed < target:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    log.warning(
                        "voltline: flush timed out with %d spans not yet durable", target - self._processed
                    )
                    return False
                self._settled.wait(remaining if remaining is None else min(remaining, 0.5))
        return True

    def _start(self) -> None:
        with self._settled:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="voltline-writer", daemon=True)
                self._thread.start()

    def _at_exit(self) -> None:
        if not self.flush(timeout=30):  # returns at once when everything is written
            log.error(
                "voltline: exiting with %d spans not written", self._counts["emitted"] - self._processed
            )
        if self._counts["dropped"]:
            log.warning(
                "voltline: %d spans were dropped because the buffer was full", self._counts["dropped"]
            )

    # writer side -----------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            with self._writing:
                self._drain()

    def _drain(self, *, retry: bool = True, deadline: float | None = None) -> None:
        """Write batches off the buffer until it is empty (the caller holds `_writing`).

        Without `retry` (a flushing thread writing for the idle writer), a batch a store fails
        on is put back at the front of the buffer for the writer, and draining stops; it also
        stops at `deadline` (monotonic), so a flush keeps its timeout."""
        buffer = self._buffer
        while buffer:
            with self._lock:  # submit_many appends under it: the whole buffer is taken at once
                if len(buffer) <= self.batch_size:
                    batch = list(buffer)
                    buffer.clear()
                else:
                    batch = [buffer.popleft() for _ in range(self.batch_size)]
            try:
                unwritten = self._write(batch, retry)
            except Exception:  # the writer must survive anything
                log.exception("voltline: span writer failed on a batch of %d", len(batch))
                self.count("write_errors", len(batch))
                unwritten = []
            if unwritten:
                with self._lock:  # beside submit_many's appends at the other end
                    buffer.extendleft(reversed(unwritten))
            with self._settled:
                self._processed += len(batch) - len(unwritten)
                self._settled.notify_all()
            if unwritten or (deadline is not None and time.monotonic() >= deadline):
                return

    def _write(
        self, batch: list[tuple[Store, EncodedSpan]], retry: bool = True
    ) -> list[tuple[Store, EncodedSpan]]:
        """Write a batch, grouped by store; returns what is left to write (without `retry`, the
        spans of a store that failed)."""
        stores = list(map(_STORE, batch))  # never empty: _drain takes at least one span
        ids = list(map(id, stores))
        groups: Iterable[tuple[Store, list[EncodedSpan]]]
        if ids.count(ids[0]) == len(ids):  # the usual case, one store: no Python loop over spans
            groups = ((stores[0], list(map(_SPAN, batch))),)
        else:
            by_store: dict[int, tuple[Store, list[EncodedSpan]]] = {}
            for store, span in batch:
                entry = by_store.get(id(store))
                if entry is None:
                    entry = by_store[id(store)] = (store, [])
                entry[1].append(span)
            groups = by_store.values()
        written: list[EncodedSpan] = []
        unwritten: list[tuple[Store, EncodedSpan]] = []
        for store, spans in groups:
            done = self._write_to(store, spans, retry)
            if done is None:
                unwritten.extend((store, span) for span in spans)
            else:
                written.extend(done)
        if written:
            self._export(written)
        return unwritten

    def _export(self, spans: list[EncodedSpan]) -> None:
        # Exporters observe spans only once they are durable, so they can never cost training data.
        from ._plugins import exporters

        found = exporters()
        if not found:
            return
        decoded = [span.to_span() for span in spans]
        for exporter in found:
            try:
                exporter.export(decoded)
            except Exception:
                log.exception("voltline: exporter %r failed; the spans are safe in the store", exporter)

    def _write_to(
        self, store: Store, spans: list[EncodedSpan], retry: bool = True
    ) -> list[EncodedSpan] | None:
        """Write `spans` to `store`, retrying while it is down; returns the spans written.
        Without `retry`, one try: None when the store failed, the spans still to be written."""
        delay, failures = 0.1, 0
        while True:
            try:
                store.add_spans(spans)
                self.count("written", len(spans))
                return spans
            except InvalidInput:
                return self._write_one_by_one(store, spans)
            except Exception as exc:
                if not retry:
                    log.warning("voltline: store write failed (%s); the writer thread retries it", exc)
                    return None
                failures += 1
                if failures == 8:  # about 25 s of retries for a store that is briefly down
                    self.count("write_errors", len(spans))
                    log.error("voltline: gave up writing %d spans to %s: %s", len(spans), store.url, exc)
                    return []
                log.warning("voltline: store write failed (%s); retrying in %.1fs", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _write_one_by_one(self, store: Store, spans: list[EncodedSpan]) -> list[EncodedSpan]:
        # A batch is rejected whole (a span id already stored, say); the good spans still land.
        written = []
        for span in spans:
            try:
                store.add_spans([span])
                self.count("written")
                written.append(span)
            except InvalidInput as exc:
                self.count("invalid")
                log.warning("voltline: dropped span %r the store refused: %s", span.row[6], exc)
            except Exception as exc:
                self.count("write_errors")
                log.error("voltline: could not write span %r: %s", span.row[6], exc)
        return written


def _name(fields: Any) -> Any:
    try:
        return fields.get("name")
    except Exception:
        return None


_emitter: Emitter | None = None
_emitter_lock = threading.Lock()


def get_emitter() -> Emitter:
    """The process-wide emitter every `emit_*` call and plugin writes through."""
    global _emitter
    if _emitter is None:
        with _emitter_lock:
            if _emitter is None:
                _emitter = Emitter()
    return _emitter
