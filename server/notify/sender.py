"""The worker's notification step: watch devices and waiting cases, deliver the outbox.

Delivery is at-least-once with the event id as the receiver's idempotency key:

1. **claim** (one short transaction): due ``pending`` deliveries are taken with
   ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (several workers never take the same
   one), and their ``next_attempt_at`` is pushed a *lease* ahead and committed;
2. **send** outside any transaction (a slow receiver holds no database lock);
3. **record** (one transaction per delivery): the attempt, and ``sent`` or the
   next try after an exponential backoff with jitter; ``failed`` after the last.

A worker killed between 1 and 3 leaves the delivery pending with a lease that
expires, and the next worker sends it again: nothing is lost; a receiver that
already had it sees the same ``X-Lintel-Event-Id`` twice and drops the second.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from server.cases.enums import CaseStatus
from server.cases.models import Case
from server.db import session_scope, utcnow
from server.devices.models import Device
from server.metrics import WORKER_REGISTRY
from server.notify.channels import Answer, Outgoing, send
from server.notify.enums import DeliveryStatus
from server.notify.messages import Message, render, render_digest
from server.notify.models import (
    NotifyAttempt,
    NotifyChannel,
    NotifyDelivery,
    NotifyDeviceState,
    NotifyEvent,
)
from server.notify.service import channel_secret, emit, pending_count
from server.sightings import crops
from server.sightings.models import Sighting
from server.sites.models import Site

log = logging.getLogger(__name__)

NOTIFY_LOCK_KEY = 7411094
"""PostgreSQL advisory lock of the device/escalation check (one worker decides transitions)."""


class SenderConfig(BaseModel):
    """The sender's timing; every value bounded (the worker's CLI sets some)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch: int = Field(default=50, ge=1, le=1000, description="deliveries claimed per pass")
    lease_s: float = Field(
        default=120.0,
        ge=1.0,
        le=3600.0,
        description="how long a claimed delivery is left alone before another worker may "
        "retry it (longer than one send: HTTP 10 s, SMTP 20 s)",
    )
    base_delay_s: float = Field(
        default=30.0, ge=0.0, le=3600.0, description="backoff after the first failure"
    )
    max_delay_s: float = Field(default=3600.0, ge=0.0, le=86400.0, description="longest backoff")
    max_attempts: int = Field(
        default=60,
        ge=1,
        le=1000,
        description="tries before a delivery is given up as failed (~2.5 days at 1 h)",
    )
    failing_after: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="consecutive failures that mark a channel failing (admin page)",
    )
    offline_after_min: float = Field(
        default=10.0,
        ge=0.1,
        le=10080.0,
        description="minutes without a heartbeat before device.offline",
    )
    unassigned_after_h: float = Field(
        default=24.0,
        ge=0.0,
        le=720.0,
        description="hours a case may stay open and unassigned before case.unassigned",
    )


@dataclass(frozen=True)
class NotifyMetrics:
    """Sender counters; the worker serves them with ``--metrics-port``."""

    registry: CollectorRegistry
    sent: Counter
    failed: Counter
    pending: Gauge


def make_metrics(reg: CollectorRegistry | None = None) -> NotifyMetrics:
    """The sender's metrics in ``reg`` (a fresh registry when None)."""
    reg = CollectorRegistry() if reg is None else reg
    return NotifyMetrics(
        registry=reg,
        sent=Counter(
            "lintel_notify_sent",
            "Notification deliveries accepted, by channel kind.",
            ["kind"],
            registry=reg,
        ),
        failed=Counter(
            "lintel_notify_failed",
            "Notification attempts that failed, by channel kind.",
            ["kind"],
            registry=reg,
        ),
        pending=Gauge(
            "lintel_notify_pending", "Deliveries waiting to be sent (incl. held).", registry=reg
        ),
    )


METRICS = make_metrics(WORKER_REGISTRY)
"""This process's sender metrics, beside the worker's other counters (``--metrics-port``)."""


def backoff(attempts: int, config: SenderConfig, rng: random.Random | None = None) -> float:
    """Seconds before try ``attempts + 1``: doubling from the base, capped, jittered 50-100 %.

    The jitter spreads retries of many deliveries to one receiver that just came back.
    """
    raw = min(config.max_delay_s, config.base_delay_s * 2 ** max(attempts - 1, 0))
    return raw * (0.5 + 0.5 * (rng or random).random())


