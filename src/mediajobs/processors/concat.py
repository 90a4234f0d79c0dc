"""Concat: join clips of the job's bucket into one file (spec/tags.md Concat).

The clips are objects of the job's own bucket, named by key or by a COS URL of that bucket; nothing
else is ever opened (no other hosts, no local paths). Each clip is fetched, probed and opened with
its probed demuxer. Two ways to join:

- stream copy (DirectConcat=true, or clips that already match each other and the requested codecs):
  the concat demuxer reads a list we write ourselves, with `-safe 1`, entries that are relative links
  to our own temporary files, and a format whitelist of `concat` plus the clips' one demuxer, which
  the nested opens inherit;
- re-encode: the concat filter over the clips, each scaled/padded to one size, frame rate and sample
  rate (silence or black frames stand in for a stream a clip lacks).
"""

from __future__ import annotations

import contextlib
import posixpath
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import unquote, urlsplit

from ..keys import key_problem
from ..media import ffmpeg
from ..nodes import Nodes
from . import register
from .base import InvalidOperation, JobContext, JobFailed, Submission
from .common import MAX_INPUT_SECONDS, probe_input, run_ffmpeg
from .output import expand, media_result, parse_output
from .params import choice, flag, integer, num, operation_element, text

if TYPE_CHECKING:
    from ..media.probe import MediaInfo

MAX_CLIPS = 32  # fragments plus the Input

# Container.Format -> (muxer, extension, video allowed)
_CONTAINERS: dict[str, tuple[str, str, bool]] = {
    "mp4": ("mp4", "mp4", True),
    "flv": ("flv", "flv", True),
    "ts": ("mpegts", "ts", True),
    "hls": ("hls", "m3u8", True),
    "mp3": ("mp3", "mp3", False),
    "aac": ("adts", "aac", False),
}
# Codecs each container takes (FFmpeg codec names), for the stream-copy check.
_COPY_CODECS: dict[str, frozenset[str]] = {
    "mp4": frozenset({"h264", "hevc", "aac", "mp3"}),
    "flv": frozenset({"h264", "aac", "mp3"}),
    "ts": frozenset({"h264", "hevc", "aac", "mp3"}),
    "hls": frozenset({"h264", "hevc", "aac", "mp3"}),
    "mp3": frozenset({"mp3"}),
    "aac": frozenset({"aac"}),
}
_VIDEO_CODECS = {"h.264": "h264", "h264": "h264", "h.265": "hevc", "h265": "hevc", "hevc": "hevc"}
_VIDEO_ENCODERS = {"h264": "libx264", "hevc": "libx265"}
_AUDIO_ENCODERS = {"aac": "aac", "mp3": "libmp3lame"}
_SAMPLE_RATES = {
    "aac": (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000),
    "mp3": (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000),
}
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
# <bucket>.cos.<region>.myqcloud.com (virtual-hosted) and cos.<region>.myqcloud.com (path-style).
_BUCKET_HOST = re.compile(
    r"^(?P<bucket>[a-z0-9-]+)\.(?:cos|ci|cos-internal|cos-cdc|cosv6)\.[a-z0-9-]+\.(?:myqcloud\.com|tencentcos\.cn)$"
)
_SERVICE_HOST = re.compile(r"^(?:cos|ci)\.[a-z0-9-]+\.(?:myqcloud\.com|tencentcos\.cn)$")


@dataclass(frozen=True)
class Fragment:
    key: str
    mode: str  # "", "Start" or "End"
    start: float | None
    end: float | None
    index: int | None  # FragmentIndex


@dataclass(frozen=True)
class Clip:
    key: str
    start: float | None = None
    end: float | None = None

    @property
    def trimmed(self) -> bool:
        return bool(self.start) or self.end is not None


