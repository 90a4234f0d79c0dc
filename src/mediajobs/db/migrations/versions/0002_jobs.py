"""Queues, jobs, callback outbox, shared settings.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_SEQ = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "queues",
        sa.Column("queue_id", sa.String(40), primary_key=True),
        sa.Column("bucket", sa.String(64), nullable=False),
        sa.Column("category", sa.String(32), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("notify", sa.Text, nullable=False),
        sa.Column("max_size", sa.Integer, nullable=False),
        sa.Column("max_concurrent", sa.Integer, nullable=False),
        sa.Column("create_time", sa.Float, nullable=False),
        sa.Column("update_time", sa.Float, nullable=False),
    )
    op.create_index("ix_queues_bucket", "queues", ["bucket", "category"])
    op.create_table(
        "jobs",
        sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(40), nullable=False, unique=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("bucket", sa.String(64), nullable=False),
        sa.Column("region", sa.String(64), nullable=False),
        sa.Column("queue_id", sa.String(40), nullable=False),
        sa.Column("tag", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("job_level", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("ended_at", sa.Float),
        sa.Column("input_object", sa.Text, nullable=False),
        sa.Column("workflow_id", sa.String(40)),
        sa.Column("inventory_job_id", sa.String(40)),
        sa.Column("operation", sa.Text, nullable=False),
        sa.Column("result", sa.Text),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("progress", sa.Integer),
        sa.Column("callback", sa.Text),
        sa.Column("hold", sa.Float),
        sa.Column("lease_owner", sa.String(64)),
        sa.Column("lease_until", sa.Float),
        sa.Column("attempts", sa.Integer, nullable=False),
    )
    op.create_index(
        "ix_jobs_claim",
        "jobs",
        [sa.text("job_level DESC"), "seq"],
        sqlite_where=sa.text("state = 'Submitted'"),
        postgresql_where=sa.text("state = 'Submitted'"),
    )
    op.create_index("ix_jobs_lease", "jobs", ["state", "lease_until"])
    op.create_index("ix_jobs_list_tag", "jobs", ["bucket", "kind", "tag", "created_at", "seq"])
    op.create_index("ix_jobs_list_queue", "jobs", ["bucket", "kind", "queue_id", "created_at", "seq"])
    op.create_index("ix_jobs_queue_state", "jobs", ["queue_id", "state"])
    op.create_table(
        "outbox",
        sa.Column("id", _SEQ, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(40), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("content_type", sa.String(64), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt", sa.Float, nullable=False),
        sa.Column("last_error", sa.Text),
    )
    op.create_index("ix_outbox_due", "outbox", ["next_attempt"])
    op.create_table(
        "kv",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for name in ("kv", "outbox", "jobs", "queues"):
        op.drop_table(name)
