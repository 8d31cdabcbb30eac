"""Erase and purge leave nothing readable: not in the database file, not in its WAL.

SQLite keeps a deleted row's bytes in free space and the old page in ``-wal``
until a checkpoint; the raw files are what a stolen disk or a backup shows, so
these tests read them byte by byte. The id-reuse test runs on both databases.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import Engine, select

from server.audit.models import AuditEvent
from server.db import make_engine, make_session_factory, upgrade
from server.devices.service import create_device
from server.occupants.service import add_template, upsert_occupant
from server.privacy.purge import purge
from server.privacy.subject import erase_subject, export_subject
from server.sightings.models import Sighting
from server.sites.service import create_site
from tests.server.clusters.support import MODEL, look, new_session, person
from tests.server.conftest import DeviceCreds
from tests.server.privacy.support import build

NAME = "Zhao Xiaoyu-7f3a"  # unique enough that no other bytes spell it


def _raw(db: Path) -> bytes:
    """The database file and its WAL, as stored on disk."""
    out = db.read_bytes()
    wal = db.with_name(db.name + "-wal")
    if wal.exists():
        out += wal.read_bytes()
    return out


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Iterator[tuple[Engine, Path]]:
    """A fresh, migrated SQLite database file (the real server's default)."""
    db = tmp_path / "var" / "lintel.db"
    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)
    yield engine, db
    engine.dispose()


def _site(engine: Engine) -> tuple[int, int]:
    with make_session_factory(engine)() as s:
        site = create_site(session=s, name="Sunny Court", model_id=MODEL)
        device, _token = create_device(session=s, site_id=site.id, name="gate")
        s.commit()
        return site.id, device.id


def test_erased_person_is_in_neither_the_database_file_nor_the_wal(
    sqlite_file: tuple[Engine, Path],
) -> None:
    engine, db = sqlite_file
    site_id, _device = _site(engine)
    embeddings = [person(900 + i) for i in range(8)]
    with make_session_factory(engine)() as s:
        occ = upsert_occupant(session=s, site_id=site_id, name=NAME, phone="13800007777")
        for emb in embeddings:
            add_template(session=s, occupant_id=occ.id, embedding=emb, model_id=MODEL)
        s.commit()
        occupant_id = occ.id
    patterns = [NAME.encode(), *(emb.astype("<f4").tobytes()[:64] for emb in embeddings)]
    before = _raw(db)
    assert all(p in before for p in patterns)  # the search does find them when they are there

    with make_session_factory(engine)() as s:
        erase_subject(session=s, occupant_id=occupant_id, actor="test")
        s.commit()

    after = _raw(db)
    found = [p[:16] for p in patterns if p in after]
    assert found == [], f"erased data still on disk: {found}"
    assert b"13800007777" not in after


def test_purged_embedding_is_in_neither_the_database_file_nor_the_wal(
    sqlite_file: tuple[Engine, Path],
) -> None:
    engine, db = sqlite_file
    site_id, device_id = _site(engine)
    world = build(engine, site_id, device_id)
    # The passer-by's one sighting (support.sightings_with_crops: person 53, day 0).
    passerby = look(person(53), 53 * 1000).astype("<f4").tobytes()[:64]
    assert passerby in _raw(db)
    with new_session(engine) as s:
        [result] = purge(session=s)
        s.commit()
    assert result.embeddings == 1
    with new_session(engine) as s:
        [sid] = world.passerby_sightings
        assert s.get(Sighting, sid).embedding is None  # type: ignore[union-attr]
    assert passerby not in _raw(db)


def test_database_and_data_dir_are_private(sqlite_file: tuple[Engine, Path]) -> None:
    engine, db = sqlite_file
    _site(engine)  # a write: the WAL exists now
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
    for path in (db, db.with_name(db.name + "-wal")):
        assert path.exists()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_an_existing_world_readable_database_is_narrowed(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    sqlite3.connect(db).close()
    os.chmod(db, 0o644)  # as an older Lintel (SQLite with the usual umask) left it
    make_engine(f"sqlite:///{db}").dispose()
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def test_an_erased_occupants_id_is_never_given_to_the_next_person(
    engine: Engine, device: DeviceCreds, client: httpx.Client
) -> None:
    with new_session(engine) as s:
        first = upsert_occupant(session=s, site_id=device.site_id, name="First Person")
        add_template(session=s, occupant_id=first.id, embedding=person(1), model_id=MODEL)
        s.commit()
        erased_id = first.id
    with new_session(engine) as s:
        erase_subject(session=s, occupant_id=erased_id, actor="test")
        s.commit()
    with new_session(engine) as s:
        second = upsert_occupant(session=s, site_id=device.site_id, name="Second Person")
        s.commit()
        assert second.id != erased_id
        export = export_subject(session=s, occupant_id=second.id, actor="test")
        s.commit()
        # The next person's export does not show the previous person's erasure.
        assert "subject.erase" not in {e["action"] for e in export["audit_events"]}
        erase = s.scalars(select(AuditEvent).where(AuditEvent.action == "subject.erase")).one()
        assert erase.object_id == str(erased_id)


def test_template_ids_are_never_reused(engine: Engine, device: DeviceCreds) -> None:
    with new_session(engine) as s:
        occ = upsert_occupant(session=s, site_id=device.site_id, name="Someone")
        t = add_template(session=s, occupant_id=occ.id, embedding=person(2), model_id=MODEL)
        s.commit()
        old_template = t.id
    with new_session(engine) as s:
        erase_subject(session=s, occupant_id=occ.id, actor="test")
        s.commit()
    with new_session(engine) as s:
        occ2 = upsert_occupant(session=s, site_id=device.site_id, name="Someone Else")
        t2 = add_template(
            session=s, occupant_id=occ2.id, embedding=np.asarray(person(3)), model_id=MODEL
        )
        s.commit()
        assert t2.id != old_template
