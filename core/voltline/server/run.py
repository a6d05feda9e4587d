"""Running the store server: `serve()` for the CLI, `ServerThread` for tests and notebooks."""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
import time
from typing import Any

from .._errors import InvalidInput, StoreUnavailable
from .._store import connect, redact_url
from .app import create_app
from .limits import DEFAULT_MAX_BODY_BYTES

__all__ = ["LOOPBACK_HOSTS", "TOKEN_ENV", "ServerThread", "app_from_env", "is_loopback", "serve"]

log = logging.getLogger("voltline.server")

TOKEN_ENV = "VOLTLINE_STORE_TOKEN"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
# Longer than any client's keep-alive (the client's is 30 s): the client must always be the
# side that drops an idle connection, or a request sent on a connection the server is
# closing fails in a way that cannot safely be retried.
KEEP_ALIVE_SECONDS = 65
# How `--workers N` hands the settings to each worker process (uvicorn imports the app anew).
_ENV_DB, _ENV_MAX_BODY = "VOLTLINE_SERVER_DB", "VOLTLINE_SERVER_MAX_BODY"


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_token(host: str, token: str | None) -> None:
    """Refuse to listen beyond loopback without a token: anyone on the network could then
    read every prompt and write training data."""
    if not token and not is_loopback(host):
        raise InvalidInput(
            f"--host {host} listens beyond this machine: set a bearer token with --token or "
            f"${TOKEN_ENV} (clients pass it as voltline.connect(url, token=...))"
        )


def serve(
    db_url: str,
    *,
    host: str = "127.0.0.1",
    port: int = 4747,
    token: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    workers: int = 1,
    log_level: str = "info",
) -> None:
    """Serve the store at `db_url` over HTTP until interrupted."""
    import uvicorn

    token = token or os.environ.get(TOKEN_ENV) or None
    check_token(host, token)
    common: dict[str, Any] = dict(
        host=host, port=port, log_level=log_level, timeout_keep_alive=KEEP_ALIVE_SECONDS,
        access_log=False,  # one line per span batch buries everything else
    )  # fmt: skip
    if workers > 1:
        if db_url.startswith("sqlite"):
            log.warning("voltline: several workers on one SQLite file serialize on its write lock")
        os.environ[_ENV_DB], os.environ[_ENV_MAX_BODY] = db_url, str(max_body_bytes)
        if token:
            os.environ[TOKEN_ENV] = token
        uvicorn.run("voltline.server.run:app_from_env", factory=True, workers=workers, **common)
        return
    store = connect(db_url)
    try:
        log.info("voltline: serving %s on http://%s:%d", redact_url(db_url), host, port)
        uvicorn.run(create_app(store, token=token, max_body_bytes=max_body_bytes), **common)
    finally:
        store.close()


def app_from_env() -> Any:
    """The app of one `--workers` process, configured from the environment `serve` set."""
    store = connect(os.environ[_ENV_DB])
    return create_app(
        store, token=os.environ.get(TOKEN_ENV) or None, max_body_bytes=int(os.environ[_ENV_MAX_BODY])
    )


class ServerThread:
    """A store server on 127.0.0.1 in a background thread (port 0: a free one is picked).

    `with ServerThread(store) as server: voltline.connect(server.url)`.
    """

    def __init__(
        self,
        store: Any,
        *,
        token: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        import uvicorn

        check_token(host, token)
        self.store = store
        config = uvicorn.Config(
            create_app(store, token=token, max_body_bytes=max_body_bytes), host=host, port=port,
            log_level="warning", timeout_keep_alive=KEEP_ALIVE_SECONDS, access_log=False, lifespan="off",
        )  # fmt: skip
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="voltline-store-server", daemon=True)
        self.url = ""

    def start(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise StoreUnavailable("the store server thread did not start")
            time.sleep(0.005)
        host, port = self._server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
