"""Voltline's LlamaIndex plugin: spans from agents, query engines and retrievers.

`voltline.instrument()` registers it on LlamaIndex's root dispatcher; or register it
yourself (no global install)::

    import voltline_llamaindex

    registration = voltline_llamaindex.register()  # or register(dispatcher=...)
    ...
    registration.remove()

Importing this package does not import llama_index; `register` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llama_index.core.instrumentation import Dispatcher

    from ._handlers import Registration

__all__ = ["register"]


def register(dispatcher: Dispatcher | None = None, *, emitter: Any = None) -> Registration:
    """Register Voltline's span and event handlers on `dispatcher` (default: the root one).

    Returns a `Registration`; call `.remove()` (or use it as a context manager) to take the
    handlers off again. Use this or `voltline.instrument()`, not both.
    """
    from ._handlers import register as _register

    return _register(dispatcher, emitter=emitter)