# -- causes the worker notices itself --------------------------------------------------------
def check_devices(*, session: Session, config: SenderConfig, now: datetime | None = None) -> int:
    """Emit device.offline / device.online once per transition; returns events written."""
    wall = now or utcnow()
    limit = wall - timedelta(minutes=config.offline_after_min)
    written = 0
    devices = session.scalars(
        select(Device).where(Device.disabled.is_(False), Device.last_heartbeat_at.is_not(None))
    ).all()
    states = {s.device_id: s for s in session.scalars(select(NotifyDeviceState))}
    for device in devices:
        assert device.last_heartbeat_at is not None
        offline = device.last_heartbeat_at < limit
        state = states.get(device.id)
        if state is None:
            # First sight: remember the state; a box that was never seen online is not news.
            state = NotifyDeviceState(device_id=device.id, offline=False, changed_at=wall)
            session.add(state)
            session.flush()
        if state.offline == offline:
            continue
        state.offline = offline
        state.changed_at = wall
        kind = "device.offline" if offline else "device.online"
        # The key names the transition (the last heartbeat seen), so a second worker
        # deciding the same thing at the same moment writes nothing.
        key = f"{kind}:{device.id}:{device.last_heartbeat_at.isoformat()}"
        data = {
            "device_id": device.id,
            "device": device.name,
            "last_heartbeat": device.last_heartbeat_at.strftime("%Y-%m-%d %H:%M"),
        }
        if emit(
            session=session, site_id=device.site_id, kind=kind, data=data, dedupe_key=key, now=wall
        ):
            written += 1
    session.flush()
    return written


def escalate_unassigned(
    *, session: Session, config: SenderConfig, now: datetime | None = None
) -> int:
    """Emit case.unassigned once per case open and unassigned for longer than the limit."""
    wall = now or utcnow()
    cutoff = wall - timedelta(hours=config.unassigned_after_h)
    written = 0
    cases = session.scalars(
        select(Case).where(
            Case.status == CaseStatus.OPEN, Case.assigned_to.is_(None), Case.opened_at < cutoff
        )
    )
    for case in cases:
        data = {"case_id": case.id, "hours": round(config.unassigned_after_h, 1)}
        key = f"case.unassigned:{case.id}"
        if emit(
            session=session,
            site_id=case.site_id,
            kind="case.unassigned",
            data=data,
            dedupe_key=key,
            now=wall,
        ):
            written += 1
    return written


# -- delivering ----------------------------------------------------------------------------
@dataclass
class SendStats:
    """What one delivery pass did."""

    sent: int = 0
    failed_attempts: int = 0
    given_up: int = 0
    answers: list[str] = field(default_factory=list)


def claim(*, session: Session, config: SenderConfig, now: datetime) -> list[int]:
    """Take due deliveries for ``lease_s`` (SKIP LOCKED on PostgreSQL); the caller commits."""
    stmt = (
        select(NotifyDelivery)
        .join(NotifyChannel, NotifyChannel.id == NotifyDelivery.channel_id)
        .where(
            NotifyDelivery.status == DeliveryStatus.PENDING,
            NotifyDelivery.next_attempt_at <= now,
            NotifyChannel.enabled.is_(True),
        )
        .order_by(NotifyDelivery.next_attempt_at, NotifyDelivery.id)
        .limit(config.batch)
    )
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(of=NotifyDelivery, skip_locked=True)
    rows = session.scalars(stmt).all()
    for row in rows:
        row.next_attempt_at = now + timedelta(seconds=config.lease_s)
    session.flush()
    return [r.id for r in rows]


@dataclass(frozen=True)
class _Job:
    delivery_ids: list[int]
    channel_id: int
    kind: str
    url: str
    secret: str | None
    options: dict[str, object]
    out: Outgoing


def _outgoing(session: Session, channel: NotifyChannel, event: NotifyEvent, site: str) -> Outgoing:
    message = render(
        kind=event.kind,
        data=event.data,
        site=site,
        language=channel.language,
        link_base=channel.link_base,
    )
    thumb = None
    if channel.thumbnail and "cluster_id" in event.data:
        thumb = _thumbnail(session, int(event.data["cluster_id"]))
    return Outgoing(
        event_id=event.event_id,
        kind=event.kind,
        site=site,
        created_at=event.created_at.isoformat(),
        data=event.data,
        message=message,
        thumbnail_jpeg=thumb,
    )


def _thumbnail(session: Session, cluster_id: int) -> bytes | None:
    """The best crop of the cluster (opt-in channels only), or None when it has none left."""
    sighting_id = session.scalar(
        select(Sighting.id)
        .where(Sighting.cluster_id == cluster_id, Sighting.has_crop.is_(True))
        .order_by(Sighting.quality.desc(), Sighting.id)
        .limit(1)
    )
    if sighting_id is None:
        return None
    return crops.get(session=session, sighting_id=sighting_id)


