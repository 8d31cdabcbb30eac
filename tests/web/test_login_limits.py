"""Login limits beyond one username from one address (issue 18, finding 6), on both databases.

Spraying one password over many usernames was never throttled: the lockout
was keyed on (username, address) only. Now one address has its own limit,
and failures from everywhere have a global one that spares known addresses.
"""

from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy import Engine

from server.audit.service import record
from server.db import utcnow
from server.web.session import (
    FAILED,
    GLOBAL_LOCKOUT_FAILURES,
    IP_LOCKOUT_FAILURES,
    KNOWN_ADDRESS_WINDOW,
    LOCKOUT_WINDOW,
    SUCCEEDED,
    lockout_wait_s,
    login_audit_key,
)
from tests.server.clusters.support import new_session
from tests.web.backends import pg_factory, web_engine_on_both_backends  # noqa: F401
from tests.web.world import World, login


def _attempt(engine: Engine, action: str, username: str, ip: str, ago: timedelta) -> None:
    object_id, actor = login_audit_key(username, ip)
    with new_session(engine) as s:
        event = record(
            session=s, actor=actor, action=action, object_type="login", object_id=object_id
        )
        event.at = utcnow() - ago  # the hash chain is not what these tests look at
        s.commit()


def test_one_address_spraying_many_usernames_is_locked_out(
    client: httpx.Client, world: World, engine: Engine
) -> None:
    for n in range(IP_LOCKOUT_FAILURES - 1):
        assert login(client, f"guess{n}", "Summer2026!").status_code == 401
    # The last allowed guess answers 429 at once; then even a real user's right password
    # is refused from this address, though that username never failed.
    assert login(client, "guess-last", "Summer2026!").status_code == 429
    r = login(client, "mgr_a")
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    with new_session(engine) as s:
        assert lockout_wait_s(session=s, username="mgr_a", ip="198.51.100.7") == 0


def test_the_address_limit_is_not_reset_by_a_success(world: World, engine: Engine) -> None:
    ip = "198.51.100.8"
    for n in range(IP_LOCKOUT_FAILURES - 1):
        _attempt(engine, FAILED, f"u{n}", ip, timedelta(minutes=5))
    _attempt(engine, SUCCEEDED, "mgr_a", ip, timedelta(minutes=1))
    _attempt(engine, FAILED, "u-last", ip, timedelta(seconds=30))
    with new_session(engine) as s:
        assert lockout_wait_s(session=s, username="mgr_a", ip=ip) > 0
        # Failures older than the window do not count.
        later = utcnow() + LOCKOUT_WINDOW
        assert lockout_wait_s(session=s, username="mgr_a", ip=ip, now=later) == 0


def test_a_spray_from_many_addresses_locks_unknown_addresses_only(
    world: World, engine: Engine
) -> None:
    # A returning member of staff logged in from this address last week.
    _attempt(engine, SUCCEEDED, "mgr_a", "192.0.2.200", timedelta(days=7))
    # A stale success (older than the known-address window) does not count.
    _attempt(engine, SUCCEEDED, "mgr_b", "192.0.2.201", KNOWN_ADDRESS_WINDOW + timedelta(days=1))
    for n in range(GLOBAL_LOCKOUT_FAILURES - 1):
        ip = f"10.{n // 250}.{n % 250}.1"
        _attempt(engine, FAILED, f"user{n % 50}", ip, timedelta(minutes=2))
    with new_session(engine) as s:
        assert lockout_wait_s(session=s, username="mgr_a", ip="192.0.2.99") == 0
    _attempt(engine, FAILED, "user0", "10.9.9.9", timedelta(minutes=1))
    with new_session(engine) as s:
        assert lockout_wait_s(session=s, username="mgr_a", ip="192.0.2.99") > 0
        assert lockout_wait_s(session=s, username="mgr_b", ip="192.0.2.201") > 0
        assert lockout_wait_s(session=s, username="mgr_a", ip="192.0.2.200") == 0
