"""Segment: re-wrap the input, optionally cut into pieces of a fixed length (spec/tags.md Segment).

Streams are copied. Cuts can only fall on video key frames, so before cutting by stream copy we
read the key frame times (demux only, bounded): when every cut point has a key frame close after
it, the pieces are cut from the copied stream (durations approximate, as on CI); otherwise the video
is re-encoded once with a key frame forced at every cut point, so pieces have the asked length.
Audio is copied unless the target container cannot hold its codec.

HLS output (`Format=hls`) writes the playlist at `Output.Object` and `<name>-<n>.ts` beside it;
`HlsEncrypt.IsHlsEncrypt=true` encrypts the segments with AES-128: a random key and IV per job, the
key stored as `<name>.key` beside the playlist, and the playlist's key URI set to `UriKey` (default:
that key object, relative to the playlist).
"""

from __future__ import annotations

import math
import posixpath
import re
import secrets
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from ..media import ffmpeg
from ..nodes import Nodes
from . import register
from .base import InvalidOperation, JobContext, JobFailed, Submission
from .common import MAX_INPUT_SECONDS, probe_input, run_ffmpeg
from .output import Output, expand, media_result, parse_output
from .params import flag, num, operation_element, text

if TYPE_CHECKING:
    from ..media.probe import MediaInfo

MAX_PIECES = 1000
KEYFRAME_SCAN_PACKETS = 50_000  # video packets read to find key frames (about 30 min at 25 fps)
HLS_DEFAULT_SECONDS = 5.0
TAIL_SECONDS = 0.1  # a last piece shorter than this (encoder padding) joins the one before
_UNSAFE_URI = re.compile(r'["\s\x00-\x1f\x7f]')


@dataclass(frozen=True)
class _Format:
    muxer: str
    ext: str
    video: frozenset[str] | None  # codecs it stores by copy; None: no video in this format
    audio: frozenset[str] | None  # None: any codec
    default_audio: str


_MP4_AUDIO = frozenset({"aac", "mp3", "opus", "flac", "alac", "ac3", "eac3"})
_FORMATS: dict[str, _Format] = {
    "mp4": _Format("mp4", "mp4", frozenset({"h264", "hevc", "av1", "vp9", "mpeg4"}), _MP4_AUDIO, "aac"),
    "ts": _Format("mpegts", "ts", frozenset({"h264", "hevc", "mpeg2video"}),
                  frozenset({"aac", "mp3", "mp2", "ac3", "eac3", "opus"}), "aac"),
    "mkv": _Format("matroska", "mkv", frozenset({"h264", "hevc", "av1", "vp8", "vp9", "mpeg4", "mpeg2video"}),
                   None, "aac"),
    "flv": _Format("flv", "flv", frozenset({"h264"}), frozenset({"aac", "mp3"}), "aac"),
    "hls": _Format("hls", "m3u8", frozenset({"h264", "hevc"}), frozenset({"aac", "mp3", "ac3", "eac3"}), "aac"),
    "mp3": _Format("mp3", "mp3", None, frozenset({"mp3"}), "mp3"),
    "aac": _Format("adts", "aac", None, frozenset({"aac"}), "aac"),
    "m4a": _Format("ipod", "m4a", None, frozenset({"aac", "alac"}), "aac"),
}  # fmt: skip
_AUDIO_ENCODERS = {"aac": "aac", "mp3": "libmp3lame"}


@dataclass
class SegmentSpec:
    format: str
    duration: float | None = None  # piece length; None: one file (HLS: the default segment length)
    start: float = 0.0
    end: float | None = None
    encrypt: bool = False
    uri_key: str = ""

    @property
    def fmt(self) -> _Format:
        return _FORMATS[self.format]

    @property
    def cut(self) -> float | None:
        """Seconds between cuts: Duration, HLS's default segment length, or None (one file)."""
        if self.duration is not None:
            return self.duration
        return HLS_DEFAULT_SECONDS if self.format == "hls" else None


