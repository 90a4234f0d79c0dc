"""FFmpeg as a subprocess: argument lists (never a shell), safe inputs, progress, cancel, time limit.

Every input is opened with `-protocol_whitelist file,pipe` and the demuxer the probe found
(`-f <demuxer>`), so an uploaded playlist or concat list is never interpreted as one. FFmpeg
runs in its own process group and is killed as a group on cancel, timeout or crash of the
caller's job, so no orphan keeps encoding.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger("mediajobs.ffmpeg")


class FFmpegError(Exception):
    """FFmpeg failed; the message holds the last lines it printed."""


class FFmpegCancelled(Exception):
    """The run was stopped because the job was cancelled."""


class FFmpegTimeout(Exception):
    """The run exceeded its deadline."""


_EXE: str | None = None


def ffmpeg_exe() -> str:
    """MEDIAJOBS_FFMPEG if set, else the static binary of the imageio-ffmpeg wheel, else `ffmpeg`."""
    global _EXE
    if _EXE is None:
        configured = os.environ.get("MEDIAJOBS_FFMPEG")
        if configured:
            _EXE = configured
        else:
            try:
                import imageio_ffmpeg

                _EXE = str(imageio_ffmpeg.get_ffmpeg_exe())
            except (ImportError, RuntimeError):
                _EXE = shutil.which("ffmpeg") or "ffmpeg"
    return _EXE


def escape_value(value: str) -> str:
    """One filter option value escaped for a filter graph (both levels of FFmpeg's quoting rules)."""
    inner = re.sub(r"([\\':])", r"\\\1", value)
    return re.sub(r"([\\'\[\],;])", r"\\\1", inner)


def safe_input(path: str, demuxer: str, *, before: Sequence[str] = ()) -> list[str]:
    """Arguments that open one local input with the probed demuxer and no other protocol."""
    return [*before, "-protocol_whitelist", "file,pipe", "-f", demuxer, "-i", path]


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: FFmpeg gets SIGKILL if its worker dies (kill -9 included),
    so a crashed worker never leaves an encoder running."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


@dataclass
class Progress:
    out_time: float = 0.0  # seconds of output written
    done: bool = False


def run(
    args: Sequence[str],
    *,
    deadline: float,
    cancelled: threading.Event,
    expected_duration: float | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> None:
    """Run `ffmpeg <args>`; report progress in percent of `expected_duration` of output.

    Raises FFmpegCancelled, FFmpegTimeout or FFmpegError; kills the process group on every path
    that does not end with FFmpeg's own success.
    """
    started = time.monotonic()
    argv = [
        ffmpeg_exe(),
        "-hide_banner",
        "-nostdin",
        "-nostats",
        "-loglevel",
        "error",
        "-progress",
        "pipe:1",
        *args,
    ]
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: one kill reaches its children too
        preexec_fn=_die_with_parent,
    )
    tail: deque[str] = deque(maxlen=12)

    def read_stderr() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            if line:
                tail.append(line)

    def read_progress() -> None:
        assert proc.stdout is not None
        last = -1
        for raw in proc.stdout:
            key, _, value = raw.decode(errors="replace").strip().partition("=")
            if key == "out_time_us" and expected_duration and on_progress:
                with contextlib.suppress(ValueError):
                    pct = int(min(99.0, int(value) / 1e6 / expected_duration * 100))
                    if pct > last:
                        last = pct
                        on_progress(pct)

    readers = [threading.Thread(target=f, daemon=True) for f in (read_stderr, read_progress)]
    for t in readers:
        t.start()
    try:
        while True:
            try:
                code = proc.wait(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                pass
            if cancelled.is_set():
                raise FFmpegCancelled()
            if time.time() > deadline:
                raise FFmpegTimeout()
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for t in readers:
            t.join(timeout=2)
    log.debug("ffmpeg exited %s after %.3f s: %s", code, time.monotonic() - started, " ".join(argv[-3:]))
    if code != 0:
        detail = " | ".join(tail) or f"exit status {code}"
        raise FFmpegError(detail[-1500:])
