"""Turns LlamaIndex dispatcher spans and events into Voltline spans.

LlamaIndex opens a dispatcher span around every instrumented method (hundreds per agent
run, most of them plumbing). The tracker records the ones a reader of `voltline spans tree`
cares about and passes through the rest, parenting each recorded span to its nearest
recorded ancestor so the tree keeps LlamaIndex's nesting:

* `agent`: a workflow agent's `run` (FunctionAgent, ReActAgent, CodeActAgent, AgentWorkflow);
* `chain`: every workflow step, other workflows' `run`, query engines, chat engines, synthesizers;
* `retriever`: `BaseRetriever.retrieve/aretrieve`;
* `tool`: `BaseTool.call/acall/__call__`. Workflow agents send no tool-call *events*, but they
  call tools through these methods, so tools are captured all the same;
* `llm`: one per model call, from `LLMChat*`/`LLMCompletion*` *events*, because a streaming
  call's dispatcher span ends when the generator is handed back, long before the last chunk.

All entry points are guarded by the handlers (see `_handlers.py`). Inside, each conversion of
a payload into an attribute has its own `try`, reported through `failed`: a payload a newer
LlamaIndex changed costs that attribute only, never the span, its parent links or its end.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import voltline
from voltline import SpanHandle

from . import _convert as cv

__all__ = ["Tracker"]

_TOOL_METHODS = frozenset({"call", "acall", "__call__"})
_RETRIEVE_METHODS = frozenset({"retrieve", "aretrieve"})
_QUERY_METHODS = frozenset({"query", "aquery"})
_CHAT_METHODS = frozenset({"chat", "achat", "stream_chat", "astream_chat"})
_SYNTH_METHODS = frozenset({"synthesize", "asynthesize"})
_LLM_START = frozenset({"LLMChatStartEvent", "LLMCompletionStartEvent"})
_LLM_PROGRESS = frozenset({"LLMChatInProgressEvent", "LLMCompletionInProgressEvent"})
_LLM_END = frozenset({"LLMChatEndEvent", "LLMCompletionEndEvent"})
_MAX_TEXT = 4_000


@dataclass(slots=True)
class _Node:
    """An open dispatcher span: what we recorded for it (if anything) and where it hangs."""

    method: str
    instance: Any
    anchor: _Node | None  # nearest ancestor with a recorded span
    handle: SpanHandle | None = None
    tool_call_id: str | None = None  # from a `call_tool` step's ToolCall event
    current_agent: str | None = None  # on agent nodes: the agent of a team that is acting now


def _split_id(id_: str) -> tuple[str, str]:
    """`"FunctionTool.acall-<uuid4>"` -> (`"FunctionTool.acall"`, `"acall"`)."""
    qualname = id_[:-37] if len(id_) > 37 and id_[-37] == "-" else id_
    return qualname, qualname.rsplit(".", 1)[-1]


def _short(value: Any) -> Any:
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + "…"


def _load_types() -> dict[str, tuple[type, ...]]:
    """The LlamaIndex base classes the tracker recognises; any that a version lacks is skipped."""
    wanted = {
        "workflow": [("workflows", "Workflow")],
        "event": [("workflows.events", "Event")],
        "agent": [
            ("llama_index.core.agent.workflow", "BaseWorkflowAgent"),
            ("llama_index.core.agent.workflow", "AgentWorkflow"),
        ],
        "tool": [("llama_index.core.tools", "BaseTool")],
        "retriever": [("llama_index.core.base.base_retriever", "BaseRetriever")],
        "query_engine": [("llama_index.core.base.base_query_engine", "BaseQueryEngine")],
        "chat_engine": [("llama_index.core.chat_engine.types", "BaseChatEngine")],
        "synthesizer": [("llama_index.core.response_synthesizers", "BaseSynthesizer")],
    }
    found: dict[str, tuple[type, ...]] = {}
    for key, places in wanted.items():
        classes = []
        for module, name in places:
            try:
                classes.append(getattr(__import__(module, fromlist=[name]), name))
            except Exception:  # moved or gone in this version: that kind is just not recognised
                continue
        found[key] = tuple(classes)
    return found


class Tracker:
    """State shared by the span handler and the event handler of one registration."""

    def __init__(self, failed: Callable[[str], None]) -> None:
        self._failed = failed  # called inside `except`: counts and logs the failure
        self._types = _load_types()
        self._lock = threading.Lock()
        self._nodes: dict[str, _Node] = {}
        self._llm: dict[str, SpanHandle] = {}  # keyed by the dispatcher span the call's events name

    def _is(self, obj: Any, key: str) -> bool:
        classes = self._types.get(key, ())
        return bool(classes) and isinstance(obj, classes)

    # -- dispatcher spans ---------------------------------------------------------------
    def enter(
        self, id_: str, bound_args: inspect.BoundArguments, instance: Any, parent_id: str | None
    ) -> None:
        with self._lock:
            parent = self._nodes.get(parent_id) if parent_id else None
        anchor = parent if parent is None or parent.handle is not None else parent.anchor
        _, method = _split_id(id_)
        node = _Node(method, instance, anchor)
        try:
            node.handle = self._start(node, bound_args, instance, method, anchor)
        finally:  # kept even without a span, so its children still find their recorded ancestor
            with self._lock:
                self._nodes[id_] = node

    def exit(self, id_: str, instance: Any, result: Any) -> None:
        with self._lock:
            node = self._nodes.pop(id_, None)
        if node is None or node.handle is None or node.handle.kind == "llm":
            return  # llm spans end on their end event
        attrs: dict[str, Any] = {}
        failed = False
        try:
            # A tool may report failure in its output instead of raising.
            failed = node.handle.kind == "tool" and cv.get(result, "is_error") is True
            attrs = self._result_attributes(node, result, failed)
        finally:  # an unreadable result still records the span (then the error is counted)
            node.handle.end(attributes=attrs, status="error" if failed else "ok")

    def drop(self, id_: str, err: BaseException | None) -> None:
        with self._lock:
            node = self._nodes.pop(id_, None)
            llm = self._llm.pop(id_, None)
        if llm is not None:  # the model call raised before (or while) streaming
            llm.end(error=err or "dropped")
        if node is not None and node.handle is not None and node.handle is not llm:
            node.handle.end(error=err or "dropped")

    def _start(
        self,
        node: _Node,
        bound_args: inspect.BoundArguments,
        instance: Any,
        method: str,
        anchor: _Node | None,
    ) -> SpanHandle | None:
        args = bound_args.arguments
        # No recorded LlamaIndex ancestor: hang under whatever Voltline span is current here.
        parent = anchor.handle if anchor is not None else voltline.current_span()
        if instance is not None and self._is(instance, "workflow") and method == "run":
            return self._start_workflow(node, args, instance, parent)
        if instance is None or self._is(instance, "workflow"):
            # A workflow step: the dispatcher sees the undecorated step function (no instance),
            # called with (ctx, ev) where ev is the workflow Event that triggered it.
            event = next((v for v in args.values() if self._is(v, "event")), None)
            if event is not None:
                return self._start_step(node, method, event, anchor, parent)
            return None
        if method in _TOOL_METHODS and self._is(instance, "tool"):
            if anchor is not None and anchor.handle.kind == "tool" and anchor.instance is instance:
                return None  # __call__ -> call of the same tool: one span
            attrs = {"gen_ai.operation.name": "execute_tool"}
            try:
                name = cv.get(instance, "metadata", "name") or type(instance).__name__
                attrs["gen_ai.tool.name"] = name
            except Exception:  # the span is still recorded, named after the tool's class
                self._failed("span_enter")
                name = type(instance).__name__
            try:
                arguments = dict(args.get("kwargs") or {})
                if positional := args.get("args"):
                    arguments["args"] = list(positional)
                attrs["gen_ai.tool.call.arguments"] = cv.jsonable(arguments)
            except Exception:  # the span is still recorded, without its arguments
                self._failed("span_enter")
            if anchor is not None and anchor.tool_call_id:
                attrs["gen_ai.tool.call.id"] = anchor.tool_call_id
            return voltline.start_span(f"execute_tool {name}", "tool", parent=parent, attributes=attrs)
        cls = type(instance).__name__
        if method in _RETRIEVE_METHODS and self._is(instance, "retriever"):
            attrs = {"gen_ai.operation.name": "retrieval"}
            try:
                attrs["retrieval.query"] = cv.query_text(args.get("str_or_query_bundle"))
            except Exception:  # the span is still recorded, without its query
                self._failed("span_enter")
            return voltline.start_span(f"retrieve {cls}", "retriever", parent=parent, attributes=attrs)
        for key, methods, verb in (
            ("query_engine", _QUERY_METHODS, "query"),
            ("chat_engine", _CHAT_METHODS, method),
            ("synthesizer", _SYNTH_METHODS, "synthesize"),
        ):
            if method in methods and self._is(instance, key):
                query = args.get("str_or_query_bundle") or args.get("query") or args.get("message")
                attrs = {}
                try:
                    if query is not None:
                        attrs["input.value"] = _short(cv.query_text(query))
                except Exception:  # the span is still recorded, without its input
                    self._failed("span_enter")
                return voltline.start_span(f"{verb} {cls}", "chain", parent=parent, attributes=attrs)
        return None

    def _start_workflow(self, node: _Node, args: dict[str, Any], instance: Any, parent: Any) -> SpanHandle:
        cls = type(instance).__name__
        attrs: dict[str, Any] = {}
        try:
            # Workflow.run(start_event=...) inside; the agent's public run(user_msg=...) in older releases.
            user_msg = cv.get(args.get("start_event"), "user_msg") or args.get("user_msg")
            if user_msg is None:
                user_msg = (args.get("kwargs") or {}).get("user_msg")
            if user_msg is not None:
                attrs["input.value"] = _short(cv.get(user_msg, "content") or user_msg)
        except Exception:  # the span is still recorded, without its input
            self._failed("span_enter")
        if not self._is(instance, "agent"):
            attrs["gen_ai.operation.name"] = "invoke_workflow"
            return voltline.start_span(f"workflow {cls}", "chain", parent=parent, attributes=attrs)
        # A single agent is named by its `name`; a team (AgentWorkflow) by its class, with the
        # acting member named on each step beneath it.
        name = cv.get(instance, "name") if not hasattr(instance, "agents") else None
        name = name if isinstance(name, str) and name else cls
        attrs.update({"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": name})
        description = cv.get(instance, "description")
        if isinstance(description, str) and description:
            try:
                attrs["gen_ai.agent.description"] = _short(description)
            except Exception:  # the span is still recorded, without its description
                self._failed("span_enter")
        return voltline.start_span(f"invoke_agent {name}", "agent", parent=parent, attributes=attrs)

    def _start_step(
        self, node: _Node, method: str, event: Any, anchor: _Node | None, parent: Any
    ) -> SpanHandle:
        team = anchor
        while team is not None and team.handle.kind != "agent":
            team = team.anchor
        try:
            agent = cv.get(event, "current_agent_name")
        except Exception:  # the step then names the agent last seen acting
            self._failed("span_enter")
            agent = None
        if isinstance(agent, str) and agent:
            if team is not None:
                team.current_agent = agent
        else:
            agent = team.current_agent if team is not None else None
        try:
            node.tool_call_id = cv.get(event, "tool_id")
        except Exception:  # the tool span below is still recorded, without its call id
            self._failed("span_enter")
        attrs = {"llama_index.step": method, "llama_index.event": type(event).__name__}
        return voltline.start_span(method, "chain", parent=parent, agent_name=agent, attributes=attrs)

    def _result_attributes(self, node: _Node, result: Any, is_error: bool) -> dict[str, Any]:
        # Each kind but tool has a single result attribute: exit's `finally` already keeps the
        # span when it fails. A tool's result, error message and error type each stand alone.
        kind = node.handle.kind
        if kind == "tool":
            attrs: dict[str, Any] = {}
            try:
                attrs["gen_ai.tool.call.result"] = cv.jsonable(cv.get(result, "content"))
            except Exception:
                self._failed("span_exit")
            if is_error:
                try:
                    node.handle.set("error.message", _short(cv.get(result, "content")))
                except Exception:
                    self._failed("span_exit")
                attrs["error.type"] = "ToolError"
            return attrs
        if kind == "retriever":
            return {"retrieval.documents": cv.nodes(result if isinstance(result, list) else ())}
        if kind == "chain" and node.handle.attributes.get("llama_index.step"):
            return {"llama_index.result_event": type(result).__name__} if result is not None else {}
        # agents, workflows, query/chat engines: the final answer as text (a StopEvent's result,
        # an AgentOutput's message, a Response's text)
        out = cv.get(result, "result") if hasattr(result, "result") else result
        text = cv.get(out, "response", "content") or cv.get(out, "response") or out
        return {"output.value": _short(text)} if text is not None and isinstance(text, str) else {}

    # -- LLM events -----------------------------------------------------------------------
    def event(self, event: Any) -> None:
        kind = type(event).__name__
        if kind in _LLM_START:
            self._llm_start(event, chat=kind == "LLMChatStartEvent")
        elif kind in _LLM_PROGRESS:
            with self._lock:
                handle = self._llm.get(event.span_id)
            if handle is not None and "gen_ai.response.time_to_first_chunk" not in handle.attributes:
                handle.set("gen_ai.response.time_to_first_chunk", time.time() - handle.start_time)
        elif kind in _LLM_END:
            with self._lock:
                handle = self._llm.pop(event.span_id, None)
            if handle is not None:
                attrs: dict[str, Any] = {}
                try:
                    response = cv.get(event, "response")
                    try:  # apart from the rest: a message we cannot read still leaves usage and ids
                        output = cv.output_messages(response, chat=kind == "LLMChatEndEvent")
                        if output is not None:
                            attrs["gen_ai.output.messages"] = output
                    except Exception:
                        self._failed("event")
                    try:
                        attrs.update(cv.llm_response_attributes(response))
                    except Exception:
                        self._failed("event")
                    if handle.attributes.get("gen_ai.request.stream"):
                        # `raw` is then only the last chunk, whose token ids are not the call's;
                        # the LLM proxy's record supplies them (voltline.proxy.join_token_ids).
                        attrs.pop("prompt_token_ids", None)
                        attrs.pop("response_token_ids", None)
                finally:  # a response we cannot read still records the call (then it is counted)
                    handle.end(attributes=attrs)

    def _llm_start(self, event: Any, *, chat: bool) -> None:
        with self._lock:
            node = self._nodes.get(event.span_id) if event.span_id else None
        anchor = None if node is None else node if node.handle is not None else node.anchor
        if anchor is not None and anchor.handle.kind == "llm":
            return  # e.g. chat() implemented through complete(): one model call, one span
        model_dict = cv.get(event, "model_dict") or {}
        instance = node.instance if node is not None else None
        model = None
        try:
            model = cv.get(instance, "model") or model_dict.get("model_name")
        except Exception:  # e.g. a model_dict that is not a mapping: still recorded, model unknown
            self._failed("event")
        model = model if isinstance(model, str) and model != "unknown" else None
        provider = None
        try:
            provider = cv.provider_name(model_dict, instance)
        except Exception:  # the call is still recorded, without its provider
            self._failed("event")
        inputs = None
        try:
            if chat:
                inputs = cv.messages(cv.get(event, "messages"))
            else:
                inputs = [{"role": "user", "content": cv.get(event, "prompt")}]
        except Exception:  # the call is still recorded, without its input
            self._failed("event")
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "chat" if chat else "text_completion",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
            "gen_ai.input.messages": inputs,
            "gen_ai.request.stream": node.method.startswith(("stream", "astream")) if node else None,
            "gen_ai.request.temperature": cv.get(instance, "temperature"),
            "gen_ai.request.max_tokens": cv.get(instance, "max_tokens"),
        }
        try:
            tools = cv.get(event, "additional_kwargs", "tools")
            if tools:
                definitions = []
                for t in tools:
                    definition: dict[str, Any] = {}
                    try:
                        definition["name"] = cv.get(t, "metadata", "name")
                    except Exception:  # one odd tool costs its own name, not the other tools' entries
                        self._failed("event")
                    description = cv.get(t, "metadata", "description")
                    if description is not None:  # _short would record the text "None"
                        definition["description"] = _short(description)
                    definitions.append(definition)
                attrs["gen_ai.tool.definitions"] = definitions
        except Exception:  # the call is still recorded, without them
            self._failed("event")
        attrs = {
            k: v
            for k, v in attrs.items()
            if isinstance(v, str | bool | list) or (isinstance(v, int | float) and v is not None)
        }
        # No recorded LlamaIndex ancestor: hang under whatever Voltline span is current here.
        parent = anchor.handle if anchor is not None else voltline.current_span()
        handle = voltline.start_span(
            f"{attrs['gen_ai.operation.name']} {model or 'unknown'}", "llm", parent=parent, attributes=attrs
        )
        with self._lock:
            if node is not None and node.handle is None:
                node.handle = handle  # children (a nested model call) now hang under the llm span
            self._llm[event.span_id] = handle

    # -- uninstall ----------------------------------------------------------------------
    def close(self) -> None:
        """Forget open spans (recorded spans still running are not ended: their calls go on,
        uninstrumented). Called when the handlers are removed."""
        with self._lock:
            self._nodes.clear()
            self._llm.clear()
