"""Migrations from an empty database, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

import server.models  # noqa: F401  (complete metadata)
from server.db import Base, alembic_config, current_revision, downgrade, make_engine, upgrade

CORE_TABLES = {
    "sites",
    "buildings",
    "entrances",
    "units",
    "occupants",
    "face_templates",
    "devices",
    "cameras",
    "sightings",
    "sighting_crops",
    "users",
    "user_sites",
    "api_tokens",
    "audit_events",
}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.sqlite3'}"
    factory: Callable[[], str] = request.getfixturevalue("pg_factory")
    return factory()


def test_upgrade_from_empty_creates_schema_matching_models(empty_url: str) -> None:
    engine = make_engine(empty_url)
    try:
        assert current_revision(engine) is None
        upgrade(engine)
        head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
        assert current_revision(engine) == head
        assert set(inspect(engine).get_table_names()) >= CORE_TABLES
        # The migrations and the models describe the same schema.
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == []
        upgrade(engine)  # at head: a no-op, not an error
    finally:
        engine.dispose()


def test_downgrade_to_base_and_back(empty_url: str) -> None:
    engine = make_engine(empty_url)
    try:
        upgrade(engine)
        downgrade(engine, "base")
        assert not CORE_TABLES & set(inspect(engine).get_table_names())
        upgrade(engine)
        assert set(inspect(engine).get_table_names()) >= CORE_TABLES
    finally:
        engine.dispose()


def _filler(column: sa.Column[Any]) -> Any:
    """A value for a NOT NULL column the test does not care about."""
    if isinstance(column.type, sa.Boolean):
        return False
    if isinstance(column.type, sa.Integer | sa.Float | sa.Numeric):
        return 0
    if isinstance(column.type, sa.DateTime):
        return datetime(2026, 11, 1, tzinfo=UTC)
    if isinstance(column.type, sa.Date):
        return date(2026, 11, 1)
    if isinstance(column.type, sa.LargeBinary):
        return b"\x00"
    if isinstance(column.type, sa.JSON):
        return []
    return "x"


def _insert(conn: sa.Connection, meta: sa.MetaData, table: str, **values: Any) -> int:
    t = meta.tables[table]
    if table == "sightings":
        t.c.uuid.type = sa.Uuid()  # reflected as CHAR(32) on SQLite: store it as the model does
    row = {
        c.name: _filler(c)
        for c in t.columns
        if not c.nullable and c.server_default is None and not c.primary_key
    }
    row.update(values)
    result = conn.execute(sa.insert(t).values(**row))
    pk = result.inserted_primary_key
    return int(pk[0]) if pk and pk[0] is not None else 0


def test_0005_keeps_existing_sightings_crops_and_their_links(empty_url: str) -> None:
    """Rebuilding tables on SQLite must not cascade: every row and link survives."""
    engine = make_engine(empty_url)
    try:
        upgrade(engine, "0004_web_sessions")
        meta = sa.MetaData()
        meta.reflect(engine)
        sid = uuid.uuid4()
        with engine.begin() as conn:
            site = _insert(conn, meta, "sites", name="Old Court", model_id="m")
            dev = _insert(conn, meta, "devices", site_id=site, name="gate", token_hash="h" * 64)
            cam = _insert(conn, meta, "cameras", device_id=dev, name="door")
            occ = _insert(conn, meta, "occupants", site_id=site, name="Old Tenant")
            _insert(conn, meta, "face_templates", occupant_id=occ, site_id=site, model_id="m")
            common = {"site_id": site, "device_id": dev, "camera_id": cam, "quality": 0.5}
            known = _insert(
                conn, meta, "sightings", uuid=uuid.uuid4(), kind="known", occupant_id=occ, **common
            )
            unknown = _insert(
                conn, meta, "sightings", uuid=sid, kind="unknown", embedding=b"emb", **common
            )
            _insert(conn, meta, "sighting_crops", sighting_id=unknown, jpeg=b"\xff\xd8\xffcrop")
        upgrade(engine)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT COUNT(*) FROM face_templates")).scalar_one() == 1
            assert (
                conn.execute(
                    sa.text("SELECT occupant_id FROM sightings WHERE id = :i"), {"i": known}
                ).scalar_one()
                == occ
            )
            assert conn.execute(sa.text("SELECT sighting_id FROM sighting_crops")).all() == [
                (unknown,)
            ]
            assert conn.execute(sa.text("SELECT future_refused FROM devices")).scalar_one() == 0
        # The id is now the device's own: another device may store the same one.
        meta = sa.MetaData()
        meta.reflect(engine)
        with engine.begin() as conn:
            dev2 = _insert(conn, meta, "devices", site_id=site, name="garage", token_hash="g" * 64)
            cam2 = _insert(conn, meta, "cameras", device_id=dev2, name="door")
            other = {**common, "device_id": dev2, "camera_id": cam2}
            newer = _insert(conn, meta, "sightings", uuid=sid, kind="unknown", **other)
        assert newer > unknown
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
            _insert(conn, meta, "sightings", uuid=sid, kind="unknown", **common)
        # And back: refused while two devices share an id, fine once they do not.
        with pytest.raises(RuntimeError, match="more than one device"):
            downgrade(engine, "0004_web_sessions")
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM sightings WHERE id = :i"), {"i": newer})
        downgrade(engine, "0004_web_sessions")
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT COUNT(*) FROM sighting_crops")).scalar_one() == 1
    finally:
        engine.dispose()


def test_sqlite_ids_are_never_reused_after_0005(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'ids.sqlite3'}")
    try:
        upgrade(engine)
        with engine.connect() as conn:
            tables = {
                name
                for name, sql in conn.execute(
                    sa.text("SELECT name, sql FROM sqlite_master WHERE type = 'table'")
                )
                if "AUTOINCREMENT" in (sql or "")
            }
        assert tables >= {
            "occupants",
            "face_templates",
            "sightings",
            "unknown_clusters",
            "cases",
            "case_events",
            "whitelist_entries",
        }
    finally:
        engine.dispose()
