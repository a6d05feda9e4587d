"""The CrewAI plugin: real crews, run offline with a scripted model, captured as exact span trees.

Every test kicks off a real `crewai.Crew` (two agents, two tasks, tools that work and a
tool that raises) driven by `voltline_crewai.testing.ScriptedLLM`, a `BaseLLM` subclass
that emits the same events a hosted model does. CrewAI handles events on a thread pool,
so these tests also check the tree does not depend on the order handlers run in.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# CrewAI reads these at import: no telemetry, no trace prompts, no version check (offline).
OFFLINE = {
    "CREWAI_DISABLE_TELEMETRY": "true",
    "CREWAI_TRACING_ENABLED": "false",
    "CREWAI_DISABLE_VERSION_CHECK": "true",
}
for _var, _value in OFFLINE.items():
    os.environ.setdefault(_var, _value)

crewai = pytest.importorskip("crewai")  # the optional framework; CI has it installed

import voltline_crewai._attributes as attributes_module  # noqa: E402
import voltline_crewai._tracker as tracker_module  # noqa: E402
import voltline_crewai.listener as listener_module  # noqa: E402
from _plugin_env import UnreachableStore, only_plugins  # noqa: E402
from crewai import Agent, Crew, Task  # noqa: E402
from crewai.events.event_bus import crewai_event_bus  # noqa: E402
from crewai.tools import tool  # noqa: E402
from voltline_crewai import VoltlineListener  # noqa: E402
from voltline_crewai._tracker import Record, SpanTracker  # noqa: E402
from voltline_crewai.testing import ScriptedLLM, ToolCall, count_tokens  # noqa: E402

import voltline  # noqa: E402
from voltline import _plugins  # noqa: E402
from voltline._emitter import get_emitter  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# CrewAI's own code trips its own deprecation warnings (function_calling_llm, ...).
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:crewai")


@tool("add")
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool("divide")
def divide(a: int, b: int) -> float:
    """Divide a by b."""
    return a / b  # b=0 raises ZeroDivisionError: CrewAI reports it to the model and goes on


def replies() -> list[Any]:
    return [
        [ToolCall("add", {"a": 2, "b": 3})],
        [ToolCall("divide", {"a": 5, "b": 0})],
        "2 + 3 = 5",
        "Checked: 5 is right",
    ]


def make_crew(llm: ScriptedLLM | None = None, *, stream: bool = False) -> tuple[Crew, ScriptedLLM]:
    llm = llm or ScriptedLLM(model="scripted-math", replies=replies())
    calculator = Agent(role="calculator", goal="compute sums", backstory="careful", llm=llm,
                       tools=[add, divide])  # fmt: skip
    reviewer = Agent(role="reviewer", goal="check results", backstory="strict", llm=llm)
    compute = Task(name="compute", description="What is 2 + 3?", expected_output="a number",
                   agent=calculator)  # fmt: skip
    review = Task(name="review", description="Check the sum.", expected_output="a verdict", agent=reviewer)
    return Crew(name="math", agents=[calculator, reviewer], tasks=[compute, review], stream=stream), llm


# The tree every way of running the crew must produce: (kind, name, agent_name, children).
EXPECTED_TREE = [
    ("chain", "crew math", None, [
        ("chain", "task compute", None, [
            ("agent", "calculator", "calculator", [
                ("llm", "chat scripted-math", "calculator", []),
                ("tool", "execute_tool add", "calculator", []),
                ("llm", "chat scripted-math", "calculator", []),
                ("tool", "execute_tool divide", "calculator", []),
                ("llm", "chat scripted-math", "calculator", []),
            ]),
        ]),
        ("chain", "task review", None, [
            ("agent", "reviewer", "reviewer", [
                ("llm", "chat scripted-math", "reviewer", []),
            ]),
        ]),
    ]),
]  # fmt: skip


def tree(spans: list[voltline.Span]) -> list[Any]:
    """Spans nested by parent link, children in start order: (kind, name, agent_name, children)."""
    by_parent: dict[str | None, list[voltline.Span]] = {}
    for s in spans:
        by_parent.setdefault(s.parent_id, []).append(s)

    def grow(parent: str | None) -> list[Any]:
        kids = sorted(by_parent.get(parent, []), key=lambda s: (s.start_time, s.sequence))
        return [(s.kind, s.name, s.agent_name, grow(s.span_id)) for s in kids]

    return grow(None)


def spans_of(store: voltline.Store, rollout: voltline.RolloutContext, **filters: Any) -> list[voltline.Span]:
    return store.query_spans(rollout_id=rollout.rollout_id, **filters)


def by_name(spans: list[voltline.Span], name: str) -> list[voltline.Span]:
    return sorted((s for s in spans if s.name == name), key=lambda s: s.start_time)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[voltline.Store]:
    s = voltline.connect(f"sqlite:///{tmp_path}/x.db")
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def only_crewai() -> Iterator[None]:
    with only_plugins("crewai"):
        yield


@pytest.fixture
def instrumented(only_crewai: None) -> Iterator[None]:
    assert voltline.instrument() == ["crewai"]
    yield


def bus_state() -> tuple[Any, ...]:
    return (dict(crewai_event_bus._sync_handlers), dict(crewai_event_bus._async_handlers),
            {k: dict(v) for k, v in crewai_event_bus._handler_dependencies.items()},
            Crew.__dict__["kickoff"], Crew.__dict__["akickoff"],
            Agent.__dict__["kickoff"], Agent.__dict__["kickoff_async"])  # fmt: skip


# --- the span tree -----------------------------------------------------------------------
def test_sync_kickoff_gives_the_exact_span_tree(instrumented: None, store: voltline.Store) -> None:
    crew, llm = make_crew()
    with voltline.rollout("what is 2 + 3?", store=store) as r:
        out = crew.kickoff()
    assert out.raw == "Checked: 5 is right"
    spans = spans_of(store, r)
    assert tree(spans) == EXPECTED_TREE
    assert all(s.status == "ok" for s in spans if s.name != "execute_tool divide")

    [crew_span] = by_name(spans, "crew math")
    assert crew_span.parent_id is None
    assert crew_span.attributes["crewai.crew.output"] == "Checked: 5 is right"
    assert crew_span.attributes["crewai.crew.total_tokens"] == out.token_usage.total_tokens
    [compute] = by_name(spans, "task compute")
    assert compute.attributes["crewai.task.description"] == "What is 2 + 3?"
    assert compute.attributes["crewai.task.agent"] == "calculator"
    assert compute.attributes["crewai.task.output"] == "2 + 3 = 5"
    [agent] = by_name(spans, "calculator")
    assert agent.attributes["gen_ai.agent.name"] == "calculator"
    assert agent.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert agent.attributes["crewai.agent.tools"] == ["add", "divide"]
    assert agent.attributes["crewai.agent.output"] == "2 + 3 = 5"

    llms = by_name(spans, "chat scripted-math")
    first = llms[0].attributes
    assert first["gen_ai.operation.name"] == "chat"
    assert first["gen_ai.request.model"] == "scripted-math"
    assert first["gen_ai.provider.name"] == "scripted"
    assert [m["role"] for m in first["gen_ai.input.messages"]] == ["system", "user"]
    assert "What is 2 + 3?" in first["gen_ai.input.messages"][1]["content"]
    assert [d["function"]["name"] for d in first["gen_ai.tool.definitions"]] == ["add", "divide"]
    call = {
        "id": "call_1_0",
        "type": "function",
        "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'},
    }
    assert first["gen_ai.output.messages"] == [{"role": "assistant", "content": None, "tool_calls": [call]}]
    assert first["gen_ai.response.finish_reasons"] == ["tool_calls"]
    assert first["gen_ai.response.id"] == "chatcmpl-scripted-1"
    assert [s.attributes["gen_ai.response.id"] for s in llms] == [
        f"chatcmpl-scripted-{i}" for i in (1, 2, 3, 4)
    ]
    assert llms[2].attributes["gen_ai.output.messages"] == [{"role": "assistant", "content": "2 + 3 = 5"}]
    assert llms[2].attributes["gen_ai.response.finish_reasons"] == ["stop"]
    # Token usage: what the model reported, call by call, adding up to CrewAI's own total.
    for s in llms:
        text = " ".join(m.get("content") or "" for m in s.attributes["gen_ai.input.messages"])
        assert s.attributes["gen_ai.usage.input_tokens"] == count_tokens(text)
    assert [s.attributes["gen_ai.usage.output_tokens"] for s in llms] == [5, 5, 5, 4]
    assert (
        sum(s.attributes["gen_ai.usage.input_tokens"] for s in llms)
        == llm.get_token_usage_summary().prompt_tokens
    )

    [add_span] = by_name(spans, "execute_tool add")
    assert add_span.attributes["gen_ai.tool.name"] == "add"
    assert add_span.attributes["gen_ai.tool.call.arguments"] == {"a": 2, "b": 3}
    assert add_span.attributes["gen_ai.tool.call.result"] == "5"
    assert add_span.attributes["gen_ai.tool.call.id"] == "call_1_0"
    assert add_span.parent_id == agent.span_id and llms[0].parent_id == agent.span_id
    # Spans carry CrewAI's own timestamps, so siblings are in execution order.
    siblings = sorted(
        [*llms[:3], add_span, *by_name(spans, "execute_tool divide")], key=lambda s: s.start_time
    )
    assert [s.name for s in siblings] == [n for _, n, _, _ in EXPECTED_TREE[0][3][0][3][0][3]]


def test_tool_that_raises_is_an_error_span_and_the_crew_behaves_as_without_voltline(
    only_crewai: None, store: voltline.Store
) -> None:
    plain_crew, _ = make_crew()
    plain = plain_crew.kickoff()

    assert voltline.instrument() == ["crewai"]
    crew, _ = make_crew()
    with voltline.rollout("task", store=store) as r:
        traced = crew.kickoff()
    assert traced.raw == plain.raw
    assert [t.raw for t in traced.tasks_output] == [t.raw for t in plain.tasks_output]
    assert traced.tasks_output[0].messages == plain.tasks_output[0].messages  # same conversation

    [divide_span] = by_name(spans_of(store, r), "execute_tool divide")
    assert divide_span.status == "error"
    assert divide_span.attributes["gen_ai.tool.call.arguments"] == {"a": 5, "b": 0}
    assert divide_span.attributes["gen_ai.tool.call.id"] == "call_2_0"
    assert divide_span.attributes["error.type"] == "ZeroDivisionError"
    assert divide_span.attributes["exception.message"] == "division by zero"


def failing_crew() -> Crew:
    # The model has only one reply: the calculator's second call fails (a provider outage).
    llm = ScriptedLLM(model="scripted-math", replies=[[ToolCall("add", {"a": 2, "b": 3})]])
    return make_crew(llm)[0]


def test_a_failing_crew_raises_the_same_exception_and_error_spans_close(
    only_crewai: None, store: voltline.Store
) -> None:
    with pytest.raises(RuntimeError) as plain:
        failing_crew().kickoff()

    assert voltline.instrument() == ["crewai"]
    with pytest.raises(RuntimeError) as traced, voltline.rollout("task", store=store) as r:
        failing_crew().kickoff()
    assert str(traced.value) == str(plain.value) == "ScriptedLLM ran out of replies after 1 calls"

    spans = spans_of(store, r)
    retry = ("agent", "calculator", "calculator", [("llm", "chat scripted-math", "calculator", [])])
    # CrewAI retries a failed agent execution (max_retry_limit=2): three agent spans.
    assert tree([s for s in spans if s.kind != "exception"]) == [
        ("chain", "crew math", None, [
            ("chain", "task compute", None, [
                ("agent", "calculator", "calculator", [
                    ("llm", "chat scripted-math", "calculator", []),
                    ("tool", "execute_tool add", "calculator", []),
                    ("llm", "chat scripted-math", "calculator", []),
                ]),
                retry,
                retry,
            ]),
        ]),
    ]  # fmt: skip
    assert [s.status for s in by_name(spans, "crew math") + by_name(spans, "task compute")] == ["error"] * 2
    assert [s.status for s in by_name(spans, "calculator")] == ["error"] * 3
    llms = by_name(spans, "chat scripted-math")
    assert [s.status for s in llms] == ["ok", "error", "error", "error"]
    assert llms[1].attributes["exception.message"] == "ScriptedLLM ran out of replies after 1 calls"
    [exception] = [s for s in spans if s.kind == "exception"]  # the rollout's own record
    assert exception.attributes["exception.type"] == "RuntimeError"


@pytest.mark.parametrize("how", ["kickoff_async", "akickoff"])
def test_async_kickoffs_give_the_same_tree(instrumented: None, store: voltline.Store, how: str) -> None:
    crew, _ = make_crew()

    async def run() -> Any:
        with voltline.rollout("task", store=store) as r:
            out = await getattr(crew, how)()
        return out, r

    out, r = asyncio.run(run())
    assert out.raw == "Checked: 5 is right"
    assert tree(spans_of(store, r)) == EXPECTED_TREE


def test_streaming_model_calls(instrumented: None, store: voltline.Store) -> None:
    llm = ScriptedLLM(model="scripted-math", replies=replies(), stream=True)
    crew, _ = make_crew(llm, stream=True)  # the crew streams too: kickoff runs on CrewAI's own thread
    with voltline.rollout("task", store=store) as r:
        streaming = crew.kickoff()
        chunks = [c.content for c in streaming if getattr(c, "content", None)]
        out = streaming.result
    assert out.raw == "Checked: 5 is right"
    assert "".join(chunks).endswith("Checked: 5 is right")
    spans = spans_of(store, r)
    assert tree(spans) == EXPECTED_TREE
    llms = by_name(spans, "chat scripted-math")
    assert [s.attributes["gen_ai.request.stream"] for s in llms] == [True] * 4
    assert [s.attributes.get("crewai.llm.stream_chunks") for s in llms] == [None, None, 5, 4]
    assert llms[3].attributes["gen_ai.output.messages"] == [
        {"role": "assistant", "content": "Checked: 5 is right"}
    ]


@pytest.mark.parametrize("how", ["kickoff", "kickoff_async"])
def test_a_standalone_agent_kickoff(instrumented: None, store: voltline.Store, how: str) -> None:
    llm = ScriptedLLM(model="scripted-math", replies=[[ToolCall("add", {"a": 2, "b": 3})], "5"])
    agent = Agent(role="calculator", goal="compute sums", backstory="careful", llm=llm, tools=[add])
    with voltline.rollout("task", store=store) as r:
        call = getattr(agent, how)("What is 2 + 3?")
        out = asyncio.run(call) if how == "kickoff_async" else call
    assert out.raw == "5"
    spans = spans_of(store, r)
    assert tree(spans) == [
        ("agent", "calculator", "calculator", [
            ("llm", "chat scripted-math", "calculator", []),
            ("tool", "execute_tool add", "calculator", []),
            ("llm", "chat scripted-math", "calculator", []),
        ]),
    ]  # fmt: skip
    [agent_span] = by_name(spans, "calculator")
    assert agent_span.attributes["crewai.agent.output"] == "5"
    assert by_name(spans, "execute_tool add")[0].attributes["gen_ai.tool.call.id"] == "call_1_0"


# --- multi-agent ---------------------------------------------------------------------------
def test_query_by_agent_name_returns_exactly_that_agents_llm_calls(
    instrumented: None, store: voltline.Store
) -> None:
    crew, _ = make_crew()
    with voltline.rollout("task", store=store) as r:
        crew.kickoff()
    calc = spans_of(store, r, agent_name="calculator", kind="llm")
    review = spans_of(store, r, agent_name="reviewer", kind="llm")
    assert [s.attributes["gen_ai.response.id"] for s in calc] == [f"chatcmpl-scripted-{i}" for i in (1, 2, 3)]
    assert [s.attributes["gen_ai.response.id"] for s in review] == ["chatcmpl-scripted-4"]
    assert {s.name for s in spans_of(store, r, agent_name="calculator")} == {
        "calculator", "chat scripted-math", "execute_tool add", "execute_tool divide"}  # fmt: skip


# --- ordering ------------------------------------------------------------------------------
def test_tree_does_not_depend_on_handler_order(
    monkeypatch: pytest.MonkeyPatch, store: voltline.Store
) -> None:
    """CrewAI's handler threads may deliver a child before its parent, an end before its start."""
    records: list[Record] = []
    listener = VoltlineListener()
    monkeypatch.setattr(listener.tracker, "feed", records.append)  # record, do not process
    try:
        crew, _ = make_crew()
        with voltline.rollout("task", store=store):
            crew.kickoff()
            listener.flush()
    finally:
        listener.close()
    assert len(records) > 20

    records.sort()  # emission order
    swapped = list(records)  # two handler threads racing on each pair of consecutive events
    for i in range(0, len(swapped) - 1, 2):
        swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
    orders = {"reversed": records[::-1], "pairs swapped": swapped}
    for seed in range(4):
        orders[f"shuffled {seed}"] = random.Random(seed).sample(records, len(records))

    for label, order in orders.items():
        tracker = SpanTracker(lambda where: pytest.fail(f"capture failed: {where}"))
        with voltline.rollout("replay", store=store) as r:
            for record in order:  # replayed records carry the first rollout; pin them to this one
                record.rollout = r
                tracker.feed(record)
        assert tree(spans_of(store, r)) == EXPECTED_TREE, label
        assert tracker.open_spans() == 0, label
        if not label.startswith("shuffled"):
            # A tool's call id comes from the completion that asked for it; it is kept however
            # that completion and the tool race, but not if the tool is handled before the
            # *start* of that model call (an arbitrary shuffle; not seen from CrewAI's pool).
            tools = spans_of(store, r, kind="tool")
            assert [s.attributes.get("gen_ai.tool.call.id") for s in tools] == ["call_1_0", "call_2_0"]


