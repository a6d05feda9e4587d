"""The store server and its HTTP client: token rule, size limits, re-sends, spool, OTLP ingest.

(The whole Store interface over HTTP runs in tests/test_store_conformance.py through the
`http-*` variants of the `store_url` fixture; process kills are in test_server_reliability.py.)
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from typer.testing import CliRunner

import voltline
from voltline import InvalidInput, Store, StoreUnavailable
from voltline._httpstore import HttpStore
from voltline.cli import app as cli_app
from voltline.server import ServerThread

TOKEN = "s3cret-token"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Store]:
    s = voltline.connect(f"sqlite:///{tmp_path}/store.db")
    yield s
    s.close()


@pytest.fixture
def server(db: Store) -> Iterator[ServerThread]:
    with ServerThread(db) as srv:
        yield srv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def span(claim: voltline.Claim, span_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "span_id": span_id, "rollout_id": claim.rollout.rollout_id, "attempt_id": claim.attempt.attempt_id,
        "kind": "llm", "name": span_id, "start_time": 1_700_000_000.0, **fields,
    }  # fmt: skip


# connect ------------------------------------------------------------------------------------------
def test_connect_routes_http_urls_to_the_client(server: ServerThread, tmp_path: Path) -> None:
    with voltline.connect(server.url, token="t") as store:
        assert isinstance(store, HttpStore)
        assert store.url == server.url
        assert store.query_rollouts() == []


# the token rule -----------------------------------------------------------------------------------
def test_token_is_required_on_every_route_but_health(db: Store, tmp_path: Path) -> None:
    with ServerThread(db, token=TOKEN) as srv:
        raw = httpx.Client(base_url=srv.url)
        assert raw.get("/v1/health").status_code == 200
        assert raw.get("/openapi.json").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            answer = raw.post("/v1/rollouts/query", json={}, headers=headers)
            assert answer.status_code == 401
            assert answer.json()["error"] == "Unauthorized"
            assert answer.headers["www-authenticate"] == "Bearer"
            assert raw.post("/v1/traces", json={}, headers=headers).status_code == 401
        ok = raw.post("/v1/rollouts/query", json={}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert (ok.status_code, ok.json()) == (200, [])

        with HttpStore(srv.url, token=TOKEN, spool_dir=tmp_path / "spool") as store:
            assert store.enqueue("x").status == "queued"
        with HttpStore(srv.url, spool=False) as anonymous, pytest.raises(StoreUnavailable, match="token"):
            anonymous.query_rollouts()


def test_token_from_the_environment(db: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VOLTLINE_STORE_TOKEN", TOKEN)
    with ServerThread(db, token=TOKEN) as srv, voltline.connect(srv.url) as store:
        assert store.query_rollouts() == []


def test_listening_beyond_loopback_needs_a_token(db: Store) -> None:
    with pytest.raises(InvalidInput, match="--token"):
        ServerThread(db, host="0.0.0.0")
    result = CliRunner().invoke(
        cli_app, ["store", "serve", "--host", "0.0.0.0", "--db", db.url], env={"VOLTLINE_STORE_TOKEN": ""}
    )
    assert result.exit_code == 1
    assert "token" in result.output


def test_a_token_makes_a_wide_listener_acceptable(db: Store) -> None:
    with ServerThread(db, host="0.0.0.0", token=TOKEN) as srv:
        url = srv.url.replace("0.0.0.0", "127.0.0.1")
        assert (
            httpx.get(f"{url}/v1/rollouts/x", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404
        )


# request size limits --------------------------------------------------------------------------------
def test_bodies_over_the_limit_are_refused_with_413(db: Store, tmp_path: Path) -> None:
    with ServerThread(db, max_body_bytes=10_000) as srv:
        big = {"rollouts": [{"input": "x" * 20_000}]}
        answer = httpx.post(f"{srv.url}/v1/rollouts", json=big)
        assert answer.status_code == 413
        assert answer.json()["error"] == "InvalidInput"

        def chunked() -> Iterator[bytes]:  # no Content-Length: counted while it streams
            yield b'{"rollouts": [{"input": "'
            for _ in range(30):
                yield b"x" * 1000
            yield b'"}]}'

        streamed = httpx.post(
            f"{srv.url}/v1/rollouts", content=chunked(), headers={"Content-Type": "application/json"}
        )
        assert streamed.status_code == 413
        assert db.query_rollouts() == []
        with HttpStore(srv.url, spool_dir=tmp_path / "spool") as store:
            with pytest.raises(InvalidInput, match="limit"):
                store.enqueue("y" * 20_000)
            assert store.enqueue("small").input == "small"


def test_client_splits_span_batches_over_its_batch_size(
    server: ServerThread, db: Store, tmp_path: Path
) -> None:
    with HttpStore(server.url, spool_dir=tmp_path / "spool", max_batch_bytes=4_000) as store:
        c = store.start_rollout("t")
        spans = [span(c, f"s{i}", sequence=i, attributes={"pad": "x" * 500}) for i in range(40)]
        assert store.add_spans(spans) == 40
    assert [s.span_id for s in db.query_spans(rollout_id=c.rollout.rollout_id)] == [
        f"s{i}" for i in range(40)
    ]


# idempotent re-sends ---------------------------------------------------------------------------------
def test_a_resent_batch_already_stored_counts_as_stored(server: ServerThread, db: Store) -> None:
    c = db.start_rollout("t")
    batch = [span(c, "a", attributes={"x": 1}), span(c, "b")]  # auto-numbered sequences
    post = httpx.Client(base_url=server.url).post
    assert post("/v1/spans", json={"spans": batch}).json() == {"count": 2}
    # The first send was committed but its answer lost: the re-send succeeds, stores nothing new.
    assert post("/v1/spans", json={"spans": batch, "retry": True}).json() == {"count": 2}
    assert [(s.span_id, s.sequence) for s in db.query_spans(rollout_id=c.rollout.rollout_id)] == [
        ("a", 0), ("b", 1),
    ]  # fmt: skip
    # Not marked as a re-send, or not the same content, or only partly stored: still a duplicate.
    assert post("/v1/spans", json={"spans": batch}).json()["error"] == "InvalidInput"
    changed = [span(c, "a", attributes={"x": 2}), span(c, "b")]
    assert post("/v1/spans", json={"spans": changed, "retry": True}).status_code == 422
    partly = [*batch, span(c, "new")]
    assert post("/v1/spans", json={"spans": partly, "retry": True}).status_code == 422
    assert len(db.query_spans(rollout_id=c.rollout.rollout_id)) == 2


def test_malformed_span_batches_are_422(server: ServerThread) -> None:
    post = httpx.Client(base_url=server.url).post
    for body in (
        b"not json",
        b"[]",
        b'{"spans": 3}',
        b'{"spans": [], "extra": 1}',
        b'{"spans": [], "retry": 1}',
    ):
        answer = post("/v1/spans", content=body, headers={"Content-Type": "application/json"})
        assert answer.status_code == 422, body
        assert answer.json()["error"] == "InvalidInput"


# retries and the spool ----------------------------------------------------------------------------------
def test_spans_sent_while_the_server_is_down_are_delivered_when_it_returns(db: Store, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    c = db.start_rollout("t")
    with HttpStore(url, spool_dir=tmp_path / "spool", retries=1) as store:
        # No server yet: the batch is acknowledged from the spool (one file on disk).
        assert store.add_spans([span(c, "early-0", sequence=0), span(c, "early-1", sequence=1)]) == 2
        assert store.spool is not None and store.spool.pending == 1
        # Later batches queue behind it, so they never overtake it.
        assert store.add_spans([span(c, "later", sequence=2)]) == 1
        assert store.spool.pending == 2
        assert len(list((tmp_path / "spool").glob("*.batch*"))) == 2  # (one may be in delivery)
        with ServerThread(db, port=port):
            assert store.drain(timeout=60)
            assert store.spool.delivered == 3
            assert store.add_spans([span(c, "direct", sequence=3)]) == 1  # straight through again
    got = db.query_spans(rollout_id=c.rollout.rollout_id)
    assert [s.span_id for s in got] == ["early-0", "early-1", "later", "direct"]
    assert list((tmp_path / "spool").glob("*.batch*")) == []


def test_spooled_batches_survive_the_process_and_are_sent_by_the_next(db: Store, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    c = db.start_rollout("t")
    first = HttpStore(url, spool_dir=tmp_path / "spool", retries=0)
    assert first.add_spans([span(c, "kept", sequence=0)]) == 1
    first.close(drain_timeout=0)  # the process "ends" with the batch still on disk
    with ServerThread(db, port=port):
        with HttpStore(url, spool_dir=tmp_path / "spool") as second:  # finds it and sends it
            assert second.drain(timeout=60)
    assert [s.span_id for s in db.query_spans(rollout_id=c.rollout.rollout_id)] == ["kept"]


def test_a_spooled_batch_the_store_refuses_is_set_aside(db: Store, tmp_path: Path) -> None:
    port = free_port()
    c = db.start_rollout("t")
    db.add_spans([span(c, "taken", attributes={"v": 1})])
    with HttpStore(f"http://127.0.0.1:{port}", spool_dir=tmp_path / "spool", retries=0) as store:
        store.add_spans([span(c, "taken", attributes={"v": 2})])  # clashes with a stored span
        with ServerThread(db, port=port):
            assert store.drain(timeout=60)
        assert store.spool is not None and store.spool.rejected == 1
    assert len(list((tmp_path / "spool" / "rejected").glob("*.batch"))) == 1
    assert db.query_spans(rollout_id=c.rollout.rollout_id)[0].attributes == {"v": 1}


def test_the_spool_is_bounded(tmp_path: Path) -> None:
    store = HttpStore(
        f"http://127.0.0.1:{free_port()}", spool_dir=tmp_path / "s", retries=0, spool_max_bytes=600
    )
    fake = {"rollout_id": "ro-x", "attempt_id": "at-x", "kind": "llm", "name": "n", "start_time": 1.0}
    assert store.add_spans([{**fake, "span_id": "a", "attributes": {"pad": "x" * 300}}]) == 1
    with pytest.raises(StoreUnavailable, match=r"spool .* is full"):
        store.add_spans([{**fake, "span_id": "b", "attributes": {"pad": "x" * 300}}])
    store.close(drain_timeout=0)


def test_without_a_spool_an_unreachable_server_is_store_unavailable(tmp_path: Path) -> None:
    store = HttpStore(f"http://127.0.0.1:{free_port()}", spool=False, retries=2, patience=0.5)
    fake = {
        "span_id": "a",
        "rollout_id": "ro-x",
        "attempt_id": "at-x",
        "kind": "llm",
        "name": "n",
        "start_time": 1.0,
    }
    with pytest.raises(StoreUnavailable, match="voltline store serve"):
        store.add_spans([fake])
    with pytest.raises(StoreUnavailable, match="was not sent"):
        store.claim("w")
    store.close()


def test_calls_wait_out_a_server_restart(db: Store, tmp_path: Path) -> None:
    port = free_port()
    db.enqueue("queued")
    store = HttpStore(f"http://127.0.0.1:{port}", spool=False, patience=60)
    server = ServerThread(db, port=port)
    threading.Timer(0.5, server.start).start()  # the server comes up while the claim waits
    try:
        assert [c.rollout.input for c in store.claim("w")] == ["queued"]
    finally:
        store.close()
        server.stop()


def test_emitting_through_the_server(server: ServerThread, db: Store, tmp_path: Path) -> None:
    with HttpStore(server.url, spool_dir=tmp_path / "spool") as store:
        with voltline.rollout("task", store=store) as r:
            with voltline.span("plan", kind="agent"):
                voltline.emit_llm(model="m", input_messages=[{"role": "user", "content": "hi"}])
                voltline.emit_reward(1.0)
    got = db.query_spans(rollout_id=r.rollout_id)
    # A span is numbered when it ends: the agent span, which encloses the others, comes last.
    assert [(s.sequence, s.kind) for s in got] == [(0, "llm"), (1, "reward"), (2, "agent")]
    by_kind = {s.kind: s for s in got}
    assert by_kind["llm"].parent_id == by_kind["agent"].span_id
    assert db.get_rollout(r.rollout_id).status == "succeeded"


# OpenTelemetry ingest -----------------------------------------------------------------------------------
def otlp_json(claim: voltline.Claim | None) -> dict[str, Any]:
    def attr(key: str, value: Any) -> dict[str, Any]:
        if isinstance(value, bool):
            return {"key": key, "value": {"boolValue": value}}
        if isinstance(value, int):
            return {"key": key, "value": {"intValue": str(value)}}
        if isinstance(value, list):
            return {"key": key, "value": {"arrayValue": {"values": [{"stringValue": v} for v in value]}}}
        return {"key": key, "value": {"stringValue": value}}

    resource = [attr("service.name", "agent")]
    if claim is not None:
        resource += [attr("voltline.rollout_id", claim.rollout.rollout_id),
                     attr("voltline.attempt_id", claim.attempt.attempt_id)]  # fmt: skip
    t0, trace = 1_700_000_000_000_000_000, "0af7651916cd43dd8448eb211c80319c"
    agent = {
        "traceId": trace, "spanId": "b7ad6b7169203331", "name": "invoke_agent calc",
        "startTimeUnixNano": str(t0), "endTimeUnixNano": str(t0 + 3_000_000_000),
        "attributes": [attr("gen_ai.operation.name", "invoke_agent"), attr("gen_ai.agent.name", "calc")],
    }  # fmt: skip
    llm = {
        "traceId": trace, "spanId": "00f067aa0ba902b7", "parentSpanId": "b7ad6b7169203331",
        "name": "chat gpt-4o", "startTimeUnixNano": str(t0 + 1_000_000_000),
        "endTimeUnixNano": str(t0 + 2_000_000_000), "status": {"code": 2, "message": "boom"},
        "attributes": [
            attr("gen_ai.operation.name", "chat"), attr("gen_ai.request.model", "gpt-4o"),
            attr("gen_ai.usage.input_tokens", 12), attr("gen_ai.response.finish_reasons", ["stop"]),
            attr("gen_ai.agent.name", "calc"),
        ],
    }  # fmt: skip
    return {
        "resourceSpans": [{"resource": {"attributes": resource}, "scopeSpans": [{"spans": [agent, llm]}]}]
    }


def test_otlp_json_spans_become_voltline_spans(server: ServerThread, db: Store) -> None:
    c = db.start_rollout("t")
    answer = httpx.post(f"{server.url}/v1/traces", json=otlp_json(c))
    assert (answer.status_code, answer.json()) == (200, {})
    # An exporter re-sending the same export is harmless.
    assert httpx.post(f"{server.url}/v1/traces", json=otlp_json(c)).status_code == 200
    got = db.query_spans(rollout_id=c.rollout.rollout_id)
    assert [(s.span_id, s.parent_id, s.kind, s.name, s.agent_name, s.sequence, s.status) for s in got] == [
        ("b7ad6b7169203331", None, "agent", "invoke_agent calc", "calc", 0, "ok"),
        ("00f067aa0ba902b7", "b7ad6b7169203331", "llm", "chat gpt-4o", "calc", 1, "error"),
    ]
    llm = got[1]
    assert (llm.start_time, llm.end_time) == (1_700_000_001.0, 1_700_000_002.0)
    assert llm.attributes == {
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 12,
        "gen_ai.response.finish_reasons": ["stop"], "gen_ai.agent.name": "calc",
        "otel.trace_id": "0af7651916cd43dd8448eb211c80319c", "otel.status_message": "boom",
    }  # fmt: skip


def test_otlp_spans_without_a_rollout_are_refused_as_partial_success(server: ServerThread, db: Store) -> None:
    answer = httpx.post(f"{server.url}/v1/traces", json=otlp_json(None))
    partial = answer.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "2"
    assert "voltline.rollout_id" in partial["errorMessage"]
    c = db.start_rollout("t")  # ... unless the headers name the rollout for the whole export
    headers = {"Voltline-Rollout-Id": c.rollout.rollout_id, "Voltline-Attempt-Id": c.attempt.attempt_id}
    assert httpx.post(f"{server.url}/v1/traces", json=otlp_json(None), headers=headers).json() == {}
    assert len(db.query_spans(rollout_id=c.rollout.rollout_id)) == 2
    bad = httpx.post(f"{server.url}/v1/traces", content=b"{", headers={"Content-Type": "application/json"})
    assert bad.status_code == 422


def test_the_opentelemetry_sdk_exports_protobuf_to_the_server(server: ServerThread, db: Store) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import Status, StatusCode

    c = db.start_rollout("t")
    provider = TracerProvider(
        resource=Resource.create(
            {"voltline.rollout_id": c.rollout.rollout_id, "voltline.attempt_id": c.attempt.attempt_id}
        )
    )
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{server.url}/v1/traces")))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("invoke_agent planner", attributes={
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner"}) as agent:  # fmt: skip
        with tracer.start_as_current_span("execute_tool add", attributes={
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "add", "n": 3, "ok": True,
            "score": 0.5, "ids": [1, 2, 3]}) as tool:  # fmt: skip
            tool.set_status(Status(StatusCode.ERROR, "bad tool"))
        with tracer.start_as_current_span("retrieve", attributes={"openinference.span.kind": "RETRIEVER"}):
            pass
    provider.shutdown()
    got = db.query_spans(rollout_id=c.rollout.rollout_id)
    # SimpleSpanProcessor exports children first (they end first); sequence follows arrival.
    assert [(s.name, s.kind, s.status, s.agent_name) for s in got] == [
        ("execute_tool add", "tool", "error", None),
        ("retrieve", "retriever", "ok", None),
        ("invoke_agent planner", "agent", "ok", "planner"),
    ]
    agent_id = format(agent.get_span_context().span_id, "016x")
    assert got[2].span_id == agent_id and got[2].parent_id is None
    assert got[0].parent_id == agent_id and got[1].parent_id == agent_id
    assert got[0].span_id == format(tool.get_span_context().span_id, "016x")
    assert {k: got[0].attributes[k] for k in ("gen_ai.tool.name", "n", "ok", "score", "ids")} == {
        "gen_ai.tool.name": "add", "n": 3, "ok": True, "score": 0.5, "ids": [1, 2, 3],
    }  # fmt: skip
    assert got[0].attributes["otel.status_message"] == "bad tool"


def test_openapi_spec_lists_every_store_operation(server: ServerThread) -> None:
    spec = orjson.loads(httpx.get(f"{server.url}/openapi.json").content)
    routes = {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}
    assert routes >= {
        ("POST", "/v1/rollouts"), ("POST", "/v1/rollouts/start"), ("POST", "/v1/claims"),
        ("POST", "/v1/attempts/{attempt_id}/heartbeat"), ("POST", "/v1/attempts/{attempt_id}/finish"),
        ("POST", "/v1/attempts/expire"), ("POST", "/v1/rollouts/{rollout_id}/cancel"),
        ("GET", "/v1/rollouts/{rollout_id}"), ("GET", "/v1/rollouts/{rollout_id}/attempts"),
        ("POST", "/v1/rollouts/query"), ("POST", "/v1/rollouts/wait"), ("POST", "/v1/spans"),
        ("POST", "/v1/spans/query"), ("POST", "/v1/resources"), ("GET", "/v1/resources/version"),
        ("GET", "/v1/resources/history"), ("GET", "/v1/resources"), ("GET", "/v1/artifacts/{artifact_hash}"),
        ("POST", "/v1/rollouts/{rollout_id}/resources"), ("POST", "/v1/traces"),
    }  # fmt: skip
    assert spec["paths"]["/v1/spans"]["post"]["requestBody"]["content"]["application/json"]["schema"][
        "required"
    ] == ["spans"]
