"""Probe an untrusted media file with PyAV and describe it as CI's MediaInfo node.

Safety. The file is an upload, so nothing in it may make the probe read anything else:

1. We open the file ourselves (read-only, regular files only) and hand PyAV the open handle under a
   neutral name without an extension. The demuxer is therefore chosen from the bytes alone, never from
   a name the uploader picked, and no protocol handler ever sees the path.
2. ``format_whitelist`` lets libavformat accept only the demuxers in `SAFE_DEMUXERS`. The check runs
   after probing and before the demuxer reads its header, so an HLS playlist, an ffconcat list, an
   image2 pattern, an SDP file, ... is refused before it can open its first reference.
3. Behind the whitelist, two more guards hold if a demuxer that follows references ever gets through:
   every ``AVFormatContext.io_open`` (HLS segments, MOV data references) goes to a callback that refuses
   it and marks the file as refused, and ``protocol_whitelist`` names no protocol at all, so nested
   contexts (concat opens its entries with one, inheriting that list) cannot open files or URLs either.
   The main input needs no protocol: PyAV reads it through our handle.

Speed. A probe reads container and stream headers (``avformat_find_stream_info`` within libavformat's
default probesize and analyzeduration, which is what ffprobe reads too). Values that the container does
not state (stream bitrates in Matroska, MPEG-TS and FLV, frame counts, some durations) come from one
demux pass over at most `SCAN_MAX_BYTES` / `SCAN_MAX_PACKETS`, without decoding; past that budget they
are extrapolated. A 2 s 320x240 MP4 probes in about 1.5 ms, nearly all of it libavformat's open. WAV is
the slow case (about 20 ms): libavformat probes the PCM payload for compressed audio (DTS in WAV).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import NoReturn

import av
import av.error
from av.audio.stream import AudioStream
from av.codec.context import CodecContext
from av.container import InputContainer
from av.stream import Stream
from av.video.stream import VideoStream

from mediajobs.nodes import Nodes, Value

__all__ = [
    "SAFE_DEMUXERS",
    "AudioStreamInfo",
    "MediaInfo",
    "NotMedia",
    "SubtitleStreamInfo",
    "VideoStreamInfo",
    "probe",
]

# Demuxers (libavformat input format names) an upload may be read with. None of them opens other
# files or URLs. Deliberately absent: hls, dash, concat (ffconcat), image2 (file patterns), sdp, rtsp,
# rtp, lavfi, tee, data, tty and every other demuxer that follows references or accepts plain text.
SAFE_DEMUXERS: tuple[str, ...] = (
    # video containers
    "mov",
    "mp4",
    "m4a",
    "3gp",
    "3g2",
    "mj2",
    "matroska",
    "webm",
    "flv",
    "mpegts",
    "avi",
    "asf",
    "mpeg",
    # audio
    "mp3",
    "aac",
    "wav",
    "flac",
    "ogg",
    "amr",
    "aiff",
    "ac3",
    "eac3",
    # still images (single-file image pipes, never the image2 pattern demuxer)
    "png_pipe",
    "jpeg_pipe",
    "webp_pipe",
    "bmp_pipe",
    "tiff_pipe",
    "gif",
    "gif_pipe",
    "apng",
)

# The same list in words, for the message that refuses anything else.
_ACCEPTED = (
    "MP4/MOV, Matroska/WebM, FLV, MPEG-TS, AVI, ASF, MPEG-PS, MP3, AAC, WAV, FLAC, Ogg, AMR, AIFF, AC-3, "
    "and PNG, JPEG, WebP, BMP, TIFF and GIF images"
)
_REFERENCES = "the file refers to other files or URLs, which is not allowed"

# Bounds of the packet scan that fills in what the container does not state.
SCAN_MAX_BYTES = 4 << 20
SCAN_MAX_PACKETS = 4000

# The name PyAV passes to libavformat for our file handle: no extension, so probing is by content only.
_NEUTRAL_NAME = "upload"

_OPEN_OPTIONS = {
    "format_whitelist": ",".join(SAFE_DEMUXERS),
    # No protocol at all: the upload is read through our own handle, never by URL. A demuxer that opens
    # a nested AVFormatContext (concat does, bypassing io_open) copies this list, so with "file" here it
    # could still read any local file; with a name that matches no protocol it can read nothing.
    "protocol_whitelist": "none",
    # MOV external data references; off by default, pinned off here.
    "enable_drefs": "0",
    "use_absolute_path": "0",
}

# ffmpeg's names (av_color_*_name, av_get_field_order) for the codec parameters PyAV gives as ints.
_COLOR_RANGES = {1: "tv", 2: "pc"}
_COLOR_PRIMARIES = {
    1: "bt709",
    4: "bt470m",
    5: "bt470bg",
    6: "smpte170m",
    7: "smpte240m",
    8: "film",
    9: "bt2020",
    10: "smpte428",
    11: "smpte431",
    12: "smpte432",
    22: "ebu3213",
}
_COLOR_TRANSFERS = {
    1: "bt709",
    4: "bt470m",
    5: "bt470bg",
    6: "smpte170m",
    7: "smpte240m",
    8: "linear",
    9: "log100",
    10: "log316",
    11: "iec61966-2-4",
    12: "bt1361e",
    13: "iec61966-2-1",
    14: "bt2020-10",
    15: "bt2020-12",
    16: "smpte2084",
    17: "smpte428",
    18: "arib-std-b67",
}
_FIELD_ORDERS = {1: "progressive", 2: "tt", 3: "bb", 4: "tb", 5: "bt"}
# av_channel_layout_default(): the layout the ffmpeg CLI guesses for a bare channel count.
_DEFAULT_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "4.0", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


class NotMedia(Exception):
    """The input exists but is not media we can probe, or it was refused as unsafe."""


class _NestedOpen(Exception):
    """Raised inside libavformat's io_open callback: the input tried to open another file or URL."""


