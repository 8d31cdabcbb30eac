"""One-time enrolment codes: a box fetches its own token (``lintel-edge enrol``).

The admin adds a device in the web and reads a short code (``ABCD-EFGH``) to the
installer instead of a 43-character token. The box trades it once for a fresh
token (the device's previous token stops working), writes it to a 0600 file,
and ``lintel-edge run`` reads it from there. Codes are stored hashed, expire
after :data:`CODE_TTL`, work once, and failed tries are limited per address.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from server.audit.service import record
from server.db import utcnow
from server.devices.errors import TooManyAttempts
from server.devices.models import Device, DeviceEnrolment, EnrolAttempt
from server.devices.service import rotate_device_token
from server.errors import InvalidInput
from server.security import hash_token

CODE_TTL = timedelta(minutes=15)
ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
"""32 characters without 0/O and 1/I: read aloud or typed from a phone without mix-ups."""
CODE_LENGTH = 8  # 40 bits: with MAX_FAILURES per window, guessing a live code is hopeless
MAX_FAILURES = 10
FAILURE_WINDOW = timedelta(minutes=15)


def normalise_code(text: str) -> str:
    """Upper case without dashes or spaces (``abcd-efgh`` and ``ABCDEFGH`` are one code)."""
    return "".join(c for c in text.upper() if c not in "- \t")


def create_enrolment_code(*, session: Session, device: Device, actor: str) -> str:
    """A new one-time code for ``device`` (shown once; earlier unused codes stop working)."""
    now = utcnow()
    session.execute(
        update(DeviceEnrolment)
        .where(DeviceEnrolment.device_id == device.id, DeviceEnrolment.used_at.is_(None))
        .values(expires_at=now)
    )
    code = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
    session.add(
        DeviceEnrolment(
            device_id=device.id,
            code_hash=hash_token(code),
            created_at=now,
            expires_at=now + CODE_TTL,
            created_by=actor[:100],
        )
    )
    session.flush()
    record(
        session=session,
        actor=actor,
        action="device.enrol_code",
        object_type="device",
        object_id=device.id,
        site_id=device.site_id,
        detail={"name": device.name, "minutes": int(CODE_TTL.total_seconds() // 60)},
    )
    return f"{code[:4]}-{code[4:]}"


def redeem_enrolment_code(*, session: Session, code: str, address: str) -> tuple[Device, str]:
    """The device of a live code and its new token; the code is used up.

    Raises :class:`TooManyAttempts` after :data:`MAX_FAILURES` failed codes from
    ``address`` within :data:`FAILURE_WINDOW`, and :class:`InvalidInput` for a
    code that is unknown, used, expired or of a disabled device (one message for
    all: a guesser learns nothing).
    """
    now = utcnow()
    address = address[:64]
    since = now - FAILURE_WINDOW
    session.execute(delete(EnrolAttempt).where(EnrolAttempt.at < since))
    failures = list(
        session.scalars(
            select(EnrolAttempt.at)
            .where(EnrolAttempt.address == address, EnrolAttempt.at >= since)
            .order_by(EnrolAttempt.at)
        )
    )
    if len(failures) >= MAX_FAILURES:
        wait = failures[-MAX_FAILURES] + FAILURE_WINDOW - now
        raise TooManyAttempts(
            "too many wrong enrolment codes from this address; try again later",
            retry_after_s=max(1, int(wait.total_seconds()) + 1),
        )
    found = session.execute(
        select(DeviceEnrolment, Device)
        .join(Device, Device.id == DeviceEnrolment.device_id)
        .where(DeviceEnrolment.code_hash == hash_token(normalise_code(code)))
    ).first()
    live = (
        found is not None
        and found[0].used_at is None
        and found[0].expires_at > now
        and not found[1].disabled
    )
    if found is None or not live:
        session.add(EnrolAttempt(address=address, at=now))
        session.flush()
        record(
            session=session,
            actor=f"ip:{address}",
            action="device.enrol_failed",
            object_type="device",
            object_id=None if found is None else found[1].id,
            site_id=None if found is None else found[1].site_id,
            detail={"failures": len(failures) + 1},
        )
        raise InvalidInput("the enrolment code is wrong, used or expired; ask for a new one")
    enrolment, device = found
    # Used up by a conditional UPDATE, not an attribute set: two boxes racing with one
    # code cannot both pass (the loser's UPDATE matches no row on either database).
    claimed = session.execute(
        update(DeviceEnrolment)
        .where(DeviceEnrolment.id == enrolment.id, DeviceEnrolment.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if not getattr(claimed, "rowcount", 0):
        raise InvalidInput("the enrolment code is wrong, used or expired; ask for a new one")
    token = rotate_device_token(session=session, device=device, actor=f"ip:{address}")
    record(
        session=session,
        actor=f"ip:{address}",
        action="device.enrol",
        object_type="device",
        object_id=device.id,
        site_id=device.site_id,
        detail={"name": device.name},
    )
    return device, token


def live_codes(*, session: Session, device_id: int) -> int:
    """How many unused, unexpired codes the device has (the page says one is waiting)."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(DeviceEnrolment)
            .where(
                DeviceEnrolment.device_id == device_id,
                DeviceEnrolment.used_at.is_(None),
                DeviceEnrolment.expires_at > utcnow(),
            )
        )
        or 0
    )
