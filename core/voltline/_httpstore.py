"""`HttpStore`: the `Store` interface over HTTP, talking to `voltline store serve`.

* One pooled httpx client per store (keep-alive connections, fork-safe).
* Retries with exponential backoff and jitter. A request the server never received (the
  connection was refused) is retried whatever it does; one that may have been received is
  retried only when repeating it is harmless (reads, heartbeats, span batches marked as
  re-sends), so a claim or an enqueue is never done twice.
* Span batches the server cannot take (down, restarting, unreachable) go to an on-disk
  spool and a background thread delivers them, oldest first, when it is back. Memory stays
  bounded (the spool is files; its size on disk is capped too); spans already spooled stay
  on disk across a crash and are sent by the next process that connects to the same URL.
* Server errors come back as the same exceptions the SQL store raises.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import logging
import math
import os
import random
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from ._errors import AttemptLost, InvalidInput, NotFound, StoreUnavailable, VoltlineError
from ._models import (
    SPAN_FIELDS,
    Attempt,
    AttemptStatus,
    Claim,
    EncodedSpan,
    ResourceVersion,
    Rollout,
    Span,
    SpanKind,
    SpanStatus,
)
from ._store import NewRollout, Store, redact_url

__all__ = ["HttpStore", "SpanSpool"]

log = logging.getLogger("voltline.http")

TOKEN_ENV = "VOLTLINE_STORE_TOKEN"
SPOOL_ENV = "VOLTLINE_SPOOL_DIR"
# The server answers a wait within 20 s and the client asks again (see server.app.MAX_WAIT).
_WAIT_SLICE = 20.0
_ERRORS: dict[str, type[VoltlineError]] = {
    "InvalidInput": InvalidInput,
    "NotFound": NotFound,
    "AttemptLost": AttemptLost,
    "StoreUnavailable": StoreUnavailable,
    "SchemaOutOfDate": StoreUnavailable,  # its extra fields do not travel; the message does
}


class _Unreachable(Exception):
    """The request failed at the transport level or with a 5xx; `sent`: it may have arrived."""

    def __init__(self, message: str, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


class HttpStore(Store):
    """A Voltline store server at `url` (`http://host:port`), behind the `Store` interface.

    `token` (default `$VOLTLINE_STORE_TOKEN`) is sent as a bearer token. `retries` bounds
    the re-sends of one request; while the server refuses connections (restarting), calls
    other than `add_spans` keep trying for `patience` seconds. `spool_dir` is where span
    batches wait while the server is down (default `$VOLTLINE_SPOOL_DIR`, else a folder per
    URL under ~/.cache/voltline/spool); `spool=False` turns spooling off, so `add_spans`
    raises `StoreUnavailable` instead.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float = 60.0,
        retries: int = 4,
        patience: float = 15.0,
        spool: bool = True,
        spool_dir: str | os.PathLike[str] | None = None,
        spool_max_bytes: int = 1 << 30,
        max_batch_bytes: int = 32 << 20,
        max_connections: int = 32,
    ) -> None:
        self.url = url.rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise InvalidInput(f"not an HTTP store URL: {redact_url(url)!r}")
        self._token = token or os.environ.get(TOKEN_ENV) or None
        self._timeout = timeout
        self.retries = retries
        self.patience = patience
        self.max_batch_bytes = max_batch_bytes
        self._max_connections = max_connections
        self._client_pid = -1
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()
        self.spool: SpanSpool | None = None
        if spool:
            folder = spool_dir or os.environ.get(SPOOL_ENV) or _default_spool_dir(self.url)
            self.spool = SpanSpool(Path(folder), self, max_bytes=spool_max_bytes)

    # transport -------------------------------------------------------------------------------
    @property
    def client(self) -> httpx.Client:
        if self._client is None or self._client_pid != os.getpid():
            with self._client_lock:  # a forked child must not share the parent's sockets
                if self._client is None or self._client_pid != os.getpid():
                    headers = {"User-Agent": "voltline-httpstore"}
                    if self._token:
                        headers["Authorization"] = f"Bearer {self._token}"
                    self._client = httpx.Client(
                        base_url=self.url,
                        headers=headers,
                        timeout=httpx.Timeout(self._timeout, connect=5.0),
                        limits=httpx.Limits(
                            max_connections=self._max_connections,
                            max_keepalive_connections=self._max_connections,
                            keepalive_expiry=30.0,  # shorter than the server's 65 s
                        ),
                    )
                    self._client_pid = os.getpid()
        return self._client

    def _send_once(
        self, method: str, path: str, *, json: Any = None, content: bytes | None = None,
        params: Mapping[str, Any] | None = None, timeout: float | None = None,
    ) -> httpx.Response:  # fmt: skip
        """One request; raises `_Unreachable` or the mapped store error."""
        kwargs: dict[str, Any] = {}
        if json is not None:
            content = orjson.dumps(json)
        if content is not None:
            kwargs["content"] = content
            kwargs["headers"] = {"Content-Type": "application/json"}
        if timeout is not None:
            kwargs["timeout"] = httpx.Timeout(timeout, connect=5.0)
        try:
            response = self.client.request(method, path, params=params, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise _Unreachable(f"{type(exc).__name__}: {exc}", sent=False) from None
        except httpx.TransportError as exc:
            raise _Unreachable(f"{type(exc).__name__}: {exc}", sent=True) from None
        if response.status_code < 400:
            return response
        if response.status_code in (502, 504) or (
            response.status_code == 503 and not _is_store_error(response)
        ):  # a proxy or load balancer in front: the server itself may never have seen it
            raise _Unreachable(f"HTTP {response.status_code}", sent=True)
        raise self._error(response)

    def _request(
        self, method: str, path: str, *, idempotent: bool, on_resend: Any = None, patient: bool = True,
        **kwargs: Any,
    ) -> httpx.Response:  # fmt: skip
        """Send with retries: `retries` times, and while the server refuses connections, for
        up to `patience` seconds (a restart) when `patient`. `on_resend` adjusts the request
        before each re-send."""
        delay, started = 0.05, time.monotonic()
        for attempt in itertools.count():
            try:
                return self._send_once(method, path, **kwargs)
            except _Unreachable as exc:
                waiting = patient and not exc.sent and time.monotonic() - started < self.patience
                if (exc.sent and not idempotent) or (attempt >= self.retries and not waiting):
                    what = "may not have been applied" if exc.sent else "was not sent"
                    raise StoreUnavailable(
                        f"store server at {redact_url(self.url)} unreachable ({exc}); the {method} {path} "
                        f"{what}. Check that `voltline store serve` is running there."
                    ) from None
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 1.0)
                if on_resend is not None and exc.sent:
                    kwargs = on_resend(kwargs)
        raise AssertionError("unreachable")

    def _error(self, response: httpx.Response) -> VoltlineError:
        try:
            body = response.json()
            name, detail = str(body.get("error")), str(body.get("detail"))
        except Exception:
            name, detail = "", response.text[:500]
        if response.status_code == 401:
            return StoreUnavailable(
                f"store server at {redact_url(self.url)} refused the request (401): pass the server's "
                f"token as voltline.connect(url, token=...) or set ${TOKEN_ENV}"
            )
        if response.status_code == 413:
            return InvalidInput(detail)
        cls = _ERRORS.get(name)
        if cls is None:
            return StoreUnavailable(f"store server error (HTTP {response.status_code}): {detail}")
        return cls(detail)

    def _json(self, method: str, path: str, *, idempotent: bool = True, **kwargs: Any) -> Any:
        return orjson.loads(self._request(method, path, idempotent=idempotent, **kwargs).content)

    # rollouts and attempts ----------------------------------------------------------------------
    def enqueue_many(self, rollouts: Iterable[NewRollout]) -> list[Rollout]:
        items = []
        for i, spec in enumerate(rollouts):
            if not isinstance(spec, Mapping):
                raise InvalidInput(f"rollouts[{i}]: expected a mapping of enqueue() arguments")
            items.append(dict(spec))
        if not items:
            return []
        body = _encode({"rollouts": items}, "rollouts")
        data = self._json("POST", "/v1/rollouts", idempotent=False, content=body)
        return [Rollout.model_validate(r) for r in data]

    def claim(self, worker_id: str, n: int = 1) -> list[Claim]:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InvalidInput(f"n: must be an integer >= 1, got {n!r}")
        data = self._json("POST", "/v1/claims", idempotent=False, json={"worker_id": worker_id, "n": n})
        return [Claim.model_validate(c) for c in data]

    def start_rollout(self, input: Any = None, *, worker_id: str | None = None, **options: Any) -> Claim:
        body = _encode({"input": input, "worker_id": worker_id, **options}, "rollout")
        return Claim.model_validate(self._json("POST", "/v1/rollouts/start", idempotent=False, content=body))

    def heartbeat(self, attempt_id: str) -> Attempt:
        return Attempt.model_validate(self._json("POST", f"/v1/attempts/{_seg(attempt_id)}/heartbeat"))

    def finish_attempt(
        self, attempt_id: str, status: AttemptStatus | str = "succeeded", error: str | None = None
    ) -> Rollout:
        # Not re-sent once it may have arrived: a second finish of an applied first one would
        # fail as AttemptLost, and the store has no lookup by attempt id to tell the cases apart.
        body = {"status": status, "error": error}
        data = self._json("POST", f"/v1/attempts/{_seg(attempt_id)}/finish", idempotent=False, json=body)
        return Rollout.model_validate(data)

    def expire_attempts(self, now: float | None = None) -> list[Attempt]:
        data = self._json("POST", "/v1/attempts/expire", json={"now": now})
        return [Attempt.model_validate(a) for a in data]

    def cancel(self, rollout_id: str) -> Rollout:
        return Rollout.model_validate(self._json("POST", f"/v1/rollouts/{_seg(rollout_id)}/cancel"))

    def get_rollout(self, rollout_id: str) -> Rollout:
        return Rollout.model_validate(self._json("GET", f"/v1/rollouts/{_seg(rollout_id)}"))

    def get_attempts(self, rollout_id: str) -> list[Attempt]:
        return [
            Attempt.model_validate(a) for a in self._json("GET", f"/v1/rollouts/{_seg(rollout_id)}/attempts")
        ]

    def query_rollouts(
        self,
        *,
        status: str | Sequence[str] | None = None,
        mode: str | None = None,
        since: float | None = None,
        until: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Rollout]:
        body = {
            "status": status if status is None or isinstance(status, str) else list(status),
            "mode": mode, "since": since, "until": until,
            "metadata": None if metadata is None else dict(metadata), "limit": limit, "offset": offset,
        }  # fmt: skip
        data = self._json("POST", "/v1/rollouts/query", content=_encode(body, "query"))
        return [Rollout.model_validate(r) for r in data]

    def wait(self, rollout_ids: Sequence[str], timeout: float | None = None) -> list[Rollout]:
        ids = list(rollout_ids)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = _WAIT_SLICE if deadline is None else max(0.0, deadline - time.monotonic())
            piece = min(remaining, _WAIT_SLICE)
            data = self._json(
                "POST", "/v1/rollouts/wait", json={"rollout_ids": ids, "timeout": piece}, timeout=piece + 60
            )
            rollouts = [Rollout.model_validate(r) for r in data]
            if all(r.status.finished for r in rollouts):
                return rollouts
            if deadline is not None and time.monotonic() >= deadline:
                return rollouts

    # spans ----------------------------------------------------------------------------------------
    def add_spans(self, spans: Iterable[Span | Mapping[str, Any]]) -> int:
        encoded = encode_spans(spans)
        if not encoded:
            return 0
        for chunk in _chunks(encoded, self.max_batch_bytes):
            self._deliver(chunk)
        return len(encoded)

    def _deliver(self, chunk: list[bytes]) -> None:
        spans_json = b"[" + b",".join(chunk) + b"]"
        if self.spool is not None and self.spool.pending:
            # Batches already waiting go first: the store numbers unnumbered spans on arrival.
            self.spool.put(spans_json, len(chunk))
            return
        try:
            # Without a spool, wait out a restart like every other call; with one, spool soon.
            self.send_span_batch(spans_json, patient=self.spool is None)
        except StoreUnavailable as exc:
            if self.spool is None:
                raise
            log.warning("voltline: %s; spooling %d spans to %s", exc, len(chunk), self.spool.folder)
            self.spool.put(spans_json, len(chunk))

    def send_span_batch(self, spans_json: bytes, *, resend: bool = False, patient: bool = False) -> None:
        """POST one encoded batch (a JSON array of spans); re-sends are marked as such so a
        batch whose first send was committed is not refused as a duplicate."""

        def body(retry: bool) -> bytes:
            return b'{"retry":' + (b"true" if retry else b"false") + b',"spans":' + spans_json + b"}"

        def mark_resend(kwargs: dict[str, Any]) -> dict[str, Any]:
            return {**kwargs, "content": body(True)}

        self._request(
            "POST", "/v1/spans", idempotent=True, content=body(resend), on_resend=mark_resend, patient=patient
        )

    def query_spans(
        self,
        *,
        rollout_id: str | None = None,
        attempt_id: str | None = None,
        kind: str | Sequence[str] | None = None,
        name: str | None = None,
        agent_name: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Span]:
        if rollout_id is None and attempt_id is None:
            raise InvalidInput("query_spans needs rollout_id or attempt_id")
        body = {
            "rollout_id": rollout_id, "attempt_id": attempt_id,
            "kind": kind if kind is None or isinstance(kind, str) else list(kind),
            "name": name, "agent_name": agent_name, "limit": limit, "offset": offset,
        }  # fmt: skip
        data = self._json("POST", "/v1/spans/query", json=body)
        # The server built these from validated rows: skip re-validation (this is the bulk read).
        return [_span_from_json(s) for s in data]

    def drain(self, timeout: float | None = 60.0) -> bool:
        """Wait until every spooled span batch has been delivered. False on timeout."""
        return True if self.spool is None else self.spool.drain(timeout)

    # resources ------------------------------------------------------------------------------------
    def put_resource(
        self,
        name: str,
        kind: str,
        payload: Any = None,
        *,
        artifact: bytes | None = None,
        created_by: str | None = None,
        metrics: Mapping[str, float] | None = None,
    ) -> ResourceVersion:
        if artifact is not None and not isinstance(artifact, bytes | bytearray | memoryview):
            raise InvalidInput(f"artifact: must be bytes, got {type(artifact).__name__}")
        body = {
            "name": name, "kind": kind, "payload": payload, "created_by": created_by,
            "metrics": None if metrics is None else dict(metrics),
            "artifact_base64": None if artifact is None else base64.b64encode(bytes(artifact)).decode(),
        }  # fmt: skip
        data = self._json("POST", "/v1/resources", idempotent=False, content=_encode(body, "resource"))
        return ResourceVersion.model_validate(data)

    def get_resource(self, name: str, version: int | None = None) -> ResourceVersion:
        params: dict[str, Any] = {"name": name}
        if version is not None:
            params["version"] = version
        return ResourceVersion.model_validate(self._json("GET", "/v1/resources/version", params=params))

    def resource_history(self, name: str) -> list[ResourceVersion]:
        data = self._json("GET", "/v1/resources/history", params={"name": name})
        return [ResourceVersion.model_validate(r) for r in data]

    def list_resources(self) -> list[ResourceVersion]:
        return [ResourceVersion.model_validate(r) for r in self._json("GET", "/v1/resources")]

    def get_artifact(self, artifact_hash: str) -> bytes:
        return self._request("GET", f"/v1/artifacts/{_seg(artifact_hash)}", idempotent=True).content

    def record_resources(self, rollout_id: str, versions: Mapping[str, int]) -> Rollout:
        body = _encode({"versions": dict(versions)}, "versions")
        return Rollout.model_validate(
            self._json("POST", f"/v1/rollouts/{_seg(rollout_id)}/resources", content=body)
        )

    # lifecycle ----------------------------------------------------------------------------------
    def close(self, drain_timeout: float = 5.0) -> None:
        """Deliver what the spool holds (for up to `drain_timeout` s; the rest stays on disk
        for the next process on this URL) and close the connections."""
        if self.spool is not None:
            self.spool.close(drain_timeout)
        if self._client is not None and self._client_pid == os.getpid():
            self._client.close()
        self._client = None


