"""The hooks a Voltline plugin may implement.

A plugin is a module (or object) named by an entry point in the group ``voltline``::

    [project.entry-points.voltline]
    myplugin = "my_package.voltline_plugin"

Inside it, decorate functions with :data:`hookimpl`. Every hook follows the same
"register callback" shape: Voltline calls the hook with a ``register`` function and the
plugin calls ``register(...)`` once per thing it provides::

    from voltline.hookspecs import hookimpl

    @hookimpl
    def register_integrations(register):
        register(MyFrameworkIntegration())

Hooks run lazily (when Voltline first needs integrations, algorithms or exporters) and
may run more than once, so they should be cheap and free of side effects: do the real
work in ``Integration.install``, not at import or registration time. A hook that raises
is logged and skipped; it never stops other plugins.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import pluggy

if TYPE_CHECKING:
    from voltline._models import Span
    from voltline.algorithms import Algorithm

__all__ = [
    "Exporter",
    "Integration",
    "hookimpl",
    "hookspec",
    "installed_in",
    "register_algorithms",
    "register_exporters",
    "register_integrations",
]

hookspec = pluggy.HookspecMarker("voltline")
hookimpl = pluggy.HookimplMarker("voltline")


@runtime_checkable
class Integration(Protocol):
    """Instrumentation for one agent framework (LangChain, AutoGen, ...).

    ``name`` is unique across all plugins (it is what users see in ``voltline plugins``).
    ``available()`` answers "can this be installed here?": the framework is importable and
    its version is supported (:func:`installed_in` checks a version range). It must not raise
    for a missing framework, and must not install anything. ``install(emitter)`` hooks the
    framework globally so that its activity is recorded as spans through the capture API
    (``voltline.start_span``, ``SpanHandle.end``, ``voltline.emit_*``), which files them
    through the process-wide emitter. ``emitter`` is the one :func:`voltline.instrument` was
    given (by default that same process-wide one); it is for counters, not spans: the built-in
    plugins call ``emitter.count("capture_errors")`` when their capture code fails, and
    LangChain's also ``emitter.count("outside_rollout")``. ``uninstall()`` undoes exactly what
    ``install`` did. Voltline calls ``install`` at most once until the matching ``uninstall``.
    """

    name: str

    def available(self) -> bool: ...

    def install(self, emitter: Any) -> None: ...

    def uninstall(self) -> None: ...


def installed_in(distribution: str, specifier: str) -> bool:
    """Whether ``distribution`` is installed at a version the PEP 440 ``specifier`` allows.

    The check ``Integration.available()`` makes, written like the plugin's own dependency in
    its ``pyproject.toml`` (``installed_in("crewai", ">=1.15,<2")``), so the two can be held
    equal by a test. A pre-release counts when the range allows it (``0.14.1rc1`` is in
    ``>=0.14,<0.15``; ``0.15.0rc1`` is not). False when the distribution is not installed or
    its version is not PEP 440.
    """
    # Imported here: every plugin imports this module when Voltline loads plugins.
    from importlib.metadata import PackageNotFoundError, version

    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    try:
        found = Version(version(distribution))
    except (PackageNotFoundError, InvalidVersion):
        return False
    return SpecifierSet(specifier).contains(found, prereleases=True)


@runtime_checkable
class Exporter(Protocol):
    """An observer of finished spans (e.g. forwarding to an OpenTelemetry collector).

    ``export(spans)`` is called with spans only after they are durably stored, so an
    exporter can never lose or alter training data; an exporter that raises is logged and
    does not affect the store. Exporters must not block for long: they run on the
    emitter's flush path.
    """

    def export(self, spans: Sequence[Span]) -> None: ...


@hookspec
def register_integrations(register: Callable[[Integration], None]) -> None:
    """Call ``register(integration)`` for each framework integration this plugin provides.

    ``voltline.instrument()`` installs every registered integration whose ``available()``
    is true. Registering is cheap and must not import the framework eagerly if that is
    slow; check importability in ``available()``.
    """


@hookspec
def register_algorithms(register: Callable[[str, type[Algorithm]], None]) -> None:
    """Call ``register(name, cls)`` for each training algorithm this plugin provides.

    ``cls`` is a subclass of :class:`voltline.algorithms.Algorithm`; ``name`` is what
    ``voltline.algorithms.get(name)`` accepts. Equivalent to the entry-point group
    ``voltline.algorithms``; use whichever suits the package.
    """


@hookspec
def register_exporters(register: Callable[[Exporter], None]) -> None:
    """Call ``register(exporter)`` for each span exporter this plugin provides.

    Exporters are observers only: see :class:`Exporter`.
    """
