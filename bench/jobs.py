#!/usr/bin/env python3
"""Job-engine benchmark for `mediajobs serve`: MediaInfo throughput and latency, and the job API at scale.

Run by hand, not in CI:

    pip install -e '.[test,bench]'
    python bench/jobs.py                    # about 2 minutes on 2 cores (--help for the knobs)

(a) Throughput: 8 client threads (one cos-python-sdk-v5 client each) submit MediaInfo jobs and poll
    DescribeMediaJob every 5 ms until Success, with the server's default worker count and with
    --workers 1 and --workers 2; beside it, a raw in-process PyAV `probe()` loop on the same file.
(b) Latency: one job at a time on an idle server, polled every 2 ms: submit-to-Success p50 / p99.
(c) Scale: 1,000,000 jobs seeded straight into the server's SQLite database (server stopped), then
    DescribeMediaJob of random ids, a filtered DescribeMediaJobs (size 100), the cost of page 1 against
    page ~100 of a NextToken walk, and the database size per million jobs.

Everything runs on 127.0.0.1 in a fresh temporary directory that is removed at the end, also on
failure, Ctrl-C or when --max-seconds runs out. Every client-side time includes the SDK client
(signing, requests, XML parsing). Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import av

try:
    import psutil
except ImportError:  # pragma: no cover - a hint for people running it by hand
    sys.exit("bench/jobs.py needs psutil: pip install psutil  (or pip install -e '.[bench]')")

from common import cpu_summary, log, mediajobs_revision, on_alarm, on_term, pct

from mediajobs.jobs.model import default_queue_id
from mediajobs.media.probe import probe
from mediajobs.media.samples import make_video
from mediajobs.settings import Settings, effective_workers
from mediajobs.testing import REGION, ServerProcess, free_port

T = TypeVar("T")

INPUT_KEY = "bench/input.mp4"
TZ = timezone(timedelta(hours=8))  # the server's default time offset (+0800)
MB = 1_000_000
MIB = 1024 * 1024

# The seeded mix (c): weights per tag and per final state.
SEED_TAGS = (("MediaInfo", 50), ("Transcode", 30), ("Snapshot", 20))
SEED_STATES = (("Success", 90), ("Failed", 7), ("Cancel", 3))
SEED_DAYS = 30


# ---- helpers --------------------------------------------------------------------------------


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def ci_time(ts: float) -> str:
    """A filter time as the SDK sends it: 2026-01-01T00:00:00+0800."""
    return datetime.fromtimestamp(int(ts), TZ).strftime("%Y-%m-%dT%H:%M:%S%z")


def tree_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) of the process `pid` and, separately, of all its descendants."""
    try:
        top = psutil.Process(pid)
        kids = top.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0.0, 0.0
    own = sum(top.cpu_times()[:2])
    rest = 0.0
    for p in kids:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            rest += sum(p.cpu_times()[:2])
    return own, rest


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


# Cores that processes other than this one and the server under test kept busy, per timed phase.
OTHERS: list[tuple[str, float]] = []


@contextlib.contextmanager
def others(label: str, server_pid: int) -> Iterator[None]:
    """Note how much CPU the rest of the machine used while the block ran (a skew warning)."""

    def machine() -> float:
        t = psutil.cpu_times()
        return float(t.user + t.nice + t.system)

    def ours() -> float:
        return self_cpu() + sum(tree_cpu(server_pid))

    m0, o0, t0 = machine(), ours(), time.perf_counter()
    yield
    m1, o1, t1 = machine(), ours(), time.perf_counter()
    OTHERS.append((label, max(0.0, (m1 - m0) - (o1 - o0)) / (t1 - t0)))


def worker_count(pid: int) -> int:
    """Worker processes `serve` started (`python -m mediajobs worker ... --child`)."""
    n = 0
    with contextlib.suppress(psutil.NoSuchProcess):
        for p in psutil.Process(pid).children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                if "worker" in p.cmdline():
                    n += 1
    return n


