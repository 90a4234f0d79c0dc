"""Waking workers the moment a job is submitted or cancelled, across processes.

On SQLite every worker process binds a UNIX datagram socket in <data-dir>/wake/; a
submitter sends one byte to each. No polling delay on the happy path, and a lost datagram
only costs the idle poll interval. (PostgreSQL gets LISTEN/NOTIFY behind the same interface.)
"""

from __future__ import annotations

import contextlib
import os
import secrets
import select
import socket
import threading
import time
from pathlib import Path


class Waker:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self._peers: list[str] = []
        self._listed = 0.0
        self._send = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._send.setblocking(False)
        self._lock = threading.Lock()

    def notify(self) -> None:
        """Wake every listening worker (best effort, never blocks)."""
        with self._lock:
            now = time.monotonic()
            if now - self._listed > 1.0:
                self._peers = [str(p) for p in self.dir.glob("*.sock")]
                self._listed = now
            gone = []
            for peer in self._peers:
                try:
                    self._send.sendto(b"!", peer)
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

    def listener(self) -> Listener:
        return Listener(self.dir)


class Listener:
    def __init__(self, directory: Path) -> None:
        self.path = directory / f"w{os.getpid()}-{secrets.token_hex(4)}.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.setblocking(False)

    def wait(self, timeout: float) -> bool:
        """Block until woken or `timeout`; True when woken. Drains queued wake-ups."""
        ready, _, _ = select.select([self.sock], [], [], timeout)
        woke = bool(ready)
        while True:
            try:
                self.sock.recv(64)
            except BlockingIOError:
                break
            except OSError:
                break
        return woke

    def poke(self) -> None:
        """Wake whoever waits on this listener (a thread of this process)."""
        with contextlib.suppress(OSError):
            self.sock.sendto(b"!", str(self.path))

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(OSError):
            self.path.unlink()
