"""What LlamaIndex capture costs the agent: runs with and without the Voltline handlers.

    VOLTLINE_PLUGINS=llamaindex .venv/bin/python benchmarks/llamaindex_capture.py [--runs 200]

Measures, in one process, alternating rounds so machine noise hits both sides alike:

* a FunctionAgent run (3 streamed model calls via ScriptedLLM, 2 tools, 20 recorded spans),
  uninstrumented vs. instrumented inside a `voltline.rollout` on a SQLite store;
* a bare `FunctionTool.call` (one dispatcher span), uninstrumented vs. instrumented: the
  per-call floor of the span handler.

The writer thread runs concurrently (it shares the GIL), so the instrumented numbers include
the part of the writer's work that lands on the agent's time. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import platform
import statistics
import tempfile
import time
from collections.abc import Callable

from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.tools import FunctionTool
from voltline_llamaindex.testing import ScriptedLLM, ToolCalls

import voltline


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def lookup(query: str) -> str:
    """Look up warehouse notes."""
    return "Each crate holds 40 bolts."


def agent() -> FunctionAgent:
    llm = ScriptedLLM(
        [
            ToolCalls(("lookup", {"query": "bolts per crate"}, "call_1")),
            ToolCalls(("multiply", {"a": 3, "b": 40}, "call_2")),
            "3 crates hold 120 bolts.",
        ]
    )
    tools = [FunctionTool.from_defaults(lookup), FunctionTool.from_defaults(multiply)]
    return FunctionAgent(name="stockkeeper", tools=tools, llm=llm, system_prompt="Use the tools.")


async def run_agent() -> str:
    return str(await agent().run(user_msg="How many bolts are in 3 crates?"))


def timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="agent runs per side (default: %(default)s)")
    parser.add_argument(
        "--calls", type=int, default=20_000, help="tool calls per side (default: %(default)s)"
    )
    args = parser.parse_args()
    tool = FunctionTool.from_defaults(multiply)
    loop = asyncio.new_event_loop()
    one_run = lambda: loop.run_until_complete(run_agent())  # noqa: E731
    one_call = lambda: tool.call(a=3, b=40)  # noqa: E731

    with tempfile.TemporaryDirectory() as tmp:
        store = voltline.connect(f"sqlite:///{tmp}/bench.db")
        for _ in range(20):  # warm up imports, caches, the writer thread
            one_run()
        base_runs: list[float] = []
        inst_runs: list[float] = []
        base_calls: list[float] = []
        inst_calls: list[float] = []
        rounds = 10
        with voltline.rollout("bench", store=store) as r:
            gc.disable()
            for _ in range(rounds):
                base_runs += timed(one_run, args.runs // rounds)
                base_calls += timed(one_call, args.calls // rounds)
                assert voltline.instrument() == ["llamaindex"], "set VOLTLINE_PLUGINS=llamaindex"
                inst_runs += timed(one_run, args.runs // rounds)
                inst_calls += timed(one_call, args.calls // rounds)
                voltline.uninstrument()
            gc.enable()
        voltline.flush()
        spans = store.query_spans(rollout_id=r.rollout_id)
        per_run = (len(spans) - len(inst_calls)) / len(inst_runs)
        store.close()

    def ms(xs: list[float]) -> str:
        p90 = statistics.quantiles(xs, n=10)[-1]
        return f"median {statistics.median(xs) * 1e3:.2f} ms  p90 {p90 * 1e3:.2f} ms"

    def us(xs: list[float]) -> str:
        p90 = statistics.quantiles(xs, n=10)[-1]
        return f"median {statistics.median(xs) * 1e6:.1f} µs  p90 {p90 * 1e6:.1f} µs"

    extra_run = statistics.median(inst_runs) - statistics.median(base_runs)
    print(f"python {platform.python_version()} on {platform.machine()}, {len(inst_runs)} runs per side")
    print(f"FunctionAgent run, no capture : {ms(base_runs)}")
    print(f"FunctionAgent run, captured   : {ms(inst_runs)}  ({per_run:.0f} spans per run)")
    print(
        f"  capture cost per run        : {extra_run * 1e3:.2f} ms"
        f" = {extra_run / per_run * 1e6:.0f} µs per recorded span"
    )
    print(f"FunctionTool.call, no capture : {us(base_calls)}")
    print(f"FunctionTool.call, captured   : {us(inst_calls)}")


if __name__ == "__main__":
    main()
