"""The adapter: a rollout's spans become a `Trajectory` of LLM turns with rewards assigned.

`build_trajectories(store, rollout_ids)` reads each rollout's spans (the latest attempt that
succeeded, else the latest attempt), joins the LLM proxy's token ids onto framework plugin
spans, keeps the `llm` turns of the selected agent or resource in sequence order, and gives
each turn a reward by the chosen rule. Rollouts it cannot turn into token-level data are
listed in `AdapterResult.skipped` with the reason; nothing is ever re-tokenized here, because
ids that differ from what the sampler produced silently corrupt RL updates. Algorithms that
need only text (prompt optimization) pass `require_token_ids=False` and get turns without ids.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ._errors import NotFound
from ._models import Attempt, Rollout, Span
from ._store import Store
from ._trajectory import Trajectory, Turn
from .proxy.join import join_token_ids

__all__ = [
    "REWARD_RULES",
    "AdapterResult",
    "RewardRule",
    "SkipRollout",
    "build_trajectories",
    "select_attempt",
    "trajectory_from_spans",
]

log = logging.getLogger("voltline.adapter")

RewardRule = Literal["final", "nearest", "discounted"]
REWARD_RULES: tuple[str, ...] = ("final", "nearest", "discounted")


@dataclass
class AdapterResult:
    """Trajectories built, in the order of the rollout ids given, and the rollouts left out."""

    trajectories: list[Trajectory] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # rollout id -> why it was left out


class SkipRollout(Exception):
    """Raised by `trajectory_from_spans` when a rollout cannot become a trajectory; the message says why."""


def build_trajectories(
    store: Store,
    rollout_ids: Iterable[str],
    *,
    agent_name: str | None = None,
    resource: str | None = None,
    reward_rule: RewardRule = "final",
    gamma: float = 1.0,
    strict_resource: bool = False,
    allow_retokenized: bool = False,
    require_token_ids: bool = True,
) -> AdapterResult:
    """Build one trajectory per rollout from its stored spans.

    `agent_name` keeps the turns of one agent (a span's own agent name, else its nearest
    ancestor's); `resource` keeps the turns that ran with that resource (`span.resources`).
    When no span of a rollout records resources, the rollout's recorded resources decide for
    all its turns, and when it recorded none either every turn is kept, unless
    `strict_resource`. `reward_rule` is "final" (the primary reward on every turn), "nearest"
    (each primary reward span on the nearest turn before it, or on the turn it names) or
    "discounted" (primary reward times `gamma ** turns_after`). Proxy ids the proxy itself
    re-tokenized (its upstream returned none) count as missing unless `allow_retokenized`.

    A rollout with an `llm` turn missing its ids is skipped, unless `require_token_ids=False`:
    then such turns get empty id lists (ids that would be skipped are never half-kept) and
    every turn carries its input and output messages, for algorithms that read text.
    """
    _check_rule(reward_rule, gamma)
    options: dict[str, Any] = {
        "agent_name": agent_name,
        "resource": resource,
        "reward_rule": reward_rule,
        "gamma": gamma,
        "strict_resource": strict_resource,
        "allow_retokenized": allow_retokenized,
        "require_token_ids": require_token_ids,
    }
    result = AdapterResult()
    seen: set[str] = set()
    for rollout_id in rollout_ids:
        if rollout_id in seen:
            continue  # one trajectory per rollout, even when an id is passed twice
        seen.add(rollout_id)
        try:
            rollout = store.get_rollout(rollout_id)
            attempt = select_attempt(store.get_attempts(rollout_id))
            if attempt is None:
                raise SkipRollout("no attempts")
            spans = store.query_spans(rollout_id=rollout_id, attempt_id=attempt.attempt_id)
            result.trajectories.append(trajectory_from_spans(rollout, attempt.attempt_id, spans, **options))
        except NotFound:
            result.skipped[rollout_id] = "rollout not found"
        except SkipRollout as exc:
            result.skipped[rollout_id] = str(exc)
        except (TypeError, ValueError, KeyError) as exc:
            # Spans are written by many hands (plugins, users, other versions); one malformed
            # rollout is reported, not allowed to stop a training step.
            log.warning("voltline: could not build a trajectory for rollout %s", rollout_id, exc_info=True)
            result.skipped[rollout_id] = f"malformed spans: {type(exc).__name__}: {exc}"
    if result.skipped:
        log.info("voltline: %d rollout(s) skipped by the adapter: %s", len(result.skipped), result.skipped)
    return result


def select_attempt(attempts: Sequence[Attempt]) -> Attempt | None:
    """The attempt whose spans count: the latest that succeeded, else the latest one."""
    succeeded = [a for a in attempts if a.status == "succeeded"]
    pool = succeeded or list(attempts)
    return max(pool, key=lambda a: a.number) if pool else None


def trajectory_from_spans(
    rollout: Rollout,
    attempt_id: str,
    spans: Iterable[Span],
    *,
    agent_name: str | None = None,
    resource: str | None = None,
    reward_rule: RewardRule = "final",
    gamma: float = 1.0,
    strict_resource: bool = False,
    allow_retokenized: bool = False,
    require_token_ids: bool = True,
) -> Trajectory:
    """The trajectory of one attempt's spans (see `build_trajectories`); raises `SkipRollout`."""
    _check_rule(reward_rule, gamma)
    # Ordered by when each span finished, then by sequence: sequence numbers are comparable only
    # within one source (the emitter numbers its spans, the store numbers the proxy's), while
    # the emitter assigns them when a span ends, so within a source both orders agree.
    spans = list(spans)
    spans = sorted(
        (s for s in _with_proxy_resources(join_token_ids(spans), spans) if s.attempt_id == attempt_id),
        key=lambda s: (s.end_time if s.end_time is not None else s.start_time, s.sequence or 0),
    )
    agents = _effective_agent_names(spans)
    llm = [s for s in spans if s.kind == "llm" and s.status != "error" and _is_first_choice(s)]
    if not llm:
        raise SkipRollout("no llm spans")
    use_rollout_resources = not any(s.resources for s in llm)
    selected = [
        s for s in llm
        if (agent_name is None or agents.get(s.span_id) == agent_name)
        and (resource is None or _uses(s, rollout, resource, use_rollout_resources, strict_resource))
    ]  # fmt: skip
    if not selected:
        wanted = [f"agent {agent_name!r}" if agent_name else "", f"resource {resource!r}" if resource else ""]
        raise SkipRollout(f"no llm turns for {' and '.join(w for w in wanted if w)}")
    missing = [s.span_id for s in selected if _token_problem(s, allow_retokenized)]
    if missing and require_token_ids:
        first = _token_problem(next(s for s in selected if s.span_id == missing[0]), allow_retokenized)
        raise SkipRollout(
            f"{len(missing)} of {len(selected)} llm turns lack exact token ids "
            f"(span {missing[0]}: {first}); serve the model through the Voltline proxy"
        )
    if require_token_ids:
        turns = [_turn(s, agents.get(s.span_id), rollout, use_rollout_resources) for s in selected]
    else:
        absent = set(missing)
        turns = [
            _turn(s, agents.get(s.span_id), rollout, use_rollout_resources, ids=s.span_id not in absent,
                  messages=True)
            for s in selected
        ]  # fmt: skip
    values = {s.span_id: v for s in spans if s.kind == "reward" and (v := _reward_value(s)) is not None}
    rewards = [s for s in spans if s.span_id in values]
    primary = [s for s in rewards if s.attributes.get("reward.primary", not s.attributes.get("reward.name"))]
    named: dict[str, float] = {}
    for s in rewards:
        if name := s.attributes.get("reward.name"):
            named[str(name)] = named.get(str(name), 0.0) + values[s.span_id]
    total = sum(values[s.span_id] for s in primary) if primary else None
    _assign(turns, selected, spans, primary, total, reward_rule, gamma)
    return Trajectory(
        rollout_id=rollout.rollout_id, attempt_id=attempt_id, input=rollout.input,
        metadata=dict(rollout.metadata), reward=total, rewards=named, turns=turns,
    )  # fmt: skip


def _check_rule(reward_rule: str, gamma: float) -> None:
    if reward_rule not in REWARD_RULES:
        raise ValueError(f"unknown reward_rule {reward_rule!r}; expected one of: {', '.join(REWARD_RULES)}")
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be between 0 and 1, got {gamma}")


def _with_proxy_resources(joined: list[Span], original: list[Span]) -> list[Span]:
    """Joined plugin spans also take the resource versions the proxy served the call with
    (`join_token_ids` copies only token ids): the proxy knows which adapter version actually
    answered, while a plugin span knows only what its rollout context was told."""
    by_id = {s.span_id: s for s in original}
    out = []
    for span in joined:
        source = by_id.get(span.attributes.get("voltline.joined_from"))  # type: ignore[arg-type]
        if source is not None and source.resources and source.span_id != span.span_id:
            span = span.model_copy(update={"resources": {**span.resources, **source.resources}})
        out.append(span)
    return out


def _is_first_choice(span: Span) -> bool:
    # With n > 1 the proxy records one span per choice; the agent continued from choice 0.
    return span.attributes.get("gen_ai.response.choice_index", 0) == 0


def _effective_agent_names(spans: list[Span]) -> dict[str, str | None]:
    """Each span's agent: its own name, else its nearest ancestor's (a proxy span sent with a
    parent-span header has no agent name of its own, but its parent does)."""
    by_id = {s.span_id: s for s in spans}
    out: dict[str, str | None] = {}
    for span in spans:
        current: Span | None = span
        seen: set[str] = set()
        while current is not None and current.agent_name is None and current.parent_id not in seen:
            seen.add(current.span_id)
            current = by_id.get(current.parent_id) if current.parent_id else None
        out[span.span_id] = current.agent_name if current is not None else None
    return out


def _uses(span: Span, rollout: Rollout, resource: str, use_rollout: bool, strict: bool) -> bool:
    if not use_rollout:
        return resource in span.resources
    if rollout.resources:  # spans say nothing; what the rollout ran with decides
        return resource in rollout.resources
    return not strict


def _is_int_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


def _token_problem(span: Span, allow_retokenized: bool) -> str | None:
    attrs = span.attributes
    for key in ("prompt_token_ids", "response_token_ids"):
        if key not in attrs or attrs[key] is None:
            return f"no {key}"
        if not _is_int_list(attrs[key]):
            return f"{key} is not a list of integers"
    if not attrs["prompt_token_ids"]:
        return "empty prompt_token_ids"
    if not allow_retokenized and attrs.get("voltline.token_ids_source") == "retokenized":
        return "ids were re-tokenized by the proxy, not produced by the model"
    return None


def _turn(
    span: Span, agent: str | None, rollout: Rollout, use_rollout: bool, *, ids: bool = True,
    messages: bool = False,
) -> Turn:  # fmt: skip
    attrs = span.attributes
    prompt = attrs["prompt_token_ids"] if ids else []
    response = attrs["response_token_ids"] if ids else []
    logprobs = attrs.get("response_logprobs") if ids else None
    # Logprobs that do not line up one-to-one with the response are unusable as old-policy values.
    if not (isinstance(logprobs, list) and len(logprobs) == len(response)
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in logprobs)):  # fmt: skip
        logprobs = None
    return Turn(
        span_id=span.span_id, sequence=span.sequence if span.sequence is not None else 0, agent_name=agent,
        model=attrs.get("gen_ai.response.model") or attrs.get("gen_ai.request.model"),
        prompt_token_ids=list(prompt), response_token_ids=list(response),
        response_logprobs=[float(v) for v in logprobs] if logprobs is not None else None,
        resources=dict(span.resources) if not use_rollout else dict(rollout.resources),
        input_messages=_messages(attrs.get("gen_ai.input.messages")) if messages else None,
        output_messages=_messages(attrs.get("gen_ai.output.messages")) if messages else None,
    )  # fmt: skip


