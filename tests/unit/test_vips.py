"""The libvips engine: sizes from the spec's thumbnail table, crops, rotation, formats, limits."""

from __future__ import annotations

import struct
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
import pyvips

from mediajobs.media import vips
from mediajobs.media.mogr2 import BadRule, parse
from tests.picture_cases import THUMBNAIL_TABLE


def _gradient(width: int, height: int) -> Any:
    xyz = pyvips.Image.xyz(width, height)
    r = (xyz[0] * 255 / width).cast("uchar")
    g = (xyz[1] * 255 / height).cast("uchar")
    b = ((xyz[0] + xyz[1]) % 256).cast("uchar")
    return r.bandjoin([g, b]).copy(interpretation="srgb")


@pytest.fixture(scope="module")
def jpg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "in.jpg"
    _gradient(1200, 800).jpegsave(str(path), Q=90)
    return path


@pytest.fixture(scope="module")
def png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "in.png"
    _gradient(1200, 800).pngsave(str(path), compression=1)
    return path


def _run(path: Path, rule: str, **kw: Any) -> tuple[Any, bytes, str]:
    data, mime = vips.process(path, parse(rule), **kw)
    return pyvips.Image.new_from_buffer(data, ""), data, mime


def _dims(path: Path, rule: str) -> tuple[int, int]:
    out, _, _ = _run(path, rule)
    return out.width, out.height


@pytest.mark.parametrize(("rule", "size"), THUMBNAIL_TABLE)
def test_thumbnail_table_jpeg(jpg: Path, rule: str, size: tuple[int, int]) -> None:
    assert _dims(jpg, rule) == size


@pytest.mark.parametrize(("rule", "size"), THUMBNAIL_TABLE)
def test_thumbnail_table_png_after_a_first_op(png: Path, rule: str, size: tuple[int, int]) -> None:
    # flip first: the thumbnail runs on a decoded image instead of the shrink-on-load path
    stage, _, rest = rule.partition("/")
    assert _dims(png, f"{stage}/flip/horizontal/{rest}") == size


def test_thumbnail_sizes_are_exact_arithmetic() -> None:
    for rule, size in THUMBNAIL_TABLE:
        if "|" in rule or "pad" in rule:
            continue
        ops = parse(rule).stages[0].ops  # type: ignore[union-attr]
        assert vips.thumbnail_size(ops[0], 1200, 800) == size, rule


def test_pad_centres_the_image_with_the_colour(jpg: Path) -> None:
    out, _, mime = _run(jpg, "imageMogr2/thumbnail/600x600/pad/1/color/I0ZGMDAwMA")  # #FF0000
    assert (out.width, out.height, mime) == (600, 600, "image/jpeg")
    top = out.crop(0, 0, 600, 100)
    assert top[0].avg() > 240 and top[1].avg() < 15
    band, _, _ = _run(jpg, "imageMogr2/thumbnail/600x600/pad/1/format/png")
    assert band.hasalpha() and band.crop(0, 0, 600, 100)[3].max() == 0


def test_thumbnail_clamps_targets_and_refuses_huge_outputs(jpg: Path) -> None:
    ops = parse("imageMogr2/thumbnail/20000x10!").stages[0].ops  # type: ignore[union-attr]
    assert vips.thumbnail_size(ops[0], 1200, 800) == (10000, 10)
    assert _dims(jpg, "imageMogr2/thumbnail/9999x10!") == (9999, 10)
    with pytest.raises(vips.ImageResolutionExceed):
        vips.process(jpg, parse("imageMogr2/thumbnail/!1000p"))


@pytest.mark.parametrize(
    ("rule", "box"),
    [
        ("imageMogr2/crop/300x200", (0, 0, 300, 200)),
        ("imageMogr2/gravity/center/crop/300x200", (450, 300, 300, 200)),
        ("imageMogr2/gravity/southeast/crop/300x200", (900, 600, 300, 200)),
        ("imageMogr2/gravity/southeast/dx/10/dy/20/crop/300x200", (890, 580, 300, 200)),
        ("imageMogr2/gravity/north/dx/10/dy/20/crop/300x", (450, 0, 300, 800)),
        ("imageMogr2/crop/x200", (0, 0, 1200, 200)),
        ("imageMogr2/crop/5000x5000", (0, 0, 1200, 800)),
        ("imageMogr2/cut/300x200x100x50", (100, 50, 300, 200)),
        ("imageMogr2/cut/300x200x1000x700", (1000, 700, 200, 100)),
    ],
)
def test_crop_and_cut(png: Path, rule: str, box: tuple[int, int, int, int]) -> None:
    out, _, mime = _run(png, rule)
    assert mime == "image/png"
    assert (out.width, out.height) == box[2:]
    src = pyvips.Image.new_from_file(str(png))
    want = src.crop(*box)
    assert (out - want).abs().max() == 0  # lossless source and output: the exact pixels


