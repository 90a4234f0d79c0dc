"""StreamExtract: each requested stream of the input to its own object (spec/tags.md StreamExtract).

`Operation.Output.StreamExtract` lists `Index` (the stream index MediaInfo reports) and `Object`.
Every stream is copied, never re-encoded, into the container the Object's extension names when that
container can hold the codec, or into the codec's usual container when the key has no known
extension. One FFmpeg run reads the input once and writes every output.
"""

from __future__ import annotations

import posixpath
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..media import ffmpeg
from ..nodes import Nodes
from . import register
from .base import InvalidOperation, JobContext, JobFailed, Submission
from .common import MAX_INPUT_STREAMS, probe_input, run_ffmpeg
from .output import Output, check_output_key, expand, media_result
from .params import integer, operation_element, text

_MP4 = frozenset({"h264", "hevc", "av1", "vp9", "mpeg4", "aac", "mp3", "opus", "flac", "alac", "ac3", "eac3",
                  "mov_text"})  # fmt: skip
_PCM = frozenset({"pcm_s16le", "pcm_s24le", "pcm_s32le", "pcm_f32le", "pcm_u8", "pcm_alaw", "pcm_mulaw"})
# extension -> (muxer, codecs it holds by stream copy; None: any codec)
_BY_EXT: dict[str, tuple[str, frozenset[str] | None]] = {
    "mp4": ("mp4", _MP4),
    "m4v": ("mp4", _MP4),
    "mov": ("mov", _MP4 | _PCM),
    "m4a": ("ipod", frozenset({"aac", "alac"})),
    "mkv": ("matroska", None),
    "mka": ("matroska", None),
    "webm": ("webm", frozenset({"vp8", "vp9", "av1", "opus", "vorbis", "webvtt"})),
    "ts": ("mpegts", frozenset({"h264", "hevc", "mpeg2video", "aac", "mp3", "mp2", "ac3", "eac3", "opus"})),
    "flv": ("flv", frozenset({"h264", "aac", "mp3"})),
    "h264": ("h264", frozenset({"h264"})),
    "264": ("h264", frozenset({"h264"})),
    "h265": ("hevc", frozenset({"hevc"})),
    "hevc": ("hevc", frozenset({"hevc"})),
    "265": ("hevc", frozenset({"hevc"})),
    "aac": ("adts", frozenset({"aac"})),
    "mp3": ("mp3", frozenset({"mp3"})),
    "flac": ("flac", frozenset({"flac"})),
    "ogg": ("ogg", frozenset({"vorbis", "opus", "flac"})),
    "oga": ("ogg", frozenset({"vorbis", "opus", "flac"})),
    "opus": ("ogg", frozenset({"opus"})),
    "wav": ("wav", _PCM),
    "ac3": ("ac3", frozenset({"ac3"})),
    "amr": ("amr", frozenset({"amr_nb"})),
    "srt": ("srt", frozenset({"subrip"})),
    "vtt": ("webvtt", frozenset({"webvtt"})),
    "ass": ("ass", frozenset({"ass", "ssa"})),
}
# codec -> the extension of its usual container, for keys without a known extension
_USUAL = {
    "h264": "mp4", "hevc": "mp4", "av1": "mp4", "mpeg4": "mp4", "vp8": "webm", "vp9": "webm",
    "aac": "m4a", "alac": "m4a", "mp3": "mp3", "flac": "flac", "opus": "ogg", "vorbis": "ogg",
    "ac3": "ac3", "amr_nb": "amr", "subrip": "srt", "webvtt": "vtt", "ass": "ass", "ssa": "ass",
    "mov_text": "mp4", **dict.fromkeys(_PCM, "wav"),
}  # fmt: skip


@dataclass(frozen=True)
class Extract:
    index: int
    object: str


