"""Snapshot and Animation jobs through cos-python-sdk-v5: every output downloaded, decoded and measured."""

from __future__ import annotations

import hashlib
import itertools
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest
from qcloud_cos import CosS3Client
from qcloud_cos.cos_exception import CosServiceError

from mediajobs.media.samples import ffmpeg_exe, make_audio, make_video, run_ffmpeg
from mediajobs.processors.output import Output
from mediajobs.processors.snapshot import MAX_MD5_LISTED, object_prefix, output_file_nodes
from mediajobs.testing import ServerProcess, running_server
from tests.helpers import create_job, wait_job

REGION = "ap-guangzhou"
FPS = 25


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media")
    black = d / "black.mp4"
    # One second of black, then two seconds of testsrc2: key frames every second.
    run_ffmpeg(
        ["-f", "lavfi", "-i", f"color=black:size=320x240:rate={FPS}:duration=1",
         "-f", "lavfi", "-i", f"testsrc2=size=320x240:rate={FPS}:duration=2",
         "-filter_complex", "[0][1]concat=n=2:v=1:a=0", "-c:v", "libx264", "-preset", "ultrafast",
         "-pix_fmt", "yuv420p", "-g", str(FPS), "-f", "mp4", str(black)]
    )  # fmt: skip
    return {
        # 3 s at 25 fps, a key frame every second (0, 1, 2 s)
        "clip": make_video(d / "clip.mp4", seconds=3.0, width=320, height=240, fps=FPS),
        "black": black,
        "tone": make_audio(d / "tone.wav", seconds=1.0),
    }


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, media: dict[str, Path]) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("snapshot"), args=["--workers", "1"]) as s:
        cos = s.client()
        for name, key in (("clip", "in/clip.mp4"), ("black", "in/black.mp4"), ("tone", "in/tone.wav")):
            cos.upload_file(Bucket=s.bucket, Key=key, LocalFilePath=str(media[name]))
        yield s


@pytest.fixture(scope="module")
def cos(srv: ServerProcess) -> CosS3Client:
    return srv.client()


class Pixels:
    """A decoded picture as packed bytes (no numpy needed): grey or RGB, row by row."""

    def __init__(self, frame: av.VideoFrame, fmt: str = "gray", width: int = 0, height: int = 0) -> None:
        f = frame.reformat(width=width or frame.width, height=height or frame.height, format=fmt)
        self.width, self.height, self.channels = f.width, f.height, 3 if fmt == "rgb24" else 1
        plane, row = f.planes[0], f.width * self.channels
        data = bytes(plane)
        self.data = b"".join(data[y * plane.line_size : y * plane.line_size + row] for y in range(f.height))

    def region(self, x0: int, y0: int, x1: int, y1: int) -> list[tuple[int, ...]]:
        c = self.channels
        return [
            tuple(self.data[(y * self.width + x) * c : (y * self.width + x + 1) * c])
            for y in range(y0, y1)
            for x in range(x0, x1)
        ]

    def mean(self) -> float:
        return sum(self.data) / len(self.data)

    def std(self, box: tuple[int, int, int, int] | None = None) -> float:
        values = [v for px in self.region(*box) for v in px] if box else list(self.data)
        m = sum(values) / len(values)
        return float((sum((v - m) ** 2 for v in values) / len(values)) ** 0.5)

    def diff(self, other: Pixels) -> float:
        """Mean absolute difference."""
        assert len(self.data) == len(other.data)
        return sum(abs(a - b) for a, b in zip(self.data, other.data, strict=True)) / len(self.data)


SMALL = (80, 60)  # pictures are compared at this size


@pytest.fixture(scope="module")
def source_frames(media: dict[str, Path]) -> list[Pixels]:
    """Every frame of in/clip.mp4, small and grey, to find which frame a snapshot shows."""
    with av.open(str(media["clip"])) as c:
        return [Pixels(f, "gray", *SMALL) for f in c.decode(video=0)]


def submit(cos: CosS3Client, bucket: str, tag: str, node: dict[str, Any], output: dict[str, str],
           key: str = "in/clip.mp4") -> str:  # fmt: skip
    op = {tag: node, "Output": {"Region": REGION, "Bucket": bucket, **output}}
    return create_job(cos, bucket, tag, key, op)


def wait(cos: CosS3Client, bucket: str, job_id: str, timeout: float = 90) -> dict[str, Any]:
    return wait_job(cos, bucket, job_id, timeout=timeout)


