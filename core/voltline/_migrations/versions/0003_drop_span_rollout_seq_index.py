"""Drop the spans index on (rollout_id, sequence): every span insert paid for it, and the
queries by rollout are served by the prefix of (rollout_id, agent_name).

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_spans_rollout_seq", "spans")


def downgrade() -> None:
    op.create_index("ix_spans_rollout_seq", "spans", ["rollout_id", "sequence"])
