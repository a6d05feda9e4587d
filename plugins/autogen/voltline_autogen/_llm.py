"""`llm` spans around `ChatCompletionClient.create` / `create_stream`, whatever the client.

Model clients differ (OpenAI, Anthropic, Ollama, the replay client, users' own): only the
`create` interface is common, so capture happens there. A contextvar marks "inside a captured
model call", so clients that delegate to other clients (caches, wrappers, `super().create`)
produce one span, not one per layer. Response ids and raw token ids exist only in the
`LLMCallEvent` some clients log during the call: `events.py` merges them into the open span.
"""

from __future__ import annotations

import contextvars
import functools
import time
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import voltline

from . import _convert
from ._guard import capture_failed
from ._stream import proxy_agen, recording

__all__ = ["current_llm_span", "start_llm_span", "traced_create", "traced_create_stream", "wrap_method"]

_in_llm: contextvars.ContextVar[bool] = contextvars.ContextVar("voltline_autogen_in_llm", default=False)
_llm_span: contextvars.ContextVar[voltline.SpanHandle | None] = contextvars.ContextVar(
    "voltline_autogen_llm_span", default=None
)

# OpenTelemetry `gen_ai.provider.name` values for the clients autogen-ext ships.
_PROVIDERS = {
    "OpenAIChatCompletionClient": "openai",
    "AzureOpenAIChatCompletionClient": "azure.ai.openai",
    "AnthropicChatCompletionClient": "anthropic",
    "AnthropicBedrockChatCompletionClient": "aws.bedrock",
    "OllamaChatCompletionClient": "ollama",
    "AzureAIChatCompletionClient": "azure.ai.inference",
    "LlamaCppChatCompletionClient": "llama_cpp",
    "SKChatCompletionAdapter": "semantic_kernel",
    "ReplayChatCompletionClient": "replay",
}
_REQUEST_ARGS = (
    "temperature",
    "max_tokens",
    "top_p",
    "top_k",
    "seed",
    "frequency_penalty",
    "presence_penalty",
)


def current_llm_span() -> voltline.SpanHandle | None:
    """The model call's span while its client runs (for the event-log hook)."""
    return _llm_span.get()


def _provider(client: Any) -> str:
    name = type(client).__name__
    return _PROVIDERS.get(name, name)


def _create_args(client: Any) -> Mapping[str, Any]:
    args = getattr(client, "_create_args", None)  # OpenAI, Anthropic, Ollama clients keep it
    return args if isinstance(args, Mapping) else {}


def _model(client: Any) -> str | None:
    model = _create_args(client).get("model")
    if model is None:
        model = getattr(client, "model", None)
    return model if isinstance(model, str) else None


def start_llm_span(
    client: Any,
    messages: Sequence[Any],
    kwargs: Mapping[str, Any],
    *,
    stream: bool,
    agent_name: str | None = None,
) -> voltline.SpanHandle | None:
    """Open the span of one model call (None if that failed; the call goes on regardless)."""
    try:
        model = _model(client)
        provider = _provider(client)
        attributes: dict[str, Any] = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": provider}
        try:
            attributes["gen_ai.input.messages"] = _convert.llm_messages(messages)
        except Exception:  # the span is still recorded, without its input
            capture_failed("llm input messages")
        attributes["gen_ai.request.stream"] = stream
        attributes["autogen.model_client"] = type(client).__qualname__
        if model:
            attributes["gen_ai.request.model"] = model
        try:
            request = {**_create_args(client), **dict(kwargs.get("extra_create_args") or {})}
            for arg in _REQUEST_ARGS:
                if isinstance(request.get(arg), int | float):
                    attributes[f"gen_ai.request.{arg}"] = request[arg]
        except Exception:  # the span is still recorded, without the request parameters
            capture_failed("llm request parameters")
        tools = kwargs.get("tools") or ()
        if tools:
            try:
                attributes["gen_ai.tool.definitions"] = _convert.tool_definitions(tools)
            except Exception:  # the span is still recorded, without them
                capture_failed("llm tool definitions")
        tool_choice = kwargs.get("tool_choice")
        if isinstance(tool_choice, str) and tool_choice != "auto":
            attributes["autogen.tool_choice"] = tool_choice
        enclosing = voltline.current_span()
        if enclosing is not None and enclosing.agent_name:
            agent_name = None  # an enclosing agent span knows better than a client's label
        return voltline.start_span(
            f"chat {model or provider}", "llm", agent_name=agent_name, attributes=attributes
        )
    except Exception:
        capture_failed("start_llm_span")
        return None


