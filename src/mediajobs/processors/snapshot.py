"""Snapshot: still frames and sprite sheets taken from a video (spec/tags.md Snapshot).

One FFmpeg run writes every frame and every sprite sheet: a filter graph selects the frames (one per
time bucket, key frames, or consecutive ones), stops after `Count` of them (`trim`, whose end also stops
the decoder), scales them, and splits them into the snapshot output and the sprite sheets (`tile`).
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from ..media import ffmpeg, mogr2
from ..nodes import Nodes, Value
from . import register
from .base import InvalidOperation, JobContext, JobFailed, Submission
from .common import MAX_INPUT_SECONDS, probe_input, run_ffmpeg
from .output import Output, check_output_key, expand, media_result, parse_output
from .params import choice, flag, integer, num, operation_element, text
from .picprocess import apply_rule, parse_process_rule

if TYPE_CHECKING:  # PyAV is loaded by workers only, never for validation
    from ..media.probe import MediaInfo

# Image format -> FFmpeg encoder options for one still picture.
_ENCODERS: dict[str, list[str]] = {
    "jpg": ["-c:v", "mjpeg", "-q:v", "2", "-pix_fmt", "yuvj420p"],
    "png": ["-c:v", "png"],
    "webp": ["-c:v", "libwebp", "-quality", "85"],
}
_FORMAT_NAMES = {"jpg": "jpg", "jpeg": "jpg", "png": "png", "webp": "webp"}

# Sprite sheets are built in memory by FFmpeg's tile filter: bound one sheet.
MAX_SHEET_SIDE = 16383  # libwebp's limit; JPEG's is 65535
MAX_SHEET_PIXELS = 64 * 1024 * 1024
# Past this many outputs, Md5Info is left empty (`<Md5Info/>`, jobs.md 11) to keep job details small.
MAX_MD5_LISTED = 1000
# FFmpeg blackframe defaults, used when IsCheckBlack is on and BlackLevel / PixelBlackThreshold are empty.
DEFAULT_BLACK_LEVEL = 98
DEFAULT_PIXEL_BLACK = 32

# The MediaInfo of an image output: the empty skeleton (spec/tags.md, preamble).
EMPTY_MEDIAINFO: Nodes = [
    ("Format", None),
    ("Stream", [("Audio", None), ("Subtitle", None), ("Video", None)]),
]

# FFmpeg's colour names (`ffmpeg -colors`); matched case-insensitively, as FFmpeg does.
_FFMPEG_COLORS = """AliceBlue AntiqueWhite Aqua Aquamarine Azure Beige Bisque Black BlanchedAlmond Blue BlueViolet
    Brown BurlyWood CadetBlue Chartreuse Chocolate Coral CornflowerBlue Cornsilk Crimson Cyan DarkBlue DarkCyan
    DarkGoldenRod DarkGray DarkGreen DarkKhaki DarkMagenta DarkOliveGreen Darkorange DarkOrchid DarkRed DarkSalmon
    DarkSeaGreen DarkSlateBlue DarkSlateGray DarkTurquoise DarkViolet DeepPink DeepSkyBlue DimGray DodgerBlue
    FireBrick FloralWhite ForestGreen Fuchsia Gainsboro GhostWhite Gold GoldenRod Gray Green GreenYellow HoneyDew
    HotPink IndianRed Indigo Ivory Khaki Lavender LavenderBlush LawnGreen LemonChiffon LightBlue LightCoral
    LightCyan LightGoldenRodYellow LightGreen LightGrey LightPink LightSalmon LightSeaGreen LightSkyBlue
    LightSlateGray LightSteelBlue LightYellow Lime LimeGreen Linen Magenta Maroon MediumAquaMarine MediumBlue
    MediumOrchid MediumPurple MediumSeaGreen MediumSlateBlue MediumSpringGreen MediumTurquoise MediumVioletRed
    MidnightBlue MintCream MistyRose Moccasin NavajoWhite Navy OldLace Olive OliveDrab Orange OrangeRed Orchid
    PaleGoldenRod PaleGreen PaleTurquoise PaleVioletRed PapayaWhip PeachPuff Peru Pink Plum PowderBlue Purple Red
    RosyBrown RoyalBlue SaddleBrown Salmon SandyBrown SeaGreen SeaShell Sienna Silver SkyBlue SlateBlue SlateGray
    Snow SpringGreen SteelBlue Tan Teal Thistle Tomato Turquoise Violet Wheat White WhiteSmoke Yellow
    YellowGreen"""
_COLOR_NAMES = frozenset(name.lower() for name in _FFMPEG_COLORS.split())
# A colour as FFmpeg's color syntax writes it: a name or hex RRGGBB[AA], then an optional @alpha.
# Nothing else passes, so the value can never break out of its place in the filter graph.
_COLOR = re.compile(r"(?P<base>#?[0-9A-Za-z]+)(?:@(?P<alpha>[0-9A-Fa-fxX.]+))?")
_HEX = re.compile(r"(?:0[xX]|#)?[0-9A-Fa-f]{6}(?:[0-9A-Fa-f]{2})?")
_NUMBER_VAR = re.compile(r"\$\{number\}", re.IGNORECASE)
_VAR = re.compile(r"\$\{[A-Za-z]+\}")


@dataclass(frozen=True)
class SpriteSpec:
    columns: int
    lines: int
    color: str
    cell_width: int | None = None
    cell_height: int | None = None
    padding: int = 0
    margin: int = 0
    scale_method: str = "DirectScale"

    @property
    def cells(self) -> int:
        return self.columns * self.lines

    def sheet_size(self, cell_w: int, cell_h: int) -> tuple[int, int]:
        return (
            self.columns * cell_w + (self.columns - 1) * self.padding + 2 * self.margin,
            self.lines * cell_h + (self.lines - 1) * self.padding + 2 * self.margin,
        )


@dataclass(frozen=True)
class SnapshotSpec:
    count: int
    mode: str = "Interval"
    start: float = 0.0
    interval: float | None = None
    width: int | None = None
    height: int | None = None
    check_count: bool = False
    check_black: bool = False
    black_level: int = DEFAULT_BLACK_LEVEL
    pixel_black: int = DEFAULT_PIXEL_BLACK
    out_mode: str = "OnlySnapshot"
    sprite: SpriteSpec | None = None
    format: str | None = None  # the Format node, when given
    ci_param: mogr2.Pipeline | None = None  # CIParam: an image rule run on each snapshot

    @property
    def snapshots(self) -> bool:
        return self.out_mode != "OnlySprite"

    @property
    def sprites(self) -> bool:
        return self.out_mode != "OnlySnapshot"


def _color(value: str) -> str:
    m = _COLOR.fullmatch(value)
    if m is None or not (m["base"].lower() in _COLOR_NAMES or _HEX.fullmatch(m["base"])):
        raise InvalidOperation(
            f"SpriteSnapshotConfig.Color {value!r} is not an FFmpeg colour (a name or #RRGGBB)."
        )
    alpha = m["alpha"]
    if alpha is not None:
        ok = bool(re.fullmatch(r"0[xX][0-9A-Fa-f]{1,2}", alpha))
        if not ok and re.fullmatch(r"\d*\.?\d+", alpha):
            ok = float(alpha) <= 1.0
        if not ok:
            raise InvalidOperation(
                f"SpriteSnapshotConfig.Color alpha {alpha!r} must be in [0, 1] or 0x00-0xff."
            )
    return value


def _parse_sprite(node: ET.Element | None) -> SpriteSpec:
    if node is None:
        raise InvalidOperation("SpriteSnapshotConfig is required when SnapshotOutMode writes sprites.")
    values: dict[str, int] = {}
    for name in ("Columns", "Lines"):
        value = integer(node, name, 1, 10000)
        if value is None:
            raise InvalidOperation(f"SpriteSnapshotConfig.{name} is required.")
        values[name] = value
    color = text(node, "Color")
    if not color:
        raise InvalidOperation("SpriteSnapshotConfig.Color is required.")
    spec = SpriteSpec(
        columns=values["Columns"],
        lines=values["Lines"],
        color=_color(color),
        cell_width=integer(node, "CellWidth", 8, 4096),
        cell_height=integer(node, "CellHeight", 8, 4096),
        padding=integer(node, "Padding", 0, 1024) or 0,
        margin=integer(node, "Margin", 0, 1024) or 0,
        scale_method=choice(
            node, "ScaleMethod", ("DirectScale", "MaxWHScaleAndPad", "MaxWHScale"), "DirectScale"
        ),
    )
    error = sheet_error(spec, spec.cell_width or 8, spec.cell_height or 8)
    if error:
        raise InvalidOperation(error)
    return spec


def sheet_error(spec: SpriteSpec, cell_w: int, cell_h: int) -> str | None:
    """Why a sheet of these cells is too large, or None."""
    w, h = spec.sheet_size(cell_w, cell_h)
    if w > MAX_SHEET_SIDE or h > MAX_SHEET_SIDE or w * h > MAX_SHEET_PIXELS:
        return (
            f"A sprite sheet of {spec.columns}x{spec.lines} cells of {cell_w}x{cell_h} would be {w}x{h} pixels; "
            f"at most {MAX_SHEET_SIDE} per side and {MAX_SHEET_PIXELS // (1024 * 1024)} Mpixels are allowed."
        )
    return None


def parse_snapshot(op: ET.Element | None) -> SnapshotSpec:
    node = op.find("Snapshot") if op is not None else None
    if node is None:
        raise InvalidOperation("Operation.Snapshot (or a TemplateId) is required.")
    ci_param = (
        parse_process_rule(text(node, "CIParam"), "Snapshot.CIParam") if text(node, "CIParam") else None
    )
    count = integer(node, "Count", 1, 10000)
    if count is None:
        raise InvalidOperation("Snapshot.Count is required (1 to 10000).")
    fmt = text(node, "Format").lower()
    if fmt and fmt not in _FORMAT_NAMES:
        raise InvalidOperation(f"Snapshot.Format {fmt!r} is not one of jpg, png, webp.")
    out_mode = choice(
        node, "SnapshotOutMode", ("OnlySnapshot", "OnlySprite", "SnapshotAndSprite"), "OnlySnapshot"
    )
    sprite = _parse_sprite(node.find("SpriteSnapshotConfig")) if out_mode != "OnlySnapshot" else None
    return SnapshotSpec(
        count=count,
        mode=choice(node, "Mode", ("Interval", "Average", "KeyFrame"), "Interval"),
        start=num(node, "Start", 0, MAX_INPUT_SECONDS) or 0.0,
        interval=num(node, "TimeInterval", 0, 3600, lo_open=True),
        width=integer(node, "Width", 128, 4096),
        height=integer(node, "Height", 128, 4096),
        check_count=flag(node, "IsCheckCount"),
        check_black=flag(node, "IsCheckBlack"),
        black_level=integer(node, "BlackLevel", 30, 100) or DEFAULT_BLACK_LEVEL,
        pixel_black=_or(integer(node, "PixelBlackThreshold", 0, 255), DEFAULT_PIXEL_BLACK),
        out_mode=out_mode,
        sprite=sprite,
        format=_FORMAT_NAMES[fmt] if fmt else None,
        ci_param=ci_param,
    )


def _rule_format(rule: mogr2.Pipeline | None, fmt: str) -> str:
    wanted = rule.output_format if rule is not None else None
    if wanted is None:
        return fmt
    return {"jpeg": "jpg", "yjpeg": "jpg", "heic": "heif", "apng": "png"}.get(wanted.value, wanted.value)


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


def image_format(explicit: str | None, key_pattern: str, fallback: str = "jpg") -> str:
    """The Format node, else the output key's extension when it names an image format, else `fallback`."""
    if explicit:
        return explicit
    name = _VAR.sub("", key_pattern.rsplit("/", 1)[-1])
    _, dot, ext = name.rpartition(".")
    return _FORMAT_NAMES.get(ext.lower(), fallback) if dot else fallback


