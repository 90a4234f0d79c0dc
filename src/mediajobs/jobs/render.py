"""A job as the node tree every response and callback shows (spec/jobs.md 7)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from ..nodes import Nodes, Value
from .model import Job, State

_OFFSET = re.compile(r"^([+-])(\d{2}):?(\d{2})$")


def tz_of(offset: str) -> timezone:
    m = _OFFSET.match(offset.strip())
    if not m:
        raise ValueError(f"time offset {offset!r} is not +HHMM")
    minutes = int(m[2]) * 60 + int(m[3])
    return timezone(timedelta(minutes=-minutes if m[1] == "-" else minutes))


def fmt_time(ts: float | None, tz: timezone) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(int(ts), tz).strftime("%Y-%m-%dT%H:%M:%S%z")


def job_detail(job: Job, tz: timezone) -> Nodes:
    nodes: list[tuple[str, Value]] = [
        ("Code", job.code),
        ("Message", job.message or None),
        ("JobId", job.job_id),
        ("State", job.state),
    ]
    if job.state == State.RUNNING:
        nodes.append(("Progress", str(job.progress or 0)))
    elif job.state == State.SUCCESS:
        nodes.append(("Progress", "100"))
    elif job.state == State.FAILED and job.progress is not None:
        nodes.append(("Progress", str(job.progress)))
    nodes += [
        ("CreationTime", fmt_time(job.created_at, tz)),
        ("StartTime", fmt_time(job.started_at, tz)),
        ("EndTime", fmt_time(job.ended_at, tz)),
        ("QueueId", job.queue_id),
        ("Tag", job.tag),
        ("Input", [("BucketId", job.bucket), ("Object", job.input_object), ("Region", job.region)]),
        ("Operation", merge_result(job.operation, job.result or [])),
    ]
    return nodes


def merge_result(operation: Nodes, result: Nodes) -> Nodes:
    """The Operation as sent plus the result nodes; a result node named like a request node
    (Transcode echoed with its defaults filled in) takes that node's place."""
    replacing = {name: value for name, value in result if any(n == name for n, _ in operation)}
    merged: list[tuple[str, Value]] = [(n, replacing.get(n, v)) for n, v in operation]
    merged += [(n, v) for n, v in result if n not in replacing]
    return merged
