"""The LangChain plugin, end to end: real LangGraph agents, offline, against a SQLite store.

The agents are `langchain.agents.create_agent` graphs over `ScriptedChatModel` (real
`BaseChatModel` machinery replaying scripted tool-calling turns), so every callback fires as
it would for a provider model. Assertions are on the exact span trees stored.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypedDict

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langgraph")
pytest.importorskip("langchain.agents")

import voltline_langchain.plugin as lc_plugin
from _plugin_env import only_plugins
from langchain.agents import create_agent
from langchain_core.callbacks import CallbackManager
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import ToolException, tool
from langchain_core.tracers import context as lc_context
from langgraph.graph import END, START, StateGraph
from voltline_langchain import VoltlineCallbackHandler, _convert
from voltline_langchain.testing import ScriptedChatModel, reply

import voltline
from voltline import _emitter, _plugins
from voltline._errors import StoreUnavailable

ROOT = Path(__file__).resolve().parents[1]


# tools and agents -----------------------------------------------------------------------
@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


@tool
def divide(a: int, b: int) -> float:
    """Divide a by b."""
    return a / b


@tool
def lookup(key: str) -> str:
    """Look a key up; unknown keys are reported back to the model."""
    raise ToolException(f"no such key: {key}")


lookup.handle_tool_error = True  # report the failure to the model instead of raising


def calc_script() -> list[AIMessage]:
    return [
        reply(
            tool_calls=[("add", {"a": 3, "b": 4}, "call_add")],
            input_tokens=30,
            output_tokens=10,
            response_id="resp-1",
        ),
        reply(
            tool_calls=[("multiply", {"a": 7, "b": 5}, "call_mul")],
            input_tokens=50,
            output_tokens=11,
            response_id="resp-2",
        ),
        reply("35", input_tokens=70, output_tokens=2, response_id="resp-3"),
    ]


def calc_agent(name: str | None = "calc", script: list[AIMessage] | None = None, tools: Any = None) -> Any:
    model = ScriptedChatModel(responses=script or calc_script())
    return create_agent(model, tools or [add, multiply], system_prompt="Be exact.", name=name)


QUESTION = {"messages": [("user", "(3 + 4) * 5?")]}

CALC_TREE = [
    "agent invoke_agent calc [calc]",
    "  chain model [calc]",
    "    llm chat scripted-model [calc]",
    "  chain tools [calc]",
    "    tool execute_tool add [calc]",
    "  chain model [calc]",
    "    llm chat scripted-model [calc]",
    "  chain tools [calc]",
    "    tool execute_tool multiply [calc]",
    "  chain model [calc]",
    "    llm chat scripted-model [calc]",
]


# fixtures and helpers ---------------------------------------------------------------------
@pytest.fixture
def store(tmp_path: Path) -> Iterator[voltline.Store]:
    s = voltline.connect(f"sqlite:///{tmp_path}/x.db")
    yield s
    s.close()


@pytest.fixture
def only_langchain() -> Iterator[None]:
    with only_plugins("langchain"):
        yield


@pytest.fixture
def instrumented(only_langchain: None) -> Iterator[None]:
    assert voltline.instrument() == ["langchain"]
    yield


def spans_of(store: voltline.Store, rollout_id: str) -> list[voltline.Span]:
    return store.query_spans(rollout_id=rollout_id)


def outline(spans: list[voltline.Span], with_agent: bool = True) -> list[str]:
    """The span tree as indented `kind name [agent]` lines, siblings in start order."""
    children: dict[str | None, list[voltline.Span]] = {}
    for s in spans:  # a span whose parent is missing is left out, so the comparison fails
        children.setdefault(s.parent_id, []).append(s)
    lines: list[str] = []

    def walk(parent: str | None, depth: int) -> None:
        for s in sorted(children.get(parent, []), key=lambda s: (s.start_time, s.sequence)):
            agent = f" [{s.agent_name}]" if with_agent else ""
            lines.append(f"{'  ' * depth}{kind_of(s)} {s.name}{agent}")
            walk(s.span_id, depth + 1)

    walk(None, 0)
    return lines


def kind_of(span: voltline.Span) -> str:
    return str(getattr(span.kind, "value", span.kind))


def by_kind(spans: list[voltline.Span], kind: str) -> list[voltline.Span]:
    return sorted((s for s in spans if kind_of(s) == kind), key=lambda s: s.start_time)


def tool_definition(name: str, description: str) -> dict[str, Any]:
    """An OpenAI-schema definition of a tool taking two integers `a` and `b`."""
    integer = {"type": "integer"}
    parameters = {"properties": {"a": integer, "b": integer}, "required": ["a", "b"], "type": "object"}
    function = {"name": name, "description": description, "parameters": parameters}
    return {"type": "function", "function": function}


def final_text(result: dict[str, Any]) -> str:
    return result["messages"][-1].content


def stats() -> dict[str, int]:
    return voltline.emitter_stats()


# the agent, captured --------------------------------------------------------------------
def check_calc_spans(spans: list[voltline.Span], *, streamed: bool = False) -> None:
    assert outline(spans) == CALC_TREE
    (root,) = by_kind(spans, "agent")
    assert root.parent_id is None
    assert root.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert root.attributes["gen_ai.agent.name"] == "calc"
    assert root.attributes["input"] == {"messages": [["user", "(3 + 4) * 5?"]]}
    assert [m["role"] for m in root.attributes["output"]["messages"]] == [
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "assistant",
    ]
    assert root.attributes["output"]["messages"][-1] == {"role": "assistant", "content": "35", "name": "calc"}

    llms = by_kind(spans, "llm")
    assert [s.attributes["gen_ai.usage.input_tokens"] for s in llms] == [30, 50, 70]
    assert [s.attributes["gen_ai.usage.output_tokens"] for s in llms] == [10, 11, 2]
    assert [s.attributes["gen_ai.response.finish_reasons"] for s in llms] == [
        ["tool_calls"],
        ["tool_calls"],
        ["stop"],
    ]
    assert [s.attributes["gen_ai.response.id"] for s in llms] == ["resp-1", "resp-2", "resp-3"]
    for s in llms:
        assert s.attributes["gen_ai.operation.name"] == "chat"
        assert s.attributes["gen_ai.request.model"] == "scripted-model"
        assert s.attributes["gen_ai.response.model"] == "scripted-model"
        assert s.attributes["gen_ai.provider.name"] == "scripted"
        assert s.attributes.get("gen_ai.request.stream", False) is streamed
        # Every call carries the tools the agent bound, in the schema the model was given.
        assert s.attributes["gen_ai.tool.definitions"] == [
            tool_definition("add", "Add two integers."),
            tool_definition("multiply", "Multiply two integers."),
        ]
    first, second, last = llms
    assert first.attributes["gen_ai.input.messages"] == [
        {"role": "system", "content": "Be exact."},
        {"role": "user", "content": "(3 + 4) * 5?"},
    ]
    assert first.attributes["gen_ai.output.messages"] == [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_add",
                    "type": "function",
                    "function": {"name": "add", "arguments": '{"a": 3, "b": 4}'},
                }
            ],
            "finish_reason": "tool_calls",
        }
    ]
    assert second.attributes["gen_ai.input.messages"][2:] == [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_add",
                    "type": "function",
                    "function": {"name": "add", "arguments": '{"a": 3, "b": 4}'},
                }
            ],
            "name": "calc",
        },
        {"role": "tool", "content": "7", "tool_call_id": "call_add", "name": "add"},
    ]
    assert len(last.attributes["gen_ai.input.messages"]) == 6
    assert last.attributes["gen_ai.output.messages"] == [
        {"role": "assistant", "content": "35", "finish_reason": "stop"}
    ]

    tools = by_kind(spans, "tool")
    assert [
        (
            t.attributes["gen_ai.tool.name"],
            t.attributes["gen_ai.tool.call.id"],
            t.attributes["gen_ai.tool.call.arguments"],
            t.attributes["gen_ai.tool.call.result"],
            str(t.status.value),
        )
        for t in tools
    ] == [
        ("add", "call_add", {"a": 3, "b": 4}, "7", "ok"),
        ("multiply", "call_mul", {"a": 7, "b": 5}, "35", "ok"),
    ]
    assert tools[0].attributes["gen_ai.tool.description"] == "Add two integers."
    nodes = by_kind(spans, "chain")
    assert [(n.attributes["langgraph.node"], n.attributes["langgraph.step"]) for n in nodes] == [
        ("model", 1),
        ("tools", 2),
        ("model", 3),
        ("tools", 4),
        ("model", 5),
    ]
    assert all(s.agent_name == "calc" for s in spans)


def test_a_langgraph_agent_is_captured_as_an_exact_span_tree(
    instrumented: None, store: voltline.Store
) -> None:
    with voltline.rollout({"q": "calc"}, store=store) as r:
        result = calc_agent().invoke(QUESTION)
        assert voltline.current_span() is None  # nothing leaks into the caller's context
        voltline.emit_reward(1.0)
    assert final_text(result) == "35"
    spans = spans_of(store, r.rollout_id)
    check_calc_spans([s for s in spans if s.name != "reward"])
    (reward,) = [s for s in spans if s.name == "reward"]
    assert reward.parent_id is None and reward.agent_name is None

    llm_calls = store.query_spans(rollout_id=r.rollout_id, kind="llm", agent_name="calc")
    assert [s.attributes["gen_ai.response.id"] for s in llm_calls] == ["resp-1", "resp-2", "resp-3"]


def test_async_ainvoke_gives_the_same_tree(instrumented: None, store: voltline.Store) -> None:
    async def run() -> dict[str, Any]:
        with voltline.rollout({"q": "async"}, store=store) as r:
            out = await calc_agent().ainvoke(QUESTION)
            assert voltline.current_span() is None
        run.rollout_id = r.rollout_id  # type: ignore[attr-defined]
        return out

    result = asyncio.run(run())
    assert final_text(result) == "35"
    check_calc_spans(spans_of(store, run.rollout_id))  # type: ignore[attr-defined]


def test_streaming_runs_sync_and_async(instrumented: None, store: voltline.Store) -> None:
    with voltline.rollout({"q": "stream"}, store=store) as r:
        chunks = list(calc_agent().stream(QUESTION, stream_mode="messages"))
    assert any(getattr(c[0], "content", None) == "35" for c in chunks)
    check_calc_spans(spans_of(store, r.rollout_id), streamed=True)

    async def astream() -> list[Any]:
        with voltline.rollout({"q": "astream"}, store=store) as r2:
            out = [c async for c in calc_agent().astream(QUESTION, stream_mode="messages")]
        astream.rollout_id = r2.rollout_id  # type: ignore[attr-defined]
        return out

    chunks = asyncio.run(astream())
    assert any(getattr(c[0], "content", None) == "35" for c in chunks)
    check_calc_spans(spans_of(store, astream.rollout_id), streamed=True)  # type: ignore[attr-defined]


def test_a_streamed_model_call_keeps_tool_calls_usage_and_first_chunk_time(
    instrumented: None, store: voltline.Store
) -> None:
    model = ScriptedChatModel(
        responses=[
            reply(
                "sure, adding", tool_calls=[("add", {"a": 1, "b": 2}, "c1")], input_tokens=5, output_tokens=6
            )
        ]
    )
    with voltline.rollout({"q": "chunks"}, store=store) as r:
        merged = None
        for chunk in model.stream([HumanMessage("1+2?")]):
            merged = chunk if merged is None else merged + chunk
    assert merged is not None and merged.content == "sure, adding"
    (span,) = spans_of(store, r.rollout_id)
    assert span.parent_id is None and span.name == "chat scripted-model"
    assert span.attributes["gen_ai.request.stream"] is True
    assert 0 <= span.attributes["gen_ai.response.time_to_first_chunk"] <= span.end_time - span.start_time
    assert span.attributes["gen_ai.output.messages"] == [
        {
            "role": "assistant",
            "content": "sure, adding",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}
            ],
            "finish_reason": "tool_calls",
        }
    ]
    assert (span.attributes["gen_ai.usage.input_tokens"], span.attributes["gen_ai.usage.output_tokens"]) == (
        5,
        6,
    )


class Steps(TypedDict):
    question: str
    answer: str


def test_async_graph_nodes_keep_parent_links_across_tasks(instrumented: None, store: voltline.Store) -> None:
    """The LangGraph `ainvoke` parent-link problem: a node that calls a model and tools without
    passing `config`, fans out with asyncio.gather, and emits spans of its own from a tool."""
    model = ScriptedChatModel(responses=[reply("plan: add then multiply", input_tokens=3, output_tokens=4)])

    @tool
    async def slow_add(a: int, b: int) -> int:
        """Add, slowly, emitting a span of its own."""
        await asyncio.sleep(0.01)
        voltline.emit_llm(model="inner-judge", output_tokens=1)  # user code inside the tool
        return a + b

    async def plan(state: Steps) -> dict[str, str]:
        message = await model.ainvoke([HumanMessage(state["question"])])  # no config passed
        return {"answer": str(message.content)}

    async def work(state: Steps) -> dict[str, str]:
        results = await asyncio.gather(
            slow_add.ainvoke({"a": 1, "b": 2}), slow_add.ainvoke({"a": 3, "b": 4})
        )  # concurrent tasks
        return {"answer": f"{state['answer']} -> {results}"}

    graph = StateGraph(Steps)
    graph.add_node("plan", plan)
    graph.add_node("work", work)
    graph.add_edge(START, "plan")
    graph.add_edge("plan", "work")
    graph.add_edge("work", END)
    app = graph.compile(name="planner-graph")

    async def run() -> dict[str, Any]:
        with voltline.rollout({"q": "graph"}, store=store) as r:
            with voltline.span("episode", kind="custom"):
                out = await app.ainvoke({"question": "go", "answer": ""})
        run.rollout_id = r.rollout_id  # type: ignore[attr-defined]
        return out

    out = asyncio.run(run())
    assert out["answer"] == "plan: add then multiply -> [3, 7]"
    spans = spans_of(store, run.rollout_id)  # type: ignore[attr-defined]
    assert outline(spans, with_agent=False) == [
        "custom episode",
        "  chain planner-graph",
        "    chain plan",
        "      llm chat scripted-model",
        "    chain work",
        "      tool execute_tool slow_add",
        "        llm chat inner-judge",
        "      tool execute_tool slow_add",
        "        llm chat inner-judge",
    ]
    tools = by_kind(spans, "tool")
    assert sorted(t.attributes["gen_ai.tool.call.result"] for t in tools) == [3, 7]
    inner = by_kind(spans, "llm")[1:]
    assert sorted(s.parent_id for s in inner) == sorted(t.span_id for t in tools)


def test_parallel_tool_calls_on_threads_nest_under_their_own_node(
    instrumented: None, store: voltline.Store
) -> None:
    script = [
        reply(tool_calls=[("add", {"a": 1, "b": 2}, "c1"), ("multiply", {"a": 3, "b": 4}, "c2")]),
        reply("3 and 12"),
    ]
    with voltline.rollout({"q": "parallel"}, store=store) as r:
        result = calc_agent(script=script).invoke(QUESTION)
    assert final_text(result) == "3 and 12"
    spans = spans_of(store, r.rollout_id)
    lines = outline(spans)
    assert lines[:3] == CALC_TREE[:3] and lines[-2:] == CALC_TREE[-2:]
    # LangGraph sends each tool call to its own `tools` task (run on its thread pool).
    assert sorted(lines[3:7]) == sorted(
        [
            "  chain tools [calc]",
            "    tool execute_tool add [calc]",
            "  chain tools [calc]",
            "    tool execute_tool multiply [calc]",
        ]
    )
    by_id = {s.span_id: s for s in spans}
    for t in by_kind(spans, "tool"):
        node = by_id[t.parent_id]
        assert node.name == "tools" and kind_of(by_id[node.parent_id]) == "agent"
    assert {
        t.attributes["gen_ai.tool.call.id"]: t.attributes["gen_ai.tool.call.result"]
        for t in by_kind(spans, "tool")
    } == {"c1": "3", "c2": "12"}


# tools that fail ---------------------------------------------------------------------------
def failing_script() -> list[AIMessage]:
    return [reply(tool_calls=[("divide", {"a": 1, "b": 0}, "call_div")]), reply("unreachable")]


def run_failing(store: voltline.Store | None) -> BaseException:
    agent = calc_agent(script=failing_script(), tools=[divide])
    with pytest.raises(ZeroDivisionError) as info:
        if store is None:
            agent.invoke(QUESTION)
        else:
            with voltline.rollout({"q": "fail"}, store=store):
                agent.invoke(QUESTION)
    return info.value


def test_a_tool_that_raises_raises_the_same_and_is_recorded_as_an_error(
    only_langchain: None, store: voltline.Store
) -> None:
    plain = run_failing(None)
    voltline.instrument()
    captured = run_failing(store)
    assert type(captured) is type(plain) and str(captured) == str(plain) == "division by zero"

    (rollout,) = store.query_rollouts()
    spans = spans_of(store, rollout.rollout_id)
    assert outline([s for s in spans if kind_of(s) != "exception"]) == [
        "agent invoke_agent calc [calc]",
        "  chain model [calc]",
        "    llm chat scripted-model [calc]",
        "  chain tools [calc]",
        "    tool execute_tool divide [calc]",
    ]
    tool_span = by_kind(spans, "tool")[0]
    assert str(tool_span.status.value) == "error"
    assert tool_span.attributes["exception.type"] == "ZeroDivisionError"
    assert tool_span.attributes["exception.message"] == "division by zero"
    assert tool_span.attributes["gen_ai.tool.call.id"] == "call_div"
    assert "gen_ai.tool.call.result" not in tool_span.attributes
    assert all(
        str(s.status.value) == "error" for s in spans if kind_of(s) in ("agent", "tool") or s.name == "tools"
    )
    assert store.get_attempts(rollout.rollout_id)[0].status == "failed"


def test_a_handled_tool_error_is_an_error_span_and_the_agent_goes_on(
    instrumented: None, store: voltline.Store
) -> None:
    script = [reply(tool_calls=[("lookup", {"key": "x"}, "call_lookup")]), reply("the key is missing")]
    with voltline.rollout({"q": "handled"}, store=store) as r:
        result = calc_agent(script=script, tools=[lookup]).invoke(QUESTION)
    assert final_text(result) == "the key is missing"
    (span,) = by_kind(spans_of(store, r.rollout_id), "tool")
    assert str(span.status.value) == "error"
    assert span.attributes["gen_ai.tool.call.result"] == "no such key: x"
    assert span.attributes["error.message"] == "no such key: x"


# several agents ------------------------------------------------------------------------------
def test_a_subagent_called_from_a_tool_names_its_own_spans(instrumented: None, store: voltline.Store) -> None:
    coder = calc_agent(
        name="coder",
        script=[
            reply(tool_calls=[("add", {"a": 2, "b": 2}, "k1")], input_tokens=4, output_tokens=4),
            reply("4", input_tokens=8, output_tokens=1),
        ],
    )

    @tool
    def ask_coder(question: str) -> str:
        """Delegate a question to the coder agent."""
        return final_text(coder.invoke({"messages": [("user", question)]}))

    planner = create_agent(
        ScriptedChatModel(
            responses=[
                reply(tool_calls=[("ask_coder", {"question": "2+2"}, "p1")], input_tokens=1, output_tokens=1),
                reply("coder says 4", input_tokens=2, output_tokens=2),
            ]
        ),
        [ask_coder],
        name="planner",
    )
    with voltline.rollout({"q": "team"}, store=store) as r:
        result = planner.invoke(QUESTION)
    assert final_text(result) == "coder says 4"
    spans = spans_of(store, r.rollout_id)
    assert outline(spans) == [
        "agent invoke_agent planner [planner]",
        "  chain model [planner]",
        "    llm chat scripted-model [planner]",
        "  chain tools [planner]",
        "    tool execute_tool ask_coder [planner]",
        "      agent invoke_agent coder [coder]",
        "        chain model [coder]",
        "          llm chat scripted-model [coder]",
        "        chain tools [coder]",
        "          tool execute_tool add [coder]",
        "        chain model [coder]",
        "          llm chat scripted-model [coder]",
        "  chain model [planner]",
        "    llm chat scripted-model [planner]",
    ]
    # The coder runs inside the planner's tools node and inherits its LangGraph metadata, but it is
    # not that node: only node spans carry it, each graph with its own steps.
    (coder_span,) = [s for s in spans if s.name == "invoke_agent coder"]
    assert not {"langgraph.node", "langgraph.step"} & coder_span.attributes.keys()
    nodes = [
        (s.agent_name, s.attributes["langgraph.node"], s.attributes["langgraph.step"])
        for s in by_kind(spans, "chain")
    ]
    assert nodes == [
        ("planner", "model", 1),
        ("planner", "tools", 2),
        ("coder", "model", 1),
        ("coder", "tools", 2),
        ("coder", "model", 3),
        ("planner", "model", 3),
    ]
    for agent, usage in (("planner", [1, 2]), ("coder", [4, 8])):
        calls = store.query_spans(rollout_id=r.rollout_id, kind="llm", agent_name=agent)
        assert [s.attributes["gen_ai.usage.input_tokens"] for s in calls] == usage


# retrievers and plain chains -----------------------------------------------------------------
class Shelf(BaseRetriever):
    def _get_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
        return [Document(page_content=f"{query} is 42", metadata={"source": "shelf"}, id="d1")]


def test_retriever_and_chain_runs(instrumented: None, store: voltline.Store) -> None:
    chain = Shelf() | RunnableLambda(lambda docs: docs[0].page_content, name="first_doc")
    with voltline.rollout({"q": "rag"}, store=store) as r:
        assert chain.invoke("the answer") == "the answer is 42"
    spans = spans_of(store, r.rollout_id)
    assert outline(spans, with_agent=False) == [
        "chain RunnableSequence",
        "  retriever retrieval Shelf",
        "  chain first_doc",
    ]
    (retriever,) = by_kind(spans, "retriever")
    assert retriever.attributes["retrieval.query"] == "the answer"
    assert retriever.attributes["retrieval.documents"] == [
        {"id": "d1", "content": "the answer is 42", "metadata": {"source": "shelf"}}
    ]
    root = by_kind(spans, "chain")[0]
    assert root.attributes["input"] == "the answer" and root.attributes["output"] == "the answer is 42"


# the explicit form ---------------------------------------------------------------------------
def test_the_explicit_callback_handler_needs_no_instrument(
    only_langchain: None, store: voltline.Store
) -> None:
    hooks_before = list(lc_context._configure_hooks)
    handler = VoltlineCallbackHandler()
    with voltline.rollout({"q": "explicit"}, store=store) as r:
        result = calc_agent().invoke(QUESTION, config={"callbacks": [handler]})
    assert final_text(result) == "35"
    check_calc_spans(spans_of(store, r.rollout_id))
    assert lc_context._configure_hooks == hooks_before

    # Explicit and global together: one span per run, not two.
    voltline.instrument()
    with voltline.rollout({"q": "both"}, store=store) as r2:
        calc_agent().invoke(QUESTION, config={"callbacks": [VoltlineCallbackHandler()]})
    check_calc_spans(spans_of(store, r2.rollout_id))


# isolation -----------------------------------------------------------------------------------
def reference_result() -> list[tuple[str, Any]]:
    return [(m.type, m.content) for m in calc_agent().invoke(QUESTION)["messages"]]


def test_failing_capture_code_never_changes_the_agent(
    instrumented: None,
    store: voltline.Store,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with voltline.rollout({"q": "ref"}, store=store):
        expected = reference_result()

    def broken(response: Any) -> dict[str, Any]:
        raise KeyError("a field a newer LangChain renamed")

    monkeypatch.setattr(_convert, "llm_result_attributes", broken)
    errors_before = stats()["capture_errors"]
    with caplog.at_level(logging.ERROR, logger="voltline.langchain"):
        with voltline.rollout({"q": "broken"}, store=store) as r:
            assert reference_result() == expected
            assert voltline.current_span() is None
    assert stats()["capture_errors"] - errors_before == 3  # one per model call
    logged = [rec for rec in caplog.records if rec.name == "voltline.langchain"]
    assert len(logged) == 1 and "on_llm_end" in logged[0].getMessage()
    # The tree is still recorded whole; the LLM spans only lack what could not be converted.
    spans = spans_of(store, r.rollout_id)
    assert outline(spans) == CALC_TREE
    for s in by_kind(spans, "llm"):
        assert "gen_ai.input.messages" in s.attributes and "gen_ai.output.messages" not in s.attributes


def test_a_failing_converter_loses_only_its_attributes(
    instrumented: None, store: voltline.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    with voltline.rollout({"q": "ref"}, store=store):
        expected = reference_result()

    def broken(value: Any) -> Any:
        raise TypeError("a payload a newer LangChain changed")

    # Every payload conversion fails: model inputs, tool definitions and arguments, results.
    monkeypatch.setattr(_convert, "messages", broken)
    monkeypatch.setattr(_convert, "plain", broken)
    monkeypatch.setattr(_convert, "tool_definitions", broken)
    errors_before = stats()["capture_errors"]
    with voltline.rollout({"q": "broken"}, store=store) as r:
        assert reference_result() == expected
    assert stats()["capture_errors"] > errors_before
    spans = spans_of(store, r.rollout_id)
    assert outline(spans) == CALC_TREE  # no span lost, only what could not be converted
    for s in by_kind(spans, "llm"):
        assert s.name == f"chat {s.attributes['gen_ai.request.model']}"  # the request was still read
        assert not {"gen_ai.input.messages", "gen_ai.tool.definitions"} & s.attributes.keys()
    for s in by_kind(spans, "tool"):
        assert s.attributes["gen_ai.tool.name"] in {"add", "multiply"}
        assert not {"gen_ai.tool.call.arguments", "gen_ai.tool.call.result"} & s.attributes.keys()

    with voltline.rollout({"q": "rag"}, store=store) as r:
        assert Shelf().invoke("the answer")[0].page_content == "the answer is 42"
    (retriever,) = spans_of(store, r.rollout_id)
    assert retriever.attributes["retrieval.query"] == "the answer"
    assert "retrieval.documents" not in retriever.attributes


def test_unexpected_payloads_are_counted_not_raised(instrumented: None, store: voltline.Store) -> None:
    handler = VoltlineCallbackHandler()
    before = stats()["capture_errors"]
    run = uuid.uuid4()
    with voltline.rollout({"q": "garbage"}, store=store) as r:
        handler.on_chat_model_start({}, [5], run_id=uuid.uuid4())  # type: ignore[arg-type]
        handler.on_chat_model_start({}, [[HumanMessage("hi")]], run_id=run)
        handler.on_llm_end(object(), run_id=run)  # type: ignore[arg-type]
        handler.on_tool_start(None, None, run_id=uuid.uuid4(), inputs=object())  # type: ignore[arg-type]
        handler.on_chain_end({}, run_id=uuid.uuid4())  # never started: ignored
    assert stats()["capture_errors"] - before == 2
    (span,) = spans_of(store, r.rollout_id)  # the model call is still recorded, with what was readable
    assert kind_of(span) == "llm" and str(span.status.value) == "ok"
    assert span.attributes["gen_ai.input.messages"] == [{"role": "user", "content": "hi"}]
    assert "gen_ai.output.messages" not in span.attributes


def test_a_store_that_is_down_never_changes_the_agent(
    instrumented: None, store: voltline.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    with voltline.rollout({"q": "ref"}, store=store):
        expected = reference_result()
    # Retries without waiting, so the writer gives up at once.
    monkeypatch.setattr(_emitter, "time", SimpleNamespace(sleep=lambda s: None, monotonic=time.monotonic))

    def down(spans: Any) -> None:
        raise StoreUnavailable("store unreachable")

    errors_before = stats()["write_errors"]
    with voltline.rollout({"q": "down"}, store=store) as r:
        monkeypatch.setattr(store, "add_spans", down)
        assert reference_result() == expected
    monkeypatch.undo()
    assert stats()["write_errors"] - errors_before == len(CALC_TREE)
    assert spans_of(store, r.rollout_id) == []


def test_runs_outside_a_rollout_are_not_recorded(instrumented: None) -> None:
    before = stats()
    assert final_text(calc_agent().invoke(QUESTION)) == "35"
    after = stats()
    assert after["outside_rollout"] - before["outside_rollout"] == 1  # one per top-level run
    assert after["capture_errors"] == before["capture_errors"]
    assert after["emitted"] == before["emitted"]


# install / uninstall ------------------------------------------------------------------------
def configured_handlers() -> list[Any]:
    return list(CallbackManager.configure().handlers)


def test_uninstrument_leaves_langchain_exactly_as_it_was(only_langchain: None, store: voltline.Store) -> None:
    hooks_before = list(lc_context._configure_hooks)
    handlers_before = configured_handlers()

    assert voltline.instrument() == ["langchain"]
    assert len(lc_context._configure_hooks) == len(hooks_before) + 1
    assert [type(h) for h in configured_handlers()] == [*map(type, handlers_before), VoltlineCallbackHandler]

    assert voltline.uninstrument() == ["langchain"]
    assert len(lc_context._configure_hooks) == len(hooks_before)
    assert all(a is b for a, b in zip(lc_context._configure_hooks, hooks_before, strict=True))
    assert configured_handlers() == handlers_before

    with voltline.rollout({"q": "after"}, store=store) as r:
        assert final_text(calc_agent().invoke(QUESTION)) == "35"
    assert spans_of(store, r.rollout_id) == []

    # And it can be installed again.
    assert voltline.instrument() == ["langchain"]
    with voltline.rollout({"q": "again"}, store=store) as r2:
        calc_agent().invoke(QUESTION)
    assert outline(spans_of(store, r2.rollout_id)) == CALC_TREE


def test_the_plugin_is_found_through_its_entry_point(
    only_langchain: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    (info,) = [p for p in _plugins.plugins() if p.name == "langchain"]
    assert info.status == "loaded" and info.distribution == "voltline-langchain"
    assert info.integrations == (_plugins.IntegrationInfo("langchain", available=True, installed=False),)
    integration = lc_plugin.LangChainIntegration()
    monkeypatch.setattr(importlib.metadata, "version", lambda dist: "2.0.0")
    assert integration.available() is False  # a future major release is not claimed
    monkeypatch.setattr(importlib.metadata, "version", lambda dist: "1.2.9")
    assert integration.available() is False  # nor one below the tested floor (scripts/test-floors.sh)
    monkeypatch.setattr(importlib.metadata, "version", lambda dist: "1.2.10")
    assert integration.available() is True


# the example ---------------------------------------------------------------------------------
def test_the_example_runs_offline_and_prints_its_span_tree(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/example.db"
    env = {**os.environ, "VOLTLINE_PLUGINS": "langchain", "COLUMNS": "200"}
    env.pop("VOLTLINE_STORE_URL", None)
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples/langchain/agent.py"), "--store", url],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "answer: (3 + 4) * 5 = 35" in out
    for line in (
        "agent invoke_agent calculator",
        "chain model",
        "llm chat scripted-calculator",
        "tool execute_tool add",
        "tool execute_tool multiply",
        "reward reward",
    ):
        assert line in out
    assert out.count("llm chat scripted-calculator") == 3
    assert "value=1.0" in out
    store = voltline.connect(url, create=False)
    try:
        (rollout,) = store.query_rollouts()
        assert len(store.query_spans(rollout_id=rollout.rollout_id)) == 12
    finally:
        store.close()


def test_converted_messages_follow_in_place_changes() -> None:
    message = AIMessage("hi", tool_calls=[{"name": "add", "args": {"a": 1}, "id": "t1", "type": "tool_call"}])
    first = _convert.message_dict(message)
    assert _convert.message_dict(message) is first  # converted once, reused on later turns
    message.name = "calc"  # what create_agent does to the model's reply after the call
    renamed = _convert.message_dict(message)
    assert renamed == {**first, "name": "calc"} == _convert._message_dict(message)
    assert _convert.message_dict(message) is renamed
    message.name = None
    assert _convert.message_dict(message) == first
    message.content = "changed"
    assert _convert.message_dict(message)["content"] == "changed"
    assert first == {
        "role": "assistant",
        "content": "hi",
        "tool_calls": [
            {"id": "t1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1}'}}
        ],
    }


def test_tool_definitions_are_converted_once_per_distinct_set() -> None:
    # create_agent rebinds its tools for every model call: equal definitions, new objects each time.
    first = _convert.tool_definitions([tool_definition("add", "Add two integers.")])
    again = _convert.tool_definitions([tool_definition("add", "Add two integers.")])
    assert again is first and first == [tool_definition("add", "Add two integers.")]
    other = _convert.tool_definitions([tool_definition("add", "Add two numbers.")])
    assert other is not first and other[0]["function"]["description"] == "Add two numbers."
    # What is not plain JSON data is converted as `plain` converts it.
    odd = [{"type": "function", "function": Document("add"), 3: ("a", "b")}]
    assert _convert.tool_definitions(odd) == _convert.plain(odd)
    assert _convert.tool_definitions(odd)[0]["3"] == ["a", "b"]


def test_other_graphs_become_agent_spans_through_lc_agent_name_metadata(
    instrumented: None, store: voltline.Store
) -> None:
    """create_react_agent (langgraph.prebuilt) and hand-built graphs do not name their agent;
    the same metadata key create_agent uses makes them agent spans."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # create_react_agent is deprecated in favour of create_agent
        from langgraph.prebuilt import create_react_agent

        react = create_react_agent(ScriptedChatModel(responses=calc_script()), [add, multiply], name="react")
    with voltline.rollout({"q": "react"}, store=store) as r:
        result = react.invoke(QUESTION, config={"metadata": {"lc_agent_name": "react"}})
    assert final_text(result) == "35"
    assert outline(spans_of(store, r.rollout_id)) == [
        "agent invoke_agent react [react]",
        "  chain agent [react]",
        "    chain call_model [react]",  # LangGraph's own nesting: the model runs beside it
        "    chain RunnableSequence [react]",
        "      chain Prompt [react]",
        "      llm chat scripted-model [react]",
        "    chain should_continue [react]",
        "  chain tools [react]",
        "    tool execute_tool add [react]",
        "  chain agent [react]",
        "    chain call_model [react]",
        "    chain RunnableSequence [react]",
        "      chain Prompt [react]",
        "      llm chat scripted-model [react]",
        "    chain should_continue [react]",
        "  chain tools [react]",
        "    tool execute_tool multiply [react]",
        "  chain agent [react]",
        "    chain call_model [react]",
        "    chain RunnableSequence [react]",
        "      chain Prompt [react]",
        "      llm chat scripted-model [react]",
        "    chain should_continue [react]",
    ]