def parse_stream_extract(op: ET.Element | None) -> tuple[Output, list[Extract]]:
    if op is not None and op.findtext("TemplateId"):
        raise InvalidOperation("StreamExtract takes no TemplateId.")
    node = op.find("Output") if op is not None else None
    if node is None:
        raise InvalidOperation("Output is required.")
    region, bucket = text(node, "Region"), text(node, "Bucket")
    for label, value in (("Region", region), ("Bucket", bucket)):
        if not value:
            raise InvalidOperation(f"Output.{label} is required.")
    extracts: list[Extract] = []
    for entry in node.findall("StreamExtract"):
        index = integer(entry, "Index", 0, 9999)
        if index is None:
            raise InvalidOperation("Output.StreamExtract.Index is required.")
        # The Object; one doc example names it Output.
        key = (text(entry, "Object") or text(entry, "Output")).lstrip("/")
        check_output_key("Output.StreamExtract.Object", key)
        extracts.append(Extract(index, key))
    if not extracts:
        raise InvalidOperation("Output.StreamExtract is required (Index and Object per stream).")
    if len(extracts) > MAX_INPUT_STREAMS:
        raise InvalidOperation(f"At most {MAX_INPUT_STREAMS} Output.StreamExtract entries are accepted.")
    if len({e.object for e in extracts}) != len(extracts):
        raise InvalidOperation("Two Output.StreamExtract entries name the same Object.")
    return Output(region, bucket, ""), extracts


def container_for(key: str, codec: str) -> tuple[str, str]:
    """(muxer, extension) for a stream of `codec` written to `key`; JobFailed when they do not fit."""
    ext = posixpath.splitext(posixpath.basename(key))[1][1:].lower()
    if ext in _BY_EXT:
        muxer, codecs = _BY_EXT[ext]
        if codecs is None or codec in codecs:
            return muxer, ext
        usual = _USUAL.get(codec, "mkv")
        raise JobFailed(
            "InvalidParameter",
            f"A {codec} stream cannot be stored as .{ext} ({key!r}); use .{usual} or .mkv.",
        )
    usual = _USUAL.get(codec, "mkv")
    return _BY_EXT[usual][0], usual


@register
class StreamExtractProcessor:
    tag: ClassVar[str] = "StreamExtract"
    kind: ClassVar[str] = "media"
    time_limit: ClassVar[float] = 3600.0

    def validate(self, sub: Submission) -> None:
        parse_stream_extract(sub.operation)

    def run(self, ctx: JobContext) -> Nodes:
        op = operation_element(ctx.job.operation)
        out, extracts = parse_stream_extract(op)
        with ctx.input_file() as src, ctx.workdir() as work:
            info = probe_input(src)
            codecs = {s.index: s.codec_name for s in info.video}
            codecs |= {s.index: s.codec_name for s in info.audio}
            codecs |= {s.index: s.codec_name for s in info.subtitles}
            args = ffmpeg.safe_input(str(src), info.demuxer)
            planned: list[tuple[str, Path]] = []  # (key, local file)
            for n, e in enumerate(extracts):
                if e.index not in codecs:
                    known = ", ".join(str(i) for i in sorted(codecs)) or "none"
                    raise JobFailed(
                        "InvalidParameter",
                        f"The input has no stream with Index {e.index} (streams: {known}).",
                    )
                codec = codecs[e.index]
                muxer, ext = container_for(e.object, codec)
                key = expand(e.object, input_key=ctx.job.input_object, job_id=ctx.job.job_id, ext=ext)
                local = work / f"out{n}.{ext}"
                args += ["-map", f"0:{e.index}", "-c", "copy", "-f", muxer]
                args += ["-movflags", "+faststart"] if muxer in ("mp4", "mov", "ipod") else []
                args += ["-y", str(local)]
                planned.append((key, local))
            run_ffmpeg(ctx, args, info.duration)
            stored: list[tuple[str, str]] = []
            for key, local in planned:
                ctx.check()
                stored.append((key, ctx.store_output(out.bucket, key, local)))
        return [("MediaResult", media_result(out, stored))]
