"""The adapter: spans in a store become trajectories of token-level LLM turns with rewards.

Rollouts are recorded with the real emit API (and, for proxy records, with the exact span
shape the LLM proxy writes), then read back with `build_trajectories`; expected values are
written out by hand.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import voltline
from voltline import Store
from voltline._models import Attempt
from voltline._trajectory import MergedSequence, Trajectory, Turn, merge_turns
from voltline.adapter import AdapterResult, build_trajectories, select_attempt


@pytest.fixture
def local_store(tmp_path: Path) -> Iterator[Store]:
    s = voltline.connect(f"sqlite:///{tmp_path}/adapter.db")
    try:
        yield s
    finally:
        s.close()


def llm(prompt: list[int], response: list[int], logprobs: list[float] | None = None, **kw: Any) -> str:
    span_id = voltline.emit_llm(
        model="tiny", prompt_token_ids=prompt, response_token_ids=response, response_logprobs=logprobs, **kw
    )
    assert span_id
    return span_id


def only(result: AdapterResult) -> Trajectory:
    assert result.skipped == {}
    (trajectory,) = result.trajectories
    return trajectory


def three_turn_rollout(
    store: Store, *, rewards: list[tuple[str, Any]] | None = None
) -> tuple[str, list[str]]:
    """A ReAct-style rollout: think, call a tool, read its result, answer. Each prompt re-sends
    the history, with the tool's result tokens (90s) appended between the turns."""
    with voltline.rollout({"q": "2+3"}, store=store, metadata={"group": "g1"}) as r:
        with voltline.span("solver", kind="agent"):
            a = llm([1, 2, 3], [10, 11], [-0.1, -0.2])
            voltline.emit_tool("calc", arguments={"x": "2+3"}, result="5")
            b = llm([1, 2, 3, 10, 11, 90, 91], [12], [-0.3])
            voltline.emit_tool("calc", arguments={"x": "5"}, result="5")
            c = llm([1, 2, 3, 10, 11, 90, 91, 12, 92], [13, 14, 2], [-0.4, -0.5, -0.6])
        for kind, value in rewards if rewards is not None else [("primary", 1.0)]:
            if kind == "primary":
                voltline.emit_reward(value)
            else:
                voltline.emit_reward(value, name=kind)
    return r.rollout_id, [a, b, c]


# trajectories from the emit API -----------------------------------------------------------------
def test_multi_turn_rollout_becomes_ordered_turns(local_store: Store) -> None:
    rid, (a, b, c) = three_turn_rollout(local_store, rewards=[("primary", 1.0), ("brevity", 0.25)])
    t = only(build_trajectories(local_store, [rid]))
    attempt = local_store.get_attempts(rid)[0]
    assert (t.rollout_id, t.attempt_id, t.input, t.metadata) == (
        rid,
        attempt.attempt_id,
        {"q": "2+3"},
        {"group": "g1"},
    )
    assert t.reward == 1.0 and t.rewards == {"brevity": 0.25}
    assert [turn.span_id for turn in t.turns] == [a, b, c]
    assert [turn.sequence for turn in t.turns] == sorted(turn.sequence for turn in t.turns)
    assert [turn.prompt_token_ids for turn in t.turns] == [
        [1, 2, 3],
        [1, 2, 3, 10, 11, 90, 91],
        [1, 2, 3, 10, 11, 90, 91, 12, 92],
    ]
    # Tool results (90, 91, 92) live only in later prompts, never in what the model is trained to say.
    assert [turn.response_token_ids for turn in t.turns] == [[10, 11], [12], [13, 14, 2]]
    assert [turn.response_logprobs for turn in t.turns] == [[-0.1, -0.2], [-0.3], [-0.4, -0.5, -0.6]]
    assert {(turn.agent_name, turn.model, turn.reward) for turn in t.turns} == {("solver", "tiny", 1.0)}
    assert all(turn.resources == {} for turn in t.turns)


