"""Tables of the metadata database (SQLAlchemy Core).

Object keys are compared bytewise, which is the order COS lists them in: SQLite's BINARY
collation on UTF-8 text, and the "C" collation on PostgreSQL (whatever the database's default). Every change to these tables needs an Alembic revision
in `migrations/versions`; tests check that the two agree.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    text,
)

metadata = MetaData()

# Text compared byte by byte on every database: keys and bucket names are listed in this order,
# and range scans on them (prefixes, markers) depend on it.
BYTEWISE_TEXT = Text().with_variant(Text(collation="C"), "postgresql")
BYTEWISE_NAME = String(64).with_variant(String(64, collation="C"), "postgresql")

# The newest migration in migrations/versions (a test keeps the two in step). Start-up reads
# the database's revision and loads Alembic only when it differs.
HEAD_REVISION = "0005"

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
    Column("name", BYTEWISE_NAME, primary_key=True),
    Column("region", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
)

# One row per visible object. `blob` names the file holding its bytes.
objects = Table(
    "objects",
    metadata,
    Column("bucket", String(64), primary_key=True),
    Column("key", BYTEWISE_TEXT, primary_key=True),
    Column("blob", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("etag", String(80), nullable=False),
    # CRC-64 as decimal text: the unsigned 64-bit value does not fit a signed BIGINT.
    Column("crc64", String(24), nullable=False),
    Column("last_modified", Float, nullable=False),
    Column("storage_class", String(32), nullable=False),
    # JSON object of stored HTTP headers (Content-Type, Cache-Control, x-cos-meta-*, ...).
    Column("headers", Text, nullable=False),
    # The bytes of a small object (blob is then ""): one write and one fsync instead of a
    # file, its fsync, a rename and a directory fsync.
    Column("data", LargeBinary),
)

uploads = Table(
    "uploads",
    metadata,
    Column("upload_id", String(64), primary_key=True),
    Column("bucket", String(64), nullable=False),
    Column("key", BYTEWISE_TEXT, nullable=False),
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

# ---- jobs ------------------------------------------------------------------------------

# Media and picture queues. Every bucket gets one default queue of each category, with an
# id derived from the bucket name so every API node agrees on it without coordination.
queues = Table(
    "queues",
    metadata,
    Column("queue_id", String(40), primary_key=True),
    Column("bucket", String(64), nullable=False),
    Column("category", String(32), nullable=False),  # Transcoding | PicProcessing
    Column("name", String(128), nullable=False),
    Column("state", String(16), nullable=False),  # Active | Paused
    Column("notify", Text, nullable=False),  # JSON of NotifyConfig
    Column("max_size", Integer, nullable=False),
    Column("max_concurrent", Integer, nullable=False),
    Column("create_time", Float, nullable=False),
    Column("update_time", Float, nullable=False),
    Index("ix_queues_bucket", "bucket", "category"),
)

jobs = Table(
    "jobs",
    metadata,
    # Submission order: breaks ties of jobs created in the same second, orders the claim,
    # and is half of every NextToken.
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("job_id", String(40), nullable=False, unique=True),
    Column("kind", String(8), nullable=False),  # media | pic
    Column("bucket", String(64), nullable=False),
    Column("region", String(64), nullable=False),
    Column("queue_id", String(40), nullable=False),
    Column("tag", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("job_level", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("ended_at", Float),
    Column("input_object", Text, nullable=False),
    Column("workflow_id", String(40)),
    Column("inventory_job_id", String(40)),
    # JSON node trees: the Operation as sent (echoed back) and the result nodes added to it.
    Column("operation", Text, nullable=False),
    Column("result", Text),
    Column("code", String(64), nullable=False),
    Column("message", Text, nullable=False),
    Column("progress", Integer),
    Column("callback", Text),  # JSON: CallBack, CallBackFormat, CallBackType, ...
    Column("hold", Float),  # testing control: seconds to stay Running before the work
    Column("lease_owner", String(64)),
    Column("lease_until", Float),
    Column("attempts", Integer, nullable=False),
    # The claim reads the best waiting job straight off this partial index.
    Index(
        "ix_jobs_claim",
        text("job_level DESC"),
        "seq",
        sqlite_where=text("state = 'Submitted'"),
        postgresql_where=text("state = 'Submitted'"),
    ),
    Index("ix_jobs_lease", "state", "lease_until"),
    Index("ix_jobs_list_tag", "bucket", "kind", "tag", "created_at", "seq"),
    Index("ix_jobs_list_queue", "bucket", "kind", "queue_id", "created_at", "seq"),
    Index("ix_jobs_queue_state", "queue_id", "state"),
    # The metrics read the jobs that ended since their last scrape through this index.
    Index("ix_jobs_ended", "ended_at"),
)

# Callback deliveries waiting to be made: written in the same transaction that ends the job,
# so a notification is never lost to a crash, and retried with back-off until delivered.
outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("job_id", String(40), nullable=False),
    Column("url", Text, nullable=False),
    Column("content_type", String(64), nullable=False),
    Column("body", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt", Float, nullable=False),
    Column("last_error", Text),
    Index("ix_outbox_due", "next_attempt"),
)

# Custom media templates (spec/queues-templates.md 2); the Official presets are data in
# jobs/templates.py. `params` is the JSON node tree of the Tag's parameters.
templates = Table(
    "templates",
    metadata,
    Column("template_id", String(40), primary_key=True),
    Column("bucket", String(64), nullable=False),
    Column("tag", String(64), nullable=False),
    Column("name", String(128), nullable=False),
    Column("params", Text, nullable=False),
    Column("create_time", Float, nullable=False),
    Column("update_time", Float, nullable=False),
    Index("ix_templates_bucket", "bucket", "create_time", "template_id"),
)

# Worker processes, each under its lease owner string. A worker renews `seen_at` every few
# seconds (jobs/store.py WORKER_BEAT) and deletes its row when it stops; a row not seen for
# three beats belongs to a dead worker, is not counted, and is deleted by the next beat of any worker.
workers = Table(
    "workers",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("kinds", String(64), nullable=False),  # comma-separated: media,pic
    Column("started_at", Float, nullable=False),
    Column("seen_at", Float, nullable=False),
)

# Server-wide values shared by every node (e.g. the key that signs NextTokens).
kv = Table(
    "kv",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
