"""Image processing on GET Object: `?imageMogr2/...`, `?imageView2/...` pipelines and
`?imageInfo` (spec/image-processing.md 4-5), run with libvips in a worker thread."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from .. import errors
from .common import run
from .wire import WireResponse

if TYPE_CHECKING:
    from .server import Api, Call

RULE_PREFIXES = ("imagemogr2/", "imageview2/")
INFO_CALLS = ("imageinfo",)
MAX_IMAGE_BYTES = 64 * 1024 * 1024


def rule_of(call: Call) -> str | None:
    """The processing rule a GET carries as a query name (`?imageMogr2/thumbnail/!50p=`)."""
    for name, _ in call.params:
        low = name.lower()
        if low.startswith(RULE_PREFIXES) or low in INFO_CALLS:
            return name
    return None


async def dispatch(api: Api, call: Call, rule: str) -> WireResponse:
    meta = await run(api.service.head, call.bucket, call.key)
    if meta.size > MAX_IMAGE_BYTES:
        raise errors.InvalidArgument(f"Images over {MAX_IMAGE_BYTES // (1024 * 1024)} MB are not processed.")
    from ..media import mogr2, vips

    if rule.lower() == "imageinfo":

        def info() -> bytes:
            with api.service.local_file(meta) as path:
                return json.dumps(vips.image_info(path)).encode()

        return WireResponse(200, await run(info), content_type="application/json")
    pipeline = mogr2.parse(rule)

    def work() -> tuple[bytes, str]:
        with api.service.local_file(meta) as path:
            return vips.process(path, pipeline)

    body, mime = await run(work)
    return WireResponse(200, body, content_type=mime)
