"""Live workers and the cluster metrics' reads, on SQLite and on PostgreSQL: the workers table
(register, heartbeat, prune, graceful stop), the incremental counts and histograms (baseline,
late commits, no double counting), the readiness probe, and the schema the migrations build."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text, update

from mediajobs.db.engine import make_engine, probe
from mediajobs.db.schema import jobs, metadata
from mediajobs.jobs.metrics import OVERLAP, ClusterMetrics
from mediajobs.jobs.model import MEDIA, NewJob, State, default_queue_id, new_job_id
from mediajobs.jobs.store import WORKER_DEAD_AFTER, JobStore, WorkerRow
from mediajobs.jobs.worker import Worker

B = "examplebucket-1250000000"
QUEUE = default_queue_id(B, "Transcoding")


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url, fsync=False)
    yield eng
    eng.dispose()


@pytest.fixture
def store(engine: Engine) -> JobStore:
    s = JobStore(engine)
    s.ensure_queues(B)
    return s


def new(tag: str = "MediaInfo") -> NewJob:
    return NewJob(
        job_id=new_job_id(MEDIA), kind=MEDIA, bucket=B, region="ap-guangzhou", queue_id=QUEUE, tag=tag,
        job_level=0, input_object="in.mp4", operation=[], callback={},
    )  # fmt: skip


def test_migrated_schema_is_the_declared_schema(engine: Engine) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    sqlite = engine.dialect.name == "sqlite"

    def include(obj: object, name: str | None, kind: str, reflected: bool, other: object) -> bool:
        # SQLite reflects the claim index's `job_level DESC` only approximately: checked below.
        return not (sqlite and kind == "index" and name == "ix_jobs_claim")

    with engine.connect() as conn:
        opts = {"compare_type": True, "include_object": include}
        assert compare_metadata(MigrationContext.configure(conn, opts=opts), metadata) == []
        if sqlite:
            ddl = conn.execute(text("SELECT sql FROM sqlite_master WHERE name = 'ix_jobs_claim'")).scalar()
            assert "(job_level DESC, seq) WHERE state = 'Submitted'" in str(ddl)


def test_workers_register_beat_are_pruned_and_leave(store: JobStore) -> None:
    t0 = time.time()
    a = WorkerRow("host-a:1:aa", "host-a", 1, "media,pic", t0, t0)
    b = WorkerRow("host-b:2:bb", "host-b", 2, "media", t0, t0)
    assert store.worker_beat(a, beat=1.0) == 0 and store.worker_beat(b, beat=1.0) == 0
    assert [w.id for w in store.live_workers(t0, beat=1.0)] == [a.id, b.id]
    # a beats again; b falls silent: live until WORKER_DEAD_AFTER beats have passed
    later = t0 + WORKER_DEAD_AFTER * 1.0 + 0.5
    a2 = WorkerRow(a.id, a.host, a.pid, a.kinds, a.started_at, later - 1.0)
    assert store.worker_beat(a2, beat=1.0) == 0  # b was seen 2.5 beats before this one
    (row,) = [w for w in store.live_workers(later - 1.0, beat=1.0) if w.id == a.id]
    assert row == a2  # a beat renews seen_at and keeps the rest
    assert [w.id for w in store.live_workers(later, beat=1.0)] == [a.id]  # b is dead, not counted
    assert store.worker_beat(WorkerRow(a.id, a.host, a.pid, a.kinds, a.started_at, later), beat=1.0) == 1
    with store.engine.connect() as conn:  # and its row went with a's next beat
        assert conn.execute(text("SELECT id FROM workers")).scalars().all() == [a.id]
    store.worker_gone(a.id)
    assert store.live_workers(later, beat=1.0) == []


def test_a_worker_beats_once_per_period_and_removes_its_row_when_it_stops(store: JobStore) -> None:
    class NoBlobs:  # the loop never touches objects when there is no job
        blobs = None

    w = Worker(store, NoBlobs(), lease=30.0, job_timeout=60.0, listener=None, idle_poll=0.02)  # type: ignore[arg-type]
    stop = threading.Event()
    t = threading.Thread(target=w.run_forever, args=(stop,))
    t.start()
    try:
        deadline = time.monotonic() + 10
        while not store.live_workers():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        (row,) = store.live_workers()
        assert (row.id, row.kinds) == (w.owner, "media,pic")
        time.sleep(0.3)  # some fifteen idle wake-ups: still the first beat, no write per loop
        assert store.live_workers()[0].seen_at == row.seen_at
    finally:
        stop.set()
        t.join(10)
    assert store.live_workers() == []


def _finish(store: JobStore, n: int, state: State = State.SUCCESS, tag: str = "MediaInfo") -> list[str]:
    """Create n jobs, then claim and end n (the oldest waiting first); the ids of those ended."""
    ended = []
    for _ in store.create([new(tag) for _ in range(n)]):
        job = store.claim("w", 30.0)
        assert job is not None
        assert store.finish(job.job_id, "w", state) is not None
        ended.append(job.job_id)
    return ended


def _set_times(engine: Engine, job_ids: list[str], **values: float) -> None:
    with engine.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.job_id.in_(job_ids)).values(**values))


def test_metrics_count_final_jobs_once_from_a_baseline_and_a_feed(engine: Engine, store: JobStore) -> None:
    now = [time.time()]
    old = _finish(store, 3)
    _finish(store, 1, State.FAILED, tag="Transcode")
    _set_times(engine, old, created_at=now[0] - 500, started_at=now[0] - 400, ended_at=now[0] - 300)
    store.create([new(), new()])
    running = store.claim("w", 30.0)
    assert running is not None
    m = ClusterMetrics(store, clock=lambda: now[0])

    snap = m.refresh()
    assert snap.jobs[("Success", MEDIA, "MediaInfo")] == 3  # from the baseline
    assert snap.jobs[("Failed", MEDIA, "Transcode")] == 1  # ended just now: from the feed
    assert (
        snap.jobs[("Running", MEDIA, "MediaInfo")] == 1 and snap.jobs[("Submitted", MEDIA, "MediaInfo")] == 1
    )
    assert snap.jobs[("Cancel", MEDIA, "MediaInfo")] == 0  # every state of a (kind, tag) seen
    assert snap.queue_depth == {(QUEUE, MEDIA): 1, (default_queue_id(B, "PicProcessing"), "pic"): 0}
    # Histograms hold what ended since the node started (OVERLAP before its start included).
    assert sum(snap.durations.counts["Transcode"]) == 1 and "MediaInfo" not in snap.durations.counts

    # A job ends; scrapes after it count it once, however often they read it back.
    assert store.finish(running.job_id, "w", State.SUCCESS) is not None
    _set_times(engine, [running.job_id], created_at=now[0] - 3, started_at=now[0] - 2, ended_at=now[0] + 1)
    for step in (2, 3, OVERLAP / 2, OVERLAP + 5):
        now[0] += step
        snap = m.refresh()
        assert snap.jobs[("Success", MEDIA, "MediaInfo")] == 4
        assert snap.jobs[("Running", MEDIA, "MediaInfo")] == 0
        assert sum(snap.durations.counts["MediaInfo"]) == 1
        assert snap.durations.sums["MediaInfo"] == pytest.approx(3.0)
        assert snap.latencies.sums["MediaInfo"] == pytest.approx(1.0)

    # A finish that commits late, stamped before the last scrape but inside OVERLAP: counted once.
    (late,) = _finish(store, 1)
    _set_times(engine, [late], created_at=now[0] - 12, started_at=now[0] - 11, ended_at=now[0] - 10)
    now[0] += 1
    for _ in range(2):
        snap = m.refresh()
        assert snap.jobs[("Success", MEDIA, "MediaInfo")] == 5
        assert sum(snap.durations.counts["MediaInfo"]) == 2
    # A node started now counts everything in its baseline: the same totals.
    other = ClusterMetrics(store, clock=lambda: now[0] + 3600)
    assert other.refresh().jobs == snap.jobs


def test_metrics_read_no_more_than_the_jobs_that_ended_since_the_last_scrape(store: JobStore) -> None:
    _finish(store, 20)
    m = ClusterMetrics(store)
    m.refresh()
    read = store.metrics_read(ended_after=m._cutoff, baseline_until=None, live_since=0.0)
    assert len(read.ended) == 20  # still inside OVERLAP: read back, skipped by seq
    later = time.time() + OVERLAP + 1
    read = store.metrics_read(ended_after=later, baseline_until=None, live_since=0.0)
    assert read.ended == [] and read.baseline is None


def test_the_readiness_probe_fails_when_the_database_is_gone(tmp_path: Path, pg_url: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    sqlite = make_engine(f"sqlite:///{data / 'mediajobs.db'}")
    with sqlite.connect() as conn:
        conn.execute(text("SELECT 1"))
    probe(sqlite)
    data.rename(tmp_path / "moved")
    with pytest.raises(Exception, match="unable to open"):
        probe(sqlite)
    with sqlite.connect() as conn:  # a pooled connection does not notice: it is why probe opens its own
        conn.execute(text("SELECT 1"))
    sqlite.dispose()

    pg = make_engine(pg_url)
    probe(pg)
    pg.dispose()
    broken = make_engine(pg_url.replace("@/", "@/no_such_database_"))
    with pytest.raises(Exception, match="no_such_database_"):
        probe(broken, timeout=1.0)
    broken.dispose()
