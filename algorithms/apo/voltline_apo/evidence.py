"""What the optimizer LLM is shown about a rollout: its task input, what the agent said, its reward.

Trajectories carry the input and reward; the agent's words live in the rollout's spans
(`gen_ai.output.messages` of `llm` spans, `message.content` of `message` spans), read from the
store when APO has one.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from voltline import Store

log = logging.getLogger("voltline.apo")

__all__ = ["Sample", "agent_output"]

MAX_CHARS = 1200  # per field: the optimizer needs the gist, not a whole transcript


@dataclass(frozen=True)
class Sample:
    """One scored rollout of one template."""

    rollout_id: str
    input: Any
    output: str
    reward: float


def clip(value: Any, limit: int = MAX_CHARS) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def agent_output(store: Store | None, rollout_id: str, attempt_id: str) -> str:
    """The agent's outputs in one attempt, oldest first; "" without a store or on a read error
    (a critique with less evidence beats a failed training step)."""
    if store is None:
        return ""
    try:
        spans = store.query_spans(rollout_id=rollout_id, attempt_id=attempt_id, kind=["llm", "message"])
    except Exception:
        log.warning("voltline-apo: could not read the spans of rollout %s", rollout_id, exc_info=True)
        return ""
    parts = []
    for span in spans:
        attrs = span.attributes
        value = attrs.get("gen_ai.output.messages") if span.kind == "llm" else attrs.get("message.content")
        if value is not None:
            parts.append(_as_text(value))
    return clip("\n".join(p for p in parts if p))


def _as_text(value: Any) -> str:
    # OpenTelemetry GenAI output messages: [{"role": ..., "parts": [{"type": "text", "content": ...}]}]
    # or the older {"role", "content"} shape; anything else is shown as JSON.
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, list):
        texts = []
        for item in value:
            if isinstance(item, dict) and isinstance(item.get("content"), str):
                texts.append(item["content"])
            elif isinstance(item, dict) and isinstance(item.get("parts"), list):
                texts += [
                    p["content"]
                    for p in item["parts"]
                    if isinstance(p, dict) and isinstance(p.get("content"), str)
                ]
            else:
                texts.append(json.dumps(item, default=str, ensure_ascii=False))
        return "\n".join(texts)
    return json.dumps(value, default=str, ensure_ascii=False)
