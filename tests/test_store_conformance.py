"""One conformance suite for the whole `Store` interface, run against every backend.

Every test takes the `store` fixture (tests/conftest.py), parametrized over SQLite and
PostgreSQL; the PostgreSQL runs use a fresh schema per test.
"""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from _sql import scalar

import voltline
from voltline import (
    AttemptLost,
    AttemptStatus,
    Claim,
    InvalidInput,
    NotFound,
    RolloutStatus,
    SchemaOutOfDate,
    Span,
    Store,
    StoreUnavailable,
)
from voltline._models import MAX_ATTRIBUTES_BYTES


def span(claim: Claim, span_id: str, sequence: int | None = None, **fields: Any) -> dict[str, Any]:
    """A valid span (as a dict) of the claim's attempt."""
    return {
        "span_id": span_id,
        "rollout_id": claim.rollout.rollout_id,
        "attempt_id": claim.attempt.attempt_id,
        "sequence": sequence,
        "kind": "llm",
        "name": f"call {span_id}",
        "start_time": 1_700_000_000.0,
        **fields,
    }


def ids(rollouts: list[voltline.Rollout]) -> list[str]:
    return [r.rollout_id for r in rollouts]


# enqueue ---------------------------------------------------------------------------------
def test_enqueue_round_trips_every_field(store: Store) -> None:
    task = {"question": "2+2?", "choices": [3, 4, 5], "nested": {"ok": True, "none": None}, "pi": 3.14}
    before = time.time()
    r = store.enqueue(
        task, mode="val", timeout=30.5, heartbeat_timeout=5, max_attempts=3, metadata={"split": "a", "n": 7}
    )
    assert r.rollout_id
    assert r.input == task
    assert r.mode == "val"
    assert r.status == RolloutStatus.QUEUED
    assert (r.timeout, r.heartbeat_timeout, r.max_attempts) == (30.5, 5, 3)
    assert r.num_attempts == 0
    assert r.metadata == {"split": "a", "n": 7}
    assert r.resources == {}
    assert r.error is None
    assert r.created_at >= before - 1
    assert r.started_at is None and r.finished_at is None
    assert store.get_rollout(r.rollout_id) == r


def test_enqueue_defaults(store: Store) -> None:
    r = store.enqueue()
    stored = store.get_rollout(r.rollout_id)
    assert stored == r
    assert stored.input is None
    assert stored.mode == "train"
    assert stored.timeout is None and stored.heartbeat_timeout is None
    assert stored.max_attempts == 1
    assert stored.metadata == {} and stored.resources == {}
    assert stored.status == "queued"


def test_enqueue_many_round_trips_in_order(store: Store) -> None:
    specs = [
        {"input": "a"},
        {"input": {"b": 1}, "mode": "test", "metadata": {"k": "v"}},
        {"input": [1, 2], "max_attempts": 2, "timeout": 1.5},
    ]
    made = store.enqueue_many(specs)
    assert [r.input for r in made] == ["a", {"b": 1}, [1, 2]]
    assert [r.mode for r in made] == ["train", "test", "train"]
    assert made[1].metadata == {"k": "v"}
    assert (made[2].max_attempts, made[2].timeout) == (2, 1.5)
    assert len(set(ids(made))) == 3
    assert [store.get_rollout(r.rollout_id) for r in made] == made
    assert store.query_rollouts() == made
    assert store.enqueue_many([]) == []


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"mode": "prod"}, "mode"),
        ({"timeout": -1}, "timeout"),
        ({"heartbeat_timeout": "soon"}, "heartbeat_timeout"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"metadata": ["not", "a", "mapping"]}, "metadata"),
        ({"input": {1, 2}}, "input"),
        ({"input": float("nan")}, "input"),
    ],
)
def test_enqueue_rejects_bad_values_naming_the_field(
    store: Store, kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidInput, match=field):
        store.enqueue(**{"input": "task", **kwargs})
    assert store.query_rollouts() == []


def test_enqueue_many_with_one_bad_item_stores_none(store: Store) -> None:
    earlier = store.enqueue("earlier")
    batch = [{"input": 1}, {"input": 2}, {"input": 3, "mode": "bogus"}, {"input": 4}]
    with pytest.raises(InvalidInput, match=r"rollouts\[2\]\.mode"):
        store.enqueue_many(batch)
    with pytest.raises(InvalidInput, match=r"rollouts\[1\].*colour"):
        store.enqueue_many([{"input": 1}, {"input": 2, "colour": "red"}])
    with pytest.raises(InvalidInput, match=r"rollouts\[1\]\.input"):
        store.enqueue_many([{"input": 1}, {"input": object()}])
    with pytest.raises(InvalidInput, match=r"rollouts\[0\]"):
        store.enqueue_many(["not a mapping"])  # type: ignore[list-item]
    assert store.query_rollouts() == [earlier]