def _messages(value: Any) -> list[Any] | None:
    # Spans come from many writers: a single message or a bare string is still the call's text.
    if value is None or isinstance(value, list):
        return value
    return [value]


def _reward_value(span: Span) -> float | None:
    value = span.attributes.get("reward.value")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _assign(
    turns: list[Turn],
    selected: list[Span],
    spans: list[Span],
    primary: list[Span],
    total: float | None,
    rule: str,
    gamma: float,
) -> None:
    n = len(turns)
    if rule == "final":
        for turn in turns:
            turn.reward = total or 0.0
    elif rule == "discounted":
        for i, turn in enumerate(turns):
            turn.reward = (total or 0.0) * gamma ** (n - 1 - i)
    else:  # nearest
        position = {s.span_id: i for i, s in enumerate(spans)}
        turn_at = [position[s.span_id] for s in selected]
        index_of_turn = {s.span_id: i for i, s in enumerate(selected)}
        for reward in primary:
            target = reward.attributes.get("reward.span_id")
            target = target if isinstance(target, str) else None
            if target in index_of_turn:  # a reward aimed at one turn goes to that turn
                i = index_of_turn[target]
            else:
                # Aimed at another span (a tool call, an agent step) or at nothing: the last turn
                # at or before that span, or before the reward span itself.
                anchor = position.get(target, position[reward.span_id])
                before = [i for i, at in enumerate(turn_at) if at <= anchor]
                # A reward that precedes every turn still belongs to this trajectory: first turn.
                i = before[-1] if before else 0
            turns[i].reward += _reward_value(reward) or 0.0
