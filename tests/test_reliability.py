"""Reliability under concurrency, crashes and silent workers, on every backend."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from _sql import scalar

import voltline
from voltline import AttemptLost, Store

N_ROLLOUTS = 2000
N_WORKERS = 8


# (a) many workers claiming at once ---------------------------------------------------------
def claim_until_empty(url: str, worker_id: str, seed: int, start: Any, results: Any) -> None:
    """Child process: claim batches of 1..5 until the queue is empty; report what it got."""
    try:
        rng = random.Random(seed)
        store = voltline.connect(url)
        claimed: list[str] = []
        start.wait(120)
        while True:
            got = store.claim(worker_id, n=rng.randint(1, 5))
            if not got:
                break
            assert all(c.attempt.worker_id == worker_id for c in got)
            claimed.extend(c.rollout.rollout_id for c in got)
        store.close()
        results.put((worker_id, claimed, None))
    except BaseException as exc:  # report, so the parent fails with the reason
        results.put((worker_id, [], f"{type(exc).__name__}: {exc}"))


@pytest.mark.slow
def test_concurrent_claims_take_each_rollout_exactly_once(
    store: Store, store_url: str, database_url: str
) -> None:
    queued = {r.rollout_id for r in store.enqueue_many([{"input": i} for i in range(N_ROLLOUTS)])}
    assert len(queued) == N_ROLLOUTS

    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(N_WORKERS)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=claim_until_empty, args=(store_url, f"w{i}", i, start, results))
        for i in range(N_WORKERS)
    ]
    for p in procs:
        p.start()
    try:
        reports = [results.get(timeout=240) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    errors = [f"{w}: {err}" for w, _, err in reports if err]
    assert not errors, errors
    assert all(p.exitcode == 0 for p in procs)

    counts = Counter(rid for _, claimed, _ in reports for rid in claimed)
    assert set(counts) == queued
    assert [rid for rid, n in counts.items() if n != 1] == []
    assert sum(1 for _, claimed, _ in reports if claimed) >= 2  # the work really was shared
    assert scalar(database_url, "SELECT COUNT(*) FROM attempts") == N_ROLLOUTS
    running = store.query_rollouts(status="running", limit=N_ROLLOUTS + 1)
    assert len(running) == N_ROLLOUTS
    assert {r.num_attempts for r in running} == {1}
    assert store.query_rollouts(status="queued") == []


# (b) a process killed after flush() -----------------------------------------------------------
CHILD = textwrap.dedent(
    """
    import sys, time
    import voltline

    url, n = sys.argv[1], int(sys.argv[2])
    with voltline.rollout("crash test", store=url, heartbeat_timeout=1) as r:
        print("rollout", r.rollout_id, r.attempt_id, flush=True)
        for i in range(n):
            voltline.emit_tool(f"flushed-{i}", arguments={"i": i, "pad": "x" * 200})
        if not voltline.flush(timeout=60):
            sys.exit("flush timed out")
        print("flushed", flush=True)
        i = 0
        while True:  # keep the writer busy until the parent kills us
            voltline.emit_tool(f"after-{i}", arguments={"i": i})
            i += 1
            if i % 100 == 0:
                time.sleep(0.001)
    """
)


@pytest.mark.slow
def test_spans_flushed_before_a_kill_survive_it(store_url: str, tmp_path: Path) -> None:
    n = 500
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    stderr_path = tmp_path / "child.err"
    with open(stderr_path, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(script), store_url, str(n)], stdout=subprocess.PIPE, stderr=stderr, text=True
        )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().split()
        second = proc.stdout.readline().strip()
        assert first[:1] == ["rollout"] and second == "flushed", stderr_path.read_text()
        rollout_id, attempt_id = first[1], first[2]
        time.sleep(0.3)  # let unflushed writes be in flight when the kill lands
        assert proc.poll() is None, stderr_path.read_text()
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    if store_url.startswith("sqlite"):
        path = store_url.removeprefix("sqlite:///")
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        finally:
            conn.close()

    with voltline.connect(store_url, create=False) as store:
        spans = store.query_spans(attempt_id=attempt_id)
        assert [s.name for s in spans[:n]] == [f"execute_tool flushed-{i}" for i in range(n)]
        assert [s.attributes["gen_ai.tool.call.arguments"]["i"] for s in spans[:n]] == list(range(n))
        # batches commit whole and in order: what landed is a gapless prefix
        assert [s.sequence for s in spans] == list(range(len(spans)))
        assert all(s.name.startswith("execute_tool after-") for s in spans[n:])

        assert store.get_rollout(rollout_id).status == "running"
        (expired,) = store.expire_attempts(now=time.time() + 5)
        assert expired.attempt_id == attempt_id
        assert store.get_rollout(rollout_id).status == "failed"

        r = store.enqueue("after the crash")
        (claim,) = store.claim("survivor")
        assert claim.rollout.rollout_id == r.rollout_id
        store.add_spans(
            [
                {
                    "span_id": "post-crash",
                    "rollout_id": r.rollout_id,
                    "attempt_id": claim.attempt.attempt_id,
                    "kind": "custom",
                    "name": "post crash",
                    "start_time": time.time(),
                }
            ]
        )
        assert store.finish_attempt(claim.attempt.attempt_id).status == "succeeded"
        assert [s.span_id for s in store.query_spans(rollout_id=r.rollout_id)] == ["post-crash"]


# (c) workers that go silent --------------------------------------------------------------------
def test_silent_workers_are_expired_then_the_rollout_fails(store: Store) -> None:
    r = store.enqueue("task", heartbeat_timeout=0.3, max_attempts=2)

    (first,) = store.claim("worker-1")
    store.heartbeat(first.attempt.attempt_id)
    time.sleep(0.45)  # worker-1 stops heart-beating
    (expired,) = store.expire_attempts()
    assert expired.attempt_id == first.attempt.attempt_id
    assert expired.status == "unresponsive"
    requeued = store.get_rollout(r.rollout_id)
    assert requeued.status == "queued"
    assert "heartbeat" in (requeued.error or "")
    with pytest.raises(AttemptLost, match="unresponsive"):
        store.heartbeat(first.attempt.attempt_id)

    (second,) = store.claim("worker-2")
    assert second.rollout.rollout_id == r.rollout_id
    assert second.attempt.number == 2
    time.sleep(0.45)  # worker-2 goes silent too; the next claim notices
    assert store.claim("worker-3") == []

    failed = store.get_rollout(r.rollout_id)
    assert failed.status == "failed"
    assert failed.num_attempts == 2
    assert "heartbeat" in (failed.error or "")
    attempts = store.get_attempts(r.rollout_id)
    assert [(a.worker_id, a.status) for a in attempts] == [
        ("worker-1", "unresponsive"),
        ("worker-2", "unresponsive"),
    ]
    assert all("heartbeat" in (a.error or "") for a in attempts)
    with pytest.raises(AttemptLost):
        store.finish_attempt(second.attempt.attempt_id, "succeeded")
    assert store.get_rollout(r.rollout_id).status == "failed"
