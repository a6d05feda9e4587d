"""Training algorithms: the :class:`Algorithm` base class and the algorithm registry.

An algorithm turns finished trajectories into new versions of the resources it owns
(a prompt template, a LoRA adapter, ...). Algorithms are found by name from three sources,
all treated alike (built-in algorithms use them too):

* the :func:`register` decorator, for classes defined in an imported module;
* the entry-point group ``voltline.algorithms``: ``name = "package.module:Class"``;
* the plugin hook ``register_algorithms(register)`` (see :mod:`voltline.hookspecs`).

``VOLTLINE_PLUGINS`` / ``VOLTLINE_DISABLE_PLUGINS`` filter plugins (and so their hook);
the ``voltline.algorithms`` entry points are only imported when looked up, so are not filtered.
"""

from __future__ import annotations

import abc
import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from voltline import _plugins

__all__ = [
    "Algorithm",
    "AlgorithmInfo",
    "AlgorithmLoadError",
    "NewResource",
    "StepResult",
    "UnknownAlgorithmError",
    "available",
    "get",
    "register",
]

logger = logging.getLogger("voltline.plugins")

ENTRY_POINT_GROUP = "voltline.algorithms"

ResourceKindName = Literal["prompt_template", "llm", "lora_adapter", "few_shot", "json"]