def parse_sprite_output(op: ET.Element | None, out: Output) -> Output:
    """Output.SpriteObject (in Output.Bucket), checked like Output.Object."""
    key = text(op, "Output/SpriteObject").lstrip("/")
    if not key:
        raise InvalidOperation("Output.SpriteObject is required when SnapshotOutMode writes sprites.")
    check_output_key("Output.SpriteObject", key)
    return Output(out.region, out.bucket, key)


def object_prefix(pattern: str, *, input_key: str, job_id: str, ext: str) -> str:
    """The key text before the frame number: `Output.Object` before ${Number}, or what `expand` puts there."""
    m = _NUMBER_VAR.search(pattern)
    if m:
        return expand(pattern[: m.start()], input_key=input_key, job_id=job_id, ext=ext)
    whole = expand(pattern, input_key=input_key, job_id=job_id, ext=ext)
    base, dot, tail = whole.rpartition(".")
    return f"{base}-" if dot and "/" not in tail else f"{whole}-"


# ----------------------------------------------------------------------------------------------- run


@dataclass(frozen=True)
class Plan:
    """What one FFmpeg run does, with every size and time resolved against the probed input."""

    spec: SnapshotSpec
    mode: str  # Interval, Average or KeyFrame after the IsCheckCount fallback
    interval: float | None  # seconds per bucket (Interval with TimeInterval, Average); None: every frame
    black: bool
    size: tuple[int, int]
    cell: tuple[int, int] | None  # sprite cell
    fitted: tuple[int, int] | None  # the frame inside a cell (MaxWH* methods)
    span: float  # seconds of input the run reads, for progress


