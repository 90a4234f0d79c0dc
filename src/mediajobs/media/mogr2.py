"""imageMogr2 / imageView2 rule strings <-> typed pipelines (spec: image-processing.md, sections 2 and 3).

`parse` turns a decoded rule (the query name after percent-decoding, section 1) into a `Pipeline` of frozen
stages; `render` is its inverse and writes the canonical spelling, so `parse(render(p)) == p` for every
pipeline `parse` returns. Each operation declares its name, what its argument looks like and its ranges
once, on its class; the ranges are checked when the value is built, so a pipeline made by hand cannot
render to a rule that would not parse. Errors are `BadRule` (400 `InvalidArgument`) and name the
offending part of the rule, e.g. ``imageMogr2/rotate/abc: rotate takes an angle 0-360``.

The parser keeps what was written: operations stay in written order and a repeated operation is kept
twice (the processing engine applies "the last one wins" and the order rules of section 3.1). Only true
aliases are folded: ``jpeg`` is ``jpg``, ``<W>x<H>^`` is ``!<W>x<H>r``, and a pad colour is rendered as
unpadded URL-safe base64 right after its ``pad``.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import ClassVar, Protocol, TypeAlias

from mediajobs.errors import MediaJobsError

__all__ = [
    "MAX_STAGES",
    "AutoOrient",
    "BadRule",
    "Blur",
    "Bright",
    "Cgif",
    "Contrast",
    "Crop",
    "Cut",
    "Dx",
    "Dy",
    "Flip",
    "FlipDirection",
    "Format",
    "Gravity",
    "GravityValue",
    "Grayscale",
    "IgnoreError",
    "ImageFormat",
    "Info",
    "InfoKind",
    "Interlace",
    "Iradius",
    "LQuality",
    "Minisize",
    "Mogr2",
    "Op",
    "Pad",
    "Pipeline",
    "Quality",
    "RQuality",
    "Rotate",
    "Rradius",
    "Scrop",
    "Sharpen",
    "SizeLimit",
    "Stage",
    "Strip",
    "Style",
    "ThumbForm",
    "Thumbnail",
    "View2",
    "parse",
    "render",
    "render_op",
    "render_stage",
]

MAX_STAGES = 10
"""Most `|`-separated stages in one rule (section 8, "Pipeline stages")."""

_INT_MAX = 2**31 - 1
_SHOW = 200  # longest piece of user input quoted back in a message


class BadRule(MediaJobsError, ValueError):
    """The image processing rule is not valid."""

    code, http_status = "InvalidArgument", 400

    def __init__(self, part: str, reason: str) -> None:
        self.part = part
        self.reason = reason
        shown = part if len(part) <= _SHOW else part[:_SHOW] + "..."
        super().__init__(f"{shown}: {reason}")


# --- value helpers -------------------------------------------------------------------------------------

_UINT = re.compile(r"[0-9]{1,10}", re.ASCII)
_SINT = re.compile(r"-?[0-9]{1,10}", re.ASCII)


class _Named(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def expects(self) -> str: ...


def _reject(what: _Named) -> BadRule:
    return BadRule(what.name, f"{what.name} takes {what.expects}")


def _uint(text: str, what: _Named) -> int:
    if not _UINT.fullmatch(text) or int(text) > _INT_MAX:
        raise _reject(what)
    return int(text)


def _sint(text: str, what: _Named) -> int:
    if not _SINT.fullmatch(text) or abs(int(text)) > _INT_MAX:
        raise _reject(what)
    return int(text)


def _opt(text: str, what: _Named) -> int | None:
    return None if text == "" else _uint(text, what)


def _check(what: _Named, ok: bool) -> None:
    if not ok:
        raise _reject(what)


def _flag(text: str, what: _Named) -> bool:
    if text not in ("0", "1"):
        raise _reject(what)
    return text == "1"


_B64 = re.compile(r"[A-Za-z0-9_-]+={0,2}", re.ASCII)
_RGB = re.compile(r"#[0-9A-Fa-f]{6}", re.ASCII)


def _decode_color(text: str) -> str | None:
    """URL-safe base64 of ``#RRGGBB`` (padding optional) -> ``#RRGGBB`` upper-cased, or None."""
    if not _B64.fullmatch(text):
        return None
    bare = text.rstrip("=")
    try:
        raw = base64.urlsafe_b64decode(bare + "=" * (-len(bare) % 4))
    except (binascii.Error, ValueError):
        return None
    try:
        color = raw.decode("ascii")
    except UnicodeDecodeError:
        return None
    return color.upper() if _RGB.fullmatch(color) else None


def _encode_color(color: str) -> str:
    return base64.urlsafe_b64encode(color.encode("ascii")).decode("ascii").rstrip("=")


# --- enums ---------------------------------------------------------------------------------------------


class ThumbForm(StrEnum):
    """The forms of `thumbnail/` (section 3.2), named for what they do."""

    SCALE = "scale"  # !<P>p       both sides P%
    SCALE_WIDTH = "scale-width"  # !<P>px      width P%, height kept
    SCALE_HEIGHT = "scale-height"  # !x<P>p      height P%, width kept
    WIDTH = "width"  # <W>x        width W, aspect kept
    HEIGHT = "height"  # x<H>        height H, aspect kept
    FIT = "fit"  # <W>x<H>     largest inside W x H
    COVER = "cover"  # !<W>x<H>r   smallest covering W x H (alias <W>x<H>^)
    EXACT = "exact"  # <W>x<H>!    exactly W x H
    SHRINK = "shrink"  # <W>x<H>>    fit, only shrinks
    ENLARGE = "enlarge"  # <W>x<H><    fit, only enlarges
    AREA = "area"  # <A>@        at most A pixels


