"""Prompt optimization (voltline-apo): a scripted optimizer LLM, a plain-Python agent, the Trainer.

The agent's "model" answers well only when the prompt carries the instructions the optimizer
proposes ("step by step" earns 0.5, "give units" another 0.5), so the reward of a rollout depends
on the template alone, and the search must climb two rounds of textual gradients to reach 1.0.
The optimizer is an httpx MockTransport inside a real `openai.OpenAI` client (and, once, a real
OpenAI-compatible HTTP server reached by `base_url`).
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from voltline_apo import APO, placeholders, render
from voltline_apo.optimizer import parse_candidates

import voltline
import voltline.algorithms
from voltline._trajectory import Trajectory, Turn
from voltline.trainer import Trainer

START = "Q: {question}"
STEP = "Think step by step. Q: {question}"
BRIEF = "Be brief. Q: {question}"
BEST = "Think step by step and give units. Q: {question}"
FRENCH = "Think step by step, in French. Q: {question}"
TASKS = [{"question": "2 m + 3 m?", "answer": "5 m"}, {"question": "4 kg + 1 kg?", "answer": "5 kg"}]


# the agent ------------------------------------------------------------------------------------
def quiz_agent(task: dict[str, Any], resources: dict[str, voltline.ResourceVersion]) -> str:
    """A scripted model: reasons only when told to, states units only when told to."""
    prompt = render(resources["prompt"].payload["template"], question=task["question"])
    reasons, units = "step by step" in prompt, "units" in prompt
    answer = task["answer"] if reasons and units else task["answer"].split()[0] if reasons else "7"
    voltline.emit_llm(
        model="scripted", input_messages=[{"role": "user", "content": prompt}],
        output_messages=[{"role": "assistant", "content": answer}],
        prompt_token_ids=list(prompt.encode()[:32]), response_token_ids=list(answer.encode()),
    )  # fmt: skip
    voltline.emit_reward(0.5 * reasons + 0.5 * units)
    return answer


# the scripted optimizer -----------------------------------------------------------------------
def completion(content: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-apo", "object": "chat.completion", "created": 0, "model": "scripted-optimizer",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }  # fmt: skip


def current_template(prompt: str) -> str:
    return re.search(r"Current template:\n<template>(.*?)</template>", prompt, re.DOTALL).group(1)  # type: ignore[union-attr]


def scripted_reply(prompt: str) -> str:
    """Critiques, then rewrites: each rewrite reply also carries one unusable candidate."""
    template = current_template(prompt)
    if "Explain concisely" in prompt:
        return "The agent answers without reasoning." if template == START else "Answers lack units."
    if template == START:  # round 1: one good edit, one bad, one that drops the placeholder
        return f"<template>{STEP}</template>\n<template>{BRIEF}</template>\n<template>Think. Q:</template>"
    if template == STEP:  # round 2: the best edit, a sideways one, and a broken format string
        return f"<template>{BEST}</template><template>{FRENCH}</template><template>Q: {{question</template>"
    return "I have no further ideas."  # no <template> block: malformed


def optimizer_client(reply: Callable[[str], str], calls: list[str]) -> openai.OpenAI:
    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        assert request.url.path == "/v1/chat/completions" and body["model"] == "scripted-optimizer"
        prompt = body["messages"][-1]["content"]
        calls.append(prompt)
        return httpx.Response(200, json=completion(reply(prompt)))

    return openai.OpenAI(base_url="http://optimizer.test/v1", api_key="test", max_retries=0,
                         http_client=httpx.Client(transport=httpx.MockTransport(handle)))  # fmt: skip


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/apo.db"


# tests ------------------------------------------------------------------------------------------
def test_entry_point_finds_apo() -> None:
    assert voltline.algorithms.get("apo") is APO
    assert voltline.algorithms.available()["apo"].source == "entry point voltline-apo"


def test_beam_search_picks_the_better_template_and_publishes_it(store_url: str) -> None:
    calls: list[str] = []
    apo = APO(START, model="scripted-optimizer", client=optimizer_client(scripted_reply, calls),
              beam_width=2, num_candidates=2, target_reward=1.0)  # fmt: skip
    with Trainer(store_url, quiz_agent, {"prompt": apo}, runners=0,
                 initial_resources={"prompt": apo.initial_resource()}) as trainer:  # fmt: skip
        apo.bind_store(trainer.store)
        steps = [trainer.train_step(TASKS) for _ in range(6)]
        history = trainer.store.resource_history("prompt")

    # Each step scores the version the previous step published; the last two re-publish the best.
    assert [m["mean_reward"] for m in steps] == [0.0, 0.5, 0.0, 1.0, 0.5, 1.0]
    assert [m.get("prompt/version") for m in steps] == [2, 3, 4, 5, 6, None]
    assert [(v.version, v.kind, v.payload, v.created_by) for v in history] == [
        (1, "prompt_template", {"template": START}, "initial"),
        (2, "prompt_template", {"template": STEP}, "apo step 1"),  # round 1 candidates
        (3, "prompt_template", {"template": BRIEF}, "apo step 2"),
        (4, "prompt_template", {"template": BEST}, "apo step 3"),  # round 2: STEP (beam best) expanded
        (5, "prompt_template", {"template": FRENCH}, "apo step 4"),
        (6, "prompt_template", {"template": BEST}, "apo step 5"),  # the best, live again
    ]
    assert history[-1].metrics == {"mean_reward": 1.0, "rollouts": 2.0}
    assert [v.metrics for v in history[1:5]] == [{"round": 1.0}] * 2 + [{"round": 2.0}] * 2

    # Two rounds, two calls each (critique, rewrite); START and STEP were the templates expanded.
    assert [current_template(c) for c in calls] == [START, START, STEP, STEP]
    # The critique saw the template, the task inputs, the agent's outputs (from spans) and rewards.
    assert "2 m + 3 m?" in calls[0] and "Agent output: 7" in calls[0] and "(reward 0)" in calls[0]
    assert "Agent output: 5\n" in calls[2] + "\n" and "(reward 0.5)" in calls[2]
    assert "The agent answers without reasoning." in calls[1] and "{question}" in calls[1]

    assert [m["prompt/candidates_proposed"] for m in steps] == [2, 0, 2, 0, 0, 0]
    assert [m["prompt/candidates_malformed"] for m in steps] == [1, 0, 1, 0, 0, 0]
    assert steps[-1]["prompt/beam_best_reward"] == 1.0 and steps[-1]["prompt/templates_tried"] == 5
    assert apo.best_template == BEST and [s.template for s in apo.beam] == [BEST, STEP]
    assert apo.scored[BEST].versions == [4, 6] and apo.scored[BEST].rewards == [1.0] * 4
    assert apo.totals == {"candidates_proposed": 4, "candidates_malformed": 2, "optimizer_errors": 0}


def trajectory(version: int, reward: float, i: int = 0) -> Trajectory:
    turn = Turn(span_id=f"s{i}", sequence=0, prompt_token_ids=[1], response_token_ids=[2],
                resources={"prompt": version})  # fmt: skip
    return Trajectory(rollout_id=f"r{i}", attempt_id=f"a{i}", input={"question": f"q{i}"}, reward=reward,
                      turns=[turn])  # fmt: skip


@pytest.mark.parametrize(
    ("reply", "malformed", "errors"),
    [
        pytest.param(lambda p: "Sure! Here is a better prompt: be careful.", 1, 0, id="no-template-tags"),
        pytest.param(
            lambda p: "<template>Q: {question</template><template>Q:</template>", 2, 0, id="bad-format"
        ),
        pytest.param(lambda p: f"<template>{START}</template>", 1, 0, id="unchanged"),
        pytest.param(lambda p: "", 1, 0, id="empty-reply"),
        pytest.param(None, 0, 1, id="http-500"),
        pytest.param("not json", 0, 1, id="invalid-json"),
    ],
)
def test_malformed_optimizer_output_is_skipped_and_counted(reply: Any, malformed: int, errors: int) -> None:
    calls: list[str] = []
    if callable(reply):
        client = optimizer_client(reply, calls)
    else:  # an endpoint that fails outright

        def handle(request: httpx.Request) -> httpx.Response:
            calls.append("x")
            return (
                httpx.Response(500, json={"error": {"message": "boom"}})
                if reply is None
                else (
                    httpx.Response(200, content=reply.encode(), headers={"content-type": "application/json"})
                )
            )

        client = openai.OpenAI(base_url="http://optimizer.test/v1", api_key="t", max_retries=0,
                               http_client=httpx.Client(transport=httpx.MockTransport(handle)))  # fmt: skip
    apo = APO(START, model="scripted-optimizer", client=client)
    result = apo.run_step([trajectory(1, 0.0, 0), trajectory(1, 0.0, 1)])
    # Nothing usable: no candidate, and the live template is already the best, so nothing published.
    assert result.resources == [] and apo.pending == []
    assert (
        result.metrics["candidates_malformed"] == malformed and result.metrics["optimizer_errors"] == errors
    )
    assert result.metrics["candidates_proposed"] == 0 and result.metrics["reward_mean"] == 0.0
    assert apo.scored[START].expanded and apo.rounds == 1
    # The next step does not ask again for the same template (it was expanded once).
    n = len(calls)
    assert apo.run_step([trajectory(1, 0.0, 2)]).resources == [] and len(calls) == n


def test_mixed_reply_keeps_the_good_candidate() -> None:
    calls: list[str] = []
    reply = f"<template>{STEP}</template> and <template>{{oops}} {{question}}</template>"
    apo = APO(START, model="scripted-optimizer",
              client=optimizer_client(lambda p: "critique" if "Explain" in p else reply, calls))  # fmt: skip
    result = apo.run_step([trajectory(1, 0.0)])
    assert [r.payload for r in result.resources] == [{"template": STEP}]
    assert result.metrics["candidates_proposed"] == 1 and result.metrics["candidates_malformed"] == 1


def test_without_store_versions_follow_what_apo_published() -> None:
    """No store: an unseen version is the template APO returned last (the Trainer's order)."""
    apo = APO(
        START, model="scripted-optimizer", client=optimizer_client(scripted_reply, []), target_reward=1.0
    )
    assert apo.run_step([trajectory(1, 0.0)]).resources[0].payload == {"template": STEP}
    assert apo.run_step([trajectory(2, 0.5)]).resources[0].payload == {"template": BRIEF}
    assert apo.run_step([trajectory(3, 0.0)]).resources[0].payload == {"template": BEST}
    assert apo.scored[STEP].versions == [2] and apo.scored[BRIEF].mean == 0.0
    # A trajectory without a reward says nothing about the template.
    assert apo.run_step([trajectory(4, None)]).metrics["scored_rollouts"] == 0.0  # type: ignore[arg-type]


def test_max_rounds_then_republishes_best() -> None:
    apo = APO(START, model="scripted-optimizer", client=optimizer_client(scripted_reply, []), max_rounds=1)
    apo.run_step([trajectory(1, 0.0)])  # round 1: STEP queued and published, BRIEF queued
    apo.run_step([trajectory(2, 0.5)])  # BRIEF published
    result = apo.run_step([trajectory(3, 0.0)])  # round limit: the best (STEP) goes live again
    assert [r.payload for r in result.resources] == [{"template": STEP}]
    assert result.resources[0].metrics == {"mean_reward": 0.5, "rollouts": 1.0}


def test_templates_and_validation() -> None:
    assert placeholders("a {x} {y!r} {{z}}") == {"x", "y"} and placeholders("a {x") is None
    assert render("Q: {question} {missing}", question="2+2") == "Q: 2+2 {missing}"
    assert parse_candidates(f"<TEMPLATE>{STEP}</TEMPLATE>", START) == ([STEP], 0)
    assert parse_candidates(f"<template>{STEP}</template><template>{STEP}</template>", START) == ([STEP], 1)
    with pytest.raises(ValueError, match="exactly one resource"):
        APO(START, client=optimizer_client(scripted_reply, []), resources=("a", "b"))
    with pytest.raises(ValueError, match="format string"):
        APO("Q: {question", client=optimizer_client(scripted_reply, []))


# a real OpenAI-compatible server, reached by base_url ------------------------------------------
@pytest.fixture
def optimizer_server() -> Iterator[tuple[str, list[str]]]:
    import uvicorn
    from fastapi import FastAPI

    calls: list[str] = []
    app = FastAPI()

    @app.post("/v1/chat/completions")
    def chat(body: dict[str, Any]) -> dict[str, Any]:
        calls.append(body["messages"][-1]["content"])
        return completion(scripted_reply(calls[-1]))

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:  # startup, not a timing assertion
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}/v1", calls
    server.should_exit = True
    thread.join(5)


