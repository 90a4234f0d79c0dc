"""Blob store on the local filesystem: <data-dir>/blobs/<ab>/<blob id>.

A blob is written to <data-dir>/tmp, fsynced and renamed into place, so a reader sees
either no blob or a whole one; a crash leaves only files in tmp/, swept at start-up.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Generator
from pathlib import Path
from typing import BinaryIO

from .base import BlobInfo, Digests, new_blob_id

READ_CHUNK = 1024 * 1024


class LocalBlobWriter:
    def __init__(self, store: LocalBlobStore) -> None:
        self.store = store
        self.blob = new_blob_id()
        self.tmp = store.tmp_dir / (self.blob + ".part")
        self._fh: BinaryIO | None = open(self.tmp, "wb")  # noqa: SIM115
        self.digests = Digests()

    def write(self, data: bytes | memoryview) -> None:
        assert self._fh is not None
        self._fh.write(data)
        self.digests.update(data)

    def commit(self) -> BlobInfo:
        assert self._fh is not None
        fh, self._fh = self._fh, None
        fh.flush()
        if self.store.fsync:
            os.fsync(fh.fileno())
        fh.close()
        final = self.store.path(self.blob)
        final.parent.mkdir(exist_ok=True)
        os.replace(self.tmp, final)
        if self.store.fsync:
            _fsync_dir(final.parent)
        d = self.digests
        return BlobInfo(self.blob, d.size, d.md5_hex(), d.md5_digest(), d.crc)

    def abort(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalBlobStore:
    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root / "blobs"
        self.tmp_dir = root / "tmp"
        self.fsync = fsync
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def path(self, blob: str) -> Path:
        # Blob ids are ours (hex); refuse anything else so no name can leave the tree.
        if len(blob) != 32 or not all(c in "0123456789abcdef" for c in blob):
            raise ValueError(f"bad blob id {blob!r}")
        return self.root / blob[:2] / blob

    def writer(self) -> LocalBlobWriter:
        return LocalBlobWriter(self)

    def read(
        self, blob: str, start: int = 0, length: int | None = None, chunk: int = READ_CHUNK
    ) -> Generator[bytes, None, None]:
        with open(self.path(blob), "rb") as fh:
            if start:
                fh.seek(start)
            remaining = length
            while remaining is None or remaining > 0:
                n = chunk if remaining is None else min(chunk, remaining)
                data = fh.read(n)
                if not data:
                    break
                if remaining is not None:
                    remaining -= len(data)
                yield data

    def read_all(self, blob: str) -> bytes:
        return self.path(blob).read_bytes()

    def concat(self, blobs: list[tuple[str, int]]) -> str:
        w = self.writer()
        try:
            assert w._fh is not None
            out = w._fh.fileno()
            for blob, size in blobs:
                with open(self.path(blob), "rb") as src:
                    copied = 0
                    while copied < size:
                        # In-kernel copy: the bytes never pass through Python.
                        n = os.copy_file_range(src.fileno(), out, size - copied)
                        if n == 0:
                            raise OSError(f"blob {blob} shorter than recorded")
                        copied += n
            w.digests.size = sum(size for _, size in blobs)
            w.commit()
        except BaseException:
            w.abort()
            raise
        return w.blob

    def adopt(self, path: Path) -> BlobInfo:
        """Make a finished file under our tmp dir a blob by renaming it (no copy).

        The bytes are read once for MD5 and CRC-64; the file must be on this store's filesystem.
        """
        digests = Digests()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(READ_CHUNK), b""):
                digests.update(chunk)
            if self.fsync:
                os.fsync(fh.fileno())
        blob = new_blob_id()
        final = self.path(blob)
        final.parent.mkdir(exist_ok=True)
        os.replace(path, final)
        if self.fsync:
            _fsync_dir(final.parent)
        return BlobInfo(blob, digests.size, digests.md5_hex(), digests.md5_digest(), digests.crc)

    def delete(self, blob: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(blob).unlink()

    def sweep_temporary(self, older_than: float = 3600.0) -> int:
        # Other processes (workers) may share this directory: only files untouched for
        # `older_than` seconds can be leftovers of a crash rather than uploads in flight.
        n = 0
        cutoff = time.time() - older_than
        for p in self.tmp_dir.iterdir():
            with contextlib.suppress(FileNotFoundError):
                # Directories are job workdirs: the worker sweeps those (Worker.sweep_workdirs).
                if p.is_file() and p.stat().st_mtime < cutoff:
                    p.unlink()
                    n += 1
        return n