@dataclass(frozen=True)
class VideoStreamInfo:
    index: int
    codec_name: str
    codec_long_name: str
    profile: str
    codec_tag: int
    time_base: Fraction
    codec_time_base: Fraction
    width: int
    height: int
    pix_fmt: str
    level: int
    has_b_frames: int
    ref_frames: int
    sar: Fraction
    fps: Fraction
    avg_fps: Fraction
    color_range: str
    color_primaries: str
    color_transfer: str
    field_order: str
    rotation: float
    start_time: float
    duration: float
    bit_rate: int
    num_frames: int
    language: str

    @property
    def dar(self) -> Fraction | None:
        """Display aspect ratio (width * SAR / height), None when the size is unknown."""
        if self.width <= 0 or self.height <= 0:
            return None
        return Fraction(self.width * self.sar.numerator, self.height * self.sar.denominator)

    def nodes(self) -> Nodes:
        return [
            ("AvgFps", _f6(self.avg_fps)),
            ("Bitrate", _f6(self.bit_rate / 1000)),
            ("CodecLongName", self.codec_long_name),
            ("CodecName", self.codec_name),
            ("CodecTag", f"0x{self.codec_tag:08x}"),
            ("CodecTagString", _fourcc(self.codec_tag)),
            ("CodecTimeBase", _q(self.codec_time_base, "/")),
            ("ColorPrimaries", self.color_primaries),
            ("ColorRange", self.color_range),
            ("ColorTransfer", self.color_transfer),
            ("Dar", _q(self.dar, ":")),
            ("Duration", _f6(self.duration)),
            ("FieldOrder", self.field_order),
            ("Fps", _f6(self.fps)),
            ("HasBFrame", str(self.has_b_frames)),
            ("Height", str(self.height)),
            ("Index", str(self.index)),
            ("Language", self.language),
            ("Level", str(self.level)),
            ("NumFrames", str(self.num_frames)),
            ("PixFormat", self.pix_fmt),
            ("Profile", self.profile),
            ("RefFrames", str(self.ref_frames)),
            ("Rotation", _f6(self.rotation)),
            ("Sar", _q(self.sar, ":")),
            ("StartTime", _f6(self.start_time)),
            ("Timebase", _q(self.time_base, "/")),
            ("Width", str(self.width)),
        ]