# ended spans are handed over in batches ---------------------------------------------------
def test_an_agent_runs_spans_are_all_handed_over_when_it_returns(
    instrumented: None, store: voltline.Store
) -> None:
    with voltline.rollout({"q": "batch"}, store=store):
        before = stats()["emitted"]
        calc_agent().invoke(QUESTION)
        assert stats()["emitted"] - before == len(CALC_TREE)  # no flush needed: the agent run ended


def test_a_flush_inside_an_agent_run_includes_the_spans_held_back(
    instrumented: None, store: voltline.Store
) -> None:
    seen: list[list[str]] = []

    @tool
    def peek(a: int, b: int) -> int:
        """Add two integers, after looking at what the store holds."""
        assert voltline.flush()
        seen.append([s.name for s in store.query_spans(rollout_id=voltline.current_rollout().rollout_id)])
        return a + b

    script = [reply(tool_calls=[("peek", {"a": 1, "b": 2}, "c1")]), reply("3")]
    with voltline.rollout({"q": "flush"}, store=store) as r:
        calc_agent(script=script, tools=[peek]).invoke(QUESTION)
    # The first model call and its node had ended when the tool ran; the agent span had not.
    assert seen == [["chat scripted-model", "model"]]
    assert len(spans_of(store, r.rollout_id)) == 7  # agent, 2 x (model, llm), tools, tool


def test_spans_are_not_held_back_longer_than_the_bound(
    instrumented: None, store: voltline.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from voltline_langchain import handler as lc_handler

    monkeypatch.setattr(lc_handler, "PENDING_SECONDS", 0.0)
    emitted_in_tool: list[int] = []

    @tool
    def count(a: int, b: int) -> int:
        """Add two integers, noting how many spans were handed over so far."""
        emitted_in_tool.append(stats()["emitted"] - before)
        return a + b

    script = [reply(tool_calls=[("count", {"a": 1, "b": 2}, "c1")]), reply("3")]
    with voltline.rollout({"q": "bound"}, store=store):
        before = stats()["emitted"]
        calc_agent(script=script, tools=[count]).invoke(QUESTION)
    # The model call and its node had ended before the tool started, which handed them over.
    assert emitted_in_tool == [2]


def test_a_forked_child_does_not_hand_over_its_parents_held_back_spans() -> None:
    handler = VoltlineCallbackHandler()
    handler._pending.append(("not a span", None, None, "ok", 0.0))
    pid = os.fork()
    if pid == 0:  # the child: exit status says whether the parent's entry was dropped
        os._exit(0 if not handler._pending else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert len(handler._pending) == 1
    handler._pending.clear()