def test_cut_outside_the_image_is_a_bad_rule(png: Path) -> None:
    with pytest.raises(BadRule):
        vips.process(png, parse("imageMogr2/cut/10x10x5000x0"))


def test_scrop_iradius_rradius(png: Path) -> None:
    assert _dims(png, "imageMogr2/scrop/300x300") == (300, 300)
    out, _, _ = _run(png, "imageMogr2/iradius/100")
    assert (out.width, out.height) == (200, 200) and out.hasalpha()
    assert out[3](0, 0)[0] == 0 and out[3](100, 100)[0] == 255
    out, _, _ = _run(png, "imageMogr2/rradius/50/format/jpg")
    assert (out.width, out.height, out.bands) == (1200, 800, 3)
    assert min(out(0, 0)) > 240  # corner filled with white


def test_rotate_flip_and_auto_orient(tmp_path: Path, png: Path) -> None:
    assert _dims(png, "imageMogr2/rotate/90") == (800, 1200)
    assert _dims(png, "imageMogr2/rotate/180") == (1200, 800)
    assert _dims(png, "imageMogr2/rotate/360") == (1200, 800)
    w, h = _dims(png, "imageMogr2/rotate/45")
    assert w > 1200 and h > 1200
    src = pyvips.Image.new_from_file(str(png))
    out, _, _ = _run(png, "imageMogr2/flip/horizontal")
    assert (out - src.fliphor()).abs().max() == 0
    out, _, _ = _run(png, "imageMogr2/rotate/90")
    assert (out - src.rot("d90")).abs().max() == 0  # clockwise
    tagged = tmp_path / "o.jpg"
    img = _gradient(300, 100).copy()
    img.set_type(pyvips.GValue.gint_type, "orientation", 6)
    img.jpegsave(str(tagged))
    assert _dims(tagged, "imageMogr2/thumbnail/!50p") == (150, 50)
    assert _dims(tagged, "imageMogr2/auto-orient") == (100, 300)


def test_filters_keep_size_and_change_pixels(png: Path) -> None:
    src = pyvips.Image.new_from_file(str(png))
    for rule in ("blur/5x3", "sharpen/70", "bright/50", "contrast/50", "contrast/-50", "grayscale/1"):
        out, _, _ = _run(png, f"imageMogr2/{rule}")
        assert (out.width, out.height) == (1200, 800), rule
        assert out.bands != src.bands or (out - src).abs().max() > 0, rule
    out, _, _ = _run(png, "imageMogr2/grayscale/1")
    assert out.bands == 1
    assert _run(png, "imageMogr2/bright/50")[0].avg() > src.avg() + 20


@pytest.mark.parametrize(
    ("fmt", "loader", "mime"),
    [
        ("jpg", "jpegload", "image/jpeg"),
        ("jpeg", "jpegload", "image/jpeg"),
        ("png", "pngload", "image/png"),
        ("webp", "webpload", "image/webp"),
        ("gif", "gifload", "image/gif"),
        ("tiff", "tiffload", "image/tiff"),
        ("avif", "heifload", "image/avif"),
    ],
)
def test_format_conversion_round_trips(jpg: Path, fmt: str, loader: str, mime: str) -> None:
    out, _, got = _run(jpg, f"imageMogr2/thumbnail/!25p/format/{fmt}")
    assert got == mime
    assert out.get("vips-loader").startswith(loader)
    assert (out.width, out.height) == (300, 200)


def test_bmp_output(png: Path) -> None:
    data, mime = vips.process(png, parse("imageMogr2/thumbnail/301x/format/bmp"))
    assert mime == "image/bmp" and data[:2] == b"BM"
    width, height, _, bpp = struct.unpack("<iiHH", data[18:30])
    assert (width, height, bpp) == (301, 201, 24)
    assert len(data) == 54 + (301 * 3 + 1) * 201  # rows padded to 4 bytes


