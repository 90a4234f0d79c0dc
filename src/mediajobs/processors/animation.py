"""Animation: a part of a video as an animated GIF or WebP (spec/tags.md Animation).

One FFmpeg run per job. GIFs get their palette in the same filter graph (split, palettegen, paletteuse):
`gif` one palette for the whole animation, `hgif` a palette per frame (sharper colours, larger files).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from ..media import ffmpeg
from ..nodes import Nodes
from . import register
from .base import InvalidOperation, JobContext, JobFailed, Submission
from .common import MAX_INPUT_SECONDS, probe_input, run_ffmpeg
from .output import expand, media_result, parse_output
from .params import flag, num, operation_element, text
from .snapshot import EMPTY_MEDIAINFO

if TYPE_CHECKING:  # PyAV is loaded by workers only, never for validation
    from ..media.probe import MediaInfo

# Container.Format -> (Video.Codec it takes, file extension, muxer)
_FORMATS = {"gif": ("gif", "gif", "gif"), "hgif": ("gif", "gif", "gif"), "webp": ("webp", "webp", "webp")}

# Bounds: an animation has at most this many frames, and a single-palette GIF (which FFmpeg holds in
# memory, as BGRA, until the palette is known) at most this many pixels in all; past that, `gif` gets
# a palette per frame like `hgif`.
MAX_FRAMES = 10000
MAX_BUFFERED_PIXELS = 256 * 1024 * 1024


@dataclass(frozen=True)
class AnimationSpec:
    container: str
    width: int | None = None
    height: int | None = None
    fps: float | None = None  # playback rate; None keeps the source timing
    key_frames_only: bool = False
    frame_interval: float | None = None  # AnimateTimeIntervalOfFrame
    frames_per_second: float | None = None  # AnimateFramesPerSecond
    quality: float | None = None  # WebP only
    start: float = 0.0
    duration: float | None = None

    @property
    def ext(self) -> str:
        return _FORMATS[self.container][1]


def _even(node: ET.Element | None, name: str) -> int | None:
    value = num(node, name, 128, 4096)
    if value is None:
        return None
    if value != int(value) or int(value) % 2:
        raise InvalidOperation(f"Video.{name} must be an even integer.")
    return int(value)


def _quality(video: ET.Element | None) -> float | None:
    value = num(video, "Quality", 1, 100)
    if value == 100:
        raise InvalidOperation("Video.Quality must be in [1, 100), not 100.")
    return value


def parse_animation(op: ET.Element | None) -> AnimationSpec:
    node = op.find("Animation") if op is not None else None
    if node is None:
        raise InvalidOperation("Operation.Animation (or a TemplateId) is required.")
    container = text(node, "Container/Format").lower()
    if not container:
        raise InvalidOperation("Animation.Container.Format is required: gif, hgif or webp.")
    if container not in _FORMATS:
        raise InvalidOperation(f"Container.Format {container!r} is not one of gif, hgif, webp.")
    video = node.find("Video")
    codec = text(video, "Codec").lower()
    if not codec:
        raise InvalidOperation("Animation.Video.Codec is required: gif or webp.")
    if codec not in ("gif", "webp"):
        raise InvalidOperation(f"Video.Codec {codec!r} is not one of gif, webp.")
    if codec != _FORMATS[container][0]:
        raise InvalidOperation(f"Video.Codec {codec} does not match Container.Format {container}.")
    duration = num(node, "TimeInterval/Duration", 0, MAX_INPUT_SECONDS)
    return AnimationSpec(
        container=container,
        width=_even(video, "Width"),
        height=_even(video, "Height"),
        fps=num(video, "Fps", 0, 60, lo_open=True),
        key_frames_only=flag(video, "AnimateOnlyKeepKeyFrame"),
        frame_interval=num(video, "AnimateTimeIntervalOfFrame", 0, MAX_INPUT_SECONDS, lo_open=True),
        frames_per_second=num(video, "AnimateFramesPerSecond", 0, 240, lo_open=True),
        quality=_quality(video),
        start=num(node, "TimeInterval/Start", 0, MAX_INPUT_SECONDS) or 0.0,
        duration=duration or None,  # 0 or empty: to the end
    )


@dataclass(frozen=True)
class Plan:
    # "fps", "keyframes" or "all"; priority AnimateFramesPerSecond > KeepKeyFrame > TimeIntervalOfFrame
    sampling: str
    rate: float  # frames per second of input taken (an upper bound for key frames)
    span: float  # seconds of input converted
    frames: int  # expected frame count
    global_palette: bool


def make_plan(spec: AnimationSpec, info: MediaInfo) -> Plan:
    video = info.video[0]
    duration = video.duration if video.duration > 0 else info.duration
    if spec.start and spec.start >= duration:
        raise JobFailed(
            "InvalidParameter",
            f"TimeInterval.Start {spec.start:g} s is past the input's end ({duration:.3f} s).",
        )
    span = duration - spec.start
    if spec.duration:
        span = min(span, spec.duration)
    source_fps = float(video.avg_fps) or 30.0
    if spec.frames_per_second and spec.frames_per_second < source_fps:
        sampling, rate = "fps", spec.frames_per_second
    elif spec.frames_per_second:
        sampling, rate = "all", source_fps  # at or above the source rate: every frame
    elif spec.key_frames_only:
        sampling, rate = "keyframes", source_fps
    elif spec.frame_interval and 1 / spec.frame_interval < source_fps:
        sampling, rate = "fps", 1 / spec.frame_interval  # one frame per interval, shown that long
    else:
        sampling, rate = "all", source_fps
    frames = max(1, round(span * rate))
    if frames > MAX_FRAMES and sampling != "keyframes":
        raise JobFailed(
            "InvalidParameter",
            f"The animation would have about {frames} frames; at most {MAX_FRAMES} are allowed. "
            "Shorten TimeInterval.Duration or take fewer frames (AnimateFramesPerSecond).",
        )
    w, h = _size(spec, video.width, video.height, video.rotation)
    global_palette = spec.container == "gif" and frames * w * h <= MAX_BUFFERED_PIXELS
    return Plan(sampling, rate, span, frames, global_palette)


def _size(spec: AnimationSpec, src_w: int, src_h: int, rotation: float) -> tuple[int, int]:
    if round(abs(rotation)) % 180 == 90:
        src_w, src_h = src_h, src_w
    if spec.width and spec.height:
        return spec.width, spec.height
    if spec.width and src_w > 0:
        return spec.width, max(2, round(src_h * spec.width / src_w / 2) * 2)
    if spec.height and src_h > 0:
        return max(2, round(src_w * spec.height / src_h / 2) * 2), spec.height
    return max(src_w, 1), max(src_h, 1)


def build_args(spec: AnimationSpec, plan: Plan, info: MediaInfo, src: Path, dst: Path) -> list[str]:
    before: list[str] = []
    if plan.sampling == "keyframes":
        before += ["-skip_frame", "nokey"]
    if spec.start:
        before += ["-ss", f"{spec.start:.3f}"]
    if spec.duration:
        before += ["-t", f"{spec.duration:.3f}"]
    chain: list[str] = []
    if plan.sampling == "fps":
        chain.append(f"fps={plan.rate:.9g}")
    elif plan.sampling == "keyframes":
        chain.append("select='eq(key,1)'")
    if spec.width or spec.height:
        chain.append(f"scale={spec.width or -2}:{spec.height or -2}:flags=lanczos")
    chain.append("setsar=1")
    if spec.fps:
        # Play the frames taken at Fps. A regular stream is sped up (or slowed down) as a whole and then
        # resampled at Fps, which gives every frame, the last one too, a 1/Fps duration; key frames
        # (irregular) are simply numbered.
        chain.append("settb=AVTB")
        if plan.sampling == "keyframes":
            chain.append(f"setpts=N/({spec.fps:g}*TB)")
        else:
            chain += [f"setpts=PTS*{plan.rate:.9g}/{spec.fps:g}", f"fps={spec.fps:g}"]
    graph = "[0:v:0]" + ",".join(chain)
    if spec.container == "webp":
        graph += "[out]"
        quality = spec.quality if spec.quality is not None else 75
        encode = ["-c:v", "libwebp_anim", "-lossless", "0", "-quality", f"{quality:g}", "-loop", "0",
                  "-f", "webp"]  # fmt: skip
    else:
        if plan.global_palette:
            palette = "palettegen=stats_mode=diff[pal];[raw][pal]paletteuse=dither=bayer:bayer_scale=3"
        else:
            palette = "palettegen=stats_mode=single[pal];[raw][pal]paletteuse=new=1:dither=sierra2_4a"
        graph += f",split[stats][raw];[stats]{palette}[out]"
        encode = ["-c:v", "gif", "-loop", "0", "-f", "gif"]
    args = ffmpeg.safe_input(str(src), info.demuxer, before=before)
    args += ["-filter_complex", graph, "-map", "[out]", "-fps_mode", "passthrough",
             "-frames:v", str(MAX_FRAMES)]  # fmt: skip
    return ["-y", *args, *encode, str(dst)]


def _output_info(path: Path) -> Nodes:
    """The output's MediaInfo where the probe reads it; animated WebP is beyond PyAV's decoder: skeleton."""
    from ..media.probe import NotMedia, probe

    try:
        info = probe(path)
    except (NotMedia, OSError):
        return EMPTY_MEDIAINFO
    if not info.video or info.video[0].width <= 0:
        return EMPTY_MEDIAINFO
    return info.nodes()


@register
class AnimationProcessor:
    tag: ClassVar[str] = "Animation"
    kind: ClassVar[str] = "media"
    time_limit: ClassVar[float] = 3600.0

    def validate(self, sub: Submission) -> None:
        parse_animation(sub.operation)
        parse_output(sub.operation)

    def run(self, ctx: JobContext) -> Nodes:
        op = operation_element(ctx.job.operation)
        spec = parse_animation(op)
        out = parse_output(op)
        key = expand(out.object, input_key=ctx.job.input_object, job_id=ctx.job.job_id, ext=spec.ext)
        key = key.lstrip("/")
        with ctx.input_file() as src, ctx.workdir() as work:
            info = probe_input(src, need_video=True)
            plan = make_plan(spec, info)
            dst = work / f"out.{spec.ext}"
            run_ffmpeg(ctx, build_args(spec, plan, info, src, dst), plan.span)
            if not dst.exists() or dst.stat().st_size == 0:
                raise JobFailed("InvalidParameter", "No frame of the input fell in the requested part.")
            media_info = _output_info(dst)
            md5 = ctx.store_output(out.bucket, key, dst)
        return [("MediaInfo", media_info), ("MediaResult", media_result(out, [(key, md5)]))]
