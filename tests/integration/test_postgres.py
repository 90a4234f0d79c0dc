"""What only PostgreSQL has: the claim's plan, SKIP LOCKED, LISTEN/NOTIFY, the migrated schema,
`mediajobs migrate --database-url`, and the reads an API node awaits on its event loop."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, inspect, text
from sqlalchemy.dialects.postgresql.psycopg import dialect as psycopg_dialect
from sqlalchemy.exc import DBAPIError, IntegrityError

from mediajobs.db import engine as engine_module
from mediajobs.db.engine import make_engine, migrate
from mediajobs.db.schema import HEAD_REVISION, metadata
from mediajobs.jobs.model import MEDIA, NewJob, State, default_queue_id, new_job_id
from mediajobs.jobs.service import JobService
from mediajobs.jobs.store import PG_CLAIM_PLAN, PG_CLAIM_SESSION, JobStore
from mediajobs.jobs.wake import CANCEL, NotifyWaker
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


def _plans(engine: Engine, store: JobStore, *, set_local: bool) -> dict[str, str]:
    """EXPLAIN of the claim as the store runs it: a custom plan (values known) and a generic one
    (what a prepared statement may switch to); `set_local`: in a transaction that starts with
    PG_CLAIM_PLAN (else on the connection as it is: a worker's starts with PG_CLAIM_SESSION)."""
    stmt = store.claim_statement("w", 30.0, ["media", "pic"])
    custom = str(stmt.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
    generic = str(
        stmt.compile(
            dialect=psycopg_dialect(paramstyle="numeric_dollar"), compile_kwargs={"render_postcompile": True}
        )
    )
    out = {}
    with engine.connect() as conn:
        if set_local:
            conn.exec_driver_sql(PG_CLAIM_PLAN)
        out["custom"] = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + custom))
        out["generic"] = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN (GENERIC_PLAN) " + generic))
        conn.rollback()
    return out


@pytest.mark.parametrize("statistics", ["never analyzed", "analyzed while empty"])
@pytest.mark.parametrize("settings", ["SET LOCAL in the claim's transaction", "a worker's session"])
def test_claim_reads_the_first_entry_of_the_claim_index_whatever_the_statistics(
    pg_url: str, statistics: str, settings: str
) -> None:
    """A burst into a fresh table: the statistics say the queue is (nearly) empty, and without
    the claim's planner settings (PG_CLAIM_PLAN in the claim's transaction, or PG_CLAIM_SESSION
    on a worker's connections) the planner sorts every waiting job on each claim (quadratic
    drain)."""
    worker = settings == "a worker's session"
    engine = make_engine(pg_url, fsync=False, session=PG_CLAIM_SESSION if worker else None)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE jobs SET (autovacuum_enabled = false)")  # keep them stale
            if statistics == "analyzed while empty":
                conn.exec_driver_sql("ANALYZE jobs")
            shown = {k: conn.exec_driver_sql(f"SHOW {k}").scalar() for k in PG_CLAIM_SESSION}
        assert (shown == PG_CLAIM_SESSION) == worker, shown
        store = JobStore(engine)
        store.ensure_queues(B)
        for _ in range(5):
            store.create([new(i % 3) for i in range(600)])
        for kind, plan in _plans(engine, store, set_local=not worker).items():
            assert "Index Scan using ix_jobs_claim" in plan, (kind, plan)
            assert "Index Scan using jobs_pkey" in plan, (kind, plan)
            for bad in ("Sort", "Seq Scan", "Bitmap"):
                assert bad not in plan, (kind, plan)
    finally:
        engine.dispose()