def _fit(width: int | None, height: int | None, src_w: int, src_h: int) -> tuple[int, int]:
    if width and height:
        return width, height
    if width:
        return width, max(1, round(src_h * width / src_w))
    if height:
        return max(1, round(src_w * height / src_h)), height
    return src_w, src_h


def make_plan(spec: SnapshotSpec, info: MediaInfo) -> Plan:
    video = info.video[0]
    duration = video.duration if video.duration > 0 else info.duration
    if duration <= 0:
        raise JobFailed("InvalidParameter", "The input's duration is unknown: no frame times can be chosen.")
    if spec.start >= duration:
        raise JobFailed(
            "InvalidParameter", f"Start {spec.start:g} s is past the input's end ({duration:.3f} s)."
        )
    left = duration - spec.start
    mode, interval = spec.mode, spec.interval
    if (
        mode == "Interval"
        and interval
        and spec.check_count
        and math.ceil(left / interval - 1e-9) < spec.count
    ):
        mode = "Average"  # IsCheckCount: too short for Count frames at TimeInterval
    if mode == "Average":
        interval = left / spec.count
    elif mode == "KeyFrame":
        interval = None
    src_w, src_h = video.width, video.height
    if round(abs(video.rotation)) % 180 == 90:
        src_w, src_h = src_h, src_w  # FFmpeg turns the picture upright before the filters
    if src_w <= 0 or src_h <= 0:
        raise JobFailed("InputFileInvalid", "The input's video stream has no picture size.")
    size = _fit(spec.width, spec.height, src_w, src_h)
    cell = fitted = None
    if spec.sprites:
        assert spec.sprite is not None
        sp = spec.sprite
        cell = _fit(sp.cell_width, sp.cell_height, *size)
        if sp.scale_method != "DirectScale":
            k = min(cell[0] / size[0], cell[1] / size[1])
            fitted = (max(1, round(size[0] * k)), max(1, round(size[1] * k)))
            if sp.scale_method == "MaxWHScale":
                cell = fitted  # cells take the fitted frame's size, no bands
        error = sheet_error(sp, *cell)
        if error:
            raise JobFailed("InvalidParameter", error)
    if interval is None:
        fps = float(video.avg_fps) or 25.0
        span = left if mode == "KeyFrame" else min(left, spec.count / fps)
    else:
        span = min(left, spec.count * interval)
    return Plan(spec, mode, interval, spec.check_black and spec.start == 0, size, cell, fitted, span)


