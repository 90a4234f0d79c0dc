"""Operation.Watermark (spec/tags.md Watermark): text and image watermarks as an FFmpeg filter graph.

`parse_watermarks` reads up to three inline `Watermark` nodes at submission. At run time
`prepare` opens each image (an object of the job's bucket, probed and opened with the probed
demuxer) and writes each text to a file in the job's work directory; `overlay_graph` then turns
the prepared marks into extra FFmpeg inputs plus filter-graph chains that take one video label
to another: `overlay` for images, `drawtext` (libfreetype, a font file found on this machine,
the text read from a file with expansion off) for text.

Not implemented, refused with a message that says so: `Image.Background` (a background image
under the video) and `SlideConfig.SlideMode=ScrollFromLeft`. `WatermarkTemplateId` is merged into
`Watermark` nodes by the API's template step; without that step (no `jobs.templates` module) it
is refused. `LocMode` takes `Absolute` or `Relativity` (`Proportion` is read as `Relativity`);
`Transparency` is the opacity in percent (100: opaque).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import subprocess
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..media import ffmpeg
from ..media.ffmpeg import escape_value
from .base import InvalidOperation, JobContext, JobFailed
from .common import MAX_INPUT_SECONDS, probe_input
from .params import choice, flag, integer, num, text

MAX_WATERMARKS = 3
MAX_TEXT_CHARS = 64
POSITIONS = ("TopLeft", "Top", "TopRight", "Left", "Center", "Right", "BottomLeft", "Bottom", "BottomRight")
_LEFT = ("TopLeft", "Left", "BottomLeft")
_RIGHT = ("TopRight", "Right", "BottomRight")
_TOP = ("TopLeft", "Top", "TopRight")
_BOTTOM = ("BottomLeft", "Bottom", "BottomRight")
_COLOR = re.compile(r"^(?:0x|#)([0-9a-fA-F]{6})$")
_FONT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,63}$")
_COS_BUCKET_HOST = re.compile(r"^[^.]+\.[a-z-]+\.[a-z0-9-]+\.(?:myqcloud\.com|tencentcos\.cn)$")
_CJK = re.compile(r"[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")


@dataclass(frozen=True)
class TextMark:
    text: str
    font_size: int
    color: str  # RRGGBB
    font_type: str
    opacity: float  # 0.01 .. 1


@dataclass(frozen=True)
class ImageMark:
    key: str  # an object of the job's bucket
    mode: str  # Original, Proportion, Fixed
    width: float | None
    height: float | None
    opacity: float


@dataclass(frozen=True)
class Watermark:
    pos: str
    relative: bool  # LocMode Relativity: Dx/Dy in % of the video
    dx: float
    dy: float
    start: float
    end: float | None
    text: TextMark | None = None
    image: ImageMark | None = None


@dataclass(frozen=True)
class PreparedMark:
    mark: Watermark
    source: Path | None = None  # the image's local file
    demuxer: str = ""
    size: tuple[int, int] = (0, 0)  # the image's own size
    font: Path | None = None
    text_file: Path | None = None


# ---- parsing ---------------------------------------------------------------------------------


def templates_supported() -> bool:
    """Whether WatermarkTemplateId is resolved by the API (a templates helper exists)."""
    from importlib.util import find_spec

    return find_spec("mediajobs.jobs.templates") is not None


def parse_watermarks(op: ET.Element | None, bucket: str) -> list[Watermark]:
    """The Operation's inline Watermark nodes; InvalidOperation names the node that is wrong."""
    if op is None:
        return []
    template_ids = [t for t in (e.text or "" for e in op.findall("WatermarkTemplateId")) if t.strip()]
    if len(template_ids) > MAX_WATERMARKS:
        raise InvalidOperation(f"At most {MAX_WATERMARKS} WatermarkTemplateId are allowed.")
    if template_ids and not templates_supported():
        raise InvalidOperation(
            "WatermarkTemplateId: watermark templates are not supported yet; give the Watermark node inline."
        )
    nodes = op.findall("Watermark")
    if len(nodes) > MAX_WATERMARKS:
        raise InvalidOperation(f"At most {MAX_WATERMARKS} Watermark nodes are allowed, not {len(nodes)}.")
    return [_parse_one(node, bucket, i) for i, node in enumerate(nodes)]


def _parse_one(node: ET.Element, bucket: str, index: int) -> Watermark:
    try:
        return _parse_node(node, bucket)
    except InvalidOperation as exc:
        where = f"Watermark[{index}]" if index else "Watermark"
        raise InvalidOperation(f"{where}.{exc}") from None