def test_optimizer_reached_by_base_url(optimizer_server: tuple[str, list[str]]) -> None:
    base_url, calls = optimizer_server
    apo = APO(START, model="scripted-optimizer", base_url=base_url, api_key="local")
    result = apo.run_step([trajectory(1, 0.0)])
    assert [r.payload for r in result.resources] == [{"template": STEP}] and apo.pending == [BRIEF]
    assert len(calls) == 2 and result.metrics["candidates_malformed"] == 1


# an agent whose model records no token ids: APO still optimizes --------------------------------
def text_only_agent(task: dict[str, Any], resources: dict[str, voltline.ResourceVersion]) -> str:
    """quiz_agent's scripted model, called like a hosted API: text in, text out, no token ids."""
    prompt = render(resources["prompt"].payload["template"], question=task["question"])
    reasons, units = "step by step" in prompt, "units" in prompt
    answer = task["answer"] if reasons and units else task["answer"].split()[0] if reasons else "7"
    voltline.emit_llm(model="hosted", input_messages=[{"role": "user", "content": prompt}],
                      output_messages=[{"role": "assistant", "content": answer}])  # fmt: skip
    voltline.emit_reward(0.5 * reasons + 0.5 * units)
    return answer


def test_apo_optimizes_an_agent_that_records_no_token_ids(store_url: str) -> None:
    assert APO.needs_token_ids is False and voltline.algorithms.Algorithm.needs_token_ids is True
    calls: list[str] = []
    seen: list[list[Trajectory]] = []
    apo = APO(START, model="scripted-optimizer", client=optimizer_client(scripted_reply, calls),
              beam_width=2, num_candidates=2, target_reward=1.0)  # fmt: skip
    original_step = apo.step
    apo.step = lambda trajectories: seen.append(list(trajectories)) or original_step(trajectories)  # type: ignore[method-assign]
    with Trainer(store_url, text_only_agent, {"prompt": apo}, runners=0,
                 initial_resources={"prompt": apo.initial_resource()}) as trainer:  # fmt: skip
        apo.bind_store(trainer.store)
        steps = [trainer.train_step(TASKS) for _ in range(6)]
        history = trainer.store.resource_history("prompt")

    # The same climb as with token ids: nothing was skipped for lack of them.
    assert [m["mean_reward"] for m in steps] == [0.0, 0.5, 0.0, 1.0, 0.5, 1.0]
    assert [(m["prompt/trajectories"], m["prompt/skipped"]) for m in steps] == [(2, 0)] * 6
    assert [v.payload["template"] for v in history] == [START, STEP, BRIEF, BEST, FRENCH, BEST]
    assert history[-1].created_by == "apo step 5" and apo.best_template == BEST
    # APO received text-only turns: empty ids, the call's messages, the version it ran with.
    first = seen[0][0].turns[0]
    assert (first.prompt_token_ids, first.response_token_ids, first.model) == ([], [], "hosted")
    assert first.input_messages == [{"role": "user", "content": "Q: 2 m + 3 m?"}]
    assert first.output_messages == [{"role": "assistant", "content": "7"}]
    assert first.resources == {"prompt": 1}
    assert "Agent output: 7" in calls[0]
    assert [current_template(c) for c in calls] == [START, START, STEP, STEP]
