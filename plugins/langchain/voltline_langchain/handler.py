"""`VoltlineCallbackHandler`: LangChain callbacks in, Voltline spans out.

Every LangChain run (chain, LangGraph node, chat model, tool, retriever) becomes one span.
Parents come from LangChain's own `parent_run_id`, not from whatever context the callback
happens to run in, so nesting survives `ainvoke`, streaming and tools run on thread pools
(the LangGraph async parent-link problem other tracers hit). A run LangChain marks hidden
(`langsmith:hidden`) gets no span; its children attach to the nearest visible ancestor.

Ended spans are handed to Voltline's emitter in batches: when the agent run (the top-level
LangChain run) ends, when 64 are waiting, when the oldest has waited 0.2 s by the time another
callback arrives, and on every `voltline.flush()` (so leaving a rollout includes them). Ending
them one after another, while that code is warm, rather than each alone between two LangGraph
steps, takes about two points off the capture overhead (docs/benchmarks.md).

While a tool or retriever runs, its span is also Voltline's current span, so `voltline.emit_*`
calls and other plugins' spans inside a tool nest under it. Chains and graph nodes are not made
current: async LangGraph starts a node in the caller's task and ends it in another, so a
current span set at the start would leak into the caller (and be left there) after the run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult

import voltline
from voltline import _context
from voltline._emitter import get_emitter
from voltline._ids import new_span_id

from . import _convert

__all__ = ["VoltlineCallbackHandler"]

log = logging.getLogger("voltline.langchain")

HIDDEN_TAG = "langsmith:hidden"
CREATE_AGENT = "langchain_create_agent"  # metadata `ls_integration` of langchain.agents.create_agent
PENDING_MAX = 64  # ended spans held back at most, and for at most PENDING_SECONDS (see the module notes)
PENDING_SECONDS = 0.2


class _Run(voltline.SpanHandle):
    """A LangChain run's own span, and what the handler tracks about the run besides.

    One object per run (the span handle itself) rather than a record holding a handle: this
    is built for every LangChain run of every agent run."""

    __slots__ = ("lc_agent", "previous")
    lc_agent: str | None  # the LangChain agent (lc_agent_name) this run belongs to
    previous: Any  # Voltline's current span before this run made itself current (tools, retrievers)


class _Hidden:
    """A hidden run: it has no span of its own; its children attach to `run`."""

    __slots__ = ("run",)

    def __init__(self, run: _Run) -> None:
        self.run = run


_OUTSIDE: Any = object()  # a run outside any rollout (and so are its children): nothing recorded


class VoltlineCallbackHandler(BaseCallbackHandler):
    """Records LangChain runs as Voltline spans in the current rollout.

    Explicit use, without patching anything globally::

        handler = VoltlineCallbackHandler()
        with voltline.rollout(task):
            agent.invoke(inputs, config={"callbacks": [handler]})

    `voltline.instrument()` adds one to every LangChain run instead. Runs started outside a
    `voltline.rollout(...)` are not recorded (counted once per run as `outside_rollout`).
    """

    # Called in the run's own thread and context, in order: a sync handler would otherwise be
    # moved to an executor thread under async runs, losing ordering and contextvars.
    run_inline = True
    raise_error = False
    # Plain attributes shadowing BaseCallbackHandler's properties: LangChain reads one per event.
    ignore_llm = ignore_chain = ignore_agent = ignore_retriever = ignore_chat_model = False
    ignore_retry = ignore_custom_event = False
    # Every callback catches its own failures inline (log the first of a kind, count all) rather
    # than through a wrapping decorator: one call frame less per callback on the agent's path.

    def __init__(self, emitter: Any = None) -> None:
        super().__init__()
        self._emitter = emitter
        self._runs: dict[int, _Run | _Hidden | Any] = {}  # by run_id.int; _OUTSIDE too
        self._reported: set[tuple[str, type]] = set()
        self._warned_outside = False
        # Ended spans not yet handed to the emitter: (handle, error, attributes, status, end time).
        # A deque: threads append and pop at once without losing an entry.
        self._pending: deque[tuple[Any, ...]] = deque()
        self._pending_since = 0.0
        _track(self)

    # bookkeeping -------------------------------------------------------------------------
    def _failed(self, where: str, exc: Exception) -> None:
        # An emitter without counters must not turn a capture failure into a raise.
        with contextlib.suppress(Exception):
            (self._emitter or get_emitter()).count("capture_errors")
        key = (where, type(exc))
        if key in self._reported:
            log.debug("voltline: langchain %s failed again", where, exc_info=True)
            return
        self._reported.add(key)
        log.error(
            "voltline: langchain capture failed in %s (%s: %s); the agent goes on, further failures "
            "of this kind are only counted in voltline.emitter_stats()['capture_errors']",
            where, type(exc).__name__, exc, exc_info=True,
        )  # fmt: skip

    def _model_request(
        self,
        where: str,
        serialized: Mapping[str, Any] | None,
        metadata: Mapping[str, Any] | None,
        kwargs: Mapping[str, Any],
        operation: str,
    ) -> dict[str, Any]:
        """Request attributes: LangChain's `ls_*` metadata first (every chat model sets it), then
        the invocation parameters, then the serialized constructor arguments."""
        metadata = metadata or {}
        params = kwargs.get("invocation_params") or {}
        get, pget = metadata.get, params.get
        model = get("ls_model_name") or pget("model") or pget("model_name")
        if not model:
            ser_kwargs = (serialized or {}).get("kwargs") or {}
            model = ser_kwargs.get("model") or ser_kwargs.get("model_name")
        # Built in the recorded key order, skipping absent values (no intermediate dicts: hot path).
        attrs: dict[str, Any] = {"gen_ai.operation.name": operation}
        value = get("ls_provider") or pget("_type")
        if value is not None:
            attrs["gen_ai.provider.name"] = value
        if model is not None:
            attrs["gen_ai.request.model"] = model
        value = get("ls_temperature", pget("temperature"))
        if value is not None:
            attrs["gen_ai.request.temperature"] = value
        value = get("ls_max_tokens", pget("max_tokens"))
        if value is not None:
            attrs["gen_ai.request.max_tokens"] = value
        value = get("ls_stop") or pget("stop")
        if value is not None:
            attrs["gen_ai.request.stop_sequences"] = value
        value = pget("tools")
        if value:
            try:
                attrs["gen_ai.tool.definitions"] = _convert.tool_definitions(value)
            except Exception as exc:  # the span is still recorded, without them
                self._failed(where, exc)
        return attrs

    def _start(
        self,
        run_id: UUID,
        parent_run_id: UUID | None,
        name: str,
        kind: str,
        attributes: dict[str, Any],
        tags: Sequence[str] | None,
        metadata: Mapping[str, Any] | None,
        make_current: bool = False,
    ) -> _Run | None:
        """Open the run's span; None for a run that gets none (hidden, or outside a rollout)."""
        now = time.time()
        if self._pending and now - self._pending_since >= PENDING_SECONDS:
            self.submit_pending()  # a long step is under way: what ended before it goes now
        runs = self._runs
        # Runs are keyed by the UUID's int: hashing a UUID is a Python-level call, its int is not.
        parent = runs.get(parent_run_id.int) if parent_run_id is not None else None
        agent = metadata.get("lc_agent_name") if metadata else None
        if parent is not None:
            if parent is _OUTSIDE:  # the whole tree is outside a rollout
                runs[run_id.int] = _OUTSIDE
                return None
            if type(parent) is _Hidden:
                parent = parent.run
            if tags and kind == "chain" and HIDDEN_TAG in tags:
                runs[run_id.int] = _Hidden(parent)
                return None
            parent_agent = parent.lc_agent
            # create_agent stamps its graph's runs with lc_agent_name (when named): the first run
            # carrying a new agent name is the agent's own invocation.
            starts_agent = kind == "chain" and agent is not None and agent != parent_agent
            parent_id, inherited_agent = parent.span_id, parent.agent_name
            rollout = parent.rollout or _context._rollout.get()
        else:
            current = _context._current.get()
            rollout = (current.rollout if current is not None else None) or _context._rollout.get()
            if rollout is None:
                self._outside(name)
                runs[run_id.int] = _OUTSIDE
                return None
            parent_agent = None
            # At the top, an unnamed create_agent graph is an agent too (ls_integration says so).
            starts_agent = kind == "chain" and (
                agent is not None or (metadata is not None and metadata.get("ls_integration") == CREATE_AGENT)
            )
            if current is None:
                parent_id = inherited_agent = None
            else:
                parent_id, inherited_agent = current.span_id, current.agent_name
        if starts_agent:
            kind = "agent"
            agent = agent or name
            attributes = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent, **attributes}
            name = f"invoke_agent {agent}"
            inherited_agent = agent
        run = _Run(new_span_id(), name, kind, attributes, parent_id, inherited_agent, now, rollout)
        run.lc_agent = agent or parent_agent
        if make_current:
            run.previous = _context._current.get()
            _context._current.set(run)
        runs[run_id.int] = run
        return run

    def _end(
        self,
        run_id: UUID,
        error: BaseException | None = None,
        attributes: Mapping[str, Any] | None = None,
        status: str = "ok",
    ) -> None:
        runs = self._runs
        run = runs.pop(run_id.int, None)
        idle = not runs
        if idle:
            # Nothing in flight: the converted-message cache would only keep this agent run's
            # messages alive into the next, where they age into the old GC generations and make
            # full collections more frequent. Each run converts its own messages afresh.
            _convert.forget()
        if type(run) is not _Run:  # hidden, outside a rollout, or never started here
            if idle and self._pending:
                self.submit_pending()
            return
        # Only undo what this run did in this context; an end arriving elsewhere leaves it be.
        if _context._current.get() is run:
            _context._current.set(run.previous)
        now = time.time()
        pending = self._pending
        if not pending:
            self._pending_since = now
        pending.append((run, error, attributes, status, now))
        if idle or len(pending) >= PENDING_MAX or now - self._pending_since >= PENDING_SECONDS:
            self.submit_pending()

    def submit_pending(self) -> None:
        """Hand every ended span held back so far to the emitter, in the order they ended.

        Called when the agent run ends, on every `voltline.flush()`, and at exit. Never raises."""
        pending, taken = self._pending, []
        while pending:
            try:
                taken.append(pending.popleft())
            except IndexError:  # another thread took the last one
                break
        if taken:
            _context.end_spans(taken)

    def _outside(self, name: str) -> None:
        (self._emitter or get_emitter()).count("outside_rollout")
        if not self._warned_outside:
            self._warned_outside = True
            log.warning(
                "voltline: LangChain run %r started outside any rollout and was not recorded; wrap the "
                "agent run in `with voltline.rollout(task):` (counted in emitter_stats()['outside_rollout'])",
                name,
            )

    # chains and agents ---------------------------------------------------------------------
    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            name = kwargs.get("name") or _serialized_name(serialized) or "chain"
            attributes: dict[str, Any] = {}
            # Runs inside a node (a subagent called from a tool, too) inherit the node's metadata;
            # only the node's own run is named after it.
            if metadata and metadata.get("langgraph_node") == name:
                attributes["langgraph.node"] = name
                attributes["langgraph.step"] = metadata.get("langgraph_step")
            run = self._start(run_id, parent_run_id, name, "chain", attributes, tags, metadata)
            # Inputs only on top-level runs: a LangGraph node's input is the whole growing state,
            # and the LLM spans below already hold every message.
            if run is not None and (parent_run_id is None or run.kind == "agent"):
                attributes = run.attributes
                attributes["input"] = _convert.plain(inputs)
        except Exception as exc:  # never into the agent
            self._failed("on_chain_start", exc)

    def on_chain_end(
        self, outputs: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        try:
            run = self._runs.get(run_id.int)
            extra = None
            if type(run) is _Run and "input" in run.attributes:
                try:
                    extra = {"output": _convert.plain(outputs)}
                except Exception as exc:  # the span is still recorded, without its output
                    self._failed("on_chain_end", exc)
            self._end(run_id, None, extra)
        except Exception as exc:  # never into the agent
            self._failed("on_chain_end", exc)

    def on_chain_error(
        self, error: BaseException, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        try:
            self._end(run_id, error)
        except Exception as exc:  # never into the agent
            self._failed("on_chain_error", exc)

    # models --------------------------------------------------------------------------------
    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            attrs = self._model_request("on_chat_model_start", serialized, metadata, kwargs, "chat")
            try:
                attrs["gen_ai.input.messages"] = _convert.messages(messages[0] if messages else [])
            except Exception as exc:  # the span is still recorded, without its input
                self._failed("on_chat_model_start", exc)
            self._start(run_id, parent_run_id, _model_span_name(attrs), "llm", attrs, tags, metadata)
        except Exception as exc:  # never into the agent
            self._failed("on_chat_model_start", exc)

    def on_llm_start(
        self,
        serialized: dict[str, Any] | None,
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            attrs = self._model_request("on_llm_start", serialized, metadata, kwargs, "text_completion")
            attrs["gen_ai.input.messages"] = [{"role": "user", "content": p} for p in prompts]
            self._start(run_id, parent_run_id, _model_span_name(attrs), "llm", attrs, tags, metadata)
        except Exception as exc:  # never into the agent
            self._failed("on_llm_start", exc)

    def on_llm_new_token(self, token: str, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            run = self._runs.get(run_id.int)
            if type(run) is _Run and "gen_ai.response.time_to_first_chunk" not in run.attributes:
                attrs = run.attributes
                attrs["gen_ai.request.stream"] = True
                attrs["gen_ai.response.time_to_first_chunk"] = time.time() - run.start_time
        except Exception as exc:  # never into the agent
            self._failed("on_llm_new_token", exc)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            run = self._runs.get(run_id.int)
            if type(run) is not _Run:
                self._end(run_id)
                return
            try:
                attrs = _convert.llm_result_attributes(response)
            except Exception as exc:  # the span is still recorded, without the response
                self._failed("on_llm_end", exc)
                attrs = {}
            if "gen_ai.request.model" not in run.attributes and "gen_ai.response.model" in attrs:
                run.name = f"{run.attributes['gen_ai.operation.name']} {attrs['gen_ai.response.model']}"
            self._end(run_id, None, attrs)
        except Exception as exc:  # never into the agent
            self._failed("on_llm_end", exc)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            self._end(run_id, error, {"error.type": type(error).__qualname__})
        except Exception as exc:  # never into the agent
            self._failed("on_llm_error", exc)

    # tools ---------------------------------------------------------------------------------
    def on_tool_start(
        self,
        serialized: dict[str, Any] | None,
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            name = (serialized or {}).get("name") or kwargs.get("name") or "tool"
            attrs: dict[str, Any] = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name}
            arguments = inputs if inputs is not None else input_str
            try:
                attrs["gen_ai.tool.call.arguments"] = _convert.plain(arguments)
            except Exception as exc:  # the span is still recorded, without its arguments
                self._failed("on_tool_start", exc)
            if kwargs.get("tool_call_id"):
                attrs["gen_ai.tool.call.id"] = kwargs["tool_call_id"]
            description = (serialized or {}).get("description")
            if description:
                attrs["gen_ai.tool.description"] = description
            # A tool's start, body and end run in one frame (BaseTool.run/arun), so making its span
            # current is safe: restored in the same context it was set in.
            self._start(
                run_id,
                parent_run_id,
                f"execute_tool {name}",
                "tool",
                attrs,
                tags,
                metadata,
                make_current=True,
            )
        except Exception as exc:  # never into the agent
            self._failed("on_tool_start", exc)

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            try:
                converted: tuple[Any, bool] | None = _convert.tool_result(output)
            except Exception as exc:  # the span is still recorded, without the result
                self._failed("on_tool_end", exc)
                converted = None
            result, is_error = converted if converted is not None else (None, False)
            attrs: dict[str, Any] = {} if converted is None else {"gen_ai.tool.call.result": result}
            if is_error:
                attrs["error.message"] = result if isinstance(result, str) else repr(result)
            self._end(run_id, None, attrs, "error" if is_error else "ok")
        except Exception as exc:  # never into the agent
            self._failed("on_tool_end", exc)

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            self._end(run_id, error, {"error.type": type(error).__qualname__})
        except Exception as exc:  # never into the agent
            self._failed("on_tool_error", exc)

    # retrievers ----------------------------------------------------------------------------
    def on_retriever_start(
        self,
        serialized: dict[str, Any] | None,
        query: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            name = kwargs.get("name") or _serialized_name(serialized) or "retriever"
            attrs = {
                "gen_ai.operation.name": "retrieval",
                "gen_ai.data_source.id": name,
                "retrieval.query": query,
            }
            self._start(
                run_id,
                parent_run_id,
                f"retrieval {name}",
                "retriever",
                attrs,
                tags,
                metadata,
                make_current=True,
            )
        except Exception as exc:  # never into the agent
            self._failed("on_retriever_start", exc)

    def on_retriever_end(self, documents: Sequence[Any], *, run_id: UUID, **kwargs: Any) -> None:
        try:
            attrs: dict[str, Any] | None = None
            try:
                attrs = {"retrieval.documents": [
                    {"id": getattr(d, "id", None), "content": getattr(d, "page_content", None),
                     "metadata": _convert.plain(getattr(d, "metadata", {}))}
                    for d in documents
                ]}  # fmt: skip
            except Exception as exc:  # the span is still recorded, without the documents
                self._failed("on_retriever_end", exc)
            self._end(run_id, None, attrs)
        except Exception as exc:  # never into the agent
            self._failed("on_retriever_end", exc)

    def on_retriever_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            self._end(run_id, error)
        except Exception as exc:  # never into the agent
            self._failed("on_retriever_error", exc)


_handlers: weakref.WeakSet[VoltlineCallbackHandler] = weakref.WeakSet()
_handlers_lock = threading.Lock()
_hooked = False


def _track(handler: VoltlineCallbackHandler) -> None:
    """Make every flush (and exit) include the spans `handler` holds back."""
    global _hooked
    with _handlers_lock:
        if not _hooked:
            get_emitter().add_flush_hook(_submit_all_pending)
            _hooked = True
        _handlers.add(handler)


def _submit_all_pending() -> None:
    for handler in list(_handlers):
        handler.submit_pending()


def _forget_pending() -> None:
    # A forked child must not submit its parent's spans a second time.
    for handler in list(_handlers):
        handler._pending.clear()


os.register_at_fork(after_in_child=_forget_pending)


def _model_span_name(attrs: Mapping[str, Any]) -> str:
    return f"{attrs['gen_ai.operation.name']} {attrs.get('gen_ai.request.model') or 'unknown'}"


def _serialized_name(serialized: Mapping[str, Any] | None) -> str | None:
    if not serialized:
        return None
    if serialized.get("name"):
        return str(serialized["name"])
    ids = serialized.get("id")
    return str(ids[-1]) if isinstance(ids, list) and ids else None
