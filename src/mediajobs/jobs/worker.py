"""The worker: claim, run, heartbeat, finish; and the supervisor that keeps worker processes alive.

One worker process runs one job at a time in its main thread. A watcher thread renews the
lease, notices a cancel (woken by the API through the waker) and enforces the run-time
limit; when a processor will not stop, the watcher ends the whole process and the
supervisor starts a fresh one, so a stuck job can never hold a worker forever.
"""

from __future__ import annotations

import contextvars
import ctypes
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import DBAPIError

from .. import logs
from ..processors import REGISTRY
from ..processors.base import Cancelled, JobContext, JobFailed
from ..storage.service import ObjectService
from .model import Job, State
from .store import WORKER_BEAT, Finished, JobStore, WorkerRow
from .wake import Listener

if TYPE_CHECKING:
    from ..media.vips import ImageLimits

log = logging.getLogger("mediajobs.worker")

GRACE_SECONDS = 5.0


class Worker:
    def __init__(
        self,
        store: JobStore,
        objects: ObjectService,
        *,
        lease: float,
        job_timeout: float,
        listener: Listener | None,
        on_finish: Callable[[], None] = lambda: None,
        idle_poll: float = 1.0,
        hardware: frozenset[str] = frozenset(),
        image_limits: ImageLimits | None = None,
    ) -> None:
        self.hardware = hardware
        self.image_limits = image_limits
        self.store = store
        self.objects = objects
        self.lease = lease
        self.job_timeout = job_timeout
        self.listener = listener
        self.on_finish = on_finish
        self.idle_poll = idle_poll
        # Fits jobs.lease_owner (64 characters), which PostgreSQL enforces.
        self.host = socket.gethostname()
        self.owner = f"{self.host[:40]}:{os.getpid()}:{secrets.token_hex(4)}"
        self.kinds = sorted({p.kind for p in REGISTRY.values()})
        self._last_recover = 0.0
        self.started_at = time.time()
        self.beat_every = WORKER_BEAT
        self._next_beat = 0.0
        self._beat_lock = threading.Lock()

    def beat(self) -> None:
        """Renew this worker's row in `workers` when a beat is due (at most one write per beat,
        whatever the jobs do). Called by the claim loop and by the job watcher, so it beats
        through long jobs and idle waits alike; a failure is logged and retried next beat."""
        now = time.monotonic()
        if now < self._next_beat or not self._beat_lock.acquire(blocking=False):
            return
        try:
            self._next_beat = now + self.beat_every
            row = WorkerRow(
                self.owner, self.host, os.getpid(), ",".join(self.kinds), self.started_at, time.time()
            )
            if self.store.worker_beat(row, beat=self.beat_every):
                log.info("removed the rows of workers that stopped beating")
        except Exception as exc:
            log.warning("worker heartbeat failed: %s", exc)
        finally:
            self._beat_lock.release()

    def sweep_workdirs(self) -> int:
        """Remove the work directories of jobs that no worker runs any more (left by a crash)."""
        tmp_dir = getattr(self.objects.blobs, "tmp_dir", None)
        if tmp_dir is None:
            return 0
        removed = 0
        for d in Path(tmp_dir).glob("job-*-*"):
            job_id = d.name.split("-")[1]
            job = self.store.get(job_id)
            running = job is not None and job.state == State.RUNNING and (job.lease_until or 0) > time.time()
            if not running:
                shutil.rmtree(d, ignore_errors=True)
                removed += 1
        return removed

    def run_forever(self, stop: threading.Event) -> None:
        logs.worker.set(self.owner)
        log.info("worker %s ready for %s", self.owner, ", ".join(sorted(REGISTRY)))
        self.beat()
        try:
            if self.sweep_workdirs():
                log.info("removed work directories left by stopped workers")
        except Exception:
            log.exception("could not sweep old work directories")
        try:
            reconnected = False
            while not stop.is_set():
                try:
                    self.step(stop)
                    reconnected = False
                except DBAPIError as exc:
                    if exc.connection_invalidated and not reconnected:
                        # A pooled connection that the server had dropped (its pool pings only
                        # connections that sat idle): the pool has let go of every connection
                        # made before, and the next try gets a new one at once.
                        log.warning("the database connection was lost; trying again: %s", exc.orig)
                        reconnected = True
                        continue
                    log.exception("worker loop failed; retrying")
                    stop.wait(1.0)
                except Exception:
                    log.exception("worker loop failed; retrying")
                    stop.wait(1.0)
        finally:
            try:
                self.store.worker_gone(self.owner)
            except Exception as exc:
                log.warning("could not remove this worker's row: %s", exc)

    def step(self, stop: threading.Event) -> bool:
        """Claim and run one job; wait for a wake-up when there is none. True if a job ran."""
        self.beat()
        now = time.monotonic()
        if now - self._last_recover > min(5.0, self.lease / 4):
            self._last_recover = now
            if self.store.recover_expired():
                log.warning("returned jobs of dead workers to their queues")
            self.sweep_workdirs()
        job = self.store.claim(self.owner, self.lease, self.kinds)
        if job is None:
            if self.listener is not None:
                self.listener.wait(self.idle_poll)
            else:
                stop.wait(self.idle_poll)
            return False
        self.run_job(job)
        return True

    def run_job(self, job: Job) -> None:
        token = logs.job_id.set(job.job_id)
        try:
            self._run_job(job)
        finally:
            logs.job_id.reset(token)

    def _run_job(self, job: Job) -> None:
        log.info(
            "job %s claimed: %s, attempt %d, waited %.3fs", job.job_id, job.tag, job.attempts,
            (job.started_at or job.created_at) - job.created_at,
            extra={"tag": job.tag, "state": "Running", "attempt": job.attempts},
        )  # fmt: skip
        began = time.monotonic()
        proc = REGISTRY.get(job.tag)
        limit = min(proc.time_limit if proc else self.job_timeout, self.job_timeout) + (job.hold or 0)
        ctx = JobContext(
            job=job,
            objects=self.objects,
            deadline=time.time() + limit,
            on_progress=lambda pct: self.store.set_progress(job.job_id, self.owner, pct),
            hardware=self.hardware,
            image_limits=self.image_limits,
        )
        done = threading.Event()
        # The watcher's log lines carry this job's id and the worker's (a copy of this context).
        watcher = threading.Thread(
            target=contextvars.copy_context().run,
            args=(self._watch, job, ctx, done),
            daemon=True,
            name="job-watcher",
        )
        watcher.start()
        try:
            if proc is None:
                raise JobFailed("InternalError", f"No processor for Tag {job.tag} on this worker.")
            if job.hold:
                # Testing control: stay Running for `hold` seconds (a cancel ends it at once).
                ctx.cancelled.wait(job.hold)
            ctx.check()
            result = proc.run(ctx)
            ctx.check()
            outcome: tuple[State, str, str, Any] = (State.SUCCESS, "Success", "", result)
        except Cancelled:
            log.info("job %s stopped: cancelled or no longer ours", job.job_id)
            outcome = (State.CANCEL, "", "", None)
        except JobFailed as exc:
            outcome = (State.FAILED, exc.code, exc.message, None)
        except Exception:
            log.exception("job %s failed unexpectedly", job.job_id)
            outcome = (State.FAILED, "InternalError", "Unexpected error while running the job.", None)
        finally:
            done.set()
            if self.listener is not None:
                # The watcher sleeps in the listener: wake it so it exits now, not at its next tick.
                self.listener.poke()
        state, code, message, result = outcome
        if state != State.CANCEL:
            ended = self._finish(job, state, code=code, message=message, result=result)
            if ended is None:
                log.info("job %s: result dropped, the job was cancelled or taken over", job.job_id)
            else:
                seconds = time.monotonic() - began
                log.log(
                    logging.INFO if state == State.SUCCESS else logging.WARNING,
                    "job %s finished: %s%s in %.3fs", job.job_id, state.value,
                    f" ({code}: {message})" if state != State.SUCCESS else "", seconds,
                    extra={"tag": job.tag, "state": state.value, "code": code, "duration": round(seconds, 3)},
                )  # fmt: skip
                if ended.callback_queued:
                    self.on_finish()
        watcher.join()

    def _finish(self, job: Job, state: State, **outcome: Any) -> Finished | None:
        """store.finish, once more on a new connection when the pooled one had been dropped:
        the write is conditional, so a first try that did commit makes the second find nothing
        to end (and the result is then reported dropped, though it was kept)."""
        try:
            return self.store.finish(job.job_id, self.owner, state, claimed=job, **outcome)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            log.warning("the database connection was lost while ending job %s; trying again", job.job_id)
            return self.store.finish(job.job_id, self.owner, state, claimed=job, **outcome)

    def _watch(self, job: Job, ctx: JobContext, done: threading.Event) -> None:
        next_beat = time.monotonic() + self.lease / 3
        while not done.is_set():
            if self.listener is not None:
                # Woken by a cancel (or by the job's end), not by submissions: those are for
                # idle workers, and this one claims again as soon as its job is done.
                self.listener.wait(0.25, cancels_only=True)
            else:
                done.wait(0.25)
            if done.is_set():
                return
            self.beat()
            try:
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + self.lease / 3
                    mine = self.store.heartbeat(job.job_id, self.owner, self.lease)
                else:
                    mine = self.store.still_mine(job.job_id, self.owner)
            except Exception:
                log.exception("heartbeat of job %s failed", job.job_id)
                continue
            if not mine:
                ctx.cancelled.set()
                return
            if time.time() > ctx.deadline:
                log.warning("job %s exceeded its run time", job.job_id)
                ended = self._finish(
                    job, State.FAILED, code="JobTimeout", message="The job exceeded its maximum run time."
                )
                if ended is not None and ended.callback_queued:
                    self.on_finish()
                ctx.cancelled.set()
                if not done.wait(GRACE_SECONDS):
                    log.error("job %s does not stop; restarting this worker process", job.job_id)
                    os._exit(3)
                return