def run_job(cos: CosS3Client, bucket: str, tag: str, node: dict[str, Any], output: dict[str, str],
            key: str = "in/clip.mp4") -> dict[str, Any]:  # fmt: skip
    return wait(cos, bucket, submit(cos, bucket, tag, node, output, key))


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def download(cos: CosS3Client, bucket: str, key: str, tmp_path: Path) -> Path:
    path = tmp_path / key.replace("/", "_")
    cos.download_file(Bucket=bucket, Key=key, DestFilePath=str(path))
    return path


def outputs(cos: CosS3Client, bucket: str, result: dict[str, Any], tmp_path: Path) -> list[Path]:
    """Download every file an OutputFile (or SpriteOutputFile) names; check each one's MD5 against Md5Info."""
    prefix = result.get("ObjectPrefix") or ""
    keys = [prefix + name for name in as_list(result.get("ObjectName"))]
    md5s = {m["ObjectName"]: m["Md5"] for m in as_list(result.get("Md5Info"))}
    assert sorted(md5s) == sorted(keys)
    paths = []
    for key in keys:
        path = download(cos, bucket, key, tmp_path)
        assert md5s[key] == hashlib.md5(path.read_bytes()).hexdigest()
        paths.append(path)
    return paths


def picture(path: Path) -> av.VideoFrame:
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
    assert len(frames) == 1
    return frames[0]


def frame_index(path: Path, source: list[Pixels]) -> int:
    """The source frame a snapshot shows: the nearest one by mean absolute difference (testsrc2 moves)."""
    pixels = Pixels(picture(path), "gray", *SMALL)
    errors = [pixels.diff(f) for f in source]
    best = min(range(len(errors)), key=errors.__getitem__)
    assert errors[best] < 3.0, errors[best]
    return best


def is_empty_mediainfo(mi: dict[str, Any]) -> bool:
    return not mi.get("Format") and all(not v for v in (mi.get("Stream") or {}).values())


# ------------------------------------------------------------------------------------------- Snapshot


def test_interval_png_frames_and_result_shape(
    srv: ServerProcess, cos: CosS3Client, tmp_path: Path, source_frames: list[Pixels]
) -> None:
    d = run_job(cos, srv.bucket, "Snapshot", {"Mode": "Interval", "TimeInterval": "0.5", "Count": "4", "Format": "png"},
                {"Object": "snap/${InputName}/iv-${Number}.png"})  # fmt: skip
    assert d["State"] == "Success", d
    result = d["Operation"]["MediaResult"]["OutputFile"]
    assert (result["Bucket"], result["Region"]) == (srv.bucket, REGION)
    assert result["ObjectPrefix"] == "snap/clip/iv-"
    assert result["ObjectName"] == ["0.png", "1.png", "2.png", "3.png"]
    assert "SpriteOutputFile" not in result
    assert is_empty_mediainfo(d["Operation"]["MediaInfo"])
    paths = outputs(cos, srv.bucket, result, tmp_path)
    # the first frame of each half second: t = 0, 0.52, 1.0, 1.52
    assert [frame_index(p, source_frames) for p in paths] == [0, 13, 25, 38]
    for p in paths:
        f = picture(p)
        assert (f.width, f.height) == (320, 240)
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_average_without_number_keeps_aspect(
    srv: ServerProcess, cos: CosS3Client, tmp_path: Path, source_frames: list[Pixels]
) -> None:
    d = run_job(cos, srv.bucket, "Snapshot", {"Mode": "Average", "Count": "3", "Height": "180"},
                {"Object": "snap/avg.jpg"})  # fmt: skip
    assert d["State"] == "Success", d
    result = d["Operation"]["MediaResult"]["OutputFile"]
    assert result["ObjectPrefix"] == "snap/avg-"
    assert result["ObjectName"] == ["0.jpg", "1.jpg", "2.jpg"]
    paths = outputs(cos, srv.bucket, result, tmp_path)
    for p in paths:
        f = picture(p)
        assert (f.width, f.height) == (240, 180)
        assert p.read_bytes()[:2] == b"\xff\xd8"  # JPEG by default
    # frames at 0, 1 and 2 s (JPEG: compared small, so the coding noise does not matter)
    assert [frame_index(p, source_frames) for p in paths] == [0, 25, 50]


