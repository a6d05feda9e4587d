"""The capture API plugins build on: open spans that end later, elsewhere, with agent names."""

from __future__ import annotations

import sqlite3
import threading

import voltline
from voltline import _migrate
from voltline._context import start_span, use_span


def test_agent_name_reaches_every_span_beneath_an_agent(tmp_path):
    store = voltline.connect(f"sqlite:///{tmp_path}/a.db")
    with voltline.rollout({"q": 1}, store=store) as r:
        with voltline.span("team", kind="chain"):
            voltline.emit_message("start")
            with voltline.span("planner", kind="agent"):
                voltline.emit_llm(model="m")
                with voltline.span("lookup", kind="tool"):
                    voltline.emit_llm(model="inner")
            with voltline.span("coder-step", kind="agent", agent_name="coder"):
                voltline.emit_llm(model="m2")
    spans = {s.name: s for s in store.query_spans(rollout_id=r.rollout_id)}
    assert spans["message"].agent_name is None and spans["team"].agent_name is None
    assert spans["planner"].agent_name == "planner"
    assert spans["chat m"].agent_name == "planner"
    assert spans["lookup"].agent_name == "planner" and spans["chat inner"].agent_name == "planner"
    assert spans["coder-step"].agent_name == "coder" and spans["chat m2"].agent_name == "coder"
    planner_llm = store.query_spans(rollout_id=r.rollout_id, kind="llm", agent_name="planner")
    assert [s.name for s in planner_llm] == ["chat m", "chat inner"]
    assert [s.name for s in store.query_spans(rollout_id=r.rollout_id, agent_name="coder")] == [
        "chat m2",
        "coder-step",
    ]
    store.close()


def test_a_span_started_in_one_thread_ends_in_another_and_keeps_its_rollout(tmp_path):
    store = voltline.connect(f"sqlite:///{tmp_path}/t.db")
    with voltline.rollout({"q": 2}, store=store) as r:
        root = start_span("agent-run", "agent", agent_name="solo")
        child = start_span("chat model", "llm", parent=root, attributes={"gen_ai.request.model": "x"})
        # The end event arrives on a worker thread that never saw the rollout's context.
        worker = threading.Thread(target=lambda: child.end(attributes={"gen_ai.usage.output_tokens": 3}))
        worker.start()
        worker.join()
        with use_span(root):
            voltline.emit_tool("search", result="ok")
        root.end()
        root.end()  # a second end is ignored
    spans = {s.name: s for s in store.query_spans(rollout_id=r.rollout_id)}
    assert set(spans) == {"agent-run", "chat model", "execute_tool search"}
    assert spans["chat model"].parent_id == root.span_id
    assert spans["chat model"].agent_name == "solo"
    assert spans["chat model"].attributes == {"gen_ai.request.model": "x", "gen_ai.usage.output_tokens": 3}
    assert spans["execute_tool search"].parent_id == root.span_id
    assert spans["agent-run"].parent_id is None
    store.close()


def test_an_error_end_marks_the_span_and_records_the_exception(tmp_path):
    store = voltline.connect(f"sqlite:///{tmp_path}/e.db")
    with voltline.rollout({"q": 3}, store=store) as r:
        handle = start_span("execute_tool divide", "tool")
        handle.end(error=ZeroDivisionError("division by zero"))
    (span,) = store.query_spans(rollout_id=r.rollout_id)
    assert span.status == "error"
    assert span.attributes["exception.type"] == "ZeroDivisionError"
    assert span.attributes["exception.message"] == "division by zero"
    store.close()


def test_upgrading_a_0001_database_keeps_its_spans(tmp_path):
    path = tmp_path / "old.db"
    store = voltline.connect(f"sqlite:///{path}")
    with voltline.rollout({"q": 4}, store=store) as r:
        voltline.emit_reward(1.0)
    store.close()
    with sqlite3.connect(path) as conn:  # take it back to how revision 0001 left it
        conn.execute("DROP INDEX ix_spans_rollout_agent")
        conn.execute("ALTER TABLE spans DROP COLUMN agent_name")
        conn.execute("CREATE INDEX ix_spans_rollout_seq ON spans (rollout_id, sequence)")  # 0003 drops it
        conn.execute("UPDATE alembic_version SET version_num = '0001'")
    store = voltline.connect(f"sqlite:///{path}")
    (reward,) = store.query_spans(rollout_id=r.rollout_id)
    assert reward.attributes["reward.value"] == 1.0 and reward.agent_name is None
    with sqlite3.connect(path) as conn:
        assert (
            conn.execute("SELECT version_num FROM alembic_version").fetchone()[0] == _migrate.head_revision()
        )
    store.close()


