"""The imageMogr2 / imageView2 engine on libvips (spec: image-processing.md, sections 3, 5.1 and 8).

`process(path, pipeline)` loads one image, runs the `Mogr2` / `View2` stages of a parsed `Pipeline`
left to right and encodes the result; it returns ``(bytes, mime type)``. `image_info(path)` answers
``?imageInfo`` (section 5.1).

Limits are checked on the header before any pixel is decoded: more than `max_pixels` pixels or a side
above `max_side` is refused with `ImageResolutionExceed` (a subclass of `ImageTooLarge`, so callers
that catch the latter see both). Thumbnail targets above 10000 are clamped to 10000 and an output side
above `MAX_OUTPUT_SIDE` is refused before the resize is done.

Inside one `imageMogr2` stage the order is the one of section 3.1: `auto-orient` first, then the
geometry operations in written order, then the pixel filters in written order; output options apply
at encode time, and a later stage's output option overrides an earlier one's. A repeated operation:
the last one wins. `gravity`, `dx` and `dy` modify every crop of the stage; `pad` modifies the
stage's thumbnail.

Not done yet: animated GIF/WebP are read as their first frame only (so `cgif` is ignored and the
output is a still image); HEIF/HEIC output needs an HEVC encoder that the bundled libvips lacks
(`InvalidImageFormat`), AVIF works; `tpg`, `psd` and `astc` are refused with `InvalidImageFormat`;
`apng` is written as a still PNG; BMP is written by a small encoder here (libvips has no BMP saver).
Info and style stages are not run here: `imageInfo`/`exif`/`imageAve` are answered by the caller
(`image_info` for the first) and styles must be expanded before `process` (`BadRule`).
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar

import pyvips  # type: ignore[import-untyped]

from mediajobs.errors import MediaJobsError
from mediajobs.media.mogr2 import (
    AutoOrient,
    BadRule,
    Blur,
    Bright,
    Contrast,
    Crop,
    Cut,
    Dx,
    Dy,
    Flip,
    FlipDirection,
    Format,
    Gravity,
    GravityValue,
    Grayscale,
    IgnoreError,
    ImageFormat,
    Info,
    Interlace,
    Iradius,
    LQuality,
    Minisize,
    Mogr2,
    Op,
    Pad,
    Pipeline,
    Quality,
    Rotate,
    RQuality,
    Rradius,
    Scrop,
    Sharpen,
    SizeLimit,
    Strip,
    Style,
    ThumbForm,
    Thumbnail,
    View2,
)

__all__ = [
    "MAX_OUTPUT_SIDE",
    "MAX_THUMB_TARGET",
    "ImageError",
    "ImageResolutionExceed",
    "ImageTooLarge",
    "InvalidImageFormat",
    "InvalidImageSource",
    "estimate_jpeg_quality",
    "image_info",
    "process",
    "thumbnail_size",
]

MAX_OUTPUT_SIDE = 9999
"""Largest output side (section 8)."""
MAX_THUMB_TARGET = 10000
"""Thumbnail width/height/area sides above this are clamped to it (section 3.2)."""
DEFAULT_QUALITY = 75
"""q0 when the source quality can't be estimated (section 3.6)."""
WEBP_MAX_SIDE = 16383


# --- errors --------------------------------------------------------------------------------------------


class ImageError(MediaJobsError):
    """The image could not be processed."""

    code: ClassVar[str] = "InvalidImageFormat"
    http_status: ClassVar[int] = 400


class InvalidImageFormat(ImageError):
    """The image format is not valid or not supported."""

    code, http_status = "InvalidImageFormat", 400


class InvalidImageSource(ImageError):
    """The image source could not be read."""

    code, http_status = "InvalidImageSource", 400


class ImageTooLarge(ImageError):
    """The image is too large."""

    code, http_status = "ImageTooLarge", 400


class ImageResolutionExceed(ImageTooLarge):
    """The image resolution exceeds the limit."""

    code, http_status = "ImageResolutionExceed", 400


# --- formats -------------------------------------------------------------------------------------------

