"""Processes that run the picture engine for the API, so concurrent image requests use every core.

libvips itself releases the GIL, but pyvips' glue, the engine's progress callbacks and the API's event
loop all share the one GIL of the API process: two image requests on two threads took about 1.5 cores
where two processes take two. The pool starts on the first image request (an API node that serves no
images never pays for it), its processes die with the API process, and a process that crashes (a
libvips fault) is replaced: only the request it was running fails.

An engine error raised in a child comes back as the same error class with the same message.
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from ..errors import InternalError, MediaJobsError

if TYPE_CHECKING:  # the API process never loads pyvips when a pool does the work
    from .mogr2 import Pipeline
    from .vips import ImageLimits

log = logging.getLogger("mediajobs.images")

T = TypeVar("T")


@dataclass(frozen=True)
class _Failure:
    """An engine error, carried back by value (some error classes can't be rebuilt from their args)."""

    kind: type[MediaJobsError]
    message: str


def _child_init(parent: int) -> None:
    # Not PR_SET_PDEATHSIG: it fires when the *thread* that started us exits, and the pool is
    # started from whichever API thread-pool thread first needed it (those end when idle).
    if os.getppid() != parent:
        os._exit(0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the API, which stops us

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:  # the API process is gone (even by SIGKILL)
                os._exit(0)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()
    from . import vips  # noqa: F401 - load libvips once, before the first request


def _call(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    try:
        return fn(*args)
    except MediaJobsError as exc:
        return _Failure(type(exc), exc.message)


def _raise(failure: _Failure) -> NoReturn:
    exc = failure.kind.__new__(failure.kind)
    MediaJobsError.__init__(exc, failure.message)
    raise exc


class ImagePool:
    """`call(fn, *args)` runs a module-level engine function in a pool process (or here, with 0)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _pool(self) -> concurrent.futures.ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                # spawn, not fork: the API process has threads (and an event loop) mid-flight
                self._executor = concurrent.futures.ProcessPoolExecutor(
                    self.workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_child_init,
                    initargs=(os.getpid(),),
                )
            return self._executor

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        if self.workers <= 0:
            return fn(*args)
        pool = self._pool()
        try:
            future = pool.submit(_call, fn, args)
        except BrokenProcessPool:  # a process died while idle: nothing of ours ran, start afresh
            self._discard(pool)
            future = self._pool().submit(_call, fn, args)
        try:
            result = future.result()
        except BrokenProcessPool:
            self._discard(pool)
            raise InternalError("The image could not be processed (the image process stopped).") from None
        if isinstance(result, _Failure):
            _raise(result)
        return result  # type: ignore[no-any-return]

    def _discard(self, pool: concurrent.futures.ProcessPoolExecutor) -> None:
        log.error("an image process died; starting new ones")
        with self._lock:
            if self._executor is pool:
                self._executor = None
        pool.shutdown(wait=False, cancel_futures=True)

    def pids(self) -> list[int]:
        """The pool's process ids (for tests and diagnostics)."""
        pool = self._executor
        return sorted(getattr(pool, "_processes", None) or ()) if pool is not None else []

    def close(self) -> None:
        with self._lock:
            pool, self._executor = self._executor, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    # The engine calls the API makes, typed. Module-level functions below run in the child.

    def process(
        self, path: str | os.PathLike[str], pipeline: Pipeline, limits: ImageLimits
    ) -> tuple[bytes, str]:
        return self.call(_process, os.fspath(path), pipeline, limits)

    def describe_file(self, path: str | os.PathLike[str], limits: ImageLimits) -> dict[str, str]:
        return self.call(_describe_file, os.fspath(path), limits)

    def describe_bytes(self, data: bytes, limits: ImageLimits, *, photo_rgb: bool = True) -> dict[str, str]:
        return self.call(_describe_bytes, data, limits, photo_rgb)

    def exif(self, path: str | os.PathLike[str], limits: ImageLimits) -> dict[str, Any]:
        return self.call(_exif, os.fspath(path), limits)

    def exif_bytes(self, data: bytes, limits: ImageLimits) -> dict[str, Any]:
        return self.call(_exif_bytes, data, limits)


def _process(path: str, pipeline: Pipeline, limits: ImageLimits) -> tuple[bytes, str]:
    from . import vips

    return vips.process(path, pipeline, limits=limits)


def _describe_file(path: str, limits: ImageLimits) -> dict[str, str]:
    from . import vips

    return vips.describe_file(path, limits)


def _describe_bytes(data: bytes, limits: ImageLimits, photo_rgb: bool) -> dict[str, str]:
    from . import vips

    return vips.describe_bytes(data, limits, photo_rgb=photo_rgb)


def _exif(path: str, limits: ImageLimits) -> dict[str, Any]:
    from . import vips

    return vips.exif(path, limits=limits)


def _exif_bytes(data: bytes, limits: ImageLimits) -> dict[str, Any]:
    from . import vips

    return vips.exif_bytes(data, limits=limits)
