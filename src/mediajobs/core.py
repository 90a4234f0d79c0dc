"""What API nodes and workers share, built without the HTTP layer (workers never import it)."""

from __future__ import annotations

import contextvars
import hashlib
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import logs
from .db.engine import make_engine, migrate
from .jobs.store import PG_CLAIM_SESSION, JobStore
from .jobs.wake import NotifyWaker, SocketWaker, Waker
from .settings import Settings
from .storage.base import BlobStore
from .storage.local import LocalBlobStore
from .storage.service import ObjectService

if TYPE_CHECKING:  # pyvips loads only where images are processed
    from .media.vips import ImageLimits


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


def blob_store(settings: Settings) -> BlobStore:
    """Files under the data dir, or an S3-compatible store for `--storage s3://...`."""
    if not settings.storage.startswith("s3://"):
        return LocalBlobStore(settings.data_dir, fsync=settings.fsync)
    from .storage.s3 import S3BlobStore  # boto3 loads only where it is used

    return S3BlobStore(
        settings.storage,
        scratch=settings.data_dir / "tmp",
        endpoint_url=settings.s3_endpoint,
        region=settings.s3_region,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
    )


def build_core(
    settings: Settings, *, migrate_schema: bool = True, pool_size: int = 10, worker: bool = False
) -> Core:
    """`worker`: for a worker process, whose PostgreSQL connections start with the claim's
    planner settings (PG_CLAIM_SESSION), so that its claim is one statement."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(
        settings.effective_database_url,
        fsync=settings.fsync,
        pool_size=pool_size,
        session=PG_CLAIM_SESSION if worker else None,
    )
    if migrate_schema:
        migrate(engine)
    blobs = blob_store(settings)
    # SQLite: every process is on this machine, so datagram sockets in the data dir reach them
    # all. PostgreSQL: workers may be anywhere, and the database itself carries the wake-up.
    waker: Waker = (
        NotifyWaker(engine) if engine.dialect.name == "postgresql" else SocketWaker(wake_dir(settings))
    )
    return Core(settings, ObjectService(engine, blobs), JobStore(engine), waker)


def image_limits(settings: Settings) -> ImageLimits:
    """The picture engine's limits from the operator's settings (API and workers alike)."""
    from .media.vips import ImageLimits

    return ImageLimits(
        max_input_bytes=settings.image_max_bytes,
        max_pixels=settings.image_max_pixels,
        max_side=settings.image_max_side,
        max_frames=settings.image_max_frames,
        max_animated_pixels=settings.image_max_pixels,
        max_output_side=settings.image_max_output_side,
        max_output_bytes=settings.image_max_output_bytes,
        timeout=settings.image_timeout,
    )


def run_worker(settings: Settings, stop: threading.Event) -> None:
    """One worker loop plus a callback deliverer, until `stop` is set."""
    from .callbacks.deliver import Deliverer
    from .jobs.render import tz_of
    from .jobs.worker import Worker
    from .media.hwaccel import usable

    # The claim loop, its watcher and the callback deliverer: a few connections at most.
    core = build_core(settings, migrate_schema=False, pool_size=3, worker=True)
    deliverer = Deliverer(core.store, tz_of(settings.time_offset), settings.callback_timeout)
    listener = core.waker.listener()

    # A stop asked for while the loop waits for work ends the wait at once.
    def poke_on_stop() -> None:
        stop.wait()
        listener.poke()

    poker = threading.Thread(target=poke_on_stop, daemon=True, name="stop-poke")
    poker.start()
    try:
        worker = Worker(
            core.store,
            core.objects,
            lease=settings.lease_seconds,
            job_timeout=settings.job_timeout,
            listener=listener,
            on_finish=deliverer.wake.set,
            hardware=usable(settings.hardware_encoder),
            image_limits=image_limits(settings),
        )
        # Every log line of this process names the worker, the deliverer's included.
        logs.worker.set(worker.owner)
        threading.Thread(
            target=contextvars.copy_context().run, args=(deliverer.run_forever, stop), daemon=True,
            name="callbacks",
        ).start()  # fmt: skip
        worker.run_forever(stop)
    finally:
        stop.set()
        poker.join()  # its poke lands before the close
        listener.close()