def _jobs(session: Session, ids: list[int]) -> list[_Job]:
    deliveries = session.scalars(
        select(NotifyDelivery).where(NotifyDelivery.id.in_(ids)).order_by(NotifyDelivery.id)
    )
    by_digest: dict[int, list[tuple[NotifyDelivery, NotifyEvent]]] = defaultdict(list)
    jobs: list[_Job] = []
    for d in deliveries:
        channel = session.get(NotifyChannel, d.channel_id)
        event = session.get(NotifyEvent, d.event_id)
        assert channel is not None and event is not None
        if d.digest:
            by_digest[channel.id].append((d, event))
            continue
        site = session.get(Site, event.site_id)
        out = _outgoing(session, channel, event, site.name if site else str(event.site_id))
        jobs.append(
            _Job(
                [d.id],
                channel.id,
                channel.kind,
                channel.url,
                channel_secret(channel),
                channel.options,
                out,
            )
        )
    for channel_id, items in by_digest.items():
        channel = session.get(NotifyChannel, channel_id)
        assert channel is not None
        site = session.get(Site, channel.site_id)
        name = site.name if site else str(channel.site_id)
        msgs: list[Message] = [
            render(
                kind=e.kind,
                data=e.data,
                site=name,
                language=channel.language,
                link_base=channel.link_base,
            )
            for _d, e in items
        ]
        digest = render_digest(
            site=name, language=channel.language, messages=msgs, link_base=channel.link_base
        )
        first = items[0][1]
        out = Outgoing(
            # A digest's id is its first event's: a resent digest is recognisably the same.
            event_id=first.event_id,
            kind="digest",
            site=name,
            created_at=first.created_at.isoformat(),
            data={"events": [{"id": e.event_id, "kind": e.kind, **e.data} for _d, e in items]},
            message=digest,
        )
        secret = channel_secret(channel)
        jobs.append(
            _Job(
                [d.id for d, _e in items],
                channel.id,
                channel.kind,
                channel.url,
                secret,
                channel.options,
                out,
            )
        )
    return jobs


def _record(
    factory: sessionmaker[Session],
    job: _Job,
    answer: Answer,
    config: SenderConfig,
    stats: SendStats,
) -> None:
    now = utcnow()
    with session_scope(factory) as session:
        channel = session.get(NotifyChannel, job.channel_id)
        for delivery_id in job.delivery_ids:
            d = session.get(NotifyDelivery, delivery_id)
            if d is None or d.status != DeliveryStatus.PENDING:
                continue  # removed with its channel meanwhile
            d.attempts += 1
            session.add(
                NotifyAttempt(
                    delivery_id=d.id,
                    at=now,
                    ok=answer.ok,
                    status_code=answer.status_code,
                    answer=answer.text,
                )
            )
            if answer.ok:
                d.status, d.sent_at, d.last_error = DeliveryStatus.SENT, now, None
            elif d.attempts >= config.max_attempts:
                d.status, d.last_error = DeliveryStatus.FAILED, answer.text
                stats.given_up += 1
            else:
                d.last_error = answer.text
                d.next_attempt_at = now + timedelta(seconds=backoff(d.attempts, config))
        if channel is not None:
            if answer.ok:
                channel.consecutive_failures = 0
                channel.failing = False
                channel.last_success_at = now
            else:
                channel.consecutive_failures += 1
                channel.last_error = answer.text
                if channel.consecutive_failures >= config.failing_after and not channel.failing:
                    channel.failing = True
                    log.warning(
                        "notification channel %s (%s) is failing: %s",
                        channel.id,
                        channel.name,
                        answer.text,
                    )
    if answer.ok:
        stats.sent += len(job.delivery_ids)
        METRICS.sent.labels(job.kind).inc(len(job.delivery_ids))
    else:
        stats.failed_attempts += 1
        METRICS.failed.labels(job.kind).inc()


def deliver_due(
    factory: sessionmaker[Session],
    *,
    config: SenderConfig | None = None,
    client: httpx.Client | None = None,
    now: datetime | None = None,
) -> SendStats:
    """One delivery pass: claim what is due, send it, record each attempt."""
    cfg = config or SenderConfig()
    stats = SendStats()
    with session_scope(factory) as session:
        ids = claim(session=session, config=cfg, now=now or utcnow())
        jobs = _jobs(session, ids) if ids else []
    if not jobs:
        return stats
    own = client is None
    http = client or httpx.Client(trust_env=False)
    try:
        for job in jobs:
            try:
                answer = send(
                    http,
                    kind=job.kind,
                    url=job.url,
                    secret=job.secret,
                    options=dict(job.options),
                    out=job.out,
                )
            except Exception as exc:  # a bug in one channel must not stop the others
                log.exception("sending to channel %s failed unexpectedly", job.channel_id)
                answer = Answer(ok=False, status_code=None, text=f"{type(exc).__name__}: {exc}")
            stats.answers.append(answer.text)
            _record(factory, job, answer, cfg, stats)
    finally:
        if own:
            http.close()
    return stats


def run_step(
    factory: sessionmaker[Session], *, config: SenderConfig | None = None, check_causes: bool = True
) -> SendStats:
    """The worker's notification step: device transitions and escalations (unless
    ``check_causes`` is False), then deliveries."""
    cfg = config or SenderConfig()
    if check_causes:
        _check_causes(factory, cfg)
    stats = deliver_due(factory, config=cfg)
    with factory() as session:
        METRICS.pending.set(pending_count(session=session))
    return stats


def _check_causes(factory: sessionmaker[Session], cfg: SenderConfig) -> None:
    with session_scope(factory) as session:
        # One worker at a time decides transitions (PostgreSQL advisory lock for this
        # transaction; SQLite's single writer serialises it anyway).
        if session.get_bind().dialect.name != "postgresql" or session.scalar(
            select(func.pg_try_advisory_xact_lock(NOTIFY_LOCK_KEY))
        ):
            check_devices(session=session, config=cfg)
            escalate_unassigned(session=session, config=cfg)
