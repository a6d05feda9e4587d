"""An AutoGen team captured by Voltline with zero capture code. Runs offline.

A planner and a calculator (with two tools, `add` and `multiply`) take turns in a
`RoundRobinGroupChat`. Their model is autogen-ext's `ReplayChatCompletionClient`, which plays
back a script, so the example needs no weights, keys or network. `voltline.instrument()` is
the only Voltline call besides the rollout and the reward; the script then prints the span
tree the run produced. Try afterwards:

    voltline spans tree <rollout id> --url sqlite:///voltline-autogen.db
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import subprocess
import sys

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import TextMentionTermination
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_core import EVENT_LOGGER_NAME, FunctionCall
from autogen_core.models import CreateResult, ModelInfo, RequestUsage
from autogen_ext.models.replay import ReplayChatCompletionClient

import voltline

MODEL_INFO = ModelInfo(
    vision=False, function_calling=True, json_output=False, family="unknown", structured_output=False
)


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def tool_call(call_id: str, name: str, **arguments: int) -> CreateResult:
    return CreateResult(
        finish_reason="function_calls",
        content=[FunctionCall(id=call_id, name=name, arguments=json.dumps(arguments))],
        usage=RequestUsage(prompt_tokens=0, completion_tokens=9),  # the replay client counts prompts
        cached=False,
    )


def reply(text: str) -> CreateResult:
    return CreateResult(
        finish_reason="stop", content=text, usage=RequestUsage(0, len(text.split())), cached=False
    )


def build_team() -> RoundRobinGroupChat:
    """Scripted models stand in for LLMs: the planner plans and concludes, the calculator computes."""
    planner = AssistantAgent(
        "planner",
        model_client=ReplayChatCompletionClient(
            [
                reply("Plan: add 2 and 3, then multiply the sum by 4. Calculator, please."),
                reply("answer: 20. TERMINATE"),
            ],
            model_info=MODEL_INFO,
        ),
        system_message="You plan arithmetic and state the final answer.",
        description="Breaks the question into steps.",
    )
    calculator = AssistantAgent(
        "calculator",
        model_client=ReplayChatCompletionClient(
            [
                tool_call("call-1", "add", a=2, b=3),
                tool_call("call-2", "multiply", a=5, b=4),
                reply("(2 + 3) * 4 = 20"),
            ],
            model_info=MODEL_INFO,
        ),
        tools=[add, multiply],
        max_tool_iterations=4,
        system_message="You compute with tools.",
        description="Calls arithmetic tools.",
    )
    return RoundRobinGroupChat(
        [planner, calculator], termination_condition=TextMentionTermination("TERMINATE"), max_turns=6
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--store", default="sqlite:///voltline-autogen.db", help="store URL (default: %(default)s)"
    )
    args = parser.parse_args()
    # The replay client warns about token counting on every call; it is noise here.
    logging.getLogger(EVENT_LOGGER_NAME).setLevel(logging.ERROR)

    print("instrumented:", ", ".join(voltline.instrument()) or "nothing (is voltline-autogen installed?)")
    store = voltline.connect(args.store)
    with voltline.rollout({"question": "What is (2 + 3) * 4?"}, store=store) as r:
        result = asyncio.run(build_team().run(task="What is (2 + 3) * 4?"))
        final = result.messages[-1].to_text()
        voltline.emit_reward(1.0 if "20" in final else 0.0)  # the only emit call in this agent
    voltline.uninstrument()

    print(final.replace(" TERMINATE", ""))
    print(f"rollout {r.rollout_id}: {len(store.query_spans(rollout_id=r.rollout_id))} spans")
    store.close()
    sys.stdout.flush()
    subprocess.run(
        [sys.executable, "-m", "voltline", "spans", "tree", r.rollout_id, "--url", args.store], check=True
    )


if __name__ == "__main__":
    main()
