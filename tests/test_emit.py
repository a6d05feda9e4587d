"""The emit API (`voltline.rollout`, `span`, `emit_*`, `flush`, `bind_context`) and the
Emitter behind it, against a SQLite store."""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import voltline
from voltline import Claim, Span, Store, StoreUnavailable
from voltline._emitter import Emitter
from voltline._models import EncodedSpan
from voltline._sqlstore import SqlStore


@pytest.fixture
def store_url(tmp_path: Path) -> str:  # overrides conftest's: the emit API runs on SQLite here
    return f"sqlite:///{tmp_path}/store.db"


class Counters:
    """Changes of `voltline.emitter_stats()` (or an Emitter's stats) since creation."""

    def __init__(self, emitter: Emitter | None = None) -> None:
        self._stats = emitter.stats if emitter else voltline.emitter_stats
        self._start = self._stats()

    def __getitem__(self, key: str) -> int:
        return self._stats()[key] - self._start[key]


def by_id(store: Store, rollout_id: str) -> dict[str, Span]:
    return {s.span_id: s for s in store.query_spans(rollout_id=rollout_id)}


# context: nesting, asyncio, threads -----------------------------------------------------------
def test_spans_nest_under_voltline_span(store: Store) -> None:
    with voltline.rollout("task", store=store) as r:
        assert voltline.current_rollout() is r
        with voltline.span("plan", kind="agent", step=1) as outer:
            outer.set("extra", "x")
            llm = voltline.emit_llm(
                model="tiny",
                input_messages=[{"role": "user", "content": "hi"}],
                output_messages=[{"role": "assistant", "content": "hello"}],
                prompt_token_ids=[1, 2, 3],
                response_token_ids=[4, 5],
                response_logprobs=[-0.5, -0.25],
                input_tokens=3,
                output_tokens=2,
            )
            with voltline.span("inner", kind="chain") as inner:
                tool = voltline.emit_tool("search", arguments={"q": "x"}, result=["a"])
        message = voltline.emit_message("thanks", role="user")
    assert voltline.current_rollout() is None

    spans = by_id(store, r.rollout_id)
    assert set(spans) == {outer.span_id, inner.span_id, llm, tool, message}
    assert spans[outer.span_id].parent_id is None
    assert spans[llm].parent_id == outer.span_id
    assert spans[inner.span_id].parent_id == outer.span_id
    assert spans[tool].parent_id == inner.span_id
    assert spans[message].parent_id is None
    assert all(s.attempt_id == r.attempt_id for s in spans.values())

    assert spans[outer.span_id].kind == "agent"
    assert spans[outer.span_id].attributes == {"step": 1, "extra": "x"}
    assert spans[outer.span_id].end_time is not None
    assert spans[outer.span_id].end_time >= spans[outer.span_id].start_time
    llm_attrs = spans[llm].attributes
    assert llm_attrs["gen_ai.request.model"] == "tiny"
    assert llm_attrs["prompt_token_ids"] == [1, 2, 3]
    assert llm_attrs["response_token_ids"] == [4, 5]
    assert llm_attrs["response_logprobs"] == [-0.5, -0.25]
    assert llm_attrs["gen_ai.usage.input_tokens"] == 3
    assert spans[tool].attributes["gen_ai.tool.call.result"] == ["a"]
    # a span is recorded when its block ends: sequence is the order of recording
    in_order = store.query_spans(rollout_id=r.rollout_id)
    assert [s.span_id for s in in_order] == [llm, tool, inner.span_id, outer.span_id, message]
    assert [s.sequence for s in in_order] == [0, 1, 2, 3, 4]


def test_span_block_that_raises_is_an_error_span(store: Store) -> None:
    with voltline.rollout("task", store=store) as r:
        with pytest.raises(KeyError), voltline.span("lookup", kind="tool") as s:
            raise KeyError("k")
        voltline.emit_tool("after")
    stored = by_id(store, r.rollout_id)[s.span_id]
    assert stored.status == "error"
    assert stored.attributes["exception.type"] == "KeyError"
    assert store.get_rollout(r.rollout_id).status == "succeeded"  # the agent handled it