@dataclass
class Servers:
    """Every server this run started, so that all of them (and their workers) end on any exit."""

    root: Path
    started: list[ServerProcess] = field(default_factory=list)

    def start(self, name: str, args: list[str], data_dir: Path | None = None) -> ServerProcess:
        srv = ServerProcess(data_dir=data_dir or self.root / name, port=free_port(), extra_args=args)
        self.started.append(srv)
        srv.start(timeout=60.0)
        return srv

    def stop(self, srv: ServerProcess) -> None:
        children: list[psutil.Process] = []
        with contextlib.suppress(Exception):
            if srv.proc is not None:
                children = psutil.Process(srv.proc.pid).children(recursive=True)
        with contextlib.suppress(Exception):
            srv.stop()
        for p in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.terminate()
        _, alive = psutil.wait_procs(children, timeout=5)
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()

    def stop_all(self) -> None:
        for srv in self.started:
            self.stop(srv)


# ---- MediaInfo jobs through the SDK ----------------------------------------------------------


def submit(client: Any, bucket: str) -> str:
    resp = client.ci_create_media_jobs(
        Bucket=bucket,
        Jobs={"Tag": "MediaInfo", "Input": {"Object": INPUT_KEY}},
        Lst={},
        ContentType="application/xml",
    )
    return str(resp["JobsDetail"][0]["JobId"])


def wait_success(client: Any, bucket: str, job_id: str, interval: float, timeout: float = 60.0) -> int:
    """Poll DescribeMediaJob every `interval` s until Success; returns the number of polls."""
    deadline = time.monotonic() + timeout
    polls = 0
    while True:
        polls += 1
        detail = client.ci_get_media_jobs(Bucket=bucket, JobIDs=job_id)["JobsDetail"][0]
        state = detail["State"]
        if state == "Success":
            return polls
        if state in ("Failed", "Cancel"):
            raise RuntimeError(f"job {job_id} ended {state}: {detail.get('Code')} {detail.get('Message')}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} still {state} after {timeout:g}s")
        time.sleep(interval)


@dataclass
class Throughput:
    label: str
    workers: int
    jobs: int
    wall: float
    polls: int
    latencies: list[float]
    api_cpu: float
    worker_cpu: float
    client_cpu: float

    @property
    def rate(self) -> float:
        return self.jobs / self.wall


def run_jobs(clients: list[Any], bucket: str, total: int, poll: float) -> tuple[float, int, list[float]]:
    """`total` jobs over len(clients) threads, each submit-then-poll; (wall s, polls, per-job s)."""
    lock = threading.Lock()
    left = [total]
    polls = [0]
    lat: list[float] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(clients) + 1)

    def worker(client: Any) -> None:
        start.wait()
        try:
            while True:
                with lock:
                    if left[0] <= 0 or errors:
                        return
                    left[0] -= 1
                t0 = time.perf_counter()
                n = wait_success(client, bucket, submit(client, bucket), poll)
                dt = time.perf_counter() - t0
                with lock:
                    polls[0] += n
                    lat.append(dt)
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in clients]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"a client thread failed: {errors[0]!r}") from errors[0]
    return wall, polls[0], lat


def throughput(
    servers: Servers, label: str, args: list[str], video: Path, ns: argparse.Namespace
) -> Throughput:
    srv = servers.start(f"tp-{label}", args)
    try:
        assert srv.proc is not None
        workers = worker_count(srv.proc.pid)
        clients = [srv.client() for _ in range(ns.threads)]
        clients[0].put_object_from_local_file(Bucket=srv.bucket, LocalFilePath=str(video), Key=INPUT_KEY)
        run_jobs(clients, srv.bucket, ns.warmup, ns.poll_ms / 1000)
        api0, wk0 = tree_cpu(srv.proc.pid)
        me0 = self_cpu()
        with others(f"(a) {label}", srv.proc.pid):
            wall, polls, lat = run_jobs(clients, srv.bucket, ns.jobs, ns.poll_ms / 1000)
        api1, wk1 = tree_cpu(srv.proc.pid)
        me1 = self_cpu()
        res = Throughput(label, workers, ns.jobs, wall, polls, lat, api1 - api0, wk1 - wk0, me1 - me0)
        log(
            f"(a) {label:12} workers={workers}: {ns.jobs} jobs in {wall:.2f}s = {res.rate:.1f} jobs/s; "
            f"{polls / ns.jobs:.1f} polls/job; per job p50 {pct(lat, 0.5) * 1000:.1f} ms; CPU per job: "
            f"API {res.api_cpu / ns.jobs * 1000:.2f} ms, workers {res.worker_cpu / ns.jobs * 1000:.2f} ms, "
            f"client {res.client_cpu / ns.jobs * 1000:.2f} ms"
        )
        return res
    finally:
        servers.stop(srv)


