"""Runners: claim queued rollouts from the store and run the agent on each, with heartbeats.

A Runner is a loop in its own process (or a thread, for tests and notebooks): claim rollouts,
fetch the latest resource versions, run `agent(task, resources)` inside
`voltline.rollout(rollout_id=..., attempt_id=...)` while a side thread heartbeats the attempt,
then finish the attempt as succeeded, or failed with the agent's exception. A runner that
dies mid-rollout stops heartbeating; the store then marks that attempt unresponsive and
requeues the rollout for another runner. No torch or framework imports here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from . import _context
from ._context import rollout
from ._emitter import get_emitter
from ._errors import AttemptLost
from ._models import Claim, ResourceVersion
from ._store import Store, connect

__all__ = [
    "Agent",
    "LocalSignals",
    "RunnerOptions",
    "resource_scope",
    "run_claim",
    "runner_loop",
    "runner_main",
    "worker_pid",
]

log = logging.getLogger("voltline.runner")

# agent(task, resources) -> anything (or an awaitable); resources maps name -> latest version.
Agent = Callable[[Any, dict[str, ResourceVersion]], Any]


@dataclass(frozen=True)
class RunnerOptions:
    """How a runner polls and heartbeats (picklable: it crosses into spawned processes)."""

    heartbeat_interval: float = 5.0
    poll_interval: float = 0.05  # first idle wait; doubles up to max_poll_interval
    max_poll_interval: float = 0.2
    # Rollouts one runner runs at once, each on its own thread. Agents mostly wait on model
    # calls; several in flight let an LLM proxy batch their requests into one forward pass.
    concurrency: int = 1


def _latest_resources(store: Store) -> dict[str, ResourceVersion]:
    return {version.name: version for version in store.list_resources()}


class LocalSignals:
    """Wake-ups between a Trainer and the runner thread in its own process (`runners=0`).

    `enqueued()` wakes the runner at once instead of at its next poll; the runner reports
    `idle(generation)` when, after that enqueue, it found nothing to claim and nothing running,
    which is when the Trainer's rollouts are most likely all finished. Both only shorten
    waits: the runner still polls the store and the Trainer still checks it, so a missed
    signal costs time, never correctness. Runner processes poll (no shared memory here).
    """

    def __init__(self) -> None:
        self.wake = threading.Event()
        self._cond = threading.Condition()
        self._generation = 0  # enqueues announced so far
        self._idle_after = 0  # the latest generation after which the runner was found idle

    @property
    def generation(self) -> int:
        return self._generation

    def enqueued(self) -> int:
        """Announce rollouts just enqueued; returns the generation to pass to `wait_idle`."""
        with self._cond:
            self._generation += 1
            generation = self._generation
        self.wake.set()
        return generation

    def idle(self, generation: int) -> None:
        with self._cond:
            if generation > self._idle_after:
                self._idle_after = generation
                self._cond.notify_all()

    def wait_idle(self, generation: int, timeout: float) -> bool:
        """True once the runner was idle after enqueue `generation`; False after `timeout`."""
        with self._cond:
            return self._cond.wait_for(lambda: self._idle_after >= generation, timeout)


class _Beat:
    """One attempt's heartbeat state; `lock` is held while its heartbeat is being sent."""

    __slots__ = ("attempt_id", "due", "lock", "lost", "stopped")

    def __init__(self, attempt_id: str, due: float) -> None:
        self.attempt_id, self.due = attempt_id, due
        self.lock = threading.Lock()
        self.lost = False
        self.stopped = False