class GravityValue(StrEnum):
    NORTHWEST = "northwest"
    NORTH = "north"
    NORTHEAST = "northeast"
    WEST = "west"
    CENTER = "center"
    EAST = "east"
    SOUTHWEST = "southwest"
    SOUTH = "south"
    SOUTHEAST = "southeast"


class FlipDirection(StrEnum):
    VERTICAL = "vertical"
    HORIZONTAL = "horizontal"


class ImageFormat(StrEnum):
    """Output formats of `format/` (section 2, `fmt`); `jpeg` parses as JPG."""

    JPG = "jpg"
    PNG = "png"
    BMP = "bmp"
    WEBP = "webp"
    GIF = "gif"
    YJPEG = "yjpeg"
    HEIF = "heif"
    HEIC = "heic"
    AVIF = "avif"
    TPG = "tpg"
    APNG = "apng"
    TIFF = "tiff"
    PSD = "psd"
    ASTC = "astc"


_FORMAT_ALIASES = {"jpeg": ImageFormat.JPG}


def _format(text: str, what: _Named) -> ImageFormat:
    if text in _FORMAT_ALIASES:
        return _FORMAT_ALIASES[text]
    try:
        return ImageFormat(text)
    except ValueError:
        raise _reject(what) from None


class InfoKind(StrEnum):
    IMAGE_INFO = "imageInfo"
    EXIF = "exif"
    IMAGE_AVE = "imageAve"


# --- imageMogr2 operations -----------------------------------------------------------------------------
# Each class: `name` (the rule keyword), `expects` (what its argument must be, used in messages),
# `takes_arg`, `from_arg(text)` and `arg()` (None for a bare keyword). Ranges live in __post_init__.

_THUMB_FORMS: tuple[tuple[re.Pattern[str], ThumbForm], ...] = tuple(
    (re.compile(pattern, re.ASCII), form)
    for pattern, form in (
        (r"!([0-9]{1,10})p", ThumbForm.SCALE),
        (r"!([0-9]{1,10})px", ThumbForm.SCALE_WIDTH),
        (r"!x([0-9]{1,10})p", ThumbForm.SCALE_HEIGHT),
        (r"([0-9]{1,10})x", ThumbForm.WIDTH),
        (r"x([0-9]{1,10})", ThumbForm.HEIGHT),
        (r"([0-9]{1,10})x([0-9]{1,10})", ThumbForm.FIT),
        (r"!([0-9]{1,10})x([0-9]{1,10})r", ThumbForm.COVER),
        (r"([0-9]{1,10})x([0-9]{1,10})\^", ThumbForm.COVER),
        (r"([0-9]{1,10})x([0-9]{1,10})!", ThumbForm.EXACT),
        (r"([0-9]{1,10})x([0-9]{1,10})>", ThumbForm.SHRINK),
        (r"([0-9]{1,10})x([0-9]{1,10})<", ThumbForm.ENLARGE),
        (r"([0-9]{1,10})@", ThumbForm.AREA),
    )
)
_BOX_FORMS = frozenset({ThumbForm.FIT, ThumbForm.COVER, ThumbForm.EXACT, ThumbForm.SHRINK, ThumbForm.ENLARGE})
_PERCENT_FORMS = frozenset({ThumbForm.SCALE, ThumbForm.SCALE_WIDTH, ThumbForm.SCALE_HEIGHT})


@dataclass(frozen=True)
class Thumbnail:
    """`thumbnail/<form>`. Exactly the fields the form uses are set: `percent` (1-1000) for the three
    percentage forms, `width`/`height` (>= 1) for the size forms, `area` (>= 1) for `<A>@`. Targets
    above 10000 are kept as written; clamping is the engine's job (section 3.2)."""

    name: ClassVar[str] = "thumbnail"
    expects: ClassVar[str] = (
        "!<P>p, !<P>px, !x<P>p (P 1-1000), <W>x, x<H>, <W>x<H>, !<W>x<H>r, <W>x<H>^, <W>x<H>!, "
        "<W>x<H>>, <W>x<H>< or <Area>@ (sizes >= 1)"
    )
    takes_arg: ClassVar[bool] = True
    form: ThumbForm
    width: int | None = None
    height: int | None = None
    percent: int | None = None
    area: int | None = None

    def __post_init__(self) -> None:
        f = self.form
        _check(self, (self.percent is not None) == (f in _PERCENT_FORMS))
        _check(self, (self.area is not None) == (f is ThumbForm.AREA))
        _check(self, (self.width is not None) == (f in _BOX_FORMS or f is ThumbForm.WIDTH))
        _check(self, (self.height is not None) == (f in _BOX_FORMS or f is ThumbForm.HEIGHT))
        _check(self, self.percent is None or 1 <= self.percent <= 1000)
        for size in (self.width, self.height, self.area):
            _check(self, size is None or 1 <= size <= _INT_MAX)

    @classmethod
    def from_arg(cls, text: str) -> Thumbnail:
        if re.fullmatch(r"![0-9]+", text):
            raise BadRule(cls.name, "!<Area> is not a CI form; write <Area>@")
        for pattern, form in _THUMB_FORMS:
            m = pattern.fullmatch(text)
            if m is None:
                continue
            nums = [_uint(g, cls) for g in m.groups()]
            if form in _PERCENT_FORMS:
                return cls(form, percent=nums[0])
            if form is ThumbForm.AREA:
                return cls(form, area=nums[0])
            if form is ThumbForm.WIDTH:
                return cls(form, width=nums[0])
            if form is ThumbForm.HEIGHT:
                return cls(form, height=nums[0])
            return cls(form, width=nums[0], height=nums[1])
        raise _reject(cls)

    def arg(self) -> str:
        p, w, h = self.percent, self.width, self.height
        match self.form:
            case ThumbForm.SCALE:
                return f"!{p}p"
            case ThumbForm.SCALE_WIDTH:
                return f"!{p}px"
            case ThumbForm.SCALE_HEIGHT:
                return f"!x{p}p"
            case ThumbForm.WIDTH:
                return f"{w}x"
            case ThumbForm.HEIGHT:
                return f"x{h}"
            case ThumbForm.FIT:
                return f"{w}x{h}"
            case ThumbForm.COVER:
                return f"!{w}x{h}r"
            case ThumbForm.EXACT:
                return f"{w}x{h}!"
            case ThumbForm.SHRINK:
                return f"{w}x{h}>"
            case ThumbForm.ENLARGE:
                return f"{w}x{h}<"
            case ThumbForm.AREA:
                return f"{self.area}@"