def probe_loop(path: Path, iters: int) -> float:
    """Seconds per `probe(path)`, in-process, after a few untimed calls."""
    for _ in range(10):
        probe(path)
    t0 = time.perf_counter()
    for _ in range(iters):
        probe(path)
    return (time.perf_counter() - t0) / iters


def latency(srv: ServerProcess, ns: argparse.Namespace) -> list[float]:
    client = srv.client()
    poll = ns.latency_poll_ms / 1000
    out: list[float] = []
    for i in range(ns.latency_warmup + ns.latency_samples):
        time.sleep(0.02)  # idle between jobs: the worker is back waiting for a wake-up
        t0 = time.perf_counter()
        wait_success(client, srv.bucket, submit(client, srv.bucket), poll)
        dt = time.perf_counter() - t0
        if i >= ns.latency_warmup:
            out.append(dt)
    return out


# ---- the API at scale ---------------------------------------------------------------------------

_SEED_COLUMNS = (
    "job_id", "kind", "bucket", "region", "queue_id", "tag", "state", "job_level", "created_at",
    "started_at", "ended_at", "input_object", "operation", "result", "code", "message", "progress",
    "callback", "attempts",
)  # fmt: skip


@dataclass
class Seeded:
    rows: int
    seconds: float
    analyze_seconds: float | None
    first: float
    last: float
    sample_ids: list[str]


def _weighted(choices: tuple[tuple[str, int], ...], n: int, rng: random.Random) -> list[str]:
    names = [c for c, _ in choices]
    weights = [w for _, w in choices]
    return rng.choices(names, weights, k=n)


def seed(db: Path, bucket: str, ns: argparse.Namespace) -> Seeded:
    """Insert `ns.rows` finished jobs in creation order, `ns.batch` rows per transaction."""
    rng = random.Random(20260101)
    queue_id = default_queue_id(bucket, "Transcoding")
    last = time.time() - 3600
    first = last - SEED_DAYS * 86400
    step = (last - first) / ns.rows
    sample_every = max(1, ns.rows // 5000)
    sample_ids: list[str] = []
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        # The server is stopped: nothing else has the file open. These only speed up this
        # connection's bulk load; the server sets its own pragmas on connect.
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute(f"PRAGMA cache_size=-{ns.seed_cache_mib * 1024}")
        sql = f"INSERT INTO jobs ({', '.join(_SEED_COLUMNS)}) VALUES ({', '.join('?' * len(_SEED_COLUMNS))})"
        t0 = time.perf_counter()
        done = 0
        next_report = t0 + 5
        while done < ns.rows:
            n = min(ns.batch, ns.rows - done)
            tags = _weighted(SEED_TAGS, n, rng)
            states = _weighted(SEED_STATES, n, rng)
            batch = []
            for k in range(n):
                i = done + k
                created = first + (i + rng.random()) * step
                started = created + 0.05 + rng.random()
                job_id = f"j{rng.getrandbits(128):032x}"
                if i % sample_every == 0:
                    sample_ids.append(job_id)
                state = states[k]
                batch.append(
                    (
                        job_id, "media", bucket, REGION, queue_id, tags[k], state, 0, created,
                        started, started + rng.random() * 30, f"media/{i % 20000:05d}.mp4", "[]", None,
                        "Success", "", 100 if state == "Success" else None, "{}", 1,
                    )
                )  # fmt: skip
            conn.execute("BEGIN")
            conn.executemany(sql, batch)
            conn.execute("COMMIT")
            done += n
            now = time.perf_counter()
            if now >= next_report or done == ns.rows:
                next_report = now + 5
                log(f"(c) seeded {done:,} / {ns.rows:,} jobs ({done / (now - t0):,.0f} rows/s)")
        seconds = time.perf_counter() - t0
        analyze_seconds = None
        log(f"(c) list query plan without ANALYZE: {list_plan(db, bucket)}")
        if ns.analyze:
            t1 = time.perf_counter()
            conn.execute("ANALYZE")
            analyze_seconds = time.perf_counter() - t1
            log(f"(c) ANALYZE took {analyze_seconds:.1f}s")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return Seeded(ns.rows, seconds, analyze_seconds, first, last, sample_ids)


def row_sizes(db: Path) -> tuple[float, float]:
    """Mean bytes of `operation` and `result` JSON of the real MediaInfo jobs in a server's database."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        op, res = conn.execute(
            "SELECT avg(length(operation)), avg(length(result)) FROM jobs WHERE state = 'Success'"
        ).fetchone()
        return float(op or 0), float(res or 0)
    finally:
        conn.close()


def list_plan(db: Path, bucket: str) -> str:
    """SQLite's plan for the list query the store builds (tag + states + time window, newest first)."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM jobs WHERE bucket = ? AND kind = ? AND tag = ? "
            "AND state IN (?) AND created_at >= ? AND created_at < ? "
            "ORDER BY created_at DESC, seq DESC LIMIT 101",
            (bucket, "media", "MediaInfo", "Success", 0.0, 1e10),
        ).fetchall()
        return "; ".join(str(r[-1]) for r in rows)
    finally:
        conn.close()


