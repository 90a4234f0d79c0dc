"""SmartCover: the most representative frames of a video as cover images (spec/tags.md SmartCover).

One FFmpeg run does the analysis and writes the candidates: the video is thinned to at most
MAX_ANALYSED frames, FFmpeg's `thumbnail` filter keeps the most representative frame of each
batch (up to MAX_CANDIDATES batches spread over the video), and each candidate gets a scene
score (`select`'s difference from the previous candidate) and an information score
(`entropy`, low for black or flat frames), printed by `metadata`. The `Count` best candidates
are then taken one per stretch of the video, in time order; with `DeleteDuplicates=true` a
candidate that looks like one already taken (a 16x16 grey thumbnail closer than
DUPLICATE_DISTANCE) is skipped, so fewer than `Count` covers may come out of a static video.
"""

from __future__ import annotations

import dataclasses
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..media import ffmpeg
from ..media.ffmpeg import escape_value
from ..nodes import Nodes, Value
from . import register
from .base import InvalidOperation, JobContext, JobFailed, Submission
from .common import probe_input, run_ffmpeg
from .output import expand, media_result, parse_output
from .params import choice, flag, integer, operation_element

MAX_COUNT = 10
MAX_ANALYSED = 2000  # frames looked at, at most
MAX_CANDIDATES = 30
DUPLICATE_DISTANCE = 1.5  # mean absolute difference of 16x16 grey thumbnails, of 255

# Format -> (encoder options, extension, demuxer to read a candidate back)
_FORMATS: dict[str, tuple[list[str], str, str]] = {
    "jpg": (["-c:v", "mjpeg", "-pix_fmt", "yuvj420p", "-q:v", "2"], "jpg", "jpeg_pipe"),
    "png": (["-c:v", "png", "-pix_fmt", "rgb24"], "png", "png_pipe"),
    "webp": (["-c:v", "libwebp", "-pix_fmt", "yuv420p", "-quality", "90"], "webp", "webp_pipe"),
}


@dataclass(frozen=True)
class CoverSpec:
    fmt: str = "jpg"
    width: int | None = None
    height: int | None = None
    count: int = 3
    delete_duplicates: bool = False


@dataclass(frozen=True)
class Candidate:
    index: int  # its file number
    time: float
    score: float


def parse_smartcover(op: ET.Element | None) -> CoverSpec:
    node = op.find("SmartCover") if op is not None else None
    try:
        fmt = choice(node, "Format", tuple(_FORMATS), "jpg")
        width = integer(node, "Width", 128, 4096)
        height = integer(node, "Height", 128, 4096)
        count = integer(node, "Count", 1, MAX_COUNT)
        dedupe = flag(node, "DeleteDuplicates")
    except InvalidOperation as exc:
        raise InvalidOperation(f"SmartCover.{exc}") from None
    return CoverSpec(fmt, width, height, count or 3, dedupe)


def _fit(spec: CoverSpec, src_w: int, src_h: int) -> tuple[int, int] | None:
    if spec.width is None and spec.height is None:
        return None
    if spec.width is not None and spec.height is not None:
        return spec.width, spec.height
    if spec.width is not None:
        return spec.width, max(1, round(src_h * spec.width / src_w))
    assert spec.height is not None
    return max(1, round(src_w * spec.height / src_h)), spec.height


def object_prefix(pattern: str, *, input_key: str, job_id: str, ext: str) -> str:
    """ObjectPrefix of numbered outputs: what the keys of files 0 and 1 have in common."""
    keys = [expand(pattern, input_key=input_key, job_id=job_id, ext=ext, number=n) for n in (0, 1)]
    first, second = keys
    same = next((i for i, (x, y) in enumerate(zip(first, second, strict=False)) if x != y), len(first))
    return first[:same]


def build_args(spec: CoverSpec, info: object, src: Path, work: Path) -> tuple[list[str], Path]:
    """The one FFmpeg run: candidates `cand-%03d.<ext>` in `work` and their scores in a text file."""
    from ..media.probe import MediaInfo

    assert isinstance(info, MediaInfo)
    v = info.video[0]
    duration = max(info.duration, 0.04)
    src_fps = float(v.avg_fps) if v.avg_fps and float(v.avg_fps) > 0 else 25.0
    fps = min(src_fps, max(0.01, MAX_ANALYSED / duration))
    frames = max(1, math.ceil(duration * fps))
    candidates = min(MAX_CANDIDATES, max(3 * spec.count, 12))
    batch = frames // candidates
    chain = [f"fps={fps:.6f}"]
    if batch >= 2:
        chain.append(f"thumbnail=n={batch}:log=quiet")
    w, h = (v.height, v.width) if round(abs(v.rotation)) % 180 == 90 else (v.width, v.height)
    size = _fit(spec, w, h)
    if size is not None:
        chain.append(f"scale={size[0]}:{size[1]}")
    stats = work / "scores.txt"
    chain += [
        f"select={escape_value('gte(scene,0)')}",
        "entropy",
        f"metadata=print:file={escape_value(str(stats))}",
    ]
    options, ext, _ = _FORMATS[spec.fmt]
    args = ffmpeg.safe_input(str(src), info.demuxer)
    args += ["-map", "0:v:0", "-vf", ",".join(chain), "-fps_mode", "passthrough", *options]
    args += ["-f", "image2", "-start_number", "0", "-y", str(work / f"cand-%03d.{ext}")]
    return args, stats


