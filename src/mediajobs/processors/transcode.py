"""Transcode: re-encode or re-wrap the input with FFmpeg (spec/tags.md Transcode)."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from ..media import ffmpeg, hwaccel
from ..nodes import Nodes, Value
from . import register
from .base import InvalidOperation, JobContext, JobFailed, Submission
from .common import MAX_INPUT_SECONDS, probe_input, run_ffmpeg
from .output import Output, expand, media_result, parse_output
from .params import choice, flag, integer, num, operation_element, text
from .watermark import PreparedMark, Watermark, overlay_graph, parse_watermarks, prepare

if TYPE_CHECKING:
    from ..media.probe import MediaInfo, VideoStreamInfo

# Container.Format -> (muxer, extension, video codecs allowed, audio codecs allowed, default video, default audio)
_CONTAINERS: dict[str, tuple[str, str, tuple[str, ...], tuple[str, ...], str | None, str]] = {
    "mp4": ("mp4", "mp4", ("h264", "h265", "av1", "vp9"), ("aac", "mp3", "opus", "flac"), "h264", "aac"),
    "mov": ("mov", "mov", ("h264", "h265", "av1", "vp9"), ("aac", "mp3", "pcm_s16le", "flac"), "h264", "aac"),
    "flv": ("flv", "flv", ("h264",), ("aac", "mp3"), "h264", "aac"),
    "ts": ("mpegts", "ts", ("h264", "h265"), ("aac", "mp3"), "h264", "aac"),
    "hls": ("hls", "m3u8", ("h264", "h265"), ("aac", "mp3"), "h264", "aac"),
    "dash": ("dash", "mpd", ("h264", "h265", "vp9", "av1"), ("aac", "opus"), "h264", "aac"),
    "mkv": ("matroska", "mkv", ("h264", "h265", "vp8", "vp9", "av1"),
            ("aac", "mp3", "opus", "vorbis", "flac", "pcm_s16le"), "h264", "aac"),
    "webm": ("webm", "webm", ("vp8", "vp9", "av1"), ("vorbis", "opus"), "vp8", "opus"),
    "mp3": ("mp3", "mp3", (), ("mp3",), None, "mp3"),
    "aac": ("adts", "aac", (), ("aac",), None, "aac"),
    "m4a": ("ipod", "m4a", (), ("aac",), None, "aac"),
    "flac": ("flac", "flac", (), ("flac",), None, "flac"),
    "wav": ("wav", "wav", (), ("pcm_s16le",), None, "pcm_s16le"),
    "amr": ("amr", "amr", (), ("amr",), None, "amr"),
    "ogg": ("ogg", "ogg", (), ("vorbis", "opus", "flac"), None, "vorbis"),
}  # fmt: skip
_VIDEO_CODECS = {"h.264": "h264", "h264": "h264", "h.265": "h265", "h265": "h265", "hevc": "h265",
                 "vp8": "vp8", "vp9": "vp9", "av1": "av1"}  # fmt: skip
_VIDEO_ENCODERS = {
    "h264": "libx264",
    "h265": "libx265",
    "vp8": "libvpx",
    "vp9": "libvpx-vp9",
    "av1": "libsvtav1",
}
_AUDIO_CODECS = {"aac": "aac", "mp3": "mp3", "flac": "flac", "amr": "amr", "vorbis": "vorbis", "opus": "opus",
                 "pcm_s16le": "pcm_s16le"}  # fmt: skip
_AUDIO_ENCODERS = {"aac": "aac", "mp3": "libmp3lame", "flac": "flac", "amr": "libopencore_amrnb",
                   "vorbis": "libvorbis", "opus": "libopus", "pcm_s16le": "pcm_s16le"}  # fmt: skip
_SAMPLE_RATES = {8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000}
_X26X_PRESETS = {
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
}
_PIXFMTS = {"yuv420p", "yuv422p", "yuv444p", "yuvj420p", "yuvj422p", "yuvj444p", "yuv420p10le"}


@dataclass
class TranscodeSpec:
    container: str
    video_codec: str | None = None
    width: int | None = None
    height: int | None = None
    long_short: bool = False
    fps: float | None = None
    video_bitrate: int | None = None
    crf: float | None = None
    gop: int | None = None
    preset: str | None = None
    profile: str | None = None
    pixfmt: str | None = None
    rotate: int = 0
    maxrate: int | None = None
    bufsize: int | None = None
    audio_codec: str | None = None
    sample_rate: int | None = None
    audio_bitrate: int | None = None
    channels: int | None = None
    start: float = 0.0
    duration: float | None = None
    check_reso: bool = False
    reso_fail: bool = False
    adj_dar: str = "none"  # scale | crop | pad | none: how Width x Height meets another aspect ratio
    # (check, fail) pairs of TransConfig.IsCheck* / *AdjMethod: when the target exceeds the
    # source, 0 keeps the source's value and 1 fails the job.
    check_vbitrate: tuple[bool, bool] = (False, False)
    check_abitrate: tuple[bool, bool] = (False, False)
    check_fps: tuple[bool, bool] = (False, False)
    hw_encoder: str | None = None  # a hardware encoder chosen at run time (media/hwaccel.py)
    hdr_to_sdr: bool = False
    delogo: tuple[int, int, int, int] | None = None  # Operation.RemoveWatermark: x, y, w, h on the input
    delete_metadata: bool = False
    segment_seconds: float = 5.0
    extra: list[str] = field(default_factory=list)

    @property
    def muxer(self) -> str:
        return _CONTAINERS[self.container][0]

    @property
    def ext(self) -> str:
        return _CONTAINERS[self.container][1]


def parse_transcode(op: ET.Element | None) -> TranscodeSpec:
    node = op.find("Transcode") if op is not None else None
    if node is None:
        raise InvalidOperation("Operation.Transcode (or a TemplateId) is required.")
    # Nodes that would change the output but are not built yet: refused, never silently ignored.
    for path in ("AudioMix", "AudioMixArray", "DigitalWatermark", "Subtitles", "Transcode/AudioMix",
                 "Transcode/AudioMixArray", "Transcode/TransConfig/HlsEncrypt/IsHlsEncrypt"):  # fmt: skip
        found = op.find(path) if op is not None else None
        if found is not None and (len(found) or (found.text or "").strip().lower() not in ("", "false")):
            raise InvalidOperation(f"{path.replace('/', '.')} is not supported by this server yet.")
    fmt = text(node, "Container/Format").lower()
    if not fmt:
        raise InvalidOperation("Transcode.Container.Format is required.")
    if fmt == "dash" and flag(node, "TransConfig/DashEncrypt/IsEncrypt"):
        raise InvalidOperation("TransConfig.DashEncrypt is not supported by this server yet.")
    if fmt not in _CONTAINERS:
        raise InvalidOperation(f"Container.Format {fmt!r} is not one of {', '.join(sorted(_CONTAINERS))}.")
    _, _, vcodecs, acodecs, vdefault, adefault = _CONTAINERS[fmt]
    spec = TranscodeSpec(container=fmt)
    video = node.find("Video")
    audio = node.find("Audio")
    if vcodecs and not flag(video, "Remove"):
        name = text(video, "Codec").lower() or vdefault or ""
        codec = _VIDEO_CODECS.get(name)
        if codec is None:
            raise InvalidOperation(f"Video.Codec {name!r} is not one of H.264, H.265, VP8, VP9, AV1.")
        if codec not in vcodecs:
            raise InvalidOperation(f"Video.Codec {name} cannot be stored in {fmt}.")
        spec.video_codec = codec
        w = num(video, "Width", 128, 4096)
        h = num(video, "Height", 128, 4096)
        for label, v in (("Width", w), ("Height", h)):
            if v is not None and (v != int(v) or int(v) % 2):
                raise InvalidOperation(f"Video.{label} must be an even integer.")
        spec.width = int(w) if w is not None else None
        spec.height = int(h) if h is not None else None
        spec.long_short = flag(video, "LongShortMode")
        spec.fps = num(video, "Fps", 0, 60, lo_open=True)
        bitrate = text(video, "Bitrate")
        if bitrate and bitrate.lower() != "auto":
            spec.video_bitrate = int(num(video, "Bitrate", 10, 50000) or 0)
        spec.crf = num(video, "Crf", 0, 51, lo_open=True)
        if spec.crf is None and spec.video_bitrate is None and codec in ("h264", "h265"):
            spec.crf = 25.0
        gop = num(video, "Gop", 1, 100000)
        spec.gop = int(gop) if gop is not None else None
        preset = text(video, "Preset").lower()
        if preset:
            if codec in ("h264", "h265") and preset not in _X26X_PRESETS:
                raise InvalidOperation(f"Video.Preset {preset!r} is not an x264/x265 preset.")
            spec.preset = preset
        profile = text(video, "Profile").lower()
        if profile and profile != "auto":
            if codec != "h264" or profile not in ("baseline", "main", "high"):
                raise InvalidOperation("Video.Profile applies to H.264 only: baseline, main or high.")
            spec.profile = profile
        pixfmt = text(video, "Pixfmt").lower()
        if pixfmt and pixfmt != "auto":
            if pixfmt not in _PIXFMTS:
                raise InvalidOperation(f"Video.Pixfmt {pixfmt!r} is not supported.")
            spec.pixfmt = pixfmt
        rotate = num(video, "Rotate", 0, 359)
        if rotate is not None:
            if rotate not in (0, 90, 180, 270):
                raise InvalidOperation("Video.Rotate must be 0, 90, 180 or 270 on this server.")
            spec.rotate = int(rotate)
        maxrate = num(video, "Maxrate", 10, 50000)
        bufsize = num(video, "Bufsize", 1000, 128000)
        spec.maxrate = int(maxrate) if maxrate is not None else None
        spec.bufsize = int(bufsize) if bufsize is not None else None
    if not flag(audio, "Remove"):
        name = text(audio, "Codec").lower() or adefault
        acodec = _AUDIO_CODECS.get(name)
        if acodec is None:
            raise InvalidOperation(f"Audio.Codec {name!r} is not one of {', '.join(sorted(_AUDIO_CODECS))}.")
        if acodec not in acodecs:
            raise InvalidOperation(f"Audio.Codec {name} cannot be stored in {fmt}.")
        spec.audio_codec = acodec
        rate = num(audio, "Samplerate", 8000, 96000)
        if rate is not None and int(rate) not in _SAMPLE_RATES:
            raise InvalidOperation(f"Audio.Samplerate {rate:g} is not a supported rate.")
        spec.sample_rate = int(rate) if rate is not None else None
        abr = num(audio, "Bitrate", 8, 1000)
        spec.audio_bitrate = int(abr) if abr is not None else None
        ch = num(audio, "Channels", 1, 8)
        spec.channels = int(ch) if ch is not None else None
        if acodec == "amr":
            spec.sample_rate, spec.channels = 8000, 1
    if spec.video_codec is None and spec.audio_codec is None:
        raise InvalidOperation("Both Video and Audio are removed: the output would be empty.")
    start = num(node, "TimeInterval/Start", 0, MAX_INPUT_SECONDS)
    spec.start = start or 0.0
    spec.duration = num(node, "TimeInterval/Duration", 0, MAX_INPUT_SECONDS, lo_open=True)
    spec.check_reso = flag(node, "TransConfig/IsCheckReso")
    method = text(node, "TransConfig/ResoAdjMethod")
    if method not in ("", "0", "1"):
        raise InvalidOperation("TransConfig.ResoAdjMethod must be 0 or 1.")
    spec.reso_fail = method == "1"
    spec.adj_dar = choice(node, "TransConfig/AdjDarMethod", ("scale", "crop", "pad", "none"), "none")
    for attr, check, adj in (
        ("check_vbitrate", "IsCheckVideoBitrate", "VideoBitrateAdjMethod"),
        ("check_abitrate", "IsCheckAudioBitrate", "AudioBitrateAdjMethod"),
        ("check_fps", "IsCheckVideoFps", "VideoFpsAdjMethod"),
    ):
        how = text(node, f"TransConfig/{adj}")
        if how not in ("", "0", "1"):
            raise InvalidOperation(f"TransConfig.{adj} must be 0 or 1.")
        setattr(spec, attr, (flag(node, f"TransConfig/{check}"), how == "1"))
    spec.delete_metadata = flag(node, "TransConfig/DeleteMetadata")
    spec.hdr_to_sdr = flag(node, "TransConfig/IsHdr2Sdr")
    rw = op.find("RemoveWatermark") if op is not None else None
    if rw is not None:
        box = [
            integer(rw, name, 1 if name in ("Width", "Height") else 0, 4096)
            for name in ("Dx", "Dy", "Width", "Height")
        ]
        if any(v is None for v in box):
            raise InvalidOperation("RemoveWatermark needs Dx, Dy, Width and Height.")
        spec.delogo = (box[0] or 0, box[1] or 0, box[2] or 1, box[3] or 1)
    seg = num(node, "Container/ClipConfig/Duration", 1, 600)
    spec.segment_seconds = seg or 5.0
    return spec


def _scale(spec: TranscodeSpec, src_w: int, src_h: int) -> tuple[int, int] | None:
    w, h = spec.width, spec.height
    if w is None and h is None:
        return None
    if spec.long_short and src_h > src_w:
        w, h = h, w  # Width/Height name the long and short edge: portrait input keeps portrait
    if w is not None and h is not None:
        tw, th = w, h
    elif w is not None:
        tw, th = w, max(2, round(src_h * w / src_w / 2) * 2)
    else:
        assert h is not None
        tw, th = max(2, round(src_w * h / src_h / 2) * 2), h
    if spec.check_reso and (tw > src_w or th > src_h):
        if spec.reso_fail:
            raise JobFailed(
                "InvalidParameter", f"The target resolution {tw}x{th} exceeds the input's {src_w}x{src_h}."
            )
        return None
    return tw, th


_HDR_TRANSFERS = frozenset(("smpte2084", "arib-std-b67"))


def video_filters(spec: TranscodeSpec, v: VideoStreamInfo) -> tuple[list[str], tuple[int, int]]:
    """The scale and rotate filters for the first video stream, and the frame size they give."""
    filters = []
    if spec.delogo is not None:
        # On the input's own pixels, first; delogo needs a one-pixel border around the box.
        x, y, bw, bh = spec.delogo
        x, y = max(1, min(x, v.width - 3)), max(1, min(y, v.height - 3))
        bw, bh = max(1, min(bw, v.width - x - 2)), max(1, min(bh, v.height - y - 2))
        filters.append(f"delogo=x={x}:y={y}:w={bw}:h={bh}")
    w, h = (v.height, v.width) if round(abs(v.rotation)) % 180 == 90 else (v.width, v.height)
    size = _scale(spec, v.width, v.height)
    if size:
        both = spec.width is not None and spec.height is not None
        if both and spec.adj_dar == "crop":
            # Fill the frame, then cut what overflows (centred).
            filters += [
                f"scale={size[0]}:{size[1]}:force_original_aspect_ratio=increase",
                f"crop={size[0]}:{size[1]}",
            ]
        elif both and spec.adj_dar == "pad":
            # Fit inside the frame, then pad to it (centred, black).
            filters += [
                f"scale={size[0]}:{size[1]}:force_original_aspect_ratio=decrease",
                f"pad={size[0]}:{size[1]}:(ow-iw)/2:(oh-ih)/2",
            ]
        else:
            filters.append(f"scale={size[0]}:{size[1]}")
        filters.append("setsar=1")
        w, h = size
    filters += {90: ["transpose=1"], 180: ["hflip", "vflip"], 270: ["transpose=2"]}.get(spec.rotate, [])
    if spec.hdr_to_sdr and v.color_transfer in _HDR_TRANSFERS:
        # PQ/HLG to BT.709: linearise, tone-map (Hable), back to BT.709 limited range, 8-bit.
        filters += [
            "zscale=t=linear:npl=100", "format=gbrpf32le", "zscale=p=bt709",
            "tonemap=tonemap=hable:desat=0", "zscale=t=bt709:m=bt709:r=tv", "format=yuv420p",
        ]  # fmt: skip
    if spec.hw_encoder:
        filters += hwaccel.filters(spec.hw_encoder)
    if spec.rotate in (90, 270):
        w, h = h, w
    return filters, (w, h)


def video_encoder_args(spec: TranscodeSpec) -> list[str]:
    """Encoder options of the video output (after its -map)."""
    assert spec.video_codec is not None
    if spec.hw_encoder:
        args = hwaccel.encoder_args(
            spec.hw_encoder, crf=spec.crf, bitrate_k=spec.video_bitrate, preset=spec.preset
        )
        if spec.gop:
            args += ["-g", str(spec.gop)]
        if spec.profile:
            args += ["-profile:v", spec.profile]
        if not spec.hw_encoder.endswith("_vaapi"):
            args += ["-pix_fmt", "yuv420p"]
        return args
    args = ["-c:v", _VIDEO_ENCODERS[spec.video_codec]]
    if spec.fps:
        args += ["-r", f"{spec.fps:g}"]
    if spec.video_bitrate:
        args += ["-b:v", f"{spec.video_bitrate}k"]
    if spec.crf is not None and not spec.video_bitrate:
        args += ["-crf", f"{spec.crf:g}"] + (["-b:v", "0"] if spec.video_codec in ("vp8", "vp9") else [])
    if spec.maxrate:
        args += ["-maxrate", f"{spec.maxrate}k", "-bufsize", f"{spec.bufsize or spec.maxrate * 2}k"]
    if spec.gop:
        args += ["-g", str(spec.gop)]
    if spec.preset and spec.video_codec in ("h264", "h265"):
        args += ["-preset", spec.preset]
    elif spec.video_codec in ("vp8", "vp9"):
        args += ["-deadline", "realtime" if spec.preset == "realtime" else "good", "-cpu-used", "4"]
    elif spec.video_codec == "av1":
        args += ["-preset", "8"]
    if spec.profile:
        args += ["-profile:v", spec.profile]
    if spec.pixfmt or spec.video_codec in ("h264", "h265"):
        args += ["-pix_fmt", spec.pixfmt or "yuv420p"]
    return args


def audio_encoder_args(spec: TranscodeSpec) -> list[str]:
    """Encoder options of the audio output (after its -map)."""
    assert spec.audio_codec is not None
    args = ["-c:a", _AUDIO_ENCODERS[spec.audio_codec]]
    if spec.sample_rate:
        args += ["-ar", str(spec.sample_rate)]
    elif spec.audio_codec == "opus":
        args += ["-ar", "48000"]
    if spec.audio_bitrate:
        args += ["-b:a", f"{spec.audio_bitrate}k"]
    if spec.channels:
        args += ["-ac", str(spec.channels)]
    return args


def muxer_args(spec: TranscodeSpec, dst: Path, *, has_video: bool) -> list[str]:
    """The container options and the output path (HLS: segments next to the playlist)."""
    args: list[str] = []
    if spec.container == "hls":
        if has_video:
            # Segments can only start on key frames: put one at every segment boundary.
            args += ["-force_key_frames", f"expr:gte(t,n_forced*{spec.segment_seconds:g})"]
        args += ["-f", "hls", "-hls_time", f"{spec.segment_seconds:g}", "-hls_playlist_type", "vod",
                 "-hls_segment_filename", str(dst.with_name(dst.stem + "-%d.ts"))]  # fmt: skip
    elif spec.container == "dash":
        if has_video:
            args += ["-force_key_frames", f"expr:gte(t,n_forced*{spec.segment_seconds:g})"]
        # Segment files go next to the manifest, named after it, as the HLS segments are.
        args += ["-f", "dash", "-seg_duration", f"{spec.segment_seconds:g}", "-use_template", "1",
                 "-use_timeline", "1", "-init_seg_name", f"{dst.stem}-init-$RepresentationID$.$ext$",
                 "-media_seg_name", f"{dst.stem}-$RepresentationID$-$Number%05d$.$ext$"]  # fmt: skip
    else:
        args += ["-f", spec.muxer]
        if spec.muxer in ("mp4", "mov", "ipod"):
            args += ["-movflags", "+faststart"]
    return [*args, "-y", str(dst)]


_DISPLAY_VIDEO = {"h264": "H.264", "h265": "H.265", "vp8": "VP8", "vp9": "VP9", "av1": "AV1"}
_DISPLAY_AUDIO = {"aac": "AAC", "mp3": "MP3", "flac": "FLAC", "amr": "AMR", "vorbis": "Vorbis", "opus": "Opus",
                  "pcm_s16le": "pcm_s16le"}  # fmt: skip


def _filled(sent: Nodes, defaults: Nodes) -> list[tuple[str, Value]]:
    """The nodes as sent, with each default added where the request left it out."""
    names = {n for n, _ in sent}
    return [*sent, *((n, v) for n, v in defaults if n not in names)]


def echo_with_defaults(spec: TranscodeSpec, sent: Nodes) -> Nodes:
    """Operation.Transcode as the service echoes it: the request's nodes plus the defaults it ran
    with (spec/tags.md Transcode, the callback example of the Go SDK)."""
    parts = {n: v for n, v in sent if not isinstance(v, str) and v is not None}

    def sub(name: str) -> Nodes:
        return list(parts.get(name) or [])

    video: list[tuple[str, Value]] = [("Remove", "false" if spec.video_codec else "true")]
    if spec.video_codec:
        video += [
            ("Codec", _DISPLAY_VIDEO[spec.video_codec]),
            ("Crf", f"{spec.crf:g}" if spec.crf is not None else None),
            ("Preset", spec.preset or ("medium" if spec.video_codec in ("h264", "h265") else None)),
            ("Profile", spec.profile or ("high" if spec.video_codec == "h264" else None)),
            ("Width", None), ("Height", None), ("Fps", None), ("Bitrate", None), ("Gop", None),
            ("Pixfmt", None), ("Interlaced", "false"), ("LongShortMode", "false"), ("SliceTime", "5"),
        ]  # fmt: skip
    audio: list[tuple[str, Value]] = [("Remove", "false" if spec.audio_codec else "true")]
    if spec.audio_codec:
        audio += [
            ("Codec", _DISPLAY_AUDIO[spec.audio_codec]),
            ("Samplerate", str(spec.sample_rate or 44100)),
            ("Bitrate", None), ("Channels", None), ("KeepTwoTracks", "false"), ("SwitchTrack", "false"),
        ]  # fmt: skip
    trans = [
        ("AdjDarMethod", spec.adj_dar), ("IsCheckReso", "false"), ("ResoAdjMethod", "0"),
        ("IsCheckVideoBitrate", "false"), ("VideoBitrateAdjMethod", "0"),
        ("IsCheckAudioBitrate", "false"), ("AudioBitrateAdjMethod", "0"),
        ("IsCheckVideoFps", "false"), ("VideoFpsAdjMethod", "0"),
        ("DeleteMetadata", "false"), ("IsHdr2Sdr", "true" if spec.hdr_to_sdr else "false"), ("IsStreamCopy", "false"),
    ]  # fmt: skip
    filled: dict[str, Nodes] = {
        "Container": _filled(sub("Container"), [("Format", spec.container)]),
        "Video": _filled(sub("Video"), video),
        "Audio": _filled(sub("Audio"), audio),
        "TimeInterval": _filled(sub("TimeInterval"), [("Start", f"{spec.start:g}"), ("Duration", None)]),
        "TransConfig": _filled(sub("TransConfig"), trans),
    }
    out: list[tuple[str, Value]] = [(n, filled.pop(n, v)) for n, v in sent]
    out += list(filled.items())
    return out


def fit_to_source(spec: TranscodeSpec, info: MediaInfo) -> TranscodeSpec:
    """Apply TransConfig's IsCheck* rules: a target above the source keeps the source's value or fails."""
    changes: dict[str, object] = {}

    def check(
        rule: tuple[bool, bool], label: str, target: float | None, source: float | None, field: str
    ) -> None:
        enabled, fail = rule
        if not enabled or not target or not source or target <= source:
            return
        if fail:
            raise JobFailed(
                "InvalidParameter", f"The target {label} {target:g} exceeds the input's {source:g}."
            )
        changes[field] = type(target)(source)

    if info.video:
        v = info.video[0]
        check(
            spec.check_vbitrate,
            "video bitrate (kbit/s)",
            spec.video_bitrate,
            v.bit_rate // 1000,
            "video_bitrate",
        )
        check(spec.check_fps, "frame rate", spec.fps, float(v.avg_fps or v.fps or 0), "fps")
    if info.audio:
        a = info.audio[0]
        check(
            spec.check_abitrate,
            "audio bitrate (kbit/s)",
            spec.audio_bitrate,
            a.bit_rate // 1000,
            "audio_bitrate",
        )
    return dataclasses.replace(spec, **changes) if changes else spec  # type: ignore[arg-type]


def build_args(
    spec: TranscodeSpec, info: MediaInfo, src: Path, dst: Path, watermarks: Sequence[PreparedMark] = ()
) -> list[str]:
    before = hwaccel.input_args(spec.hw_encoder) if spec.hw_encoder else []
    before += ["-ss", f"{spec.start:.3f}"] if spec.start else []
    args = ffmpeg.safe_input(str(src), info.demuxer, before=before)
    video = bool(spec.video_codec and info.video)
    graph: list[str] = []
    if video:
        filters, frame = video_filters(spec, info.video[0])
        if watermarks:
            # Images are more inputs (1, 2, ...): they go before the output options.
            inputs, graph = overlay_graph(watermarks, frame, "vbase", 1, "vout")
            args += inputs
            graph.insert(0, f"[0:v:0]{','.join(filters) or 'null'}[vbase]")
    if spec.duration is not None:
        args += ["-t", f"{spec.duration:.3f}"]
    args += ["-map_metadata", "-1"] if spec.delete_metadata else []
    if video:
        if graph:
            args += ["-filter_complex", ";".join(graph), "-map", "[vout]"]
        else:
            args += ["-map", "0:v:0"]
            if filters:
                args += ["-vf", ",".join(filters)]
        args += video_encoder_args(spec)
    if spec.audio_codec and info.audio:
        args += ["-map", "0:a:0", *audio_encoder_args(spec)]
    return args + muxer_args(spec, dst, has_video=video)


def store_media(ctx: JobContext, spec: TranscodeSpec, out: Output, key: str, dst: Path, work: Path) -> Nodes:
    """Store a finished output (HLS: segments first, then the playlist); MediaInfo and MediaResult."""
    from ..media.probe import probe

    result_info = probe(dst) if spec.container not in ("hls", "dash") else None
    stored: list[tuple[str, str]] = []
    if spec.container == "dash":
        # Segments first, the manifest last; names keep the manifest's stem, as in the manifest.
        base = key.rsplit("/", 1)[0] + "/" if "/" in key else ""
        stem = Path(key).stem
        for seg in sorted(work.glob(f"{dst.stem}-*")):
            ctx.store_output(out.bucket, base + seg.name.replace(f"{dst.stem}-", f"{stem}-", 1), seg)
        dst.write_text(dst.read_text().replace(f"{dst.stem}-", f"{stem}-"))
    if spec.container == "hls":
        # Segments first, the playlist last: a reader never finds a playlist whose parts are missing.
        base = key.rsplit("/", 1)[0] + "/" if "/" in key else ""
        for seg in sorted(work.glob(f"{dst.stem}-*.ts"), key=lambda p: int(p.stem.rsplit("-", 1)[1])):
            ctx.store_output(out.bucket, base + seg.name.replace(f"{dst.stem}-", Path(key).stem + "-"), seg)
        playlist = dst.read_text().replace(f"{dst.stem}-", Path(key).stem + "-")
        dst.write_text(playlist)
    stored.append((key, ctx.store_output(out.bucket, key, dst)))
    nodes: list[tuple[str, Value]] = []
    if result_info is not None:
        nodes.append(("MediaInfo", result_info.nodes()))
    nodes.append(("MediaResult", media_result(out, stored)))
    return nodes


@register
class TranscodeProcessor:
    tag: ClassVar[str] = "Transcode"
    kind: ClassVar[str] = "media"
    time_limit: ClassVar[float] = 3 * 3600.0

    def validate(self, sub: Submission) -> None:
        self.parse(sub.operation, sub.bucket)
        parse_output(sub.operation)

    def parse(self, op: ET.Element | None, bucket: str) -> tuple[TranscodeSpec, list[Watermark]]:
        spec = parse_transcode(op)
        marks = parse_watermarks(op, bucket)
        return spec, marks if spec.video_codec else []  # an audio-only output has nothing to mark

    def run(self, ctx: JobContext) -> Nodes:
        op = operation_element(ctx.job.operation)
        spec, marks = self.parse(op, ctx.job.bucket)
        out = parse_output(op)
        with ctx.input_file() as src, ctx.workdir() as work, contextlib.ExitStack() as stack:
            info = probe_input(src)
            if spec.start and spec.start >= info.duration:
                raise JobFailed(
                    "InvalidParameter",
                    f"TimeInterval.Start {spec.start:g} s is past the input's end ({info.duration:.3f} s).",
                )
            if not (spec.video_codec and info.video) and not (spec.audio_codec and info.audio):
                raise JobFailed("InvalidParameter", "The input has none of the streams the output asks for.")
            spec = fit_to_source(spec, info)
            if spec.video_codec and ctx.hardware:
                spec = dataclasses.replace(spec, hw_encoder=hwaccel.choose(spec.video_codec, ctx.hardware))
            key = expand(out.object, input_key=ctx.job.input_object, job_id=ctx.job.job_id, ext=spec.ext)
            dst = work / f"out.{spec.ext}"
            expected = info.duration - spec.start
            if spec.duration:
                expected = min(expected, spec.duration)
            prepared = prepare(ctx, marks, stack, work) if info.video else []
            run_ffmpeg(ctx, build_args(spec, info, src, dst, prepared), expected)
            nodes = list(store_media(ctx, spec, out, key, dst, work))
        sent = (
            next((v for n, v in ctx.job.operation if n == "Transcode" and not isinstance(v, str)), None) or []
        )
        return [*nodes, ("Transcode", echo_with_defaults(spec, sent))]


def _container_for(op: ET.Element | None) -> str:
    """Tag Watermark without a Transcode node: the container the output's extension names, else mp4."""
    key = text(op, "Output/Object").lower()
    ext = key.rsplit(".", 1)[1] if "." in key.rsplit("/", 1)[-1] else ""
    video_containers = [name for name, c in _CONTAINERS.items() if c[2] and name not in ("hls", "webm")]
    return ext if ext in video_containers else "mp4"


@register
class WatermarkProcessor(TranscodeProcessor):
    """Tag Watermark (spec/tags.md Watermark): re-encode the input with its watermarks.

    Codecs come from an optional Transcode node, else the defaults of the container that the
    output's extension names (mp4 when it names none).
    """

    tag: ClassVar[str] = "Watermark"

    def parse(self, op: ET.Element | None, bucket: str) -> tuple[TranscodeSpec, list[Watermark]]:
        if op is not None and op.find("Transcode") is None:
            op = copy.deepcopy(op)
            ET.SubElement(
                ET.SubElement(ET.SubElement(op, "Transcode"), "Container"), "Format"
            ).text = _container_for(op)
        spec, marks = super().parse(op, bucket)
        if not marks:
            raise InvalidOperation(
                "A Watermark job needs a Watermark node (or WatermarkTemplateId) and a video output."
            )
        return spec, marks