# encoding ---------------------------------------------------------------------------------------
def _seg(value: str) -> str:
    """One path segment: an id with a "/" or "?" in it must not change the route."""
    return quote(str(value), safe="")


def _encode(body: Any, what: str) -> bytes:
    try:
        data = orjson.dumps(body)
    except TypeError:
        data = b""
    if not data or (b"null" in data and _has_non_finite(body)):
        where, problem = _first_bad(body, what)
        raise InvalidInput(f"{where} must be JSON-serializable: {problem}")
    return data


def _first_bad(value: Any, where: str) -> tuple[str, str]:
    """Where in `value` the first value JSON cannot hold is, for the error message."""
    if isinstance(value, dict):
        for key, item in value.items():
            try:
                orjson.dumps(item)
                if not _has_non_finite(item):
                    continue
            except TypeError:
                pass
            return _first_bad(item, f"{where}.{key}" if where else str(key))
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            try:
                orjson.dumps(item)
                if not _has_non_finite(item):
                    continue
            except TypeError:
                pass
            return _first_bad(item, f"{where}[{i}]")
    if isinstance(value, float):
        return where, "NaN and Infinity are not JSON"
    return where, f"{type(value).__name__} is not JSON"


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_non_finite(v) for v in value)
    return False


def encode_spans(spans: Iterable[Span | Mapping[str, Any]]) -> list[bytes]:
    """Each span as JSON, checked as far as JSON goes (the server validates the rest).

    orjson writes NaN as null and the server could not tell; so a span whose JSON holds a
    null is searched for non-finite floats, and unset fields are left out so that an
    ordinary span holds no null at all. The message names the span and the field, and says
    nothing was stored, as the SQL store's does.
    """
    out = []
    for i, span in enumerate(spans):
        if isinstance(span, EncodedSpan):  # checked and encoded already: its JSON goes as it is
            fields = {k: v for k, v in zip(SPAN_FIELDS[:-2], span.row[:-2], strict=True) if v is not None}
            fields["attributes"] = orjson.Fragment(span.row[-2])
            fields["resources"] = orjson.Fragment(span.row[-1])
            out.append(orjson.dumps(fields))
            continue
        if isinstance(span, Span):
            fields = {k: v for k, v in span.__dict__.items() if v is not None}
        elif isinstance(span, Mapping):
            fields = {k: v for k, v in span.items() if v is not None}
        else:
            raise InvalidInput(
                f"spans[{i}]: expected a Span or a mapping, got {type(span).__name__}; "
                "nothing from this batch was stored"
            )
        try:
            data = orjson.dumps(fields)
        except TypeError:
            data = b""
        if not data or (b"null" in data and _has_non_finite(fields)):
            where, problem = _first_bad(fields, f"spans[{i}]")
            raise InvalidInput(
                f"{where} must be JSON-serializable: {problem}; nothing from this batch was stored"
            )
        out.append(data)
    return out