def parse_segment(op: ET.Element | None) -> SegmentSpec:
    if op is not None and op.findtext("TemplateId"):
        raise InvalidOperation(
            "TemplateId is not supported by this server yet; give the Segment node inline."
        )
    node = op.find("Segment") if op is not None else None
    if node is None:
        raise InvalidOperation("Operation.Segment is required.")
    fmt = text(node, "Format").lower()
    if not fmt:
        raise InvalidOperation("Segment.Format is required.")
    if fmt not in _FORMATS:
        raise InvalidOperation(f"Segment.Format {fmt!r} is not one of {', '.join(_FORMATS)}.")
    spec = SegmentSpec(format=fmt)
    spec.duration = num(node, "Duration", 1, MAX_INPUT_SECONDS)
    spec.start = num(node, "StartTime", 0, MAX_INPUT_SECONDS) or 0.0
    spec.end = num(node, "EndTime", 0, MAX_INPUT_SECONDS, lo_open=True)
    if spec.end is not None and spec.end <= spec.start:
        raise InvalidOperation("Segment.EndTime must be greater than StartTime.")
    if text(node, "TranscodeIndex"):
        raise InvalidOperation(
            "Segment.TranscodeIndex is not supported by this server (it would change the output)."
        )
    aigc = node.find("AIGCMetadata")
    if aigc is not None and any((child.text or "").strip() for child in aigc):
        raise InvalidOperation(
            "Segment.AIGCMetadata is not supported by this server (it would change the output)."
        )
    spec.encrypt = flag(node, "HlsEncrypt/IsHlsEncrypt")
    spec.uri_key = text(node, "HlsEncrypt/UriKey")
    if spec.encrypt and fmt != "hls":
        raise InvalidOperation("Segment.HlsEncrypt applies to Format hls only.")
    if spec.uri_key and (len(spec.uri_key) > 1024 or _UNSAFE_URI.search(spec.uri_key)):
        raise InvalidOperation(
            "HlsEncrypt.UriKey must be a URI of at most 1024 characters without quotes or spaces."
        )
    return spec


# --------------------------------------------------------------------------- key frames


def keyframe_times(
    path: Path, demuxer: str, index: int, limit: int = KEYFRAME_SCAN_PACKETS
) -> tuple[list[float], float]:
    """Key frame times (s) of stream `index` and how far the scan got (s); demux only, no decoding."""
    import av
    import av.error

    keys: list[float] = []
    reached = 0.0
    # Our own handle and the probed demuxer: the same guarantees as the probe (nothing else is opened).
    with open(path, "rb") as fh, av.open(fh, "r", format=demuxer, options={"enable_drefs": "0"}) as c:
        stream = c.streams[index]
        tb = stream.time_base
        if tb is None:
            return keys, reached
        try:
            for n, packet in enumerate(c.demux(stream)):
                ts = packet.pts if packet.pts is not None else packet.dts
                if ts is None:
                    continue
                t = float(ts * tb)
                reached = max(reached, t)
                if packet.is_keyframe:
                    keys.append(t)
                if n >= limit:
                    break
        except (av.error.FFmpegError, EOFError):
            pass  # damaged past this point: judge by what was read
    return sorted(keys), reached


def cuts_on_keyframes(keys: list[float], origin: float, reached: float, seconds: float) -> bool:
    """Whether each cut point origin + k*seconds up to `reached` has a key frame shortly after it."""
    tolerance = min(2.0, 0.25 * seconds)
    i = 0
    k = 1
    while origin + k * seconds < reached - tolerance:
        cut = origin + k * seconds
        while i < len(keys) and keys[i] < cut - 1e-3:
            i += 1
        if i == len(keys) or keys[i] - cut > tolerance:
            return False
        k += 1
    return True


# --------------------------------------------------------------------------- FFmpeg arguments


@dataclass(frozen=True)
class _Plan:
    video: str | None  # "copy", an encoder, or None (no video)
    audio: str | None  # "copy", an encoder, or None
    fps: float


