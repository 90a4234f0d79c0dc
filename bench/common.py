"""Helpers every benchmark here shares: logging, the run-time guard, quantiles, and what was measured."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from pathlib import Path
from types import FrameType

import psutil

from mediajobs import __version__ as MEDIAJOBS_VERSION


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Deadline(Exception):
    pass


def on_alarm(signum: int, frame: FrameType | None) -> None:
    """SIGALRM handler: a run over --max-seconds stops (and its finally blocks clean up)."""
    raise Deadline("benchmark exceeded --max-seconds")


def on_term(signum: int, frame: FrameType | None) -> None:
    """SIGTERM handler: exit through the finally blocks, so children and temp dirs go too."""
    raise SystemExit(128 + signum)


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) with linear interpolation between closest ranks."""
    if not values:
        return float("nan")
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def mediajobs_revision() -> str:
    """`0.1.0 (git abc1234-dirty)`: which server code was measured, as the tree may have local edits."""
    import mediajobs

    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=Path(mediajobs.__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except OSError:
        return MEDIAJOBS_VERSION
    rev = out.stdout.strip()
    return f"{MEDIAJOBS_VERSION} (git {rev})" if out.returncode == 0 and rev else MEDIAJOBS_VERSION


def cpu_summary() -> str:
    total = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else total
    return f"{usable} usable of {total} logical cores"


def machine_cpu() -> float:
    """Busy CPU seconds of the whole machine, all cores."""
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0))


class RssSampler:
    """Samples the summed RSS of a process and all its descendants every `interval` seconds.

    Also keeps the peak of the top process alone and the most processes seen, so a tree whose
    size comes from helper children (workers) can be told from one that grows with the transfer.
    """

    def __init__(self, pid: int, interval: float) -> None:
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.peak_top = 0
        self.max_procs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def sample(self) -> tuple[int, int, int]:
        """(tree RSS, RSS of the top process, number of processes)."""
        try:
            procs = [self.proc, *self.proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0, 0, 0
        total = top = 0
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                rss = int(p.memory_info().rss)
                total += rss
                if p.pid == self.proc.pid:
                    top = rss
        return total, top, len(procs)

    def _take(self) -> None:
        total, top, n = self.sample()
        self.peak = max(self.peak, total)
        self.peak_top = max(self.peak_top, top)
        self.max_procs = max(self.max_procs, n)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._take()
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._take()