CLIENT_CPU: list[float] = []  # this thread's CPU seconds of every `timed` call, in order


def timed(fn: Callable[..., T], *args: Any) -> tuple[float, T]:
    """(wall seconds, result) of fn(*args); the calling thread's CPU time goes to CLIENT_CPU."""
    c0 = time.thread_time()
    t0 = time.perf_counter()
    out = fn(*args)
    wall = time.perf_counter() - t0
    CLIENT_CPU.append(time.thread_time() - c0)
    return wall, out


@dataclass
class Scale:
    get_ms: list[float]
    get_client_ms: float  # mean CPU of the SDK client (this thread) per request
    list_ms: list[float]
    list_client_ms: float
    walk_ms: list[list[float]]  # per timed walk, per page
    db_bytes: int
    wal_bytes: int
    plan: str


def scale(servers: Servers, root: Path, ns: argparse.Namespace) -> tuple[Seeded, Scale]:
    data = root / "scale"
    data.mkdir()
    db = data / "mediajobs.db"
    # The schema exactly as the server makes it (migrations), with the server stopped.
    srv = servers.start("scale", [], data_dir=data)
    bucket = srv.bucket
    servers.stop(srv)
    log(f"(c) schema created by `mediajobs serve`; server stopped; seeding {ns.rows:,} jobs into {db}")
    seeded = seed(db, bucket, ns)
    plan = list_plan(db, bucket)
    log(f"(c) list query plan{' after ANALYZE' if ns.analyze else ''}: {plan}")

    srv = servers.start("scale", [], data_dir=data)
    assert srv.proc is not None
    with others("(c)", srv.proc.pid):
        client = srv.client()
        rng = random.Random(7)
        ids = seeded.sample_ids

        def get(job_id: str) -> None:
            detail = client.ci_get_media_jobs(Bucket=bucket, JobIDs=job_id)["JobsDetail"][0]
            if detail["JobId"] != job_id:
                raise RuntimeError(f"asked for {job_id}, got {detail['JobId']}")

        for _ in range(50):
            get(rng.choice(ids))
        CLIENT_CPU.clear()
        get_ms = [timed(get, rng.choice(ids))[0] * 1000 for _ in range(ns.get_samples)]
        get_client_ms = mean(CLIENT_CPU) * 1000
        log(
            f"(c) GET /jobs/<id>: p50 {pct(get_ms, 0.5):.2f} ms, p99 {pct(get_ms, 0.99):.2f} ms "
            f"(SDK client CPU {get_client_ms:.2f} ms per request)"
        )

        window = 7 * 86400

        def list_once(start: float, token: str = "") -> tuple[int, str]:
            resp = client.ci_list_media_jobs(
                Bucket=bucket, Tag="MediaInfo", States="Success", StartCreationTime=ci_time(start),
                EndCreationTime=ci_time(start + window), Size=100, NextToken=token,
            )  # fmt: skip
            jobs = resp.get("JobsDetail") or []
            return len(jobs), str(resp.get("NextToken") or "")

        span = seeded.last - seeded.first - window
        for _ in range(10):
            list_once(seeded.first + rng.random() * span)
        list_ms = []
        CLIENT_CPU.clear()
        for _ in range(ns.list_samples):
            dt, (n, _) = timed(list_once, seeded.first + rng.random() * span)
            if n != 100:
                raise RuntimeError(f"a 7-day window returned {n} jobs, expected 100")
            list_ms.append(dt * 1000)
        list_client_ms = mean(CLIENT_CPU) * 1000
        log(f"(c) filtered list (size 100): p50 {pct(list_ms, 0.5):.2f} ms, p99 {pct(list_ms, 0.99):.2f} ms")

        walks: list[list[float]] = []
        walk_start = seeded.first + span / 2
        for w in range(ns.walks + 1):  # the first walk warms the server's page cache and is not counted
            token = ""
            times = []
            for page in range(ns.pages):
                dt, (n, token) = timed(list_once, walk_start, token)
                times.append(dt * 1000)
                if n != 100 or (not token and page < ns.pages - 1):
                    raise RuntimeError(f"walk {w + 1} ended at page {page + 1} ({n} jobs)")
            if w:
                walks.append(times)
            log(
                f"(c) NextToken walk {w + 1}{' (warm-up)' if not w else ''}: pages 1-5 mean "
                f"{mean(times[:5]):.2f} ms, pages {ns.pages - 5}-{ns.pages} mean {mean(times[-6:]):.2f} ms"
            )
    servers.stop(srv)

    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    wal = data / "mediajobs.db-wal"
    return seeded, Scale(
        get_ms,
        get_client_ms,
        list_ms,
        list_client_ms,
        walks,
        db.stat().st_size,
        wal.stat().st_size if wal.exists() else 0,
        plan,
    )


