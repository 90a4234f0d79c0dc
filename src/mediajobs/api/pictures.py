"""Picture processing on the object API (spec/image-processing.md 1, 4, 5 and 6), run with libvips in a
worker thread:

- GET with a rule as a query name: `?imageMogr2/...`, `?imageView2/...` pipelines, optionally ending in an
  info stage, and the info calls `?imageInfo`, `?exif`, `?imageAve`;
- persistent processing: the `Pic-Operations` header on PUT Object and on Complete Multipart Upload, and
  `POST ?image_process` on a stored object, answered with `UploadResult`.

One engine (`media.vips`) serves these and PicProcess jobs; the limits come from the settings.
"""

from __future__ import annotations

import json
import os
import posixpath
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

from .. import errors
from ..core import image_limits
from ..keys import key_problem
from ..media import mogr2
from ..media.imagepool import ImagePool
from ..storage.service import ObjectMeta
from .common import http_date, run
from .wire import WireResponse, empty, xml_response

if TYPE_CHECKING:
    from ..media.vips import ImageLimits
    from ..nodes import Nodes, Value
    from .server import Api, Call

RULE_PREFIXES = ("imagemogr2/", "imageview2/", "style/")
INFO_CALLS = {
    "imageinfo": mogr2.InfoKind.IMAGE_INFO,
    "exif": mogr2.InfoKind.EXIF,
    "imageave": mogr2.InfoKind.IMAGE_AVE,
}
MAX_RULES = 5


_POOLS: dict[int, ImagePool] = {}
_POOLS_LOCK = threading.Lock()


def image_pool(api: Api) -> ImagePool:
    """The API node's image processes (one pool per process, sized by `image_workers`)."""
    workers = api.settings.image_workers
    if workers < 0:
        workers = os.cpu_count() or 1
    with _POOLS_LOCK:
        pool = _POOLS.get(workers)
        if pool is None:
            pool = _POOLS[workers] = ImagePool(workers)
        return pool


def rule_of(call: Call) -> str | None:
    """The processing rule a GET carries as a query name (`?imageMogr2/thumbnail/!50p=`), section 1.

    A value, when there is one, belongs to the rule (a raw rule's base64 padding splits at its `=`).
    """
    for name, value in call.params:
        low = name.lower()
        if low.startswith(RULE_PREFIXES) or low in INFO_CALLS:
            return f"{name}={value}" if value else name
    return None


def _parse(rule: str) -> mogr2.Pipeline:
    pipeline = mogr2.parse(rule)
    for stage in pipeline.stages:
        if isinstance(stage, mogr2.Style):
            raise mogr2.BadRule(f"style/{stage.name}", "image styles are not supported by this server")
    return pipeline


def _check_size(api: Api, meta: ObjectMeta) -> None:
    from ..media.vips import ImageTooLarge

    limit = api.settings.image_max_bytes
    if meta.size > limit:
        raise ImageTooLarge(f"The image is {meta.size} bytes; images up to {limit} bytes are processed.")


# ---- GET -------------------------------------------------------------------------------------------------


async def dispatch(api: Api, call: Call, rule: str) -> WireResponse:
    from .objects import check_conditions, get_object

    low = rule.lower()
    pipeline = mogr2.Pipeline((mogr2.Info(INFO_CALLS[low]),)) if low in INFO_CALLS else _parse(rule)
    meta = await run(api.service.head, call.bucket, call.key)
    if check_conditions(call, meta):
        return empty(304, [("ETag", f'"{meta.etag}"'), ("Last-Modified", http_date(meta.last_modified))])
    info = pipeline.stages[-1] if isinstance(pipeline.stages[-1], mogr2.Info) else None
    steps = mogr2.Pipeline(pipeline.stages[:-1]) if info is not None and len(pipeline.stages) > 1 else None
    if info is None:
        steps = pipeline
    if meta.size > api.settings.image_max_bytes and steps is not None and _ignores_errors(steps):
        return await get_object(api, call)  # ignore-error/1: the original, streamed as it is
    _check_size(api, meta)
    lim = image_limits(api.settings)
    pool = image_pool(api)

    def work() -> tuple[bytes, str]:
        with api.service.local_file(meta) as path:
            if steps is None:
                assert info is not None
                return _info_body(pool, info.kind, path, None, lim), "application/json"
            data, mime = pool.process(path, steps, lim)
        if info is None:
            return data, mime
        return _info_body(pool, info.kind, None, data, lim), "application/json"

    body, mime = await run(work)
    headers = [("Last-Modified", http_date(meta.last_modified))]
    if mime != "application/json":
        headers.append(("ETag", f'"{_md5(body)}"'))
    return WireResponse(200, body, headers, content_type=mime)


