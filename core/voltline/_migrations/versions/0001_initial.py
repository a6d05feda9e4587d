"""Initial schema: rollouts, attempts, spans, resource versions, artifacts.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rollouts",
        sa.Column("rollout_id", sa.String(64), primary_key=True),
        sa.Column("input", sa.Text, nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("timeout", sa.Float),
        sa.Column("heartbeat_timeout", sa.Float),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("num_attempts", sa.Integer, nullable=False),
        sa.Column("metadata", sa.Text, nullable=False),
        sa.Column("resources", sa.Text, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("finished_at", sa.Float),
    )
    op.create_index("ix_rollouts_mode", "rollouts", ["mode"])
    op.create_index("ix_rollouts_created_at", "rollouts", ["created_at"])
    op.create_index("ix_rollouts_status_created", "rollouts", ["status", "created_at"])

    op.create_table(
        "attempts",
        sa.Column("attempt_id", sa.String(64), primary_key=True),
        sa.Column("rollout_id", sa.String(64), sa.ForeignKey("rollouts.rollout_id"), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("worker_id", sa.String(256)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("last_heartbeat", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float),
        sa.Column("error", sa.Text),
    )
    op.create_index("ix_attempts_rollout_id", "attempts", ["rollout_id"])
    op.create_index("ix_attempts_status", "attempts", ["status"])

    op.create_table(
        "spans",
        sa.Column("span_id", sa.String(64), primary_key=True),
        sa.Column("rollout_id", sa.String(64), nullable=False),
        sa.Column("attempt_id", sa.String(64), nullable=False),
        sa.Column("parent_id", sa.String(64)),
        sa.Column("sequence", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(512), nullable=False),
        sa.Column("start_time", sa.Float, nullable=False),
        sa.Column("end_time", sa.Float),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("attributes", sa.Text, nullable=False),
        sa.Column("resources", sa.Text, nullable=False),
    )
    op.create_index("ix_spans_rollout_seq", "spans", ["rollout_id", "sequence"])
    op.create_index("ix_spans_attempt_seq", "spans", ["attempt_id", "sequence"])

    op.create_table(
        "artifacts",
        sa.Column("hash", sa.String(64), primary_key=True),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "resource_versions",
        sa.Column("name", sa.String(256), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("artifact_hash", sa.String(64), sa.ForeignKey("artifacts.hash")),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(256)),
        sa.Column("metrics", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for table in ("resource_versions", "artifacts", "spans", "attempts", "rollouts"):
        op.drop_table(table)