# ---- the run ------------------------------------------------------------------------------------


@dataclass
class Row:
    figure: str
    value: str
    target: str = ""
    verdict: str = ""


def check(ok: bool) -> str:
    return "ok" if ok else "BELOW"


def print_table(rows: list[Row]) -> None:
    heads = ("figure", "value", "target", "")
    widths = [max(len(h), *(len(getattr(r, a)) for r in rows)) for h, a in zip(
        heads, ("figure", "value", "target", "verdict"), strict=True
    )]  # fmt: skip
    line = "  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True))
    print(line.rstrip())
    print("  ".join("-" * w for w in widths))
    for r in rows:
        cells = (r.figure, r.value, r.target, r.verdict)
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())


def run(ns: argparse.Namespace, root: Path, servers: Servers) -> int:
    rows: list[Row] = []
    load0 = os.getloadavg()
    log(f"temp dir {root}; load average {load0[0]:.2f}")
    video = make_video(root / "input.mp4", seconds=2.0, width=320, height=240)
    log(f"input: {video.stat().st_size:,} bytes, 2 s 320x240 H.264 + AAC MP4")

    default_workers = effective_workers(Settings())
    real_row: tuple[float, float] | None = None
    plan = ""
    probe_s = 0.0
    tps: list[Throughput] = []
    if "a" in ns.parts:
        configs: list[tuple[str, list[str]]] = [("default", [])]
        configs += [(f"--workers {n}", ["--workers", str(n)]) for n in ns.worker_variants]
        probes: list[float] = []
        for label, args in configs:
            tps.append(throughput(servers, label, args, video, ns))
            # Right after each server run, on the same file, with nothing else running.
            probes.append(probe_loop(video, ns.probe_iters))
            log(f"(a) raw probe(): {1 / probes[-1]:.0f} probes/s, {probes[-1] * 1000:.2f} ms per probe")
        probe_s = statistics.median(probes)
        head = tps[0]
        rows.append(
            Row(
                f"(a) MediaInfo jobs/s, {ns.threads} threads, poll {ns.poll_ms:g} ms, default "
                f"({head.workers} worker{'s' if head.workers != 1 else ''})",
                f"{head.rate:.1f}",
                f">= {ns.target_rate:g}",
                check(head.rate >= ns.target_rate),
            )
        )
        for t in tps[1:]:
            rows.append(Row(f"(a)   same, {t.label}", f"{t.rate:.1f}", "", "(info)"))
        rows.append(
            Row(
                f"(a) raw in-process probe() loop ({ns.probe_iters} x, median of {len(probes)} loops)",
                f"{1 / probe_s:.0f} probes/s = {probe_s * 1000:.2f} ms",
                "",
                "(info)",
            )
        )
        rows.append(Row("(a) ratio jobs/s : probes/s (default)", f"{head.rate * probe_s:.3f}", "", "(info)"))
        for t in tps:
            rows.append(
                Row(
                    f"(a)   CPU ms per job, {t.label}",
                    f"API {t.api_cpu / t.jobs * 1000:.1f}, workers {t.worker_cpu / t.jobs * 1000:.1f}, "
                    f"client {t.client_cpu / t.jobs * 1000:.1f}; {t.polls / t.jobs:.1f} polls/job",
                    "",
                    "(info)",
                )
            )
    if "b" in ns.parts:
        srv = servers.start("latency", [])
        try:
            srv.client().put_object_from_local_file(
                Bucket=srv.bucket, LocalFilePath=str(video), Key=INPUT_KEY
            )
            assert srv.proc is not None
            with others("(b)", srv.proc.pid):
                lat = latency(srv, ns)
        finally:
            servers.stop(srv)
        real_row = row_sizes(srv.data_dir / "mediajobs.db")
        if not probe_s:
            probe_s = probe_loop(video, ns.probe_iters)
        p50, p99 = pct(lat, 0.5) * 1000, pct(lat, 0.99) * 1000
        log(f"(b) submit-to-Success: p50 {p50:.1f} ms, p99 {p99:.1f} ms over {len(lat)} jobs")
        rows.append(
            Row(
                f"(b) submit-to-Success p50, idle server, poll {ns.latency_poll_ms:g} ms",
                f"{p50:.1f} ms",
                f"< {ns.target_p50_ms:g} ms",
                check(p50 < ns.target_p50_ms),
            )
        )
        rows.append(Row("(b) submit-to-Success p99", f"{p99:.1f} ms", "", "(info)"))
        rows.append(Row("(b) raw probe() beside it", f"{probe_s * 1000:.2f} ms", "", "(info)"))
    if "c" in ns.parts:
        seeded, sc = scale(servers, root, ns)
        plan = sc.plan
        rate = seeded.rows / seeded.seconds
        analyzed = (
            f"ANALYZE run ({seeded.analyze_seconds:.1f}s)"
            if seeded.analyze_seconds is not None
            else "no ANALYZE"
        )
        rows.append(
            Row(
                f"(c) seeded jobs ({analyzed})",
                f"{seeded.rows:,} in {seeded.seconds:.0f}s ({rate:,.0f}/s)",
                "",
                "(info)",
            )
        )
        g99 = pct(sc.get_ms, 0.99)
        rows.append(
            Row(
                f"(c) GET /jobs/<id>, random ids, p50 / p99 ({len(sc.get_ms)} samples)",
                f"{pct(sc.get_ms, 0.5):.2f} / {g99:.2f} ms (SDK CPU {sc.get_client_ms:.2f})",
                f"p99 < {ns.target_get_ms:g} ms",
                check(g99 < ns.target_get_ms),
            )
        )
        l99 = pct(sc.list_ms, 0.99)
        rows.append(
            Row(
                f"(c) list MediaInfo+Success, 7-day window, size 100, p50 / p99 ({len(sc.list_ms)})",
                f"{pct(sc.list_ms, 0.5):.2f} / {l99:.2f} ms (SDK CPU {sc.list_client_ms:.2f})",
                f"p99 < {ns.target_list_ms:g} ms",
                check(l99 < ns.target_list_ms),
            )
        )
        firsts = [t for w in sc.walk_ms for t in w[:5]]
        lasts = [t for w in sc.walk_ms for t in w[-6:]]
        ratio = mean(lasts) / mean(firsts)
        rows.append(
            Row(
                f"(c) NextToken walk: pages 1-5 vs {ns.pages - 5}-{ns.pages} mean ({ns.walks} warm walks)",
                f"{mean(firsts):.2f} vs {mean(lasts):.2f} ms (x{ratio:.2f}; medians "
                f"{statistics.median(firsts):.2f} vs {statistics.median(lasts):.2f})",
                "within 20%",
                check(abs(ratio - 1) <= 0.20),
            )
        )
        total = sc.db_bytes + sc.wal_bytes
        per_m = total / MB / seeded.rows * 1e6
        rows.append(
            Row(
                "(c) database size per million jobs (db + wal after checkpoint)",
                f"{per_m:.0f} MB ({sc.db_bytes / MIB:.0f} MiB + {sc.wal_bytes} B wal)",
                "",
                "(info)",
            )
        )
        if real_row is not None:
            rows.append(
                Row(
                    "(c)   not in the seeded rows: a real MediaInfo job's result JSON",
                    f"{real_row[1]:,.0f} B/job (operation {real_row[0]:.0f} B): "
                    f"~+{real_row[1]:,.0f} MB per M",
                    "",
                    "(info)",
                )
            )
    load1 = os.getloadavg()
    print()
    print(
        f"Results ({cpu_summary()}; Python {sys.version.split()[0]}; mediajobs {mediajobs_revision()}; "
        f"PyAV {av.__version__})"
    )
    print(
        f"Clients: threads in this process, one cos-python-sdk-v5 client each, over 127.0.0.1; every time "
        f"includes the SDK. Server default worker count here: {default_workers} "
        f"(cores - 1, at least 1). Load average {load0[0]:.2f} at start, {load1[0]:.2f} at end."
    )
    print()
    print_table(rows)
    print()
    if plan:
        print(f"(c) list query plan: {plan}")
    busy = ", ".join(f"{label} {cores:.2f}" for label, cores in OTHERS)
    print(f"CPU the rest of the machine used during the timed phases (cores, of {os.cpu_count()}): {busy}")
    if any(cores > 0.2 for _, cores in OTHERS):
        print(
            "WARNING: other processes used the CPU while this ran; the figures above are skewed. Rerun idle."
        )
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="abc", help="which parts to run: any of a, b, c (default abc)")
    ap.add_argument("--threads", type=int, default=8, help="client threads in (a) (default 8)")
    ap.add_argument("--jobs", type=int, default=400, help="timed jobs per server run in (a) (default 400)")
    ap.add_argument("--warmup", type=int, default=40, help="untimed jobs first in (a) (default 40)")
    ap.add_argument("--poll-ms", type=float, default=5.0, help="poll interval in (a) (default 5)")
    ap.add_argument(
        "--worker-variants",
        type=lambda s: [int(x) for x in s.split(",") if x],
        default=[1, 2],
        help="extra --workers values to try in (a), comma-separated (default 1,2)",
    )
    ap.add_argument("--probe-iters", type=int, default=300, help="raw probe() calls (default 300)")
    ap.add_argument("--latency-samples", type=int, default=200, help="timed jobs in (b) (default 200)")
    ap.add_argument("--latency-warmup", type=int, default=20, help="untimed jobs first in (b) (default 20)")
    ap.add_argument("--latency-poll-ms", type=float, default=2.0, help="poll interval in (b) (default 2)")
    ap.add_argument("--rows", type=int, default=1_000_000, help="jobs seeded in (c) (default 1000000)")
    ap.add_argument("--batch", type=int, default=50_000, help="rows per seeding transaction (default 50000)")
    ap.add_argument(
        "--seed-cache-mib", type=int, default=256, help="SQLite cache while seeding (default 256)"
    )
    ap.add_argument(
        "--analyze",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run ANALYZE after seeding (default yes)",
    )
    ap.add_argument("--get-samples", type=int, default=500, help="GET /jobs/<id> samples (default 500)")
    ap.add_argument("--list-samples", type=int, default=200, help="filtered list samples (default 200)")
    ap.add_argument("--pages", type=int, default=100, help="pages per NextToken walk (default 100)")
    ap.add_argument(
        "--walks", type=int, default=4, help="timed NextToken walks, after one untimed (default 4)"
    )
    ap.add_argument("--target-rate", type=float, default=100.0)
    ap.add_argument("--target-p50-ms", type=float, default=30.0)
    ap.add_argument("--target-get-ms", type=float, default=5.0)
    ap.add_argument("--target-list-ms", type=float, default=30.0)
    ap.add_argument("--max-seconds", type=int, default=600, help="stop (and clean up) after this long")
    ap.add_argument("--keep", action="store_true", help="keep the temp directory and server logs")
    ns = ap.parse_args(argv)
    if ns.pages < 10:
        ap.error("--pages must be at least 10")
    return ns


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(ns.max_seconds)
    root = Path(tempfile.mkdtemp(prefix="mediajobs-bench-jobs-"))
    servers = Servers(root)
    try:
        return run(ns, root, servers)
    finally:
        signal.alarm(0)
        servers.stop_all()
        if ns.keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