def end_llm_span(
    handle: voltline.SpanHandle | None,
    result: Any,
    error: BaseException | None,
    first_chunk_at: float | None = None,
) -> None:
    if handle is None:
        return
    try:
        attributes: dict[str, Any] = {}
        if result is not None:
            # Each read of the result on its own: one a newer AutoGen changed must neither take the
            # others with it nor stop the span from ending (an unended span is never recorded).
            try:
                attributes["gen_ai.output.messages"] = _convert.output_messages(result)
            except Exception:
                capture_failed("llm output messages")
            try:
                attributes["gen_ai.response.finish_reasons"] = [result.finish_reason]
            except Exception:
                capture_failed("llm finish reason")
            try:
                usage = getattr(result, "usage", None)
                if usage is not None:
                    attributes["gen_ai.usage.input_tokens"] = usage.prompt_tokens
                    attributes["gen_ai.usage.output_tokens"] = usage.completion_tokens
            except Exception:
                capture_failed("llm usage")
            attributes["autogen.cached"] = bool(getattr(result, "cached", False))
            try:
                logprobs = getattr(result, "logprobs", None)
                if logprobs and "response_logprobs" not in handle.attributes:
                    attributes["response_logprobs"] = [float(lp.logprob) for lp in logprobs]
            except Exception:
                capture_failed("llm logprobs")
        if first_chunk_at is not None:
            attributes["gen_ai.response.time_to_first_chunk"] = first_chunk_at - handle.start_time
        if error is not None:
            attributes["error.type"] = type(error).__qualname__
        handle.end(error=error, attributes=attributes)
    except Exception:
        capture_failed("end_llm_span")


@contextmanager
def _inside(handle: voltline.SpanHandle | None) -> Iterator[None]:
    guard = _in_llm.set(True)
    current = _llm_span.set(handle)
    try:
        if handle is None:
            yield
        else:
            with voltline.use_span(handle):
                yield
    finally:
        _llm_span.reset(current)
        _in_llm.reset(guard)


@contextmanager
def building() -> Iterator[None]:
    """Build a delegate's stream inside this model call: class-level wrappers stand aside."""
    guard = _in_llm.set(True)
    try:
        yield
    finally:
        _in_llm.reset(guard)


def _should_capture() -> bool:
    return not _in_llm.get() and recording()


async def traced_create(
    client: Any,
    call: Callable[..., Any],
    messages: Sequence[Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    agent_name: str | None = None,
) -> Any:
    """Run `call(messages, *args, **kwargs)` (a client's `create`) inside an `llm` span."""
    handle = start_llm_span(client, messages, kwargs, stream=False, agent_name=agent_name)
    try:
        with _inside(handle):
            result = await call(messages, *args, **kwargs)
    except BaseException as exc:
        end_llm_span(handle, None, exc)
        raise
    end_llm_span(handle, result, None)
    return result


def traced_create_stream(
    client: Any,
    inner: AsyncGenerator[Any, Any],
    messages: Sequence[Any],
    kwargs: Mapping[str, Any],
    agent_name: str | None = None,
) -> AsyncGenerator[Any, Any]:
    """`inner` (a client's `create_stream`) with an `llm` span from first step to exhaustion."""
    state: dict[str, Any] = {"handle": None, "started": False, "result": None, "first": None}

    def enter() -> Any:
        if not state["started"]:  # the span starts when the stream does, not when it is built
            state["started"] = True
            state["handle"] = start_llm_span(client, messages, kwargs, stream=True, agent_name=agent_name)
        return _inside(state["handle"])

    def on_item(item: Any) -> None:
        if state["first"] is None:
            state["first"] = time.time()
        if type(item).__name__ == "CreateResult":
            state["result"] = item

    def on_end(error: BaseException | None) -> None:
        end_llm_span(state["handle"], state["result"], error, state["first"])

    return proxy_agen(inner, enter, on_item, on_end)


def wrap_method(name: str, original: Any) -> Any:
    """The class-level wrapper of a model client's `create` or `create_stream`."""
    if name == "create":

        @functools.wraps(original)
        async def create(self: Any, messages: Sequence[Any], *args: Any, **kwargs: Any) -> Any:
            if not _should_capture():
                return await original(self, messages, *args, **kwargs)
            return await traced_create(self, functools.partial(original, self), messages, args, kwargs)

        return create

    @functools.wraps(original)
    def create_stream(self: Any, messages: Sequence[Any], *args: Any, **kwargs: Any) -> Any:
        inner = original(self, messages, *args, **kwargs)
        if not _should_capture():
            return inner
        return traced_create_stream(self, inner, messages, kwargs)

    return create_stream