def test_keyframes_and_consecutive_frames(
    srv: ServerProcess, cos: CosS3Client, tmp_path: Path, source_frames: list[Pixels]
) -> None:
    d = run_job(cos, srv.bucket, "Snapshot", {"Mode": "KeyFrame", "Start": "0.5", "Count": "10", "Format": "png"},
                {"Object": "snap/key-${Number}.png"})  # fmt: skip
    assert d["State"] == "Success", d
    paths = outputs(cos, srv.bucket, d["Operation"]["MediaResult"]["OutputFile"], tmp_path)
    assert [frame_index(p, source_frames) for p in paths] == [25, 50]  # the key frames after 0.5 s
    d = run_job(cos, srv.bucket, "Snapshot", {"Start": "1", "Count": "5", "Format": "png"},
                {"Object": "snap/run-${Number}.png"})  # fmt: skip
    assert d["State"] == "Success", d
    paths = outputs(cos, srv.bucket, d["Operation"]["MediaResult"]["OutputFile"], tmp_path)
    assert [frame_index(p, source_frames) for p in paths] == [25, 26, 27, 28, 29]


def test_is_check_count_falls_back_to_average(srv: ServerProcess, cos: CosS3Client, tmp_path: Path) -> None:
    node = {"TimeInterval": "1", "Count": "6", "Width": "128"}
    d = run_job(cos, srv.bucket, "Snapshot", node, {"Object": "snap/short-${Number}.jpg"})
    assert d["State"] == "Success", d
    assert len(outputs(cos, srv.bucket, d["Operation"]["MediaResult"]["OutputFile"], tmp_path)) == 3
    # the format follows the output's extension when there is no Format node
    d = run_job(
        cos, srv.bucket, "Snapshot", {**node, "IsCheckCount": "true"}, {"Object": "snap/full-${Number}.webp"}
    )
    assert d["State"] == "Success", d
    paths = outputs(cos, srv.bucket, d["Operation"]["MediaResult"]["OutputFile"], tmp_path)
    assert len(paths) == 6
    assert all(p.read_bytes()[8:12] == b"WEBP" for p in paths)
    assert {(picture(p).width, picture(p).height) for p in paths} == {(128, 96)}


def test_black_frames_are_skipped(srv: ServerProcess, cos: CosS3Client, tmp_path: Path) -> None:
    def mean_luma(path: Path) -> float:
        return Pixels(picture(path)).mean()

    node = {"TimeInterval": "0.5", "Count": "3", "Format": "png"}
    plain = run_job(cos, srv.bucket, "Snapshot", node, {"Object": "snap/b0-${Number}.png"}, "in/black.mp4")
    assert plain["State"] == "Success", plain
    lumas = [
        mean_luma(p)
        for p in outputs(cos, srv.bucket, plain["Operation"]["MediaResult"]["OutputFile"], tmp_path)
    ]
    assert lumas[0] < 20 and lumas[1] < 20  # 0 s and 0.5 s are black
    checked = run_job(cos, srv.bucket, "Snapshot",
                      {**node, "IsCheckBlack": "true", "BlackLevel": "90", "PixelBlackThreshold": "20"},
                      {"Object": "snap/b1-${Number}.png"}, "in/black.mp4")  # fmt: skip
    assert checked["State"] == "Success", checked
    paths = outputs(cos, srv.bucket, checked["Operation"]["MediaResult"]["OutputFile"], tmp_path)
    assert len(paths) == 3 and all(mean_luma(p) > 60 for p in paths)
    # the intervals count from the first picture that is not black: it is the same as clip.mp4's first frame
    first = Pixels(picture(paths[0]))
    at_one_second = Pixels(picture(download(cos, srv.bucket, "snap/b0-2.png", tmp_path)))
    assert first.diff(at_one_second) < 3.0


