"""The `voltline` entry point: registers the LlamaIndex integration.

Imported whenever Voltline loads plugins, so it must stay cheap: llama_index (about two
seconds to import) is only imported by `install()`.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from voltline.hookspecs import Integration, hookimpl

__all__ = ["SUPPORTED", "LlamaIndexIntegration", "register_integrations"]

log = logging.getLogger("voltline.llamaindex")

# (distribution, lowest supported, first unsupported): the range this plugin is tested against.
SUPPORTED = ("llama-index-core", (0, 14), (0, 15))


def _release(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("."):
        digits = "".join(c for c in piece if c.isdigit()) if piece[:1].isdigit() else ""
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


class LlamaIndexIntegration:
    """Voltline's handlers on LlamaIndex's root instrumentation dispatcher."""

    name = "llamaindex"

    def __init__(self) -> None:
        self._registration: Any = None

    def available(self) -> bool:
        """llama-index-core is installed, in the supported range (checked without importing it)."""
        dist, low, high = SUPPORTED
        try:
            if importlib.util.find_spec("llama_index.core") is None:
                return False
            installed = _release(version(dist))
        except (ImportError, PackageNotFoundError, ValueError):
            return False
        if not low <= installed < high:
            log.info(
                "voltline: %s %s is outside the supported range %s-%s; not instrumenting",
                dist,
                ".".join(map(str, installed)),
                ".".join(map(str, low)),
                ".".join(map(str, high)),
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