# claim and start_rollout ---------------------------------------------------------------------
def test_claim_is_fifo_and_starts_an_attempt(store: Store) -> None:
    first = store.enqueue("first")
    rest = store.enqueue_many([{"input": i} for i in range(4)])
    queued = [first, *rest]

    (claim,) = store.claim("w1")
    assert claim.rollout.rollout_id == first.rollout_id
    assert claim.rollout.status == RolloutStatus.RUNNING
    assert claim.rollout.num_attempts == 1
    assert claim.rollout.started_at is not None
    assert claim.attempt.rollout_id == first.rollout_id
    assert claim.attempt.number == 1
    assert claim.attempt.worker_id == "w1"
    assert claim.attempt.status == AttemptStatus.RUNNING
    assert store.get_rollout(first.rollout_id).status == "running"
    assert store.get_attempts(first.rollout_id) == [claim.attempt]

    three = store.claim("w2", n=3)
    assert [c.rollout.rollout_id for c in three] == ids(queued[1:4])
    assert len({c.attempt.attempt_id for c in three}) == 3
    assert all(c.attempt.worker_id == "w2" for c in three)

    last = store.claim("w3", n=10)
    assert [c.rollout.rollout_id for c in last] == [queued[4].rollout_id]
    assert store.claim("w3", n=5) == []
    assert store.query_rollouts(status="queued") == []


def test_claim_on_empty_queue_returns_empty_list(store: Store) -> None:
    assert store.claim("w") == []
    assert store.claim("w", n=4) == []


@pytest.mark.parametrize("n", [0, -1, 1.5])
def test_claim_rejects_bad_n(store: Store, n: Any) -> None:
    with pytest.raises(InvalidInput, match="n"):
        store.claim("w", n=n)


def test_start_rollout_skips_the_queue(store: Store) -> None:
    queued = store.enqueue("waiting")
    claim = store.start_rollout({"q": 1}, worker_id="me", mode="val", metadata={"tag": "x"}, max_attempts=2)
    assert claim.rollout.input == {"q": 1}
    assert claim.rollout.status == "running"
    assert claim.rollout.mode == "val"
    assert claim.rollout.metadata == {"tag": "x"}
    assert claim.rollout.max_attempts == 2
    assert claim.attempt.worker_id == "me"
    assert claim.attempt.number == 1
    assert store.get_rollout(claim.rollout.rollout_id) == claim.rollout
    assert store.get_attempts(claim.rollout.rollout_id) == [claim.attempt]
    # only the queued rollout is claimable
    assert [c.rollout.rollout_id for c in store.claim("w", n=5)] == [queued.rollout_id]
    with pytest.raises(InvalidInput, match="mode"):
        store.start_rollout("x", mode="nope")


# heartbeat and finish ------------------------------------------------------------------------
def test_heartbeat_updates_the_attempt(store: Store) -> None:
    claim = store.start_rollout("t")
    beat = store.heartbeat(claim.attempt.attempt_id)
    assert beat.attempt_id == claim.attempt.attempt_id
    assert beat.status == "running"
    assert beat.last_heartbeat >= claim.attempt.last_heartbeat
    assert store.get_attempts(claim.rollout.rollout_id)[0].last_heartbeat == beat.last_heartbeat


def test_heartbeat_on_finished_attempt_raises_attempt_lost(store: Store) -> None:
    claim = store.start_rollout("t")
    store.finish_attempt(claim.attempt.attempt_id)
    with pytest.raises(AttemptLost, match="succeeded"):
        store.heartbeat(claim.attempt.attempt_id)


def test_heartbeat_unknown_attempt_raises_not_found(store: Store) -> None:
    with pytest.raises(NotFound, match="at-nope"):
        store.heartbeat("at-nope")


def test_finish_attempt_succeeded(store: Store) -> None:
    store.enqueue("t")
    (claim,) = store.claim("w")
    rollout = store.finish_attempt(claim.attempt.attempt_id, "succeeded")
    assert rollout.rollout_id == claim.rollout.rollout_id
    assert rollout.status == RolloutStatus.SUCCEEDED
    assert rollout.finished_at is not None
    assert rollout.error is None
    assert store.get_rollout(rollout.rollout_id) == rollout
    (attempt,) = store.get_attempts(rollout.rollout_id)
    assert attempt.status == AttemptStatus.SUCCEEDED
    assert attempt.finished_at is not None
    with pytest.raises(AttemptLost):
        store.finish_attempt(claim.attempt.attempt_id, "succeeded")


