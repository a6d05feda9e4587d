"""Voltline capture for AutoGen (autogen-agentchat 0.7).

`voltline.instrument()` installs it globally (entry point `autogen`); the explicit form is
`VoltlineChatCompletionClient(inner_client)`. See docs/plugins/autogen.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import VoltlineChatCompletionClient
    from .plugin import AutoGenIntegration

__all__ = ["AutoGenIntegration", "VoltlineChatCompletionClient"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Lazy: the plugin is loaded for every `voltline` entry-point scan; AutoGen is imported
    # only when something here is actually used.
    if name == "VoltlineChatCompletionClient":
        from .client import VoltlineChatCompletionClient

        return VoltlineChatCompletionClient
    if name == "AutoGenIntegration":
        from .plugin import AutoGenIntegration

        return AutoGenIntegration
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
