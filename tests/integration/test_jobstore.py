"""The JobStore contract on SQLite and on PostgreSQL: the same tests, the same answers.

Claim order (JobLevel, then age), leases and their expiry, conditional finish, cancel, queue
pause and resume, listing with NextToken, and a burst drained by concurrent claimers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from mediajobs.db.engine import make_engine, migrate
from mediajobs.jobs.model import MEDIA, PIC, NewJob, State, default_queue_id, new_job_id
from mediajobs.jobs.service import JobService
from mediajobs.jobs.store import MAX_ATTEMPTS, PG_CLAIM_SESSION, JobStore, ListFilter

B = "examplebucket-1250000000"
QUEUE = default_queue_id(B, "Transcoding")


@pytest.fixture(params=["sqlite", "postgresql", "postgresql-worker"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """SQLite, PostgreSQL, and PostgreSQL as a worker's engine makes it (its connections start
    with the claim's planner settings, and the claim is then one statement in autocommit)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'mediajobs.db'}"
        fresh = make_engine(url)
        migrate(fresh)
        fresh.dispose()
    else:
        url = str(request.getfixturevalue("pg_url"))
    worker = request.param.endswith("-worker")
    eng = make_engine(url, fsync=False, session=PG_CLAIM_SESSION if worker else None)
    yield eng
    eng.dispose()


@pytest.fixture
def store(engine: Engine) -> JobStore:
    s = JobStore(engine)
    s.ensure_queues(B)
    return s


def new(
    level: int = 0,
    *,
    kind: str = MEDIA,
    created_at: float = 0.0,
    tag: str = "MediaInfo",
    callback: dict[str, str] | None = None,
) -> NewJob:
    queue = QUEUE if kind == MEDIA else default_queue_id(B, "PicProcessing")
    return NewJob(
        job_id=new_job_id(kind), kind=kind, bucket=B, region="ap-guangzhou", queue_id=queue, tag=tag,
        job_level=level, input_object="in.mp4", operation=[("Tag", tag)], callback=callback or {},
        created_at=created_at,
    )  # fmt: skip


def test_claim_takes_the_highest_level_then_the_oldest(store: JobStore) -> None:
    made = store.create([new(0), new(2), new(1), new(2), new(0)])
    order = []
    while (job := store.claim("w1", 30.0)) is not None:
        assert job.state == State.RUNNING and job.lease_owner == "w1" and job.attempts == 1
        order.append(job.job_id)
    assert order == [made[i].job_id for i in (1, 3, 2, 0, 4)]


def test_claim_only_takes_the_kinds_asked_for(store: JobStore) -> None:
    media, pic = store.create([new(0), new(2, kind=PIC)])
    assert store.claim("w", 30.0, [MEDIA]).job_id == media.job_id  # type: ignore[union-attr]
    assert store.claim("w", 30.0, [MEDIA]) is None
    assert store.claim("w", 30.0, [MEDIA, PIC]).job_id == pic.job_id  # type: ignore[union-attr]


def test_finish_is_conditional_on_the_lease(store: JobStore) -> None:
    (job,) = store.create([new()])
    claimed = store.claim("w1", 30.0)
    assert claimed is not None and claimed.job_id == job.job_id
    assert store.finish(job.job_id, "someone-else", State.SUCCESS) is None
    assert store.finish(job.job_id, "someone-else", State.SUCCESS, claimed=claimed) is None
    assert store.heartbeat(job.job_id, "w1", 30.0) and store.still_mine(job.job_id, "w1")
    assert store.finish(job.job_id, "w1", State.SUCCESS, result=[("MediaInfo", None)], claimed=claimed)
    assert store.finish(job.job_id, "w1", State.FAILED) is None  # ended already: nothing written
    assert store.finish(job.job_id, "w1", State.FAILED, claimed=claimed) is None
    done = store.get(job.job_id)
    assert done is not None and done.state == State.SUCCESS and done.progress == 100
    assert done.lease_owner is None and done.result == [("MediaInfo", None)]


def test_an_expired_lease_returns_the_job_then_fails_it(store: JobStore) -> None:
    (job,) = store.create([new()])
    for attempt in range(1, MAX_ATTEMPTS + 1):
        claimed = store.claim(f"w{attempt}", -1.0)  # a lease that has already run out
        assert claimed is not None and claimed.attempts == attempt
        assert store.recover_expired() == 1
        assert not store.heartbeat(job.job_id, f"w{attempt}", 30.0)
        assert store.finish(job.job_id, f"w{attempt}", State.SUCCESS) is None
    ended = store.get(job.job_id)
    assert ended is not None and ended.state == State.FAILED and ended.code == "InternalError"
    assert store.claim("w", 30.0) is None


