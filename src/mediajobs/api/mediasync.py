"""Synchronous media processing on GET Object: `ci-process=videoinfo | snapshot | filehash`
(spec/media-sync.md). Each runs in a worker thread with a wall-clock limit."""

from __future__ import annotations

import hashlib
import logging
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .. import errors
from ..jobs.render import fmt_time
from ..media import ffmpeg
from ..nodes import render_xml
from ..storage.service import ObjectMeta
from .common import run
from .wire import WireResponse

log = logging.getLogger("mediajobs.api")

if TYPE_CHECKING:
    from .server import Api, Call

SYNC_SECONDS = 30.0
MAX_SIDE = 4096
FILEHASH_LIMIT = 128 * 1024 * 1024
_HASHES = {"md5": ("MD5", hashlib.md5), "sha1": ("SHA1", hashlib.sha1), "sha256": ("SHA256", hashlib.sha256)}


def _xml(root_nodes: list[tuple[str, object]]) -> WireResponse:
    # Exactly `application/xml`: the Python SDK parses the body only under that Content-Type.
    return WireResponse(200, render_xml("Response", root_nodes), content_type="application/xml")  # type: ignore[arg-type]


async def dispatch(api: Api, call: Call, process: str) -> WireResponse:
    meta = await run(api.service.head, call.bucket, call.key)
    if process == "videoinfo":
        return await videoinfo(api, meta)
    if process == "snapshot":
        return await snapshot(api, call, meta)
    if process == "filehash":
        return await filehash(api, call, meta)
    if process == "pm3u8":
        raise errors.NotImplementedByServer("ci-process=pm3u8 is not implemented.")
    raise errors.InvalidArgument(f"ci-process {process!r} is not one of videoinfo, snapshot, filehash.")


async def videoinfo(api: Api, meta: ObjectMeta) -> WireResponse:
    from ..media.probe import NotMedia, probe

    def work() -> WireResponse:
        with api.service.local_file(meta) as path:
            try:
                info = probe(path)
            except NotMedia as exc:
                raise errors.InvalidArgument(f"The object is not a media file: {exc}") from None
        return _xml([("MediaInfo", info.nodes())])

    return await run(work)


def _size(call: Call, name: str) -> int:
    raw = call.q.get(name, "").strip()
    if not raw:
        return 0
    if not raw.isdigit() or int(raw) > MAX_SIDE:
        raise errors.InvalidArgument(f"{name} must be an integer from 0 to {MAX_SIDE}.")
    return int(raw)


async def snapshot(api: Api, call: Call, meta: ObjectMeta) -> WireResponse:
    raw_time = call.q.get("time", "").strip() or "0"
    try:
        at = float(raw_time)
    except ValueError:
        raise errors.InvalidArgument("time must be a number of seconds.") from None
    if not 0 <= at < 1e7:
        raise errors.InvalidArgument("time must be a non-negative number of seconds.")
    width, height = _size(call, "width"), _size(call, "height")
    fmt = (call.q.get("format", "").strip() or "jpg").lower()
    if fmt not in ("jpg", "jpeg", "png"):
        raise errors.InvalidArgument("format must be jpg or png.")
    rotate = (call.q.get("rotate", "").strip() or "auto").lower()
    if rotate not in ("auto", "off"):
        raise errors.InvalidArgument("rotate must be auto or off.")
    mode = (call.q.get("mode", "").strip() or "exactframe").lower()
    if mode not in ("exactframe", "keyframe"):
        raise errors.InvalidArgument("mode must be exactframe or keyframe.")

    def grab(path: Path, out: Path, t: float, demuxer: str) -> None:
        before = ["-noautorotate"] if rotate == "off" else []
        if mode == "keyframe":
            before += ["-skip_frame", "nokey", "-noaccurate_seek"]
        before += ["-ss", f"{t:.3f}"]
        args = ffmpeg.safe_input(str(path), demuxer, before=before)
        filters = [f"scale={width or -1}:{height or -1}"] if width or height else []
        # JPEG wants full-range YUV; a scaled frame is limited-range until converted.
        filters += ["format=rgb24"] if fmt == "png" else ["format=yuvj420p"]
        args += ["-vf", ",".join(filters)]
        codec = ["-c:v", "png"] if fmt == "png" else ["-c:v", "mjpeg", "-q:v", "2"]
        args += ["-frames:v", "1", *codec, "-f", "image2", "-update", "1", "-y", str(out)]
        ffmpeg.run(args, deadline=time.time() + SYNC_SECONDS, cancelled=threading.Event())

    def work() -> bytes:
        from ..media.probe import NotMedia, probe

        tmp_root = getattr(api.service.blobs, "tmp_dir", None)
        with api.service.local_file(meta) as path, tempfile.TemporaryDirectory(dir=tmp_root) as work_dir:
            try:
                info = probe(path)
            except NotMedia as exc:
                raise errors.InvalidArgument(f"The object is not a media file: {exc}") from None
            if not info.video:
                raise errors.InvalidArgument("The object has no video stream to take a snapshot of.")
            out = Path(work_dir) / f"frame.{'png' if fmt == 'png' else 'jpg'}"
            t = at
            if info.duration and t >= info.duration:
                # Past the end: the last frame, as a player shows it.
                t = max(0.0, info.duration - 0.1)
            try:
                grab(path, out, t, info.demuxer)
                if not out.exists() and t > 0:
                    grab(path, out, max(0.0, t - 1.0), info.demuxer)
            except ffmpeg.FFmpegTimeout:
                raise errors.InternalError("The snapshot took too long.") from None
            except ffmpeg.FFmpegError as exc:
                log.warning("snapshot of %s/%s failed: %s", meta.bucket, meta.key, exc)
                raise errors.InternalError("The frame could not be decoded.") from None
            if not out.exists():
                raise errors.InternalError("The frame could not be decoded.")
            return out.read_bytes()

    body = await run(work)
    return WireResponse(200, body, content_type="image/png" if fmt == "png" else "image/jpeg")


async def filehash(api: Api, call: Call, meta: ObjectMeta) -> WireResponse:
    kind = call.q.get("type", "").strip().lower()
    if kind not in _HASHES:
        raise errors.InvalidArgument("type must be md5, sha1 or sha256.")
    add = call.q.get("addtoheader", "").strip().lower()
    if add not in ("", "true", "false"):
        raise errors.InvalidArgument("addtoheader must be true or false.")
    if meta.size > FILEHASH_LIMIT:
        raise errors.InvalidArgument(
            "filehash works on objects up to 128 MB; use a FileHashCode job for larger ones."
        )
    node, make = _HASHES[kind]

    def work() -> str:
        h = make()
        if meta.data is not None:
            h.update(meta.data)
        else:
            for chunk in api.service.blobs.read(meta.blob):
                h.update(chunk)
        digest = h.hexdigest()
        if add == "true":
            api.service.update_headers(meta.bucket, meta.key, meta.etag, {f"x-cos-meta-{kind}": digest})
        return digest

    digest = await run(work)
    return _xml(
        [
            (
                "FileHashCodeResult",
                [
                    (node, digest),
                    ("FileSize", str(meta.size)),
                    ("LastModified", fmt_time(meta.last_modified, api.tz)),
                    ("Etag", f'"{meta.etag}"'),
                ],
            ),
            (
                "Input",
                [
                    ("Bucket", meta.bucket),
                    ("Object", meta.key),
                    ("Region", call.target.region or api.settings.region),
                ],
            ),
        ]
    )
