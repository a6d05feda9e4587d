"""Exporters registered by a plugin see spans only after the store has them."""

from __future__ import annotations

from collections.abc import Sequence

import voltline
from voltline import _plugins
from voltline.hookspecs import hookimpl


class RecordingExporter:
    def __init__(self, store: voltline.Store) -> None:
        self.store = store
        self.seen: list[str] = []
        self.durable_when_seen: list[bool] = []

    def export(self, spans: Sequence[voltline.Span]) -> None:
        stored = {s.span_id for s in self.store.query_spans(rollout_id=spans[0].rollout_id)}
        self.durable_when_seen.extend(s.span_id in stored for s in spans)
        self.seen.extend(s.name for s in spans)


class BrokenExporter:
    def export(self, spans: Sequence[voltline.Span]) -> None:
        raise RuntimeError("exporter down")


def test_exporters_observe_durable_spans_and_failures_cost_nothing(tmp_path, caplog):
    store = voltline.connect(f"sqlite:///{tmp_path}/e.db")
    recorder = RecordingExporter(store)

    class Plugin:
        @hookimpl
        def register_exporters(self, register):
            register(BrokenExporter())
            register(recorder)

    pm = _plugins.plugin_manager()
    pm.register(Plugin(), name="test-exporters")
    try:
        with voltline.rollout({"q": 1}, store=store) as r:
            voltline.emit_tool("search", arguments={"q": "x"}, result="y")
            voltline.emit_reward(0.5)
    finally:
        pm.unregister(name="test-exporters")

    assert recorder.seen == ["execute_tool search", "reward"]
    assert all(recorder.durable_when_seen)
    assert "exporter" in caplog.text and "exporter down" in caplog.text
    assert len(store.query_spans(rollout_id=r.rollout_id)) == 2
    store.close()