def test_merge_turns_masks_prompt_and_tool_tokens() -> None:
    def turn(i: int, prompt: list[int], response: list[int], lp: list[float] | None) -> Turn:
        return Turn(span_id=f"s{i}", sequence=i, prompt_token_ids=prompt, response_token_ids=response,
                    response_logprobs=lp, reward=float(i))  # fmt: skip

    turns = [
        turn(0, [1, 2, 3], [10, 11], [-0.1, -0.2]),
        turn(1, [1, 2, 3, 10, 11, 90, 91], [12], None),  # extends: only 90, 91 are added, masked
        turn(2, [1, 2, 3, 10, 11, 90, 91, 12, 92], [13], [-0.4]),
        turn(3, [5, 6], [14, 15], [-0.5]),  # history rewritten: a new sequence; bad logprobs dropped
    ]
    first, second = merge_turns(turns)
    assert first == MergedSequence(
        token_ids=[1, 2, 3, 10, 11, 90, 91, 12, 92, 13],
        loss_mask=[0, 0, 0, 1, 1, 0, 0, 1, 0, 1],
        logprobs=[None, None, None, -0.1, -0.2, None, None, None, None, -0.4],
        rewards=[0.0, 1.0, 2.0],
        span_ids=["s0", "s1", "s2"],
    )
    assert second == MergedSequence(
        token_ids=[5, 6, 14, 15], loss_mask=[0, 0, 1, 1], logprobs=[None] * 4, rewards=[3.0], span_ids=["s3"]
    )
    assert merge_turns([]) == []


def test_merge_turns_on_a_built_trajectory(local_store: Store) -> None:
    rid, _ = three_turn_rollout(local_store)
    (merged,) = merge_turns(only(build_trajectories(local_store, [rid])).turns)
    assert merged.token_ids == [1, 2, 3, 10, 11, 90, 91, 12, 92, 13, 14, 2]
    assert merged.loss_mask == [0, 0, 0, 1, 1, 0, 0, 1, 0, 1, 1, 1]
    # Exactly the response tokens are trained on, with the sampler's logprobs.
    assert [lp for lp, m in zip(merged.logprobs, merged.loss_mask, strict=True) if m] == [
        -0.1, -0.2, -0.3, -0.4, -0.5, -0.6,
    ]  # fmt: skip


# reward rules ----------------------------------------------------------------------------------
def test_reward_rule_final_and_discounted(local_store: Store) -> None:
    rid, _ = three_turn_rollout(local_store, rewards=[("primary", 2.0)])
    final = only(build_trajectories(local_store, [rid], reward_rule="final"))
    assert [turn.reward for turn in final.turns] == [2.0, 2.0, 2.0] and final.reward == 2.0
    discounted = only(build_trajectories(local_store, [rid], reward_rule="discounted", gamma=0.5))
    # 2 * 0.5**2, 2 * 0.5**1, 2 * 0.5**0: the last turn gets the full reward.
    assert [turn.reward for turn in discounted.turns] == [0.5, 1.0, 2.0] and discounted.reward == 2.0
    undiscounted = only(build_trajectories(local_store, [rid], reward_rule="discounted"))
    assert [turn.reward for turn in undiscounted.turns] == [2.0, 2.0, 2.0]


def test_reward_rule_nearest(local_store: Store) -> None:
    with voltline.rollout("task", store=local_store) as r:
        voltline.emit_reward(0.05)  # before any turn: kept, on the first turn
        a = llm([1], [2])
        voltline.emit_reward(0.25)  # right after turn a
        b = llm([1, 2, 3], [4])
        tool = voltline.emit_tool("run", result="ok")
        c = llm([1, 2, 3, 4, 5], [6])
        voltline.emit_reward(0.5, span=tool)  # aimed at the tool call: the turn before the tool, b
        voltline.emit_reward(0.125, span=a)  # aimed at turn a itself
        voltline.emit_reward(9.0, name="style")  # a named, non-primary reward is not spread on turns
        voltline.emit_reward(1.0)  # after the last turn: c
    t = only(build_trajectories(local_store, [r.rollout_id], reward_rule="nearest"))
    assert [turn.span_id for turn in t.turns] == [a, b, c]
    assert [turn.reward for turn in t.turns] == [0.05 + 0.25 + 0.125, 0.5, 1.0]
    assert t.reward == 0.05 + 0.25 + 0.5 + 0.125 + 1.0 and t.rewards == {"style": 9.0}
    # The other rules see the same rewards summed.
    final = only(build_trajectories(local_store, [r.rollout_id]))
    assert [turn.reward for turn in final.turns] == [t.reward] * 3


