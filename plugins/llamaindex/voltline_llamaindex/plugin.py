"""The `voltline` entry point: registers the LlamaIndex integration.

Imported whenever Voltline loads plugins, so it must stay cheap: llama_index (about two
seconds to import) is only imported by `install()`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
from collections.abc import Callable
from typing import Any

from voltline.hookspecs import Integration, hookimpl, installed_in

__all__ = ["SUPPORTED", "LlamaIndexIntegration", "register_integrations"]

log = logging.getLogger("voltline.llamaindex")

# The llama-index-core versions this plugin is tested against: its dependency in pyproject.toml.
SUPPORTED = ">=0.14.25,<0.15"


class LlamaIndexIntegration:
    """Voltline's handlers on LlamaIndex's root instrumentation dispatcher."""

    name = "llamaindex"

    def __init__(self) -> None:
        self._registration: Any = None

    def available(self) -> bool:
        """llama-index-core is installed, in the supported range (checked without importing it)."""
        try:
            if importlib.util.find_spec("llama_index.core") is None:
                return False
        except ImportError:  # no llama_index package at all
            return False
        if not installed_in("llama-index-core", SUPPORTED):
            try:
                found = importlib.metadata.version("llama-index-core")
            except importlib.metadata.PackageNotFoundError:
                found = "(no distribution metadata)"
            log.info(
                "voltline: llama-index-core %s is outside the supported range %s; not instrumenting",
                found,
                SUPPORTED,
            )
            return False
        return True

    def install(self, emitter: Any) -> None:
        from ._handlers import register

        if self._registration is None:
            self._registration = register(emitter=emitter)

    def uninstall(self) -> None:
        registration, self._registration = self._registration, None
        if registration is not None:
            registration.remove()


@hookimpl
def register_integrations(register: Callable[[Integration], None]) -> None:
    register(LlamaIndexIntegration())
