"""What CrewAI capture costs a crew: kickoffs with and without the Voltline listener.

    VOLTLINE_PLUGINS=crewai .venv/bin/python benchmarks/crewai_capture.py [--runs 100] < /dev/null

Measures, in one process, alternating rounds so machine noise hits both sides alike:

* a two-agent, two-task crew (4 scripted model calls, 2 tool calls, 11 recorded spans):
  `Crew.kickoff()` uninstrumented vs. instrumented inside a `voltline.rollout` (SQLite);
* the listener's own work per CrewAI event (record + tracker), called directly.

Also reports how many tool spans got their tool-call id: the id comes from the completion
that asked for the tool, and CrewAI's handler threads may (rarely) deliver the tool's start
first. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

for _var in ("CREWAI_DISABLE_TELEMETRY", "CREWAI_DISABLE_VERSION_CHECK"):
    os.environ.setdefault(_var, "true")
os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")

from crewai import Agent, Crew, Task  # noqa: E402
from crewai.events.event_bus import crewai_event_bus  # noqa: E402
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


def crew() -> Crew:
    llm = ScriptedLLM(
        model="scripted-math",
        replies=[[ToolCall("add", {"a": 2, "b": 3})], [ToolCall("multiply", {"a": 5, "b": 4})], "20", "ok"],
    )
    calc = Agent(role="calculator", goal="compute", backstory="exact", llm=llm, tools=[add, multiply])
    rev = Agent(role="reviewer", goal="check", backstory="strict", llm=llm)
    return Crew(
        agents=[calc, rev],
        tasks=[Task(description="(2+3)*4?", expected_output="n", agent=calc),
               Task(description="check", expected_output="v", agent=rev)],
    )  # fmt: skip


def kickoff_ms() -> float:
    c = crew()  # built outside the timing: construction is the same either way
    start = time.perf_counter()
    c.kickoff()
    return (time.perf_counter() - start) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    store = voltline.connect(f"sqlite:///{tempfile.mkdtemp()}/bench.db")
    for _ in range(5):  # warm-up: imports, pydantic schemas, the bus's thread pool
        kickoff_ms()

    plain: list[float] = []
    traced: list[float] = []
    rollouts = []
    for _ in range(args.runs):
        plain.append(kickoff_ms())
        voltline.instrument()
        with voltline.rollout("bench", store=store) as r:
            traced.append(kickoff_ms())
        rollouts.append(r.rollout_id)
        voltline.uninstrument()
        crewai_event_bus.flush()

    voltline.flush()
    tools = [s for rid in rollouts for s in store.query_spans(rollout_id=rid, kind="tool")]
    with_id = sum(1 for s in tools if "gen_ai.tool.call.id" in s.attributes)
    n_spans = len(store.query_spans(rollout_id=rollouts[-1]))

    def line(name: str, xs: list[float]) -> str:
        xs = sorted(xs)
        return f"{name:<28} median {statistics.median(xs):7.2f} ms   p90 {xs[int(0.9 * len(xs))]:7.2f} ms"

    print(
        f"python {platform.python_version()}, {os.cpu_count()} cpus, {args.runs} rounds, {n_spans} spans/run"
    )
    print(line("kickoff, uninstrumented", plain))
    print(line("kickoff, instrumented", traced))
    overhead = statistics.median(traced) - statistics.median(plain)
    print(f"overhead per kickoff         {overhead:+.2f} ms  ({overhead / n_spans * 1e3:+.0f} us per span)")
    print(f"tool spans with call id      {with_id}/{len(tools)}")


if __name__ == "__main__":
    main()