def _bucket_select(interval: float) -> str:
    # The first frame of each `interval`-long bucket: never a burst after a gap, never the same bucket twice.
    t = f"{interval:.9f}"
    return f"select='isnan(prev_selected_t)+gt(floor((t+0.0005)/{t}),floor((prev_selected_t+0.0005)/{t}))'"


def _pattern(work: Path, stem: str, ext: str) -> str:
    """The image2 muxer's numbered file name; a '%' in the directory is escaped."""
    return str(work).replace("%", "%%") + f"/{stem}-%05d.{ext}"


def build_args(plan: Plan, info: MediaInfo, src: Path, work: Path, fmt: str, sprite_fmt: str) -> list[str]:
    spec = plan.spec
    before: list[str] = []
    if plan.mode == "KeyFrame":
        before += ["-skip_frame", "nokey"]  # the decoder skips everything else: fast
    if spec.start:
        before += ["-ss", f"{spec.start:.3f}"]
    chain: list[str] = []
    if plan.black:
        # Every frame gets its black-pixel share; frames with at least BlackLevel % black pixels are dropped.
        chain += [
            f"blackframe=amount=0:threshold={spec.pixel_black}",
            f"metadata=mode=select:key=lavfi.blackframe.pblack:value={spec.black_level - 0.5}:function=less",
        ]
        if plan.mode == "Interval":
            chain.append("setpts=PTS-STARTPTS")  # the intervals count from the first frame that is not black
    if plan.mode == "KeyFrame":
        chain.append("select='eq(key,1)'")
    elif plan.interval is not None:
        chain.append(_bucket_select(plan.interval))
    chain += [f"trim=end_frame={spec.count}", f"scale={plan.size[0]}:{plan.size[1]}", "setsar=1"]
    graph = "[0:v:0]" + ",".join(chain)
    outputs: list[str] = []
    if spec.snapshots and spec.sprites:
        graph += ",split=2[snap][cells]"
    else:
        graph += "[snap]" if spec.snapshots else "[cells]"
    if spec.snapshots:
        outputs += ["-map", "[snap]", "-frames:v", str(spec.count), "-fps_mode", "passthrough", *_ENCODERS[fmt],
                    "-f", "image2", "-start_number", "0", _pattern(work, "snap", fmt)]  # fmt: skip
    if spec.sprites:
        sp, cell = spec.sprite, plan.cell
        assert sp is not None and cell is not None
        if plan.fitted and plan.fitted != cell:
            fw, fh = plan.fitted
            cells = f"scale={fw}:{fh},pad={cell[0]}:{cell[1]}:{(cell[0] - fw) // 2}:{(cell[1] - fh) // 2}:color={sp.color}"
        else:
            cells = f"scale={cell[0]}:{cell[1]}"
        tile = f"tile=layout={sp.columns}x{sp.lines}:margin={sp.margin}:padding={sp.padding}:color={sp.color}"
        graph += f";[cells]{cells},setsar=1,{tile}[sheet]"
        outputs += ["-map", "[sheet]", "-fps_mode", "passthrough", *_ENCODERS[sprite_fmt],
                    "-f", "image2", "-start_number", "0", _pattern(work, "sprite", sprite_fmt)]  # fmt: skip
    return [
        "-y",
        *ffmpeg.safe_input(str(src), info.demuxer, before=before),
        "-filter_complex",
        graph,
        *outputs,
    ]


