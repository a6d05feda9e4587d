"""Voltline capture for LangChain and LangGraph.

`voltline.instrument()` records every LangChain run inside a `voltline.rollout(...)` as spans;
or pass `VoltlineCallbackHandler()` in `config={"callbacks": [...]}` for explicit capture.
"""

from .handler import VoltlineCallbackHandler
from .plugin import LangChainIntegration

__all__ = ["LangChainIntegration", "VoltlineCallbackHandler", "__version__"]

__version__ = "0.1.0"
