"""The `autogen` Voltline plugin: entry point `voltline_autogen.plugin`.

`voltline.instrument()` calls `AutoGenIntegration.install`, which wraps, on every class of
each hierarchy that defines them (and on subclasses defined later):

* `ChatCompletionClient.create` / `create_stream`  -> `llm` spans (any model client);
* `BaseChatAgent.on_messages` / `on_messages_stream` -> `agent` spans per agent turn;
* `BaseGroupChat.run_stream`                         -> an `agent` span per team run;
* `BaseTool.run_json` / `BaseStreamTool.run_json_stream` -> `tool` spans;
* `SingleThreadedAgentRuntime` message dispatch      -> the sender's span carried to handlers;

and wraps the constructors of AutoGen's LLM events for response and token ids.
`uninstall()` puts every original back.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from voltline.hookspecs import hookimpl, installed_in

from . import _guard

__all__ = ["SUPPORTED", "AutoGenIntegration", "register_integrations"]

log = logging.getLogger("voltline.autogen")

# distribution -> the versions this plugin supports: its dependencies in pyproject.toml.
SUPPORTED = {"autogen-agentchat": ">=0.7,<0.8", "autogen-core": ">=0.7,<0.8"}


class AutoGenIntegration:
    """Zero-code capture for autogen-agentchat 0.7 agents and teams."""

    name = "autogen"

    def __init__(self) -> None:
        self._patchers: list[Any] = []
        self._events: Any = None

    def available(self) -> bool:
        if not all(installed_in(dist, spec) for dist, spec in SUPPORTED.items()):
            return False
        try:
            importlib.import_module("autogen_agentchat")
            importlib.import_module("autogen_core")
        except ImportError:
            return False
        return True

    def install(self, emitter: Any) -> None:
        from autogen_agentchat.agents import BaseChatAgent
        from autogen_agentchat.teams import BaseGroupChat
        from autogen_core import SingleThreadedAgentRuntime
        from autogen_core.models import ChatCompletionClient
        from autogen_core.tools import BaseTool

        from ._agents import wrap_agent_method, wrap_team_method
        from ._events import EventHook
        from ._llm import wrap_method
        from ._patching import MethodPatcher
        from ._runtime import wrap_runtime_method
        from ._tools import wrap_tool_method

        _guard.set_emitter(emitter)
        patchers = [
            MethodPatcher(ChatCompletionClient, ("create", "create_stream"), wrap_method),
            MethodPatcher(BaseChatAgent, ("on_messages", "on_messages_stream"), wrap_agent_method),
            MethodPatcher(BaseGroupChat, ("run_stream",), wrap_team_method),
            MethodPatcher(BaseTool, ("run_json", "run_json_stream"), wrap_tool_method),
            MethodPatcher(
                SingleThreadedAgentRuntime,
                ("send_message", "publish_message", "_process_send", "_process_publish"),
                wrap_runtime_method,
            ),
        ]
        events = EventHook()
        try:
            for patcher in patchers:
                patcher.install()
                self._patchers.append(patcher)
            events.install()
            self._events = events
        except BaseException:
            self.uninstall()  # half-installed is worse than not installed
            raise

    def uninstall(self) -> None:
        if self._events is not None:
            self._events.uninstall()
            self._events = None
        while self._patchers:
            self._patchers.pop().uninstall()
        _guard.set_emitter(None)


@hookimpl
def register_integrations(register: Any) -> None:
    register(AutoGenIntegration())