@dataclass(frozen=True)
class AudioStreamInfo:
    index: int
    codec_name: str
    codec_long_name: str
    profile: str
    codec_tag: int
    time_base: Fraction
    sample_rate: int
    channels: int
    channel_layout: str
    sample_fmt: str
    start_time: float
    duration: float
    bit_rate: int
    language: str

    @property
    def codec_time_base(self) -> Fraction:
        # What ffprobe printed as codec_time_base for audio decoders: one sample.
        return Fraction(1, self.sample_rate) if self.sample_rate > 0 else self.time_base

    def nodes(self) -> Nodes:
        return [
            ("Bitrate", _f6(self.bit_rate / 1000)),
            ("Channel", str(self.channels)),
            ("ChannelLayout", self.channel_layout),
            ("CodecLongName", self.codec_long_name),
            ("CodecName", self.codec_name),
            ("CodecTag", f"0x{self.codec_tag:08x}"),
            ("CodecTagString", _fourcc(self.codec_tag)),
            ("CodecTimeBase", _q(self.codec_time_base, "/")),
            ("Duration", _f6(self.duration)),
            ("Index", str(self.index)),
            ("Language", self.language),
            ("SampleFmt", self.sample_fmt),
            ("SampleRate", str(self.sample_rate)),
            ("StartTime", _f6(self.start_time)),
            ("Timebase", _q(self.time_base, "/")),
        ]


@dataclass(frozen=True)
class SubtitleStreamInfo:
    index: int
    codec_name: str
    language: str

    def nodes(self) -> Nodes:
        # The SDKs model a subtitle stream as Index and Language (Java MediaInfoSubtitle); the Go SDK
        # keeps the element as an opaque string.
        return [("Index", str(self.index)), ("Language", self.language)]


@dataclass(frozen=True)
class MediaInfo:
    """What `probe` found: container facts plus one record per audio, video and subtitle stream."""

    format_name: str  # ffprobe's format_name, e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    format_long_name: str
    demuxer: str  # one short demuxer name to pin later runs with `-f <demuxer>`, e.g. "mov"
    duration: float  # seconds
    start_time: float  # seconds
    bit_rate: int  # bit/s
    size: int  # bytes
    num_streams: int
    num_programs: int
    video: tuple[VideoStreamInfo, ...] = field(default=())
    audio: tuple[AudioStreamInfo, ...] = field(default=())
    subtitles: tuple[SubtitleStreamInfo, ...] = field(default=())

    @property
    def has_video(self) -> bool:
        return bool(self.video)

    @property
    def has_audio(self) -> bool:
        return bool(self.audio)

    def nodes(self) -> Nodes:
        """The children of `<MediaInfo>`: `Format`, then `Stream` with `Audio`, `Subtitle`, `Video`."""
        fmt: Nodes = [
            ("Bitrate", _f6(self.bit_rate / 1000)),
            ("Duration", _f6(self.duration)),
            ("FormatLongName", self.format_long_name),
            ("FormatName", self.format_name),
            ("NumProgram", str(self.num_programs)),
            ("NumStream", str(self.num_streams)),
            ("Size", str(self.size)),
            ("StartTime", _f6(self.start_time)),
        ]
        stream: list[tuple[str, Value]] = []
        for name, infos in (("Audio", self.audio), ("Subtitle", self.subtitles), ("Video", self.video)):
            if infos:
                stream.extend((name, info.nodes()) for info in infos)
            else:
                stream.append((name, None))
        return [("Format", fmt), ("Stream", stream)]