def test_no_reward_gives_none_and_zero_turn_rewards(local_store: Store) -> None:
    rid, _ = three_turn_rollout(local_store, rewards=[])
    for rule in ("final", "nearest", "discounted"):
        t = only(build_trajectories(local_store, [rid], reward_rule=rule))  # type: ignore[arg-type]
        assert t.reward is None and t.rewards == {} and [turn.reward for turn in t.turns] == [0.0] * 3


def test_named_primary_reward(local_store: Store) -> None:
    rid, _ = three_turn_rollout(local_store, rewards=[])
    with voltline.rollout(
        store=local_store, rollout_id=rid, attempt_id=local_store.get_attempts(rid)[0].attempt_id
    ):
        voltline.emit_reward(0.75, name="accuracy", primary=True)
    t = only(build_trajectories(local_store, [rid]))
    assert t.reward == 0.75 and t.rewards == {"accuracy": 0.75}


def test_bad_rule_or_gamma_is_an_error(local_store: Store) -> None:
    with pytest.raises(ValueError, match=r"unknown reward_rule 'last'.*final, nearest, discounted"):
        build_trajectories(local_store, [], reward_rule="last")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="gamma must be between 0 and 1"):
        build_trajectories(local_store, [], reward_rule="discounted", gamma=1.5)


# selecting turns: agent name, resource --------------------------------------------------------
def two_agent_rollout(store: Store) -> tuple[str, dict[str, list[str]]]:
    with voltline.rollout("build a parser", store=store) as r:
        with voltline.span("planner", kind="agent"):
            p1 = llm([1], [2])
        with voltline.span("coder", kind="agent"):
            with voltline.span("write", kind="chain"):  # agent name is inherited by nested spans
                c1 = llm([3], [4, 5])
            voltline.emit_tool("run_tests", result="2 failed")
            c2 = llm([3, 4, 5, 99], [6])
        with voltline.span("planner", kind="agent"):
            p2 = llm([1, 2, 7], [8])
        voltline.emit_reward(1.0)
    return r.rollout_id, {"planner": [p1, p2], "coder": [c1, c2]}


def test_agent_name_filter(local_store: Store) -> None:
    rid, ids = two_agent_rollout(local_store)
    everyone = only(build_trajectories(local_store, [rid]))
    assert [turn.agent_name for turn in everyone.turns] == ["planner", "coder", "coder", "planner"]
    coder = only(
        build_trajectories(local_store, [rid], agent_name="coder", reward_rule="discounted", gamma=0.5)
    )
    assert [turn.span_id for turn in coder.turns] == ids["coder"]
    assert [turn.response_token_ids for turn in coder.turns] == [[4, 5], [6]]
    assert [turn.reward for turn in coder.turns] == [0.5, 1.0]  # discounted over the coder's own turns
    planner = only(build_trajectories(local_store, [rid], agent_name="planner"))
    assert [turn.span_id for turn in planner.turns] == ids["planner"]
    result = build_trajectories(local_store, [rid], agent_name="reviewer")
    assert result.trajectories == [] and result.skipped == {rid: "no llm turns for agent 'reviewer'"}


def add_spans(store: Store, rollout_id: str, attempt_id: str, specs: list[dict[str, Any]]) -> list[str]:
    """Spans written the way the proxy and plugins write them: each spec is a Span's fields."""
    t0 = time.time()
    spans = []
    for i, spec in enumerate(specs):
        spec = {"name": "chat tiny", "kind": "llm", **spec}
        spans.append({"span_id": f"{rollout_id[:8]}-{i}", "rollout_id": rollout_id, "attempt_id": attempt_id,
                      "start_time": t0 + i, "end_time": t0 + i + 0.5, **spec})  # fmt: skip
    store.add_spans(spans)
    return [s["span_id"] for s in spans]


