"""Tables of the metadata database (SQLAlchemy Core).

Object keys are compared bytewise (SQLite's BINARY collation on UTF-8 text), which
is the order COS lists them in. Every change to these tables needs an Alembic revision
in `migrations/versions`; tests check that the two agree.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

credentials = Table(
    "credentials",
    metadata,
    Column("secret_id", String(128), primary_key=True),
    Column("secret_key", String(128), nullable=False),
    Column("created_at", Float, nullable=False),
)

buckets = Table(
    "buckets",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("region", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
)

# One row per visible object. `blob` names the file holding its bytes.
objects = Table(
    "objects",
    metadata,
    Column("bucket", String(64), primary_key=True),
    Column("key", Text, primary_key=True),
    Column("blob", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("etag", String(80), nullable=False),
    # CRC-64 as decimal text: the unsigned 64-bit value does not fit a signed BIGINT.
    Column("crc64", String(24), nullable=False),
    Column("last_modified", Float, nullable=False),
    Column("storage_class", String(32), nullable=False),
    # JSON object of stored HTTP headers (Content-Type, Cache-Control, x-cos-meta-*, ...).
    Column("headers", Text, nullable=False),
)

uploads = Table(
    "uploads",
    metadata,
    Column("upload_id", String(64), primary_key=True),
    Column("bucket", String(64), nullable=False),
    Column("key", Text, nullable=False),
    Column("initiated", Float, nullable=False),
    Column("storage_class", String(32), nullable=False),
    Column("headers", Text, nullable=False),
    Index("ix_uploads_bucket_key", "bucket", "key", "initiated"),
)

parts = Table(
    "parts",
    metadata,
    Column("upload_id", String(64), primary_key=True),
    Column("part_number", Integer, primary_key=True),
    Column("blob", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("etag", String(80), nullable=False),
    Column("crc64", String(24), nullable=False),
    Column("last_modified", Float, nullable=False),
)

# Blobs no row points at any more; deleted after the commit that orphaned them,
# and again at start-up if the process died in between.
blob_gc = Table(
    "blob_gc",
    metadata,
    Column("blob", String(64), primary_key=True),
)