_MIME = {
    ImageFormat.JPG: "image/jpeg",
    ImageFormat.YJPEG: "image/jpeg",
    ImageFormat.PNG: "image/png",
    ImageFormat.APNG: "image/png",
    ImageFormat.WEBP: "image/webp",
    ImageFormat.GIF: "image/gif",
    ImageFormat.BMP: "image/bmp",
    ImageFormat.TIFF: "image/tiff",
    ImageFormat.AVIF: "image/avif",
    ImageFormat.HEIF: "image/heif",
    ImageFormat.HEIC: "image/heif",
}
_ALPHA_FORMATS = frozenset(
    {
        ImageFormat.PNG,
        ImageFormat.APNG,
        ImageFormat.WEBP,
        ImageFormat.GIF,
        ImageFormat.TIFF,
        ImageFormat.AVIF,
        ImageFormat.HEIF,
        ImageFormat.HEIC,
    }
)
_LOADER_FORMATS = {
    "jpegload": ImageFormat.JPG,
    "pngload": ImageFormat.PNG,
    "webpload": ImageFormat.WEBP,
    "gifload": ImageFormat.GIF,
    "tiffload": ImageFormat.TIFF,
    "heifload": ImageFormat.HEIF,
}
_INFO_NAMES = {ImageFormat.JPG: "jpeg"}


def _source_format(image: Any, hint: str | None) -> ImageFormat | None:
    """The input's format from the loader libvips picked; `hint` only when that says nothing."""
    fields = image.get_fields()
    loader = str(image.get("vips-loader")) if "vips-loader" in fields else ""
    fmt = _LOADER_FORMATS.get(loader.split("_")[0])
    if fmt is ImageFormat.HEIF and "heif-compression" in fields and image.get("heif-compression") == "av1":
        fmt = ImageFormat.AVIF
    if fmt is None and hint:
        text = hint.lower().removeprefix("image/").removeprefix(".")
        text = {"jpeg": "jpg", "heic": "heif"}.get(text, text)
        try:
            fmt = ImageFormat(text)
        except ValueError:
            fmt = None
    return fmt


# --- loading -------------------------------------------------------------------------------------------


def _open_header(path: str) -> Any:
    """Open `path` for its header only (nothing is decoded yet)."""
    try:
        return pyvips.Image.new_from_file(path, access="sequential")
    except pyvips.Error as exc:
        if not os.path.isfile(path):
            raise InvalidImageSource() from exc
        raise InvalidImageFormat() from exc


def _check_limits(head: Any, max_pixels: int, max_side: int) -> None:
    """Refuse an image before decoding when its header says it is over the limits."""
    width, height = int(head.width), int(head.height)
    if width * height > max_pixels:
        raise ImageResolutionExceed(f"The image has {width}x{height} pixels, more than {max_pixels}.")
    if max(width, height) > max_side:
        raise ImageResolutionExceed(f"The image is {width}x{height}, a side is above {max_side}.")


def _normalise(image: Any) -> Any:
    """8-bit sRGB or 8-bit grey, alpha kept."""
    interp = str(image.interpretation)
    if image.format == "uchar" and interp in ("srgb", "b-w"):
        return image
    try:
        if interp in ("b-w", "grey16"):
            return image.colourspace("b-w")
        out = image.colourspace("srgb")
    except pyvips.Error:
        out = image.copy(interpretation="srgb" if image.bands >= 3 else "b-w")
    return out if out.format == "uchar" else out.cast("uchar")


# --- sizes ---------------------------------------------------------------------------------------------


def _round(x: Fraction) -> int:
    """Round half up, at least 1."""
    return max(1, math.floor(x + Fraction(1, 2)))


