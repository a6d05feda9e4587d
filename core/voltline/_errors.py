"""Exceptions raised by Voltline. Every message says what went wrong and what to do."""

from __future__ import annotations

__all__ = [
    "AttemptLost",
    "InvalidInput",
    "NotFound",
    "SchemaOutOfDate",
    "StoreUnavailable",
    "VoltlineError",
]


class VoltlineError(Exception):
    """Base class of every error Voltline raises on purpose."""


class InvalidInput(VoltlineError, ValueError):
    """A value handed to Voltline is wrong; nothing was written."""


class NotFound(VoltlineError, LookupError):
    """A rollout, attempt or resource that does not exist in the store."""


class AttemptLost(VoltlineError):
    """The attempt is no longer running (finished, timed out, unresponsive or cancelled)."""


class StoreUnavailable(VoltlineError):
    """The store cannot be reached or opened."""


class SchemaOutOfDate(StoreUnavailable):
    """The database's schema revision is not the one this Voltline needs.

    `current` is the database's revision (None: no Voltline schema yet), `head` the one
    needed; `newer` is True when a newer Voltline migrated the database past `head`.
    """

    def __init__(self, message: str, *, current: str | None, head: str, newer: bool = False) -> None:
        super().__init__(message)
        self.current = current
        self.head = head
        self.newer = newer
