"""sighting identity per device; future-dated refusals per device; ids never reused (SQLite)

- sightings: the client id is unique per device (``device_id, uuid``), not
  across all sites, so a walk-in sent by a site B box whose id a site A box
  already used is stored, not dropped as a "duplicate"; an index on
  ``(site_id, received_at)`` for the arrival-based retention;
- devices: ``future_refused`` counts sightings refused for times in the
  future (a wrong edge clock);
- SQLite: the tables whose ids name people or face data get AUTOINCREMENT, so
  an erased occupant's (or purged sighting's) id never names a later row
  (PostgreSQL sequences never hand an id out twice already). SQLite cannot
  add it in place: each table is rebuilt (batch mode), with foreign keys
  switched off around the migration by :func:`server.db.upgrade` so the
  rebuild's DROP TABLE cascades to nothing.

Revision ID: 0005_sighting_identity
Revises: 0004_web_sessions
Create Date: 2026-12-06 04:30:00
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op


revision: str = '0005_sighting_identity'
down_revision: str | None = '0004_web_sessions'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Children after parents does not matter with foreign keys off; the order is fixed anyway.
AUTOINCREMENT_TABLES = (
    'occupants',
    'face_templates',
    'unknown_clusters',
    'cases',
    'case_events',
    'whitelist_entries',
)


def _sqlite() -> bool:
    return op.get_bind().dialect.name == 'sqlite'


def _recreate(autoincrement: bool) -> dict[str, Any]:
    """batch_alter_table arguments: rebuild on SQLite (with or without AUTOINCREMENT)."""
    if not _sqlite():
        return {}
    return {'recreate': 'always', 'table_kwargs': {'sqlite_autoincrement': autoincrement}}


def upgrade() -> None:
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('future_refused', sa.Integer(), server_default='0', nullable=False)
        )

    with op.batch_alter_table('sightings', schema=None, **_recreate(True)) as batch_op:
        batch_op.drop_constraint('uq_sightings_uuid', type_='unique')
        batch_op.create_unique_constraint(
            batch_op.f('uq_sightings_device_id_uuid'), ['device_id', 'uuid']
        )
        batch_op.create_index(
            'ix_sightings_site_id_received_at', ['site_id', 'received_at'], unique=False
        )

    if _sqlite():
        for table in AUTOINCREMENT_TABLES:
            with op.batch_alter_table(table, schema=None, **_recreate(True)):
                pass


def downgrade() -> None:
    if _sqlite():
        for table in AUTOINCREMENT_TABLES:
            with op.batch_alter_table(table, schema=None, **_recreate(False)):
                pass

    shared = op.get_bind().execute(
        sa.text('SELECT uuid FROM sightings GROUP BY uuid HAVING COUNT(*) > 1 LIMIT 1')
    ).first()
    if shared is not None:
        # The old schema allowed one sighting per id across all devices: going
        # back would have to drop a device's own sightings. Refuse instead.
        raise RuntimeError(
            f'cannot downgrade below 0005_sighting_identity: sighting id {shared[0]} is used '
            'by more than one device, which the older schema cannot store'
        )
    with op.batch_alter_table('sightings', schema=None, **_recreate(False)) as batch_op:
        batch_op.drop_index('ix_sightings_site_id_received_at')
        batch_op.drop_constraint(batch_op.f('uq_sightings_device_id_uuid'), type_='unique')
        batch_op.create_unique_constraint(batch_op.f('uq_sightings_uuid'), ['uuid'])

    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.drop_column('future_refused')
