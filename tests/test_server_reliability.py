"""The store server under faults, with real processes: `voltline store serve` killed with
SIGKILL during ingest, stopped for 10 s while an agent emits, and 8 workers draining 2,000
rollouts over HTTP while some of them go silent."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import voltline
from voltline import StoreUnavailable
from voltline._httpstore import HttpStore

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`voltline store serve` in a child process, which tests kill and start again."""

    def __init__(self, db_url: str, log: Path) -> None:
        self.db_url = db_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServerProcess:
        command = [sys.executable, "-m", "voltline", "store", "serve", "--db", self.db_url,
                   "--port", str(self.port), "--log-level", "warning"]  # fmt: skip
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise AssertionError("server did not come up")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=60)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGTERM)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/store.db"
        voltline.connect(url).close()  # migrated before several server lives share it
        return url
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def server(db_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(db_url, tmp_path / "server.log").start()
    try:
        yield srv
    finally:
        srv.stop()


# SIGKILL during heavy ingest ------------------------------------------------------------------------
BATCH = 200
SENDERS = 4


def test_every_acknowledged_span_survives_a_sigkill_of_the_server(server: ServerProcess, db_url: str) -> None:
    with voltline.connect(db_url) as db:
        claims = [db.start_rollout(f"ingest {i}") for i in range(SENDERS)]
    acked: list[list[str]] = [[] for _ in range(SENDERS)]
    sent: list[list[list[str]]] = [[] for _ in range(SENDERS)]
    enough = threading.Barrier(SENDERS + 1)

    def sender(k: int) -> None:
        c = claims[k]
        # No spool: an acknowledgment here is the server's word that the batch is committed.
        store = HttpStore(server.url, spool=False, retries=0)
        n = 0
        try:
            while True:
                ids = [f"w{k}-{n + i}" for i in range(BATCH)]
                batch = [
                    {"span_id": s, "rollout_id": c.rollout.rollout_id, "attempt_id": c.attempt.attempt_id,
                     "sequence": n + i, "kind": "llm", "name": "call", "start_time": time.time(),
                     "attributes": {"prompt_token_ids": list(range(64)), "i": n + i}}
                    for i, s in enumerate(ids)
                ]  # fmt: skip
                sent[k].append(ids)
                store.add_spans(batch)
                acked[k].extend(ids)
                n += BATCH
                if n == 10 * BATCH:
                    enough.wait(60)
        except StoreUnavailable:
            return  # the server is gone
        finally:
            store.close()

    threads = [threading.Thread(target=sender, args=(k,)) for k in range(SENDERS)]
    for t in threads:
        t.start()
    enough.wait(120)  # every sender has had 10 batches acknowledged and keeps sending
    server.signal(signal.SIGKILL)
    for t in threads:
        t.join(60)
    assert all(not t.is_alive() for t in threads)

    server.start()
    with HttpStore(server.url, spool=False) as store:
        for k, c in enumerate(claims):
            stored = {s.span_id for s in store.query_spans(rollout_id=c.rollout.rollout_id)}
            assert len(acked[k]) >= 10 * BATCH
            assert set(acked[k]) <= stored, (
                f"sender {k} lost {len(set(acked[k]) - stored)} acknowledged spans"
            )
            # A batch is one transaction: never half of one, even the one cut by the kill.
            for ids in sent[k]:
                assert len(stored & set(ids)) in (0, BATCH)


# the server down for 10 seconds --------------------------------------------------------------------------
AGENT = textwrap.dedent(
    """
    import os, sys, time
    import voltline

    url, stop_file = sys.argv[1], sys.argv[2]
    with voltline.rollout("keeps emitting", store=url) as r:
        print("rollout", r.rollout_id, flush=True)
        n = 0
        while not os.path.exists(stop_file):
            voltline.emit_tool(f"tool-{n}", arguments={"n": n}, result=n * 2)
            n += 1
            time.sleep(0.005)
        if not voltline.flush(timeout=120):
            sys.exit("flush timed out")
    if not r.store.drain(timeout=120):
        sys.exit("spool not drained")
    print("emitted", n, voltline.emitter_stats(), flush=True)
    """
)


def test_spans_emitted_while_the_server_is_down_arrive_after_it_restarts(
    server: ServerProcess, tmp_path: Path
) -> None:
    env = {**os.environ, "VOLTLINE_SPOOL_DIR": str(tmp_path / "spool")}
    agent = subprocess.Popen(
        [sys.executable, "-c", AGENT, server.url, str(tmp_path / "stop")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env, text=True,
    )  # fmt: skip
    assert agent.stdout is not None
    rollout_id = agent.stdout.readline().split()[1]
    time.sleep(1.5)  # some spans go straight in
    server.signal(signal.SIGTERM)
    time.sleep(10)  # the agent keeps emitting into the spool
    server.start()
    time.sleep(1)  # and some after the restart
    (tmp_path / "stop").touch()
    out, err = agent.communicate(timeout=180)
    assert agent.returncode == 0, err[-3000:]
    emitted = int(out.split("emitted ")[1].split()[0])
    stats: dict[str, Any] = eval(out.split(" ", 2)[2])  # the agent printed its emitter_stats() dict
    assert stats["write_errors"] == 0 and stats["dropped"] == 0

    with HttpStore(server.url, spool=False) as store:
        got = store.query_spans(rollout_id=rollout_id)
        assert store.get_rollout(rollout_id).status == "succeeded", err[-3000:]
    assert emitted > 1000
    assert sorted(s.name for s in got) == sorted(f"execute_tool tool-{n}" for n in range(emitted))
    assert sorted(s.sequence for s in got) == list(range(emitted))
    assert list((tmp_path / "spool").glob("*.batch*")) == []


# 8 workers over HTTP ---------------------------------------------------------------------------------------
N_ROLLOUTS, N_WORKERS, SILENT = 2000, 8, 10


def test_eight_http_workers_drain_2000_rollouts_exactly_once(server: ServerProcess, tmp_path: Path) -> None:
    """Each rollout is claimed exactly once, except the silent ones: their workers stop
    heart-beating, so each attempt expires, is retried, and after max_attempts fails."""
    with HttpStore(server.url, spool=False) as store:
        hang = {"input": {"silent": True}, "heartbeat_timeout": 0.5, "max_attempts": 2}
        silent = {r.rollout_id for r in store.enqueue_many([hang] * SILENT)}
        work = [
            {"input": {"i": i}, "heartbeat_timeout": 30, "max_attempts": 2}
            for i in range(N_ROLLOUTS - SILENT)
        ]
        normal = {r.rollout_id for r in store.enqueue_many(work)}
    claimed: list[list[str]] = [[] for _ in range(N_WORKERS)]
    errors: list[BaseException] = []
    start = threading.Barrier(N_WORKERS)

    def worker(k: int) -> None:
        store = HttpStore(server.url, spool=False)
        try:
            start.wait(60)
            while True:
                got = store.claim(f"w{k}", n=1)
                if not got:
                    if not store.query_rollouts(status=["queued", "running"], limit=1):
                        return
                    time.sleep(0.1)  # silent attempts are still running out their heartbeats
                    continue
                c = got[0]
                claimed[k].append(c.rollout.rollout_id)
                if c.rollout.input.get("silent"):
                    continue  # this worker "hangs": no heartbeat, no finish
                store.heartbeat(c.attempt.attempt_id)
                store.finish_attempt(c.attempt.attempt_id, "succeeded")
        except BaseException as exc:
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(N_WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    assert not errors, errors
    assert all(not t.is_alive() for t in threads)

    counts = Counter(rid for got in claimed for rid in got)
    assert {rid for rid, n in counts.items() if n == 1} == normal
    assert {rid for rid, n in counts.items() if n == 2} == silent
    assert sum(1 for got in claimed if got) >= 2  # the work really was shared
    with HttpStore(server.url, spool=False) as store:
        done = store.query_rollouts(status="succeeded", limit=N_ROLLOUTS)
        assert {r.rollout_id for r in done} == normal and {r.num_attempts for r in done} == {1}
        failed = store.query_rollouts(status="failed", limit=N_ROLLOUTS)
        assert {r.rollout_id for r in failed} == silent
        for r in failed:
            attempts = store.get_attempts(r.rollout_id)
            assert [a.status for a in attempts] == ["unresponsive", "unresponsive"]
            assert "heartbeat" in (r.error or "")