def test_snapshots_and_sprite_sheets(srv: ServerProcess, cos: CosS3Client, tmp_path: Path) -> None:
    sprite = {"CellWidth": "80", "CellHeight": "60", "Padding": "2", "Margin": "3", "Color": "White",
              "Columns": "2", "Lines": "2"}  # fmt: skip
    d = run_job(cos, srv.bucket, "Snapshot",
                {"TimeInterval": "0.5", "Count": "5", "Width": "160", "SnapshotOutMode": "SnapshotAndSprite",
                 "SpriteSnapshotConfig": sprite},
                {"Object": "sp/frame-${Number}.jpg", "SpriteObject": "sp/sheet-${Number}.png"})  # fmt: skip
    assert d["State"] == "Success", d
    result = d["Operation"]["MediaResult"]["OutputFile"]
    frames = outputs(cos, srv.bucket, result, tmp_path)
    assert len(frames) == 5 and {(picture(p).width, picture(p).height) for p in frames} == {(160, 120)}
    sheets_result = result["SpriteOutputFile"]
    assert sheets_result["ObjectPrefix"] == "sp/sheet-"
    assert sheets_result["ObjectName"] == ["0.png", "1.png"]  # 4 cells, then 1
    sheets = outputs(cos, srv.bucket, sheets_result, tmp_path)
    width, height = 2 * 80 + 1 * 2 + 2 * 3, 2 * 60 + 1 * 2 + 2 * 3
    for s in sheets:
        f = picture(s)
        assert (f.width, f.height) == (width, height) == (168, 128)
    rgb = Pixels(picture(sheets[1]), "rgb24")
    white = {(255, 255, 255)}
    assert set(rgb.region(0, 0, width, 3)) == white and set(rgb.region(0, 0, 3, height)) == white  # margins
    assert set(rgb.region(85, 3, 165, 63)) == white  # padding and the second cell, unused
    assert set(rgb.region(3, 65, 165, 125)) == white  # the unused second line
    assert rgb.std((3, 3, 83, 63)) > 20  # the one picture on it


def test_only_sprite_fit_and_pad(srv: ServerProcess, cos: CosS3Client, tmp_path: Path) -> None:
    sprite = {"CellWidth": "100", "CellHeight": "100", "Color": "#ff0000", "Columns": "3", "Lines": "1",
              "ScaleMethod": "MaxWHScaleAndPad"}  # fmt: skip
    d = run_job(cos, srv.bucket, "Snapshot",
                {"Mode": "Average", "Count": "3", "SnapshotOutMode": "OnlySprite", "SpriteSnapshotConfig": sprite,
                 "Format": "png"},
                {"Object": "only/frame-${Number}.jpg", "SpriteObject": "only/sheet.png"})  # fmt: skip
    assert d["State"] == "Success", d
    result = d["Operation"]["MediaResult"]["OutputFile"]
    assert not result.get("ObjectName")
    sheets = outputs(cos, srv.bucket, result["SpriteOutputFile"], tmp_path)
    assert [p.name for p in sheets] == ["only_sheet-0.png"]
    rgb = Pixels(picture(sheets[0]), "rgb24")
    assert (rgb.width, rgb.height) == (300, 100)

    def red(px: tuple[int, ...]) -> bool:
        return px[0] > 247 and px[1] < 8 and px[2] < 8

    # 320x240 fitted into 100x100 is 100x75: red bands of 12-13 rows above and below each picture
    assert all(red(px) for px in rgb.region(0, 0, 300, 10) + rgb.region(0, 91, 300, 100))
    assert rgb.std((0, 20, 300, 80)) > 20
    listed = cos.list_objects(Bucket=srv.bucket, Prefix="only/")
    assert [o["Key"] for o in listed["Contents"]] == ["only/sheet-0.png"]


def test_snapshot_ciparam_applies_the_rule_to_each_frame(
    srv: ServerProcess, cos: CosS3Client, tmp_path: Path
) -> None:
    rule = "imageMogr2/thumbnail/100x|imageMogr2/rotate/90/format/png"
    job = run_job(cos, srv.bucket, "Snapshot", {"Count": "3", "TimeInterval": "1", "CIParam": rule},
                  {"Object": "ci/${Number}.${Ext}"})  # fmt: skip
    assert job["State"] == "Success", job
    files = outputs(cos, srv.bucket, job["Operation"]["MediaResult"]["OutputFile"], tmp_path)
    assert [p.name for p in files] == ["ci_0.png", "ci_1.png", "ci_2.png"]  # ${Ext} is the rule's format
    for path in files:
        with av.open(str(path)) as c:
            frame = next(c.decode(video=0))
            assert (c.streams.video[0].codec_context.name, frame.width, frame.height) == ("png", 75, 100)


