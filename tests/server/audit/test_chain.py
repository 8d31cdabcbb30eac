"""The audit hash chain: intact when written through record(), broken links are found."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, func, insert, select, text, update

from server.audit.chain import GENESIS, verify_chain
from server.audit.models import AuditEvent
from server.audit.service import record
from server.cli import main
from server.db import downgrade, make_engine, make_session_factory, upgrade
from tests.server.clusters.support import new_session


def _write(engine: Engine, n: int, *, actor: str = "test") -> list[int]:
    ids = []
    with new_session(engine) as s:
        for i in range(n):
            event = record(
                session=s,
                actor=actor,
                action="thing.done",
                object_type="thing",
                object_id=i,
                detail={"n": i, "tags": ("a", "b"), "名": "张三", "x": 0.1},
            )
            ids.append(event.id)
        s.commit()
    return ids


def test_events_written_through_record_form_an_intact_chain(engine: Engine) -> None:
    ids = _write(engine, 5)
    with new_session(engine) as s:
        report = verify_chain(session=s, batch=2)  # several pages
        first = s.get(AuditEvent, ids[0])
        assert first is not None and first.prev_hash == GENESIS
        last = s.get(AuditEvent, ids[-1])
    assert report.ok and report.checked == 5
    assert last is not None and report.last_hash == last.hash


ALTERATIONS: dict[str, Callable[[AuditEvent], dict[str, object]]] = {
    "detail": lambda e: {"detail": {"n": 99}},
    "actor": lambda e: {"actor": "someone-else"},
    "time": lambda e: {"at": e.at - timedelta(seconds=1)},
    "object": lambda e: {"object_id": "changed"},
    "hash recomputed without the chain": lambda e: {"hash": "0" * 64},
}


@pytest.mark.parametrize("change", sorted(ALTERATIONS))
def test_an_altered_event_is_reported(engine: Engine, change: str) -> None:
    ids = _write(engine, 4)
    with new_session(engine) as s:
        event = s.get(AuditEvent, ids[2])
        assert event is not None
        values = ALTERATIONS[change](event)
        s.execute(update(AuditEvent).where(AuditEvent.id == ids[2]).values(**values))
        s.commit()
        s.expire_all()
        report = verify_chain(session=s)
    assert not report.ok
    assert report.first_broken_id == ids[2] and report.checked == 2
    assert report.reason is not None and "altered" in report.reason


def test_a_deleted_event_is_reported_at_its_successor(engine: Engine) -> None:
    ids = _write(engine, 4)
    with new_session(engine) as s:
        s.execute(delete(AuditEvent).where(AuditEvent.id == ids[1]))
        s.commit()
        report = verify_chain(session=s)
    assert (report.ok, report.first_broken_id) == (False, ids[2])
    assert report.reason is not None and "deleted" in report.reason


def test_a_forged_event_with_a_made_up_hash_is_reported(engine: Engine) -> None:
    ids = _write(engine, 2)
    with new_session(engine) as s:
        last = s.get(AuditEvent, ids[-1])
        assert last is not None
        s.execute(
            insert(AuditEvent).values(
                at=last.at,
                actor="attacker",
                action="nothing.to.see",
                object_type="x",
                prev_hash=last.hash,
                hash="f" * 64,
            )
        )
        s.commit()
        report = verify_chain(session=s)
    assert not report.ok and report.checked == 2


def test_cli_audit_verify_exit_codes(
    engine: Engine, db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LINTEL_DATABASE_URL", db_url)
    monkeypatch.setenv("LINTEL_ENV", "dev")
    monkeypatch.setenv("LINTEL_CROP_KEY", "B" * 43 + "=")
    ids = _write(engine, 3)
    assert main(["audit", "verify", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["checked"] == 3
    with new_session(engine) as s:
        s.execute(update(AuditEvent).where(AuditEvent.id == ids[0]).values(action="edited"))
        s.commit()
    assert main(["audit", "verify"]) == 1
    assert f"BROKEN at event {ids[0]}" in capsys.readouterr().out


def test_concurrent_writers_chain_one_after_another(engine: Engine) -> None:
    """Threads appending at once (separate connections) never fork the chain."""
    factory = make_session_factory(engine)
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for i in range(5):
                with factory() as s:
                    record(session=s, actor=f"w{k}", action="tick", object_type="t", object_id=i)
                    s.commit()
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    with new_session(engine) as s:
        assert s.scalar(select(func.count()).select_from(AuditEvent)) == 20
        report = verify_chain(session=s)
    assert report.ok and report.checked == 20, report


def test_migration_chains_events_written_before_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    _backfill(url)


@pytest.mark.postgres
def test_migration_chains_events_written_before_it_on_postgresql(
    pg_factory: Callable[[], str],
) -> None:
    _backfill(pg_factory())


def _backfill(url: str) -> None:
    eng = make_engine(url)
    try:
        upgrade(eng, "0002_clusters_cases")
        with eng.begin() as conn:  # as the old record() wrote them: no hashes
            for i in range(3):
                conn.execute(
                    text(
                        "INSERT INTO audit_events (at, actor, action, object_type, detail) "
                        "VALUES (:at, 'cli', 'old.thing', 'x', :detail)"
                    ),
                    {"at": f"2026-11-0{i + 1} 10:00:00.123456", "detail": json.dumps({"i": i})},
                )
        upgrade(eng)
        with make_session_factory(eng)() as s:
            record(session=s, actor="cli", action="new.thing", object_type="x")
            s.commit()
            report = verify_chain(session=s)
        assert report.ok and report.checked == 4, report
        downgrade(eng, "0002_clusters_cases")  # and back down cleanly
    finally:
        eng.dispose()