_CROP = re.compile(r"([0-9]{0,10})x([0-9]{0,10})", re.ASCII)
_CROP_LEGACY = re.compile(r"!([0-9]{0,10})x([0-9]{0,10})([a-])([0-9]{1,10})([a-])([0-9]{1,10})", re.ASCII)


@dataclass(frozen=True)
class Crop:
    """`crop/<W>x<H>`, `<W>x`, `x<H>` (a missing side is the full side), or the legacy Qiniu form
    `!<W>x<H>a<dx>a<dy>` with signed offsets from the gravity anchor (`a` plus, `-` minus)."""

    name: ClassVar[str] = "crop"
    expects: ClassVar[str] = "<W>x<H>, <W>x or x<H> (sizes >= 1), or !<W>x<H>a<dx>a<dy>"
    takes_arg: ClassVar[bool] = True
    width: int | None
    height: int | None
    dx: int | None = None
    dy: int | None = None

    def __post_init__(self) -> None:
        _check(self, self.width is not None or self.height is not None)
        for size in (self.width, self.height):
            _check(self, size is None or 1 <= size <= _INT_MAX)
        _check(self, (self.dx is None) == (self.dy is None))
        for off in (self.dx, self.dy):
            _check(self, off is None or abs(off) <= _INT_MAX)

    @classmethod
    def from_arg(cls, text: str) -> Crop:
        if m := _CROP.fullmatch(text):
            return cls(_opt(m[1], cls), _opt(m[2], cls))
        if m := _CROP_LEGACY.fullmatch(text):
            dx, dy = _uint(m[4], cls), _uint(m[6], cls)
            return cls(
                _opt(m[1], cls), _opt(m[2], cls), -dx if m[3] == "-" else dx, -dy if m[5] == "-" else dy
            )
        raise _reject(cls)

    def arg(self) -> str:
        size = f"{'' if self.width is None else self.width}x{'' if self.height is None else self.height}"
        if self.dx is None or self.dy is None:
            return size
        return (
            f"!{size}{'-' if self.dx < 0 else 'a'}{abs(self.dx)}{'-' if self.dy < 0 else 'a'}{abs(self.dy)}"
        )


@dataclass(frozen=True)
class Cut:
    """`cut/<W>x<H>x<dx>x<dy>`: the W x H region whose top-left corner is at (dx, dy)."""

    name: ClassVar[str] = "cut"
    expects: ClassVar[str] = "<W>x<H>x<dx>x<dy> (W, H >= 1; dx, dy >= 0)"
    takes_arg: ClassVar[bool] = True
    width: int
    height: int
    dx: int
    dy: int

    def __post_init__(self) -> None:
        _check(self, 1 <= self.width <= _INT_MAX and 1 <= self.height <= _INT_MAX)
        _check(self, 0 <= self.dx <= _INT_MAX and 0 <= self.dy <= _INT_MAX)

    @classmethod
    def from_arg(cls, text: str) -> Cut:
        parts = text.split("x")
        if len(parts) != 4:
            raise _reject(cls)
        w, h, dx, dy = (_uint(p, cls) for p in parts)
        return cls(w, h, dx, dy)

    def arg(self) -> str:
        return f"{self.width}x{self.height}x{self.dx}x{self.dy}"


def _pair(text: str, what: _Named) -> tuple[int, int]:
    parts = text.split("x")
    if len(parts) != 2:
        raise _reject(what)
    return _uint(parts[0], what), _uint(parts[1], what)


@dataclass(frozen=True)
class Scrop:
    """`scrop/<W>x<H>`: smart crop to W x H."""

    name: ClassVar[str] = "scrop"
    expects: ClassVar[str] = "<W>x<H> (sizes >= 1)"
    takes_arg: ClassVar[bool] = True
    width: int
    height: int

    def __post_init__(self) -> None:
        _check(self, 1 <= self.width <= _INT_MAX and 1 <= self.height <= _INT_MAX)

    @classmethod
    def from_arg(cls, text: str) -> Scrop:
        return cls(*_pair(text, cls))

    def arg(self) -> str:
        return f"{self.width}x{self.height}"