def _numbered(work: Path, stem: str) -> list[Path]:
    return sorted(work.glob(f"{stem}-*.*"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))


def output_file_nodes(out: Output, stored: list[tuple[str, str]], prefix: str) -> list[tuple[str, Value]]:
    if prefix and not all(k.startswith(prefix) for k, _ in stored):
        prefix = ""
    children = media_result(out, stored, prefix=prefix)[0][1]
    nodes = list(children) if isinstance(children, (list, tuple)) else []
    if len(stored) > MAX_MD5_LISTED:
        nodes = [n for n in nodes if n[0] != "Md5Info"] + [("Md5Info", None)]
    return nodes


@register
class SnapshotProcessor:
    tag: ClassVar[str] = "Snapshot"
    kind: ClassVar[str] = "media"
    time_limit: ClassVar[float] = 3600.0

    def validate(self, sub: Submission) -> None:
        spec = parse_snapshot(sub.operation)
        out = parse_output(sub.operation)
        if spec.sprites:
            sprite = parse_sprite_output(sub.operation, out)
            if spec.snapshots and sprite.object == out.object:
                raise InvalidOperation("Output.SpriteObject must differ from Output.Object.")

    def run(self, ctx: JobContext) -> Nodes:
        op = operation_element(ctx.job.operation)
        spec = parse_snapshot(op)
        out = parse_output(op)
        sprite_out = parse_sprite_output(op, out) if spec.sprites else None
        fmt = image_format(spec.format, out.object)
        # CIParam may change the frames' format: FFmpeg writes `fmt`, the rule encodes `out_fmt`.
        out_fmt = _rule_format(spec.ci_param, fmt)
        sprite_fmt = image_format(None, sprite_out.object, fmt) if sprite_out else fmt
        names = {"input_key": ctx.job.input_object, "job_id": ctx.job.job_id}
        with ctx.input_file() as src, ctx.workdir() as work:
            info = probe_input(src, need_video=True)
            plan = make_plan(spec, info)
            run_ffmpeg(ctx, build_args(plan, info, src, work, fmt, sprite_fmt), plan.span)
            first = _numbered(work, "snap" if spec.snapshots else "sprite")
            if not first and plan.black:
                # Nothing but black frames: take the frames as they are rather than none.
                for leftover in work.iterdir():
                    leftover.unlink()
                plan = replace(plan, black=False)
                run_ffmpeg(ctx, build_args(plan, info, src, work, fmt, sprite_fmt), plan.span)
                first = _numbered(work, "snap" if spec.snapshots else "sprite")
            if not first:
                where = "key frame" if plan.mode == "KeyFrame" else "frame"
                raise JobFailed(
                    "InvalidParameter", f"The input has no {where} at or after Start {spec.start:g} s."
                )
            stored: list[tuple[str, str]] = []
            for i, path in enumerate(_numbered(work, "snap")):
                ctx.check()
                if spec.ci_param is not None:
                    path = apply_rule(ctx, path, spec.ci_param)
                key = expand(out.object, ext=out_fmt, number=i, **names).lstrip("/")
                stored.append((key, ctx.store_output(out.bucket, key, path)))
            sheets: list[tuple[str, str]] = []
            if sprite_out is not None:
                for i, path in enumerate(_numbered(work, "sprite")):
                    ctx.check()
                    key = expand(sprite_out.object, ext=sprite_fmt, number=i, **names).lstrip("/")
                    sheets.append((key, ctx.store_output(sprite_out.bucket, key, path)))
        prefix = object_prefix(out.object, ext=out_fmt, **names).lstrip("/") if stored else ""
        file_nodes = output_file_nodes(out, stored, prefix)
        if sprite_out is not None:
            sprite_prefix = object_prefix(sprite_out.object, ext=sprite_fmt, **names).lstrip("/")
            file_nodes.append(("SpriteOutputFile", output_file_nodes(sprite_out, sheets, sprite_prefix)))
        return [("MediaInfo", EMPTY_MEDIAINFO), ("MediaResult", [("OutputFile", file_nodes)])]