def ids(prompt: list[int], response: list[int]) -> dict[str, Any]:
    return {"prompt_token_ids": prompt, "response_token_ids": response}


def test_resource_filter(local_store: Store) -> None:
    claim = local_store.start_rollout("two resources")
    rid, aid = claim.rollout.rollout_id, claim.attempt.attempt_id
    a, b, _, _ = add_spans(local_store, rid, aid, [
        {"attributes": ids([1], [2]), "resources": {"policy": 3}},
        {"attributes": ids([5], [6]), "resources": {"planner-prompt": 2}},
        {"attributes": ids([1, 2, 3], [4]), "resources": {}},  # ran with neither
        {"kind": "reward", "name": "reward", "attributes": {"reward.value": 1.0, "reward.primary": True}},
    ])  # fmt: skip
    local_store.finish_attempt(aid, "succeeded")
    policy = only(build_trajectories(local_store, [rid], resource="policy"))
    assert [(t.span_id, t.resources, t.reward) for t in policy.turns] == [(a, {"policy": 3}, 1.0)]
    prompt = only(build_trajectories(local_store, [rid], resource="planner-prompt"))
    assert [t.span_id for t in prompt.turns] == [b]
    assert build_trajectories(local_store, [rid], resource="critic").skipped == {
        rid: "no llm turns for resource 'critic'"
    }
    both = build_trajectories(local_store, [rid], resource="policy", agent_name="x")
    assert both.skipped == {rid: "no llm turns for agent 'x' and resource 'policy'"}


def test_resource_filter_when_spans_record_no_resources(local_store: Store) -> None:
    plain, _ = three_turn_rollout(local_store)  # no resources anywhere
    recorded, _ = three_turn_rollout(local_store)
    for _ in range(4):
        local_store.put_resource("policy", "json", {})
    local_store.record_resources(recorded, {"policy": 4})  # the rollout says what it ran with
    result = build_trajectories(local_store, [plain, recorded], resource="policy")
    assert [len(t.turns) for t in result.trajectories] == [3, 3]
    assert [t.turns[0].resources for t in result.trajectories] == [{}, {"policy": 4}]
    assert build_trajectories(local_store, [recorded], resource="other").skipped == {
        recorded: "no llm turns for resource 'other'"
    }
    strict = build_trajectories(local_store, [plain, recorded], resource="policy", strict_resource=True)
    assert [t.rollout_id for t in strict.trajectories] == [recorded]
    assert strict.skipped == {plain: "no llm turns for resource 'policy'"}


def test_resources_from_the_emit_api(local_store: Store) -> None:
    local_store.put_resource("policy", "lora_adapter", {})
    local_store.put_resource("policy", "lora_adapter", {})
    with voltline.rollout("t", store=local_store, resources={"policy": 2}) as r:
        a = llm([1], [2])
        voltline.emit_reward(0.5)
    t = only(build_trajectories(local_store, [r.rollout_id], resource="policy"))
    assert [(turn.span_id, turn.resources, turn.reward) for turn in t.turns] == [(a, {"policy": 2}, 0.5)]


# rollouts without exact token ids --------------------------------------------------------------
def test_rollouts_without_token_ids_are_reported(local_store: Store) -> None:
    good, _ = three_turn_rollout(local_store)
    with voltline.rollout("text only", store=local_store) as no_ids:
        voltline.emit_llm(model="gpt", input_messages=[{"role": "user", "content": "hi"}], output_messages=[])
        voltline.emit_reward(1.0)
    with voltline.rollout("half", store=local_store) as half:
        llm([1], [2])
        missing = voltline.emit_llm(model="gpt", prompt_token_ids=[1, 2, 3])
        voltline.emit_reward(1.0)
    with voltline.rollout("tools only", store=local_store) as no_llm:
        voltline.emit_tool("search", result="x")
    result = build_trajectories(
        local_store, [no_ids.rollout_id, good, half.rollout_id, no_llm.rollout_id, "nope"]
    )
    assert [t.rollout_id for t in result.trajectories] == [good]
    assert result.skipped[no_ids.rollout_id].startswith("1 of 1 llm turns lack exact token ids (span ")
    assert "no prompt_token_ids" in result.skipped[no_ids.rollout_id]
    assert result.skipped[half.rollout_id] == (
        f"1 of 2 llm turns lack exact token ids (span {missing}: no response_token_ids); "
        "serve the model through the Voltline proxy"
    )
    assert result.skipped[no_llm.rollout_id] == "no llm spans"
    assert result.skipped["nope"] == "rollout not found"


