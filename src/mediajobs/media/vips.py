"""The imageMogr2 / imageView2 engine on libvips (spec: image-processing.md, sections 3, 5 and 8).

`process(path, pipeline)` loads one image, runs the `Mogr2` / `View2` stages of a parsed `Pipeline`
left to right and encodes the result; it returns ``(bytes, mime type)``. The information calls of
section 5 are `image_info` (``?imageInfo``), `exif` and `image_ave`; `describe_bytes` gives the
`image_info` fields of bytes in memory (a processed output), and `orientation` and
`estimate_jpeg_quality` the rest of what Pic-Operations reports.

Every call works under an `ImageLimits` (section 8). The input file size is checked before the file is
opened, pixels and sides on the header before any pixel is decoded (`ImageResolutionExceed`, a subclass
of `ImageTooLarge`, so callers that catch the latter see both). Thumbnail targets above 10000 are
clamped to 10000 and an output side above `max_output_side` is refused before the resize is done; an
encoded output above `max_output_bytes` is `ImageTooLarge`. `timeout` bounds the work of one call: the
image being computed carries a libvips progress signal that kills its evaluation once the deadline has
passed, and the steps between check it too; either way the call raises `ImageProcessTimeout`.

Inside one `imageMogr2` stage the order is the one of section 3.1: `auto-orient` first, then the
geometry operations in written order, then the pixel filters in written order; output options apply
at encode time, and a later stage's output option overrides an earlier one's. A repeated operation:
the last one wins. `gravity`, `dx` and `dy` modify every crop of the stage; `pad` modifies the
stage's thumbnail.

Animated GIF and WebP inputs written as GIF or WebP stay animated (section 3.8): all frames are loaded
as one tall strip (``page-height`` tall frames), every geometry operation and filter runs on each frame,
and the frame delays and loop count are kept. Animated images are never enlarged: a resize that would
grow a side leaves the frames as they are. `cgif/<n>` (GIF output only) keeps n evenly spaced frames
(30 for ``cgif/1``), each shown for the time of the frames it stands for, so the animation lasts as
long. An animated input written to a still format gives its first frame.

Not done yet: `cgif` reduces frames but not colours; HEIF/HEIC output needs an HEVC encoder that the
bundled libvips lacks (`InvalidImageFormat`), AVIF works; `tpg`, `psd` and `astc` are refused with
`InvalidImageFormat`; `apng` is written as a still PNG; BMP is written by a small encoder here (libvips
has neither a BMP saver nor a loader; `describe_bytes` reads the header of the BMPs written here).
Info and style stages are not run by `process`: the caller answers them with the functions above on
its output, and styles must be expanded before `process` (`BadRule`).
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import pairwise
from typing import Any, ClassVar

import pyvips  # type: ignore[import-untyped]

from mediajobs.errors import MediaJobsError
from mediajobs.media import exif as _exif
from mediajobs.media.mogr2 import (
    AutoOrient,
    BadRule,
    Blur,
    Bright,
    Cgif,
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

# libvips' operation cache would keep decoded inputs keyed by file name and hand a repeated request
# its old pixels: memory we do not bound, and a benchmark that measures nothing. Every call decodes.
pyvips.cache_set_max(0)

__all__ = [
    "IMAGE_INFO_FIELDS",
    "MAX_OUTPUT_SIDE",
    "MAX_THUMB_TARGET",
    "ImageError",
    "ImageLimits",
    "ImageProcessTimeout",
    "ImageResolutionExceed",
    "ImageTooLarge",
    "InvalidImageFormat",
    "InvalidImageSource",
    "describe_bytes",
    "describe_file",
    "estimate_jpeg_quality",
    "exif",
    "exif_bytes",
    "image_ave",
    "image_info",
    "orientation",
    "process",
    "thumbnail_size",
]

MAX_OUTPUT_SIDE = 9999
"""Largest output side by default (section 8)."""
MAX_THUMB_TARGET = 10000
"""Thumbnail width/height/area sides above this are clamped to it (section 3.2)."""
DEFAULT_QUALITY = 75
"""q0 when the source quality can't be estimated (section 3.6)."""
WEBP_MAX_SIDE = 16383
CGIF_DEFAULT_FRAMES = 30
"""Frames kept by ``cgif/1`` (section 3.5)."""
_DEFAULT_DELAY = 100  # ms, a frame without a delay


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