def thumbnail_size(op: Thumbnail, width: int, height: int) -> tuple[int, int]:
    """The output size of `op` on a `width` x `height` image (section 3.2), exact arithmetic."""
    w, h = width, height

    def target(v: int | None) -> int:
        assert v is not None
        return min(v, MAX_THUMB_TARGET)

    def scaled(s: Fraction) -> tuple[int, int]:
        return _round(w * s), _round(h * s)

    match op.form:
        case ThumbForm.SCALE:
            return scaled(Fraction(op.percent or 0, 100))
        case ThumbForm.SCALE_WIDTH:
            return _round(Fraction(w * (op.percent or 0), 100)), h
        case ThumbForm.SCALE_HEIGHT:
            return w, _round(Fraction(h * (op.percent or 0), 100))
        case ThumbForm.WIDTH:
            tw = target(op.width)
            return tw, _round(Fraction(h * tw, w))
        case ThumbForm.HEIGHT:
            th = target(op.height)
            return _round(Fraction(w * th, h)), th
        case ThumbForm.EXACT:
            return target(op.width), target(op.height)
        case ThumbForm.AREA:
            area = op.area or 1
            # floor(w * sqrt(A / (w h))) == isqrt(floor(w A / h)): exact, and W' H' <= A
            return max(1, math.isqrt(w * area // h)), max(1, math.isqrt(h * area // w))
        case _:
            sw, sh = Fraction(target(op.width), w), Fraction(target(op.height), h)
            if op.form is ThumbForm.COVER:
                s = max(sw, sh)
            else:
                s = min(sw, sh)
                if (op.form is ThumbForm.SHRINK and s >= 1) or (op.form is ThumbForm.ENLARGE and s <= 1):
                    return w, h
            tw, th = scaled(s)
            # the side that hits its limit comes out exactly at it
            if s == sw:
                tw = target(op.width)
            if s == sh:
                th = target(op.height)
            return tw, th


def _view2_size(stage: View2, width: int, height: int) -> tuple[tuple[int, int], tuple[int, int] | None]:
    """(resize target, centre crop or None) for an imageView2 mode (section 3.10)."""
    mode = stage.mode
    assert mode is not None
    w, h = width, height
    bw = min(stage.width or stage.height or 1, MAX_THUMB_TARGET)
    bh = min(stage.height or stage.width or 1, MAX_THUMB_TARGET)
    if mode in (0, 4, 5):
        long_side, short_side = max(w, h), min(w, h)
        ratios: tuple[Fraction, ...] = (Fraction(bw, long_side), Fraction(bh, short_side))
        s = min(ratios) if mode == 0 else max(ratios)
    else:
        ratios = tuple(
            Fraction(t, side) for t, side in ((stage.width, w), (stage.height, h)) if t is not None
        )
        s = min(ratios) if mode == 2 else max(ratios)
    size = (_round(w * s), _round(h * s))
    crop: tuple[int, int] | None = None
    if mode == 1:
        crop = (min(bw, size[0]), min(bh, size[1]))
    elif mode == 5:
        cw, ch = (bw, bh) if w >= h else (bh, bw)
        crop = (min(cw, size[0]), min(ch, size[1]))
    return size, crop


def _check_output(width: int, height: int) -> None:
    if max(width, height) > MAX_OUTPUT_SIDE:
        raise ImageResolutionExceed(f"The output would be {width}x{height}, a side above {MAX_OUTPUT_SIDE}.")


def _resize(image: Any, width: int, height: int) -> Any:
    _check_output(width, height)
    if (width, height) == (image.width, image.height):
        return image
    return image.thumbnail_image(width, height=height, size="force")


# --- pixel helpers -------------------------------------------------------------------------------------


def _colour(image: Any, rgb: tuple[int, int, int], alpha: int = 255) -> list[float]:
    """`rgb` (+ `alpha` if the image has one) as a background vector for `image`."""
    colour_bands = image.bands - (1 if image.hasalpha() else 0)
    values: list[float] = (
        [round(0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])] if colour_bands == 1 else [*rgb]
    )
    values += [float(rgb[0])] * max(0, colour_bands - len(values))
    values = values[:colour_bands]
    if image.hasalpha():
        values.append(alpha)
    return values


def _parse_rgb(text: str) -> tuple[int, int, int]:
    return int(text[1:3], 16), int(text[3:5], 16), int(text[5:7], 16)


def _background(
    image: Any, transparent: bool, rgb: tuple[int, int, int] = (255, 255, 255)
) -> tuple[Any, Any]:
    """(image, background): with an alpha band added and a transparent background when `transparent`."""
    if transparent:
        if not image.hasalpha():
            image = image.addalpha()
        return image, _colour(image, rgb, 0)
    return image, _colour(image, rgb)


def _split_alpha(image: Any) -> tuple[Any, Any | None]:
    if image.hasalpha():
        return image[: image.bands - 1], image[image.bands - 1]
    return image, None


def _join_alpha(colour: Any, alpha: Any | None, like: Any) -> Any:
    out = colour.cast("uchar")
    if alpha is not None:
        out = out.bandjoin(alpha)
    return out.copy(interpretation=like.interpretation)


def _rounded_mask(width: int, height: int, radius: float) -> Any:
    """0-255 antialiased mask of a `width` x `height` rectangle with corners rounded by `radius`."""
    xyz = pyvips.Image.xyz(width, height)
    ax = ((xyz[0] + 0.5) - width / 2).abs() - (width / 2 - radius)
    ay = ((xyz[1] + 0.5) - height / 2).abs() - (height / 2 - radius)
    ax = (ax > 0).ifthenelse(ax, 0)
    ay = (ay > 0).ifthenelse(ay, 0)
    dist = (ax * ax + ay * ay) ** 0.5
    return ((radius - dist + 0.5) * 255).cast("uchar")  # cast clips to 0..255


def _apply_mask(image: Any, mask: Any, transparent: bool) -> Any:
    if transparent:
        if not image.hasalpha():
            image = image.addalpha()
        colour, alpha = _split_alpha(image)
        return _join_alpha(colour, (alpha * mask / 255).cast("uchar"), image)
    colour, _ = _split_alpha(
        image.flatten(background=_colour(image, (255, 255, 255))) if image.hasalpha() else image
    )
    weight = mask / 255.0
    return _join_alpha(colour * weight + (1 - weight) * 255, None, image)


# --- geometry ------------------------------------------------------------------------------------------


def _anchor(gravity: GravityValue, size: int, extent: int, offset: int, axis: str) -> int:
    """Left (axis x) or top (axis y) of an `extent` region inside `size` for `gravity` and `offset`."""
    g = gravity.value
    start = ("west" in g) if axis == "x" else g.startswith("north")
    end = ("east" in g) if axis == "x" else g.startswith("south")
    if start:
        pos = offset
    elif end:
        pos = size - extent - offset
    else:
        pos = (size - extent) // 2
    return max(0, min(pos, size - extent))


@dataclass
class _Modifiers:
    gravity: GravityValue = GravityValue.NORTHWEST
    dx: int = 0
    dy: int = 0
    pad: Pad | None = None


def _crop(image: Any, op: Crop, mods: _Modifiers) -> Any:
    w, h = image.width, image.height
    cw = min(op.width or w, w)
    ch = min(op.height or h, h)
    dx = mods.dx if op.dx is None else op.dx
    dy = mods.dy if op.dy is None else op.dy
    left = _anchor(mods.gravity, w, cw, dx, "x")
    top = _anchor(mods.gravity, h, ch, dy, "y")
    return image.crop(left, top, cw, ch)


def _cut(image: Any, op: Cut) -> Any:
    w, h = image.width, image.height
    if op.dx >= w or op.dy >= h:
        raise BadRule(f"cut/{op.arg()}", "the region is outside the image")
    return image.crop(op.dx, op.dy, min(op.width, w - op.dx), min(op.height, h - op.dy))


def _pad(image: Any, op: Thumbnail, pad: Pad, transparent: bool) -> Any:
    if not pad.enabled or op.width is None or op.height is None:
        return image
    box_w, box_h = min(op.width, MAX_THUMB_TARGET), min(op.height, MAX_THUMB_TARGET)
    cw, ch = max(box_w, image.width), max(box_h, image.height)
    if (cw, ch) == (image.width, image.height):
        return image
    _check_output(cw, ch)
    if pad.color is not None:
        image, bg = _background(image, False, _parse_rgb(pad.color))
    else:
        image, bg = _background(image, transparent)
    return image.embed(
        (cw - image.width) // 2, (ch - image.height) // 2, cw, ch, extend="background", background=bg
    )


def _rotate(image: Any, degrees: int, transparent: bool) -> Any:
    degrees %= 360
    if degrees == 0:
        return image
    if degrees % 90 == 0:
        return image.rot(f"d{degrees}")
    image, bg = _background(image, transparent)
    out = image.rotate(degrees, background=bg)
    _check_output(out.width, out.height)
    return out


def _round_corners(image: Any, radius: int, transparent: bool, inscribed: bool) -> Any:
    if inscribed:
        r = min(radius, min(image.width, image.height) // 2)
        side = 2 * r
        image = image.crop((image.width - side) // 2, (image.height - side) // 2, side, side)
        mask = _rounded_mask(side, side, r)
    else:
        r = min(radius, min(image.width, image.height) // 2)
        mask = _rounded_mask(image.width, image.height, r)
    return _apply_mask(image, mask, transparent)


# --- filters -------------------------------------------------------------------------------------------


def _filter(image: Any, op: Op) -> Any:
    if isinstance(op, Grayscale):
        return image.colourspace("b-w") if op.enabled else image
    if isinstance(op, Blur):
        sigma = float(min(op.sigma, op.radius))
        return image.gaussblur(sigma).cast("uchar")
    if isinstance(op, Sharpen):
        out = image.sharpen(sigma=1.0, m2=op.value / 25)
        return out if out.interpretation == image.interpretation else out.colourspace(image.interpretation)
    colour, alpha = _split_alpha(image)
    if isinstance(op, Bright):
        return _join_alpha(colour + op.value * 2.55, alpha, image)
    if isinstance(op, Contrast):
        a = (100 + op.value) / 100
        return _join_alpha(colour.linear(a, 128 * (1 - a)), alpha, image)
    return image


# --- encoding ------------------------------------------------------------------------------------------


@dataclass
class _Output:
    format: ImageFormat | None = None
    quality: Quality | RQuality | LQuality | None = None
    interlace: bool = False
    strip: bool = False
    size_limit: SizeLimit | None = None
    minisize: bool = False
    ignore_error: bool = False

    def merge_op(self, op: Op) -> None:
        if isinstance(op, Format):
            self.format = op.format
        elif isinstance(op, Quality | RQuality | LQuality):
            self.quality = op
        elif isinstance(op, Interlace):
            self.interlace = op.enabled
        elif isinstance(op, Strip):
            self.strip = True
        elif isinstance(op, SizeLimit):
            self.size_limit = op
        elif isinstance(op, Minisize):
            self.minisize = op.value == 1
        elif isinstance(op, IgnoreError):
            self.ignore_error = True

    def merge_view2(self, stage: View2) -> None:
        if stage.format is not None:
            self.format = stage.format
        if stage.quality is not None:
            self.quality = Quality(stage.quality, stage.quality_exact)
        if stage.rquality is not None:
            self.quality = RQuality(stage.rquality)
        if stage.lquality is not None:
            self.quality = LQuality(stage.lquality)
        if stage.interlace is not None:
            self.interlace = stage.interlace
        self.ignore_error = self.ignore_error or stage.ignore_error


def _quality(q0: int, op: Quality | RQuality | LQuality | None) -> int:
    if op is None:
        q = q0
    elif isinstance(op, Quality):
        q = op.value if op.exact else min(q0, op.value)
    elif isinstance(op, RQuality):
        q = q0 * op.value // 100
    else:
        q = max(q0, op.value)
    return max(1, min(100, q))


def _flatten(image: Any) -> Any:
    return image.flatten(background=_colour(image, (255, 255, 255))) if image.hasalpha() else image


def _bmp(image: Any) -> bytes:
    """24-bit uncompressed BMP (libvips has no BMP saver)."""
    image = _flatten(image)
    if image.bands == 1:
        image = image.colourspace("srgb")
    image = image.cast("uchar")
    w, h = image.width, image.height
    raw = image[2].bandjoin([image[1], image[0]]).flipver().write_to_memory()
    row = w * 3
    pad = -row % 4
    data = raw if pad == 0 else b"".join(raw[i * row : (i + 1) * row] + b"\0" * pad for i in range(h))
    file_header = struct.pack("<2sIHHI", b"BM", 54 + len(data), 0, 0, 54)
    info_header = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, len(data), 2835, 2835, 0, 0)
    return file_header + info_header + data


def _encode(image: Any, fmt: ImageFormat, quality: int, out: _Output) -> bytes:
    keep: dict[str, Any] = {"keep": "none"} if out.strip else {}
    if fmt in (ImageFormat.JPG, ImageFormat.YJPEG):
        return bytes(
            _flatten(image).jpegsave_buffer(Q=quality, interlace=out.interlace, optimize_coding=True, **keep)
        )
    if fmt in (ImageFormat.PNG, ImageFormat.APNG):
        return bytes(image.pngsave_buffer(**keep))
    if fmt is ImageFormat.WEBP:
        if max(image.width, image.height) > WEBP_MAX_SIDE:
            raise ImageResolutionExceed(f"WebP sides are at most {WEBP_MAX_SIDE}.")
        return bytes(image.webpsave_buffer(Q=quality, **keep))
    if fmt is ImageFormat.GIF:
        return bytes(image.gifsave_buffer(**keep))
    if fmt is ImageFormat.TIFF:
        return bytes(image.tiffsave_buffer(**keep))
    if fmt is ImageFormat.BMP:
        return _bmp(image)
    if fmt is ImageFormat.AVIF:
        try:
            return bytes(image.heifsave_buffer(Q=quality, compression="av1", **keep))
        except pyvips.Error as exc:
            raise InvalidImageFormat("AVIF output is not available on this server.") from exc
    if fmt in (ImageFormat.HEIF, ImageFormat.HEIC):
        try:
            return bytes(image.heifsave_buffer(Q=quality, compression="hevc", **keep))
        except pyvips.Error as exc:
            raise InvalidImageFormat(f"{fmt.value.upper()} output is not available on this server.") from exc
    raise InvalidImageFormat(f"Output format {fmt.value} is not supported.")


def _encode_limited(image: Any, fmt: ImageFormat, quality: int, out: _Output) -> bytes:
    data = _encode(image, fmt, quality, out)
    limit = out.size_limit
    if limit is None or fmt not in (ImageFormat.JPG, ImageFormat.YJPEG) or len(data) <= limit.limit_bytes:
        return data
    lo, hi, best = 1, quality - 1, b""
    while lo <= hi:  # the highest quality that fits
        mid = (lo + hi) // 2
        candidate = _encode(image, fmt, mid, out)
        if len(candidate) <= limit.limit_bytes:
            best, lo = candidate, mid + 1
        else:
            hi = mid - 1
    return best or _encode(image, fmt, 1, out)


# --- JPEG quality estimate -----------------------------------------------------------------------------

_STD_LUMINANCE = (  # the libjpeg (IJG) luminance table at quality 50
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
_STD_LUMINANCE_SUM = sum(sum(row) for row in _STD_LUMINANCE)


def _luminance_table(data: bytes) -> list[int] | None:
    i = 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker in (0xD9, 0xDA):  # EOI, SOS: no tables after this
            return None
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker == 0xDB:
            j, end = i + 4, i + 2 + length
            while j < end:
                precision, table_id = data[j] >> 4, data[j] & 0x0F
                size = 128 if precision else 64
                body = data[j + 1 : j + 1 + size]
                if table_id == 0:
                    if precision:
                        return [int.from_bytes(body[k : k + 2], "big") for k in range(0, len(body), 2)]
                    return list(body)
                j += 1 + size
        i += 2 + length
    return None


def estimate_jpeg_quality(path: str | os.PathLike[str]) -> int | None:
    """The libjpeg quality (1-100) that gives the file's luminance table, or None if not a JPEG."""
    with open(path, "rb") as f:
        data = f.read(1 << 17)
    if not data.startswith(b"\xff\xd8"):
        return None
    table = _luminance_table(data)
    if not table or len(table) != 64:
        return None
    if all(v == 1 for v in table):
        return 100
    scale = sum(table) * 100 / _STD_LUMINANCE_SUM
    q = (200 - scale) / 2 if scale <= 100 else 5000 / scale
    return max(1, min(100, round(q)))


# --- the pipeline --------------------------------------------------------------------------------------

_GEOMETRY = (Thumbnail, Crop, Cut, Scrop, Iradius, Rradius, Rotate, Flip)
_FILTERS = (Blur, Sharpen, Bright, Contrast, Grayscale)


def _last_of_each(ops: Iterable[Op], kinds: tuple[type, ...]) -> list[Op]:
    """Ops of `kinds` in written order, keeping only the last of each class (the last one wins)."""
    chosen = [op for op in ops if isinstance(op, kinds)]
    return [
        op for i, op in enumerate(chosen) if not any(type(later) is type(op) for later in chosen[i + 1 :])
    ]


@dataclass
class _Run:
    path: str
    alpha_out: bool
    image: Any = None
    fast: bool = False


def _modifiers(ops: Sequence[Op]) -> _Modifiers:
    mods = _Modifiers()
    for op in ops:
        if isinstance(op, Gravity):
            mods.gravity = op.value
        elif isinstance(op, Dx):
            mods.dx = op.value
        elif isinstance(op, Dy):
            mods.dy = op.value
        elif isinstance(op, Pad):
            mods.pad = op
    return mods


def _run_mogr2(run: _Run, stage: Mogr2, first: bool, head: Any) -> None:
    ops = stage.ops
    mods = _modifiers(ops)
    geometry = _last_of_each(ops, _GEOMETRY)
    orient = any(isinstance(op, AutoOrient) for op in ops)
    if first and run.image is None:
        lead = geometry[0] if geometry else None
        if isinstance(lead, Thumbnail) and not orient:
            # fast path: shrink-on-load straight from the file
            tw, th = thumbnail_size(lead, int(head.width), int(head.height))
            _check_output(tw, th)
            thumb = pyvips.Image.thumbnail(run.path, tw, height=th, size="force", no_rotate=True)
            run.image = _normalise(thumb).copy_memory()
            geometry = geometry[1:]
            if mods.pad is not None:
                run.image = _pad(run.image, lead, mods.pad, run.alpha_out)
        else:
            run.image = _normalise(pyvips.Image.new_from_file(run.path))
    image = run.image
    if orient:
        image = image.autorot()
    for op in geometry:
        if isinstance(op, Thumbnail):
            image = _resize(image, *thumbnail_size(op, image.width, image.height))
            if mods.pad is not None:
                image = _pad(image, op, mods.pad, run.alpha_out)
        elif isinstance(op, Crop):
            image = _crop(image, op, mods)
        elif isinstance(op, Cut):
            image = _cut(image, op)
        elif isinstance(op, Scrop):
            _check_output(op.width, op.height)
            image = image.thumbnail_image(op.width, height=op.height, size="both", crop="centre")
        elif isinstance(op, Iradius | Rradius):
            image = _round_corners(image, op.radius, run.alpha_out, isinstance(op, Iradius))
        elif isinstance(op, Rotate):
            image = _rotate(image, op.degrees, run.alpha_out)
        elif isinstance(op, Flip):
            image = image.flipver() if op.direction is FlipDirection.VERTICAL else image.fliphor()
    for op in _last_of_each(ops, _FILTERS):
        image = _filter(image, op)
    run.image = image


def _run_view2(run: _Run, stage: View2) -> None:
    if run.image is None:
        run.image = _normalise(pyvips.Image.new_from_file(run.path))
    if stage.mode is None:
        return
    image = run.image
    size, crop = _view2_size(stage, image.width, image.height)
    image = _resize(image, *size)
    if crop is not None and crop != size:
        image = image.crop((image.width - crop[0]) // 2, (image.height - crop[1]) // 2, *crop)
    run.image = image


def _plan(pipeline: Pipeline) -> _Output:
    out = _Output()
    for stage in pipeline.stages:
        if isinstance(stage, Info):
            raise BadRule(stage.kind.value, f"{stage.kind.value} is answered by the caller, not by process")
        if isinstance(stage, Style):
            raise BadRule(f"style/{stage.name}", "styles must be expanded before processing")
        if isinstance(stage, Mogr2):
            for op in stage.ops:
                out.merge_op(op)
        else:
            out.merge_view2(stage)
    return out


def process(
    path: str | os.PathLike[str],
    pipeline: Pipeline,
    *,
    max_pixels: int = 100_000_000,
    source_format: str | None = None,
    max_side: int = 30000,
) -> tuple[bytes, str]:
    """Run the Mogr2/View2 stages of `pipeline` on the image at `path`: (output bytes, mime type).

    Raises `BadRule` (400 InvalidArgument), `ImageTooLarge` / `ImageResolutionExceed`,
    `InvalidImageFormat` or `InvalidImageSource`. With `ignore-error/1` (or imageView2's) any of those
    raised after the rule was parsed gives the original bytes and type instead (section 3.9).
    """
    fspath = os.fspath(path)
    out = _plan(pipeline)
    original_fmt: ImageFormat | None = None
    try:
        head = _open_header(fspath)
        original_fmt = _source_format(head, source_format)
        _check_limits(head, max_pixels, max_side)
        fmt = out.format or original_fmt or ImageFormat.PNG
        if fmt not in _MIME:
            raise InvalidImageFormat(f"Output format {fmt.value} is not supported.")
        run = _Run(fspath, alpha_out=fmt in _ALPHA_FORMATS)
        for i, stage in enumerate(pipeline.stages):
            if isinstance(stage, Mogr2):
                _run_mogr2(run, stage, i == 0, head)
            elif isinstance(stage, View2):
                _run_view2(run, stage)
        if run.image is None:
            run.image = _normalise(pyvips.Image.new_from_file(fspath))
        _check_output(run.image.width, run.image.height)
        q0 = (estimate_jpeg_quality(fspath) if original_fmt is ImageFormat.JPG else None) or DEFAULT_QUALITY
        data = _encode_limited(run.image, fmt, _quality(q0, out.quality), out)
        mime = _MIME[fmt]
    except (BadRule, ImageError, pyvips.Error) as exc:
        if out.ignore_error and os.path.isfile(fspath):
            return _original(fspath, original_fmt)
        if isinstance(exc, pyvips.Error):
            raise InvalidImageFormat() from exc
        raise
    keep_original = out.minisize or (out.size_limit is not None and out.size_limit.keep_original)
    if keep_original and len(data) >= os.path.getsize(fspath):
        return _original(fspath, original_fmt)
    return data, mime


def _original(path: str, fmt: ImageFormat | None) -> tuple[bytes, str]:
    with open(path, "rb") as f:
        return f.read(), _MIME.get(fmt, "application/octet-stream") if fmt else "application/octet-stream"


# --- imageInfo -----------------------------------------------------------------------------------------

_BIT_DEPTH = {
    "uchar": 8,
    "char": 8,
    "ushort": 16,
    "short": 16,
    "uint": 32,
    "int": 32,
    "float": 32,
    "double": 64,
}


def image_info(path: str | os.PathLike[str], *, max_pixels: int = 250_000_000) -> dict[str, str]:
    """The `?imageInfo` body (section 5.1): every value a string."""
    fspath = os.fspath(path)
    head = _open_header(fspath)
    _check_limits(head, max_pixels, 50000)
    fields = head.get_fields()
    fmt = _source_format(head, None)
    if fmt is None:
        raise InvalidImageFormat()
    with open(fspath, "rb") as f:
        digest = hashlib.md5()
        size = 0
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    bit_depth = (
        int(head.get("bits-per-sample"))
        if "bits-per-sample" in fields
        else _BIT_DEPTH.get(str(head.format), 8)
    )
    if "resolution-unit" in fields:
        hdpi, vdpi = round(head.xres * 25.4), round(head.yres * 25.4)
    else:
        hdpi = vdpi = 0
    try:
        small = _flatten(_normalise(pyvips.Image.thumbnail(fspath, 64, no_rotate=True))).copy_memory()
        if small.bands == 1:
            small = small.colourspace("srgb")
        rgb = [round(small[b].avg()) for b in range(3)]
        photo_rgb = "0x" + "".join(f"{max(0, min(255, v)):02x}" for v in rgb)
    except pyvips.Error as exc:
        raise InvalidImageFormat() from exc
    return {
        "format": _INFO_NAMES.get(fmt, fmt.value),
        "width": str(head.width),
        "height": str(head.height),
        "size": str(size),
        "md5": digest.hexdigest(),
        "frame_count": str(head.get("n-pages") if "n-pages" in fields else 1),
        "bit_depth": str(bit_depth),
        "vertical_dpi": str(vdpi),
        "horizontal_dpi": str(hdpi),
        "photo_rgb": photo_rgb,
    }
