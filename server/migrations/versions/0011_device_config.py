"""device config from the web: camera settings, config version, enrolment codes, snapshots

Revision ID: 0011_device_config
Revises: 0010_registry_chips
Create Date: 2026-12-06 07:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0011_device_config'
down_revision: str | None = '0010_registry_chips'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The version of a device's camera settings; the box reports the one it runs.
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('config_version', sa.Integer(), server_default='1', nullable=False)
        )
    # Per camera: analysed fps, region of interest, on/off (None: the box's own).
    with op.batch_alter_table('cameras', schema=None) as batch_op:
        batch_op.add_column(sa.Column('analyse_fps', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('roi', sa.JSON(), nullable=True))
        batch_op.add_column(
            sa.Column('enabled', sa.Boolean(), server_default=sa.true(), nullable=False)
        )
    # Snapshots are opt-in per site and kept a short time.
    with op.batch_alter_table('sites', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('snapshots', sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(
            sa.Column(
                'snapshot_retention_hours', sa.Integer(), server_default='24', nullable=False
            )
        )
    op.create_table(
        'device_enrolments',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('device_id', sa.Integer(), nullable=False),
        sa.Column('code_hash', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_by', sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(['device_id'], ['devices.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('code_hash'),
    )
    with op.batch_alter_table('device_enrolments', schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f('ix_device_enrolments_device_id'), ['device_id'], unique=False
        )
    op.create_table(
        'device_enrol_attempts',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('address', sa.String(length=64), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('device_enrol_attempts', schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f('ix_device_enrol_attempts_address'), ['address'], unique=False
        )
    op.create_table(
        'camera_snapshots',
        sa.Column('camera_id', sa.Integer(), nullable=False),
        sa.Column('taken_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('jpeg', sa.LargeBinary(), nullable=False),
        sa.Column('key_id', sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(['camera_id'], ['cameras.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('camera_id'),
    )


def downgrade() -> None:
    op.drop_table('camera_snapshots')
    with op.batch_alter_table('device_enrol_attempts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_device_enrol_attempts_address'))
    op.drop_table('device_enrol_attempts')
    with op.batch_alter_table('device_enrolments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_device_enrolments_device_id'))
    op.drop_table('device_enrolments')
    with op.batch_alter_table('sites', schema=None) as batch_op:
        batch_op.drop_column('snapshot_retention_hours')
        batch_op.drop_column('snapshots')
    with op.batch_alter_table('cameras', schema=None) as batch_op:
        batch_op.drop_column('enabled')
        batch_op.drop_column('roi')
        batch_op.drop_column('analyse_fps')
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.drop_column('config_version')
