"""Carry the sender's span across `SingleThreadedAgentRuntime` message dispatch.

The runtime handles each message in a task created by its own loop task, so handlers see
the context of whoever called `runtime.start()`. A team's embedded runtime is started inside
the team's `run_stream` (inside the rollout), but a runtime the user started beforehand is
not: its handlers would see no rollout. So the sending side notes its current span under the
message id, and the processing side makes that span current while the message is handled.
Spans started there reach the rollout through their parent handle.
"""

from __future__ import annotations

import functools
import uuid
import weakref
from typing import Any

import voltline

from ._guard import capture_failed

__all__ = ["wrap_runtime_method"]

# message id -> the sender's span. Weak: a message that is never processed (unknown
# recipient, runtime stopped) must not keep spans alive.
_carried: weakref.WeakValueDictionary[str, voltline.SpanHandle] = weakref.WeakValueDictionary()


def _note(kwargs: dict[str, Any]) -> None:
    try:
        span = voltline.current_span()
        if span is None or span.rollout is None:
            return
        if kwargs.get("message_id") is None:
            kwargs["message_id"] = str(uuid.uuid4())  # what the runtime would generate itself
        _carried[kwargs["message_id"]] = span
    except Exception:
        capture_failed("runtime send")


def _take(envelope: Any) -> voltline.SpanHandle | None:
    try:
        message_id = getattr(envelope, "message_id", None)
        return _carried.pop(message_id, None) if isinstance(message_id, str) else None
    except Exception:
        capture_failed("runtime dispatch")
        return None


def wrap_runtime_method(name: str, original: Any) -> Any:
    if name in ("send_message", "publish_message"):

        @functools.wraps(original)
        async def send(self: Any, *args: Any, **kwargs: Any) -> Any:
            _note(kwargs)  # message_id is keyword-only: adding it never shifts the caller's arguments
            return await original(self, *args, **kwargs)

        return send

    @functools.wraps(original)
    async def process(self: Any, *args: Any, **kwargs: Any) -> Any:
        span = _take(args[0] if args else next(iter(kwargs.values()), None))
        if span is None:
            return await original(self, *args, **kwargs)
        with voltline.use_span(span):
            return await original(self, *args, **kwargs)

    return process
