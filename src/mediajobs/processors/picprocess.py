"""PicProcess: a picture job on `/pic_jobs` running an imageMogr2 rule with libvips
(spec/tags.md PicProcess; the rule language and its semantics are image-processing.md)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import ClassVar

from ..media import mogr2
from ..nodes import Nodes, Value
from . import register
from .base import InvalidOperation, JobContext, JobFailed, Submission
from .output import expand, parse_output
from .params import operation_element, text

_EXT = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp", "image/gif": "gif", "image/bmp": "bmp",
        "image/avif": "avif", "image/tiff": "tiff"}  # fmt: skip


def parse_picprocess(op: ET.Element | None) -> tuple[mogr2.Pipeline, bool]:
    node = op.find("PicProcess") if op is not None else None
    if node is None:
        raise InvalidOperation("Operation.PicProcess (or a TemplateId) is required.")
    rule = text(node, "ProcessRule")
    if not rule:
        raise InvalidOperation("PicProcess.ProcessRule is required.")
    is_info = text(node, "IsPicInfo").lower()
    if is_info not in ("", "true", "false", "1", "0"):
        raise InvalidOperation("PicProcess.IsPicInfo must be true or false.")
    try:
        pipeline = mogr2.parse(rule)
    except mogr2.BadRule as exc:
        raise InvalidOperation(f"ProcessRule: {exc.message}") from None
    if any(not isinstance(stage, (mogr2.Mogr2, mogr2.View2)) for stage in pipeline.stages):
        raise InvalidOperation("ProcessRule may hold imageMogr2 and imageView2 stages only.")
    return pipeline, is_info in ("true", "1")


def _image_nodes(fields: dict[str, str], quality: int | None) -> list[tuple[str, Value]]:
    return [
        ("Ave", fields.get("photo_rgb") or None),
        ("Format", fields.get("format", "").upper() or None),
        ("Height", fields.get("height")),
        ("Orientation", "0"),
        ("Quality", str(quality) if quality is not None else None),
        ("Width", fields.get("width")),
    ]


@register
class PicProcessProcessor:
    tag: ClassVar[str] = "PicProcess"
    kind: ClassVar[str] = "pic"
    time_limit: ClassVar[float] = 300.0

    def validate(self, sub: Submission) -> None:
        parse_picprocess(sub.operation)
        parse_output(sub.operation)

    def run(self, ctx: JobContext) -> Nodes:
        from ..media import vips

        op = operation_element(ctx.job.operation)
        pipeline, want_info = parse_picprocess(op)
        out = parse_output(op)
        with ctx.input_file() as src, ctx.workdir() as work:
            try:
                body, mime = vips.process(src, pipeline)
                original = vips.image_info(src)
            except vips.ImageError as exc:
                raise JobFailed("InputFileInvalid", exc.message) from None
            src_quality = vips.estimate_jpeg_quality(src)
            ext = _EXT.get(mime, "img")
            key = expand(out.object, input_key=ctx.job.input_object, job_id=ctx.job.job_id, ext=ext)
            dst = work / f"out.{ext}"
            dst.write_bytes(body)
            result = vips.image_info(dst)
            out_quality = vips.estimate_jpeg_quality(dst)
            ctx.check()
            etag = ctx.store_output(out.bucket, key, dst)
        source_etag = f'"{ctx.objects.head(ctx.job.bucket, ctx.job.input_object).etag}"'
        location = f"{out.bucket}.cos.{out.region}.myqcloud.com/{key}"
        original_nodes = _image_nodes(original, src_quality)
        processed = [
            ("Etag", f'"{etag}"'),
            ("Format", result.get("format", "").upper()),
            ("Height", result["height"]),
            ("Quality", str(out_quality) if out_quality is not None else None),
            ("Size", result["size"]),
            ("Width", result["width"]),
        ]
        # Both shapes of the result (spec/tags.md PicProcess): the docs' and the Go SDK's.
        nodes: list[tuple[str, Value]] = [("ObjectName", key)]
        if want_info:
            nodes.append(("OriginalInfo", [("Etag", source_etag), ("ImageInfo", original_nodes)]))
        nodes.append(("ProcessResult", processed))
        upload: list[tuple[str, Value]] = []
        if want_info:
            upload.append(
                (
                    "OriginalInfo",
                    [
                        ("Key", ctx.job.input_object),
                        (
                            "Location",
                            f"{ctx.job.bucket}.cos.{ctx.job.region}.myqcloud.com/{ctx.job.input_object}",
                        ),
                        ("ETag", source_etag),
                        ("ImageInfo", original_nodes),
                    ],
                )
            )
        upload.append(("ProcessResults", [("Object", [("Key", key), ("Location", location), *processed])]))
        nodes.append(("UploadResult", upload))
        return [("PicProcessResult", nodes)]