def read_scores(stats: Path) -> list[Candidate]:
    """Candidates from `metadata=print` output: one `frame:N pts:P pts_time:T` line then key=value lines."""
    found: list[Candidate] = []
    time = scene = entropy = 0.0
    index = -1

    def close() -> None:
        if index >= 0:
            found.append(Candidate(index, time, entropy + 0.3 * min(1.0, scene)))

    for line in stats.read_text(errors="replace").splitlines():
        if line.startswith("frame:"):
            close()
            fields = dict(f.split(":", 1) for f in line.split() if ":" in f)
            index = len(found)
            time = _float(fields.get("pts_time"))
            scene = entropy = 0.0
        elif line.startswith("lavfi.scene_score="):
            scene = _float(line.split("=", 1)[1])
        elif line.startswith("lavfi.entropy.normalized_entropy.normal.Y="):
            entropy = _float(line.split("=", 1)[1])
    close()
    return found


def _float(value: str | None) -> float:
    try:
        result = float(value or "0")
    except ValueError:
        return 0.0
    return result if math.isfinite(result) else 0.0


def signature(path: Path, demuxer: str) -> bytes:
    """A 16x16 grey thumbnail of one of our own candidate images."""
    import av

    with av.open(str(path), format=demuxer) as container:
        frame = next(container.decode(video=0))
        small = frame.reformat(width=16, height=16, format="gray")
        plane = small.planes[0]
        data = bytes(plane)
        return b"".join(data[r * plane.line_size : r * plane.line_size + 16] for r in range(16))


def _distance(a: bytes, b: bytes) -> float:
    return sum(abs(x - y) for x, y in zip(a, b, strict=True)) / max(1, len(a))


def choose(cands: list[Candidate], count: int, signatures: dict[int, bytes] | None) -> list[Candidate]:
    """The best candidate of each of `count` stretches, then the best of the rest; time order.

    With `signatures` (DeleteDuplicates) no two chosen candidates look alike.
    """
    chosen: list[Candidate] = []

    def fresh(c: Candidate) -> bool:
        if signatures is None:
            return True
        return all(_distance(signatures[c.index], signatures[o.index]) >= DUPLICATE_DISTANCE for o in chosen)

    n = len(cands)
    for g in range(min(count, n)):
        group = cands[g * n // count : (g + 1) * n // count]
        for c in sorted(group, key=lambda c: -c.score):
            if fresh(c):
                chosen.append(c)
                break
    for c in sorted(cands, key=lambda c: -c.score):
        if len(chosen) >= count:
            break
        if c not in chosen and fresh(c):
            chosen.append(c)
    return sorted(chosen, key=lambda c: c.index)


@register
class SmartCoverProcessor:
    tag: ClassVar[str] = "SmartCover"
    kind: ClassVar[str] = "media"
    time_limit: ClassVar[float] = 3600.0

    def validate(self, sub: Submission) -> None:
        parse_smartcover(sub.operation)
        parse_output(sub.operation)

    def run(self, ctx: JobContext) -> Nodes:
        op = operation_element(ctx.job.operation)
        spec = parse_smartcover(op)
        out = parse_output(op)
        _, ext, demuxer = _FORMATS[spec.fmt]
        names = {"input_key": ctx.job.input_object, "job_id": ctx.job.job_id, "ext": ext}
        with ctx.input_file() as src, ctx.workdir() as work:
            info = probe_input(src, need_video=True)
            args, stats = build_args(spec, info, src, work)
            run_ffmpeg(
                dataclasses.replace(ctx, on_progress=lambda p: ctx.progress(p * 9 // 10)), args, info.duration
            )
            cands = [c for c in read_scores(stats) if (work / f"cand-{c.index:03d}.{ext}").is_file()]
            if not cands:
                raise JobFailed("InputFileInvalid", "No frame of the input could be decoded.")
            sigs = None
            if spec.delete_duplicates:
                sigs = {c.index: signature(work / f"cand-{c.index:03d}.{ext}", demuxer) for c in cands}
            stored: list[tuple[str, str]] = []
            for number, c in enumerate(choose(cands, spec.count, sigs)):
                ctx.check()
                key = expand(out.object, number=number, **names).lstrip("/")
                stored.append((key, ctx.store_output(out.bucket, key, work / f"cand-{c.index:03d}.{ext}")))
        prefix = object_prefix(out.object, **names).lstrip("/")
        nodes: list[tuple[str, Value]] = [("MediaResult", media_result(out, stored, prefix=prefix))]
        return nodes
