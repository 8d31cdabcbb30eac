"""Revoking credentials from the shell (issue 18, finding 3), on both databases.

Each command is run through ``lintel-server``'s ``main`` against the test
database; the tokens are then presented to the real app, so "revoked" means
the server answers 401, not just that a row changed.
"""

from __future__ import annotations

import io
import json

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from edge.wire import API_PREFIX
from server.audit.models import AuditEvent
from server.cli import main
from server.security import verify_password
from server.users.models import User
from tests.server.conftest import TEST_SECRET

GALLERY = f"{API_PREFIX}/device/gallery"


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, db_url: str, engine: object) -> None:
    monkeypatch.setenv("LINTEL_DATABASE_URL", db_url)
    monkeypatch.setenv("LINTEL_ENV", "test")
    monkeypatch.setenv("LINTEL_SECRET_KEY", TEST_SECRET)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _actions(session: Session) -> list[str]:
    session.expire_all()
    return list(session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))


def _device(capsys: pytest.CaptureFixture[str], site: str = "S", name: str = "gate") -> dict:
    rc, out, _ = _run(capsys, "device", "add", "--site", site, "--name", name, "--json")
    assert rc == 0
    created: dict = json.loads(out)
    return created


def _user(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    name: str = "alice",
    password: str = "correct horse",
) -> str:
    monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
    argv = ("user", "add", name, "--role", "manager", "--site", "S", "--password-stdin", "--json")
    rc, out, err = _run(capsys, *argv)
    assert rc == 0, err
    token: str = json.loads(out)["api_token"]
    return token


def test_a_disabled_device_is_refused_and_enable_lets_it_back(
    cli_env: None, capsys: pytest.CaptureFixture[str], client: httpx.Client, session: Session
) -> None:
    _run(capsys, "site", "add", "S")
    dev = _device(capsys)
    assert client.get(GALLERY, headers=_bearer(dev["token"])).status_code == 200
    rc, out, _ = _run(capsys, "device", "disable", "gate")
    assert rc == 0 and "disabled" in out
    assert client.get(GALLERY, headers=_bearer(dev["token"])).status_code == 401
    assert _run(capsys, "device", "enable", str(dev["device_id"]))[0] == 0
    assert client.get(GALLERY, headers=_bearer(dev["token"])).status_code == 200
    assert _actions(session)[-3:] == ["device.disable", "device.enable", "gallery.download"]


def test_rotate_token_prints_a_new_token_once_and_the_old_one_stops(
    cli_env: None, capsys: pytest.CaptureFixture[str], client: httpx.Client, session: Session
) -> None:
    _run(capsys, "site", "add", "S")
    old = _device(capsys)["token"]
    rc, out, _ = _run(capsys, "device", "rotate-token", "gate", "--site", "S", "--json")
    assert rc == 0
    rotated = json.loads(out)
    assert set(rotated) == {"device_id", "token"} and rotated["token"] != old
    assert client.get(GALLERY, headers=_bearer(old)).status_code == 401
    assert client.get(GALLERY, headers=_bearer(rotated["token"])).status_code == 200
    # The plain form prints it too; neither token is ever stored or audited in clear.
    rc, out, _ = _run(capsys, "device", "rotate-token", "gate")
    newest = out.strip().rsplit(" ", 1)[-1]
    assert rc == 0 and newest.startswith("ltd_")
    assert client.get(GALLERY, headers=_bearer(rotated["token"])).status_code == 401
    assert client.get(GALLERY, headers=_bearer(newest)).status_code == 200
    details = str(session.execute(select(AuditEvent.detail)).all())
    assert rotated["token"] not in details and newest not in details
    assert _actions(session).count("device.rotate_token") == 2


def test_enrol_code_from_the_shell_is_traded_once_for_a_token(
    cli_env: None, capsys: pytest.CaptureFixture[str], client: httpx.Client, session: Session
) -> None:
    _run(capsys, "site", "add", "S")
    old = _device(capsys)["token"]
    rc, out, _ = _run(capsys, "device", "enrol-code", "gate", "--json")
    assert rc == 0
    code = json.loads(out)["code"]
    r = client.post(f"{API_PREFIX}/device/enrol", json={"code": code})
    assert r.status_code == 200
    assert client.get(GALLERY, headers=_bearer(r.json()["token"])).status_code == 200
    assert client.get(GALLERY, headers=_bearer(old)).status_code == 401
    assert client.post(f"{API_PREFIX}/device/enrol", json={"code": code}).status_code == 422
    assert code not in str(session.execute(select(AuditEvent.detail)).all())


