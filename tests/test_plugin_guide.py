"""The plugin author guide (docs/plugins.md) works: a third-party style plugin for a toy
framework, installed as a distribution with an entry point, captures its runs."""

from __future__ import annotations

import pytest

import voltline
from voltline import _plugins
from voltline_testdist import toyflow


@pytest.fixture
def instrumented(monkeypatch):
    monkeypatch.setenv("VOLTLINE_PLUGINS", "toyflow")
    _plugins.plugin_manager(refresh=True)
    before = list(toyflow.callbacks)
    assert voltline.instrument() == ["toyflow"]
    try:
        yield before
    finally:
        voltline.uninstrument()
        _plugins.plugin_manager(refresh=True)


def test_the_guide_plugin_captures_a_toy_pipeline(instrumented, tmp_path):
    store = voltline.connect(f"sqlite:///{tmp_path}/g.db")
    pipeline = toyflow.Pipeline("doubler", [("add-one", lambda x: x + 1), ("double", lambda x: x * 2)])
    with voltline.rollout({"x": 3}, store=store) as r:
        assert pipeline.run(3) == 8
    spans = store.query_spans(rollout_id=r.rollout_id)
    by_name = {s.name: s for s in spans}
    assert sorted(by_name) == ["add-one", "double", "doubler"]
    root = by_name["doubler"]
    assert (root.kind, root.parent_id, root.agent_name) == ("agent", None, "doubler")
    for step, given, result in (("add-one", 3, 4), ("double", 4, 8)):
        span = by_name[step]
        assert (span.kind, span.parent_id, span.agent_name) == ("tool", root.span_id, "doubler")
        assert span.attributes == {"toyflow.input": given, "toyflow.output": result}
    store.close()


def test_the_guide_plugin_records_values_as_they_were_at_the_event(instrumented, tmp_path):
    # The guide copies framework values with voltline.capture.jsonable when the event happens:
    # a step that changes its input in place leaves the recorded input as it was given.
    store = voltline.connect(f"sqlite:///{tmp_path}/v.db")
    pipeline = toyflow.Pipeline("appender", [("append", lambda xs: xs.append(1) or xs)])
    with voltline.rollout({"x": 3}, store=store) as r:
        assert pipeline.run([0]) == [0, 1]
    spans = {s.name: s for s in store.query_spans(rollout_id=r.rollout_id)}
    assert spans["append"].attributes == {"toyflow.input": [0], "toyflow.output": [0, 1]}
    store.close()


def test_a_failing_step_raises_as_before_and_is_recorded_as_an_error(instrumented, tmp_path):
    store = voltline.connect(f"sqlite:///{tmp_path}/f.db")
    pipeline = toyflow.Pipeline("divider", [("divide", lambda x: 1 / x)])
    with voltline.rollout({"x": 0}, store=store) as r, pytest.raises(ZeroDivisionError):
        pipeline.run(0)
    spans = {s.name: s for s in store.query_spans(rollout_id=r.rollout_id)}
    assert spans["divide"].status == "error" and spans["divider"].status == "error"
    assert spans["divide"].attributes["exception.type"] == "ZeroDivisionError"
    store.close()


def test_uninstrument_leaves_the_toy_framework_as_it_was(instrumented):
    assert len(toyflow.callbacks) == len(instrumented) + 1
    voltline.uninstrument()
    assert toyflow.callbacks == instrumented
