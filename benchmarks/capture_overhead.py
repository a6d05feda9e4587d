"""Capture overhead on a LangChain agent: uninstrumented, Voltline, and OpenInference.

    .venv/bin/python benchmarks/capture_overhead.py                    # 320 rounds x 10 runs, 16 processes
    .venv/bin/python benchmarks/capture_overhead.py --rounds 1600 --processes 40   # a tighter interval

The agent is a real LangGraph agent (`langchain.agents.create_agent`, two tools, three model
turns, so 11 LangChain runs per agent run) over the scripted chat model, so the numbers are the
framework's own cost plus capture's, with no model time to hide behind: the worst case for an
overhead ratio. The scripted model binds its tools as provider models do (converted to the
OpenAI schema, and create_agent binds them for every model call), so each model call hands the
callbacks its tool definitions, as a real agent's does. Each round times `--runs` agent runs in
every mode, modes interleaved (order rotated) so that machine noise hits them alike. Rounds are
short (10 runs, well under a second per mode) and many: on this shared VM the same agent run
takes anywhere from 4 to 9 ms from one tenth of a second to the next, so only runs compared
within a fraction of a second cancel the machine's drift.

The rounds are split over `--processes` fresh processes, run one after another. One process's
median is not the answer: on this machine, single processes of the same code, one after another,
read Voltline at +12.9% to +17.2% (150 rounds each), well outside each one's own interval, and
60-round processes with the same hash seed at +9.9% and +14.0%: the machine drifts over minutes.
Of 40 processes in one run, each process's own ratio ranged from +11.7% to +20.9%, so the default
takes 16 processes of 20 rounds (on a quiet box about 3 minutes and a 95% interval about 2 points
wide; on a slow, noisy one 4 to 5 minutes and 6 to 8 points).
A mode's ratio to uninstrumented is the median over all rounds of that round's ratio, with a 95%
interval from a two-level bootstrap (processes resampled, then rounds within them).

* **uninstrumented**: LangChain and LangGraph alone.
* **voltline**: `voltline.instrument()` (the voltline-langchain plugin), runs inside one
  `voltline.rollout` per round writing to a SQLite file. The round's time ends with a
  `voltline.flush()` (every span of the round durable in SQLite), so all of capture's work, the
  background writer's included, is inside both its wall and its CPU time.
* **openinference**: `openinference-instrumentation-langchain`'s `LangChainInstrumentor`
  exporting to an OpenTelemetry `InMemorySpanExporter` through a `SimpleSpanProcessor`
  (synchronous export on span end; in memory, so export itself is almost free), or through a
  `BatchSpanProcessor` with `--processor batch`.

Targets: Voltline adds at most 15% to the uninstrumented time, and less than OpenInference adds.

One run judges one day. The reading moves from day to day (a fresh VM each session) by more
than a run's own interval, so `--record` appends a full run's result (1600 rounds over 40
processes or more) to `capture_overhead_history.csv` beside this script, and `--history` judges
the recorded readings of the agent measured now (`AGENT`) together (`_readings.py` says how).
An agent's readings are judged as one code: when the capture path changes by more than the
noise of `capture_instructions.py`, the agent's old rows no longer describe it. Relabel their
`agent` (say, "tools-bound before <commit>") rather than deleting them: they still count towards
the spread between readings, but are no longer judged; then record the new code afresh.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("VOLTLINE_PLUGINS", "langchain")  # other frameworks' plugins stay out

from _readings import print_history, record, verdict
from langchain.agents import create_agent
from langchain_core.tools import tool
from tqdm import tqdm
from voltline_langchain.testing import ScriptedChatModel, reply

import voltline

TARGET_OVERHEAD = 0.15
BOOTSTRAP = 2000  # resamples for the interval of a median ratio
MODES = ("uninstrumented", "voltline", "openinference")
QUESTION = {"messages": [("user", "What is (3 + 4) * 5?")]}
HISTORY = Path(__file__).with_name("capture_overhead_history.csv")
RECORD_ROUNDS, RECORD_PROCESSES = 1600, 40  # the least a run must do to be recorded
# The agent measured, as the history names it: readings of another agent are listed, not judged.
# "tool-less" was the scripted model before it bound its tools as provider models do.
AGENT = "tools-bound"


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


def time_runs(agent: Any, runs: int, finish: Callable[[], object] | None = None) -> float:
    """Wall-clock seconds for `runs` agent runs and then `finish()`, the work a mode still owes
    for them (Voltline's writes, OpenInference's exports); CPU seconds go to CPU_TIMES."""
    gc.collect()
    cpu = time.process_time()
    started = time.perf_counter()
    for _ in range(runs):
        out = agent.invoke(QUESTION)
    if finish is not None:
        finish()
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
            # A batch processor's pending exports are the mode's work too, as Voltline's writes are.
            elapsed = time_runs(agent, runs, finish=self.provider.force_flush)
        finally:
            self.instrumentor.uninstrument()
        spans = len(self.exporter.get_finished_spans())
        self.exporter.clear()
        return elapsed, spans


def run_voltline(agent: Any, runs: int, store: voltline.Store) -> tuple[float, int]:
    voltline.instrument()
    try:
        before = voltline.emitter_stats()["written"]
        with voltline.rollout({"bench": runs}, store=store):
            # Timed up to every span of these runs being durable in SQLite: the writer's work counts.
            elapsed = time_runs(agent, runs, finish=voltline.flush)
        spans = voltline.emitter_stats()["written"] - before
    finally:
        voltline.uninstrument()
    return elapsed, spans


def worker(rounds: int, runs: int, processor: str, label: str) -> dict[str, Any]:
    """One process's rounds: per mode, the wall and CPU seconds of each round, and spans per run."""
    agent = build_agent()
    time_runs(agent, 20)  # warm-up: imports, caches, code paths
    openinference = OpenInference(processor)
    times: dict[str, list[float]] = {name: [] for name in MODES}
    cpu: dict[str, list[float]] = {name: [] for name in MODES}
    counts: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = voltline.connect(f"sqlite:///{Path(tmp) / 'bench.db'}")
        run_voltline(agent, 10, store)  # warm-up of the writer thread and the store
        openinference.run(agent, 10)

        def volt() -> float:
            elapsed, counts["voltline"] = run_voltline(agent, runs, store)
            return elapsed

        def oi() -> float:
            elapsed, counts["openinference"] = openinference.run(agent, runs)
            return elapsed

        modes: list[tuple[str, Callable[[], float]]] = [
            ("uninstrumented", lambda: time_runs(agent, runs)),
            ("voltline", volt),
            ("openinference", oi),
        ]
        for round_ in tqdm(range(rounds), desc=label, unit="round", file=sys.stderr):
            # Rotate the order each round so no mode always runs right after another.
            for name, fn in modes[round_ % 3 :] + modes[: round_ % 3]:
                times[name].append(fn())
                cpu[name].append(CPU_TIMES[-1])
        store.close()
    return {"times": times, "cpu": cpu, "spans": {k: v / runs for k, v in counts.items()}}


