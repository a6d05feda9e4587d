"""Span ingest over HTTP: Voltline's store server against Agent Lightning 0.3.0's, same run.

    .venv/bin/python benchmarks/server_ingest.py                       # both, 1 and 32 clients
    .venv/bin/python benchmarks/server_ingest.py --skip-agentlightning # Voltline only

* Voltline: `voltline store serve` (a real server process) in front of a fresh SQLite file
  (durable: WAL, every acknowledged batch committed). Clients are `voltline.connect(url)`
  stores calling `add_spans`, in batches (how the emitter sends) and one span per request.
* Agent Lightning 0.3.0: `agentlightning==0.3.0` from PyPI, installed by this script into its
  own virtual environment under the cache folder (never into Voltline's); its server is
  `agl store` (the in-memory store: its only built-in backend besides MongoDB) and its
  clients are `LightningStoreClient.add_span` (its client API sends one span per request).
* "N clients" are N concurrent senders: spread over up to 4 client processes (threads in
  Voltline's, asyncio tasks in Agent Lightning's), each with its own store client. Every
  sender sends for `--seconds`; the rate is acknowledged spans / wall time. Voltline's stored
  span count is checked against its acknowledgments afterwards.
* Both get the same spans: LLM calls (GenAI attributes, messages as JSON text, 200 prompt and
  50 response token ids) alternating with tool calls, as flat attributes both accept.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import random
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any

AGL_VERSION = "0.3.0"
TARGET_RATIO = 20.0
MAX_CLIENT_PROCESSES = 4
MODEL = "Qwen/Qwen2.5-1.5B-Instruct"


def span_attributes(i: int, rng: random.Random) -> tuple[str, dict[str, Any]]:
    """The name and flat attributes of the i-th span of an agent loop: LLM, tool, LLM, ..."""
    if i % 2 == 0:
        messages = [
            {"role": "system", "content": "You are a careful assistant. Think, then answer briefly."},
            {"role": "user", "content": f"Question {i}: what is {i} * 7 + 3? Show the steps."},
        ]
        return f"chat {MODEL}", {
            "gen_ai.operation.name": "chat", "gen_ai.request.model": MODEL, "gen_ai.provider.name": "vllm",
            "gen_ai.usage.input_tokens": 200, "gen_ai.usage.output_tokens": 50,
            "gen_ai.response.id": f"chatcmpl-{i}",
            "gen_ai.input.messages": json.dumps(messages),
            "gen_ai.output.messages": json.dumps([{"role": "assistant", "content": f"{i * 7 + 3}, as ..."}]),
            "prompt_token_ids": [rng.randrange(151_000) for _ in range(200)],
            "response_token_ids": [rng.randrange(151_000) for _ in range(50)],
        }  # fmt: skip
    return "execute_tool calculator", {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "calculator",
        "gen_ai.tool.call.id": f"call-{i}",
        "gen_ai.tool.call.arguments": json.dumps({"expr": f"{i} * 7 + 3"}),
        "gen_ai.tool.call.result": "x" * 300,
    }  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    sys.exit(f"server at {url} did not come up")


def spread(clients: int) -> list[int]:
    """Senders per client process."""
    procs = min(clients, MAX_CLIENT_PROCESSES)
    return [clients // procs + (1 if k < clients % procs else 0) for k in range(procs)]


# Voltline -------------------------------------------------------------------------------------------
def voltline_process(url: str, senders: int, batch: int, seconds: float, barrier: Any, out: Any) -> None:
    from voltline._httpstore import HttpStore

    store = HttpStore(url, spool=False)
    claim = store.start_rollout("bench", worker_id=f"bench-{os.getpid()}")
    rng = random.Random(os.getpid())
    templates = [span_attributes(i, rng) for i in range(64)]
    counts = [0] * senders

    def send(k: int) -> None:
        n = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            spans = []
            for _ in range(batch):
                name, attrs = templates[n % 64]
                now = time.time()
                spans.append(
                    {"span_id": uuid.uuid4().hex[:16], "rollout_id": claim.rollout.rollout_id,
                     "attempt_id": claim.attempt.attempt_id, "kind": "llm" if n % 2 == 0 else "tool",
                     "name": name, "start_time": now, "end_time": now, "attributes": attrs}
                )  # fmt: skip
                n += 1
            store.add_spans(spans)
            counts[k] += len(spans)

    barrier.wait(300)
    started = time.monotonic()
    threads = [threading.Thread(target=send, args=(k,)) for k in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put((sum(counts), time.monotonic() - started))
    store.close()


def run_voltline(url: str, clients: int, batch: int, seconds: float) -> tuple[int, float]:
    ctx = multiprocessing.get_context("spawn")
    shape = spread(clients)
    barrier, out = ctx.Barrier(len(shape)), ctx.Queue()
    procs = [ctx.Process(target=voltline_process, args=(url, n, batch, seconds, barrier, out)) for n in shape]
    for p in procs:
        p.start()
    results = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(60)
    return sum(r[0] for r in results), max(r[1] for r in results)


# Agent Lightning ---------------------------------------------------------------------------------------
AGL_CLIENT = textwrap.dedent(
    """
    import asyncio, json, multiprocessing, os, random, sys, time
    sys.path.insert(0, sys.argv[5])
    from server_ingest import span_attributes

    def proc(url, tasks, seconds, barrier, out):
        from agentlightning.store.client_server import LightningStoreClient
        from agentlightning.types import Span

        rng = random.Random(os.getpid())
        templates = [span_attributes(i, rng) for i in range(64)]

        async def main():
            client = LightningStoreClient(url)
            rollout = await client.start_rollout(input={"task": "bench"})
            rid, aid = rollout.rollout_id, rollout.attempt.attempt_id
            counts = [0] * tasks

            async def send(k):
                n, end = 0, time.monotonic() + seconds
                while time.monotonic() < end:
                    name, attrs = templates[n % 64]
                    now = time.time()
                    span = Span.from_attributes(
                        attributes=attrs, rollout_id=rid, attempt_id=aid, sequence_id=k * 10**7 + n,
                        name=name, start_time=now, end_time=now,
                    )
                    await client.add_span(span)
                    counts[k] += 1
                    n += 1

            barrier.wait(300)
            started = time.monotonic()
            await asyncio.gather(*(send(k) for k in range(tasks)))
            out.put((sum(counts), time.monotonic() - started))
            await client.close()

        asyncio.run(main())

    if __name__ == "__main__":
        url, shape, seconds = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3])
        ctx = multiprocessing.get_context("spawn")
        barrier, out = ctx.Barrier(len(shape)), ctx.Queue()
        procs = [ctx.Process(target=proc, args=(url, n, seconds, barrier, out)) for n in shape]
        for p in procs:
            p.start()
        results = [out.get(timeout=600) for _ in procs]
        for p in procs:
            p.join(60)
        print(json.dumps([sum(r[0] for r in results), max(r[1] for r in results)]))
    """
)


def agl_venv(cache: Path) -> Path:
    """The virtual environment holding agentlightning==0.3.0, made on first use."""
    venv = cache / f"agentlightning-{AGL_VERSION}"
    python = venv / "bin" / "python"
    probe = (
        "import importlib.metadata as m, agentlightning.store; "
        f"assert m.version('agentlightning') == '{AGL_VERSION}'"
    )
    check = [str(python), "-c", probe]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return venv
    print(f"installing agentlightning=={AGL_VERSION} into {venv} (first run only) ...", flush=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"agentlightning=={AGL_VERSION}"], check=True)
    return venv


def run_agl(venv: Path, url: str, clients: int, seconds: float, work: Path) -> tuple[int, float]:
    script = work / "agl_client.py"
    script.write_text(AGL_CLIENT)
    here = str(Path(__file__).resolve().parent)
    answer = subprocess.run(
        [str(venv / "bin" / "python"), str(script), url, json.dumps(spread(clients)), str(seconds), "", here],
        capture_output=True, text=True, check=False, cwd=work,
    )  # fmt: skip
    if answer.returncode != 0:
        sys.exit(f"Agent Lightning client failed:\n{answer.stderr[-3000:]}")
    count, elapsed = json.loads(answer.stdout.strip().splitlines()[-1])
    return int(count), float(elapsed)


# main ---------------------------------------------------------------------------------------------------
def add_row(
    rows: list[tuple[str, int, float, str]], name: str, clients: int, runs: list[tuple[int, float]]
) -> None:
    rates = sorted(n / elapsed for n, elapsed in runs)
    median = statistics.median(rates)
    rows.append((name, clients, median, f"{rates[0]:,.0f}-{rates[-1]:,.0f}"))
    each = ", ".join(f"{r:,.0f}" for r in rates)
    print(f"{name:<42} {clients:>3} clients: {median:>10,.0f} spans/s (runs: {each})", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="sending time per case")
    parser.add_argument(
        "--batches", default="1000,200,1",
        help="spans per Voltline add_spans call, comma-separated; the first is compared with Agent Lightning",
    )  # fmt: skip
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; the table shows the median")
    parser.add_argument("--clients", default="1,32", help="comma-separated concurrent sender counts")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "voltline-bench")
    parser.add_argument("--skip-agentlightning", action="store_true")
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    work = Path(tempfile.mkdtemp(prefix="voltline-server-bench-"))
    rows: list[tuple[str, int, float, str]] = []
    procs: list[subprocess.Popen[bytes]] = []
    try:
        # Voltline
        port = free_port()
        db = work / "store.db"
        log = work / "voltline.log"
        with open(log, "wb") as f:
            server = subprocess.Popen(
                [sys.executable, "-m", "voltline", "store", "serve", "--db", f"sqlite:///{db}",
                 "--port", str(port), "--log-level", "warning"],
                stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        procs.append(server)
        url = f"http://127.0.0.1:{port}"
        wait_healthy(f"{url}/v1/health", server, log)
        acked = 0
        for batch in batches:
            for c in clients:
                runs = [run_voltline(url, c, batch, args.seconds) for _ in range(args.repeat)]
                acked += sum(n for n, _ in runs)
                add_row(rows, f"Voltline, {batch} span{'s' if batch > 1 else ''}/request", c, runs)
        stored = sqlite3.connect(db).execute("SELECT COUNT(*) FROM spans").fetchone()[0]
        if stored != acked:
            sys.exit(f"Voltline stored {stored} spans but acknowledged {acked}")
        print(f"Voltline: {stored:,} spans stored = acknowledged", flush=True)

        if not args.skip_agentlightning:
            venv = agl_venv(args.cache_dir)
            port = free_port()
            log = work / "agl.log"
            env = {**os.environ, "AGL_STORE_LOG_LEVEL": "WARNING"}
            with open(log, "wb") as f:
                agl = subprocess.Popen(
                    [str(venv / "bin" / "agl"), "store", "--host", "127.0.0.1", "--port", str(port),
                     "--log-level", "WARNING"], stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env=env,
                )  # fmt: skip
            procs.append(agl)
            agl_url = f"http://127.0.0.1:{port}"
            wait_healthy(f"{agl_url}/v1/agl/health", agl, log)
            for c in clients:
                runs = [run_agl(venv, agl_url, c, args.seconds, work) for _ in range(args.repeat)]
                add_row(rows, f"Agent Lightning {AGL_VERSION}, 1 span/request", c, runs)
    finally:
        for p in procs:
            p.terminate()
            p.wait(30)
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nmachine: {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.platform()}")
    print(f"\n| server | clients | spans/s (median of {args.repeat}) | min-max |\n|---|---:|---:|---:|")
    for name, c, rate, spread_ in rows:
        print(f"| {name} | {c} | {rate:,.0f} | {spread_} |")
    ok = True
    if not args.skip_agentlightning:
        print()
        for c in clients:
            ours = next(r[2] for r in rows if r[0].startswith(f"Voltline, {batches[0]} ") and r[1] == c)
            theirs = next(r[2] for r in rows if r[0].startswith("Agent") and r[1] == c)
            ratio = ours / theirs
            passed = ratio >= TARGET_RATIO
            ok &= passed
            verdict = "PASS" if passed else "FAIL"
            target = f"target >= {TARGET_RATIO:g}x"
            print(f"{verdict}  {c} clients: Voltline {ratio:,.1f}x Agent Lightning ({target})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