def probe(path: str | os.PathLike[str]) -> MediaInfo:
    """Probe the media file at `path`.

    Raises FileNotFoundError (or another OSError) when the file cannot be opened, and NotMedia when it
    is not a regular file, is empty, is not in a format of `SAFE_DEMUXERS`, cannot be parsed, or tries
    to reach other files or URLs.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)  # O_NONBLOCK: never hang on a FIFO
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotMedia("the input is not a regular file")
        if st.st_size == 0:
            raise NotMedia("the file is empty")
        raw = io.FileIO(fd, "rb", closefd=True)
    except BaseException:
        os.close(fd)
        raise
    with raw:
        return _probe_open(raw, st.st_size)


class _Source:
    """The file handle as PyAV sees it: read/seek/tell, and a name that gives the prober no hint."""

    name = _NEUTRAL_NAME

    def __init__(self, raw: io.FileIO) -> None:
        self.read = raw.read
        self.seek = raw.seek
        self.tell = raw.tell


def _probe_open(raw: io.FileIO, size: int) -> MediaInfo:
    nested: list[str] = []

    def refuse_nested_open(url: str, flags: int, options: dict[str, str]) -> NoReturn:
        nested.append(url)
        raise _NestedOpen(url)

    try:
        container = av.open(_Source(raw), "r", container_options=_OPEN_OPTIONS, io_open=refuse_nested_open)
    except _NestedOpen:
        raise NotMedia(_REFERENCES) from None
    except av.error.ArgumentError as exc:
        # EINVAL from avformat_open_input: the content was recognised as a demuxer off the whitelist.
        raise NotMedia(f"the file's format is not accepted; accepted are {_ACCEPTED}") from exc
    except (av.error.FFmpegError, EOFError) as exc:
        raise NotMedia("the file is not a recognised media file") from exc
    with container:
        try:
            info = _describe(container, raw, size)
        except _NestedOpen:
            raise NotMedia(_REFERENCES) from None
        # A demuxer that shrugged off a refused open still tried one: refuse the file all the same.
        if nested:
            raise NotMedia(_REFERENCES)
    if not (info.video or info.audio or info.subtitles):
        raise NotMedia("the file has no audio, video or subtitle streams")
    return info


# --------------------------------------------------------------------------- describing a container


@dataclass
class _Tally:
    """Per-stream totals from the packet scan."""

    packets: int = 0
    bytes: int = 0
    first: int | None = None  # earliest timestamp, stream time base
    end: int | None = None  # latest timestamp + duration, stream time base


@dataclass
class _Scan:
    tallies: dict[int, _Tally]
    complete: bool  # reached the end of the file within budget: totals are exact


def _describe(container: InputContainer, raw: io.FileIO, size: int) -> MediaInfo:
    fmt = container.format
    format_name = str(fmt.name)
    streams = list(container.streams)
    demuxer = format_name.split(",", 1)[0]

    fmt_duration = _us(container.duration)
    fmt_start = _us(container.start_time)

    scan = _scan(container) if any(_needs_scan(s) for s in streams) else None

    rotations = _mov_rotations(raw.fileno(), size) if demuxer == "mov" else {}

    video: list[VideoStreamInfo] = []
    audio: list[AudioStreamInfo] = []
    subtitles: list[SubtitleStreamInfo] = []
    for s in streams:
        cc: CodecContext | None = s.codec_context  # None at run time when no decoder exists
        if s.type == "subtitle":
            subtitles.append(SubtitleStreamInfo(s.index, _codec_name(s), _language(s)))
        elif isinstance(s, VideoStream) and cc is not None:
            video.append(_video(s, scan, fmt_duration, rotations.get(s.index, 0.0)))
        elif isinstance(s, AudioStream) and cc is not None:
            audio.append(_audio(s, scan, fmt_duration))
        # Data and attachment streams (and streams without a decoder) count in NumStream only.

    # Container duration and start: as stated, else from the streams (still images state neither).
    all_streams: list[VideoStreamInfo | AudioStreamInfo] = [*video, *audio]
    if fmt_start is None:
        fmt_start = min((x.start_time for x in all_streams), default=0.0)
    if fmt_duration is None:
        fmt_duration = max((x.start_time + x.duration for x in all_streams), default=fmt_start) - fmt_start
    bit_rate = int(container.bit_rate or 0)
    if bit_rate <= 0 and fmt_duration > 0:
        # ffprobe leaves it N/A; size over duration is what libavformat computes when it can.
        bit_rate = round(size * 8 / fmt_duration)

    return MediaInfo(
        format_name=format_name,
        format_long_name=str(fmt.long_name),
        demuxer=demuxer,
        duration=max(fmt_duration, 0.0),
        start_time=fmt_start,
        bit_rate=max(bit_rate, 0),
        size=size,
        num_streams=len(streams),
        # PyAV does not expose nb_programs. Only MPEG-TS among the accepted demuxers creates programs
        # (one per PAT entry), so count those; every other container has none.
        num_programs=_ts_programs(raw.fileno()) if demuxer == "mpegts" else 0,
        video=tuple(video),
        audio=tuple(audio),
        subtitles=tuple(subtitles),
    )


def _video(
    s: VideoStream, scan: _Scan | None, fmt_duration: float | None, rotation: float
) -> VideoStreamInfo:
    cc = s.codec_context
    tb = s.time_base or Fraction(1, 1)
    avg_fps = s.average_rate or Fraction(0)
    fps = s.base_rate or avg_fps
    start, duration, bit_rate = _timing(s, scan, fmt_duration)
    num_frames = int(s.frames or 0) or _tag_int(s, "NUMBER_OF_FRAMES")
    if not num_frames:
        tally = scan.tallies.get(s.index) if scan else None
        if scan is not None and scan.complete and tally is not None and tally.packets:
            num_frames = tally.packets  # one packet per frame, as in an MP4 sample table
        else:
            num_frames = round(duration * float(avg_fps or fps))  # no count stated: duration x rate
    return VideoStreamInfo(
        index=s.index,
        codec_name=_codec_name(s),
        codec_long_name=_codec_long_name(s),
        profile=s.profile or "unknown",
        codec_tag=_codec_tag(cc),
        time_base=tb,
        # Old ffprobe's codec_time_base for video, as in the spec example: the stream time base.
        codec_time_base=tb,
        width=int(cc.width),
        height=int(cc.height),
        pix_fmt=cc.pix_fmt or "unknown",
        # FF_LEVEL_UNKNOWN (-99) when the codec has no level, as ffprobe prints it.
        level=int(cc.level),
        # ffprobe's has_b_frames is the decoder's reorder depth (codecpar video_delay), not a flag.
        has_b_frames=int(cc.reorder_depth),
        # ffprobe reports `refs` from a decoder context it never feeds, i.e. AVCodecContext's default
        # of 1; the real SPS count is not in the codec parameters. We report the same 1.
        ref_frames=1,
        # No SAR stated (e.g. VP9 in WebM): square pixels, which is how players show it.
        sar=s.sample_aspect_ratio or Fraction(1, 1),
        fps=fps,
        avg_fps=avg_fps,
        color_range=_COLOR_RANGES.get(int(cc.color_range), "unknown"),
        color_primaries=_COLOR_PRIMARIES.get(int(cc.color_primaries), "unknown"),
        color_transfer=_COLOR_TRANSFERS.get(int(cc.color_trc), "unknown"),
        field_order=_FIELD_ORDERS.get(int(cc.field_order), "unknown"),
        rotation=rotation,
        start_time=start,
        duration=duration,
        bit_rate=bit_rate,
        num_frames=max(num_frames, 0),
        language=_language(s),
    )


def _audio(s: AudioStream, scan: _Scan | None, fmt_duration: float | None) -> AudioStreamInfo:
    cc = s.codec_context
    start, duration, bit_rate = _timing(s, scan, fmt_duration)
    channels = int(cc.channels)
    layout = str(cc.layout.name)
    if layout.endswith(" channels") or layout.endswith(" channel"):
        # Unordered layout (e.g. plain WAV): the default layout for the count, as the ffmpeg CLI guesses.
        layout = _DEFAULT_LAYOUTS.get(channels, layout)
    fmt = cc.format
    return AudioStreamInfo(
        index=s.index,
        codec_name=_codec_name(s),
        codec_long_name=_codec_long_name(s),
        profile=s.profile or "unknown",
        codec_tag=_codec_tag(cc),
        time_base=s.time_base or Fraction(1, 1),
        sample_rate=int(cc.sample_rate),
        channels=channels,
        channel_layout=layout,
        sample_fmt=str(fmt.name) if fmt is not None else "unknown",
        start_time=start,
        duration=duration,
        bit_rate=bit_rate,
        language=_language(s),
    )


def _timing(s: Stream, scan: _Scan | None, fmt_duration: float | None) -> tuple[float, float, int]:
    """Start (s), duration (s) and bitrate (bit/s) of a stream: stated, else tagged, else scanned."""
    tb = s.time_base or Fraction(1, 1)
    tally = scan.tallies.get(s.index) if scan else None
    exact = scan is not None and scan.complete and tally is not None and tally.packets > 0

    if s.start_time is not None:
        start = float(s.start_time * tb)
    elif tally is not None and tally.first is not None:
        start = float(tally.first * tb)
    else:
        start = 0.0  # nothing states it (raw ADTS, WAV, image pipes): the stream starts at zero

    if s.duration is not None and s.duration > 0:
        duration = float(s.duration * tb)
    elif (tagged := _tag_duration(s)) is not None:
        duration = tagged  # Matroska muxers write a per-track DURATION tag
    elif exact and tally is not None and tally.first is not None and tally.end is not None:
        duration = float((tally.end - tally.first) * tb)
    elif fmt_duration is not None:
        duration = max(fmt_duration - start, 0.0)  # the container's duration, from this stream's start
    elif tally is not None and tally.first is not None and tally.end is not None:
        duration = float((tally.end - tally.first) * tb)
    else:
        duration = 0.0

    bit_rate = int(s.codec_context.bit_rate or 0) or _tag_int(s, "BPS")
    if not bit_rate and tally is not None and tally.bytes:
        if exact and duration > 0:
            bit_rate = round(tally.bytes * 8 / duration)
        elif tally.first is not None and tally.end is not None and tally.end > tally.first:
            # Budget ran out: the bitrate of the part we read.
            bit_rate = round(tally.bytes * 8 / float((tally.end - tally.first) * tb))
    return start, max(duration, 0.0), max(bit_rate, 0)


def _needs_scan(s: Stream) -> bool:
    cc: CodecContext | None = s.codec_context
    if cc is None or s.type not in ("video", "audio"):
        return False
    if not (cc.bit_rate or _tag_int(s, "BPS")):
        return True
    if s.start_time is None:
        return True
    if not (s.duration or _tag_duration(s) is not None):
        return True
    return s.type == "video" and not (s.frames or _tag_int(s, "NUMBER_OF_FRAMES"))


def _scan(container: InputContainer) -> _Scan:
    """Demux (never decode) up to the budget and total packets, bytes and time span per stream."""
    tallies: dict[int, _Tally] = {}
    total_bytes = 0
    total_packets = 0
    complete = True
    try:
        for packet in container.demux():
            if packet.size == 0 and packet.pts is None and packet.dts is None:
                continue  # PyAV's end-of-stream flush packets
            tally = tallies.setdefault(packet.stream_index, _Tally())
            tally.packets += 1
            tally.bytes += packet.size
            ts = packet.pts if packet.pts is not None else packet.dts
            if ts is not None:
                if tally.first is None or ts < tally.first:
                    tally.first = ts
                end = ts + (packet.duration or 0)
                if tally.end is None or end > tally.end:
                    tally.end = end
            total_bytes += packet.size
            total_packets += 1
            if total_bytes >= SCAN_MAX_BYTES or total_packets >= SCAN_MAX_PACKETS:
                complete = False
                break
    except (av.error.FFmpegError, EOFError):
        complete = False  # damaged past this point: keep what we have, as estimates
    return _Scan(tallies, complete)


# --------------------------------------------------------------------------- small helpers


def _us(value: int | None) -> float | None:
    """AV_TIME_BASE (microsecond) value -> seconds."""
    return None if value is None else value / 1_000_000


def _f6(value: float | Fraction | None) -> str:
    x = float(value) if value is not None else 0.0
    if not math.isfinite(x):
        x = 0.0
    s = f"{x:.6f}"
    return "0.000000" if s == "-0.000000" else s


def _q(value: Fraction | None, sep: str) -> str:
    if value is None:
        return f"0{sep}1"
    return f"{value.numerator}{sep}{value.denominator}"


def _fourcc(tag: int) -> str:
    """av_fourcc2str(): printable characters as they are, anything else as [n]."""
    out = []
    for i in range(4):
        c = (tag >> (8 * i)) & 0xFF
        ch = chr(c)
        out.append(ch if (ch.isascii() and ch.isalnum()) or ch in ". -_" else f"[{c}]")
    return "".join(out)


def _codec_tag(cc: CodecContext) -> int:
    try:
        text = str(cc.codec_tag)
    except UnicodeDecodeError:
        # PyAV decodes the tag as ASCII; a tag with bytes >= 0x80 cannot be read back through it.
        return 0
    return int.from_bytes(text.encode("latin-1"), "little")


def _codec_name(s: Stream) -> str:
    cc: CodecContext | None = s.codec_context
    if cc is None:
        return str(getattr(s, "name", None) or "unknown")
    # The codec's name (avcodec_get_name), not the decoder's: "mp3", not "mp3float".
    return str(cc.codec.canonical_name)


def _codec_long_name(s: Stream) -> str:
    return str(s.codec_context.codec.long_name)


def _language(s: Stream) -> str:
    lang = s.metadata.get("language")
    return str(lang) if lang else "und"


def _tag(s: Stream, key: str) -> str | None:
    """A Matroska statistics tag (mkvmerge writes `BPS`, `BPS-eng`, ...)."""
    meta = s.metadata
    for k in (key, f"{key}-eng"):
        value = meta.get(k)
        if value:
            return str(value)
    return None


def _tag_int(s: Stream, key: str) -> int:
    value = _tag(s, key)
    return int(value) if value is not None and value.isdigit() else 0


_HMS = re.compile(r"^(\d+):(\d{1,2}):(\d{1,2}(?:\.\d+)?)$")


def _tag_duration(s: Stream) -> float | None:
    value = _tag(s, "DURATION")
    m = _HMS.match(value) if value else None
    if m is None:
        return None
    return int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])


# --------------------------------------------------------------------------- MP4/MOV display matrix

# PyAV reads a stream's display matrix only from decoded frames, and decoding is too slow for a probe,
# so for the MOV family we read the matrices the demuxer reads: `tkhd` of each track times `mvhd`.
# Tracks become streams in file order. Other containers report 0.

_MAX_BOXES = 10_000


def _boxes(fd: int, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, box end) for the ISO BMFF boxes in [start, end)."""
    pos = start
    for _ in range(_MAX_BOXES):
        if pos + 8 > end:
            return
        head = os.pread(fd, 16, pos)
        if len(head) < 8:
            return
        size, kind = struct.unpack(">I4s", head[:8])
        header = 8
        if size == 1:
            if len(head) < 16:
                return
            size = struct.unpack(">Q", head[8:16])[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header:
            return
        yield kind, pos + header, min(pos + size, end)
        pos += size


def _matrix(fd: int, payload: int, end: int, v0_offset: int, v1_offset: int) -> list[float] | None:
    version = os.pread(fd, 1, payload)
    if not version:
        return None
    at = payload + (v1_offset if version[0] == 1 else v0_offset)
    data = os.pread(fd, 36, at)
    if len(data) < 36 or at + 36 > end:
        return None
    m = struct.unpack(">9i", data)
    # a b u / c d v / x y w: 16.16 fixed point except u, v, w (2.30)
    return [m[0] / 65536, m[1] / 65536, m[2] / (1 << 30), m[3] / 65536, m[4] / 65536, m[5] / (1 << 30)]


def _mov_rotations(fd: int, size: int) -> dict[int, float]:
    try:
        moov = next((b for b in _boxes(fd, 0, size) if b[0] == b"moov"), None)
        if moov is None:
            return {}
        movie = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        rotations: dict[int, float] = {}
        track = 0
        for kind, payload, end in _boxes(fd, moov[1], moov[2]):
            if kind == b"mvhd":
                # version 0: flags, 2 times, timescale, duration, rate, volume, 10 reserved = 36 bytes
                movie = _matrix(fd, payload, end, 36, 48) or movie
            elif kind == b"trak":
                for k, p, e in _boxes(fd, payload, end):
                    if k == b"tkhd":
                        tk = _matrix(fd, p, e, 40, 52)
                        if tk is not None:
                            rotations[track] = _rotation(tk, movie)
                        break
                track += 1
        return rotations
    except OSError:
        return {}


def _rotation(tk: list[float], mv: list[float]) -> float:
    """av_display_rotation_get() of tkhd x mvhd, in degrees counter-clockwise."""
    # Only the upper-left 2x2 (scale/rotation) part matters; the third column is the projective one.
    a = tk[0] * mv[0] + tk[1] * mv[3]
    b = tk[0] * mv[1] + tk[1] * mv[4]
    c = tk[3] * mv[0] + tk[4] * mv[3]
    d = tk[3] * mv[1] + tk[4] * mv[4]
    scale0 = math.hypot(a, c)
    scale1 = math.hypot(b, d)
    if scale0 == 0 or scale1 == 0:
        return 0.0
    degrees = -math.degrees(math.atan2(b / scale1, a / scale0))
    return degrees + 0.0  # no negative zero


# --------------------------------------------------------------------------- MPEG-TS programs

_TS_READ = 256 * 1024


def _ts_programs(fd: int) -> int:
    """Programs in the first PAT within the first 256 KiB (188, 192 or 204-byte packets)."""
    with contextlib.suppress(OSError):
        data = os.pread(fd, _TS_READ, 0)
        for packet_size, lead in ((188, 0), (192, 4), (204, 0)):
            if not all(
                len(data) > lead + i * packet_size and data[lead + i * packet_size] == 0x47 for i in range(3)
            ):
                continue
            for pos in range(lead, len(data) - 188 + 1, packet_size):
                pkt = data[pos : pos + 188]
                if pkt[0] != 0x47:
                    break
                pid = ((pkt[1] & 0x1F) << 8) | pkt[2]
                if pid != 0 or not pkt[1] & 0x40:
                    continue
                start = 4
                if pkt[3] & 0x20:  # adaptation field
                    start = 5 + pkt[4]
                if start >= 188:
                    continue
                section = pkt[start + 1 + pkt[start] :]
                if len(section) < 12 or section[0] != 0x00:
                    continue
                length = ((section[1] & 0x0F) << 8) | section[2]
                entries = section[8 : min(3 + length - 4, len(section))]
                return sum(
                    1 for i in range(0, len(entries) - 3, 4) if (entries[i] << 8) | entries[i + 1] != 0
                )
            break
    return 0
