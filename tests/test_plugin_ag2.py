"""The `ag2` plugin: classic AutoGen (`autogen.ConversableAgent`, ag2 0.x) captured with no emit calls.

Real ag2 agents, offline: every model call goes to a custom model client registered with
`register_model_client` that returns scripted OpenAI-shaped completions (one with a tool
call, with vLLM-style token ids and logprobs like Voltline's proxy returns). One test runs
ag2's own OpenAI client against a local HTTP server instead.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("autogen", reason="ag2 (classic autogen namespace) is not installed")
pytest.importorskip("voltline_ag2", reason="voltline-ag2 is not installed")

import autogen
from _plugin_env import UnreachableStore, only_plugins
from autogen import ConversableAgent, GroupChat, GroupChatManager, register_function, runtime_logging
from autogen.logger.base_logger import BaseLogger
from openai.types.chat import ChatCompletion
from voltline_ag2.plugin import AG2Integration

import voltline
from voltline import _plugins

ROOT = Path(__file__).resolve().parents[1]


# a scripted model client ------------------------------------------------------------------
def tool_call(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "tool_calls": [
            {
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(arguments)},
            }
        ]
    }


class ScriptedClient:
    """An ag2 ModelClient that replays scripted assistant messages as ChatCompletions.

    Each response carries usage, an id, and the token ids/logprobs a vLLM-style server
    (Voltline's proxy) adds: `prompt_token_ids` on the response, `token_ids` on the choice.
    """

    def __init__(self, config: dict[str, Any], script: list[dict[str, Any]] | None = None) -> None:
        self.config = config
        self.script = list(script or [])
        self.calls: list[dict[str, Any]] = []

    def create(self, params: dict[str, Any]) -> ChatCompletion:
        self.calls.append(params)
        step = self.script[(len(self.calls) - 1) % len(self.script)]
        if "error" in step:
            raise step["error"]
        n = len(self.calls)
        message = {"role": "assistant", "content": step.get("content"), "tool_calls": step.get("tool_calls")}
        return ChatCompletion.model_validate(
            {
                "id": f"cmpl-{self.config['model']}-{n}",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": params.get("model", "scripted"),
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "tool_calls" if step.get("tool_calls") else "stop",
                        "message": message,
                        "token_ids": [100 + n, 200 + n],
                        "logprobs": {
                            "content": [
                                {"token": "a", "logprob": -0.5, "bytes": None, "top_logprobs": []},
                                {"token": "b", "logprob": -0.25, "bytes": None, "top_logprobs": []},
                            ]
                        },
                    }
                ],
                "usage": {"prompt_tokens": 10 * n, "completion_tokens": 2, "total_tokens": 10 * n + 2},
                "prompt_token_ids": list(range(n)),
            }
        )

    def message_retrieval(self, response: ChatCompletion) -> list[Any]:
        return [choice.message for choice in response.choices]

    def cost(self, response: ChatCompletion) -> float:
        return 0.0

    @staticmethod
    def get_usage(response: ChatCompletion) -> dict[str, Any]:
        usage = response.usage
        return {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
            "cost": 0.0,
            "model": response.model,
        }


def terminates(message: dict[str, Any]) -> bool:
    return "TERMINATE" in (message.get("content") or "")


def scripted_agent(
    name: str, script: list[dict[str, Any]], *, add_runs_on: Any = None, tool: Any = None
) -> ConversableAgent:
    """An LLM agent on the scripted client; `add_runs_on` offers it `tool` (default `add`), run there."""
    config = {
        "config_list": [{"model": f"{name}-model", "model_client_cls": "ScriptedClient"}],
        "cache_seed": None,
    }
    agent = ConversableAgent(
        name,
        llm_config=config,
        system_message=f"You are {name}.",
        human_input_mode="NEVER",
        is_termination_msg=terminates,
    )
    if add_runs_on is not None:
        # Before register_model_client: offering a tool rebuilds the agent's client wrapper.
        register_function(tool or add, caller=agent, executor=add_runs_on, description="Add two integers.")
    agent.register_model_client(ScriptedClient, script=script)
    return agent


def proxy_agent(name: str = "user") -> ConversableAgent:
    return ConversableAgent(name, llm_config=False, human_input_mode="NEVER", is_termination_msg=terminates)


def add(a: int, b: int) -> int:
    return a + b


class DirectExecutor(ConversableAgent):
    """Runs registered functions itself, without execute_function: only the runtime logger sees them."""

    def execute_function(self, func_call: dict[str, Any], call_id: str | None = None, verbose: bool = False):
        result = self.function_map[func_call["name"]](**json.loads(func_call["arguments"]))
        return True, {"name": func_call["name"], "role": "function", "content": result}


def direct_chat(store: voltline.Store) -> list[voltline.Span]:
    """user asks 4 + 5, assistant calls add, user runs it outside execute_function: the chat's spans."""
    user = DirectExecutor("user", llm_config=False, human_input_mode="NEVER", is_termination_msg=terminates)
    assistant = scripted_agent(
        "assistant",
        [tool_call("call_9", "add", {"a": 4, "b": 5}), {"content": "9 TERMINATE"}],
        add_runs_on=user,
    )
    with voltline.rollout("direct", store=store) as r:
        user.initiate_chat(assistant, message="4 + 5?", max_turns=3, silent=True)
    return spans_of(store, r)


def two_agent_chat() -> tuple[ConversableAgent, ConversableAgent, Any]:
    """user asks, assistant calls add(2, 3), user runs it, assistant answers."""
    user = proxy_agent()
    assistant = scripted_agent(
        "assistant",
        [tool_call("call_1", "add", {"a": 2, "b": 3}), {"content": "2 + 3 = 5. TERMINATE"}],
        add_runs_on=user,
    )
    result = user.initiate_chat(assistant, message="What is 2 + 3?", max_turns=3, silent=True)
    return user, assistant, result


# fixtures and tree helpers ----------------------------------------------------------------
@pytest.fixture
def ag2_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Only the ag2 plugin loads; whatever happens, it is uninstalled afterwards."""
    monkeypatch.setenv("AUTOGEN_USE_DOCKER", "False")
    with only_plugins("ag2"):
        yield


@pytest.fixture
def store(tmp_path: Path) -> Iterator[voltline.Store]:
    s = voltline.connect(f"sqlite:///{tmp_path}/ag2.db")
    try:
        yield s
    finally:
        s.close()


def spans_of(store: voltline.Store, rollout: voltline.RolloutContext) -> list[voltline.Span]:
    voltline.flush()
    return store.query_spans(rollout_id=rollout.rollout_id)


def tree(spans: list[voltline.Span]) -> list[Any]:
    """Spans as nested [(kind, name, agent_name), [children...]] in emit (sequence) order by start."""
    children: dict[str | None, list[voltline.Span]] = {}
    for s in sorted(spans, key=lambda s: (s.start_time, s.sequence)):
        children.setdefault(s.parent_id, []).append(s)

    def grow(parent: str | None) -> list[Any]:
        out: list[Any] = []
        for s in children.get(parent, []):
            node: tuple[Any, ...] = (s.kind, s.name, s.agent_name)
            kids = grow(s.span_id)
            out.append((*node, kids) if kids else node)
        return out

    return grow(None)


TWO_AGENT_TREE = [
    ("chain", "chat user -> assistant", "user", [
        ("message", "message user -> assistant", "user"),
        ("agent", "invoke_agent assistant", "assistant", [("llm", "chat assistant-model", "assistant")]),
        ("message", "message assistant -> user", "assistant"),
        ("agent", "invoke_agent user", "user", [("tool", "execute_tool add", "user")]),
        ("message", "message user -> assistant", "user"),
        ("agent", "invoke_agent assistant", "assistant", [("llm", "chat assistant-model", "assistant")]),
        ("message", "message assistant -> user", "assistant"),
    ]),
]  # fmt: skip


def assert_lost_only(
    spans: list[voltline.Span], reference: list[voltline.Span], lost: dict[str, set[str]]
) -> None:
    """Each span is its reference span minus the attributes `lost` lists for its kind, in the same order.

    Both lists are sorted by sequence. Every listed attribute must have been in the reference
    to lose, so that a test listing one the reference never had cannot pass by accident.
    """

    def comparable(attributes: dict[str, Any]) -> dict[str, Any]:
        # AutoGen's invocation ids are fresh uuids on every run.
        return {**attributes, "ag2.invocation_id": "..."} if "ag2.invocation_id" in attributes else attributes

    seen: dict[str, set[str]] = {kind: set() for kind in lost}
    for mine, theirs in zip(spans, reference, strict=True):
        assert (mine.kind, mine.name, mine.status) == (theirs.kind, theirs.name, theirs.status)
        gone = lost.get(theirs.kind, set())
        kept = {k: v for k, v in theirs.attributes.items() if k not in gone}
        assert comparable(mine.attributes) == comparable(kept), mine.name
        assert list(mine.attributes) == list(kept), mine.name
        if theirs.kind in seen:
            seen[theirs.kind] |= theirs.attributes.keys() & gone
    assert seen == lost  # every attribute listed as lost was there to lose


# tests ------------------------------------------------------------------------------------
def test_plugin_is_found_through_its_entry_point(ag2_only: None) -> None:
    [info] = [p for p in _plugins.plugins() if p.name == "ag2"]
    assert (info.status, info.distribution) == ("loaded", "voltline-ag2")
    assert [(i.name, i.available, i.installed) for i in info.integrations] == [("ag2", True, False)]
    assert voltline.instrument() == ["ag2"]
    assert _plugins.installed() == ["ag2"]


@pytest.mark.parametrize(
    ("installed", "ok"),
    [("0.9.8.post1", True), ("0.14.0", True), ("0.9.8", False), ("0.9.7", False), ("0.15.0", False)],
)
def test_available_checks_the_supported_version(
    monkeypatch: pytest.MonkeyPatch, installed: str, ok: bool
) -> None:
    monkeypatch.setattr(importlib.metadata, "version", lambda dist: installed)
    assert AG2Integration().available() is ok


def test_two_agent_chat_with_a_function_call(ag2_only: None, store: voltline.Store) -> None:
    voltline.instrument()
    with voltline.rollout({"question": "2 + 3"}, store=store) as r:
        _, _, result = two_agent_chat()
    assert result.chat_history[-1]["content"] == "2 + 3 = 5. TERMINATE"
    spans = spans_of(store, r)
    assert tree(spans) == TWO_AGENT_TREE
    by_name: dict[str, list[voltline.Span]] = {}
    for s in sorted(spans, key=lambda s: s.sequence):
        by_name.setdefault(s.name, []).append(s)

    [chat] = by_name["chat user -> assistant"]
    assert chat.attributes["ag2.chat.message"] == "What is 2 + 3?"
    assert chat.attributes["ag2.chat.max_turns"] == 3
    assert chat.attributes["ag2.chat.message_count"] == 4
    assert all(s.status == "ok" for s in spans)

    first_llm, second_llm = sorted(by_name["chat assistant-model"], key=lambda s: s.start_time)
    a = first_llm.attributes
    assert a["gen_ai.request.model"] == "assistant-model"
    assert a["gen_ai.response.id"] == "cmpl-assistant-model-1"
    assert [m["role"] for m in a["gen_ai.input.messages"]] == ["system", "user"]
    assert a["gen_ai.input.messages"][1]["content"] == "What is 2 + 3?"
    assert a["gen_ai.output.messages"][0]["tool_calls"][0]["function"]["name"] == "add"
    assert a["gen_ai.tool.definitions"][0]["function"]["name"] == "add"
    assert a["gen_ai.response.finish_reasons"] == ["tool_calls"]
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (10, 2)
    assert (a["prompt_token_ids"], a["response_token_ids"], a["response_logprobs"]) == (
        [0],
        [101, 201],
        [-0.5, -0.25],
    )
    b = second_llm.attributes
    assert [m["role"] for m in b["gen_ai.input.messages"]] == ["system", "user", "assistant", "tool"]
    assert b["gen_ai.output.messages"][0]["content"] == "2 + 3 = 5. TERMINATE"
    assert b["prompt_token_ids"] == [0, 1]
    assert first_llm.start_time <= first_llm.end_time

    [tool] = by_name["execute_tool add"]
    assert tool.attributes["gen_ai.tool.call.arguments"] == {"a": 2, "b": 3}
    assert tool.attributes["gen_ai.tool.call.result"] == "5"
    assert tool.attributes["gen_ai.tool.call.id"] == "call_1"

    sent = sorted(
        by_name["message user -> assistant"] + by_name["message assistant -> user"], key=lambda s: s.sequence
    )
    assert [(m.attributes["message.sender"], m.attributes["message.recipient"]) for m in sent] == [
        ("user", "assistant"), ("assistant", "user"), ("user", "assistant"), ("assistant", "user")
    ]  # fmt: skip
    assert sent[0].attributes["message.content"] == "What is 2 + 3?"
    assert sent[1].attributes["message.tool_calls"][0]["function"]["arguments"] == '{"a": 2, "b": 3}'
    assert sent[2].attributes["message.role"] == "tool"
    assert sent[2].attributes["message.tool_responses"] == [
        {"tool_call_id": "call_1", "role": "tool", "content": "5"}
    ]
    assert sent[3].attributes["message.content"] == "2 + 3 = 5. TERMINATE"

    turns = [s for s in spans if s.kind == "agent"]
    assert {s.attributes["ag2.reply.function"] for s in turns} == {
        "generate_oai_reply",
        "generate_tool_calls_reply",
    }
    # One agent of the pair, as an adapter filtering by agent would see it.
    mine = store.query_spans(rollout_id=r.rollout_id, agent_name="assistant")
    assert sorted(s.kind for s in mine) == ["agent", "agent", "llm", "llm", "message", "message"]


def test_group_chat_of_three_agents(ag2_only: None, store: voltline.Store) -> None:
    voltline.instrument()
    with voltline.rollout({"question": "2 + 3, reviewed"}, store=store) as r:
        user = proxy_agent()
        reviewer = scripted_agent("reviewer", [{"content": "Approved. TERMINATE"}])
        coder = scripted_agent(
            "coder",
            [tool_call("call_7", "add", {"a": 2, "b": 3}), {"content": "The sum is 5."}],
            add_runs_on=reviewer,
        )
        order = iter([coder, reviewer, coder, reviewer])
        group = GroupChat(
            [user, coder, reviewer],
            messages=[],
            max_round=6,
            speaker_selection_method=lambda last, chat: next(order),
        )
        manager = GroupChatManager(group, llm_config=False, is_termination_msg=terminates)
        result = user.initiate_chat(manager, message="Add 2 and 3, then review.", silent=True)
    assert [m.get("name") for m in group.messages] == ["user", "coder", "reviewer", "coder", "reviewer"]
    assert result.chat_history[0]["content"] == "Add 2 and 3, then review."

    def broadcast(speaker: str) -> list[Any]:
        others = [a for a in ("user", "coder", "reviewer") if a != speaker]
        return [("message", f"message chat_manager -> {a}", "chat_manager") for a in others]

    def turn(agent: str, inner: tuple[Any, ...]) -> list[Any]:
        return [
            ("agent", f"invoke_agent {agent}", agent, [inner]),
            ("message", f"message {agent} -> chat_manager", agent),
        ]

    manager_turn = [
        *broadcast("user"),
        *turn("coder", ("llm", "chat coder-model", "coder")),
        *broadcast("coder"),
        *turn("reviewer", ("tool", "execute_tool add", "reviewer")),
        *broadcast("reviewer"),
        *turn("coder", ("llm", "chat coder-model", "coder")),
        *broadcast("coder"),
        *turn("reviewer", ("llm", "chat reviewer-model", "reviewer")),
        *broadcast("reviewer"),
    ]
    assert tree(spans_of(store, r)) == [
        ("chain", "chat user -> chat_manager", "user", [
            ("message", "message user -> chat_manager", "user"),
            ("agent", "invoke_agent chat_manager", "chat_manager", manager_turn),
        ]),
    ]  # fmt: skip
    [chat] = store.query_spans(rollout_id=r.rollout_id, kind="chain")
    assert chat.attributes["ag2.chat.group"] == ["user", "coder", "reviewer"]
    [tool] = store.query_spans(rollout_id=r.rollout_id, kind="tool")
    assert (tool.attributes["gen_ai.tool.call.id"], tool.attributes["gen_ai.tool.call.result"]) == (
        "call_7",
        "5",
    )
    reviewer_llm = store.query_spans(rollout_id=r.rollout_id, kind="llm", agent_name="reviewer")
    assert [s.attributes["gen_ai.input.messages"][-1]["content"] for s in reviewer_llm] == ["The sum is 5."]


def test_agents_created_before_and_after_instrument_are_both_captured(
    ag2_only: None, store: voltline.Store
) -> None:
    before = scripted_agent("assistant", [{"content": "Hello. TERMINATE"}])
    voltline.instrument()
    after = proxy_agent()
    # An agent created after instrument() is hooked at construction; an earlier one at its first chat.
    hook = "process_message_before_send"
    assert len(after.hook_lists[hook]) == 1
    assert before.hook_lists[hook] == []
    with voltline.rollout("hi", store=store) as r:
        after.initiate_chat(before, message="Hi!", max_turns=1, silent=True)
    assert len(before.hook_lists[hook]) == 1
    assert tree(spans_of(store, r)) == [
        ("chain", "chat user -> assistant", "user", [
            ("message", "message user -> assistant", "user"),
            ("agent", "invoke_agent assistant", "assistant", [("llm", "chat assistant-model", "assistant")]),
            ("message", "message assistant -> user", "assistant"),
        ]),
    ]  # fmt: skip


def test_the_message_span_shows_the_message_after_the_users_own_hooks(
    ag2_only: None, store: voltline.Store
) -> None:
    voltline.instrument()
    assistant = scripted_agent("assistant", [{"content": "Noted. TERMINATE"}])
    user = proxy_agent()

    def redact(sender: Any, message: Any, recipient: Any, silent: bool) -> Any:
        return message.replace("secret", "[redacted]") if isinstance(message, str) else message

    user.register_hook("process_message_before_send", redact)  # registered after Voltline's hook
    with voltline.rollout("redact", store=store) as r:
        user.initiate_chat(assistant, message="my secret is 42", max_turns=1, silent=True)
    assert user.hook_lists["process_message_before_send"][0] is redact
    [first] = [s for s in spans_of(store, r) if s.name == "message user -> assistant"]
    assert first.attributes["message.content"] == "my [redacted] is 42"
    assert assistant.chat_messages[user][0]["content"] == "my [redacted] is 42"


def test_uninstrument_removes_hooks_methods_and_the_runtime_logger(
    ag2_only: None, store: voltline.Store
) -> None:
    original_reply = ConversableAgent.__dict__["generate_reply"]
    original_init = ConversableAgent.__dict__["__init__"]
    voltline.instrument()
    assert runtime_logging.logging_enabled()
    assert ConversableAgent.__dict__["generate_reply"] is not original_reply
    with voltline.rollout("first", store=store) as first:
        user, assistant, _ = two_agent_chat()
    assert voltline.uninstrument() == ["ag2"]

    assert not runtime_logging.logging_enabled()
    assert ConversableAgent.__dict__["generate_reply"] is original_reply
    assert ConversableAgent.__dict__["__init__"] is original_init
    for agent in (user, assistant):
        assert agent.hook_lists["process_message_before_send"] == []
    with voltline.rollout("second", store=store) as second:
        _, _, result = two_agent_chat()
    assert result.chat_history[-1]["content"] == "2 + 3 = 5. TERMINATE"
    assert len(spans_of(store, first)) == 11
    assert spans_of(store, second) == []


def test_a_failing_capture_never_changes_the_conversation(
    ag2_only: None, store: voltline.Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from voltline_ag2._capture import Capture

    _, _, baseline = two_agent_chat()  # not instrumented
    voltline.instrument()

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("capture bug")

    for method in (
        "message_sent",
        "turn_started",
        "turn_finished",
        "llm_completed",
        "tool_started",
        "tool_finished",
        "chat_started",
        "reply_function",
        "function_used",
    ):
        monkeypatch.setattr(Capture, method, boom)
    errors_before = voltline.emitter_stats()["capture_errors"]
    with voltline.rollout("broken capture", store=store) as r:
        _, _, result = two_agent_chat()
    assert result.chat_history == baseline.chat_history
    assert result.summary == baseline.summary
    assert voltline.emitter_stats()["capture_errors"] - errors_before >= 9
    assert spans_of(store, r) == []
    # Logged once per place, not once per call.
    assert (
        sum(
            "message_sent" in rec.getMessage() or "process_message_before_send" in rec.getMessage()
            for rec in caplog.records
        )
        <= 1
    )


def test_unreachable_store_leaves_the_conversation_unchanged(ag2_only: None, tmp_path: Path) -> None:
    _, _, baseline = two_agent_chat()  # not instrumented
    flaky = UnreachableStore(f"sqlite:///{tmp_path}/flaky.db")
    voltline.instrument()
    with voltline.rollout({"question": "2 + 3"}, store=flaky) as r:
        _, _, result = two_agent_chat()
        voltline.flush()
    assert (result.chat_history, result.summary) == (baseline.chat_history, baseline.summary)
    assert result.chat_history[-1]["content"] == "2 + 3 = 5. TERMINATE"
    assert flaky.failed == 2
    assert flaky.get_rollout(r.rollout_id).status == "succeeded"
    assert tree(spans_of(flaky, r)) == TWO_AGENT_TREE  # written once the store came back
    flaky.close()


def test_a_failing_converter_loses_only_its_attributes(
    ag2_only: None, store: voltline.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from voltline_ag2 import _capture, _convert

    voltline.instrument()
    with voltline.rollout("reference", store=store) as ref:
        _, _, expected = two_agent_chat()
    reference = sorted(spans_of(store, ref), key=lambda s: s.sequence)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise TypeError("a payload a newer AutoGen changed")

    # Every payload conversion fails: chat, turn and sent messages, model inputs, tool
    # definitions, outputs and usage, tool arguments and results, the model call's start time.
    for module, names in (
        (_convert, ("jsonable", "tool_definitions", "_usage")),
        (_capture, ("jsonable", "parse_arguments", "parse_timestamp")),
    ):
        for name in names:
            monkeypatch.setattr(module, name, broken)
    errors_before = voltline.emitter_stats()["capture_errors"]
    with voltline.rollout("broken", store=store) as r:
        _, _, result = two_agent_chat()
    assert (result.chat_history, result.summary) == (expected.chat_history, expected.summary)
    assert voltline.emitter_stats()["capture_errors"] > errors_before
    spans = sorted(spans_of(store, r), key=lambda s: s.sequence)
    assert tree(spans) == TWO_AGENT_TREE  # no span lost or left open, every parent link kept

    lost = {
        "chain": {"ag2.chat.message", "ag2.chat.summary"},
        "agent": {"ag2.reply"},
        "llm": {
            "gen_ai.input.messages",
            "gen_ai.tool.definitions",
            "gen_ai.output.messages",
            "gen_ai.usage.input_tokens",
            "gen_ai.usage.output_tokens",
        },
        "tool": {"gen_ai.tool.call.arguments", "gen_ai.tool.call.result"},
        "message": {"message.content", "message.role", "message.tool_calls", "message.tool_responses"},
    }
    assert_lost_only(spans, reference, lost)

    # A function run outside execute_function: the runtime logger's tool span keeps its name.
    [tool] = [s for s in direct_chat(store) if s.kind == "tool"]
    assert (tool.name, tool.agent_name) == ("execute_tool add", "user")
    assert tool.attributes["gen_ai.tool.name"] == "add"
    assert not {"gen_ai.tool.call.arguments", "gen_ai.tool.call.result"} & tool.attributes.keys()


class Unreadable(Exception):
    """What an odd response's property raises: not AttributeError, which `getattr(..., None)` absorbs."""


class OddResponse:
    """A model response (or one of its choices) read through to a real one, but with properties that raise.

    The shape a custom client's own response class, or a newer ag2, might hand the runtime logger.
    """

    def __init__(self, real: Any, broken: frozenset[str]) -> None:
        self._real = real
        self._broken = broken

    def __getattr__(self, name: str) -> Any:
        if name in self._broken:
            raise Unreadable(f"{name} of an odd response")
        value = getattr(self._real, name)
        if name == "choices":
            return [OddResponse(choice, self._broken) for choice in value]
        return value


@pytest.mark.parametrize(
    ("broken", "lost", "failures_per_call"),
    [
        pytest.param(
            frozenset({"id", "model", "usage", "prompt_token_ids", "finish_reason", "token_ids", "logprobs"}),
            {
                "gen_ai.response.id",
                "gen_ai.response.model",
                "gen_ai.response.finish_reasons",
                "gen_ai.usage.input_tokens",
                "gen_ai.usage.output_tokens",
                "prompt_token_ids",
                "response_token_ids",
                "response_logprobs",
            },
            7,  # id, model, finish reasons, usage (both counts at once), the three token lists
            id="response-and-choice-fields",
        ),
        pytest.param(
            frozenset({"choices"}),
            {
                "gen_ai.output.messages",
                "gen_ai.response.finish_reasons",
                "response_token_ids",
                "response_logprobs",
            },
            1,
            id="choices",
        ),
    ],
)
def test_an_unreadable_response_field_loses_only_its_attribute(
    ag2_only: None,
    store: voltline.Store,
    monkeypatch: pytest.MonkeyPatch,
    broken: frozenset[str],
    lost: set[str],
    failures_per_call: int,
) -> None:
    from voltline_ag2._capture import Capture

    voltline.instrument()
    with voltline.rollout("reference", store=store) as ref:
        _, _, expected = two_agent_chat()
    reference = sorted(spans_of(store, ref), key=lambda s: s.sequence)

    # ag2 itself reads the id off the response it returns, so the odd shape goes to the capture
    # only: the conversation must stay the reference's for the spans to be comparable.
    llm_completed = Capture.llm_completed

    def odd(self: Capture, agent: Any, request: Any, response: Any, *rest: Any) -> None:
        llm_completed(self, agent, request, OddResponse(response, broken), *rest)

    monkeypatch.setattr(Capture, "llm_completed", odd)
    errors_before = voltline.emitter_stats()["capture_errors"]
    with voltline.rollout("odd response", store=store) as r:
        _, _, result = two_agent_chat()
    assert (result.chat_history, result.summary) == (expected.chat_history, expected.summary)
    spans = sorted(spans_of(store, r), key=lambda s: s.sequence)
    assert tree(spans) == TWO_AGENT_TREE  # both llm spans recorded, ended and under their turns
    llm = [s for s in spans if s.kind == "llm"]
    assert all(s.end_time is not None and s.status == "ok" for s in llm)
    # Each unreadable read is reported on its own through the plugin's failure counter.
    assert voltline.emitter_stats()["capture_errors"] - errors_before == failures_per_call * len(llm)
    assert_lost_only(spans, reference, {"llm": lost})


def test_an_agent_exception_propagates_unchanged_and_marks_the_spans(
    ag2_only: None, store: voltline.Store
) -> None:
    voltline.instrument()
    assistant = scripted_agent("assistant", [{"error": ValueError("model down")}])
    user = proxy_agent()
    with pytest.raises(ValueError, match="model down"):
        with voltline.rollout("fails", store=store) as r:
            user.initiate_chat(assistant, message="Hi", max_turns=1, silent=True)
    statuses = {
        s.name: (s.status, s.attributes.get("exception.type"))
        for s in spans_of(store, r)
        if s.kind != "exception"
    }
    assert statuses == {
        "chat user -> assistant": ("error", "ValueError"),
        "message user -> assistant": ("ok", None),
        "invoke_agent assistant": ("error", "ValueError"),
    }


def test_async_chat_keeps_its_tree_across_the_executor_thread(ag2_only: None, store: voltline.Store) -> None:
    # a_generate_oai_reply runs the client in run_in_executor, a thread without our contextvars:
    # the llm span finds its parent through the agent's open turn.
    voltline.instrument()

    async def chat() -> Any:
        assistant = scripted_agent("assistant", [{"content": "Async hello. TERMINATE"}])
        user = proxy_agent()
        return await user.a_initiate_chat(assistant, message="Hi async", max_turns=1, silent=True)

    with voltline.rollout("async", store=store) as r:
        result = asyncio.run(chat())
    assert result.chat_history[-1]["content"] == "Async hello. TERMINATE"
    assert tree(spans_of(store, r)) == [
        ("chain", "chat user -> assistant", "user", [
            ("message", "message user -> assistant", "user"),
            ("agent", "invoke_agent assistant", "assistant", [("llm", "chat assistant-model", "assistant")]),
            ("message", "message assistant -> user", "assistant"),
        ]),
    ]  # fmt: skip


def test_an_async_tool_run_on_autogens_helper_thread_stays_in_its_turn(
    ag2_only: None, store: voltline.Store
) -> None:
    # A coroutine tool in a sync chat runs on a thread AutoGen starts (no contextvars there).
    async def slow_add(a: int, b: int) -> int:
        await asyncio.sleep(0)
        return a + b

    voltline.instrument()
    user = proxy_agent()
    script = [tool_call("call_3", "slow_add", {"a": 1, "b": 2}), {"content": "3 TERMINATE"}]
    assistant = scripted_agent("assistant", script, add_runs_on=user, tool=slow_add)
    with voltline.rollout("async tool", store=store) as r:
        result = user.initiate_chat(assistant, message="1 + 2?", max_turns=3, silent=True)
    assert result.chat_history[-1]["content"] == "3 TERMINATE"
    spans = spans_of(store, r)
    [tool] = [s for s in spans if s.kind == "tool"]
    assert (tool.name, tool.agent_name, tool.attributes["gen_ai.tool.call.result"]) == (
        "execute_tool slow_add",
        "user",
        "3",
    )
    [parent] = [s for s in spans if s.span_id == tool.parent_id]
    assert parent.name == "invoke_agent user"


class RecordingLogger(BaseLogger):
    """A user's own runtime logger, started before Voltline."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def start(self) -> str:
        return "user-session"

    def log_chat_completion(self, *args: Any, **kwargs: Any) -> None:
        self.events.append("chat_completion")

    def log_new_agent(self, agent: Any, init_args: dict[str, Any]) -> None:
        self.events.append("new_agent")

    def log_event(self, source: Any, name: str, **kwargs: Any) -> None:
        self.events.append(name)

    def log_new_wrapper(self, *args: Any) -> None:
        self.events.append("new_wrapper")

    def log_new_client(self, *args: Any) -> None:
        self.events.append("new_client")

    def log_function_use(self, *args: Any) -> None:
        self.events.append("function_use")

    def stop(self) -> None:
        self.events.append("stop")

    def get_connection(self) -> None:
        return None


def test_a_runtime_logger_the_user_started_keeps_logging(ag2_only: None, store: voltline.Store) -> None:
    mine = RecordingLogger()
    runtime_logging.start(logger=mine)
    try:
        voltline.instrument()
        with voltline.rollout("both", store=store) as r:
            two_agent_chat()
        assert mine.events.count("chat_completion") == 2
        assert mine.events.count("function_use") == 1
        assert "new_agent" in mine.events
        assert len(spans_of(store, r)) == 11
        voltline.uninstrument()
        assert runtime_logging.autogen_logger is mine and runtime_logging.logging_enabled()
        assert "stop" not in mine.events
    finally:
        runtime_logging.stop()
        runtime_logging.autogen_logger = None


def test_a_function_called_outside_execute_function_still_gets_a_tool_span(
    ag2_only: None, store: voltline.Store
) -> None:
    voltline.instrument()
    spans = direct_chat(store)
    [tool] = [s for s in spans if s.kind == "tool"]
    assert (tool.name, tool.agent_name) == ("execute_tool add", "user")
    assert tool.attributes["gen_ai.tool.call.arguments"] == {"a": 4, "b": 5}
    assert tool.attributes["gen_ai.tool.call.result"] == 9
    [turn] = [s for s in spans if s.kind == "agent" and s.span_id == tool.parent_id]
    assert turn.name == "invoke_agent user"


def test_chats_outside_any_rollout_are_not_recorded_and_still_work(ag2_only: None) -> None:
    voltline.instrument()
    before = voltline.emitter_stats()
    _, _, result = two_agent_chat()
    after = voltline.emitter_stats()
    assert result.chat_history[-1]["content"] == "2 + 3 = 5. TERMINATE"
    assert after["outside_rollout"] - before["outside_rollout"] == 11
    assert after["emitted"] == before["emitted"]


# ag2's own OpenAI client against a local OpenAI-compatible server ---------------------------
class _FakeServer(BaseHTTPRequestHandler):
    requests: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        payload = {
            "id": "chatcmpl-local-1",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "prompt_token_ids": [1, 2, 3],
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "token_ids": [7, 8],
                    "message": {"role": "assistant", "content": "Hi. TERMINATE"},
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        }
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def test_token_ids_from_an_openai_compatible_server_reach_the_llm_span(
    ag2_only: None, store: voltline.Store
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        voltline.instrument()
        base_url = f"http://127.0.0.1:{server.server_port}/v1"
        config = {
            "config_list": [{"model": "local-model", "base_url": base_url, "api_key": "none"}],
            "cache_seed": None,
        }
        assistant = ConversableAgent("assistant", llm_config=config, human_input_mode="NEVER")
        with voltline.rollout("proxy", store=store) as r:
            proxy_agent().initiate_chat(assistant, message="Hello", max_turns=1, silent=True)
    finally:
        server.shutdown()
        server.server_close()
    voltline.flush()
    [llm] = store.query_spans(rollout_id=r.rollout_id, kind="llm")
    assert llm.attributes["gen_ai.response.id"] == "chatcmpl-local-1"
    assert (llm.attributes["prompt_token_ids"], llm.attributes["response_token_ids"]) == ([1, 2, 3], [7, 8])
    assert (llm.attributes["gen_ai.usage.input_tokens"], llm.attributes["gen_ai.usage.output_tokens"]) == (
        3,
        2,
    )
    assert llm.agent_name == "assistant"


def test_both_autogen_plugins_instrument_in_one_process(
    monkeypatch: pytest.MonkeyPatch, store: voltline.Store
) -> None:
    pytest.importorskip(
        "voltline_autogen", reason="voltline-autogen (autogen-agentchat plugin) is not installed"
    )
    with only_plugins("ag2", "autogen"):
        names = voltline.instrument()
        assert "ag2" in names and len(names) == 2, names
        with voltline.rollout("both", store=store) as r:
            two_agent_chat()
        assert tree(spans_of(store, r)) == TWO_AGENT_TREE


def test_the_example_runs_and_prints_its_span_tree(tmp_path: Path) -> None:
    env = {**os.environ, "VOLTLINE_PLUGINS": "ag2", "AUTOGEN_USE_DOCKER": "False"}
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "ag2" / "math_team.py"),
            "--store",
            f"sqlite:///{tmp_path}/ex.db",
        ],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for line in (
        "chain chat user -> assistant",
        "tool execute_tool multiply",
        "llm chat scripted-math",
        "chain chat user -> chat_manager",
        "agent invoke_agent reviewer",
    ):
        assert line in out, out
    assert autogen.__version__  # the example ran against the installed ag2
