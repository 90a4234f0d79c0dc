"""The COS object API: PUT/GET/HEAD/DELETE Object, copy, and multipart uploads (spec/objects.md 4-5)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING
from urllib.parse import unquote

from .. import errors
from ..storage.service import MAX_PART_NUMBER, ObjectMeta, Upload
from . import mediasync, pictures, xmlcodec
from .auth import AUTH_PARAMS
from .common import (
    check_key,
    check_md5,
    declared_length,
    http_date,
    iso,
    iso_ms,
    object_headers,
    parse_http_date,
    read_exact,
    read_small,
    receive_blob,
    run,
    url_encode,
)
from .wire import Headers, WireResponse, WireStream, empty, xml_response

if TYPE_CHECKING:
    from .server import Api, Call

# Query names that never select an operation.
PLAIN_PARAMS = AUTH_PARAMS | {"versionid", "x-cos-traffic-limit", "encoding-type"}
# COS/CI subresources a client may reasonably send to an object; those not handled here are
# answered 501 rather than being mistaken for a plain object operation.
KNOWN_SUBRESOURCES = frozenset(
    (
        "acl",
        "tagging",
        "restore",
        "select",
        "append",
        "position",
        "torrent",
        "retention",
        "legal-hold",
        "ci-process",
        "image_process",
        "imageinfo",
        "exif",
        "imageave",
        "imageslim",
        "watermark",
        "symlink",
        "rename",
        "fetch",
        "uploads",
        "uploadid",
        "partnumber",
        "object-lock",
        "versions",
        "cors",
        "lifecycle",
        "policy",
        "website",
        "versioning",
        "replication",
        "logging",
        "inventory",
        "domain",
        "referer",
        "intelligenttiering",
        "encryption",
        "location",
        "accelerate",
        "origin",
        "delete",
    )
)
_RESPONSE_OVERRIDES = {
    "response-content-type": "Content-Type",
    "response-content-language": "Content-Language",
    "response-expires": "Expires",
    "response-cache-control": "Cache-Control",
    "response-content-disposition": "Content-Disposition",
    "response-content-encoding": "Content-Encoding",
}
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
OWNER = "1250000000"


def subresources(call: Call, handled: frozenset[str]) -> set[str]:
    """Names in the query that select an operation; raises 501 for those we do not handle."""
    found = set()
    for name, value in call.params:
        low = name.lower()
        if low in PLAIN_PARAMS or low.startswith("response-"):
            continue
        if low in handled:
            found.add(low)
        elif (
            low in KNOWN_SUBRESOURCES
            or low.startswith(("imagemogr2", "imageview2", "watermark/"))
            or not value
        ):
            # A bare flag (`?acl`, `?imageMogr2/...`) is how COS names subresources.
            raise errors.NotImplementedByServer(f"The subresource or process {name!r} is not implemented.")
    return found


async def dispatch(api: Api, call: Call) -> WireResponse:
    check_key(call.key)
    m = call.method
    if m == "PUT":
        sub = subresources(call, frozenset(("partnumber", "uploadid")))
        if sub:
            if sub != {"partnumber", "uploadid"}:
                raise errors.InvalidArgument("Upload Part needs both partNumber and uploadId.")
            return await upload_part(api, call)
        if call.header("x-cos-copy-source"):
            return await copy_object(api, call)
        return await put_object(api, call)
    if m in ("GET", "HEAD"):
        rule = pictures.rule_of(call) if m == "GET" else None
        if rule is not None:
            return await pictures.dispatch(api, call, rule)
        sub = subresources(call, frozenset(("uploadid", "ci-process")))
        if "ci-process" in sub and m == "GET":
            return await mediasync.dispatch(api, call, _q(call, "ci-process").strip().lower())
        if sub:
            if m == "HEAD" or "ci-process" in sub:
                raise errors.MethodNotAllowed()
            return await list_parts(api, call)
        return await get_object(api, call)
    if m == "DELETE":
        sub = subresources(call, frozenset(("uploadid",)))
        if sub:
            upload = await _upload(api, call)
            await run(api.service.abort, upload)
            return empty(204)
        await run(api.service.delete, call.bucket, call.key)
        return empty(204)
    if m == "POST":
        sub = subresources(call, frozenset(("uploads", "uploadid", "image_process")))
        if sub == {"image_process"}:
            return await pictures.image_process(api, call)
        if sub == {"uploads"}:
            return await initiate(api, call)
        if sub == {"uploadid"}:
            return await complete(api, call)
        raise errors.MethodNotAllowed("POST on an object needs ?uploads or ?uploadId.")
    raise errors.MethodNotAllowed()


def _q(call: Call, lower_name: str, default: str = "") -> str:
    for name, value in call.params:
        if name.lower() == lower_name:
            return value
    return default


def _etag(meta: ObjectMeta) -> str:
    return f'"{meta.etag}"'


# ---- PUT / copy --------------------------------------------------------------------------


async def put_object(api: Api, call: Call) -> WireResponse:
    storage_class, headers = object_headers(call, call.key)
    ops = pictures.pic_operations(call)  # checked before a byte is stored
    length = declared_length(call, api.settings.max_object_size)
    if length is not None and length <= api.settings.inline_max:
        # A small body is read whole (it is bounded) and stored with one thread hop and one
        # transaction; the bucket check happens inside it.
        data = await read_exact(call, length)

        def store() -> ObjectMeta:
            check_md5(call, hashlib.md5(data).digest())
            return api.service.put_inline(
                call.bucket, call.key, data, storage_class=storage_class, headers=headers
            )

        meta = await run(store)
    else:
        await run(api.service.require_bucket, call.bucket)
        meta = await receive_blob(
            api,
            call,
            lambda info: api.service.put(
                call.bucket, call.key, info, storage_class=storage_class, headers=headers
            ),
        )
    wire = [("ETag", _etag(meta)), ("x-cos-hash-crc64ecma", meta.crc64)]
    if ops is None:
        return empty(200, wire)
    processed = await run(pictures.apply, api, meta, ops)
    return xml_response("UploadResult", pictures.upload_result(processed), headers=wire)


def parse_copy_source(value: str) -> tuple[str, str]:
    """Bucket and key of an `x-cos-copy-source` (spec/objects.md 4.8)."""
    src = re.sub(r"^[a-z]+://", "", value.strip(), flags=re.IGNORECASE)
    src = src.split("?versionId=", 1)[0]
    idx, width = src.find("/"), 1
    if idx < 0:
        idx, width = src.upper().find("%2F"), 3
    bucket = src[:idx].split(".", 1)[0] if idx > 0 else ""
    key = unquote(src[idx + width :]) if idx > 0 else ""
    if not bucket or not key:
        raise errors.InvalidArgument(
            f"x-cos-copy-source {value!r} is not <bucket>.cos.<region>.myqcloud.com/<key>."
        )
    return bucket, key


async def copy_object(api: Api, call: Call) -> WireResponse:
    src_bucket, src_key = parse_copy_source(call.header("x-cos-copy-source"))
    src = await run(api.service.head, src_bucket, src_key)
    check_conditions(call, src, prefix="x-cos-copy-source-", failure=errors.PreconditionFailed)
    directive = call.header("x-cos-metadata-directive") or "Copy"
    if directive not in ("Copy", "Replaced"):
        raise errors.InvalidArgument("x-cos-metadata-directive must be Copy or Replaced.")
    storage_class, headers = object_headers(call, call.key)
    if directive == "Copy":
        headers = src.headers
        if not call.header("x-cos-storage-class"):
            storage_class = src.storage_class
    if (src_bucket, src_key) == (call.bucket, call.key) and directive != "Replaced":
        raise errors.InvalidRequest("Copying an object onto itself needs x-cos-metadata-directive: Replaced.")
    meta = await run(
        lambda: api.service.copy(src, call.bucket, call.key, storage_class=storage_class, headers=headers)
    )
    return xml_response(
        "CopyObjectResult",
        [("ETag", _etag(meta)), ("CRC64", meta.crc64), ("LastModified", iso(meta.last_modified))],
        headers=[("x-cos-hash-crc64ecma", meta.crc64)],
    )


# ---- GET / HEAD --------------------------------------------------------------------------


def check_conditions(
    call: Call, meta: ObjectMeta, *, prefix: str = "", failure: type[errors.MediaJobsError] | None = None
) -> bool:
    """Evaluate If-* headers (RFC 9110 order). Returns True when the answer is 304."""

    def h(name: str) -> str:
        return call.header(prefix + name)

    def matches(value: str) -> bool:
        tags = [t.strip().strip('"') for t in value.split(",")]
        return "*" in tags or meta.etag in tags

    modified = int(meta.last_modified)
    if h("if-match"):
        if not matches(h("if-match")):
            raise errors.PreconditionFailed()
    elif h("if-unmodified-since"):
        since = parse_http_date(h("if-unmodified-since"))
        if since is not None and modified > since:
            raise errors.PreconditionFailed()
    if h("if-none-match"):
        if matches(h("if-none-match")):
            if failure is not None:
                raise failure()
            return True
    elif h("if-modified-since"):
        since = parse_http_date(h("if-modified-since"))
        if since is not None and modified <= since:
            if failure is not None:
                raise failure()
            return True
    return False


def parse_range(value: str, size: int) -> tuple[int, int] | None:
    """(start, end inclusive) of a single `bytes=` range; None means answer with the whole body."""
    m = _RANGE.match(value.strip().replace(" ", ""))
    if not m or (not m[1] and not m[2]):
        return None
    if not m[1]:
        n = int(m[2])
        if n == 0 or size == 0:
            raise errors.InvalidRange(headers={"Content-Range": f"bytes */{size}"})
        return max(0, size - n), size - 1
    start = int(m[1])
    end = int(m[2]) if m[2] else size - 1
    if m[2] and end < start:
        return None
    if start >= size:
        raise errors.InvalidRange(headers={"Content-Range": f"bytes */{size}"})
    return start, min(end, size - 1)


def meta_headers(meta: ObjectMeta) -> list[tuple[str, str]]:
    hs = [
        ("Accept-Ranges", "bytes"),
        ("ETag", _etag(meta)),
        ("Last-Modified", http_date(meta.last_modified)),
        ("x-cos-hash-crc64ecma", meta.crc64),
    ]
    hs += [(k, v) for k, v in meta.headers.items() if k != "Content-Type"]
    if meta.storage_class != "STANDARD":
        hs.append(("x-cos-storage-class", meta.storage_class))
    return hs


async def get_object(api: Api, call: Call) -> WireResponse:
    meta = await run(api.service.head, call.bucket, call.key)
    if check_conditions(call, meta):
        return empty(304, [("ETag", _etag(meta)), ("Last-Modified", http_date(meta.last_modified))])
    headers: dict[str, str] = {"Content-Type": meta.headers.get("Content-Type", "application/octet-stream")}
    rest = meta_headers(meta)
    for name, value in call.params:
        override = _RESPONSE_OVERRIDES.get(name.lower())
        if override and value:
            headers[override] = value
            rest = [(k, v) for k, v in rest if k != override]
    status, start, length = 200, 0, meta.size
    rng = call.header("range")
    if rng:
        if_range = call.header("if-range")
        honoured = (
            not if_range
            or if_range.strip('"') == meta.etag
            or ((d := parse_http_date(if_range)) is not None and int(meta.last_modified) <= d)
        )
        span = parse_range(rng, meta.size) if honoured else None
        if span is not None:
            status, start, length = 206, span[0], span[1] - span[0] + 1
            rest.append(("Content-Range", f"bytes {span[0]}-{span[1]}/{meta.size}"))
    wire: Headers = [("Content-Type", headers.pop("Content-Type")), ("Content-Length", str(length))]
    wire = [*wire, *rest, *headers.items()]
    if call.method == "HEAD":
        return WireResponse(status, b"", wire)
    if meta.data is not None:
        return WireResponse(status, meta.data[start : start + length], wire)
    if length <= 256 * 1024:
        # Small objects: one read in the worker thread, one send.
        body = await run(lambda: b"".join(api.service.blobs.read(meta.blob, start, length)))
        return WireResponse(status, body, wire)
    return WireStream(status, _stream(api, meta, start, length), wire, content_length=length)


async def _stream(api: Api, meta: ObjectMeta, start: int, length: int) -> AsyncIterator[bytes]:
    reader = api.service.blobs.read(meta.blob, start, length)
    try:
        while True:
            chunk = await run(next, reader, b"")
            if not chunk:
                return
            yield chunk
    finally:
        reader.close()


# ---- multipart ---------------------------------------------------------------------------


async def initiate(api: Api, call: Call) -> WireResponse:
    storage_class, headers = object_headers(call, call.key)
    up = await run(api.service.initiate, call.bucket, call.key, storage_class, headers)
    return xml_response(
        "InitiateMultipartUploadResult",
        [("Bucket", call.bucket), ("Key", call.key), ("UploadId", up.upload_id)],
    )


async def _upload(api: Api, call: Call) -> Upload:
    upload_id = _q(call, "uploadid")
    if not upload_id:
        raise errors.NoSuchUpload()
    return await run(api.service.get_upload, call.bucket, call.key, upload_id)


async def upload_part(api: Api, call: Call) -> WireResponse:
    raw = _q(call, "partnumber")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PART_NUMBER:
        raise errors.InvalidArgument(f"partNumber must be an integer from 1 to {MAX_PART_NUMBER}.")
    number = int(raw)
    upload = await _upload(api, call)
    if call.header("x-cos-copy-source"):
        raise errors.NotImplementedByServer("Upload Part - Copy is not implemented.")
    part = await receive_blob(api, call, lambda info: api.service.put_part(upload, number, info))
    return empty(200, [("ETag", f'"{part.etag}"'), ("x-cos-hash-crc64ecma", part.crc64)])


def _int_param(call: Call, name: str, default: int, low: int, high: int) -> int:
    raw = _q(call, name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise errors.InvalidArgument(f"{name} must be an integer.") from None
    if value < low:
        raise errors.InvalidArgument(f"{name} must be at least {low}.")
    return min(value, high)


async def list_parts(api: Api, call: Call) -> WireResponse:
    upload = await _upload(api, call)
    marker = _int_param(call, "part-number-marker", 0, 0, MAX_PART_NUMBER)
    max_parts = _int_param(call, "max-parts", 1000, 0, 1000)
    found, truncated = await run(api.service.list_parts, upload.upload_id, marker, max_parts)
    encode = _q(call, "encoding-type") == "url"
    nodes: list[tuple[str, xmlcodec.Value]] = [("Bucket", call.bucket)]
    if encode:
        nodes.append(("Encoding-type", "url"))
    owner: xmlcodec.Nodes = [("ID", OWNER), ("DisplayName", OWNER)]
    nodes += [
        ("Key", url_encode(upload.key) if encode else upload.key),
        ("UploadId", upload.upload_id),
        ("Initiator", owner),
        ("Owner", owner),
        ("PartNumberMarker", str(marker)),
    ]
    for p in found:
        nodes.append(
            (
                "Part",
                [
                    ("PartNumber", str(p.part_number)),
                    ("LastModified", iso_ms(p.last_modified)),
                    ("ETag", f'"{p.etag}"'),
                    ("Size", str(p.size)),
                ],
            )
        )
    if found:
        nodes.append(("NextPartNumberMarker", str(found[-1].part_number)))
    nodes += [
        ("StorageClass", upload.storage_class),
        ("MaxParts", str(max_parts)),
        ("IsTruncated", xmlcodec.bool_text(truncated)),
    ]
    return xml_response("ListPartsResult", nodes)


async def complete(api: Api, call: Call) -> WireResponse:
    upload = await _upload(api, call)
    ops = pictures.pic_operations(call)  # checked before the parts are joined
    body = await read_small(call, api.settings.max_xml_size)
    root = xmlcodec.parse(body, root="CompleteMultipartUpload")
    requested: list[tuple[int, str]] = []
    for part in root.findall("Part"):
        number = xmlcodec.text(part, "PartNumber")
        if not number.isdigit():
            raise errors.MalformedXML("Each Part needs a numeric PartNumber.")
        requested.append((int(number), xmlcodec.text(part, "ETag")))
    headers = dict(upload.headers)
    meta_override = {k: v for k, v in call.headers.items() if k.startswith("x-cos-meta-")}
    if meta_override:
        # x-cos-meta-* sent on Complete replace those given at Initiate.
        headers = {k: v for k, v in headers.items() if not k.startswith("x-cos-meta-")} | meta_override
    meta = await run(api.service.complete, upload, requested, headers)
    host = call.host or f"{call.bucket}.cos.{api.settings.region}.myqcloud.com"
    nodes: list[tuple[str, xmlcodec.Value]] = [
        ("Location", f"{host}/{call.key}"),
        ("Bucket", call.bucket),
        ("Key", call.key),
        ("ETag", _etag(meta)),
    ]
    if ops is not None:
        # The Node SDK rebuilds UploadResult from ImageInfo and ProcessResults at this level.
        processed = await run(pictures.apply, api, meta, ops)
        nodes += [(k, v) for k, v in processed.original if k == "ImageInfo"]
        nodes.append(("ProcessResults", processed.results))
    return xml_response(
        "CompleteMultipartUploadResult", nodes, headers=[("x-cos-hash-crc64ecma", meta.crc64)]
    )
