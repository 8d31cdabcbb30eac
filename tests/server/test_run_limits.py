"""A real ``lintel-server run`` under slow bodies and forged headers (issue 18, findings 4, 6).

Each test starts the server as a subprocess on a free 127.0.0.1 port against
the test database (SQLite and PostgreSQL), with a deliberately small pool, and
talks to it over TCP: the behaviour lives in uvicorn, the middleware order and
the connection pool together, which an in-process client does not exercise.
"""

from __future__ import annotations

import io
import json
import os
import select as select_mod
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from edge.wire import API_PREFIX
from server.audit.models import AuditEvent
from server.cli import main
from tests.server.conftest import MODEL, TEST_SECRET
from tests.server.helpers import unknown_item
from tests.web.world import csrf_of

PASSWORD = "correct horse battery staple"
# Pool of 1 + 1 overflow: two requests holding a connection exhaust it; a third
# waits POOL_TIMEOUT_S and fails (/healthz: 503).
POOL = {"LINTEL_DB_POOL_SIZE": "1", "LINTEL_DB_MAX_OVERFLOW": "1", "LINTEL_DB_POOL_TIMEOUT_S": "3"}
SLOW_BODIES = 6
BODY_TIMEOUT_S = 12


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def _serve(tmp_path: Path, db_url: str, *args: str, **env: str) -> Iterator[str]:
    """``lintel-server run`` in a subprocess; yields its base URL, stops it at the end."""
    port = _free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LINTEL_")}
    clean.pop("FORWARDED_ALLOW_IPS", None)
    full_env = {
        **clean,
        "LINTEL_DATABASE_URL": db_url,
        "LINTEL_ENV": "test",
        "LINTEL_SECRET_KEY": TEST_SECRET,
        "LINTEL_DATA_DIR": str(tmp_path),
        **env,
    }
    log = tmp_path / f"server-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "run", "--port", str(port), *args],
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            assert proc.poll() is None, log.read_text(errors="replace")
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            pytest.fail("server did not come up: " + log.read_text(errors="replace"))
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, db_url: str, engine: object) -> None:
    monkeypatch.setenv("LINTEL_DATABASE_URL", db_url)
    monkeypatch.setenv("LINTEL_ENV", "test")
    monkeypatch.setenv("LINTEL_SECRET_KEY", TEST_SECRET)


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def _setup(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> str:
    """A site, a device (its token returned) and a viewer ``vic`` with a password."""
    _cli(capsys, "site", "add", "S", "--model-id", MODEL)
    token: str = json.loads(_cli(capsys, "device", "add", "--site", "S", "--name", "g", "--json"))[
        "token"
    ]
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    _cli(capsys, "user", "add", "vic", "--role", "viewer", "--site", "S", "--password-stdin")
    return token


def _login(client: httpx.Client, username: str, password: str, **headers: str) -> httpx.Response:
    form = client.get("/web/login")
    assert form.status_code == 200
    return client.post(
        "/web/login",
        data={"username": username, "password": password, "csrf_token": csrf_of(form.text)},
        headers=headers,
    )


def _slow_post(base: str, path: str, cookie: str) -> socket.socket:
    """A form POST whose headers and first bytes arrive, and whose body never ends."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(
        (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 4096\r\n\r\n"
            "csrf_token="
        ).encode()
    )
    return sock


def _status_line(sock: socket.socket, timeout_s: float) -> bytes:
    """The first line the server sends back ("" when it closes without answering)."""
    sock.settimeout(timeout_s)
    data = b""
    with suppress(ConnectionError):
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n", 1)[0]


def test_slow_form_bodies_hold_no_connection_and_time_out(
    cli_env: None,
    db_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before the fix each slow POST held a pooled connection: /healthz went 503."""
    device_token = _setup(capsys, monkeypatch)
    env = {**POOL, "LINTEL_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S)}
    with _serve(tmp_path, db_url, **env) as base, httpx.Client(base_url=base, timeout=60) as web:
        assert _login(web, "vic", PASSWORD).status_code == 303
        cookie = "; ".join(f"{k}={v}" for k, v in web.cookies.items())
        slow = [_slow_post(base, "/web/cases/1/contact", cookie) for _ in range(SLOW_BODIES)]
        try:
            # All held open, none answered yet (so the checks below run while they hang).
            readable, _, _ = select_mod.select(slow, [], [], 0)
            assert readable == []
            for _ in range(3):
                assert httpx.get(f"{base}/healthz", timeout=60).status_code == 200
            r = httpx.post(
                f"{base}{API_PREFIX}/device/sightings",
                json={"sightings": [unknown_item(n=1)]},
                headers={"Authorization": f"Bearer {device_token}"},
                timeout=60,
            )
            assert r.status_code == 200 and r.json()["created"] == 1, r.text
            # ...and the slow bodies were still hanging while those were answered
            readable, _, _ = select_mod.select(slow, [], [], 0)
            assert readable == [], "a slow body timed out before the checks ran"
            # Each slow body runs out of time: 408, then the server closes the connection.
            for sock in slow:
                assert _status_line(sock, BODY_TIMEOUT_S + 30).startswith(b"HTTP/1.1 408")
        finally:
            for sock in slow:
                sock.close()
        assert httpx.get(f"{base}/healthz", timeout=60).status_code == 200


def test_forwarded_for_is_believed_only_from_a_named_proxy(
    cli_env: None,
    db_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    session: Session,
) -> None:
    """Before the fix uvicorn believed X-Forwarded-For from 127.0.0.1: the audit log and
    the login limits took the forged address."""
    _setup(capsys, monkeypatch)
    forged = {"X-Forwarded-For": "203.0.113.9"}
    with _serve(tmp_path, db_url, **POOL) as base, httpx.Client(base_url=base, timeout=60) as c:
        assert _login(c, "vic", "wrong", **forged).status_code == 401
    trusting = ("--forwarded-allow-ips", "127.0.0.1")
    with (
        _serve(tmp_path, db_url, *trusting, **POOL) as base,
        httpx.Client(base_url=base, timeout=60) as c,
    ):
        assert _login(c, "vic", "wrong", **forged).status_code == 401
    session.expire_all()
    actors = list(
        session.scalars(
            select(AuditEvent.actor)
            .where(AuditEvent.action == "web.login_failed")
            .order_by(AuditEvent.id)
        )
    )
    assert actors == ["ip:127.0.0.1", "ip:203.0.113.9"]
