"""Bearer-token check, as ASGI middleware so it covers every route (OTLP ingest included)."""

from __future__ import annotations

import hmac
from typing import Any

from ._responses import error_body

__all__ = ["OPEN_PATHS", "BearerAuth"]

# A liveness probe and the API description reveal nothing stored; everything else needs the token.
OPEN_PATHS = frozenset({"/v1/health", "/openapi.json", "/docs", "/docs/oauth2-redirect"})


class BearerAuth:
    """Answers 401 unless the request carries `Authorization: Bearer <token>`."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        given = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                given = value
                break
        # Constant-time comparison: the answer's timing must not leak the token byte by byte.
        if hmac.compare_digest(given, self._expected):
            await self.app(scope, receive, send)
            return
        body = error_body("Unauthorized", "missing or wrong bearer token (Authorization: Bearer <token>)")
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b"Bearer"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
