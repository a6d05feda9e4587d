"""The LlamaIndex plugin, end to end: real LlamaIndex agents, query engines and retrievers,
run offline with a scripted LLM and a MockEmbedding, captured by `voltline.instrument()`
(or the explicit `voltline_llamaindex.register()`), checked span by span in the store.

Needs `pip install -e plugins/llamaindex` (scripts/setup.sh does it). Tests set
VOLTLINE_PLUGINS=llamaindex so no other installed framework plugin is patched in.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llama_index.core", reason="llama-index-core is not installed")

import voltline_llamaindex
import voltline_llamaindex.plugin as li_plugin
from _plugin_env import UnreachableStore, only_plugins
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.agent.workflow import (
    AgentStream,
    AgentWorkflow,
    FunctionAgent,
    ReActAgent,
    ToolCallResult,
)
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.instrumentation import get_dispatcher, root_manager
from llama_index.core.llms import ChatMessage, LLMMetadata, MockLLM
from llama_index.core.tools import FunctionTool, ToolMetadata
from voltline_llamaindex import _convert, _tracker
from voltline_llamaindex._tracker import Tracker
from voltline_llamaindex.testing import ScriptedLLM, ToolCalls

import voltline
from voltline import _plugins

# llama-index-workflows runs inspect.getmembers over pydantic agents, which trips pydantic's
# own deprecation warnings on every run; they are LlamaIndex's, not this plugin's.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:inspect")

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "How many bolts are in 3 crates?"


# -- fixtures and helpers -------------------------------------------------------------------
@pytest.fixture(autouse=True)
def only_this_plugin() -> Iterator[None]:
    with only_plugins("llamaindex"):
        yield


@pytest.fixture
def store(tmp_path: Path) -> Iterator[voltline.Store]:
    s = voltline.connect(f"sqlite:///{tmp_path}/x.db")
    yield s
    s.close()


def handler_snapshot() -> list[tuple[str, int, list[int], int, list[int]]]:
    """Every dispatcher's handler lists, by identity (the list objects and their members)."""
    return [
        (
            name,
            id(d.span_handlers),
            [id(h) for h in d.span_handlers],
            id(d.event_handlers),
            [id(h) for h in d.event_handlers],
        )
        for name, d in sorted(root_manager.dispatchers.items())
    ]


def spans_of(store: voltline.Store, rollout: voltline.RolloutContext) -> list[voltline.Span]:
    voltline.flush()
    return store.query_spans(rollout_id=rollout.rollout_id)


def tree(spans: Sequence[voltline.Span]) -> list[str]:
    """The spans as indented `kind name @agent` lines, children in start order under their parent."""
    ids = {s.span_id for s in spans}
    assert all(s.parent_id is None or s.parent_id in ids for s in spans), "a parent link points nowhere"
    children: dict[str | None, list[voltline.Span]] = {}
    for s in sorted(spans, key=lambda s: (s.start_time, s.sequence)):
        children.setdefault(s.parent_id, []).append(s)
    lines: list[str] = []

    def walk(parent: str | None, depth: int) -> None:
        for s in children.get(parent, []):
            lines.append("  " * depth + f"{s.kind} {s.name} @{s.agent_name}")
            walk(s.span_id, depth + 1)

    walk(None, 0)
    return lines


def only(spans: Sequence[voltline.Span], kind: str, name: str | None = None) -> list[voltline.Span]:
    return sorted(
        (s for s in spans if s.kind == kind and (name is None or s.name == name)),
        key=lambda s: (s.start_time, s.sequence),
    )


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def lookup(query: str) -> str:
    """Look up warehouse notes."""
    return "Each crate holds 40 bolts."


def broken_scale(item: str) -> float:
    """Weigh an item (the scale is broken)."""
    raise ValueError(f"scale offline while weighing {item}")


def function_agent(tools: list[Any] | None = None, **kwargs: Any) -> FunctionAgent:
    llm = ScriptedLLM(
        [
            ToolCalls(("lookup", {"query": "bolts per crate"}, "call_1")),
            ToolCalls(("multiply", {"a": 3, "b": 40}, "call_2")),
            "3 crates hold 120 bolts.",
        ]
    )
    tools = tools or [FunctionTool.from_defaults(lookup), FunctionTool.from_defaults(multiply)]
    return FunctionAgent(name="stockkeeper", tools=tools, llm=llm, system_prompt="Use the tools.", **kwargs)


async def run_streaming(agent: Any, message: str = QUESTION) -> tuple[str, str]:
    handler = agent.run(user_msg=message)
    streamed = ""
    async for event in handler.stream_events():
        if isinstance(event, AgentStream):
            streamed += event.delta
    return str(await handler), streamed