def test_object_prefix_and_long_results() -> None:
    names = {"input_key": "in/clip.mp4", "job_id": "j1", "ext": "jpg"}
    assert object_prefix("out/${InputName}/${number}.jpg", **names) == "out/clip/"
    assert (
        object_prefix("out/snap.${Ext}", **names) == "out/snap-"
    )  # expand puts the index before the extension
    assert object_prefix("out/snap", **names) == "out/snap-"
    many = [(f"p/{i}.jpg", f"{i:032x}") for i in range(MAX_MD5_LISTED + 1)]
    nodes = output_file_nodes(Output("ap-guangzhou", "b-1250000000", "p/${Number}.jpg"), many, "p/")
    assert [v for k, v in nodes if k == "ObjectName"] == [f"{i}.jpg" for i in range(MAX_MD5_LISTED + 1)]
    assert [v for k, v in nodes if k == "Md5Info"] == [None]  # many files: an empty Md5Info (jobs.md 11)
    assert ("ObjectPrefix", "p/") in nodes


@pytest.mark.parametrize(
    ("node", "output", "word"),
    [
        ({"Mode": "Interval"}, {}, "Count"),
        ({"Count": "0"}, {}, "Count"),
        ({"Count": "10001"}, {}, "Count"),
        ({"Count": "1.5"}, {}, "Count"),
        ({"Count": "3", "Mode": "Scene"}, {}, "Mode"),
        ({"Count": "3", "CIParam": "imageMogr2/thumbnail/abc"}, {}, "CIParam"),
        ({"Count": "3", "CIParam": "imageMogr2/thumbnail/100x|imageInfo"}, {}, "CIParam"),
        ({"Count": "3", "Width": "100"}, {}, "Width"),
        ({"Count": "3", "TimeInterval": "0"}, {}, "TimeInterval"),
        ({"Count": "3", "Format": "gif"}, {}, "Format"),
        ({"Count": "3", "IsCheckBlack": "yes"}, {}, "IsCheckBlack"),
        ({"Count": "3", "SnapshotOutMode": "OnlySprite"}, {"SpriteObject": "s.jpg"}, "SpriteSnapshotConfig"),
        ({"Count": "3", "SnapshotOutMode": "OnlySprite", "SpriteSnapshotConfig": {"Columns": "2", "Lines": "2"}},
         {"SpriteObject": "s.jpg"}, "Color"),
        ({"Count": "3", "SnapshotOutMode": "OnlySprite",
          "SpriteSnapshotConfig": {"Columns": "2", "Lines": "2", "Color": "red:x=1"}}, {"SpriteObject": "s.jpg"},
         "Color"),
        ({"Count": "3", "SnapshotOutMode": "SnapshotAndSprite",
          "SpriteSnapshotConfig": {"Columns": "2", "Lines": "2", "Color": "black"}}, {}, "SpriteObject"),
        ({"Count": "3", "SnapshotOutMode": "SnapshotAndSprite",
          "SpriteSnapshotConfig": {"Columns": "2", "Lines": "2", "Color": "black"}},
         {"SpriteObject": "sp/${Frame}.jpg"}, "SpriteObject"),
        ({"Count": "3", "SnapshotOutMode": "SnapshotAndSprite",
          "SpriteSnapshotConfig": {"Columns": "2", "Lines": "2", "Color": "black"}},
         {"SpriteObject": "never/${Number}.jpg"}, "SpriteObject must differ"),
        ({"Count": "3", "SnapshotOutMode": "OnlySprite",
          "SpriteSnapshotConfig": {"Columns": "100", "Lines": "100", "Color": "black", "CellWidth": "4096",
                                   "CellHeight": "4096"}}, {"SpriteObject": "s.jpg"}, "sprite sheet"),
    ],
)  # fmt: skip
def test_bad_snapshot_operations_are_refused(
    srv: ServerProcess, cos: CosS3Client, node: dict[str, Any], output: dict[str, str], word: str
) -> None:
    with pytest.raises(CosServiceError) as exc:
        submit(cos, srv.bucket, "Snapshot", node, {"Object": "never/${Number}.jpg", **output})
    assert (exc.value.get_status_code(), exc.value.get_error_code()) == (400, "InvalidArgument")
    message = exc.value.get_error_msg()
    assert "Snapshot" in message and word in message, message