@dataclass
class ConcatSpec:
    fragments: list[Fragment]
    container: str
    input_index: int | None = None
    direct: bool = False
    video_codec: str | None = "h264"
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    video_bitrate: int | None = None
    crf: float | None = None
    profile: str | None = None
    rotate: int = 0
    audio_codec: str | None = "aac"
    sample_rate: int | None = None
    audio_bitrate: int | None = None
    channels: int | None = None
    segment_seconds: float = 5.0

    @property
    def muxer(self) -> str:
        return _CONTAINERS[self.container][0]

    @property
    def ext(self) -> str:
        return _CONTAINERS[self.container][1]

    @property
    def encoding_asked(self) -> bool:
        """Whether the request names anything that only an encoder can give."""
        return (
            any(
                v is not None
                for v in (self.width, self.height, self.fps, self.video_bitrate, self.crf, self.profile)
            )
            or any(v is not None for v in (self.sample_rate, self.audio_bitrate, self.channels))
            or bool(self.rotate)
        )


def fragment_key(url: str, bucket: str) -> str:
    """The object key a ConcatFragment.Url names; InvalidOperation unless it is an object of `bucket`."""
    value = url.strip()
    if not value:
        raise InvalidOperation("ConcatFragment.Url is required.")
    if _SCHEME.match(value):
        parts = urlsplit(value)
        if parts.scheme.lower() not in ("http", "https"):
            raise InvalidOperation(
                f"ConcatFragment.Url {url!r}: only object keys and http(s) URLs of this bucket are accepted."
            )
        host = (parts.hostname or "").lower()
        path = parts.path
        if parts.username is not None or parts.password is not None:
            raise InvalidOperation(f"ConcatFragment.Url {url!r} must not carry credentials.")
        m = _BUCKET_HOST.match(host)
        if m:
            url_bucket = m["bucket"]
        elif _SERVICE_HOST.match(host):
            url_bucket, _, rest = path.lstrip("/").partition("/")
            path = "/" + rest
        else:
            raise InvalidOperation(
                f"ConcatFragment.Url {url!r} is not on this bucket's COS host "
                f"({bucket}.cos.<region>.myqcloud.com); fetching other hosts is not enabled."
            )
        if url_bucket != bucket:
            raise InvalidOperation(
                f"ConcatFragment.Url {url!r} names bucket {url_bucket!r}; fragments must be objects of {bucket}."
            )
        key = unquote(path)
    else:
        key = value
    key = key.lstrip("/")
    problem = key_problem(key)
    if problem is not None:
        raise InvalidOperation(f"ConcatFragment.Url {url!r} is not a valid object key: {problem[1]}")
    return key