def _ignores_errors(pipeline: mogr2.Pipeline) -> bool:
    for stage in pipeline.stages:
        if isinstance(stage, mogr2.Mogr2) and any(isinstance(op, mogr2.IgnoreError) for op in stage.ops):
            return True
        if isinstance(stage, mogr2.View2) and stage.ignore_error:
            return True
    return False


def _md5(data: bytes) -> str:
    import hashlib

    return hashlib.md5(data).hexdigest()


def _info_body(
    pool: ImagePool, kind: mogr2.InfoKind, path: Path | None, data: bytes | None, lim: ImageLimits
) -> bytes:
    """The JSON of an info call on the file `path` or, after a pipeline, on the output `data`."""
    from ..media import vips

    if kind is mogr2.InfoKind.EXIF:  # the header alone: no pixel limit applies
        tags = pool.exif(path, lim) if path is not None else pool.exif_bytes(data or b"", lim)
        return json.dumps(tags, ensure_ascii=False).encode()
    described = pool.describe_file(path, lim) if path is not None else pool.describe_bytes(data or b"", lim)
    if kind is mogr2.InfoKind.IMAGE_AVE:
        return json.dumps({"RGB": described["photo_rgb"]}).encode()
    return json.dumps({k: v for k, v in described.items() if k in vips.IMAGE_INFO_FIELDS}).encode()


# ---- Pic-Operations ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PicRule:
    bucket: str
    key: str
    rule: str
    pipeline: mogr2.Pipeline


@dataclass(frozen=True)
class PicOperations:
    is_pic_info: bool
    rules: tuple[PicRule, ...]


def pic_operations(call: Call) -> PicOperations | None:
    """The request's `Pic-Operations` (section 6.1), checked whole before anything is stored."""
    raw = call.header("pic-operations")
    if not raw:
        return None
    return parse_pic_operations(raw, call.bucket, call.key)


def _bad(message: str) -> errors.MediaJobsError:
    return errors.InvalidPicOperations(message)


def resolve_fileid(fileid: str, source_key: str) -> str:
    """An output key: `/a/b` is absolute; anything else is relative to the source key's directory."""
    if fileid.startswith("/"):
        return fileid.lstrip("/")
    directory = posixpath.dirname(source_key)
    return f"{directory}/{fileid}" if directory else fileid


def parse_pic_operations(raw: str, bucket: str, source_key: str) -> PicOperations:
    try:
        doc = json.loads(raw)
    except ValueError:
        raise _bad("Pic-Operations is not valid JSON.") from None
    if not isinstance(doc, dict):
        raise _bad("Pic-Operations must be a JSON object.")
    flag = doc.get("is_pic_info", 0)
    if str(flag).strip().lower() not in ("0", "1", "true", "false", ""):
        raise _bad("is_pic_info must be 0 or 1.")
    rules_doc = doc.get("rules") or []
    if not isinstance(rules_doc, list):
        raise _bad("rules must be a JSON array.")
    if len(rules_doc) > MAX_RULES:
        raise _bad(f"Pic-Operations has {len(rules_doc)} rules; at most {MAX_RULES} are allowed.")
    rules: list[PicRule] = []
    for i, item in enumerate(rules_doc, 1):
        if not isinstance(item, dict):
            raise _bad(f"rules[{i}] must be a JSON object.")
        fileid, rule = item.get("fileid"), item.get("rule")
        if not isinstance(fileid, str) or not fileid.strip():
            raise _bad(f"rules[{i}].fileid is required.")
        if not isinstance(rule, str) or not rule.strip():
            raise _bad(f"rules[{i}].rule is required.")
        fileid = unquote(fileid.strip())
        if fileid.endswith("/"):
            raise _bad(f"rules[{i}].fileid must not end with '/'.")
        key = resolve_fileid(fileid, source_key)
        problem = key_problem(key)
        if problem is not None:
            raise _bad(f"rules[{i}].fileid: {problem[1]}")
        dest = str(item.get("bucket") or bucket).strip()
        try:
            pipeline = _parse(rule.strip())
        except mogr2.BadRule as exc:
            raise errors.InvalidArgument(f"rules[{i}].rule: {exc.message}") from None
        if any(isinstance(s, mogr2.Info) for s in pipeline.stages):
            raise _bad(f"rules[{i}].rule: imageInfo, exif and imageAve cannot be stored.")
        rules.append(PicRule(dest, key, rule.strip(), pipeline))
    return PicOperations(str(flag).strip().lower() in ("1", "true"), tuple(rules))


def _location(api: Api, bucket: str, key: str) -> str:
    bucket_info = api.service.get_bucket(bucket)
    region = bucket_info.region if bucket_info is not None else api.settings.region
    return f"{bucket}.cos.{region}.myqcloud.com/{key}"


