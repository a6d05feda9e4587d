"""The rollout path's shortcuts keep their promises: a runner thread woken on enqueue (not by
its poll) and reporting when idle, one resource fetch per claimed batch that still sees newly
published versions, one heartbeat thread per runner that still detects a lost attempt, the
proxy's shared "latest adapter" read that never serves a version read before the request
arrived, and batched sampling that matches per-row sampling where it must."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import voltline
from voltline._runner import LocalSignals, RunnerOptions, _Heartbeats, runner_loop
from voltline.trainer import Trainer

# Polls so slow that only a signal can make the runner act within a test's lifetime.
NEVER_POLL = RunnerOptions(poll_interval=120.0, max_poll_interval=120.0, concurrency=4)
SEEN: list[int] = []
SEEN_LOCK = threading.Lock()


def version_agent(task: Any, resources: dict[str, voltline.ResourceVersion]) -> None:
    with SEEN_LOCK:
        SEEN.append(resources["policy"].version)
    voltline.emit_reward(1.0)


def sleepy_agent(task: Any, resources: dict[str, voltline.ResourceVersion]) -> None:
    time.sleep(task["sleep"])  # silent for longer than the heartbeat timeout
    voltline.emit_reward(1.0)


@pytest.fixture
def store(tmp_path: Path) -> Any:
    store = voltline.connect(f"sqlite:///{tmp_path}/overhead.db")
    yield store
    store.close()


class _Runner:
    """runner_loop on a thread with signals, as the Trainer runs it with runners=0."""

    def __init__(self, store: Any, options: RunnerOptions = NEVER_POLL) -> None:
        self.signals, self.stop = LocalSignals(), threading.Event()
        self.thread = threading.Thread(
            target=runner_loop, args=(store, version_agent, "t-runner", self.stop, options),
            kwargs={"signals": self.signals}, daemon=True,
        )  # fmt: skip
        self.thread.start()
        # A first announcement with nothing queued: once idle after it, the loop sleeps on its poll.
        assert self.signals.wait_idle(self.signals.enqueued(), timeout=30)

    def close(self) -> None:
        self.stop.set()
        self.signals.wake.set()
        self.thread.join(10)
        assert not self.thread.is_alive()


def test_runner_thread_wakes_on_enqueue_signal_not_its_poll(store: Any) -> None:
    store.put_resource("policy", "json", {"v": 1})
    runner = _Runner(store)
    try:
        (queued,) = store.enqueue_many([{"input": {"i": 0}}])
        # Not announced: the runner sleeps on its 120 s poll and leaves the rollout queued.
        assert store.wait([queued.rollout_id], timeout=0.5)[0].status == "queued"
        generation = runner.signals.enqueued()
        assert runner.signals.wait_idle(generation, timeout=30)
        assert store.get_rollout(queued.rollout_id).status == "succeeded"
    finally:
        runner.close()


def test_a_claimed_batch_shares_one_resource_fetch_and_sees_new_versions(store: Any) -> None:
    store.put_resource("policy", "json", {"v": 1})
    fetches = []
    list_resources = store.list_resources

    def counted() -> Any:
        fetches.append(1)
        return list_resources()

    store.list_resources = counted  # a spy on the real store: the call still happens
    SEEN.clear()
    runner = _Runner(store)
    try:
        for version in (1, 2):
            if version == 2:
                store.put_resource("policy", "json", {"v": 2})  # published between "steps"
            ids = [r.rollout_id for r in store.enqueue_many([{"input": {"i": i}} for i in range(4)])]
            assert runner.signals.wait_idle(runner.signals.enqueued(), timeout=30)
            assert [r.status for r in store.wait(ids, timeout=0)] == ["succeeded"] * 4
    finally:
        runner.close()
    assert sorted(SEEN) == [1, 1, 1, 1, 2, 2, 2, 2]
    assert len(fetches) == 2  # one per claimed batch of four, not one per rollout


def test_trainer_with_thread_runner_finishes_steps_on_signals(store: Any) -> None:
    """The Trainer's side: it announces each enqueue and returns once the runner is idle,
    although the runner would not poll the store within the test's time."""
    store.put_resource("policy", "json", {"v": 1})
    with Trainer(store, version_agent, runners=0, concurrency=4) as trainer:
        trainer._pool.options = NEVER_POLL
        for _ in range(2):
            metrics = trainer.train_step([{"i": i} for i in range(6)])
            assert (metrics["succeeded"], metrics["mean_reward"]) == (6, 1.0)
        assert trainer._pool.signals.generation == 2


