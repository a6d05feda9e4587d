"""The LLM proxy: an OpenAI-compatible server that returns, and records, exact token ids.

`voltline serve` runs it; `voltline model init DIR` makes a tiny local model for it. Importing
this package is cheap: torch, transformers and FastAPI load only when a server is built.
"""

from __future__ import annotations

from typing import Any

from .join import join_token_ids

__all__ = ["create_app", "join_token_ids", "local_app", "serve_in_thread", "upstream_app"]


def create_app(backend: Any, store: Any = None) -> Any:
    """The ASGI app serving `backend` (a `LocalBackend` or `UpstreamBackend`)."""
    from .app import create_app as _create

    return _create(backend, store)


def local_app(model_dir: str, *, store: Any = None, adapter: str | None = None, **options: Any) -> Any:
    """An app serving a Hugging Face model directory with transformers."""
    from .localserve import LocalBackend

    return create_app(LocalBackend(model_dir, store=store, adapter=adapter, **options), store)


def upstream_app(base_url: str, *, store: Any = None, **options: Any) -> Any:
    """An app in front of another OpenAI-compatible server."""
    from .upstream import UpstreamBackend

    return create_app(UpstreamBackend(base_url, **options), store)


def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int | None = None) -> Any:
    """Run `app` on a background thread; returns a handle with `.url`, `.base_url(rid, aid)`, `.stop()`."""
    from .server import serve_in_thread as _serve

    return _serve(app, host, port)