def test_failed_attempt_requeues_until_attempts_run_out(store: Store) -> None:
    r = store.enqueue("t", max_attempts=2)
    (c1,) = store.claim("w1")
    after_first = store.finish_attempt(c1.attempt.attempt_id, "failed", "boom 1")
    assert after_first.status == RolloutStatus.QUEUED
    assert after_first.error == "boom 1"
    assert after_first.finished_at is None

    (c2,) = store.claim("w2")
    assert c2.rollout.rollout_id == r.rollout_id
    assert c2.attempt.number == 2
    assert c2.rollout.num_attempts == 2
    final = store.finish_attempt(c2.attempt.attempt_id, AttemptStatus.FAILED, "boom 2")
    assert final.status == RolloutStatus.FAILED
    assert final.error == "boom 2"
    assert final.finished_at is not None
    assert store.claim("w3") == []

    attempts = store.get_attempts(r.rollout_id)
    assert [a.number for a in attempts] == [1, 2]
    assert [a.worker_id for a in attempts] == ["w1", "w2"]
    assert [a.status for a in attempts] == ["failed", "failed"]
    assert [a.error for a in attempts] == ["boom 1", "boom 2"]


def test_retry_that_succeeds_clears_the_error(store: Store) -> None:
    store.enqueue("t", max_attempts=3)
    (c1,) = store.claim("w")
    store.finish_attempt(c1.attempt.attempt_id, "failed", "flaky")
    (c2,) = store.claim("w")
    done = store.finish_attempt(c2.attempt.attempt_id, "succeeded")
    assert done.status == "succeeded"
    assert done.error is None
    assert done.num_attempts == 2


def test_finish_attempt_rejects_bad_arguments(store: Store) -> None:
    claim = store.start_rollout("t")
    with pytest.raises(InvalidInput, match="status"):
        store.finish_attempt(claim.attempt.attempt_id, "timeout")
    with pytest.raises(InvalidInput, match="error"):
        store.finish_attempt(claim.attempt.attempt_id, "failed", 42)  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        store.finish_attempt("at-unknown")
    assert store.get_rollout(claim.rollout.rollout_id).status == "running"


# expiry ------------------------------------------------------------------------------------
def test_expire_attempts_past_their_timeout(store: Store) -> None:
    r = store.enqueue("t", timeout=10, max_attempts=2)
    (c1,) = store.claim("w1")
    start = c1.attempt.started_at
    assert store.expire_attempts(now=start + 5) == []
    (expired,) = store.expire_attempts(now=start + 11)
    assert expired.attempt_id == c1.attempt.attempt_id
    assert expired.status == AttemptStatus.TIMEOUT
    assert "timeout" in (expired.error or "")
    assert store.get_rollout(r.rollout_id).status == "queued"
    with pytest.raises(AttemptLost, match="timeout"):
        store.heartbeat(c1.attempt.attempt_id)

    (c2,) = store.claim("w2")
    assert c2.attempt.number == 2
    (expired2,) = store.expire_attempts(now=c2.attempt.started_at + 100)
    assert expired2.status == "timeout"
    final = store.get_rollout(r.rollout_id)
    assert final.status == "failed"
    assert "10s timeout" in (final.error or "")
    assert [a.status for a in store.get_attempts(r.rollout_id)] == ["timeout", "timeout"]


def test_expire_attempts_past_their_heartbeat_deadline(store: Store) -> None:
    r = store.enqueue("t", heartbeat_timeout=5)
    (c,) = store.claim("w")
    beat = store.heartbeat(c.attempt.attempt_id)
    assert store.expire_attempts(now=beat.last_heartbeat + 4) == []
    (expired,) = store.expire_attempts(now=beat.last_heartbeat + 6)
    assert expired.status == AttemptStatus.UNRESPONSIVE
    assert "heartbeat" in (expired.error or "")
    final = store.get_rollout(r.rollout_id)
    assert final.status == "failed"  # max_attempts=1
    assert "heartbeat" in (final.error or "")
    assert final.finished_at is not None
    assert store.expire_attempts(now=beat.last_heartbeat + 1000) == []


def test_spans_count_as_heartbeats(store: Store) -> None:
    store.enqueue("t", heartbeat_timeout=5)
    (c,) = store.claim("w")
    time.sleep(0.02)  # the clock moves on between the claim's heartbeat and the span's
    store.add_spans([span(c, "s1")])
    last = store.get_attempts(c.rollout.rollout_id)[0].last_heartbeat
    assert last > c.attempt.last_heartbeat
    assert store.expire_attempts(now=last + 4) == []
    assert len(store.expire_attempts(now=last + 6)) == 1


