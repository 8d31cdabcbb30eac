"""Prod refuses a short secret key; the body deadline answers 408 (issue 18, findings 4, 6)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import anyio
import pytest
from pydantic import ValidationError
from starlette.types import Message, Receive, Scope, Send

from server.cli import main
from server.limits import BodyDeadline, BodySizeLimit
from server.settings import MIN_PROD_SECRET_KEY_BYTES, Settings


def test_prod_refuses_a_secret_key_shorter_than_32_bytes() -> None:
    with pytest.raises(ValidationError, match=r"LINTEL_SECRET_KEY is 1 bytes; prod needs at least"):
        Settings(env="prod", secret_key="x")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="at least 32"):
        Settings(env="prod", secret_key="k" * (MIN_PROD_SECRET_KEY_BYTES - 1))  # type: ignore[arg-type]
    Settings(env="prod", secret_key="k" * MIN_PROD_SECRET_KEY_BYTES)  # type: ignore[arg-type]
    # Dev and test keep working with short keys (the test suites use them).
    Settings(env="test", secret_key="short")  # type: ignore[arg-type]


def test_run_in_prod_with_a_short_key_stops_with_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LINTEL_ENV", "prod")
    monkeypatch.setenv("LINTEL_SECRET_KEY", "x")
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert "LINTEL_SECRET_KEY is 1 bytes" in err and "Traceback" not in err


async def _echo(scope: Scope, receive: Receive, send: Send) -> None:
    """An app that answers 200 with the body it received."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def _call(app: object, chunks: list[bytes], *, stall: bool) -> list[Message]:
    """Drive an ASGI app with these body chunks; ``stall``: the last never comes."""
    sent: list[Message] = []
    scope: Scope = {"type": "http", "method": "POST", "path": "/x", "headers": []}

    async def run() -> None:
        queue = list(chunks)

        async def receive() -> Message:
            if queue:
                chunk = queue.pop(0)
                return {"type": "http.request", "body": chunk, "more_body": bool(queue) or stall}
            await anyio.sleep_forever()
            raise AssertionError("unreachable")

        async def send(message: Message) -> None:
            sent.append(message)

        await app(scope, receive, send)  # type: ignore[operator]

    # In a thread of its own: a session's Playwright browser (tests/web) keeps an event
    # loop marked running in the main thread, where anyio.run would refuse to start.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(anyio.run, run).result()
    return sent


def test_a_body_slower_than_the_deadline_gets_408_and_never_reaches_the_app() -> None:
    reached: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(scope)
        await _echo(scope, receive, send)

    sent = _call(BodyDeadline(app, timeout_s=0.2), [b"csrf_token="], stall=True)
    assert sent[0]["status"] == 408 and reached == []
    assert b"request_timeout" in sent[1]["body"]


def test_a_complete_body_reaches_the_app_whole() -> None:
    sent = _call(BodyDeadline(_echo, timeout_s=5), [b"a=1", b"&b=2", b"&c=3"], stall=False)
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"a=1&b=2&c=3"


def test_the_size_limit_still_answers_413_while_the_deadline_buffers() -> None:
    # A chunked body with no Content-Length: the size limit raises while the deadline
    # middleware is reading; that must be a 413, not a 500.
    app = BodySizeLimit(BodyDeadline(_echo, timeout_s=5), max_bytes=4)
    sent = _call(app, [b"abc", b"def"], stall=False)
    assert sent[0]["status"] == 413
