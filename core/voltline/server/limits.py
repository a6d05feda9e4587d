"""Request size limit, as ASGI middleware: a body over the limit is refused with 413, whether
it announces its length (refused before a byte is read) or streams it chunked (refused as
soon as the count passes the limit)."""

from __future__ import annotations

from typing import Any

from ._responses import error_body

__all__ = ["DEFAULT_MAX_BODY_BYTES", "BodyLimit"]

# A span's attributes may hold 8 MiB (token ids of very long prompts), so a batch must fit
# several of those; clients split bigger batches. Artifacts (LoRA weights) travel base64.
DEFAULT_MAX_BODY_BYTES = 256 * 1024 * 1024


class BodyLimit:
    def __init__(self, app: Any, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await self._refuse(send)
                    return
                break
        else:
            # No Content-Length (a chunked upload): read it here, counting, and hand the app
            # the whole body only if it fits. (Raising from inside the app's receive would
            # be caught by the framework's body parser and turned into a 400.)
            chunks, seen = [], 0
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client went away
                chunks.append(message.get("body", b""))
                seen += len(chunks[-1])
                if seen > self.max_bytes:
                    await self._refuse(send)
                    return
                if not message.get("more_body", False):
                    break
            await self.app(scope, _replay(b"".join(chunks), receive), send)
            return
        await self.app(scope, receive, send)

    async def _refuse(self, send: Any) -> None:
        body = error_body(
            "InvalidInput",
            f"request body over the server's limit of {self.max_bytes:,} bytes; send smaller batches",
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _replay(body: bytes, receive: Any) -> Any:
    """An ASGI receive that hands over `body` once, then whatever the client sends next."""
    replayed = False

    async def replay() -> dict[str, Any]:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
