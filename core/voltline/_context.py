"""The emit API: `rollout()`, `span()`, `emit_*`, carried through `contextvars`.

Everything here runs on the agent's path, so nothing here raises into the agent once a
rollout is open: failures are logged and counted (`voltline.emitter_stats()`).
"""

from __future__ import annotations

import contextvars
import functools
import itertools
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from . import _emitter
from ._emitter import get_emitter
from ._ids import new_span_id
from ._models import EncodedSpan
from ._store import Store, connect

__all__ = [
    "CURRENT",
    "RolloutContext",
    "SpanHandle",
    "bind_context",
    "current_rollout",
    "current_span",
    "emit_exception",
    "emit_llm",
    "emit_message",
    "emit_reward",
    "emit_tool",
    "emitter_stats",
    "flush",
    "rollout",
    "span",
    "start_span",
    "use_span",
]

log = logging.getLogger("voltline.emit")
P = ParamSpec("P")
T = TypeVar("T")


@dataclass
class RolloutContext:
    """The rollout and attempt that spans emitted here belong to."""

    store: Store
    rollout_id: str
    attempt_id: str
    resources: dict[str, int] = field(default_factory=dict)
    _sequence: Iterator[int] = field(default_factory=itertools.count, repr=False)


@dataclass(slots=True, weakref_slot=True)  # one per captured run: smaller, quicker to build
class SpanHandle:
    """An open span: from `voltline.span(...)`, or `start_span(...)` in capture code.

    It remembers the rollout it started in, so `end()` files it there even when called
    from another thread or callback. Spans started under it inherit its agent name.
    """

    span_id: str
    name: str
    kind: str
    attributes: dict[str, Any]
    parent_id: str | None = None
    agent_name: str | None = None
    start_time: float = field(default_factory=time.time)
    rollout: RolloutContext | None = field(default=None, repr=False)
    ended: bool = False

    def set(self, key: str, value: Any) -> None:
        self.attributes[key] = value

    def end(
        self,
        *,
        status: str = "ok",
        error: BaseException | str | None = None,
        attributes: Mapping[str, Any] | None = None,
        end_time: float | None = None,
    ) -> None:
        """Record the span (once; later calls do nothing). Never raises."""
        end_spans(((self, error, attributes, status, end_time),))


class _Current:
    """Marker: "the span current in this context" (the default parent)."""


CURRENT: Any = _Current()

_rollout: contextvars.ContextVar[RolloutContext | None] = contextvars.ContextVar(
    "voltline_rollout", default=None
)
_current: contextvars.ContextVar[SpanHandle | None] = contextvars.ContextVar("voltline_span", default=None)
_stores: dict[str, Store] = {}
_stores_lock = threading.Lock()
_warned_outside = False


def current_rollout() -> RolloutContext | None:
    """The rollout spans emitted here would join, or None outside any rollout."""
    return _rollout.get()


def _store_for(store: Store | str | None) -> Store:
    """The Store for a Store, a URL, or None (the default URL); one per URL per process, so a
    loop of rollouts does not open a connection pool (or an HTTP client and spool) each time."""
    if isinstance(store, Store):
        return store
    key = store or ""
    with _stores_lock:
        if key not in _stores:
            _stores[key] = connect(store)
        return _stores[key]


@contextmanager
def rollout(
    task: Any = None,
    *,
    store: Store | str | None = None,
    rollout_id: str | None = None,
    attempt_id: str | None = None,
    worker_id: str | None = None,
    resources: Mapping[str, int] | None = None,
    **options: Any,
) -> Iterator[RolloutContext]:
    """Run a block as one rollout; spans emitted inside (any thread or task) attach to it.

    Without ids this creates a rollout for `task` and its first attempt, and on leaving marks
    the attempt succeeded (or failed, if the block raised). With `rollout_id` and
    `attempt_id` it joins an attempt a Runner claimed and leaves finishing to the Runner.
    `options` are `Store.enqueue`'s (mode, timeout, heartbeat_timeout, max_attempts,
    metadata). `store` is a Store or a URL; the default is `voltline.connect()`. Spans are
    flushed to the store on leaving.
    """
    target = _store_for(store)
    owned = attempt_id is None
    if owned:
        if rollout_id is not None:
            raise ValueError("to join a rollout pass both rollout_id and attempt_id")
        claim = target.start_rollout(task, worker_id=worker_id or f"pid-{os.getpid()}", **options)
        rollout_id, attempt_id = claim.rollout.rollout_id, claim.attempt.attempt_id
    elif rollout_id is None:
        raise ValueError("attempt_id given without rollout_id")
    if resources:
        target.record_resources(rollout_id, dict(resources))
    ctx = RolloutContext(target, rollout_id, attempt_id, dict(resources or {}))
    rollout_token = _rollout.set(ctx)
    parent_token = _current.set(None)
    error: BaseException | None = None
    try:
        yield ctx
    except BaseException as exc:
        error = exc
        emit_exception(exc)
        raise
    finally:
        _current.reset(parent_token)
        _rollout.reset(rollout_token)
        get_emitter().flush()
        if owned:
            _finish(ctx, error)


