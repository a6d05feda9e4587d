"""Spans name the agent they ran under, so one agent of a team can be selected.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("spans") as batch:
        batch.add_column(sa.Column("agent_name", sa.String(256), nullable=True))
    op.create_index("ix_spans_rollout_agent", "spans", ["rollout_id", "agent_name"])


def downgrade() -> None:
    op.drop_index("ix_spans_rollout_agent", "spans")
    with op.batch_alter_table("spans") as batch:
        batch.drop_column("agent_name")
