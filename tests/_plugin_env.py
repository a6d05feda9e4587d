"""Running tests with only some Voltline plugins loaded (tests only)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from voltline import _plugins


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
