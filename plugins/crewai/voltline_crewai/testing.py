"""A scripted CrewAI LLM: runs crews offline, deterministically, with native tool calls.

CrewAI ships no fake model, but its documented way to plug in any model is a subclass of
``crewai.llms.base_llm.BaseLLM``. ``ScriptedLLM`` is one: each call returns the next
scripted reply (text, or tool calls) and emits the same events a real provider does
(``LLMCallStartedEvent``, stream chunks when streaming, ``LLMCallCompletedEvent`` with
usage, finish reason and a response id), so everything downstream behaves as with a
hosted model. Used by the tests and the example; handy for your own offline tests too.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from crewai.events.types.llm_events import LLMCallType
from crewai.llms.base_llm import BaseLLM, llm_call_context
from pydantic import PrivateAttr

__all__ = ["ScriptedLLM", "ToolCall", "count_tokens"]


@dataclass(frozen=True)
class ToolCall:
    """One tool call the scripted model asks for."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


Reply = str | Sequence[ToolCall]


def count_tokens(text: str) -> int:
    """A whitespace token count: deterministic, and close enough for usage numbers in tests."""
    return len(text.split())


def _messages_text(messages: Any) -> str:
    if isinstance(messages, str):
        return messages
    return " ".join(str(m.get("content") or "") for m in messages or [] if isinstance(m, dict))


class ScriptedLLM(BaseLLM):
    """Replies with ``replies`` in order (one per call); fails loudly when they run out.

    A reply is a string (the final answer) or a list of :class:`ToolCall` (answered with
    OpenAI-style native tool calls, ids ``call_<n>_<k>``). Usage is counted with
    :func:`count_tokens`. With ``stream=True`` text replies are also emitted word by word
    as ``LLMStreamChunkEvent`` s, the way CrewAI's streaming providers do.
    """

    replies: list[Any]
    llm_type: str = "scripted"
    provider: str = "scripted"
    _next: int = PrivateAttr(default=0)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def __init__(self, **data: Any) -> None:
        data.setdefault("provider", "scripted")  # BaseLLM would guess "openai" from the model name
        super().__init__(**data)

    def supports_function_calling(self) -> bool:
        return True

    def get_input_tokens_count(self, messages: Any, tools: Any = None, response_model: Any = None) -> int:
        return count_tokens(_messages_text(messages))

    def get_context_window_size(self) -> int:
        return 8192

    @property
    def calls(self) -> int:
        """How many replies have been used."""
        return self._next

    def _take(self) -> tuple[int, Reply]:
        with self._lock:  # crews may call one shared model from several threads
            n = self._next
            if n >= len(self.replies):
                raise RuntimeError(f"ScriptedLLM ran out of replies after {n} calls")
            self._next += 1
            return n + 1, self.replies[n]

    def call(
        self,
        messages: Any,
        tools: list[dict[str, Any]] | None = None,
        callbacks: list[Any] | None = None,
        available_functions: dict[str, Any] | None = None,
        from_task: Any | None = None,
        from_agent: Any | None = None,
        response_model: Any | None = None,
    ) -> Any:
        with llm_call_context():
            self._emit_call_started_event(
                messages=messages,
                tools=tools,
                callbacks=callbacks,
                available_functions=available_functions,
                from_task=from_task,
                from_agent=from_agent,
            )
            try:
                n, reply = self._take()
            except Exception as exc:
                self._emit_call_failed_event(error=str(exc), from_task=from_task, from_agent=from_agent)
                raise
            response_id = f"chatcmpl-scripted-{n}"
            if isinstance(reply, str):
                response: Any = reply
                call_type, finish_reason, completion = LLMCallType.LLM_CALL, "stop", reply
                if self.stream:
                    for i, word in enumerate(reply.split(" ")):
                        self._emit_stream_chunk_event(
                            word if i == 0 else " " + word,
                            from_task=from_task,
                            from_agent=from_agent,
                            call_type=call_type,
                            response_id=response_id,
                        )
            else:
                response = [
                    {
                        "id": f"call_{n}_{k}",
                        "type": "function",
                        "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                    }
                    for k, c in enumerate(reply)
                ]
                call_type, finish_reason = LLMCallType.TOOL_CALL, "tool_calls"
                completion = " ".join(f"{c.name} {json.dumps(c.arguments)}" for c in reply)
            prompt_tokens = count_tokens(_messages_text(messages))
            completion_tokens = count_tokens(completion)
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            }
            self._track_token_usage_internal(usage)
            self._emit_call_completed_event(
                response=response,
                call_type=call_type,
                from_task=from_task,
                from_agent=from_agent,
                messages=messages,
                usage=usage,
                finish_reason=finish_reason,
                response_id=response_id,
            )
            return response

    async def acall(
        self,
        messages: Any,
        tools: list[dict[str, Any]] | None = None,
        callbacks: list[Any] | None = None,
        available_functions: dict[str, Any] | None = None,
        from_task: Any | None = None,
        from_agent: Any | None = None,
        response_model: Any | None = None,
    ) -> Any:
        # The script needs no I/O, so the async path is the sync one run in place.
        return self.call(
            messages, tools, callbacks, available_functions, from_task, from_agent, response_model
        )
