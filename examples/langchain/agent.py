"""A LangGraph agent (langchain.agents.create_agent) captured by Voltline with no emit calls.

The agent answers "(3 + 4) * 5" with two tools, `add` and `multiply`, over three model
turns. The model is a scripted stand-in (voltline_langchain.testing.ScriptedChatModel), so
the example runs offline without weights; everything else is real LangChain and LangGraph.
`voltline.instrument()` is the only Voltline line besides the rollout and the reward.

    python examples/langchain/agent.py                 # into sqlite:///voltline-langchain.db
    python examples/langchain/agent.py --store sqlite:///runs.db
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from langchain.agents import create_agent
from langchain_core.tools import tool
from voltline_langchain.testing import ScriptedChatModel, reply

import voltline


@tool
def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


@tool
def multiply(a: float, b: float) -> float:
    """Multiply two numbers."""
    return a * b


def build_agent() -> object:
    # What a tool-calling model would say for this question, turn by turn, with token usage.
    model = ScriptedChatModel(
        model_name="scripted-calculator",
        responses=[
            reply(
                tool_calls=[("add", {"a": 3, "b": 4}, "call_add")],
                input_tokens=52,
                output_tokens=18,
                model="scripted-calculator",
                response_id="resp-1",
            ),
            reply(
                tool_calls=[("multiply", {"a": 7, "b": 5}, "call_mul")],
                input_tokens=81,
                output_tokens=18,
                model="scripted-calculator",
                response_id="resp-2",
            ),
            reply(
                "(3 + 4) * 5 = 35",
                input_tokens=110,
                output_tokens=9,
                model="scripted-calculator",
                response_id="resp-3",
            ),
        ],
    )
    return create_agent(
        model,
        [add, multiply],
        system_prompt="You are a careful calculator. Use the tools.",
        name="calculator",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--store", default="sqlite:///voltline-langchain.db", help="store URL (default: %(default)s)"
    )
    args = parser.parse_args()

    voltline.instrument()  # every LangChain run inside a rollout is now recorded
    try:
        agent = build_agent()
        with voltline.rollout({"question": "(3 + 4) * 5"}, store=args.store) as r:
            result = agent.invoke({"messages": [("user", "What is (3 + 4) * 5?")]})
            answer = result["messages"][-1].content
            voltline.emit_reward(1.0 if "35" in answer else 0.0)  # the only emit call
    finally:
        voltline.uninstrument()

    print(f"answer: {answer}")
    print(f"rollout: {r.rollout_id}")
    sys.stdout.flush()
    subprocess.run(
        [sys.executable, "-m", "voltline", "spans", "tree", r.rollout_id, "--url", args.store], check=True
    )


if __name__ == "__main__":
    main()
