"""``lintel-server`` admin commands against both databases."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from edge.wire import API_PREFIX
from server.audit.models import AuditEvent
from server.cli import main
from server.security import verify_password
from server.users.models import ApiToken, User, UserSite
from tests.server.conftest import TEST_SECRET


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, db_url: str, engine: object) -> None:
    monkeypatch.setenv("LINTEL_DATABASE_URL", db_url)
    monkeypatch.setenv("LINTEL_ENV", "test")
    monkeypatch.setenv("LINTEL_SECRET_KEY", TEST_SECRET)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_device_add_prints_a_working_token(
    cli_env: None, capsys: pytest.CaptureFixture[str], client: httpx.Client, session: Session
) -> None:
    rc, out, _ = _run(capsys, "site", "add", "Sunny Court", "--json")
    assert rc == 0
    site = json.loads(out)
    rc, out, _ = _run(capsys, "device", "add", "--site", "Sunny Court", "--name", "gate", "--json")
    assert rc == 0
    created = json.loads(out)
    assert set(created) == {"device_id", "token"}
    r = client.get(
        f"{API_PREFIX}/device/gallery", headers={"Authorization": f"Bearer {created['token']}"}
    )
    assert r.status_code == 200 and r.json()["site_id"] == site["site_id"]
    # Never stored in plain text.
    assert created["token"] not in str(session.execute(select(AuditEvent.detail)).all())
    actions = session.scalars(select(AuditEvent.action).order_by(AuditEvent.id))
    assert list(actions) == ["site.add", "device.add", "gallery.download"]


def test_device_add_errors(cli_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _run(capsys, "device", "add", "--site", "nowhere", "--name", "gate")
    assert rc == 1 and "nowhere" in err
    _run(capsys, "site", "add", "S")
    assert _run(capsys, "device", "add", "--site", "S", "--name", "g")[0] == 0
    rc, _, err = _run(capsys, "device", "add", "--site", "S", "--name", "g")
    assert rc == 1 and "already exists" in err


def test_user_add_hashes_password_and_scopes_sites(
    cli_env: None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    session: Session,
) -> None:
    _run(capsys, "site", "add", "S1")
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse\n"))
    rc, out, _ = _run(
        capsys,
        "user",
        "add",
        "alice",
        "--role",
        "manager",
        "--site",
        "S1",
        "--password-stdin",
        "--json",
    )
    assert rc == 0
    info = json.loads(out)
    assert info["api_token"].startswith("ltu_")
    user = session.scalar(select(User).where(User.username == "alice"))
    assert user is not None and user.password_hash is not None
    assert user.password_hash.startswith("$argon2")
    assert verify_password(user.password_hash, "correct horse")
    assert not verify_password(user.password_hash, "wrong")
    assert session.scalar(select(UserSite.site_id).where(UserSite.user_id == user.id)) is not None
    assert session.scalar(select(ApiToken.token_hash)) != info["api_token"]
    # A manager without a site is refused.
    rc, _, err = _run(capsys, "user", "add", "bob", "--role", "manager")
    assert rc == 1 and "--site" in err


def test_stats_json_has_every_key(cli_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    _run(capsys, "site", "add", "S1")
    rc, out, _ = _run(capsys, "stats", "--site", "S1", "--json")
    assert rc == 0
    stats = json.loads(out)
    for key in (
        "units",
        "occupants",
        "templates",
        "sightings_known",
        "sightings_unknown",
        "clusters",
        "open_cases",
    ):
        assert stats[key] == 0


def test_db_upgrade_reports_revision(cli_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _run(capsys, "db", "upgrade")
    assert rc == 0 and out.startswith("revision: 0")


def test_refuses_default_secret_outside_dev(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LINTEL_ENV", "prod")
    monkeypatch.delenv("LINTEL_SECRET_KEY", raising=False)
    rc, _, err = _run(capsys, "stats", "--json")
    assert rc == 2 and "LINTEL_SECRET_KEY" in err


def test_run_serves_the_api_over_http(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``lintel-server run`` on a fresh SQLite data dir, used by the edge client over TCP."""
    from edge.client import LintelClient
    from edge.wire import Heartbeat

    for key in [k for k in os.environ if k.startswith("LINTEL_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("LINTEL_DATA_DIR", str(tmp_path))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "run", "--port", str(port)],
            env={**os.environ},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            assert proc.poll() is None, log.read_text(errors="replace")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            pytest.fail("server did not come up")
        _run(capsys, "site", "add", "S")
        token = json.loads(_run(capsys, "device", "add", "--site", "S", "--name", "g", "--json")[1])
        with LintelClient(base, token["token"]) as c:
            assert c.heartbeat(Heartbeat(version="t")).gallery_version == 1
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    # The default log level tells an operator (docker logs, journalctl) it is up and serving.
    text = log.read_text(errors="replace")
    assert "Uvicorn running on" in text
    assert '"GET /healthz HTTP/1.1" 200' in text


def test_unreachable_database_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("LINTEL_DATABASE_URL", f"postgresql+psycopg://nobody@127.0.0.1:{port}/x")
    monkeypatch.setenv("LINTEL_ENV", "dev")
    rc, _, err = _run(capsys, "stats", "--json")
    assert rc == 2
    assert err.startswith("lintel-server: cannot use the database:")
    assert "Traceback" not in err
