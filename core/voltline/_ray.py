"""Runners as Ray actors: `Trainer(..., backend="ray")`.

Each runner is one actor running `runner_loop` against the store's URL, so runners can live
on any machine of a Ray cluster. The actor is threaded (two threads): one runs the loop, the
other answers `stop()` and `info()` while it runs. An actor that dies (`ray.kill`, its node
lost) stops heartbeating like a dead runner process: the store expires its attempt and
requeues the rollout, and `revive()` starts a replacement. Ray is imported only here, and
this module only when the Trainer is asked for the Ray backend.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from ._emitter import get_emitter
from ._runner import Agent, RunnerOptions, runner_loop
from ._store import Store, connect, redact_url

__all__ = ["RayRunnerPool", "import_ray", "runner_store_url"]

log = logging.getLogger("voltline.ray")

# How long start() waits for the first actors to come up (an autoscaling cluster may need
# minutes for a node; the pool keeps going and the actors join when they are placed).
START_WAIT = 60.0
# How long pids() waits for an actor that is still starting.
INFO_WAIT = 10.0


def import_ray() -> Any:
    """The `ray` module, or an ImportError that says how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError(
            "Trainer(backend='ray') needs Ray, which is not installed: pip install 'voltline[ray]'"
        ) from exc
    return ray


def runner_store_url(store: Store) -> str:
    """The URL Ray actors reconnect to the store by; rejects stores they could not reach."""
    url = getattr(store, "url", None)
    if not isinstance(url, str) or not url:
        raise ValueError(
            f"backend='ray' needs a store with a URL (runner actors reconnect by it); "
            f"{type(store).__name__} has none: pass a sqlite:///, postgresql:// or http:// URL"
        )
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower() if "://" in url else ""
    if scheme == "sqlite":
        sa_url = make_url(url)
        database = sa_url.database or ""
        if database in ("", ":memory:") or "mode=memory" in url:
            raise ValueError(
                f"backend='ray' cannot use the in-memory store {redact_url(url)!r}: runner actors are "
                "other processes; use a SQLite file, postgresql:// or http://"
            )
        if database.startswith("file:"):  # a SQLite URI filename: left as the user wrote it
            return url
        # Actors may start in another working directory than this process.
        return sa_url.set(database=str(Path(database).resolve())).render_as_string(hide_password=False)
    if scheme in ("postgresql", "postgres", "http", "https"):
        return url
    raise ValueError(f"backend='ray' cannot reach the store at {redact_url(url)!r}")


class VoltlineRunner:
    """The body of one runner actor (wrapped by `ray.remote` when the pool starts)."""

    def __init__(
        self, store_url: str, token: str | None, agent: Agent, tag: str, options: RunnerOptions
    ) -> None:
        self._store_url, self._token, self._agent, self._options = store_url, token, agent, options
        self._stop = threading.Event()
        # The host and pid name the process that ran each attempt, on whichever node it is.
        self.worker_id = f"{tag}-{socket.gethostname()}-pid-{os.getpid()}"

    def info(self) -> tuple[str, int]:
        return self.worker_id, os.getpid()

    def run(self) -> int:
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
        store = connect(self._store_url, token=self._token)
        try:
            return runner_loop(store, self._agent, self.worker_id, self._stop, self._options)
        finally:
            get_emitter().flush()
            store.close()

    def stop(self) -> None:
        self._stop.set()


def _nodes(ray: Any) -> int:
    """Live nodes of the cluster (0 if Ray cannot say, e.g. through Ray Client)."""
    try:
        return sum(bool(node.get("Alive")) for node in ray.nodes())
    except Exception:
        return 0


@dataclass
class _Actor:
    index: int
    handle: Any
    run_ref: Any  # resolves when the loop returns, or with an error when the actor dies
    info_ref: Any


