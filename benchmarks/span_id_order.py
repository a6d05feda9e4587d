"""Span insert cost as the spans table grows: random span ids against ascending ones.

    .venv/bin/python benchmarks/span_id_order.py                     # SQLite, 100k spans per case
    .venv/bin/python benchmarks/span_id_order.py --postgres          # PostgreSQL too
    .venv/bin/python benchmarks/span_id_order.py --spans 300000

Every span is a row keyed by its id. Random ids land on random pages of that primary-key index,
so once the index outgrows the page cache each insert reads and dirties a page no other insert
of its batch touches; ascending ids (what `voltline` mints since this benchmark: a random start
per process plus one per span) always land on the index's last page. Each case writes
`--spans` spans into an empty store through `Store.add_spans`, in batches of `--batch`, as the
emitter does, and reports per span, over the first and the last tenth of the run, the writing
thread's CPU time (the writer's cost in the agent's process) and the wall time (which on
PostgreSQL includes the server's work). The spans are the
LangChain benchmark's own: one agent run's 11 spans (a few hundred bytes of attributes each),
repeated with fresh ids and sequence numbers.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from _postgres import fresh_schema

import voltline
from voltline._ids import new_span_id
from voltline._models import EncodedSpan

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def template_rows(store: voltline.Store) -> list[tuple]:
    """One LangChain agent run's spans, as the plugin encodes them (rollout ids replaced later)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    os.environ.setdefault("VOLTLINE_PLUGINS", "langchain")
    import capture_overhead as bench

    from voltline._emitter import get_emitter

    emitter = get_emitter()
    captured: list[EncodedSpan] = []
    emitter._write_to = lambda _store, spans: (captured.extend(spans), spans)[1]  # type: ignore[method-assign]
    try:
        voltline.instrument()
        with voltline.rollout({"template": True}, store=store):
            bench.build_agent().invoke(bench.QUESTION)
    finally:
        voltline.uninstrument()
        del emitter._write_to
    return [span.row for span in captured]


def run_case(
    store: voltline.Store, rows: list[tuple], make_id: Callable[[], str], total: int, batch: int
) -> list[tuple[float, float]]:
    claim = store.start_rollout({"case": make_id.__name__}, worker_id="bench")
    rollout_id, attempt_id = claim.rollout.rollout_id, claim.attempt.attempt_id
    per_span: list[float] = []
    sequence = 0
    for _ in range(total // batch):
        spans = []
        for i in range(batch):
            row = rows[i % len(rows)]
            spans.append(EncodedSpan((make_id(), rollout_id, attempt_id, None, sequence, *row[5:])))
            sequence += 1
        cpu, wall = time.thread_time(), time.perf_counter()
        store.add_spans(spans)
        per_span.append(
            ((time.thread_time() - cpu) / batch * 1e6, (time.perf_counter() - wall) / batch * 1e6)
        )
    return per_span


def random_ids() -> str:
    return random.getrandbits(64).to_bytes(8, "big").hex()


def ascending_ids() -> str:
    return new_span_id()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=100_000, help="spans written per case")
    parser.add_argument("--batch", type=int, default=500, help="spans per add_spans call")
    parser.add_argument("--postgres", action="store_true", help="also run on PostgreSQL")
    parser.add_argument(
        "--postgres-url", default=os.environ.get("VOLTLINE_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    )
    args = parser.parse_args()

    print(f"{args.spans:,} spans per case in batches of {args.batch}; microseconds per span\n")
    print("| store | span ids | CPU, first tenth | CPU, last tenth | wall, first tenth | wall, last tenth "
          "| last tenth's wall vs random ids |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        rows = template_rows(voltline.connect(f"sqlite:///{Path(tmp) / 'template.db'}"))
        targets: list[tuple[str, Callable[[str], Any]]] = [
            ("SQLite", lambda case: nullcontext((f"sqlite:///{Path(tmp) / case}.db", None)))
        ]
        if args.postgres:
            targets.append(("PostgreSQL", lambda case: fresh_schema(args.postgres_url)))
        for label, place_for in targets:
            baseline = 0.0
            for make_id in (random_ids, ascending_ids):
                with place_for(make_id.__name__) as (url, _admin):
                    store = voltline.connect(url)
                    try:
                        costs = run_case(store, rows, make_id, args.spans, args.batch)
                    finally:
                        store.close()
                tenth = max(1, len(costs) // 10)
                cpu0, wall0 = (statistics.median(c[k] for c in costs[:tenth]) for k in (0, 1))
                cpu1, wall1 = (statistics.median(c[k] for c in costs[-tenth:]) for k in (0, 1))
                baseline = baseline or wall1
                name = "random" if make_id is random_ids else "ascending"
                cells = [
                    label,
                    name,
                    *(f"{x:.1f}" for x in (cpu0, cpu1, wall0, wall1)),
                    f"{wall1 / baseline:.2f}x",
                ]
                print(f"| {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
