"""Plugin discovery (entry-point group ``voltline``) and framework instrumentation.

There is one :class:`pluggy.PluginManager`, built on first use. Entry points are loaded
one at a time so that a broken plugin is logged, reported by :func:`plugins` and skipped,
never fatal.

Environment variables (read when the manager is built):

``VOLTLINE_PLUGINS``
    Comma-separated allow-list of entry-point names; if set (non-empty), only those load.
``VOLTLINE_DISABLE_PLUGINS``
    Comma-separated block-list of entry-point names; these never load. Wins over the allow-list.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Literal

import pluggy

from voltline import hookspecs
from voltline.hookspecs import Exporter, Integration

__all__ = [
    "IntegrationInfo",
    "PluginInfo",
    "collect_registrations",
    "exporters",
    "installed",
    "instrument",
    "integrations",
    "plugin_manager",
    "plugins",
    "uninstrument",
]

logger = logging.getLogger("voltline.plugins")

ENTRY_POINT_GROUP = "voltline"
ALLOW_ENV = "VOLTLINE_PLUGINS"
DISABLE_ENV = "VOLTLINE_DISABLE_PLUGINS"


@dataclass(frozen=True)
class IntegrationInfo:
    """One integration as ``voltline plugins`` shows it."""

    name: str
    available: bool
    installed: bool
    error: str | None = None  # set when ``available()`` raised


@dataclass(frozen=True)
class PluginInfo:
    """What happened to one plugin.

    ``status`` is ``"loaded"``, ``"failed"`` (import or registration raised) or
    ``"disabled"`` (filtered out by ``VOLTLINE_PLUGINS`` / ``VOLTLINE_DISABLE_PLUGINS``).
    ``error`` says why it failed or was disabled, or that one of its register hooks raised.
    ``distribution``/``version`` are None for plugins registered directly on the manager.
    """

    name: str
    distribution: str | None
    version: str | None
    status: Literal["loaded", "failed", "disabled"]
    error: str | None = None
    integrations: tuple[IntegrationInfo, ...] = ()

    @property
    def loaded(self) -> bool:
        return self.status == "loaded"


# One lock for the manager and the installed set: instrument() may race with a lazy build
# from another thread, and installing twice would double-emit every span.
_lock = threading.RLock()
_pm: pluggy.PluginManager | None = None
_load_results: list[PluginInfo] = []
# Kept apart from the manager so that rebuilding it never loses track of what must be uninstalled.
_installed: dict[str, Integration] = {}


def _env_names(var: str) -> set[str] | None:
    """Names in a comma-separated env var; None when unset or blank (blank means "no filter")."""
    names = {part.strip() for part in os.environ.get(var, "").split(",") if part.strip()}
    return names or None


def _describe(ep: EntryPoint) -> tuple[str | None, str | None, str]:
    dist = ep.dist
    name, version = (dist.name, dist.version) if dist is not None else (None, None)
    where = f"entry point {ep.name} = {ep.value}"
    if name:
        where += f" from distribution {name} {version}"
    return name, version, where


def _build() -> tuple[pluggy.PluginManager, list[PluginInfo]]:
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    allow, block = _env_names(ALLOW_ENV), _env_names(DISABLE_ENV)
    results: list[PluginInfo] = []
    seen: set[str] = set()
    # Sorted so load order (and so integration order) does not depend on sys.path order.
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        seen.add(ep.name)
        dist, version, where = _describe(ep)
        if block is not None and ep.name in block:
            results.append(PluginInfo(ep.name, dist, version, "disabled", f"listed in {DISABLE_ENV}"))
            continue
        if allow is not None and ep.name not in allow:
            results.append(PluginInfo(ep.name, dist, version, "disabled", f"not listed in {ALLOW_ENV}"))
            continue
        try:
            pm.register(ep.load(), name=ep.name)
        except Exception as exc:  # any error in third-party code: report and carry on
            error = f"{type(exc).__name__}: {exc}"
            remedy = f"pip uninstall {dist}" if dist else "remove it"
            logger.error(
                "Voltline plugin %r (%s) failed to load and was skipped: %s. "
                "Upgrade or fix that distribution, %s, or set %s=%s to skip it silently.",
                ep.name,
                where,
                error,
                remedy,
                DISABLE_ENV,
                ep.name,
            )
            logger.debug("traceback for plugin %r", ep.name, exc_info=True)
            results.append(PluginInfo(ep.name, dist, version, "failed", error))
            continue
        results.append(PluginInfo(ep.name, dist, version, "loaded"))
    if allow is not None and (missing := allow - seen):
        logger.warning(
            "%s names %s, but no installed distribution provides such a voltline entry point",
            ALLOW_ENV,
            ", ".join(sorted(missing)),
        )
    return pm, results


def plugin_manager(refresh: bool = False) -> pluggy.PluginManager:
    """The process-wide plugin manager, built (hookspecs + entry points) on first call.

    ``refresh=True`` rebuilds it, re-reading entry points and the environment variables;
    integrations already installed stay installed and are still removed by :func:`uninstrument`.
    Plugins may also be added with ``plugin_manager().register(obj, name=...)``.
    """
    global _pm, _load_results
    with _lock:
        if _pm is None or refresh:
            _pm, _load_results = _build()
        return _pm


def collect_registrations(
    hook_name: str, make_register: Callable[[str], Callable[..., None]]
) -> dict[str, str]:
    """Call each implementation of the ``register_*`` hook ``hook_name`` separately.

    ``make_register(plugin_name)`` returns the ``register`` callback handed to that plugin,
    so callers know who registered what. Each implementation is called on its own, rather
    than through ``pm.hook``, so that one raising plugin cannot hide the others' results.
    Returns ``{plugin_name: error}`` for implementations that raised (already logged).
    """
    pm = plugin_manager()
    errors: dict[str, str] = {}
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        if impl.hookwrapper or impl.wrapper:  # wrappers make no sense for register hooks
            continue
        args = {"register": make_register(impl.plugin_name)}
        try:
            impl.function(*(args[name] for name in impl.argnames))
        except Exception as exc:
            errors[impl.plugin_name] = f"{hook_name} raised {type(exc).__name__}: {exc}"
            logger.error(
                "Voltline plugin %r: %s; its registrations were skipped. Report this to its authors.",
                impl.plugin_name,
                errors[impl.plugin_name],
                exc_info=True,
            )
    return errors


def _integrations_by_plugin() -> tuple[list[tuple[str, Integration]], dict[str, str]]:
    found: list[tuple[str, Integration]] = []
    names: dict[str, str] = {}

    def make_register(plugin: str) -> Callable[[Integration], None]:
        def register(integration: Integration) -> None:
            name = getattr(integration, "name", None)
            if not isinstance(integration, Integration) or not isinstance(name, str) or not name:
                logger.error(
                    "Voltline plugin %r registered %r, which is not an Integration (needs a non-empty "
                    "str `name`, available(), install(emitter), uninstall()); ignored.",
                    plugin,
                    integration,
                )
            elif name in names:
                logger.error(
                    "Voltline plugins %r and %r both register an integration named %r; keeping the first.",
                    names[name],
                    plugin,
                    name,
                )
            else:
                names[name] = plugin
                found.append((plugin, integration))

        return register

    errors = collect_registrations("register_integrations", make_register)
    return found, errors


def integrations() -> list[Integration]:
    """Every integration registered by loaded plugins (available or not), in plugin order."""
    return [integration for _, integration in _integrations_by_plugin()[0]]


def exporters() -> list[Exporter]:
    """Every span exporter registered by loaded plugins (see ``hookspecs.Exporter``)."""
    found: list[Exporter] = []

    def make_register(plugin: str) -> Callable[[Exporter], None]:
        def register(exporter: Exporter) -> None:
            if isinstance(exporter, Exporter):
                found.append(exporter)
            else:
                logger.error(
                    "Voltline plugin %r registered %r, which has no export(spans); ignored.", plugin, exporter
                )

        return register

    collect_registrations("register_exporters", make_register)
    return found


def _check_available(integration: Integration) -> tuple[bool, str | None]:
    try:
        return bool(integration.available()), None
    except Exception as exc:
        error = f"available() raised {type(exc).__name__}: {exc}"
        logger.error("Voltline integration %r: %s; treating it as unavailable.", integration.name, error)
        return False, error


def plugins() -> list[PluginInfo]:
    """Every plugin found (loaded, failed or disabled) with its integrations, for ``voltline plugins``.

    Calls each integration's ``available()``; plugins registered directly on the manager
    (not through an entry point) are listed too, with no distribution.
    """
    with _lock:
        pm = plugin_manager()
        results = list(_load_results)
        found, hook_errors = _integrations_by_plugin()
        by_plugin: dict[str, list[IntegrationInfo]] = {}
        for plugin, integration in found:
            ok, error = _check_available(integration)
            info = IntegrationInfo(integration.name, ok, integration.name in _installed, error)
            by_plugin.setdefault(plugin, []).append(info)
        known = {info.name for info in results}
        for name, _ in pm.list_name_plugin():
            if name not in known:
                results.append(PluginInfo(name, None, None, "loaded"))
        return [
            PluginInfo(
                info.name,
                info.distribution,
                info.version,
                info.status,
                info.error or hook_errors.get(info.name),
                tuple(by_plugin.get(info.name, ())),
            )
            for info in results
        ]


def instrument(emitter: Any = None) -> list[str]:
    """Install every available integration that is not installed yet; return their names.

    Each integration's ``install()`` receives ``emitter`` (default: the process-wide one from
    ``voltline._emitter.get_emitter()``) for its counters: the built-in plugins call
    ``emitter.count("capture_errors")`` on it (LangChain's also ``"outside_rollout"``). Spans do
    not go through it: integrations record them with the capture API (``voltline.start_span``,
    ``SpanHandle.end``, ``voltline.emit_*``), which files them through the process-wide emitter.
    An integration whose ``available()`` or ``install()`` raises is logged and skipped.
    Calling it again is harmless: already-installed integrations are left alone.
    """
    if emitter is None:
        from voltline._emitter import get_emitter  # lazy: the emitter pulls in the store

        emitter = get_emitter()
    done: list[str] = []
    with _lock:
        for plugin, integration in _integrations_by_plugin()[0]:
            name = integration.name
            if name in _installed or not _check_available(integration)[0]:
                continue
            try:
                integration.install(emitter)
            except Exception as exc:
                logger.error(
                    "Voltline integration %r failed to install and was skipped: %s: %s. "
                    "Its framework will not be traced; set %s=%s to skip that plugin.",
                    name,
                    type(exc).__name__,
                    exc,
                    DISABLE_ENV,
                    plugin,
                    exc_info=True,
                )
                continue
            _installed[name] = integration
            done.append(name)
    return done


def uninstrument() -> list[str]:
    """Uninstall every integration installed by :func:`instrument` (newest first); return their names.

    An ``uninstall()`` that raises is logged; the integration is forgotten either way, since
    retrying a half-done uninstall is not safer than leaving it.
    """
    done: list[str] = []
    with _lock:
        for name in reversed(list(_installed)):
            integration = _installed.pop(name)
            try:
                integration.uninstall()
            except Exception as exc:
                logger.error(
                    "Voltline integration %r failed to uninstall: %s: %s",
                    name,
                    type(exc).__name__,
                    exc,
                    exc_info=True,
                )
                continue
            done.append(name)
    return done


def installed() -> list[str]:
    """Names of the integrations currently installed, in install order."""
    with _lock:
        return list(_installed)