def test_device_commands_name_what_is_wrong(
    cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    _run(capsys, "site", "add", "S")
    _run(capsys, "site", "add", "T")
    _device(capsys, "S", "gate")
    _device(capsys, "T", "gate")
    rc, _, err = _run(capsys, "device", "disable", "nowhere")
    assert rc == 1 and "'nowhere' does not exist" in err
    rc, _, err = _run(capsys, "device", "disable", "gate")
    assert rc == 1 and "--site" in err
    assert _run(capsys, "device", "disable", "gate", "--site", "T")[0] == 0


def test_logout_all_ends_api_tokens_too(
    cli_env: None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    client: httpx.Client,
    session: Session,
) -> None:
    """The guide's remedy for a leaver: before the fix the API token still answered 200."""
    _run(capsys, "site", "add", "S")
    token = _user(capsys, monkeypatch)
    cases = f"{API_PREFIX}/cases?site=S"
    assert client.get(cases, headers=_bearer(token)).status_code == 200
    rc, out, _ = _run(capsys, "user", "logout-all", "alice")
    assert rc == 0 and "1 API token(s)" in out
    assert client.get(cases, headers=_bearer(token)).status_code == 401
    event = session.scalar(select(AuditEvent).where(AuditEvent.action == "user.logout_all"))
    assert event is not None and event.detail == {"sessions": 0, "api_tokens": 1}


def test_disable_refuses_the_token_and_enable_revives_no_credential(
    cli_env: None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    client: httpx.Client,
    session: Session,
) -> None:
    _run(capsys, "site", "add", "S")
    token = _user(capsys, monkeypatch)
    cases = f"{API_PREFIX}/cases?site=S"
    assert _run(capsys, "user", "disable", "alice")[0] == 0
    assert client.get(cases, headers=_bearer(token)).status_code == 401
    assert _run(capsys, "user", "enable", "alice")[0] == 0
    # A token copied before the disable stays dead after the enable.
    assert client.get(cases, headers=_bearer(token)).status_code == 401
    user = session.scalar(select(User).where(User.username == "alice"))
    assert user is not None and not user.disabled
    assert _actions(session)[-2:] == ["user.disable", "user.enable"]


def test_revoke_tokens_ends_every_token_of_the_user_only(
    cli_env: None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    client: httpx.Client,
) -> None:
    _run(capsys, "site", "add", "S")
    alice = _user(capsys, monkeypatch, "alice")
    bob = _user(capsys, monkeypatch, "bob")
    cases = f"{API_PREFIX}/cases?site=S"
    rc, out, _ = _run(capsys, "user", "revoke-tokens", "alice")
    assert rc == 0 and "deleted 1 API token(s)" in out
    assert client.get(cases, headers=_bearer(alice)).status_code == 401
    assert client.get(cases, headers=_bearer(bob)).status_code == 200
    assert _run(capsys, "user", "revoke-tokens", "nobody")[0] == 1


def test_set_password_reads_stdin_and_applies_the_minimum_length(
    cli_env: None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    session: Session,
) -> None:
    _run(capsys, "site", "add", "S")
    _user(capsys, monkeypatch)
    monkeypatch.setattr("sys.stdin", io.StringIO("a much longer phrase\n"))
    rc, out, _ = _run(capsys, "user", "set-password", "alice", "--password-stdin")
    assert rc == 0 and "changed" in out
    user = session.scalar(select(User).where(User.username == "alice"))
    assert user is not None and user.password_hash is not None
    assert verify_password(user.password_hash, "a much longer phrase")
    # An empty line changes nothing.
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    rc, _, err = _run(capsys, "user", "set-password", "alice", "--password-stdin")
    assert rc == 1 and "empty password" in err
    # A policy set by the operator applies to set-password and to user add.
    monkeypatch.setenv("LINTEL_PASSWORD_MIN_LENGTH", "16")
    monkeypatch.setattr("sys.stdin", io.StringIO("too short pw\n"))
    rc, _, err = _run(capsys, "user", "set-password", "alice", "--password-stdin")
    assert rc == 1 and "at least 16" in err
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    rc, _, err = _run(
        capsys, "user", "add", "carol", "--role", "admin", "--password-stdin", "--json"
    )
    assert rc == 1 and "at least 16" in err
    session.expire_all()
    assert verify_password(user.password_hash, "a much longer phrase")
    assert _actions(session).count("user.set_password") == 1


def test_prod_asks_for_twelve_characters_dev_and_test_do_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from server.settings import Settings

    monkeypatch.delenv("LINTEL_PASSWORD_MIN_LENGTH", raising=False)
    key = "k" * 43
    assert Settings(env="prod", secret_key=key).min_password_length == 12  # type: ignore[arg-type]
    assert Settings(env="test", secret_key=key).min_password_length == 1  # type: ignore[arg-type]
    assert Settings(env="dev").min_password_length == 1