def test_rollouts_without_timeouts_never_expire(store: Store) -> None:
    store.enqueue("t")
    (c,) = store.claim("w")
    assert store.expire_attempts(now=c.attempt.started_at + 10**7) == []
    assert store.get_rollout(c.rollout.rollout_id).status == "running"


def test_expire_attempts_with_a_real_short_sleep(store: Store) -> None:
    # 1 s, not less: over HTTP on a loaded 2-core box, claim and the first check once took 0.2 s.
    r = store.enqueue("t", heartbeat_timeout=1.0)
    (c,) = store.claim("w")
    assert store.expire_attempts() == []
    time.sleep(1.3)
    (expired,) = store.expire_attempts()
    assert expired.attempt_id == c.attempt.attempt_id
    assert expired.status == "unresponsive"
    assert store.get_rollout(r.rollout_id).status == "failed"


# cancel ------------------------------------------------------------------------------------
def test_cancel_queued_rollout(store: Store) -> None:
    r = store.enqueue("t")
    cancelled = store.cancel(r.rollout_id)
    assert cancelled.status == RolloutStatus.CANCELLED
    assert cancelled.finished_at is not None
    assert store.get_rollout(r.rollout_id).status == "cancelled"
    assert store.claim("w") == []
    assert store.get_attempts(r.rollout_id) == []


def test_cancel_running_rollout_stops_its_attempt(store: Store) -> None:
    r = store.enqueue("t", max_attempts=3, heartbeat_timeout=1)
    (c,) = store.claim("w")
    assert store.cancel(r.rollout_id).status == "cancelled"
    (attempt,) = store.get_attempts(r.rollout_id)
    assert attempt.status == AttemptStatus.CANCELLED
    assert attempt.finished_at is not None
    with pytest.raises(AttemptLost, match="cancelled"):
        store.heartbeat(c.attempt.attempt_id)
    # The worker finishing late is told its attempt is gone; the cancellation stands, and
    # a failure does not requeue the rollout even though attempts remain.
    with pytest.raises(AttemptLost):
        store.finish_attempt(c.attempt.attempt_id, "succeeded")
    with pytest.raises(AttemptLost):
        store.finish_attempt(c.attempt.attempt_id, "failed", "late")
    assert store.expire_attempts(now=time.time() + 10**6) == []
    final = store.get_rollout(r.rollout_id)
    assert final.status == "cancelled"
    assert store.claim("w") == []


def test_cancel_finished_rollout_changes_nothing(store: Store) -> None:
    c = store.start_rollout("t")
    done = store.finish_attempt(c.attempt.attempt_id)
    assert store.cancel(done.rollout_id) == done
    assert store.get_rollout(done.rollout_id).status == "succeeded"
    with pytest.raises(NotFound):
        store.cancel("ro-unknown")


# get_attempts and query_rollouts -----------------------------------------------------------
def test_get_attempts_first_to_last_and_not_found(store: Store) -> None:
    r = store.enqueue("t", max_attempts=3)
    assert store.get_attempts(r.rollout_id) == []
    numbers = []
    for _ in range(3):
        (c,) = store.claim("w")
        numbers.append(c.attempt.attempt_id)
        store.finish_attempt(c.attempt.attempt_id, "failed", "x")
    assert [a.attempt_id for a in store.get_attempts(r.rollout_id)] == numbers
    with pytest.raises(NotFound):
        store.get_attempts("ro-unknown")
    with pytest.raises(NotFound):
        store.get_rollout("ro-unknown")


def test_query_rollouts_by_status_and_mode(store: Store) -> None:
    queued = store.enqueue("q", mode="val")
    running = store.start_rollout("r", mode="test")
    done = store.start_rollout("d")
    store.finish_attempt(done.attempt.attempt_id)
    failed = store.start_rollout("f", mode="val")
    store.finish_attempt(failed.attempt.attempt_id, "failed", "no")

    assert ids(store.query_rollouts(status="queued")) == [queued.rollout_id]
    assert ids(store.query_rollouts(status=RolloutStatus.RUNNING)) == [running.rollout.rollout_id]
    assert ids(store.query_rollouts(status=["succeeded", "failed"])) == [
        done.rollout.rollout_id,
        failed.rollout.rollout_id,
    ]
    assert store.query_rollouts(status=["cancelled"]) == []
    assert ids(store.query_rollouts(mode="val")) == [queued.rollout_id, failed.rollout.rollout_id]
    assert ids(store.query_rollouts(mode="val", status="failed")) == [failed.rollout.rollout_id]
    assert len(store.query_rollouts()) == 4
    with pytest.raises(InvalidInput, match="bogus"):
        store.query_rollouts(status=["queued", "bogus"])