def _finish(ctx: RolloutContext, error: BaseException | None) -> None:
    try:
        if error is None:
            ctx.store.finish_attempt(ctx.attempt_id, "succeeded")
        else:
            ctx.store.finish_attempt(ctx.attempt_id, "failed", f"{type(error).__name__}: {error}")
    except Exception as exc:
        get_emitter().count("capture_errors")
        log.error("voltline: could not finish attempt %s: %s", ctx.attempt_id, exc)


def _submit(
    ctx: RolloutContext | None,
    kind: str,
    name: str,
    attributes: dict[str, Any],
    start_time: float | None = None,
    end_time: float | None = None,
    status: str = "ok",
    span_id: str | None = None,
    parent_id: str | None = None,
    agent_name: str | None = None,
) -> str | None:
    emitter = _emitter._emitter or get_emitter()
    if ctx is None:
        global _warned_outside
        emitter.count("outside_rollout")
        if not _warned_outside:
            _warned_outside = True
            log.warning(
                "voltline: %s span %r emitted outside any rollout was not recorded; wrap the agent "
                "run in `with voltline.rollout(task):` (counted in emitter_stats()['outside_rollout'])",
                kind,
                name,
            )
        return None
    now = time.time()
    span_id = span_id or new_span_id()
    try:
        span = EncodedSpan.build(
            span_id, ctx.rollout_id, ctx.attempt_id, kind, name, now if start_time is None else start_time,
            parent_id, next(ctx._sequence), agent_name, now if end_time is None else end_time, status,
            attributes, ctx.resources,
        )  # fmt: skip
    except Exception as exc:
        emitter.refuse(name, exc)
        return None
    emitter.submit(ctx.store, span)
    return span_id


EndedSpan = tuple[SpanHandle, BaseException | str | None, Mapping[str, Any] | None, str, float | None]


def end_spans(ended: Iterable[EndedSpan]) -> None:
    """End many spans at once, each as `handle.end(error=, attributes=, status=, end_time=)` would.

    Capture code that holds ended spans back (the LangChain handler, per agent run) hands them
    over here: encoded one after another while that code is warm, queued with one emitter call.
    Never raises; a span already ended is skipped."""
    emitter = _emitter._emitter or get_emitter()
    queued: list[tuple[Store, EncodedSpan]] = []
    for handle, error, attributes, status, end_time in ended:
        try:
            if handle.ended:
                continue
            handle.ended = True
            attrs = handle.attributes
            if attributes:
                attrs.update(attributes)
            if error is not None:
                status = "error"
                if isinstance(error, BaseException):
                    attrs.setdefault("exception.type", type(error).__qualname__)
                attrs.setdefault("exception.message", str(error))
            ctx = handle.rollout
            if ctx is None:
                _submit(None, handle.kind, handle.name, attrs)  # counted and warned there
                continue
            if end_time is None:
                end_time = time.time()
            try:
                span = EncodedSpan.build(
                    handle.span_id, ctx.rollout_id, ctx.attempt_id, handle.kind, handle.name,
                    handle.start_time, handle.parent_id, next(ctx._sequence), handle.agent_name, end_time,
                    status, attrs, ctx.resources,
                )  # fmt: skip
            except Exception as exc:
                emitter.refuse(handle.name, exc)
                continue
            queued.append((ctx.store, span))
        except Exception:
            _capture_failed("SpanHandle.end")
    if queued:
        try:
            emitter.submit_many(queued)
        except Exception:
            _capture_failed("SpanHandle.end")


