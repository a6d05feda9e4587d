"""`tool` spans around `BaseTool.run_json` / `BaseStreamTool.run_json_stream`.

Every AutoGen tool an agent calls (FunctionTool, handoffs, agents and teams used as tools)
runs through these with the model's tool-call id. The span is current while the tool runs,
so an agent used as a tool nests beneath it. A tool that raises is recorded as an error
span and the exception goes on to AutoGen unchanged (AssistantAgent turns it into an error
result for the model).
"""

from __future__ import annotations

import functools
from contextlib import nullcontext
from typing import Any

import voltline

from . import _convert
from ._guard import capture_failed
from ._stream import proxy_agen, recording

__all__ = ["wrap_tool_method"]


def _start(tool: Any, args: Any, call_id: str | None) -> voltline.SpanHandle | None:
    try:
        name = str(getattr(tool, "name", None) or type(tool).__name__)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
            "gen_ai.tool.type": "function",
        }
        try:
            attributes["gen_ai.tool.call.arguments"] = _convert.tool_arguments(args)
        except Exception:  # the span is still recorded (and still the parent of an agent used as a tool)
            capture_failed("tool arguments")
        if call_id is not None:
            attributes["gen_ai.tool.call.id"] = call_id
        description = getattr(tool, "description", None)
        if isinstance(description, str) and description:
            attributes["gen_ai.tool.description"] = description
        return voltline.start_span(f"execute_tool {name}", "tool", attributes=attributes)
    except Exception:
        capture_failed("start tool span")
        return None


def _end(tool: Any, handle: voltline.SpanHandle | None, result: Any, error: BaseException | None) -> None:
    if handle is None:
        return
    try:
        attributes: dict[str, Any] = {}
        if error is not None:
            attributes["error.type"] = type(error).__qualname__
        else:
            try:
                attributes["gen_ai.tool.call.result"] = _convert.tool_result(tool, result)
            except Exception:  # the span still ends, without its result: an unended one is never recorded
                capture_failed("tool result")
        handle.end(error=error, attributes=attributes)
    except Exception:
        capture_failed("end tool span")


def _call_id(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    call_id = kwargs.get("call_id", args[0] if args else None)
    return call_id if isinstance(call_id, str) else None


def wrap_tool_method(name: str, original: Any) -> Any:
    """Class-level wrapper of `run_json` (a coroutine) or `run_json_stream` (an async generator)."""
    if name == "run_json":

        @functools.wraps(original)
        async def run_json(self: Any, args: Any, cancellation_token: Any, *rest: Any, **kwargs: Any) -> Any:
            if not recording():
                return await original(self, args, cancellation_token, *rest, **kwargs)
            handle = _start(self, args, _call_id(rest, kwargs))
            try:
                if handle is None:
                    result = await original(self, args, cancellation_token, *rest, **kwargs)
                else:
                    with voltline.use_span(handle):
                        result = await original(self, args, cancellation_token, *rest, **kwargs)
            except BaseException as exc:
                _end(self, handle, None, exc)
                raise
            _end(self, handle, result, None)
            return result

        return run_json

    @functools.wraps(original)
    def run_json_stream(self: Any, args: Any, cancellation_token: Any, *rest: Any, **kwargs: Any) -> Any:
        inner = original(self, args, cancellation_token, *rest, **kwargs)
        if not recording():
            return inner
        state: dict[str, Any] = {"started": False, "handle": None, "last": None}

        def enter() -> Any:
            if not state["started"]:
                state["started"] = True
                state["handle"] = _start(self, args, _call_id(rest, kwargs))
            handle = state["handle"]
            return voltline.use_span(handle) if handle is not None else nullcontext()

        def on_item(item: Any) -> None:
            state["last"] = item  # the stream ends with the tool's return value

        def on_end(error: BaseException | None) -> None:
            _end(self, state["handle"], state["last"], error)

        return proxy_agen(inner, enter, on_item, on_end)

    return run_json_stream
