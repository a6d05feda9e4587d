"""Helpers for capture code, the part of a plugin that runs inside the user's agent.

A framework hands its callbacks whatever objects it has: pydantic models, dataclasses, sets,
SDK objects, even callables. Capture code copies what it records into plain JSON values when
the event happens, so a span holds a snapshot rather than a live object the agent may change,
and the store never has to guess. One copying rule serves core and every plugin; a plugin only
says what becomes of an object that has no JSON form (`fallback`).
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Callable, Mapping
from math import isfinite
from typing import Any

import orjson

__all__ = ["MAX_DEPTH", "jsonable", "shared_jsonable", "tool_arguments", "type_name"]

# Nesting copied before `fallback` takes over: deeper than real data (a tool's JSON schema nests
# a dozen levels or more), shallow enough that a value holding itself ends well before Python's
# recursion limit.
MAX_DEPTH = 64


def jsonable(value: Any, *, fallback: Callable[[Any], Any] = repr, exclude_none: bool = False) -> Any:
    """A JSON-safe copy of `value`.

    Mappings become dicts with text keys; lists, tuples and sets become lists; bytes become
    base64 text; a float JSON cannot hold (NaN, infinity) becomes its text. Pydantic models are
    dumped (`model_dump(mode="json")`, leaving out None fields when `exclude_none`) and
    dataclasses expanded. Anything else, and anything nested deeper than `MAX_DEPTH`, becomes
    `fallback(value)`: its repr unless the caller says otherwise.
    """
    return _copy(value, fallback, exclude_none, 0)


def shared_jsonable(value: Any, convert: Callable[[Any], Any] = jsonable) -> Any:
    """`convert(value)`, as one shared object for every call given the same plain JSON data.

    For values a framework rebuilds, identical, for every call, such as the tool definitions
    bound to each model call: walking them in Python each time cost LangChain capture about a
    point of overhead (docs/benchmarks.md). Their JSON text, made by orjson in C, keys a small
    cache of the copy. Values that are not plain JSON data (objects, dataclasses, datetimes,
    subclasses of built-in types, non-text keys) go through `convert` every time. On the cached
    path UUIDs and enums are kept as their value and a NaN becomes null, where `jsonable` would
    write text. The result is shared: never mutate it.
    """
    try:
        key = orjson.dumps(value, option=_JSON_ONLY)
    except TypeError:
        return convert(value)
    found = _shared.get(key)
    if found is None:
        if len(_shared) >= _SHARED_MAX:  # a few distinct tool sets per agent, not hundreds
            _shared.clear()
        found = _shared[key] = orjson.loads(key)
    return found


def tool_arguments(arguments: Any, *, fallback: Callable[[Any], Any] = repr) -> Any:
    """A tool call's arguments: a JSON string as the object it holds (kept as the string when
    it is not JSON, as a model may send), anything else as `jsonable` copies it."""
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return _copy(arguments, fallback, False, 0)


def type_name(value: Any) -> str:
    """`<TypeName>`: what `jsonable` records for an object it cannot read, and a `fallback` for
    objects whose repr may be huge or say nothing useful."""
    return f"<{type(value).__name__}>"


# With these, orjson refuses dataclasses, datetimes and subclasses of built-in types (which then
# go through `convert`); beyond plain JSON data it takes only UUIDs and enums.
_JSON_ONLY = (
    orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS
)
_SHARED_MAX = 128
_shared: dict[bytes, Any] = {}


def _copy(value: Any, fallback: Callable[[Any], Any], exclude_none: bool, depth: int) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if isfinite(value) else str(value)
    if depth >= MAX_DEPTH:
        return _last_resort(value, fallback)
    depth += 1
    if isinstance(value, Mapping):
        return {
            k if type(k) is str else _last_resort(k, str): _copy(v, fallback, exclude_none, depth)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_copy(v, fallback, exclude_none, depth) for v in value]
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    try:  # an object's own __getattr__ may raise anything
        dump = getattr(value, "model_dump", None)
    except Exception:
        dump = None
    if callable(dump):
        try:
            dumped = dump(mode="json", exclude_none=True) if exclude_none else dump(mode="json")
        except Exception:  # not pydantic's model_dump after all, or a model that cannot dump itself
            pass
        else:
            return _copy(dumped, fallback, exclude_none, depth)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # Field by field rather than dataclasses.asdict, which deep-copies every field first and
        # fails on one that cannot be copied (a lock, an open file).
        fields = {f.name: getattr(value, f.name, None) for f in dataclasses.fields(value)}
        return _copy(fields, fallback, exclude_none, depth)
    return _last_resort(value, fallback)


def _last_resort(value: Any, text: Callable[[Any], Any]) -> Any:
    """`text(value)`, or the type's name when that raises too: one odd object must not cost the
    whole span."""
    try:
        return text(value)
    except Exception:
        return type_name(value)
