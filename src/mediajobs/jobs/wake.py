"""Waking workers the moment a job is submitted or cancelled, across processes.

On SQLite every worker process binds a UNIX datagram socket in <data-dir>/wake/; a
submitter sends one byte to each. On PostgreSQL, where workers may run on other machines,
a submitter sends NOTIFY and every worker process LISTENs on a connection of its own. Either
way there is no polling delay on the happy path, and a lost wake-up only costs the idle
poll interval.

A wake-up says what it is for: new work (an idle worker claims), or a cancel (a busy worker
checks that its job is still its own). A busy worker sleeps through wake-ups for new work, so
a stream of submissions costs the workers that are running jobs nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import select
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Engine

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("mediajobs.wake")

CHANNEL = "mediajobs_wake"
WORK, CANCEL = "", "cancel"  # what a wake-up is for (the NOTIFY payload)
# Constants: nothing to build or bind for each wake-up.
_NOTIFY = {WORK: f"NOTIFY {CHANNEL}", CANCEL: f"NOTIFY {CHANNEL}, '{CANCEL}'"}
_DATAGRAM = {WORK: b"!", CANCEL: b"c"}
_POKE = b"p"


class Listener(Protocol):
    def wait(self, timeout: float, *, cancels_only: bool = False) -> bool:
        """Block until woken or `timeout`; True when woken. Drains queued wake-ups.
        `cancels_only`: a wake-up for new work is drained and slept through; a cancel or a
        poke ends the wait."""
        ...

    def poke(self) -> None:
        """Wake whoever waits on this listener (a thread of this process)."""
        ...

    def close(self) -> None: ...


class Waker(Protocol):
    # PostgreSQL: the channel that a statement may NOTIFY itself, in the transaction it wakes
    # the workers for (the store's create does); None where waking is this object's own job.
    channel: str | None

    def notify(self, kind: str = WORK) -> None:
        """Wake every listening worker, for `kind` (WORK or CANCEL); best effort, never raises."""
        ...

    def listener(self) -> Listener: ...


class SocketWaker:
    channel: str | None = None

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self._peers: list[str] = []
        self._listed = 0.0
        self._send = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._send.setblocking(False)
        self._lock = threading.Lock()

    def notify(self, kind: str = WORK) -> None:
        """Wake every listening worker (best effort, never blocks)."""
        datagram = _DATAGRAM[kind]
        with self._lock:
            now = time.monotonic()
            if now - self._listed > 1.0:
                self._peers = [str(p) for p in self.dir.glob("*.sock")]
                self._listed = now
            gone = []
            for peer in self._peers:
                try:
                    self._send.sendto(datagram, peer)
                except BlockingIOError:
                    pass  # its queue is full: it is awake already
                except (ConnectionRefusedError, FileNotFoundError):
                    gone.append(peer)
                except OSError:
                    pass
            for peer in gone:
                self._peers.remove(peer)
                with contextlib.suppress(OSError):
                    # A socket nobody listens on belongs to a dead process.
                    os.unlink(peer)

    def listener(self) -> SocketListener:
        return SocketListener(self.dir)


class SocketListener:
    def __init__(self, directory: Path) -> None:
        self.path = directory / f"w{os.getpid()}-{secrets.token_hex(4)}.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.setblocking(False)

    def wait(self, timeout: float, *, cancels_only: bool = False) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            ready, _, _ = select.select([self.sock], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return False
            got = set()
            while True:
                try:
                    got.add(self.sock.recv(64))
                except OSError:  # BlockingIOError included: drained
                    break
            if not cancels_only or got & {_DATAGRAM[CANCEL], _POKE}:
                return True

    def poke(self) -> None:
        """Wake whoever waits on this listener (a thread of this process)."""
        with contextlib.suppress(OSError):
            self.sock.sendto(_POKE, str(self.path))

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(OSError):
            self.path.unlink()


# ---- PostgreSQL -----------------------------------------------------------------------------


class NotifyWaker:
    """NOTIFY on a pooled connection (or, through `channel`, by the submit's own statement)."""

    channel: str | None = CHANNEL

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def notify(self, kind: str = WORK) -> None:
        try:
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql(_NOTIFY[kind])
        except Exception:
            # The job is committed; the workers' idle poll finds it a moment later.
            log.warning("NOTIFY failed; workers will find the job at their next poll", exc_info=True)

    def listener(self) -> NotifyListener:
        return NotifyListener(self.engine)


class NotifyListener:
    """LISTEN on a connection of its own (outside the pool), waited on with select() together
    with a pipe that `poke` writes to. A lost connection is made again on the next wait."""

    def __init__(self, engine: Engine) -> None:
        from ..db.engine import connect_kwargs

        self._connect_kwargs = connect_kwargs(engine)
        self._conn: psycopg.Connection[Any] | None = None
        self._retry_at = 0.0
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self._connect()

    def _connect(self) -> None:
        import psycopg

        try:
            conn = psycopg.connect(**self._connect_kwargs, autocommit=True)
            conn.execute(f"LISTEN {CHANNEL}")
        except psycopg.Error:
            log.warning("cannot LISTEN for wake-ups; polling until the database is back", exc_info=True)
            self._retry_at = time.monotonic() + 1.0
            return
        self._conn = conn

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None

    def wait(self, timeout: float, *, cancels_only: bool = False) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if self._conn is None and time.monotonic() >= self._retry_at:
                self._connect()
                if self._conn is not None:
                    return True  # notifications may have been missed while disconnected: look now
            fds = [self._r] if self._conn is None else [self._r, self._conn.pgconn.socket]
            ready, _, _ = select.select(fds, [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return False
            poked = False
            with contextlib.suppress(BlockingIOError, OSError):
                while os.read(self._r, 64):
                    poked = True
            cancel = False
            if self._conn is not None and self._conn.pgconn.socket in ready:
                import psycopg

                pgconn = self._conn.pgconn
                try:
                    pgconn.consume_input()
                    while (n := pgconn.notifies()) is not None:
                        cancel = cancel or n.extra == CANCEL.encode()
                    lost = pgconn.status != psycopg.pq.ConnStatus.OK
                except psycopg.Error:
                    lost = True
                if lost:  # the server went away: LISTEN again at the next wait
                    self._drop()
                    return True
            if not cancels_only or poked or cancel:
                return True

    def poke(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._w, b"!")

    def close(self) -> None:
        self._drop()
        for fd in (self._r, self._w):
            with contextlib.suppress(OSError):
                os.close(fd)
