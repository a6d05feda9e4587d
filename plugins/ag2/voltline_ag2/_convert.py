"""Turning AutoGen messages, requests and responses into span attributes.

Pure functions with no framework imports: AutoGen hands us dicts, strings, OpenAI SDK
objects or a custom client's own response objects, so everything here is duck-typed.
The attribute builders take the caller's `failed(where)` and convert each payload (and read
each field of a model response) on its own: one that raises is reported there (from inside
the `except`) and left out, the rest is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any

from voltline import capture


def _text(value: Any) -> str:
    # AutoGen allows callables as message content: their repr says what they are.
    return repr(value) if callable(value) else str(value)


def jsonable(value: Any) -> Any:
    """A JSON-safe copy of `value` (`voltline.capture.jsonable`; None fields of models left out).

    Done here rather than left to the store so that a span never fails validation because a
    message carried an odd object (AutoGen allows callables as message content).
    """
    return capture.jsonable(value, fallback=_text, exclude_none=True)


def tool_definitions(tools: Any) -> Any:
    """The tools a request offers, copied once per distinct set and shared after: every request
    of a conversation sends the same ones (`voltline.capture.shared_jsonable`)."""
    return capture.shared_jsonable(tools, jsonable)


def field(obj: Any, name: str, default: Any = None) -> Any:
    """`obj.name` or `obj[name]`, whichever exists; extra fields of pydantic models included."""
    if obj is None:
        return default
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    value = getattr(obj, name, None)
    if value is None:
        extra = getattr(obj, "model_extra", None)  # OpenAI SDK models keep unknown fields here
        if isinstance(extra, Mapping):
            value = extra.get(name)
    return default if value is None else value


def message_attributes(
    message: Any, sender: str | None, recipient: str | None, failed: Callable[[str], None]
) -> dict[str, Any]:
    """Attributes of a `message` span for one message sent between two agents."""
    attrs: dict[str, Any] = {"message.sender": sender, "message.recipient": recipient}
    if isinstance(message, str) or not isinstance(message, Mapping):
        try:
            attrs["message.content"] = jsonable(message)
        except Exception:
            failed("converting message.content")
        return attrs
    try:
        attrs["message.content"] = jsonable(message.get("content"))
    except Exception:
        failed("converting message.content")
    for key, attr in (
        ("role", "message.role"),
        ("name", "message.name"),
        ("tool_calls", "message.tool_calls"),
        ("tool_responses", "message.tool_responses"),
        ("function_call", "message.function_call"),
    ):
        if message.get(key) is not None:
            try:
                attrs[attr] = jsonable(message[key])
            except Exception:
                failed(f"converting {attr}")
    return attrs


def parse_arguments(arguments: Any) -> Any:
    """Tool arguments as AutoGen's model sent them (a JSON string), decoded when possible."""
    return capture.tool_arguments(arguments, fallback=_text)


def parse_timestamp(value: Any) -> float | None:
    """AutoGen's `get_current_ts()` strings ("%Y-%m-%d %H:%M:%S.%f", UTC) as epoch seconds."""
    if not isinstance(value, str):
        return None
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def _usage(response: Any) -> tuple[int | None, int | None]:
    usage = field(response, "usage")
    if usage is None:
        return None, None
    return field(usage, "prompt_tokens"), field(usage, "completion_tokens")


def _logprobs(choice: Any) -> list[float] | None:
    content = field(field(choice, "logprobs"), "content")
    if not isinstance(content, list) or not content:
        return None
    values = [field(item, "logprob") for item in content]
    return values if all(isinstance(v, int | float) for v in values) else None


def _token_ids(value: Any) -> list[int] | None:
    if isinstance(value, list | tuple) and all(isinstance(v, int) for v in value):
        return list(value)
    return None


def _or_none(failed: Callable[[str], None], where: str, convert: Callable[[], Any]) -> Any:
    """``convert()``, or None when it raises (reported as ``failed(where)`` from the except)."""
    try:
        return convert()
    except Exception:
        failed(where)
        return None


def llm_attributes(
    request: Any, response: Any, *, cached: Any = None, cost: Any = None, failed: Callable[[str], None]
) -> dict[str, Any]:
    """Attributes of an `llm` span from AutoGen's request params and the client's response.

    Names follow the OpenTelemetry GenAI conventions; token ids and logprobs use the field
    names vLLM's `return_token_ids` uses (and Voltline's proxy returns): `prompt_token_ids`
    on the response (or its first choice) and `token_ids` on the choice.
    """
    request = request if isinstance(request, Mapping) else {}
    guard = partial(_or_none, failed)
    inputs = guard(
        "converting gen_ai.input.messages", lambda: jsonable(request.get("messages", request.get("prompt")))
    )
    tools = guard("converting gen_ai.tool.definitions", lambda: tool_definitions(request.get("tools")))
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": request.get("model"),
        "gen_ai.input.messages": inputs,
        "gen_ai.tool.definitions": tools,
        "ag2.cached": bool(cached) if cached is not None else None,
        "ag2.cost": cost if isinstance(cost, int | float) else None,
    }
    if isinstance(response, str):  # AutoGen logs failed calls as "error_code:..., config i failed"
        attrs["error.message"] = response
        return {k: v for k, v in attrs.items() if v is not None}
    # A custom client or a newer AutoGen can hand over any shape, and `field` absorbs only a
    # missing attribute, not a property that raises: each read costs only its own attribute
    # (the choices, all that come from them: outputs, finish reasons, token ids, logprobs).
    choices = guard("reading the response's choices", lambda: list(field(response, "choices") or [])) or []
    first = choices[0] if choices else None
    outputs = guard(
        "converting gen_ai.output.messages",
        lambda: [jsonable(field(choice, "message")) for choice in choices] or None,
    )
    response_id = guard("converting gen_ai.response.id", lambda: field(response, "id"))
    response_model = guard("converting gen_ai.response.model", lambda: field(response, "model"))
    finish_reasons = guard(
        "converting gen_ai.response.finish_reasons",
        lambda: [field(c, "finish_reason") for c in choices if field(c, "finish_reason")] or None,
    )
    input_tokens, output_tokens = guard("converting gen_ai.usage", lambda: _usage(response)) or (None, None)
    prompt_token_ids = guard(
        "converting prompt_token_ids",
        lambda: (
            _token_ids(field(response, "prompt_token_ids")) or _token_ids(field(first, "prompt_token_ids"))
        ),
    )
    response_token_ids = guard("converting response_token_ids", lambda: _token_ids(field(first, "token_ids")))
    response_logprobs = guard(
        "converting response_logprobs", lambda: _logprobs(first) if first is not None else None
    )
    attrs.update(
        {
            "gen_ai.response.id": response_id,
            "gen_ai.response.model": response_model,
            "gen_ai.output.messages": outputs,
            "gen_ai.response.finish_reasons": finish_reasons,
            "gen_ai.usage.input_tokens": input_tokens,
            "gen_ai.usage.output_tokens": output_tokens,
            "prompt_token_ids": prompt_token_ids,
            "response_token_ids": response_token_ids,
            "response_logprobs": response_logprobs,
        }
    )
    if attrs["gen_ai.request.model"] is None:
        attrs["gen_ai.request.model"] = attrs["gen_ai.response.model"]
    return {k: v for k, v in attrs.items() if v is not None}