def test_query_rollouts_by_creation_time(store: Store) -> None:
    rs = store.enqueue_many([{"input": i} for i in range(5)])
    created = [r.created_at for r in rs]
    assert created == sorted(created) and len(set(created)) == 5
    assert ids(store.query_rollouts(since=created[1], until=created[3])) == ids(rs[1:3])
    assert ids(store.query_rollouts(since=created[3])) == ids(rs[3:])
    assert ids(store.query_rollouts(until=created[1])) == ids(rs[:1])
    assert store.query_rollouts(since=created[4] + 1) == []


def test_query_rollouts_by_metadata_is_type_exact(store: Store) -> None:
    by_name = {
        "str1": store.enqueue(metadata={"v": "1", "team": "red"}),
        "int1": store.enqueue(metadata={"v": 1, "team": "red"}),
        "true": store.enqueue(metadata={"v": True, "team": "blue"}),
        "false": store.enqueue(metadata={"v": False}),
        "int0": store.enqueue(metadata={"v": 0}),
        "float": store.enqueue(metadata={"v": 2.5, "other key": "x"}),
        "none": store.enqueue(),
    }

    def matching(**metadata: Any) -> set[str]:
        found = set(ids(store.query_rollouts(metadata=metadata)))
        return {name for name, r in by_name.items() if r.rollout_id in found}

    assert matching(v="1") == {"str1"}
    assert matching(v=1) == {"int1"}
    assert matching(v=True) == {"true"}
    assert matching(v=False) == {"false"}
    assert matching(v=0) == {"int0"}
    assert matching(v=2.5) == {"float"}
    assert matching(v="true") == set()
    assert matching(team="red") == {"str1", "int1"}
    assert matching(team="red", v=1) == {"int1"}
    assert matching(**{"other key": "x"}) == {"float"}
    assert matching(missing="x") == set()
    with pytest.raises(InvalidInput, match="v"):
        store.query_rollouts(metadata={"v": [1]})


def test_query_rollouts_pagination(store: Store) -> None:
    rs = store.enqueue_many([{"input": i} for i in range(7)])
    pages = [store.query_rollouts(limit=3, offset=o) for o in (0, 3, 6, 9)]
    assert [len(p) for p in pages] == [3, 3, 1, 0]
    assert [r for page in pages for r in page] == rs
    assert ids(store.query_rollouts(limit=2, offset=1)) == ids(rs[1:3])


# spans -------------------------------------------------------------------------------------
def test_add_and_query_spans_round_trip(store: Store) -> None:
    c = store.start_rollout("t")
    full = span(
        c,
        "s-full",
        2,
        kind="tool",
        name="execute_tool search",
        parent_id="s-root",
        end_time=1_700_000_001.5,
        status="error",
        attributes={"gen_ai.tool.name": "search", "nested": {"list": [1, 2.5, None, "x"]}, "ok": False},
        resources={"prompt": 3},
    )
    batch = [full, span(c, "s-root", 0, kind="agent"), Span(**span(c, "s-mid", 1, kind="chain"))]
    assert store.add_spans(batch) == 3
    got = store.query_spans(rollout_id=c.rollout.rollout_id)
    assert [s.span_id for s in got] == ["s-root", "s-mid", "s-full"]
    assert [s.sequence for s in got] == [0, 1, 2]
    stored = got[2]
    assert stored.kind == "tool"
    assert stored.name == "execute_tool search"
    assert stored.parent_id == "s-root"
    assert stored.start_time == 1_700_000_000.0
    assert stored.end_time == 1_700_000_001.5
    assert stored.status == "error"
    assert stored.attributes == full["attributes"]
    assert stored.resources == {"prompt": 3}
    assert got[0].parent_id is None and got[0].end_time is None
    assert got[0].status == "ok" and got[0].attributes == {} and got[0].resources == {}
    assert store.add_spans([]) == 0


