"""Transcode jobs through cos-python-sdk-v5: real outputs opened with PyAV and measured."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest
from qcloud_cos import CosS3Client
from qcloud_cos.cos_exception import CosServiceError

from mediajobs.media.probe import probe
from mediajobs.media.samples import make_audio, make_video
from mediajobs.testing import ServerProcess, running_server
from tests.helpers import create_job, wait_job


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("transcode"), args=["--workers", "1"]) as s:
        cos = s.client()
        d = tmp_path_factory.mktemp("media")
        cos.upload_file(
            Bucket=s.bucket,
            Key="in/clip.mp4",
            LocalFilePath=str(make_video(d / "clip.mp4", seconds=3.0, width=640, height=360)),
        )
        cos.upload_file(
            Bucket=s.bucket,
            Key="in/long.mp4",
            LocalFilePath=str(make_video(d / "long.mp4", seconds=8.0, width=1280, height=720)),
        )
        cos.upload_file(
            Bucket=s.bucket, Key="in/tone.wav", LocalFilePath=str(make_audio(d / "tone.wav", seconds=2.0))
        )
        yield s


@pytest.fixture(scope="module")
def cos(srv: ServerProcess) -> CosS3Client:
    return srv.client()


def submit(
    cos: CosS3Client, bucket: str, key: str, transcode: dict[str, Any], out: str, region: str = "ap-guangzhou"
) -> str:
    op = {"Transcode": transcode, "Output": {"Region": region, "Bucket": bucket, "Object": out}}
    return create_job(cos, bucket, "Transcode", key, op)


def wait(
    cos: CosS3Client,
    bucket: str,
    job_id: str,
    states: tuple[str, ...] = ("Success", "Failed"),
    timeout: float = 90,
) -> dict[str, Any]:
    return wait_job(cos, bucket, job_id, states, timeout)


def fetch(cos: CosS3Client, bucket: str, key: str, tmp_path: Path) -> Path:
    path = tmp_path / key.replace("/", "_")
    cos.download_file(Bucket=bucket, Key=key, DestFilePath=str(path))
    return path


def test_mp4_scaled_h264_aac(srv: ServerProcess, cos: CosS3Client, tmp_path: Path) -> None:
    jid = submit(
        cos,
        srv.bucket,
        "in/clip.mp4",
        {
            "Container": {"Format": "mp4"},
            "Video": {"Codec": "H.264", "Width": "320", "Crf": "28", "Preset": "veryfast"},
            "Audio": {"Codec": "aac", "Bitrate": "64", "Samplerate": "22050"},
        },
        "out/${InputName}-320.mp4",
    )
    d = wait(cos, srv.bucket, jid)
    assert d["State"] == "Success", d
    result = d["Operation"]["MediaResult"]["OutputFile"]
    assert result["ObjectName"] == "out/clip-320.mp4"
    path = fetch(cos, srv.bucket, "out/clip-320.mp4", tmp_path)
    assert result["Md5Info"]["Md5"] == hashlib.md5(path.read_bytes()).hexdigest()
    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert (v.codec_context.name, v.width, v.height) == ("h264", 320, 180)
        assert (a.codec_context.name, a.sample_rate) == ("aac", 22050)
        assert abs(float(c.duration or 0) / 1e6 - 3.0) < 0.15
        frames = sum(1 for _ in c.decode(video=0))
    assert 73 <= frames <= 77  # 3 s at 25 fps
    info = d["Operation"]["MediaInfo"]["Stream"]["Video"]
    assert (info["Width"], info["Height"]) == ("320", "180")
    assert d["Progress"] == "100"


@pytest.mark.parametrize(
    ("fmt", "video", "audio", "vcodec", "acodec"),
    [
        ("webm", {"Codec": "VP9", "Height": "180"}, {}, "vp9", "opus"),
        ("mkv", {"Codec": "H.265", "Width": "320"}, {"Codec": "flac"}, "hevc", "flac"),
        ("flv", {"Codec": "H.264", "Width": "320"}, {"Codec": "mp3"}, "h264", "mp3"),
        ("ts", {"Codec": "H.264", "Width": "320", "Fps": "15", "Gop": "15"}, {}, "h264", "aac"),
        ("mp3", None, {"Bitrate": "96"}, None, "mp3"),
        ("ogg", None, {"Codec": "opus"}, None, "opus"),
        ("wav", None, {"Channels": "1"}, None, "pcm_s16le"),
    ],
)
def test_containers_and_codecs(
    srv: ServerProcess,
    cos: CosS3Client,
    tmp_path: Path,
    fmt: str,
    video: dict[str, str] | None,
    audio: dict[str, str],
    vcodec: str | None,
    acodec: str,
) -> None:
    tr: dict[str, Any] = {"Container": {"Format": fmt}, "Audio": audio}
    if video is not None:
        tr["Video"] = video
    key = f"out/fmt.{fmt}"
    d = wait(cos, srv.bucket, submit(cos, srv.bucket, "in/clip.mp4", tr, key))
    assert d["State"] == "Success", d
    info = probe(fetch(cos, srv.bucket, key, tmp_path))
    assert [v.codec_name for v in info.video] == ([vcodec] if vcodec else [])
    assert [a.codec_name for a in info.audio] == [acodec]
    if fmt == "ts":
        assert info.video[0].avg_fps == 15
    if fmt == "wav":
        assert info.audio[0].channels == 1


def test_remove_video_time_interval_and_hls(srv: ServerProcess, cos: CosS3Client, tmp_path: Path) -> None:
    d = wait(
        cos,
        srv.bucket,
        submit(
            cos,
            srv.bucket,
            "in/clip.mp4",
            {
                "Container": {"Format": "mp4"},
                "Video": {"Remove": "true"},
                "TimeInterval": {"Start": "1", "Duration": "1.5"},
            },
            "out/audio-only.mp4",
        ),
    )
    assert d["State"] == "Success", d
    with av.open(str(fetch(cos, srv.bucket, "out/audio-only.mp4", tmp_path))) as c:
        assert not c.streams.video and c.streams.audio
        assert abs(float(c.duration or 0) / 1e6 - 1.5) < 0.1
    d = wait(
        cos,
        srv.bucket,
        submit(
            cos,
            srv.bucket,
            "in/clip.mp4",
            {
                "Container": {"Format": "hls", "ClipConfig": {"Duration": "1"}},
                "Video": {"Codec": "H.264", "Width": "320"},
            },
            "hls/play.m3u8",
        ),
    )
    assert d["State"] == "Success", d
    keys = [o["Key"] for o in cos.list_objects(Bucket=srv.bucket, Prefix="hls/")["Contents"]]
    assert "hls/play.m3u8" in keys and len([k for k in keys if k.endswith(".ts")]) >= 2
    playlist = cos.get_object(Bucket=srv.bucket, Key="hls/play.m3u8")["Body"].get_raw_stream().read().decode()
    for line in playlist.splitlines():
        if line.endswith(".ts"):
            assert "hls/" + line in keys


def test_cancel_mid_transcode_writes_nothing(srv: ServerProcess, cos: CosS3Client) -> None:
    jid = submit(
        cos,
        srv.bucket,
        "in/long.mp4",
        {"Container": {"Format": "mkv"}, "Video": {"Codec": "H.265", "Preset": "slower"}},
        "out/cancelled.mkv",
    )
    wait(cos, srv.bucket, jid, ("Running",))
    time.sleep(0.3)
    cos.ci_cancel_jobs(Bucket=srv.bucket, JobID=jid)
    d = wait(cos, srv.bucket, jid, ("Cancel",), timeout=5)
    assert "MediaResult" not in d["Operation"]
    time.sleep(1.0)
    assert not cos.object_exists(Bucket=srv.bucket, Key="out/cancelled.mkv")
    # the worker is free again: a new job runs
    assert (
        wait(
            cos,
            srv.bucket,
            submit(cos, srv.bucket, "in/clip.mp4", {"Container": {"Format": "mp3"}}, "out/after.mp3"),
        )["State"]
        == "Success"
    )


@pytest.mark.parametrize(
    "transcode",
    [
        {"Container": {"Format": "avi"}},
        {"Container": {"Format": "mp4"}, "Video": {"Codec": "Theora"}},
        {"Container": {"Format": "mp4"}, "Video": {"Width": "0"}},
        {"Container": {"Format": "mp4"}, "Video": {"Width": "100000"}},
        {"Container": {"Format": "mp4"}, "Video": {"Width": "321"}},
        {"Container": {"Format": "webm"}, "Video": {"Codec": "H.264"}},
        {"Container": {"Format": "mp4"}, "Audio": {"Samplerate": "12345"}},
        {"Container": {"Format": "mp4"}, "Video": {"Remove": "true"}, "Audio": {"Remove": "true"}},
        {"Video": {"Codec": "H.264"}},
    ],
)
def test_bad_operations_are_refused(srv: ServerProcess, cos: CosS3Client, transcode: dict[str, Any]) -> None:
    with pytest.raises(CosServiceError) as exc:
        submit(cos, srv.bucket, "in/clip.mp4", transcode, "out/never.mp4")
    assert (exc.value.get_status_code(), exc.value.get_error_code()) == (400, "InvalidArgument")
    assert "Transcode" in exc.value.get_error_msg()


def test_bad_output_and_runtime_failures(srv: ServerProcess, cos: CosS3Client) -> None:
    with pytest.raises(CosServiceError) as exc:
        cos.ci_create_media_jobs(
            Bucket=srv.bucket,
            Jobs={
                "Tag": "Transcode",
                "Input": {"Object": "in/clip.mp4"},
                "Operation": {
                    "Transcode": {"Container": {"Format": "mp4"}},
                    "Output": {"Region": "ap-guangzhou", "Bucket": "nosuch-1250000000", "Object": "x.mp4"},
                },
            },
            Lst={},
            ContentType="application/xml",
        )
    assert exc.value.get_error_code() == "InvalidArgument"
    late = wait(
        cos,
        srv.bucket,
        submit(
            cos,
            srv.bucket,
            "in/clip.mp4",
            {"Container": {"Format": "mp4"}, "TimeInterval": {"Start": "60"}},
            "out/late.mp4",
        ),
    )
    assert (late["State"], late["Code"]) == ("Failed", "InvalidParameter")
    novideo = wait(
        cos,
        srv.bucket,
        submit(
            cos,
            srv.bucket,
            "in/tone.wav",
            {"Container": {"Format": "mp4"}, "Audio": {"Remove": "true"}},
            "out/novideo.mp4",
        ),
    )
    assert (novideo["State"], novideo["Code"]) == ("Failed", "InvalidParameter")
    assert not cos.object_exists(Bucket=srv.bucket, Key="out/late.mp4")


def _procs() -> list[tuple[int, int, str]]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            out.append((int(d.name), ppid, cmd))
    return out


def test_worker_killed_mid_transcode_leaves_no_encoder_and_the_job_reruns(tmp_path: Path) -> None:
    import os
    import signal

    with running_server(tmp_path / "d", args=["--workers", "1", "--lease-seconds", "2"]) as s:
        cos = s.client()
        cos.upload_file(
            Bucket=s.bucket,
            Key="in/long.mp4",
            LocalFilePath=str(make_video(tmp_path / "l.mp4", seconds=4.0, width=640, height=360)),
        )
        jid = submit(
            cos,
            s.bucket,
            "in/long.mp4",
            {"Container": {"Format": "mkv"}, "Video": {"Codec": "H.265", "Preset": "slower"}},
            "out/rerun.mkv",
        )
        wait(cos, s.bucket, jid, ("Running",))
        assert s.proc is not None
        deadline = time.monotonic() + 10
        while True:
            workers = [p for p in _procs() if p[1] == s.proc.pid and "mediajobs worker" in p[2]]
            encoders = [
                p
                for p in _procs()
                if "ffmpeg" in p[2] and "rerun" not in p[2] and workers and p[1] == workers[0][0]
            ]
            if workers and encoders:
                break
            assert time.monotonic() < deadline, "no ffmpeg under the worker"
            time.sleep(0.05)
        os.kill(workers[0][0], signal.SIGKILL)
        deadline = time.monotonic() + 5
        while any(p[0] == encoders[0][0] for p in _procs()):
            assert time.monotonic() < deadline, "ffmpeg outlived its worker"
            time.sleep(0.05)
        # the supervisor starts a new worker; the lease expires; the job runs again and succeeds
        d = wait(cos, s.bucket, jid, ("Success", "Failed"), timeout=120)
        assert d["State"] == "Success", d
        with av.open(str(fetch(cos, s.bucket, "out/rerun.mkv", tmp_path))) as c:
            assert c.streams.video[0].codec_context.name == "hevc"
        deadline = time.monotonic() + 10
        while list((s.data_dir / "tmp").glob("job-*")):
            assert time.monotonic() < deadline, "the dead worker's work directory was not removed"
            time.sleep(0.2)


@pytest.mark.parametrize(
    ("method", "black_bars"),
    [("scale", False), ("crop", False), ("pad", True)],
)
def test_adj_dar_method(
    srv: ServerProcess, cos: CosS3Client, tmp_path: Path, method: str, black_bars: bool
) -> None:
    # 640x360 (16:9) into 320x320 (1:1): pad leaves black bars above and below, crop and scale do not.
    tr = {"Container": {"Format": "mp4"}, "Video": {"Codec": "H.264", "Width": "320", "Height": "320"},
          "TransConfig": {"AdjDarMethod": method}}  # fmt: skip
    key = f"out/dar-{method}.mp4"
    d = wait(cos, srv.bucket, submit(cos, srv.bucket, "in/clip.mp4", tr, key))
    assert d["State"] == "Success", d
    with av.open(str(fetch(cos, srv.bucket, key, tmp_path))) as c:
        frame = next(c.decode(video=0))
        assert (frame.width, frame.height) == (320, 320)
        luma = frame.reformat(format="gray").planes[0]
        row = bytes(luma)[: luma.line_size]  # the top row
    top = sum(row[:320]) / 320
    assert (top < 24) == black_bars, (method, top)


def test_is_check_rules_keep_the_source_or_fail(srv: ServerProcess, cos: CosS3Client, tmp_path: Path) -> None:
    keep = {"Container": {"Format": "mp4"}, "Video": {"Codec": "H.264", "Fps": "50"},
            "TransConfig": {"IsCheckVideoFps": "true", "VideoFpsAdjMethod": "0"}}  # fmt: skip
    d = wait(cos, srv.bucket, submit(cos, srv.bucket, "in/clip.mp4", keep, "out/fps-kept.mp4"))
    assert d["State"] == "Success", d
    assert probe(fetch(cos, srv.bucket, "out/fps-kept.mp4", tmp_path)).video[0].avg_fps == 25
    fail = {"Container": {"Format": "mp4"}, "Video": {"Codec": "H.264", "Bitrate": "40000"},
            "TransConfig": {"IsCheckVideoBitrate": "true", "VideoBitrateAdjMethod": "1"}}  # fmt: skip
    d = wait(cos, srv.bucket, submit(cos, srv.bucket, "in/clip.mp4", fail, "out/never-bitrate.mp4"))
    assert (d["State"], d["Code"]) == ("Failed", "InvalidParameter"), d
    assert not cos.object_exists(Bucket=srv.bucket, Key="out/never-bitrate.mp4")


def test_transcode_is_echoed_with_its_defaults(srv: ServerProcess, cos: CosS3Client) -> None:
    tr = {"Container": {"Format": "mp4"}, "TimeInterval": {"Start": "1"}}
    d = wait(cos, srv.bucket, submit(cos, srv.bucket, "in/clip.mp4", tr, "out/defaults.mp4"))
    assert d["State"] == "Success", d
    echo = d["Operation"]["Transcode"]
    assert isinstance(echo, dict)  # one Transcode node, the request's own replaced in place
    assert echo["Container"]["Format"] == "mp4" and echo["TimeInterval"]["Start"] == "1"
    assert (echo["Video"]["Codec"], echo["Video"]["Crf"], echo["Video"]["Preset"], echo["Video"]["Profile"]) == (
        "H.264", "25", "medium", "high",
    )  # fmt: skip
    assert (echo["Audio"]["Codec"], echo["Audio"]["Samplerate"], echo["Audio"]["Remove"]) == (
        "AAC",
        "44100",
        "false",
    )
    assert echo["TransConfig"]["IsCheckReso"] == "false" and echo["TransConfig"]["DeleteMetadata"] == "false"


def test_dash_manifest_and_segments(srv: ServerProcess, cos: CosS3Client, tmp_path: Path) -> None:
    tr = {
        "Container": {"Format": "dash", "ClipConfig": {"Duration": "1"}},
        "Video": {"Codec": "H.264", "Width": "320"},
    }
    d = wait(cos, srv.bucket, submit(cos, srv.bucket, "in/clip.mp4", tr, "dash/show.mpd"))
    assert d["State"] == "Success", d
    keys = [o["Key"] for o in cos.list_objects(Bucket=srv.bucket, Prefix="dash/")["Contents"]]
    assert "dash/show.mpd" in keys
    manifest = cos.get_object(Bucket=srv.bucket, Key="dash/show.mpd")["Body"].get_raw_stream().read().decode()
    assert "<MPD" in manifest and "show-init-" in manifest and "out-" not in manifest
    inits = sorted(k for k in keys if "-init-" in k)
    video_init = next(k for k in inits if k.endswith("-0.m4s"))
    media = sorted(k for k in keys if k.startswith("dash/show-0-"))
    assert len(media) >= 2  # 3 s in 1 s segments
    stream = tmp_path / "video.mp4"
    stream.write_bytes(
        b"".join(
            cos.get_object(Bucket=srv.bucket, Key=k)["Body"].get_raw_stream().read()
            for k in [video_init, *media]
        )
    )
    with av.open(str(stream)) as c:
        assert c.streams.video[0].codec_context.name == "h264" and c.streams.video[0].width == 320
        assert 70 <= sum(1 for _ in c.decode(video=0)) <= 77


def test_hdr_to_sdr(srv: ServerProcess, cos: CosS3Client, tmp_path: Path) -> None:
    hdr = make_video(
        tmp_path / "hdr.mp4", seconds=1.0, width=320, height=240, vcodec="libx265", audio=False,
        extra=["-pix_fmt", "yuv420p10le", "-color_primaries", "bt2020", "-color_trc", "smpte2084",
               "-colorspace", "bt2020nc", "-x265-params",
               "log-level=error:colorprim=bt2020:transfer=smpte2084:colormatrix=bt2020nc"],
    )  # fmt: skip
    assert probe(hdr).video[0].color_transfer == "smpte2084"
    cos.upload_file(Bucket=srv.bucket, Key="in/hdr.mp4", LocalFilePath=str(hdr))
    tr = {"Container": {"Format": "mp4"}, "Video": {"Codec": "H.264"}, "TransConfig": {"IsHdr2Sdr": "true"}}
    d = wait(cos, srv.bucket, submit(cos, srv.bucket, "in/hdr.mp4", tr, "out/sdr.mp4"))
    assert d["State"] == "Success", d
    v = probe(fetch(cos, srv.bucket, "out/sdr.mp4", tmp_path)).video[0]
    assert (v.color_transfer, v.pix_fmt, v.codec_name) == ("bt709", "yuv420p", "h264")


def test_remove_watermark_and_unbuilt_nodes(srv: ServerProcess, cos: CosS3Client, tmp_path: Path) -> None:
    op = {"Transcode": {"Container": {"Format": "mp4"}, "Video": {"Codec": "H.264"}},
          "RemoveWatermark": {"Dx": "20", "Dy": "20", "Width": "100", "Height": "60"},
          "Output": {"Region": "ap-guangzhou", "Bucket": srv.bucket, "Object": "out/delogo.mp4"}}  # fmt: skip
    r = cos.ci_create_media_jobs(
        Bucket=srv.bucket,
        Jobs={"Tag": "Transcode", "Input": {"Object": "in/clip.mp4"}, "Operation": op},
        Lst={},
        ContentType="application/xml",
    )
    d = wait(cos, srv.bucket, r["JobsDetail"][0]["JobId"])
    assert d["State"] == "Success", d
    plain = wait(
        cos,
        srv.bucket,
        submit(
            cos,
            srv.bucket,
            "in/clip.mp4",
            {"Container": {"Format": "mp4"}, "Video": {"Codec": "H.264"}},
            "out/nodelogo.mp4",
        ),
    )
    assert plain["State"] == "Success"

    def box(key: str) -> bytes:
        with av.open(str(fetch(cos, srv.bucket, key, tmp_path))) as c:
            plane = next(c.decode(video=0)).reformat(format="gray").planes[0]
            data = bytes(plane)
            return b"".join(data[y * plane.line_size + 40 : y * plane.line_size + 100] for y in range(35, 65))

    assert box("out/delogo.mp4") != box("out/nodelogo.mp4")  # the box was painted over
    for extra in (
        {"AudioMix": {"AudioSource": "x.mp3"}},
        {"DigitalWatermark": {"Type": "Text", "Message": "m"}},
    ):
        bad = {
            "Transcode": {"Container": {"Format": "mp4"}},
            **extra,
            "Output": {"Region": "ap-guangzhou", "Bucket": srv.bucket, "Object": "out/never.mp4"},
        }
        with pytest.raises(CosServiceError) as exc:
            cos.ci_create_media_jobs(
                Bucket=srv.bucket,
                Jobs={"Tag": "Transcode", "Input": {"Object": "in/clip.mp4"}, "Operation": bad},
                Lst={},
                ContentType="application/xml",
            )
        assert (
            exc.value.get_error_code() == "InvalidArgument" and "not supported" in exc.value.get_error_msg()
        )
