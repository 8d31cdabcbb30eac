"""The worker's hourly purge deletes web sessions that ended (expired, or revoked a day ago)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine, select

from server.db import make_session_factory, utcnow
from server.privacy.purge import PurgeSchedule
from server.security import hash_token
from server.users.models import UserSession
from server.users.service import create_user, open_web_session, revoke_web_session

DAY = timedelta(hours=12)


def test_purge_deletes_ended_sessions_and_keeps_live_ones(engine: Engine) -> None:
    factory = make_session_factory(engine)
    now = utcnow()
    with factory() as s:
        user = create_user(session=s, username="ann", role="admin", site_ids=[])
        expired = open_web_session(session=s, user=user, lifetime=DAY, now=now - 2 * DAY)
        old_logout = open_web_session(session=s, user=user, lifetime=DAY, now=now - 3 * DAY / 6)
        new_logout = open_web_session(session=s, user=user, lifetime=DAY, now=now)
        live = open_web_session(session=s, user=user, lifetime=DAY, now=now)
        assert revoke_web_session(session=s, sid=old_logout, now=now - timedelta(days=2))
        assert revoke_web_session(session=s, sid=new_logout, now=now)
        s.commit()
    PurgeSchedule(first_after_s=0).tick(factory)
    with factory() as s:
        left = set(s.scalars(select(UserSession.id_hash)))
    assert left == {hash_token(new_logout), hash_token(live)}
    assert hash_token(expired) not in left and hash_token(old_logout) not in left