def parse_concat(op: ET.Element | None, bucket: str) -> ConcatSpec:
    if op is not None and op.findtext("TemplateId"):
        raise InvalidOperation("TemplateId is not supported by this server yet; give ConcatTemplate inline.")
    node = op.find("ConcatTemplate") if op is not None else None
    if node is None:
        raise InvalidOperation("Operation.ConcatTemplate (or a TemplateId) is required.")
    fragments: list[Fragment] = []
    for frag in node.findall("ConcatFragment"):
        start = num(frag, "StartTime", 0, MAX_INPUT_SECONDS)
        end = num(frag, "EndTime", 0, MAX_INPUT_SECONDS)
        if start is not None and end is not None and end <= start:
            raise InvalidOperation("ConcatFragment.EndTime must be greater than its StartTime.")
        fragments.append(
            Fragment(
                key=fragment_key(text(frag, "Url"), bucket),
                mode=choice(frag, "Mode", ("Start", "End"), ""),
                start=start,
                end=end,
                index=integer(frag, "FragmentIndex", 0, MAX_CLIPS),
            )
        )
    if not fragments:
        raise InvalidOperation("ConcatTemplate.ConcatFragment is required (one per clip).")
    if len(fragments) + 1 > MAX_CLIPS:
        raise InvalidOperation(f"At most {MAX_CLIPS - 1} ConcatFragment nodes are accepted.")
    fmt = text(node, "Container/Format").lower()
    if not fmt:
        raise InvalidOperation("ConcatTemplate.Container.Format is required.")
    if fmt not in _CONTAINERS:
        raise InvalidOperation(f"Container.Format {fmt!r} is not one of {', '.join(_CONTAINERS)}.")
    spec = ConcatSpec(fragments=fragments, container=fmt)
    spec.input_index = integer(node, "Index", 0, len(fragments))
    spec.direct = flag(node, "DirectConcat")
    scene = choice(node, "SceneChangeInfo/Mode", ("Default", "FADE", "GRADIENT"), "Default")
    if scene != "Default":
        raise InvalidOperation(f"SceneChangeInfo.Mode {scene} (transitions) is not supported by this server.")
    num(node, "SceneChangeInfo/Time", 0, 5, lo_open=True)
    if node.find("AudioMix") is not None or node.find("AudioMixArray") is not None:
        raise InvalidOperation("AudioMix is not supported for Concat by this server.")
    video, audio = node.find("Video"), node.find("Audio")
    if not _CONTAINERS[fmt][2] or flag(video, "Remove"):
        spec.video_codec = None
    else:
        name = text(video, "Codec").lower() or "h.264"
        codec = _VIDEO_CODECS.get(name)
        if codec is None:
            raise InvalidOperation(f"Video.Codec {name!r} is not one of H.264, H.265.")
        if codec not in _COPY_CODECS[fmt]:
            raise InvalidOperation(f"Video.Codec {name} cannot be stored in {fmt}.")
        spec.video_codec = codec
        w, h = num(video, "Width", 128, 4096), num(video, "Height", 128, 4096)
        for label, v in (("Width", w), ("Height", h)):
            if v is not None and (v != int(v) or int(v) % 2):
                raise InvalidOperation(f"Video.{label} must be an even integer.")
        spec.width = int(w) if w is not None else None
        spec.height = int(h) if h is not None else None
        spec.fps = num(video, "Fps", 0, 60, lo_open=True)
        bitrate = text(video, "Bitrate")
        if bitrate and bitrate.lower() != "auto":
            spec.video_bitrate = int(num(video, "Bitrate", 10, 50000) or 0)
        spec.crf = num(video, "Crf", 0, 51, lo_open=True)
        profile = text(video, "Profile").lower()
        if profile and profile != "auto":
            if codec != "h264" or profile not in ("baseline", "main", "high"):
                raise InvalidOperation("Video.Profile applies to H.264 only: baseline, main or high.")
            spec.profile = profile
        rotate = num(video, "Rotate", 0, 359)
        if rotate:
            if rotate not in (90, 180, 270):
                raise InvalidOperation("Video.Rotate must be 0, 90, 180 or 270 on this server.")
            spec.rotate = int(rotate)
    if flag(audio, "Remove"):
        spec.audio_codec = None
    else:
        default = "mp3" if fmt == "mp3" else "aac"
        acodec = text(audio, "Codec").lower() or default
        if acodec not in _AUDIO_ENCODERS:
            raise InvalidOperation(f"Audio.Codec {acodec!r} is not one of aac, mp3.")
        if acodec not in _COPY_CODECS[fmt]:
            raise InvalidOperation(f"Audio.Codec {acodec} cannot be stored in {fmt}.")
        spec.audio_codec = acodec
        rate = num(audio, "Samplerate", 8000, 96000)
        if rate is not None and int(rate) not in _SAMPLE_RATES[acodec]:
            raise InvalidOperation(f"Audio.Samplerate {rate:g} is not a {acodec} sample rate.")
        spec.sample_rate = int(rate) if rate is not None else None
        abr = num(audio, "Bitrate", 8, 1000)
        spec.audio_bitrate = int(abr) if abr is not None else None
        ch = integer(audio, "Channels", 1, 8)
        if ch is not None and ch not in ((1, 2) if acodec == "mp3" else (1, 2, 4, 5, 6, 8)):
            raise InvalidOperation(f"Audio.Channels {ch} is not supported for {acodec}.")
        spec.channels = ch
    if spec.video_codec is None and spec.audio_codec is None:
        raise InvalidOperation("Both Video and Audio are removed: the output would be empty.")
    seg = num(node, "Container/ClipConfig/Duration", 1, 600)
    spec.segment_seconds = seg or 5.0
    return spec


def clip_order(spec: ConcatSpec, input_key: str) -> list[Clip]:
    """The clips in playing order: Mode Start/End around the Input, else the Input at `Index`."""
    frags = spec.fragments
    clip = {id(f): Clip(f.key, f.start, f.end) for f in frags}
    if not input_key:
        return [clip[id(f)] for f in _by_index(frags)]
    if any(f.mode for f in frags):
        before = [clip[id(f)] for f in frags if f.mode == "Start"]
        after = [clip[id(f)] for f in frags if f.mode != "Start"]
        return [*before, Clip(input_key), *after]
    ordered = [clip[id(f)] for f in _by_index(frags)]
    at = spec.input_index or 0
    return [*ordered[:at], Clip(input_key), *ordered[at:]]


