"""Job callbacks (spec/jobs.md 12): the DescribeMediaJob rendering of the job, POSTed from a
durable outbox with retries and exponential back-off.

The outbox row is written in the transaction that ends the job, so a crash between the job's
end and the delivery only delays it. A slow or dead receiver costs a delivery thread its
timeout, never a worker's time.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import timezone
from typing import Any

import httpx

from .. import logs
from ..jobs.model import Job
from ..jobs.render import job_detail
from ..jobs.store import Delivery, JobStore
from ..nodes import Nodes, render_xml

log = logging.getLogger("mediajobs.callbacks")

MAX_ATTEMPTS = 12  # about 2 hours of back-off in all
BACKOFF_CAP = 1800.0


def to_json_tree(nodes: Nodes) -> dict[str, Any]:
    """The JSON shape of the docs: strings, arrays for repeated names, empty elements omitted."""
    out: dict[str, Any] = {}
    for name, value in nodes:
        if value is None or value == "":
            continue
        item: Any = value if isinstance(value, str) else to_json_tree(value)
        if isinstance(item, dict) and not item:
            continue
        if name in out:
            if not isinstance(out[name], list):
                out[name] = [out[name]]
            out[name].append(item)
        else:
            out[name] = item
    return out


def body_for(job: Job, content_type: str, tz: timezone) -> bytes:
    detail = job_detail(job, tz)
    if content_type == "application/json":
        return json.dumps(
            {"EventName": "TaskFinish", "JobsDetail": to_json_tree(detail)}, ensure_ascii=False
        ).encode()
    return render_xml("Response", [("EventName", "TaskFinish"), ("JobsDetail", detail)])


def backoff(attempt: int) -> float:
    return float(min(BACKOFF_CAP, 2 ** (attempt + 1)))


class Deliverer:
    def __init__(self, store: JobStore, tz: timezone, timeout: float) -> None:
        self.store = store
        self.tz = tz
        self.timeout = timeout
        self.wake = threading.Event()
        self._client: httpx.Client | None = None

    @property
    def client(self) -> httpx.Client:
        # Made on the first delivery: a worker that never calls back never pays for it.
        if self._client is None:
            self._client = httpx.Client(timeout=self.timeout, follow_redirects=False, trust_env=False)
        return self._client

    def run_forever(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                n = self.deliver_due()
            except Exception:
                log.exception("callback delivery round failed")
                n = 0
            if not n:
                self.wake.wait(1.0)
                self.wake.clear()

    def deliver_due(self) -> int:
        taken = self.store.take_due_deliveries(limit=20, hold_for=self.timeout + 30)
        for d in taken:
            self.deliver(d)
        return len(taken)

    def deliver(self, d: Delivery) -> None:
        token = logs.job_id.set(d.job_id)
        try:
            self._deliver(d)
        finally:
            logs.job_id.reset(token)

    def _deliver(self, d: Delivery) -> None:
        job = self.store.get(d.job_id)
        if job is None:
            self.store.delivered(d.id)
            return
        try:
            r = self.client.post(
                d.url,
                content=body_for(job, d.content_type, self.tz),
                headers={"Content-Type": d.content_type, "User-Agent": "mediajobs-callback"},
            )
            ok = 200 <= r.status_code < 300
            error = "" if ok else f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            ok, error = False, f"{type(exc).__name__}: {exc}"
        if ok:
            self.store.delivered(d.id)
            return
        give_up = d.attempts + 1 >= MAX_ATTEMPTS
        log.warning(
            "callback for job %s to %s failed (%s); %s", d.job_id, d.url, error,
            "giving up" if give_up else f"retry {d.attempts + 1} in {backoff(d.attempts):.0f}s",
        )  # fmt: skip
        self.store.retry_later(d.id, time.time() + backoff(d.attempts), error, give_up)