async def run_plain(agent: Any, message: str = QUESTION) -> str:
    return str(await agent.run(user_msg=message))


AGENT_STEPS = [
    "  chain init_run @stockkeeper",
    "  chain setup_agent @stockkeeper",
    "  chain run_agent_step @stockkeeper",
    "    llm chat scripted-1 @stockkeeper",
    "  chain parse_agent_output @stockkeeper",
    "  chain call_tool @stockkeeper",
    "    tool execute_tool lookup @stockkeeper",
    "  chain aggregate_tool_results @stockkeeper",
    "  chain setup_agent @stockkeeper",
    "  chain run_agent_step @stockkeeper",
    "    llm chat scripted-1 @stockkeeper",
    "  chain parse_agent_output @stockkeeper",
    "  chain call_tool @stockkeeper",
    "    tool execute_tool multiply @stockkeeper",
    "  chain aggregate_tool_results @stockkeeper",
    "  chain setup_agent @stockkeeper",
    "  chain run_agent_step @stockkeeper",
    "    llm chat scripted-1 @stockkeeper",
    "  chain parse_agent_output @stockkeeper",
]


def check_function_agent_spans(spans: Sequence[voltline.Span], *, stream: bool) -> None:
    assert tree(spans) == ["agent invoke_agent stockkeeper @stockkeeper", *AGENT_STEPS]
    [agent] = only(spans, "agent")
    assert agent.attributes["gen_ai.agent.name"] == "stockkeeper"
    assert agent.attributes["input.value"] == QUESTION
    assert agent.attributes["output.value"] == "3 crates hold 120 bolts."

    first, second, third = only(spans, "llm")
    assert first.attributes["gen_ai.request.model"] == "scripted-1"
    assert first.attributes["gen_ai.provider.name"] == "ScriptedLLM"
    assert first.attributes["gen_ai.request.stream"] is stream
    assert first.attributes["gen_ai.input.messages"] == [
        {"role": "system", "content": "Use the tools."},
        {"role": "user", "content": QUESTION},
    ]
    assert first.attributes["gen_ai.output.messages"] == [
        {
            "role": "assistant",
            "content": None,
            "finish_reason": "tool_calls",
            "tool_calls": [{"id": "call_1", "name": "lookup", "arguments": {"query": "bolts per crate"}}],
        }
    ]
    assert [d["name"] for d in first.attributes["gen_ai.tool.definitions"]] == ["lookup", "multiply"]
    # ScriptedLLM counts whitespace tokens: "Use the tools. How many bolts are in 3 crates?" -> 10
    assert first.attributes["gen_ai.usage.input_tokens"] == 10
    assert first.attributes["gen_ai.usage.output_tokens"] == 1
    assert first.attributes["gen_ai.response.id"] == "chatcmpl-scripted-1"
    assert first.attributes["gen_ai.response.finish_reasons"] == ["tool_calls"]
    assert ("gen_ai.response.time_to_first_chunk" in first.attributes) is stream
    assert second.attributes["gen_ai.input.messages"][-1] == {
        "role": "tool",
        "content": "Each crate holds 40 bolts.",
        "tool_call_id": "call_1",
    }
    assert third.attributes["gen_ai.output.messages"] == [
        {"role": "assistant", "content": "3 crates hold 120 bolts.", "finish_reason": "stop"}
    ]
    assert third.attributes["gen_ai.usage.output_tokens"] == 5
    assert third.attributes["gen_ai.response.id"] == "chatcmpl-scripted-3"

    lookup_span, multiply_span = only(spans, "tool")
    assert lookup_span.status == multiply_span.status == "ok"
    assert multiply_span.attributes == {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "multiply",
        "gen_ai.tool.call.id": "call_2",
        "gen_ai.tool.call.arguments": {"a": 3, "b": 40},
        "gen_ai.tool.call.result": "120",
    }
    assert lookup_span.attributes["gen_ai.tool.call.result"] == "Each crate holds 40 bolts."
    assert {s.rollout_id for s in spans} == {agent.rollout_id}
    assert all(s.end_time >= s.start_time for s in spans)


# -- workflow agents ------------------------------------------------------------------------
def test_function_agent_streaming_is_captured_as_an_exact_tree(store: voltline.Store) -> None:
    assert voltline.instrument() == ["llamaindex"]
    with voltline.rollout(QUESTION, store=store) as r:
        answer, streamed = asyncio.run(run_streaming(function_agent()))
    assert answer == streamed == "3 crates hold 120 bolts."
    check_function_agent_spans(spans_of(store, r), stream=True)


