"""Entry point `ag2` in the `voltline` group: registers the classic-AutoGen integration.

Importing this module must stay cheap and must not import AutoGen: `available()` does that.
"""

from __future__ import annotations

from collections.abc import Callable

from voltline.hookspecs import Integration, hookimpl

from ._integration import SUPPORTED, AG2Integration

__all__ = ["SUPPORTED", "AG2Integration", "register_integrations"]


@hookimpl
def register_integrations(register: Callable[[Integration], None]) -> None:
    register(AG2Integration())