def test_snapshot_runtime_failures(srv: ServerProcess, cos: CosS3Client) -> None:
    late = run_job(
        cos, srv.bucket, "Snapshot", {"Start": "5", "Count": "2"}, {"Object": "late/${Number}.jpg"}
    )
    assert (late["State"], late["Code"]) == ("Failed", "InvalidParameter"), late
    audio = run_job(
        cos, srv.bucket, "Snapshot", {"Count": "2"}, {"Object": "audio/${Number}.jpg"}, "in/tone.wav"
    )
    assert (audio["State"], audio["Code"]) == ("Failed", "InvalidParameter"), audio
    assert "video" in audio["Message"]
    assert "Contents" not in cos.list_objects(Bucket=srv.bucket, Prefix="late/")
    assert "Contents" not in cos.list_objects(Bucket=srv.bucket, Prefix="audio/")


# ------------------------------------------------------------------------------------------ Animation


def gif_frames(path: Path) -> tuple[int, tuple[int, int], list[float], float]:
    """Frame count, size, frame start times and total play time (s) of a GIF, decoded with PyAV."""
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
        starts = [float(f.pts or 0) * float(f.time_base) for f in frames]
        end = max(float((f.pts or 0) + (f.duration or 0)) * float(f.time_base) for f in frames)
    sizes = {(f.width, f.height) for f in frames}
    assert len(sizes) == 1
    return len(frames), sizes.pop(), starts, end


@pytest.mark.parametrize(
    ("container", "video", "interval", "frames", "size", "seconds"),
    [
        # the spec's example: 10 frames a second, played at 10 fps, from 0.5 s for 2 s
        ("gif", {"Width": "160", "Fps": "10", "AnimateFramesPerSecond": "10"}, {"Start": "0.5", "Duration": "2"},
         20, (160, 120), 2.0),
        # every source frame, source timing
        ("hgif", {"Height": "180"}, {"Duration": "1"}, 25, (240, 180), 1.0),
        # ... or twice as fast
        ("hgif", {"Height": "180", "Fps": "50"}, {"Duration": "1"}, 25, (240, 180), 0.5),
        # one frame every 0.5 s, keeping the source timing (each shown 0.5 s) ...
        ("gif", {"AnimateTimeIntervalOfFrame": "0.5"}, {}, 6, (320, 240), 3.0),
        # ... or played at 10 fps
        ("gif", {"AnimateTimeIntervalOfFrame": "0.5", "Fps": "10"}, {}, 6, (320, 240), 0.6),
        # key frames only, at 0, 1 and 2 s, each shown until the next
        ("gif", {"AnimateOnlyKeepKeyFrame": "true", "Width": "128"}, {}, 3, (128, 96), [0.0, 1.0, 2.0]),
    ],
)  # fmt: skip
def test_gif(
    srv: ServerProcess, cos: CosS3Client, tmp_path: Path, container: str, video: dict[str, str],
    interval: dict[str, str], frames: int, size: tuple[int, int], seconds: float | list[float],
) -> None:  # fmt: skip
    node: dict[str, Any] = {"Container": {"Format": container}, "Video": {"Codec": "gif", **video}}
    if interval:
        node["TimeInterval"] = interval
    d = run_job(cos, srv.bucket, "Animation", node, {"Object": "anim/${InputName}-${JobId}.gif"})
    assert d["State"] == "Success", d
    result = d["Operation"]["MediaResult"]["OutputFile"]
    key = f"anim/clip-{d['JobId']}.gif"
    assert result["ObjectName"] == key and not result.get("ObjectPrefix")
    (path,) = outputs(cos, srv.bucket, {**result, "ObjectPrefix": ""}, tmp_path)
    assert path.read_bytes()[:6] == b"GIF89a"
    count, got_size, starts, play = gif_frames(path)
    assert (count, got_size) == (frames, size)
    if isinstance(seconds, list):
        assert starts == pytest.approx(seconds, abs=0.02)
    else:
        assert abs(play - seconds) <= 0.1, play
        # evenly spaced frames
        steps = {round(b - a, 2) for a, b in itertools.pairwise(starts)}
        assert max(steps) - min(steps) <= 0.011, steps
    video_info = d["Operation"]["MediaInfo"]["Stream"]["Video"]
    assert (video_info["CodecName"], video_info["Width"], video_info["Height"]) == (
        "gif",
        str(size[0]),
        str(size[1]),
    )


def webp_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    chunks, pos = [], 12
    while pos + 8 <= len(data):
        tag, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        chunks.append((tag, data[pos + 8 : pos + 8 + size]))
        pos += 8 + size + (size & 1)
    return chunks


