"""Migrations from an empty database, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
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
