"""The explicit form: a model-client wrapper, for people who will not patch AutoGen globally.

    client = VoltlineChatCompletionClient(OpenAIChatCompletionClient(model="gpt-4o"), agent_name="writer")
    agent = AssistantAgent("writer", model_client=client, tools=[...])

Every `create` / `create_stream` becomes an `llm` span in the current rollout, as with
`voltline.instrument()`. Only model calls are captured this way (tools and agent steps need
`instrument()`). With both active, each call is still recorded once.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

from autogen_core.models import ChatCompletionClient, CreateResult, ModelInfo, RequestUsage

from ._llm import _should_capture, building, traced_create, traced_create_stream

__all__ = ["VoltlineChatCompletionClient"]


class VoltlineChatCompletionClient(ChatCompletionClient):
    """Delegates to `inner`, recording each model call as an `llm` span.

    `agent_name` labels the spans (`Span.agent_name`) when no `agent` span from
    `voltline.instrument()` or `voltline.span(..., kind="agent")` encloses the call.
    """

    __voltline_skip__ = True  # instrument() must not wrap the wrapper: one span per call

    def __init__(self, inner: ChatCompletionClient, *, agent_name: str | None = None) -> None:
        self.inner = inner
        self.agent_name = agent_name

    async def create(self, messages: Sequence[Any], *args: Any, **kwargs: Any) -> CreateResult:
        if not _should_capture():
            return await self.inner.create(messages, *args, **kwargs)
        return await traced_create(self.inner, self.inner.create, messages, args, kwargs, self.agent_name)

    def create_stream(
        self, messages: Sequence[Any], *args: Any, **kwargs: Any
    ) -> AsyncGenerator[str | CreateResult, None]:
        if not _should_capture():
            return self.inner.create_stream(messages, *args, **kwargs)
        with building():
            inner = self.inner.create_stream(messages, *args, **kwargs)
        return traced_create_stream(self.inner, inner, messages, kwargs, self.agent_name)

    async def close(self) -> None:
        await self.inner.close()

    def actual_usage(self) -> RequestUsage:
        return self.inner.actual_usage()

    def total_usage(self) -> RequestUsage:
        return self.inner.total_usage()

    def count_tokens(self, messages: Sequence[Any], **kwargs: Any) -> int:
        return self.inner.count_tokens(messages, **kwargs)

    def remaining_tokens(self, messages: Sequence[Any], **kwargs: Any) -> int:
        return self.inner.remaining_tokens(messages, **kwargs)

    @property
    def capabilities(self) -> Any:  # deprecated in AutoGen, still abstract
        return self.inner.capabilities

    @property
    def model_info(self) -> ModelInfo:
        return self.inner.model_info

    def __getattr__(self, name: str) -> Any:
        # Client-specific extras (e.g. the replay client's `create_calls`) stay reachable.
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def _to_config(self) -> Mapping[str, Any]:  # pragma: no cover - serialization is the inner's job
        raise NotImplementedError("serialize the inner client; the Voltline wrapper is not a component")
