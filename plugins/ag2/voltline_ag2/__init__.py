"""Voltline capture for classic AutoGen (`autogen.ConversableAgent`, ag2 0.9-0.14).

Installed through the `voltline` entry point `ag2`; `voltline.instrument()` turns it on.
Tested with ag2 0.14.0.
"""

from ._integration import AG2Integration

__all__ = ["AG2Integration"]
__version__ = "0.1.0"
