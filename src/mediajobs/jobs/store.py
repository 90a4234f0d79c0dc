"""JobStore on SQLAlchemy Core: the same statements on SQLite (WAL) and PostgreSQL.

Every state change is one conditional UPDATE whose WHERE clause names the state it leaves
(and, for a worker, the lease it holds), so two writers can never both win. The
database-specific pieces are the claim's row lock (`FOR UPDATE SKIP LOCKED` on PostgreSQL,
the database write lock, BEGIN IMMEDIATE, on SQLite) and its plan (PG_CLAIM_PLAN). Where a
transaction reads a row and then writes on what it read, the read takes a row lock
(`with_for_update`, which SQLite, whose writers are serialized, compiles to nothing): without
it PostgreSQL's READ COMMITTED would let two such transactions interleave.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ClauseElement,
    Engine,
    Float,
    Select,
    Text,
    and_,
    bindparam,
    case,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.sql.dml import Insert, Update

from ..db.engine import AsyncReads, Compiled, session_settings
from ..db.schema import jobs, kv, outbox, queues, workers
from .model import CATEGORY, TERMINAL, Job, NewJob, Queue, State, as_nodes, default_queue_id

DEFAULT_NOTIFY = {"Type": "Url", "Url": "", "Event": "TaskFinish", "State": "Off", "ResultFormat": "XML"}
QUEUE_NAMES = {"Transcoding": "queue-1", "PicProcessing": "queue-pic-process-1"}
MAX_ATTEMPTS = 3
# A worker renews its row in `workers` this often; one not seen for WORKER_DEAD_AFTER beats is dead.
WORKER_BEAT = 5.0
WORKER_DEAD_AFTER = 3
_ACTIVE = tuple(s.value for s in State if s not in TERMINAL)
_ENDED = tuple(s.value for s in TERMINAL)

# The claim must read the first entry of ix_jobs_claim and stop. Statistics of a young or busy
# jobs table are stale (a burst of submissions lands before autovacuum's next ANALYZE), and
# with them the planner prices a bitmap scan of every waiting job plus a sort as cheaper: each
# claim then reads the whole queue, and draining a burst takes quadratic time (procrastinate's
# issue #1242). Switching those plan shapes off leaves the ordered index scan as the only plan.
# A worker's connections start with them switched off (PG_CLAIM_SESSION: see core.run_worker),
# and there the claim is one statement in autocommit; on any other connection the claim runs
# in a transaction that switches them off for itself first (PG_CLAIM_PLAN, one round trip;
# SET LOCAL ends with the transaction). Every other statement a worker runs reads a row by a
# key or a small table, where an index or the one plan left serves as well.
PG_CLAIM_SESSION = {
    "enable_seqscan": "off",
    "enable_bitmapscan": "off",
    "enable_sort": "off",
    "enable_incremental_sort": "off",
}
PG_CLAIM_PLAN = "; ".join(f"SET LOCAL {k} = {v}" for k, v in PG_CLAIM_SESSION.items())


def _param(name: str, type_: Any = None, value: Any = None) -> Any:
    """A bind parameter of a statement compiled once (see Compiled), filled in on each run."""
    return bindparam(name, value, type_=type_, required=False)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _job(row: Any) -> Job:
    return Job(
        seq=row.seq,
        job_id=row.job_id,
        kind=row.kind,
        bucket=row.bucket,
        region=row.region,
        queue_id=row.queue_id,
        tag=row.tag,
        state=row.state,
        job_level=row.job_level,
        created_at=row.created_at,
        started_at=row.started_at,
        ended_at=row.ended_at,
        input_object=row.input_object,
        operation=as_nodes(json.loads(row.operation)),
        result=as_nodes(json.loads(row.result)) if row.result else None,
        code=row.code,
        message=row.message,
        progress=row.progress,
        callback=json.loads(row.callback) if row.callback else {},
        hold=row.hold,
        lease_owner=row.lease_owner,
        lease_until=row.lease_until,
        attempts=row.attempts,
        workflow_id=row.workflow_id,
        inventory_job_id=row.inventory_job_id,
    )


def _callback_target(cb: dict[str, str], notify_json: str | None) -> tuple[str, str] | None:
    """Where a job's end is called back (URL, content type), or None: the job's own CallBack,
    else its queue's notify configuration (`notify_json`, None when the queue is gone)."""
    url = cb.get("CallBack", "")
    fmt = cb.get("CallBackFormat", "")
    if url == "no":
        return None
    if not url:
        notify = json.loads(notify_json) if notify_json else {}
        events = [e.strip() for e in notify.get("Event", "").split(",")]
        if notify.get("State") != "On" or notify.get("Type", "Url") != "Url" or "TaskFinish" not in events:
            return None
        url = notify.get("Url", "")
        fmt = fmt or notify.get("ResultFormat", "")
    if not url or cb.get("CallBackType", "Url") not in ("", "Url"):
        return None
    return url, "application/json" if fmt.upper() == "JSON" else "application/xml"