def _required(node: ET.Element | None, path: str) -> str:
    value = text(node, path)
    if not value:
        raise InvalidOperation(f"{path} is required.")
    return value


def _parse_node(node: ET.Element, bucket: str) -> Watermark:
    kind = choice(node, "Type", ("Text", "Image"), "")
    if not kind:
        raise InvalidOperation("Type is required: Text or Image.")
    pos = choice(node, "Pos", POSITIONS, "")
    if not pos:
        raise InvalidOperation(f"Pos is required: one of {', '.join(POSITIONS)}.")
    loc = choice(node, "LocMode", ("Absolute", "Relativity", "Proportion"), "")
    if not loc:
        raise InvalidOperation("LocMode is required: Absolute or Relativity.")
    relative = loc != "Absolute"
    background = flag(node, "Image/Background")
    if background:
        raise InvalidOperation(
            "Image.Background (an image under the video) is not supported by this server yet."
        )
    hi = 100.0 if relative else 4096.0
    for axis in ("Dx", "Dy"):
        value = text(node, axis)
        if value.startswith("-"):
            raise InvalidOperation(f"{axis} may be negative only for a background image (not supported).")
    dx = num(node, "Dx", 0, hi) or 0.0
    dy = num(node, "Dy", 0, hi) or 0.0
    start = num(node, "StartTime", 0, MAX_INPUT_SECONDS) or 0.0
    end = num(node, "EndTime", 0, MAX_INPUT_SECONDS)
    if end is not None and end <= start:
        raise InvalidOperation("EndTime must be after StartTime.")
    slide = choice(node, "SlideConfig/SlideMode", ("Default", "ScrollFromLeft"), "Default")
    if slide != "Default":
        raise InvalidOperation("SlideConfig.SlideMode ScrollFromLeft is not supported by this server yet.")
    num(node, "SlideConfig/XSlideSpeed", 0, 10)
    num(node, "SlideConfig/YSlideSpeed", 0, 10)
    child = node.find(kind)
    if child is None:
        raise InvalidOperation(f"{kind} is required for Type {kind}.")
    try:
        if kind == "Image":
            return Watermark(pos, relative, dx, dy, start, end, image=_parse_image(child, bucket))
        mark = _parse_text(child)
    except InvalidOperation as exc:
        raise InvalidOperation(f"{kind}.{exc}") from None
    if not drawtext_available():
        raise InvalidOperation(
            "Type Text: text watermarks need FFmpeg's drawtext filter, which this server's FFmpeg lacks."
        )
    if find_font(mark.font_type, mark.text) is None:
        raise InvalidOperation(
            "Text: no installed font can draw this text (install e.g. fonts-dejavu or fonts-noto-cjk)."
        )
    return Watermark(pos, relative, dx, dy, start, end, text=mark)


def _parse_image(node: ET.Element, bucket: str) -> ImageMark:
    key = image_key(_required(node, "Url"), bucket)
    mode = choice(node, "Mode", ("Original", "Proportion", "Fixed"), "")
    if not mode:
        raise InvalidOperation("Mode is required: Original, Proportion or Fixed.")
    width = height = None
    if mode == "Proportion":
        width, height = num(node, "Width", 1, 100), num(node, "Height", 1, 100)
    elif mode == "Fixed":
        width, height = num(node, "Width", 8, 4096), num(node, "Height", 8, 4096)
    if mode != "Original" and width is None and height is None:
        raise InvalidOperation(f"Width or Height is required with Mode {mode}.")
    opacity = num(node, "Transparency", 1, 100)
    if opacity is None:
        raise InvalidOperation("Transparency is required: [1, 100] %.")
    return ImageMark(key, mode, width, height, opacity / 100)


def image_key(url: str, bucket: str) -> str:
    """The object key a watermark URL names; only objects of the job's own bucket are accepted.

    Accepted: a COS-style host `<bucket>.cos.<region>.myqcloud.com/<key>` (or any host whose first
    label is the bucket), or a path-style URL `<scheme>://<host>/<bucket>/<key>`. The object is
    read from this server's storage, never fetched from the host.
    """
    refusal = InvalidOperation(f"Url must be an http(s) URL of an object in the bucket {bucket}.")
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        raise refusal from None
    host = (parts.hostname or "").lower()
    if parts.scheme.lower() not in ("http", "https") or not host:
        raise refusal
    path = urllib.parse.unquote(parts.path)
    if host.split(".", 1)[0] == bucket.lower():
        key = path[1:]
    else:
        first, _, rest = path[1:].partition("/")
        if first != bucket or _COS_BUCKET_HOST.match(host):  # not on another bucket's host
            raise refusal
        key = rest
    if not key or len(key) > 850 or "\x00" in key:
        raise refusal
    return key


