"""What only PostgreSQL has: the claim's plan, SKIP LOCKED, LISTEN/NOTIFY, the migrated schema,
`mediajobs migrate --database-url`, and the reads an API node awaits on its event loop."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, inspect, text
from sqlalchemy.dialects.postgresql.psycopg import dialect as psycopg_dialect

from mediajobs.db.engine import make_engine, migrate
from mediajobs.db.schema import HEAD_REVISION, metadata
from mediajobs.jobs.model import MEDIA, NewJob, default_queue_id, new_job_id
from mediajobs.jobs.store import PG_CLAIM_PLAN, JobStore
from mediajobs.jobs.wake import NotifyWaker
from tests.postgres import Cluster

B = "examplebucket-1250000000"
QUEUE = default_queue_id(B, "Transcoding")


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    eng = make_engine(pg_url, fsync=False)
    yield eng
    eng.dispose()


def new(level: int = 0) -> NewJob:
    return NewJob(
        job_id=new_job_id(MEDIA), kind=MEDIA, bucket=B, region="ap-guangzhou", queue_id=QUEUE, tag="MediaInfo",
        job_level=level, input_object="in.mp4", operation=[], callback={},
    )  # fmt: skip


def _plans(engine: Engine, store: JobStore) -> dict[str, str]:
    """EXPLAIN of the claim as the store runs it: a custom plan (values known) and a generic one
    (what a prepared statement may switch to)."""
    stmt = store.claim_statement("w", 30.0, ["media", "pic"])
    custom = str(stmt.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
    generic = str(
        stmt.compile(
            dialect=psycopg_dialect(paramstyle="numeric_dollar"), compile_kwargs={"render_postcompile": True}
        )
    )
    out = {}
    with engine.connect() as conn:
        conn.exec_driver_sql(PG_CLAIM_PLAN)
        out["custom"] = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + custom))
        out["generic"] = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN (GENERIC_PLAN) " + generic))
        conn.rollback()
    return out


@pytest.mark.parametrize("statistics", ["never analyzed", "analyzed while empty"])
def test_claim_reads_the_first_entry_of_the_claim_index_whatever_the_statistics(
    engine: Engine, statistics: str
) -> None:
    """A burst into a fresh table: the statistics say the queue is (nearly) empty, and without
    PG_CLAIM_PLAN the planner sorts every waiting job on each claim (quadratic drain)."""
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE jobs SET (autovacuum_enabled = false)")  # keep them stale
        if statistics == "analyzed while empty":
            conn.exec_driver_sql("ANALYZE jobs")
    store = JobStore(engine)
    store.ensure_queues(B)
    for _ in range(5):
        store.create([new(i % 3) for i in range(600)])
    for kind, plan in _plans(engine, store).items():
        assert "Index Scan using ix_jobs_claim" in plan, (kind, plan)
        assert "Index Scan using jobs_pkey" in plan, (kind, plan)
        for bad in ("Sort", "Seq Scan", "Bitmap"):
            assert bad not in plan, (kind, plan)


def test_skip_locked_passes_over_a_job_another_claimer_holds(engine: Engine) -> None:
    store = JobStore(engine)
    store.ensure_queues(B)
    first, second = store.create([new(1), new(0)])
    with engine.connect() as held:
        held.exec_driver_sql(PG_CLAIM_PLAN)
        row = held.execute(store.claim_statement("w1", 30.0)).one()  # not committed: row locked
        assert row.job_id == first.job_id
        got: list[object] = []
        other = threading.Thread(target=lambda: got.append(store.claim("w2", 30.0)))
        other.start()
        other.join(10)
        assert not other.is_alive(), "the second claimer waited for the first one's lock"
        assert [j.job_id for j in got] == [second.job_id]  # type: ignore[attr-defined]
        held.rollback()
    again = store.claim("w3", 30.0)
    assert again is not None and again.job_id == first.job_id


def test_migrated_schema_is_the_declared_schema(engine: Engine) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == HEAD_REVISION
        collations = dict(
            conn.execute(
                text(
                    "SELECT table_name || '.' || column_name, collation_name FROM information_schema.columns"
                    " WHERE table_name IN ('objects', 'uploads', 'buckets') AND column_name IN ('key', 'name')"
                )
            ).all()
        )
        assert collations == {"objects.key": "C", "uploads.key": "C", "buckets.name": "C"}
        claim_index = conn.execute(
            text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_jobs_claim'")
        ).scalar()
    assert "(job_level DESC, seq) WHERE ((state)::text = 'Submitted'::text)" in str(claim_index)
    columns = {c["name"]: c for c in inspect(engine).get_columns("jobs")}
    assert str(columns["seq"]["type"]) == "BIGINT" and "nextval" in str(columns["seq"]["default"])
    assert str(columns["created_at"]["type"]) == "DOUBLE PRECISION"
    data = {c["name"]: c for c in inspect(engine).get_columns("objects")}["data"]
    assert str(data["type"]) == "BYTEA"


def test_migrate_command_on_an_empty_database(pg_cluster: Cluster, tmp_path: Path) -> None:
    url = pg_cluster.create_database(template="template0")
    done = subprocess.run(
        [sys.executable, "-m", "mediajobs", "migrate", "--database-url", url, "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "schema is up to date" in done.stdout
    # Nodes starting together on an empty database: one migrates, the others wait and find it done.
    url = pg_cluster.create_database(template="template0")
    engines = [make_engine(url) for _ in range(3)]
    failures: list[BaseException] = []

    def run(e: Engine) -> None:
        try:
            migrate(e)
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures
    with engines[0].connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == HEAD_REVISION
    for e in engines:
        e.dispose()


def test_notify_wakes_listeners_and_survives_a_lost_connection(engine: Engine) -> None:
    waker = NotifyWaker(engine)
    listener = waker.listener()
    try:
        assert not listener.wait(0.05)
        waker.notify()
        assert listener.wait(5.0)
        assert not listener.wait(0.05)  # drained
        listener.poke()
        assert listener.wait(5.0)
        # The server drops the LISTEN connection: the next waits make a new one.
        with engine.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE query LIKE 'LISTEN %' AND pid <> pg_backend_pid()"
                )
            )
            conn.commit()
        deadline = time.monotonic() + 10
        while True:
            listener.wait(0.2)
            waker.notify()
            if listener.wait(0.5):
                break
            assert time.monotonic() < deadline, "no wake-up after the LISTEN connection was lost"
    finally:
        listener.close()


def test_job_reads_on_the_event_loop(engine: Engine) -> None:
    store = JobStore(engine)
    store.ensure_queues(B)
    made = store.create([new(), new()])
    ids = [j.job_id for j in made] + ["j-missing"]

    async def read() -> tuple[dict[str, object], dict[str, object]]:
        assert store.loop_reads is not None
        try:
            first = await store.get_many_on_loop(B, MEDIA, ids)
            again = await store.get_many_on_loop(B, MEDIA, ids[:1])  # on the connection kept from the first
            return dict(first), dict(again)
        finally:
            await store.loop_reads.close()

    found, one = asyncio.run(read())
    assert found == store.get_many(B, MEDIA, ids) and set(found) == set(ids[:2])
    assert list(one) == ids[:1]
