"""What AutoGen capture costs the agent: runs with and without the Voltline wrappers.

    VOLTLINE_PLUGINS=autogen .venv/bin/python benchmarks/autogen_capture.py [--runs 300]

Measures, in one process (wall time, and the agent thread's CPU time for the plain run),
in alternating rounds so machine noise hits both sides alike:

* an AssistantAgent run (3 model calls through the replay client, 2 tools, 6 recorded spans),
  uninstrumented vs. instrumented inside a `voltline.rollout` on a SQLite store;
* the same with `model_client_stream=True` (the streaming path proxies every chunk);
* a bare `FunctionTool.run_json` call (one tool span): the per-call floor of the wrappers.

The writer thread runs concurrently (it shares the GIL), so the instrumented numbers include
the part of the writer's work that lands on the agent's time. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import platform
import statistics
import tempfile
import time
from collections.abc import Callable

from autogen_agentchat.agents import AssistantAgent
from autogen_core import EVENT_LOGGER_NAME, CancellationToken, FunctionCall
from autogen_core.models import CreateResult, ModelInfo, RequestUsage
from autogen_core.tools import FunctionTool
from autogen_ext.models.replay import ReplayChatCompletionClient

import voltline

INFO = ModelInfo(
    vision=False, function_calling=True, json_output=False, family="unknown", structured_output=False
)


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


async def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def agent(stream: bool) -> AssistantAgent:
    def calls(call_id: str, name: str, **arguments: int) -> CreateResult:
        content = [FunctionCall(id=call_id, name=name, arguments=json.dumps(arguments))]
        return CreateResult(
            finish_reason="function_calls", content=content, usage=RequestUsage(10, 5), cached=False
        )

    script = [calls("c1", "add", a=2, b=3), calls("c2", "multiply", a=5, b=4), "(2 + 3) * 4 = 20"]
    client = ReplayChatCompletionClient(script, model_info=INFO)
    return AssistantAgent(
        "calc", model_client=client, tools=[add, multiply], max_tool_iterations=5, model_client_stream=stream
    )


def timed(fn: Callable[[], object], n: int, cpu: list[float] | None = None) -> list[float]:
    """Wall times of `n` calls; with `cpu`, also the agent thread's own CPU time per call (the
    steadier measure on a shared machine: other processes and the writer thread do not count)."""
    out = []
    for _ in range(n):
        t, c = time.perf_counter(), time.thread_time()
        fn()
        out.append(time.perf_counter() - t)
        if cpu is not None:
            cpu.append(time.thread_time() - c)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300, help="agent runs per side (default: %(default)s)")
    parser.add_argument(
        "--calls", type=int, default=20_000, help="tool calls per side (default: %(default)s)"
    )
    args = parser.parse_args()
    logging.getLogger(EVENT_LOGGER_NAME).setLevel(logging.ERROR)  # the replay client's token warnings
    loop = asyncio.new_event_loop()
    tool = FunctionTool(add, description="Add two integers.")
    token = CancellationToken()
    run = {
        s: (lambda s=s: loop.run_until_complete(agent(s).run(task="What is (2+3)*4?"))) for s in (False, True)
    }
    one_call = lambda: loop.run_until_complete(tool.run_json({"a": 2, "b": 3}, token, call_id="x"))  # noqa: E731

    base: dict[str, list[float]] = {"run": [], "stream": [], "tool": [], "cpu": []}
    inst: dict[str, list[float]] = {"run": [], "stream": [], "tool": [], "cpu": []}
    with tempfile.TemporaryDirectory() as tmp:
        store = voltline.connect(f"sqlite:///{tmp}/bench.db")
        for _ in range(20):  # warm up imports, caches, the writer thread
            run[False]()
            run[True]()
        rounds = 10
        with voltline.rollout("bench", store=store) as r:
            gc.disable()
            for _ in range(rounds):
                for side in (base, inst):
                    if side is inst:
                        assert voltline.instrument() == ["autogen"], "set VOLTLINE_PLUGINS=autogen"
                    side["run"] += timed(run[False], args.runs // rounds, side["cpu"])
                    side["stream"] += timed(run[True], args.runs // rounds)
                    side["tool"] += timed(one_call, args.calls // rounds)
                    if side is inst:
                        voltline.uninstrument()
            gc.enable()
        voltline.flush()
        spans = store.query_spans(rollout_id=r.rollout_id)
        per_run = (len(spans) - len(inst["tool"])) / (len(inst["run"]) + len(inst["stream"]))
        store.close()

    def ms(xs: list[float]) -> str:
        p90 = statistics.quantiles(xs, n=10)[-1]
        return f"median {statistics.median(xs) * 1e3:.2f} ms  p90 {p90 * 1e3:.2f} ms"

    def us(xs: list[float]) -> str:
        p90 = statistics.quantiles(xs, n=10)[-1]
        return f"median {statistics.median(xs) * 1e6:.1f} µs  p90 {p90 * 1e6:.1f} µs"

    print(f"python {platform.python_version()} on {platform.machine()}, {len(inst['run'])} runs per side")
    for key, label in (("run", "AssistantAgent run"), ("stream", "AssistantAgent run, streamed")):
        extra = statistics.median(inst[key]) - statistics.median(base[key])
        print(f"{label}, no capture : {ms(base[key])}")
        print(f"{label}, captured   : {ms(inst[key])}  ({per_run:.0f} spans per run)")
        print(
            f"  capture cost per run : {extra * 1e3:.2f} ms"
            f" = {extra / per_run * 1e6:.0f} µs per recorded span"
        )
    extra_cpu = statistics.median(inst["cpu"]) - statistics.median(base["cpu"])
    print(f"AssistantAgent run, agent-thread CPU: {ms(base['cpu'])} -> {ms(inst['cpu'])}")
    print(
        f"  capture CPU per run  : {extra_cpu * 1e3:.2f} ms"
        f" = {extra_cpu / per_run * 1e6:.0f} µs per recorded span"
    )
    extra_call = statistics.median(inst["tool"]) - statistics.median(base["tool"])
    print(f"FunctionTool.run_json, no capture : {us(base['tool'])}")
    print(
        f"FunctionTool.run_json, captured   : {us(inst['tool'])}  (+{extra_call * 1e6:.1f} µs per tool span)"
    )


if __name__ == "__main__":
    main()
