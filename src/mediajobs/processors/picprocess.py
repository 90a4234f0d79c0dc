"""PicProcess: a picture job on `/pic_jobs` running an imageMogr2 rule with libvips
(spec/tags.md PicProcess; the rule language and its semantics are image-processing.md)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import ClassVar

from ..media import mogr2
from ..nodes import Nodes, Value
from . import register
from .base import InvalidOperation, JobContext, JobFailed, Submission
from .output import expand, parse_output
from .params import operation_element, text

_EXT = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp", "image/gif": "gif", "image/bmp": "bmp",
        "image/avif": "avif", "image/tiff": "tiff"}  # fmt: skip


def parse_process_rule(rule: str, where: str) -> mogr2.Pipeline:
    """A rule that makes an image (imageMogr2 / imageView2 stages), as PicProcess and Snapshot's CIParam take."""
    try:
        pipeline = mogr2.parse(rule)
    except mogr2.BadRule as exc:
        raise InvalidOperation(f"{where}: {exc.message}") from None
    if any(not isinstance(stage, (mogr2.Mogr2, mogr2.View2)) for stage in pipeline.stages):
        raise InvalidOperation(f"{where} may hold imageMogr2 and imageView2 stages only.")
    return pipeline


def apply_rule(ctx: JobContext, path: Path, pipeline: mogr2.Pipeline) -> Path:
    """Run `pipeline` on the image file `path` (of the job's workdir); the output replaces it."""
    from ..media import vips

    try:
        body, _ = vips.process(path, pipeline, limits=ctx.image_limits)
    except mogr2.BadRule as exc:
        raise JobFailed("InvalidParameter", exc.message) from None
    except vips.ImageError as exc:
        raise JobFailed("InputFileInvalid", exc.message) from None
    path.write_bytes(body)
    return path


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
    return parse_process_rule(rule, "ProcessRule"), is_info in ("true", "1")


def _image_nodes(fields: dict[str, str]) -> list[tuple[str, Value]]:
    return [
        ("Ave", fields.get("photo_rgb") or None),
        ("Format", fields.get("format", "").upper() or None),
        ("Height", fields.get("height")),
        ("Orientation", fields.get("orientation") or "0"),
        ("Quality", fields.get("quality") or "100"),
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
                body, mime = vips.process(src, pipeline, limits=ctx.image_limits)
                original = vips.describe_file(src, ctx.image_limits) if want_info else None
                result = vips.describe_bytes(body, photo_rgb=False)
            except mogr2.BadRule as exc:
                raise JobFailed("InvalidParameter", exc.message) from None
            except vips.ImageError as exc:
                raise JobFailed("InputFileInvalid", exc.message) from None
            ext = _EXT.get(mime, "img")
            key = expand(out.object, input_key=ctx.job.input_object, job_id=ctx.job.job_id, ext=ext)
            dst = work / f"out.{ext}"
            dst.write_bytes(body)
            ctx.check()
            etag = ctx.store_output(out.bucket, key, dst)
        source_etag = f'"{ctx.objects.head(ctx.job.bucket, ctx.job.input_object).etag}"'
        location = f"{out.bucket}.cos.{out.region}.myqcloud.com/{key}"
        processed = [
            ("Etag", f'"{etag}"'),
            ("Format", result.get("format", "").upper()),
            ("Height", result["height"]),
            ("Quality", result.get("quality") or "100"),
            ("Size", str(len(body))),
            ("Width", result["width"]),
        ]
        # Both shapes of the result (spec/tags.md PicProcess): the docs' and the Go SDK's.
        nodes: list[tuple[str, Value]] = [("ObjectName", key)]
        if original is not None:
            original_nodes = _image_nodes(original)
            nodes.append(("OriginalInfo", [("Etag", source_etag), ("ImageInfo", original_nodes)]))
        nodes.append(("ProcessResult", processed))
        upload: list[tuple[str, Value]] = []
        if original is not None:
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
