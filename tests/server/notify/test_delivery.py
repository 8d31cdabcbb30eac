"""Delivery against real local receivers, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from server.devices.service import create_device
from server.notify.models import NotifyAttempt, NotifyChannel, NotifyDelivery, NotifyEvent
from server.notify.sender import (
    METRICS,
    SenderConfig,
    check_devices,
    deliver_due,
    escalate_unassigned,
)
from server.notify.service import add_channel, emit
from server.sites.service import create_site
from tests.server.notify.conftest import SECRET, Mailbox, Receiver, free_port, start

NOW_CFG = SenderConfig(base_delay_s=0.0, max_delay_s=0.0)
"""Retries due at once, so a test drives the backoff by passes, not by sleeping."""


def _site(session: Session, name: str = "Sunny Court") -> int:
    site = create_site(session=session, name=name, model_id="buffalo_s")
    session.flush()
    return site.id


def _emit_cases(session: Session, site_id: int, n: int) -> list[str]:
    ids = []
    for i in range(n):
        e = emit(
            session=session,
            site_id=site_id,
            kind="case.opened",
            data={"case_id": 100 + i, "days": 3},
        )
        assert e is not None
        ids.append(e.event.event_id)
    return ids


def _statuses(session: Session) -> list[str]:
    session.expire_all()
    return list(session.scalars(select(NotifyDelivery.status).order_by(NotifyDelivery.id)))


def test_webhook_is_signed_and_each_event_arrives_once(
    session: Session, factory: sessionmaker[Session], receiver: Receiver
) -> None:
    site_id = _site(session)
    add_channel(
        session=session,
        site_id=site_id,
        name="hook",
        kind="webhook",
        url=receiver.url,
        secret=SECRET,
        link_base="https://lintel.example",
    )
    ids = _emit_cases(session, site_id, 3)
    session.commit()
    sent_before = METRICS.sent.labels("webhook")._value.get()

    stats = deliver_due(factory, config=NOW_CFG)

    assert stats.sent == 3
    assert [r.verdict for r in receiver.requests] == ["ok"] * 3
    bodies = [r.json() for r in receiver.requests]
    assert sorted(b["id"] for b in bodies) == sorted(ids)
    assert {r.headers["idempotency-key"] for r in receiver.requests} == set(ids)
    first = bodies[0]
    assert first["kind"] == "case.opened" and first["site"] == "Sunny Court"
    assert first["link"].startswith("https://lintel.example/web/cases/1")
    assert "thumbnail_jpeg_base64" not in first  # privacy: off unless the channel opts in
    assert _statuses(session) == ["sent"] * 3
    assert session.scalar(select(func.count()).select_from(NotifyAttempt)) == 3
    assert METRICS.sent.labels("webhook")._value.get() == sent_before + 3
    # A second pass finds nothing: sent means sent.
    assert deliver_due(factory, config=NOW_CFG).sent == 0
    assert len(receiver.requests) == 3


def test_wrong_secret_is_refused_by_the_receiver_and_retried(
    session: Session, factory: sessionmaker[Session], receiver: Receiver
) -> None:
    site_id = _site(session)
    add_channel(
        session=session,
        site_id=site_id,
        name="hook",
        kind="webhook",
        url=receiver.url,
        secret="not-it",
    )
    _emit_cases(session, site_id, 1)
    session.commit()
    stats = deliver_due(factory, config=NOW_CFG)
    assert stats.sent == 0 and stats.failed_attempts == 1
    assert receiver.requests[0].verdict == "bad signature"
    d = session.scalars(select(NotifyDelivery)).one()
    assert d.status == "pending" and d.attempts == 1 and "bad signature" in (d.last_error or "")


def test_dingtalk_request_is_signed_as_dingtalk_specifies(
    session: Session, factory: sessionmaker[Session], receiver: Receiver
) -> None:
    receiver.mode = "dingtalk"
    site_id = _site(session)
    add_channel(
        session=session,
        site_id=site_id,
        name="dd",
        kind="dingtalk",
        secret=SECRET,
        url=receiver.url + "?access_token=tok123",
        language="zh-CN",
    )
    _emit_cases(session, site_id, 1)
    session.commit()
    assert deliver_due(factory, config=NOW_CFG).sent == 1
    (r,) = receiver.requests
    assert r.verdict == "ok"
    md = r.json()["markdown"]
    assert "新核查任务" in md["title"] and md["text"].startswith("### ")


def test_dingtalk_errcode_is_a_failure(
    session: Session, factory: sessionmaker[Session], receiver: Receiver
) -> None:
    receiver.mode = "dingtalk"
    site_id = _site(session)
    add_channel(
        session=session,
        site_id=site_id,
        name="dd",
        kind="dingtalk",
        secret="wrong",
        url=receiver.url + "?access_token=tok123",
    )
    _emit_cases(session, site_id, 1)
    session.commit()
    stats = deliver_due(factory, config=NOW_CFG)
    assert stats.sent == 0 and stats.failed_attempts == 1
    assert _statuses(session) == ["pending"]


def test_wecom_markdown_to_the_key_url(
    session: Session, factory: sessionmaker[Session], receiver: Receiver
) -> None:
    receiver.mode = "wecom"
    site_id = _site(session)
    add_channel(
        session=session, site_id=site_id, name="wc", kind="wecom", url=receiver.url + "?key=wk-1"
    )
    _emit_cases(session, site_id, 2)
    session.commit()
    assert deliver_due(factory, config=NOW_CFG).sent == 2
    assert [r.verdict for r in receiver.requests] == ["ok", "ok"]
    assert "New case #100" in receiver.requests[0].json()["markdown"]["content"]


def test_email_over_starttls_plain_and_html(
    session: Session, factory: sessionmaker[Session], smtp_server: Mailbox
) -> None:
    site_id = _site(session)
    add_channel(
        session=session,
        site_id=site_id,
        name="mail",
        kind="email",
        url=f"smtp://127.0.0.1:{smtp_server.port}",
        options={
            "from": "lintel@example.com",
            "to": ["manager@example.com"],
            "ca_file": str(smtp_server.cert_file),
        },
        link_base="https://lintel.example",
    )
    (event_id,) = _emit_cases(session, site_id, 1)
    session.commit()
    assert deliver_due(factory, config=NOW_CFG).sent == 1
    assert smtp_server.tls_seen == [True]
    (envelope, msg) = smtp_server.messages[0]
    assert envelope.rcpt_tos == ["manager@example.com"]
    assert msg["Subject"] == "New case #100 at Sunny Court"
    assert msg["X-Lintel-Event-Id"] == event_id
    plain = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    assert plain is not None and html is not None
    assert "https://lintel.example/web/cases/100" in plain.get_content()
    assert '<a href="https://lintel.example/web/cases/100">' in html.get_content()


def test_email_refuses_a_server_it_cannot_verify(
    session: Session, factory: sessionmaker[Session], smtp_server: Mailbox
) -> None:
    site_id = _site(session)
    add_channel(
        session=session,
        site_id=site_id,
        name="mail",
        kind="email",
        url=f"smtp://127.0.0.1:{smtp_server.port}",
        options={
            "from": "lintel@example.com",
            "to": ["manager@example.com"],
        },  # no CA: self-signed fails
    )
    _emit_cases(session, site_id, 1)
    session.commit()
    stats = deliver_due(factory, config=NOW_CFG)
    assert stats.failed_attempts == 1 and smtp_server.messages == []
    assert "CERTIFICATE_VERIFY_FAILED" in (
        session.scalars(select(NotifyDelivery.last_error)).one() or ""
    )


def test_receiver_down_then_up_every_event_arrives_once(
    session: Session, factory: sessionmaker[Session]
) -> None:
    rx = Receiver(port=free_port())  # nothing listens yet: connection refused
    site_id = _site(session)
    add_channel(
        session=session, site_id=site_id, name="hook", kind="webhook", url=rx.url, secret=SECRET
    )
    ids = _emit_cases(session, site_id, 5)
    session.commit()
    cfg = SenderConfig(base_delay_s=0.0, max_delay_s=0.0, failing_after=3)
    for _ in range(3):
        stats = deliver_due(factory, config=cfg)
        assert stats.sent == 0 and stats.failed_attempts == 5
    channel = session.scalars(select(NotifyChannel)).one()
    session.refresh(channel)
    assert channel.failing and channel.consecutive_failures == 15
    start(rx)
    try:
        for _ in range(3):  # bounded; one pass is enough
            if deliver_due(factory, config=cfg).sent == 0:
                break
        received = [r.json()["id"] for r in rx.accepted()]
        assert sorted(received) == sorted(ids)  # every event, once per event id
        assert len(rx.requests) == 5
        session.refresh(channel)
        assert not channel.failing and channel.last_success_at is not None
        assert session.scalar(select(func.count()).select_from(NotifyAttempt)) == 20
        assert _statuses(session) == ["sent"] * 5
    finally:
        assert rx.server is not None
        rx.server.shutdown()
        rx.server.server_close()


def test_backoff_delays_the_next_try_and_gives_up_at_the_limit(
    session: Session, factory: sessionmaker[Session]
) -> None:
    site_id = _site(session)
    add_channel(
        session=session,
        site_id=site_id,
        name="hook",
        kind="webhook",
        url=f"http://127.0.0.1:{free_port()}/",
        secret=SECRET,
    )
    _emit_cases(session, site_id, 1)
    session.commit()
    cfg = SenderConfig(base_delay_s=60.0, max_delay_s=600.0, max_attempts=3)
    t0 = datetime.now(UTC)
    assert deliver_due(factory, config=cfg, now=t0).failed_attempts == 1
    d = session.scalars(select(NotifyDelivery)).one()
    # 60 s jittered to 30..60 s after the attempt: not due right away.
    assert deliver_due(factory, config=cfg, now=t0 + timedelta(seconds=1)).failed_attempts == 0
    session.refresh(d)
    first_wait = d.next_attempt_at
    assert deliver_due(factory, config=cfg, now=t0 + timedelta(hours=1)).failed_attempts == 1
    session.refresh(d)
    assert d.attempts == 2 and d.next_attempt_at > first_wait
    assert deliver_due(factory, config=cfg, now=t0 + timedelta(hours=2)).given_up == 1
    session.refresh(d)
    assert d.status == "failed" and d.attempts == 3


def test_a_rolled_back_cause_leaves_no_event(session: Session, receiver: Receiver) -> None:
    site_id = _site(session)
    add_channel(
        session=session,
        site_id=site_id,
        name="hook",
        kind="webhook",
        url=receiver.url,
        secret=SECRET,
    )
    session.commit()
    device, _token = create_device(session=session, site_id=site_id, name="gate-9")
    emit(session=session, site_id=site_id, kind="device.offline", data={"device": device.name})
    session.rollback()
    assert session.scalar(select(func.count()).select_from(NotifyEvent)) == 0
    assert session.scalar(select(func.count()).select_from(NotifyDelivery)) == 0


def test_quiet_hours_hold_cases_until_morning_but_not_device_alarms(session: Session) -> None:
    site_id = _site(session)
    add_channel(
        session=session,
        site_id=site_id,
        name="hook",
        kind="webhook",
        url="http://127.0.0.1:9/",
        quiet_start="22:00",
        quiet_end="07:00",
    )
    # 23:30 in Asia/Shanghai (the default site zone) is 15:30 UTC.
    night = datetime(2026, 12, 5, 15, 30, tzinfo=UTC)
    emit(session=session, site_id=site_id, kind="case.opened", data={"case_id": 1}, now=night)
    emit(session=session, site_id=site_id, kind="device.offline", data={"device": "g"}, now=night)
    due = dict(
        session.execute(
            select(NotifyEvent.kind, NotifyDelivery.next_attempt_at).join(
                NotifyEvent, NotifyEvent.id == NotifyDelivery.event_id
            )
        ).all()
    )
    assert due["case.opened"] == datetime(2026, 12, 5, 23, 0, tzinfo=UTC)  # 07:00 local
    assert due["device.offline"] == night


def test_digest_groups_a_days_events_into_one_message(
    session: Session, factory: sessionmaker[Session], receiver: Receiver
) -> None:
    site_id = _site(session)
    add_channel(
        session=session,
        site_id=site_id,
        name="hook",
        kind="webhook",
        url=receiver.url,
        secret=SECRET,
        digest=True,
        digest_at="08:00",
    )
    ids = _emit_cases(session, site_id, 3)
    session.commit()
    assert deliver_due(factory, config=NOW_CFG).sent == 0  # held until 08:00 local
    later = datetime.now(UTC) + timedelta(days=1, minutes=1)
    assert deliver_due(factory, config=NOW_CFG, now=later).sent == 3
    (r,) = receiver.requests
    body = r.json()
    assert r.verdict == "ok" and body["kind"] == "digest"
    assert [e["id"] for e in body["data"]["events"]] == ids


def test_device_offline_and_online_once_per_transition(session: Session) -> None:
    site_id = _site(session)
    add_channel(
        session=session, site_id=site_id, name="hook", kind="webhook", url="http://127.0.0.1:9/"
    )
    device, _ = create_device(session=session, site_id=site_id, name="gate-1")
    t0 = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)
    device.last_heartbeat_at = t0
    cfg = SenderConfig(offline_after_min=10)
    assert check_devices(session=session, config=cfg, now=t0 + timedelta(minutes=1)) == 0
    assert check_devices(session=session, config=cfg, now=t0 + timedelta(minutes=11)) == 1
    assert check_devices(session=session, config=cfg, now=t0 + timedelta(minutes=30)) == 0
    device.last_heartbeat_at = t0 + timedelta(minutes=31)
    assert check_devices(session=session, config=cfg, now=t0 + timedelta(minutes=32)) == 1
    kinds = list(session.scalars(select(NotifyEvent.kind).order_by(NotifyEvent.id)))
    assert kinds == ["device.offline", "device.online"]
    assert session.scalar(select(func.count()).select_from(NotifyDelivery)) == 2


def test_unassigned_case_escalates_once_to_the_channel_that_asked(session: Session) -> None:
    from server.cases.models import Case
    from server.clusters.models import UnknownCluster

    site_id = _site(session)
    add_channel(
        session=session, site_id=site_id, name="managers", kind="webhook", url="http://127.0.0.1:9/"
    )
    boss = add_channel(
        session=session,
        site_id=site_id,
        name="supervisor",
        kind="webhook",
        url="http://127.0.0.1:9/",
        events=["case.unassigned"],
    )
    t0 = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)
    cluster = UnknownCluster(
        site_id=site_id, model_id="buffalo_s", first_seen=t0, last_seen=t0, total=b"", exemplars=b""
    )
    session.add(cluster)
    session.flush()
    session.add(
        Case(site_id=site_id, cluster_id=cluster.id, status="open", triggered_at=t0, opened_at=t0)
    )
    session.flush()
    cfg = SenderConfig(unassigned_after_h=24)
    assert escalate_unassigned(session=session, config=cfg, now=t0 + timedelta(hours=23)) == 0
    assert escalate_unassigned(session=session, config=cfg, now=t0 + timedelta(hours=25)) == 1
    assert escalate_unassigned(session=session, config=cfg, now=t0 + timedelta(hours=48)) == 0
    channels = list(session.scalars(select(NotifyDelivery.channel_id)))
    assert channels == [boss.id]


def test_thumbnail_only_for_webhook_and_email(session: Session) -> None:
    from server.notify.errors import ChannelInvalid

    site_id = _site(session)
    with pytest.raises(ChannelInvalid, match="webhook and e-mail"):
        add_channel(
            session=session,
            site_id=site_id,
            name="wc",
            kind="wecom",
            url="http://127.0.0.1:9/?key=k",
            thumbnail=True,
        )


def test_channel_secret_is_sealed_at_rest(session: Session) -> None:
    site_id = _site(session)
    add_channel(
        session=session,
        site_id=site_id,
        name="hook",
        kind="webhook",
        url="http://127.0.0.1:9/",
        secret=SECRET,
    )
    session.commit()
    raw = session.execute(select(NotifyChannel.secret_sealed)).scalar_one()
    assert raw is not None and SECRET.encode() not in raw


def test_run_step_counts_failures_and_sets_the_pending_gauge(
    session: Session, factory: sessionmaker[Session]
) -> None:
    from server.notify.sender import run_step

    site_id = _site(session)
    add_channel(
        session=session,
        site_id=site_id,
        name="hook",
        kind="webhook",
        url=f"http://127.0.0.1:{free_port()}/",
        secret=SECRET,
    )
    _emit_cases(session, site_id, 2)
    session.commit()
    failed_before = METRICS.failed.labels("webhook")._value.get()
    stats = run_step(factory, config=NOW_CFG)
    assert stats.failed_attempts == 2
    assert METRICS.failed.labels("webhook")._value.get() == failed_before + 2
    assert METRICS.pending._value.get() == 2


def test_two_senders_never_take_the_same_delivery(
    session: Session, factory: sessionmaker[Session]
) -> None:
    from server.notify.sender import claim

    if session.get_bind().dialect.name != "postgresql":
        pytest.skip("row locks are PostgreSQL's; SQLite runs one worker")
    site_id = _site(session)
    add_channel(
        session=session, site_id=site_id, name="hook", kind="webhook", url="http://127.0.0.1:9/"
    )
    _emit_cases(session, site_id, 3)
    session.commit()
    cfg = SenderConfig(batch=2)
    now = datetime.now(UTC)
    with factory() as a, factory() as b:
        first = claim(session=a, config=cfg, now=now)  # holds its rows until commit
        # Bounded: a sender that waited for a's rows instead of skipping them fails here.
        b.execute(text("SET LOCAL lock_timeout = '2s'"))
        second = claim(session=b, config=cfg, now=now)
        assert len(first) == 2 and len(second) == 1 and not set(first) & set(second)
        a.commit()
        b.commit()
    # Leased: nobody takes them again before the lease ends.
    with factory() as c:
        assert claim(session=c, config=cfg, now=now + timedelta(seconds=1)) == []