def round_ratios(mode: list[list[float]], base: list[list[float]]) -> list[list[float]]:
    """Per process, each round's mode / base (times of the same round)."""
    return [[m / b for m, b in zip(ms, bs, strict=True)] for ms, bs in zip(mode, base, strict=True)]


def pooled_ratio(mode: list[list[float]], base: list[list[float]]) -> tuple[float, float, float]:
    """The median, over every round of every process, of mode / base within the round, and a 95%
    interval of it from a two-level bootstrap: processes resampled, then rounds within each (a
    fixed seed, so the same times give the same interval). Resampling processes carries the
    difference between processes into the interval, which rounds of one process cannot show."""
    groups = round_ratios(mode, base)
    rng = random.Random(0)
    medians = []
    for _ in range(BOOTSTRAP):
        sample: list[float] = []
        for group in rng.choices(groups, k=len(groups)):
            sample += rng.choices(group, k=len(group))
        medians.append(statistics.median(sample))
    medians.sort()
    pooled = [r for group in groups for r in group]
    return statistics.median(pooled), medians[BOOTSTRAP // 40], medians[BOOTSTRAP - 1 - BOOTSTRAP // 40]


def source_commit() -> str:
    """`run@<commit>` for the code measured, `+dirty` when the checkout has uncommitted changes."""
    git = ["git", "-C", str(Path(__file__).resolve().parent)]
    try:
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run([*git, "status", "--porcelain", "-uno"], capture_output=True, text=True)
    except OSError:
        return "run@unknown"
    if head.returncode or dirty.returncode:
        return "run@unknown"
    return f"run@{head.stdout.strip()}{'+dirty' if dirty.stdout.strip() else ''}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=320, help="rounds in all, split over the processes")
    parser.add_argument("--processes", type=int, default=16, help="fresh processes, run one after another")
    parser.add_argument("--runs", type=int, default=10, help="agent runs per mode per round")
    parser.add_argument(
        "--processor", choices=["simple", "batch"], default="simple",
        help="OpenInference's span processor: SimpleSpanProcessor or BatchSpanProcessor",
    )  # fmt: skip
    parser.add_argument(
        "--record", action="store_true",
        help=f"append this run's result to {HISTORY.name} and judge the recorded readings together",
    )  # fmt: skip
    parser.add_argument(
        "--history", action="store_true", help=f"judge the readings recorded in {HISTORY.name}, run nothing"
    )
    # A child process: its rounds, as JSON on stdout.
    parser.add_argument("--worker", metavar="LABEL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.rounds, args.runs, args.processor, args.worker)))
        return
    if args.history:
        sys.exit(0 if print_history(HISTORY, AGENT, TARGET_OVERHEAD) else 1)
    if args.processes < 1 or args.rounds < args.processes:
        parser.error("--processes must be at least 1 and at most --rounds")
    full = args.rounds >= RECORD_ROUNDS and args.processes >= RECORD_PROCESSES
    standard = args.runs == parser.get_default("runs") and args.processor == parser.get_default("processor")
    if args.record and not (full and standard):
        parser.error(
            f"--record takes only full runs (--rounds {RECORD_ROUNDS} --processes {RECORD_PROCESSES} or "
            "more, the default --runs and --processor), so that recorded readings compare"
        )

    results = []
    for i in range(args.processes):
        rounds = args.rounds // args.processes + (i < args.rounds % args.processes)
        child = subprocess.run(
            [sys.executable, __file__, "--worker", f"process {i + 1}/{args.processes}",
             "--rounds", str(rounds), "--runs", str(args.runs), "--processor", args.processor],
            stdout=subprocess.PIPE, text=True, check=True,
        )  # fmt: skip
        results.append(json.loads(child.stdout))

    times = {name: [r["times"][name] for r in results] for name in MODES}
    cpu = {name: [r["cpu"][name] for r in results] for name in MODES}
    processor = "SimpleSpanProcessor" if args.processor == "simple" else "BatchSpanProcessor"
    print(
        f"python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}; "
        f"{args.rounds} rounds x {args.runs} agent runs per mode, over {args.processes} processes; "
        f"OpenInference via {processor} + InMemorySpanExporter"
    )
    print()
    print(
        "| mode | ms per agent run (median round) | fastest..slowest round | wall vs uninstrumented "
        "(median round ratio, 95% interval) | CPU ms per run | CPU vs uninstrumented | spans per run |"
    )
    print("|---|---|---|---|---|---|---|")
    ratio, cpu_ratio, median_ms = {}, {}, {}
    for name in MODES:
        ms = [x / args.runs * 1e3 for t in times[name] for x in t]
        median_ms[name] = statistics.median(ms)
        cpu_ms = statistics.median(x for c in cpu[name] for x in c) / args.runs * 1e3
        ratio[name] = pooled_ratio(times[name], times["uninstrumented"])
        cpu_ratio[name] = pooled_ratio(cpu[name], cpu["uninstrumented"])
        spans = results[0]["spans"].get(name)
        print(
            f"| {name} | {median_ms[name]:.2f} | {min(ms):.2f}..{max(ms):.2f} "
            f"| {_interval(ratio[name])} | {cpu_ms:.2f} | {_interval(cpu_ratio[name])} "
            f"| {spans if spans else '-'} |"
        )
    print()
    # Each process's own median round ratio: how far apart fresh processes land.
    for name in ("voltline", "openinference"):
        each = [statistics.median(group) for group in round_ratios(times[name], times["uninstrumented"])]
        print(f"{name} adds (wall), each process: {', '.join(f'{r - 1:+.1%}' for r in each)}")
    print()
    checks = []
    for measure, ratios in (("wall", ratio), ("CPU", cpu_ratio)):
        (volt, *volt_ci), (oi, *oi_ci) = ratios["voltline"], ratios["openinference"]
        checks.append((
            f"Voltline adds <= {TARGET_OVERHEAD:.0%} ({measure})",
            f"{volt - 1:+.1%} ({volt_ci[0] - 1:+.1%}..{volt_ci[1] - 1:+.1%})",
            verdict(volt_ci[0] - 1, volt_ci[1] - 1, TARGET_OVERHEAD),
        ))  # fmt: skip
        checks.append((
            f"Voltline adds less than OpenInference ({measure})",
            f"{volt - 1:+.1%} vs {oi - 1:+.1%}",
            "PASS" if volt_ci[1] < oi_ci[0] else "UNSETTLED" if volt < oi else "FAIL",
        ))  # fmt: skip
    print("A target is PASS when the whole 95% interval meets it, FAIL when none of it does, else UNSETTLED.")
    print()
    print("| target | measured (95% interval) | verdict |")
    print("|---|---|---|")
    for target, measured, outcome in checks:
        print(f"| {target} | {measured} | {outcome} |")
    if args.record:
        row: dict[str, Any] = {
            "recorded": time.strftime("%Y-%m-%d"), "source": source_commit(), "agent": AGENT,
            "python": platform.python_version(), "rounds": args.rounds, "processes": args.processes,
            "uninstrumented_ms": f"{median_ms['uninstrumented']:.2f}",
            "openinference_wall": f"{ratio['openinference'][0] - 1:.3f}",
        }  # fmt: skip
        for measure, ratios in (("wall", ratio), ("cpu", cpu_ratio)):
            for suffix, value in zip(("", "_low", "_high"), ratios["voltline"], strict=True):
                row[f"voltline_{measure}{suffix}"] = f"{value - 1:.3f}"
        record(HISTORY, row)
        print()
        print_history(HISTORY, AGENT, TARGET_OVERHEAD)
    sys.exit(0 if all(outcome == "PASS" for *_, outcome in checks) else 1)


def _interval(r: tuple[float, float, float]) -> str:
    return f"{r[0]:.3f}x ({r[1]:.3f}..{r[2]:.3f})"


if __name__ == "__main__":
    main()
