"""Composition root: the one place that picks concrete stores and wires them together."""

from __future__ import annotations

import hashlib
import logging
import secrets
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from .api.routes import check_bucket_name
from .api.server import Api, Credentials
from .db.engine import make_engine, migrate
from .jobs.service import JobService
from .jobs.store import JobStore
from .jobs.wake import Waker
from .settings import Settings
from .storage.local import LocalBlobStore
from .storage.service import ObjectService

log = logging.getLogger("mediajobs")


@dataclass(frozen=True)
class Built:
    api: Api
    service: ObjectService
    credentials: dict[str, str]  # pairs to show the operator
    generated: bool


@dataclass(frozen=True)
class Core:
    """What API nodes and workers share: the database, the blobs, the job store, the wake-up."""

    settings: Settings
    objects: ObjectService
    store: JobStore
    waker: Waker


def wake_dir(settings: Settings) -> Path:
    path = settings.data_dir.resolve() / "wake"
    if len(str(path)) > 80:
        # UNIX socket paths are limited to ~107 bytes; keep ours well inside it.
        digest = hashlib.sha256(str(path).encode()).hexdigest()[:16]
        path = Path(tempfile.gettempdir()) / f"mediajobs-wake-{digest}"
    return path


def build_core(settings: Settings, *, migrate_schema: bool = True) -> Core:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.effective_database_url, fsync=settings.fsync)
    if migrate_schema:
        migrate(engine)
    blobs = LocalBlobStore(settings.data_dir, fsync=settings.fsync)
    return Core(settings, ObjectService(engine, blobs), JobStore(engine), Waker(wake_dir(settings)))


def run_worker(settings: Settings, stop: threading.Event) -> None:
    """One worker loop plus a callback deliverer, until `stop` is set."""
    from .api.jobs import tz_of
    from .callbacks.deliver import Deliverer
    from .jobs.worker import Worker

    core = build_core(settings, migrate_schema=False)
    deliverer = Deliverer(core.store, tz_of(settings.time_offset), settings.callback_timeout)
    threading.Thread(target=deliverer.run_forever, args=(stop,), daemon=True, name="callbacks").start()
    listener = core.waker.listener()
    try:
        Worker(
            core.store,
            core.objects,
            lease=settings.lease_seconds,
            job_timeout=settings.job_timeout,
            listener=listener,
            on_finish=deliverer.wake.set,
        ).run_forever(stop)
    finally:
        listener.close()


def read_credentials_file(path: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.replace(":", " ").split()
        if len(parts) != 2:
            raise ValueError(f"{path}:{n}: expected 'SecretId SecretKey'")
        pairs[parts[0]] = parts[1]
    return pairs


def build(settings: Settings) -> Built:
    core = build_core(settings)
    service = core.objects
    service.blobs.sweep_temporary()
    service.collect_garbage()

    static: dict[str, str] = {}
    if settings.secret_id or settings.secret_key:
        if not (settings.secret_id and settings.secret_key):
            raise ValueError("secret_id and secret_key must be given together")
        static[settings.secret_id] = settings.secret_key
    if settings.credentials_file:
        static.update(read_credentials_file(settings.credentials_file))
    generated = False
    shown = dict(static)
    if not static:
        stored = service.credentials()
        if not stored:
            # First start with no credentials: make a pair and keep it in the database,
            # where every API node on the same database finds it.
            sid = "AKID" + secrets.token_hex(16)
            service.add_credentials(sid, secrets.token_urlsafe(24))
            stored = service.credentials()
            generated = True
        shown = stored
    for name in settings.buckets:
        check_bucket_name(name)
        service.create_bucket(name, settings.region, exist_ok=True)
    if settings.default_bucket:
        check_bucket_name(settings.default_bucket)
    jobs = JobService(core.store, core.waker)
    jobs.token_key  # noqa: B018 - create the shared NextToken key before any worker or node needs it
    api = Api(settings, service, Credentials(service, static), jobs)
    return Built(api, service, shown, generated)