def test_context_flows_into_asyncio_tasks(store: Store) -> None:
    async def worker(i: int) -> tuple[str, str | None, str | None]:
        with voltline.span(f"task {i}", kind="agent") as s:
            await asyncio.sleep(0)
            tool = voltline.emit_tool(f"tool{i}")
            await asyncio.sleep(0.001 * (5 - i))
            reward = voltline.emit_reward(float(i), name=f"r{i}")
        return s.span_id, tool, reward

    async def main() -> list[tuple[str, str | None, str | None]]:
        return await asyncio.gather(*(worker(i) for i in range(5)))

    with voltline.rollout("task", store=store) as r:
        results = asyncio.run(main())

    spans = by_id(store, r.rollout_id)
    assert len(spans) == 15
    for i, (parent, tool, reward) in enumerate(results):
        assert tool is not None and reward is not None
        assert spans[parent].parent_id is None
        assert spans[parent].name == f"task {i}"
        assert spans[tool].parent_id == parent
        assert spans[tool].name == f"execute_tool tool{i}"
        assert spans[reward].parent_id == parent
        assert spans[reward].attributes["reward.value"] == float(i)
    assert len({s.sequence for s in spans.values()}) == 15


def test_bind_context_carries_the_rollout_into_a_thread_pool(store: Store) -> None:
    def work(i: int) -> str | None:
        return voltline.emit_tool(f"t{i}", arguments={"i": i})

    counters = Counters()
    with (
        voltline.rollout("task", store=store) as r,
        voltline.span("fan out", kind="chain") as parent,
        ThreadPoolExecutor(max_workers=2) as pool,
    ):
        bound = list(pool.map(voltline.bind_context(work), range(4)))
        unbound = list(pool.map(work, range(4, 6)))

    assert unbound == [None, None]
    assert counters["outside_rollout"] == 2
    spans = by_id(store, r.rollout_id)
    assert all(sid in spans for sid in bound)
    assert {spans[sid].parent_id for sid in bound} == {parent.span_id}
    assert sorted(spans[sid].name for sid in bound) == [f"execute_tool t{i}" for i in range(4)]
    assert len(spans) == 5  # the four bound tool spans and their parent; nothing from the unbound calls


def test_emit_outside_a_rollout_is_a_counted_no_op(store: Store) -> None:
    counters = Counters()
    assert voltline.current_rollout() is None
    assert voltline.emit_llm(model="m") is None
    assert voltline.emit_tool("t") is None
    assert voltline.emit_message("hi") is None
    assert voltline.emit_reward(1.0) is None
    assert voltline.emit_exception(RuntimeError("x")) is None
    with voltline.span("s") as handle:
        handle.set("k", "v")
    assert counters["outside_rollout"] == 6
    assert counters["emitted"] == 0
    assert store.query_rollouts() == []


# robustness of capture ------------------------------------------------------------------------
class Opaque:
    def __repr__(self) -> str:
        return "<Opaque 7>"


def test_non_json_attribute_values_are_coerced_not_lost(store: Store) -> None:
    counters = Counters()
    with voltline.rollout("task", store=store) as r:
        odd = voltline.emit_tool(
            "odd",
            arguments={"tags": {"b"}},
            result=Opaque(),
            attributes={"score": float("nan"), "raw": b"hi"},
        )
        fine = voltline.emit_tool("fine", result=1)
    assert odd is not None and fine is not None
    assert counters["coerced"] == 1
    assert counters["invalid"] == 0
    assert counters["write_errors"] == 0
    spans = by_id(store, r.rollout_id)
    attrs = spans[odd].attributes
    assert attrs["gen_ai.tool.call.arguments"] == {"tags": ["b"]}
    assert attrs["gen_ai.tool.call.result"] == "<Opaque 7>"
    assert attrs["score"] == "nan"
    assert attrs["raw"] == "aGk="
    assert spans[fine].attributes["gen_ai.tool.call.result"] == 1