@dataclass(frozen=True)
class Iradius:
    """`iradius/<r>`: the inscribed circle of radius r (r >= 1; the upper bound depends on the image)."""

    name: ClassVar[str] = "iradius"
    expects: ClassVar[str] = "a radius >= 1"
    takes_arg: ClassVar[bool] = True
    radius: int

    def __post_init__(self) -> None:
        _check(self, 1 <= self.radius <= _INT_MAX)

    @classmethod
    def from_arg(cls, text: str) -> Iradius:
        return cls(_uint(text, cls))

    def arg(self) -> str:
        return str(self.radius)


@dataclass(frozen=True)
class Rradius:
    """`rradius/<r>`: round the corners with radius r (r >= 1)."""

    name: ClassVar[str] = "rradius"
    expects: ClassVar[str] = "a radius >= 1"
    takes_arg: ClassVar[bool] = True
    radius: int

    def __post_init__(self) -> None:
        _check(self, 1 <= self.radius <= _INT_MAX)

    @classmethod
    def from_arg(cls, text: str) -> Rradius:
        return cls(_uint(text, cls))

    def arg(self) -> str:
        return str(self.radius)


@dataclass(frozen=True)
class Gravity:
    """`gravity/<g>`: anchor for the crop/cut nearest to it (a modifier, not a step)."""

    name: ClassVar[str] = "gravity"
    expects: ClassVar[str] = "one of " + ", ".join(g.value for g in GravityValue)
    takes_arg: ClassVar[bool] = True
    value: GravityValue

    @classmethod
    def from_arg(cls, text: str) -> Gravity:
        try:
            return cls(GravityValue(text))
        except ValueError:
            raise _reject(cls) from None

    def arg(self) -> str:
        return self.value.value


@dataclass(frozen=True)
class Dx:
    """`dx/<n>`: horizontal offset from the gravity anchor (a modifier)."""

    name: ClassVar[str] = "dx"
    expects: ClassVar[str] = "an offset >= 0"
    takes_arg: ClassVar[bool] = True
    value: int

    def __post_init__(self) -> None:
        _check(self, 0 <= self.value <= _INT_MAX)

    @classmethod
    def from_arg(cls, text: str) -> Dx:
        return cls(_uint(text, cls))

    def arg(self) -> str:
        return str(self.value)


@dataclass(frozen=True)
class Dy:
    """`dy/<n>`: vertical offset from the gravity anchor (a modifier)."""

    name: ClassVar[str] = "dy"
    expects: ClassVar[str] = "an offset >= 0"
    takes_arg: ClassVar[bool] = True
    value: int

    def __post_init__(self) -> None:
        _check(self, 0 <= self.value <= _INT_MAX)

    @classmethod
    def from_arg(cls, text: str) -> Dy:
        return cls(_uint(text, cls))

    def arg(self) -> str:
        return str(self.value)


@dataclass(frozen=True)
class Pad:
    """`pad/<0|1>[/color/<b64>]`: pad to the thumbnail box. `color` is ``#RRGGBB`` (upper case) or None
    for the default; in the rule it is URL-safe base64 and may be written anywhere in the stage
    (it modifies the nearest `pad`); it is rendered right after `pad`."""

    name: ClassVar[str] = "pad"
    expects: ClassVar[str] = "0 or 1"
    takes_arg: ClassVar[bool] = True
    enabled: bool
    color: str | None = None

    def __post_init__(self) -> None:
        if self.color is not None and not _RGB.fullmatch(self.color):
            raise BadRule("color", _COLOR_EXPECTS)
        if self.color is not None and self.color != self.color.upper():
            object.__setattr__(self, "color", self.color.upper())

    @classmethod
    def from_arg(cls, text: str) -> Pad:
        return cls(_flag(text, cls))

    def arg(self) -> str:
        on = "1" if self.enabled else "0"
        return on if self.color is None else f"{on}/color/{_encode_color(self.color)}"


_COLOR_EXPECTS = "color takes URL-safe base64 of #RRGGBB"


@dataclass(frozen=True)
class Rotate:
    """`rotate/<d>`: clockwise, 0-360 degrees."""

    name: ClassVar[str] = "rotate"
    expects: ClassVar[str] = "an angle 0-360"
    takes_arg: ClassVar[bool] = True
    degrees: int

    def __post_init__(self) -> None:
        _check(self, 0 <= self.degrees <= 360)

    @classmethod
    def from_arg(cls, text: str) -> Rotate:
        return cls(_uint(text, cls))

    def arg(self) -> str:
        return str(self.degrees)


@dataclass(frozen=True)
class AutoOrient:
    """`auto-orient`: apply the EXIF orientation."""

    name: ClassVar[str] = "auto-orient"
    expects: ClassVar[str] = "no argument"
    takes_arg: ClassVar[bool] = False

    @classmethod
    def from_arg(cls, text: str) -> AutoOrient:
        return cls()

    def arg(self) -> None:
        return None