def _parse_text(node: ET.Element) -> TextMark:
    words = (node.findtext("Text") or "").strip("\r\n")
    if not words.strip():
        raise InvalidOperation("Text is required.")
    if len(words) > MAX_TEXT_CHARS:
        raise InvalidOperation(f"Text must be at most {MAX_TEXT_CHARS} characters.")
    size = integer(node, "FontSize", 5, 100)
    if size is None:
        raise InvalidOperation("FontSize is required: [5, 100] px.")
    color = _COLOR.match(_required(node, "FontColor"))
    if color is None:
        raise InvalidOperation("FontColor must be 0xRRGGBB.")
    font_type = _required(node, "FontType")
    if not _FONT_NAME.match(font_type):
        raise InvalidOperation("FontType must be a font file name such as simfang.ttf.")
    opacity = num(node, "Transparency", 1, 100)
    if opacity is None:
        raise InvalidOperation("Transparency is required: [1, 100] %.")
    return TextMark(words, size, color[1].upper(), font_type, opacity / 100)


# ---- FFmpeg and fonts on this machine ----------------------------------------------------------


@functools.cache
def drawtext_available() -> bool:
    """Whether the FFmpeg in use was built with drawtext (libfreetype); asked once."""
    try:
        proc = subprocess.run(
            [ffmpeg.ffmpeg_exe(), "-hide_banner", "-filters"], capture_output=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return re.search(rb"^\s*\S+\s+drawtext\s", proc.stdout, re.MULTILINE) is not None


_FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.local/share/fonts", "~/.fonts")
_MAX_FONT_FILES = 20000
# Fonts Tencent's FontType names that have CJK glyphs, and fonts here that can stand in for them.
_CJK_NAMES = ("sim", "msyh", "msjh", "st", "fang", "kai", "hei", "song", "wqy", "noto", "source")
_CJK_FONTS = ("notosanscjk-regular.ttc", "notosanscjksc-regular.otf", "notoserifcjk-regular.ttc",
              "wqy-microhei.ttc", "wqy-zenhei.ttc", "droidsansfallbackfull.ttf", "sourcehansanssc-regular.otf")  # fmt: skip
_SANS = ("dejavusans.ttf", "liberationsans-regular.ttf", "freesans.ttf", "notosans-regular.ttf")
_SERIF = ("dejavuserif.ttf", "liberationserif-regular.ttf", "freeserif.ttf", "notoserif-regular.ttf")
_MONO = ("dejavusansmono.ttf", "liberationmono-regular.ttf", "freemono.ttf", "notosansmono-regular.ttf")


@functools.cache
def _font_index() -> dict[str, Path]:
    """Lower-cased file name -> path of every TrueType/OpenType font under the usual folders."""
    found: dict[str, Path] = {}
    seen = 0
    for base in _FONT_DIRS:
        root = Path(os.path.expanduser(base))
        if not root.is_dir():
            continue
        for dirpath, _dirs, files in os.walk(root):
            for name in sorted(files):
                seen += 1
                if name.lower().endswith((".ttf", ".otf", ".ttc")):
                    found.setdefault(name.lower(), Path(dirpath) / name)
            if seen > _MAX_FONT_FILES:
                return found
    return found


def find_font(font_type: str, words: str = "") -> Path | None:
    """The installed font file for a FontType: the same file name, else a stand-in of its kind."""
    index = _font_index()
    name = font_type.lower()
    if name in index:
        return index[name]
    stem = name.rsplit(".", 1)[0]
    wants_cjk = _CJK.search(words) is not None
    if wants_cjk or stem.startswith(_CJK_NAMES):
        for candidate in _CJK_FONTS:
            if candidate in index:
                return index[candidate]
        if wants_cjk:
            return None  # a Latin font would draw empty boxes
    if any(k in stem for k in ("mono", "courier", "consola")):
        order = _MONO + _SANS
    elif any(k in stem for k in ("serif", "times", "georgia", "song", "sun")) and "sans" not in stem:
        order = _SERIF + _SANS
    else:
        order = _SANS + _SERIF
    for candidate in order:
        if candidate in index:
            return index[candidate]
    return next(iter(sorted(index.values())), None)


# ---- run time ----------------------------------------------------------------------------------


def prepare(
    ctx: JobContext, marks: Sequence[Watermark], stack: contextlib.ExitStack[bool | None], work: Path
) -> list[PreparedMark]:
    """Open every image (kept open by `stack`) and write every text into `work`."""
    prepared: list[PreparedMark] = []
    for i, mark in enumerate(marks):
        ctx.check()
        if mark.image is not None:
            path = stack.enter_context(ctx.input_file(mark.image.key))
            info = probe_input(path, need_video=True)
            v = info.video[0]
            prepared.append(PreparedMark(mark, path, info.demuxer, (v.width, v.height)))
        else:
            assert mark.text is not None
            font = find_font(mark.text.font_type, mark.text.text)
            if font is None or not drawtext_available():
                raise JobFailed("InvalidParameter", "This server cannot draw text watermarks now.")
            text_file = work / f"watermark-{i}.txt"
            text_file.write_text(mark.text.text, encoding="utf-8")
            prepared.append(PreparedMark(mark, font=font, text_file=text_file))
    return prepared


def _position(mark: Watermark, frame: tuple[int, int], names: tuple[str, str, str, str]) -> tuple[str, str]:
    """x and y expressions: `names` are the frame's and the mark's width and height variables."""
    fw, fh, mw, mh = names
    dx = round(frame[0] * mark.dx / 100) if mark.relative else round(mark.dx)
    dy = round(frame[1] * mark.dy / 100) if mark.relative else round(mark.dy)
    if mark.pos in _LEFT:
        x = str(dx)
    elif mark.pos in _RIGHT:
        x = f"{fw}-{mw}-{dx}"
    else:
        x = f"({fw}-{mw})/2"
    if mark.pos in _TOP:
        y = str(dy)
    elif mark.pos in _BOTTOM:
        y = f"{fh}-{mh}-{dy}"
    else:
        y = f"({fh}-{mh})/2"
    return x, y


def _image_size(image: ImageMark, own: tuple[int, int], frame: tuple[int, int]) -> tuple[int, int] | None:
    if image.mode == "Original":
        return None
    w, h = image.width, image.height
    if image.mode == "Proportion":
        tw = round(frame[0] * w / 100) if w is not None else None
        th = round(frame[1] * h / 100) if h is not None else None
    else:
        tw = round(w) if w is not None else None
        th = round(h) if h is not None else None
    if tw is None:
        assert th is not None
        tw = round(own[0] * th / own[1]) if own[1] else th
    if th is None:
        th = round(own[1] * tw / own[0]) if own[0] else tw
    return max(1, min(4096, tw)), max(1, min(4096, th))


def _enable(mark: Watermark) -> str:
    if mark.end is not None:
        return f":enable={escape_value(f'between(t,{mark.start:g},{mark.end:g})')}"
    if mark.start:
        return f":enable={escape_value(f'gte(t,{mark.start:g})')}"
    return ""


def overlay_graph(
    marks: Sequence[PreparedMark], frame: tuple[int, int], src: str, first_input: int, out: str
) -> tuple[list[str], list[str]]:
    """Extra FFmpeg inputs (images, opened safely) and filter chains taking `[src]` to `[out]`.

    `frame` is the size of the video at `src`; image inputs get the indices `first_input`, ... in order.
    """
    inputs: list[str] = []
    chains: list[str] = []
    images = 0
    current = src
    for i, p in enumerate(marks):
        label = out if i == len(marks) - 1 else f"{out}_{i}"
        mark = p.mark
        if mark.image is not None:
            assert p.source is not None
            index = first_input + images
            images += 1
            inputs += ffmpeg.safe_input(str(p.source), p.demuxer)
            steps = []
            size = _image_size(mark.image, p.size, frame)
            if size is not None:
                steps.append(f"scale={size[0]}:{size[1]}")
            steps.append("format=rgba")
            if mark.image.opacity < 1:
                steps.append(f"colorchannelmixer=aa={mark.image.opacity:.2f}")
            chains.append(f"[{index}:v:0]{','.join(steps)}[{out}_img{i}]")
            x, y = _position(mark, frame, ("W", "H", "w", "h"))
            chains.append(
                f"[{current}][{out}_img{i}]overlay=x={escape_value(x)}:y={escape_value(y)}"
                f":eof_action=repeat{_enable(mark)}[{label}]"
            )
        else:
            assert mark.text is not None and p.font is not None and p.text_file is not None
            x, y = _position(mark, frame, ("w", "h", "tw", "th"))
            chains.append(
                f"[{current}]drawtext=fontfile={escape_value(str(p.font))}"
                f":textfile={escape_value(str(p.text_file))}:expansion=none"
                f":fontsize={mark.text.font_size}:fontcolor=0x{mark.text.color}@{mark.text.opacity:.2f}"
                f":x={escape_value(x)}:y={escape_value(y)}{_enable(mark)}[{label}]"
            )
        current = label
    return inputs, chains
