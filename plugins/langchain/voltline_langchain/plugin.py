"""The `langchain` integration: one `VoltlineCallbackHandler` on every LangChain run.

Installed through langchain-core's own global-handler mechanism, `register_configure_hook`
(the one LangSmith's `tracing_v2_enabled` uses): every `CallbackManager.configure()` adds the
handler, inheritable, to the run's callbacks. Nothing in LangChain is patched, and uninstall
removes exactly the one hook entry install added.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any

from voltline.hookspecs import hookimpl, installed_in

__all__ = ["SUPPORTED", "LangChainIntegration", "register_integrations"]

log = logging.getLogger("voltline.langchain")

SUPPORTED = ">=1.2.10,<2"  # langchain-core; keep in step with pyproject.toml


class LangChainIntegration:
    """`voltline.instrument()` support for LangChain (langchain-core 1.x, LangGraph agents included)."""

    name = "langchain"

    def __init__(self) -> None:
        self._hook: tuple[Any, ...] | None = None
        self.handler: Any = None

    def available(self) -> bool:
        if not installed_in("langchain-core", SUPPORTED):
            return False
        try:
            from langchain_core.tracers import context
        except ImportError:
            return False
        return hasattr(context, "_configure_hooks") and hasattr(context, "register_configure_hook")

    def install(self, emitter: Any) -> None:
        from langchain_core.tracers import context

        from .handler import VoltlineCallbackHandler

        handler = VoltlineCallbackHandler(emitter)
        # The handler is the variable's *default*, so it is seen in every thread and task, not
        # only in contexts copied from this one. Passing its class makes LangChain skip the
        # global one when the user already passed a VoltlineCallbackHandler explicitly.
        var: ContextVar[Any] = ContextVar("voltline_langchain_handler", default=handler)
        before = len(context._configure_hooks)
        context.register_configure_hook(var, True, VoltlineCallbackHandler)
        # Remember the exact entry, so uninstall removes it and nothing else.
        self._hook = context._configure_hooks[before]
        self.handler = handler

    def uninstall(self) -> None:
        from langchain_core.tracers import context

        hook, handler, self._hook, self.handler = self._hook, self.handler, None, None
        if handler is not None:
            handler.submit_pending()  # spans already ended go to the store, not away with the handler
        if hook is None:
            return
        for i, entry in enumerate(context._configure_hooks):
            if entry is hook:
                del context._configure_hooks[i]
                return
        log.warning("voltline: the LangChain configure hook was already removed by someone else")


@hookimpl
def register_integrations(register: Any) -> None:
    register(LangChainIntegration())
