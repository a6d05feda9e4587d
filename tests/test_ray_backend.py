"""`Trainer(backend="ray")`: runners as Ray actors on a local Ray cluster (one per module).

The cluster is real (a GCS, a raylet and worker processes); the store is a SQLite file, which
actors on the same machine reach by its path. CI installs Ray, so these tests run there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import voltline
from voltline._httpstore import HttpStore
from voltline._ray import runner_store_url
from voltline._runner import worker_pid
from voltline.algorithms import Algorithm, NewResource, StepResult
from voltline.server import ServerThread
from voltline.trainer import Trainer

ray = pytest.importorskip("ray")  # an optional extra on a user's machine; CI installs it

KNOB = {"knob": {"kind": "json", "payload": {"n": 0}}}
TOKEN = "ray-test-token"


# agents and a toy algorithm ------------------------------------------------------------------
def knob_agent(task: dict[str, Any], resources: dict[str, voltline.ResourceVersion]) -> None:
    """Answers with the published knob; records which process ran it."""
    n = resources["knob"].payload["n"]
    time.sleep(0.1)  # long enough that one actor alone could not drain the queue at once
    voltline.emit_llm(model="toy", prompt_token_ids=[1, task["i"]], response_token_ids=[100 + n],
                      response_logprobs=[-0.1])  # fmt: skip
    voltline.emit_tool("whoami", result=os.getpid())
    voltline.emit_reward(float(n))


def holding_agent(task: dict[str, Any], resources: dict[str, voltline.ResourceVersion]) -> None:
    """The first runner to take the `hold` task writes its pid and waits there to be killed."""
    marker = task.get("hold")
    if marker and not os.path.exists(marker):
        voltline.emit_tool("holding", result=os.getpid())
        voltline.flush()
        Path(marker).write_text(str(os.getpid()))
        time.sleep(120)  # the test kills this actor long before
    voltline.emit_llm(model="toy", prompt_token_ids=[1, task["i"]], response_token_ids=[2])
    voltline.emit_reward(1.0)


class Bump(Algorithm):
    """Publishes the knob one higher each step: the next step's rollouts must see it."""

    name = "bump"

    def step(self, trajectories: Sequence[Any]) -> StepResult:
        n = max(tr.reward for tr in trajectories) + 1
        return StepResult(resources=[NewResource(name="knob", kind="json", payload={"n": int(n)})])


# fixtures --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    previous = os.environ.get("RAY_USAGE_STATS_ENABLED")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # no network: never report usage
    # Workers import the agents by module name, as a user's workers import the user's package.
    # HTTP stores opened by actors spool (if ever) under the test's temporary folder, not ~/.cache.
    spool = str(tmp_path_factory.mktemp("actor-spool"))
    workers_env = {"env_vars": {"PYTHONPATH": str(Path(__file__).parent), "VOLTLINE_SPOOL_DIR": spool}}
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 << 20, log_to_driver=False,
             runtime_env=workers_env)  # fmt: skip
    try:
        yield
    finally:
        ray.shutdown()
        if previous is None:
            os.environ.pop("RAY_USAGE_STATS_ENABLED", None)
        else:
            os.environ["RAY_USAGE_STATS_ENABLED"] = previous


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/ray.db"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie still answers; /proc says it has exited
        return " Z " not in Path(f"/proc/{pid}/stat").read_text().split(")", 1)[1][:4]
    except OSError:
        return False


