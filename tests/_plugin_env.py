"""Helpers the plugin tests share (tests only): running with only some Voltline plugins loaded,
and a store that is briefly unreachable."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from voltline import StoreUnavailable, _plugins
from voltline._sqlstore import SqlStore


@contextmanager
def only_plugins(*names: str) -> Iterator[None]:
    """Load only the named plugins, so other framework plugins installed here are never patched
    in; whatever happens, uninstrument and put the environment back afterwards."""
    keys = (_plugins.ALLOW_ENV, _plugins.DISABLE_ENV)
    saved = {key: os.environ.get(key) for key in keys}
    os.environ[_plugins.ALLOW_ENV] = ",".join(names)
    os.environ.pop(_plugins.DISABLE_ENV, None)
    _plugins.plugin_manager(refresh=True)
    try:
        yield
    finally:
        _plugins.uninstrument()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _plugins.plugin_manager(refresh=True)


class UnreachableStore(SqlStore):
    """A real store that is unreachable for its first two span writes (the emitter retries)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.failed = 0

    def add_spans(self, spans: Any) -> int:
        if self.failed < 2:
            self.failed += 1
            raise StoreUnavailable("connection refused")
        return super().add_spans(spans)
