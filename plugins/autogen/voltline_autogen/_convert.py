"""AutoGen objects as OpenTelemetry GenAI attribute values (JSON-ready dicts and lists).

Messages follow the GenAI "parts" shape: `{"role", "parts": [{"type": "text", "content"},
{"type": "tool_call", "id", "name", "arguments"}, {"type": "tool_call_response", "id",
"response"}]}`. Anything unexpected (a newer AutoGen's message type) becomes text rather than
an error, so a framework upgrade degrades the record instead of losing it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from voltline import capture

__all__ = [
    "chat_messages",
    "llm_messages",
    "output_messages",
    "parse_arguments",
    "tool_arguments",
    "tool_definitions",
    "tool_result",
]

_ROLES = {
    "SystemMessage": "system",
    "UserMessage": "user",
    "AssistantMessage": "assistant",
    "FunctionExecutionResultMessage": "tool",
}


def parse_arguments(arguments: Any) -> Any:
    """A tool call's JSON argument string as an object; kept as the raw string if it is not JSON."""
    return capture.tool_arguments(arguments)


def _tool_call(call: Any) -> dict[str, Any]:
    return {
        "type": "tool_call",
        "id": getattr(call, "id", None),
        "name": getattr(call, "name", None),
        "arguments": parse_arguments(getattr(call, "arguments", None)),
    }


def _content_parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    parts: list[dict[str, Any]] = []
    for item in content if isinstance(content, list | tuple) else [content]:
        if isinstance(item, str):
            parts.append({"type": "text", "content": item})
        elif type(item).__name__ == "FunctionCall":
            parts.append(_tool_call(item))
        elif type(item).__name__ == "FunctionExecutionResult":
            parts.append({"type": "tool_call_response", "id": item.call_id, "response": item.content})
        elif type(item).__name__ == "Image":
            parts.append({"type": "image"})  # pixels are not training data for a text policy
        else:
            parts.append({"type": "text", "content": str(item)})
    return parts


def llm_messages(messages: Sequence[Any]) -> list[dict[str, Any]]:
    """`autogen_core.models.LLMMessage`s (what a model client receives)."""
    out = []
    for message in messages:
        kind = type(message).__name__
        entry: dict[str, Any] = {"role": _ROLES.get(kind, kind), "parts": _content_parts(message.content)}
        thought = getattr(message, "thought", None)
        if thought:
            entry["parts"].insert(0, {"type": "reasoning", "content": thought})
        source = getattr(message, "source", None)
        if source and kind != "SystemMessage":
            entry["name"] = source
        out.append(entry)
    return out


def output_messages(result: Any) -> list[dict[str, Any]]:
    """A `CreateResult` as GenAI output messages."""
    parts = _content_parts(result.content)
    if getattr(result, "thought", None):
        parts.insert(0, {"type": "reasoning", "content": result.thought})
    return [{"role": "assistant", "parts": parts, "finish_reason": result.finish_reason}]


def chat_messages(messages: Sequence[Any]) -> list[dict[str, Any]]:
    """`autogen_agentchat.messages.BaseChatMessage`s (what agents exchange)."""
    out = []
    for message in messages:
        source = getattr(message, "source", None)
        to_text = getattr(message, "to_text", None)
        text = to_text() if callable(to_text) else str(getattr(message, "content", message))
        out.append(
            {
                "role": "user" if source == "user" else "assistant",
                "name": source,
                "parts": [{"type": "text", "content": text}],
            }
        )
    return out


def tool_definitions(tools: Sequence[Any]) -> list[dict[str, Any]]:
    """Tools offered to the model (`Tool` objects or `ToolSchema` dicts) as their schemas."""
    out = []
    for tool in tools:
        schema = tool if isinstance(tool, dict) else getattr(tool, "schema", None)
        if isinstance(schema, dict):
            out.append({"type": "function", **schema})
    return out


def tool_arguments(args: Any) -> Any:
    """The arguments AutoGen passes to a tool's `run_json` (a mapping) as a plain dict."""
    return dict(args) if hasattr(args, "keys") else args


def tool_result(tool: Any, result: Any) -> str:
    """A tool's return value as the text the model will see, as AutoGen itself renders it."""
    return tool.return_value_as_string(result)