@dataclass(frozen=True)
class Flip:
    """`flip/vertical` or `flip/horizontal`."""

    name: ClassVar[str] = "flip"
    expects: ClassVar[str] = "vertical or horizontal"
    takes_arg: ClassVar[bool] = True
    direction: FlipDirection

    @classmethod
    def from_arg(cls, text: str) -> Flip:
        try:
            return cls(FlipDirection(text))
        except ValueError:
            raise _reject(cls) from None

    def arg(self) -> str:
        return self.direction.value


@dataclass(frozen=True)
class Format:
    """`format/<fmt>`: output encoding."""

    name: ClassVar[str] = "format"
    expects: ClassVar[str] = "one of jpeg, " + ", ".join(f.value for f in ImageFormat)
    takes_arg: ClassVar[bool] = True
    format: ImageFormat

    @classmethod
    def from_arg(cls, text: str) -> Format:
        return cls(_format(text, cls))

    def arg(self) -> str:
        return self.format.value


@dataclass(frozen=True)
class Cgif:
    """`cgif/<n>`: GIF output frame reduction, 1-100."""

    name: ClassVar[str] = "cgif"
    expects: ClassVar[str] = "a frame count 1-100"
    takes_arg: ClassVar[bool] = True
    frames: int

    def __post_init__(self) -> None:
        _check(self, 1 <= self.frames <= 100)

    @classmethod
    def from_arg(cls, text: str) -> Cgif:
        return cls(_uint(text, cls))

    def arg(self) -> str:
        return str(self.frames)


@dataclass(frozen=True)
class Interlace:
    """`interlace/<0|1>`: progressive JPEG."""

    name: ClassVar[str] = "interlace"
    expects: ClassVar[str] = "0 or 1"
    takes_arg: ClassVar[bool] = True
    enabled: bool

    @classmethod
    def from_arg(cls, text: str) -> Interlace:
        return cls(_flag(text, cls))

    def arg(self) -> str:
        return "1" if self.enabled else "0"


_QUALITY = re.compile(r"([0-9]{1,10})(!?)", re.ASCII)


@dataclass(frozen=True)
class Quality:
    """`quality/<q>[!]`: at most q (0-100), or exactly q with `!`."""

    name: ClassVar[str] = "quality"
    expects: ClassVar[str] = "a quality 0-100, optionally followed by !"
    takes_arg: ClassVar[bool] = True
    value: int
    exact: bool = False

    def __post_init__(self) -> None:
        _check(self, 0 <= self.value <= 100)

    @classmethod
    def from_arg(cls, text: str) -> Quality:
        m = _QUALITY.fullmatch(text)
        if m is None:
            raise _reject(cls)
        return cls(_uint(m[1], cls), m[2] == "!")

    def arg(self) -> str:
        return f"{self.value}{'!' if self.exact else ''}"


@dataclass(frozen=True)
class RQuality:
    """`rquality/<q>`: q% (0-100) of the source quality."""

    name: ClassVar[str] = "rquality"
    expects: ClassVar[str] = "a quality 0-100"
    takes_arg: ClassVar[bool] = True
    value: int

    def __post_init__(self) -> None:
        _check(self, 0 <= self.value <= 100)

    @classmethod
    def from_arg(cls, text: str) -> RQuality:
        return cls(_uint(text, cls))

    def arg(self) -> str:
        return str(self.value)


@dataclass(frozen=True)
class LQuality:
    """`lquality/<q>`: at least q (0-100)."""

    name: ClassVar[str] = "lquality"
    expects: ClassVar[str] = "a quality 0-100"
    takes_arg: ClassVar[bool] = True
    value: int

    def __post_init__(self) -> None:
        _check(self, 0 <= self.value <= 100)

    @classmethod
    def from_arg(cls, text: str) -> LQuality:
        return cls(_uint(text, cls))

    def arg(self) -> str:
        return str(self.value)


@dataclass(frozen=True)
class Blur:
    """`blur/<r>x<s>`: Gaussian blur, radius 1-50, sigma >= 1."""

    name: ClassVar[str] = "blur"
    expects: ClassVar[str] = "<radius>x<sigma> (radius 1-50, sigma >= 1)"
    takes_arg: ClassVar[bool] = True
    radius: int
    sigma: int

    def __post_init__(self) -> None:
        _check(self, 1 <= self.radius <= 50 and 1 <= self.sigma <= _INT_MAX)

    @classmethod
    def from_arg(cls, text: str) -> Blur:
        return cls(*_pair(text, cls))

    def arg(self) -> str:
        return f"{self.radius}x{self.sigma}"


@dataclass(frozen=True)
class Sharpen:
    """`sharpen/<v>`: unsharp mask strength 10-300."""

    name: ClassVar[str] = "sharpen"
    expects: ClassVar[str] = "a strength 10-300"
    takes_arg: ClassVar[bool] = True
    value: int

    def __post_init__(self) -> None:
        _check(self, 10 <= self.value <= 300)

    @classmethod
    def from_arg(cls, text: str) -> Sharpen:
        return cls(_uint(text, cls))

    def arg(self) -> str:
        return str(self.value)


@dataclass(frozen=True)
class Bright:
    """`bright/<v>`: brightness -100..100."""

    name: ClassVar[str] = "bright"
    expects: ClassVar[str] = "a value -100..100"
    takes_arg: ClassVar[bool] = True
    value: int

    def __post_init__(self) -> None:
        _check(self, -100 <= self.value <= 100)

    @classmethod
    def from_arg(cls, text: str) -> Bright:
        return cls(_sint(text, cls))

    def arg(self) -> str:
        return str(self.value)