def test_use_span_brings_its_rollout_to_a_thread_without_one(tmp_path):
    store = voltline.connect(f"sqlite:///{tmp_path}/u.db")
    with voltline.rollout({"q": 5}, store=store) as r:
        handle = start_span("handler", "agent", agent_name="worker")

        def handler_thread() -> None:
            assert voltline.current_rollout() is None
            with use_span(handle):
                voltline.emit_tool("lookup", result=1)
            assert voltline.current_rollout() is None

        worker = threading.Thread(target=handler_thread)
        worker.start()
        worker.join()
        handle.end()
    tool = store.query_spans(rollout_id=r.rollout_id, kind="tool")
    assert [(s.parent_id, s.agent_name) for s in tool] == [(handle.span_id, "worker")]
    store.close()


# -- voltline.capture: the one copying rule for values a framework hands over ----------------


class Hostile:
    """An object that cannot be read at all: every attribute, its repr and its str raise."""

    def __getattr__(self, name: str) -> object:
        raise RuntimeError("no attributes here")

    def __repr__(self) -> str:
        raise RuntimeError("no repr either")

    def __str__(self) -> str:
        raise RuntimeError("nor str")


def test_jsonable_copies_framework_values_into_json() -> None:
    import dataclasses
    import math

    from pydantic import BaseModel

    from voltline.capture import jsonable

    class Call(BaseModel):
        name: str
        id: str | None = None

    @dataclasses.dataclass
    class Point:
        x: float

    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    value = {
        1: (Call(name="add"), Point(math.inf)),
        "tags": frozenset({"a"}),
        "raw": b"hi",
        "thing": Opaque(),
    }
    assert jsonable(value) == {
        "1": [{"name": "add", "id": None}, {"x": "inf"}],
        "tags": ["a"],
        "raw": "aGk=",
        "thing": "<opaque>",
    }
    assert jsonable(Call(name="add"), exclude_none=True) == {"name": "add"}
    assert jsonable([Opaque()], fallback=lambda v: type(v).__name__) == ["Opaque"]


def test_jsonable_stops_at_max_depth_on_a_value_that_holds_itself() -> None:
    from voltline.capture import MAX_DEPTH, jsonable

    loop: list[object] = []
    loop.append(loop)
    copied = jsonable(loop, fallback=lambda v: "cut")
    depth = 0
    while isinstance(copied, list):
        copied, depth = copied[0], depth + 1
    assert (copied, depth) == ("cut", MAX_DEPTH)


def test_tool_arguments_decode_json_text_and_keep_anything_else() -> None:
    from voltline.capture import tool_arguments

    assert tool_arguments('{"a": 3, "b": [4]}') == {"a": 3, "b": [4]}
    assert tool_arguments("not json {") == "not json {"  # as the model sent it
    assert tool_arguments({"when": object()}, fallback=lambda v: "obj") == {"when": "obj"}


def test_shared_jsonable_copies_equal_json_data_once() -> None:
    import datetime

    from voltline.capture import jsonable, shared_jsonable

    def schema(description: str) -> list[dict[str, object]]:
        return [{"type": "function", "function": {"name": "add", "description": description}}]

    first, again = shared_jsonable(schema("Add.")), shared_jsonable(schema("Add."))
    assert first == schema("Add.") and first is again  # rebuilt but equal: the same copy
    assert shared_jsonable(schema("Sum.")) is not first
    # Not plain JSON data: through `convert`, every time.
    when = [{"at": datetime.date(2026, 12, 7)}, {1: "one"}]
    assert shared_jsonable(when) == jsonable(when) == [{"at": "datetime.date(2026, 12, 7)"}, {"1": "one"}]
    assert shared_jsonable(when, lambda v: "converted") == "converted"


def test_jsonable_survives_objects_that_misbehave() -> None:
    import dataclasses
    import threading

    from voltline.capture import jsonable

    @dataclasses.dataclass
    class Job:
        name: str
        lock: threading.Lock  # dataclasses.asdict would try to deep-copy it, and fail

    lock = threading.Lock()
    assert jsonable({"job": Job("sync", lock), Hostile(): Hostile()}, fallback=lambda v: "text") == {
        "job": {"name": "sync", "lock": "text"},
        "<Hostile>": "text",  # a key whose str raises: its type's name
    }
    assert jsonable([Hostile()]) == ["<Hostile>"]  # the fallback (repr) raises too


def test_a_span_keeps_its_other_attributes_when_one_value_cannot_be_read(tmp_path) -> None:
    store = voltline.connect(f"sqlite:///{tmp_path}/h.db")
    with voltline.rollout({"t": 1}, store=store) as r:
        with voltline.span("step", "tool", odd=Hostile(), count=3):
            pass
    voltline.flush()
    [span] = store.query_spans(rollout_id=r.rollout_id)
    assert span.attributes == {"odd": "<Hostile>", "count": 3}
    store.close()
