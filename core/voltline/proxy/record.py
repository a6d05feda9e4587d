"""Every proxied call becomes an `llm` span in the store, attributed to its rollout and attempt.

Attribution comes from the base URL the agent was given (`/rollout/{rid}/attempt/{aid}/v1/...`)
or from the `X-Voltline-Rollout-Id` / `X-Voltline-Attempt-Id` headers. A call with neither is
served but not recorded (a span must belong to an attempt). Spans go through the process-wide
emitter, so the request path never waits on the store.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from .._ids import new_span_id

__all__ = ["Attribution", "CallRecord", "ChoiceRecord", "attribution", "record_call"]

log = logging.getLogger("voltline.proxy")

ROLLOUT_HEADER = "x-voltline-rollout-id"
ATTEMPT_HEADER = "x-voltline-attempt-id"
PARENT_HEADER = "x-voltline-parent-span-id"


@dataclass(frozen=True)
class Attribution:
    rollout_id: str
    attempt_id: str
    parent_id: str | None = None


def attribution(path_params: dict[str, str], headers: Any) -> Attribution | None:
    """The rollout and attempt a request belongs to: the URL path wins over headers."""
    rollout_id = path_params.get("rollout_id") or headers.get(ROLLOUT_HEADER)
    attempt_id = path_params.get("attempt_id") or headers.get(ATTEMPT_HEADER)
    if not rollout_id or not attempt_id:
        return None
    return Attribution(rollout_id, attempt_id, headers.get(PARENT_HEADER) or None)


@dataclass
class ChoiceRecord:
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] | None = field(default_factory=list)
    text: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str | None = None


@dataclass
class CallRecord:
    """What one call did, filled in as it runs (streaming included), turned into spans at the end."""

    operation: str  # "chat" or "text_completion"
    model: str
    input: Any
    response_id: str = ""
    prompt_token_ids: list[int] | None = None
    choices: dict[int, ChoiceRecord] = field(default_factory=dict)
    token_ids_source: str = "model"  # "model", "upstream" or "retokenized"
    backend: str = "local"
    resources: dict[str, int] = field(default_factory=dict)
    start_time: float = field(default_factory=time.time)
    error: str | None = None

    def choice(self, index: int) -> ChoiceRecord:
        return self.choices.setdefault(index, ChoiceRecord())


def _spans(rec: CallRecord, who: Attribution) -> list[dict[str, Any]]:
    end = time.time()
    choices = sorted(rec.choices.items()) or [(0, ChoiceRecord())]
    spans = []
    for index, choice in choices:
        output: dict[str, Any] = {"role": "assistant", "content": choice.text}
        if choice.tool_calls:
            output["tool_calls"] = choice.tool_calls
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": rec.operation,
            "gen_ai.request.model": rec.model,
            "gen_ai.response.model": rec.model,
            "gen_ai.response.id": rec.response_id,
            "gen_ai.input.messages": rec.input
            if rec.operation == "chat"
            else [{"role": "user", "content": rec.input}],
            "gen_ai.output.messages": [output],
            "gen_ai.response.finish_reasons": [choice.finish_reason],
            "gen_ai.usage.input_tokens": len(rec.prompt_token_ids or []),
            "gen_ai.usage.output_tokens": len(choice.token_ids),
            "prompt_token_ids": rec.prompt_token_ids,
            "response_token_ids": choice.token_ids,
            "response_logprobs": choice.logprobs,
            "voltline.source": "proxy",
            "voltline.proxy.backend": rec.backend,
            "voltline.token_ids_source": rec.token_ids_source,
        }
        if len(choices) > 1:
            attrs["gen_ai.response.choice_index"] = index
        if rec.error:
            attrs["exception.message"] = rec.error
        spans.append(
            {
                "span_id": new_span_id(),
                "rollout_id": who.rollout_id,
                "attempt_id": who.attempt_id,
                "parent_id": who.parent_id,
                "sequence": None,  # the store numbers it within the attempt
                "kind": "llm",
                "name": f"{rec.operation} {rec.model}",
                "start_time": rec.start_time,
                "end_time": end,
                "status": "error" if rec.error else "ok",
                "attributes": {k: v for k, v in attrs.items() if v is not None},
                "resources": dict(rec.resources),
            }
        )
    return spans


def record_call(store: Any, who: Attribution | None, rec: CallRecord) -> int:
    """Queue the call's spans for the store; never raises (a lost record must not fail the call)."""
    if store is None or who is None:
        return 0
    from .._emitter import get_emitter

    emitter = get_emitter()
    try:
        spans = _spans(rec, who)
        for span in spans:
            emitter.submit(store, span)
        return len(spans)
    except Exception:
        emitter.count("capture_errors")
        log.exception("voltline proxy: could not record the call %s", rec.response_id)
        return 0
