"""`agent` spans for agents (`on_messages` / `on_messages_stream`) and teams (`run_stream`).

One agent span per agent turn: `run()` goes through `on_messages`, which in `AssistantAgent`
goes through `on_messages_stream`; a contextvar naming the agent in progress keeps the inner
layers from opening spans of their own. A team is recorded as an agent span too (GenAI
folded workflows into `invoke_agent`): its participants' spans nest beneath it and carry
their own names, so `query_spans(agent_name=...)` selects one participant.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import voltline

from . import _convert
from ._guard import capture_failed
from ._stream import proxy_agen, recording

__all__ = ["wrap_agent_method", "wrap_team_method"]

_agent_in_progress: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "voltline_autogen_agent", default=None
)


def _start_agent_span(agent: Any, operation_input: dict[str, Any]) -> voltline.SpanHandle | None:
    try:
        name = str(getattr(agent, "name", None) or type(agent).__name__)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": name,
            "autogen.agent.type": type(agent).__qualname__,
            **operation_input,
        }
        description = getattr(agent, "description", None)
        if isinstance(description, str) and description:
            attributes["gen_ai.agent.description"] = description
        return voltline.start_span(f"invoke_agent {name}", "agent", attributes=attributes)
    except Exception:
        capture_failed("start agent span")
        return None


def _messages_input(messages: Any) -> dict[str, Any]:
    try:
        return {"gen_ai.input.messages": _convert.chat_messages(list(messages or ()))}
    except Exception:
        capture_failed("agent input")
        return {}


def _end(handle: voltline.SpanHandle | None, error: BaseException | None, attributes: dict[str, Any]) -> None:
    if handle is not None:
        if error is not None:
            attributes["error.type"] = type(error).__qualname__
        handle.end(error=error, attributes=attributes)


def _response_output(response: Any) -> dict[str, Any]:
    message = getattr(response, "chat_message", None)
    if message is None:
        return {}
    output: dict[str, Any] = {}
    try:
        output["gen_ai.output.messages"] = _convert.chat_messages([message])
    except Exception:  # the span still ends, without its output: an unended one is never recorded
        capture_failed("agent output")
    output["autogen.inner_messages"] = len(getattr(response, "inner_messages", None) or ())
    return output


@contextmanager
def _inside(agent: Any, handle: voltline.SpanHandle | None) -> Iterator[None]:
    token = _agent_in_progress.set(id(agent))
    try:
        if handle is None:
            yield
        else:
            with voltline.use_span(handle):
                yield
    finally:
        _agent_in_progress.reset(token)


def _should_capture(agent: Any) -> bool:
    return _agent_in_progress.get() != id(agent) and recording()


def wrap_agent_method(name: str, original: Any) -> Any:
    """Class-level wrapper of a chat agent's `on_messages` or `on_messages_stream`."""
    if name == "on_messages":

        @functools.wraps(original)
        async def on_messages(self: Any, messages: Any, *args: Any, **kwargs: Any) -> Any:
            if not _should_capture(self):
                return await original(self, messages, *args, **kwargs)
            handle = _start_agent_span(self, _messages_input(messages))
            try:
                with _inside(self, handle):
                    response = await original(self, messages, *args, **kwargs)
            except BaseException as exc:
                _end(handle, exc, {})
                raise
            try:
                _end(handle, None, _response_output(response))
            except Exception:
                capture_failed("end agent span")
            return response

        return on_messages

    @functools.wraps(original)
    def on_messages_stream(self: Any, messages: Any, *args: Any, **kwargs: Any) -> Any:
        inner = original(self, messages, *args, **kwargs)
        if not _should_capture(self):
            return inner
        state: dict[str, Any] = {"started": False, "handle": None, "output": {}}

        def enter() -> Any:
            if not state["started"]:
                state["started"] = True
                state["handle"] = _start_agent_span(self, _messages_input(messages))
            return _inside(self, state["handle"])

        def on_item(item: Any) -> None:
            if type(item).__name__ == "Response" or hasattr(item, "chat_message"):
                state["output"] = _response_output(item)

        def on_end(error: BaseException | None) -> None:
            _end(state["handle"], error, state["output"])

        return proxy_agen(inner, enter, on_item, on_end)

    return on_messages_stream


def _task_input(task: Any) -> dict[str, Any]:
    try:
        if task is None:
            return {}
        if isinstance(task, str):
            return {"gen_ai.input.messages": [{"role": "user", "parts": [{"type": "text", "content": task}]}]}
        return _messages_input(task if isinstance(task, list) else [task])
    except Exception:
        capture_failed("team input")
        return {}


def wrap_team_method(name: str, original: Any) -> Any:
    """Class-level wrapper of a team's `run_stream` (`run` goes through it)."""

    @functools.wraps(original)
    def run_stream(self: Any, *args: Any, **kwargs: Any) -> Any:
        inner = original(self, *args, **kwargs)
        if not recording():
            return inner
        state: dict[str, Any] = {"started": False, "handle": None, "output": {}}

        def enter() -> Any:
            if not state["started"]:
                state["started"] = True
                task = kwargs.get("task", args[0] if args else None)
                state["handle"] = _start_agent_span(self, _task_input(task))
                if state["handle"] is not None:
                    state["handle"].set("autogen.team", True)
            handle = state["handle"]
            return voltline.use_span(handle) if handle is not None else nullcontext()

        def on_item(item: Any) -> None:
            if type(item).__name__ == "TaskResult":
                # Each read is guarded on its own: a newer AutoGen's TaskResult that breaks one
                # of them must not cost the team span the others.
                output: dict[str, Any] = {}
                try:
                    output["autogen.stop_reason"] = item.stop_reason
                except Exception:
                    capture_failed("team stop reason")
                try:
                    messages = list(item.messages)
                except Exception:
                    capture_failed("team messages")
                else:
                    try:
                        output["gen_ai.output.messages"] = _convert.chat_messages(
                            [m for m in messages if hasattr(m, "to_text") and hasattr(m, "source")][-1:]
                        )
                    except Exception:
                        capture_failed("team output")
                    output["autogen.messages"] = len(messages)
                state["output"] = output

        def on_end(error: BaseException | None) -> None:
            _end(state["handle"], error, state["output"])

        return proxy_agen(inner, enter, on_item, on_end)

    return run_stream
