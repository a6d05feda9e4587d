"""Entry point `ag2` in the `voltline` group: registers the classic-AutoGen integration.

Importing this module must stay cheap and must not import AutoGen: `available()` does that.
"""

from __future__ import annotations

from collections.abc import Callable

from voltline.hookspecs import Integration, hookimpl

from ._integration import AG2Integration


@hookimpl
def register_integrations(register: Callable[[Integration], None]) -> None:
    register(AG2Integration())
