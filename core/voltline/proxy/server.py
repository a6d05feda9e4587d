"""Run the proxy with uvicorn: in the foreground (`voltline serve`) or in a thread (tests, notebooks)."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["RunningServer", "free_port", "serve_in_thread"]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class RunningServer:
    url: str  # e.g. http://127.0.0.1:8123 (append /v1 for an OpenAI client)
    server: Any
    thread: threading.Thread

    def base_url(self, rollout_id: str | None = None, attempt_id: str | None = None) -> str:
        """The OpenAI base URL to give an agent; with ids, its calls are recorded to that attempt."""
        if rollout_id and attempt_id:
            return f"{self.url}/rollout/{rollout_id}/attempt/{attempt_id}/v1"
        return f"{self.url}/v1"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def serve_in_thread(
    app: Any, host: str = "127.0.0.1", port: int | None = None, timeout: float = 60.0
) -> RunningServer:
    """Start `app` on a daemon thread and return once it accepts connections."""
    import uvicorn

    port = port or free_port(host)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"voltline-proxy-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the proxy did not start on {host}:{port}")
        time.sleep(0.02)
    return RunningServer(f"http://{host}:{port}", server, thread)
