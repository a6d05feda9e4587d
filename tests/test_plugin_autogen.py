"""The AutoGen plugin (voltline-autogen) against real autogen-agentchat 0.7 agents, offline.

Agents are driven by autogen-ext's `ReplayChatCompletionClient` (which emits no LLM events
of its own, so capture cannot lean on them) or by the OpenAI client over an in-memory httpx
transport. Every test asserts the exact span tree the run produced.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _plugin_env import only_plugins

import voltline
from voltline import _plugins

pytest.importorskip("autogen_agentchat")
pytest.importorskip("autogen_ext.models.replay")

import httpx
import voltline_autogen._convert as convert
from autogen_agentchat.agents import AssistantAgent, BaseChatAgent
from autogen_agentchat.conditions import TextMentionTermination
from autogen_agentchat.teams import BaseGroupChat, RoundRobinGroupChat
from autogen_core import EVENT_LOGGER_NAME, FunctionCall, SingleThreadedAgentRuntime
from autogen_core.logging import LLMCallEvent, LLMStreamEndEvent
from autogen_core.models import ChatCompletionClient, CreateResult, ModelInfo, RequestUsage
from autogen_core.tools import BaseStreamTool, BaseTool
from autogen_ext.models.replay import ReplayChatCompletionClient
from voltline_autogen import VoltlineChatCompletionClient
from voltline_autogen.plugin import AutoGenIntegration

ROOT = Path(__file__).resolve().parents[1]
INFO = ModelInfo(
    vision=False, function_calling=True, json_output=False, family="unknown", structured_output=False
)


# --- agents -------------------------------------------------------------------------------
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


async def multiply(a: int, b: int) -> int:
    """Multiply two integers (an async tool)."""
    return a * b


def divide(a: int, b: int) -> float:
    """Divide a by b."""
    return a / b


def call(call_id: str, name: str, **arguments: Any) -> FunctionCall:
    return FunctionCall(id=call_id, name=name, arguments=json.dumps(arguments))


def tools_then_answer() -> list[CreateResult]:
    """The model asks for add, then multiply, then answers: three model calls, two tools."""
    return [
        CreateResult(
            finish_reason="function_calls",
            content=[call("c1", "add", a=2, b=3)],
            usage=RequestUsage(11, 7),
            cached=False,
        ),
        CreateResult(
            finish_reason="function_calls",
            content=[call("c2", "multiply", a=5, b=4)],
            usage=RequestUsage(20, 6),
            cached=False,
        ),
        CreateResult(finish_reason="stop", content="(2+3)*4 = 20", usage=RequestUsage(30, 5), cached=False),
    ]


def calc_agent(
    *,
    stream: bool = False,
    script: list[Any] | None = None,
    tools: list[Any] | None = None,
    client: ChatCompletionClient | None = None,
) -> AssistantAgent:
    return AssistantAgent(
        "calc",
        model_client=client
        or ReplayChatCompletionClient(tools_then_answer() if script is None else script, model_info=INFO),
        tools=tools if tools is not None else [add, multiply],
        system_message="You are a calculator.",
        description="Does arithmetic with tools.",
        max_tool_iterations=5,
        model_client_stream=stream,
    )


def outcome(result: Any) -> list[tuple[str, str, str]]:
    """What the agent returned, without ids and timestamps (which differ run to run)."""
    return [(type(m).__name__, m.source, m.to_text()) for m in result.messages]


# --- fixtures and helpers -------------------------------------------------------------------
@pytest.fixture(autouse=True)
def quiet_replay_client() -> Iterator[None]:
    # The replay client warns about token counts on every call; keep test output readable.
    logger = logging.getLogger(EVENT_LOGGER_NAME)
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


@pytest.fixture
def only_autogen() -> Iterator[None]:
    with only_plugins("autogen"):
        yield


@pytest.fixture
def instrumented(only_autogen: None) -> Iterator[None]:
    assert voltline.instrument() == ["autogen"]
    yield


@pytest.fixture
def store(tmp_path: Path) -> Iterator[voltline.Store]:
    s = voltline.connect(f"sqlite:///{tmp_path}/x.db")
    try:
        yield s
    finally:
        s.close()


def run_in_rollout(store: voltline.Store, coro_fn: Any) -> tuple[Any, list[voltline.Span]]:
    with voltline.rollout("task", store=store) as r:
        result = asyncio.run(coro_fn())
    return result, store.query_spans(rollout_id=r.rollout_id)


def tree(spans: list[voltline.Span]) -> list[Any]:
    """Spans as nested (kind, name, agent_name, [children]) in start order; checks parent links."""
    ids = {s.span_id for s in spans}
    assert all(s.parent_id is None or s.parent_id in ids for s in spans), "dangling parent link"
    ordered = sorted(spans, key=lambda s: (s.start_time, s.sequence))

    def children(parent: str | None) -> list[Any]:
        return [(s.kind, s.name, s.agent_name, children(s.span_id)) for s in ordered if s.parent_id == parent]

    return children(None)


def one(spans: list[voltline.Span], name: str, index: int = 0) -> voltline.Span:
    return sorted((s for s in spans if s.name == name), key=lambda s: s.start_time)[index]


CALC_TREE = [
    (
        "agent",
        "invoke_agent calc",
        "calc",
        [
            ("llm", "chat replay", "calc", []),
            ("tool", "execute_tool add", "calc", []),
            ("llm", "chat replay", "calc", []),
            ("tool", "execute_tool multiply", "calc", []),
            ("llm", "chat replay", "calc", []),
        ],
    ),
]


# --- single agent ---------------------------------------------------------------------------
def test_agent_run_records_exact_tree_with_messages_tools_and_usage(
    instrumented: None, store: voltline.Store
) -> None:
    result, spans = run_in_rollout(store, lambda: calc_agent().run(task="What is (2+3)*4?"))

    assert result.messages[-1].to_text() == "(2+3)*4 = 20"
    assert tree(spans) == CALC_TREE
    assert all(s.status == "ok" for s in spans)

    agent = one(spans, "invoke_agent calc")
    assert agent.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert agent.attributes["gen_ai.agent.name"] == "calc"
    assert agent.attributes["gen_ai.agent.description"] == "Does arithmetic with tools."
    assert agent.attributes["gen_ai.input.messages"] == [
        {"role": "user", "name": "user", "parts": [{"type": "text", "content": "What is (2+3)*4?"}]}
    ]
    assert agent.attributes["gen_ai.output.messages"] == [
        {"role": "assistant", "name": "calc", "parts": [{"type": "text", "content": "(2+3)*4 = 20"}]}
    ]

    first = one(spans, "chat replay", 0)
    assert first.attributes["gen_ai.operation.name"] == "chat"
    assert first.attributes["gen_ai.provider.name"] == "replay"
    assert first.attributes["gen_ai.request.stream"] is False
    assert first.attributes["gen_ai.input.messages"] == [
        {"role": "system", "parts": [{"type": "text", "content": "You are a calculator."}]},
        {"role": "user", "name": "user", "parts": [{"type": "text", "content": "What is (2+3)*4?"}]},
    ]
    assert first.attributes["gen_ai.output.messages"] == [
        {
            "role": "assistant",
            "finish_reason": "function_calls",
            "parts": [{"type": "tool_call", "id": "c1", "name": "add", "arguments": {"a": 2, "b": 3}}],
        }
    ]
    assert first.attributes["gen_ai.response.finish_reasons"] == ["function_calls"]
    assert [d["name"] for d in first.attributes["gen_ai.tool.definitions"]] == ["add", "multiply"]
    usage = [
        (s.attributes["gen_ai.usage.input_tokens"], s.attributes["gen_ai.usage.output_tokens"])
        for s in sorted((s for s in spans if s.kind == "llm"), key=lambda s: s.start_time)
    ]
    # The replay client counts prompt words itself and keeps the scripted completion counts.
    assert [out for _, out in usage] == [7, 6, 5]
    assert all(isinstance(inp, int) and inp > 0 for inp, _ in usage)

    last = one(spans, "chat replay", 2)
    assert last.attributes["gen_ai.input.messages"][2:] == [
        {
            "role": "assistant",
            "name": "calc",
            "parts": [{"type": "tool_call", "id": "c1", "name": "add", "arguments": {"a": 2, "b": 3}}],
        },
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "c1", "response": "5"}]},
        {
            "role": "assistant",
            "name": "calc",
            "parts": [{"type": "tool_call", "id": "c2", "name": "multiply", "arguments": {"a": 5, "b": 4}}],
        },
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "c2", "response": "20"}]},
    ]
    assert last.attributes["gen_ai.output.messages"][0]["parts"] == [
        {"type": "text", "content": "(2+3)*4 = 20"}
    ]

    tool = one(spans, "execute_tool add")
    assert tool.attributes == {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "add",
        "gen_ai.tool.type": "function",
        "gen_ai.tool.description": "Add two integers.",
        "gen_ai.tool.call.id": "c1",
        "gen_ai.tool.call.arguments": {"a": 2, "b": 3},
        "gen_ai.tool.call.result": "5",
    }
    assert one(spans, "execute_tool multiply").attributes["gen_ai.tool.call.result"] == "20"


def test_streaming_model_calls_are_recorded_and_the_stream_is_unchanged(
    instrumented: None, store: voltline.Store
) -> None:
    # A plain-text script entry makes the replay client stream it word by word.
    script = [*tools_then_answer()[:2], "(2+3)*4 = 20"]

    async def streamed() -> list[Any]:
        agent = calc_agent(stream=True, script=list(script))
        return [item async for item in agent.run_stream(task="What is (2+3)*4?")]

    items, spans = run_in_rollout(store, streamed)
    _plugins.uninstrument()
    with voltline.rollout("baseline", store=store):
        baseline = asyncio.run(streamed())

    assert [(type(i).__name__, getattr(i, "content", None)) for i in items[:-1]] == [
        (type(i).__name__, getattr(i, "content", None)) for i in baseline[:-1]
    ]
    assert "ModelClientStreamingChunkEvent" in {type(i).__name__ for i in items}
    assert outcome(items[-1]) == outcome(baseline[-1])
    assert tree(spans) == CALC_TREE
    llms = sorted((s for s in spans if s.kind == "llm"), key=lambda s: s.start_time)
    assert all(s.attributes["gen_ai.request.stream"] is True for s in llms)
    assert llms[-1].attributes["gen_ai.output.messages"][0]["parts"] == [
        {"type": "text", "content": "(2+3)*4 = 20"}
    ]
    assert [s.attributes["gen_ai.usage.output_tokens"] for s in llms] == [7, 6, 3]
    assert all(s.attributes["gen_ai.response.time_to_first_chunk"] >= 0 for s in llms)


def test_sync_and_async_tools_and_direct_on_messages(instrumented: None, store: voltline.Store) -> None:
    from autogen_agentchat.messages import TextMessage
    from autogen_core import CancellationToken

    async def direct() -> Any:
        agent = calc_agent()  # add is a sync function (run in a thread), multiply a coroutine
        return await agent.on_messages(
            [TextMessage(content="What is (2+3)*4?", source="user")], CancellationToken()
        )

    response, spans = run_in_rollout(store, direct)

    assert response.chat_message.to_text() == "(2+3)*4 = 20"
    assert tree(spans) == CALC_TREE  # on_messages -> on_messages_stream is one agent turn, one span


def test_tool_that_raises_is_an_error_span_and_the_agent_behaves_as_without_voltline(
    only_autogen: None, store: voltline.Store
) -> None:
    script = [
        CreateResult(
            finish_reason="function_calls",
            content=[call("c1", "divide", a=1, b=0)],
            usage=RequestUsage(9, 4),
            cached=False,
        ),
        CreateResult(
            finish_reason="stop", content="cannot divide by zero", usage=RequestUsage(15, 4), cached=False
        ),
    ]

    def run() -> Any:
        return calc_agent(script=list(script), tools=[divide]).run(task="1/0?")

    with voltline.rollout("baseline", store=store):
        baseline = asyncio.run(run())
    voltline.instrument()
    result, spans = run_in_rollout(store, run)

    assert outcome(result) == outcome(baseline)
    assert "division by zero" in result.messages[2].content[0].content  # the model saw the error
    assert tree(spans) == [
        (
            "agent",
            "invoke_agent calc",
            "calc",
            [
                ("llm", "chat replay", "calc", []),
                ("tool", "execute_tool divide", "calc", []),
                ("llm", "chat replay", "calc", []),
            ],
        ),
    ]
    tool = one(spans, "execute_tool divide")
    assert tool.status == "error"
    assert tool.attributes["exception.type"] == "ZeroDivisionError"
    assert tool.attributes["exception.message"] == "division by zero"
    assert tool.attributes["error.type"] == "ZeroDivisionError"
    assert tool.attributes["gen_ai.tool.call.arguments"] == {"a": 1, "b": 0}
    assert "gen_ai.tool.call.result" not in tool.attributes
    assert one(spans, "invoke_agent calc").status == "ok"


def test_model_error_propagates_unchanged_and_is_recorded(instrumented: None, store: voltline.Store) -> None:
    agent = calc_agent(script=[])  # the replay client has nothing to say: it raises

    with pytest.raises(ValueError, match="No more mock responses available"):
        with voltline.rollout("task", store=store) as r:
            asyncio.run(agent.run(task="hi"))

    spans = store.query_spans(rollout_id=r.rollout_id)
    assert tree(spans) == [
        ("agent", "invoke_agent calc", "calc", [("llm", "chat replay", "calc", [])]),
        ("exception", "ValueError", None, []),  # recorded by voltline.rollout itself
    ]
    for name in ("invoke_agent calc", "chat replay"):
        assert one(spans, name).status == "error"
        assert one(spans, name).attributes["exception.type"] == "ValueError"


# --- teams ---------------------------------------------------------------------------------
def make_team(runtime: SingleThreadedAgentRuntime | None = None) -> RoundRobinGroupChat:
    researcher = AssistantAgent(
        "researcher",
        model_client=ReplayChatCompletionClient(
            [
                CreateResult(
                    finish_reason="function_calls",
                    content=[call("r1", "add", a=2, b=3)],
                    usage=RequestUsage(12, 8),
                    cached=False,
                ),
                CreateResult(
                    finish_reason="stop", content="The sum is 5.", usage=RequestUsage(25, 4), cached=False
                ),
            ],
            model_info=INFO,
        ),
        tools=[add],
        max_tool_iterations=3,
    )
    writer = AssistantAgent(
        "writer",
        model_client=ReplayChatCompletionClient(
            [
                CreateResult(
                    finish_reason="stop",
                    content="2+3 is 5. TERMINATE",
                    usage=RequestUsage(40, 6),
                    cached=False,
                )
            ],
            model_info=INFO,
        ),
    )
    return RoundRobinGroupChat(
        [researcher, writer], termination_condition=TextMentionTermination("TERMINATE"), runtime=runtime
    )


TEAM_TREE = [
    (
        "agent",
        "invoke_agent RoundRobinGroupChat",
        "RoundRobinGroupChat",
        [
            (
                "agent",
                "invoke_agent researcher",
                "researcher",
                [
                    ("llm", "chat replay", "researcher", []),
                    ("tool", "execute_tool add", "researcher", []),
                    ("llm", "chat replay", "researcher", []),
                ],
            ),
            (
                "agent",
                "invoke_agent writer",
                "writer",
                [
                    ("llm", "chat replay", "writer", []),
                ],
            ),
        ],
    ),
]


def assert_team_run(store: voltline.Store, rollout_id: str, result: Any) -> None:
    assert result.stop_reason == "Text 'TERMINATE' mentioned"
    assert [m.source for m in result.messages] == ["user", "researcher", "researcher", "researcher", "writer"]
    spans = store.query_spans(rollout_id=rollout_id)
    assert tree(spans) == TEAM_TREE
    team = one(spans, "invoke_agent RoundRobinGroupChat")
    assert team.attributes["autogen.team"] is True
    assert team.attributes["autogen.stop_reason"] == "Text 'TERMINATE' mentioned"
    assert team.attributes["gen_ai.input.messages"][0]["parts"][0]["content"] == "what is 2+3?"

    researcher_llm = store.query_spans(rollout_id=rollout_id, agent_name="researcher", kind="llm")
    writer_llm = store.query_spans(rollout_id=rollout_id, agent_name="writer", kind="llm")
    assert [s.attributes["gen_ai.usage.output_tokens"] for s in researcher_llm] == [8, 4]
    assert [s.attributes["gen_ai.usage.output_tokens"] for s in writer_llm] == [6]
    assert (
        writer_llm[0].attributes["gen_ai.output.messages"][0]["parts"][0]["content"] == "2+3 is 5. TERMINATE"
    )


def test_team_of_two_agents_names_each_agent_on_its_spans(instrumented: None, store: voltline.Store) -> None:
    with voltline.rollout("task", store=store) as r:
        result = asyncio.run(make_team().run(task="what is 2+3?"))
    assert_team_run(store, r.rollout_id, result)


def test_team_on_a_runtime_started_outside_the_rollout_is_still_captured(
    instrumented: None, store: voltline.Store
) -> None:
    # The runtime's message loop task was created before the rollout: its handlers see no
    # rollout in their context, so the plugin carries the sender's span across dispatch.
    async def main() -> tuple[str, Any]:
        runtime = SingleThreadedAgentRuntime()
        runtime.start()
        try:
            with voltline.rollout("task", store=store) as r:
                result = await make_team(runtime).run(task="what is 2+3?")
        finally:
            await runtime.stop_when_idle()
        return r.rollout_id, result

    rollout_id, result = asyncio.run(main())
    assert_team_run(store, rollout_id, result)


# --- other model clients and the explicit form ---------------------------------------------
def openai_transport(requests: list[dict[str, Any]]) -> httpx.MockTransport:
    """An OpenAI-compatible server in memory, returning the token ids a Voltline proxy adds."""

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        requests.append(body)
        return httpx.Response(
            200,
            json={
                "id": f"chatcmpl-{len(requests)}",
                "object": "chat.completion",
                "created": 0,
                "model": "tiny",
                "prompt_token_ids": [1, 2, 3],
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "token_ids": [7, 8],
                        "message": {"role": "assistant", "content": "hello"},
                        "logprobs": {
                            "content": [
                                {"token": "hel", "logprob": -0.5, "bytes": None, "top_logprobs": []},
                                {"token": "lo", "logprob": -0.25, "bytes": None, "top_logprobs": []},
                            ]
                        },
                    }
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
            },
        )

    return httpx.MockTransport(handle)


def openai_client(requests: list[dict[str, Any]]) -> ChatCompletionClient:
    from autogen_ext.models.openai import OpenAIChatCompletionClient

    return OpenAIChatCompletionClient(
        model="tiny",
        api_key="none",
        base_url="http://model.invalid/v1",
        model_info=INFO,
        temperature=0.3,
        http_client=httpx.AsyncClient(transport=openai_transport(requests)),
    )


def test_openai_client_gets_response_id_token_ids_and_event_log_is_unchanged(
    instrumented: None, store: voltline.Store, caplog: pytest.LogCaptureFixture
) -> None:
    requests: list[dict[str, Any]] = []
    # AutoGen's event log as by default (INFO events dropped): the ids must not depend on it.
    logging.getLogger(EVENT_LOGGER_NAME).setLevel(logging.NOTSET)
    with caplog.at_level(logging.WARNING):
        result, spans = run_in_rollout(
            store, lambda: calc_agent(client=openai_client(requests), tools=[]).run(task="say hello")
        )

    assert result.messages[-1].content == "hello"
    assert len(requests) == 1
    assert not [r for r in caplog.records if r.name == EVENT_LOGGER_NAME]  # nothing new reaches handlers
    assert tree(spans) == [("agent", "invoke_agent calc", "calc", [("llm", "chat tiny", "calc", [])])]
    llm = one(spans, "chat tiny")
    assert llm.attributes["gen_ai.provider.name"] == "openai"
    assert llm.attributes["gen_ai.request.model"] == "tiny"
    assert llm.attributes["gen_ai.request.temperature"] == 0.3
    assert llm.attributes["gen_ai.response.id"] == "chatcmpl-1"
    assert llm.attributes["gen_ai.response.model"] == "tiny"
    assert llm.attributes["prompt_token_ids"] == [1, 2, 3]
    assert llm.attributes["response_token_ids"] == [7, 8]
    assert llm.attributes["response_logprobs"] == [-0.5, -0.25]
    assert (llm.attributes["gen_ai.usage.input_tokens"], llm.attributes["gen_ai.usage.output_tokens"]) == (
        3,
        2,
    )


def test_event_log_still_reaches_handlers_that_listened_before(
    instrumented: None, store: voltline.Store
) -> None:
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(type(record.msg).__name__)

    logger = logging.getLogger(EVENT_LOGGER_NAME)
    logger.setLevel(logging.INFO)
    handler = Collect()
    logger.addHandler(handler)
    try:
        run_in_rollout(store, lambda: calc_agent(client=openai_client([]), tools=[]).run(task="say hello"))
    finally:
        logger.removeHandler(handler)
    assert "LLMCallEvent" in seen


def test_explicit_client_wrapper_without_instrument(store: voltline.Store) -> None:
    client = VoltlineChatCompletionClient(
        ReplayChatCompletionClient(tools_then_answer(), model_info=INFO), agent_name="calc"
    )
    result, spans = run_in_rollout(store, lambda: calc_agent(client=client).run(task="What is (2+3)*4?"))

    assert result.messages[-1].to_text() == "(2+3)*4 = 20"
    assert tree(spans) == [("llm", "chat replay", "calc", [])] * 3
    assert [
        s.attributes["gen_ai.usage.output_tokens"] for s in sorted(spans, key=lambda s: s.start_time)
    ] == [7, 6, 5]
    assert client.create_calls  # the replay client's own API is reachable through the wrapper


def test_explicit_client_under_instrument_records_each_call_once(
    instrumented: None, store: voltline.Store
) -> None:
    client = VoltlineChatCompletionClient(ReplayChatCompletionClient(tools_then_answer(), model_info=INFO))
    result, spans = run_in_rollout(store, lambda: calc_agent(client=client, stream=True).run(task="(2+3)*4?"))
    assert result.messages[-1].to_text() == "(2+3)*4 = 20"
    assert tree(spans) == CALC_TREE


def test_model_client_class_defined_after_instrument_is_captured(
    instrumented: None, store: voltline.Store
) -> None:
    class EchoClient(ChatCompletionClient):
        """A user's own client, defined after instrument(): no LLM events, no autogen-ext."""

        async def create(self, messages: Any, **kwargs: Any) -> CreateResult:
            return CreateResult(finish_reason="stop", content="echo", usage=RequestUsage(4, 1), cached=False)

        def create_stream(self, messages: Any, **kwargs: Any) -> Any:
            raise NotImplementedError

        async def close(self) -> None: ...
        def actual_usage(self) -> RequestUsage:
            return RequestUsage(0, 0)

        def total_usage(self) -> RequestUsage:
            return RequestUsage(0, 0)

        def count_tokens(self, messages: Any, **kwargs: Any) -> int:
            return 0

        def remaining_tokens(self, messages: Any, **kwargs: Any) -> int:
            return 0

        capabilities = INFO  # type: ignore[assignment]
        model_info = INFO  # type: ignore[assignment]

    result, spans = run_in_rollout(store, lambda: calc_agent(client=EchoClient(), tools=[]).run(task="hi"))
    assert result.messages[-1].content == "echo"
    assert tree(spans) == [("agent", "invoke_agent calc", "calc", [("llm", "chat EchoClient", "calc", [])])]
    assert one(spans, "chat EchoClient").attributes["gen_ai.usage.input_tokens"] == 4

    _plugins.uninstrument()
    assert getattr(EchoClient.__dict__["create"], "__voltline_original__", None) is None


