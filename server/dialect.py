"""``INSERT ... ON CONFLICT DO NOTHING`` for the two supported databases."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.orm import Session


def insert_ignore(session: Session, table: Table, conflict_columns: list[str]) -> Any:
    """An insert into ``table`` that skips rows conflicting on ``conflict_columns``.

    PostgreSQL and SQLite spell it the same way (``ON CONFLICT DO NOTHING``)
    but SQLAlchemy builds it through each dialect's own ``insert``.
    """
    name = session.get_bind().dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing(index_elements=conflict_columns)
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing(index_elements=conflict_columns)
    raise NotImplementedError(f"database {name!r} is not supported (use PostgreSQL or SQLite)")
