"""credentials: an index for the login limits' counts of recent failed logins

Revision ID: 0007_credentials
Revises: 0004_web_sessions
Create Date: 2026-12-06 04:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op


revision: str = '0007_credentials'
down_revision: str | None = '0005_sighting_identity'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Every login attempt counts the window's failures by address and overall
    # (server/web/session.py); without it each attempt scans the whole audit log.
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.create_index('ix_audit_events_action_at', ['action', 'at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_events_action_at')
