"""``lintel-server notify ...`` and the worker's sender, killed mid-delivery."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from server.audit.models import AuditEvent
from server.cli import main
from server.db import make_session_factory
from server.notify.models import NotifyAttempt, NotifyChannel, NotifyDelivery
from server.notify.service import add_channel, emit
from server.privacy.crypto import CropKeyring, decode_key, install_keyring, new_key_text
from server.sites.service import create_site
from tests.server.conftest import TEST_SECRET
from tests.server.notify.conftest import SECRET, Receiver, free_port


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, db_url: str, engine: Engine, tmp_path: Path) -> None:
    monkeypatch.setenv("LINTEL_DATABASE_URL", db_url)
    monkeypatch.setenv("LINTEL_ENV", "test")
    monkeypatch.setenv("LINTEL_SECRET_KEY", TEST_SECRET)
    monkeypatch.setenv("LINTEL_DATA_DIR", str(tmp_path))


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_notify_add_list_test_against_a_verifying_receiver(
    cli_env: None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    receiver: Receiver,
    session: Session,
) -> None:
    assert _run(capsys, "site", "add", "S")[0] == 0
    monkeypatch.setattr("sys.stdin", io.StringIO(SECRET + "\n"))
    rc, out, err = _run(
        capsys,
        "notify",
        "add",
        "--site",
        "S",
        "--kind",
        "webhook",
        "--url",
        receiver.url + "?t=x",
        "--secret-stdin",
        "--language",
        "zh-CN",
    )
    assert rc == 0, err
    assert SECRET not in out
    rc, out, _ = _run(capsys, "notify", "list", "--json")
    (row,) = json.loads(out)
    assert row["has_secret"] and SECRET not in out
    assert row["url"].endswith("/hook?…")  # the query (a robot's key) is not shown either

    rc, out, err = _run(capsys, "notify", "test", "--site", "S")
    assert rc == 0, err
    assert "OK (200)" in out and '"verdict": "ok"' in out
    assert [r.verdict for r in receiver.requests] == ["ok"]
    assert "测试" in receiver.requests[0].json()["title"]

    receiver.mode = "fail500"
    rc, out, err = _run(capsys, "notify", "test", "--site", "S")
    assert rc == 1
    assert "FAILED (500)" in err and "receiver broken" in err and "1 of 1 channel(s) failed" in err

    assert _run(capsys, "notify", "disable", "webhook", "--site", "S")[0] == 0
    assert _run(capsys, "notify", "remove", "webhook", "--site", "S")[0] == 0
    actions = list(session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))
    assert actions == [
        "site.add",
        "notify.add",
        "notify.test",
        "notify.test",
        "notify.disable",
        "notify.remove",
    ]
    assert SECRET not in str(session.execute(select(AuditEvent.detail)).all())


def test_notify_add_refuses_clearly(
    cli_env: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _run(capsys, "site", "add", "S")
    rc, _, err = _run(
        capsys, "notify", "add", "--site", "S", "--kind", "dingtalk", "--url", "http://x/"
    )
    assert rc == 1 and "signing secret" in err
    monkeypatch.delenv("NO_SUCH_VAR", raising=False)
    rc, _, err = _run(
        capsys,
        "notify",
        "add",
        "--site",
        "S",
        "--kind",
        "webhook",
        "--url",
        "http://x/",
        "--secret-env",
        "NO_SUCH_VAR",
    )
    assert rc == 1 and "NO_SUCH_VAR" in err
    rc, _, err = _run(
        capsys, "notify", "add", "--site", "S", "--kind", "email", "--url", "smtp://h:587"
    )
    assert rc == 1 and "--from" in err
    rc, _, err = _run(capsys, "notify", "test", "--site", "S")
    assert rc == 1 and "no enabled notification channel" in err


def _worker(
    db_url: str, tmp_path: Path, key: str, log: Path, *extra: str
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINTEL_")}
    env |= {
        "LINTEL_DATABASE_URL": db_url,
        "LINTEL_ENV": "test",
        "LINTEL_SECRET_KEY": TEST_SECRET,
        "LINTEL_DATA_DIR": str(tmp_path),
        "LINTEL_CROP_KEY": key,
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "server.cli",
                "worker",
                "--poll",
                "0.1",
                "--notify-lease-s",
                "2",
                "--notify-base-delay-s",
                "0",
                *extra,
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_worker_killed_mid_delivery_loses_nothing(
    db_url: str, engine: Engine, session: Session, receiver: Receiver, tmp_path: Path
) -> None:
    key = new_key_text()
    # The channel's secret is sealed with the key the worker processes will have.
    install_keyring(CropKeyring.from_keys(decode_key(key, source="test")))
    site = create_site(session=session, name="S", model_id="buffalo_s")
    add_channel(
        session=session,
        site_id=site.id,
        name="hook",
        kind="webhook",
        url=receiver.url,
        secret=SECRET,
    )
    emitted = emit(session=session, site_id=site.id, kind="case.opened", data={"case_id": 7})
    assert emitted is not None
    session.commit()
    event_id = emitted.event.event_id

    receiver.stall = threading.Event()  # hold the first request open
    log = tmp_path / "worker.log"
    first = _worker(db_url, tmp_path, key, log)
    try:
        assert receiver.arrived.wait(60), log.read_text(errors="replace")
        first.send_signal(signal.SIGKILL)  # mid-delivery: sent, no answer read, nothing recorded
        first.wait(timeout=20)
    finally:
        if first.poll() is None:
            first.kill()
    session.expire_all()
    d = session.scalars(select(NotifyDelivery)).one()
    assert d.status == "pending" and d.attempts == 0
    receiver.stall.set()  # the receiver answers from now on

    metrics_port = free_port()
    second = _worker(db_url, tmp_path, key, log, "--metrics-port", str(metrics_port))
    try:
        factory = make_session_factory(engine)
        for _ in range(300):  # bounded: 30 s
            with factory() as s:
                if s.scalar(select(NotifyDelivery.status)) == "sent":
                    break
            assert second.poll() is None, log.read_text(errors="replace")
            time.sleep(0.1)
        else:
            pytest.fail("the second worker did not deliver: " + log.read_text(errors="replace"))
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        assert 'lintel_notify_sent_total{kind="webhook"} 1.0' in scraped
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
    session.expire_all()
    # Delivered: the receiver saw the event (twice, the killed try included) under one id,
    # which is what X-Lintel-Event-Id is for.
    assert {r.json()["id"] for r in receiver.accepted()} == {event_id}
    assert len(receiver.requests) == 2
    attempts = session.scalars(select(NotifyAttempt)).all()
    assert [a.ok for a in attempts] == [True]
    assert session.scalars(select(NotifyChannel.failing)).one() is False
