"""Watermarks (in Transcode and Tag Watermark), SmartCover and VideoMontage through cos-python-sdk-v5.

Outputs are decoded with PyAV and compared region by region with the same job made without a
watermark; covers and montages are measured (count, size, duration).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest
from qcloud_cos import CosS3Client
from qcloud_cos.cos_exception import CosServiceError

from mediajobs.media.probe import probe
from mediajobs.media.samples import make_video, run_ffmpeg
from mediajobs.processors.base import InvalidOperation
from mediajobs.processors.videomontage import choose_segments
from mediajobs.processors.watermark import escape_value, image_key
from mediajobs.testing import ServerProcess, running_server
from tests.helpers import create_job, wait_job

W, H = 320, 240
MARK = 64  # the watermark image is MARK x MARK pure blue


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("wcm"), args=["--workers", "1"]) as s:
        cos = s.client()
        d = tmp_path_factory.mktemp("media")
        blue = d / "blue.png"
        run_ffmpeg(["-f", "lavfi", "-i", f"color=c=0x0000FF:s={MARK}x{MARK}", "-frames:v", "1",
                    "-f", "image2", "-update", "1", str(blue)])  # fmt: skip
        static = d / "static.mp4"
        run_ffmpeg(["-f", "lavfi", "-i", f"color=c=gray:s={W}x{H}:r=25:d=2", "-c:v", "libx264",
                    "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(static)])  # fmt: skip
        files = {
            "in/clip.mp4": make_video(d / "clip.mp4", seconds=2.0, width=W, height=H),
            "in/ten.mp4": make_video(d / "ten.mp4", seconds=10.0, width=W, height=H),
            "in/static.mp4": static,
            "wm/blue.png": blue,
        }
        for key, path in files.items():
            cos.upload_file(Bucket=s.bucket, Key=key, LocalFilePath=str(path))
        yield s


@pytest.fixture(scope="module")
def cos(srv: ServerProcess) -> CosS3Client:
    return srv.client()


def create(cos: CosS3Client, bucket: str, tag: str, key: str, op: dict[str, Any]) -> str:
    return create_job(cos, bucket, tag, key, op)


def wait(cos: CosS3Client, bucket: str, job_id: str, timeout: float = 90) -> dict[str, Any]:
    return wait_job(cos, bucket, job_id, timeout=timeout)


def run_job(cos: CosS3Client, bucket: str, tag: str, key: str, op: dict[str, Any]) -> dict[str, Any]:
    return wait(cos, bucket, create(cos, bucket, tag, key, op))


def fetch(cos: CosS3Client, bucket: str, key: str, tmp_path: Path) -> Path:
    path = tmp_path / key.replace("/", "_")
    cos.download_file(Bucket=bucket, Key=key, DestFilePath=str(path))
    return path


def output(bucket: str, key: str) -> dict[str, str]:
    return {"Region": "ap-guangzhou", "Bucket": bucket, "Object": key}


def transcode(bucket: str, key: str, marks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {
        "Transcode": {"Container": {"Format": "mp4"}, "Video": {"Codec": "H.264", "Crf": "18"}},
        "Output": output(bucket, key),
    }
    if marks:
        op["Watermark"] = marks if len(marks) > 1 else marks[0]
    return op


def image_mark(bucket: str, pos: str, **extra: Any) -> dict[str, Any]:
    mark: dict[str, Any] = {
        "Type": "Image",
        "Pos": pos,
        "LocMode": "Absolute",
        "Dx": "8",
        "Dy": "8",
        "Image": {
            "Url": f"http://{bucket}.cos.ap-guangzhou.myqcloud.com/wm/blue.png",
            "Mode": "Original",
            "Transparency": "100",
        },
    }
    mark.update(extra)
    return mark


Frame = tuple[int, bytes]  # row stride, RGB bytes


def frame_at(path: Path, index: int) -> Frame:
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i == index:
                rgb = f.reformat(format="rgb24")
                assert (rgb.width, rgb.height) == (W, H)
                return rgb.planes[0].line_size, bytes(rgb.planes[0])
    raise AssertionError(f"{path} has fewer than {index + 1} frames")


def region(frame: Frame, box: tuple[int, int, int, int]) -> list[int]:
    stride, data = frame
    x0, y0, x1, y1 = box
    return [b for y in range(y0, y1) for b in data[y * stride + 3 * x0 : y * stride + 3 * x1]]


def diff(a: Frame, b: Frame, box: tuple[int, int, int, int]) -> float:
    ra, rb = region(a, box), region(b, box)
    return sum(abs(x - y) for x, y in zip(ra, rb, strict=True)) / len(ra)


def mean_rgb(frame: Frame, box: tuple[int, int, int, int]) -> tuple[float, float, float]:
    r = region(frame, box)
    n = len(r) // 3
    return sum(r[0::3]) / n, sum(r[1::3]) / n, sum(r[2::3]) / n


# Inner parts of where the mark lands (8 px from the corner, MARK wide), and of the centre.
TOP_LEFT = (16, 16, 8 + MARK - 8, 8 + MARK - 8)
BOTTOM_RIGHT = (W - 8 - MARK + 8, H - 8 - MARK + 8, W - 16, H - 16)
CENTER = (W // 2 - 60, H // 2 - 12, W // 2 + 60, H // 2 + 12)


@pytest.fixture(scope="module")
def baseline(srv: ServerProcess, cos: CosS3Client, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = run_job(cos, srv.bucket, "Transcode", "in/clip.mp4", transcode(srv.bucket, "out/plain.mp4"))
    assert d["State"] == "Success", d
    return fetch(cos, srv.bucket, "out/plain.mp4", tmp_path_factory.mktemp("plain"))


def test_image_watermark_lands_at_its_position(
    srv: ServerProcess, cos: CosS3Client, baseline: Path, tmp_path: Path
) -> None:
    plain = frame_at(baseline, 25)
    for pos, marked_box, clean_box in (
        ("TopLeft", TOP_LEFT, BOTTOM_RIGHT),
        ("BottomRight", BOTTOM_RIGHT, TOP_LEFT),
    ):
        key = f"out/wm-{pos}.mp4"
        d = run_job(
            cos,
            srv.bucket,
            "Transcode",
            "in/clip.mp4",
            transcode(srv.bucket, key, [image_mark(srv.bucket, pos)]),
        )
        assert d["State"] == "Success", d
        path = fetch(cos, srv.bucket, key, tmp_path)
        assert (
            d["Operation"]["MediaResult"]["OutputFile"]["Md5Info"]["Md5"]
            == hashlib.md5(path.read_bytes()).hexdigest()
        )
        assert d["Operation"]["Watermark"]["Pos"] == pos  # the node is echoed
        marked = frame_at(path, 25)
        r, g, b = mean_rgb(marked, marked_box)
        assert b > 200 and r < 50 and g < 50, (pos, r, g, b)  # pure blue where the mark is
        assert diff(marked, plain, marked_box) > 60
        assert diff(marked, plain, clean_box) < 4  # and the rest of the picture as it was
        assert diff(marked, plain, CENTER) < 4


def test_scaled_translucent_mark_and_relative_offsets(
    srv: ServerProcess, cos: CosS3Client, baseline: Path, tmp_path: Path
) -> None:
    mark = image_mark(srv.bucket, "TopRight", LocMode="Relativity", Dx="10", Dy="10")
    # 25 % of the width: 80 px wide; half see-through
    mark["Image"].update({"Mode": "Proportion", "Width": "25", "Transparency": "50"})
    d = run_job(cos, srv.bucket, "Transcode", "in/clip.mp4", transcode(srv.bucket, "out/wm-half.mp4", [mark]))
    assert d["State"] == "Success", d
    marked = frame_at(fetch(cos, srv.bucket, "out/wm-half.mp4", tmp_path), 25)
    plain = frame_at(baseline, 25)
    x1, y0 = W - 32, 24  # 10 % of 320 and of 240 from the top right corner
    inside = (x1 - 80 + 6, y0 + 6, x1 - 6, y0 + 80 - 6)
    # Half way between the picture and pure blue, channel by channel.
    for got, was, blue in zip(mean_rgb(marked, inside), mean_rgb(plain, inside), (0, 0, 255), strict=True):
        assert abs(got - (was + blue) / 2) < 20, (got, was)
    assert diff(marked, plain, inside) > 30
    assert diff(marked, plain, (x1 + 6, y0, W, y0 + 60)) < 4  # right of the mark: untouched


def test_text_watermark_with_time_window(
    srv: ServerProcess, cos: CosS3Client, baseline: Path, tmp_path: Path
) -> None:
    mark = {
        "Type": "Text",
        "Pos": "Center",
        "LocMode": "Absolute",
        "StartTime": "1",
        "EndTime": "1.8",
        "Text": {
            "Text": "WATERMARK: it's [on], 100%",
            "FontSize": "20",
            "FontColor": "0xFFFFFF",
            "FontType": "simfang.ttf",
            "Transparency": "100",
        },
    }
    d = run_job(cos, srv.bucket, "Transcode", "in/clip.mp4", transcode(srv.bucket, "out/wm-text.mp4", [mark]))
    assert d["State"] == "Success", d
    path = fetch(cos, srv.bucket, "out/wm-text.mp4", tmp_path)
    assert diff(frame_at(path, 35), frame_at(baseline, 35), CENTER) > 15  # 1.4 s: the text is there
    assert diff(frame_at(path, 10), frame_at(baseline, 10), CENTER) < 4  # 0.4 s: not yet
    assert diff(frame_at(path, 35), frame_at(baseline, 35), TOP_LEFT) < 4


def test_watermark_tag_and_two_marks(
    srv: ServerProcess, cos: CosS3Client, baseline: Path, tmp_path: Path
) -> None:
    marks = [image_mark(srv.bucket, "TopLeft"), image_mark(srv.bucket, "BottomRight")]
    # A path-style URL names the same object.
    marks[1]["Image"]["Url"] = f"http://127.0.0.1:{srv.port}/{srv.bucket}/wm/blue.png"
    d = run_job(
        cos,
        srv.bucket,
        "Watermark",
        "in/clip.mp4",
        {"Watermark": marks, "Output": output(srv.bucket, "out/tagged.mp4")},
    )
    assert d["State"] == "Success", d
    path = fetch(cos, srv.bucket, "out/tagged.mp4", tmp_path)
    info = probe(path)
    assert [v.codec_name for v in info.video] == ["h264"] and [a.codec_name for a in info.audio] == ["aac"]
    marked, plain = frame_at(path, 25), frame_at(baseline, 25)
    for box in (TOP_LEFT, BOTTOM_RIGHT):
        assert mean_rgb(marked, box)[2] > 200
    assert diff(marked, plain, CENTER) < 6


def test_watermark_template_id(srv: ServerProcess, cos: CosS3Client, baseline: Path, tmp_path: Path) -> None:
    template = {"Tag": "Watermark", "Name": "blue-corner", "Watermark": image_mark(srv.bucket, "BottomRight")}
    tid = cos.ci_create_template(Bucket=srv.bucket, Template=template)["Template"]["TemplateId"]
    op = transcode(srv.bucket, "out/wm-template.mp4")
    op["WatermarkTemplateId"] = tid
    d = run_job(cos, srv.bucket, "Transcode", "in/clip.mp4", op)
    assert d["State"] == "Success", d
    marked = frame_at(fetch(cos, srv.bucket, "out/wm-template.mp4", tmp_path), 25)
    assert mean_rgb(marked, BOTTOM_RIGHT)[2] > 200
    assert diff(marked, frame_at(baseline, 25), TOP_LEFT) < 4


def test_missing_watermark_image_fails_the_job(srv: ServerProcess, cos: CosS3Client) -> None:
    mark = image_mark(srv.bucket, "TopLeft")
    mark["Image"]["Url"] = f"https://{srv.bucket}.cos.ap-guangzhou.myqcloud.com/wm/none.png"
    d = run_job(cos, srv.bucket, "Transcode", "in/clip.mp4", transcode(srv.bucket, "out/never.mp4", [mark]))
    assert (d["State"], d["Code"]) == ("Failed", "InputFileNotExist")
    assert not cos.object_exists(Bucket=srv.bucket, Key="out/never.mp4")


def test_smartcover_count_size_and_names(srv: ServerProcess, cos: CosS3Client, tmp_path: Path) -> None:
    op = {
        "SmartCover": {"Format": "jpg", "Width": "160", "Count": "4"},
        "Output": output(srv.bucket, "cover/${InputName}-${Number}.jpg"),
    }
    d = run_job(cos, srv.bucket, "SmartCover", "in/ten.mp4", op)
    assert d["State"] == "Success", d
    result = d["Operation"]["MediaResult"]["OutputFile"]
    assert result["ObjectPrefix"] == "cover/ten-"
    assert result["ObjectName"] == ["0.jpg", "1.jpg", "2.jpg", "3.jpg"]
    md5s = {m["ObjectName"]: m["Md5"] for m in result["Md5Info"]}
    for name in result["ObjectName"]:
        path = fetch(cos, srv.bucket, "cover/ten-" + name, tmp_path)
        assert md5s["cover/ten-" + name] == hashlib.md5(path.read_bytes()).hexdigest()
        info = probe(path)
        assert (info.video[0].codec_name, info.video[0].width, info.video[0].height) == ("mjpeg", 160, 120)
    # png, Height only, no ${Number}: the index goes before the extension
    op = {
        "SmartCover": {"Format": "png", "Height": "128", "Count": "2"},
        "Output": output(srv.bucket, "cover/p.png"),
    }
    d = run_job(cos, srv.bucket, "SmartCover", "in/clip.mp4", op)
    assert d["State"] == "Success", d
    assert d["Operation"]["MediaResult"]["OutputFile"]["ObjectPrefix"] == "cover/p-"
    for n in (0, 1):
        info = probe(fetch(cos, srv.bucket, f"cover/p-{n}.png", tmp_path))
        assert (info.video[0].codec_name, info.video[0].width, info.video[0].height) == ("png", 171, 128)


def test_smartcover_delete_duplicates(srv: ServerProcess, cos: CosS3Client) -> None:
    op = {
        "SmartCover": {"Count": "5", "DeleteDuplicates": "true"},
        "Output": output(srv.bucket, "dup/${Number}.jpg"),
    }
    d = run_job(cos, srv.bucket, "SmartCover", "in/static.mp4", op)
    assert d["State"] == "Success", d
    assert d["Operation"]["MediaResult"]["OutputFile"]["ObjectName"] == "0.jpg"  # one picture, shown once
    keys = [o["Key"] for o in cos.list_objects(Bucket=srv.bucket, Prefix="dup/")["Contents"]]
    assert keys == ["dup/0.jpg"]
    op = {
        "SmartCover": {"Count": "5", "DeleteDuplicates": "true"},
        "Output": output(srv.bucket, "moving/${Number}.jpg"),
    }
    d = run_job(cos, srv.bucket, "SmartCover", "in/ten.mp4", op)
    assert d["State"] == "Success", d
    assert len(d["Operation"]["MediaResult"]["OutputFile"]["ObjectName"]) == 5  # a moving picture keeps all


def test_videomontage_duration(srv: ServerProcess, cos: CosS3Client, tmp_path: Path) -> None:
    op = {
        "VideoMontage": {
            "Container": {"Format": "mp4"},
            "Video": {"Codec": "H.264", "Width": "160"},
            "Audio": {"Codec": "aac"},
            "Duration": "4",
            "Scene": "Video",
        },
        "Output": output(srv.bucket, "montage/${InputName}.${Ext}"),
    }
    d = run_job(cos, srv.bucket, "VideoMontage", "in/ten.mp4", op)
    assert d["State"] == "Success", d
    assert d["Operation"]["MediaResult"]["OutputFile"]["ObjectName"] == "montage/ten.mp4"
    assert d["Operation"]["VideoMontage"]["Duration"] == "4"  # echoed
    with av.open(str(fetch(cos, srv.bucket, "montage/ten.mp4", tmp_path))) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert (v.codec_context.name, v.width, v.height, a.codec_context.name) == ("h264", 160, 120, "aac")
        assert abs(float(c.duration or 0) / 1e6 - 4.0) < 0.3
        frames = sum(1 for _ in c.decode(video=0))
    assert 95 <= frames <= 105  # 4 s at 25 fps
    # longer than the input: the whole input; a watermark is drawn on the montage too
    op = {
        "VideoMontage": {"Container": {"Format": "mkv"}, "Audio": {"Remove": "true"}, "Duration": "60"},
        "Watermark": image_mark(srv.bucket, "TopLeft"),
        "Output": output(srv.bucket, "montage/whole.mkv"),
    }
    d = run_job(cos, srv.bucket, "VideoMontage", "in/clip.mp4", op)
    assert d["State"] == "Success", d
    path = fetch(cos, srv.bucket, "montage/whole.mkv", tmp_path)
    info = probe(path)
    assert not info.audio and abs(info.duration - 2.0) < 0.2
    assert mean_rgb(frame_at(path, 10), TOP_LEFT)[2] > 200


def _mark(bucket: str, **changes: Any) -> dict[str, Any]:
    mark = image_mark(bucket, "TopLeft")
    for k, v in changes.items():
        if k.startswith("Image_"):
            mark["Image"][k[6:]] = v
        elif v is None:
            del mark[k]
        else:
            mark[k] = v
    return mark


TEXT = {
    "Text": "hi",
    "FontSize": "20",
    "FontColor": "0xFFFFFF",
    "FontType": "simfang.ttf",
    "Transparency": "100",
}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"Pos": "Middle"}, "Pos"),
        ({"Type": None}, "Type"),
        ({"LocMode": None}, "LocMode"),
        ({"Dx": "5000"}, "Dx"),
        ({"Dx": "-10"}, "background"),
        ({"LocMode": "Relativity", "Dy": "150"}, "Dy"),
        ({"StartTime": "3", "EndTime": "2"}, "EndTime"),
        ({"SlideConfig": {"SlideMode": "ScrollFromLeft"}}, "ScrollFromLeft"),
        ({"Image_Url": "http://other-1250000000.cos.ap-guangzhou.myqcloud.com/wm/blue.png"}, "Url"),
        ({"Image_Url": "https://cdn.example.com/wm/blue.png"}, "Url"),
        ({"Image_Url": "file:///etc/passwd"}, "Url"),
        ({"Image_Mode": "Stretch"}, "Mode"),
        ({"Image_Mode": "Fixed"}, "Width or Height"),
        ({"Image_Mode": "Fixed", "Image_Width": "4"}, "Width"),
        ({"Image_Transparency": "0"}, "Transparency"),
        ({"Image_Background": "true"}, "Background"),
        ({"Type": "Text", "Text": {**TEXT, "Text": "x" * 65}}, "64"),
        ({"Type": "Text", "Text": {**TEXT, "FontColor": "white"}}, "FontColor"),
        ({"Type": "Text", "Text": {**TEXT, "FontSize": "200"}}, "FontSize"),
        ({"Type": "Text", "Text": {**TEXT, "FontType": "../../etc/passwd"}}, "FontType"),
        ({"Type": "Text", "Text": {k: v for k, v in TEXT.items() if k != "Text"}}, "Text"),
    ],
)
def test_bad_watermarks_are_refused(
    srv: ServerProcess, cos: CosS3Client, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(CosServiceError) as exc:
        create(
            cos,
            srv.bucket,
            "Transcode",
            "in/clip.mp4",
            transcode(srv.bucket, "out/never.mp4", [_mark(srv.bucket, **changes)]),
        )
    assert (exc.value.get_status_code(), exc.value.get_error_code()) == (400, "InvalidArgument")
    assert "Watermark" in exc.value.get_error_msg() and message in exc.value.get_error_msg()


@pytest.mark.parametrize(
    ("tag", "op"),
    [
        ("Transcode", {"Watermark": [{"Type": "Image"}] * 4}),
        ("Transcode", {"WatermarkTemplateId": "t1" + "0" * 32}),
        ("Watermark", {}),  # a Watermark job without a watermark
        ("SmartCover", {"SmartCover": {"Count": "11"}}),
        ("SmartCover", {"SmartCover": {"Format": "gif"}}),
        ("SmartCover", {"SmartCover": {"Width": "100"}}),
        ("VideoMontage", {"VideoMontage": {"Container": {"Format": "webm"}}}),
        ("VideoMontage", {"VideoMontage": {"Container": {"Format": "mp4"}, "Video": {"Codec": "AV1"}}}),
        ("VideoMontage", {"VideoMontage": {"Container": {"Format": "mp4"}, "Duration": "0"}}),
        ("VideoMontage", {"VideoMontage": {"Container": {"Format": "mp4"}, "Scene": "Soccer"}}),
        (
            "VideoMontage",
            {"VideoMontage": {"Container": {"Format": "mp4"}, "AudioMix": {"AudioSource": "http://x/y.mp3"}}},
        ),
        ("VideoMontage", {"VideoMontage": {"Duration": "5"}}),
    ],
)
def test_bad_operations_are_refused(
    srv: ServerProcess, cos: CosS3Client, tag: str, op: dict[str, Any]
) -> None:
    body = {"Transcode": {"Container": {"Format": "mp4"}}} if tag == "Transcode" else {}
    body.update(op)
    body["Output"] = output(srv.bucket, "out/never.mp4")
    with pytest.raises(CosServiceError) as exc:
        create(cos, srv.bucket, tag, "in/clip.mp4", body)
    assert (exc.value.get_status_code(), exc.value.get_error_code()) == (400, "InvalidArgument")
    # Unknown template ids are the template resolver's to name; the rest name the Tag.
    assert (op.get("WatermarkTemplateId") and "WatermarkTemplateId" in exc.value.get_error_msg()) or (
        tag in exc.value.get_error_msg()
    )


def test_montage_takes_the_liveliest_windows_in_time_order() -> None:
    # 20 s scored every 0.5 s: changes around 15 s, then 3 s, then 9 s.
    peaks = {15.0: 0.9, 3.0: 0.6, 9.0: 0.4}
    samples = [(t / 2, peaks.get(t / 2, 0.01)) for t in range(40)]
    segments = choose_segments(samples, 20.0, 3.0)
    assert segments == [(3.0, 1.0), (9.0, 1.0), (15.0, 1.0)]
    segments = choose_segments(samples, 20.0, 2.5)  # the last one taken is shortened
    assert segments == [(3.0, 1.0), (9.0, 0.5), (15.0, 1.0)]
    assert choose_segments(samples, 20.0, 25.0) == [(0.0, 20.0)]
    long = choose_segments([], 3600.0, 600.0)  # long montages: at most 30 segments
    assert len(long) <= 30 and abs(sum(s[1] for s in long) - 600.0) < 1e-6


def test_watermark_urls_and_filter_escaping() -> None:
    b = "pics-1250000000"
    assert image_key(f"https://{b}.cos.ap-beijing.myqcloud.com/a/b%20c.png?sign=x", b) == "a/b c.png"
    assert image_key(f"http://127.0.0.1:8080/{b}/a.png", b) == "a.png"
    for url in (f"https://other-1.cos.ap-beijing.myqcloud.com/{b}/a.png", f"ftp://{b}.cos.x.myqcloud.com/a.png",
                f"https://{b}.cos.ap-beijing.myqcloud.com/", "a.png"):  # fmt: skip
        with pytest.raises(InvalidOperation):
            image_key(url, b)
    assert escape_value("it's a: [x], y;") == r"it\\\'s a\\: \[x\]\, y\;"
