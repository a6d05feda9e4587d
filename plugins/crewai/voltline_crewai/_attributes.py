"""CrewAI events -> span kind, name and attributes (OpenTelemetry GenAI names where one exists).

Everything here reads events duck-typed (``getattr`` with defaults), so a field renamed
in a newer CrewAI degrades to a missing attribute instead of a failed capture; and each
conversion of a value sits in its own ``try``, so a value shaped in a way these converters
do not expect costs only that attribute, not the span. These
functions run on CrewAI's handler threads, right when the event arrives, and copy what
they need into plain values, so no framework object is kept alive by a span.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from voltline import capture

__all__ = ["EndSpec", "StartSpec", "end_spec", "start_spec", "tool_calls_of"]

# Scope-starting CrewAI events mapped to a span kind. Scope types not listed here (flows
# inside an agent's executor, guardrails, ...) still take part in nesting; see _tracker.
RETRIEVER_SCOPES = frozenset(
    {
        "memory_retrieval_started",
        "memory_query_started",
        "knowledge_query_started",
        "knowledge_search_query_started",
    }
)
TOOL_SCOPES = frozenset({"tool_usage_started", "mcp_tool_execution_started"})
AGENT_SCOPES = frozenset({"agent_execution_started", "lite_agent_execution_started"})
# Flows are CrewAI's own steps when a user runs them, but every agent's executor is also
# a Flow; those inner ones would add two meaningless levels under each agent span.
FLOW_SCOPES = frozenset({"flow_started", "method_execution_started"})


@dataclass
class StartSpec:
    """What a scope-starting event opens."""

    kind: str | None  # None: no span of its own (children attach to its parent)
    name: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    agent_name: str | None = None


@dataclass
class EndSpec:
    """What a scope-ending event adds to the span it closes."""

    attributes: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def _text(value: Any) -> str:
    raw = getattr(value, "raw", None)  # TaskOutput / CrewOutput
    return raw if isinstance(raw, str) else str(value)


def _plain(value: Any) -> Any:
    """A JSON-ready copy of a framework value (`voltline.capture.jsonable`; objects as text)."""
    return capture.jsonable(value, fallback=_text)


def _output(value: Any) -> Any:
    """A task/crew/agent output as its text (TaskOutput and CrewOutput carry it in `raw`)."""
    raw = getattr(value, "raw", None)
    return raw if isinstance(raw, str) else _plain(value)


def _drop_none(attrs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attrs.items() if v is not None}


def _tool_names(tools: Any) -> list[str] | None:
    if not tools:
        return None
    return [str(getattr(t, "name", t)) for t in tools]


def _tool_definitions(tools: Any) -> list[Any] | None:
    if not tools:
        return None
    return [_plain(t) for t in tools]


def _output_messages(response: Any) -> list[dict[str, Any]]:
    """A completion as one assistant message: text, or the tool calls it asked for."""
    if isinstance(response, list) and response and all(isinstance(c, dict) for c in response):
        calls = []
        for c in response:
            fn = c.get("function") or {}
            calls.append(
                {
                    "id": c.get("id") or c.get("call_id"),
                    "type": "function",
                    "function": {
                        "name": fn.get("name", c.get("name")),
                        "arguments": fn.get("arguments", c.get("input")),
                    },
                }
            )
        return [{"role": "assistant", "content": None, "tool_calls": calls}]
    return [{"role": "assistant", "content": _plain(response)}]


def tool_calls_of(response: Any) -> list[tuple[str, str]]:
    """(tool name, call id) of each tool call in a completion, in order."""
    if not isinstance(response, list):
        return []
    out = []
    for c in response:
        if isinstance(c, dict):
            name = (c.get("function") or {}).get("name") or c.get("name")
            call_id = c.get("id") or c.get("call_id")
            if name and call_id:
                out.append((str(name), str(call_id)))
    return out


def _usage(usage: Any) -> dict[str, Any]:
    if not isinstance(usage, dict):
        return {}
    # OpenAI-style names first, then Anthropic/Gemini-style ones.
    inp = usage.get("prompt_tokens", usage.get("input_tokens"))
    out = usage.get("completion_tokens", usage.get("output_tokens"))
    return {"gen_ai.usage.input_tokens": inp, "gen_ai.usage.output_tokens": out}


def _args(value: Any) -> Any:
    return capture.tool_arguments(value, fallback=_text)


def _put(
    failed: Callable[[str], None], etype: str, attrs: dict[str, Any], key: str, convert: Callable[[], Any]
) -> None:
    """Set ``attrs[key] = convert()``; a conversion that raises costs only this attribute."""
    try:
        attrs[key] = convert()
    except Exception:
        failed(f"{etype}: converting {key}")


def start_spec(event: Any, source: Any, failed: Callable[[str], None]) -> StartSpec:
    """The span a scope-starting event opens (kind None: none of its own).

    Each conversion of a payload value is guarded on its own, so a value a newer CrewAI
    shapes differently costs only its attribute, not the span (and with it every span
    under it). ``failed(where)`` reports such a failure; it is called inside the except block.
    """
    etype = getattr(event, "type", "")
    put = partial(_put, failed, etype)
    attrs: dict[str, Any]
    if etype == "crew_kickoff_started":
        name = getattr(event, "crew_name", None) or "crew"
        attrs = {"crewai.crew.name": name}
        put(attrs, "crewai.crew.inputs", lambda: _plain(getattr(event, "inputs", None)))
        return StartSpec("chain", f"crew {name}", _drop_none(attrs))
    if etype == "task_started":
        task = getattr(event, "task", None)
        name = getattr(event, "task_name", None) or getattr(task, "name", None) or "task"
        agent = getattr(task, "agent", None)
        attrs = {}
        put(
            attrs,
            "crewai.task.id",
            lambda: getattr(event, "task_id", None) or _plain(getattr(task, "id", None)),
        )
        attrs.update(
            {
                "crewai.task.name": name,
                "crewai.task.description": getattr(task, "description", None),
                "crewai.task.expected_output": getattr(task, "expected_output", None),
                "crewai.task.agent": getattr(agent, "role", None),
                "crewai.task.context": getattr(event, "context", None),
            }
        )
        return StartSpec("chain", f"task {name}", _drop_none(attrs))
    if etype == "agent_execution_started":
        agent = getattr(event, "agent", None)
        role = getattr(agent, "role", None) or "agent"
        attrs = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": role}
        put(
            attrs,
            "gen_ai.agent.id",
            lambda: str(agent.id) if getattr(agent, "id", None) is not None else None,
        )
        attrs["crewai.agent.goal"] = getattr(agent, "goal", None)
        put(attrs, "crewai.agent.tools", lambda: _tool_names(getattr(event, "tools", None)))
        attrs["crewai.task.prompt"] = getattr(event, "task_prompt", None)
        return StartSpec("agent", role, _drop_none(attrs), agent_name=role)
    if etype == "lite_agent_execution_started":
        info = getattr(event, "agent_info", None) or {}
        role = str(info.get("role") or "agent")
        attrs = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": role}
        put(attrs, "gen_ai.agent.id", lambda: _plain(info.get("id")))
        attrs["crewai.agent.goal"] = info.get("goal")
        put(attrs, "crewai.agent.tools", lambda: _tool_names(getattr(event, "tools", None)))
        put(attrs, "gen_ai.input.messages", lambda: _plain(getattr(event, "messages", None)))
        return StartSpec("agent", role, _drop_none(attrs), agent_name=role)
    if etype == "llm_call_started":
        model = getattr(event, "model", None) or getattr(source, "model", None) or "unknown"
        attrs = {"gen_ai.operation.name": "chat"}
        put(attrs, "gen_ai.provider.name", lambda: _plain(getattr(source, "provider", None)))
        attrs["gen_ai.request.model"] = model
        put(attrs, "gen_ai.input.messages", lambda: _plain(getattr(event, "messages", None)))
        put(attrs, "gen_ai.tool.definitions", lambda: _tool_definitions(getattr(event, "tools", None)))
        attrs.update(
            {
                "gen_ai.request.temperature": getattr(event, "temperature", None),
                "gen_ai.request.top_p": getattr(event, "top_p", None),
                "gen_ai.request.max_tokens": getattr(event, "max_tokens", None),
                "gen_ai.request.seed": getattr(event, "seed", None),
                "gen_ai.request.stop_sequences": getattr(event, "stop_sequences", None),
                "gen_ai.request.stream": getattr(event, "stream", None),
                "crewai.llm.call_id": getattr(event, "call_id", None),
            }
        )
        return StartSpec(
            "llm", f"chat {model}", _drop_none(attrs), agent_name=getattr(event, "agent_role", None)
        )
    if etype in TOOL_SCOPES:
        name = str(getattr(event, "tool_name", None) or "tool")
        attrs = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name}
        put(attrs, "gen_ai.tool.call.arguments", lambda: _args(getattr(event, "tool_args", None)))
        attrs["crewai.tool.run_attempts"] = getattr(event, "run_attempts", None)
        return StartSpec(
            "tool", f"execute_tool {name}", _drop_none(attrs), agent_name=getattr(event, "agent_role", None)
        )
    if etype in FLOW_SCOPES:
        name = getattr(event, "method_name", None) or getattr(event, "flow_name", None) or "flow"
        return StartSpec(
            "chain",
            f"{etype.removesuffix('_started').replace('_', ' ')} {name}",
            _drop_none({"crewai.flow.name": getattr(event, "flow_name", None)}),
        )
    kind = "retriever" if etype in RETRIEVER_SCOPES else "chain"
    return StartSpec(kind, etype.removesuffix("_started"), agent_name=getattr(event, "agent_role", None))


def _error_text(event: Any) -> str:
    error = getattr(event, "error", None)
    return str(error) if error is not None else "failed"


def end_spec(event: Any, failed: Callable[[str], None]) -> EndSpec:
    """What a scope-ending event adds to (and says about) the span it closes.

    As in `start_spec`, each conversion is guarded on its own: a failure costs only its
    attribute(s), and the span still ends (an unended span would never be recorded).
    """
    etype = getattr(event, "type", "")
    put = partial(_put, failed, etype)
    attrs: dict[str, Any] = {}
    if etype == "llm_call_completed":
        put(attrs, "gen_ai.output.messages", lambda: _output_messages(getattr(event, "response", None)))
        finish = getattr(event, "finish_reason", None)
        attrs["gen_ai.response.id"] = getattr(event, "response_id", None)
        attrs["gen_ai.response.model"] = getattr(event, "model", None)
        attrs["gen_ai.response.finish_reasons"] = [finish] if finish else None
        put(
            attrs,
            "crewai.llm.call_type",
            lambda: _plain(getattr(getattr(event, "call_type", None), "value", None)),
        )
        try:
            attrs.update(_usage(getattr(event, "usage", None)))
        except Exception:
            failed(f"{etype}: converting gen_ai.usage")
        return EndSpec(_drop_none(attrs))
    if etype == "tool_usage_finished":
        put(attrs, "gen_ai.tool.call.result", lambda: _plain(getattr(event, "output", None)))
        attrs["crewai.tool.from_cache"] = getattr(event, "from_cache", None)
        failure = getattr(event, "failure", None)
        if failure is not None:  # the tool returned, but reported that it did not do the work
            put(attrs, "crewai.tool.failure", lambda: _plain(getattr(failure, "message", failure)))
        return EndSpec(_drop_none(attrs))
    if etype in ("agent_execution_completed", "lite_agent_execution_completed"):
        put(attrs, "crewai.agent.output", lambda: _output(getattr(event, "output", None)))
        return EndSpec(_drop_none(attrs))
    if etype == "task_completed":
        put(attrs, "crewai.task.output", lambda: _output(getattr(event, "output", None)))
        return EndSpec(_drop_none(attrs))
    if etype == "crew_kickoff_completed":
        put(attrs, "crewai.crew.output", lambda: _output(getattr(event, "output", None)))
        attrs["crewai.crew.total_tokens"] = getattr(event, "total_tokens", None)
        return EndSpec(_drop_none(attrs))
    if etype.endswith(("_failed", "_error", "_canceled")):
        error = getattr(event, "error", None)
        # CrewAI hands tool errors over as the exception itself, most others as text.
        if isinstance(error, BaseException):
            attrs["error.type"] = type(error).__qualname__
        try:
            text = _error_text(event)
        except Exception:
            failed(f"{etype}: converting the error message")
            text = "failed"  # still an error span, with the text used when an event carries none
        return EndSpec(attrs, error=text)
    return EndSpec({})
