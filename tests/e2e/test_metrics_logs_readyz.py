"""Operations through a real `mediajobs serve`, on SQLite and on PostgreSQL: GET /metrics in the
Prometheus text format, JSON log lines that carry the request and job ids, and /readyz
answering 503 while the database is gone."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mediajobs.db.engine import make_engine
from mediajobs.jobs.model import default_queue_id
from mediajobs.jobs.store import JobStore
from mediajobs.media.samples import make_video
from mediajobs.testing import ServerProcess, running_server
from tests.helpers import create_job, raw_request, wait_job

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def get(srv: ServerProcess, path: str) -> tuple[int, str, str]:
    """Status, content type and body of an unsigned GET on the bare host."""
    try:
        with urllib.request.urlopen(f"{srv.endpoint}{path}", timeout=10) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


def scrape(srv: ServerProcess) -> Samples:
    status, ctype, body = get(srv, "/metrics")
    assert status == 200 and ctype.startswith("text/plain; version="), (status, ctype)
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def until(check: Any, what: str, timeout: float = 20.0) -> Any:
    """Poll `check()` until it returns something true (no sleeps to wait, a deadline instead)."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def json_lines(srv: ServerProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in srv.log().splitlines() if line.startswith("{")]


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> str:
    return "" if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))


def test_metrics_logs_and_readiness(database: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    video = make_video(tmp_path / "clip.mp4", seconds=1.0, width=160, height=120)
    args = ["--workers", "2", "--log-format", "json"]
    env = {"MEDIAJOBS_LOG_LEVEL": "info"}
    with running_server(tmp_path / "data", database_url=database, args=args, env=env) as srv:
        cos = srv.client()
        b = srv.bucket
        cos.upload_file(Bucket=b, Key="in/clip.mp4", LocalFilePath=str(video))
        first = create_job(cos, b, "MediaInfo", "in/clip.mp4", {})
        # A callback no one receives (nothing listens on port 1): it waits in the outbox.
        job = {"Tag": "MediaInfo", "Input": {"Object": "in/clip.mp4"}, "CallBack": "http://127.0.0.1:1/cb"}
        created = cos.ci_create_media_jobs(Bucket=b, Jobs=job, Lst={}, ContentType="application/xml")
        second = created["JobsDetail"][0]["JobId"]
        for job_id in (first, second):
            assert wait_job(cos, b, job_id)["State"] == "Success"
        status, headers, body = raw_request(srv, "GET", "/in/no-such-key")
        request_id = headers["x-cos-request-id"]
        assert status == 404 and f"<RequestId>{request_id}</RequestId>".encode() in body

        # /metrics: the cluster's jobs, queues, workers and outbox, from any API node.
        def settled() -> Samples | None:
            m = scrape(srv)
            done = value(m, "mediajobs_job_duration_seconds_count", tag="MediaInfo") == 2
            return m if done and value(m, "mediajobs_live_workers") == 2 else None

        m = until(settled, "the metrics never showed both jobs and both workers")
        assert value(m, "mediajobs_database_up") == 1
        assert value(m, "mediajobs_jobs", state="Success", tag="MediaInfo", kind="media") == 2
        for state in ("Submitted", "Running", "Pause", "Failed", "Cancel"):
            assert value(m, "mediajobs_jobs", state=state, tag="MediaInfo", kind="media") == 0, state
        assert value(m, "mediajobs_claim_latency_seconds_count", tag="MediaInfo") == 2
        assert value(m, "mediajobs_job_duration_seconds_bucket", tag="MediaInfo", le="+Inf") == 2
        assert (value(m, "mediajobs_job_duration_seconds_sum", tag="MediaInfo") or 0) > 0
        depth = {dict(k[1])["queue_id"]: v for k, v in m.items() if k[0] == "mediajobs_queue_depth"}
        assert depth == {default_queue_id(b, "Transcoding"): 0, default_queue_id(b, "PicProcessing"): 0}
        assert value(m, "mediajobs_callback_backlog") == 1
        # This node's own: requests by operation and status, and the process.
        assert value(m, "mediajobs_http_requests_total", operation="CreateMediaJobs", status="200") == 2
        assert value(m, "mediajobs_http_requests_total", operation="GetObject", status="404") == 1
        assert value(m, "mediajobs_http_request_duration_seconds_count", operation="CreateMediaJobs") == 2
        assert (value(m, "process_resident_memory_bytes") or 0) > 0

        # JSON logs: the failed request under the id the client got, each job's claim and end.
        lines = json_lines(srv)
        assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
        (failed,) = [line for line in lines if line.get("request_id") == request_id]
        assert (failed["level"], failed["status"], failed["code"]) == ("info", 404, "NoSuchKey")
        for job_id in (first, second):
            mine = [
                line
                for line in lines
                if line.get("job_id") == job_id and line["logger"] == "mediajobs.worker"
            ]
            assert [line["state"] for line in mine] == ["Running", "Success"], mine
            assert mine[1]["duration"] >= 0 and mine[0]["worker"] == mine[1]["worker"]
        assert value(m, "mediajobs_live_workers") == len(
            {line["worker"] for line in lines if "worker" in line}
        )

        # /readyz tells the truth about the database.
        assert get(srv, "/readyz")[0] == 200
        with database_gone(request, srv, tmp_path, database):
            status, _, body = until(lambda: (r := get(srv, "/readyz"))[0] == 503 and r, "still ready")
            assert "<Code>ServiceUnavailable</Code>" in body
            if database:  # PostgreSQL: the node says it cannot read the cluster's numbers either
                until(lambda: value(scrape(srv), "mediajobs_database_up") == 0, "database_up stayed 1")
        until(lambda: get(srv, "/readyz")[0] == 200, "not ready after the database came back")
        assert get(srv, "/healthz")[0] == 200
    # Workers that stop gracefully (serve stops its workers with SIGTERM) take their rows with them.
    engine = make_engine(database or f"sqlite:///{srv.data_dir / 'mediajobs.db'}")
    try:
        assert JobStore(engine).live_workers() == []
    finally:
        engine.dispose()


@contextlib.contextmanager
def database_gone(
    request: pytest.FixtureRequest, srv: ServerProcess, tmp_path: Path, url: str
) -> Iterator[None]:
    """SQLite: the data dir is moved away (a fresh connection finds no database file). PostgreSQL:
    the database refuses connections and its sessions are ended, as when its server goes away."""
    if not url:
        srv.data_dir.rename(tmp_path / "moved")
        try:
            yield
        finally:
            (tmp_path / "moved").rename(srv.data_dir)
        return
    cluster = request.getfixturevalue("pg_cluster")
    name = url.split("@/", 1)[1].split("?", 1)[0]
    with cluster.admin() as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        conn.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
    try:
        yield
    finally:
        with cluster.admin() as conn:
            conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
