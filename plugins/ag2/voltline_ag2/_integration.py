"""The `ag2` integration: hooks, a runtime logger and a few method wrappers on ConversableAgent.

What gets installed, and why each piece:

* a `process_message_before_send` message hook on every agent (AutoGen's own extension point)
  for `message` spans. Agents created after `install()` get it from a wrapper around
  `ConversableAgent.__init__`; agents created earlier get it when they first take part in a
  chat or reply, so both are captured (an earlier agent's bare `send()` outside any chat is not).
  Before each chat and turn the hook is moved to the end of the agent's hook list, so the span
  shows the message as finally sent, after the user's own hooks edited it.
* wrappers around `initiate_chat`/`generate_reply`/`execute_function` (and their `a_` forms): the
  hooks have no "chat started", "turn ended" or "tool finished" points, and these brackets give
  the tree its exact nesting and timing.
* a runtime logger (`autogen.runtime_logging`) for model calls: `log_chat_completion` sees the
  exact request and response of every client, custom model clients included.

`uninstall()` removes the hooks from every agent it touched, restores the methods and the
previous runtime logger (or stops runtime logging). Wrappers that someone else has wrapped
again since cannot be unpatched safely; they turn into plain pass-throughs instead.
"""

from __future__ import annotations

import functools
import inspect
import logging
import weakref
from collections.abc import Callable
from typing import Any

import voltline
from voltline.hookspecs import installed_in

from ._capture import Capture

log = logging.getLogger("voltline.ag2")

SEND_HOOK = "process_message_before_send"
SUPPORTED = ">=0.9.8.post1,<0.15"  # ag2; keep in step with pyproject.toml