def _by_index(frags: list[Fragment]) -> list[Fragment]:
    # FragmentIndex orders the fragments; a fragment without one keeps its place in the request.
    return [
        f
        for _, f in sorted(
            enumerate(frags), key=lambda p: (p[1].index if p[1].index is not None else p[0], p[0])
        )
    ]


@dataclass(frozen=True)
class _Loaded:
    clip: Clip
    path: Path
    info: MediaInfo
    duration: float  # after the trim

    @property
    def video_sig(self) -> tuple[str, int, int, str, int] | None:
        v = self.info.video[0] if self.info.video else None
        return (v.codec_name, v.width, v.height, v.pix_fmt, len(self.info.video)) if v else None

    @property
    def audio_sig(self) -> tuple[str, int, int, int] | None:
        a = self.info.audio[0] if self.info.audio else None
        return (a.codec_name, a.sample_rate, a.channels, len(self.info.audio)) if a else None


def _load(ctx: JobContext, stack: contextlib.ExitStack, clip: Clip) -> _Loaded:
    path = stack.enter_context(ctx.input_file(clip.key))
    try:
        info = probe_input(path)
    except JobFailed as exc:
        raise JobFailed(exc.code, f"Clip {clip.key!r}: {exc.message}") from None
    if not info.video and not info.audio:
        raise JobFailed("InputFileInvalid", f"Clip {clip.key!r} has no audio or video stream.")
    if info.duration <= 0:
        raise JobFailed("InputFileInvalid", f"Clip {clip.key!r} has no duration (a still image?).")
    start = clip.start or 0.0
    if start >= info.duration:
        raise JobFailed(
            "InvalidParameter",
            f"StartTime {start:g} s is past the end of {clip.key!r} ({info.duration:.3f} s).",
        )
    end = min(clip.end, info.duration) if clip.end is not None else info.duration
    return _Loaded(clip, path, info, end - start)


def _kept(spec: ConcatSpec, first: _Loaded) -> tuple[bool, bool]:
    """Which of the first video and audio streams a stream-copy join keeps."""
    keep_video = bool(first.info.video) and _CONTAINERS[spec.container][2]
    keep_video = keep_video and (spec.direct or spec.video_codec is not None)
    keep_audio = bool(first.info.audio) and (spec.direct or spec.audio_codec is not None)
    return keep_video, keep_audio


def _copy_ok(spec: ConcatSpec, clips: list[_Loaded]) -> str | None:
    """None when the clips can be joined by stream copy into the output, else the reason why not."""
    first = clips[0]
    if any(c.info.demuxer != first.info.demuxer for c in clips):
        return "the clips are in different containers"
    if any(c.video_sig != first.video_sig or c.audio_sig != first.audio_sig for c in clips):
        return "the clips differ in codec, size or sample rate"
    keep_video, keep_audio = _kept(spec, first)
    if not keep_video and not keep_audio:
        return "they have none of the streams the output asks for"
    codecs = ({first.info.video[0].codec_name} if keep_video else set()) | (
        {first.info.audio[0].codec_name} if keep_audio else set()
    )
    if not codecs <= _COPY_CODECS[spec.container]:
        return f"{', '.join(sorted(codecs))} cannot be stored in {spec.container}"
    if not spec.direct:
        wanted = ({spec.video_codec or ""} if keep_video else set()) | (
            {spec.audio_codec or ""} if keep_audio else set()
        )
        if spec.encoding_asked or any(c.clip.trimmed for c in clips) or wanted != codecs:
            return "the request asks for encoding"
    return None