class ImageProcessTimeout(ImageError):
    """Processing the image took too long."""

    code, http_status = "RequestTimeout", 408


# --- limits --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageLimits:
    """What one call may consume (section 8); the defaults are the spec's recommended ones."""

    max_input_bytes: int = 32 * 1024 * 1024
    """Largest input file, checked before it is opened (`ImageTooLarge`)."""
    max_pixels: int = 250_000_000
    """Most pixels in one frame, checked on the header (`ImageResolutionExceed`)."""
    max_side: int = 30000
    """Longest input side, checked on the header (`ImageResolutionExceed`)."""
    max_frames: int = 300
    """Most frames of an animated image that is processed as one (`ImageTooLarge`)."""
    max_animated_pixels: int = 250_000_000
    """Most width x height x frames of an animated image that is processed as one (`ImageTooLarge`)."""
    max_output_side: int = MAX_OUTPUT_SIDE
    """Longest output side (of one frame), checked before resizing (`ImageResolutionExceed`)."""
    max_output_bytes: int = 32 * 1024 * 1024
    """Largest encoded output (`ImageTooLarge`)."""
    timeout: float = 30.0
    """Seconds of processing per call (`ImageProcessTimeout`)."""


class _Deadline:
    """The end of one call's time. `watch` hands libvips an image whose evaluation it kills once the
    deadline has passed; `check` is for the steps in between."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def expired(self) -> bool:
        return time.monotonic() > self.at

    def error(self) -> ImageProcessTimeout:
        return ImageProcessTimeout(f"Processing the image took more than {self.seconds:g} s.")

    def check(self) -> None:
        if self.expired():
            raise self.error()

    def watch(self, image: Any) -> Any:
        """A private copy of `image` (libvips never caches `copy`, so neither the signal nor a kill
        reaches another caller's image) whose evaluation stops once the deadline has passed."""
        watched = image.copy()
        watched.set_progress(True)
        watched.signal_connect("eval", self._on_eval)
        return watched

    def _on_eval(self, image: Any, _progress: Any) -> None:
        if time.monotonic() > self.at:
            image.set_kill(True)

    def render(self, image: Any) -> Any:
        """`image` computed into memory within the deadline."""
        self.check()
        try:
            return self.watch(image).copy_memory()
        except pyvips.Error as exc:
            if self.expired():
                raise self.error() from exc
            raise


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


def _check_input_size(path: str, limits: ImageLimits) -> None:
    """Refuse a file over `limits.max_input_bytes` before opening it."""
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise InvalidImageSource() from exc
    if size > limits.max_input_bytes:
        raise ImageTooLarge(f"The image is {size} bytes, more than {limits.max_input_bytes}.")


def _open_header(path: str) -> Any:
    """Open `path` for its header only (nothing is decoded yet)."""
    try:
        return pyvips.Image.new_from_file(path, access="sequential")
    except pyvips.Error as exc:
        if not os.path.isfile(path):
            raise InvalidImageSource() from exc
        raise InvalidImageFormat() from exc


def _check_limits(head: Any, limits: ImageLimits) -> None:
    """Refuse an image before decoding when its header says it is over the limits."""
    width, height = int(head.width), int(head.height)
    if width * height > limits.max_pixels:
        raise ImageResolutionExceed(f"The image has {width}x{height} pixels, more than {limits.max_pixels}.")
    if max(width, height) > limits.max_side:
        raise ImageResolutionExceed(f"The image is {width}x{height}, a side is above {limits.max_side}.")


def _pages(head: Any) -> int:
    return int(head.get("n-pages")) if "n-pages" in head.get_fields() else 1


def _check_frames(head: Any, limits: ImageLimits) -> None:
    """Refuse an animation that is processed as one when it has too many frames or pixels."""
    frames, pixels = _pages(head), int(head.width) * int(head.height)
    if frames > limits.max_frames:
        raise ImageTooLarge(f"The image has {frames} frames, more than {limits.max_frames}.")
    if pixels * frames > limits.max_animated_pixels:
        raise ImageTooLarge(
            f"The image has {frames} frames of {pixels} pixels, more than {limits.max_animated_pixels} in all."
        )


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


def _check_output(width: int, height: int, limit: int) -> None:
    if max(width, height) > limit:
        raise ImageResolutionExceed(f"The output would be {width}x{height}, a side above {limit}.")


def _resize(image: Any, width: int, height: int, limit: int, enlarge: bool = True) -> Any:
    """`image` resized to `width` x `height`; left as it is when that would grow a side and not `enlarge`."""
    if not enlarge and (width > image.width or height > image.height):
        return image
    _check_output(width, height, limit)
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
    colour = _flatten(image)
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


def _pad(image: Any, op: Thumbnail, pad: Pad, transparent: bool, limit: int) -> Any:
    if not pad.enabled or op.width is None or op.height is None:
        return image
    box_w, box_h = min(op.width, MAX_THUMB_TARGET), min(op.height, MAX_THUMB_TARGET)
    cw, ch = max(box_w, image.width), max(box_h, image.height)
    if (cw, ch) == (image.width, image.height):
        return image
    _check_output(cw, ch, limit)
    if pad.color is not None:
        image, bg = _background(image, False, _parse_rgb(pad.color))
    else:
        image, bg = _background(image, transparent)
    return image.embed(
        (cw - image.width) // 2, (ch - image.height) // 2, cw, ch, extend="background", background=bg
    )


def _rotate(image: Any, degrees: int, transparent: bool, limit: int) -> Any:
    degrees %= 360
    if degrees == 0:
        return image
    if degrees % 90 == 0:
        return image.rot(f"d{degrees}")
    image, bg = _background(image, transparent)
    out = image.rotate(degrees, background=bg)
    _check_output(out.width, out.height, limit)
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
    cgif: int | None = None

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
        elif isinstance(op, Cgif):
            self.cgif = CGIF_DEFAULT_FRAMES if op.frames == 1 else op.frames

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


def _frame_height(image: Any) -> int:
    """The height of one frame: ``page-height`` for an animation, else the image's."""
    return int(image.get("page-height")) if "page-height" in image.get_fields() else int(image.height)


def _flatten(image: Any) -> Any:
    """`image` without its alpha band, laid on white."""
    if not image.hasalpha():
        return image
    return image.flatten(background=_colour(image, (255, 255, 255))[:-1])  # the colour bands only


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
        if max(image.width, _frame_height(image)) > WEBP_MAX_SIDE:
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


def estimate_jpeg_quality(source: str | os.PathLike[str] | bytes) -> int | None:
    """The libjpeg quality (1-100) that gives the luminance table of a JPEG file (a path) or of JPEG bytes,
    or None if it is not a JPEG."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source[: 1 << 17])
    else:
        with open(source, "rb") as f:
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


_Step = Callable[[Any], Any]
_ANIMATED = frozenset({ImageFormat.GIF, ImageFormat.WEBP})


def _delays(image: Any, count: int) -> list[int]:
    """The `count` frame delays (ms) of an animation; missing ones are `_DEFAULT_DELAY`."""
    found = [int(d) for d in image.get("delay")] if "delay" in image.get_fields() else []
    return (found + [_DEFAULT_DELAY] * count)[:count]


def _frames(strip: Any, page_height: int) -> list[Any]:
    """The frames of an animation strip, without its ``page-height`` (so that no operation on a frame
    mistakes it for pages of its own)."""
    strip = strip.copy()
    if "page-height" in strip.get_fields():
        strip.remove("page-height")
    return [strip.crop(0, top, strip.width, page_height) for top in range(0, strip.height, page_height)]


def _pick_frames(strip: Any, page_height: int, delays: list[int], keep: int) -> tuple[Any, list[int]]:
    """`keep` evenly spaced frames of an animation, each shown as long as the frames it stands for."""
    count = len(delays)
    if count <= keep:
        return strip, delays
    chosen = [i * count // keep for i in range(keep)]
    bounds = [*chosen, count]
    frames = _frames(strip, page_height)
    picked = pyvips.Image.arrayjoin([frames[i] for i in chosen], across=1)
    return picked, [sum(delays[a:b]) for a, b in pairwise(bounds)]


@dataclass
class _Run:
    """One `process` call. An animation is one strip of `page_height` tall frames."""

    path: str
    alpha_out: bool
    limits: ImageLimits
    deadline: _Deadline
    animated: bool = False
    keep_frames: int | None = None
    image: Any = None
    page_height: int | None = None
    delays: list[int] = field(default_factory=list)
    loop: int = 0

    def load(self, image: Any = None) -> None:
        """Take the input: `image` (a shrink-on-load thumbnail, computed into memory now) or the whole
        file (decoded when it is first needed, or now for an animation)."""
        render = image is not None or self.animated
        if image is None:
            image = pyvips.Image.new_from_file(self.path, **({"n": -1} if self.animated else {}))
        image = _normalise(image)
        if self.animated:
            self.page_height = _frame_height(image)
            self.delays = _delays(image, image.height // self.page_height)
            self.loop = int(image.get("loop")) if "loop" in image.get_fields() else 0
            if self.keep_frames is not None:
                image, self.delays = _pick_frames(image, self.page_height, self.delays, self.keep_frames)
        self.image = self.deadline.render(image) if render else image

    def apply(self, steps: Sequence[_Step]) -> None:
        """Run `steps` in order on the image, or on each frame of an animation."""
        if not steps:
            return
        if self.page_height is None:
            image = self.image
            for step in steps:
                image = step(image)
                self.deadline.check()
            self.image = image
            return
        frames = []
        for frame in _frames(self.image, self.page_height):
            for step in steps:
                frame = step(frame)
            frames.append(frame)
            self.deadline.check()
        self.image = pyvips.Image.arrayjoin(frames, across=1)
        self.page_height = int(frames[0].height)

    def output(self) -> Any:
        """The image to encode: an animation gets its frame height, delays and loop count."""
        if self.image is None:
            self.load()
        if self.page_height is None:
            return self.image
        image = self.image.copy()
        image.set_type(pyvips.GValue.gint_type, "page-height", self.page_height)
        image.set_type(pyvips.GValue.array_int_type, "delay", self.delays)
        image.set_type(pyvips.GValue.gint_type, "loop", self.loop)
        return image


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


def _thumbnail_step(run: _Run, op: Thumbnail, pad: Pad | None, resize: bool = True) -> _Step:
    limit = run.limits.max_output_side

    def thumbnail(image: Any) -> Any:
        if resize:
            image = _resize(image, *thumbnail_size(op, image.width, image.height), limit, not run.animated)
        return image if pad is None else _pad(image, op, pad, run.alpha_out, limit)

    return thumbnail


def _geometry_step(run: _Run, op: Op, mods: _Modifiers) -> _Step:
    limit, alpha = run.limits.max_output_side, run.alpha_out
    if isinstance(op, Thumbnail):
        return _thumbnail_step(run, op, mods.pad)
    if isinstance(op, Crop):
        return lambda image: _crop(image, op, mods)
    if isinstance(op, Cut):
        return lambda image: _cut(image, op)
    if isinstance(op, Scrop):

        def scrop(image: Any) -> Any:
            _check_output(op.width, op.height, limit)
            return image.thumbnail_image(op.width, height=op.height, size="both", crop="centre")

        return scrop
    if isinstance(op, Iradius | Rradius):
        inscribed = isinstance(op, Iradius)
        return lambda image: _round_corners(image, op.radius, alpha, inscribed)
    if isinstance(op, Rotate):
        return lambda image: _rotate(image, op.degrees, alpha, limit)
    if isinstance(op, Flip):
        vertical = op.direction is FlipDirection.VERTICAL
        return lambda image: image.flipver() if vertical else image.fliphor()
    raise AssertionError(f"not a geometry operation: {op!r}")


def _filter_step(op: Op) -> _Step:
    return lambda image: _filter(image, op)


def _load_thumbnail(run: _Run, op: Thumbnail, head: Any) -> bool:
    """Load the input with `op` done by shrink-on-load; False (and the whole input loaded) when an
    animation would be enlarged, which it never is."""
    width, height = int(head.width), int(head.height)
    tw, th = thumbnail_size(op, width, height)
    if run.animated and (tw > width or th > height):
        run.load()
        return False
    _check_output(tw, th, run.limits.max_output_side)
    fields = head.get_fields()
    loader = str(head.get("vips-loader")) if "vips-loader" in fields else ""
    if loader.startswith("jpegload") and "icc-profile-data" not in fields:
        # libjpeg's DCT scaling to the smallest 1/2^k size that still covers the target, then one
        # reduce: a quarter less CPU than `thumbnail`, which probes the file again and shrinks less
        # on load. With an ICC profile, `thumbnail` runs instead, for its colour management.
        shrink = 1
        while shrink < 8 and -(-width // (shrink * 2)) >= tw and -(-height // (shrink * 2)) >= th:
            shrink *= 2
        loaded = pyvips.Image.jpegload(run.path, shrink=shrink)
        run.load(loaded.thumbnail_image(tw, height=th, size="force", no_rotate=True))
        return True
    source = run.path + "[n=-1]" if run.animated else run.path
    run.load(pyvips.Image.thumbnail(source, tw, height=th, size="force", no_rotate=True))
    return True


def _run_mogr2(run: _Run, stage: Mogr2, first: bool, head: Any) -> None:
    ops = stage.ops
    mods = _modifiers(ops)
    geometry = _last_of_each(ops, _GEOMETRY)
    orient = any(isinstance(op, AutoOrient) for op in ops)
    steps: list[_Step] = []
    if run.image is None:
        lead = geometry[0] if geometry else None
        if first and isinstance(lead, Thumbnail) and not orient:
            # fast path: shrink-on-load straight from the file
            if _load_thumbnail(run, lead, head):
                geometry = geometry[1:]
                if mods.pad is not None:
                    steps.append(_thumbnail_step(run, lead, mods.pad, resize=False))
        else:
            run.load()
    if orient:
        steps.append(lambda image: image.autorot())
    steps += [_geometry_step(run, op, mods) for op in geometry]
    steps += [_filter_step(op) for op in _last_of_each(ops, _FILTERS)]
    run.apply(steps)


def _run_view2(run: _Run, stage: View2) -> None:
    if run.image is None:
        run.load()
    if stage.mode is None:
        return
    limit = run.limits.max_output_side

    def view(image: Any) -> Any:
        size, crop = _view2_size(stage, image.width, image.height)
        image = _resize(image, *size, limit, not run.animated)
        if crop is not None:
            cw, ch = min(crop[0], image.width), min(crop[1], image.height)
            if (cw, ch) != (image.width, image.height):
                image = image.crop((image.width - cw) // 2, (image.height - ch) // 2, cw, ch)
        return image

    run.apply([view])


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
    source_format: str | None = None,
    limits: ImageLimits | None = None,
) -> tuple[bytes, str]:
    """Run the Mogr2/View2 stages of `pipeline` on the image at `path`: (output bytes, mime type).

    Raises `BadRule` (400 InvalidArgument), `ImageTooLarge` / `ImageResolutionExceed`,
    `InvalidImageFormat`, `InvalidImageSource` or `ImageProcessTimeout` (408 RequestTimeout). With
    `ignore-error/1` (or imageView2's) any of those but the timeout raised after the rule was parsed
    gives the original bytes and type instead (section 3.9). `source_format` (a file extension or mime
    type) names the input's format when libvips can't tell.
    """
    limits = limits or ImageLimits()
    deadline = _Deadline(limits.timeout)
    fspath = os.fspath(path)
    out = _plan(pipeline)
    original_fmt: ImageFormat | None = None
    try:
        _check_input_size(fspath, limits)
        head = _open_header(fspath)
        original_fmt = _source_format(head, source_format)
        _check_limits(head, limits)
        fmt = out.format or original_fmt or ImageFormat.PNG
        if fmt not in _MIME:
            raise InvalidImageFormat(f"Output format {fmt.value} is not supported.")
        animated = original_fmt in _ANIMATED and fmt in _ANIMATED and _pages(head) > 1
        if animated:
            _check_frames(head, limits)
        run = _Run(
            fspath,
            alpha_out=fmt in _ALPHA_FORMATS,
            limits=limits,
            deadline=deadline,
            animated=animated,
            keep_frames=out.cgif if animated and fmt is ImageFormat.GIF else None,
        )
        for i, stage in enumerate(pipeline.stages):
            if isinstance(stage, Mogr2):
                _run_mogr2(run, stage, i == 0, head)
            elif isinstance(stage, View2):
                _run_view2(run, stage)
        image = run.output()
        _check_output(image.width, _frame_height(image), limits.max_output_side)
        q0 = (estimate_jpeg_quality(fspath) if original_fmt is ImageFormat.JPG else None) or DEFAULT_QUALITY
        deadline.check()
        data = _encode_limited(deadline.watch(image), fmt, _quality(q0, out.quality), out)
        if len(data) > limits.max_output_bytes:
            raise ImageTooLarge(f"The output is {len(data)} bytes, more than {limits.max_output_bytes}.")
        mime = _MIME[fmt]
    except (BadRule, ImageError, pyvips.Error) as exc:
        if isinstance(exc, ImageProcessTimeout):
            raise
        if deadline.expired():
            raise deadline.error() from exc
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

IMAGE_INFO_FIELDS = (
    "format",
    "width",
    "height",
    "size",
    "md5",
    "frame_count",
    "bit_depth",
    "vertical_dpi",
    "horizontal_dpi",
    "photo_rgb",
)
"""The keys of the `?imageInfo` body, in order; `describe_file` / `describe_bytes` add ``quality``
(JPEG only) and ``orientation``."""


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


def _average_hex(image: Any, deadline: _Deadline) -> str:
    """The average colour of `image` (a small thumbnail) as ``0xrrggbb``, alpha flattened on white."""
    try:
        small = deadline.render(_flatten(_normalise(image)))
        if small.bands == 1:
            small = small.colourspace("srgb")
        rgb = [round(small[b].avg()) for b in range(3)]
    except pyvips.Error as exc:
        raise InvalidImageFormat() from exc
    return "0x" + "".join(f"{max(0, min(255, v)):02x}" for v in rgb)


def _bmp_info(data: bytes, limits: ImageLimits, photo_rgb: bool) -> dict[str, str]:
    """`describe_bytes` of a BMP: only the uncompressed 24-bit ones written here are read."""
    if len(data) < 54:
        raise InvalidImageFormat()
    offset = int.from_bytes(data[10:14], "little")
    width, height, _, bpp, compression = struct.unpack("<iiHHI", data[18:34])
    xppm, yppm = struct.unpack("<ii", data[38:46])
    rows, stride = abs(height), (width * 3 + 3) & ~3
    if bpp != 24 or compression != 0 or width <= 0 or rows == 0 or len(data) < offset + stride * rows:
        raise InvalidImageFormat("Only uncompressed 24-bit BMP images are read.")
    if width * rows > limits.max_pixels or max(width, rows) > limits.max_side:
        raise ImageResolutionExceed(f"The image is {width}x{rows}, over the limits.")
    info = {
        "format": "bmp",
        "width": str(width),
        "height": str(rows),
        "size": str(len(data)),
        "md5": hashlib.md5(data).hexdigest(),
        "frame_count": "1",
        "bit_depth": "8",
        "vertical_dpi": str(round(yppm * 0.0254)),
        "horizontal_dpi": str(round(xppm * 0.0254)),
    }
    if photo_rgb:
        raw = pyvips.Image.new_from_memory(data[offset : offset + stride * rows], stride, rows, 1, "uchar")
        bgr = raw.crop(0, 0, width * 3, rows).bandfold(factor=3)
        info["photo_rgb"] = _average_hex(
            bgr[2].bandjoin([bgr[1], bgr[0]]).copy(interpretation="srgb"), _Deadline(limits.timeout)
        )
    return info


def _head_of_bytes(data: bytes) -> Any:
    try:
        return pyvips.Image.new_from_buffer(data, "", access="sequential")
    except pyvips.Error as exc:
        raise InvalidImageFormat() from exc


def _orientation(head: Any) -> int:
    value = int(head.get("orientation")) if "orientation" in head.get_fields() else 0
    return value if 1 <= value <= 8 else 0


def _describe(data: bytes, limits: ImageLimits, photo_rgb: bool) -> dict[str, str]:
    if data[:2] == b"BM":
        info = _bmp_info(data, limits, photo_rgb)
        info["orientation"] = "0"
        return info
    deadline = _Deadline(limits.timeout)
    head = _head_of_bytes(data)
    _check_limits(head, limits)
    fields = head.get_fields()
    fmt = _source_format(head, None)
    if fmt is None:
        raise InvalidImageFormat()
    bit_depth = (
        int(head.get("bits-per-sample"))
        if "bits-per-sample" in fields
        else _BIT_DEPTH.get(str(head.format), 8)
    )
    if "resolution-unit" in fields:
        hdpi, vdpi = round(head.xres * 25.4), round(head.yres * 25.4)
    else:
        hdpi = vdpi = 0
    info = {
        "format": _INFO_NAMES.get(fmt, fmt.value),
        "width": str(head.width),
        "height": str(head.height),
        "size": str(len(data)),
        "md5": hashlib.md5(data).hexdigest(),
        "frame_count": str(_pages(head)),
        "bit_depth": str(bit_depth),
        "vertical_dpi": str(vdpi),
        "horizontal_dpi": str(hdpi),
    }
    if photo_rgb:
        try:
            thumb = pyvips.Image.thumbnail_buffer(data, 64, no_rotate=True)
        except pyvips.Error as exc:
            raise InvalidImageFormat() from exc
        info["photo_rgb"] = _average_hex(thumb, deadline)
    quality = estimate_jpeg_quality(data) if fmt is ImageFormat.JPG else None
    if quality is not None:
        info["quality"] = str(quality)
    info["orientation"] = str(_orientation(head))
    return info


def _read_checked(path: str | os.PathLike[str], limits: ImageLimits) -> bytes:
    fspath = os.fspath(path)
    _check_input_size(fspath, limits)
    with open(fspath, "rb") as f:
        return f.read()


def describe_file(path: str | os.PathLike[str], limits: ImageLimits | None = None) -> dict[str, str]:
    """Every `IMAGE_INFO_FIELDS` of the image at `path`, plus ``quality`` (the estimated JPEG quality,
    JPEG only) and ``orientation`` (the raw EXIF tag, ``"0"`` when none): what ``?imageInfo``,
    ``?imageAve`` and Pic-Operations' ``OriginalInfo/ImageInfo`` need, from one read of the file."""
    limits = limits or ImageLimits()
    return _describe(_read_checked(path, limits), limits, photo_rgb=True)


def describe_bytes(
    data: bytes, limits: ImageLimits | None = None, *, photo_rgb: bool = True
) -> dict[str, str]:
    """`describe_file` of encoded image bytes (an output of `process`, say), with no temporary file:
    for ``|imageInfo`` after a pipeline and Pic-Operations' ``ProcessResults/Object``. Without
    `photo_rgb` no pixel is decoded and that key is left out."""
    return _describe(bytes(data), limits or ImageLimits(), photo_rgb)


def image_info(path: str | os.PathLike[str], *, limits: ImageLimits | None = None) -> dict[str, str]:
    """The `?imageInfo` body (section 5.1): `IMAGE_INFO_FIELDS`, every value a string."""
    described = describe_file(path, limits)
    return {key: described[key] for key in IMAGE_INFO_FIELDS}


def image_ave(path: str | os.PathLike[str], *, limits: ImageLimits | None = None) -> dict[str, str]:
    """The `?imageAve` body (section 5.3): ``{"RGB": "0xrrggbb"}``, the average colour."""
    limits = limits or ImageLimits()
    fspath = os.fspath(path)
    _check_input_size(fspath, limits)
    _check_limits(_open_header(fspath), limits)
    try:
        thumb = pyvips.Image.thumbnail(fspath, 64, no_rotate=True)
    except pyvips.Error as exc:
        raise InvalidImageFormat() from exc
    return {"RGB": _average_hex(thumb, _Deadline(limits.timeout))}


def _exif_body(head: Any) -> dict[str, Any]:
    fields = {name: head.get(name) for name in head.get_fields() if name.startswith("exif-ifd")}
    return _exif.from_fields(fields) or {"error": "no exif data"}


def exif(path: str | os.PathLike[str], *, limits: ImageLimits | None = None) -> dict[str, Any]:
    """The `?exif` body (section 5.2): ``{"Make": {"val": "Canon", "type": 2}, ...}``, one entry per EXIF
    tag (see `mediajobs.media.exif`), or ``{"error": "no exif data"}``. Only the header is read."""
    limits = limits or ImageLimits()
    fspath = os.fspath(path)
    _check_input_size(fspath, limits)
    return _exif_body(_open_header(fspath))


def exif_bytes(data: bytes, *, limits: ImageLimits | None = None) -> dict[str, Any]:
    """`exif` of encoded image bytes."""
    limits = limits or ImageLimits()
    if len(data) > limits.max_input_bytes:
        raise ImageTooLarge(f"The image is {len(data)} bytes, more than {limits.max_input_bytes}.")
    return _exif_body(_head_of_bytes(bytes(data)))


def orientation(source: str | os.PathLike[str] | bytes) -> int:
    """The raw EXIF orientation (1-8) of an image file, image bytes or an opened pyvips image; 0 when
    it has none. Only the header is read."""
    if isinstance(source, pyvips.Image):
        return _orientation(source)
    if isinstance(source, bytes | bytearray | memoryview):
        return _orientation(_head_of_bytes(bytes(source)))
    return _orientation(_open_header(os.fspath(source)))
