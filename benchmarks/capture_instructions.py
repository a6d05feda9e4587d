"""Where LangChain capture costs go, in instructions counted by valgrind (load-independent).

    .venv/bin/python benchmarks/capture_instructions.py            # 5 modes x 2 run counts, ~15-30 min
    .venv/bin/python benchmarks/capture_instructions.py --runs 10,60 --jobs 2

CPU-time ratios on a shared 2-core machine move by several points from run to run; the number
of instructions the process executes does not. Each mode runs the agent of
`capture_overhead.py` (a LangGraph agent over the scripted model, 11 LangChain runs per agent
run) under `valgrind --tool=callgrind` twice, with a small and a large number of agent runs;
the difference divided by the difference in runs is the cost of one agent run, start-up cancelled
out. Modes add one layer each:

* **plain**: LangChain and LangGraph alone.
* **null-handler**: a callback handler whose methods do nothing, installed like Voltline's:
  LangChain's own dispatch cost for having any handler at all.
* **handler**: Voltline's handler, spans built and handed to an emitter that drops them.
* **encoded**: the emitter checks and encodes each span and buffers it; the writer takes
  them but writes nothing.
* **full**: `voltline.instrument()` writing to a SQLite file.

Every run uses the same string-hash seed (PYTHONHASHSEED=0): with random seeds, dict and set
layouts differ from process to process and the same code's count moved by about 1% of a run;
with a fixed seed, two identical runs differ by about 0.01%.

Under valgrind everything runs about 50 times slower, which would shrink the writer's batches
(it wakes every 0.2 s of wall time) and inflate its per-batch costs, so here the writer writes
only when flushed at the end, as one batch; in a normal-speed run, batches hold hundreds of
spans. Instructions are not time (a cache miss costs more than an add), but across these
modes, which run the same kind of Python code, they track CPU time closely.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

MODES = ("plain", "null-handler", "handler", "encoded", "full")
HERE = Path(__file__).resolve().parent


def child(mode: str, runs: int) -> None:
    """Run inside valgrind: warm up, then `runs` agent runs in the given mode."""
    os.environ.setdefault("VOLTLINE_PLUGINS", "langchain")
    sys.path.insert(0, str(HERE))
    import capture_overhead as bench

    agent = bench.build_agent()
    bench.time_runs(agent, 5)
    if mode == "plain":
        bench.time_runs(agent, runs)
        return
    if mode == "null-handler":
        from contextvars import ContextVar

        from langchain_core.callbacks import BaseCallbackHandler
        from langchain_core.tracers import context as lc_context

        class Null(BaseCallbackHandler):
            run_inline = True
            raise_error = False
            # As Voltline's handler does: without this, LangChain falls back to on_llm_start
            # and formats every message as text first, a cost no real handler pays.
            ignore_llm = ignore_chain = ignore_agent = ignore_retriever = ignore_chat_model = False
            ignore_retry = ignore_custom_event = False

            def on_chat_model_start(self, *args: object, **kwargs: object) -> None:
                pass

        handler = Null()
        lc_context.register_configure_hook(ContextVar("null", default=handler), True, Null)
        bench.time_runs(agent, runs)
        return

    from voltline_langchain import handler as handler_module

    import voltline
    from voltline._emitter import get_emitter

    emitter = get_emitter()
    emitter.interval = 10_000  # write only when flushed: see the module docstring
    # Likewise the handler's time bound on held-back spans: an agent run takes ~4 ms, far below
    # it, but ~200 ms under valgrind, where the bound would hand spans over mid-run, at points
    # that vary from one valgrind run to the next.
    handler_module.PENDING_SECONDS = 1e9
    if mode == "handler":
        emitter.submit_many = lambda spans: len(spans)  # type: ignore[method-assign]
    elif mode == "encoded":
        emitter._write_to = lambda store, spans: spans  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as tmp:
        store = voltline.connect(f"sqlite:///{Path(tmp) / 'bench.db'}")
        voltline.instrument()
        with voltline.rollout({"bench": runs}, store=store):
            bench.time_runs(agent, 5)
            voltline.flush()
            bench.time_runs(agent, runs)
            voltline.flush()
        store.close()


def count(mode: str, runs: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
             sys.executable, __file__, "--child", mode, str(runs)],
            capture_output=True, text=True, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )  # fmt: skip
        found = re.search(r"Collected : (\d+)", proc.stderr)
        if proc.returncode != 0 or not found:
            raise SystemExit(f"valgrind run {mode} x{runs} failed:\n{proc.stderr[-2000:]}")
        return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="10,60", help="the two agent-run counts per mode (small,large)")
    parser.add_argument("--jobs", type=int, default=2, help="valgrind processes at once")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    small, large = (int(x) for x in args.runs.split(","))
    jobs = [(mode, n) for mode in MODES for n in (small, large)]
    print(f"{len(jobs)} valgrind runs, {args.jobs} at a time (each takes minutes)...", file=sys.stderr)
    with ThreadPoolExecutor(args.jobs) as pool:
        totals = dict(zip(jobs, pool.map(lambda job: count(*job), jobs), strict=True))
    per_run = {m: (totals[(m, large)] - totals[(m, small)]) / (large - small) for m in MODES}
    base = per_run["plain"]
    print(f"instructions per agent run ({large} - {small} runs), python {sys.version.split()[0]}\n")
    print("| mode | M instructions per agent run | vs plain | this layer adds |")
    print("|---|---|---|---|")
    previous = base
    for mode in MODES:
        value = per_run[mode]
        print(f"| {mode} | {value / 1e6:.2f} | {value / base - 1:+.1%} | {(value - previous) / base:+.1%} |")
        previous = value


if __name__ == "__main__":
    main()