# --- isolation and uninstrument -------------------------------------------------------------
def test_capture_failure_never_changes_the_agent_and_is_logged_once(
    only_autogen: None,
    store: voltline.Store,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with voltline.rollout("baseline", store=store):
        baseline = asyncio.run(calc_agent().run(task="What is (2+3)*4?"))
    voltline.instrument()

    def newer_autogen_payload(messages: Any) -> Any:
        raise KeyError("a message shape this plugin has never seen")

    monkeypatch.setattr(convert, "llm_messages", newer_autogen_payload)
    before = voltline.emitter_stats()["capture_errors"]
    with caplog.at_level(logging.ERROR, logger="voltline.autogen"):
        first, spans = run_in_rollout(store, lambda: calc_agent().run(task="What is (2+3)*4?"))
        second, _ = run_in_rollout(store, lambda: calc_agent(stream=True).run(task="What is (2+3)*4?"))

    assert outcome(first) == outcome(second) == outcome(baseline)
    assert voltline.emitter_stats()["capture_errors"] - before == 6  # 3 model calls per run
    logged = [r for r in caplog.records if "llm input messages failed" in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None
    # Only the messages are lost: every model-call span is still recorded.
    assert tree(spans) == CALC_TREE
    assert not [s for s in spans if "gen_ai.input.messages" in s.attributes and s.kind == "llm"]


def test_capture_failure_at_span_end_keeps_the_stream_and_exception_unchanged(
    instrumented: None, store: voltline.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(result: Any) -> Any:
        raise RuntimeError("capture bug")

    monkeypatch.setattr(convert, "output_messages", broken)
    before = voltline.emitter_stats()["capture_errors"]
    result, _ = run_in_rollout(store, lambda: calc_agent(stream=True).run(task="What is (2+3)*4?"))
    assert result.messages[-1].to_text() == "(2+3)*4 = 20"
    assert voltline.emitter_stats()["capture_errors"] - before == 3

    with pytest.raises(ValueError, match="No more mock responses available"):
        with voltline.rollout("task", store=store):
            asyncio.run(calc_agent(script=[]).run(task="hi"))


# Every attribute a `_convert` function produces.
CONVERTED = {
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.tool.definitions",
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
}


def test_a_failing_converter_loses_only_its_attributes(
    instrumented: None, store: voltline.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def streamed() -> Any:  # on_messages_stream rather than run()'s on_messages
        return [item async for item in calc_agent().run_stream(task="What is (2+3)*4?")][-1]

    def three_runs() -> list[tuple[Any, list[voltline.Span]]]:
        """An agent's run() and run_stream(), and a team's run(), as (outcome, spans)."""
        runs = [
            run_in_rollout(store, lambda: calc_agent().run(task="What is (2+3)*4?")),
            run_in_rollout(store, streamed),
            run_in_rollout(store, lambda: make_team().run(task="what is 2+3?")),
        ]
        return [(outcome(result), spans) for result, spans in runs]

    def in_start_order(spans: list[voltline.Span]) -> list[voltline.Span]:
        return sorted(spans, key=lambda s: (s.start_time, s.sequence))

    expected = three_runs()

    def broken(*args: Any) -> Any:
        raise TypeError("a payload a newer AutoGen changed")

    # Every payload conversion fails: model inputs, tool definitions and outputs, tool arguments
    # and results, agent and team messages.
    for name in convert.__all__:
        monkeypatch.setattr(convert, name, broken)
    errors_before = voltline.emitter_stats()["capture_errors"]
    got = three_runs()
    assert voltline.emitter_stats()["capture_errors"] > errors_before

    assert [result for result, _ in got] == [result for result, _ in expected]
    for (_, spans), (_, reference), shape in zip(
        got, expected, [CALC_TREE, CALC_TREE, TEAM_TREE], strict=True
    ):
        assert tree(spans) == tree(reference) == shape  # no span lost or left open, no parent link lost
        assert all(s.status == "ok" for s in spans)
        for span, normal in zip(in_start_order(spans), in_start_order(reference), strict=True):
            lost = CONVERTED
            if normal.attributes.get("autogen.team"):
                lost = CONVERTED - {"gen_ai.input.messages"}  # a string task needs no converter
            assert span.attributes == {k: v for k, v in normal.attributes.items() if k not in lost}, span.name
    # Each of them was in the normal run: the comparison above really saw it lost.
    assert CONVERTED.issubset(key for _, spans in expected for s in spans for key in s.attributes)
    calc = got[0][1]
    llm = one(calc, "chat replay").attributes
    assert llm["gen_ai.provider.name"] == "replay" and llm["gen_ai.usage.output_tokens"] == 7
    assert one(calc, "execute_tool add").attributes["gen_ai.tool.call.id"] == "c1"
    assert one(got[2][1], "invoke_agent RoundRobinGroupChat").attributes["autogen.messages"] == 5


def test_an_unreadable_team_result_loses_only_its_message_attributes(
    instrumented: None, store: voltline.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from autogen_agentchat.base import TaskResult

    reference, expected = run_in_rollout(store, lambda: make_team().run(task="what is 2+3?"))

    def unreadable(self: Any) -> Any:
        raise TypeError("a TaskResult a newer AutoGen changed")

    # A property outranks the pydantic field in the instance dict; the team itself never reads
    # `messages`, so only capture code sees the failure. Undone before the result is compared.
    with monkeypatch.context() as patch:
        patch.setattr(TaskResult, "messages", property(unreadable), raising=False)
        errors_before = voltline.emitter_stats()["capture_errors"]
        result, spans = run_in_rollout(store, lambda: make_team().run(task="what is 2+3?"))
        errors = voltline.emitter_stats()["capture_errors"] - errors_before

    assert (outcome(result), result.stop_reason) == (outcome(reference), reference.stop_reason)
    assert tree(spans) == tree(expected) == TEAM_TREE
    assert all(s.status == "ok" for s in spans)
    from_messages = {"gen_ai.output.messages", "autogen.messages"}
    team = one(spans, "invoke_agent RoundRobinGroupChat").attributes
    normal_team = one(expected, "invoke_agent RoundRobinGroupChat").attributes
    assert team["autogen.stop_reason"] == normal_team["autogen.stop_reason"] == "Text 'TERMINATE' mentioned"
    assert from_messages.issubset(normal_team)  # so the comparison below really saw them lost
    assert team == {k: v for k, v in normal_team.items() if k not in from_messages}

    def others(run: list[voltline.Span]) -> list[dict[str, Any]]:
        ordered = sorted(run, key=lambda s: (s.start_time, s.sequence))
        return [s.attributes for s in ordered if s.name != "invoke_agent RoundRobinGroupChat"]

    assert others(spans) == others(expected)
    assert errors == 1  # the one unreadable field; the stop reason was read as usual


def _framework_state() -> dict[str, Any]:
    """Every attribute the plugin could touch, by identity."""
    from autogen_core.tools import FunctionTool

    state: dict[str, Any] = {}
    classes = [
        ChatCompletionClient,
        ReplayChatCompletionClient,
        BaseChatAgent,
        AssistantAgent,
        BaseGroupChat,
        RoundRobinGroupChat,
        BaseTool,
        BaseStreamTool,
        FunctionTool,
        SingleThreadedAgentRuntime,
    ]
    names = [
        "create",
        "create_stream",
        "on_messages",
        "on_messages_stream",
        "run_stream",
        "run_json",
        "run_json_stream",
        "send_message",
        "publish_message",
        "_process_send",
        "_process_publish",
        "__init_subclass__",
    ]
    for cls in classes:
        for name in names:
            state[f"{cls.__qualname__}.{name}"] = cls.__dict__.get(name, "<absent>")
    for event in (LLMCallEvent, LLMStreamEndEvent):
        state[f"{event.__qualname__}.__init__"] = event.__dict__["__init__"]
    logger = logging.getLogger(EVENT_LOGGER_NAME)
    state["logger"] = (logger.level, list(logger.filters), list(logger.handlers))
    return state


def test_uninstrument_restores_autogen_exactly_and_records_nothing_after(
    only_autogen: None, store: voltline.Store
) -> None:
    before = _framework_state()
    assert voltline.instrument() == ["autogen"]
    during = _framework_state()
    assert during["ReplayChatCompletionClient.create"] is not before["ReplayChatCompletionClient.create"]
    assert during["BaseTool.run_json"] is not before["BaseTool.run_json"]
    assert during["LLMCallEvent.__init__"] is not before["LLMCallEvent.__init__"]
    assert during["logger"] == before["logger"]  # the event log is never touched

    assert voltline.uninstrument() == ["autogen"]
    assert _framework_state() == before

    result, spans = run_in_rollout(store, lambda: calc_agent().run(task="What is (2+3)*4?"))
    assert result.messages[-1].to_text() == "(2+3)*4 = 20"
    assert spans == []


def test_agents_outside_a_rollout_run_untouched(instrumented: None) -> None:
    before = voltline.emitter_stats()
    result = asyncio.run(calc_agent().run(task="What is (2+3)*4?"))
    assert result.messages[-1].to_text() == "(2+3)*4 = 20"
    after = voltline.emitter_stats()
    assert (after["emitted"], after["outside_rollout"]) == (before["emitted"], before["outside_rollout"])


def test_plugin_is_discovered_and_checks_the_supported_versions(
    only_autogen: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = {p.name: p for p in _plugins.plugins()}["autogen"]
    assert info.status == "loaded" and info.distribution == "voltline-autogen"
    assert [(i.name, i.available) for i in info.integrations] == [("autogen", True)]

    for installed in ({"autogen-agentchat": "0.4.9", "autogen-core": "0.7.5"}, {"autogen-core": "0.7.5"}):

        def version(dist: str, installed: dict[str, str] = installed) -> str:
            if dist not in installed:
                raise importlib.metadata.PackageNotFoundError(dist)
            return installed[dist]

        monkeypatch.setattr(importlib.metadata, "version", version)
        assert AutoGenIntegration().available() is False


# --- the example ---------------------------------------------------------------------------
def test_example_runs_offline_and_prints_the_span_tree(tmp_path: Path) -> None:
    env = {**os.environ, "VOLTLINE_PLUGINS": "autogen"}
    env.pop("VOLTLINE_STORE_URL", None)
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "autogen" / "team_agent.py"),
            "--store",
            f"sqlite:///{tmp_path}/ex.db",
        ],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for line in (
        "invoke_agent RoundRobinGroupChat",
        "invoke_agent planner",
        "invoke_agent calculator",
        "execute_tool add",
        "execute_tool multiply",
        "chat replay",
        "reward",
    ):
        assert line in out, out
    assert "answer: 20" in out
    store = voltline.connect(f"sqlite:///{tmp_path}/ex.db", create=False)
    try:
        [rollout] = store.query_rollouts()
        spans = store.query_spans(rollout_id=rollout.rollout_id)
        assert {s.agent_name for s in spans if s.kind == "llm"} == {"planner", "calculator"}
        assert [s.attributes["reward.value"] for s in spans if s.kind == "reward"] == [1.0]
    finally:
        store.close()


# --- concurrency, threads, nesting ---------------------------------------------------------
def test_concurrent_agents_in_a_worker_thread_keep_their_own_trees(
    instrumented: None, store: voltline.Store
) -> None:
    async def two_at_once() -> list[Any]:
        first = AssistantAgent("first", model_client=ReplayChatCompletionClient(["one"], model_info=INFO))
        second = calc_agent()
        return list(await asyncio.gather(first.run(task="a"), second.run(task="What is (2+3)*4?")))

    results: list[Any] = []
    with voltline.rollout("task", store=store) as r:
        # The event loop runs in a thread started inside the rollout: bind_context carries it there.
        worker = threading.Thread(
            target=voltline.bind_context(lambda: results.extend(asyncio.run(two_at_once())))
        )
        worker.start()
        worker.join()

    assert [res.messages[-1].to_text() for res in results] == ["one", "(2+3)*4 = 20"]
    forest = tree(store.query_spans(rollout_id=r.rollout_id))
    assert sorted(forest, key=lambda node: node[1]) == [
        CALC_TREE[0],
        ("agent", "invoke_agent first", "first", [("llm", "chat replay", "first", [])]),
    ]


def test_agent_used_as_a_tool_nests_under_the_tool_span(instrumented: None, store: voltline.Store) -> None:
    from autogen_agentchat.tools import AgentTool

    manager = AssistantAgent(
        "manager",
        model_client=ReplayChatCompletionClient(
            [
                CreateResult(
                    finish_reason="function_calls",
                    content=[call("m1", "calc", task="What is (2+3)*4?")],
                    usage=RequestUsage(10, 5),
                    cached=False,
                ),
                CreateResult(
                    finish_reason="stop", content="It is 20.", usage=RequestUsage(20, 4), cached=False
                ),
            ],
            model_info=INFO,
        ),
        tools=[AgentTool(calc_agent())],
        max_tool_iterations=3,
    )
    result, spans = run_in_rollout(store, lambda: manager.run(task="Ask calc for (2+3)*4."))

    assert result.messages[-1].to_text() == "It is 20."
    assert tree(spans) == [
        (
            "agent",
            "invoke_agent manager",
            "manager",
            [
                ("llm", "chat replay", "manager", []),
                ("tool", "execute_tool calc", "manager", CALC_TREE),
                ("llm", "chat replay", "manager", []),
            ],
        )
    ]
    assert one(spans, "execute_tool calc").attributes["gen_ai.tool.call.id"] == "m1"
    assert [
        s.name for s in store.query_spans(rollout_id=spans[0].rollout_id, agent_name="calc", kind="llm")
    ] == ["chat replay"] * 3


def test_selector_team_model_calls_carry_the_team_name(instrumented: None, store: voltline.Store) -> None:
    from autogen_agentchat.teams import SelectorGroupChat

    alpha = AssistantAgent(
        "alpha", model_client=ReplayChatCompletionClient(["hi from alpha"], model_info=INFO)
    )
    beta = AssistantAgent("beta", model_client=ReplayChatCompletionClient(["bye TERMINATE"], model_info=INFO))
    team = SelectorGroupChat(
        [alpha, beta],
        model_client=ReplayChatCompletionClient(["alpha"], model_info=INFO),  # picks the first speaker
        termination_condition=TextMentionTermination("TERMINATE"),
    )
    result, spans = run_in_rollout(store, lambda: team.run(task="go"))

    assert [m.source for m in result.messages] == ["user", "alpha", "beta"]
    assert tree(spans) == [
        (
            "agent",
            "invoke_agent SelectorGroupChat",
            "SelectorGroupChat",
            [
                ("llm", "chat replay", "SelectorGroupChat", []),
                ("agent", "invoke_agent alpha", "alpha", [("llm", "chat replay", "alpha", [])]),
                ("agent", "invoke_agent beta", "beta", [("llm", "chat replay", "beta", [])]),
            ],
        )
    ]


def test_explicit_client_label_yields_to_an_enclosing_agent_span(
    instrumented: None, store: voltline.Store
) -> None:
    client = VoltlineChatCompletionClient(
        ReplayChatCompletionClient(["ok"], model_info=INFO), agent_name="label"
    )
    _, spans = run_in_rollout(store, lambda: calc_agent(client=client, tools=[]).run(task="hi"))
    assert tree(spans) == [("agent", "invoke_agent calc", "calc", [("llm", "chat replay", "calc", [])])]


def test_unreachable_store_never_reaches_the_agent(
    instrumented: None, store: voltline.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    import types

    import voltline._emitter as emitter_module

    def unreachable(spans: Any) -> None:
        raise voltline.StoreUnavailable("connection refused")

    monkeypatch.setattr(store, "add_spans", unreachable)
    # The writer retries for ~25 s before giving up; skip its waiting, keep everything else.
    fast = types.SimpleNamespace(sleep=lambda seconds: None, monotonic=time.monotonic, time=time.time)
    monkeypatch.setattr(emitter_module, "time", fast)
    before = voltline.emitter_stats()["write_errors"]

    result, _ = run_in_rollout(store, lambda: calc_agent(stream=True).run(task="What is (2+3)*4?"))

    assert result.messages[-1].to_text() == "(2+3)*4 = 20"
    assert voltline.emitter_stats()["write_errors"] - before == 6  # the run's spans, counted, not raised
