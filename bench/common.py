"""Helpers every benchmark here shares: logging, the run-time guard, quantiles, and what was measured."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from types import FrameType

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