def _store(api: Api, bucket: str, key: str, data: bytes, mime: str) -> ObjectMeta:
    headers = {"Content-Type": mime}
    if len(data) <= api.settings.inline_max:
        return api.service.put_inline(bucket, key, data, headers=headers)
    view = memoryview(data)
    info = api.service.write_blob(view[start : start + (1 << 20)] for start in range(0, len(data), 1 << 20))
    return api.service.put(bucket, key, info, headers=headers)


def _image_info_nodes(described: dict[str, str]) -> Nodes:
    return [
        ("Format", described.get("format", "").upper()),
        ("Width", described.get("width")),
        ("Height", described.get("height")),
        ("Quality", described.get("quality") or "100"),
        ("Ave", described.get("photo_rgb")),
        ("Orientation", described.get("orientation") or "0"),
    ]


@dataclass(frozen=True)
class Processed:
    """What persistent processing of one source gave: the nodes of `UploadResult`."""

    original: list[tuple[str, Value]]  # OriginalInfo's children
    results: list[tuple[str, Value]]  # ProcessResults' Object entries
    source_etag: str  # quoted; the result's when a rule overwrote the source


def apply(api: Api, meta: ObjectMeta, ops: PicOperations) -> Processed:
    """Run every rule on the stored source `meta` and store each output (in a worker thread).

    A result that replaces the source itself is stored last, so every rule reads the uploaded bytes.
    A rule that fails stops the rest; the source and the results already stored are kept (section 6.2).
    """
    from ..media import vips

    lim = image_limits(api.settings)
    pool = image_pool(api)
    if meta.size > lim.max_input_bytes:
        raise vips.ImageTooLarge(f"Images over {lim.max_input_bytes} bytes are not processed on upload.")
    for rule in ops.rules:
        api.service.require_bucket(rule.bucket)
    results: list[tuple[str, Value]] = []
    deferred: list[tuple[int, PicRule, bytes, str]] = []
    source_etag = f'"{meta.etag}"'
    with api.service.local_file(meta) as path:
        described_source = pool.describe_file(path, lim) if ops.is_pic_info else None
        for i, rule in enumerate(ops.rules):
            data, mime = pool.process(path, rule.pipeline, lim)
            if (rule.bucket, rule.key) == (meta.bucket, meta.key):
                # Storing it now would retire the bytes the next rules read.
                deferred.append((i, rule, data, mime))
                results.append(("Object", []))  # filled in below
                continue
            results.append(_result_node(api, rule, data, mime))
    for i, rule, data, mime in deferred:  # in rule order: the last one written wins, as it would
        results[i] = _result_node(api, rule, data, mime)
        source_etag = _etag_of(results[i])
    original: list[tuple[str, Value]] = [
        ("Key", meta.key),
        ("Location", _location(api, meta.bucket, meta.key)),
    ]
    if described_source is not None:
        original.append(("ImageInfo", _image_info_nodes(described_source)))
    original.append(("ETag", source_etag))
    return Processed(original, results, source_etag)


def _etag_of(node: tuple[str, Value]) -> str:
    children = node[1]
    assert isinstance(children, list)
    return next(str(v) for k, v in children if k == "ETag")


def _result_node(api: Api, rule: PicRule, data: bytes, mime: str) -> tuple[str, Value]:

    # Format, size and quality come from the header: no pixel is decoded for them.
    described = image_pool(api).describe_bytes(data, image_limits(api.settings), photo_rgb=False)
    stored = _store(api, rule.bucket, rule.key, data, mime)
    return (
        "Object",
        [
            ("Key", rule.key),
            ("Location", _location(api, rule.bucket, rule.key)),
            ("Format", described.get("format", "").upper()),
            ("Width", described.get("width")),
            ("Height", described.get("height")),
            ("Size", str(stored.size)),
            ("Quality", described.get("quality") or "100"),
            ("ETag", f'"{stored.etag}"'),
        ],
    )


def upload_result(processed: Processed) -> Nodes:
    nodes: list[tuple[str, Value]] = [("OriginalInfo", processed.original)]
    if processed.results:
        nodes.append(("ProcessResults", processed.results))
    return nodes


async def image_process(api: Api, call: Call) -> WireResponse:
    """`POST /<key>?image_process` with `Pic-Operations`: process a stored object (section 6.1)."""
    ops = pic_operations(call)
    if ops is None:
        raise _bad("POST ?image_process needs a Pic-Operations header.")
    meta = await run(api.service.head, call.bucket, call.key)
    processed = await run(apply, api, meta, ops)
    return xml_response("UploadResult", upload_result(processed))