def test_query_spans_filters_and_orders(store: Store) -> None:
    store.enqueue("t", max_attempts=2)
    (c1,) = store.claim("w")
    other = store.start_rollout("other")
    store.add_spans(
        [
            span(c1, "a1-llm", 1, kind="llm", name="chat"),
            span(c1, "a1-tool", 0, kind="tool", name="search"),
            span(other, "o-llm", 0, kind="llm", name="chat"),
        ]
    )
    store.finish_attempt(c1.attempt.attempt_id, "failed", "retry")
    (c2,) = store.claim("w")
    store.add_spans(
        [
            span(c2, "a2-reward", 2, kind="reward", name="reward"),
            span(c2, "a2-llm", 0, kind="llm", name="chat"),
            span(c2, "a2-tool", 1, kind="tool", name="search"),
        ]
    )
    rid = c1.rollout.rollout_id

    def got(**kw: Any) -> list[str]:
        return [s.span_id for s in store.query_spans(**kw)]

    assert got(rollout_id=rid) == ["a1-tool", "a1-llm", "a2-llm", "a2-tool", "a2-reward"]
    assert got(attempt_id=c2.attempt.attempt_id) == ["a2-llm", "a2-tool", "a2-reward"]
    assert got(rollout_id=rid, attempt_id=c1.attempt.attempt_id) == ["a1-tool", "a1-llm"]
    assert got(rollout_id=rid, kind="llm") == ["a1-llm", "a2-llm"]
    assert got(rollout_id=rid, kind=["tool", "reward"]) == ["a1-tool", "a2-tool", "a2-reward"]
    assert got(rollout_id=rid, name="search") == ["a1-tool", "a2-tool"]
    assert got(rollout_id=rid, limit=2, offset=1) == ["a1-llm", "a2-llm"]
    assert got(rollout_id=other.rollout.rollout_id) == ["o-llm"]
    assert got(rollout_id="ro-nothing") == []
    with pytest.raises(InvalidInput):
        store.query_spans(kind="llm")


def test_sequence_is_auto_numbered_after_the_existing_maximum(store: Store) -> None:
    c = store.start_rollout("t")
    other = store.start_rollout("other")
    store.add_spans([span(c, "s0", 0), span(c, "s5", 5)])
    store.add_spans([span(c, "n1"), span(c, "n2"), span(other, "o1")])
    store.add_spans([span(c, "n3")])
    got = store.query_spans(rollout_id=c.rollout.rollout_id)
    assert [(s.span_id, s.sequence) for s in got] == [("s0", 0), ("s5", 5), ("n1", 6), ("n2", 7), ("n3", 8)]
    assert [s.sequence for s in store.query_spans(rollout_id=other.rollout.rollout_id)] == [0]


# transactional rejection -------------------------------------------------------------------
BAD_SPANS: dict[str, tuple[dict[str, Any], str]] = {
    "wrong type": ({"start_time": "yesterday"}, "start_time"),
    "unknown kind": ({"kind": "banana"}, "kind"),
    "unknown field": ({"colour": "red"}, "colour"),
    "oversized attributes": ({"attributes": {"blob": "x" * (MAX_ATTRIBUTES_BYTES + 1)}}, "attributes"),
    "set value": ({"attributes": {"tags": {"a", "b"}}}, "attributes"),
    "NaN value": ({"attributes": {"score": float("nan")}}, "attributes"),
    "bad resources": ({"resources": {"prompt": "latest"}}, "resources"),
    "duplicate of a stored span": ({"span_id": "stored-0"}, "span_id"),
    "duplicate within the batch": ({"span_id": "new-0"}, "span_id"),
}


@pytest.mark.parametrize("case", list(BAD_SPANS))
def test_bad_span_rejects_the_whole_batch(store: Store, case: str) -> None:
    c = store.start_rollout("t")
    earlier = [span(c, "stored-0", 0, attributes={"keep": 1}), span(c, "stored-1", 1)]
    store.add_spans(earlier)
    before = store.query_spans(rollout_id=c.rollout.rollout_id)

    override, field = BAD_SPANS[case]
    bad = {**span(c, "bad", 4), **override}
    batch = [span(c, "new-0", 2), span(c, "new-1", 3), bad, span(c, "new-3", 5)]
    with pytest.raises(InvalidInput) as info:
        store.add_spans(batch)
    message = str(info.value)
    assert "spans[2]" in message, message
    assert field in message, message
    assert len(message) < 2000  # names the problem, does not echo an 8 MiB value

    assert store.query_spans(rollout_id=c.rollout.rollout_id) == before
    # the store still works, and the good spans go in once the bad one is left out
    assert store.add_spans([s for s in batch if s is not bad]) == 3
    assert len(store.query_spans(rollout_id=c.rollout.rollout_id)) == 5