def test_unavailable_formats_are_invalid_image_format(jpg: Path) -> None:
    for fmt in ("tpg", "psd", "astc"):
        with pytest.raises(vips.InvalidImageFormat):
            vips.process(jpg, parse(f"imageMogr2/format/{fmt}"))


def test_default_format_is_the_inputs(jpg: Path, png: Path) -> None:
    assert _run(jpg, "imageMogr2/thumbnail/!10p")[2] == "image/jpeg"
    assert _run(png, "imageMogr2/thumbnail/!10p")[2] == "image/png"
    assert _run(png, "imageView2/format/webp")[2] == "image/webp"


def test_quality(jpg: Path) -> None:
    assert vips.estimate_jpeg_quality(jpg) == 90
    high = vips.process(jpg, parse("imageMogr2/quality/95!"))[0]
    low = vips.process(jpg, parse("imageMogr2/quality/20!"))[0]
    assert len(low) < len(high) * 0.7
    # quality/q never raises the source's (90), lquality is a floor, rquality a ratio
    capped = vips.process(jpg, parse("imageMogr2/quality/95"))[0]
    assert len(capped) < len(high)
    assert len(vips.process(jpg, parse("imageMogr2/lquality/95"))[0]) == len(high)
    assert len(vips.process(jpg, parse("imageMogr2/rquality/50"))[0]) < len(capped)


def test_interlace_and_strip(tmp_path: Path, jpg: Path) -> None:
    prog, _, _ = _run(jpg, "imageMogr2/interlace/1")
    assert prog.get("jpeg-multiscan") == 1
    plain, _, _ = _run(jpg, "imageMogr2/interlace/0")
    assert plain.get("jpeg-multiscan") == 0
    stripped, _, _ = _run(jpg, "imageMogr2/strip")
    assert "exif-data" not in stripped.get_fields()


def test_size_limit(jpg: Path) -> None:
    data, mime = vips.process(jpg, parse("imageMogr2/quality/95!/size-limit/20k"))
    assert mime == "image/jpeg" and len(data) <= 20 * 1024


def test_view2_modes(jpg: Path) -> None:
    assert _dims(jpg, "imageView2/0/w/600/h/300") == (450, 300)
    assert _dims(jpg, "imageView2/1/w/300/h/300") == (300, 300)
    assert _dims(jpg, "imageView2/2/w/600/h/600") == (600, 400)
    assert _dims(jpg, "imageView2/2/w/600") == (600, 400)
    assert _dims(jpg, "imageView2/3/w/600/h/600") == (900, 600)


def _fake_png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


def test_huge_header_is_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    path.write_bytes(_fake_png(30000, 30000))
    start = time.monotonic()
    with pytest.raises(vips.ImageTooLarge) as info:
        vips.process(path, parse("imageMogr2/thumbnail/!50p"))
    assert time.monotonic() - start < 2
    assert info.value.code == "ImageResolutionExceed" and info.value.http_status == 400
    wide = tmp_path / "wide.png"
    wide.write_bytes(_fake_png(40000, 10))
    with pytest.raises(vips.ImageResolutionExceed):
        vips.process(wide, parse("imageMogr2/thumbnail/!50p"))


def test_ignore_error_returns_the_original(tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    path.write_bytes(_fake_png(30000, 30000))
    data, mime = vips.process(path, parse("imageMogr2/thumbnail/!50p/ignore-error/1"))
    assert (data, mime) == (path.read_bytes(), "image/png")


def test_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "x.jpg"
    path.write_bytes(b"hello, not an image")
    with pytest.raises(vips.InvalidImageFormat) as info:
        vips.process(path, parse("imageMogr2/format/png"))
    assert info.value.code == "InvalidImageFormat"
    with pytest.raises(vips.InvalidImageSource):
        vips.process(tmp_path / "missing.jpg", parse("imageMogr2/format/png"))


def test_info_and_style_stages_are_not_run_here(jpg: Path) -> None:
    with pytest.raises(BadRule):
        vips.process(jpg, parse("imageMogr2/thumbnail/!50p|imageInfo"))
    with pytest.raises(BadRule):
        vips.process(jpg, parse("style/small"))


def test_image_info(jpg: Path, png: Path) -> None:
    info = vips.image_info(jpg)
    assert info["format"] == "jpeg"
    assert (info["width"], info["height"]) == ("1200", "800")
    assert info["size"] == str(jpg.stat().st_size)
    assert len(info["md5"]) == 32 and info["frame_count"] == "1" and info["bit_depth"] == "8"
    assert info["photo_rgb"].startswith("0x") and len(info["photo_rgb"]) == 8
    assert all(isinstance(v, str) for v in info.values())
    assert vips.image_info(png)["format"] == "png"


# --- animated images -------------------------------------------------------------------------------------


def _solid(width: int, height: int, values: list[int]) -> Any:
    """A `width` x `height` image of one colour: 1 value grey, 3 sRGB, 4 sRGB with alpha."""
    image = pyvips.Image.black(width, height).new_from_image(values).cast("uchar")
    return image.copy(interpretation="srgb" if len(values) >= 3 else "b-w")


COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255)]