def _queue_decides(cb: dict[str, str]) -> bool:
    """Whether the job's queue (not the job) says where its end is called back."""
    return not cb.get("CallBack", "")


# The notify configuration of a job's queue, read in a statement on that job.
_QUEUE_NOTIFY = (
    select(queues.c.notify).where(queues.c.queue_id == jobs.c.queue_id).correlate(jobs).scalar_subquery()
)


def _queue(row: Any) -> Queue:
    return Queue(
        queue_id=row.queue_id,
        bucket=row.bucket,
        category=row.category,
        name=row.name,
        state=row.state,
        notify=json.loads(row.notify),
        max_size=row.max_size,
        max_concurrent=row.max_concurrent,
        create_time=row.create_time,
        update_time=row.update_time,
    )


@dataclass(frozen=True)
class ListFilter:
    bucket: str
    kind: str
    tag: str
    queue_id: str = ""
    states: tuple[str, ...] = ()
    start: float | None = None
    end: float | None = None
    workflow_id: str = ""
    inventory_job_id: str = ""
    input_object: str = ""
    ascending: bool = False


@dataclass(frozen=True)
class Finished:
    callback_queued: bool


@dataclass(frozen=True)
class WorkerRow:
    id: str
    host: str
    pid: int
    kinds: str
    started_at: float
    seen_at: float


@dataclass(frozen=True)
class Ended:
    """A job that reached a final state, as the metrics read it."""

    seq: int
    state: str
    kind: str
    tag: str
    created_at: float
    started_at: float | None
    ended_at: float


@dataclass(frozen=True)
class MetricsRead:
    """What one scrape reads, every part of it served by an index or a small table."""

    active: list[tuple[str, str, str, str, int]]  # state, kind, tag, queue_id, jobs (not final)
    queues: list[tuple[str, str]]  # queue_id, category
    ended: list[Ended]  # ended after `ended_after`
    baseline: list[tuple[str, str, str, int]] | None  # state, kind, tag, jobs ended by `baseline_until`
    live_workers: int
    backlog: int


@dataclass(frozen=True)
class Delivery:
    id: int
    job_id: str
    url: str
    content_type: str
    attempts: int


class JobStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        self._known_buckets: set[str] = set()
        # PostgreSQL: reads an API node makes on its event loop (connections opened on first use).
        self.loop_reads = AsyncReads(engine) if self.postgres else None
        # The statements of every job, compiled once (see Compiled), by their variant.
        self._compiled: dict[Hashable, Compiled] = {}
        # queue_id -> its notify configuration as last read. Only ever a guess: a finish that
        # relies on it restates it in its WHERE clause (see `finish`).
        self._notify: dict[str, str] = {}

    def _write(self) -> Connection:
        return self.engine.connect().execution_options(write=True)

    def _autocommit(self) -> Connection:
        """PostgreSQL: each statement its own transaction, one round trip (no BEGIN, no COMMIT)."""
        return self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    def _read(self) -> Connection:
        """For reads. On PostgreSQL in autocommit: under READ COMMITTED each statement sees its
        own snapshot inside a transaction too, so BEGIN and ROLLBACK were two round trips for
        nothing."""
        return self._autocommit() if self.postgres else self.engine.connect()

    @contextmanager
    def _one_write(self) -> Iterator[Connection]:
        """A connection for one statement that writes, in a transaction of its own: autocommit on
        PostgreSQL (one round trip), BEGIN IMMEDIATE ... COMMIT on SQLite."""
        if self.postgres:
            with self._autocommit() as conn:
                yield conn
        else:
            with self._write() as conn, conn.begin():
                yield conn

    def _statement(self, key: Hashable, build: Callable[[], ClauseElement]) -> Compiled:
        """The statement `build` makes, compiled the first time `key` is asked for."""
        found = self._compiled.get(key)
        if found is None:
            found = self._compiled[key] = Compiled(build(), self.engine.dialect)
        return found

    def _insert_ignore(self, table: Any) -> Any:
        return (pg_insert if self.postgres else sqlite_insert)(table)

    # ---- shared values -------------------------------------------------------------------

    def kv_get_or_set(self, name: str, make: str) -> str:
        with self._write() as conn, conn.begin():
            conn.execute(self._insert_ignore(kv).values(name=name, value=make).on_conflict_do_nothing())
            return str(conn.execute(select(kv.c.value).where(kv.c.name == name)).scalar_one())

    # ---- queues ---------------------------------------------------------------------------

    def ensure_queues(self, bucket: str) -> None:
        """Create the bucket's default media and picture queues if they do not exist yet."""
        if bucket in self._known_buckets:
            return
        now = time.time()
        with self._write() as conn, conn.begin():
            for category in CATEGORY.values():
                conn.execute(
                    self._insert_ignore(queues)
                    .values(
                        queue_id=default_queue_id(bucket, category),
                        bucket=bucket,
                        category=category,
                        name=QUEUE_NAMES[category],
                        state="Active",
                        notify=_dumps(DEFAULT_NOTIFY),
                        max_size=10000,
                        max_concurrent=10,
                        create_time=now,
                        update_time=now,
                    )
                    .on_conflict_do_nothing()
                )
        self._known_buckets.add(bucket)

    def get_queue(self, queue_id: str) -> Queue | None:
        with self._read() as conn:
            row = conn.execute(select(queues).where(queues.c.queue_id == queue_id)).first()
        return _queue(row) if row else None

    def list_queues(self, bucket: str, categories: Sequence[str]) -> list[Queue]:
        with self._read() as conn:
            rows = conn.execute(
                select(queues)
                .where(queues.c.bucket == bucket, queues.c.category.in_(list(categories)))
                .order_by(queues.c.create_time, queues.c.queue_id)
            ).all()
        return [_queue(r) for r in rows]

    def update_queue(
        self, queue_id: str, *, name: str, state: str, notify: dict[str, str] | None
    ) -> Queue | None:
        """Rename, pause or resume a queue; its waiting jobs change state in the same transaction,
        so no worker can start one of them after a pause was acknowledged."""
        with self._write() as conn, conn.begin():
            row = conn.execute(select(queues).where(queues.c.queue_id == queue_id).with_for_update()).first()
            if row is None:
                return None
            values: dict[str, Any] = {"name": name, "state": state, "update_time": time.time()}
            if notify is not None:
                values["notify"] = _dumps(notify)
            conn.execute(update(queues).where(queues.c.queue_id == queue_id).values(**values))
            if state != row.state:
                src, dst = (
                    (State.SUBMITTED, State.PAUSE) if state == "Paused" else (State.PAUSE, State.SUBMITTED)
                )
                conn.execute(
                    update(jobs)
                    .where(jobs.c.queue_id == queue_id, jobs.c.state == src.value)
                    .values(state=dst.value)
                )
            row = conn.execute(select(queues).where(queues.c.queue_id == queue_id)).first()
        return _queue(row)

    # ---- jobs: the API side ------------------------------------------------------------------

    @staticmethod
    def _insert_job(notify: str | None) -> Insert:
        # FOR SHARE on the queue's row: a pause of the queue waits for this job (and moves it
        # to Pause), or this job sees the pause; never a job left Submitted in a paused queue.
        queue_state = (
            select(queues.c.state)
            .where(queues.c.queue_id == _param("queue_id_"))
            .with_for_update(read=True)
            .scalar_subquery()
        )
        columns = ("job_id", "kind", "bucket", "region", "tag", "job_level", "created_at", "input_object",
                   "operation", "callback", "hold")  # fmt: skip
        returned: list[Any] = list(jobs.c)
        if notify is not None:
            # Sent when the job commits (PostgreSQL drops repeats within one transaction).
            returned.append(func.pg_notify(notify, "").label("notified"))
        return (
            insert(jobs)
            .values(
                {name: _param(f"{name}_", type_=jobs.c[name].type) for name in columns}
                | {
                    "queue_id": _param("queue_id_"),
                    "state": case((queue_state == "Paused", State.PAUSE.value), else_=State.SUBMITTED.value),
                    "code": "Success",
                    "message": "",
                    "attempts": 0,
                }
            )
            .returning(*returned)
        )

    def create(self, new: Sequence[NewJob], *, notify: str | None = None) -> list[Job]:
        """Insert jobs atomically; a job in a paused queue starts in Pause. On PostgreSQL one job
        is one statement (its own transaction), more are one transaction; `notify`: a channel
        that the same statement NOTIFYs (PostgreSQL only), to wake the workers."""
        assert notify is None or self.postgres, "NOTIFY is PostgreSQL's"
        stmt = self._statement(("create", notify), lambda: self._insert_job(notify))

        def values(n: NewJob) -> dict[str, Any]:
            n = n.with_time()
            return {
                "job_id_": n.job_id, "kind_": n.kind, "bucket_": n.bucket, "region_": n.region,
                "queue_id_": n.queue_id, "tag_": n.tag, "job_level_": n.job_level,
                "created_at_": n.created_at, "input_object_": n.input_object,
                "operation_": _dumps(n.operation), "callback_": _dumps(n.callback), "hold_": n.hold,
            }  # fmt: skip

        if len(new) == 1:
            with self._one_write() as conn:
                return [_job(stmt.run(conn, **values(new[0])).one())]
        with self._write() as conn, conn.begin():
            return [_job(stmt.run(conn, **values(n)).one()) for n in new]

    @staticmethod
    def _get_many(bucket: str, kind: str, wanted: list[str]) -> Select[Any]:
        by_id = jobs.c.job_id == wanted[0] if len(wanted) == 1 else jobs.c.job_id.in_(wanted)
        return select(jobs).where(by_id, jobs.c.bucket == bucket, jobs.c.kind == kind)

    def get_many(self, bucket: str, kind: str, ids: Iterable[str]) -> dict[str, Job]:
        wanted = list(ids)
        if not wanted:
            return {}
        with self._read() as conn:
            rows = conn.execute(self._get_many(bucket, kind, wanted)).all()
        return {r.job_id: _job(r) for r in rows}

    async def get_many_on_loop(self, bucket: str, kind: str, ids: Iterable[str]) -> dict[str, Job]:
        """get_many from the event loop, without a thread (PostgreSQL only: see `loop_reads`)."""
        assert self.loop_reads is not None
        wanted = list(ids)
        if not wanted:
            return {}
        rows = await self.loop_reads.all(self._get_many(bucket, kind, wanted))
        return {r.job_id: _job(r) for r in rows}

    def get(self, job_id: str) -> Job | None:
        with self._read() as conn:
            row = conn.execute(select(jobs).where(jobs.c.job_id == job_id)).first()
        return _job(row) if row else None

    def list_page(self, f: ListFilter, after: tuple[float, int] | None, size: int) -> list[Job]:
        """Up to `size` jobs after the (created_at, seq) cursor, in the filter's order."""
        q = select(jobs).where(jobs.c.bucket == f.bucket, jobs.c.kind == f.kind, jobs.c.tag == f.tag)
        if f.queue_id:
            q = q.where(jobs.c.queue_id == f.queue_id)
        if f.states:
            q = q.where(jobs.c.state.in_(list(f.states)))
        # One lower and one upper bound on created_at, so the index range is as tight as can be:
        # with a cursor the cursor's time replaces the window's edge on its side (SQLite seeks on
        # a single bound per side, and a looser one would make every later page scan further).
        lower = f.start
        upper = f.end + 1 if f.end is not None else None  # the end bound is inclusive to the second
        upper_strict = True
        if after is not None:
            t_after = after[0]
            if f.ascending:
                lower = t_after if lower is None else max(lower, t_after)
            elif upper is None or t_after < upper:
                upper, upper_strict = t_after, False
        if lower is not None:
            q = q.where(jobs.c.created_at >= lower)
        if upper is not None:
            q = q.where(jobs.c.created_at < upper if upper_strict else jobs.c.created_at <= upper)
        if f.workflow_id:
            q = q.where(jobs.c.workflow_id == f.workflow_id)
        if f.inventory_job_id:
            q = q.where(jobs.c.inventory_job_id == f.inventory_job_id)
        if f.input_object:
            q = q.where(jobs.c.input_object == f.input_object)
        if after is not None and self.postgres:
            # A row comparison is an index condition on PostgreSQL: the scan starts at the cursor
            # itself, not at the start of its second (a burst puts thousands of jobs in one).
            cursor = tuple_(jobs.c.created_at, jobs.c.seq)
            q = q.where(cursor > tuple_(*after) if f.ascending else cursor < tuple_(*after))
        elif after is not None:
            t, seq = after
            # The range above is what the index seeks on; this only breaks ties within a second.
            if f.ascending:
                q = q.where(or_(jobs.c.created_at > t, and_(jobs.c.created_at == t, jobs.c.seq > seq)))
            else:
                q = q.where(or_(jobs.c.created_at < t, and_(jobs.c.created_at == t, jobs.c.seq < seq)))
        if f.ascending:
            q = q.order_by(jobs.c.created_at, jobs.c.seq)
        else:
            q = q.order_by(jobs.c.created_at.desc(), jobs.c.seq.desc())
        with self._read() as conn:
            return [_job(r) for r in conn.execute(q.limit(size))]

    def cancel(self, job_id: str) -> tuple[str, Job] | None:
        """Cancel a waiting or running job. Returns (state it had, job now), None if unknown."""
        now = time.time()
        with self._write() as conn, conn.begin():
            row = conn.execute(select(jobs).where(jobs.c.job_id == job_id).with_for_update()).first()
            if row is None:
                return None
            before = row.state
            if before in (State.SUBMITTED, State.PAUSE, State.RUNNING):
                conn.execute(
                    update(jobs)
                    .where(jobs.c.job_id == job_id, jobs.c.state == before)
                    .values(state=State.CANCEL.value, ended_at=now, lease_owner=None, lease_until=None)
                )
                self._enqueue_callback(conn, row.job_id, row.queue_id, json.loads(row.callback or "{}"))
                row = conn.execute(select(jobs).where(jobs.c.job_id == job_id)).first()
        return before, _job(row)

    # ---- jobs: the worker side ---------------------------------------------------------------

    def claim_statement(self, owner: str, lease: float, kinds: Sequence[str] | None = None) -> Update:
        """The claim: one UPDATE that takes the best waiting job and returns it."""
        now = time.time()
        return self._claim_update(kinds, {"owner": owner, "lease_until": now + lease, "now": now})

    def _claim_update(self, kinds: Sequence[str] | None, values: dict[str, Any] | None = None) -> Update:
        values = values or {}
        # A literal 'Submitted' (not a bound parameter) lets SQLite use the partial index.
        pick = select(jobs.c.seq).where(jobs.c.state == literal_column("'Submitted'"))
        if kinds:
            pick = pick.where(jobs.c.kind.in_(list(kinds)))
        pick = pick.order_by(jobs.c.job_level.desc(), jobs.c.seq)
        if self.postgres:
            # The row comes locked (SKIP LOCKED: a row another claimer holds is passed over, not
            # waited for) and PostgreSQL rechecks its state once locked, so the UPDATE finds it by
            # primary key alone. Restating `state = 'Submitted'` out here let the planner reach
            # the row through ix_jobs_lease instead, reading every waiting job to find one. LIMIT
            # is a literal so that a generic plan (prepared statements) still knows it wants one row.
            pick = pick.limit(literal_column("1")).with_for_update(skip_locked=True)
            where = [jobs.c.seq == pick.scalar_subquery()]
        else:
            pick = pick.limit(1)
            where = [jobs.c.seq == pick.scalar_subquery(), jobs.c.state == State.SUBMITTED.value]
        return (
            update(jobs)
            .where(*where)
            .values(
                state=State.RUNNING.value,
                lease_owner=_param("owner", value=values.get("owner")),
                lease_until=_param("lease_until", Float, values.get("lease_until")),
                started_at=func.coalesce(jobs.c.started_at, _param("now", Float, values.get("now"))),
                attempts=jobs.c.attempts + 1,
                progress=0,
            )
            .returning(*jobs.c)
        )

    def claim(self, owner: str, lease: float, kinds: Sequence[str] | None = None) -> Job | None:
        """Take the best waiting job: highest JobLevel, then oldest. One statement."""
        key = tuple(kinds) if kinds else ()
        stmt = self._statement(("claim", key), lambda: self._claim_update(key))
        now = time.time()
        values = {"owner": owner, "lease_until": now + lease, "now": now}
        with self._write() as conn:
            if self.postgres and session_settings(conn).items() >= PG_CLAIM_SESSION.items():
                conn.execution_options(isolation_level="AUTOCOMMIT")
                row = stmt.run(conn, **values).first()
            else:
                with conn.begin():
                    if self.postgres:
                        conn.exec_driver_sql(PG_CLAIM_PLAN)
                    row = stmt.run(conn, **values).first()
        return _job(row) if row else None

    @staticmethod
    def _ours() -> list[Any]:
        """A running job held by `owner_`: what every write of a worker on its job restates."""
        return [
            jobs.c.job_id == _param("job_id_"),
            jobs.c.state == State.RUNNING.value,
            jobs.c.lease_owner == _param("owner_"),
        ]

    def heartbeat(self, job_id: str, owner: str, lease: float) -> bool:
        """Extend the lease; False when the job is no longer ours to run (cancelled, or taken)."""
        stmt = self._statement(
            "heartbeat",
            lambda: update(jobs).where(*self._ours()).values(lease_until=_param("until_", Float)),
        )
        with self._one_write() as conn:
            n = stmt.run(conn, job_id_=job_id, owner_=owner, until_=time.time() + lease).rowcount
        return bool(n)

    def still_mine(self, job_id: str, owner: str) -> bool:
        stmt = self._statement(
            "still_mine",
            lambda: select(jobs.c.state, jobs.c.lease_owner).where(jobs.c.job_id == _param("job_id_")),
        )
        with self._read() as conn:
            row = stmt.run(conn, job_id_=job_id).first()
        return row is not None and row.state == State.RUNNING and row.lease_owner == owner

    def set_progress(self, job_id: str, owner: str, progress: int) -> None:
        stmt = self._statement(
            "progress",
            lambda: (
                update(jobs)
                .where(*self._ours(), or_(jobs.c.progress.is_(None), jobs.c.progress < _param("progress_")))
                .values(progress=_param("progress_"))
            ),
        )
        with self._one_write() as conn:
            stmt.run(conn, job_id_=job_id, owner_=owner, progress_=progress)

    @staticmethod
    def _finish_update(success: bool, *, notify_is: bool) -> Update:
        """End a running job we hold; `notify_is`: only while its queue's notify configuration
        is still the one given (what decided whether to call back)."""
        where = JobStore._ours()
        if notify_is:
            where.append(_param("notify_", type_=Text) == _QUEUE_NOTIFY)
        return (
            update(jobs)
            .where(*where)
            .values(
                state=_param("state_"),
                code=_param("code_"),
                message=_param("message_"),
                result=_param("result_", type_=Text),
                ended_at=_param("now_", type_=Float),
                progress=100 if success else jobs.c.progress,
                lease_owner=None,
                lease_until=None,
            )
        )

    def _finish_in_one(self, success: bool, *, notify_is: bool, call_back: bool) -> Any:
        """PostgreSQL: the end of a job, and its callback's outbox row when one is due, in one
        statement (one transaction); it returns the job's id when the job was ours to end."""
        done = self._finish_update(success, notify_is=notify_is).returning(jobs.c.job_id)
        if not call_back:
            return done
        ended = done.cte("ended")
        queued = (
            insert(outbox)
            .from_select(
                ["job_id", "url", "content_type", "body", "attempts", "next_attempt"],
                select(
                    ended.c.job_id,
                    _param("url_", type_=Text),
                    _param("content_type_", type_=Text),
                    literal(""),
                    literal(0),
                    _param("now_", type_=Float),
                ),
            )
            .returning(outbox.c.id)
            .cte("queued")
        )
        return select(ended.c.job_id).add_cte(queued)

    def finish(
        self,
        job_id: str,
        owner: str,
        state: State,
        *,
        code: str = "Success",
        message: str = "",
        result: Any = None,
        claimed: Job | None = None,
    ) -> Finished | None:
        """End a running job we hold. None (nothing written) when the lease was lost.

        `claimed` (the job as the claim returned it) lets PostgreSQL end the job in one
        statement: its callback settings are known, and its queue's notify configuration, when
        that decides, is the one last read, restated in the WHERE clause. A job whose queue's
        configuration changed since is not touched and ends the long way, which reads it anew.
        """
        now = time.time()
        success = state == State.SUCCESS
        values = {
            "job_id_": job_id, "owner_": owner, "state_": state.value, "code_": code, "message_": message,
            "result_": _dumps(result) if result is not None else None, "now_": now,
        }  # fmt: skip
        if self.postgres and claimed is not None and claimed.job_id == job_id:
            cb = claimed.callback
            notify_is = _queue_decides(cb)
            notify = self._notify.get(claimed.queue_id) if notify_is else None
            if not notify_is or notify is not None:
                target = _callback_target(cb, notify)
                stmt = self._statement(
                    ("finish", success, notify_is, target is not None),
                    lambda: self._finish_in_one(success, notify_is=notify_is, call_back=target is not None),
                )
                if notify is not None:
                    values["notify_"] = notify
                if target is not None:
                    values["url_"], values["content_type_"] = target
                with self._autocommit() as conn:
                    if stmt.run(conn, **values).first() is not None:
                        return Finished(callback_queued=target is not None)
                if not notify_is:
                    return None  # the lease was lost: that WHERE clause said nothing else
        stmt = self._statement(
            ("finish", success),
            lambda: self._finish_update(success, notify_is=False).returning(jobs.c.queue_id, jobs.c.callback),
        )
        with self._write() as conn, conn.begin():
            row = stmt.run(conn, **values).first()
            if row is None:
                return None
            queued = self._enqueue_callback(conn, job_id, row.queue_id, json.loads(row.callback or "{}"))
        return Finished(callback_queued=queued)

    def recover_expired(self) -> int:
        """Jobs whose worker died: back to Submitted, or Failed after MAX_ATTEMPTS tries."""
        now = time.time()
        with self._write() as conn, conn.begin():
            failed = conn.execute(
                update(jobs)
                .where(
                    jobs.c.state == State.RUNNING.value,
                    jobs.c.lease_until < now,
                    jobs.c.attempts >= MAX_ATTEMPTS,
                )
                .values(
                    state=State.FAILED.value,
                    code="InternalError",
                    message=f"The job's worker stopped {MAX_ATTEMPTS} times while running it.",
                    ended_at=now,
                    lease_owner=None,
                    lease_until=None,
                )
                .returning(jobs.c.job_id, jobs.c.queue_id, jobs.c.callback)
            ).all()
            for r in failed:
                self._enqueue_callback(conn, r.job_id, r.queue_id, json.loads(r.callback or "{}"))
            n = conn.execute(
                update(jobs)
                .where(jobs.c.state == State.RUNNING.value, jobs.c.lease_until < now)
                .values(state=State.SUBMITTED.value, lease_owner=None, lease_until=None, progress=None)
            ).rowcount
        return int(n) + len(failed)

    # ---- callbacks -------------------------------------------------------------------------

    def _enqueue_callback(self, conn: Connection, job_id: str, queue_id: str, cb: dict[str, str]) -> bool:
        notify = None
        if _queue_decides(cb):
            notify = conn.execute(select(queues.c.notify).where(queues.c.queue_id == queue_id)).scalar()
            if notify is not None:
                self._notify[queue_id] = notify
        target = _callback_target(cb, notify)
        if target is not None:
            self._queue_callback(conn, job_id, *target)
        return target is not None

    def _queue_callback(self, conn: Connection, job_id: str, url: str, content_type: str) -> None:
        conn.execute(
            insert(outbox).values(
                job_id=job_id,
                url=url,
                content_type=content_type,
                body="",
                attempts=0,
                next_attempt=time.time(),
            )
        )

    def take_due_deliveries(self, limit: int, hold_for: float) -> list[Delivery]:
        """Deliveries due now, each pushed `hold_for` seconds into the future so that no other
        deliverer takes it while this one tries."""
        now = time.time()
        with self._write() as conn, conn.begin():
            rows = conn.execute(
                select(outbox)
                .where(outbox.c.next_attempt <= now)
                .order_by(outbox.c.next_attempt)
                .limit(limit)
            ).all()
            taken = []
            for r in rows:
                n = conn.execute(
                    update(outbox)
                    .where(outbox.c.id == r.id, outbox.c.next_attempt == r.next_attempt)
                    .values(next_attempt=now + hold_for)
                ).rowcount
                if n:
                    taken.append(Delivery(r.id, r.job_id, r.url, r.content_type, r.attempts))
        return taken

    def delivered(self, delivery_id: int) -> None:
        with self._write() as conn, conn.begin():
            conn.execute(outbox.delete().where(outbox.c.id == delivery_id))

    def retry_later(self, delivery_id: int, when: float, error: str, give_up: bool) -> None:
        with self._write() as conn, conn.begin():
            if give_up:
                conn.execute(outbox.delete().where(outbox.c.id == delivery_id))
            else:
                conn.execute(
                    update(outbox)
                    .where(outbox.c.id == delivery_id)
                    .values(attempts=outbox.c.attempts + 1, next_attempt=when, last_error=error[:500])
                )

    def pending_deliveries(self) -> int:
        with self._read() as conn:
            return int(conn.execute(select(func.count()).select_from(outbox)).scalar_one())

    # ---- live workers ----------------------------------------------------------------------

    def worker_beat(self, row: WorkerRow, *, beat: float = WORKER_BEAT) -> int:
        """Register or renew a worker (one upsert), and delete the rows of workers not seen for
        WORKER_DEAD_AFTER beats. Returns how many dead rows went."""
        values = {
            "id": row.id, "host": row.host[:255], "pid": row.pid, "kinds": row.kinds[:64],
            "started_at": row.started_at, "seen_at": row.seen_at,
        }  # fmt: skip
        with self._write() as conn, conn.begin():
            conn.execute(
                self._insert_ignore(workers)
                .values(**values)
                .on_conflict_do_update(index_elements=[workers.c.id], set_={"seen_at": row.seen_at})
            )
            gone = conn.execute(
                workers.delete().where(workers.c.seen_at < row.seen_at - WORKER_DEAD_AFTER * beat)
            ).rowcount
        return int(gone)

    def worker_gone(self, worker_id: str) -> None:
        """A worker stopping gracefully takes its row with it."""
        with self._write() as conn, conn.begin():
            conn.execute(workers.delete().where(workers.c.id == worker_id))

    def live_workers(self, now: float | None = None, *, beat: float = WORKER_BEAT) -> list[WorkerRow]:
        since = (time.time() if now is None else now) - WORKER_DEAD_AFTER * beat
        with self._read() as conn:
            rows = conn.execute(select(workers).where(workers.c.seen_at >= since).order_by(workers.c.id))
            return [WorkerRow(r.id, r.host, r.pid, r.kinds, r.started_at, r.seen_at) for r in rows]

    # ---- metrics ---------------------------------------------------------------------------

    def metrics_read(
        self, *, ended_after: float, baseline_until: float | None, live_since: float
    ) -> MetricsRead:
        """Counts for the metrics, at a cost that does not grow with the jobs table: jobs not yet
        final (through ix_jobs_lease), jobs that ended after `ended_after` (ix_jobs_ended), the
        queues, live workers, the callback outbox. `baseline_until` asks once per API node for
        the final jobs ended by then, the one read that is a pass over the table."""
        count = func.count().label("n")
        with self._read() as conn:
            active = [
                (r.state, r.kind, r.tag, r.queue_id, int(r.n))
                for r in conn.execute(
                    select(jobs.c.state, jobs.c.kind, jobs.c.tag, jobs.c.queue_id, count)
                    .where(jobs.c.state.in_(_ACTIVE))
                    .group_by(jobs.c.state, jobs.c.kind, jobs.c.tag, jobs.c.queue_id)
                )
            ]
            ended = [
                Ended(r.seq, r.state, r.kind, r.tag, r.created_at, r.started_at, r.ended_at)
                for r in conn.execute(
                    select(
                        jobs.c.seq, jobs.c.state, jobs.c.kind, jobs.c.tag, jobs.c.created_at,
                        jobs.c.started_at, jobs.c.ended_at,
                    ).where(jobs.c.ended_at > ended_after, jobs.c.state.in_(_ENDED))
                )
            ]  # fmt: skip
            baseline = None
            if baseline_until is not None:
                baseline = [
                    (r.state, r.kind, r.tag, int(r.n))
                    for r in conn.execute(
                        select(jobs.c.state, jobs.c.kind, jobs.c.tag, count)
                        .where(jobs.c.state.in_(_ENDED), jobs.c.ended_at <= baseline_until)
                        .group_by(jobs.c.state, jobs.c.kind, jobs.c.tag)
                    )
                ]
            qs = [
                (r.queue_id, r.category) for r in conn.execute(select(queues.c.queue_id, queues.c.category))
            ]
            live = conn.execute(
                select(func.count()).select_from(workers).where(workers.c.seen_at >= live_since)
            ).scalar_one()
            backlog = conn.execute(select(func.count()).select_from(outbox)).scalar_one()
        return MetricsRead(active, qs, ended, baseline, int(live), int(backlog))