def test_a_large_batch_goes_in_whole_or_not_at_all(store: Store) -> None:
    # SQLite writes a batch as multi-row INSERTs of 64, 16, 4 and 1 rows: the batch must be one
    # transaction, with every row and value in place, and a duplicate in a later chunk must
    # leave nothing of the earlier chunks behind.
    n = 1301  # 20 x 64 + 16 + 4 + 1
    c = store.start_rollout("t")
    times = [1_700_000_000.0 + i / 7 for i in range(n)]
    batch = [span(c, f"big-{i}", i, attributes={"i": i}, end_time=times[i]) for i in range(n)]
    assert store.add_spans(batch) == n
    stored = store.query_spans(rollout_id=c.rollout.rollout_id)
    assert [s.span_id for s in stored] == [f"big-{i}" for i in range(n)]
    assert [s.attributes for s in stored] == [{"i": i} for i in range(n)]
    assert [s.end_time for s in stored] == times

    again = [span(c, f"more-{i}", n + i) for i in range(n - 1)] + [span(c, "big-3", 2 * n)]
    with pytest.raises(InvalidInput, match=rf"spans\[{n - 1}\]\.span_id"):
        store.add_spans(again)
    assert len(store.query_spans(rollout_id=c.rollout.rollout_id)) == n


def test_bad_span_object_or_non_mapping_rejects_the_batch(store: Store) -> None:
    c = store.start_rollout("t")
    nan_span = Span(**span(c, "nan", 1, attributes={"x": float("inf")}))
    with pytest.raises(InvalidInput, match=r"spans\[1\]\.attributes"):
        store.add_spans([span(c, "ok", 0), nan_span])
    with pytest.raises(InvalidInput, match=r"spans\[1\]"):
        store.add_spans([span(c, "ok", 0), "not a span"])  # type: ignore[list-item]
    assert store.query_spans(rollout_id=c.rollout.rollout_id) == []


# wait ---------------------------------------------------------------------------------------
def test_wait_returns_once_all_have_finished(store: Store) -> None:
    a, b = store.enqueue_many([{"input": "a"}, {"input": "b"}])
    claims = store.claim("w", n=2)

    def finish_later() -> None:
        time.sleep(0.1)
        store.finish_attempt(claims[1].attempt.attempt_id, "succeeded")
        time.sleep(0.1)
        store.finish_attempt(claims[0].attempt.attempt_id, "failed", "no")

    worker = threading.Thread(target=finish_later)
    worker.start()
    try:
        done = store.wait([b.rollout_id, a.rollout_id], timeout=30)
    finally:
        worker.join()
    assert ids(done) == [b.rollout_id, a.rollout_id]
    assert [r.status for r in done] == ["succeeded", "failed"]


def test_wait_returns_unfinished_rollouts_after_timeout(store: Store) -> None:
    a = store.enqueue("a")
    b = store.start_rollout("b")
    store.finish_attempt(b.attempt.attempt_id)
    out = store.wait([a.rollout_id, b.rollout.rollout_id], timeout=0.2)
    assert ids(out) == [a.rollout_id, b.rollout.rollout_id]
    assert [r.status for r in out] == ["queued", "succeeded"]
    with pytest.raises(NotFound, match="ro-missing"):
        store.wait([a.rollout_id, "ro-missing"], timeout=0)


# resources ----------------------------------------------------------------------------------
def test_resource_versions(store: Store) -> None:
    v1 = store.put_resource("prompt", "prompt_template", {"template": "v1 {q}"}, created_by="apo@0")
    v2 = store.put_resource("prompt", "prompt_template", {"template": "v2 {q}"}, metrics={"reward": 0.5})
    store.put_resource("other", "json", [1, 2])
    v3 = store.put_resource("prompt", "prompt_template", {"template": "v3 {q}"}, created_by="apo@2")
    assert [v1.version, v2.version, v3.version] == [1, 2, 3]
    assert v1.kind == "prompt_template" and v1.created_by == "apo@0"
    assert v2.metrics == {"reward": 0.5}

    assert store.get_resource("prompt") == v3
    assert store.get_resource("prompt", 2) == v2
    assert store.get_resource("prompt", version=1).payload == {"template": "v1 {q}"}
    assert store.resource_history("prompt") == [v1, v2, v3]
    assert store.resource_history("nothing") == []
    latest = store.list_resources()
    assert [(r.name, r.version) for r in latest] == [("other", 1), ("prompt", 3)]
    assert latest[1] == v3

    with pytest.raises(NotFound, match="nothing"):
        store.get_resource("nothing")
    with pytest.raises(NotFound, match="version 7"):
        store.get_resource("prompt", 7)
    with pytest.raises(InvalidInput, match="kind"):
        store.put_resource("prompt", "spreadsheet")
    with pytest.raises(InvalidInput, match="metrics"):
        store.put_resource("prompt", "json", metrics={"reward": "high"})
    assert store.get_resource("prompt").version == 3


