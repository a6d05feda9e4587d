"""A scripted chat model for offline examples, tests and benchmarks.

langchain-core's own fakes cannot drive a tool-calling agent: `GenericFakeChatModel` has no
`bind_tools`, and its streaming drops tool calls and token usage. `ScriptedChatModel` replays
a fixed list of `AIMessage`s (tool calls, usage, response metadata included) through the real
`BaseChatModel` machinery, so callbacks fire exactly as they would for a provider model.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field

__all__ = ["ScriptedChatModel", "reply"]


def reply(
    content: str = "",
    *,
    tool_calls: Sequence[tuple[str, dict[str, Any], str]] = (),
    input_tokens: int = 0,
    output_tokens: int = 0,
    model: str = "scripted-model",
    response_id: str | None = None,
    finish_reason: str | None = None,
) -> AIMessage:
    """One scripted model turn: text and/or tool calls `(name, args, call_id)`, with usage."""
    return AIMessage(
        content=content,
        tool_calls=[{"name": n, "args": a, "id": i, "type": "tool_call"} for n, a, i in tool_calls],
        usage_metadata={
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        },
        response_metadata={
            "model_name": model,
            "model_provider": "scripted",
            "finish_reason": finish_reason or ("tool_calls" if tool_calls else "stop"),
            **({"id": response_id} if response_id else {}),
        },
    )


class ScriptedChatModel(BaseChatModel):
    """Replays `responses` in order (cycling if `cycle`), sync, async and streaming alike."""

    responses: list[AIMessage]
    cycle: bool = False
    model_name: str = "scripted-model"
    position: Any = Field(default=None, exclude=True)
    model_config = ConfigDict(arbitrary_types_allowed=True)

    def model_post_init(self, context: Any) -> None:
        self.position = itertools.cycle(self.responses) if self.cycle else iter(self.responses)

    @property
    def _llm_type(self) -> str:
        return "scripted-chat-model"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "scripted"
        params["ls_model_name"] = self.model_name
        return params

    def bind_tools(
        self, tools: Sequence[Any], *, tool_choice: str | None = None, **kwargs: Any
    ) -> Runnable[LanguageModelInput, AIMessage]:
        # As provider models bind them: converted to the OpenAI tool schema and passed with every
        # call, so they reach `invocation_params` and the callbacks as a real model's do. The
        # script already knows which tools it calls; `_generate` and `_stream` ignore them.
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _next(self) -> AIMessage:
        try:
            return next(self.position).model_copy(deep=True)
        except StopIteration:
            raise RuntimeError("ScriptedChatModel ran out of scripted responses") from None

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        message = self._next()
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        # Text word by word, then one last chunk with tool calls, usage and metadata, the way
        # provider streams deliver them.
        message = self._next()
        text = message.content if isinstance(message.content, str) else ""
        for token in (t for t in re.split(r"(\s)", text) if t):
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=token))
            if run_manager:
                run_manager.on_llm_new_token(token, chunk=chunk)
            yield chunk
        last = AIMessageChunk(
            content="",
            tool_call_chunks=[
                {
                    "name": c["name"],
                    "args": _json(c["args"]),
                    "id": c["id"],
                    "index": i,
                    "type": "tool_call_chunk",
                }
                for i, c in enumerate(message.tool_calls)
            ],
            usage_metadata=message.usage_metadata,
            response_metadata=message.response_metadata,
            chunk_position="last",
        )
        chunk = ChatGenerationChunk(message=last)
        if run_manager:
            run_manager.on_llm_new_token("", chunk=chunk)
        yield chunk


def _json(value: Any) -> str:
    import json

    return json.dumps(value)


ScriptFn = Callable[[list[BaseMessage]], AIMessage]
