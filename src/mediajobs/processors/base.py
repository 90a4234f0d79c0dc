"""What a processor is: a validator for its Tag's Operation nodes and a run function.

A processor turns one job into outputs and result nodes. It never touches the job store:
the worker hands it a JobContext and records whatever it returns or raises.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

from ..errors import MediaJobsError
from ..jobs.model import Job
from ..nodes import Nodes
from ..storage.service import ObjectService

if TYPE_CHECKING:
    from ..media.vips import ImageLimits


class JobFailed(Exception):
    """A job ended in Failed with this Code and Message (protocol.md 4.3)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Cancelled(Exception):
    """The job was cancelled (or its lease lost) while it ran: stop, write nothing."""


class InvalidOperation(ValueError):
    """The request's Operation nodes are wrong for this Tag (becomes 400 InvalidArgument)."""


@dataclass
class Submission:
    """What a validator may look at besides its Operation element."""

    bucket: str
    input_object: str
    operation: ET.Element | None


@dataclass
class JobContext:
    job: Job
    objects: ObjectService
    deadline: float
    cancelled: threading.Event = field(default_factory=threading.Event)
    on_progress: Callable[[int], None] = lambda _p: None
    hardware: frozenset[str] = frozenset()  # usable hardware encoders, when the operator allows them
    image_limits: ImageLimits | None = None  # the picture engine's limits; None: its defaults

    def check(self) -> None:
        """Call between steps: raises if the job was cancelled or ran out of time."""
        if self.cancelled.is_set():
            raise Cancelled()
        if time.time() > self.deadline:
            raise JobFailed("JobTimeout", "The job exceeded its maximum run time.")

    def progress(self, pct: int) -> None:
        self.on_progress(max(0, min(99, pct)))

    @contextlib.contextmanager
    def workdir(self) -> Iterator[Path]:
        """A private temporary directory, removed on every path out (cancel and failure included)."""
        tmp_root = getattr(self.objects.blobs, "tmp_dir", None)
        with tempfile.TemporaryDirectory(dir=tmp_root, prefix=f"job-{self.job.job_id}-") as d:
            yield Path(d)

    def store_output(self, bucket: str, key: str, path: Path) -> str:
        """Write a finished local file (of our workdir) as the object `bucket/key`; return its MD5 (hex).

        The file is moved into the blob store (renamed into a local one, streamed up to a
        remote one such as S3); it is gone from the workdir afterwards.
        """
        adopt = getattr(self.objects.blobs, "adopt", None)
        if adopt is not None:
            info = adopt(path)
        else:
            try:
                with open(path, "rb") as fh:
                    info = self.objects.write_blob(iter(lambda: fh.read(1024 * 1024), b""))
            except OSError as exc:
                raise JobFailed(
                    "OutputWriteFailed", f"The output {key!r} could not be written: {exc}"
                ) from exc
            path.unlink()
        try:
            meta = self.objects.put(bucket, key, info, headers={"Content-Type": _content_type(key)})
        except Exception as exc:
            raise JobFailed("OutputWriteFailed", f"The output {key!r} could not be written: {exc}") from exc
        return meta.etag

    @contextlib.contextmanager
    def input_file(self, key: str | None = None) -> Iterator[Path]:
        """A local path holding the bytes of the input object (or `key`), for reading only."""
        key = key if key is not None else self.job.input_object
        try:
            meta = self.objects.head(self.job.bucket, key)
        except MediaJobsError as exc:  # NoSuchKey, NoSuchBucket (a database error is no answer)
            raise JobFailed("InputFileNotExist", f"The input object {key!r} does not exist.") from exc
        with self.objects.local_file(meta) as path:
            yield path


def _content_type(key: str) -> str:
    import mimetypes

    return mimetypes.guess_type(key)[0] or "application/octet-stream"


class Processor(Protocol):
    tag: ClassVar[str]
    kind: ClassVar[str]  # "media" or "pic"
    time_limit: ClassVar[float]  # seconds a job of this Tag may run
    # (optional) `needs_input: ClassVar[bool] = False` for a Tag that may run without Input.Object

    def validate(self, sub: Submission) -> None:
        """Raise InvalidOperation naming the node when the Operation cannot run."""
        ...

    def run(self, ctx: JobContext) -> Nodes:
        """Do the work; return the result nodes added to the job's Operation."""
        ...