def test_function_agent_without_streaming(store: voltline.Store) -> None:
    voltline.instrument()
    with voltline.rollout(QUESTION, store=store) as r:
        answer = asyncio.run(run_plain(function_agent(streaming=False)))
    assert answer == "3 crates hold 120 bolts."
    check_function_agent_spans(spans_of(store, r), stream=False)


def test_react_agent_tools_are_captured_without_tool_call_events(store: voltline.Store) -> None:
    llm = ScriptedLLM(
        [
            'Thought: I need to multiply.\nAction: multiply\nAction Input: {"a": 3, "b": 40}',
            "Thought: I can answer without using any more tools.\nAnswer: 120",
        ]
    )
    agent = ReActAgent(name="reacter", tools=[FunctionTool.from_defaults(multiply)], llm=llm)
    voltline.instrument()
    with voltline.rollout("3*40", store=store) as r:
        assert asyncio.run(run_plain(agent, "3*40?")) == "120"
    spans = spans_of(store, r)
    assert tree(spans) == [
        "agent invoke_agent reacter @reacter",
        "  chain init_run @reacter",
        "  chain setup_agent @reacter",
        "  chain run_agent_step @reacter",
        "    llm chat scripted-1 @reacter",
        "  chain parse_agent_output @reacter",
        "  chain call_tool @reacter",
        "    tool execute_tool multiply @reacter",
        "  chain aggregate_tool_results @reacter",
        "  chain setup_agent @reacter",
        "  chain run_agent_step @reacter",
        "    llm chat scripted-1 @reacter",
        "  chain parse_agent_output @reacter",
    ]
    [tool] = only(spans, "tool")
    assert tool.attributes["gen_ai.tool.call.arguments"] == {"a": 3, "b": 40}
    assert tool.attributes["gen_ai.tool.call.result"] == "120"
    assert tool.attributes["gen_ai.tool.call.id"]  # ReAct makes up an id per call
    first = only(spans, "llm")[0]
    assert first.attributes["gen_ai.output.messages"][0]["content"].startswith("Thought: I need to multiply.")
    assert first.attributes["gen_ai.usage.output_tokens"] == 13


def test_tool_that_raises_changes_nothing_for_the_agent(store: voltline.Store) -> None:
    def agent() -> FunctionAgent:
        llm = ScriptedLLM([ToolCalls(("broken_scale", {"item": "bolts"}, "call_9")), "The scale is offline."])
        return FunctionAgent(name="weigher", tools=[FunctionTool.from_defaults(broken_scale)], llm=llm)

    async def run(a: FunctionAgent) -> tuple[str, list[str]]:
        handler = a.run(user_msg="Weigh the bolts.")
        results = [
            str(ev.tool_output) async for ev in handler.stream_events() if isinstance(ev, ToolCallResult)
        ]
        return str(await handler), results

    expected = asyncio.run(run(agent()))  # without Voltline
    voltline.instrument()
    with voltline.rollout("weigh", store=store) as r:
        assert (
            asyncio.run(run(agent()))
            == expected
            == ("The scale is offline.", ["scale offline while weighing bolts"])
        )
    [tool] = only(spans_of(store, r), "tool")
    assert tool.status == "error"
    assert tool.parent_id == only(spans_of(store, r), "chain", "call_tool")[0].span_id
    assert tool.attributes["exception.type"] == "ValueError"
    assert tool.attributes["exception.message"] == "scale offline while weighing bolts"
    assert tool.attributes["gen_ai.tool.call.id"] == "call_9"
    assert tool.attributes["gen_ai.tool.call.arguments"] == {"item": "bolts"}

    # Called directly, the tool's exception reaches the caller exactly as without Voltline.
    with voltline.rollout("direct", store=store) as r2:
        with pytest.raises(ValueError, match=r"^scale offline while weighing nuts$"):
            FunctionTool.from_defaults(broken_scale).call(item="nuts")
    [direct] = spans_of(store, r2)
    assert (direct.kind, direct.name, direct.status, direct.parent_id) == (
        "tool",
        "execute_tool broken_scale",
        "error",
        None,
    )