class _Heartbeats:
    """Heartbeats every running attempt of one runner from a single daemon thread.

    One thread per runner rather than per rollout: `Thread.start` waits until the new thread
    holds the GIL, which with dozens of busy rollout threads costs milliseconds per rollout.
    """

    def __init__(self, store: Store, interval: float) -> None:
        self._store, self._interval = store, interval
        self._lock = threading.Lock()
        self._beats: dict[str, _Beat] = {}
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None

    @contextmanager
    def beat(self, attempt_id: str) -> Iterator[_Beat]:
        """Heartbeat `attempt_id` while inside; `.lost` is final once the block has left."""
        beat = _Beat(attempt_id, time.monotonic() + self._interval)
        with self._lock:
            self._beats[attempt_id] = beat
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="voltline-heartbeat", daemon=True)
                self._thread.start()
        try:
            yield beat
        finally:
            with self._lock:
                self._beats.pop(attempt_id, None)
            # Wait out a heartbeat in flight, so its verdict (lost or not) is in before the
            # caller finishes the attempt, and none is sent after.
            with beat.lock:
                beat.stopped = True

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._closed:
            now = time.monotonic()
            with self._lock:
                beats = list(self._beats.values())
            for beat in beats:
                if beat.due <= now:
                    self._send(beat)
            with self._lock:
                nearest = min((b.due for b in self._beats.values()), default=now + self._interval)
            self._wake.wait(max(0.0, min(nearest - time.monotonic(), self._interval)))

    def _send(self, beat: _Beat) -> None:
        with beat.lock:
            if beat.stopped:
                return
            try:
                self._store.heartbeat(beat.attempt_id)
            except AttemptLost:
                # Expired or cancelled: another runner may own the rollout now. The agent
                # cannot be interrupted safely, so we only stop claiming it is alive.
                beat.lost = True
                beat.stopped = True
                log.warning(
                    "voltline runner: attempt %s was lost; its result will be ignored", beat.attempt_id
                )
                return
            except Exception as exc:  # store briefly down: keep trying, the timeout decides
                log.warning("voltline runner: heartbeat for %s failed: %s", beat.attempt_id, exc)
            beat.due = time.monotonic() + self._interval


def _call_agent(agent: Agent, task: Any, resources: dict[str, ResourceVersion]) -> Any:
    result = agent(task, resources)
    if inspect.isawaitable(result):
        # asyncio.run copies the current context into its task, so the rollout stays current.
        return asyncio.run(_await(result))
    return result


async def _await(awaitable: Any) -> Any:
    return await awaitable


def run_claim(
    store: Store,
    agent: Agent,
    claim: Claim,
    resources: dict[str, ResourceVersion] | None,
    heartbeats: _Heartbeats,
) -> bool:
    """Run the agent on one claimed rollout and finish its attempt. True if it succeeded.

    `resources`: the latest versions, fetched after the claim by the caller (one fetch for a
    batch of claims started together); None (that fetch failed) fetches them here.
    `heartbeats`: the runner's heartbeat thread. Never raises for the agent's exceptions (they
    fail the attempt, which the store retries while attempts remain); store errors while
    finishing are logged.
    """
    rollout_id, attempt_id = claim.rollout.rollout_id, claim.attempt.attempt_id
    error: BaseException | None = None
    with heartbeats.beat(attempt_id) as beat:
        try:
            if resources is None:
                resources = _latest_resources(store)
            versions = {name: rv.version for name, rv in resources.items()}
            with rollout(rollout_id=rollout_id, attempt_id=attempt_id, store=store, resources=versions):
                _call_agent(agent, claim.rollout.input, resources)
        except Exception as exc:  # the agent's failure is the rollout's, not the runner's
            error = exc
            log.info("voltline runner: rollout %s failed: %s: %s", rollout_id, type(exc).__name__, exc)
    if beat.lost:
        return False
    try:
        if error is None:
            store.finish_attempt(attempt_id, "succeeded")
        else:
            store.finish_attempt(attempt_id, "failed", f"{type(error).__name__}: {error}"[:2000])
    except AttemptLost:
        log.warning("voltline runner: attempt %s expired before it finished; result ignored", attempt_id)
        return False
    except Exception as exc:
        log.error("voltline runner: could not finish attempt %s: %s", attempt_id, exc)
        return False
    return error is None


def _resources_for_batch(store: Store) -> dict[str, ResourceVersion] | None:
    try:
        return _latest_resources(store)
    except Exception as exc:  # each rollout fetches again, and fails its attempt if that fails too
        log.warning("voltline runner: could not fetch resources: %s", exc)
        return None


