"""Credentials, buckets, objects and multipart uploads.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Keys and bucket names sort bytewise on PostgreSQL too, whatever the database's collation
# (SQLite's default BINARY collation already does).
_KEY = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")
_BUCKET = sa.String(64).with_variant(sa.String(64, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "credentials",
        sa.Column("secret_id", sa.String(128), primary_key=True),
        sa.Column("secret_key", sa.String(128), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "buckets",
        sa.Column("name", _BUCKET, primary_key=True),
        sa.Column("region", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "objects",
        sa.Column("bucket", sa.String(64), primary_key=True),
        sa.Column("key", _KEY, primary_key=True),
        sa.Column("blob", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("etag", sa.String(80), nullable=False),
        sa.Column("crc64", sa.String(24), nullable=False),
        sa.Column("last_modified", sa.Float, nullable=False),
        sa.Column("storage_class", sa.String(32), nullable=False),
        sa.Column("headers", sa.Text, nullable=False),
    )
    op.create_table(
        "uploads",
        sa.Column("upload_id", sa.String(64), primary_key=True),
        sa.Column("bucket", sa.String(64), nullable=False),
        sa.Column("key", _KEY, nullable=False),
        sa.Column("initiated", sa.Float, nullable=False),
        sa.Column("storage_class", sa.String(32), nullable=False),
        sa.Column("headers", sa.Text, nullable=False),
    )
    op.create_index("ix_uploads_bucket_key", "uploads", ["bucket", "key", "initiated"])
    op.create_table(
        "parts",
        sa.Column("upload_id", sa.String(64), primary_key=True),
        sa.Column("part_number", sa.Integer, primary_key=True),
        sa.Column("blob", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("etag", sa.String(80), nullable=False),
        sa.Column("crc64", sa.String(24), nullable=False),
        sa.Column("last_modified", sa.Float, nullable=False),
    )
    op.create_table("blob_gc", sa.Column("blob", sa.String(64), primary_key=True))


def downgrade() -> None:
    for name in ("blob_gc", "parts", "uploads", "objects", "buckets", "credentials"):
        op.drop_table(name)
