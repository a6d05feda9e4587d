"""The Trainer: enqueue tasks, let Runners run the agent, turn spans into trajectories, train.

    trainer = Trainer(store="sqlite:///run.db", agent=my_agent, algorithms={"policy": GRPO(...)},
                      runners=2, group_size=4)
    metrics = trainer.train_step(tasks)        # one batch: rollouts -> trajectories -> new versions
    history = trainer.fit(tasks, steps=20, val_tasks=held_out, log_path="metrics.jsonl")

Each algorithm is keyed by the resource it owns and trains only on the turns that ran with that
resource (the adapter's `resource=` filter), so one agent can carry several resources, each
improved by its own algorithm. Runners are spawned processes (`runners=N`) or, with
`runners=0`, one thread in this process; with `backend="ray"` they are Ray actors, on any
machine of a Ray cluster. No torch imports: algorithms bring their own.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ._context import flush
from ._models import Rollout
from ._runner import Agent, LocalSignals, RunnerOptions, resource_scope, runner_loop, runner_main
from ._store import Store, connect
from .adapter import RewardRule, build_trajectories, select_attempt
from .algorithms import Algorithm, NewResource

__all__ = ["Trainer", "resource_scope"]

log = logging.getLogger("voltline.trainer")


class _RunnerPool:
    """N runner processes (spawned, so no forked locks or threads), or one thread when N is 0."""

    def __init__(self, store: Store, agent: Agent, n: int, options: RunnerOptions, tag: str) -> None:
        self.store, self.agent, self.n, self.options, self.tag = store, agent, n, options, tag
        self.restarts = 0
        self._mp = multiprocessing.get_context("spawn")
        self._stop: Any = self._mp.Event() if n > 0 else threading.Event()
        # The runner thread shares this process: it can be woken on enqueue and say when idle.
        self.signals: LocalSignals | None = LocalSignals() if n == 0 else None
        self._workers: list[Any] = []
        self._started = False

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        if self.n == 0:
            worker_id = f"{self.tag}-thread-0-pid-{os.getpid()}"
            thread = threading.Thread(
                target=runner_loop, args=(self.store, self.agent, worker_id, self._stop, self.options),
                kwargs={"signals": self.signals}, name="voltline-runner-0", daemon=True,
            )  # fmt: skip
            thread.start()
            self._workers.append(thread)
            return
        self._workers = [self._spawn(i) for i in range(self.n)]

    def _spawn(self, index: int) -> Any:
        process = self._mp.Process(
            target=_process_entry,
            args=(self.store.url, self.agent, f"{self.tag}-{index}", self._stop, self.options, os.getpid()),
            name=f"voltline-runner-{index}",
            daemon=True,
        )
        process.start()
        return process

    def pids(self) -> list[int]:
        return [w.pid for w in self._workers if self.n > 0 and w.pid is not None]

    def revive(self) -> int:
        """Replace runner processes that died (killed, crashed); returns how many."""
        if self.n == 0 or self._stop.is_set():
            return 0
        revived = 0
        for i, process in enumerate(self._workers):
            if not process.is_alive():
                log.warning("voltline: runner %d (pid %s) died with exit code %s; starting a new one",
                            i, process.pid, process.exitcode)  # fmt: skip
                self._workers[i] = self._spawn(i)
                revived += 1
        self.restarts += revived
        return revived

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self.signals is not None:
            self.signals.wake.set()
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        for worker in self._workers:
            if self.n > 0 and worker.is_alive():
                worker.terminate()  # stuck in an agent call: the rollout times out and is retried
                worker.join(2.0)
        self._workers = []


def _process_entry(store_url: str, agent: Agent, tag: str, stop: Any, options: RunnerOptions,
                   parent_pid: int) -> None:  # fmt: skip
    # The pid goes into the worker id so attempts and spans name the process that ran them.
    runner_main(store_url, agent, f"{tag}-pid-{os.getpid()}", stop, options, parent_pid)


class Trainer:
    """Runs an agent on tasks with the latest resources and trains each resource's algorithm.

    `store`: a URL or a Store (runner processes reconnect by its URL). `agent(task, resources)`:
    a top-level function (sync or async; spawned runners import it by name) given the task and
    the latest `ResourceVersion` per resource name. `algorithms`: resource name -> Algorithm
    owning it. `runners`: runner processes (0: one thread in this process); `concurrency`:
    rollouts each runner runs at once, on threads (an LLM proxy batches their model calls).
    `group_size`: runs per task per step (GRPO groups them by `metadata["group"]`).
    `initial_resources`: versions published at start for names that have none yet. A rollout
    whose attempt dies or stops heartbeating for `heartbeat_timeout` seconds is retried, up to
    `max_attempts` attempts.

    `backend`: "local" (runner processes on this machine) or "ray" (`runners` Ray actors, on
    the cluster at `ray_address`, or the Ray already initialised, or a new local one; needs
    `pip install 'voltline[ray]'`). Ray actors reconnect to the store by its URL: a SQLite
    file only works on one machine; across machines use postgresql:// or http://.
    """

    def __init__(
        self,
        store: Store | str,
        agent: Agent,
        algorithms: Mapping[str, Algorithm] | None = None,
        *,
        runners: int = 2,
        concurrency: int = 1,
        group_size: int = 1,
        reward_rule: RewardRule = "final",
        gamma: float = 1.0,
        initial_resources: Mapping[str, NewResource | Mapping[str, Any]] | None = None,
        heartbeat_timeout: float = 30.0,
        heartbeat_interval: float | None = None,
        rollout_timeout: float | None = None,
        max_attempts: int = 3,
        step_timeout: float | None = None,
        backend: str = "local",
        ray_address: str | None = None,
    ) -> None:
        if runners < 0 or concurrency < 1 or group_size < 1 or max_attempts < 1 or heartbeat_timeout <= 0:
            raise ValueError(
                "runners >= 0, concurrency >= 1, group_size >= 1, max_attempts >= 1 and heartbeat_timeout > 0"
            )
        if not callable(agent):
            raise TypeError(f"agent must be callable, got {type(agent).__name__}")
        if backend not in ("local", "ray"):
            raise ValueError(f"backend must be 'local' or 'ray', got {backend!r}")
        if ray_address is not None and backend != "ray":
            raise ValueError("ray_address is only used with backend='ray'")
        self.algorithms: dict[str, Algorithm] = dict(algorithms or {})
        for resource, algorithm in self.algorithms.items():
            if resource not in algorithm.owned_resources:
                raise ValueError(
                    f"{_algo_name(algorithm)} is registered for resource {resource!r} but owns "
                    f"{list(algorithm.owned_resources)}; pass resources=[{resource!r}] to its constructor"
                )
        self._own_store = isinstance(store, str)
        self.store: Store = connect(store) if isinstance(store, str) else store
        self.agent = agent
        self.group_size = group_size
        self.reward_rule: RewardRule = reward_rule
        self.gamma = gamma
        self.heartbeat_timeout = heartbeat_timeout
        self.rollout_timeout = rollout_timeout
        self.max_attempts = max_attempts
        self.step_timeout = step_timeout
        self.run_id = uuid.uuid4().hex[:8]
        self.step_count = 0
        self._closed = False
        options = RunnerOptions(heartbeat_interval=heartbeat_interval or heartbeat_timeout / 4,
                                concurrency=concurrency)  # fmt: skip
        self._pool: Any
        if backend == "ray":
            from ._ray import RayRunnerPool

            try:
                self._pool = RayRunnerPool(self.store, agent, runners, options, f"runner-{self.run_id}",
                                           address=ray_address)  # fmt: skip
            except BaseException:
                if self._own_store:
                    self.store.close()
                raise
        else:
            self._pool = _RunnerPool(self.store, agent, runners, options, f"runner-{self.run_id}")
        # Stop runner processes even if the user forgets close(): they must not outlive us.
        self._finalizer = weakref.finalize(self, self._pool.stop)
        self._publish_initial(initial_resources or {})

    # lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the runners (waiting for running rollouts briefly) and close an owned store."""
        self._closed = True
        self._finalizer()
        if self._own_store:
            self.store.close()

    @property
    def runner_pids(self) -> list[int]:
        """Process ids of the live runner processes (empty before the first step or with runners=0)."""
        return self._pool.pids()

    def _publish_initial(self, initial: Mapping[str, NewResource | Mapping[str, Any]]) -> None:
        existing = {rv.name for rv in self.store.list_resources()}
        for name, spec in initial.items():
            if name in existing:
                continue
            resource = spec if isinstance(spec, NewResource) else NewResource(name=name, **spec)
            self.store.put_resource(name, resource.kind, resource.payload, artifact=resource.artifact,
                                    created_by="initial", metrics=resource.metrics)  # fmt: skip

    # running rollouts ------------------------------------------------------------------
    def _run(self, tasks: Sequence[Any], mode: str, repeats: int, step: int) -> list[Rollout]:
        """Enqueue every task `repeats` times, wait for all, return the finished rollouts."""
        if self._closed:
            raise RuntimeError("this Trainer is closed: its runners have stopped")
        self._pool.start()
        rows = []
        for i, task in enumerate(tasks):
            group = f"{self.run_id}-{mode}{step}-t{i}"
            for k in range(repeats):
                rows.append(
                    dict(input=task, mode=mode, timeout=self.rollout_timeout,
                         heartbeat_timeout=self.heartbeat_timeout, max_attempts=self.max_attempts,
                         metadata={"group": group, "step": step, "task_index": i, "sample": k,
                                   "trainer": self.run_id})
                )  # fmt: skip
        ids = [r.rollout_id for r in self.store.enqueue_many(rows)]
        signals: LocalSignals | None = getattr(self._pool, "signals", None)
        generation = signals.enqueued() if signals is not None else None
        return self._wait(ids, signals, generation)

    def _wait(self, ids: list[str], signals: LocalSignals | None = None,
              generation: int | None = None) -> list[Rollout]:  # fmt: skip
        deadline = None if self.step_timeout is None else time.monotonic() + self.step_timeout
        while True:
            # Short waits so a dead runner is replaced promptly; the store's wait also expires
            # attempts whose heartbeat stopped, which is what requeues a killed runner's rollout.
            if signals is not None and generation is not None:
                # The in-process runner says when it has nothing left: check the store then,
                # instead of polling it while the rollouts run.
                idle = signals.wait_idle(generation, timeout=1.0)
                rollouts = self.store.wait(ids, timeout=0)
                if idle and not all(r.status.finished for r in rollouts):
                    signals = None  # held elsewhere (another runner on this store): poll
            else:
                rollouts = self.store.wait(ids, timeout=1.0)
            # Also when the step is done: a runner that died during it (its rollouts retried
            # elsewhere) is replaced before the next step needs it.
            self._pool.revive()
            if all(r.status.finished for r in rollouts):
                return rollouts
            if deadline is not None and time.monotonic() > deadline:
                unfinished = [r.rollout_id for r in rollouts if not r.status.finished]
                log.warning("voltline: step timed out; cancelling %d unfinished rollouts", len(unfinished))
                for rollout_id in unfinished:
                    try:
                        self.store.cancel(rollout_id)
                    except Exception as exc:  # finished meanwhile
                        log.debug("cancel %s: %s", rollout_id, exc)
                return [self.store.get_rollout(i) for i in ids]

    def _primary_reward(self, rollout: Rollout) -> float | None:
        """The rollout's primary reward (sum of its primary reward spans), as the adapter counts it,
        also for rollouts the adapter skips (no llm turns, e.g. a prompt-only agent)."""
        if rollout.num_attempts == 1:
            # One attempt: all the rollout's spans are that attempt's; no need to look it up.
            spans = self.store.query_spans(rollout_id=rollout.rollout_id, kind="reward")
        else:
            attempt = select_attempt(self.store.get_attempts(rollout.rollout_id))
            if attempt is None:
                return None
            spans = self.store.query_spans(
                rollout_id=rollout.rollout_id, attempt_id=attempt.attempt_id, kind="reward"
            )
        values = []
        for span in spans:
            value = span.attributes.get("reward.value")
            primary = span.attributes.get("reward.primary", not span.attributes.get("reward.name"))
            if primary and isinstance(value, int | float) and not isinstance(value, bool):
                values.append(float(value))
        return sum(values) if values else None

    def _summary(self, rollouts: list[Rollout]) -> dict[str, Any]:
        succeeded = [r for r in rollouts if r.status == "succeeded"]
        rewards = [v for v in (self._primary_reward(r) for r in succeeded) if v is not None]
        return {
            "mean_reward": sum(rewards) / len(rewards) if rewards else None,
            "rollouts": len(rollouts),
            "succeeded": len(succeeded),
            "failed": sum(r.status == "failed" for r in rollouts),
            "cancelled": sum(r.status == "cancelled" for r in rollouts),
            "retried": sum(max(0, r.num_attempts - 1) for r in rollouts),
        }

    # training --------------------------------------------------------------------------
    def train_step(self, tasks: Sequence[Any]) -> dict[str, Any]:
        """Run each task `group_size` times, train every algorithm on its turns, publish.

        Returns `step`, `mean_reward` (None if no rollout emitted a primary reward),
        `rollouts`, `succeeded`, `failed`, `cancelled`, `retried`, `seconds`, and per
        algorithm `<resource>/<metric>` plus `<resource>/trajectories`, `<resource>/skipped`
        and `<resource>/version` (the version it published, if any).
        """
        if not tasks:
            raise ValueError("train_step needs at least one task")
        started = time.monotonic()
        self.step_count += 1
        step = self.step_count
        rollouts = self._run(tasks, "train", self.group_size, step)
        # Spans submitted in this process (an LLM proxy served from it records the calls of
        # runner processes here) must be in the store before trajectories are built from it.
        flush()
        metrics: dict[str, Any] = {"step": step, **self._summary(rollouts)}
        ids = [r.rollout_id for r in rollouts if r.status == "succeeded"]
        for resource, algorithm in self.algorithms.items():
            # A text-only algorithm (prompt optimization) also learns from calls without token ids.
            needs_ids = getattr(algorithm, "needs_token_ids", True)
            built = build_trajectories(self.store, ids, resource=resource, reward_rule=self.reward_rule,
                                       gamma=self.gamma, require_token_ids=needs_ids)  # fmt: skip
            metrics[f"{resource}/trajectories"] = len(built.trajectories)
            metrics[f"{resource}/skipped"] = len(built.skipped)
            if not built.trajectories:
                log.warning("voltline: step %d: no trajectories for %r (%s)", step, resource,
                            next(iter(built.skipped.values()), "no successful rollouts"))  # fmt: skip
                continue
            # Algorithm errors are the trainer's (not the agent's): they propagate to the caller.
            result = algorithm.run_step(built.trajectories)
            for key, value in result.metrics.items():
                metrics[f"{resource}/{key}"] = value
            for new in result.resources:
                version = self.store.put_resource(
                    new.name, new.kind, new.payload, artifact=new.artifact,
                    created_by=f"{_algo_name(algorithm)} step {step}", metrics=new.metrics,
                )  # fmt: skip
                metrics[f"{new.name}/version"] = version.version
        metrics["runner_restarts"] = self._pool.restarts
        metrics["seconds"] = round(time.monotonic() - started, 3)
        return metrics

    def evaluate(self, tasks: Sequence[Any], *, mode: str = "val") -> dict[str, Any]:
        """Run each task once with the current resources, without training; returns the summary
        (`mean_reward`, `rollouts`, `succeeded`, `failed`, ...)."""
        rollouts = self._run(tasks, mode, 1, self.step_count)
        return self._summary(rollouts)

    def fit(
        self,
        tasks: Sequence[Any],
        steps: int,
        *,
        val_tasks: Sequence[Any] | None = None,
        log_path: str | Path | None = None,
        batch_size: int | None = None,
        val_every: int = 1,
        progress: bool | Any = None,
    ) -> list[dict[str, Any]]:
        """Train for `steps` steps and return the records also written to `log_path` (JSONL).

        Each step takes the next `batch_size` tasks (cycling; default all). With `val_tasks`,
        validation rollouts (mode "val", never trained on) run before the first step, every
        `val_every` steps and after the last. `progress`: a rich progress bar on stderr
        (default: only when stderr is a terminal), or a `rich.console.Console` to draw on.
        """
        if steps < 1:
            raise ValueError("steps must be >= 1")
        records: list[dict[str, Any]] = []
        log_file = open(log_path, "a", encoding="utf-8") if log_path else None  # noqa: SIM115

        def record(kind: str, values: dict[str, Any]) -> dict[str, Any]:
            entry = {"event": kind, "time": round(time.time(), 3), **values}
            records.append(entry)
            if log_file is not None:
                log_file.write(json.dumps(entry, default=str) + "\n")
                log_file.flush()
            return entry

        bar = _ProgressBar(progress, steps)
        try:
            with bar:
                if val_tasks:
                    record("val", {"step": self.step_count, **self.evaluate(val_tasks)})
                for i in range(steps):
                    batch = _batch(tasks, i, batch_size)
                    metrics = record("train", self.train_step(batch))
                    bar.advance(metrics["mean_reward"])
                    if val_tasks and ((i + 1) % val_every == 0 or i + 1 == steps):
                        record("val", {"step": self.step_count, **self.evaluate(val_tasks)})
        finally:
            if log_file is not None:
                log_file.close()
        return records


def _algo_name(algorithm: Algorithm) -> str:
    return getattr(algorithm, "name", None) or type(algorithm).__name__


def _batch(tasks: Sequence[Any], index: int, size: int | None) -> list[Any]:
    if size is None or size >= len(tasks):
        return list(tasks)
    start = (index * size) % len(tasks)
    return [tasks[(start + k) % len(tasks)] for k in range(size)]


class _ProgressBar:
    """A rich progress bar over training steps, showing the latest mean reward."""

    def __init__(self, progress: bool | Any, steps: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        console = progress if isinstance(progress, Console) else Console(file=sys.stderr)
        enabled = progress is not False and (progress is not None or console.is_terminal)
        self._progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
            TimeElapsedColumn(), console=console, disable=not enabled,
        )  # fmt: skip
        self._task = self._progress.add_task("reward -", total=steps)

    def __enter__(self) -> _ProgressBar:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def advance(self, reward: float | None) -> None:
        text = "reward -" if reward is None else f"reward {reward:.3f}"
        self._progress.update(self._task, advance=1, description=text)