def _emit(kind: str, name: str, attributes: dict[str, Any], *, status: str = "ok",
          start_time: float | None = None, end_time: float | None = None) -> str | None:  # fmt: skip
    """An instant span under the current span, in the current rollout."""
    parent = _current.get()
    return _submit(
        _rollout.get(), kind, name, attributes, start_time=start_time, end_time=end_time, status=status,
        parent_id=parent.span_id if parent else None, agent_name=parent.agent_name if parent else None,
    )  # fmt: skip


_reported: set[tuple[str, type]] = set()


def _capture_failed(where: str) -> None:
    """Count a failure inside capture code; log the first of each kind with its traceback."""
    get_emitter().count("capture_errors")
    exc_type = sys.exc_info()[0] or Exception
    if (where, exc_type) in _reported:
        log.debug("voltline: %s failed again", where, exc_info=True)
        return
    _reported.add((where, exc_type))
    log.exception("voltline: %s failed; the agent goes on (further %s errors here are only counted)",
                  where, exc_type.__name__)  # fmt: skip


def _guarded(fn: Callable[P, T]) -> Callable[P, T | None]:
    """Capture code never raises into the agent: log, count, return None."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T | None:
        try:
            return fn(*args, **kwargs)
        except Exception:
            _capture_failed(fn.__name__)
            return None

    return wrapper


def _drop_none(attributes: dict[str, Any], extra: Mapping[str, Any] | None) -> dict[str, Any]:
    out = {k: v for k, v in attributes.items() if v is not None}
    if extra:
        out.update(extra)
    return out


@_guarded
def emit_llm(
    *,
    model: str | None = None,
    input_messages: Any = None,
    output_messages: Any = None,
    prompt_token_ids: list[int] | None = None,
    response_token_ids: list[int] | None = None,
    response_logprobs: list[float] | None = None,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    response_id: str | None = None,
    name: str | None = None,
    start_time: float | None = None,
    end_time: float | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> str | None:
    """Record one LLM call (OpenTelemetry GenAI names plus exact token ids). Returns the span id."""
    attrs = _drop_none(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": model,
            "gen_ai.input.messages": input_messages,
            "gen_ai.output.messages": output_messages,
            "gen_ai.usage.input_tokens": input_tokens,
            "gen_ai.usage.output_tokens": output_tokens,
            "gen_ai.response.id": response_id,
            "prompt_token_ids": prompt_token_ids,
            "response_token_ids": response_token_ids,
            "response_logprobs": response_logprobs,
        },
        attributes,
    )
    return _emit("llm", name or f"chat {model or 'unknown'}", attrs, start_time=start_time, end_time=end_time)


@_guarded
def emit_tool(
    name: str,
    *,
    arguments: Any = None,
    result: Any = None,
    call_id: str | None = None,
    error: str | None = None,
    start_time: float | None = None,
    end_time: float | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> str | None:
    """Record one tool call. Returns the span id."""
    attrs = _drop_none(
        {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
            "gen_ai.tool.call.id": call_id,
            "gen_ai.tool.call.arguments": arguments,
            "gen_ai.tool.call.result": result,
            "error.message": error,
        },
        attributes,
    )
    return _emit(
        "tool", f"execute_tool {name}", attrs, start_time=start_time, end_time=end_time,
        status="error" if error else "ok",
    )  # fmt: skip


@_guarded
def emit_message(
    content: Any,
    *,
    role: str | None = None,
    sender: str | None = None,
    recipient: str | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> str | None:
    """Record one message between agents, or between the user and an agent."""
    attrs = _drop_none(
        {"message.content": content, "message.role": role, "message.sender": sender,
         "message.recipient": recipient},
        attributes,
    )  # fmt: skip
    return _emit("message", f"message {sender or role or ''}".strip(), attrs)


@_guarded
def emit_reward(
    value: float,
    name: str | None = None,
    span: str | SpanHandle | None = None,
    *,
    primary: bool | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> str | None:
    """Record a reward. `name` tells several rewards apart (the unnamed one is primary unless
    `primary` says otherwise); `span` is the span (id or handle) the reward is for."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"reward value must be a number, got {type(value).__name__}")
    target = span.span_id if isinstance(span, SpanHandle) else span
    attrs = _drop_none(
        {"reward.value": float(value), "reward.name": name,
         "reward.primary": primary if primary is not None else name is None, "reward.span_id": target},
        attributes,
    )  # fmt: skip
    return _emit("reward", f"reward {name}" if name else "reward", attrs)


