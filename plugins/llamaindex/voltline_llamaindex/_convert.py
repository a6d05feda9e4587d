"""LlamaIndex payloads (messages, responses, tool outputs, nodes) to span attributes.

Everything is read duck-typed (attribute or key, whichever the object has) rather than by
isinstance checks against llama_index classes, so a provider's raw response as an SDK
object or a plain dict, and fields a newer release adds or drops, read the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from voltline import capture

__all__ = [
    "get",
    "jsonable",
    "llm_response_attributes",
    "message_dict",
    "messages",
    "nodes",
    "output_messages",
    "provider_name",
    "query_text",
]

_MAX_TEXT = 4_000  # retrieved node text is context, not training data: keep a preview only


def get(obj: Any, *path: str | int) -> Any:
    """`obj.a.b` or `obj["a"]["b"]` (mixed freely); None where any step is missing."""
    for key in path:
        if obj is None:
            return None
        if isinstance(key, int):
            try:
                obj = obj[key]
            except (IndexError, KeyError, TypeError):
                return None
        elif isinstance(obj, Mapping):
            obj = obj.get(key)
        else:
            obj = getattr(obj, key, None)
    return obj


def jsonable(value: Any) -> Any:
    """A JSON-friendly copy (`voltline.capture.jsonable`): unknown objects (a workflow Context
    passed to a tool, say) as their type name rather than a repr that may be huge."""
    return capture.jsonable(value, fallback=capture.type_name)


def _role(message: Any) -> str | None:
    role = get(message, "role")
    return getattr(role, "value", role)


def _text(message: Any) -> str | None:
    try:
        return get(message, "content")  # a property joining the text blocks
    except Exception:  # a block type this version cannot render as text
        return None


def _tool_calls(message: Any) -> list[dict[str, Any]]:
    calls = []
    for block in get(message, "blocks") or ():
        if get(block, "block_type") == "tool_call":
            calls.append(
                {
                    "id": get(block, "tool_call_id"),
                    "name": get(block, "tool_name"),
                    "arguments": jsonable(get(block, "tool_kwargs")),
                }
            )
    if calls:
        return calls
    # Provider integrations (OpenAI and friends) keep the SDK's tool-call objects here.
    for call in get(message, "additional_kwargs", "tool_calls") or ():
        calls.append(
            {
                "id": get(call, "id") or get(call, "tool_id"),
                "name": get(call, "function", "name") or get(call, "tool_name"),
                "arguments": jsonable(get(call, "function", "arguments") or get(call, "tool_kwargs")),
            }
        )
    return calls


def message_dict(message: Any) -> dict[str, Any]:
    """One chat message as `{"role", "content"[, "tool_calls"][, "tool_call_id"]}`."""
    out: dict[str, Any] = {"role": _role(message), "content": _text(message)}
    if calls := _tool_calls(message):
        out["tool_calls"] = calls
    if call_id := get(message, "additional_kwargs", "tool_call_id"):
        out["tool_call_id"] = call_id
    return out


def messages(items: Iterable[Any] | None) -> list[dict[str, Any]]:
    return [message_dict(m) for m in items or ()]


def _first_int(*values: Any) -> int | None:
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _finish_reason(raw: Any) -> Any:
    return get(raw, "choices", 0, "finish_reason") or get(raw, "stop_reason") or get(raw, "finish_reason")


def output_messages(response: Any, *, chat: bool = True) -> list[dict[str, Any]] | None:
    """`gen_ai.output.messages` of a Chat/CompletionResponse: its one message, with the
    finish reason; None without a response."""
    if response is None:
        return None
    if chat:
        output = message_dict(get(response, "message"))
    else:
        output = {"role": "assistant", "content": get(response, "text")}
    if finish := _finish_reason(get(response, "raw")):
        output["finish_reason"] = finish
    return [output]


def llm_response_attributes(response: Any) -> dict[str, Any]:
    """Usage, id, model, finish reason and (vLLM-style) token ids of a Chat/CompletionResponse;
    its message is `output_messages`.

    `raw` is the provider's response (the last chunk when streaming); token counts are in
    `raw.usage` (OpenAI: prompt/completion_tokens; Anthropic: input/output_tokens) and, for
    most integrations, copied into `additional_kwargs`.
    """
    if response is None:
        return {}
    raw, extra = get(response, "raw"), get(response, "additional_kwargs") or {}
    usage = get(raw, "usage")
    finish = _finish_reason(raw)
    attrs: dict[str, Any] = {
        "gen_ai.usage.input_tokens": _first_int(
            get(usage, "prompt_tokens"),
            get(usage, "input_tokens"),
            get(extra, "prompt_tokens"),
            get(extra, "input_tokens"),
        ),
        "gen_ai.usage.output_tokens": _first_int(
            get(usage, "completion_tokens"),
            get(usage, "output_tokens"),
            get(extra, "completion_tokens"),
            get(extra, "output_tokens"),
        ),
        "gen_ai.response.id": get(raw, "id"),
        "gen_ai.response.model": get(raw, "model"),
        "gen_ai.response.finish_reasons": [finish] if finish else None,
        # An OpenAI-compatible server that returns token ids (vLLM, the Voltline proxy).
        "prompt_token_ids": get(raw, "prompt_token_ids"),
        "response_token_ids": get(raw, "choices", 0, "token_ids"),
    }
    return {k: v for k, v in attrs.items() if v is not None}


def provider_name(model_dict: Mapping[str, Any] | None, instance: Any) -> str | None:
    """`openai` for `llama_index.llms.openai.base.OpenAI`, else the LLM's class name."""
    module = type(instance).__module__ if instance is not None else ""
    parts = module.split(".")
    if len(parts) > 2 and parts[:2] == ["llama_index", "llms"]:
        return parts[2]
    return (model_dict or {}).get("class_name") or (type(instance).__name__ if instance is not None else None)


def query_text(query: Any) -> str | None:
    """A retriever/query engine input: a str or a QueryBundle."""
    if query is None or isinstance(query, str):
        return query
    return get(query, "query_str") or str(query)


def nodes(items: Iterable[Any] | None) -> list[dict[str, Any]]:
    """Retrieved NodeWithScore objects as `{"id", "score", "content"}`."""
    out = []
    for item in items or ():
        node = get(item, "node") or item
        try:
            content = node.get_content()
        except Exception:
            content = get(node, "text")
        if isinstance(content, str) and len(content) > _MAX_TEXT:
            content = content[:_MAX_TEXT] + "…"
        out.append(
            {"id": get(node, "node_id") or get(node, "id_"), "score": get(item, "score"), "content": content}
        )
    return out
