"""Pieces shared by the bucket and object endpoints: keys, metadata headers, bodies, times."""

from __future__ import annotations

import base64
import binascii
import calendar
import email.utils
import hashlib
import mimetypes
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import quote

import anyio.to_thread

from .. import errors
from ..keys import key_problem
from ..storage.base import BlobInfo, BlobWriter

if TYPE_CHECKING:
    from .server import Api, Call

T = TypeVar("T")

MAX_META_BYTES = 4096
WRITE_BATCH = 1024 * 1024
STORAGE_CLASSES = frozenset(
    (
        "STANDARD",
        "STANDARD_IA",
        "ARCHIVE",
        "DEEP_ARCHIVE",
        "INTELLIGENT_TIERING",
        "MAZ_STANDARD",
        "MAZ_STANDARD_IA",
        "MAZ_INTELLIGENT_TIERING",
    )
)
# Request headers stored with an object and returned on GET/HEAD, in their wire spelling.
STORED_HEADERS = (
    "Cache-Control",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Expires",
)
_META_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


async def run(fn: Callable[..., T], *args: object) -> T:
    return await anyio.to_thread.run_sync(fn, *args)


def check_key(key: str) -> None:
    problem = key_problem(key)
    if problem is not None:
        code, reason = problem
        raise (errors.KeyTooLong if code == "KeyTooLong" else errors.InvalidObjectName)(reason)


def url_encode(s: str) -> str:
    """encoding-type=url: UTF-8 percent-encoding, '/' kept, space as %20 and '+' as %2B."""
    return quote(s, safe="/-_.~")


def iso_ms(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def http_date(ts: float) -> str:
    return email.utils.formatdate(int(ts), usegmt=True)


def parse_http_date(value: str) -> float | None:
    try:
        parsed = email.utils.parsedate_tz(value)
    except (TypeError, ValueError):
        return None
    if parsed is None:
        return None
    return float(calendar.timegm(parsed[:9]) - (parsed[9] or 0))


def object_headers(call: Call, key: str) -> tuple[str, dict[str, str]]:
    """Storage class and the headers to store, from a PUT / Initiate / Copy request."""
    storage_class = call.header("x-cos-storage-class").upper() or "STANDARD"
    if storage_class not in STORAGE_CLASSES:
        raise errors.InvalidArgument(f"x-cos-storage-class {storage_class!r} is not a storage class.")
    stored: dict[str, str] = {}
    ctype = call.header("content-type")
    stored["Content-Type"] = ctype or mimetypes.guess_type(key)[0] or "application/octet-stream"
    for name in STORED_HEADERS:
        value = call.header(name.lower())
        if value:
            stored[name] = value
    size = 0
    for name, value in call.headers.items():
        if name.startswith("x-cos-meta-"):
            suffix = name[len("x-cos-meta-") :]
            if not suffix or not set(suffix) <= _META_CHARS:
                raise errors.InvalidArgument(
                    f"Metadata header {name!r}: the name after x-cos-meta- may hold only letters, digits and '-'."
                )
            size += len(name) + len(value.encode())
            stored[name] = value
    if size > MAX_META_BYTES:
        raise errors.InvalidArgument(f"User metadata exceeds {MAX_META_BYTES} bytes.")
    return storage_class, stored


def check_md5(call: Call, digest: bytes) -> None:
    given = call.header("content-md5")
    if not given:
        return
    try:
        expected = base64.b64decode(given, validate=True)
    except (binascii.Error, ValueError):
        raise errors.InvalidDigest() from None
    if len(expected) != 16:
        raise errors.InvalidDigest()
    if expected != digest:
        raise errors.BadDigest()


def declared_length(call: Call, limit: int) -> int | None:
    """The body length the client announced; None for chunked bodies."""
    cl = call.header("content-length")
    if not cl:
        if "chunked" in call.header("transfer-encoding").lower():
            return None
        raise errors.MissingContentLength()
    try:
        length = int(cl)
    except ValueError:
        raise errors.InvalidArgument("Content-Length is not a number.") from None
    if length > limit:
        raise errors.EntityTooLarge(f"The body is {length} bytes; the limit is {limit}.")
    return length


async def read_small(call: Call, limit: int) -> bytes:
    """An XML request body, bounded by `limit`."""
    cl = call.header("content-length")
    if cl.isdigit() and int(cl) > limit:
        raise errors.XMLSizeLimit(f"The XML body is larger than {limit} bytes.")
    chunks = []
    total = 0
    async for chunk in call.request.stream():
        total += len(chunk)
        if total > limit:
            raise errors.XMLSizeLimit(f"The XML body is larger than {limit} bytes.")
        chunks.append(chunk)
    body = b"".join(chunks)
    check_md5(call, hashlib.md5(body).digest())
    return body


async def read_exact(call: Call, length: int) -> bytes:
    """A body of a known, small length, read whole."""
    chunks = []
    total = 0
    async for chunk in call.request.stream():
        total += len(chunk)
        if total > length:
            raise errors.InvalidArgument("The body is longer than its Content-Length.")
        chunks.append(chunk)
    if total != length:
        raise errors.IncompleteBody()
    return b"".join(chunks)


async def receive_blob(api: Api, call: Call, then: Callable[[BlobInfo], T]) -> T:
    """Stream the request body into a new blob; then, in the same worker thread, `then(info)`.

    The body goes to disk in 1 MiB batches from a worker thread (MD5 and CRC-64 in the
    same pass), so memory stays flat and the event loop never waits on the disk.
    A short body, a wrong Content-MD5 or a failure in `then` leaves no blob behind.
    """
    limit = api.settings.max_object_size
    length = declared_length(call, limit)
    writer: BlobWriter = await run(api.service.blobs.writer)
    try:
        pending: list[bytes] = []
        pending_size = 0
        total = 0
        async for chunk in call.request.stream():
            if not chunk:
                continue
            total += len(chunk)
            if total > limit:
                raise errors.EntityTooLarge(f"The body is larger than the limit of {limit} bytes.")
            pending.append(chunk)
            pending_size += len(chunk)
            if pending_size >= WRITE_BATCH:
                data = b"".join(pending)
                pending.clear()
                pending_size = 0
                await run(writer.write, data)
        tail = b"".join(pending)

        def finish() -> T:
            if tail:
                writer.write(tail)
            if length is not None and total != length:
                raise errors.IncompleteBody()
            info = writer.commit()
            try:
                check_md5(call, info.md5_digest)
                return then(info)
            except BaseException:
                api.service.blobs.delete(info.blob)
                raise

        return await run(finish)
    except BaseException:
        await run(writer.abort)
        raise
