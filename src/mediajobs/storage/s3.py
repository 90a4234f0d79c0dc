"""Blob store on any S3-compatible service: blob <id> is the S3 object <prefix>/blobs/<id>.

A writer fills one part in memory: a blob that stays under PART_SIZE is one PutObject at
commit, a larger one becomes a multipart upload as soon as the first part is full, its parts
going up on background threads while the next one fills (PARTS_IN_FLIGHT at most), so a 5 GB
PUT costs a few parts of memory, whatever its size. A blob is visible only once its PutObject or
CompleteMultipartUpload succeeds; a crash leaves at most an unfinished multipart upload,
aborted by `sweep_temporary`. Reads are ranged GETs streamed in chunks, resumed where they
broke off if the connection drops.

Tools that need files (FFmpeg, PyAV, libvips) get a private copy in `tmp_dir`, a scratch
directory on local disk (see ObjectService.local_file and JobContext.workdir).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Generator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import boto3  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

from .base import BlobInfo, Digests, new_blob_id

log = logging.getLogger("mediajobs.storage")

READ_CHUNK = 1024 * 1024
PART_SIZE = 8 * 1024 * 1024  # what a writer buffers before it uploads a part
MIN_COPY_PART = 5 * 1024 * 1024  # S3's smallest part (all but the last)
MAX_COPY_PART = 5 * 1024**3  # S3's largest part, and the largest CopyObject
MAX_PARTS = 10000
PARTS_IN_FLIGHT = 2  # parts of one writer going up at once, besides the one being filled
UPLOAD_THREADS = 16  # per store: the parts in flight of all writers together
READ_RESUMES = 3  # ranged GETs that pick up a read whose connection broke


class S3Error(OSError):
    """The S3 service refused or failed a request (the botocore error is the cause)."""


def parse_url(url: str) -> tuple[str, str]:
    """`s3://bucket/optional/prefix` -> (bucket, "optional/prefix/"); the prefix may be ""."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"storage URL {url!r}: expected s3://bucket or s3://bucket/prefix")
    if parts.query or parts.fragment:
        raise ValueError(f"storage URL {url!r}: no query or fragment allowed")
    prefix = parts.path.strip("/")
    return parts.netloc, prefix + "/" if prefix else ""


def _fail(op: str, exc: Exception) -> NoReturn:
    """Raise the translation of a botocore error: FileNotFoundError for a missing key, else S3Error."""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("NoSuchKey", "NotFound") or (status == 404 and code != "NoSuchBucket"):
            raise FileNotFoundError(f"S3 {op}: no such blob") from exc
        raise S3Error(f"S3 {op} failed: {code or status} {err.get('Message', '')}".rstrip()) from exc
    raise S3Error(f"S3 {op} failed: {exc}") from exc


def _code(exc: BaseException) -> str:
    cause = exc.__cause__
    if isinstance(cause, ClientError):
        return str(cause.response.get("Error", {}).get("Code", ""))
    return ""


def _copy_ranges(pieces: list[tuple[str, int]]) -> list[tuple[str, int, int]] | None:
    """The parts of a server-side concatenation: (blob, first byte, last byte) each, or None
    where S3's part rules forbid one (a piece other than the last under 5 MiB, too many parts).

    A piece over 5 GiB (the largest part) is split into equal ranges.
    """
    if any(size < MIN_COPY_PART for _, size in pieces[:-1]):
        return None
    out: list[tuple[str, int, int]] = []
    for blob, size in pieces:
        n = max(1, math.ceil(size / MAX_COPY_PART))
        step = max(1, math.ceil(size / n))
        out += [(blob, first, min(size, first + step) - 1) for first in range(0, size, step)]
    return out if 0 < len(out) <= MAX_PARTS else None