@dataclass(frozen=True)
class Contrast:
    """`contrast/<v>`: contrast -100..100."""

    name: ClassVar[str] = "contrast"
    expects: ClassVar[str] = "a value -100..100"
    takes_arg: ClassVar[bool] = True
    value: int

    def __post_init__(self) -> None:
        _check(self, -100 <= self.value <= 100)

    @classmethod
    def from_arg(cls, text: str) -> Contrast:
        return cls(_sint(text, cls))

    def arg(self) -> str:
        return str(self.value)


@dataclass(frozen=True)
class Grayscale:
    """`grayscale/<0|1>`."""

    name: ClassVar[str] = "grayscale"
    expects: ClassVar[str] = "0 or 1"
    takes_arg: ClassVar[bool] = True
    enabled: bool

    @classmethod
    def from_arg(cls, text: str) -> Grayscale:
        return cls(_flag(text, cls))

    def arg(self) -> str:
        return "1" if self.enabled else "0"


@dataclass(frozen=True)
class Strip:
    """`strip`: drop metadata from the output."""

    name: ClassVar[str] = "strip"
    expects: ClassVar[str] = "no argument"
    takes_arg: ClassVar[bool] = False

    @classmethod
    def from_arg(cls, text: str) -> Strip:
        return cls()

    def arg(self) -> None:
        return None


_SIZE_LIMIT = re.compile(r"([0-9]{1,10})([km])(!?)", re.ASCII)


@dataclass(frozen=True)
class SizeLimit:
    """`size-limit/<n>k|m[!]`: JPEG output at most n KB/MB; with `!` keep the original if not smaller."""

    name: ClassVar[str] = "size-limit"
    expects: ClassVar[str] = "<n>k or <n>m (n >= 1), optionally followed by !"
    takes_arg: ClassVar[bool] = True
    amount: int
    unit: str  # "k" or "m"
    keep_original: bool = False

    def __post_init__(self) -> None:
        _check(self, 1 <= self.amount <= _INT_MAX and self.unit in ("k", "m"))

    @property
    def limit_bytes(self) -> int:
        return self.amount * (1024 if self.unit == "k" else 1024 * 1024)

    @classmethod
    def from_arg(cls, text: str) -> SizeLimit:
        m = _SIZE_LIMIT.fullmatch(text)
        if m is None:
            raise _reject(cls)
        return cls(_uint(m[1], cls), m[2], m[3] == "!")

    def arg(self) -> str:
        return f"{self.amount}{self.unit}{'!' if self.keep_original else ''}"


@dataclass(frozen=True)
class IgnoreError:
    """`ignore-error/1`: on a processing failure answer with the original."""

    name: ClassVar[str] = "ignore-error"
    expects: ClassVar[str] = "1"
    takes_arg: ClassVar[bool] = True

    @classmethod
    def from_arg(cls, text: str) -> IgnoreError:
        if text != "1":
            raise _reject(cls)
        return cls()

    def arg(self) -> str:
        return "1"


@dataclass(frozen=True)
class Minisize:
    """`minisize/<n>` (undocumented, section 3.9): 1 means "return the original if the result is larger"."""

    name: ClassVar[str] = "minisize"
    expects: ClassVar[str] = "an integer >= 0"
    takes_arg: ClassVar[bool] = True
    value: int

    def __post_init__(self) -> None:
        _check(self, 0 <= self.value <= _INT_MAX)

    @classmethod
    def from_arg(cls, text: str) -> Minisize:
        return cls(_uint(text, cls))

    def arg(self) -> str:
        return str(self.value)


Op: TypeAlias = (
    Thumbnail
    | Crop
    | Cut
    | Scrop
    | Iradius
    | Rradius
    | Gravity
    | Dx
    | Dy
    | Pad
    | Rotate
    | AutoOrient
    | Flip
    | Format
    | Cgif
    | Interlace
    | Quality
    | RQuality
    | LQuality
    | Blur
    | Sharpen
    | Bright
    | Contrast
    | Grayscale
    | Strip
    | SizeLimit
    | IgnoreError
    | Minisize
)


