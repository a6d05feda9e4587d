"""The Trainer and Runners: rollouts in real processes, retries, validation, two resources.

The agents are top-level functions (spawned runner processes import them by name). The toy
algorithm learns a decision threshold from rewards alone: it never sees the true boundary,
only which answers earned nothing, and moves its threshold toward them.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

import voltline
from voltline._runner import resource_scope, worker_pid
from voltline._trajectory import Trajectory
from voltline.algorithms import Algorithm, NewResource, StepResult
from voltline.trainer import Trainer

BOUNDARY = 0.6  # what earns reward; only the agent's reward function knows it
START = {"threshold": {"kind": "json", "payload": {"t": 0.1}}}


# agents ---------------------------------------------------------------------------------
def threshold_agent(task: dict[str, Any], resources: dict[str, voltline.ResourceVersion]) -> int:
    """Answers 1 when x is above the published threshold; rewarded when that matches BOUNDARY."""
    t = resources["threshold"].payload["t"]
    x = task["x"]
    answer = int(x > t)
    # A one-token "LLM call": the prompt encodes x, the response is the answer token.
    voltline.emit_llm(model="toy", prompt_token_ids=[1, round(x * 100)], response_token_ids=[10 + answer],
                      response_logprobs=[-0.5])  # fmt: skip
    voltline.emit_reward(1.0 if answer == int(x > BOUNDARY) else 0.0)
    return answer


async def threshold_agent_async(task: dict[str, Any], resources: dict[str, voltline.ResourceVersion]) -> int:
    await asyncio.sleep(0)  # really async: the runner must await it inside the rollout
    return threshold_agent(task, resources)


def crashing_agent(task: dict[str, Any], resources: dict[str, voltline.ResourceVersion]) -> int:
    """The first runner to take the `die` task is SIGKILLed mid-rollout (after emitting a span)."""
    marker = task.get("die")
    if marker and not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        voltline.emit_tool("about_to_die")
        voltline.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return threshold_agent(task, resources)


def slow_agent(task: dict[str, Any], resources: dict[str, voltline.ResourceVersion]) -> int:
    time.sleep(task["sleep"])  # silent (no spans) for longer than the heartbeat timeout
    return threshold_agent(task, resources)


def failing_agent(task: dict[str, Any], resources: dict[str, voltline.ResourceVersion]) -> int:
    if task.get("fail"):
        raise ValueError("bad task")
    return threshold_agent(task, resources)


def two_resource_agent(task: dict[str, Any], resources: dict[str, voltline.ResourceVersion]) -> None:
    """A planner and a solver, each running on its own resource."""
    with resource_scope(resources["planner"]):
        voltline.emit_llm(model="toy", prompt_token_ids=[1, 2], response_token_ids=[3])
    with resource_scope(resources["solver"]):
        voltline.emit_llm(model="toy", prompt_token_ids=[4, 5], response_token_ids=[6, 7])
    voltline.emit_reward(float(task["x"]))


# a toy algorithm ----------------------------------------------------------------------------
class ThresholdSearch(Algorithm):
    """Moves the threshold toward the inputs it got wrong (they lie between it and the boundary)."""

    name = "toy-threshold"

    def __init__(self, start: float = 0.1, lr: float = 0.8, **kw: Any) -> None:
        super().__init__(**kw)
        self.t, self.lr = start, lr
        self.seen: list[Trajectory] = []

    def step(self, trajectories: Sequence[Any]) -> StepResult:
        self.seen.extend(trajectories)
        wrong = [tr.input["x"] for tr in trajectories if tr.reward == 0.0]
        if wrong:
            self.t += self.lr * (sum(wrong) / len(wrong) - self.t)
        resource = NewResource(name=self.owned_resources[0], kind="json", payload={"t": self.t})
        return StepResult(resources=[resource], metrics={"t": self.t, "wrong": float(len(wrong))})


def tasks(n: int, seed: int = 0) -> list[dict[str, float]]:
    rng = random.Random(seed)
    return [{"x": round(rng.random(), 3)} for _ in range(n)]


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/trainer.db"


# tests --------------------------------------------------------------------------------------
def test_reward_rises_with_runner_processes(store_url: str) -> None:
    algo = ThresholdSearch(resources=("threshold",))
    with Trainer(store_url, threshold_agent, {"threshold": algo}, runners=2, group_size=2,
                 initial_resources=START) as trainer:  # fmt: skip
        steps = [trainer.train_step(tasks(8)) for _ in range(3)]
        pids = set(trainer.runner_pids)
        store = trainer.store
        rewards = [m["mean_reward"] for m in steps]
        # Deterministic: the same tasks, the same decisions, whatever runner took which rollout.
        assert rewards == [0.375, 0.625, 0.875]
        assert [m["rollouts"] for m in steps] == [16, 16, 16]
        assert [m["failed"] for m in steps] == [0, 0, 0]
        assert [m["threshold/version"] for m in steps] == [2, 3, 4]
        assert steps[0]["threshold/trajectories"] == 16 and steps[0]["threshold/skipped"] == 0
        ts = [m["threshold/t"] for m in steps]
        assert 0.1 < ts[0] <= ts[1] <= ts[2] <= BOUNDARY, ts

        history = store.resource_history("threshold")
        assert [v.created_by for v in history] == ["initial"] + [f"toy-threshold step {i}" for i in (1, 2, 3)]
        assert history[-1].payload == {"t": pytest.approx(algo.t)}

        # Groups: every task ran group_size times, each group under one metadata id.
        groups: dict[str, int] = {}
        for tr in algo.seen:
            groups[tr.metadata["group"]] = groups.get(tr.metadata["group"], 0) + 1
        assert len(groups) == 24 and set(groups.values()) == {2}

        # Rollouts ran in the runner processes, not here, and used the version current at the time.
        rollouts = store.query_rollouts(metadata={"step": 3}, limit=100)
        assert len(rollouts) == 16 and all(r.resources == {"threshold": 3} for r in rollouts)
        for r in rollouts:
            (attempt,) = store.get_attempts(r.rollout_id)
            assert worker_pid(attempt.worker_id) in pids and worker_pid(attempt.worker_id) != os.getpid()
            spans = store.query_spans(rollout_id=r.rollout_id)
            assert [(s.kind, s.name, s.parent_id, s.resources) for s in spans] == [
                ("llm", "chat toy", None, {"threshold": 3}),
                ("reward", "reward", None, {"threshold": 3}),
            ]
            answer = int(r.input["x"] > history[2].payload["t"])
            assert spans[0].attributes["response_token_ids"] == [10 + answer]
    assert all(not _alive(pid) for pid in pids)  # close() stopped the runner processes


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers; its status in /proc says it has exited.
    try:
        return " Z " not in Path(f"/proc/{pid}/stat").read_text().split(")", 1)[1][:4]
    except OSError:
        return False


def test_async_agent_in_thread_runner(store_url: str) -> None:
    algo = ThresholdSearch(resources=("threshold",))
    with Trainer(store_url, threshold_agent_async, {"threshold": algo}, runners=0,
                 initial_resources=START) as trainer:  # fmt: skip
        steps = [trainer.train_step(tasks(6, seed=1)) for _ in range(3)]
        assert trainer.runner_pids == []
        rollout = trainer.store.query_rollouts(limit=1)[0]
        (attempt,) = trainer.store.get_attempts(rollout.rollout_id)
        assert worker_pid(attempt.worker_id) == os.getpid() and "-thread-" in attempt.worker_id
    rewards = [m["mean_reward"] for m in steps]
    assert rewards[-1] > rewards[0], rewards
    assert [len(trainer.store.query_spans(rollout_id=r.rollout_id)) for r in [rollout]] == [2]


_OVERLAP = {"now": 0, "peak": 0}
_OVERLAP_LOCK = threading.Lock()


def overlapping_agent(task: dict[str, Any], resources: dict[str, voltline.ResourceVersion]) -> int:
    """Records how many rollouts run at once; waits so that overlap is possible at all."""
    with _OVERLAP_LOCK:
        _OVERLAP["now"] += 1
        _OVERLAP["peak"] = max(_OVERLAP["peak"], _OVERLAP["now"])
    try:
        time.sleep(0.2)
        return threshold_agent(task, resources)
    finally:
        with _OVERLAP_LOCK:
            _OVERLAP["now"] -= 1


def test_concurrency_runs_rollouts_of_one_runner_at_once(store_url: str) -> None:
    _OVERLAP.update(now=0, peak=0)
    algo = ThresholdSearch(resources=("threshold",))
    with Trainer(store_url, overlapping_agent, {"threshold": algo}, runners=0, concurrency=4,
                 initial_resources=START) as trainer:  # fmt: skip
        metrics = trainer.train_step(tasks(8, seed=3))
        rollouts = trainer.store.query_rollouts(limit=20)
        attempts = [a for r in rollouts for a in trainer.store.get_attempts(r.rollout_id)]
    assert (metrics["rollouts"], metrics["succeeded"], metrics["retried"]) == (8, 8, 0)
    assert len(attempts) == 8  # each claimed exactly once
    # Four slots: more than one rollout overlapped, never more than four.
    assert 2 <= _OVERLAP["peak"] <= 4, _OVERLAP
    # Each rollout's spans stay with its own attempt although they ran on shared threads.
    for rollout in rollouts:
        (attempt,) = trainer.store.get_attempts(rollout.rollout_id)
        spans = trainer.store.query_spans(rollout_id=rollout.rollout_id)
        assert len(spans) == 2 and {s.attempt_id for s in spans} == {attempt.attempt_id}


def test_constructor_rejects_zero_concurrency(store_url: str) -> None:
    with pytest.raises(ValueError, match="concurrency >= 1"):
        Trainer(store_url, threshold_agent, runners=0, concurrency=0)


def test_killed_runner_attempt_times_out_and_is_retried(store_url: str, tmp_path: Path) -> None:
    marker = tmp_path / "killed.pid"
    batch = [{"x": 0.9, "die": str(marker)}, {"x": 0.2}, {"x": 0.4}]
    algo = ThresholdSearch(resources=("threshold",))
    with Trainer(store_url, crashing_agent, {"threshold": algo}, runners=2, heartbeat_timeout=1.0,
                 max_attempts=2, initial_resources=START) as trainer:  # fmt: skip
        metrics = trainer.train_step(batch)
        store = trainer.store
        assert metrics["rollouts"] == 3 and metrics["failed"] == 0 and metrics["succeeded"] == 3
        assert metrics["retried"] == 1 and metrics["runner_restarts"] == 1
        assert metrics["threshold/trajectories"] == 3
        killed_pid = int(marker.read_text())
        (victim,) = [r for r in store.query_rollouts(limit=10) if r.input.get("die")]
        first, second = store.get_attempts(victim.rollout_id)
        assert first.status == "unresponsive" and worker_pid(first.worker_id) == killed_pid
        assert second.status == "succeeded" and worker_pid(second.worker_id) not in (killed_pid, os.getpid())
        # The dead attempt's span stays with it; the trajectory comes from the attempt that succeeded.
        dead_spans = store.query_spans(attempt_id=first.attempt_id)
        assert [s.name for s in dead_spans] == ["execute_tool about_to_die"]
        (trajectory,) = [t for t in algo.seen if t.rollout_id == victim.rollout_id]
        assert trajectory.attempt_id == second.attempt_id and trajectory.reward == 1.0
        assert killed_pid not in trainer.runner_pids


def test_heartbeats_keep_a_long_rollout_alive(store_url: str) -> None:
    with Trainer(store_url, slow_agent, runners=0, heartbeat_timeout=0.5, max_attempts=1,
                 initial_resources=START) as trainer:  # fmt: skip
        metrics = trainer.train_step([{"x": 0.9, "sleep": 1.2}])
        (rollout,) = trainer.store.query_rollouts()
        assert (metrics["succeeded"], metrics["retried"], rollout.num_attempts) == (1, 0, 1)
    with pytest.raises(RuntimeError, match="closed"):
        trainer.train_step([{"x": 0.9, "sleep": 0}])


def test_agent_exception_fails_the_rollout_and_is_counted(store_url: str) -> None:
    algo = ThresholdSearch(resources=("threshold",))
    with Trainer(store_url, failing_agent, {"threshold": algo}, runners=0, max_attempts=1,
                 initial_resources=START) as trainer:  # fmt: skip
        metrics = trainer.train_step([{"x": 0.9}, {"x": 0.5, "fail": True}])
        store = trainer.store
        assert (metrics["rollouts"], metrics["succeeded"], metrics["failed"]) == (2, 1, 1)
        assert metrics["mean_reward"] == 1.0  # over the rollouts that finished
        assert metrics["threshold/trajectories"] == 1 and [t.input for t in algo.seen] == [{"x": 0.9}]
        (failed,) = store.query_rollouts(status="failed")
        assert failed.error == "ValueError: bad task"
        (exc_span,) = store.query_spans(rollout_id=failed.rollout_id)
        assert (exc_span.kind, exc_span.name, exc_span.status) == ("exception", "ValueError", "error")


def test_fit_validates_without_training_and_logs(store_url: str, tmp_path: Path) -> None:
    algo = ThresholdSearch(resources=("threshold",))
    log_path = tmp_path / "metrics.jsonl"
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    with Trainer(store_url, threshold_agent, {"threshold": algo}, runners=0,
                 initial_resources=START) as trainer:  # fmt: skip
        held_out = tasks(10, seed=7)
        records = trainer.fit(tasks(8), steps=2, val_tasks=held_out, log_path=log_path, batch_size=4,
                              progress=console)  # fmt: skip
        store = trainer.store
        # Validation ran 3 times on the held-out tasks; only the 2 train steps trained.
        assert [(r["event"], r["step"]) for r in records] == [("val", 0), ("train", 1), ("val", 1),
                                                              ("train", 2), ("val", 2)]  # fmt: skip
        assert len(store.resource_history("threshold")) == 3
        val = store.query_rollouts(mode="val", limit=100)
        assert len(val) == 30 and all(r.status == "succeeded" for r in val)
        trained_ids = {t.rollout_id for t in algo.seen}
        assert len(trained_ids) == 8 and not trained_ids & {r.rollout_id for r in val}
        # Batches of 4 cycle through the 8 tasks.
        assert sorted(t.input["x"] for t in algo.seen) == sorted(t["x"] for t in tasks(8))
        assert records[-1]["mean_reward"] > records[0]["mean_reward"]
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert lines == records
    text = out.getvalue()
    assert "train" in text and "2/2" in text and "reward" in text


def test_two_algorithms_each_get_their_own_resources_turns(store_url: str) -> None:
    planner = RecordingAlgorithm(resources=("planner",))
    solver = RecordingAlgorithm(resources=("solver",))
    start = {name: {"kind": "json", "payload": {"n": 0}} for name in ("planner", "solver")}
    with Trainer(store_url, two_resource_agent, {"planner": planner, "solver": solver}, runners=0,
                 initial_resources=start) as trainer:  # fmt: skip
        m1 = trainer.train_step([{"x": 0.25}, {"x": 0.75}])
        m2 = trainer.train_step([{"x": 0.5}])
        store = trainer.store
    versions = [m[f"{name}/version"] for m in (m1, m2) for name in ("planner", "solver")]
    assert versions == [2, 2, 3, 3]
    assert m1["planner/turns"] == 2 and m1["solver/turns"] == 2 and m2["solver/turns"] == 1
    assert m1["mean_reward"] == 0.5
    for algo, ids, version_by_step in ((planner, [1, 2], {1: 1, 2: 2}), (solver, [4, 5], {1: 1, 2: 2})):
        assert len(algo.seen) == 3
        for tr in algo.seen:
            (turn,) = tr.turns
            step = tr.metadata["step"]
            assert turn.prompt_token_ids == ids
            assert turn.resources == {algo.owned_resources[0]: version_by_step[step]}
            assert turn.reward == tr.input["x"]
    history = [v.created_by for v in store.resource_history("solver")]
    assert history == ["initial", "recorder step 1", "recorder step 2"]


class RecordingAlgorithm(Algorithm):
    name = "recorder"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.seen: list[Trajectory] = []

    def step(self, trajectories: Sequence[Any]) -> StepResult:
        self.seen.extend(trajectories)
        name = self.owned_resources[0]
        turns = float(sum(len(t.turns) for t in trajectories))
        return StepResult(resources=[NewResource(name=name, kind="json", payload={"n": len(self.seen)})],
                          metrics={"turns": turns})  # fmt: skip


def test_constructor_checks_ownership(store_url: str) -> None:
    with pytest.raises(ValueError, match="owns"):
        Trainer(store_url, threshold_agent, {"threshold": ThresholdSearch(resources=("other",))}, runners=0)
