"""Voltline plugin for CrewAI: crews, tasks, agents, LLM and tool calls as nested spans.

``voltline.instrument()`` installs it globally; :class:`VoltlineListener` is the explicit
form. Importing this package does not import CrewAI until a name below is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .plugin import CrewAIIntegration

if TYPE_CHECKING:
    from .listener import VoltlineListener

__all__ = ["CrewAIIntegration", "VoltlineListener"]


def __getattr__(name: str) -> Any:
    if name == "VoltlineListener":  # lazily: importing crewai takes seconds
        from .listener import VoltlineListener

        return VoltlineListener
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