class NewResource(BaseModel):
    """A new version of a resource, proposed by :meth:`Algorithm.step`; the store numbers it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    kind: ResourceKindName
    payload: Any = Field(description="JSON-serializable content (template text, model config, ...)")
    artifact: bytes | None = Field(default=None, description="binary content, e.g. adapter weights")
    metrics: dict[str, float] = Field(default_factory=dict)

    @field_validator("payload")
    @classmethod
    def _payload_is_json(cls, value: Any) -> Any:
        # Checked here, where the algorithm author can see the mistake, not later in the store.
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"payload must be JSON-serializable: {exc}") from None
        return value


class StepResult(BaseModel):
    """What one :meth:`Algorithm.step` produced: new resource versions and step metrics."""

    model_config = ConfigDict(extra="forbid")

    resources: list[NewResource] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)


class Algorithm(abc.ABC):
    """Base class for training algorithms.

    Subclasses set ``name`` (or get it from :func:`register`), optionally ``resources``
    (the names of the resources they own by default) and implement :meth:`step`.
    Extra keyword arguments to the constructor are kept in ``self.config``.

    ``needs_token_ids``: True (the default) when the algorithm trains on exact token ids; the
    Trainer then leaves out rollouts whose turns lack them. An algorithm that reads only text
    and rewards (prompt optimization) sets it False and also receives turns without ids (empty
    id lists, with the call's ``input_messages`` / ``output_messages``).
    """

    name: ClassVar[str]
    resources: ClassVar[tuple[str, ...]] = ()
    needs_token_ids: ClassVar[bool] = True

    def __init__(self, *, resources: Sequence[str] | None = None, **config: Any) -> None:
        # A bare string is a Sequence[str] of characters: almost certainly a mistake.
        if isinstance(resources, str):
            raise TypeError(f"resources must be a sequence of names, not the string {resources!r}")
        self._owned = tuple(type(self).resources if resources is None else resources)
        self.config: dict[str, Any] = config

    @property
    def owned_resources(self) -> tuple[str, ...]:
        """Names of the resources this instance may publish new versions of."""
        return self._owned

    @abc.abstractmethod
    def step(self, trajectories: Sequence[Any]) -> StepResult:
        """Learn from ``trajectories`` and return new versions of owned resources, if any.

        Must only return versions of resources in :attr:`owned_resources`; call it through
        :meth:`run_step`, which enforces that.
        """

    def run_step(self, trajectories: Sequence[Any]) -> StepResult:
        """Call :meth:`step` and check its result.

        Raises TypeError if ``step`` did not return a StepResult, and ValueError naming
        the resource if it returned a version of a resource this algorithm does not own
        (two algorithms writing the same resource would silently undo each other).
        """
        result = self.step(trajectories)
        if not isinstance(result, StepResult):
            raise TypeError(f"{_label(self)}.step() returned {type(result).__name__}, expected StepResult")
        for resource in result.resources:
            if resource.name not in self._owned:
                owned = ", ".join(repr(n) for n in self._owned) or "none"
                raise ValueError(
                    f"{_label(self)}.step() returned a new version of resource {resource.name!r}, "
                    f"which it does not own (it owns: {owned}); pass resources=[...] to the constructor "
                    f"or set the class attribute `resources`"
                )
        return result


def _label(algorithm: Algorithm) -> str:
    return f"algorithm {getattr(algorithm, 'name', type(algorithm).__qualname__)!r}"


def _class_path(cls: Any) -> str:
    return f"{getattr(cls, '__module__', '?')}:{getattr(cls, '__qualname__', repr(cls))}"


class UnknownAlgorithmError(KeyError):
    """No algorithm has the requested name. The message lists the names that exist."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


class AlgorithmLoadError(RuntimeError):
    """The requested algorithm exists but could not be loaded (broken entry point, name clash)."""


@dataclass(frozen=True)
class AlgorithmInfo:
    """One algorithm as ``voltline algorithms`` shows it.

    ``source`` is ``"decorator"``, ``"entry point <distribution>"`` or ``"plugin <name>"``.
    ``error`` is set (and ``cls`` is None) when it could not be loaded.
    """

    name: str
    class_path: str
    source: str
    error: str | None = None
    cls: type[Algorithm] | None = None


_lock = threading.Lock()
_decorated: dict[str, type[Algorithm]] = {}

A = TypeVar("A", bound=type[Algorithm])


def _claim_name(cls: type[Algorithm], name: str) -> None:
    # Only if the class does not name itself: a subclass must not inherit its parent's name.
    if "name" not in cls.__dict__:
        cls.name = name


def register(name: str) -> Callable[[A], A]:
    """Class decorator: make an :class:`Algorithm` subclass available as ``get(name)``.

    Sets ``cls.name`` to ``name`` unless the class sets its own. Raises ValueError if
    ``name`` is already registered by a different class (re-running the same class
    definition, e.g. a notebook cell, replaces it).
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"algorithm name must be a non-empty string, got {name!r}")

    def decorator(cls: A) -> A:
        if not (isinstance(cls, type) and issubclass(cls, Algorithm)):
            raise TypeError(f"@register({name!r}) needs an Algorithm subclass, got {cls!r}")
        with _lock:
            other = _decorated.get(name)
            if other is not None and _class_path(other) != _class_path(cls):
                raise ValueError(
                    f"algorithm name {name!r} is already registered by {_class_path(other)}; "
                    f"cannot register {_class_path(cls)} under it, choose another name"
                )
            _decorated[name] = cls
        _claim_name(cls, name)
        return cls

    return decorator


def _catalog(only: str | None = None) -> dict[str, AlgorithmInfo]:
    """Gather algorithms from all sources; ``only`` limits entry-point imports to that name."""
    found: dict[str, AlgorithmInfo] = {}

    def add(name: str, obj: Any, source: str, error: str | None = None) -> None:
        if error is None and not (isinstance(obj, type) and issubclass(obj, Algorithm)):
            error = f"{obj!r} is not an Algorithm subclass"
        path = obj if isinstance(obj, str) else _class_path(obj)
        info = AlgorithmInfo(name, path, source, error, None if error else obj)
        if error:
            logger.error("Voltline algorithm %r (%s, %s) is unavailable: %s", name, path, source, error)
        prior = found.get(name)
        if prior is None:
            found[name] = info
        elif prior.cls is None or info.cls is None or prior.cls is not info.cls:
            # The same class from two sources (an entry point whose module also uses @register)
            # is fine; two different things under one name is ambiguous, so neither is usable.
            clash = f"name clash: {prior.class_path} ({prior.source}) and {info.class_path} ({info.source})"
            logger.error("Voltline algorithm %r: %s; uninstall or rename one of them.", name, clash)
            found[name] = AlgorithmInfo(name, prior.class_path, prior.source, clash)

    # Entry points first: importing them may run @register, and the decorator registry is read last.
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if only is not None and ep.name != only:
            continue
        source = f"entry point {ep.dist.name if ep.dist else '?'}"
        try:
            obj = ep.load()
        except Exception as exc:  # a broken third-party package: report, skip
            add(ep.name, ep.value, source, f"{type(exc).__name__}: {exc}")
            continue
        add(ep.name, obj, source)

    def make_register(plugin: str) -> Callable[[str, type[Algorithm]], None]:
        def register_from_plugin(name: str, cls: type[Algorithm]) -> None:
            add(name, cls, f"plugin {plugin}")

        return register_from_plugin

    _plugins.collect_registrations("register_algorithms", make_register)
    with _lock:
        decorated = dict(_decorated)
    for name, cls in decorated.items():
        add(name, cls, "decorator")
    for info in found.values():
        if info.cls is not None:
            _claim_name(info.cls, info.name)
    return found


def available() -> dict[str, AlgorithmInfo]:
    """Every algorithm from every source, by name (sorted), including ones that failed to load.

    Imports every ``voltline.algorithms`` entry point.
    """
    return dict(sorted(_catalog().items()))


def get(name: str) -> type[Algorithm]:
    """The algorithm class registered as ``name``.

    Raises :class:`UnknownAlgorithmError` (a KeyError) listing the available names if there
    is none, and :class:`AlgorithmLoadError` if it exists but failed to load or the name is
    claimed by two different classes.
    """
    info = _catalog(only=name).get(name)
    if info is None:
        names = sorted(n for n, i in available().items() if i.cls is not None)
        raise UnknownAlgorithmError(
            f"no algorithm named {name!r}; available: {', '.join(names) or 'none'} "
            f"(install a package providing it, or register one with @voltline.algorithms.register)"
        )
    if info.cls is None:
        raise AlgorithmLoadError(f"algorithm {name!r} ({info.source}) cannot be used: {info.error}")
    return info.cls