# --- isolation -----------------------------------------------------------------------------
def test_unreachable_store_leaves_the_crew_unchanged(instrumented: None, tmp_path: Path) -> None:
    flaky = UnreachableStore(f"sqlite:///{tmp_path}/flaky.db")
    crew, _ = make_crew()
    with voltline.rollout("task", store=flaky) as r:
        out = crew.kickoff()
        voltline.flush()
    assert out.raw == "Checked: 5 is right"
    assert flaky.failed == 2
    assert flaky.get_rollout(r.rollout_id).status == "succeeded"
    assert tree(spans_of(flaky, r)) == EXPECTED_TREE  # written once the store came back
    flaky.close()


def test_capture_bug_is_logged_once_counted_and_harmless(
    instrumented: None,
    store: voltline.Store,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def newer_payload(event: Any, source: Any, failed: Any) -> Any:
        raise KeyError("a field this plugin has never seen")

    monkeypatch.setattr(listener_module, "start_spec", newer_payload)
    before = get_emitter().stats()["capture_errors"]
    crew, _ = make_crew()
    with caplog.at_level(logging.ERROR, logger="voltline.crewai"), voltline.rollout("task", store=store) as r:
        out = crew.kickoff()
    assert out.raw == "Checked: 5 is right"
    errors = get_emitter().stats()["capture_errors"] - before
    starts = 1 + 2 + 2 + 4 + 2  # crew, tasks, agents, LLM calls, tool calls (+ the executor flows below)
    assert errors >= starts
    logged = [rec for rec in caplog.records if "failed; the crew goes on" in rec.getMessage()]
    # One line per kind of failure (here: per event class), not one per event.
    assert len(logged) == len({rec.getMessage() for rec in logged}) < errors
    assert sum("LLMCallStartedEvent" in rec.getMessage() for rec in logged) == 1  # 4 calls, 1 line
    assert spans_of(store, r, kind=["llm", "tool", "agent", "chain"]) == []


# What each kind of span loses when every payload conversion fails; everything else stays.
UNCONVERTIBLE = {
    "chain": {"crewai.crew.inputs", "crewai.crew.output", "crewai.task.output"},
    "agent": {"crewai.agent.tools", "crewai.agent.output"},
    "llm": {"gen_ai.provider.name", "gen_ai.input.messages", "gen_ai.tool.definitions",
            "gen_ai.output.messages", "crewai.llm.call_type", "gen_ai.usage.input_tokens",
            "gen_ai.usage.output_tokens"},
    # the call id comes from the completion's tool calls, which could not be read either
    "tool": {"gen_ai.tool.call.arguments", "gen_ai.tool.call.result", "gen_ai.tool.call.id"},
}  # fmt: skip
CONVERTERS = ("_plain", "_tool_names", "_tool_definitions", "_args", "_output_messages", "_usage",
              "_output", "_error_text")  # fmt: skip


def test_a_failing_converter_loses_only_its_attributes(
    instrumented: None, store: voltline.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    def standalone() -> Any:  # an agent without a crew: CrewAI's lite-agent events
        llm = ScriptedLLM(model="scripted-math", replies=[[ToolCall("add", {"a": 2, "b": 3})], "5"])
        agent = Agent(role="calculator", goal="compute sums", backstory="careful", llm=llm, tools=[add])
        return agent.kickoff("What is 2 + 3?")

    def compare(
        spans: list[voltline.Span], ref_spans: list[voltline.Span], lose: dict[str, set[str]]
    ) -> set[str]:
        """Span by span, the reference's attribute keys minus `lose`; returns what was lost."""
        lost: set[str] = set()
        for name in {s.name for s in ref_spans}:
            for s, reference in zip(by_name(spans, name), by_name(ref_spans, name), strict=True):
                assert s.attributes.keys() == reference.attributes.keys() - lose[s.kind], name
                assert s.status == reference.status
                lost |= reference.attributes.keys() - s.attributes.keys()
        return lost

    crew, _ = make_crew()
    with voltline.rollout("ref", store=store) as ref:
        expected = crew.kickoff()
    with voltline.rollout("ref standalone", store=store) as ref_alone:
        expected_alone = standalone()

    def broken(*args: Any) -> Any:
        raise TypeError("a payload a newer CrewAI changed")

    for name in CONVERTERS:
        monkeypatch.setattr(attributes_module, name, broken)
    monkeypatch.setattr(tracker_module, "tool_calls_of", broken)
    errors_before = get_emitter().stats()["capture_errors"]
    crew, _ = make_crew()
    with voltline.rollout("broken", store=store) as r:
        out = crew.kickoff()
    assert out.raw == expected.raw
    assert [t.raw for t in out.tasks_output] == [t.raw for t in expected.tasks_output]
    assert out.tasks_output[0].messages == expected.tasks_output[0].messages
    assert get_emitter().stats()["capture_errors"] > errors_before

    spans, ref_spans = spans_of(store, r), spans_of(store, ref)
    assert tree(spans) == tree(ref_spans) == EXPECTED_TREE  # no span lost, none left open
    lost = compare(spans, ref_spans, UNCONVERTIBLE)
    assert lost == set().union(*UNCONVERTIBLE.values()) - {"crewai.crew.inputs"}  # kickoff() had none
    llm = by_name(spans, "chat scripted-math")[0]
    assert llm.attributes["gen_ai.request.model"] == "scripted-math"
    assert llm.attributes["gen_ai.response.id"] == "chatcmpl-scripted-1"
    assert llm.attributes["gen_ai.response.finish_reasons"] == ["tool_calls"]
    [divide_span] = by_name(spans, "execute_tool divide")
    assert divide_span.attributes["gen_ai.tool.name"] == "divide"
    assert divide_span.attributes["error.type"] == "ZeroDivisionError"
    # Its error text could not be read: still an error span, with the text used when there is none.
    assert divide_span.attributes["exception.message"] == "failed"

    # The lite agent's own span also loses its id and input messages.
    with voltline.rollout("broken standalone", store=store) as r:
        assert standalone().raw == expected_alone.raw == "5"
    spans, ref_spans = spans_of(store, r), spans_of(store, ref_alone)
    assert tree(spans) == tree(ref_spans)
    assert [s.kind for s in spans].count("agent") == 1 and len(spans) == 4
    lite = {**UNCONVERTIBLE, "agent": UNCONVERTIBLE["agent"] | {"gen_ai.agent.id", "gen_ai.input.messages"}}
    assert compare(spans, ref_spans, lite) == set().union(*lite.values()) - UNCONVERTIBLE["chain"]


# --- uninstrument and the explicit form -------------------------------------------------
def test_uninstrument_restores_crewai_exactly(only_crewai: None, store: voltline.Store) -> None:
    before = bus_state()
    assert voltline.instrument() == ["crewai"]
    during = bus_state()
    assert during != before
    assert hasattr(Crew.__dict__["kickoff"], "__voltline_original__")
    assert voltline.uninstrument() == ["crewai"]
    assert bus_state() == before

    crew, _ = make_crew()
    with voltline.rollout("task", store=store) as r:
        assert crew.kickoff().raw == "Checked: 5 is right"
    crewai_event_bus.flush()
    assert spans_of(store, r) == []


def test_explicit_listener_without_instrument(store: voltline.Store) -> None:
    before = bus_state()
    listener = VoltlineListener()
    try:
        crew, _ = make_crew()
        with voltline.rollout("task", store=store) as r, voltline.span("episode", kind="chain"):
            crew.kickoff()
            listener.flush()
    finally:
        listener.close()
    assert bus_state() == before
    assert tree(spans_of(store, r)) == [("chain", "episode", None, EXPECTED_TREE)]


def test_outside_a_rollout_nothing_is_recorded_and_nothing_breaks(instrumented: None) -> None:
    before = get_emitter().stats()["outside_rollout"]
    crew, _ = make_crew()
    assert crew.kickoff().raw == "Checked: 5 is right"
    assert get_emitter().stats()["outside_rollout"] > before


def test_plugin_is_found_through_its_entry_point(only_crewai: None) -> None:
    [info] = [p for p in _plugins.plugins() if p.name == "crewai"]
    assert info.status == "loaded"
    assert info.distribution == "voltline-crewai"
    assert info.integrations == (_plugins.IntegrationInfo("crewai", available=True, installed=False),)


# --- the example ------------------------------------------------------------------------
def test_example_runs_offline_and_prints_the_tree(tmp_path: Path) -> None:
    env = {**os.environ, **OFFLINE, "VOLTLINE_PLUGINS": "crewai"}
    url = f"sqlite:///{tmp_path}/example.db"
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / "crewai" / "math_crew.py"), "--store", url],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for line in ("crew math", "task compute", "task review", "agent calculator", "execute_tool add",
                 "execute_tool multiply", "chat scripted-math", "agent reviewer", "reward"):  # fmt: skip
        assert line in out, f"{line!r} missing from:\n{out}"
    with voltline.connect(url) as s:
        [rollout] = s.query_rollouts()
        assert rollout.status == "succeeded"
        spans = s.query_spans(rollout_id=rollout.rollout_id)
    assert {s.kind for s in spans} == {"chain", "agent", "llm", "tool", "reward"}
    assert [s.attributes["reward.value"] for s in spans if s.kind == "reward"] == [1.0]
