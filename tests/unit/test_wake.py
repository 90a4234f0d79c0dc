"""Wake-ups between processes on one machine (SQLite's UNIX datagram sockets): new work wakes
idle workers; a busy worker, waiting with `cancels_only`, wakes for a cancel or a poke only."""

from __future__ import annotations

from pathlib import Path

from mediajobs.jobs.wake import CANCEL, SocketWaker


def test_new_work_wakes_every_listener_and_a_busy_one_sleeps_through_it(tmp_path: Path) -> None:
    waker = SocketWaker(tmp_path / "wake")
    idle, busy = waker.listener(), waker.listener()
    try:
        assert not idle.wait(0.01)
        waker.notify()
        assert idle.wait(2.0)
        assert not idle.wait(0.01)  # drained
        assert not busy.wait(0.05, cancels_only=True)  # drained too, and slept through
        waker.notify(CANCEL)
        assert busy.wait(2.0, cancels_only=True)
        assert idle.wait(2.0)  # a cancel wakes idle workers too (they only claim)
        busy.poke()
        assert busy.wait(2.0, cancels_only=True)
        for _ in range(3):
            waker.notify()
        waker.notify(CANCEL)
        assert busy.wait(2.0, cancels_only=True)  # the cancel behind the new work
        assert not busy.wait(0.01, cancels_only=True)
    finally:
        idle.close()
        busy.close()