class _OpClass(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def expects(self) -> str: ...
    @property
    def takes_arg(self) -> bool: ...
    def from_arg(self, text: str) -> Op: ...


_OP_CLASSES: tuple[_OpClass, ...] = (
    Thumbnail,
    Crop,
    Cut,
    Scrop,
    Iradius,
    Rradius,
    Gravity,
    Dx,
    Dy,
    Pad,
    Rotate,
    AutoOrient,
    Flip,
    Format,
    Cgif,
    Interlace,
    Quality,
    RQuality,
    LQuality,
    Blur,
    Sharpen,
    Bright,
    Contrast,
    Grayscale,
    Strip,
    SizeLimit,
    IgnoreError,
    Minisize,
)
_OPS: dict[str, _OpClass] = {cls.name: cls for cls in _OP_CLASSES}
_UNSUPPORTED = {"rcrop": "rcrop is not supported"}


# --- stages --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mogr2:
    """One `imageMogr2/...` stage: operations in written order (repeats kept)."""

    ops: tuple[Op, ...] = ()


@dataclass(frozen=True)
class View2:
    """`imageView2/<mode>/w/<W>/h/<H>/format/<fmt>/q/<Q>[!]/rq/<Q>/lq/<Q>/interlace/<0|1>/ignore-error/1`
    (section 3.10). `mode` 0-5 needs `width` or `height`; without a mode only the output options apply."""

    mode: int | None = None
    width: int | None = None
    height: int | None = None
    format: ImageFormat | None = None
    quality: int | None = None
    quality_exact: bool = False
    rquality: int | None = None
    lquality: int | None = None
    interlace: bool | None = None
    ignore_error: bool = False

    def __post_init__(self) -> None:
        if self.mode is not None and not 0 <= self.mode <= 5:
            raise BadRule("imageView2", "the mode is 0-5")
        if self.mode is not None and self.width is None and self.height is None:
            raise BadRule("imageView2", "a mode needs w or h")
        if self.mode is None and (self.width is not None or self.height is not None):
            raise BadRule("imageView2", "w and h need a mode")
        for key, size in (("w", self.width), ("h", self.height)):
            if size is not None and not 1 <= size <= _INT_MAX:
                raise BadRule(f"imageView2/{key}", f"{key} takes a size >= 1")
        for key, q in (("q", self.quality), ("rq", self.rquality), ("lq", self.lquality)):
            if q is not None and not 0 <= q <= 100:
                raise BadRule(f"imageView2/{key}", f"{key} takes a quality 0-100")
        if self.quality_exact and self.quality is None:
            raise BadRule("imageView2/q", "an exact quality needs q")
        if self._empty():
            raise BadRule("imageView2", "imageView2 needs a mode or an option")

    def _empty(self) -> bool:
        return (
            self.mode is None
            and self.format is None
            and self.quality is None
            and self.rquality is None
            and self.lquality is None
            and self.interlace is None
            and not self.ignore_error
        )


@dataclass(frozen=True)
class Info:
    """`imageInfo`, `exif` or `imageAve`; only as the last stage."""

    kind: InfoKind


_STYLE_NAME = re.compile(r"[A-Za-z0-9_.-]+", re.ASCII)


@dataclass(frozen=True)
class Style:
    """`style/<name>`: a named rule kept in the bucket's style table."""

    name: str

    def __post_init__(self) -> None:
        if not _STYLE_NAME.fullmatch(self.name):
            raise BadRule(f"style/{self.name}", "style takes a name of letters, digits, '_', '-' or '.'")


Stage: TypeAlias = Mogr2 | View2 | Info | Style


@dataclass(frozen=True)
class Pipeline:
    """`|`-separated stages, run left to right (1 to MAX_STAGES; an info stage only last)."""

    stages: tuple[Stage, ...]

    def __post_init__(self) -> None:
        if not self.stages:
            raise BadRule("", "a rule needs at least one stage")
        if len(self.stages) > MAX_STAGES:
            raise BadRule(render_stage(self.stages[MAX_STAGES]), f"a rule has at most {MAX_STAGES} stages")
        for stage in self.stages[:-1]:
            if isinstance(stage, Info):
                raise BadRule(stage.kind.value, f"{stage.kind.value} must be the last stage")

    @property
    def output_format(self) -> ImageFormat | None:
        """The format the rule asks for (the last `format` written wins), or None to keep the input's."""
        fmt: ImageFormat | None = None
        for stage in self.stages:
            if isinstance(stage, Mogr2):
                fmt = next((op.format for op in reversed(stage.ops) if isinstance(op, Format)), fmt)
            elif isinstance(stage, View2) and stage.format is not None:
                fmt = stage.format
        return fmt


# --- parse ---------------------------------------------------------------------------------------------


def parse(rule: str) -> Pipeline:
    """Parse a decoded rule string (no percent-encoding left) into a Pipeline; raise BadRule."""
    if rule == "":
        raise BadRule("", "the rule is empty")
    stages = rule.split("|")
    if len(stages) > MAX_STAGES:
        raise BadRule(stages[MAX_STAGES], f"a rule has at most {MAX_STAGES} stages")
    return Pipeline(tuple(_parse_stage(text) for text in stages))


_INFO_KINDS = frozenset(k.value for k in InfoKind)


def _parse_stage(text: str) -> Stage:
    head, _, rest = text.partition("/")
    if head == "imageMogr2":
        return _parse_mogr2(text, rest)
    if head == "imageView2":
        return _parse_view2(text, rest)
    if head == "style":
        return Style(rest)
    if head == "watermark":
        raise BadRule(text, "watermark is not supported")
    if text in _INFO_KINDS:
        return Info(InfoKind(text))
    if text == "":
        raise BadRule(text, "empty stage")
    raise BadRule(text, "unknown stage; expected imageMogr2, imageView2, imageInfo, exif, imageAve or style")


def _parse_mogr2(text: str, rest: str) -> Mogr2:
    if text == "imageMogr2":
        return Mogr2()
    tokens = rest.split("/")
    ops: list[Op] = []
    colors: list[tuple[int, str, str]] = []  # (position in ops, #RRGGBB, rule part)
    i = 0
    while i < len(tokens):
        name = tokens[i]
        part = f"imageMogr2/{name}"
        if name == "color":
            arg = tokens[i + 1] if i + 1 < len(tokens) else ""
            color = _decode_color(arg)
            if color is None:
                raise BadRule(f"{part}/{arg}", _COLOR_EXPECTS)
            colors.append((len(ops), color, f"{part}/{arg}"))
            i += 2
            continue
        if name in _UNSUPPORTED:
            raise BadRule(part, _UNSUPPORTED[name])
        cls = _OPS.get(name)
        if cls is None:
            raise BadRule(part, "empty operation" if name == "" else "unknown operation")
        if not cls.takes_arg:
            ops.append(cls.from_arg(""))
            i += 1
            continue
        if i + 1 >= len(tokens):
            raise BadRule(part, f"{name} takes {cls.expects}")
        arg = tokens[i + 1]
        try:
            ops.append(cls.from_arg(arg))
        except BadRule as exc:
            raise BadRule(f"{part}/{arg}", exc.reason) from None
        i += 2
    for pos, color, part in colors:
        _attach_color(ops, pos, color, part)
    return Mogr2(tuple(ops))


def _attach_color(ops: list[Op], pos: int, color: str, part: str) -> None:
    """Give `color` to the pad nearest to where it was written (ties go to the pad before it)."""
    best: int | None = None
    for idx, op in enumerate(ops):
        if isinstance(op, Pad):
            dist = pos - 1 - idx if idx < pos else idx - pos
            if best is None or dist < (pos - 1 - best if best < pos else best - pos):
                best = idx
    if best is None:
        raise BadRule(part, "color only goes with pad")
    pad = ops[best]
    assert isinstance(pad, Pad)
    if pad.color is not None:
        raise BadRule(part, "pad already has a color")
    ops[best] = replace(pad, color=color)


_VIEW2_KEYS = ("w", "h", "format", "q", "rq", "lq", "interlace", "ignore-error")


def _parse_view2(text: str, rest: str) -> View2:
    tokens = rest.split("/") if rest else []
    mode: int | None = None
    if tokens and tokens[0].isascii() and tokens[0].isdigit():
        if not re.fullmatch(r"[0-5]", tokens[0]):
            raise BadRule(f"imageView2/{tokens[0]}", "the mode is 0-5")
        mode = int(tokens.pop(0))
    seen: dict[str, str] = {}
    for i in range(0, len(tokens), 2):
        key = tokens[i]
        part = f"imageView2/{key}"
        if key not in _VIEW2_KEYS:
            raise BadRule(part, "empty option" if key == "" else "unknown option")
        if key in seen:
            raise BadRule(part, f"{key} is given twice")
        if i + 1 >= len(tokens):
            raise BadRule(part, f"{key} needs a value")
        seen[key] = tokens[i + 1]

    def bad(key: str, reason: str) -> BadRule:
        return BadRule(f"imageView2/{key}/{seen[key]}", reason)

    def size(key: str) -> int | None:
        if key not in seen:
            return None
        if not _UINT.fullmatch(seen[key]) or not 1 <= int(seen[key]) <= _INT_MAX:
            raise bad(key, f"{key} takes a size >= 1")
        return int(seen[key])

    def quality(key: str) -> tuple[int | None, bool]:
        if key not in seen:
            return None, False
        m = _QUALITY.fullmatch(seen[key])
        if m is None or (m[2] and key != "q") or int(m[1]) > 100:
            raise bad(
                key, f"{key} takes a quality 0-100" + (", optionally followed by !" if key == "q" else "")
            )
        return int(m[1]), m[2] == "!"

    fmt: ImageFormat | None = None
    if "format" in seen:
        try:
            fmt = _format(seen["format"], Format)
        except BadRule as exc:
            raise bad("format", exc.reason) from None
    interlace: bool | None = None
    if "interlace" in seen:
        if seen["interlace"] not in ("0", "1"):
            raise bad("interlace", "interlace takes 0 or 1")
        interlace = seen["interlace"] == "1"
    if "ignore-error" in seen and seen["ignore-error"] != "1":
        raise bad("ignore-error", "ignore-error takes 1")
    q, exact = quality("q")
    width, height = size("w"), size("h")
    rquality, lquality = quality("rq")[0], quality("lq")[0]
    try:
        return View2(
            mode=mode,
            width=width,
            height=height,
            format=fmt,
            quality=q,
            quality_exact=exact,
            rquality=rquality,
            lquality=lquality,
            interlace=interlace,
            ignore_error="ignore-error" in seen,
        )
    except BadRule as exc:
        raise BadRule(text, exc.reason) from None


# --- render --------------------------------------------------------------------------------------------


def render(pipeline: Pipeline) -> str:
    """The canonical rule string for `pipeline`: `parse(render(p)) == p`."""
    return "|".join(render_stage(stage) for stage in pipeline.stages)


def render_op(op: Op) -> str:
    arg = op.arg()
    return op.name if arg is None else f"{op.name}/{arg}"


def render_stage(stage: Stage) -> str:
    if isinstance(stage, Mogr2):
        return "/".join(["imageMogr2", *(render_op(op) for op in stage.ops)])
    if isinstance(stage, Info):
        return stage.kind.value
    if isinstance(stage, Style):
        return f"style/{stage.name}"
    parts = ["imageView2"]
    if stage.mode is not None:
        parts.append(str(stage.mode))
    for key, value in (
        ("w", stage.width),
        ("h", stage.height),
        ("format", None if stage.format is None else stage.format.value),
        ("q", None if stage.quality is None else f"{stage.quality}{'!' if stage.quality_exact else ''}"),
        ("rq", stage.rquality),
        ("lq", stage.lquality),
        ("interlace", None if stage.interlace is None else int(stage.interlace)),
        ("ignore-error", 1 if stage.ignore_error else None),
    ):
        if value is not None:
            parts += [key, str(value)]
    return "/".join(parts)
