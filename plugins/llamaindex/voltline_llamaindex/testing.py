"""A scripted, offline LlamaIndex LLM for examples and tests.

`MockFunctionCallingLLM` (llama-index-core) can script tool calls but reports no token usage,
response id or finish reason, so a capture test could not check them. `ScriptedLLM` plays a
fixed list of replies and answers like a real provider does: an OpenAI-shaped `raw`
(id, model, finish reason, usage) and token counts in `additional_kwargs`, streamed
word by word with the usage on the last chunk.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncGenerator, Generator, Sequence
from dataclasses import dataclass
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    LLMMetadata,
    MessageRole,
    ToolCallBlock,
)
from llama_index.core.llms.callbacks import llm_chat_callback
from llama_index.core.llms.mock import MockFunctionCallingLLM
from pydantic import PrivateAttr

__all__ = ["ScriptedLLM", "ToolCalls", "count_tokens"]


@dataclass(frozen=True)
class ToolCalls:
    """A reply that asks for tools: `(name, arguments, call id)` per call."""

    calls: tuple[tuple[str, dict[str, Any], str], ...]

    def __init__(self, *calls: tuple[str, dict[str, Any], str]) -> None:
        object.__setattr__(self, "calls", tuple(calls))


def count_tokens(text: str) -> int:
    """A whitespace "tokenizer": deterministic counts without any tokenizer download."""
    return len(text.split())


def _message_text(messages: Sequence[ChatMessage]) -> str:
    return " ".join(m.content or "" for m in messages)


class ScriptedLLM(MockFunctionCallingLLM):
    """Replies with the next item of `script` (a string, or `ToolCalls`) on every chat call.

    Thread safe, so a script can be shared by calls made from a pool.
    """

    model: str = "scripted-1"
    _script: list[str | ToolCalls] = PrivateAttr(default_factory=list)
    _calls: int = PrivateAttr(default=0)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def __init__(self, script: Sequence[str | ToolCalls], model: str = "scripted-1", **kwargs: Any) -> None:
        super().__init__(is_chat_model=True, model=model, **kwargs)
        self._script = list(script)

    @classmethod
    def class_name(cls) -> str:
        return "ScriptedLLM"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(is_function_calling_model=True, is_chat_model=True, model_name=self.model)

    def _next(self, messages: Sequence[ChatMessage]) -> ChatResponse:
        with self._lock:
            if not self._script:
                raise RuntimeError("ScriptedLLM ran out of replies")
            reply = self._script.pop(0)
            self._calls += 1
            n = self._calls
        if isinstance(reply, ToolCalls):
            blocks = [
                ToolCallBlock(tool_call_id=i, tool_name=name, tool_kwargs=args)
                for name, args, i in reply.calls
            ]
            message = ChatMessage(role=MessageRole.ASSISTANT, blocks=blocks)
            finish, out_text = "tool_calls", " ".join(name for name, _, _ in reply.calls)
        else:
            message = ChatMessage(role=MessageRole.ASSISTANT, content=reply)
            finish, out_text = "stop", reply
        usage = {
            "prompt_tokens": count_tokens(_message_text(messages)),
            "completion_tokens": count_tokens(out_text),
        }
        raw = {
            "id": f"chatcmpl-scripted-{n}",
            "model": self.model,
            "choices": [{"index": 0, "finish_reason": finish}],
            "usage": {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]},
        }
        return ChatResponse(message=message, raw=raw, delta=message.content or "", additional_kwargs=usage)

    def _chunks(self, response: ChatResponse) -> list[ChatResponse]:
        """The response as a provider streams it: word deltas, usage only on the last chunk."""
        text = response.message.content or ""
        words = text.split(" ") if text else [""]
        chunks, so_far = [], ""
        for i, word in enumerate(words):
            delta = word if i == 0 else " " + word
            so_far += delta
            last = i == len(words) - 1
            message = response.message if last else ChatMessage(role=MessageRole.ASSISTANT, content=so_far)
            raw = response.raw if last else {"id": response.raw["id"], "model": self.model, "choices": []}
            chunks.append(
                ChatResponse(
                    message=message,
                    delta=delta,
                    raw=raw,
                    additional_kwargs=response.additional_kwargs if last else {},
                )
            )
        return chunks

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._next(messages)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._next(messages)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        chunks = self._chunks(self._next(messages))

        def gen() -> Generator[ChatResponse, None, None]:
            yield from chunks

        return gen()

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        chunks = self._chunks(self._next(messages))

        async def gen() -> AsyncGenerator[ChatResponse, None]:
            for chunk in chunks:
                yield chunk

        return gen()
