"""Span ingest benchmark: how fast the store takes spans, and what an `emit_*` call costs.

    .venv/bin/python benchmarks/store_ingest.py                  # SQLite and PostgreSQL
    .venv/bin/python benchmarks/store_ingest.py --skip-postgres  # SQLite only

Measures, in one process and one run:

* `Store.add_spans` throughput on SQLite and PostgreSQL, one span per call and in batches,
  from ready `Span` objects and (separately) from plain dicts, which includes validation;
* the physical baseline: plain `sqlite3` `executemany` of the very same rows into a table made
  by the store's own migration (same columns, same indexes), WAL + synchronous=NORMAL, one
  transaction per batch, exactly like the store;
* the agent-thread cost of `voltline.emit_llm` / `voltline.emit_tool` inside an open
  `voltline.rollout` while the background writer runs, against a bare `deque.append`.

Every run uses a fresh temporary directory and a fresh PostgreSQL schema (dropped at the end).
See docs/benchmarks.md for results and what they mean.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _postgres import fresh_schema

import voltline
from voltline import Span
from voltline._emitter import get_emitter
from voltline._ids import new_span_id

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"

# Targets checked at the end of a run.
TARGET_BATCHED_SQLITE = 50_000  # spans/s
TARGET_RATIO_TO_RAW = 0.5
TARGET_EMIT_MEDIAN_US = 10.0

COLUMNS = (
    "span_id", "rollout_id", "attempt_id", "parent_id", "sequence", "kind", "name",
    "start_time", "end_time", "status", "attributes", "resources",
)  # fmt: skip

# ---------------------------------------------------------------------------------------------
# realistic spans: an LLM call (GenAI attributes, token ids, messages), then a tool call, ...

MODEL = "Qwen/Qwen2.5-1.5B-Instruct"
SYSTEM_PROMPT = (
    "You are a careful research assistant. Answer the user's question using the tools you are "
    "given. Think step by step, call `search` for facts you are not sure of, and `calculator` for "
    "arithmetic. When you are done, answer with a single short sentence."
)
QUESTIONS = [
    "What is the population of the capital of Australia, and how does it compare with Sydney's?",
    "How many days are there between the first moon landing and the fall of the Berlin Wall?",
    "Which element has the highest melting point, and what is that melting point in Fahrenheit?",
    "If a train leaves at 14:05 and travels 312 km at 104 km/h, when does it arrive?",
]
ANSWERS = [
    "Canberra has about 470,000 people, roughly a tenth of Sydney's 5.3 million.",
    "There are 7,417 days between 20 July 1969 and 9 November 1989.",
    "Tungsten melts at 3,422 degrees Celsius, which is about 6,192 degrees Fahrenheit.",
    "The train arrives at 17:05, three hours after it leaves.",
]
TOOL_RESULT = (
    "Canberra is the capital city of Australia. Founded following the federation of the colonies "
    "of Australia as the seat of government for the new nation, it is Australia's largest inland "
    "city and the eighth-largest city overall. Population (2021 census): 453,558."
)
PROMPT_TOKENS = 200
RESPONSE_TOKENS = 50


class SpanFactory:
    """Builds span dicts for one attempt: LLM and tool spans alternating, unique random ids."""

    def __init__(self, rollout_id: str, attempt_id: str, seed: int = 7) -> None:
        self.rollout_id = rollout_id
        self.attempt_id = attempt_id
        self.rng = random.Random(seed)
        # a pool of token ids to slice from: distinct lists per span without 250 randrange calls each
        self.pool = [self.rng.randrange(151_000) for _ in range(50_000)]
        self.sequence = 0

    def _ids(self, n: int) -> list[int]:
        start = self.rng.randrange(len(self.pool) - n)
        return self.pool[start : start + n]

    def llm_attributes(self, i: int) -> dict[str, Any]:
        q = i % len(QUESTIONS)
        return {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": "openai",
            "gen_ai.request.model": MODEL,
            "gen_ai.request.temperature": 0.7,
            "gen_ai.request.max_tokens": 512,
            "gen_ai.response.model": MODEL,
            "gen_ai.response.id": f"chatcmpl-{self.rng.getrandbits(64):016x}",
            "gen_ai.response.finish_reasons": ["stop"],
            "gen_ai.usage.input_tokens": PROMPT_TOKENS,
            "gen_ai.usage.output_tokens": RESPONSE_TOKENS,
            "gen_ai.input.messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": QUESTIONS[q]},
            ],
            "gen_ai.output.messages": [{"role": "assistant", "content": ANSWERS[q], "finish_reason": "stop"}],
            "prompt_token_ids": self._ids(PROMPT_TOKENS),
            "response_token_ids": self._ids(RESPONSE_TOKENS),
        }

    def tool_attributes(self, i: int) -> dict[str, Any]:
        return {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": "search",
            "gen_ai.tool.call.id": f"call_{self.rng.getrandbits(48):012x}",
            "gen_ai.tool.call.arguments": {"query": QUESTIONS[i % len(QUESTIONS)], "top_k": 3},
            "gen_ai.tool.call.result": TOOL_RESULT,
        }

    def dicts(self, n: int) -> list[dict[str, Any]]:
        out = []
        now = time.time()
        for i in range(n):
            llm = i % 2 == 0
            start = now + i * 0.01
            out.append({
                "span_id": new_span_id(),  # what the emit API uses
                "rollout_id": self.rollout_id,
                "attempt_id": self.attempt_id,
                "parent_id": None,
                "sequence": self.sequence,
                "kind": "llm" if llm else "tool",
                "name": f"chat {MODEL}" if llm else "execute_tool search",
                "start_time": start,
                "end_time": start + (0.8 if llm else 0.05),
                "status": "ok",
                "attributes": self.llm_attributes(i) if llm else self.tool_attributes(i),
                "resources": {"system_prompt": 3},
            })  # fmt: skip
            self.sequence += 1
        return out


# the same JSON text as the store writes (compact, strict, UTF-8 kept as is)
encode = json.JSONEncoder(allow_nan=False, separators=(",", ":"), ensure_ascii=False).encode


def to_row(d: dict[str, Any]) -> tuple[Any, ...]:
    """The row the store writes for span dict `d`, in COLUMNS order."""
    return (
        d["span_id"], d["rollout_id"], d["attempt_id"], d["parent_id"], d["sequence"], d["kind"], d["name"],
        d["start_time"], d["end_time"], d["status"], encode(d["attributes"]), encode(d["resources"]),
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# measurements


@dataclass
class Result:
    group: str
    name: str
    spans: int
    samples: list[float]  # seconds per run; empty: skipped
    note: str = ""

    @property
    def seconds(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None

    @property
    def rate(self) -> float:
        return self.spans / self.seconds if self.seconds else 0.0

    def us_per_span(self, seconds: float) -> float:
        return seconds / self.spans * 1e6


def timed(fn: Callable[[], None]) -> float:
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def batches(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def validated(dicts: Sequence[dict[str, Any]]) -> list[Span]:
    return [Span.model_validate(d) for d in dicts]


class StoreBench:
    """A store with one running attempt to add spans to."""

    def __init__(self, url: str, count: Callable[[], int]) -> None:
        self.store = voltline.connect(url)
        self.count = count
        claim = self.store.start_rollout({"benchmark": "store_ingest"}, worker_id="bench")
        self.factory = SpanFactory(claim.rollout.rollout_id, claim.attempt.attempt_id)
        self.store.add_spans(validated(self.factory.dicts(10)))  # connect, warm caches

    def add(self, spans: list[Any], per_call: int) -> float:
        """Seconds to store `spans`, `per_call` at a time; checks that all of them landed."""
        store, chunks = self.store, batches(spans, per_call)
        before = self.count()

        def run() -> None:
            for chunk in chunks:
                store.add_spans(chunk)

        seconds = timed(run)
        stored = self.count() - before
        if stored != len(spans):
            raise SystemExit(f"benchmark bug: {len(spans)} spans added but {stored} stored")
        return seconds


def bench_store(group: str, open_store: Callable[[], StoreBench], args: argparse.Namespace) -> list[Result]:
    """The three add_spans cases, each on a fresh store (file or emptied schema) per run."""

    def runs(n: int, per_call: int, repeat: int, from_dicts: bool) -> list[float]:
        samples = []
        for _ in range(repeat):
            bench = open_store()
            dicts = bench.factory.dicts(n)
            samples.append(bench.add(dicts if from_dicts else validated(dicts), per_call))
            bench.store.close()
        return samples

    n, size, rep = args.spans, args.batch, args.repeat
    return [
        Result(group, "one span per add_spans call", args.single_spans,
               runs(args.single_spans, 1, 1, False), "one run; a transaction per span"),
        Result(group, f"batched ({size} per call)", n,
               runs(n, size, rep, False), f"median of {rep}"),
        Result(group, f"batched ({size} per call), from dicts", n,
               runs(n, size, rep, True), f"median of {rep}; add_spans validates the dicts"),
    ]  # fmt: skip


def sqlite_count(path: Path) -> Callable[[], int]:
    def count() -> int:
        with sqlite3.connect(path) as conn:
            return conn.execute("SELECT count(*) FROM spans").fetchone()[0]

    return count


def bench_sqlite(tmp: Path, args: argparse.Namespace) -> list[Result]:
    files = iter(range(1_000_000))

    def fresh() -> Path:
        return tmp / f"store-{next(files)}.db"

    def open_store() -> StoreBench:
        path = fresh()
        return StoreBench(f"sqlite:///{path}", sqlite_count(path))

    results = bench_store("SQLite", open_store, args)

    # The physical baseline: the same rows, straight through sqlite3, into the same table.
    sql = f"INSERT INTO spans ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"

    def raw(encode_in_loop: bool) -> float:
        path = fresh()
        voltline.connect(f"sqlite:///{path}").close()  # the store's migration makes the table
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")  # what the store's connections set
        conn.execute("PRAGMA synchronous=NORMAL")
        factory = SpanFactory("ro-raw", "at-raw")
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, [to_row(d) for d in factory.dicts(10)])  # warm up like the store
        conn.execute("COMMIT")
        dicts = factory.dicts(args.spans)
        items: list[Any] = dicts if encode_in_loop else [to_row(d) for d in dicts]
        chunks = batches(items, args.batch)

        def run() -> None:
            for chunk in chunks:
                rows = [to_row(d) for d in chunk] if encode_in_loop else chunk
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(sql, rows)
                conn.execute("COMMIT")

        seconds = timed(run)
        stored = conn.execute("SELECT count(*) FROM spans").fetchone()[0] - 10
        conn.close()
        if stored != args.spans:
            raise SystemExit(f"benchmark bug: {args.spans} rows inserted but {stored} stored")
        return seconds

    rep = args.repeat
    results.append(Result("SQLite", f"raw sqlite3 executemany ({args.batch} per tx)", args.spans,
                          [raw(False) for _ in range(rep)],
                          f"median of {rep}; physical baseline, rows already encoded"))  # fmt: skip
    results.append(Result("SQLite", f"raw sqlite3 + stdlib json encoding ({args.batch} per tx)", args.spans,
                          [raw(True) for _ in range(rep)],
                          f"median of {rep}; baseline plus json.dumps of attributes/resources"))  # fmt: skip
    return results


def bench_postgres(base_url: str, args: argparse.Namespace) -> list[Result]:
    import psycopg

    try:
        conninfo = base_url.replace("postgresql+psycopg://", "postgresql://", 1)
        psycopg.connect(conninfo, connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        print(f"PostgreSQL at {base_url} unavailable ({exc}); skipping it (--skip-postgres to silence)")
        return [Result("PostgreSQL", "skipped: server unavailable", 0, [])]
    with fresh_schema(base_url) as (url, admin):
        schema = url.rsplit("%3D", 1)[1]

        def count() -> int:
            return admin.execute(f'SELECT count(*) FROM "{schema}".spans').fetchone()[0]

        def open_store() -> StoreBench:
            bench = StoreBench(url, count)  # the first one runs the migration in the new schema
            admin.execute(f'TRUNCATE "{schema}".spans')  # every run starts from an empty table
            return bench

        return bench_store("PostgreSQL", open_store, args)


def percentile(sorted_values: Sequence[int], p: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(p / 100 * len(sorted_values)))]


@dataclass
class Latency:
    name: str
    ns: list[int]

    def us(self, p: float | None = None) -> float:
        values = sorted(self.ns)
        if p is None:
            return statistics.median(values) / 1000
        return percentile(values, p) / 1000

    def max_us(self) -> float:
        return max(self.ns) / 1000


def bench_emit(tmp: Path, n: int) -> tuple[list[Latency], dict[str, int]]:
    """Per-call cost of emit_llm/emit_tool on the agent thread, with the writer running."""
    from time import perf_counter_ns

    store = voltline.connect(f"sqlite:///{tmp / 'emit.db'}")
    factory = SpanFactory("-", "-", seed=3)
    llm = factory.llm_attributes(0)
    tool = factory.tool_attributes(1)
    emit_llm, emit_tool = voltline.emit_llm, voltline.emit_tool
    before = voltline.emitter_stats()
    lat_llm = [0] * (n // 2)
    lat_tool = [0] * (n // 2)
    gc.collect()
    with voltline.rollout({"benchmark": "emit"}, store=store) as ctx:
        # Untimed warm-up: one writer batch worth of spans starts the writer thread and wakes it,
        # so it is busy validating and writing (holding the GIL at times) during the timed calls.
        warm_up = get_emitter().batch_size
        for _ in range(warm_up):
            emit_tool("warm-up", arguments={}, result="")
        for i in range(n // 2):
            t0 = perf_counter_ns()
            emit_llm(
                model=MODEL,
                input_messages=llm["gen_ai.input.messages"],
                output_messages=llm["gen_ai.output.messages"],
                prompt_token_ids=llm["prompt_token_ids"],
                response_token_ids=llm["response_token_ids"],
                input_tokens=PROMPT_TOKENS,
                output_tokens=RESPONSE_TOKENS,
                response_id=llm["gen_ai.response.id"],
            )
            t1 = perf_counter_ns()
            emit_tool(
                "search",
                arguments=tool["gen_ai.tool.call.arguments"],
                result=TOOL_RESULT,
                call_id=tool["gen_ai.tool.call.id"],
            )
            t2 = perf_counter_ns()
            lat_llm[i] = t1 - t0
            lat_tool[i] = t2 - t1
        rollout_id = ctx.rollout_id
        mid = voltline.emitter_stats()
        taken = mid["emitted"] - before["emitted"] - mid["buffered"]  # picked up by the writer so far
    # leaving the rollout flushed: every span is durable now
    after = voltline.emitter_stats()
    stored = sqlite_count(tmp / "emit.db")()
    store.close()
    counts = {k: after[k] - before[k] for k in ("emitted", "written", "dropped", "invalid")}
    counts.update(stored=stored, taken_during_loop=taken)
    if stored != 2 * (n // 2) + warm_up:
        raise SystemExit(f"benchmark bug: {2 * (n // 2) + warm_up} spans emitted but {stored} stored")

    # Baseline: append a tuple of the span's 12 fields to a deque, timed the same way.
    dq: deque[tuple[Any, ...]] = deque()
    span_id, now, ok, name = "0123456789abcdef", time.time(), "ok", f"chat {MODEL}"
    attrs, resources = llm, {}
    lat_deque = [0] * n
    lat_empty = [0] * n
    gc.collect()
    for i in range(n):
        t0 = perf_counter_ns()
        dq.append((span_id, rollout_id, "at", None, i, "llm", name, now, now, ok, attrs, resources))
        t1 = perf_counter_ns()
        lat_deque[i] = t1 - t0
    for i in range(n):
        t0 = perf_counter_ns()
        t1 = perf_counter_ns()
        lat_empty[i] = t1 - t0
    return [
        Latency("emit_llm (200 + 50 token ids, messages)", lat_llm),
        Latency("emit_tool", lat_tool),
        Latency("emit_llm and emit_tool together", lat_llm + lat_tool),
        Latency("baseline: deque.append of a 12-field tuple", lat_deque),
        Latency("empty timed region (timer overhead)", lat_empty),
    ], counts


# ---------------------------------------------------------------------------------------------
# report


def result_cells(r: Result) -> list[str]:
    if r.seconds is None:
        return [r.group, r.name, "—", "—", "—", "—", "—", r.note]
    spread = f"{r.us_per_span(min(r.samples)):.1f}-{r.us_per_span(max(r.samples)):.1f}"
    return [r.group, r.name, f"{r.spans:,}", f"{r.seconds:.3f}", f"{r.rate:,.0f}",
            f"{r.us_per_span(r.seconds):.1f}", spread if len(r.samples) > 1 else "", r.note]  # fmt: skip


def print_table(headers: Sequence[str], rows: list[Sequence[str]], right: Sequence[bool]) -> None:
    """A Markdown table (readable as plain text, pastable into docs)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)
            )
            + " |"
        )

    print(line(headers))
    print(
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if r else ("-" * (w + 2)) for w, r in zip(widths, right, strict=True)
        )
        + "|"
    )
    for row in rows:
        print(line(row))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=20_000, help="spans per batched case (default 20000)")
    parser.add_argument("--batch", type=int, default=1_000, help="spans per add_spans call (default 1000)")
    parser.add_argument(
        "--single-spans", type=int, default=None,
        help="spans for the one-per-call cases (default: --spans; each is a transaction)",
    )  # fmt: skip
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("VOLTLINE_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL,
        help="PostgreSQL database to benchmark in a fresh schema (default $VOLTLINE_TEST_POSTGRES_URL "
        f"or {DEFAULT_POSTGRES_URL})",
    )
    parser.add_argument("--skip-postgres", action="store_true", help="benchmark SQLite only")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each batched case, median reported (default 3)"
    )
    parser.add_argument("--emit-calls", type=int, default=20_000, help="emit calls to time (default 20000)")
    args = parser.parse_args(argv)
    if min(args.spans, args.batch, args.repeat) < 1 or args.emit_calls < 2:
        parser.error("--spans, --batch and --repeat must be >= 1, --emit-calls >= 2")
    args.single_spans = args.single_spans or args.spans

    print(
        f"voltline {voltline.__version__} · Python {platform.python_version()} · SQLite "
        f"{sqlite3.sqlite_version} · {cpu_model()} · {os.cpu_count()} CPUs · "
        f"{args.spans} spans, batches of {args.batch}"
    )
    with tempfile.TemporaryDirectory(prefix="voltline-bench-") as tmpdir:
        tmp = Path(tmpdir)
        # What building Span objects from dicts costs on its own, a batch at a time and let go
        # (as add_spans does), so that the number excludes keeping 20,000 of them alive.
        chunks = batches(SpanFactory("ro-c", "at-c", seed=4).dicts(args.spans), args.batch)

        def construct() -> None:
            for chunk in chunks:
                validated(chunk)

        results = [Result("Span", f"Span.model_validate(dict), {args.batch} at a time", args.spans,
                          [timed(construct) for _ in range(args.repeat)],
                          f"median of {args.repeat}; no store write")]  # fmt: skip
        print("SQLite ...", flush=True)
        results += bench_sqlite(tmp, args)
        if not args.skip_postgres:
            print("PostgreSQL ...", flush=True)
            results += bench_postgres(args.postgres_url, args)
        print("emit ...", flush=True)
        latencies, counts = bench_emit(tmp, args.emit_calls)

    print()
    print_table(
        ["store", "case", "spans", "seconds", "spans/s", "µs/span", "µs/span min-max", "note"],
        [result_cells(r) for r in results],
        [False, False, True, True, True, True, True, False],
    )
    by_name = {(r.group, r.name): r for r in results}
    sqlite_batched = by_name[("SQLite", f"batched ({args.batch} per call)")].rate
    raw = by_name[("SQLite", f"raw sqlite3 executemany ({args.batch} per tx)")].rate
    raw_json = by_name[("SQLite", f"raw sqlite3 + stdlib json encoding ({args.batch} per tx)")].rate
    ratio = sqlite_batched / raw
    print(f"\nbatched SQLite / raw sqlite3 baseline: {ratio:.2f}x")
    print(f"batched SQLite / raw sqlite3 + stdlib json encoding: {sqlite_batched / raw_json:.2f}x")

    print()
    print_table(
        ["agent-thread call", "calls", "median µs", "p99 µs", "max µs"],
        [
            [lat.name, f"{len(lat.ns):,}", f"{lat.us():.2f}", f"{lat.us(99):.2f}", f"{lat.max_us():,.0f}"]
            for lat in latencies
        ],
        [False, True, True, True, True],
    )
    print(
        f"emitter: {counts['emitted']:,} emitted (the writer had taken {counts['taken_during_loop']:,} "
        f"off the buffer when the timed calls ended), {counts['written']:,} written, "
        f"{counts['dropped']} dropped, {counts['invalid']} invalid; {counts['stored']:,} in the store"
    )
    emit_median = latencies[2].us()

    checks = [
        (f"batched SQLite >= {TARGET_BATCHED_SQLITE:,} spans/s",
         sqlite_batched >= TARGET_BATCHED_SQLITE, f"{sqlite_batched:,.0f}"),
        (f"batched SQLite >= {TARGET_RATIO_TO_RAW}x raw sqlite3",
         ratio >= TARGET_RATIO_TO_RAW, f"{ratio:.2f}x"),
        (f"emit median < {TARGET_EMIT_MEDIAN_US:g} µs",
         emit_median < TARGET_EMIT_MEDIAN_US, f"{emit_median:.2f} µs"),
    ]  # fmt: skip
    print()
    for label, ok, value in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {label}  ({value})")
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
