"""Prompt templates: `str.format` placeholders, checked so a rewrite cannot drop one."""

from __future__ import annotations

import string
from typing import Any

__all__ = ["placeholders", "render"]


def placeholders(template: str) -> frozenset[str] | None:
    """The field names of `template` (`{question}` -> "question"), or None if it does not parse
    (an unbalanced brace): such a template would raise in the agent, so it is never published."""
    try:
        return frozenset(name for _, name, _, _ in string.Formatter().parse(template) if name is not None)
    except ValueError:
        return None


def render(template: str, **values: Any) -> str:
    """Fill `template`'s placeholders; a placeholder without a value is left as written, so an
    optimizer's new template never crashes the agent that renders it."""

    class _Keep(dict[str, Any]):
        def __missing__(self, key: str) -> str:
            return "{" + key + "}"

    try:
        return template.format_map(_Keep(values))
    except (ValueError, IndexError, AttributeError, KeyError):
        return template
