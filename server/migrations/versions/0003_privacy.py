"""privacy: audit hash chain, per-site retention, crop key ids

Revision ID: 0003_privacy
Revises: 0002_clusters_cases
Create Date: 2026-11-28 22:40:00
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC

import sqlalchemy as sa
from alembic import op


revision: str = '0003_privacy'
down_revision: str | None = '0002_clusters_cases'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GENESIS = "0" * 64


def _canonical(row: sa.Row, prev: str) -> bytes:
    # A copy of server.audit.chain.canonical (migrations do not import app code).
    at = row.at if row.at.tzinfo is not None else row.at.replace(tzinfo=UTC)
    doc = {
        "id": int(row.id),
        "at": at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "actor": row.actor,
        "action": row.action,
        "object_type": row.object_type,
        "object_id": row.object_id,
        "site_id": row.site_id,
        "detail": row.detail,
        "prev": prev,
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def upgrade() -> None:
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('prev_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('hash', sa.String(length=64), nullable=True))

    with op.batch_alter_table('sighting_crops', schema=None) as batch_op:
        batch_op.add_column(sa.Column('key_id', sa.String(length=16), nullable=True))

    with op.batch_alter_table('sites', schema=None) as batch_op:
        batch_op.add_column(sa.Column('closed_case_retention_days', sa.Integer(), nullable=False, server_default='30'))
        batch_op.add_column(sa.Column('moved_out_template_days', sa.Integer(), nullable=False, server_default='0'))
    # The model has no server default; drop them once existing rows are filled.
    with op.batch_alter_table('sites', schema=None) as batch_op:
        batch_op.alter_column('closed_case_retention_days', server_default=None)
        batch_op.alter_column('moved_out_template_days', server_default=None)

    # Chain the events written before the chain existed, in id order.
    events = sa.table(
        'audit_events',
        sa.column('id', sa.Integer()),
        sa.column('at', sa.DateTime(timezone=True)),
        sa.column('actor', sa.String()),
        sa.column('action', sa.String()),
        sa.column('object_type', sa.String()),
        sa.column('object_id', sa.String()),
        sa.column('site_id', sa.Integer()),
        sa.column('detail', sa.JSON()),
        sa.column('prev_hash', sa.String()),
        sa.column('hash', sa.String()),
    )
    conn = op.get_bind()
    prev = GENESIS
    for row in conn.execute(sa.select(events).order_by(events.c.id)).all():
        digest = hashlib.sha256(_canonical(row, prev)).hexdigest()
        conn.execute(
            events.update().where(events.c.id == row.id).values(prev_hash=prev, hash=digest)
        )
        prev = digest


def downgrade() -> None:
    with op.batch_alter_table('sites', schema=None) as batch_op:
        batch_op.drop_column('moved_out_template_days')
        batch_op.drop_column('closed_case_retention_days')

    with op.batch_alter_table('sighting_crops', schema=None) as batch_op:
        batch_op.drop_column('key_id')

    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_column('hash')
        batch_op.drop_column('prev_hash')
