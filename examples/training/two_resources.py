"""Two resources, two algorithms, one Trainer: a planner prompt (APO) and a specialist adapter (GRPO).

A two-stage agent answers unit questions. The **planner** renders its `prompt_template`
resource ("planner") and asks a model for a plan; the planner model is a hosted-style text API
(scripted here: it reasons only when told to and mentions units only when told to) and records
no token ids. The **specialist** gets the plan and answers through the Voltline LLM proxy, which
serves a tiny local model with the latest LoRA adapter ("policy") and records the exact token
ids and logprobs. The reward pays half for a good plan and half for a verifiable specialist
answer (its first token id is even).

One Trainer owns both: APO (scripted optimizer: an `httpx.MockTransport` behind a real
`openai.OpenAI` client) rewrites the planner template from the planner's text turns, and GRPO
trains the specialist's adapter on the proxy's token-level turns. `resource_scope` and the
proxy's own records keep each algorithm on its own turns.

    python examples/training/two_resources.py [--steps 4] [--group-size 4] [--store sqlite:///two.db]

Offline: the tiny model is created locally (`voltline model init`), nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import httpx
import openai
from rich.console import Console
from rich.table import Table
from voltline_apo import render

import voltline
from voltline.trainer import Trainer, resource_scope

PROXY_ENV = "VOLTLINE_EXAMPLE_PROXY_URL"  # env, not a global: spawned runner processes inherit it
SPECIALIST = "specialist"  # the model name the proxy serves

START = "Plan the answer to: {question}"
STEP = "Think step by step. Plan the answer to: {question}"
BRIEF = "Be brief. Plan the answer to: {question}"
BEST = "Think step by step and give units. Plan the answer to: {question}"
TASKS = [
    {"question": "2 m + 3 m?", "answer": "5 m"},
    {"question": "4 kg + 1 kg?", "answer": "5 kg"},
]


# the agent (top-level: runner processes import it by name) ---------------------------------------
def planner_model(prompt: str) -> tuple[str, float]:
    """The scripted planner "LLM": its plan, and how good that plan is (0, 0.5 or 1)."""
    reasons, units = "step by step" in prompt, "units" in prompt
    steps = ["add the two numbers"] if reasons else []
    steps += ["keep the unit"] if units else []
    return ("; ".join(steps) or "just answer"), 0.5 * reasons + 0.5 * units


def two_stage_agent(task: dict[str, Any], resources: dict[str, voltline.ResourceVersion]) -> str:
    planner, policy = resources["planner"], resources["policy"]
    # Planner: text only, no token ids; the scope stamps only the planner's version on its span.
    with resource_scope(planner):
        prompt = render(planner.payload["template"], question=task["question"])
        plan, plan_score = planner_model(prompt)
        voltline.emit_llm(model="scripted-planner", input_messages=[{"role": "user", "content": prompt}],
                          output_messages=[{"role": "assistant", "content": plan}])  # fmt: skip
    # Specialist: through the proxy, which records the ids and the adapter version it served.
    ctx = voltline.current_rollout()
    assert ctx is not None  # the runner always runs the agent inside its rollout
    base_url = f"{os.environ[PROXY_ENV]}/rollout/{ctx.rollout_id}/attempt/{ctx.attempt_id}/v1"
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
    reply = client.chat.completions.create(
        model=f"{SPECIALIST}:{policy.version}",  # exactly the version this rollout was given
        messages=[
            {"role": "system", "content": f"Plan: {plan}"},
            {"role": "user", "content": task["question"]},
        ],
        max_tokens=4,
    )
    ids = (reply.choices[0].model_extra or {}).get("token_ids") or [1]
    voltline.emit_reward(0.5 * plan_score + 0.5 * float(ids[0] % 2 == 0))
    return reply.choices[0].message.content or ""


# the scripted optimizer LLM for APO ----------------------------------------------------------------
def _optimizer_reply(prompt: str) -> str:
    found = re.search(r"Current template:\n<template>(.*?)</template>", prompt, re.DOTALL)
    template = found.group(1) if found else ""
    if "Explain concisely" in prompt:  # the critique call
        return "The plans skip the reasoning." if template == START else "The plans drop the units."
    if template == START:
        return f"<template>{STEP}</template><template>{BRIEF}</template>"
    return f"<template>{BEST}</template>"  # a template queued already is not queued twice


def scripted_optimizer() -> openai.OpenAI:
    """A real OpenAI client whose HTTP transport answers like an optimizer LLM, offline."""

    def handle(request: httpx.Request) -> httpx.Response:
        content = _optimizer_reply(json.loads(request.content)["messages"][-1]["content"])
        return httpx.Response(200, json={
            "id": "chatcmpl-opt", "object": "chat.completion", "created": 0, "model": "scripted-optimizer",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        })  # fmt: skip

    return openai.OpenAI(base_url="http://optimizer.invalid/v1", api_key="unused", max_retries=0,
                         http_client=httpx.Client(transport=httpx.MockTransport(handle)))  # fmt: skip


# the run ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Train both resources for `--steps` steps, print the table, return each step's metrics."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=4, help="rollouts per task per step (GRPO groups)")
    parser.add_argument("--runners", type=int, default=0, help="runner processes (0: one thread)")
    parser.add_argument("--store", help="store URL (default: a temporary SQLite file)")
    parser.add_argument("--model-dir", help="tiny model folder (default: created in a temporary folder)")
    parser.add_argument("--lr", type=float, default=5e-3)
    args = parser.parse_args(argv)

    # Heavy imports here: runner processes import this module only for the agent.
    from voltline_apo import APO
    from voltline_rl import GRPO

    from voltline.proxy import local_app, serve_in_thread
    from voltline.proxy.modelinit import init_model

    with tempfile.TemporaryDirectory(prefix="voltline-two-") as tmp:
        model_dir = args.model_dir or str(init_model(Path(tmp) / "tiny"))
        store = voltline.connect(args.store or f"sqlite:///{Path(tmp) / 'two.db'}")
        apo = APO(START, model="scripted-optimizer", client=scripted_optimizer(), store=store,
                  resources=("planner",), beam_width=2, num_candidates=2, max_rounds=2)  # fmt: skip
        grpo = GRPO(model_dir, resources=("policy",), lr=args.lr, beta=0.0)
        # Version 1 of the adapter is GRPO's untrained LoRA (a no-op on the base model), so even
        # step 1's proxy calls are stamped with a policy version and GRPO's samples are on-policy.
        initial = {"planner": apo.initial_resource(), "policy": grpo.policy.new_resource("policy", {})}
        server = serve_in_thread(local_app(model_dir, store=store, adapter="policy", name=SPECIALIST))
        previous = os.environ.get(PROXY_ENV)
        os.environ[PROXY_ENV] = server.url
        try:
            with Trainer(store, two_stage_agent, {"planner": apo, "policy": grpo}, runners=args.runners,
                         group_size=args.group_size, initial_resources=initial) as trainer:  # fmt: skip
                records = []
                for _ in range(args.steps):
                    live = {name: store.get_resource(name).version for name in ("planner", "policy")}
                    metrics = trainer.train_step(TASKS)
                    records.append({**metrics, "ran_with": live})
        finally:
            server.stop()
            if previous is None:
                os.environ.pop(PROXY_ENV, None)
            else:
                os.environ[PROXY_ENV] = previous
            store.close()
    _print_table(records, args.group_size)
    return records


def _print_table(records: list[dict[str, Any]], group_size: int) -> None:
    table = Table(title=f"two resources, one Trainer ({len(TASKS)} tasks x {group_size} rollouts per step)")
    # "v1 -> v2": the version the step's rollouts ran with -> the one its algorithm published.
    for column in ("step", "reward", "planner (APO)", "policy (GRPO)", "APO rollouts", "GRPO turns", "s"):
        table.add_column(column, justify="right")
    for r in records:
        table.add_row(
            str(r["step"]), f"{r['mean_reward']:.3f}" if r["mean_reward"] is not None else "-",
            _versions(r, "planner"), _versions(r, "policy"),
            str(int(r.get("planner/scored_rollouts", 0))), str(int(r.get("policy/turns", 0))),
            f"{r['seconds']:.1f}",
        )  # fmt: skip
    Console(width=100).print(table)


def _versions(record: dict[str, Any], name: str) -> str:
    ran = f"v{record['ran_with'][name]}"
    return f"{ran} -> v{record[name + '/version']}" if f"{name}/version" in record else ran


if __name__ == "__main__":
    main()