def test_cancel_a_waiting_and_a_running_job(store: JobStore) -> None:
    waiting, running = store.create([new(0), new(5)])
    assert store.claim("w", 30.0).job_id == running.job_id  # type: ignore[union-attr]
    before, now = store.cancel(waiting.job_id)  # type: ignore[misc]
    assert (before, now.state) == (State.SUBMITTED, State.CANCEL)
    before, now = store.cancel(running.job_id)  # type: ignore[misc]
    assert (before, now.state) == (State.RUNNING, State.CANCEL)
    assert not store.heartbeat(running.job_id, "w", 30.0)  # the worker learns it is no longer its job
    assert store.finish(running.job_id, "w", State.SUCCESS) is None
    assert store.finish(running.job_id, "w", State.SUCCESS, claimed=running) is None
    assert store.get(running.job_id).state == State.CANCEL  # type: ignore[union-attr]
    assert store.claim("w", 30.0) is None
    assert store.cancel("j-unknown") is None


def test_a_finished_job_is_called_back_as_its_queue_says_at_that_moment(store: JobStore) -> None:
    """A worker ends a job knowing what it claimed (one statement on PostgreSQL, which relies on
    the queue's notify configuration as last read): a change of the configuration in between
    still decides, in either direction, and a job's own CallBack wins over its queue's."""
    on = {
        "Type": "Url",
        "Url": "http://127.0.0.1:9/cb",
        "Event": "TaskFinish",
        "State": "On",
        "ResultFormat": "JSON",
    }
    off = {**on, "State": "Off"}

    def run_one(**callback: str) -> bool:
        (made,) = store.create([new(callback=callback)])
        job = store.claim("w", 30.0)
        assert job is not None and job.job_id == made.job_id
        ended = store.finish(job.job_id, "w", State.SUCCESS, claimed=job)
        assert ended is not None and store.get(job.job_id).state == State.SUCCESS  # type: ignore[union-attr]
        return ended.callback_queued

    assert not run_one()  # the default queue calls nobody back
    assert not run_one()  # (the configuration as read above)
    store.update_queue(QUEUE, name="q", state="Active", notify=on)
    assert run_one() and run_one()
    assert store.pending_deliveries() == 2
    due = store.take_due_deliveries(10, 60.0)
    assert {(d.url, d.content_type) for d in due} == {(on["Url"], "application/json")}
    assert not run_one(CallBack="no")
    assert run_one(CallBack="http://127.0.0.1:9/own", CallBackFormat="XML")
    store.update_queue(QUEUE, name="q", state="Active", notify=off)
    assert not run_one()
    assert run_one(CallBack="http://127.0.0.1:9/own")
    assert store.pending_deliveries() == 4


def test_pause_and_resume_a_queue(store: JobStore) -> None:
    (before,) = store.create([new()])
    paused = store.update_queue(QUEUE, name="renamed", state="Paused", notify=None)
    assert paused is not None and paused.state == "Paused" and paused.name == "renamed"
    (during,) = store.create([new()])
    assert {store.get(j.job_id).state for j in (before, during)} == {State.PAUSE}  # type: ignore[union-attr]
    assert store.claim("w", 30.0) is None
    store.update_queue(QUEUE, name="renamed", state="Active", notify=None)
    claimed = [store.claim("w", 30.0), store.claim("w", 30.0)]
    assert [j.job_id for j in claimed if j] == [before.job_id, during.job_id]
    assert store.update_queue("p-unknown", name="x", state="Active", notify=None) is None


def test_list_pages_follow_next_token_in_both_orders(store: JobStore) -> None:
    svc = JobService(store, None)
    t0 = time.time() - 100
    # Several jobs in the same second: the NextToken must break ties by submission order.
    made = store.create([new(created_at=t0 + i // 3) for i in range(10)] + [new(tag="Transcode")])
    media_info = [j.job_id for j in made if j.tag == "MediaInfo"]
    for ascending in (False, True):
        f = ListFilter(bucket=B, kind=MEDIA, tag="MediaInfo", ascending=ascending)
        seen, token = [], ""
        while True:
            page = svc.list_page(f, token, 3)
            seen += [j.job_id for j in page.jobs]
            token = page.next_token
            if not token:
                break
        assert seen == (media_info if ascending else media_info[::-1])
    store.claim("w", 30.0)
    running = svc.list_page(ListFilter(B, MEDIA, "MediaInfo", states=("Running",)), "", 10)
    assert [j.job_id for j in running.jobs] == [media_info[0]]


def test_a_burst_is_drained_by_concurrent_claimers_each_job_once(store: JobStore) -> None:
    """1,000 jobs in a fresh database, claimed and finished by three workers as fast as they can."""
    made = []
    for _ in range(10):
        made += [j.job_id for j in store.create([new(i % 3) for i in range(100)])]
    claimed: list[list[str]] = [[], [], []]
    errors: list[BaseException] = []

    def work(mine: list[str], owner: str) -> None:
        try:
            while (job := store.claim(owner, 30.0)) is not None:
                mine.append(job.job_id)
                assert store.finish(job.job_id, owner, State.SUCCESS, claimed=job) is not None
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(c, f"w{i}")) for i, c in enumerate(claimed)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    everything = [j for c in claimed for j in c]
    assert len(everything) == len(set(everything)) == 1000
    assert set(everything) == set(made)
    assert {store.get(j).state for j in made[::97]} == {State.SUCCESS}  # type: ignore[union-attr]