def test_a_span_is_stored_as_it_was_when_it_ended(store: Store) -> None:
    with voltline.rollout("task", store=store) as r:
        arguments = {"city": "Paris"}
        span_id = voltline.emit_tool("weather", arguments=arguments)
        arguments["city"] = "changed after the span ended"
    assert by_id(store, r.rollout_id)[span_id].attributes["gen_ai.tool.call.arguments"] == {"city": "Paris"}


def test_a_span_with_a_bad_field_is_counted_not_raised(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    counters = Counters()
    with voltline.rollout("task", store=store) as r:
        handle = voltline.start_span("", kind="chain")  # an empty name is not a span name
        handle.end()
        kept = voltline.emit_tool("fine")
    assert counters["invalid"] == 1
    assert "dropped invalid span" in caplog.text and "name" in caplog.text
    assert list(by_id(store, r.rollout_id)) == [kept]


def test_emit_reward_with_a_non_number_does_not_raise(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    counters = Counters()
    with caplog.at_level(logging.ERROR, logger="voltline.emit"), voltline.rollout("task", store=store) as r:
        assert voltline.emit_reward("high") is None  # type: ignore[arg-type]
        assert voltline.emit_reward(True) is None
        ok = voltline.emit_reward(0.75, name="accuracy")
    assert counters["capture_errors"] == 2
    assert "emit_reward failed" in caplog.text
    (reward,) = store.query_spans(rollout_id=r.rollout_id, kind="reward")
    assert reward.span_id == ok
    assert reward.attributes["reward.value"] == 0.75
    assert reward.attributes["reward.primary"] is False
    assert store.get_rollout(r.rollout_id).status == "succeeded"


def test_flush_makes_everything_durable(store: Store, store_url: str) -> None:
    counters = Counters()
    with voltline.rollout("task", store=store) as r:
        emitted = [voltline.emit_message(f"m{i}", role="user") for i in range(50)]
        assert voltline.flush() is True
        assert counters["written"] >= 50
        with voltline.connect(store_url) as other:  # a second connection sees them committed
            stored = other.query_spans(rollout_id=r.rollout_id)
        assert [s.span_id for s in stored] == emitted
        assert [s.attributes["message.content"] for s in stored] == [f"m{i}" for i in range(50)]
    assert voltline.flush() is True
    assert voltline.emitter_stats()["buffered"] == 0


# rollout lifecycle ------------------------------------------------------------------------
def test_leaving_the_rollout_marks_the_attempt_succeeded(store: Store) -> None:
    with voltline.rollout({"q": 1}, store=store, worker_id="me", mode="val", metadata={"k": 1}) as r:
        assert store.get_rollout(r.rollout_id).status == "running"
        voltline.emit_llm(model="m")
    rollout = store.get_rollout(r.rollout_id)
    assert rollout.status == "succeeded"
    assert rollout.input == {"q": 1}
    assert rollout.mode == "val"
    assert rollout.metadata == {"k": 1}
    (attempt,) = store.get_attempts(r.rollout_id)
    assert attempt.attempt_id == r.attempt_id
    assert attempt.status == "succeeded"
    assert attempt.worker_id == "me"


def test_exception_in_the_block_fails_the_attempt_and_is_recorded(store: Store) -> None:
    with pytest.raises(ValueError, match="boom") as info, voltline.rollout("task", store=store) as r:
        voltline.emit_tool("before")
        raise ValueError("boom")
    assert str(info.value) == "boom"
    rollout = store.get_rollout(r.rollout_id)
    assert rollout.status == "failed"
    assert rollout.error == "ValueError: boom"
    (attempt,) = store.get_attempts(r.rollout_id)
    assert attempt.status == "failed"
    assert attempt.error == "ValueError: boom"
    (exc_span,) = store.query_spans(rollout_id=r.rollout_id, kind="exception")
    assert exc_span.status == "error"
    assert exc_span.name == "ValueError"
    assert exc_span.attributes["exception.type"] == "ValueError"
    assert exc_span.attributes["exception.message"] == "boom"
    assert "boom" in exc_span.attributes["exception.stacktrace"]
    assert [s.kind for s in store.query_spans(rollout_id=r.rollout_id)] == ["tool", "exception"]


def test_joining_a_claimed_attempt_does_not_finish_it(store: Store) -> None:
    store.put_resource("prompt", "prompt_template", "answer {q}")
    queued = store.enqueue({"q": 1}, max_attempts=2)
    (claim,) = store.claim("runner")
    rid, aid = claim.rollout.rollout_id, claim.attempt.attempt_id

    with voltline.rollout(store=store, rollout_id=rid, attempt_id=aid, resources={"prompt": 1}) as ctx:
        assert (ctx.rollout_id, ctx.attempt_id) == (rid, aid)
        llm = voltline.emit_llm(model="m")
    with pytest.raises(RuntimeError), voltline.rollout(store=store, rollout_id=rid, attempt_id=aid):
        raise RuntimeError("agent crashed")

    assert store.get_rollout(rid).status == "running"
    assert store.get_rollout(rid).resources == {"prompt": 1}
    (attempt,) = store.get_attempts(rid)
    assert attempt.status == "running"
    spans = store.query_spans(attempt_id=aid)
    assert [s.kind for s in spans] == ["llm", "exception"]
    assert spans[0].span_id == llm
    assert spans[0].resources == {"prompt": 1}
    # finishing stays the runner's job
    assert store.finish_attempt(aid, "succeeded").status == "succeeded"
    assert queued.rollout_id == rid

    with pytest.raises(ValueError, match="attempt_id"), voltline.rollout(store=store, rollout_id=rid):
        pass
    with pytest.raises(ValueError, match="rollout_id"), voltline.rollout(store=store, attempt_id=aid):
        pass


# the Emitter: overflow and retries --------------------------------------------------------
def raw_span(claim: Claim, i: int) -> dict[str, Any]:
    return {
        "span_id": f"span-{i}",
        "rollout_id": claim.rollout.rollout_id,
        "attempt_id": claim.attempt.attempt_id,
        "sequence": i,
        "kind": "custom",
        "name": f"s{i}",
        "start_time": 1_700_000_000.0 + i,
    }


class BlockingStore(SqlStore):
    """A real SQL store whose writes wait until the test releases them."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.entered = threading.Event()
        self.release = threading.Event()

    def add_spans(self, spans: Iterable[Span | Mapping[str, Any]]) -> int:
        spans = list(spans)
        self.entered.set()
        self.release.wait(60)
        return super().add_spans(spans)


class FlakyStore(SqlStore):
    """A real SQL store that is unavailable for its first `failures` writes."""

    def __init__(self, url: str, failures: int) -> None:
        super().__init__(url)
        self.failures = failures
        self.calls = 0
        self.threads: list[str] = []  # the thread of each add_spans call

    def add_spans(self, spans: Iterable[Span | Mapping[str, Any]]) -> int:
        self.calls += 1
        self.threads.append(threading.current_thread().name)
        if self.calls <= self.failures:
            raise StoreUnavailable("store at test is restarting")
        return super().add_spans(spans)


def test_full_buffer_drops_counts_and_warns(store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    blocked = BlockingStore(store_url)
    try:
        claim = blocked.start_rollout("task")
        emitter = Emitter(max_buffer=10, batch_size=100, interval=0.01)
        counters = Counters(emitter)
        with caplog.at_level(logging.WARNING, logger="voltline.emit"):
            assert emitter.submit(blocked, raw_span(claim, 0)) is True
            assert blocked.entered.wait(30), "the writer never called add_spans"
            # the writer holds span 0 inside add_spans; the buffer takes 10 more
            accepted = [emitter.submit(blocked, raw_span(claim, i)) for i in range(1, 16)]
        assert accepted == [True] * 10 + [False] * 5
        stats = emitter.stats()
        assert stats["dropped"] == 5
        assert stats["buffered"] == 10
        assert counters["emitted"] == 11
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "buffer full" in r.message]
        assert len(warnings) == 1

        blocked.release.set()
        assert emitter.flush(timeout=30) is True
        assert counters["written"] == 11
        assert emitter.stats()["dropped"] == 5
        stored = blocked.query_spans(rollout_id=claim.rollout.rollout_id)
        assert [s.span_id for s in stored] == [f"span-{i}" for i in range(11)]
    finally:
        blocked.release.set()
        blocked.close()
        atexit.unregister(emitter._at_exit)


def test_batch_that_half_fits_queues_what_fits(store_url: str) -> None:
    """`submit_many` (how held-back spans are handed over) fills the buffer to its bound and
    drops only the rest, counted; the spans already queued are all written."""
    blocked = BlockingStore(store_url)
    try:
        claim = blocked.start_rollout("task")
        emitter = Emitter(max_buffer=10, batch_size=100, interval=0.01)
        counters = Counters(emitter)
        assert emitter.submit(blocked, raw_span(claim, 0)) is True
        assert blocked.entered.wait(30), "the writer never called add_spans"
        batch = [(blocked, EncodedSpan.encode(raw_span(claim, i))) for i in range(1, 8)]
        assert emitter.submit_many(batch) == 7
        batch = [(blocked, EncodedSpan.encode(raw_span(claim, i))) for i in range(8, 14)]
        assert emitter.submit_many(batch) == 3  # room for 3 of 6
        assert counters["dropped"] == 3
        assert counters["emitted"] == 11
        blocked.release.set()
        assert emitter.flush(timeout=30) is True
        stored = blocked.query_spans(rollout_id=claim.rollout.rollout_id)
        assert [s.span_id for s in stored] == [f"span-{i}" for i in range(11)]
    finally:
        blocked.release.set()
        blocked.close()
        atexit.unregister(emitter._at_exit)


def emit_and_flush(store: SqlStore, emitter: Emitter, n: int = 20) -> None:
    """Submit `n` spans of a new rollout, flush, and check every one is stored, in order."""
    claim = store.start_rollout("task")
    for i in range(n):
        assert emitter.submit(store, raw_span(claim, i)) is True
    assert emitter.flush(timeout=30) is True
    stored = store.query_spans(rollout_id=claim.rollout.rollout_id)
    assert [s.span_id for s in stored] == [f"span-{i}" for i in range(n)]


def test_store_that_recovers_gets_every_span(store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    flaky = FlakyStore(store_url, failures=2)
    emitter = Emitter(batch_size=100, interval=0.01)
    try:
        with caplog.at_level(logging.WARNING, logger="voltline.emit"):
            emit_and_flush(flaky, emitter)
        stats = emitter.stats()
        assert (stats["written"], stats["write_errors"], stats["dropped"]) == (20, 0, 0)
        assert flaky.calls >= 3
        assert "retrying" in caplog.text
    finally:
        flaky.close()
        atexit.unregister(emitter._at_exit)


def test_flush_writes_on_its_own_thread_when_the_writer_is_idle(store_url: str) -> None:
    """Waking the writer and waiting for it costs two thread switches; an idle writer's work is
    done by the flushing thread instead."""
    recording = FlakyStore(store_url, failures=0)
    emitter = Emitter(batch_size=100, interval=60)  # the writer thread sleeps through the test
    try:
        emit_and_flush(recording, emitter)
        assert recording.threads == [threading.current_thread().name]
        assert emitter.stats()["written"] == 20
    finally:
        recording.close()
        atexit.unregister(emitter._at_exit)


def test_flush_hands_a_failed_write_back_to_the_writer(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The flushing thread tries once; the spans a store failed on go back, in order, to the
    writer thread, which retries them: the flush still returns only once they are durable."""
    flaky = FlakyStore(store_url, failures=1)
    emitter = Emitter(batch_size=100, interval=60)
    try:
        with caplog.at_level(logging.WARNING, logger="voltline.emit"):
            emit_and_flush(flaky, emitter)
        assert flaky.threads == [threading.current_thread().name, "voltline-writer"]
        assert "the writer thread retries it" in caplog.text
        stats = emitter.stats()
        assert (stats["written"], stats["write_errors"], stats["buffered"]) == (20, 0, 0)
    finally:
        flaky.close()
        atexit.unregister(emitter._at_exit)


def test_a_store_down_for_good_costs_counted_write_errors(
    store_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the flushing thread's try and eight tries by the writer, the spans are given up on:
    counted as write errors and logged, and the flush returns."""
    monkeypatch.setattr("voltline._emitter.time.sleep", lambda seconds: None)  # skip the back-off
    down = FlakyStore(store_url, failures=1_000)
    emitter = Emitter(batch_size=100, interval=60)
    try:
        claim = down.start_rollout("task")
        with caplog.at_level(logging.WARNING, logger="voltline.emit"):
            for i in range(20):
                assert emitter.submit(down, raw_span(claim, i)) is True
            assert emitter.flush(timeout=30) is True
        stats = emitter.stats()
        assert (stats["written"], stats["write_errors"], stats["buffered"]) == (0, 20, 0)
        assert down.calls == 9
        assert "gave up writing 20 spans" in caplog.text
    finally:
        down.close()
        atexit.unregister(emitter._at_exit)


def test_one_batch_for_two_stores_lands_in_each(tmp_path: Path) -> None:
    """Spans of rollouts in different stores, interleaved in one batch, each go to their own."""
    stores = [SqlStore(f"sqlite:///{tmp_path}/{name}.db") for name in ("a", "b")]
    try:
        claims = [store.start_rollout("task") for store in stores]
        emitter = Emitter(batch_size=100, interval=60)
        for i in range(10):
            assert emitter.submit(stores[i % 2], raw_span(claims[i % 2], i)) is True
        assert emitter.flush(timeout=30) is True
        for k, (store, claim) in enumerate(zip(stores, claims, strict=True)):
            stored = store.query_spans(rollout_id=claim.rollout.rollout_id)
            assert [s.span_id for s in stored] == [f"span-{i}" for i in range(k, 10, 2)]
    finally:
        for store in stores:
            store.close()
        atexit.unregister(emitter._at_exit)


def test_span_ids_survive_an_agent_that_reseeds_random(store: Store) -> None:
    # RL agents often call random.seed(task_seed) per rollout; ids must not repeat because of it.
    import random

    from voltline_langchain.handler import VoltlineCallbackHandler

    ids: list[str] = []
    for _ in range(2):
        with voltline.rollout({"x": 1}, store=store) as r:
            random.seed(0)
            voltline.emit_tool("t")
            with voltline.span("s"):
                pass
            handler = VoltlineCallbackHandler()
            run_id = uuid.uuid4()
            handler.on_chain_start({"name": "chain"}, {"q": 1}, run_id=run_id)
            handler.on_chain_end({"a": 2}, run_id=run_id)
        ids += [s.span_id for s in store.query_spans(rollout_id=r.rollout_id)]
    assert len(ids) == 6 and len(set(ids)) == 6, ids


def test_span_ids_ascend_within_a_process_and_differ_in_a_forked_child() -> None:
    # Ascending keys keep span inserts on the last page of the primary-key index.
    from voltline._ids import new_span_id

    minted: list[str] = []
    lock = threading.Lock()

    def mint() -> None:
        mine = [new_span_id() for _ in range(2_000)]
        with lock:
            minted.extend(mine)

    threads = [threading.Thread(target=mint) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(minted)) == 8_000
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in minted)
    sequential = [new_span_id() for _ in range(100)]
    assert sequential == sorted(sequential) or sequential[0] > sequential[-1]  # sorted, bar a wrap past 2**64

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child reports its first id and leaves at once
        os.write(write, new_span_id().encode())
        os._exit(0)
    os.close(write)
    child_id = os.read(read, 64).decode()
    os.waitpid(pid, 0)
    os.close(read)
    parent_next = new_span_id()
    # The child starts from a fresh random point, not where the parent's counter stood.
    assert len(child_id) == 16 and abs(int(child_id, 16) - int(parent_next, 16)) > 1_000_000
