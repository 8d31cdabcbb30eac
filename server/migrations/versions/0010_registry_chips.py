"""registry chips and case undo: a sealed face chip per template, a site switch, a case's undo

Revision ID: 0010_registry_chips
Revises: 0007_credentials
Create Date: 2026-12-06 05:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0010_registry_chips'
down_revision: str | None = '0009_notifications'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The face each template was made from (AES-GCM sealed, like the crops), for
    # the desk check; it is deleted with its template.
    with op.batch_alter_table('face_templates', schema=None) as batch_op:
        batch_op.add_column(sa.Column('chip', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('chip_key_id', sa.String(length=16), nullable=True))
    # Sites that keep photos in the office only turn the chips off.
    with op.batch_alter_table('sites', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('registry_chips', sa.Boolean(), server_default=sa.true(), nullable=False)
        )
    # What closing a case changed, so reopening it can reverse that.
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.add_column(sa.Column('undo', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.drop_column('undo')
    with op.batch_alter_table('sites', schema=None) as batch_op:
        batch_op.drop_column('registry_chips')
    with op.batch_alter_table('face_templates', schema=None) as batch_op:
        batch_op.drop_column('chip_key_id')
        batch_op.drop_column('chip')
