"""Entry point ``crewai`` of the ``voltline`` group: registers the CrewAI integration.

Cheap to import (CrewAI itself takes seconds to import): the framework is only imported
by ``install()``.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from voltline.hookspecs import hookimpl, installed_in

__all__ = ["SUPPORTED", "CrewAIIntegration", "register_integrations"]

# As in pyproject.toml (tested: 1.15.30): the `crewai.events` bus with paired, sequenced events.
SUPPORTED = ">=1.15.17,<2"


class CrewAIIntegration:
    """Installs a :class:`voltline_crewai.VoltlineListener` on CrewAI's global event bus, and
    makes ``Crew.kickoff``/``Agent.kickoff`` (and their async forms) wait for its last events
    before returning."""

    name = "crewai"

    def __init__(self) -> None:
        self._listener: Any = None
        self._flush: Any = None

    def available(self) -> bool:
        """CrewAI is importable here and its version is within ``SUPPORTED``."""
        return installed_in("crewai", SUPPORTED) and importlib.util.find_spec("crewai") is not None

    def install(self, emitter: Any) -> None:
        from ._flush import KickoffFlush
        from .listener import VoltlineListener

        self._listener = VoltlineListener(emitter=emitter)
        self._flush = KickoffFlush()
        self._flush.apply()

    def uninstall(self) -> None:
        """Undo install(): the bus's handlers and ``Crew``'s methods are left as they were."""
        if self._flush is not None:
            self._flush.remove()
            self._flush = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None


@hookimpl
def register_integrations(register: Any) -> None:
    register(CrewAIIntegration())
