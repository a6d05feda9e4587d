"""The LlamaIndex span and event handlers, and their registration on a dispatcher.

The dispatcher swallows whatever a handler raises, silently. Voltline wants capture
failures seen, so every entry point here catches, counts (`capture_errors`) and logs the
first failure of each kind itself; nothing ever reaches the agent.
"""

from __future__ import annotations

import inspect
import logging
import sys
import threading
from typing import Any

from llama_index.core.instrumentation import Dispatcher, get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.span import SimpleSpan
from llama_index.core.instrumentation.span_handlers import BaseSpanHandler
from pydantic import PrivateAttr

from ._tracker import Tracker

__all__ = ["Registration", "VoltlineEventHandler", "VoltlineSpanHandler", "register"]

log = logging.getLogger("voltline.llamaindex")


class _Guard:
    """Count every capture failure; log the first of each (place, exception type)."""

    def __init__(self, emitter: Any) -> None:
        self.emitter = emitter
        self._seen: set[tuple[str, type]] = set()
        self._lock = threading.Lock()

    def failed(self, where: str) -> None:
        try:
            count = getattr(self.emitter, "count", None)
            if callable(count):
                count("capture_errors")
            exc_type = sys.exc_info()[0] or Exception
            with self._lock:
                first = (where, exc_type) not in self._seen
                self._seen.add((where, exc_type))
            if first:
                log.exception(
                    "voltline: LlamaIndex capture failed in %s; the agent goes on "
                    "(further %s errors here are only counted)",
                    where,
                    exc_type.__name__,
                )
        except Exception:  # never let reporting a failure become one
            pass


class VoltlineSpanHandler(BaseSpanHandler[SimpleSpan]):
    """Receives every dispatcher span enter/exit/drop and hands it to the tracker.

    It keeps no `open_spans` of its own (the tracker does), so the base class's bookkeeping
    is bypassed by overriding the three dispatcher entry points directly.
    """

    _tracker: Tracker = PrivateAttr()
    _guard: _Guard = PrivateAttr()

    def __init__(self, tracker: Tracker, guard: _Guard) -> None:
        super().__init__()
        self._tracker = tracker
        self._guard = guard

    @classmethod
    def class_name(cls) -> str:
        return "VoltlineSpanHandler"

    def span_enter(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any = None,
        parent_id: str | None = None,
        tags: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            self._tracker.enter(id_, bound_args, instance, parent_id)
        except Exception:
            self._guard.failed("span_enter")

    def span_exit(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any = None,
        result: Any = None,
        **kwargs: Any,
    ) -> None:
        try:
            self._tracker.exit(id_, instance, result)
        except Exception:
            self._guard.failed("span_exit")

    def span_drop(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any = None,
        err: BaseException | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            self._tracker.drop(id_, err)
        except Exception:
            self._guard.failed("span_drop")

    # The abstract hooks of BaseSpanHandler; unused because the entry points above are overridden.
    def new_span(self, *args: Any, **kwargs: Any) -> SimpleSpan | None:
        return None

    def prepare_to_exit_span(self, *args: Any, **kwargs: Any) -> SimpleSpan | None:
        return None

    def prepare_to_drop_span(self, *args: Any, **kwargs: Any) -> SimpleSpan | None:
        return None


class VoltlineEventHandler(BaseEventHandler):
    """Receives dispatcher events; the LLM ones open and close `llm` spans."""

    _tracker: Tracker = PrivateAttr()
    _guard: _Guard = PrivateAttr()

    def __init__(self, tracker: Tracker, guard: _Guard) -> None:
        super().__init__()
        self._tracker = tracker
        self._guard = guard

    @classmethod
    def class_name(cls) -> str:
        return "VoltlineEventHandler"

    def handle(self, event: Any, **kwargs: Any) -> None:
        try:
            self._tracker.event(event)
        except Exception:
            self._guard.failed("event")


def _remove_by_identity(items: list[Any], item: Any) -> None:
    # Not list.remove: pydantic handlers compare equal by field values, so another
    # library's handler of an equal-looking class could be removed instead of ours.
    for i, candidate in enumerate(items):
        if candidate is item:
            del items[i]
            return


class Registration:
    """Voltline's two handlers on one dispatcher; `remove()` takes exactly those off again.

    Also a context manager: `with voltline_llamaindex.register(): ...` captures inside only.
    """

    def __init__(self, dispatcher: Dispatcher, emitter: Any) -> None:
        self.dispatcher = dispatcher
        guard = _Guard(emitter)
        self.tracker = Tracker(guard.failed)
        self.span_handler = VoltlineSpanHandler(self.tracker, guard)
        self.event_handler = VoltlineEventHandler(self.tracker, guard)
        # The dispatcher's own add_* methods extend its lists in place, like any other handler.
        dispatcher.add_span_handler(self.span_handler)
        dispatcher.add_event_handler(self.event_handler)
        self.active = True

    def remove(self) -> None:
        """Take both handlers off the dispatcher (the lists are edited in place). Idempotent."""
        if not self.active:
            return
        self.active = False
        _remove_by_identity(self.dispatcher.span_handlers, self.span_handler)
        _remove_by_identity(self.dispatcher.event_handlers, self.event_handler)
        self.tracker.close()

    def __enter__(self) -> Registration:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def register(dispatcher: Dispatcher | None = None, *, emitter: Any = None) -> Registration:
    """Register Voltline's span and event handlers on `dispatcher` (default: the root one,
    which sees every LlamaIndex module) and return the registration; `.remove()` undoes it.

    The explicit alternative to `voltline.instrument()`; use one or the other, not both, or
    every span is recorded twice.
    """
    if emitter is None:
        from voltline._emitter import get_emitter

        emitter = get_emitter()
    return Registration(dispatcher if dispatcher is not None else get_dispatcher(), emitter)
