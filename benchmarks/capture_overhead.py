"""Capture overhead on a LangChain agent: uninstrumented, Voltline, and OpenInference.

    .venv/bin/python benchmarks/capture_overhead.py                 # defaults: 15 rounds x 100 runs
    .venv/bin/python benchmarks/capture_overhead.py --rounds 3 --runs 50

One process. The agent is a real LangGraph agent (`langchain.agents.create_agent`, two tools,
three model turns, so 11 LangChain runs per agent run) over the scripted chat model, so the
numbers are the framework's own cost plus capture's, with no model time to hide behind:
the worst case for an overhead ratio. Each round times `--runs` agent runs in every mode,
modes interleaved (order rotated) so that machine noise hits them alike. A mode's ratio to
uninstrumented is the median over rounds of that round's ratio: the runs compared are seconds
apart, so the slow drifts of a shared machine cancel out of each ratio, and an outlier round
moves the median little.

* **uninstrumented**: LangChain and LangGraph alone.
* **voltline**: `voltline.instrument()` (the voltline-langchain plugin), runs inside one
  `voltline.rollout` per round writing to a SQLite file. The background writer validates and
  writes spans *while* the agent runs (it shares the GIL, so its cost is in the agent's time);
  the final `flush()` of each round is shown apart in wall time and included in CPU time.
* **openinference**: `openinference-instrumentation-langchain`'s `LangChainInstrumentor`
  exporting to an OpenTelemetry `InMemorySpanExporter` through a `SimpleSpanProcessor`
  (synchronous export on span end; in memory, so export itself is almost free), or through a
  `BatchSpanProcessor` with `--processor batch`.

Targets: Voltline adds at most 15% to the uninstrumented time, and less than OpenInference adds.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("VOLTLINE_PLUGINS", "langchain")  # other frameworks' plugins stay out

from langchain.agents import create_agent
from langchain_core.tools import tool
from voltline_langchain.testing import ScriptedChatModel, reply

import voltline

TARGET_OVERHEAD = 0.15
QUESTION = {"messages": [("user", "What is (3 + 4) * 5?")]}


@tool
def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


@tool
def multiply(a: float, b: float) -> float:
    """Multiply two numbers."""
    return a * b


def build_agent() -> Any:
    script = [
        reply(
            tool_calls=[("add", {"a": 3, "b": 4}, "c1")], input_tokens=52, output_tokens=18, response_id="r1"
        ),
        reply(tool_calls=[("multiply", {"a": 7, "b": 5}, "c2")], input_tokens=81, output_tokens=18),
        reply("(3 + 4) * 5 = 35", input_tokens=110, output_tokens=9, response_id="r3"),
    ]
    model = ScriptedChatModel(responses=script, cycle=True)
    return create_agent(model, [add, multiply], system_prompt="You are a careful calculator.", name="calc")


def time_runs(agent: Any, runs: int) -> float:
    """Wall-clock seconds for `runs` agent runs (CPU seconds of the process go to CPU_TIMES)."""
    gc.collect()
    cpu = time.process_time()
    started = time.perf_counter()
    for _ in range(runs):
        out = agent.invoke(QUESTION)
    elapsed = time.perf_counter() - started
    CPU_TIMES.append(time.process_time() - cpu)
    assert out["messages"][-1].content == "(3 + 4) * 5 = 35"
    return elapsed


CPU_TIMES: list[float] = []  # process CPU time of the latest time_runs calls, writer thread included


class OpenInference:
    def __init__(self, processor: str) -> None:
        from openinference.instrumentation.langchain import LangChainInstrumentor
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        make = SimpleSpanProcessor if processor == "simple" else BatchSpanProcessor
        self.provider.add_span_processor(make(self.exporter))
        self.instrumentor = LangChainInstrumentor()

    def run(self, agent: Any, runs: int) -> tuple[float, int]:
        self.instrumentor.instrument(tracer_provider=self.provider)
        try:
            elapsed = time_runs(agent, runs)
        finally:
            self.instrumentor.uninstrument()
        flush_cpu = time.process_time()
        self.provider.force_flush()  # the batch processor's pending exports, counted like Voltline's
        CPU_TIMES[-1] += time.process_time() - flush_cpu
        spans = len(self.exporter.get_finished_spans())
        self.exporter.clear()
        return elapsed, spans


def run_voltline(agent: Any, runs: int, store: voltline.Store) -> tuple[float, float, int]:
    voltline.instrument()
    try:
        before = voltline.emitter_stats()["emitted"]
        with voltline.rollout({"bench": runs}, store=store):
            elapsed = time_runs(agent, runs)
            flush_started = time.perf_counter()
            flush_cpu = time.process_time()
        # Leaving the rollout flushes: the spans still buffered are validated and written now.
        # That work is capture's too, so its CPU time is added to the round's.
        flushed = time.perf_counter() - flush_started
        CPU_TIMES[-1] += time.process_time() - flush_cpu
        spans = voltline.emitter_stats()["emitted"] - before
    finally:
        voltline.uninstrument()
    return elapsed, flushed, spans


def paired_ratio(mode: list[float], base: list[float]) -> float:
    """The median over rounds of mode / base within the round."""
    return statistics.median(m / b for m, b in zip(mode, base, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--runs", type=int, default=100, help="agent runs per mode per round")
    parser.add_argument("--processor", choices=["simple", "batch"], default="simple")
    args = parser.parse_args()

    agent = build_agent()
    time_runs(agent, 20)  # warm-up: imports, caches, code paths
    openinference = OpenInference(args.processor)
    times: dict[str, list[float]] = {"uninstrumented": [], "voltline": [], "openinference": []}
    cpu: dict[str, list[float]] = {name: [] for name in times}
    flushes: list[float] = []
    counts: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = voltline.connect(f"sqlite:///{Path(tmp) / 'bench.db'}")
        run_voltline(agent, 10, store)  # warm-up of the writer thread and the store
        openinference.run(agent, 10)
        modes: list[tuple[str, Callable[[], float]]] = []

        def volt() -> float:
            elapsed, flushed, counts["voltline"] = run_voltline(agent, args.runs, store)
            flushes.append(flushed)
            return elapsed

        def oi() -> float:
            elapsed, counts["openinference"] = openinference.run(agent, args.runs)
            return elapsed

        modes = [
            ("uninstrumented", lambda: time_runs(agent, args.runs)),
            ("voltline", volt),
            ("openinference", oi),
        ]
        for round_ in range(args.rounds):
            # Rotate the order each round so no mode always runs right after another.
            for name, fn in modes[round_ % 3 :] + modes[: round_ % 3]:
                times[name].append(fn())
                cpu[name].append(CPU_TIMES[-1])
        store.close()

    processor = "SimpleSpanProcessor" if args.processor == "simple" else "BatchSpanProcessor"
    print(
        f"python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}; "
        f"{args.rounds} rounds x {args.runs} agent runs per mode; "
        f"OpenInference via {processor} + InMemorySpanExporter"
    )
    print()
    print("| mode | ms per agent run (median round) | fastest..slowest round | wall vs uninstrumented "
          "(median round ratio) | CPU ms per run | CPU vs uninstrumented | spans per run |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    ratio, cpu_ratio = {}, {}
    for name, t in times.items():
        ms = [x / args.runs * 1e3 for x in t]
        cpu_ms = statistics.median(cpu[name]) / args.runs * 1e3
        ratio[name] = paired_ratio(t, times["uninstrumented"])
        cpu_ratio[name] = paired_ratio(cpu[name], cpu["uninstrumented"])
        spans = counts.get(name)
        print(
            f"| {name} | {statistics.median(ms):.2f} | {min(ms):.2f}..{max(ms):.2f} | {ratio[name]:.3f}x "
            f"| {cpu_ms:.2f} | {cpu_ratio[name]:.3f}x | {spans / args.runs if spans else '-'} |"
        )
    print()
    flush_ms = statistics.median(flushes) * 1e3
    print(f"voltline: flush when leaving each round's rollout ({args.runs} runs): median {flush_ms:.1f} ms")
    volt_added, oi_added = ratio["voltline"] - 1, ratio["openinference"] - 1
    checks = [
        (
            f"Voltline adds <= {TARGET_OVERHEAD:.0%} (wall)",
            f"{volt_added:+.1%}",
            volt_added <= TARGET_OVERHEAD,
        ),
        (
            "Voltline adds less than OpenInference (wall)",
            f"{volt_added:+.1%} vs {oi_added:+.1%}",
            volt_added < oi_added,
        ),
        (
            f"Voltline adds <= {TARGET_OVERHEAD:.0%} (CPU, final flush included)",
            f"{cpu_ratio['voltline'] - 1:+.1%}",
            cpu_ratio["voltline"] - 1 <= TARGET_OVERHEAD,
        ),
        (
            "Voltline adds less than OpenInference (CPU)",
            f"{cpu_ratio['voltline'] - 1:+.1%} vs {cpu_ratio['openinference'] - 1:+.1%}",
            cpu_ratio["voltline"] < cpu_ratio["openinference"],
        ),
    ]
    print()
    print("| target | measured | verdict |")
    print("|---|---|---|")
    for target, measured, ok in checks:
        print(f"| {target} | {measured} | {'PASS' if ok else 'FAIL'} |")
    sys.exit(0 if all(ok for *_, ok in checks) else 1)


if __name__ == "__main__":
    main()