def test_one_heartbeat_thread_keeps_concurrent_rollouts_alive(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/beats.db"
    with Trainer(url, sleepy_agent, runners=0, concurrency=3, heartbeat_timeout=0.5,
                 max_attempts=1) as trainer:  # fmt: skip
        metrics = trainer.train_step([{"sleep": 1.2}] * 3)
        threads = [t.name for t in threading.enumerate() if t.name == "voltline-heartbeat"]
    assert (metrics["succeeded"], metrics["retried"]) == (3, 0)
    assert len(threads) == 1


def test_shared_heartbeats_report_a_lost_attempt(store: Any) -> None:
    claim = store.start_rollout({"i": 0}, worker_id="w")
    beats = _Heartbeats(store, interval=0.05)
    try:
        with beats.beat(claim.attempt.attempt_id) as beat:
            store.cancel(claim.rollout.rollout_id)  # someone else decided: stop claiming it is alive
            deadline = time.monotonic() + 30
            while not beat.lost and time.monotonic() < deadline:
                time.sleep(0.02)
        assert beat.lost
    finally:
        beats.close()


def test_latest_adapter_reads_are_shared_but_never_older_than_the_request() -> None:
    from voltline.proxy.localserve import _Coalesced

    started, release = threading.Event(), threading.Event()
    state = {"version": 1, "reads": 0}

    def read() -> int:
        state["reads"] += 1
        value = state["version"]
        if state["reads"] == 1:
            started.set()
            release.wait(30)  # hold the first read so later requests arrive while it runs
        return value

    async def scenario() -> tuple[int, list[int]]:
        latest = _Coalesced(read)
        first = asyncio.ensure_future(latest.get())
        while not started.is_set():
            await asyncio.sleep(0.01)
        state["version"] = 2  # published after the first read began
        later = [asyncio.ensure_future(latest.get()) for _ in range(5)]
        await asyncio.sleep(0.05)
        release.set()
        return await first, list(await asyncio.gather(*later))

    first, later = asyncio.run(scenario())
    assert first == 1 and later == [2] * 5  # the late requests waited for a read of their own
    assert state["reads"] == 2  # and shared it


def test_batched_sampling_matches_per_row_sampling_where_it_must() -> None:
    torch = pytest.importorskip("torch")
    from voltline.proxy.local import GenJob, Sampling, _sample, _sample_rows

    torch.manual_seed(0)
    logits = torch.tensor([[0.0, 1.0, 0.5, -1.0]] * 6)
    logits[:, 3] = float("-inf")  # never sampled
    jobs = [
        GenJob([1], Sampling(4, temperature=0.0)),  # greedy
        GenJob([1], Sampling(4, temperature=1.0)),  # plain: batched
        GenJob([1], Sampling(4, temperature=1.0)),
        GenJob([1], Sampling(4, temperature=0.7, seed=5)),  # seeded: its own generator
        GenJob([1], Sampling(4, temperature=1.0, top_p=0.5)),  # top-p: row by row
        GenJob([1], Sampling(4, temperature=1.0)),  # finished: padded
    ]
    rows = [(job, 0) for job in jobs]
    gens = [None, None, None, torch.Generator().manual_seed(5), None, None]
    picks = _sample_rows(torch, logits, rows, [True] * 5 + [False], gens, pad=99)
    assert picks[0] == 1 and picks[4] == 1 and picks[5] == 99
    assert picks[3] == _sample(torch, logits[3], 0.7, 1.0, torch.Generator().manual_seed(5))
    assert all(p in (0, 1, 2) for p in picks[:5])
    draws = [_sample_rows(torch, logits, rows[1:2], [True], [None], pad=99)[0] for _ in range(300)]
    assert set(draws) == {0, 1, 2}  # really sampled: the unlikely tokens come up too
