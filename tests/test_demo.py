"""The demo (examples/demo/train_demo.py) end to end with `--quick`, as a user would run it.

It must build and cache its model, run the LangChain agent through the in-process proxy, train
with GRPO through the Trainer (adapter versions published), and print its tables and summary,
writing the PNG and the store. Whether reward rises is the full run's job, not this test's.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("langchain_openai")
pytest.importorskip("voltline_langchain")
pytest.importorskip("voltline_rl")

import voltline

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo"


def run_quick(tmp_path: Path, cache: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VOLTLINE_DEMO_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    for key in ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2", "VOLTLINE_PLUGINS", "VOLTLINE_DISABLE_PLUGINS"):
        env.pop(key, None)
    store = f"sqlite:///{tmp_path / 'demo.db'}"
    cmd = [sys.executable, str(DEMO / "train_demo.py"), "--quick", "--threads", "1", "--store", store, *extra]
    return subprocess.run(
        cmd, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120
    )


def summary_of(stdout: str) -> dict:
    (line,) = [ln for ln in stdout.splitlines() if ln.startswith("summary: ")]
    return json.loads(line.removeprefix("summary: "))


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    # The image data must decompress to one filter byte plus RGB per pixel, per row.
    idat_len = struct.unpack(">I", data[33:37])[0]
    assert data[37:41] == b"IDAT"
    assert len(zlib.decompress(data[41 : 41 + idat_len])) == height * (1 + 3 * width)
    return width, height


def test_quick_demo_trains_through_langchain_and_the_proxy(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    result = run_quick(tmp_path, cache)
    assert result.returncode == 0, result.stderr[-4000:]
    out = result.stdout

    # First run builds and caches the model.
    assert "building the demo model" in out
    (model_dir,) = list(cache.glob("adder-*"))
    assert (model_dir / "voltline-demo.json").exists() and (model_dir / "tokenizer.json").exists()

    # Tables and summary.
    assert "GRPO reward per step" in out and "mean train reward" in out
    assert "held-out accuracy" in out and "greedy accuracy (16 problems)" in out
    summary = summary_of(out)
    assert (summary["steps"], summary["prompts"], summary["group"]) == (2, 2, 4)
    assert summary["adapter_versions"] == 2  # one lora_adapter version per GRPO step
    for key in ("val_reward_before", "val_reward_after", "greedy_before", "greedy_after"):
        assert 0.0 <= summary[key] <= 1.0

    # The PNG and the store exist; the log has one val record before and after, two train steps.
    png = tmp_path / "voltline-demo" / "reward_curve.png"
    assert png_size(png) == (640, 360)
    log = (tmp_path / "voltline-demo" / "metrics.jsonl").read_text()
    records = [json.loads(line) for line in log.splitlines()]
    assert [r["event"] for r in records] == ["val", "train", "train", "val"]
    assert [r["policy/version"] for r in records if r["event"] == "train"] == [1, 2]
    assert all(r["failed"] == 0 and r["policy/trajectories"] == 8 for r in records if r["event"] == "train")

    store = voltline.connect(f"sqlite:///{tmp_path / 'demo.db'}")
    try:
        policy = store.get_resource("policy")
        assert policy.kind == "lora_adapter" and policy.version == 2
        assert store.get_artifact(policy.artifact_hash)
        # Each training rollout: the LangChain plugin's llm span, the proxy's llm span (with the
        # token ids), and the agent's one reward. The second step ran on adapter version 1.
        (rollout, *_) = store.query_rollouts(mode="train", metadata={"step": 2})
        spans = store.query_spans(rollout_id=rollout.rollout_id)
        kinds = sorted((s.kind, s.attributes.get("voltline.source") == "proxy") for s in spans)
        assert kinds == [("llm", False), ("llm", True), ("reward", False)], kinds
        proxy_span = next(s for s in spans if s.attributes.get("voltline.source") == "proxy")
        assert proxy_span.attributes["response_token_ids"] and proxy_span.resources == {"policy": 1}
    finally:
        store.close()

    # Second run: the cached model is reused, no pre-training again.
    again = run_quick(tmp_path, cache, "--out", "second")
    assert again.returncode == 0, again.stderr[-4000:]
    assert "building the demo model" not in again.stdout
    assert summary_of(again.stdout)["adapter_versions"] == 4  # same store: versions keep counting