def test_webp_animation_decodes(srv: ServerProcess, cos: CosS3Client, tmp_path: Path) -> None:
    node = {"Container": {"Format": "webp"},
            "Video": {"Codec": "webp", "Width": "160", "AnimateFramesPerSecond": "5", "Quality": "50"}}  # fmt: skip
    d = run_job(cos, srv.bucket, "Animation", node, {"Object": "anim/clip.webp"})
    assert d["State"] == "Success", d
    result = d["Operation"]["MediaResult"]["OutputFile"]
    assert result["ObjectName"] == "anim/clip.webp"
    (path,) = outputs(cos, srv.bucket, {**result, "ObjectPrefix": ""}, tmp_path)
    chunks = webp_chunks(path.read_bytes())
    assert chunks[0][0] == b"VP8X" and chunks[0][1][0] & 0x02  # the animation flag
    width = 1 + int.from_bytes(chunks[0][1][4:7], "little")
    height = 1 + int.from_bytes(chunks[0][1][7:10], "little")
    assert (width, height) == (160, 120)
    assert sum(1 for tag, _ in chunks if tag == b"ANMF") == 15  # 3 s at 5 frames a second
    # decode every frame (PyAV's libavcodec cannot read animated WebP; the bundled ffmpeg can), then measure
    out = tmp_path / "frames"
    out.mkdir()
    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-i", str(path), "-fps_mode", "passthrough",
         "-f", "image2", str(out / "f-%03d.png")], check=True, timeout=60,
    )  # fmt: skip
    decoded = sorted(out.glob("f-*.png"))
    assert len(decoded) == 15
    for p in decoded:
        f = picture(p)
        assert (f.width, f.height) == (160, 120)
        assert Pixels(f).std() > 20  # a picture, not a blank
    info = d["Operation"]["MediaInfo"]
    assert is_empty_mediainfo(info) or info["Stream"]["Video"]["Width"] == "160"


@pytest.mark.parametrize(
    ("node", "word"),
    [
        ({"Video": {"Codec": "gif"}}, "Container.Format"),
        ({"Container": {"Format": "mp4"}, "Video": {"Codec": "gif"}}, "Container.Format"),
        ({"Container": {"Format": "gif"}}, "Codec"),
        ({"Container": {"Format": "gif"}, "Video": {"Codec": "webp"}}, "does not match"),
        ({"Container": {"Format": "webp"}, "Video": {"Codec": "gif"}}, "does not match"),
        ({"Container": {"Format": "hgif"}, "Video": {"Codec": "h264"}}, "Codec"),
        ({"Container": {"Format": "gif"}, "Video": {"Codec": "gif", "Width": "161"}}, "Width"),
        ({"Container": {"Format": "gif"}, "Video": {"Codec": "gif", "Fps": "0"}}, "Fps"),
        ({"Container": {"Format": "gif"}, "Video": {"Codec": "gif", "Fps": "61"}}, "Fps"),
        ({"Container": {"Format": "webp"}, "Video": {"Codec": "webp", "Quality": "100"}}, "Quality"),
        ({"Container": {"Format": "gif"}, "Video": {"Codec": "gif", "AnimateOnlyKeepKeyFrame": "1"}},
         "AnimateOnlyKeepKeyFrame"),
    ],
)  # fmt: skip
def test_bad_animation_operations_are_refused(
    srv: ServerProcess, cos: CosS3Client, node: dict[str, Any], word: str
) -> None:
    with pytest.raises(CosServiceError) as exc:
        submit(cos, srv.bucket, "Animation", node, {"Object": "never.gif"})
    assert (exc.value.get_status_code(), exc.value.get_error_code()) == (400, "InvalidArgument")
    message = exc.value.get_error_msg()
    assert "Animation" in message and word in message, message


def test_animation_runtime_failures(srv: ServerProcess, cos: CosS3Client) -> None:
    node = {"Container": {"Format": "gif"}, "Video": {"Codec": "gif"}}
    late = run_job(
        cos, srv.bucket, "Animation", {**node, "TimeInterval": {"Start": "4"}}, {"Object": "late.gif"}
    )
    assert (late["State"], late["Code"]) == ("Failed", "InvalidParameter"), late
    audio = run_job(cos, srv.bucket, "Animation", node, {"Object": "audio.gif"}, "in/tone.wav")
    assert (audio["State"], audio["Code"]) == ("Failed", "InvalidParameter"), audio
    assert not cos.object_exists(Bucket=srv.bucket, Key="late.gif")
    assert not cos.object_exists(Bucket=srv.bucket, Key="audio.gif")
