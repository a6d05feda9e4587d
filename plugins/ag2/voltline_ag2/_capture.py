"""What the AutoGen hooks turn into: spans, opened and closed through Voltline's capture API.

One `Capture` per installed integration. Every public method here runs on the agent's path,
so each is guarded: a failure is logged once per place and kind, counted as a capture error
on the emitter, and the conversation goes on exactly as it would without Voltline. Converting a
payload (a message, a model request or response, tool arguments or a result) is guarded on its
own besides: one that fails leaves out only its attribute, and the span is still recorded.

Tree shape (parents come from the current span, carried in contextvars):

    chain  chat <initiator> -> <recipient>          around initiate_chat / a_initiate_chat
      message <sender> -> <recipient>               every message sent (process_message_before_send)
      agent  invoke_agent <name>                    every generate_reply / a_generate_reply (one turn)
        llm  chat <model>                           every model call (runtime logger)
        tool execute_tool <name>                    every execute_function / a_execute_function
        message ...                                 messages sent inside a turn (a GroupChatManager's)

When a turn runs work on a thread AutoGen started without copying contextvars (async replies
in an executor, async tools in a helper thread), the current span is unknown there; spans of an
agent then fall back to that agent's open turn, so they still land in the right rollout and place.
(`agent.run()` starts the whole chat on such a thread: no turn is open yet, so it is not covered.)
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from typing import Any

import voltline

from ._convert import jsonable, llm_attributes, message_attributes, parse_arguments, parse_timestamp

log = logging.getLogger("voltline.ag2")


def _name(agent: Any) -> str | None:
    if agent is None:
        return None
    if isinstance(agent, str):
        return agent
    name = getattr(agent, "name", None)
    return name if isinstance(name, str) else type(agent).__name__


class Capture:
    """Span bookkeeping for classic AutoGen; the patches and hooks call into it."""

    def __init__(self, emitter: Any) -> None:
        self.emitter = emitter
        self._reported: set[tuple[str, type]] = set()
        self._lock = threading.Lock()
        # id(agent) -> stack of its open turn spans: the fallback parent off-context.
        self._turns: dict[int, list[voltline.SpanHandle]] = {}
        self._tools: dict[int, int] = {}  # id(agent) -> open execute_function spans

    # failure handling ---------------------------------------------------------------------
    def failed(self, where: str) -> None:
        """Count a failure inside capture code; log only the first of each kind with its traceback."""
        with contextlib.suppress(Exception):  # an emitter without counters must not turn one error into two
            self.emitter.count("capture_errors")
        key = (where, sys.exc_info()[0] or Exception)
        if key in self._reported:
            log.debug("voltline-ag2: %s failed again", where, exc_info=True)
            return
        self._reported.add(key)
        log.exception(
            "voltline-ag2: %s failed; the conversation goes on (further such errors are only counted)", where
        )

    # parents ------------------------------------------------------------------------------
    def _parent(self, agent: Any) -> Any:
        """The current span if this context has one, else the agent's open turn (see module doc)."""
        current = voltline.current_span()
        if current is not None or voltline.current_rollout() is not None:
            return current
        stack = self._turns.get(id(agent))
        return stack[-1] if stack else None

    def _push(self, agent: Any, handle: voltline.SpanHandle) -> None:
        with self._lock:
            self._turns.setdefault(id(agent), []).append(handle)

    def _pop(self, agent: Any, handle: voltline.SpanHandle) -> None:
        with self._lock:
            stack = self._turns.get(id(agent))
            if stack and handle in stack:
                stack.remove(handle)
            if not stack:
                self._turns.pop(id(agent), None)

    # chats --------------------------------------------------------------------------------
    def chat_started(self, sender: Any, recipient: Any, message: Any, max_turns: Any) -> voltline.SpanHandle:
        groupchat = getattr(recipient, "groupchat", None)
        members = [_name(a) for a in getattr(groupchat, "agents", None) or []] or None
        try:
            text = jsonable(message) if not callable(message) else repr(message)
        except Exception:  # the chat span is still opened (its children need it), without the message
            self.failed("converting ag2.chat.message")
            text = None
        attrs = {
            "gen_ai.operation.name": "invoke_agent",
            "ag2.chat.initiator": _name(sender),
            "ag2.chat.recipient": _name(recipient),
            "ag2.chat.message": text,
            "ag2.chat.max_turns": max_turns if isinstance(max_turns, int) else None,
            "ag2.chat.group": members,
        }
        return voltline.start_span(
            f"chat {_name(sender)} -> {_name(recipient)}",
            "chain",
            parent=self._parent(sender),
            agent_name=_name(sender),
            attributes={k: v for k, v in attrs.items() if v is not None},
        )

    def chat_finished(self, handle: voltline.SpanHandle, result: Any, error: BaseException | None) -> None:
        attrs: dict[str, Any] = {}
        if result is not None:
            history = getattr(result, "chat_history", None)
            if isinstance(history, list):
                attrs["ag2.chat.message_count"] = len(history)
            summary = getattr(result, "summary", None)
            if summary is not None:
                try:
                    attrs["ag2.chat.summary"] = jsonable(summary)
                except Exception:  # the span still ends, without the summary
                    self.failed("converting ag2.chat.summary")
        handle.end(error=error, attributes=attrs)

    # turns --------------------------------------------------------------------------------
    def turn_started(self, agent: Any, messages: Any, sender: Any) -> voltline.SpanHandle:
        name = _name(agent)
        attrs = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": name,
            "ag2.agent.class": type(agent).__name__,
        }
        if sender is not None:
            attrs["ag2.reply.to"] = _name(sender)
        if isinstance(messages, list):
            attrs["ag2.input.message_count"] = len(messages)
        handle = voltline.start_span(
            f"invoke_agent {name}", "agent", parent=self._parent(agent), agent_name=name, attributes=attrs
        )
        self._push(agent, handle)
        return handle

    def turn_finished(
        self, agent: Any, handle: voltline.SpanHandle, reply: Any, error: BaseException | None
    ) -> None:
        self._pop(agent, handle)
        attrs: dict[str, Any] | None = None
        if error is None:
            try:
                attrs = {"ag2.reply": jsonable(reply)}
            except Exception:  # the span still ends, without the reply
                self.failed("converting ag2.reply")
        handle.end(error=error, attributes=attrs)

    def reply_function(self, agent: Any, name: Any, final: Any) -> None:
        """AutoGen's `reply_func_executed` event: note which reply function produced the turn's reply."""
        if not final:
            return
        stack = self._turns.get(id(agent))
        current = voltline.current_span()
        handle = (
            current if current is not None and current.kind == "agent" else (stack[-1] if stack else None)
        )
        if handle is not None and not handle.ended:
            handle.set("ag2.reply.function", str(name))

    # messages -----------------------------------------------------------------------------
    def message_sent(self, sender: Any, message: Any, recipient: Any) -> None:
        attrs = message_attributes(message, _name(sender), _name(recipient), self.failed)
        handle = voltline.start_span(
            f"message {_name(sender)} -> {_name(recipient)}",
            "message",
            parent=self._parent(sender),
            agent_name=_name(sender),
            attributes={k: v for k, v in attrs.items() if v is not None},
        )
        handle.end()

    # model calls ------------------------------------------------------------------------------
    def llm_completed(
        self,
        agent: Any,
        request: Any,
        response: Any,
        cached: Any,
        cost: Any,
        start_time: Any,
        invocation_id: Any,
    ) -> None:
        attrs = llm_attributes(request, response, cached=cached, cost=cost, failed=self.failed)
        if invocation_id is not None:
            attrs["ag2.invocation_id"] = str(invocation_id)
        model = attrs.get("gen_ai.request.model") or "unknown"
        try:
            started = parse_timestamp(start_time)
        except Exception:  # the span is still recorded, as starting when AutoGen logged the call
            self.failed("converting the model call's start_time")
            started = None
        handle = voltline.start_span(
            f"chat {model}",
            "llm",
            parent=self._parent(agent),
            agent_name=_name(agent) if agent else None,
            attributes=attrs,
            start_time=started,
        )
        handle.end(status="error" if "error.message" in attrs else "ok")

    # tools --------------------------------------------------------------------------------
    def tool_started(self, agent: Any, func_call: Any, call_id: Any) -> voltline.SpanHandle:
        name = str(func_call.get("name", "")) if isinstance(func_call, dict) else str(func_call)
        attrs: dict[str, Any] = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name}
        if isinstance(func_call, dict) and "arguments" in func_call:
            try:
                attrs["gen_ai.tool.call.arguments"] = parse_arguments(func_call["arguments"])
            except Exception:  # the span is still opened, without its arguments
                self.failed("converting gen_ai.tool.call.arguments")
        if call_id is not None:
            attrs["gen_ai.tool.call.id"] = str(call_id)
        handle = voltline.start_span(
            f"execute_tool {name}",
            "tool",
            parent=self._parent(agent),
            agent_name=_name(agent),
            attributes=attrs,
        )
        with self._lock:
            self._tools[id(agent)] = self._tools.get(id(agent), 0) + 1
        return handle

    def tool_finished(
        self, agent: Any, handle: voltline.SpanHandle, outcome: Any, error: BaseException | None
    ) -> None:
        with self._lock:
            left = self._tools.get(id(agent), 1) - 1
            if left > 0:
                self._tools[id(agent)] = left
            else:
                self._tools.pop(id(agent), None)
        if error is not None:
            handle.end(error=error)
            return
        ok, result = outcome if isinstance(outcome, tuple) and len(outcome) == 2 else (True, outcome)
        content = result.get("content") if isinstance(result, dict) else result
        attrs: dict[str, Any] = {}
        try:
            attrs["gen_ai.tool.call.result"] = jsonable(content)
        except Exception:  # the span still ends, without its result
            self.failed("converting gen_ai.tool.call.result")
        if not ok:
            try:
                attrs["error.message"] = str(content)
            except Exception:  # the span still ends with status error, without the message
                self.failed("converting error.message")
        handle.end(status="ok" if ok else "error", attributes=attrs)

    def function_used(self, agent: Any, function: Any, args: Any, returns: Any) -> None:
        """The runtime logger's `log_function_use`: a tool span only when execute_function made none.

        That happens when a subclass overrides execute_function without calling the original,
        or calls a registered function directly.
        """
        if self._tools.get(id(agent)):
            return
        name = getattr(function, "__name__", None) or str(function)
        attrs: dict[str, Any] = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name}
        # Arguments and result each on their own: the span is recorded without what fails.
        try:
            attrs["gen_ai.tool.call.arguments"] = jsonable(args)
        except Exception:
            self.failed("converting gen_ai.tool.call.arguments")
        try:
            attrs["gen_ai.tool.call.result"] = jsonable(returns)
        except Exception:
            self.failed("converting gen_ai.tool.call.result")
        handle = voltline.start_span(
            f"execute_tool {name}",
            "tool",
            parent=self._parent(agent),
            agent_name=_name(agent),
            attributes=attrs,
            start_time=time.time(),
        )
        handle.end()