def _gone_within(pids: list[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while any(_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


# tests -----------------------------------------------------------------------------------------
def test_ray_actors_drain_the_batch_and_train(ray_cluster: None, store_url: str) -> None:
    batch = [{"i": i} for i in range(12)]
    with Trainer(store_url, knob_agent, {"knob": Bump(resources=("knob",))}, backend="ray", runners=2,
                 group_size=2, initial_resources=KNOB) as trainer:  # fmt: skip
        first = trainer.train_step(batch)
        second = trainer.train_step(batch)
        pids = trainer.runner_pids
        workers = set(trainer._pool.handles())
        store = trainer.store
        assert len(pids) == 2 and os.getpid() not in pids
        assert len(workers) == 2 and {worker_pid(w) for w in workers} == set(pids)
        for metrics, version in ((first, 1), (second, 2)):
            assert (metrics["rollouts"], metrics["succeeded"], metrics["failed"]) == (24, 24, 0)
            assert metrics["retried"] == 0 and metrics["runner_restarts"] == 0
            assert metrics["knob/trajectories"] == 24 and metrics["knob/version"] == version + 1
            assert metrics["mean_reward"] == version - 1

        rollouts = store.query_rollouts(limit=100)
        assert len(rollouts) == 48
        ran_on = set()
        for rollout in rollouts:
            (attempt,) = store.get_attempts(rollout.rollout_id)  # each claimed exactly once
            assert attempt.status == "succeeded" and attempt.worker_id in workers
            ran_on.add(attempt.worker_id)
            spans = store.query_spans(rollout_id=rollout.rollout_id)
            assert [s.kind for s in spans] == ["llm", "tool", "reward"]
            assert {s.attempt_id for s in spans} == {attempt.attempt_id}
            # The agent ran in the actor process its attempt's worker id names.
            assert spans[1].attributes["gen_ai.tool.call.result"] == worker_pid(attempt.worker_id)
            # ... with the knob version current when its step started.
            step_version = rollout.metadata["step"]
            assert rollout.resources == {"knob": step_version}
            assert spans[0].attributes["response_token_ids"] == [100 + step_version - 1]
        assert ran_on == workers  # both actors took rollouts
    assert _gone_within(pids, 15), "close() must end the runner actors"


def test_killed_actor_rollout_is_retried_and_actor_replaced(
    ray_cluster: None, store_url: str, tmp_path: Path
) -> None:
    marker = tmp_path / "held.pid"
    batch = [{"i": 0, "hold": str(marker)}, {"i": 1}, {"i": 2}]
    with Trainer(store_url, holding_agent, backend="ray", runners=2, heartbeat_timeout=2.0,
                 max_attempts=2) as trainer, ThreadPoolExecutor(1) as pool:  # fmt: skip
        step = pool.submit(trainer.train_step, batch)
        deadline = time.monotonic() + 60
        while not marker.exists() or not marker.read_text():
            assert time.monotonic() < deadline and not step.done(), "no actor took the hold task"
            time.sleep(0.05)
        victim_pid = int(marker.read_text())
        before = trainer._pool.handles()
        (victim,) = [h for w, h in before.items() if worker_pid(w) == victim_pid]
        ray.kill(victim)
        metrics = step.result(timeout=90)

        assert (metrics["rollouts"], metrics["succeeded"], metrics["failed"]) == (3, 3, 0)
        assert metrics["retried"] == 1 and metrics["runner_restarts"] == 1
        store = trainer.store
        (held,) = [r for r in store.query_rollouts(limit=10) if r.input.get("hold")]
        first, second = store.get_attempts(held.rollout_id)
        assert first.status == "unresponsive" and worker_pid(first.worker_id) == victim_pid
        assert second.status == "succeeded" and worker_pid(second.worker_id) != victim_pid
        # The killed attempt keeps the span it emitted; the retry's spans are its own.
        assert [s.name for s in store.query_spans(attempt_id=first.attempt_id)] == ["execute_tool holding"]
        assert [s.kind for s in store.query_spans(attempt_id=second.attempt_id)] == ["llm", "reward"]

        # revive() replaced the dead actor: two live actors again, one of them new.
        after = trainer._pool.handles()
        assert len(after) == 2 and victim_pid not in trainer.runner_pids
        assert len(set(after) - set(before)) == 1
        assert not _alive(victim_pid)


def test_actors_reach_an_http_store_with_the_token_given_to_connect(
    ray_cluster: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VOLTLINE_STORE_TOKEN", raising=False)  # the token travels with the Trainer only
    db = voltline.connect(f"sqlite:///{tmp_path}/behind.db")
    try:
        with ServerThread(db, token=TOKEN) as server:
            store = HttpStore(server.url, token=TOKEN, spool_dir=tmp_path / "spool")
            # step_timeout: actors refused by the server would leave the rollouts unfinished.
            with store, Trainer(store, knob_agent, backend="ray", runners=1, step_timeout=60,
                                initial_resources=KNOB) as trainer:  # fmt: skip
                metrics = trainer.evaluate([{"i": i} for i in range(4)])
                (pid,) = trainer.runner_pids
        assert (metrics["rollouts"], metrics["succeeded"], metrics["cancelled"]) == (4, 4, 0)
        rollouts = db.query_rollouts(limit=10)
        assert len(rollouts) == 4 and pid != os.getpid()
        for rollout in rollouts:
            (attempt,) = db.get_attempts(rollout.rollout_id)
            assert worker_pid(attempt.worker_id) == pid
            spans = db.query_spans(rollout_id=rollout.rollout_id)
            assert [s.kind for s in spans] == ["llm", "tool", "reward"]
            assert spans[1].attributes["gen_ai.tool.call.result"] == pid
    finally:
        db.close()


def test_store_without_a_reachable_url_is_rejected(store_url: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    for url in ("sqlite://", "sqlite:///:memory:", "sqlite:///file:x?mode=memory&uri=true"):
        with pytest.raises(ValueError, match="in-memory store"):
            runner_store_url(SimpleNamespace(url=url))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs a store with a URL"):
        runner_store_url(SimpleNamespace())  # type: ignore[arg-type]
    monkeypatch.chdir(tmp_path)  # actors may start elsewhere: a relative path becomes absolute
    assert runner_store_url(SimpleNamespace(url="sqlite:///rel.db")) == f"sqlite:///{tmp_path}/rel.db"  # type: ignore[arg-type]
    assert runner_store_url(SimpleNamespace(url="http://lb:4747")) == "http://lb:4747"  # type: ignore[arg-type]

    store = voltline.connect(store_url)
    try:
        del store.url  # a Store object that cannot tell actors where it is
        with pytest.raises(ValueError, match="needs a store with a URL"):
            Trainer(store, knob_agent, backend="ray", runners=2)
    finally:
        store.close()
    with pytest.raises(ValueError, match="runners >= 1"):
        Trainer(store_url, knob_agent, backend="ray", runners=0)
    with pytest.raises(ValueError, match="backend must be 'local' or 'ray'"):
        Trainer(store_url, knob_agent, backend="dask")
    with pytest.raises(ValueError, match="only used with backend='ray'"):
        Trainer(store_url, knob_agent, ray_address="ray://head:10001")


def test_missing_ray_says_how_to_install_it(store_url: str) -> None:
    # A fresh interpreter where `import ray` fails, as on a machine without the extra.
    code = textwrap.dedent(
        """
        import sys
        sys.modules["ray"] = None
        import voltline
        try:
            voltline.Trainer(sys.argv[1], lambda task, resources: None, backend="ray", runners=2)
        except ImportError as exc:
            print(type(exc).__name__, exc)
        else:
            print("no error")
        """
    )
    out = subprocess.run([sys.executable, "-c", code, store_url], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (
        "ImportError Trainer(backend='ray') needs Ray, which is not installed: pip install 'voltline[ray]'"
    )
