"""Capture code never raises into the agent: failures are logged once per kind and counted."""

from __future__ import annotations

import logging
import sys
from typing import Any

__all__ = ["capture_failed", "set_emitter"]

log = logging.getLogger("voltline.autogen")

_emitter: Any = None
_reported: set[tuple[str, type]] = set()


def set_emitter(emitter: Any) -> None:
    """The emitter `install()` received; failures are counted on it."""
    global _emitter
    _emitter = emitter


def _count() -> None:
    emitter = _emitter
    if emitter is None:  # the explicit client wrapper works without install()
        from voltline._emitter import get_emitter

        emitter = get_emitter()
    try:
        emitter.count("capture_errors")
    except Exception:  # an emitter without counters must not turn one failure into two
        log.debug("voltline: could not count a capture error", exc_info=True)


def capture_failed(where: str) -> None:
    """Call from an `except` block in capture code: count it, log the first of each kind."""
    _count()
    exc_type = sys.exc_info()[0] or Exception
    if (where, exc_type) in _reported:
        log.debug("voltline: autogen capture %s failed again", where, exc_info=True)
        return
    _reported.add((where, exc_type))
    log.exception(
        "voltline: autogen capture %s failed; the agent goes on (further %s errors here are only counted)",
        where,
        exc_type.__name__,
    )
