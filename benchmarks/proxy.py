"""LLM proxy benchmark: the latency the proxy adds, and throughput with concurrent clients.

    .venv/bin/python benchmarks/proxy.py                 # about a minute
    .venv/bin/python benchmarks/proxy.py --calls 2000

1. Added latency (target: under 2 ms per non-streaming call). A canned OpenAI-compatible
   backend (its own process, answers a vLLM-shaped response with token ids and logprobs at once,
   no model) is called directly, then through `voltline serve --upstream` (another process)
   with rollout attribution, so every proxied call is also parsed, re-serialized and recorded
   as a span in a SQLite store. Added latency = median(proxied) - median(direct). Calls
   alternate between the two paths in blocks so drift on a shared machine hits both alike.
2. Throughput. (a) The proxy in front of the canned backend: 8 concurrent clients against one
   client calling sequentially. (b) The local backend (`voltline serve --model`, a tiny model
   from `voltline model init`, CPU, 1 torch thread): 8 concurrent clients, whose requests the
   engine batches, against sequential calls.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import Response

ROOT = Path(__file__).resolve().parent.parent
MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2 + 3?"}]


def canned_app():
    """A backend that costs (almost) nothing: a fixed vLLM-shaped chat response, 32 tokens."""
    ids = list(range(100, 132))
    body = {
        "id": "chatcmpl-canned",
        "object": "chat.completion",
        "created": 0,
        "model": "canned",
        "prompt_token_ids": list(range(1, 41)),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "x" * 32},
                "logprobs": {
                    "content": [
                        {"token": "x", "logprob": -0.5, "bytes": [120], "top_logprobs": []} for _ in ids
                    ]
                },
                "finish_reason": "length",
                "token_ids": ids,
            }
        ],
        "usage": {"prompt_tokens": 40, "completion_tokens": 32, "total_tokens": 72},
    }
    raw = json.dumps(body).encode()
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        await request.body()
        return Response(raw, media_type="application/json")

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    return app


def start(cmd: list[str], url: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    quiet = subprocess.DEVNULL
    proc = subprocess.Popen(cmd, stdout=quiet, stderr=quiet, stdin=quiet, env={**os.environ, **(env or {})})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd} exited with {proc.returncode}")
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{cmd} did not start")


def free_port() -> int:
    sys.path.insert(0, str(ROOT / "core"))
    from voltline.proxy.server import free_port as fp

    return fp()


def post(client: httpx.Client, path: str, body: dict) -> float:
    t = time.perf_counter()
    resp = client.post(path, json=body)
    elapsed = time.perf_counter() - t
    resp.raise_for_status()
    return elapsed


def added_latency(direct: str, proxied: str, calls: int, warmup: int) -> dict:
    body = {"model": "canned", "messages": MESSAGES, "max_tokens": 32}
    with httpx.Client(base_url=direct) as d, httpx.Client(base_url=proxied) as p:
        for _ in range(warmup):
            post(d, "/chat/completions", body)
            post(p, "/chat/completions", body)
        td, tp = [], []
        block = 50
        for _ in range(calls // block):  # interleave in blocks: machine drift affects both paths alike
            td += [post(d, "/chat/completions", body) for _ in range(block)]
            tp += [post(p, "/chat/completions", body) for _ in range(block)]
    md, mp = statistics.median(td), statistics.median(tp)
    q = lambda xs, k: statistics.quantiles(xs, n=100)[k - 1]  # noqa: E731
    return {
        "direct_ms": md * 1e3,
        "proxied_ms": mp * 1e3,
        "added_ms": (mp - md) * 1e3,
        "direct_p90_ms": q(td, 90) * 1e3,
        "proxied_p90_ms": q(tp, 90) * 1e3,
        "calls": len(td),
    }


def throughput(base: str, body: dict, total: int, clients: int) -> dict:
    tokens = 0
    lock = threading.Lock()

    def worker(n: int) -> None:
        nonlocal tokens
        with httpx.Client(base_url=base, timeout=300) as c:
            for _ in range(n):
                resp = c.post("/chat/completions", json=body)
                resp.raise_for_status()
                with lock:
                    tokens += len(resp.json()["choices"][0]["token_ids"])

    t = time.perf_counter()
    if clients == 1:
        worker(total)
    else:
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(worker, [total // clients] * clients))
    elapsed = time.perf_counter() - t
    done = total if clients == 1 else (total // clients) * clients
    return {
        "requests_per_s": done / elapsed,
        "tokens_per_s": tokens / elapsed,
        "seconds": elapsed,
        "requests": done,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=1000, help="timed calls per path for the latency case")
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument(
        "--upstream-requests", type=int, default=800, help="requests per upstream throughput case"
    )
    ap.add_argument(
        "--local-requests", type=int, default=48, help="requests per local-backend throughput case"
    )
    ap.add_argument("--max-tokens", type=int, default=32, help="completion length for the local backend")
    ap.add_argument("--serve-canned", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_canned:
        import uvicorn

        uvicorn.run(
            canned_app(), host="127.0.0.1", port=args.serve_canned, log_level="warning", access_log=False
        )
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="voltline-proxy-bench-"))
    env = {"OMP_NUM_THREADS": "1", "VOLTLINE_STORE_URL": f"sqlite:///{tmp}/bench.db"}
    voltline_cmd = [sys.executable, "-m", "voltline"]
    procs: list[subprocess.Popen] = []
    results: dict = {}
    try:
        cport, pport, lport = free_port(), free_port(), free_port()
        canned = f"http://127.0.0.1:{cport}"
        procs.append(start([sys.executable, __file__, "--serve-canned", str(cport)], canned))
        proxy = f"http://127.0.0.1:{pport}"
        procs.append(
            start([*voltline_cmd, "serve", "--upstream", canned + "/v1", "--port", str(pport)], proxy, env)
        )
        # Attribution in the URL: every proxied call is also recorded as a span.
        import voltline

        store = voltline.connect(env["VOLTLINE_STORE_URL"])
        claim = store.start_rollout({"bench": "proxy"})
        scoped = f"{proxy}/rollout/{claim.rollout.rollout_id}/attempt/{claim.attempt.attempt_id}/v1"

        results["latency"] = added_latency(canned + "/v1", scoped, args.calls, args.warmup)
        print("added latency:", json.dumps(results["latency"], indent=1), flush=True)
        body = {"model": "canned", "messages": MESSAGES, "max_tokens": 32}
        results["upstream_seq"] = throughput(scoped, body, args.upstream_requests, 1)
        results["upstream_c8"] = throughput(scoped, body, args.upstream_requests, 8)
        results["canned_c8"] = throughput(canned + "/v1", body, args.upstream_requests, 8)
        cases = ("upstream_seq", "upstream_c8", "canned_c8")
        print("upstream throughput:", json.dumps({k: results[k] for k in cases}, indent=1), flush=True)
        time.sleep(1.0)  # let the proxy's span writer drain before counting
        results["spans_recorded"] = len(store.query_spans(rollout_id=claim.rollout.rollout_id, kind="llm"))

        subprocess.run([*voltline_cmd, "model", "init", str(tmp / "tiny")], check=True, capture_output=True)
        local = f"http://127.0.0.1:{lport}"
        procs.append(start([*voltline_cmd, "serve", "--model", str(tmp / "tiny"), "--name", "tiny", "--port",
                            str(lport)], local, env))  # fmt: skip
        lbody = {"model": "tiny", "messages": MESSAGES, "max_tokens": args.max_tokens, "seed": 0}
        throughput(local + "/v1", lbody, 4, 1)  # warm-up
        results["local_seq"] = throughput(local + "/v1", lbody, args.local_requests, 1)
        results["local_c8"] = throughput(local + "/v1", lbody, args.local_requests, 8)
        print("local throughput:", json.dumps({k: results[k] for k in ("local_seq", "local_c8")}, indent=1))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    lat = results["latency"]
    ok = lat["added_ms"] < 2.0
    print(
        f"\nadded latency {lat['added_ms']:.2f} ms per non-streaming call (target < 2 ms): "
        + ("PASS" if ok else "FAIL")
    )
    print(f"spans recorded: {results['spans_recorded']}")
    print(json.dumps(results))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