def test_malformed_and_retokenized_ids(local_store: Store) -> None:
    rollouts = {}
    for name, attrs in {
        "strings": {"prompt_token_ids": "1 2 3", "response_token_ids": [4]},
        "empty_prompt": ids([], [4]),
        "retokenized": {**ids([1], [2]), "voltline.token_ids_source": "retokenized"},
        "bad_logprobs": {**ids([1], [2, 3]), "response_logprobs": [-0.5]},
        "bad_model": {**ids([1], [2]), "gen_ai.request.model": 5},  # not a string: reported, no crash
    }.items():
        claim = local_store.start_rollout(name)
        rollouts[name] = claim.rollout.rollout_id
        add_spans(local_store, claim.rollout.rollout_id, claim.attempt.attempt_id, [{"attributes": attrs}])
    result = build_trajectories(local_store, list(rollouts.values()))
    skipped = {name: result.skipped.get(rid, "") for name, rid in rollouts.items()}
    assert "prompt_token_ids is not a list of integers" in skipped["strings"]
    assert "empty prompt_token_ids" in skipped["empty_prompt"]
    assert "re-tokenized by the proxy" in skipped["retokenized"]
    assert skipped["bad_model"].startswith("malformed spans: ValidationError")
    # Logprobs that do not line up with the response are dropped, the turn is kept.
    (t,) = result.trajectories
    assert t.rollout_id == rollouts["bad_logprobs"] and t.turns[0].response_logprobs is None
    allowed = build_trajectories(local_store, [rollouts["retokenized"]], allow_retokenized=True)
    assert [t.turns[0].response_token_ids for t in allowed.trajectories] == [[2]]


def test_failed_llm_calls_are_not_turns(local_store: Store) -> None:
    claim = local_store.start_rollout("one call failed")
    rid, aid = claim.rollout.rollout_id, claim.attempt.attempt_id
    _, ok = add_spans(local_store, rid, aid, [
        {"attributes": {"prompt_token_ids": [1]}, "status": "error"},  # e.g. a timeout: no tokens came back
        {"attributes": ids([1], [2])},
    ])  # fmt: skip
    assert [turn.span_id for turn in only(build_trajectories(local_store, [rid])).turns] == [ok]


# token ids from the LLM proxy ------------------------------------------------------------------
def proxy_attrs(response_id: str, prompt: list[int], response: list[int], **extra: Any) -> dict[str, Any]:
    """The attributes the proxy's recorder writes (voltline/proxy/record.py)."""
    return {
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "tiny", "gen_ai.response.model": "tiny",
        "gen_ai.response.id": response_id, "prompt_token_ids": prompt, "response_token_ids": response,
        "response_logprobs": [-1.0] * len(response), "voltline.source": "proxy",
        "voltline.proxy.backend": "local", "voltline.token_ids_source": "model", **extra,
    }  # fmt: skip


