"""Join proxy records to the LLM spans framework plugins capture, on the completion id.

A plugin sees the call from the agent's side (messages, agent name, parent span) but rarely
the token ids; the proxy sees the ids but not the agent. Both know `gen_ai.response.id`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["TOKEN_ATTRIBUTES", "join_token_ids"]

TOKEN_ATTRIBUTES = (
    "prompt_token_ids",
    "response_token_ids",
    "response_logprobs",
    "voltline.token_ids_source",
)


def _is_proxy(span: Any) -> bool:
    return span.attributes.get("voltline.source") == "proxy"


def join_token_ids(spans: Iterable[Any], *, keep_joined_proxy_spans: bool = False) -> list[Any]:
    """Copy token ids from proxy spans onto plugin `llm` spans with the same `gen_ai.response.id`.

    Returns the spans in their order, the plugin spans updated (new `Span` objects, with
    `voltline.joined_from` naming the proxy span). A proxy span that was joined is left out
    unless `keep_joined_proxy_spans`, so each call appears once; unjoined proxy spans stay
    (the agent may call the model without a plugin). Token ids a plugin span already has win.
    """
    spans = list(spans)
    by_id: dict[tuple[str, str], Any] = {}
    for span in spans:
        rid = span.attributes.get("gen_ai.response.id")
        # Several choices share an id; the first (choice 0) is the one a plugin reports.
        if _is_proxy(span) and rid and span.attributes.get("gen_ai.response.choice_index", 0) == 0:
            by_id.setdefault((span.rollout_id, rid), span)
    joined: set[str] = set()
    out = []
    for span in spans:
        rid = span.attributes.get("gen_ai.response.id")
        source = by_id.get((span.rollout_id, rid)) if rid else None
        if span.kind != "llm" or _is_proxy(span) or source is None:
            out.append(span)
            continue
        attrs = dict(span.attributes)
        for key in TOKEN_ATTRIBUTES:
            if attrs.get(key) is None and key in source.attributes:
                attrs[key] = source.attributes[key]
        attrs["voltline.joined_from"] = source.span_id
        joined.add(source.span_id)
        out.append(span.model_copy(update={"attributes": attrs}))
    if keep_joined_proxy_spans:
        return out
    return [s for s in out if s.span_id not in joined or not _is_proxy(s)]
