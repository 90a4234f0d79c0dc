"""Image processing on GET through cos-python-sdk-v5: `ci_get_object(Rule=...)` and `ci_get_image_info`."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import struct
import time
import zlib
from pathlib import Path

import pytest
import pyvips
from qcloud_cos import CosS3Client
from qcloud_cos.cos_exception import CosServiceError

from mediajobs.media import vips
from mediajobs.testing import ServerProcess, running_server
from tests.picture_cases import THUMBNAIL_TABLE


@pytest.fixture(scope="module")
def photo(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("pic") / "photo.jpg"
    pyvips.Image.xyz(1200, 800).extract_band(0).cast("uchar").jpegsave(str(path), Q=90)
    server.client().upload_file(Bucket=server.bucket, Key="pics/photo.jpg", LocalFilePath=str(path))
    return "pics/photo.jpg"


@pytest.mark.parametrize(
    ("rule", "size", "fmt"),
    [
        ("imageMogr2/thumbnail/!50p", (600, 400), "jpeg"),
        ("imageMogr2/thumbnail/300x", (300, 200), "jpeg"),
        ("imageMogr2/thumbnail/400x400", (400, 267), "jpeg"),
        ("imageMogr2/rotate/90|imageMogr2/format/png", (800, 1200), "png"),
        ("imageMogr2/crop/300x200/gravity/center/format/webp/quality/80", (300, 200), "webp"),
    ],
)
def test_rules_on_get(server: ServerProcess, cos: CosS3Client, photo: str, tmp_path: Path, rule: str,
                      size: tuple[int, int], fmt: str) -> None:  # fmt: skip
    out = tmp_path / "out.img"
    cos.ci_get_object(Bucket=server.bucket, Key=photo, DestImagePath=str(out), Rule=rule)
    img = pyvips.Image.new_from_file(str(out))
    assert (img.width, img.height) == size
    assert img.get("vips-loader").startswith(fmt)


def test_image_info_and_bad_rules(server: ServerProcess, cos: CosS3Client, photo: str) -> None:
    _, raw = cos.ci_get_image_info(Bucket=server.bucket, Key=photo)
    info = json.loads(raw)  # the SDK hands back the body as it came
    assert (info["format"], info["width"], info["height"]) == ("jpeg", "1200", "800")
    with pytest.raises(CosServiceError) as exc:
        cos.ci_get_object(
            Bucket=server.bucket, Key=photo, DestImagePath="/tmp/never.img", Rule="imageMogr2/rotate/abc"
        )
    assert (exc.value.get_status_code(), exc.value.get_error_code()) == (400, "InvalidArgument")


# The spec's table of thumbnail forms on a 1200x800 input (image-processing.md 3.2; the engine's unit
# tests run the same table), then one row or more for every other operation; each output is decoded
# and measured.
SPEC_TABLE = THUMBNAIL_TABLE
OPERATIONS = [
    ("imageMogr2/crop/300x200", (300, 200), "jpeg"),
    ("imageMogr2/crop/300x", (300, 800), "jpeg"),
    ("imageMogr2/crop/x200/gravity/south", (1200, 200), "jpeg"),
    ("imageMogr2/gravity/southeast/crop/5000x100", (1200, 100), "jpeg"),
    ("imageMogr2/cut/400x300x1000x700", (200, 100), "jpeg"),
    ("imageMogr2/scrop/300x300", (300, 300), "jpeg"),
    ("imageMogr2/iradius/150/format/png", (300, 300), "png"),
    ("imageMogr2/rradius/50/format/png", (1200, 800), "png"),
    ("imageMogr2/rotate/90", (800, 1200), "jpeg"),
    ("imageMogr2/rotate/180", (1200, 800), "jpeg"),
    ("imageMogr2/rotate/45", (1414, 1414), "jpeg"),
    ("imageMogr2/auto-orient", (1200, 800), "jpeg"),
    ("imageMogr2/flip/vertical", (1200, 800), "jpeg"),
    ("imageMogr2/flip/horizontal/thumbnail/120x", (120, 80), "jpeg"),
    ("imageMogr2/thumbnail/300x300/pad/1/color/I0ZGMDAwMA", (300, 300), "jpeg"),
    ("imageMogr2/grayscale/1", (1200, 800), "jpeg"),
    ("imageMogr2/blur/10x5", (1200, 800), "jpeg"),
    ("imageMogr2/sharpen/70", (1200, 800), "jpeg"),
    ("imageMogr2/bright/30/contrast/-20", (1200, 800), "jpeg"),
    ("imageMogr2/strip/thumbnail/100x", (100, 67), "jpeg"),
    ("imageMogr2/format/png", (1200, 800), "png"),
    ("imageMogr2/format/webp/quality/60", (1200, 800), "webp"),
    ("imageMogr2/format/gif", (1200, 800), "gif"),
    ("imageMogr2/format/tiff", (1200, 800), "tiff"),
    ("imageMogr2/thumbnail/200x/format/avif", (200, 133), "heif"),
    ("imageMogr2/thumbnail/200x/format/bmp", (200, 133), "bmp"),
    ("imageMogr2/quality/50!", (1200, 800), "jpeg"),
    ("imageMogr2/rquality/50", (1200, 800), "jpeg"),
    ("imageMogr2/lquality/95", (1200, 800), "jpeg"),
    ("imageMogr2/interlace/1", (1200, 800), "jpeg"),
    ("imageMogr2/size-limit/20k", (1200, 800), "jpeg"),
    ("imageMogr2/minisize/1/thumbnail/10x", (10, 7), "jpeg"),
    ("imageView2/1/w/300/h/200", (300, 200), "jpeg"),
    ("imageView2/2/w/300/h/300/format/png", (300, 200), "png"),
    ("imageView2/0/w/600/h/100", (150, 100), "jpeg"),
    ("imageView2/format/webp", (1200, 800), "webp"),
]


@pytest.fixture(scope="module")
def photo_1200x800(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> str:
    xyz = pyvips.Image.xyz(1200, 800)
    red, green = xyz[0] * 255 / 1199, xyz[1] * 255 / 799  # R grows with x, G with y: no band saturates
    img = red.bandjoin([green, (red + green) / 4 + 60]).cast("uchar")
    path = tmp_path_factory.mktemp("pic") / "colour.jpg"
    img.jpegsave(str(path), Q=90)
    server.client().upload_file(Bucket=server.bucket, Key="pics/colour.jpg", LocalFilePath=str(path))
    return "pics/colour.jpg"


def _fetch(cos: CosS3Client, bucket: str, key: str, rule: str, out: Path) -> pyvips.Image:
    cos.ci_get_object(Bucket=bucket, Key=key, DestImagePath=str(out), Rule=rule)
    return pyvips.Image.new_from_file(str(out))


@pytest.mark.parametrize(("rule", "size"), SPEC_TABLE, ids=[r for r, _ in SPEC_TABLE])
def test_spec_thumbnail_table(
    cos: CosS3Client, bucket: str, photo_1200x800: str, tmp_path: Path, rule: str, size: tuple[int, int]
) -> None:
    img = _fetch(cos, bucket, photo_1200x800, rule, tmp_path / "out")
    assert (img.width, img.height) == size
    assert img.get("vips-loader").startswith("jpeg")


@pytest.mark.parametrize(("rule", "size", "loader"), OPERATIONS, ids=[r for r, _, _ in OPERATIONS])
def test_each_operation(
    cos: CosS3Client,
    bucket: str,
    photo_1200x800: str,
    tmp_path: Path,
    rule: str,
    size: tuple[int, int],
    loader: str,
) -> None:
    out = tmp_path / "out"
    if loader == "bmp":  # libvips reads no BMP: check the header by hand
        cos.ci_get_object(Bucket=bucket, Key=photo_1200x800, DestImagePath=str(out), Rule=rule)
        data = out.read_bytes()
        assert data[:2] == b"BM" and int.from_bytes(data[2:6], "little") == len(data)
        assert struct.unpack("<ii", data[18:26]) == size
        return
    img = _fetch(cos, bucket, photo_1200x800, rule, out)
    assert (img.width, img.height) == size
    assert img.get("vips-loader").startswith(loader)
    if "grayscale" in rule:
        assert img.bands == 1 or img[0].avg() == pytest.approx(img[1].avg(), abs=1)
    if "size-limit" in rule:
        assert out.stat().st_size <= 20 * 1024
    if rule.startswith("imageMogr2/iradius") or rule.startswith("imageMogr2/rradius"):
        assert img.hasalpha() and img[img.bands - 1](0, 0)[0] == 0  # the corner is transparent
        assert img[img.bands - 1](img.width // 2, img.height // 2)[0] == 255
    if "quality/50!" in rule:
        assert vips.estimate_jpeg_quality(out) == 50
    if "interlace/1" in rule:
        assert img.get("interlaced") == 1


def test_pixels_follow_the_rule(cos: CosS3Client, bucket: str, photo_1200x800: str, tmp_path: Path) -> None:
    """Not just sizes: the pixels moved where the rule says (colour gradient: R grows with x, G with y)."""
    plain = _fetch(cos, bucket, photo_1200x800, "imageMogr2/format/png", tmp_path / "a")
    flipped = _fetch(cos, bucket, photo_1200x800, "imageMogr2/flip/horizontal/format/png", tmp_path / "b")
    assert abs(flipped(0, 10)[0] - plain(1199, 10)[0]) <= 8
    cut = _fetch(cos, bucket, photo_1200x800, "imageMogr2/cut/10x10x100x50/format/png", tmp_path / "c")
    assert abs(cut(0, 0)[0] - plain(100, 50)[0]) <= 8 and abs(cut(0, 0)[1] - plain(100, 50)[1]) <= 8
    padded = _fetch(
        cos, bucket, photo_1200x800, "imageMogr2/thumbnail/600x600/pad/1/color/I0ZGMDAwMA", tmp_path / "d"
    )
    assert padded(300, 10)[:3] == pytest.approx([255, 0, 0], abs=12)  # the band above the image is red
    bright = _fetch(cos, bucket, photo_1200x800, "imageMogr2/bright/40/format/png", tmp_path / "e")
    assert bright.avg() > plain.avg() + 20


@pytest.mark.parametrize(
    "rule",
    [
        "imageMogr2/thumbnail/abc",
        "imageMogr2/thumbnail/!0p",
        "imageMogr2/thumbnail/!600",
        "imageMogr2/crop/0x10",
        "imageMogr2/rotate/400",
        "imageMogr2/format/xyz",
        "imageMogr2/quality/101",
        "imageMogr2/blur/100x5",
        "imageMogr2/gravity/middle",
        "imageMogr2/nosuchop/1",
        "imageMogr2/thumbnail/10x|imageInfo|imageMogr2/thumbnail/5x",
        "imageView2/7/w/10",
        "imageMogr2/cut/10x10x5000x5000",
        "style/thumb",
        "imageMogr2/thumbnail",
    ],
)
def test_malformed_rules_are_400(cos: CosS3Client, bucket: str, photo_1200x800: str, rule: str) -> None:
    with pytest.raises(CosServiceError) as exc:
        cos.ci_get_object(Bucket=bucket, Key=photo_1200x800, DestImagePath="/tmp/never.img", Rule=rule)
    assert (exc.value.get_status_code(), exc.value.get_error_code()) == (400, "InvalidArgument")
    assert exc.value.get_request_id() and exc.value.get_error_msg()


def test_ignore_error_returns_the_original(
    cos: CosS3Client, bucket: str, photo_1200x800: str, tmp_path: Path
) -> None:
    out = tmp_path / "orig"
    cos.ci_get_object(Bucket=bucket, Key=photo_1200x800, DestImagePath=str(out),
                      Rule="imageMogr2/cut/10x10x5000x5000/ignore-error/1")  # fmt: skip
    stored = cos.get_object(Bucket=bucket, Key=photo_1200x800)["Body"].get_raw_stream().read()
    assert out.read_bytes() == stored


def test_exif_image_ave_and_info_after_a_pipeline(
    server: ServerProcess, cos: CosS3Client, bucket: str, tmp_path: Path
) -> None:
    tagged = pyvips.Image.black(64, 48).copy()
    tagged.set_type(pyvips.GValue.gstr_type, "exif-ifd0-Make", "Canon")
    tagged.set_type(pyvips.GValue.gstr_type, "exif-ifd2-DateTimeOriginal", "2019:05:16 14:44:49")
    cos.put_object(Bucket=bucket, Key="info/tagged.jpg", Body=bytes(tagged.jpegsave_buffer()))
    headers, raw = cos.ci_get_image_exif_info(Bucket=bucket, Key="info/tagged.jpg")
    tags = json.loads(raw)
    assert tags["Make"] == {"val": "Canon", "type": 2}
    assert tags["DateTimeOriginal"] == {"val": "2019:05:16 14:44:49", "type": 2}
    assert headers["Content-Type"].startswith("application/json")

    solid = (
        pyvips.Image.black(50, 40)
        .new_from_image([0x73, 0x62, 0x46])
        .cast("uchar")
        .copy(interpretation="srgb")
    )
    cos.put_object(Bucket=bucket, Key="info/solid.png", Body=bytes(solid.pngsave_buffer(keep="none")))
    _, raw = cos.ci_get_image_exif_info(Bucket=bucket, Key="info/solid.png")
    assert json.loads(raw) == {"error": "no exif data"}  # a 200, as the spec says
    _, raw = cos.ci_get_image_ave_info(Bucket=bucket, Key="info/solid.png")
    assert json.loads(raw) == {"RGB": "0x736246"}
    _, raw = cos.ci_get_image_info(Bucket=bucket, Key="info/solid.png")
    info = json.loads(raw)
    assert (info["format"], info["width"], info["height"], info["frame_count"]) == ("png", "50", "40", "1")
    assert all(isinstance(v, str) for v in info.values())
    # a pipeline ending in imageInfo describes the processed image
    out = tmp_path / "info.json"
    cos.ci_get_object(Bucket=bucket, Key="info/solid.png", DestImagePath=str(out),
                      Rule="imageMogr2/thumbnail/25x/format/webp|imageInfo")  # fmt: skip
    after = json.loads(out.read_text())
    assert (after["format"], after["width"], after["height"]) == ("webp", "25", "20")


def test_processed_get_headers_and_conditions(server: ServerProcess, photo_1200x800: str) -> None:
    from tests.helpers import raw_request

    rule = {"imageMogr2/thumbnail/100x": ""}
    status, headers, body = raw_request(server, "GET", "/" + photo_1200x800, params=rule)
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert headers["Content-Length"] == str(len(body))
    assert headers["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'  # the output's, not the source's
    assert "x-cos-hash-crc64ecma" not in headers and headers["Last-Modified"]
    source = server.client().head_object(Bucket=server.bucket, Key=photo_1200x800)
    status, _, body = raw_request(server, "GET", "/" + photo_1200x800, params=rule,
                                  headers={"If-None-Match": source["ETag"]})  # fmt: skip
    assert (status, body) == (304, b"")


def test_animated_gif_stays_animated(cos: CosS3Client, bucket: str, tmp_path: Path) -> None:
    frames = [
        pyvips.Image.black(120, 80).new_from_image(c).cast("uchar")
        for c in ([255, 0, 0], [0, 255, 0], [0, 0, 255])
    ]
    strip = pyvips.Image.arrayjoin(frames, across=1).copy(interpretation="srgb")
    strip.set_type(pyvips.GValue.gint_type, "page-height", 80)
    strip.set_type(pyvips.GValue.array_int_type, "delay", [100, 200, 300])
    cos.put_object(Bucket=bucket, Key="anim/a.gif", Body=bytes(strip.gifsave_buffer()))
    cos.ci_get_object(
        Bucket=bucket,
        Key="anim/a.gif",
        DestImagePath=str(tmp_path / "1.gif"),
        Rule="imageMogr2/thumbnail/60x",
    )
    img = pyvips.Image.new_from_file(str(tmp_path / "1.gif"), n=-1)
    assert (img.get("n-pages"), img.width, img.get("page-height")) == (3, 60, 40)
    assert list(img.get("delay")) == [100, 200, 300]
    cos.ci_get_object(
        Bucket=bucket,
        Key="anim/a.gif",
        DestImagePath=str(tmp_path / "2.gif"),
        Rule="imageMogr2/thumbnail/!200p",
    )
    img = pyvips.Image.new_from_file(str(tmp_path / "2.gif"), n=-1)  # animations are never enlarged
    assert (img.get("n-pages"), img.width, img.get("page-height")) == (3, 120, 80)
    cos.ci_get_object(
        Bucket=bucket, Key="anim/a.gif", DestImagePath=str(tmp_path / "3.png"), Rule="imageMogr2/format/png"
    )
    still = pyvips.Image.new_from_file(str(tmp_path / "3.png"))
    assert (still.get("vips-loader"), still.width, still.height) == ("pngload", 120, 80)


def _bomb_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of `width` x `height` zeros: tiny on disk, enormous decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" * (1 + (width + 7) // 8)
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _children(pid: int) -> list[int]:
    """Child processes of any thread of `pid` (the image pool is started from a worker thread)."""
    return [
        int(c)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for c in (task / "children").read_text().split()
    ]


def _peak_rss_kib(pid: int) -> int:
    """The sum of the peak RSS of `pid` and its children (the image processes)."""
    total = 0
    for p in [pid, *_children(pid)]:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1])
    return total


def test_decompression_bomb_is_refused_with_memory_flat(tmp_path: Path) -> None:
    bomb = _bomb_png(30000, 30000)  # 900 Mpixels; about 110 KB as a file
    assert len(bomb) < 1024 * 1024
    with running_server(tmp_path / "bomb", args=["--workers", "0"]) as srv:
        cos = srv.client()
        cos.put_object(Bucket=srv.bucket, Key="bomb.png", Body=bomb)
        cos.put_object(
            Bucket=srv.bucket, Key="small.png", Body=bytes(pyvips.Image.black(64, 64).pngsave_buffer())
        )
        for _ in range(4):  # start the image processes and let each take a request
            cos.ci_get_object(Bucket=srv.bucket, Key="small.png", DestImagePath=str(tmp_path / "s"),
                              Rule="imageMogr2/rotate/90")  # fmt: skip
        assert srv.proc is not None
        before = _peak_rss_kib(srv.proc.pid)
        for rule in ("imageMogr2/thumbnail/100x", "imageMogr2/rotate/90", "imageMogr2/format/jpg"):
            with pytest.raises(CosServiceError) as exc:
                cos.ci_get_object(
                    Bucket=srv.bucket, Key="bomb.png", DestImagePath=str(tmp_path / "x"), Rule=rule
                )
            assert (exc.value.get_status_code(), exc.value.get_error_code()) == (400, "ImageResolutionExceed")
        with pytest.raises(CosServiceError) as exc:
            cos.ci_put_object(Bucket=srv.bucket, Key="bomb2.png", Body=bomb,
                              PicOperations=json.dumps({"rules": [{"fileid": "t.jpg", "rule": "imageMogr2/thumbnail/10x"}]}))  # fmt: skip
        assert exc.value.get_error_code() == "ImageResolutionExceed"
        with pytest.raises(CosServiceError) as exc:
            cos.ci_get_image_info(Bucket=srv.bucket, Key="bomb.png")  # photo_rgb would need every pixel
        assert exc.value.get_error_code() == "ImageResolutionExceed"
        _, raw = cos.ci_get_image_exif_info(Bucket=srv.bucket, Key="bomb.png")  # the header alone answers
        assert json.loads(raw) == {"error": "no exif data"}
        grown = _peak_rss_kib(srv.proc.pid) - before
        # decoding even one band of it would take 900 MB; refusing it takes next to nothing
        assert grown < 64 * 1024, f"peak RSS grew by {grown} KiB"


def test_a_dead_image_process_is_replaced(tmp_path: Path) -> None:
    with running_server(tmp_path / "pool", args=["--workers", "0", "--image-workers", "2"]) as srv:
        cos = srv.client()
        cos.put_object(
            Bucket=srv.bucket, Key="p.png", Body=bytes(pyvips.Image.black(64, 48).pngsave_buffer())
        )

        def width() -> int:
            out = tmp_path / f"o{time.monotonic_ns()}"
            cos.ci_get_object(
                Bucket=srv.bucket, Key="p.png", DestImagePath=str(out), Rule="imageMogr2/rotate/90"
            )
            return int(pyvips.Image.new_from_file(str(out)).width)

        assert width() == 48
        assert srv.proc is not None
        children = _children(srv.proc.pid)
        assert len(children) >= 2  # the image processes (plus the pool's resource tracker, maybe)
        for pid in children:
            os.kill(pid, signal.SIGKILL)
        failures = 0
        deadline = time.monotonic() + 30
        while True:
            try:
                assert width() == 48
                break
            except CosServiceError as exc:  # a request that met the dying pool: a clean 500, once
                assert (exc.get_status_code(), exc.get_error_code()) == (500, "InternalError")
                failures += 1
                assert failures <= 1 and time.monotonic() < deadline
        for _ in range(3):
            assert width() == 48