def plan(spec: SegmentSpec, info: MediaInfo, path: Path) -> _Plan:
    fmt = spec.fmt
    video: str | None = None
    fps = 25.0
    if fmt.video is not None and info.video:
        v = info.video[0]
        fps = float(v.avg_fps or v.fps or 25) or 25.0
        video = "copy" if v.codec_name in fmt.video else "libx264"
        cut = spec.cut
        if video == "copy" and cut is not None:
            keys, reached = keyframe_times(path, info.demuxer, v.index)
            origin = (keys[0] if keys else 0.0) + spec.start
            if spec.end is not None:
                reached = min(reached, origin - spec.start + spec.end)
            if not cuts_on_keyframes(keys, origin, reached, cut):
                video = "libx265" if v.codec_name == "hevc" and "hevc" in fmt.video else "libx264"
    audio: str | None = None
    if info.audio:
        a = info.audio[0]
        audio = (
            "copy" if fmt.audio is None or a.codec_name in fmt.audio else _AUDIO_ENCODERS[fmt.default_audio]
        )
    if video is None and audio is None:
        raise JobFailed("InvalidParameter", f"The input has no stream that Format {spec.format} can hold.")
    return _Plan(video, audio, fps)


def cut_points(length: float, seconds: float) -> list[float]:
    """Where pieces start (after the first), in output seconds; no piece shorter than TAIL_SECONDS at the end."""
    return [
        k * seconds for k in range(1, math.ceil(length / seconds) + 1) if k * seconds < length - TAIL_SECONDS
    ]


def build_args(
    spec: SegmentSpec, info: MediaInfo, p: _Plan, src: Path, work: Path, length: float
) -> tuple[list[str], Path]:
    """FFmpeg arguments and the main file they write (the playlist, the single file, or a pattern)."""
    before: list[str] = []
    if spec.start:
        before += ["-ss", f"{spec.start:.3f}"]
    if spec.end is not None:
        before += ["-t", f"{spec.end - spec.start:.3f}"]
    args = ffmpeg.safe_input(str(src), info.demuxer, before=before)
    cut = spec.cut
    points = ",".join(f"{t:.3f}" for t in cut_points(length, cut)) if cut is not None else ""
    if p.video is not None:
        args += ["-map", "0:v:0", "-c:v", p.video]
        if p.video != "copy":
            args += ["-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p"]
            if p.video == "libx265":
                args += ["-x265-params", "log-level=error"]
            if points:
                args += ["-force_key_frames", points]
    if p.audio is not None:
        args += ["-map", "0:a:0", "-c:a", p.audio]
    fmt = spec.fmt
    if spec.format == "hls":
        assert cut is not None
        dst = work / "out.m3u8"
        args += ["-f", "hls", "-hls_time", f"{cut:g}", "-hls_playlist_type", "vod",
                 "-hls_segment_filename", str(work / "out-%d.ts")]  # fmt: skip
        if spec.encrypt:
            key, iv = secrets.token_bytes(16), secrets.token_bytes(16)
            (work / "out.key").write_bytes(key)
            info_file = work / "out.keyinfo"
            info_file.write_text(f"{spec.uri_key or 'out.key'}\n{work / 'out.key'}\n{iv.hex()}\n")
            args += ["-hls_key_info_file", str(info_file)]
        return [*args, "-y", str(dst)], dst
    if cut is None:
        dst = work / f"out.{fmt.ext}"
        extra = ["-movflags", "+faststart"] if fmt.muxer in ("mp4", "ipod") else []
        return [*args, "-f", fmt.muxer, *extra, "-y", str(dst)], dst
    dst = work / f"out-%d.{fmt.ext}"
    args += ["-f", "segment", "-segment_times", points or f"{length + 1:.3f}", "-segment_format", fmt.muxer,
             "-reset_timestamps", "1", "-segment_start_number", "0"]  # fmt: skip
    if p.video not in (None, "copy"):
        # Forced key frames land on the first frame at or after each cut: allow half a frame.
        args += ["-segment_time_delta", f"{0.5 / p.fps:.4f}"]
    if fmt.muxer in ("mp4", "ipod"):
        args += ["-segment_format_options", "movflags=+faststart"]
    return [*args, "-y", str(dst)], dst


