"""Runners: claim queued rollouts from the store and run the agent on each, with heartbeats.

A Runner is a loop in its own process (or a thread, for tests and notebooks): claim one
rollout, fetch the latest resource versions, run `agent(task, resources)` inside
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
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
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


class _Heartbeat:
    """Heartbeats one attempt from a daemon thread until stopped or the attempt is lost."""

    def __init__(self, store: Store, attempt_id: str, interval: float) -> None:
        self.lost = False
        self._store, self._attempt_id, self._interval = store, attempt_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"voltline-heartbeat-{attempt_id}", daemon=True
        )

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._store.heartbeat(self._attempt_id)
            except AttemptLost:
                # Expired or cancelled: another runner may own the rollout now. The agent
                # cannot be interrupted safely, so we only stop claiming it is alive.
                self.lost = True
                log.warning(
                    "voltline runner: attempt %s was lost; its result will be ignored", self._attempt_id
                )
                return
            except Exception as exc:  # store briefly down: keep trying, the timeout decides
                log.warning("voltline runner: heartbeat for %s failed: %s", self._attempt_id, exc)


def _call_agent(agent: Agent, task: Any, resources: dict[str, ResourceVersion]) -> Any:
    result = agent(task, resources)
    if inspect.isawaitable(result):
        # asyncio.run copies the current context into its task, so the rollout stays current.
        return asyncio.run(_await(result))
    return result


async def _await(awaitable: Any) -> Any:
    return await awaitable


def run_claim(store: Store, agent: Agent, claim: Claim, options: RunnerOptions) -> bool:
    """Run the agent on one claimed rollout and finish its attempt. True if it succeeded.

    Never raises for the agent's exceptions (they fail the attempt, which the store retries
    while attempts remain); store errors while finishing are logged.
    """
    rollout_id, attempt_id = claim.rollout.rollout_id, claim.attempt.attempt_id
    error: BaseException | None = None
    with _Heartbeat(store, attempt_id, options.heartbeat_interval) as beat:
        try:
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


def runner_loop(
    store: Store,
    agent: Agent,
    worker_id: str,
    stop: Any,
    options: RunnerOptions = RunnerOptions(),
    parent_pid: int | None = None,
) -> int:
    """Claim and run rollouts until `stop` (an Event) is set; returns how many it ran.

    Up to `options.concurrency` rollouts run at once, each on its own thread; the loop claims
    only as many as it has free slots, so queued rollouts stay claimable by other runners.
    `parent_pid`: exit when that process is gone (a runner must not outlive its Trainer).
    """
    done = 0
    idle = options.poll_interval
    slots = max(1, options.concurrency)
    in_flight: set[Future[bool]] = set()
    with ThreadPoolExecutor(slots, thread_name_prefix=f"voltline-rollout-{worker_id}") as pool:
        while not stop.is_set():
            if parent_pid is not None and os.getppid() != parent_pid:
                log.warning("voltline runner %s: the trainer process is gone; exiting", worker_id)
                break
            finished = {f for f in in_flight if f.done()}
            done += len(finished)
            in_flight -= finished
            free = slots - len(in_flight)
            claims: list[Claim] = []
            if free > 0:
                try:
                    claims = store.claim(worker_id, free)
                except Exception as exc:  # store unavailable: back off, try again
                    log.warning("voltline runner %s: claim failed: %s", worker_id, exc)
            if claims:
                idle = options.poll_interval
                if slots == 1:
                    run_claim(store, agent, claims[0], options)
                    done += 1
                    continue
                in_flight.update(pool.submit(run_claim, store, agent, c, options) for c in claims)
                continue
            if in_flight:  # wakes early when a rollout finishes and frees a slot
                wait(in_flight, timeout=idle, return_when=FIRST_COMPLETED)
            else:
                stop.wait(idle)
            idle = min(idle * 2, options.max_poll_interval)
        # Rollouts already running finish (or the trainer's stop timeout terminates the process).
        done += len(in_flight)
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