def test_a_workers_job_is_one_statement_each_to_submit_claim_and_end(pg_url: str) -> None:
    """On a worker's engine the claim and the end of a job are each one statement in autocommit
    (no BEGIN, COMMIT or SET LOCAL), and so is a one-job submission; a connection back in use
    moments after it was returned is not pinged."""
    engine = make_engine(pg_url, fsync=False, session=PG_CLAIM_SESSION)
    seen: list[tuple[str, bool]] = []
    pings: list[object] = []
    ping = engine.dialect.do_ping

    def counting_ping(dbapi_conn: Any) -> bool:
        pings.append(dbapi_conn)
        return ping(dbapi_conn)

    engine.dialect.do_ping = counting_ping  # type: ignore[method-assign]

    @event.listens_for(engine, "before_cursor_execute")
    def _record(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append((statement.split()[0], conn.connection.driver_connection.autocommit))

    try:
        store = JobStore(engine)
        store.ensure_queues(B)
        store.create([new()])
        warm = store.claim("w", 30.0)
        assert warm is not None  # its end reads the queue's notify configuration, once
        assert store.finish(warm.job_id, "w", State.SUCCESS, claimed=warm) is not None
        steps = []
        for step in (
            lambda: store.create([new()]),
            lambda: store.claim("w", 30.0),
            lambda: store.claim("w", 30.0),  # nothing left: one statement all the same
        ):
            seen.clear()
            steps.append(step())
            assert len(seen) == 1 and seen[0][1], seen
        (made,), job, none = steps  # type: ignore[misc]
        assert job is not None and job.job_id == made.job_id and none is None
        assert store.finish(job.job_id, "someone-else", State.SUCCESS, claimed=job) is None
        seen.clear()
        assert store.finish(job.job_id, "w", State.SUCCESS, claimed=job) is not None
        assert seen == [("UPDATE", True)], seen
        assert store.get(job.job_id).state == State.SUCCESS  # type: ignore[union-attr]
        assert pings == []
    finally:
        engine.dispose()


def test_a_pooled_connection_the_server_dropped_is_replaced(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection that sat idle is pinged at checkout and replaced if dead. One in use moments
    ago is not: its next statement fails once, as a lost connection, and the retry that the
    worker makes then (its writes are conditional) finds a new one."""
    engine = make_engine(pg_url, fsync=False, session=PG_CLAIM_SESSION)
    store = JobStore(engine)
    store.ensure_queues(B)

    def kill_pooled() -> None:
        with engine.connect() as conn:
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with make_engine(pg_url).connect() as other:
            other.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid or 0)})")
            other.commit()

    try:
        store.create([new()])
        kill_pooled()
        with pytest.raises(DBAPIError) as lost:
            store.claim("w", 30.0)
        assert lost.value.connection_invalidated
        job = store.claim("w", 30.0)
        assert job is not None
        kill_pooled()
        monkeypatch.setattr(engine_module, "PING_AFTER_IDLE", -1.0)  # as if it had sat idle
        assert store.finish(job.job_id, "w", State.SUCCESS, claimed=job) is not None
    finally:
        engine.dispose()


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
        # A worker running a job sleeps through new work, and wakes for a cancel or a poke.
        waker.notify()
        assert not listener.wait(0.2, cancels_only=True)
        waker.notify()
        waker.notify(CANCEL)
        assert listener.wait(5.0, cancels_only=True)
        listener.poke()
        assert listener.wait(5.0, cancels_only=True)
        assert not listener.wait(0.05)
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


def test_a_submission_wakes_listeners_with_the_statement_that_commits_it(engine: Engine) -> None:
    """On PostgreSQL the insert NOTIFYs the workers itself: one statement for one job, one
    transaction for several, and a notification only for what was committed."""
    store = JobStore(engine)
    store.ensure_queues(B)
    waker = NotifyWaker(engine)
    service = JobService(store, waker)
    listener = waker.listener()
    try:
        assert not listener.wait(0.05)
        (one,) = service.submit([new()])
        assert listener.wait(5.0)
        assert not listener.wait(0.05)  # drained: one notification
        two = service.submit([new(), new()])
        assert listener.wait(5.0)
        with pytest.raises(IntegrityError):
            service.submit([new(), dataclasses.replace(new(), job_id=one.job_id)])  # rolled back
        assert not listener.wait(0.2)
        assert [store.claim("w", 30.0).job_id for _ in range(3)] == [one.job_id] + [j.job_id for j in two]  # type: ignore[union-attr]
        assert store.claim("w", 30.0) is None
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