class S3BlobWriter:
    """Buffers one part; full parts go up on the store's upload threads, PARTS_IN_FLIGHT at most,
    so receiving the next part overlaps sending the last ones and memory stays bounded."""

    def __init__(self, store: S3BlobStore) -> None:
        self.store = store
        self.blob = new_blob_id()
        self.key = store.key(self.blob)
        self.digests = Digests()
        self._buf = bytearray()
        self._upload_id: str | None = None
        self._sent = 0  # parts handed to the upload threads
        self._in_flight: deque[Future[dict[str, Any]]] = deque()
        self._parts: list[dict[str, Any]] = []
        self._done = False

    def write(self, data: bytes | memoryview) -> None:
        assert not self._done
        self.digests.update(data)
        self._buf += data
        if len(self._buf) >= self.store.part_size:
            self._upload_part()

    def _upload_part(self) -> None:
        s = self.store
        if self._upload_id is None:
            self._upload_id = s._call("create_multipart_upload", Key=self.key)["UploadId"]
        body = bytes(self._buf)
        self._buf.clear()
        self._sent += 1
        self._in_flight.append(s._uploads.submit(self._send, self._upload_id, self._sent, body))
        while len(self._in_flight) > PARTS_IN_FLIGHT:
            self._parts.append(self._in_flight.popleft().result())

    def _send(self, upload_id: str, number: int, body: bytes) -> dict[str, Any]:
        r = self.store._call("upload_part", Key=self.key, UploadId=upload_id, PartNumber=number, Body=body)
        return {"PartNumber": number, "ETag": r["ETag"]}

    def _drain(self) -> None:
        while self._in_flight:
            self._parts.append(self._in_flight.popleft().result())

    def commit(self) -> BlobInfo:
        assert not self._done
        s = self.store
        if self._upload_id is None:
            s._call("put_object", Key=self.key, Body=bytes(self._buf))
            self._buf.clear()
        else:
            if self._buf:
                self._upload_part()
            self._drain()
            s._call(
                "complete_multipart_upload",
                Key=self.key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": sorted(self._parts, key=lambda p: p["PartNumber"])},
            )
            self._upload_id = None
        self._done = True
        d = self.digests
        return BlobInfo(self.blob, d.size, d.md5_hex(), d.md5_digest(), d.crc)

    def abort(self) -> None:
        self._buf = bytearray()
        # Parts still going up would otherwise land in an upload that no longer exists.
        for fut in self._in_flight:
            fut.cancel()
        for fut in self._in_flight:
            with contextlib.suppress(Exception):
                fut.result()
        self._in_flight.clear()
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            try:
                self.store._call("abort_multipart_upload", Key=self.key, UploadId=upload_id)
            except OSError:  # swept later
                log.warning("could not abort the multipart upload of blob %s", self.blob, exc_info=True)
        self._done = True


