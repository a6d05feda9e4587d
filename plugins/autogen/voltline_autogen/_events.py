"""Response ids and token ids from AutoGen's LLM events, merged into the open `llm` span.

The OpenAI-family clients build an `LLMCallEvent` with the provider's full response (its
`id`, and the prompt/completion token ids a Voltline proxy or vLLM adds) synchronously inside
`create`, then log it. Reading it from the logger would need the logger enabled, which would
change what users' log handlers see; so the hook sits on the event's constructor instead,
which runs whatever the log level. Clients that build no such event (the replay client,
custom ones) simply give spans without these fields.
"""

from __future__ import annotations

import functools
from typing import Any

from ._guard import capture_failed
from ._llm import current_llm_span

__all__ = ["EventHook"]


def _merge_response(attributes: dict[str, Any], response: Any) -> None:
    if not isinstance(response, dict):
        return
    if isinstance(response.get("id"), str):
        attributes["gen_ai.response.id"] = response["id"]
    if isinstance(response.get("model"), str):
        attributes["gen_ai.response.model"] = response["model"]
    # vLLM's `return_token_ids` fields, which the Voltline proxy also returns.
    if isinstance(response.get("prompt_token_ids"), list):
        attributes["prompt_token_ids"] = response["prompt_token_ids"]
    choices = response.get("choices")
    if not (isinstance(choices, list) and choices and isinstance(choices[0], dict)):
        return
    choice = choices[0]
    if isinstance(choice.get("token_ids"), list):
        attributes["response_token_ids"] = choice["token_ids"]
    logprobs = choice.get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if isinstance(content, list) and all(isinstance(c, dict) and "logprob" in c for c in content):
        attributes["response_logprobs"] = [float(c["logprob"]) for c in content]


def _wrap_init(original: Any) -> Any:
    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        handle = current_llm_span()
        if handle is None:
            return
        try:
            event_kwargs = getattr(self, "kwargs", None)
            if isinstance(event_kwargs, dict):
                _merge_response(handle.attributes, event_kwargs.get("response"))
        except Exception:
            capture_failed("LLM event")

    return __init__


class EventHook:
    """Wraps the constructors of AutoGen's LLM event classes; uninstall puts them back."""

    def __init__(self) -> None:
        self._saved: list[tuple[type, Any, Any]] = []

    def install(self) -> None:
        from autogen_core.logging import LLMCallEvent, LLMStreamEndEvent

        for cls in (LLMCallEvent, LLMStreamEndEvent):
            original = cls.__dict__["__init__"]
            wrapper = _wrap_init(original)
            cls.__init__ = wrapper  # type: ignore[method-assign]
            self._saved.append((cls, original, wrapper))

    def uninstall(self) -> None:
        while self._saved:
            cls, original, wrapper = self._saved.pop()
            if cls.__dict__.get("__init__") is wrapper:
                cls.__init__ = original  # type: ignore[method-assign]
