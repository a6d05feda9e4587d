"""Reversible method wrapping over a class hierarchy, including subclasses defined later.

AutoGen's extension points are abstract base classes (`ChatCompletionClient`, `BaseChatAgent`,
`BaseTool`): each concrete class defines its own `create`, `on_messages_stream`, ... So the
wrapper goes on every class of the hierarchy that defines the method itself, and a temporary
`__init_subclass__` on the base catches classes imported after `install()`. `uninstall()`
puts back exactly the objects that were in each class's `__dict__`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

from ._guard import capture_failed

__all__ = ["SKIP_MARKER", "MethodPatcher"]

# A class with this attribute set in its own body is never wrapped (Voltline's own wrappers).
SKIP_MARKER = "__voltline_skip__"
_ORIGINAL = "__voltline_original__"


def _hierarchy(base: type) -> Iterator[type]:
    seen: set[type] = set()
    stack = [base]
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        yield cls
        stack.extend(cls.__subclasses__())


class MethodPatcher:
    """Wraps `names` on `base` and its subclasses with `make(name, original) -> wrapper`."""

    def __init__(self, base: type, names: tuple[str, ...], make: Callable[[str, Any], Any]) -> None:
        self.base = base
        self.names = names
        self.make = make
        self._patched: list[tuple[type, str, Any, Any]] = []  # (cls, name, original, wrapper)
        self._hook_was_own = False
        self._old_hook: Any = None
        self.installed = False

    def _patch_class(self, cls: type) -> None:
        if cls.__dict__.get(SKIP_MARKER):
            return
        for name in self.names:
            original = cls.__dict__.get(name)
            # Abstract declarations stay untouched: wrapping one would make it look implemented.
            if not inspect.isfunction(original) or getattr(original, "__isabstractmethod__", False):
                continue
            if getattr(original, _ORIGINAL, None) is not None:  # already ours
                continue
            wrapper = self.make(name, original)
            setattr(wrapper, _ORIGINAL, original)
            setattr(cls, name, wrapper)
            self._patched.append((cls, name, original, wrapper))

    def install(self) -> None:
        for cls in list(_hierarchy(self.base)):
            self._patch_class(cls)
        base = self.base
        self._hook_was_own = "__init_subclass__" in base.__dict__
        self._old_hook = base.__dict__.get("__init_subclass__")
        old_hook, patch_class = self._old_hook, self._patch_class

        def __init_subclass__(cls: type, **kwargs: Any) -> None:
            if old_hook is not None:
                old_hook.__get__(None, cls)(**kwargs)
            else:
                super(base, cls).__init_subclass__(**kwargs)  # type: ignore[misc]
            try:
                patch_class(cls)
            except Exception:
                capture_failed(f"patching {cls.__qualname__}")

        base.__init_subclass__ = classmethod(__init_subclass__)  # type: ignore[assignment,method-assign]
        self.installed = True

    def uninstall(self) -> None:
        if not self.installed:
            return
        if self._hook_was_own:
            base_hook = self._old_hook
            type.__setattr__(self.base, "__init_subclass__", base_hook)
        else:
            type.__delattr__(self.base, "__init_subclass__")
        for cls, name, original, wrapper in reversed(self._patched):
            # Someone else may have wrapped ours since; unwrapping under them would drop theirs.
            if cls.__dict__.get(name) is wrapper:
                setattr(cls, name, original)
        self._patched.clear()
        self.installed = False

    def patched_classes(self) -> list[tuple[type, str]]:
        return [(cls, name) for cls, name, _, _ in self._patched]