class S3BlobStore:
    def __init__(
        self,
        url: str,
        *,
        scratch: Path,
        endpoint_url: str = "",
        region: str = "",
        access_key: str = "",
        secret_key: str = "",
        part_size: int = PART_SIZE,
        max_pool_connections: int = 64,
    ) -> None:
        self.bucket, self.prefix = parse_url(url)
        if part_size < MIN_COPY_PART:
            raise ValueError(f"part size {part_size}: S3 parts are at least {MIN_COPY_PART} bytes")
        self.part_size = part_size
        self.tmp_dir = scratch
        self._uploads = ThreadPoolExecutor(UPLOAD_THREADS, thread_name_prefix="s3-upload")
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        config = Config(
            s3={"addressing_style": "path"},  # SeaweedFS and MinIO serve buckets by path
            max_pool_connections=max_pool_connections,
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=10,
            read_timeout=120,
            tcp_keepalive=True,
        )
        # Empty settings leave botocore's usual chain in charge (AWS_* variables, ~/.aws, roles).
        self.client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url or None,
            region_name=region or None,
            aws_access_key_id=access_key or None,
            aws_secret_access_key=secret_key or None,
            config=config,
        )

    def __repr__(self) -> str:
        return f"S3BlobStore(s3://{self.bucket}/{self.prefix})"

    def _call(self, op: str, **kw: Any) -> Any:
        try:
            return getattr(self.client, op)(Bucket=self.bucket, **kw)
        except (ClientError, BotoCoreError) as exc:
            _fail(op, exc)

    def key(self, blob: str) -> str:
        # Blob ids are ours (hex); refuse anything else so no name can leave the prefix.
        if len(blob) != 32 or not all(c in "0123456789abcdef" for c in blob):
            raise ValueError(f"bad blob id {blob!r}")
        return f"{self.prefix}blobs/{blob}"

    def writer(self) -> S3BlobWriter:
        return S3BlobWriter(self)

    def read(
        self, blob: str, start: int = 0, length: int | None = None, chunk: int = READ_CHUNK
    ) -> Generator[bytes, None, None]:
        key = self.key(blob)
        pos = start
        end = None if length is None else start + length  # exclusive
        resumes = 0
        while end is None or pos < end:
            kw = {}
            if pos or end is not None:
                kw["Range"] = f"bytes={pos}-{'' if end is None else end - 1}"
            try:
                body = self._call("get_object", Key=key, **kw)["Body"]
            except S3Error as exc:
                if _code(exc) == "InvalidRange":  # starts at or past the end: nothing to read
                    return
                raise
            try:
                for data in body.iter_chunks(chunk):
                    pos += len(data)
                    yield data
                return
            except (BotoCoreError, OSError) as exc:
                resumes += 1
                if resumes > READ_RESUMES:
                    raise S3Error(f"S3 read of blob {blob} broke off at byte {pos}: {exc}") from exc
                log.warning("S3 read of blob %s broke off at byte %d (%s); resuming", blob, pos, exc)
            finally:
                body.close()

    def read_all(self, blob: str) -> bytes:
        return b"".join(self.read(blob))

    def concat(self, blobs: list[tuple[str, int]]) -> str:
        pieces = list(blobs)
        while len(pieces) > 1 and pieces[-1][1] == 0:
            pieces.pop()  # an empty tail adds nothing
        if len(pieces) == 1 and pieces[0][1] <= MAX_COPY_PART:
            # One blob (COS's PUT Object - Copy): a plain server-side copy.
            blob = new_blob_id()
            source = {"Bucket": self.bucket, "Key": self.key(pieces[0][0])}
            self._call("copy_object", Key=self.key(blob), CopySource=source)
            return blob
        ranges = _copy_ranges(pieces)
        return self._concat_streamed(blobs) if ranges is None else self._concat_copied(ranges)

    def _concat_copied(self, ranges: list[tuple[str, int, int]]) -> str:
        """One multipart upload whose parts are server-side copies (UploadPartCopy)."""
        blob = new_blob_id()
        key = self.key(blob)
        upload_id = self._call("create_multipart_upload", Key=key)["UploadId"]
        try:
            done = []
            for number, (src, first, last) in enumerate(ranges, 1):
                r = self._call(
                    "upload_part_copy",
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource={"Bucket": self.bucket, "Key": self.key(src)},
                    CopySourceRange=f"bytes={first}-{last}",
                )
                done.append({"PartNumber": number, "ETag": r["CopyPartResult"]["ETag"]})
            self._call(
                "complete_multipart_upload", Key=key, UploadId=upload_id, MultipartUpload={"Parts": done}
            )
        except BaseException:
            with contextlib.suppress(OSError):
                self._call("abort_multipart_upload", Key=key, UploadId=upload_id)
            raise
        return blob

    def _concat_streamed(self, blobs: list[tuple[str, int]]) -> str:
        w = self.writer()
        try:
            for blob, size in blobs:
                copied = 0
                if size:
                    for data in self.read(blob, 0, size):
                        w.write(data)
                        copied += len(data)
                if copied != size:
                    raise S3Error(f"blob {blob} shorter than recorded")
            w.commit()
        except BaseException:
            w.abort()
            raise
        return w.blob

    def delete(self, blob: str) -> None:
        self._call("delete_object", Key=self.key(blob))  # S3 answers 204 for a missing key too

    def sweep_temporary(self, older_than: float = 3600.0) -> int:
        """Abort multipart uploads under our prefix older than `older_than` seconds, and remove
        scratch files as old; other nodes' uploads in flight are younger."""
        cutoff = time.time() - older_than
        n = 0
        marker: dict[str, str] = {}
        while True:
            page = self._call("list_multipart_uploads", Prefix=self.prefix + "blobs/", **marker)
            for up in page.get("Uploads", []):
                if up["Initiated"].timestamp() < cutoff:
                    try:
                        self._call("abort_multipart_upload", Key=up["Key"], UploadId=up["UploadId"])
                    except FileNotFoundError:  # finished or aborted meanwhile
                        continue
                    n += 1
            if not page.get("IsTruncated"):
                break
            marker = {
                "KeyMarker": page.get("NextKeyMarker", ""),
                "UploadIdMarker": page.get("NextUploadIdMarker", ""),
            }
        for p in self.tmp_dir.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if p.is_file() and p.stat().st_mtime < cutoff:
                    p.unlink()
                    n += 1
        return n