def _copy_args(spec: ConcatSpec, clips: list[_Loaded], work: Path) -> list[str]:
    names = []
    for i, c in enumerate(clips):
        link = work / f"clip{i}"
        link.symlink_to(c.path)
        names.append(link.name)
    listing = work / "clips.ffconcat"
    listing.write_text("ffconcat version 1.0\n" + "".join(f"file '{n}'\n" for n in names))
    demuxer = clips[0].info.demuxer
    # -safe 1: relative plain names only; the whitelist is inherited by every nested open.
    args = ffmpeg.safe_input(
        str(listing), "concat", before=["-safe", "1", "-format_whitelist", f"concat,{demuxer}"]
    )
    keep_video, keep_audio = _kept(spec, clips[0])
    args += ["-map", "0:v:0"] if keep_video else []
    args += ["-map", "0:a:0"] if keep_audio else []
    return [*args, "-c", "copy"]


def _even(x: float) -> int:
    return max(2, round(x / 2) * 2)


def _encode_args(spec: ConcatSpec, clips: list[_Loaded]) -> list[str]:
    args: list[str] = []
    for c in clips:
        before: list[str] = []
        if c.clip.start:
            before += ["-ss", f"{c.clip.start:.3f}"]
        if c.clip.trimmed:
            before += ["-t", f"{c.duration:.3f}"]
        args += ffmpeg.safe_input(str(c.path), c.info.demuxer, before=before)
    video_clip = next((c for c in clips if c.info.video), None)
    audio_clip = next((c for c in clips if c.info.audio), None)
    want_video = spec.video_codec is not None and video_clip is not None
    want_audio = spec.audio_codec is not None and audio_clip is not None
    if not want_video and not want_audio:
        raise JobFailed("InvalidParameter", "The clips have none of the streams the output asks for.")
    parts: list[str] = []
    w = h = 0
    fps = 25.0
    rate, layout = 44100, "stereo"
    if want_video:
        assert video_clip is not None
        v = video_clip.info.video[0]
        if spec.width and spec.height:
            w, h = spec.width, spec.height
        elif spec.width:
            w, h = spec.width, _even(v.height * spec.width / v.width)
        elif spec.height:
            w, h = _even(v.width * spec.height / v.height), spec.height
        else:
            w, h = _even(v.width), _even(v.height)
        src_fps = float(v.avg_fps or v.fps or 25)
        fps = spec.fps or (src_fps if 0 < src_fps <= 60 else 25.0)
    if want_audio:
        assert audio_clip is not None
        a = audio_clip.info.audio[0]
        assert spec.audio_codec is not None
        rates = _SAMPLE_RATES[spec.audio_codec]
        rate = spec.sample_rate or (a.sample_rate if a.sample_rate in rates else 44100)
        channels = spec.channels or min(max(a.channels, 1), 2)
        layout = {1: "mono", 2: "stereo", 4: "quad", 5: "5.0", 6: "5.1", 8: "7.1"}[channels]
    labels = ""
    for i, c in enumerate(clips):
        if want_video:
            if c.info.video:
                parts.append(
                    f"[{i}:v:0]scale={w}:{h}:force_original_aspect_ratio=decrease:force_divisible_by=2,"
                    f"pad={w}:{h}:(ow-iw)/2:(oh-ih)/2,setsar=1,fps={fps:g},format=yuv420p[v{i}]"
                )
            else:
                parts.append(
                    f"color=c=black:s={w}x{h}:r={fps:g}:d={c.duration:.3f},format=yuv420p,setsar=1[v{i}]"
                )
            labels += f"[v{i}]"
        if want_audio:
            if c.info.audio:
                parts.append(
                    f"[{i}:a:0]aresample={rate},aformat=sample_rates={rate}:channel_layouts={layout},"
                    f"apad,atrim=duration={c.duration:.3f}[a{i}]"
                )
            else:
                parts.append(f"anullsrc=r={rate}:cl={layout},atrim=duration={c.duration:.3f}[a{i}]")
            labels += f"[a{i}]"
    parts.append(
        f"{labels}concat=n={len(clips)}:v={int(want_video)}:a={int(want_audio)}"
        + ("[vc]" if want_video else "")
        + ("[aout]" if want_audio else "")
    )
    if want_video:
        rotate = {90: "transpose=1", 180: "hflip,vflip", 270: "transpose=2"}.get(spec.rotate, "null")
        parts.append(f"[vc]{rotate}[vout]")
    args += ["-filter_complex", ";".join(parts)]
    if want_video:
        assert spec.video_codec is not None
        args += ["-map", "[vout]", "-c:v", _VIDEO_ENCODERS[spec.video_codec], "-pix_fmt", "yuv420p"]
        if spec.video_bitrate:
            args += ["-b:v", f"{spec.video_bitrate}k"]
        else:
            args += ["-crf", f"{spec.crf if spec.crf is not None else 25:g}"]
        if spec.profile:
            args += ["-profile:v", spec.profile]
        if spec.video_codec == "hevc":
            args += ["-x265-params", "log-level=error"]
        if spec.container == "hls":
            args += ["-force_key_frames", f"expr:gte(t,n_forced*{spec.segment_seconds:g})"]
    if want_audio:
        assert spec.audio_codec is not None
        args += ["-map", "[aout]", "-c:a", _AUDIO_ENCODERS[spec.audio_codec], "-ar", str(rate)]
        if spec.audio_bitrate:
            args += ["-b:a", f"{spec.audio_bitrate}k"]
    return args