def runner_loop(
    store: Store,
    agent: Agent,
    worker_id: str,
    stop: Any,
    options: RunnerOptions = RunnerOptions(),
    parent_pid: int | None = None,
    signals: LocalSignals | None = None,
) -> int:
    """Claim and run rollouts until `stop` (an Event) is set; returns how many it ran.

    Up to `options.concurrency` rollouts run at once, each on its own thread; the loop claims
    only as many as it has free slots, so queued rollouts stay claimable by other runners.
    Rollouts claimed together share one fetch of the latest resource versions (the Trainer
    publishes between steps, so they are the same versions a fetch per rollout would see).
    `parent_pid`: exit when that process is gone (a runner must not outlive its Trainer).
    `signals`: a Trainer in this process wakes the loop on enqueue and learns when it is idle.
    """
    done = 0
    idle = options.poll_interval
    slots = max(1, options.concurrency)
    in_flight: set[Future[bool]] = set()
    # Set on enqueue (by a Trainer in this process) and whenever a rollout finishes (a slot is free).
    wake = signals.wake if signals is not None else threading.Event()
    heartbeats = _Heartbeats(store, options.heartbeat_interval)
    woken = False  # the last wait ended by `wake`, not by its timeout
    drained = -1  # the enqueue generation at which a claim last came back short
    try:
        with ThreadPoolExecutor(slots, thread_name_prefix=f"voltline-rollout-{worker_id}") as pool:
            while not stop.is_set():
                if parent_pid is not None and os.getppid() != parent_pid:
                    log.warning("voltline runner %s: the trainer process is gone; exiting", worker_id)
                    break
                # Cleared before looking at the store: a set after this point is not missed.
                wake.clear()
                generation = signals.generation if signals is not None else 0
                finished = {f for f in in_flight if f.done()}
                done += len(finished)
                in_flight -= finished
                free = slots - len(in_flight)
                # Woken because a rollout succeeded, with nothing enqueued since the queue ran
                # dry: nothing new can be claimable (a failed attempt may be requeued, an expired
                # one is found by the timed polls), so skip a claim transaction per rollout.
                quiet = (
                    signals is not None and woken and bool(in_flight) and generation == drained
                    and all(f.exception() is None and f.result() for f in finished)
                )  # fmt: skip
                claims: list[Claim] = []
                looked = False
                if free > 0 and not quiet:
                    try:
                        claims = store.claim(worker_id, free)
                        looked = True
                    except Exception as exc:  # store unavailable: back off, try again
                        log.warning("voltline runner %s: claim failed: %s", worker_id, exc)
                    if looked and len(claims) < free:
                        drained = generation
                if claims:
                    idle = options.poll_interval
                    woken = True  # loop again at once: claim more, or skip it if the queue ran dry
                    resources = _resources_for_batch(store)
                    if slots == 1:
                        run_claim(store, agent, claims[0], resources, heartbeats)
                        done += 1
                        continue
                    for c in claims:
                        future = pool.submit(run_claim, store, agent, c, resources, heartbeats)
                        future.add_done_callback(lambda _: wake.set())
                        in_flight.add(future)
                    continue
                if signals is not None and looked and not in_flight:
                    signals.idle(generation)
                if in_flight or signals is not None:  # wakes early on enqueue or a finished rollout
                    woken = wake.wait(idle)
                else:
                    stop.wait(idle)
                    woken = False
                idle = min(idle * 2, options.max_poll_interval)
            # Rollouts already running finish (or the trainer's stop timeout terminates the process).
            done += len(in_flight)
    finally:
        heartbeats.close()
    get_emitter().flush()
    return done


def runner_main(store_url: str, agent: Agent, worker_id: str, stop: Any, options: RunnerOptions,
                parent_pid: int) -> None:  # fmt: skip
    """Entry point of a runner process (multiprocessing spawn)."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    store = connect(store_url)
    try:
        runner_loop(store, agent, worker_id, stop, options, parent_pid=parent_pid)
    finally:
        get_emitter().flush()
        store.close()


@contextmanager
def resource_scope(*versions: ResourceVersion | str) -> Iterator[None]:
    """Mark the spans emitted inside as using only the given resources.

    The runner records every current resource version on every span of a rollout. An agent
    that uses two resources (a planner prompt and a specialist adapter, each trained by its
    own algorithm) wraps each part in `resource_scope(resources["planner"])` so each
    algorithm receives only the turns that its resource produced. Outside a rollout it does
    nothing. Names (strings) take the version the rollout is using.
    """
    token = None
    try:
        ctx = _context.current_rollout()
        if ctx is not None:
            scoped: dict[str, int] = {}
            for item in versions:
                if isinstance(item, ResourceVersion):
                    scoped[item.name] = item.version
                elif item in ctx.resources:
                    scoped[item] = ctx.resources[item]
            # Same store, ids and sequence counter (dataclasses.replace shares the iterator), so
            # spans stay one sequence per attempt; only the resources stamped on spans change.
            token = _context._rollout.set(dataclasses.replace(ctx, resources=scoped))
    except Exception:  # on the agent's path: never raise, spans just keep all resources
        get_emitter().count("capture_errors")
        log.exception("voltline: resource_scope failed; spans keep the rollout's resources")
    try:
        yield
    finally:
        if token is not None:
            _context._rollout.reset(token)


def worker_pid(worker_id: str | None) -> int | None:
    """The process id inside a runner's worker id (`runner-<n>-pid-<pid>`), if any."""
    if not worker_id or "-pid-" not in worker_id:
        return None
    try:
        return int(worker_id.rsplit("-pid-", 1)[1])
    except ValueError:
        return None