def _animation(path: Path, frames: int, delays: list[int], size: tuple[int, int] = (120, 80)) -> Path:
    """A `frames`-frame animation of solid colours (COLOURS in turn), saved by its suffix."""
    width, height = size
    strip = pyvips.Image.arrayjoin(
        [_solid(width, height, list(COLOURS[i % len(COLOURS)])) for i in range(frames)],
        across=1,
    ).copy()
    strip.set_type(pyvips.GValue.gint_type, "page-height", height)
    strip.set_type(pyvips.GValue.array_int_type, "delay", delays)
    strip.set_type(pyvips.GValue.gint_type, "loop", 2)
    strip.write_to_file(str(path))
    return path


@pytest.fixture(scope="module")
def gif(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _animation(tmp_path_factory.mktemp("img") / "a.gif", 3, [100, 200, 300])


@pytest.fixture(scope="module")
def webp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _animation(tmp_path_factory.mktemp("img") / "a.webp", 3, [100, 200, 300])


def _decode_all(data: bytes) -> Any:
    return pyvips.Image.new_from_buffer(data, "", n=-1)


def _frame_list(image: Any) -> list[Any]:
    ph = image.get("page-height")
    return [image.crop(0, top, image.width, ph) for top in range(0, image.height, ph)]


def _close(frame: Any, rgb: tuple[int, int, int]) -> bool:
    return all(abs(frame[b].avg() - rgb[b]) < 12 for b in range(3))


@pytest.mark.parametrize("source", ["gif", "webp"])
def test_animation_stays_animated_with_every_frame_resized(
    request: pytest.FixtureRequest, source: str
) -> None:
    path = request.getfixturevalue(source)
    data, mime = vips.process(path, parse("imageMogr2/thumbnail/60x"))
    assert mime == f"image/{source}"
    out = _decode_all(data)
    assert out.get("n-pages") == 3 and out.get("page-height") == 40
    assert (out.width, out.height) == (60, 120)
    assert out.get("delay") == [100, 200, 300] and out.get("loop") == 2
    for frame, rgb in zip(_frame_list(out), COLOURS, strict=False):
        assert _close(frame, rgb)


def test_animation_converts_between_gif_and_webp(gif: Path, webp: Path) -> None:
    data, mime = vips.process(gif, parse("imageMogr2/format/webp"))
    out = _decode_all(data)
    assert mime == "image/webp" and out.get("n-pages") == 3 and out.get("delay") == [100, 200, 300]
    data, mime = vips.process(webp, parse("imageView2/2/w/30/format/gif"))
    out = _decode_all(data)
    assert mime == "image/gif" and out.get("n-pages") == 3 and out.get("page-height") == 20
    assert out.width == 30


def test_every_operation_applies_to_every_frame(gif: Path) -> None:
    rule = "imageMogr2/gravity/center/crop/60x40/rotate/90/bright/10|imageMogr2/thumbnail/20x20/pad/1"
    out = _decode_all(vips.process(gif, parse(rule))[0])
    assert out.get("n-pages") == 3 and out.get("page-height") == 20
    assert (out.width, out.height) == (20, 60)
    for frame, rgb in zip(_frame_list(out), COLOURS, strict=False):
        assert frame[3](0, 10)[0] == 0  # the pad is transparent in a GIF
        r, g, b = (min(255, v + 25) for v in rgb)  # bright/10: 10% of 255
        assert _close(frame.crop(8, 4, 4, 12), (r, g, b))
    out = _decode_all(vips.process(gif, parse("imageMogr2/blur/3x2/grayscale/1/strip"))[0])
    assert out.get("n-pages") == 3 and (out.width, out.get("page-height")) == (120, 80)


@pytest.mark.parametrize(
    ("rule", "frame"),
    [
        ("imageMogr2/thumbnail/240x", (120, 80)),
        ("imageMogr2/thumbnail/!200p", (120, 80)),
        ("imageMogr2/thumbnail/600x600<", (120, 80)),
        ("imageMogr2/thumbnail/60x160!", (120, 80)),  # shrinks one side but would grow the other
        ("imageMogr2/rotate/90|imageMogr2/thumbnail/!300p", (80, 120)),
        ("imageView2/2/w/600", (120, 80)),
        ("imageView2/1/w/300/h/300", (120, 80)),
        ("imageMogr2/thumbnail/!50p", (60, 40)),  # shrinking is fine
    ],
)
def test_animation_is_never_enlarged(gif: Path, rule: str, frame: tuple[int, int]) -> None:
    out = _decode_all(vips.process(gif, parse(rule))[0])
    assert (out.width, out.get("page-height")) == frame and out.get("n-pages") == 3


def test_still_output_of_an_animation_is_its_first_frame(gif: Path) -> None:
    out, _, mime = _run(gif, "imageMogr2/thumbnail/60x/format/png")
    assert mime == "image/png" and (out.width, out.height) == (60, 40)
    assert "n-pages" not in out.get_fields() or out.get("n-pages") == 1
    assert _close(out, COLOURS[0])


def test_cgif_keeps_evenly_spaced_frames_and_the_duration(tmp_path: Path) -> None:
    path = _animation(tmp_path / "ten.gif", 10, [50] * 9 + [140], size=(40, 20))
    out = _decode_all(vips.process(path, parse("imageMogr2/cgif/4"))[0])
    assert out.get("n-pages") == 4 and out.get("page-height") == 20
    # frames 0, 2, 5, 7 stand for 0-1, 2-4, 5-6, 7-9
    assert out.get("delay") == [100, 150, 100, 240] and sum(out.get("delay")) == 590
    for frame, index in zip(_frame_list(out), (0, 2, 5, 7), strict=True):
        assert _close(frame, COLOURS[index % len(COLOURS)])
    # cgif/n at or above the frame count keeps them all; cgif is for GIF output only
    assert _decode_all(vips.process(path, parse("imageMogr2/cgif/20"))[0]).get("n-pages") == 10
    webp_out = vips.process(path, parse("imageMogr2/cgif/4/format/webp"))[0]
    assert _decode_all(webp_out).get("n-pages") == 10


def test_cgif_1_keeps_30_frames(tmp_path: Path) -> None:
    path = _animation(tmp_path / "forty.gif", 40, [10] * 40, size=(8, 8))
    out = _decode_all(vips.process(path, parse("imageMogr2/thumbnail/4x/cgif/1"))[0])
    assert out.get("n-pages") == 30 and (out.width, out.get("page-height")) == (4, 4)
    assert sum(out.get("delay")) == 400


def test_animation_limits(gif: Path) -> None:
    rule = parse("imageMogr2/thumbnail/60x")
    with pytest.raises(vips.ImageTooLarge) as info:
        vips.process(gif, rule, limits=vips.ImageLimits(max_frames=2))
    assert info.value.code == "ImageTooLarge"
    with pytest.raises(vips.ImageTooLarge):
        vips.process(gif, rule, limits=vips.ImageLimits(max_animated_pixels=120 * 80 * 3 - 1))
    # fine at the limits, and a still output reads the first frame only
    vips.process(gif, rule, limits=vips.ImageLimits(max_frames=3, max_animated_pixels=120 * 80 * 3))
    vips.process(gif, parse("imageMogr2/format/png"), limits=vips.ImageLimits(max_frames=1))
    data, mime = vips.process(
        gif, parse("imageMogr2/thumbnail/60x/ignore-error/1"), limits=vips.ImageLimits(max_frames=2)
    )
    assert (data, mime) == (gif.read_bytes(), "image/gif")


# --- limits and timeout ------------------------------------------------------------------------------------


def test_limits_each_error(jpg: Path) -> None:
    rule = parse("imageMogr2/thumbnail/!50p")
    size = jpg.stat().st_size
    with pytest.raises(vips.ImageTooLarge) as info:
        vips.process(jpg, rule, limits=vips.ImageLimits(max_input_bytes=size - 1))
    assert type(info.value) is vips.ImageTooLarge
    vips.process(jpg, rule, limits=vips.ImageLimits(max_input_bytes=size))
    with pytest.raises(vips.ImageResolutionExceed):
        vips.process(jpg, rule, limits=vips.ImageLimits(max_pixels=1200 * 800 - 1))
    with pytest.raises(vips.ImageResolutionExceed):
        vips.process(jpg, rule, limits=vips.ImageLimits(max_side=1199))
    with pytest.raises(vips.ImageResolutionExceed):
        vips.process(jpg, rule, limits=vips.ImageLimits(max_output_side=599))
    assert _dims(jpg, "imageMogr2/thumbnail/!50p") == (600, 400)
    with pytest.raises(vips.ImageTooLarge) as info:
        vips.process(jpg, rule, limits=vips.ImageLimits(max_output_bytes=1000))
    assert type(info.value) is vips.ImageTooLarge
    for call in (vips.image_info, vips.image_ave, vips.exif):
        with pytest.raises(vips.ImageTooLarge):
            call(jpg, limits=vips.ImageLimits(max_input_bytes=size - 1))
    for call in (vips.image_info, vips.image_ave):  # exif reads the header only
        with pytest.raises(vips.ImageResolutionExceed):
            call(jpg, limits=vips.ImageLimits(max_side=1000))
    assert vips.ImageLimits().max_input_bytes == 32 * 1024 * 1024


@pytest.fixture(scope="module")
def heavy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "heavy.jpg"
    _gradient(3000, 3000).jpegsave(str(path), Q=75)
    return path


def test_timeout_stops_a_heavy_rule(heavy: Path) -> None:
    rule = parse("imageMogr2/blur/50x50/sharpen/300")
    with pytest.raises(vips.ImageProcessTimeout) as info:
        vips.process(heavy, rule, limits=vips.ImageLimits(timeout=0.02))
    assert (info.value.code, info.value.http_status) == ("RequestTimeout", 408)
    # not answered with the original: the time is spent
    with pytest.raises(vips.ImageProcessTimeout):
        vips.process(
            heavy, parse("imageMogr2/blur/50x50/ignore-error/1"), limits=vips.ImageLimits(timeout=0.02)
        )
    # the killed computation does not poison libvips' operation cache for the next caller
    out, _, _ = _run(heavy, "imageMogr2/blur/50x50/sharpen/300")
    assert (out.width, out.height) == (3000, 3000)
    with pytest.raises(vips.ImageProcessTimeout):
        vips.image_ave(heavy, limits=vips.ImageLimits(timeout=0))


def test_timeout_kills_the_computation_inside_libvips() -> None:
    # the deadline has not passed when rendering starts: only the progress signal can stop it
    heavy = _gradient(4000, 4000).gaussblur(60)
    deadline = vips._Deadline(0.02)
    with pytest.raises(vips.ImageProcessTimeout):
        deadline.render(heavy)
    assert _gradient(64, 64).gaussblur(2).copy_memory().width == 64  # libvips still works


# --- information calls ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tagged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "exif.jpg"
    img = _gradient(64, 48).copy()
    for name, value in (
        ("exif-ifd0-Make", "Canon"),
        ("exif-ifd0-Model", "Canon EOS 5D, Mark II"),
        ("exif-ifd2-ExposureTime", "1/125"),
        ("exif-ifd2-DateTimeOriginal", "2019:05:16 14:44:49"),
    ):
        img.set_type(pyvips.GValue.gstr_type, name, value)
    img.set_type(pyvips.GValue.gint_type, "orientation", 6)
    img.jpegsave(str(path))
    return path


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PNG without metadata."""
    path = tmp_path_factory.mktemp("img") / "bare.png"
    _gradient(40, 30).pngsave(str(path), keep="none")
    return path


def test_exif(tagged: Path, png: Path, bare: Path, jpg: Path) -> None:
    tags = vips.exif(tagged)
    assert tags["Make"] == {"val": "Canon", "type": 2}
    assert tags["Model"] == {"val": "Canon EOS 5D, Mark II", "type": 2}
    assert tags["ExposureTime"] == {"val": "1/125 sec.", "type": 5}
    assert tags["DateTimeOriginal"] == {"val": "2019:05:16 14:44:49", "type": 2}
    assert tags["Orientation"] == {"val": "Right-top", "type": 3}
    assert tags["PixelXDimension"] == {"val": "64", "type": 4}
    assert "data" not in tags and all(set(v) == {"val", "type"} for v in tags.values())
    assert vips.exif_bytes(tagged.read_bytes()) == tags
    assert vips.exif(bare) == {"error": "no exif data"}
    assert vips.exif(png)["ResolutionUnit"] == {"val": "Inch", "type": 3}  # libvips writes some
    stripped = vips.process(jpg, parse("imageMogr2/strip"))[0]
    assert vips.exif_bytes(stripped) == {"error": "no exif data"}


def test_orientation(tagged: Path, bare: Path) -> None:
    assert vips.orientation(tagged) == 6
    assert vips.orientation(tagged.read_bytes()) == 6
    assert vips.orientation(pyvips.Image.new_from_file(str(tagged))) == 6
    assert vips.orientation(bare) == 0
    assert vips.describe_file(tagged)["orientation"] == "6"


@pytest.mark.parametrize(
    ("values", "hex_"),
    [
        ([0x73, 0x62, 0x46], "0x736246"),
        ([0x80], "0x808080"),
        ([10, 20, 30, 0], "0xffffff"),  # transparent: flattened on white
    ],
)
def test_image_ave_of_a_solid_colour(tmp_path: Path, values: list[int], hex_: str) -> None:
    path = tmp_path / "solid.png"
    _solid(50, 40, values).pngsave(str(path))
    assert vips.image_ave(path) == {"RGB": hex_}
    assert vips.image_info(path)["photo_rgb"] == hex_


def test_image_info_keys_and_animation(gif: Path, jpg: Path) -> None:
    info = vips.image_info(jpg)
    assert tuple(info) == vips.IMAGE_INFO_FIELDS
    assert vips.image_info(gif)["frame_count"] == "3" and vips.image_info(gif)["format"] == "gif"
    described = vips.describe_file(jpg)
    assert {k: described[k] for k in vips.IMAGE_INFO_FIELDS} == info
    assert described["quality"] == "90" and described["orientation"] in ("0", "1")
    assert "quality" not in vips.describe_file(gif)


def test_describe_bytes_of_outputs(jpg: Path, gif: Path, png: Path) -> None:
    data, _ = vips.process(jpg, parse("imageMogr2/thumbnail/300x/quality/60!"))
    desc = vips.describe_bytes(data)
    assert (desc["format"], desc["width"], desc["height"]) == ("jpeg", "300", "200")
    assert desc["size"] == str(len(data)) and desc["frame_count"] == "1"
    assert desc["quality"] == "60" and vips.estimate_jpeg_quality(data) == 60
    assert len(desc["md5"]) == 32 and desc["photo_rgb"].startswith("0x")
    assert "photo_rgb" not in vips.describe_bytes(data, photo_rgb=False)
    anim = vips.describe_bytes(vips.process(gif, parse("imageMogr2/thumbnail/60x"))[0])
    assert (anim["format"], anim["width"], anim["height"], anim["frame_count"]) == ("gif", "60", "40", "3")
    webp_desc = vips.describe_bytes(vips.process(png, parse("imageMogr2/thumbnail/100x/format/webp"))[0])
    assert (webp_desc["format"], webp_desc["width"], webp_desc["height"]) == ("webp", "100", "67")
    bmp = vips.describe_bytes(vips.process(gif, parse("imageMogr2/format/bmp"))[0])
    assert (bmp["format"], bmp["width"], bmp["height"], bmp["photo_rgb"]) == ("bmp", "120", "80", "0xff0000")
    with pytest.raises(vips.InvalidImageFormat):
        vips.describe_bytes(b"not an image")


def test_flattening_an_image_with_alpha(tmp_path: Path) -> None:
    path = tmp_path / "alpha.png"
    _solid(40, 30, [0, 0, 255, 0]).pngsave(str(path))
    out, _, mime = _run(path, "imageMogr2/format/jpg")
    assert mime == "image/jpeg" and out.bands == 3 and out.min() > 240  # transparent -> white
    out, _, _ = _run(path, "imageMogr2/rradius/10/format/jpg")
    assert out.bands == 3