def _mux_args(spec: ConcatSpec, dst: Path) -> list[str]:
    if spec.container == "hls":
        return ["-f", "hls", "-hls_time", f"{spec.segment_seconds:g}", "-hls_playlist_type", "vod",
                "-hls_segment_filename", str(dst.with_name(dst.stem + "-%d.ts")), "-y", str(dst)]  # fmt: skip
    extra = ["-movflags", "+faststart"] if spec.muxer == "mp4" else []
    return ["-f", spec.muxer, *extra, "-y", str(dst)]


@register
class ConcatProcessor:
    tag: ClassVar[str] = "Concat"
    kind: ClassVar[str] = "media"
    time_limit: ClassVar[float] = 3 * 3600.0
    # Fragments alone may make the whole output (ordered by FragmentIndex).
    needs_input: ClassVar[bool] = False

    def validate(self, sub: Submission) -> None:
        parse_concat(sub.operation, sub.bucket)
        parse_output(sub.operation)

    def run(self, ctx: JobContext) -> Nodes:
        from ..media.probe import probe

        op = operation_element(ctx.job.operation)
        spec = parse_concat(op, ctx.job.bucket)
        out = parse_output(op)
        order = clip_order(spec, ctx.job.input_object)
        with contextlib.ExitStack() as stack:
            work = stack.enter_context(ctx.workdir())
            clips: list[_Loaded] = []
            for clip in order:
                ctx.check()
                clips.append(_load(ctx, stack, clip))
            total = sum(c.duration for c in clips)
            if total > MAX_INPUT_SECONDS:
                raise JobFailed(
                    "InputFileInvalid", f"The clips last longer than {MAX_INPUT_SECONDS} s together."
                )
            why_not = _copy_ok(spec, clips)
            if spec.direct and why_not is not None:
                raise JobFailed("InvalidParameter", f"DirectConcat cannot join these clips: {why_not}.")
            dst = work / f"out.{spec.ext}"
            args = _copy_args(spec, clips, work) if why_not is None else _encode_args(spec, clips)
            ctx.progress(5)
            run_ffmpeg(ctx, [*args, *_mux_args(spec, dst)], total)
            key = expand(
                out.object,
                input_key=ctx.job.input_object or order[0].key,
                job_id=ctx.job.job_id,
                ext=spec.ext,
            )
            stored: list[tuple[str, str]] = []
            result_info = None
            if spec.container == "hls":
                stem = posixpath.splitext(posixpath.basename(key))[0]
                base = posixpath.dirname(key)
                base = base + "/" if base else ""
                # Segments first, the playlist last: a reader never finds a playlist whose parts are missing.
                segments = sorted(work.glob("out-*.ts"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
                for seg in segments:
                    ctx.check()
                    ctx.store_output(out.bucket, base + seg.name.replace("out-", stem + "-", 1), seg)
                dst.write_text(dst.read_text().replace("out-", stem + "-"))
            else:
                result_info = probe(dst)
            stored.append((key, ctx.store_output(out.bucket, key, dst)))
        nodes: list[tuple[str, object]] = []
        if result_info is not None:
            nodes.append(("MediaInfo", result_info.nodes()))
        nodes.append(("MediaResult", media_result(out, stored)))
        return nodes  # type: ignore[return-value]
