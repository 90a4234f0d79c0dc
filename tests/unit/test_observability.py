"""Operation names for the request metrics, and the log formats with their context fields."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from mediajobs import logs
from mediajobs.api.metrics import RequestStats, operation
from mediajobs.api.routes import ci_action, resolve

B = "examplebucket-1250000000"
HOST = f"{B}.cos.ap-guangzhou.myqcloud.com"


@pytest.mark.parametrize(
    ("method", "host", "path", "params", "expected"),
    [
        ("GET", "127.0.0.1", "/metrics", {}, "metrics"),
        ("POST", HOST, "/jobs", {}, "CreateMediaJobs"),
        ("GET", f"{B}.ci.ap-guangzhou.myqcloud.com", "/nothing", {}, "UnknownCiApi"),
        ("GET", "127.0.0.1", "/", {}, "ListBuckets"),
        ("GET", "127.0.0.1", "/a.txt", {}, "NoBucket"),
        ("PUT", HOST, "/a.txt", {}, "PutObject"),
        ("PUT", HOST, "/a.txt", {"partNumber": "1", "uploadId": "u"}, "UploadPart"),
        ("POST", HOST, "/a.txt", {"uploads": ""}, "InitiateMultipartUpload"),
        ("POST", HOST, "/a.txt", {"uploadId": "u"}, "CompleteMultipartUpload"),
        ("GET", HOST, "/a.mp4", {"ci-process": "videoinfo"}, "CiProcess"),
        ("HEAD", HOST, "/a.txt", {}, "HeadObject"),
        ("GET", HOST, "/", {"uploads": ""}, "ListMultipartUploads"),
        ("POST", HOST, "/", {"delete": ""}, "DeleteMultipleObjects"),
        ("DELETE", HOST, "/", {}, "DeleteBucket"),
        ("BREW", HOST, "/a.txt", {}, "Invalid"),  # a method no client sends: one bounded label
    ],
)
def test_operation_names(method: str, host: str, path: str, params: dict[str, str], expected: str) -> None:
    target = resolve(host, path, None)
    action = ci_action(method, target.path, params, ci_host=target.ci_host)
    assert operation(method, target, action, params.items()) == expected


def test_request_stats_render_counts_and_cumulative_buckets() -> None:
    stats = RequestStats()
    for seconds in (0.0005, 0.003, 7.0):
        stats.observe("GetObject", 200, seconds)
    stats.observe("GetObject", 404, 0.002)
    total, durations = list(stats.collect())
    assert {(s.labels["status"], s.value) for s in total.samples} == {("200", 3.0), ("404", 1.0)}
    buckets = {s.labels["le"]: s.value for s in durations.samples if s.name.endswith("_bucket")}
    assert (buckets["0.001"], buckets["0.005"], buckets["5.0"], buckets["10.0"], buckets["+Inf"]) == (
        1,
        3,
        3,
        4,
        4,
    )


def _record(msg: str, **extra: object) -> logging.LogRecord:
    return logging.getLogger("mediajobs.test").makeRecord(
        "mediajobs.test", logging.INFO, __file__, 1, msg, (), None, extra=extra
    )


def test_json_lines_carry_the_context_and_extras() -> None:
    fmt = logs.JsonFormatter()
    plain = json.loads(fmt.format(_record("hello")))
    assert set(plain) == {"time", "level", "logger", "message"} and plain["level"] == "info"
    tokens = [logs.request_id.set("rid-1"), logs.job_id.set("j1"), logs.worker.set("w1")]
    try:
        line = json.loads(fmt.format(_record("job %s", status=404, color_message="x")))
    finally:
        for var, token in zip((logs.request_id, logs.job_id, logs.worker), tokens, strict=True):
            var.reset(token)
    assert (line["request_id"], line["job_id"], line["worker"], line["status"]) == ("rid-1", "j1", "w1", 404)
    assert "color_message" not in line
    try:
        raise ValueError("boom")
    except ValueError:
        record = _record("failed")
        record.exc_info = sys.exc_info()
    assert "ValueError: boom" in json.loads(fmt.format(record))["traceback"]
    text = logs.TextFormatter()
    token = logs.job_id.set("j2")
    try:
        assert text.format(_record("done", state="Success")).endswith("mediajobs.test: done job_id=j2")
    finally:
        logs.job_id.reset(token)
