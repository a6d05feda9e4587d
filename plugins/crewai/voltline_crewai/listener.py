"""The explicit form: a CrewAI event listener that records crews as Voltline spans.

    from voltline_crewai import VoltlineListener

    listener = VoltlineListener()          # registers on CrewAI's event bus, like any listener
    with voltline.rollout(task):
        crew.kickoff()
        listener.flush()                   # CrewAI handles its last events after kickoff returns
    listener.close()                       # unregisters it

``voltline.instrument()`` installs the same listener for you.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import pkgutil
import sys
from typing import Any

import crewai.events.types as _types_package
from crewai.events import BaseEventListener
from crewai.events.base_events import BaseEvent
from crewai.events.event_bus import CrewAIEventsBus, crewai_event_bus

import voltline
from voltline._emitter import get_emitter

from ._attributes import end_spec, start_spec
from ._tracker import Record, SpanTracker

__all__ = ["VoltlineListener"]

log = logging.getLogger("voltline.crewai")

try:  # the scope tables CrewAI itself pairs events with
    from crewai.events.event_context import SCOPE_ENDING_EVENTS, SCOPE_STARTING_EVENTS
except ImportError:  # older 1.x: the pairs that matter for agents
    SCOPE_STARTING_EVENTS = frozenset(
        {
            "crew_kickoff_started",
            "task_started",
            "agent_execution_started",
            "lite_agent_execution_started",
            "flow_started",
            "method_execution_started",
            "llm_call_started",
            "tool_usage_started",
        }
    )
    SCOPE_ENDING_EVENTS = frozenset(
        {
            "crew_kickoff_completed",
            "crew_kickoff_failed",
            "task_completed",
            "task_failed",
            "agent_execution_completed",
            "agent_execution_error",
            "lite_agent_execution_completed",
            "lite_agent_execution_error",
            "flow_finished",
            "flow_failed",
            "method_execution_finished",
            "method_execution_failed",
            "llm_call_completed",
            "llm_call_failed",
            "tool_usage_finished",
            "tool_usage_error",
        }
    )

CHUNK_EVENT = "llm_stream_chunk"


def _all_event_classes() -> list[type[BaseEvent]]:
    # `crewai.events.event_types` re-exports most event classes, not all (e.g. not
    # LiteAgentExecutionStartedEvent): import every module of the types package, then walk
    # BaseEvent's subclasses.
    for info in pkgutil.iter_modules(_types_package.__path__, _types_package.__name__ + "."):
        try:
            importlib.import_module(info.name)
        except Exception:  # an optional integration's events (a2a, ...) may need extras
            log.debug("voltline-crewai: skipped %s", info.name, exc_info=True)
    found: list[type[BaseEvent]] = []
    stack = list(BaseEvent.__subclasses__())
    while stack:
        cls = stack.pop()
        if cls not in found:
            found.append(cls)
            stack.extend(cls.__subclasses__())
    return found


def _event_classes() -> dict[type[BaseEvent], str]:
    """Every CrewAI event class that opens or closes a scope, or streams LLM chunks -> its type."""
    found: dict[type[BaseEvent], str] = {}
    for cls in _all_event_classes():
        type_field = getattr(cls, "model_fields", {}).get("type")
        etype = getattr(type_field, "default", None)
        if etype in SCOPE_STARTING_EVENTS or etype in SCOPE_ENDING_EVENTS or etype == CHUNK_EVENT:
            found[cls] = etype
    return found


class VoltlineListener(BaseEventListener):
    """Records CrewAI crews, tasks, agents, LLM calls and tool calls as nested Voltline spans.

    Spans join the rollout the crew was kicked off in (``with voltline.rollout(...)``), under
    the span current there. Capture never raises into the crew: failures are logged once
    and counted in ``voltline.emitter_stats()["capture_errors"]``.
    """

    def __init__(self, emitter: Any = None) -> None:
        self._emitter = emitter if emitter is not None else get_emitter()
        self._reported: set[tuple[str, type]] = set()
        self.tracker = SpanTracker(self._failed)
        self._registered: list[type[BaseEvent]] = []
        self._starts: set[str] = set()
        self._ends: set[str] = set()
        super().__init__()  # calls setup_listeners on the global bus

    def setup_listeners(self, crewai_event_bus: CrewAIEventsBus) -> None:
        for cls, etype in _event_classes().items():
            crewai_event_bus.register_handler(cls, self._on_event)
            self._registered.append(cls)
            if etype in SCOPE_STARTING_EVENTS:
                self._starts.add(etype)
            elif etype in SCOPE_ENDING_EVENTS:
                self._ends.add(etype)

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until CrewAI has handed every event emitted so far to this listener.

        Call it before leaving ``voltline.rollout(...)``: CrewAI handles its last event
        (the crew's completion) on a thread pool, after ``kickoff`` has returned.
        ``voltline.instrument()`` does this for you inside ``Crew.kickoff``.
        """
        return crewai_event_bus.flush(timeout=timeout)

    def close(self) -> None:
        """Unregister from CrewAI's event bus (spans still open are not recorded). Idempotent."""
        for cls in self._registered:
            crewai_event_bus.off(cls, self._on_event)
        self._registered = []

    # CrewAI calls this from its handler threads (stream chunks: inline, in the LLM's thread).
    def _on_event(self, source: Any, event: Any) -> None:
        try:
            record = self._record(source, event)
            if record is not None:
                self.tracker.feed(record)
        except Exception:
            self._failed(f"handling {type(event).__name__}")

    def _record(self, source: Any, event: Any) -> Record | None:
        etype = event.type
        common = {
            "sequence": event.emission_sequence or 0,
            "tiebreak": self.tracker.next_tiebreak(),
            "event_id": event.event_id,
            "timestamp": event.timestamp.timestamp(),
            "etype": etype,
        }
        if etype == CHUNK_EVENT:
            return Record(
                kind="chunk", parent_id=None, payload=event.chunk, extra={"call_id": event.call_id}, **common
            )
        if etype in self._starts:
            extra = {"agent_key": event.agent_id, "tool_name": getattr(event, "tool_name", None)}
            return Record(
                kind="start",
                parent_id=event.parent_event_id,
                payload=start_spec(event, source, self._failed),
                rollout=voltline.current_rollout(),
                current=voltline.current_span(),
                extra=extra,
                **common,
            )
        if etype in self._ends:
            extra = {
                "agent_key": event.agent_id,
                "call_id": getattr(event, "call_id", None),
                "response": getattr(event, "response", None),
            }
            return Record(
                kind="end",
                parent_id=event.started_event_id,
                payload=end_spec(event, self._failed),
                extra=extra,
                **common,
            )
        return None

    def _failed(self, where: str) -> None:
        """Count a capture failure; log the first of each kind with its traceback."""
        with contextlib.suppress(Exception):  # a broken emitter must not break the crew either
            self._emitter.count("capture_errors")
        exc_type = sys.exc_info()[0] or Exception
        if (where, exc_type) in self._reported:
            log.debug("voltline-crewai: %s failed again", where, exc_info=True)
            return
        self._reported.add((where, exc_type))
        log.exception(
            "voltline-crewai: %s failed; the crew goes on (further %s errors here are only "
            "counted in voltline.emitter_stats()['capture_errors'])",
            where,
            exc_type.__name__,
        )