@_guarded
def emit_exception(exc: BaseException, *, attributes: Mapping[str, Any] | None = None) -> str | None:
    """Record an exception (OpenTelemetry `exception.*` names)."""
    attrs = _drop_none(
        {
            "exception.type": type(exc).__qualname__,
            "exception.message": str(exc),
            "exception.stacktrace": "".join(traceback.format_exception(exc)),
        },
        attributes,
    )
    return _emit("exception", type(exc).__qualname__, attrs, status="error")


def current_span() -> SpanHandle | None:
    """The span that spans started here would be children of."""
    return _current.get()


def start_span(
    name: str,
    kind: str = "custom",
    *,
    parent: SpanHandle | str | None = CURRENT,
    agent_name: str | None = None,
    attributes: Mapping[str, Any] | None = None,
    start_time: float | None = None,
) -> SpanHandle:
    """Open a span and return its handle; record it with `handle.end(...)`.

    For capture code driven by callbacks (a start event, later an end event, maybe on
    another thread): keep the handle between the two. `parent` defaults to the current span;
    pass a handle, a span id, or None for a root. The agent name is the one given, else the
    span's own name for an `agent` span, else the parent handle's. Never raises.
    """
    try:
        if isinstance(parent, _Current):
            parent = _current.get()
        ctx = _rollout.get()
        if agent_name is None and kind == "agent":  # an agent span names its own agent
            agent_name = (attributes or {}).get("gen_ai.agent.name") or name
        if isinstance(parent, SpanHandle):
            ctx = parent.rollout or ctx  # the parent's rollout wins: handler threads are shared
            agent_name = agent_name or parent.agent_name
            parent = parent.span_id
        return SpanHandle(
            new_span_id(), name, kind, dict(attributes or {}), parent_id=parent,
            agent_name=agent_name, start_time=time.time() if start_time is None else start_time, rollout=ctx,
        )  # fmt: skip
    except Exception:
        _capture_failed("start_span")
        return SpanHandle(new_span_id(), name, kind, {})


@contextmanager
def use_span(handle: SpanHandle) -> Iterator[SpanHandle]:
    """Make `handle` the current span inside the block (spans started there become its children).

    Where no rollout is current (a framework's handler thread, an executor), the handle's
    rollout becomes current too, so `emit_*` calls inside land in it.
    """
    token = _current.set(handle)
    rollout_token = _rollout.set(handle.rollout) if _rollout.get() is None and handle.rollout else None
    try:
        yield handle
    finally:
        if rollout_token is not None:
            _rollout.reset(rollout_token)
        _current.reset(token)


@contextmanager
def span(
    name: str, kind: str = "custom", *, agent_name: str | None = None, **attributes: Any
) -> Iterator[SpanHandle]:
    """A span around a block; spans emitted inside become its children.

    Yields a `SpanHandle` for adding attributes. `agent_name` (default: inherited) names the
    agent on this span and every span beneath it. The span is recorded when the block ends,
    marked `error` if the block raised; the exception itself propagates unchanged.
    """
    handle = start_span(name, kind, agent_name=agent_name, attributes=attributes)
    error: BaseException | None = None
    try:
        with use_span(handle):
            yield handle
    except BaseException as exc:
        error = exc
        raise
    finally:
        handle.end(error=error)


def bind_context(fn: Callable[P, T]) -> Callable[P, T]:
    """Bind `fn` to the current rollout and span, for thread pools.

    `contextvars` flow into asyncio tasks by themselves but not into threads a pool already
    started: `pool.submit(voltline.bind_context(work), x)` makes `work`'s spans land in this
    rollout, under the current span.
    """
    captured = contextvars.copy_context()

    @functools.wraps(fn)
    def bound(*args: P.args, **kwargs: P.kwargs) -> T:
        # A Context can only be entered by one thread at a time: run each call in a copy.
        return captured.copy().run(fn, *args, **kwargs)

    return bound


def flush(timeout: float | None = 30.0) -> bool:
    """Wait until every span emitted so far is durable in its store. False on timeout."""
    return get_emitter().flush(timeout)


def emitter_stats() -> dict[str, int]:
    """Counters of the span pipeline: emitted, written, dropped, invalid, ... (see Emitter.stats)."""
    return get_emitter().stats()
