"""Service and bucket operations: list buckets, PUT/HEAD/DELETE bucket, list objects and
uploads, multi-delete (spec/objects.md 3, 4.5, 4.6, 5.7)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import errors
from . import xmlcodec
from .common import check_key, iso, iso_ms, read_small, run, url_encode
from .objects import OWNER, _int_param, _q, subresources
from .routes import check_bucket_name
from .wire import WireResponse, empty, xml_response

if TYPE_CHECKING:
    from .server import Api, Call

_LIST_PARAMS = frozenset(("prefix", "delimiter", "marker", "max-keys"))
_UPLOAD_PARAMS = frozenset(
    ("uploads", "prefix", "delimiter", "key-marker", "upload-id-marker", "max-uploads")
)
MAX_DELETE = 1000
_OWNER_NODES: xmlcodec.Nodes = [("ID", OWNER), ("DisplayName", OWNER)]


async def list_buckets(api: Api, call: Call) -> WireResponse:
    found = await run(api.service.list_buckets)
    uin = "qcs::cam::uin/100000000001:uin/100000000001"
    nodes: list[tuple[str, xmlcodec.Value]] = [("Owner", [("ID", uin), ("DisplayName", "100000000001")])]
    nodes.append(
        (
            "Buckets",
            [
                (
                    "Bucket",
                    [
                        ("Name", b.name),
                        ("Location", b.region),
                        ("CreationDate", iso(b.created_at)),
                        ("BucketType", "cos"),
                    ],
                )
                for b in found
            ]
            or None,
        )
    )
    nodes += [("Marker", None), ("IsTruncated", "false")]
    return xml_response("ListAllMyBucketsResult", nodes)


async def dispatch(api: Api, call: Call) -> WireResponse:
    m = call.method
    if m == "PUT":
        subresources(call, frozenset())
        return await create_bucket(api, call)
    if m == "HEAD":
        subresources(call, frozenset())
        b = await run(api.service.require_bucket, call.bucket)
        return empty(200, [("x-cos-bucket-region", b.region)])
    if m == "DELETE":
        subresources(call, frozenset())
        await run(api.service.delete_bucket, call.bucket)
        return empty(204)
    if m == "GET":
        sub = subresources(call, _UPLOAD_PARAMS | _LIST_PARAMS)
        if "uploads" in sub:
            return await list_uploads(api, call)
        return await list_objects(api, call)
    if m == "POST":
        sub = subresources(call, frozenset(("delete",)))
        if sub == {"delete"}:
            return await delete_many(api, call)
        raise errors.MethodNotAllowed("POST on a bucket needs ?delete.")
    raise errors.MethodNotAllowed()


async def create_bucket(api: Api, call: Call) -> WireResponse:
    check_bucket_name(call.bucket)
    # An optional CreateBucketConfiguration body is accepted and ignored; read it (bounded).
    await read_small(call, api.settings.max_xml_size)
    region = call.target.region or api.settings.region
    await run(api.service.create_bucket, call.bucket, region)
    return empty(200, [("x-cos-bucket-region", region)])


async def list_objects(api: Api, call: Call) -> WireResponse:
    prefix, delimiter, marker = _q(call, "prefix"), _q(call, "delimiter"), _q(call, "marker")
    encoding = _q(call, "encoding-type")
    if encoding and encoding != "url":
        raise errors.InvalidArgument("encoding-type must be url.")
    max_keys = _int_param(call, "max-keys", 1000, 0, 1000)
    page = await run(
        lambda: api.service.list_objects(
            call.bucket, prefix=prefix, delimiter=delimiter, marker=marker, max_keys=max_keys
        )
    )

    def enc(s: str) -> str:
        return url_encode(s) if encoding else s

    nodes: list[tuple[str, xmlcodec.Value]] = [("Name", call.bucket)]
    if encoding:
        nodes.append(("EncodingType", "url"))
    nodes += [("Prefix", enc(prefix)), ("Marker", enc(marker)), ("MaxKeys", str(max_keys))]
    if delimiter:
        nodes.append(("Delimiter", delimiter))
    nodes.append(("IsTruncated", xmlcodec.bool_text(page.is_truncated)))
    if page.next_marker is not None:
        nodes.append(("NextMarker", enc(page.next_marker)))
    nodes += [("CommonPrefixes", [("Prefix", enc(p))]) for p in page.common_prefixes]
    for o in page.contents:
        nodes.append(
            (
                "Contents",
                [
                    ("Key", enc(o.key)),
                    ("LastModified", iso_ms(o.last_modified)),
                    ("ETag", f'"{o.etag}"'),
                    ("Size", str(o.size)),
                    ("Owner", _OWNER_NODES),
                    ("StorageClass", o.storage_class),
                ],
            )
        )
    return xml_response("ListBucketResult", nodes)


async def list_uploads(api: Api, call: Call) -> WireResponse:
    prefix = _q(call, "prefix")
    key_marker, id_marker = _q(call, "key-marker"), _q(call, "upload-id-marker")
    encoding = _q(call, "encoding-type") == "url"
    max_uploads = _int_param(call, "max-uploads", 1000, 0, 1000)
    found, truncated = await run(
        api.service.list_uploads, call.bucket, prefix, key_marker, id_marker, max_uploads
    )

    def enc(s: str) -> str:
        return url_encode(s) if encoding else s

    nodes: list[tuple[str, xmlcodec.Value]] = [("Bucket", call.bucket)]
    if encoding:
        nodes.append(("Encoding-Type", "url"))
    nodes += [
        ("KeyMarker", enc(key_marker) or None),
        ("UploadIdMarker", id_marker or None),
        ("NextKeyMarker", enc(found[-1].key) if truncated and found else None),
        ("NextUploadIdMarker", found[-1].upload_id if truncated and found else None),
        ("MaxUploads", str(max_uploads)),
        ("IsTruncated", xmlcodec.bool_text(truncated)),
        ("Prefix", enc(prefix) or None),
    ]
    for u in found:
        nodes.append(
            (
                "Upload",
                [
                    ("Key", enc(u.key)),
                    ("UploadId", u.upload_id),
                    ("StorageClass", u.storage_class),
                    ("Initiator", _OWNER_NODES),
                    ("Owner", _OWNER_NODES),
                    ("Initiated", iso_ms(u.initiated)),
                ],
            )
        )
    return xml_response("ListMultipartUploadsResult", nodes)


async def delete_many(api: Api, call: Call) -> WireResponse:
    body = await read_small(call, api.settings.max_xml_size)
    root = xmlcodec.parse(body, root="Delete")
    quiet = xmlcodec.text(root, "Quiet").lower() == "true"
    entries = root.findall("Object")
    if len(entries) > MAX_DELETE:
        raise errors.MalformedXML(f"A Delete request may name at most {MAX_DELETE} objects.")
    keys: list[str] = []
    failed: list[tuple[str, errors.MediaJobsError]] = []
    for entry in entries:
        key = xmlcodec.text(entry, "Key")
        try:
            check_key(key) if key else _raise_empty()
        except errors.MediaJobsError as exc:
            failed.append((key, exc))
            continue
        keys.append(key)
    await run(api.service.delete_many, call.bucket, keys)
    nodes: list[tuple[str, xmlcodec.Value]] = []
    if not quiet:
        nodes += [("Deleted", [("Key", k)]) for k in keys]
    nodes += [("Error", [("Key", k), ("Code", e.code), ("Message", e.message)]) for k, e in failed]
    if not nodes:
        # `<DeleteResult/>`: the Python SDK turns an empty root into None, which it expects here.
        return WireResponse(
            200, b"<?xml version='1.0' encoding='utf-8' ?>\n<DeleteResult/>", content_type="application/xml"
        )
    return xml_response("DeleteResult", nodes)


def _raise_empty() -> None:
    raise errors.InvalidObjectName("The key is empty.")
