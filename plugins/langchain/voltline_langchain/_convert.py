"""LangChain objects to span attributes: OpenAI-style chat messages and GenAI usage names.

Messages are stored in the OpenAI chat shape (role, content, tool_calls with JSON-string
arguments, tool_call_id), the shape the Voltline LLM proxy records and chat templates take,
so spans from this plugin and from the proxy line up turn for turn.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, LLMResult

from voltline import capture

__all__ = [
    "forget", "llm_result_attributes", "message_dict", "messages", "plain", "tool_definitions", "tool_result",
]  # fmt: skip

_ROLES = {
    "human": "user", "ai": "assistant", "system": "system", "tool": "tool", "function": "function",
    # Streaming merges chunks into *MessageChunk objects, whose type names differ.
    "HumanMessageChunk": "user", "AIMessageChunk": "assistant", "SystemMessageChunk": "system",
    "ToolMessageChunk": "tool", "FunctionMessageChunk": "function",
}  # fmt: skip
_SCALARS = (str, int, float, bool, type(None))
_SCALAR_TYPES = frozenset(_SCALARS)
_CACHE_SIZE = 128


def plain(value: Any) -> Any:
    """A JSON-safe form of `value`, cheap for the common cases (so the writer never has to coerce)."""
    kind = type(value)
    if kind in _SCALAR_TYPES:  # exact-type set lookup first: most values are plain scalars
        return value
    if kind is dict:
        return {k if type(k) is str else str(k): plain(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [plain(v) for v in value]
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, BaseMessage):
        return message_dict(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return capture.jsonable(value)  # the rarer rest (models, sets, dataclasses...): core's one rule


def tool_definitions(tools: Any) -> Any:
    """`plain(tools)`, one shared object for every model call given the same definitions
    (`voltline.capture.shared_jsonable`): create_agent binds its tools anew for each model call,
    so a provider model hands over freshly built but identical schemas every time."""
    return capture.shared_jsonable(tools, plain)


# An agent sends its whole history on every model call, so each message would be converted
# once per later turn. Converted messages are kept by object identity (the strong reference
# held here keeps the id from being reused), checked against the fields agents do change in
# place (create_agent names its AIMessage after the call). Entries are shared: never mutate one.
_converted: dict[int, tuple[BaseMessage, tuple[Any, ...], dict[str, Any]]] = {}


def forget() -> None:
    """Drop every cached conversion (the handler calls this when no LangChain run is in flight)."""
    _converted.clear()


def message_dict(message: BaseMessage) -> dict[str, Any]:
    """One LangChain message as an OpenAI chat message (shared: do not mutate the result)."""
    # tool_calls is read from the instance dict: on a message without the field (human, tool,
    # system), getattr goes through pydantic's __getattr__ and raises and catches an
    # AttributeError, several times slower than the whole cache hit.
    fields = message.__dict__
    hit = _converted.get(id(message))
    if hit is not None and hit[0] is message:
        content, name, calls = hit[1]
        if fields["content"] is content and fields.get("tool_calls") is calls:
            if fields["name"] == name:
                return hit[2]
            # Only the name changed (create_agent names its AIMessage after the model call): the
            # rest of the conversion, tool-call arguments as JSON text included, still holds.
            out = {k: v for k, v in hit[2].items() if k != "name"}
            if message.name:
                out["name"] = message.name
            _converted[id(message)] = (message, (content, message.name, calls), out)
            return out
    out = _message_dict(message)
    if len(_converted) >= _CACHE_SIZE:
        # Drop the oldest quarter; dicts keep insertion order. Races between threads at worst
        # drop a few extra entries, which only costs a conversion.
        for key in list(_converted)[: _CACHE_SIZE // 4]:
            _converted.pop(key, None)
    # The fields the converted form is made of (message.id is not one: LangGraph sets it later).
    _converted[id(message)] = (message, (fields["content"], fields["name"], fields.get("tool_calls")), out)
    return out


def _message_dict(message: BaseMessage) -> dict[str, Any]:
    # Pydantic keeps a message's fields in its instance dict, where a subscript finds them
    # quicker than attribute access does (this runs for every new message of every turn).
    fields = message.__dict__
    role = _ROLES.get(fields["type"]) or fields.get("role") or fields["type"]
    out: dict[str, Any] = {"role": role, "content": plain(fields["content"])}
    calls = fields.get("tool_calls")
    if calls and isinstance(message, AIMessage):
        out["tool_calls"] = [
            {
                "id": call.get("id"),
                "type": "function",
                "function": {"name": call["name"], "arguments": json.dumps(plain(call.get("args", {})))},
            }
            for call in calls
        ]
    if "tool_call_id" in fields and isinstance(message, ToolMessage):
        out["tool_call_id"] = fields["tool_call_id"]
    if fields["name"]:
        out["name"] = fields["name"]
    return out


def messages(items: Sequence[Any]) -> list[Any]:
    return [message_dict(m) if isinstance(m, BaseMessage) else plain(m) for m in items]


def _usage(out: dict[str, Any], message: BaseMessage | None, llm_output: Mapping[str, Any]) -> None:
    usage = message.__dict__.get("usage_metadata") if message is not None else None
    if usage:
        value = usage.get("input_tokens")
        if value is not None:
            out["gen_ai.usage.input_tokens"] = value
        value = usage.get("output_tokens")
        if value is not None:
            out["gen_ai.usage.output_tokens"] = value
        details = usage.get("input_token_details")
        if details and details.get("cache_read") is not None:
            out["gen_ai.usage.cache_read.input_tokens"] = details["cache_read"]
        details = usage.get("output_token_details")
        if details and details.get("reasoning") is not None:
            out["gen_ai.usage.reasoning.output_tokens"] = details["reasoning"]
        return
    # Older integrations and plain LLMs report usage only in llm_output, OpenAI style.
    tokens = llm_output.get("token_usage") or llm_output.get("usage") or {}
    value = tokens.get("prompt_tokens", tokens.get("input_tokens"))
    if value is not None:
        out["gen_ai.usage.input_tokens"] = value
    value = tokens.get("completion_tokens", tokens.get("output_tokens"))
    if value is not None:
        out["gen_ai.usage.output_tokens"] = value


def llm_result_attributes(response: LLMResult) -> dict[str, Any]:
    """Output messages, finish reasons, usage, response id and model of one model call."""
    result = response.__dict__
    generations = result["generations"][0] if result["generations"] else []
    llm_output = result["llm_output"] or {}
    outputs: list[Any] = []
    reasons: list[str] = []
    first: BaseMessage | None = None
    for generation in generations:
        info = generation.__dict__.get("generation_info") or {}
        if isinstance(generation, ChatGeneration):
            message = generation.__dict__["message"]
            if first is None:
                first = message
            entry = dict(message_dict(message))  # a copy: finish_reason is added below
            reason = message.__dict__["response_metadata"].get("finish_reason") or info.get("finish_reason")
        else:  # a completion model: text only
            entry = {"role": "assistant", "content": generation.text}
            reason = info.get("finish_reason")
        if reason:
            entry["finish_reason"] = reason
            reasons.append(str(reason))
        outputs.append(entry)
    metadata = first.__dict__["response_metadata"] if first is not None else {}
    response_id = metadata.get("id") or llm_output.get("id")
    if response_id is None:
        headers = metadata.get("headers")
        if isinstance(headers, dict):
            # Streamed ChatOpenAI messages carry no completion id; the Voltline proxy repeats it
            # in this header, which ChatOpenAI keeps with include_response_headers=True.
            response_id = headers.get("x-voltline-completion-id")
    if response_id is None and first is not None:
        message_id = first.__dict__["id"]
        if message_id and not message_id.startswith("lc_"):
            response_id = message_id  # streamed provider messages carry the completion id here
    # Built in the recorded key order, skipping absent values.
    attrs: dict[str, Any] = {"gen_ai.output.messages": outputs}
    if reasons:
        attrs["gen_ai.response.finish_reasons"] = reasons
    if response_id is not None:
        attrs["gen_ai.response.id"] = response_id
    model = metadata.get("model_name") or llm_output.get("model_name")
    if model is not None:
        attrs["gen_ai.response.model"] = model
    _usage(attrs, first, llm_output)
    return attrs


def tool_result(output: Any) -> tuple[Any, bool]:
    """What a tool returned, and whether LangChain marked it an error (a handled tool failure)."""
    if isinstance(output, ToolMessage):
        return plain(output.content), output.status == "error"
    return plain(output), False