def test_proxy_token_ids_join_onto_plugin_spans(store: Store) -> None:
    """Runs on every store backend: a plugin span without ids is joined to the proxy's record."""
    claim = store.start_rollout({"q": "join"})
    rid, aid = claim.rollout.rollout_id, claim.attempt.attempt_id
    with voltline.rollout(store=store, rollout_id=rid, attempt_id=aid):
        with voltline.span("solver", kind="agent") as agent:
            plugin = voltline.emit_llm(model="tiny", response_id="chatcmpl-1",
                                       output_messages=[{"role": "assistant", "content": "5"}])  # fmt: skip
            voltline.emit_tool("calc", result="5")
    assert voltline.flush()
    # The proxy's own spans, numbered by the store (sequence None): call 1 with two choices (n=2),
    # and call 2, sent with the agent span as parent (header) but no plugin span to join.
    # Timed between the plugin's call and now, as the proxy would record them.
    t0, now = store.query_spans(rollout_id=rid, kind="llm")[0].end_time or 0.0, time.time()
    assert t0 < now
    proxy_spans = [
        {"attributes": proxy_attrs("chatcmpl-1", [1, 2], [3, 4]), "resources": {"policy": 1}},
        {"attributes": proxy_attrs("chatcmpl-1", [1, 2], [7], **{"gen_ai.response.choice_index": 1})},
        {"attributes": proxy_attrs("chatcmpl-2", [1, 2, 3, 4, 9], [5]), "parent_id": agent.span_id},
    ]
    spans = []
    for i, spec in enumerate(proxy_spans):
        end = t0 + (now - t0) * (i + 1) / 4
        spans.append({"span_id": f"proxy-{i}", "rollout_id": rid, "attempt_id": aid, "kind": "llm",
                      "name": "chat tiny", "start_time": t0, "end_time": end, **spec})  # fmt: skip
    store.add_spans(spans)
    with voltline.rollout(store=store, rollout_id=rid, attempt_id=aid):
        voltline.emit_reward(1.0)  # emitted last, though numbered before the proxy's spans
    store.finish_attempt(aid, "succeeded")

    t = only(build_trajectories(store, [rid], reward_rule="nearest"))
    assert [turn.span_id for turn in t.turns] == [plugin, "proxy-2"]  # the joined proxy span is not a turn
    joined, unjoined = t.turns
    assert (joined.prompt_token_ids, joined.response_token_ids, joined.response_logprobs) == (
        [1, 2],
        [3, 4],
        [-1.0, -1.0],
    )
    assert joined.agent_name == "solver" and unjoined.agent_name == "solver"  # inherited from the parent
    assert unjoined.prompt_token_ids == [1, 2, 3, 4, 9] and unjoined.response_token_ids == [5]
    assert [turn.reward for turn in t.turns] == [0.0, 1.0]
    solver = only(build_trajectories(store, [rid], agent_name="solver"))
    assert len(solver.turns) == 2
    # The proxy knows which adapter version served call 1; the joined turn carries it.
    assert [turn.resources for turn in t.turns] == [{"policy": 1}, {}]
    policy = only(build_trajectories(store, [rid], resource="policy"))
    assert [turn.span_id for turn in policy.turns] == [plugin]


# attempts ---------------------------------------------------------------------------------------
def test_latest_successful_attempt(local_store: Store) -> None:
    r = local_store.enqueue("flaky", max_attempts=3)
    spans_by_attempt = []
    for outcome in ("failed", "succeeded"):
        (claim,) = local_store.claim("w1")
        with voltline.rollout(
            store=local_store, rollout_id=r.rollout_id, attempt_id=claim.attempt.attempt_id
        ):
            spans_by_attempt.append(llm([1], [len(spans_by_attempt) + 10]))
            voltline.emit_reward(float(len(spans_by_attempt)))
        local_store.finish_attempt(claim.attempt.attempt_id, outcome)
    t = only(build_trajectories(local_store, [r.rollout_id]))
    attempts = local_store.get_attempts(r.rollout_id)
    assert t.attempt_id == attempts[1].attempt_id and [turn.span_id for turn in t.turns] == [
        spans_by_attempt[1]
    ]
    assert t.reward == 2.0 and t.turns[0].response_token_ids == [11]

    # Every attempt failed: the latest one's spans are used (its reward says how it went).
    r2 = local_store.enqueue("broken", max_attempts=2)
    for n in range(2):
        (claim,) = local_store.claim("w1")
        with voltline.rollout(
            store=local_store, rollout_id=r2.rollout_id, attempt_id=claim.attempt.attempt_id
        ):
            llm([1], [20 + n])
        local_store.finish_attempt(claim.attempt.attempt_id, "failed", error="boom")
    t2 = only(build_trajectories(local_store, [r2.rollout_id]))
    assert t2.attempt_id == local_store.get_attempts(r2.rollout_id)[1].attempt_id
    assert t2.turns[0].response_token_ids == [21]

    queued = local_store.enqueue("never ran")
    assert build_trajectories(local_store, [queued.rollout_id]).skipped == {queued.rollout_id: "no attempts"}


