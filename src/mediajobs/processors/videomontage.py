"""VideoMontage: a highlights reel of about `Duration` seconds (spec/tags.md VideoMontage).

Two FFmpeg runs. The first measures change: the video thinned to at most MAX_ANALYSED small
frames, each with `select`'s scene score. The input is cut into windows of SEGMENT seconds
(longer for long montages, so there are at most MAX_SEGMENTS of them); the windows with the
most change (peak plus mean scene score) are taken until they add up to `Duration`, the last
one taken is shortened to fit, and they play in time order. The second run opens the input once
per segment with `-ss`/`-t` (FFmpeg decodes only those stretches), trims each exactly, joins them
with `concat` and encodes like Transcode (`Container`/`Video`/`Audio` read by
processors.transcode), with any `Watermark` of the Operation drawn over the result.

`Scene=Soccer` and an `AudioMix` with an `AudioSource` would change the output and are not
implemented: refused with 400 InvalidArgument. Without `Duration` the montage lasts a fifth of
the input, at least 5 s and at most 60 s (never longer than the input).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from ..media import ffmpeg
from ..media.ffmpeg import escape_value
from ..nodes import Nodes
from . import register
from .base import InvalidOperation, JobContext, JobFailed, Submission
from .common import MAX_INPUT_SECONDS, probe_input, run_ffmpeg
from .output import expand, parse_output
from .params import choice, num, operation_element, text
from .transcode import (
    TranscodeSpec,
    audio_encoder_args,
    muxer_args,
    parse_transcode,
    store_media,
    video_encoder_args,
    video_filters,
)
from .watermark import PreparedMark, Watermark, overlay_graph, parse_watermarks, prepare

if TYPE_CHECKING:
    from ..media.probe import MediaInfo

CONTAINERS = ("mp4", "flv", "hls", "ts", "mkv")
MAX_ANALYSED = 3000  # frames scored, at most
MAX_SEGMENTS = 30
SEGMENT = (1.0, 4.0)  # shortest and longest window, before MAX_SEGMENTS stretches it


@dataclass(frozen=True)
class MontageSpec:
    transcode: TranscodeSpec
    duration: float | None


def parse_montage(op: ET.Element | None) -> MontageSpec:
    node = op.find("VideoMontage") if op is not None else None
    if node is None:
        raise InvalidOperation("Operation.VideoMontage (or a TemplateId) is required.")
    fmt = text(node, "Container/Format").lower()
    if not fmt:
        raise InvalidOperation("VideoMontage.Container.Format is required.")
    if fmt not in CONTAINERS:
        raise InvalidOperation(
            f"VideoMontage.Container.Format {fmt!r} is not one of {', '.join(CONTAINERS)}."
        )
    shell = ET.Element("Operation")
    transcode = ET.SubElement(shell, "Transcode")
    for name in ("Container", "Video", "Audio"):
        child = node.find(name)
        if child is not None:
            transcode.append(copy.deepcopy(child))
    try:
        spec = parse_transcode(shell)
    except InvalidOperation as exc:
        raise InvalidOperation(str(exc).replace("Transcode.", "VideoMontage.")) from None
    if spec.video_codec not in (None, "h264", "h265"):
        raise InvalidOperation("VideoMontage.Video.Codec must be H.264 or H.265.")
    if spec.audio_codec not in (None, "aac", "mp3"):
        raise InvalidOperation("VideoMontage.Audio.Codec must be aac or mp3.")
    try:
        duration = num(node, "Duration", 0, MAX_INPUT_SECONDS, lo_open=True)
        scene = choice(node, "Scene", ("Video", "Soccer"), "Video")
    except InvalidOperation as exc:
        raise InvalidOperation(f"VideoMontage.{exc}") from None
    if scene != "Video":
        raise InvalidOperation(
            "VideoMontage.Scene Soccer (sports highlights) is not supported by this server yet."
        )
    for where in (node, op):
        assert where is not None
        if (
            where.find("AudioMix/AudioSource") is not None
            or where.find("AudioMixArray/AudioSource") is not None
        ):
            raise InvalidOperation(
                "VideoMontage.AudioMix (background music) is not supported by this server yet."
            )
    return MontageSpec(spec, duration)


def auto_duration(total: float) -> float:
    return min(total, max(5.0, min(60.0, total / 5)))


def analysis_args(info: MediaInfo, src: Path, stats: Path) -> list[str]:
    """Scene scores of the thinned, shrunk video, printed to `stats`; no output file."""
    v = info.video[0]
    src_fps = float(v.avg_fps) if v.avg_fps and float(v.avg_fps) > 0 else 25.0
    fps = min(src_fps, 10.0, max(0.01, MAX_ANALYSED / max(info.duration, 0.04)))
    chain = [
        f"fps={fps:.6f}",
        "scale=160:-2",
        f"select={escape_value('gte(scene,0)')}",
        f"metadata=print:key=lavfi.scene_score:file={escape_value(str(stats))}",
    ]
    return [
        *ffmpeg.safe_input(str(src), info.demuxer),
        "-map",
        "0:v:0",
        "-vf",
        ",".join(chain),
        "-f",
        "null",
        "-",
    ]


def read_scores(stats: Path) -> list[tuple[float, float]]:
    """(time, scene score) per analysed frame."""
    samples: list[tuple[float, float]] = []
    time: float | None = None
    for line in stats.read_text(errors="replace").splitlines():
        if line.startswith("frame:"):
            fields = dict(f.split(":", 1) for f in line.split() if ":" in f)
            try:
                time = float(fields.get("pts_time", ""))
            except ValueError:
                time = None
        elif line.startswith("lavfi.scene_score=") and time is not None:
            with contextlib.suppress(ValueError):
                score = float(line.split("=", 1)[1])
                if math.isfinite(score):
                    samples.append((time, score))
    return samples


def choose_segments(
    samples: Sequence[tuple[float, float]], total: float, target: float
) -> list[tuple[float, float]]:
    """(start, length) of the segments, in time order, adding up to `target` (at most `total`)."""
    if target >= total - 0.05:
        return [(0.0, total)]
    seg = max(min(SEGMENT[1], max(SEGMENT[0], target / 8)), target / MAX_SEGMENTS)
    windows = [(k * seg, min(total, (k + 1) * seg)) for k in range(math.ceil(total / seg))]
    windows = [w for w in windows if w[1] - w[0] >= 0.2] or windows[:1]

    def score(window: tuple[float, float]) -> float:
        values = [s for t, s in samples if window[0] <= t < window[1]]
        return (max(values) + sum(values) / len(values)) if values else 0.0

    ranked = sorted(range(len(windows)), key=lambda i: (-score(windows[i]), i))
    chosen: dict[int, float] = {}
    total_taken = 0.0
    for i in ranked:
        if total_taken >= target - 1e-6:
            break
        a, b = windows[i]
        length = min(b - a, target - total_taken)  # the last one taken is shortened to fit
        chosen[i] = length
        total_taken += length
    return [(windows[i][0], chosen[i]) for i in sorted(chosen)]


def build_args(
    spec: TranscodeSpec,
    info: MediaInfo,
    src: Path,
    dst: Path,
    segments: Sequence[tuple[float, float]],
    watermarks: Sequence[PreparedMark] = (),
) -> list[str]:
    video = bool(spec.video_codec)
    audio = bool(spec.audio_codec and info.audio)
    args: list[str] = []
    graph: list[str] = []
    pads = ""
    for k, (start, length) in enumerate(segments):
        whole = start == 0 and length >= info.duration
        before = [] if whole else ["-ss", f"{start:.3f}", "-t", f"{length:.3f}"]
        args += ffmpeg.safe_input(str(src), info.demuxer, before=before)
        if video:
            graph.append(f"[{k}:v:0]trim=duration={length:.3f},setpts=PTS-STARTPTS[v{k}]")
            pads += f"[v{k}]"
        if audio:
            graph.append(f"[{k}:a:0]atrim=duration={length:.3f},asetpts=PTS-STARTPTS[a{k}]")
            pads += f"[a{k}]"
    outs = ("[vcat]" if video else "") + ("[acat]" if audio else "")
    graph.append(f"{pads}concat=n={len(segments)}:v={int(video)}:a={int(audio)}{outs}")
    if video:
        filters, frame = video_filters(spec, info.video[0])
        if watermarks:
            inputs, chains = overlay_graph(watermarks, frame, "vbase", len(segments), "vout")
            args += inputs
            graph += [f"[vcat]{','.join(filters) or 'null'}[vbase]", *chains]
        else:
            graph.append(f"[vcat]{','.join(filters) or 'null'}[vout]")
    args += ["-filter_complex", ";".join(graph), "-map_metadata", "-1"]
    if video:
        args += ["-map", "[vout]", *video_encoder_args(spec)]
    if audio:
        args += ["-map", "[acat]", *audio_encoder_args(spec)]
    return args + muxer_args(spec, dst, has_video=video)


@register
class VideoMontageProcessor:
    tag: ClassVar[str] = "VideoMontage"
    kind: ClassVar[str] = "media"
    time_limit: ClassVar[float] = 3 * 3600.0

    def validate(self, sub: Submission) -> None:
        self.parse(sub.operation, sub.bucket)
        parse_output(sub.operation)

    def parse(self, op: ET.Element | None, bucket: str) -> tuple[MontageSpec, list[Watermark]]:
        spec = parse_montage(op)
        return spec, parse_watermarks(op, bucket) if spec.transcode.video_codec else []

    def run(self, ctx: JobContext) -> Nodes:
        op = operation_element(ctx.job.operation)
        montage, marks = self.parse(op, ctx.job.bucket)
        spec = montage.transcode
        out = parse_output(op)
        with ctx.input_file() as src, ctx.workdir() as work, contextlib.ExitStack() as stack:
            info = probe_input(src, need_video=True)
            if not spec.video_codec and not (spec.audio_codec and info.audio):
                raise JobFailed("InvalidParameter", "The input has none of the streams the output asks for.")
            total = info.duration
            if total <= 0:
                raise JobFailed("InputFileInvalid", "The input's duration is unknown.")
            target = min(total, montage.duration or auto_duration(total))
            samples: list[tuple[float, float]] = []
            analysed = target < total - 0.05
            if analysed:
                stats = work / "scenes.txt"
                half = dataclasses.replace(ctx, on_progress=lambda p: ctx.progress(p * 2 // 5))
                run_ffmpeg(half, analysis_args(info, src, stats), total)
                samples = read_scores(stats)
            segments = choose_segments(samples, total, target)
            prepared = prepare(ctx, marks, stack, work)
            key = expand(out.object, input_key=ctx.job.input_object, job_id=ctx.job.job_id, ext=spec.ext)
            dst = work / f"out.{spec.ext}"
            first = 40 if analysed else 0
            rest = dataclasses.replace(
                ctx, on_progress=lambda p: ctx.progress(first + p * (100 - first) // 100)
            )
            run_ffmpeg(
                rest, build_args(spec, info, src, dst, segments, prepared), sum(s[1] for s in segments)
            )
            return store_media(ctx, spec, out, key, dst, work)