def test_artifacts_are_stored_once_per_content_hash(store: Store, database_url: str) -> None:
    weights = bytes(range(256)) * 100
    digest = hashlib.sha256(weights).hexdigest()
    a1 = store.put_resource("adapter", "lora_adapter", {"rank": 8}, artifact=weights)
    a2 = store.put_resource("adapter", "lora_adapter", {"rank": 8}, artifact=bytearray(weights))
    b1 = store.put_resource("other", "lora_adapter", artifact=b"different")
    assert a1.artifact_hash == a2.artifact_hash == digest
    assert a1.artifact_size == len(weights)
    assert (a1.version, a2.version) == (1, 2)
    assert store.get_resource("adapter", 1).artifact_hash == digest
    assert store.get_resource("adapter").artifact_size == len(weights)
    assert scalar(database_url, "SELECT COUNT(*) FROM artifacts") == 2
    assert scalar(database_url, f"SELECT COUNT(*) FROM artifacts WHERE hash = '{digest}'") == 1
    assert store.get_artifact(digest) == weights
    assert store.get_artifact(b1.artifact_hash or "") == b"different"
    assert store.get_resource("other").artifact_hash == hashlib.sha256(b"different").hexdigest()
    with pytest.raises(NotFound):
        store.get_artifact("0" * 64)
    with pytest.raises(InvalidInput, match="artifact"):
        store.put_resource("adapter", "lora_adapter", artifact="not bytes")  # type: ignore[arg-type]


def test_record_resources_merges_and_checks_versions(store: Store) -> None:
    store.put_resource("prompt", "prompt_template", "v1")
    store.put_resource("prompt", "prompt_template", "v2")
    store.put_resource("adapter", "lora_adapter")
    r = store.enqueue("t")
    assert store.record_resources(r.rollout_id, {"prompt": 1}).resources == {"prompt": 1}
    merged = store.record_resources(r.rollout_id, {"adapter": 1, "prompt": 2})
    assert merged.resources == {"prompt": 2, "adapter": 1}
    assert store.get_rollout(r.rollout_id).resources == {"prompt": 2, "adapter": 1}

    with pytest.raises(NotFound, match="version 3"):
        store.record_resources(r.rollout_id, {"adapter": 1, "prompt": 3})
    with pytest.raises(NotFound):
        store.record_resources(r.rollout_id, {"ghost": 1})
    with pytest.raises(NotFound):
        store.record_resources("ro-unknown", {"prompt": 1})
    assert store.get_rollout(r.rollout_id).resources == {"prompt": 2, "adapter": 1}


# connect ------------------------------------------------------------------------------------
@pytest.mark.parametrize("url", ["mysql://u@localhost/db", "voltline.db", "http//nope"])
def test_connect_rejects_unsupported_urls(url: str) -> None:
    with pytest.raises(InvalidInput, match=r"sqlite:///.*postgresql://"):
        voltline.connect(url)


def test_connect_rejects_in_memory_sqlite() -> None:
    with pytest.raises(InvalidInput, match="SQLite file"):
        voltline.connect("sqlite:///:memory:")


def test_connect_missing_sqlite_file_without_create(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    with pytest.raises(StoreUnavailable, match="voltline db upgrade") as info:
        voltline.connect(f"sqlite:///{missing}", create=False)
    assert str(missing) in str(info.value)
    assert not missing.exists()
    with pytest.raises(StoreUnavailable, match="does not exist"):
        voltline.connect(f"sqlite:///{tmp_path}/no/such/folder/store.db")


def test_connect_existing_sqlite_file_without_create(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/store.db"
    voltline.connect(url).close()
    with voltline.connect(url, create=False) as s:
        assert s.query_rollouts() == []


def test_connect_unreachable_postgres() -> None:
    with pytest.raises(StoreUnavailable) as info:
        voltline.connect("postgresql://postgres:s3cret@127.0.0.1:1/test")
    message = str(info.value)
    assert "127.0.0.1:1" in message
    assert "Check that the server is running" in message
    assert "s3cret" not in message


@pytest.mark.postgres
def test_connect_postgres_without_schema_and_create_false(postgres_url: str) -> None:
    with pytest.raises(SchemaOutOfDate, match="voltline db upgrade"):
        voltline.connect(postgres_url, create=False)
    voltline.connect(postgres_url).close()
    with voltline.connect(postgres_url, create=False) as s:
        assert s.claim("w") == []