class RayRunnerPool:
    """`n` runner actors with the interface of the Trainer's process pool."""

    def __init__(
        self, store: Store, agent: Agent, n: int, options: RunnerOptions, tag: str, address: str | None = None
    ) -> None:
        if n < 1:
            raise ValueError(f"backend='ray' needs runners >= 1 (runner actors), got {n}")
        self._ray = import_ray()
        self.store_url = runner_store_url(store)
        # A token given to connect() (not only $VOLTLINE_STORE_TOKEN) must reach the actors too.
        self._token: str | None = getattr(store, "_token", None)
        self.agent, self.n, self.options, self.tag, self.address = agent, n, options, tag, address
        self.restarts = 0
        self._actors: list[_Actor] = []
        self._remote_class: Any = None
        self._started = self._stopping = False

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        ray = self._ray
        if not ray.is_initialized():
            ray.init(address=self.address, ignore_reinit_error=True)
        elif self.address is not None:
            log.info("voltline: Ray is already initialised; ray_address=%r is not used", self.address)
        if self.store_url.startswith("sqlite") and _nodes(ray) > 1:
            log.warning(
                "voltline: the Ray cluster has several nodes but the store is a SQLite file: actors on "
                "other machines cannot reach it; use postgresql:// or http:// (voltline store serve)"
            )
        # max_concurrency=2: the runner loop holds one thread, stop()/info() use the other.
        self._remote_class = ray.remote(max_concurrency=2, max_restarts=0)(VoltlineRunner)
        self._actors = [self._spawn(i) for i in range(self.n)]
        infos = [a.info_ref for a in self._actors]
        ready, pending = ray.wait(infos, num_returns=len(infos), timeout=START_WAIT)
        try:
            ray.get(ready)
        except ray.exceptions.RayActorError as exc:
            # Typically the agent cannot be unpickled on the worker (its module is missing there).
            self.stop(timeout=0)
            raise RuntimeError(f"voltline: a runner actor failed to start: {exc}") from None
        if pending:
            log.warning("voltline: %d of %d runner actors are still waiting for cluster resources",
                        len(pending), len(infos))  # fmt: skip

    def _spawn(self, index: int) -> _Actor:
        handle = self._remote_class.options(scheduling_strategy="SPREAD").remote(
            self.store_url, self._token, self.agent, f"{self.tag}-{index}", self.options
        )
        return _Actor(index, handle, handle.run.remote(), handle.info.remote())

    def _ended(self) -> list[_Actor]:
        """Actors whose runner loop is over: dead, or (unexpectedly) returned."""
        if not self._actors:
            return []
        refs = [a.run_ref for a in self._actors]
        ready, _ = self._ray.wait(refs, num_returns=len(refs), timeout=0)
        done = set(ready)
        return [a for a in self._actors if a.run_ref in done]

    def pids(self) -> list[int]:
        """Process ids of the live runner actors (each on its own node)."""
        return [pid for _, _, pid in self._live()]

    def handles(self) -> dict[str, Any]:
        """Worker id -> actor handle of each live runner actor."""
        return {worker_id: actor.handle for actor, worker_id, _ in self._live()}

    def _live(self) -> list[tuple[_Actor, str, int]]:
        if not self._started or self._stopping:
            return []
        ended = {id(a) for a in self._ended()}
        out = []
        for actor in self._actors:
            if id(actor) in ended:
                continue
            try:
                worker_id, pid = self._ray.get(actor.info_ref, timeout=INFO_WAIT)
            except Exception:  # still pending, or died just now
                continue
            out.append((actor, worker_id, pid))
        return out

    def revive(self) -> int:
        """Replace runner actors that died (killed, node lost); returns how many."""
        if not self._started or self._stopping:
            return 0
        revived = 0
        for actor in self._ended():
            try:
                self._ray.get(actor.run_ref)
                reason = "its runner loop returned"
            except Exception as exc:
                reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            log.warning("voltline: runner actor %d died (%s); starting a new one", actor.index, reason)
            with contextlib.suppress(Exception):
                self._ray.kill(actor.handle, no_restart=True)
            self._actors[self._actors.index(actor)] = self._spawn(actor.index)
            revived += 1
        self.restarts += revived
        return revived

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        actors, self._actors = self._actors, []
        ray = self._ray
        if not actors or not ray.is_initialized():  # Ray shut down first: its actors are gone
            return
        for actor in actors:
            with contextlib.suppress(Exception):
                actor.handle.stop.remote()
        with contextlib.suppress(Exception):
            ray.wait([a.run_ref for a in actors], num_returns=len(actors), timeout=timeout)
        for actor in actors:
            # A loop stuck in an agent call: its rollout times out and is retried elsewhere.
            with contextlib.suppress(Exception):
                ray.kill(actor.handle, no_restart=True)