# ---- processes -------------------------------------------------------------------------------


PARENT_ENV = "MEDIAJOBS_SUPERVISOR_PID"


def die_with_parent() -> None:
    """A worker started by `serve` must not outlive it (kill -9 of serve included).

    The supervisor's pid comes in the environment: a parent that died before this process got
    here is noticed at once instead of mistaking init for the parent.
    """
    parent = int(os.environ.get(PARENT_ENV) or os.getppid())
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    if os.getppid() != parent:
        os._exit(0)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


class Supervisor:
    """Keeps `count` worker processes running; restarts any that exit."""

    def __init__(self, count: int, env: dict[str, str]) -> None:
        self.count = count
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "mediajobs", "worker", "--workers", "1", "--child"],
            # A fixed mmap threshold stops glibc from growing it after each large free, which
            # made every PyAV probe pay for fresh page faults (4.0 ms -> 2.7 ms per probe).
            env={"MALLOC_MMAP_THRESHOLD_": "131072", **self.env, PARENT_ENV: str(os.getpid())},
            stdin=subprocess.DEVNULL,
        )

    def start(self) -> None:
        self.procs = [self._spawn() for _ in range(self.count)]
        self._thread = threading.Thread(target=self._loop, daemon=True, name="supervisor")
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            for i, p in enumerate(self.procs):
                if p.poll() is not None and not self._stop.is_set():
                    log.warning("worker process %s exited with %s; starting another", p.pid, p.returncode)
                    self.procs[i] = self._spawn()

    def stop(self) -> None:
        self._stop.set()
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + 10
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
