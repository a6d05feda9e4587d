"""The Voltline store server: every `Store` operation over HTTP, plus OTLP trace ingest.

`voltline store serve --db URL` runs it; `voltline.connect("http://host:port")` talks to it.
FastAPI and uvicorn load on first use of these names (not on `import voltline`, nor on
`voltline --help`), so the rest of Voltline stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["API_PREFIX", "LOOPBACK_HOSTS", "ServerThread", "create_app", "serve"]

_WHERE = {
    "API_PREFIX": ".app",
    "create_app": ".app",
    "LOOPBACK_HOSTS": ".run",
    "ServerThread": ".run",
    "serve": ".run",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'voltline.server' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_WHERE[name], __name__), name)
