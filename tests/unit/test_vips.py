"""The libvips engine: sizes from the spec's thumbnail table, crops, rotation, formats, limits."""

from __future__ import annotations

import struct
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

pyvips = pytest.importorskip("pyvips")

from mediajobs.media import vips  # noqa: E402
from mediajobs.media.mogr2 import BadRule, parse  # noqa: E402


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


THUMBNAIL_TABLE = [
    ("imageMogr2/thumbnail/!50p", (600, 400)),
    ("imageMogr2/thumbnail/!33p", (396, 264)),
    ("imageMogr2/thumbnail/!200p", (2400, 1600)),
    ("imageMogr2/thumbnail/!50px", (600, 800)),
    ("imageMogr2/thumbnail/!x50p", (1200, 400)),
    ("imageMogr2/thumbnail/600x", (600, 400)),
    ("imageMogr2/thumbnail/1800x", (1800, 1200)),
    ("imageMogr2/thumbnail/x400", (600, 400)),
    ("imageMogr2/thumbnail/600x600", (600, 400)),
    ("imageMogr2/thumbnail/900x300", (450, 300)),
    ("imageMogr2/thumbnail/!600x600r", (900, 600)),
    ("imageMogr2/thumbnail/600x600^", (900, 600)),
    ("imageMogr2/thumbnail/600x600!", (600, 600)),
    ("imageMogr2/thumbnail/600x600>", (600, 400)),
    ("imageMogr2/thumbnail/1500x1000>", (1200, 800)),
    ("imageMogr2/thumbnail/1500x600>", (900, 600)),
    ("imageMogr2/thumbnail/2400x2400<", (2400, 1600)),
    ("imageMogr2/thumbnail/600x600<", (1200, 800)),
    ("imageMogr2/thumbnail/1500x600<", (1200, 800)),
    ("imageMogr2/thumbnail/240000@", (600, 400)),
    ("imageMogr2/thumbnail/500000@", (866, 577)),
    ("imageMogr2/thumbnail/2000000@", (1732, 1154)),
    ("imageMogr2/thumbnail/600x600/pad/1", (600, 600)),
    ("imageMogr2/thumbnail/!50p|imageMogr2/thumbnail/!50p", (300, 200)),
]


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
