"""GET /metrics: this node's HTTP and process metrics, and the cluster's from the shared database.

Request counts and durations are plain dicts that only the event loop's thread touches (each
request adds to them once its response is sent), so counting costs no lock; a scrape renders
them on that same thread. The cluster part is read in a worker thread at most every
REFRESH_SECONDS, however many scrapers ask.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import anyio.to_thread
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from ..jobs.metrics import ClusterMetrics, Histogram
from .routes import Target

if TYPE_CHECKING:
    from ..jobs.store import JobStore

log = logging.getLogger("mediajobs.metrics")

REFRESH_SECONDS = 0.5
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_METHODS = frozenset(("GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS"))
# (method, subresource) -> operation, for the object and bucket APIs (names as in COS's docs).
_OBJECT_OPS = {
    ("PUT", "partnumber"): "UploadPart",
    ("GET", "uploadid"): "ListParts",
    ("DELETE", "uploadid"): "AbortMultipartUpload",
    ("POST", "uploads"): "InitiateMultipartUpload",
    ("POST", "uploadid"): "CompleteMultipartUpload",
    ("POST", "image_process"): "ImageProcess",
    ("GET", "ci-process"): "CiProcess",
}
_BUCKET_OPS = {("GET", "uploads"): "ListMultipartUploads", ("POST", "delete"): "DeleteMultipleObjects"}


def operation(
    method: str, target: Target | None, action: str | None, params: Iterable[tuple[str, str]]
) -> str:
    """A bounded name for what a request asked: the CI action, or the COS operation."""
    if target is None:
        return "Invalid"
    if target.health is not None:
        return target.health
    if action is not None:
        return action if action != "Unknown" else "UnknownCiApi"
    if target.service:
        return "ListBuckets" if method in ("GET", "HEAD") else "Invalid"
    if target.bucket is None:
        return "NoBucket"
    if method not in _METHODS:
        return "Invalid"
    names = {k.lower() for k, _ in params}
    table = _BUCKET_OPS if target.key is None else _OBJECT_OPS
    for (m, sub), op in table.items():
        if m == method and sub in names:
            return op
    return method.capitalize() + ("Bucket" if target.key is None else "Object")


class RequestStats(Collector):
    """Requests by operation and status, and their durations by operation (this node only)."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}
        self.durations = Histogram(HTTP_BUCKETS)

    def observe(self, operation: str, status: int, seconds: float) -> None:
        key = (operation, str(status))
        self.counts[key] = self.counts.get(key, 0) + 1
        self.durations.observe(operation, seconds)

    def collect(self) -> Iterator[Metric]:
        total = CounterMetricFamily(
            "mediajobs_http_requests", "HTTP requests answered by this node.", labels=["operation", "status"]
        )
        for (op, status), n in sorted(self.counts.items()):
            total.add_metric([op, status], float(n))
        yield total
        yield self.durations.family(
            "mediajobs_http_request_duration_seconds",
            "Time from a request's arrival to the end of its response, by operation.",
            "operation",
        )


class NodeMetrics:
    """The registry one API node exposes."""

    def __init__(self, store: JobStore) -> None:
        self.requests = RequestStats()
        self.cluster = ClusterMetrics(store)
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.registry.register(self.requests)
        self.registry.register(self.cluster)
        self._refreshed = -REFRESH_SECONDS
        self._lock: asyncio.Lock | None = None

    async def refresh(self) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if time.monotonic() - self._refreshed < REFRESH_SECONDS:
                return
            try:
                await anyio.to_thread.run_sync(self.cluster.refresh)
            except Exception as exc:
                # mediajobs_database_up says so too; the node's own metrics still answer.
                log.warning("cannot read the cluster metrics: %s", exc)
            self._refreshed = time.monotonic()

    async def render(self) -> tuple[bytes, str]:
        """The exposition text (after a refresh of the cluster part) and its content type."""
        await self.refresh()
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
