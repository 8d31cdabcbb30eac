"""A synchronous httpx transport that calls an ASGI app in-process.

httpx's own ``ASGITransport`` is async-only and Starlette's TestClient warns
on import with this httpx; this is the small piece both would give us.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractContextManager
from typing import Any

import httpx
from anyio.from_thread import BlockingPortal, start_blocking_portal


class SyncASGITransport(httpx.BaseTransport):
    """Runs each request through ``app`` on an event loop in a helper thread."""

    def __init__(self, app: Any) -> None:
        self._inner = httpx.ASGITransport(app=app)
        self._portal_cm: AbstractContextManager[BlockingPortal] = start_blocking_portal()
        self._portal = self._portal_cm.__enter__()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()

        async def stream() -> AsyncIterator[bytes]:
            yield body

        async def call() -> tuple[int, list[tuple[bytes, bytes]], bytes]:
            # Headers as sent: a chunked request (no Content-Length) stays one.
            inner_request = httpx.Request(
                request.method, request.url, headers=request.headers, content=stream()
            )
            response = await self._inner.handle_async_request(inner_request)
            content = b"".join([chunk async for chunk in response.stream])  # type: ignore[union-attr]
            return response.status_code, response.headers.raw, content

        status, headers, content = self._portal.call(call)
        return httpx.Response(status, headers=headers, content=content, request=request)

    def close(self) -> None:
        self._portal_cm.__exit__(None, None, None)