def _chunks(encoded: list[bytes], max_bytes: int) -> Iterable[list[bytes]]:
    chunk: list[bytes] = []
    size = 0
    for item in encoded:
        if chunk and size + len(item) > max_bytes:
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += len(item) + 1
    if chunk:
        yield chunk


def _span_from_json(data: dict[str, Any]) -> Span:
    data["kind"] = SpanKind(data["kind"])
    data["status"] = SpanStatus(data["status"])
    return Span.model_construct(**data)


def _is_store_error(response: httpx.Response) -> bool:
    return (
        response.headers.get("content-type", "").startswith("application/json")
        and b'"error"' in (response.content[:200])
    )


def _default_spool_dir(url: str) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "voltline" / "spool" / hashlib.sha256(url.encode()).hexdigest()[:16]


# the spool --------------------------------------------------------------------------------------
class SpanSpool:
    """Span batches waiting on disk for the server, delivered oldest first by one thread.

    A batch is one file, written whole (temporary name, then renamed) so a crash never
    leaves half a batch. Delivering renames a file to `*.sending-<pid>` first, so two
    processes sharing the folder never send the same file at once; the file of a sender
    that died is picked up again. A batch the server refuses as invalid is moved to
    `rejected/` and logged, never retried forever.
    """

    def __init__(self, folder: Path, store: HttpStore, *, max_bytes: int = 1 << 30) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self._store = store
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._closed = False
        self.delivered = 0  # spans
        self.rejected = 0  # spans the server refused as invalid
        self._bytes = 0
        self._files = 0
        if folder.is_dir():
            self._recover()
            if self._files:
                log.warning("voltline: %d span batch(es) from an earlier run wait in %s", self._files, folder)
                self._start()

    @property
    def pending(self) -> int:
        """Batches on disk not yet delivered (as this process knows them)."""
        return self._files

    def _recover(self) -> None:
        for path in self.folder.iterdir():
            if ".sending-" in path.name:
                pid = int(path.name.rsplit("-", 1)[1] or 0)
                if pid == os.getpid() or _alive(pid):
                    continue
                path = path.rename(path.with_name(path.name.split(".sending-")[0]))
            if path.suffix == ".batch":
                self._files += 1
                self._bytes += path.stat().st_size

    def put(self, spans_json: bytes, count: int) -> None:
        """Keep one batch on disk for later delivery; raise StoreUnavailable if the spool is full."""
        with self._lock:
            if self._bytes + len(spans_json) > self.max_bytes:
                raise StoreUnavailable(
                    f"store server at {redact_url(self._store.url)} is down and the span spool "
                    f"{self.folder} is full ({self._bytes:,} bytes)"
                )
            self.folder.mkdir(parents=True, exist_ok=True)
            # Sortable names: time first, so delivery follows the order batches were spooled.
            name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}-{count}.batch"
            tmp = self.folder / (name + ".tmp")
            with open(tmp, "wb") as f:
                f.write(spans_json)
                f.flush()
                os.fsync(f.fileno())  # an acknowledged span survives a power cut too
            tmp.rename(self.folder / name)
            self._files += 1
            self._bytes += len(spans_json)
        self._start()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="voltline-spool", daemon=True)
                self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        delay = 0.2
        while True:
            batches = sorted(p for p in self.folder.glob("*.batch")) if self.folder.is_dir() else []
            if not batches:
                with self._lock:
                    self._files = self._bytes = 0
                    self._thread = None
                    self._idle.notify_all()
                return
            for path in batches:
                if not self._send(path):
                    # Server still down: back off, then start again from the oldest batch.
                    self._wake.wait(delay)
                    self._wake.clear()
                    delay = min(delay * 2, 5.0)
                    break
                delay = 0.2

    def _send(self, path: Path) -> bool:
        claimed = path.with_name(f"{path.name}.sending-{os.getpid()}")
        try:
            path.rename(claimed)
        except FileNotFoundError:
            return True  # another process took it
        try:
            data = claimed.read_bytes()
            count = int(path.stem.rsplit("-", 1)[1])
            self._store.send_span_batch(data, resend=True)
        except InvalidInput as exc:
            rejected = self.folder / "rejected"
            rejected.mkdir(exist_ok=True)
            claimed.rename(rejected / path.name)
            log.error("voltline: the store refused %d spooled spans (kept in %s): %s", count, rejected, exc)
            self._settle(len(data), rejected=count)
            return True
        except Exception as exc:  # still unreachable (or a bug): keep the batch for later
            with contextlib.suppress(OSError):
                claimed.rename(path)
            log.debug("voltline: spool delivery failed, will retry: %s", exc)
            return False
        claimed.unlink()
        self._settle(len(data), delivered=count)
        return True

    def _settle(self, size: int, *, delivered: int = 0, rejected: int = 0) -> None:
        with self._lock:
            self._files = max(0, self._files - 1)
            self._bytes = max(0, self._bytes - size)
            self.delivered += delivered
            self.rejected += rejected
            self._idle.notify_all()

    def drain(self, timeout: float | None = 60.0) -> bool:
        """Wait until the spool is empty. False if batches remain after `timeout` seconds."""
        if self._files:
            self._start()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._files:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._wake.set()
                self._idle.wait(0.2 if remaining is None else min(remaining, 0.2))
        return True

    def close(self, timeout: float) -> None:
        if self._files and not self.drain(timeout):
            log.warning(
                "voltline: %d span batch(es) not yet delivered stay in %s; the next process that "
                "connects to %s sends them",
                self._files, self.folder, redact_url(self._store.url),
            )  # fmt: skip


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
