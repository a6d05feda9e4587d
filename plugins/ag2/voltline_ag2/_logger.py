"""A runtime logger (`autogen.runtime_logging.start(logger=...)`) that feeds Voltline.

AutoGen keeps one global runtime logger. If the user had already started one (the SQLite or
file logger), ours wraps it and forwards every call, so their logs keep coming; uninstalling
puts theirs back. Imports AutoGen, so it is imported only by `install()`.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from autogen.logger.base_logger import BaseLogger

if TYPE_CHECKING:
    from ._capture import Capture


class VoltlineRuntimeLogger(BaseLogger):
    """Model calls become `llm` spans; function uses not seen by execute_function become `tool` spans."""

    def __init__(self, capture: Capture, previous: BaseLogger | None = None) -> None:
        self.capture = capture
        self.previous = previous
        self.session_id = str(uuid.uuid4())

    def start(self) -> str:
        # The previous logger is already running; starting it again would open a second session.
        return self.session_id

    def log_chat_completion(
        self,
        invocation_id: Any,
        client_id: int,
        wrapper_id: int,
        source: Any,
        request: Any,
        response: Any,
        is_cached: int,
        cost: float,
        start_time: str,
    ) -> None:
        try:
            self.capture.llm_completed(source, request, response, is_cached, cost, start_time, invocation_id)
        except Exception:
            self.capture.failed("log_chat_completion")
        if self.previous is not None:
            self.previous.log_chat_completion(
                invocation_id, client_id, wrapper_id, source, request, response, is_cached, cost, start_time
            )

    def log_new_agent(self, agent: Any, init_args: dict[str, Any]) -> None:
        # Hooks are attached by the ConversableAgent.__init__ patch: here hook_lists does not exist yet.
        if self.previous is not None:
            self.previous.log_new_agent(agent, init_args)

    def log_event(self, source: Any, name: str, **kwargs: Any) -> None:
        if name == "reply_func_executed":
            try:
                self.capture.reply_function(source, kwargs.get("reply_func_name"), kwargs.get("final"))
            except Exception:
                self.capture.failed("log_event")
        if self.previous is not None:
            self.previous.log_event(source, name, **kwargs)

    def log_new_wrapper(self, wrapper: Any, init_args: dict[str, Any]) -> None:
        if self.previous is not None:
            self.previous.log_new_wrapper(wrapper, init_args)

    def log_new_client(self, client: Any, wrapper: Any, init_args: dict[str, Any]) -> None:
        if self.previous is not None:
            self.previous.log_new_client(client, wrapper, init_args)

    def log_function_use(self, source: Any, function: Any, args: dict[str, Any], returns: Any) -> None:
        try:
            self.capture.function_used(source, function, args, returns)
        except Exception:
            self.capture.failed("log_function_use")
        if self.previous is not None:
            self.previous.log_function_use(source, function, args, returns)

    def stop(self) -> None:
        if self.previous is not None:
            self.previous.stop()

    def get_connection(self) -> Any:
        return self.previous.get_connection() if self.previous is not None else None