def test_agent_team_names_each_member_on_its_spans(store: voltline.Store) -> None:
    planner = FunctionAgent(
        name="planner",
        description="Plans.",
        tools=[],
        can_handoff_to=["calc"],
        llm=ScriptedLLM([ToolCalls(("handoff", {"to_agent": "calc", "reason": "math"}, "h1"))]),
    )
    calc = FunctionAgent(
        name="calc",
        description="Does math.",
        tools=[FunctionTool.from_defaults(multiply)],
        llm=ScriptedLLM([ToolCalls(("multiply", {"a": 3, "b": 40}, "m1")), "120"]),
    )
    team = AgentWorkflow(agents=[planner, calc], root_agent="planner")
    voltline.instrument()
    with voltline.rollout("3*40", store=store) as r:
        assert asyncio.run(run_plain(team, "3*40?")) == "120"
    spans = spans_of(store, r)
    assert tree(spans) == [
        "agent invoke_agent AgentWorkflow @AgentWorkflow",
        "  chain init_run @AgentWorkflow",
        "  chain setup_agent @planner",
        "  chain run_agent_step @planner",
        "    llm chat scripted-1 @planner",
        "  chain parse_agent_output @planner",
        "  chain call_tool @planner",
        "    tool execute_tool handoff @planner",
        "  chain aggregate_tool_results @planner",
        "  chain setup_agent @calc",
        "  chain run_agent_step @calc",
        "    llm chat scripted-1 @calc",
        "  chain parse_agent_output @calc",
        "  chain call_tool @calc",
        "    tool execute_tool multiply @calc",
        "  chain aggregate_tool_results @calc",
        "  chain setup_agent @calc",
        "  chain run_agent_step @calc",
        "    llm chat scripted-1 @calc",
        "  chain parse_agent_output @calc",
    ]
    calc_llm = store.query_spans(rollout_id=r.rollout_id, agent_name="calc", kind="llm")
    assert [s.span_id for s in calc_llm] == [s.span_id for s in only(spans, "llm")[1:]]
    planner_llm = store.query_spans(rollout_id=r.rollout_id, agent_name="planner", kind="llm")
    assert [s.attributes["gen_ai.response.id"] for s in planner_llm] == ["chatcmpl-scripted-1"]


def test_concurrent_tool_calls_each_get_their_own_call_id(store: voltline.Store) -> None:
    async def slow_multiply(a: int, b: int) -> int:
        """Multiply two integers, slowly."""
        await asyncio.sleep(0.005 * a)  # the two calls overlap: the first one finishes last
        return a * b

    llm = ScriptedLLM(
        [
            ToolCalls(("slow_multiply", {"a": 2, "b": 3}, "x1"), ("slow_multiply", {"a": 1, "b": 5}, "x2")),
            "6 and 5",
        ]
    )
    agent = FunctionAgent(name="par", tools=[FunctionTool.from_defaults(async_fn=slow_multiply)], llm=llm)
    voltline.instrument()
    with voltline.rollout("two products", store=store) as r:
        assert asyncio.run(run_plain(agent, "two products")) == "6 and 5"
    spans = spans_of(store, r)
    steps = {s.span_id: s for s in only(spans, "chain", "call_tool")}
    tools = {s.attributes["gen_ai.tool.call.id"]: s for s in only(spans, "tool")}
    assert {
        k: (v.attributes["gen_ai.tool.call.arguments"], v.attributes["gen_ai.tool.call.result"])
        for k, v in tools.items()
    } == {"x1": ({"a": 2, "b": 3}, "6"), "x2": ({"a": 1, "b": 5}, "5")}
    assert {tools["x1"].parent_id, tools["x2"].parent_id} == set(steps)  # one step each


# -- query engines, retrievers, sync streaming, threads --------------------------------------
def small_index() -> VectorStoreIndex:
    docs = [
        Document(text="Each crate holds 40 bolts.", id_="d1"),
        Document(text="Nuts come in 100s.", id_="d2"),
    ]
    return VectorStoreIndex.from_documents(docs, embed_model=MockEmbedding(embed_dim=8))


QUERY_TREE = [
    "chain query RetrieverQueryEngine @None",
    "  retriever retrieve VectorIndexRetriever @None",
    "  chain synthesize CompactAndRefine @None",
    "    llm chat scripted-1 @None",
]


def test_query_engine_sync_with_retriever_spans(store: voltline.Store) -> None:
    engine = small_index().as_query_engine(llm=ScriptedLLM(["40 bolts."]), similarity_top_k=1)
    voltline.instrument()
    with voltline.rollout("bolts", store=store) as r:
        assert str(engine.query("bolts per crate?")) == "40 bolts."
    spans = spans_of(store, r)
    assert tree(spans) == QUERY_TREE
    [query] = only(spans, "chain", "query RetrieverQueryEngine")
    assert query.attributes["input.value"] == "bolts per crate?"
    assert query.attributes["output.value"] == "40 bolts."
    [retriever] = only(spans, "retriever")
    assert retriever.attributes["retrieval.query"] == "bolts per crate?"
    [doc] = retriever.attributes["retrieval.documents"]
    assert doc["content"] in {"Each crate holds 40 bolts.", "Nuts come in 100s."} and doc["id"]
    [llm] = only(spans, "llm")
    assert llm.attributes["gen_ai.request.stream"] is False
    assert "bolts per crate?" in llm.attributes["gen_ai.input.messages"][-1]["content"]