def test_select_attempt_prefers_latest_success() -> None:
    def attempt(n: int, status: str) -> Attempt:
        return Attempt(
            attempt_id=f"a{n}", rollout_id="r", number=n, status=status, started_at=0.0, last_heartbeat=0.0
        )

    # A timed-out attempt 3 may still be running while attempt 2 already succeeded.
    assert (
        select_attempt([attempt(1, "failed"), attempt(2, "succeeded"), attempt(3, "timeout")]).attempt_id
        == "a2"
    )
    assert select_attempt([attempt(1, "succeeded"), attempt(2, "succeeded")]).attempt_id == "a2"
    assert select_attempt([attempt(1, "failed"), attempt(2, "unresponsive")]).attempt_id == "a2"
    assert select_attempt([]) is None


def test_duplicate_ids_give_one_trajectory(local_store: Store) -> None:
    rid, _ = three_turn_rollout(local_store)
    result = build_trajectories(local_store, [rid, rid])
    assert [t.rollout_id for t in result.trajectories] == [rid]


# end to end: the real LLM proxy on a tiny local model ------------------------------------------
def test_trajectory_from_a_real_proxy_run(tmp_path: Path) -> None:
    """An agent makes two chat calls through the proxy (a tool result in between) and emits only
    the reward: the proxy's recorded ids become the turns, and decode to what the agent read."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import openai
    from transformers import AutoTokenizer

    from voltline.proxy import local_app, serve_in_thread
    from voltline.proxy.modelinit import init_model

    torch.set_num_threads(1)
    model_dir = str(init_model(tmp_path / "tiny"))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    store = voltline.connect(f"sqlite:///{tmp_path}/e2e.db")
    server = serve_in_thread(local_app(model_dir, store=store, name="tiny", default_max_tokens=6))
    try:
        claim = store.start_rollout({"q": "2+3"})
        rid, aid = claim.rollout.rollout_id, claim.attempt.attempt_id
        client = openai.OpenAI(base_url=server.base_url(rid, aid), api_key="unused")
        messages: list[Any] = [{"role": "user", "content": "What is 2 + 3?"}]
        texts = []
        for tool_result in ("5", None):
            reply = client.chat.completions.create(model="tiny", messages=messages, seed=1)
            texts.append(reply.choices[0].message.content or "")
            messages.append({"role": "assistant", "content": texts[-1]})
            if tool_result:
                messages.append({"role": "tool", "content": tool_result, "tool_call_id": "c1"})
        with voltline.rollout(store=store, rollout_id=rid, attempt_id=aid):
            voltline.emit_reward(1.0)
        store.finish_attempt(aid, "succeeded")
        assert voltline.flush()

        t = only(build_trajectories(store, [rid], reward_rule="discounted", gamma=0.5))
        assert len(t.turns) == 2 and [turn.reward for turn in t.turns] == [0.5, 1.0]

        def decode(ids: list[int]) -> str:
            return tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

        assert [decode(turn.response_token_ids) for turn in t.turns] == texts
        assert all(len(turn.response_logprobs or []) == len(turn.response_token_ids) for turn in t.turns)
        # The tool result is in the second prompt, never in a response.
        second_prompt = tokenizer.decode(t.turns[1].prompt_token_ids)
        assert "<|im_start|>tool\n5<|im_end|>" in second_prompt
        assert all("<|im_start|>tool" not in decode(turn.response_token_ids) for turn in t.turns)
    finally:
        server.stop()
        store.close()


# turns without token ids, for algorithms that read text (require_token_ids=False) -------------
def test_text_only_turns_when_token_ids_are_not_required(local_store: Store) -> None:
    question = [{"role": "user", "content": "plan 2+3"}]
    with voltline.rollout("mixed", store=local_store) as mixed:
        plan = voltline.emit_llm(model="gpt", input_messages=question,
                                 output_messages=[{"role": "assistant", "content": "add them"}])  # fmt: skip
        exact = llm([1, 2], [3], [-0.5], input_messages=[{"role": "user", "content": "solve"}],
                    output_messages={"role": "assistant", "content": "5"})  # fmt: skip
        half = voltline.emit_llm(model="gpt", prompt_token_ids=[7], output_messages="five")
        voltline.emit_reward(0.75)
    # The default still refuses the rollout: one turn without ids would corrupt an RL update.
    strict = build_trajectories(local_store, [mixed.rollout_id])
    assert strict.trajectories == [] and strict.skipped[mixed.rollout_id].startswith(
        f"2 of 3 llm turns lack exact token ids (span {plan}: no prompt_token_ids)"
    )

    t = only(build_trajectories(local_store, [mixed.rollout_id], require_token_ids=False))
    assert t.reward == 0.75
    assert [
        (turn.span_id, turn.prompt_token_ids, turn.response_token_ids, turn.response_logprobs, turn.reward)
        for turn in t.turns
    ] == [(plan, [], [], None, 0.75), (exact, [1, 2], [3], [-0.5], 0.75), (half, [], [], None, 0.75)]
    assert [(turn.input_messages, turn.output_messages) for turn in t.turns] == [
        (question, [{"role": "assistant", "content": "add them"}]),
        ([{"role": "user", "content": "solve"}], [{"role": "assistant", "content": "5"}]),  # one dict: listed
        (None, ["five"]),
    ]
    assert all(turn.model == "gpt" for turn in t.turns[::2]) and t.turns[1].model == "tiny"


def test_default_turns_carry_no_messages_and_refused_ids_are_dropped(local_store: Store) -> None:
    rid, _ = three_turn_rollout(local_store)
    strict = only(build_trajectories(local_store, [rid]))
    loose = only(build_trajectories(local_store, [rid], require_token_ids=False))
    # Turns with exact ids keep them either way; only the text-only mode adds the messages.
    assert [turn.response_token_ids for turn in loose.turns] == [[10, 11], [12], [13, 14, 2]]
    assert [turn.model_dump(exclude={"input_messages", "output_messages"}) for turn in loose.turns] == [
        turn.model_dump(exclude={"input_messages", "output_messages"}) for turn in strict.turns
    ]
    assert all(turn.input_messages is None and turn.output_messages is None for turn in strict.turns)

    claim = local_store.start_rollout("refused ids")
    rid2, aid = claim.rollout.rollout_id, claim.attempt.attempt_id
    a, b = add_spans(local_store, rid2, aid, [
        {"attributes": {**ids([1], [2]), "voltline.token_ids_source": "retokenized"}},
        {"attributes": {"prompt_token_ids": "1 2", "response_token_ids": [4],
                        "gen_ai.input.messages": [{"role": "user", "content": "hi"}]}},
    ])  # fmt: skip
    local_store.finish_attempt(aid, "succeeded")
    t = only(build_trajectories(local_store, [rid2], require_token_ids=False))
    # Ids the strict mode would refuse are never half-kept: the turn is text only.
    assert [(turn.span_id, turn.prompt_token_ids, turn.response_token_ids) for turn in t.turns] == [
        (a, [], []),
        (b, [], []),
    ]
    assert t.turns[1].input_messages == [{"role": "user", "content": "hi"}] and t.reward is None
    allowed = only(build_trajectories(local_store, [rid2], require_token_ids=False, allow_retokenized=True))
    assert allowed.turns[0].response_token_ids == [2]
    # Rollouts with nothing to learn from are still reported.
    with voltline.rollout("tools only", store=local_store) as no_llm:
        voltline.emit_tool("search", result="x")
    assert build_trajectories(local_store, [no_llm.rollout_id], require_token_ids=False).skipped == {
        no_llm.rollout_id: "no llm spans"
    }
