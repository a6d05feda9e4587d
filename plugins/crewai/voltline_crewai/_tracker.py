"""Turns CrewAI's event stream into nested spans, whatever order handlers run in.

CrewAI runs sync handlers on a thread pool, so a child's start, a span's end, or a tool's
start can be handled before the event it depends on. CrewAI links events for us:
``parent_event_id`` (the enclosing scope), ``started_event_id`` (on an end, its start) and
``emission_sequence`` (emission order). So every event becomes a small record, made on
the handler thread; records are processed in sequence order, and a record whose parent
scope or start has not been processed yet waits for it. Start and end times come from
the events' own timestamps, so the tree is the same however the threads interleave.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import OrderedDict, defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

import voltline

from ._attributes import AGENT_SCOPES, FLOW_SCOPES, tool_calls_of

__all__ = ["Record", "SpanTracker"]

log = logging.getLogger("voltline.crewai")

# How many finished scopes to remember for late children (see `_scopes`): far more than
# any crew has in flight, small enough to bound memory in a long-lived process.
MAX_SCOPES = 50_000
MAX_WAITING = 10_000


@dataclass
class Record:
    """One event, reduced on the handler thread to what the tracker needs."""

    sequence: int
    tiebreak: int
    kind: str  # "start", "end", "chunk"
    event_id: str
    parent_id: str | None  # start: enclosing scope's event id; end: its start's event id
    timestamp: float
    etype: str
    payload: Any  # StartSpec / EndSpec / chunk text
    rollout: voltline.RolloutContext | None = None
    current: voltline.SpanHandle | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __lt__(self, other: Record) -> bool:
        return (self.sequence, self.tiebreak) < (other.sequence, other.tiebreak)


@dataclass
class _Scope:
    handle: voltline.SpanHandle | None  # the span children attach to (None: the rollout root)
    own: bool  # False for pass-through scopes, whose `handle` is their parent's
    in_agent: bool
    rollout: voltline.RolloutContext | None
    etype: str = ""
    ended: bool = False


class SpanTracker:
    """Holds open spans keyed by CrewAI event ids. Thread-safe; `feed` never raises."""

    def __init__(self, on_error: Any) -> None:
        self._on_error = on_error  # called with a `where` string from inside an except block
        self._lock = threading.Lock()
        self._tiebreak = itertools.count()
        self._scopes: OrderedDict[str, _Scope] = OrderedDict()
        self._waiting_children: dict[str, list[Record]] = defaultdict(list)
        self._waiting_end: dict[str, Record] = {}
        self._chunks: dict[str, list[str]] = defaultdict(list)
        self._tool_call_ids: dict[tuple[str, str], deque[str]] = defaultdict(deque)
        # scope event id -> the LLM call open under it; a tool started there waits for its end
        self._open_llm: dict[str, str] = {}
        self._waiting_llm_end: dict[str, list[Record]] = defaultdict(list)

    def next_tiebreak(self) -> int:
        return next(self._tiebreak)

    def feed(self, record: Record) -> None:
        """Process a record now, or park it until the record it depends on has been processed.

        Parked records are released in sequence order when their dependency arrives."""
        with self._lock:
            try:
                self._process(record)
            except Exception:
                self._on_error(f"processing {record.etype}")

    def open_spans(self) -> int:
        """Spans started and not yet ended (for tests and diagnostics)."""
        with self._lock:
            return sum(1 for s in self._scopes.values() if s.own and not s.ended)

    # processing, under the lock ---------------------------------------------------------
    def _process(self, r: Record) -> None:
        if r.kind == "chunk":
            self._chunks[r.extra["call_id"]].append(r.payload)
        elif r.kind == "start":
            self._start(r)
        else:
            self._end(r)

    def _wait(self, table: Any, key: str, r: Record) -> None:
        # A dependency emitted before instrument() never arrives; bound what waits for it.
        if len(self._waiting_end) + len(self._waiting_children) >= MAX_WAITING:
            log.debug("voltline-crewai: dropping %s waiting for %s", r.etype, key)
            return
        if table is self._waiting_end:
            table[key] = r
        else:
            table[key].append(r)

    def _start(self, r: Record) -> None:
        if r.parent_id is None:
            parent = _Scope(r.current, False, False, r.rollout)
        else:
            parent = self._scopes.get(r.parent_id)
            if parent is None:
                self._wait(self._waiting_children, r.parent_id, r)
                return
        spec = r.payload
        if spec.kind == "tool" and r.parent_id is not None and (llm := self._open_llm.get(r.parent_id)):
            # The completion that asked for this tool names its call id; CrewAI's threads
            # delivered the tool first. Start it once that completion has been processed.
            self._waiting_llm_end[llm].append(r)
            return
        in_agent = parent.in_agent or r.etype in AGENT_SCOPES
        if r.etype in FLOW_SCOPES and parent.in_agent:
            scope = _Scope(parent.handle, False, True, parent.rollout, r.etype)
        else:
            handle = voltline.start_span(
                spec.name,
                spec.kind,
                parent=parent.handle,
                start_time=r.timestamp,
                agent_name=spec.agent_name
                if spec.kind == "agent" or parent.handle is None or parent.handle.agent_name is None
                else None,
                attributes=spec.attributes,
            )
            # Pin the rollout of the kickoff: this thread may be running another crew's context.
            handle.rollout = parent.handle.rollout if parent.handle is not None else parent.rollout
            if spec.kind == "tool":
                self._attach_call_id(handle, r)
            elif spec.kind == "llm" and r.parent_id is not None:
                self._open_llm[r.parent_id] = r.event_id
            scope = _Scope(handle, True, in_agent, handle.rollout, r.etype)
        self._remember(r.event_id, scope)
        for child in sorted(self._waiting_children.pop(r.event_id, ())):
            self._start(child)
        if (end := self._waiting_end.pop(r.event_id, None)) is not None:
            self._end(end)

    def _remember(self, event_id: str, scope: _Scope) -> None:
        self._scopes[event_id] = scope
        # Ended scopes stay for children handled late; only the oldest are forgotten.
        while len(self._scopes) > MAX_SCOPES:
            self._scopes.popitem(last=False)

    def _end(self, r: Record) -> None:
        if r.parent_id is None:  # an end CrewAI could not pair (it warns about it itself)
            return
        scope = self._scopes.get(r.parent_id)
        if scope is None:
            self._wait(self._waiting_end, r.parent_id, r)
            return
        if scope.ended:
            return
        scope.ended = True
        if not scope.own or scope.handle is None:
            return
        try:
            self._close(scope.handle, r)
        finally:
            self._release_tools(r.parent_id)

    def _release_tools(self, llm_event_id: str) -> None:
        for parent, llm in list(self._open_llm.items()):
            if llm == llm_event_id:
                del self._open_llm[parent]
        for tool_start in sorted(self._waiting_llm_end.pop(llm_event_id, ())):
            self._start(tool_start)

    def _close(self, handle: voltline.SpanHandle, r: Record) -> None:
        spec = r.payload
        call_id = r.extra.get("call_id")
        chunks = self._chunks.pop(call_id, None) if call_id else None
        if chunks:
            spec.attributes["crewai.llm.stream_chunks"] = len(chunks)
            output = spec.attributes.get("gen_ai.output.messages") or [{}]
            if not output[0].get("content") and not output[0].get("tool_calls"):
                # A streamed completion reported only through its chunks.
                spec.attributes["gen_ai.output.messages"] = [
                    {"role": "assistant", "content": "".join(chunks)}
                ]
        if r.etype == "llm_call_completed":
            try:
                self._remember_tool_calls(r)
            except Exception:  # the span still ends; only its tools go without call ids
                self._on_error("reading the tool calls of llm_call_completed")
        handle.end(
            status="error" if spec.error else "ok",
            error=spec.error,
            attributes=spec.attributes,
            end_time=r.timestamp,
        )

    # tool-call ids: the completion that asked for a tool names the call; the tool event does not
    def _remember_tool_calls(self, r: Record) -> None:
        for name, call_id in tool_calls_of(r.extra.get("response")):
            self._tool_call_ids[(r.extra.get("agent_key") or "", name)].append(call_id)

    def _attach_call_id(self, handle: voltline.SpanHandle, r: Record) -> None:
        queue = self._tool_call_ids.get((r.extra.get("agent_key") or "", r.extra.get("tool_name") or ""))
        if queue:
            handle.set("gen_ai.tool.call.id", queue.popleft())