def test_sync_streaming_query_ends_the_llm_span_when_the_stream_is_consumed(store: voltline.Store) -> None:
    engine = small_index().as_query_engine(llm=ScriptedLLM(["Forty bolts per crate."]), streaming=True)
    voltline.instrument()
    with voltline.rollout("bolts", store=store) as r:
        response = engine.query("bolts per crate?")
        assert "".join(response.response_gen) == "Forty bolts per crate."
    spans = spans_of(store, r)
    # LlamaIndex calls the model lazily, when the caller reads the stream: by then the query
    # has returned, and LlamaIndex itself opens that call with no parent span.
    assert tree(spans) == [
        "chain query RetrieverQueryEngine @None",
        "  retriever retrieve VectorIndexRetriever @None",
        "  chain synthesize CompactAndRefine @None",
        "llm chat scripted-1 @None",
    ]
    [llm] = only(spans, "llm")
    assert llm.attributes["gen_ai.request.stream"] is True
    assert llm.attributes["gen_ai.output.messages"] == [
        {"role": "assistant", "content": "Forty bolts per crate.", "finish_reason": "stop"}
    ]
    assert llm.attributes["gen_ai.usage.output_tokens"] == 4
    assert llm.end_time >= only(spans, "chain", "synthesize CompactAndRefine")[0].end_time


def test_queries_on_pool_threads_nest_under_the_span_that_started_them(store: voltline.Store) -> None:
    engine = small_index().as_query_engine(llm=ScriptedLLM(["40.", "40."]), similarity_top_k=1)
    voltline.instrument()
    with voltline.rollout("batch", store=store) as r:
        with voltline.span("batch", kind="chain", agent_name="batcher") as batch:
            with ThreadPoolExecutor(2) as pool:
                work = voltline.bind_context(lambda q: str(engine.query(q)))
                assert list(pool.map(work, ["crates?", "bolts?"])) == ["40.", "40."]
    spans = spans_of(store, r)
    assert tree(spans) == [
        "chain batch @batcher",
        *[
            "  chain query RetrieverQueryEngine @batcher",
            "    retriever retrieve VectorIndexRetriever @batcher",
            "    chain synthesize CompactAndRefine @batcher",
            "      llm chat scripted-1 @batcher",
        ]
        * 2,
    ]
    assert {s.parent_id for s in only(spans, "chain", "query RetrieverQueryEngine")} == {batch.span_id}


# -- explicit form, discovery, versions -------------------------------------------------------
def test_explicit_registration_captures_and_removes_exactly(store: voltline.Store) -> None:
    before = handler_snapshot()
    with voltline_llamaindex.register() as registration:
        root = get_dispatcher()
        assert root.span_handlers[-1] is registration.span_handler
        assert root.event_handlers[-1] is registration.event_handler
        with voltline.rollout(QUESTION, store=store) as r:
            asyncio.run(run_streaming(function_agent()))
    assert handler_snapshot() == before
    registration.remove()  # idempotent
    assert handler_snapshot() == before
    check_function_agent_spans(spans_of(store, r), stream=True)


def test_plugin_is_discovered_through_its_entry_point() -> None:
    [info] = [p for p in _plugins.plugins() if p.name == "llamaindex"]
    assert info.status == "loaded" and info.distribution == "voltline-llamaindex"
    assert info.integrations == (_plugins.IntegrationInfo("llamaindex", available=True, installed=False),)


@pytest.mark.parametrize(
    ("installed", "ok"),
    [("0.14.25", True), ("0.14.30", True), ("0.14.24", False), ("0.15.0", False), ("0.15.0rc1", False)],
)
def test_available_checks_the_supported_version(
    monkeypatch: pytest.MonkeyPatch, installed: str, ok: bool
) -> None:
    monkeypatch.setattr(importlib.metadata, "version", lambda dist: installed)
    assert li_plugin.LlamaIndexIntegration().available() is ok


