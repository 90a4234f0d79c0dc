"""Cluster metrics from the shared database, read at a cost that does not grow with the jobs table.

Any API node answers for the whole cluster. Jobs not yet final are counted exactly at each
scrape (there are few: the queue and the running ones). Final jobs only ever grow in number,
so they are counted once per node (the baseline, at its first scrape) and then incremented from
the jobs that ended since the previous scrape, read through ix_jobs_ended. The same feed fills
the duration histograms, which each node keeps in memory, cumulative from its start.

A job's `ended_at` is stamped by its worker before the commit that makes it visible, so a job
can appear with an `ended_at` a little before the previous scrape. Each scrape therefore reads
back OVERLAP seconds and skips the jobs it counted already (by seq); a job whose end takes more
than OVERLAP seconds to commit, or whose worker's clock lags by more, is missed by the feed
(never counted twice).
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from .model import ALL_STATES, CATEGORY
from .store import WORKER_BEAT, WORKER_DEAD_AFTER, JobStore

OVERLAP = 30.0
# Seconds a job ran (ended_at - started_at); seconds it waited to be claimed (started_at - created_at).
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)
_KIND_OF_CATEGORY = {category: kind for kind, category in CATEGORY.items()}


class Histogram:
    """Cumulative per-label histograms kept as plain lists: one owner thread adds, and readers
    get a copy (`frozen`)."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts: dict[str, list[int]] = {}
        self.sums: dict[str, float] = {}

    def observe(self, label: str, value: float) -> None:
        counts = self.counts.get(label)
        if counts is None:
            counts = self.counts[label] = [0] * (len(self.bounds) + 1)
            self.sums[label] = 0.0
        counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sums[label] += value

    def frozen(self) -> Histogram:
        h = Histogram(self.bounds)
        h.counts = {k: list(v) for k, v in self.counts.items()}
        h.sums = dict(self.sums)
        return h

    def family(self, name: str, doc: str, label: str) -> HistogramMetricFamily:
        fam = HistogramMetricFamily(name, doc, labels=[label])
        for value in sorted(self.counts):
            running, buckets = 0, []
            for bound, n in zip((*self.bounds, float("inf")), self.counts[value], strict=True):
                running += n
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
            fam.add_metric([value], buckets, self.sums[value])
        return fam


@dataclass(frozen=True)
class Snapshot:
    jobs: dict[tuple[str, str, str], int]  # (state, kind, tag) -> jobs
    queue_depth: dict[tuple[str, str], int]  # (queue_id, kind) -> Submitted jobs
    live_workers: int
    backlog: int
    durations: Histogram
    latencies: Histogram


class ClusterMetrics(Collector):
    """A prometheus-client collector; `refresh()` reads the database (in a thread), `collect()`
    only renders the last snapshot, so a scrape's rendering never waits on the database."""

    def __init__(self, store: JobStore, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self._lock = threading.Lock()
        # Final jobs that ended by `_start` come from the baseline, later ones from the feed.
        self._start = clock() - OVERLAP
        self._cutoff = self._start  # the feed has read every job that ended after this, up to now
        self._seen: set[int] = set()  # seqs of jobs counted that ended after `_cutoff`
        self._final: Counter[tuple[str, str, str]] | None = None
        self._durations = Histogram(DURATION_BUCKETS)
        self._latencies = Histogram(LATENCY_BUCKETS)
        self.snapshot: Snapshot | None = None
        self.up = False

    def refresh(self) -> Snapshot:
        """Read what changed since the last refresh; a failure leaves the counts as they were."""
        with self._lock:
            try:
                snap = self._refresh()
            except Exception:
                self.up = False
                raise
            self.snapshot, self.up = snap, True
            return snap

    def _refresh(self) -> Snapshot:
        now = self.clock()
        read = self.store.metrics_read(
            ended_after=self._cutoff,
            baseline_until=self._start if self._final is None else None,
            live_since=now - WORKER_DEAD_AFTER * WORKER_BEAT,
        )
        final = Counter(self._final or {})
        if read.baseline is not None:
            for state, kind, tag, n in read.baseline:
                final[(state, kind, tag)] += n
        durations, latencies = self._durations.frozen(), self._latencies.frozen()
        cutoff = max(self._cutoff, now - OVERLAP)
        seen = set()
        for job in read.ended:
            if job.seq not in self._seen:
                final[(job.state, job.kind, job.tag)] += 1
                if job.started_at is not None:
                    durations.observe(job.tag, max(0.0, job.ended_at - job.started_at))
                    latencies.observe(job.tag, max(0.0, job.started_at - job.created_at))
            if job.ended_at > cutoff:
                seen.add(job.seq)
        # Commit the feed's progress only now that every read succeeded.
        self._final, self._durations, self._latencies = final, durations, latencies
        self._seen, self._cutoff = seen, cutoff

        jobs = dict(final)
        depth: dict[tuple[str, str], int] = {
            (qid, _KIND_OF_CATEGORY.get(category, category)): 0 for qid, category in read.queues
        }
        for state, kind, tag, qid, n in read.active:
            jobs[(state, kind, tag)] = jobs.get((state, kind, tag), 0) + n
            if state == "Submitted":
                depth[(qid, kind)] = depth.get((qid, kind), 0) + n
        # Every state of every (kind, tag) seen, so a series drops to 0 instead of vanishing.
        for kind, tag in {(k, t) for _, k, t in jobs}:
            for state in ALL_STATES:
                jobs.setdefault((state, kind, tag), 0)
        return Snapshot(jobs, depth, read.live_workers, read.backlog, durations.frozen(), latencies.frozen())

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "mediajobs_database_up", "1 when this node's last read of the cluster metrics succeeded."
        )
        up.add_metric([], 1.0 if self.up else 0.0)
        yield up
        snap = self.snapshot
        if snap is None or not self.up:
            return
        jobs = GaugeMetricFamily(
            "mediajobs_jobs", "Jobs in the cluster by state, tag and kind.", labels=["state", "tag", "kind"]
        )
        for (state, kind, tag), n in sorted(snap.jobs.items()):
            jobs.add_metric([state, tag, kind], float(n))
        yield jobs
        depth = GaugeMetricFamily(
            "mediajobs_queue_depth", "Jobs waiting (Submitted) in each queue.", labels=["queue_id", "kind"]
        )
        for (qid, kind), n in sorted(snap.queue_depth.items()):
            depth.add_metric([qid, kind], float(n))
        yield depth
        yield GaugeMetricFamily(
            "mediajobs_live_workers",
            f"Worker processes that beat within the last {WORKER_DEAD_AFTER * WORKER_BEAT:g} seconds.",
            value=float(snap.live_workers),
        )
        yield GaugeMetricFamily(
            "mediajobs_callback_backlog",
            "Callback deliveries waiting in the outbox (due or backing off).",
            value=float(snap.backlog),
        )
        yield snap.durations.family(
            "mediajobs_job_duration_seconds", "Run time of ended jobs (ended - started), by Tag.", "tag"
        )
        yield snap.latencies.family(
            "mediajobs_claim_latency_seconds",
            "Wait of ended jobs from submission to their first claim (started - created), by Tag.",
            "tag",
        )
