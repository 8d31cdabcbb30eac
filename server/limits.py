"""Request body size limit (413), enforced before the body is parsed.

One limit for every route, except paths matched by an override: the registry
import is one request per register file (all-or-nothing), about 3.1 KB a row
with a face, so a 10,000-unit register needs ~31 MB while nothing else comes
near 8 MiB. FastAPI parses a body before the route's dependencies check the
token, so an override may name who gets it (``allow``: e.g. a valid manager's
token, checked here before any byte of the body is read); anybody else keeps
the general limit.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import anyio
import anyio.to_thread
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


@dataclass(frozen=True, slots=True)
class LimitOverride:
    """A larger (or smaller) body limit for the paths ``pattern`` fully matches."""

    pattern: str
    max_bytes: int
    allow: Callable[[Scope], bool] | None = None
    """Who gets it (run in a worker thread; may query the database). None: everyone."""


class BodySizeLimit:
    """Refuse bodies above ``max_bytes``: by Content-Length at once, else while streaming."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, overrides: Sequence[LimitOverride] = ()
    ) -> None:
        """``overrides``: the first whose pattern fully matches the path applies."""
        self.app = app
        self.max_bytes = max_bytes
        self.overrides = [(re.compile(o.pattern), o) for o in overrides]

    def override_for(self, path: str) -> LimitOverride | None:
        """The override of one request path, if any."""
        for pattern, override in self.overrides:
            if pattern.fullmatch(path):
                return override
        return None

    async def limit_for(self, scope: Scope) -> int:
        """The body limit of one request."""
        override = self.override_for(str(scope.get("path", "")))
        if override is None:
            return self.max_bytes
        if override.allow is not None and not await anyio.to_thread.run_sync(override.allow, scope):
            return self.max_bytes
        return override.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = await self.limit_for(scope)
        detail = f"request body larger than {max_bytes} bytes"
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    too_large = int(value) > max_bytes
                except ValueError:
                    too_large = False
                if too_large:
                    response = JSONResponse(
                        {"detail": detail, "code": "payload_too_large"}, status_code=413
                    )
                    await response(scope, receive, send)
                    return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    # Chunked bodies without Content-Length: FastAPI re-raises
                    # HTTPException from body reading, so this becomes a 413.
                    raise HTTPException(status_code=413, detail=detail)
            return message

        await self.app(scope, limited_receive, send)


class BodyDeadline:
    """Read each request's whole body within ``timeout_s`` before the app sees the request.

    A route's dependencies may take a database connection (the caller's
    session, a token lookup) and keep it until the request ends; were the body
    read after them, one slow sender would hold a pooled connection for as
    long as it liked, and a handful of them starve ``/healthz`` and the device
    uploads. Here the body is buffered first (never more than the size limit
    outside this middleware lets through), and a sender slower than the
    deadline gets 408 and the connection is closed, having held no connection.
    """

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        """``timeout_s``: from the request's start to its body's last byte."""
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        buffered: list[Message] = []
        try:
            with anyio.fail_after(self.timeout_s):
                while True:
                    message = await receive()
                    buffered.append(message)
                    if message["type"] != "http.request" or not message.get("more_body", False):
                        break
        except TimeoutError:
            response = JSONResponse(
                {
                    "detail": f"request body not received within {self.timeout_s:g} s",
                    "code": "request_timeout",
                },
                status_code=408,
                headers={"Connection": "close"},
            )
            await response(scope, receive, send)
            return
        except HTTPException as exc:  # BodySizeLimit's streaming check, raised while buffering
            response = JSONResponse(
                {"detail": exc.detail, "code": "payload_too_large"}, status_code=exc.status_code
            )
            await response(scope, receive, send)
            return
        if buffered and buffered[-1]["type"] == "http.disconnect":
            return  # the client left mid-body: nobody to answer
        # One message with the whole body, then the real channel (a later
        # http.disconnect still reaches a streaming response).
        body = b"".join(m.get("body", b"") for m in buffered)
        pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

        async def replay() -> Message:
            if pending:
                return pending.pop()
            return await receive()

        await self.app(scope, replay, send)