# -- isolation and uninstrument ----------------------------------------------------------------
def test_capture_failures_never_reach_the_agent(
    store: voltline.Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    expected = asyncio.run(run_streaming(function_agent()))

    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("unexpected payload")

    monkeypatch.setattr(Tracker, "_llm_start", boom)
    monkeypatch.setattr(Tracker, "_result_attributes", boom)
    voltline.instrument()
    errors_before = voltline.emitter_stats()["capture_errors"]
    with caplog.at_level(logging.ERROR, logger="voltline.llamaindex"):
        with voltline.rollout(QUESTION, store=store) as r:
            assert asyncio.run(run_streaming(function_agent())) == expected
    # 3 model calls (start hook) + 17 recorded spans (agent, 14 steps, 2 tools) whose results failed
    assert voltline.emitter_stats()["capture_errors"] - errors_before == 3 + 17
    logged = [rec for rec in caplog.records if rec.name == "voltline.llamaindex"]
    assert sorted(rec.getMessage().split(";")[0] for rec in logged) == [
        "voltline: LlamaIndex capture failed in event",
        "voltline: LlamaIndex capture failed in span_exit",
    ]  # logged once per place, counted every time
    spans = spans_of(store, r)
    # The spans still close (without their results); only the LLM spans are lost.
    assert [line for line in tree(spans) if "llm" not in line] == [
        "agent invoke_agent stockkeeper @stockkeeper",
        *[line for line in AGENT_STEPS if "llm" not in line],
    ]


def test_unreachable_store_leaves_the_agent_unchanged(tmp_path: Path) -> None:
    flaky = UnreachableStore(f"sqlite:///{tmp_path}/flaky.db")
    voltline.instrument()
    with voltline.rollout(QUESTION, store=flaky) as r:
        answer, streamed = asyncio.run(run_streaming(function_agent()))
        voltline.flush()
    assert answer == streamed == "3 crates hold 120 bolts."
    assert flaky.failed == 2
    assert flaky.get_rollout(r.rollout_id).status == "succeeded"
    check_function_agent_spans(spans_of(flaky, r), stream=True)  # written once the store came back
    flaky.close()


def assert_lost(
    reference: Sequence[voltline.Span], spans: Sequence[voltline.Span], lost: dict[str, set[str]]
) -> None:
    """Span by span (per kind, in start order), the reference's attributes but exactly `lost`."""
    for kind, keys in lost.items():
        pairs = list(zip(only(reference, kind), only(spans, kind), strict=True))
        assert pairs
        for ref, span in pairs:
            assert keys <= ref.attributes.keys()  # each was recorded when nothing failed
            kept = {k: v for k, v in ref.attributes.items() if k not in keys}
            assert span.attributes.keys() == kept.keys()
            kept.pop("gen_ai.response.time_to_first_chunk", None)  # a timing: differs run to run
            assert {k: span.attributes[k] for k in kept} == kept
            assert span.status == ref.status


def instrumented_reference_run(store: voltline.Store) -> tuple[tuple[str, str], list[voltline.Span]]:
    """`voltline.instrument()`, then the streaming FunctionAgent run with nothing broken: its
    answer and spans, what the isolation tests compare a run with a failure against."""
    voltline.instrument()
    with voltline.rollout(QUESTION, store=store) as ref:
        expected = asyncio.run(run_streaming(function_agent()))
    return expected, spans_of(store, ref)


def test_a_failing_converter_loses_only_its_attributes(
    store: voltline.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected, reference = instrumented_reference_run(store)
    check_function_agent_spans(reference, stream=True)
    index = small_index()
    with voltline.rollout("bolts", store=store) as ref_query:
        assert str(index.as_query_engine(llm=ScriptedLLM(["40."])).query("bolts per crate?")) == "40."
    reference_query = spans_of(store, ref_query)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise TypeError("a payload a newer LlamaIndex changed")

    real_get = _convert.get

    def get(obj: Any, *path: str | int) -> Any:
        if path in {("current_agent_name",), ("tool_id",)}:
            raise TypeError("a workflow step field a newer LlamaIndex changed")
        return real_get(obj, *path)

    # Every payload conversion fails: model inputs and outputs, tool definitions, arguments and
    # results, texts (agent input, output and description), step fields, retrieved nodes, queries.
    for name in ("messages", "output_messages", "jsonable", "nodes", "query_text"):
        monkeypatch.setattr(_convert, name, broken)
    monkeypatch.setattr(_tracker, "_short", broken)
    monkeypatch.setattr(_convert, "get", get)
    errors_before = voltline.emitter_stats()["capture_errors"]
    with voltline.rollout(QUESTION, store=store) as r:
        assert asyncio.run(run_streaming(function_agent())) == expected
    assert voltline.emitter_stats()["capture_errors"] > errors_before
    spans = spans_of(store, r)
    # No span lost, no parent link lost, every span ended: only what could not be converted.
    assert tree(spans) == ["agent invoke_agent stockkeeper @stockkeeper", *AGENT_STEPS]
    assert_lost(
        reference,
        spans,
        {
            "agent": {"input.value", "output.value", "gen_ai.agent.description"},
            "chain": set(),  # the steps' agent names are inherited, as the tree shows
            "llm": {"gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.tool.definitions"},
            "tool": {"gen_ai.tool.call.arguments", "gen_ai.tool.call.result", "gen_ai.tool.call.id"},
        },
    )

    errors_before = voltline.emitter_stats()["capture_errors"]
    with voltline.rollout("bolts", store=store) as r:
        assert str(index.as_query_engine(llm=ScriptedLLM(["40."])).query("bolts per crate?")) == "40."
    assert voltline.emitter_stats()["capture_errors"] > errors_before
    spans = spans_of(store, r)
    assert tree(spans) == QUERY_TREE
    assert_lost(
        reference_query,
        spans,
        {
            "chain": {"input.value", "output.value"},
            "retriever": {"retrieval.query", "retrieval.documents"},
            "llm": {"gen_ai.input.messages", "gen_ai.output.messages"},
        },
    )


def edited(span: voltline.Span, changes: dict[str, Any]) -> voltline.Span:
    """`span` with some attributes replaced, a None value removing that attribute; each must
    have been recorded (the span is a reference run's, where nothing failed)."""
    assert changes.keys() <= span.attributes.keys()
    attrs = {k: changes.get(k, v) for k, v in span.attributes.items()}
    return span.model_copy(update={"attributes": {k: v for k, v in attrs.items() if v is not None}})


ALL_KINDS_INTACT = {"agent": set(), "chain": set(), "llm": set(), "tool": set()}


def test_a_model_dict_that_is_not_a_mapping_loses_only_the_provider(
    store: voltline.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected, reference = instrumented_reference_run(store)
    index = small_index()

    def query() -> str:
        # MockLLM has no `model` field: its model name can only come from model_dict.
        return str(index.as_query_engine(llm=MockLLM(), similarity_top_k=1).query("bolts per crate?"))

    with voltline.rollout("bolts", store=store) as ref_query:
        expected_query = query()
    reference_query = spans_of(store, ref_query)
    assert tree(reference_query)[-1] == "    llm text_completion unknown @None"

    real_get = _convert.get

    def get(obj: Any, *path: str | int) -> Any:
        value = real_get(obj, *path)
        if path == ("model_dict",):  # as a newer LlamaIndex might send it: an object, not a dict
            return LLMMetadata.model_validate(value)
        return value

    monkeypatch.setattr(_convert, "get", get)
    errors_before = voltline.emitter_stats()["capture_errors"]
    with voltline.rollout(QUESTION, store=store) as r:
        assert asyncio.run(run_streaming(function_agent())) == expected
    # ScriptedLLM's model is its own field; its provider (model_dict's class name) fails, per call.
    assert voltline.emitter_stats()["capture_errors"] - errors_before == 3
    spans = spans_of(store, r)
    assert tree(spans) == ["agent invoke_agent stockkeeper @stockkeeper", *AGENT_STEPS]
    assert_lost(reference, spans, {**ALL_KINDS_INTACT, "llm": {"gen_ai.provider.name"}})

    errors_before = voltline.emitter_stats()["capture_errors"]
    with voltline.rollout("bolts", store=store) as r:
        assert query() == expected_query
    assert voltline.emitter_stats()["capture_errors"] - errors_before == 2  # model name, provider
    spans = spans_of(store, r)
    assert tree(spans) == tree(reference_query)  # the model call is still named, as unknown
    assert_lost(reference_query, spans, {"chain": set(), "retriever": set(), "llm": {"gen_ai.provider.name"}})


def test_a_tool_whose_name_cannot_be_read_keeps_its_span(
    store: voltline.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected, reference = instrumented_reference_run(store)
    real_get = _convert.get

    def get(obj: Any, *path: str | int) -> Any:
        if path == ("metadata", "name") and real_get(obj, *path) == "multiply":
            raise TypeError("a tool's metadata a newer LlamaIndex changed")
        return real_get(obj, *path)

    monkeypatch.setattr(_convert, "get", get)
    errors_before = voltline.emitter_stats()["capture_errors"]
    with voltline.rollout(QUESTION, store=store) as r:
        assert asyncio.run(run_streaming(function_agent())) == expected
    # The tool's span, and its entry in the tool list of each of the 3 model calls.
    assert voltline.emitter_stats()["capture_errors"] - errors_before == 1 + 3
    spans = spans_of(store, r)
    assert tree(spans) == [
        "agent invoke_agent stockkeeper @stockkeeper",
        *[line.replace("execute_tool multiply", "execute_tool FunctionTool") for line in AGENT_STEPS],
    ]
    lookup_definition, multiply_definition = only(reference, "llm")[0].attributes["gen_ai.tool.definitions"]
    without_name = [lookup_definition, {"description": multiply_definition["description"]}]
    expected_spans = [
        edited(s, {"gen_ai.tool.name": None})
        if s.name == "execute_tool multiply"
        else edited(s, {"gen_ai.tool.definitions": without_name})
        if s.kind == "llm"
        else s
        for s in reference
    ]
    assert_lost(expected_spans, spans, ALL_KINDS_INTACT)


def test_a_tool_whose_description_is_none_is_listed_without_one(store: voltline.Store) -> None:
    expected, reference = instrumented_reference_run(store)
    # ToolMetadata is a plain dataclass: nothing stops a description of None.
    undescribed = FunctionTool(multiply, ToolMetadata(name="multiply", description=None))
    errors_before = voltline.emitter_stats()["capture_errors"]
    with voltline.rollout(QUESTION, store=store) as r:
        tools = [FunctionTool.from_defaults(lookup), undescribed]
        assert asyncio.run(run_streaming(function_agent(tools))) == expected
    assert voltline.emitter_stats()["capture_errors"] == errors_before  # nothing failed
    spans = spans_of(store, r)
    assert tree(spans) == ["agent invoke_agent stockkeeper @stockkeeper", *AGENT_STEPS]
    lookup_definition, _ = only(reference, "llm")[0].attributes["gen_ai.tool.definitions"]
    no_description = [lookup_definition, {"name": "multiply"}]  # absent, not the text "None"
    expected_spans = [
        edited(s, {"gen_ai.tool.definitions": no_description}) if s.kind == "llm" else s for s in reference
    ]
    assert_lost(expected_spans, spans, ALL_KINDS_INTACT)


def test_uninstrument_restores_the_dispatchers_and_records_nothing_after(store: voltline.Store) -> None:
    before = handler_snapshot()
    assert voltline.instrument() == ["llamaindex"]
    assert handler_snapshot() != before
    assert voltline.uninstrument() == ["llamaindex"]
    assert handler_snapshot() == before
    with voltline.rollout(QUESTION, store=store) as r:
        assert asyncio.run(run_streaming(function_agent()))[0] == "3 crates hold 120 bolts."
    assert spans_of(store, r) == []


def test_outside_a_rollout_the_agent_runs_and_nothing_is_written() -> None:
    voltline.instrument()
    outside = voltline.emitter_stats()["outside_rollout"]
    assert asyncio.run(run_plain(function_agent())) == "3 crates hold 120 bolts."
    voltline.flush()
    assert voltline.emitter_stats()["outside_rollout"] - outside == 20  # 20 spans counted, none raised


def test_chat_messages_with_provider_tool_calls_are_read() -> None:
    """OpenAI-style integrations keep tool calls in additional_kwargs, as SDK objects or dicts."""
    message = ChatMessage(
        role="assistant",
        content=None,
        additional_kwargs={
            "tool_calls": [{"id": "c1", "function": {"name": "add", "arguments": '{"a": 1}'}}]
        },
    )
    raw = {
        "id": "x",
        "model": "m",
        "choices": [{"finish_reason": "tool_calls", "token_ids": [5, 6]}],
        "usage": {"input_tokens": 7, "output_tokens": 2},
        "prompt_token_ids": [1, 2, 3],
    }

    class Response:
        def __init__(self) -> None:
            self.message, self.raw, self.additional_kwargs = message, raw, {}

    [output] = _convert.output_messages(Response()) or []
    assert output["tool_calls"] == [{"id": "c1", "name": "add", "arguments": '{"a": 1}'}]
    attrs = _convert.llm_response_attributes(Response())
    assert (attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"]) == (7, 2)
    assert (attrs["prompt_token_ids"], attrs["response_token_ids"]) == ([1, 2, 3], [5, 6])


# -- the example ------------------------------------------------------------------------------
def test_example_runs_offline_and_prints_the_tree(tmp_path: Path) -> None:
    env = {**os.environ, "VOLTLINE_PLUGINS": "llamaindex"}
    url = f"sqlite:///{tmp_path}/example.db"
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples/llamaindex/warehouse_agent.py"), "--store", url],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=True,
    ).stdout
    assert "answer: 3 crates hold 120 bolts." in out
    for fragment in (
        "agent invoke_agent stockkeeper",
        "tool execute_tool lookup_stock",
        "retriever retrieve VectorIndexRetriever",
        "tool execute_tool multiply",
        "llm chat scripted-1",
        "reward reward",
        "value=1.0",
    ):
        assert fragment in out
    rollout_id = next(line.split()[1] for line in out.splitlines() if line.startswith("rollout: "))
    with voltline.connect(url) as s:
        spans = s.query_spans(rollout_id=rollout_id)
    assert len(only(spans, "llm")) == 3 and len(only(spans, "retriever")) == 1
    assert [s.agent_name for s in spans if s.kind != "reward"] == ["stockkeeper"] * 21
    (lookup,) = only(spans, "tool", "execute_tool lookup_stock")
    assert "40 bolts" in lookup.attributes["gen_ai.tool.call.result"]  # the note the script's answer uses