class AG2Integration:
    """Classic AutoGen (`autogen.ConversableAgent`, ag2 0.9-0.14) capture."""

    name = "ag2"

    def __init__(self) -> None:
        self._capture: Capture | None = None
        self._originals: dict[str, Any] = {}
        self._wrappers: dict[str, Any] = {}
        self._agents: weakref.WeakSet[Any] = weakref.WeakSet()
        self._logger: Any = None
        self._active = False

    # Integration protocol -----------------------------------------------------------------
    def available(self) -> bool:
        """True when a supported ag2 is installed and its `autogen` namespace, with message hooks
        and runtime logging, imports."""
        if not installed_in("ag2", SUPPORTED):
            return False
        try:
            from autogen import ConversableAgent, runtime_logging
        except Exception:  # not installed, or a broken install: either way nothing to hook
            return False
        return callable(getattr(ConversableAgent, "register_hook", None)) and callable(
            getattr(runtime_logging, "start", None)
        )

    def install(self, emitter: Any) -> None:
        """Wrap ConversableAgent's chat/turn/tool methods, hook new agents, start the runtime logger."""
        from autogen import ConversableAgent, runtime_logging

        from ._logger import VoltlineRuntimeLogger

        self._capture = Capture(emitter)
        self._active = True
        brackets = {
            "initiate_chat": (self._chat_begin, self._chat_end),
            "a_initiate_chat": (self._chat_begin, self._chat_end),
            "generate_reply": (self._turn_begin, self._turn_end),
            "a_generate_reply": (self._turn_begin, self._turn_end),
            "execute_function": (self._tool_begin, self._tool_end),
            "a_execute_function": (self._tool_begin, self._tool_end),
        }
        try:
            for attr, (begin, end) in brackets.items():
                original = ConversableAgent.__dict__.get(attr)
                if original is not None:
                    wrapper = _bracket(original, begin, end, lambda: self._active, self._failed)
                    self._patch(ConversableAgent, attr, wrapper)
            self._patch(ConversableAgent, "__init__", self._init_wrapper(ConversableAgent.__init__))
            previous = runtime_logging.autogen_logger if runtime_logging.logging_enabled() else None
            self._logger = VoltlineRuntimeLogger(self._capture, previous)
            runtime_logging.start(logger=self._logger)
        except BaseException:
            self.uninstall()  # Voltline will not call uninstall() for a failed install: leave nothing behind
            raise

    def uninstall(self) -> None:
        """Undo install(): methods, hooks on every touched agent, runtime logger."""
        from autogen import ConversableAgent, runtime_logging

        self._active = False
        for attr, original in self._originals.items():
            if ConversableAgent.__dict__.get(attr) is self._wrappers[attr]:
                setattr(ConversableAgent, attr, original)
            else:
                log.warning(
                    "voltline-ag2: ConversableAgent.%s was wrapped again after Voltline; "
                    "leaving Voltline's (now inactive) wrapper in place",
                    attr,
                )
        self._originals.clear()
        self._wrappers.clear()
        for agent in list(self._agents):
            hooks = getattr(agent, "hook_lists", {}).get(SEND_HOOK)
            if hooks is not None and self._on_send in hooks:
                hooks.remove(self._on_send)
        self._agents = weakref.WeakSet()
        if self._logger is not None and runtime_logging.autogen_logger is self._logger:
            if self._logger.previous is not None:
                runtime_logging.autogen_logger = self._logger.previous  # theirs keeps logging
            else:
                runtime_logging.stop()
                runtime_logging.autogen_logger = None
        self._logger = None

    # patching -----------------------------------------------------------------------------
    def _patch(self, cls: type, attr: str, wrapper: Any) -> None:
        self._originals[attr] = cls.__dict__[attr]
        self._wrappers[attr] = wrapper
        setattr(cls, attr, wrapper)

    def _init_wrapper(self, original: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(original)
        def __init__(agent: Any, *args: Any, **kwargs: Any) -> None:
            original(agent, *args, **kwargs)
            if self._active:
                self._attach(agent)

        return __init__

    # hooks --------------------------------------------------------------------------------
    def _on_send(self, sender: Any = None, message: Any = None, recipient: Any = None, **_: Any) -> Any:
        """The `process_message_before_send` hook: record, and always hand the message on untouched."""
        if self._active and self._capture is not None:
            try:
                self._capture.message_sent(sender, message, recipient)
            except Exception:
                self._capture.failed("process_message_before_send")
        return message

    def _attach(self, agent: Any) -> None:
        """Make our send hook the last of the agent's hooks (adding it if missing)."""
        try:
            hooks = getattr(agent, "hook_lists", None)
            if not isinstance(hooks, dict) or SEND_HOOK not in hooks:
                return
            send_hooks = hooks[SEND_HOOK]
            if send_hooks and send_hooks[-1] == self._on_send:
                return
            if self._on_send in send_hooks:
                send_hooks.remove(self._on_send)
                send_hooks.append(self._on_send)
            else:
                agent.register_hook(SEND_HOOK, self._on_send)
            self._agents.add(agent)
        except Exception:
            self._failed("attach hooks")

    def _failed(self, where: str) -> None:
        if self._capture is not None:
            self._capture.failed(where)

    # brackets: begin returns a handle (or None: run the original untraced); end closes it --
    def _chat_begin(self, agent: Any, call: inspect.BoundArguments) -> voltline.SpanHandle:
        recipient = call.arguments.get("recipient")
        members = getattr(getattr(recipient, "groupchat", None), "agents", None) or []
        for participant in (agent, recipient, *members):
            self._attach(participant)
        return self._capture.chat_started(  # type: ignore[union-attr]
            agent, recipient, call.arguments.get("message"), call.arguments.get("max_turns")
        )

    def _chat_end(
        self, agent: Any, handle: voltline.SpanHandle, result: Any, error: BaseException | None
    ) -> None:
        self._capture.chat_finished(handle, result, error)  # type: ignore[union-attr]

    def _turn_begin(self, agent: Any, call: inspect.BoundArguments) -> voltline.SpanHandle:
        self._attach(agent)
        return self._capture.turn_started(  # type: ignore[union-attr]
            agent, call.arguments.get("messages"), call.arguments.get("sender")
        )

    def _turn_end(
        self, agent: Any, handle: voltline.SpanHandle, result: Any, error: BaseException | None
    ) -> None:
        self._capture.turn_finished(agent, handle, result, error)  # type: ignore[union-attr]

    def _tool_begin(self, agent: Any, call: inspect.BoundArguments) -> voltline.SpanHandle:
        return self._capture.tool_started(  # type: ignore[union-attr]
            agent, call.arguments.get("func_call"), call.arguments.get("call_id")
        )

    def _tool_end(
        self, agent: Any, handle: voltline.SpanHandle, result: Any, error: BaseException | None
    ) -> None:
        self._capture.tool_finished(agent, handle, result, error)  # type: ignore[union-attr]


Begin = Callable[[Any, inspect.BoundArguments], "voltline.SpanHandle | None"]
End = Callable[[Any, "voltline.SpanHandle", Any, "BaseException | None"], None]


def _bracket(
    original: Callable[..., Any],
    begin: Begin,
    end: End,
    active: Callable[[], bool],
    failed: Callable[[str], None],
) -> Callable[..., Any]:
    """Wrap a method so a span is open (and current) while it runs; sync or async alike.

    While `active()` is false the wrapper is a plain pass-through. `begin`/`end` failures go
    to `failed` and never reach the caller: the original always runs with the caller's own
    arguments, and its result or exception is passed back unchanged.
    """
    signature = inspect.signature(original)

    def opening(agent: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> voltline.SpanHandle | None:
        if not active():
            return None
        try:
            call = signature.bind(agent, *args, **kwargs)
            call.apply_defaults()
            return begin(agent, call)
        except Exception:
            failed(f"{original.__name__} (start)")
            return None

    def closing(agent: Any, handle: voltline.SpanHandle, result: Any, error: BaseException | None) -> None:
        try:
            end(agent, handle, result, error)
        except Exception:
            failed(f"{original.__name__} (end)")

    if inspect.iscoroutinefunction(original):

        @functools.wraps(original)
        async def async_wrapper(agent: Any, *args: Any, **kwargs: Any) -> Any:
            handle = opening(agent, args, kwargs)
            if handle is None:
                return await original(agent, *args, **kwargs)
            try:
                with voltline.use_span(handle):
                    result = await original(agent, *args, **kwargs)
            except BaseException as exc:
                closing(agent, handle, None, exc)
                raise
            closing(agent, handle, result, None)
            return result

        return async_wrapper

    @functools.wraps(original)
    def wrapper(agent: Any, *args: Any, **kwargs: Any) -> Any:
        handle = opening(agent, args, kwargs)
        if handle is None:
            return original(agent, *args, **kwargs)
        try:
            with voltline.use_span(handle):
                result = original(agent, *args, **kwargs)
        except BaseException as exc:
            closing(agent, handle, None, exc)
            raise
        closing(agent, handle, result, None)
        return result

    return wrapper
