"""A CrewAI crew captured by Voltline with no emit calls but the reward. Runs offline.

Two agents work through two tasks: a calculator (tools `add` and `multiply`) computes
(2 + 3) * 4 in several steps, then a reviewer checks the answer. The model is
`ScriptedLLM`, a CrewAI `BaseLLM` that replays scripted replies (native tool calls, then
answers), so the example needs no API key, weights or network. `voltline.instrument()`
hooks CrewAI's event bus; the script then prints the stored span tree. Try afterwards:

    voltline spans tree <rollout id> --url sqlite:///voltline-crewai.db
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

# CrewAI reads these at import: no telemetry, no trace prompt, no version check.
for _var in ("CREWAI_DISABLE_TELEMETRY", "CREWAI_DISABLE_VERSION_CHECK"):
    os.environ.setdefault(_var, "true")
os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")

from crewai import Agent, Crew, Task  # noqa: E402
from crewai.tools import tool  # noqa: E402
from voltline_crewai.testing import ScriptedLLM, ToolCall  # noqa: E402

import voltline  # noqa: E402


@tool("add")
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool("multiply")
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def build_crew() -> Crew:
    llm = ScriptedLLM(
        model="scripted-math",
        replies=[
            [ToolCall("add", {"a": 2, "b": 3})],  # calculator, step 1
            [ToolCall("multiply", {"a": 5, "b": 4})],  # step 2, using the first result
            "(2 + 3) * 4 = 20",  # calculator's answer
            "Verified: (2 + 3) * 4 = 20",  # reviewer's verdict
        ],
    )
    calculator = Agent(
        role="calculator", goal="Compute arithmetic exactly", backstory="Uses tools for every step.",
        llm=llm, tools=[add, multiply],
    )  # fmt: skip
    reviewer = Agent(role="reviewer", goal="Check results", backstory="Trusts nothing unverified.", llm=llm)
    compute = Task(name="compute", description="What is (2 + 3) * 4?", expected_output="a number",
                   agent=calculator)  # fmt: skip
    review = Task(name="review", description="Check the computation.", expected_output="a verdict",
                  agent=reviewer)  # fmt: skip
    return Crew(name="math", agents=[calculator, reviewer], tasks=[compute, review])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--store", default="sqlite:///voltline-crewai.db", help="store URL (default: %(default)s)"
    )
    args = parser.parse_args()

    voltline.instrument()  # zero-code capture: every installed integration, CrewAI included
    store = voltline.connect(args.store)
    with voltline.rollout({"question": "(2 + 3) * 4"}, store=store) as rollout:
        result = crew_result = build_crew().kickoff()
        voltline.emit_reward(1.0 if "20" in crew_result.raw else 0.0)  # the one emit call
    voltline.uninstrument()
    print(f"crew answered: {result.raw}")
    print(f"rollout {rollout.rollout_id}\n")
    subprocess.run(
        [sys.executable, "-m", "voltline", "spans", "tree", rollout.rollout_id, "--url", args.store],
        check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip


if __name__ == "__main__":
    main()
