"""Make ``Crew.kickoff`` (and ``Agent.kickoff``) return once Voltline has seen their last events.

CrewAI emits ``CrewKickoffCompletedEvent`` right before ``kickoff`` returns, and handles it
on its thread pool, so without this the crew's own span could still be in flight when
``with voltline.rollout(...)`` closes and flushes. The wrapper waits for CrewAI's pending
handlers (``crewai_event_bus.flush``, which CrewAI itself calls inside kickoff) and changes
nothing else: same arguments, same return value, same exception.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from crewai import Agent, Crew
from crewai.events.event_bus import crewai_event_bus

__all__ = ["KickoffFlush"]

log = logging.getLogger("voltline.crewai")
FLUSH_TIMEOUT = 10.0  # handlers are sub-millisecond; this only bounds a wedged foreign handler


def _flush() -> None:
    try:
        crewai_event_bus.flush(timeout=FLUSH_TIMEOUT)
    except Exception:  # never let the wait break the crew's own result
        log.debug("voltline-crewai: event bus flush failed", exc_info=True)


def _wrap_sync(original: Any) -> Any:
    @functools.wraps(original)
    def kickoff(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return original(self, *args, **kwargs)
        finally:
            _flush()

    kickoff.__voltline_original__ = original  # type: ignore[attr-defined]
    return kickoff


def _wrap_async(original: Any) -> Any:
    @functools.wraps(original)
    async def akickoff(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await original(self, *args, **kwargs)
        finally:
            await asyncio.to_thread(_flush)

    akickoff.__voltline_original__ = original  # type: ignore[attr-defined]
    return akickoff


class KickoffFlush:
    """Wraps the kickoff methods below; ``remove()`` puts the originals back."""

    # Crew.kickoff_async / Agent.akickoff go through these (CrewAI runs them in a thread
    # or awaits them), so wrapping them too would only wait twice.
    TARGETS = (
        (Crew, "kickoff", _wrap_sync),
        (Crew, "akickoff", _wrap_async),
        (Agent, "kickoff", _wrap_sync),
        (Agent, "kickoff_async", _wrap_async),
    )

    def __init__(self) -> None:
        self._saved: list[tuple[type, str, Any]] = []

    def apply(self) -> None:
        for cls, name, wrap in self.TARGETS:
            original = cls.__dict__.get(name)
            if original is None or hasattr(original, "__voltline_original__"):
                continue  # not in this CrewAI version, or already wrapped
            self._saved.append((cls, name, original))
            setattr(cls, name, wrap(original))

    def remove(self) -> None:
        for cls, name, original in reversed(self._saved):
            setattr(cls, name, original)
        self._saved.clear()