def _number(p: Path) -> int:
    return int(p.stem.rsplit("-", 1)[1])


@register
class SegmentProcessor:
    tag: ClassVar[str] = "Segment"
    kind: ClassVar[str] = "media"
    time_limit: ClassVar[float] = 3 * 3600.0

    def validate(self, sub: Submission) -> None:
        parse_segment(sub.operation)
        parse_output(sub.operation)

    def run(self, ctx: JobContext) -> Nodes:
        from ..media.probe import probe

        op = operation_element(ctx.job.operation)
        spec = parse_segment(op)
        out = parse_output(op)

        def name(pattern: str, number: int | None = None) -> str:
            return expand(
                pattern,
                input_key=ctx.job.input_object,
                job_id=ctx.job.job_id,
                ext=spec.fmt.ext,
                number=number,
            )

        with ctx.input_file() as src, ctx.workdir() as work:
            info = probe_input(src)
            if spec.start >= info.duration:
                raise JobFailed(
                    "InvalidParameter",
                    f"StartTime {spec.start:g} s is past the input's end ({info.duration:.3f} s).",
                )
            length = min(info.duration, spec.end or info.duration) - spec.start
            if spec.duration and math.ceil(length / spec.duration) > MAX_PIECES:
                raise JobFailed(
                    "InvalidParameter",
                    f"Duration {spec.duration:g} s would cut more than {MAX_PIECES} pieces.",
                )
            p = plan(spec, info, src)
            ctx.check()
            args, dst = build_args(spec, info, p, src, work, length)
            run_ffmpeg(ctx, args, length)
            if spec.format == "hls":
                return self._store_hls(ctx, spec, out, work, dst, name(out.object))
            if spec.duration is None:
                has_number = re.search(r"\$\{number\}", out.object, re.IGNORECASE) is not None
                key = name(out.object, 0 if has_number else None)
                result_info = probe(dst)
                stored = [(key, ctx.store_output(out.bucket, key, dst))]
                return [("MediaInfo", result_info.nodes()), ("MediaResult", media_result(out, stored))]
            pieces = sorted(work.glob(f"out-*.{spec.fmt.ext}"), key=_number)
            if not pieces:
                raise JobFailed("InternalError", "FFmpeg wrote no pieces.")
            stored = []
            for piece in pieces:
                ctx.check()
                key = name(out.object, _number(piece))
                stored.append((key, ctx.store_output(out.bucket, key, piece)))
                ctx.progress(95)
        # ObjectPrefix: what the names of pieces 0 and 1 have in common.
        prefix = posixpath.commonprefix([name(out.object, 0), name(out.object, 1)])
        return [("MediaResult", media_result(out, stored, prefix=prefix))]

    def _store_hls(
        self, ctx: JobContext, spec: SegmentSpec, out: Output, work: Path, playlist: Path, key: str
    ) -> Nodes:
        stem = posixpath.splitext(posixpath.basename(key))[0]
        base = posixpath.dirname(key)
        base = base + "/" if base else ""
        # Key and segments first, the playlist last: a reader never finds a playlist whose parts are missing.
        if spec.encrypt:
            ctx.store_output(out.bucket, f"{base}{stem}.key", work / "out.key")
        for seg in sorted(work.glob("out-*.ts"), key=_number):
            ctx.check()
            ctx.store_output(out.bucket, f"{base}{stem}-{_number(seg)}.ts", seg)
        lines = []
        for line in playlist.read_text().splitlines():
            if line.startswith("out-") and line.endswith(".ts"):
                line = f"{stem}-{line[4:]}"
            elif line.startswith("#EXT-X-KEY") and not spec.uri_key:
                line = line.replace('URI="out.key"', f'URI="{stem}.key"')
            lines.append(line)
        playlist.write_text("\n".join(lines) + "\n")
        return [("MediaResult", media_result(out, [(key, ctx.store_output(out.bucket, key, playlist))]))]
