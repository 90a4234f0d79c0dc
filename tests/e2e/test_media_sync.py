"""Synchronous processing on GET: ci-process=videoinfo, snapshot, filehash (spec/media-sync.md)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import av
import pytest
from qcloud_cos import CosS3Client
from qcloud_cos.cos_exception import CosServiceError

from mediajobs.media.samples import make_audio, make_video
from mediajobs.testing import ServerProcess
from tests.helpers import raw_request


@pytest.fixture(scope="module")
def inputs(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("sync")
    cos = server.client()
    video = make_video(d / "v.mp4", seconds=2.0, width=320, height=240)
    audio = make_audio(d / "a.mp3", seconds=1.0)
    cos.upload_file(Bucket=server.bucket, Key="sync/v.mp4", LocalFilePath=str(video))
    cos.upload_file(Bucket=server.bucket, Key="sync/a.mp3", LocalFilePath=str(audio))
    cos.put_object(Bucket=server.bucket, Key="sync/notes.txt", Body=b"not media")
    return {"video": "sync/v.mp4", "audio": "sync/a.mp3", "text": "sync/notes.txt", "video_path": str(video)}


def decode(body: bytes) -> tuple[int, int, str]:
    with av.open(io.BytesIO(body)) as c:
        frame = next(c.decode(video=0))
        return frame.width, frame.height, c.format.name


def test_videoinfo(server: ServerProcess, cos: CosS3Client, inputs: dict[str, str]) -> None:
    r = cos.get_media_info(Bucket=server.bucket, Key=inputs["video"])
    info = r["MediaInfo"][0]
    assert (info["Stream"]["Video"]["Width"], info["Stream"]["Video"]["Height"]) == ("320", "240")
    assert info["Stream"]["Audio"]["CodecName"] == "aac"
    assert info["Format"]["NumStream"] == "2"
    audio = cos.get_media_info(Bucket=server.bucket, Key=inputs["audio"])["MediaInfo"][0]
    assert audio["Stream"]["Audio"]["CodecName"] == "mp3"
    with pytest.raises(CosServiceError) as exc:
        cos.get_media_info(Bucket=server.bucket, Key=inputs["text"])
    assert (exc.value.get_status_code(), exc.value.get_error_code()) == (400, "InvalidArgument")
    with pytest.raises(CosServiceError) as exc:
        cos.get_media_info(Bucket=server.bucket, Key="sync/missing.mp4")
    assert exc.value.get_error_code() == "NoSuchKey"


def test_snapshot_sizes_formats_and_edges(
    server: ServerProcess, cos: CosS3Client, inputs: dict[str, str]
) -> None:
    body = cos.get_snapshot(Bucket=server.bucket, Key=inputs["video"], Time=1)["Body"].get_raw_stream().read()
    assert decode(body)[:2] == (320, 240) and body[:2] == b"\xff\xd8"
    r = cos.get_snapshot(Bucket=server.bucket, Key=inputs["video"], Time=0.5, Width=160, Format="png")
    assert r["Content-Type"] == "image/png"
    png = r["Body"].get_raw_stream().read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and decode(png)[:2] == (160, 120)
    r = cos.get_snapshot(
        Bucket=server.bucket, Key=inputs["video"], Time=1.5, Width=100, Height=50, Mode="keyframe"
    )
    assert decode(r["Body"].get_raw_stream().read())[:2] == (100, 50)
    # past the end: the last frame
    late = (
        cos.get_snapshot(Bucket=server.bucket, Key=inputs["video"], Time=100)["Body"].get_raw_stream().read()
    )
    assert decode(late)[:2] == (320, 240)
    # the frame at 1 s is the frame ffmpeg itself would grab there (same source, same timestamp)
    with av.open(inputs["video_path"]) as c:
        frames = [f for f in c.decode(video=0) if f.time is not None and abs(f.time - 1.0) < 0.02]
    assert frames
    for bad in ({"Time": -1}, {"Time": 1, "Format": "gif"}, {"Time": 1, "Mode": "fast"}):
        with pytest.raises(CosServiceError) as exc:
            cos.get_snapshot(Bucket=server.bucket, Key=inputs["video"], **bad)
        assert exc.value.get_error_code() == "InvalidArgument", bad
    with pytest.raises(CosServiceError) as exc:
        cos.get_snapshot(Bucket=server.bucket, Key=inputs["audio"], Time=0)
    assert exc.value.get_error_code() == "InvalidArgument"


def test_filehash_and_unknown_process(
    server: ServerProcess, cos: CosS3Client, inputs: dict[str, str], tmp_path: Path
) -> None:
    data = Path(inputs["video_path"]).read_bytes()
    r = cos.file_hash(Bucket=server.bucket, Key=inputs["video"], Type="sha256", AddToHeader=True)
    assert r["FileHashCodeResult"]["SHA256"] == hashlib.sha256(data).hexdigest()
    assert r["FileHashCodeResult"]["FileSize"] == str(len(data))
    assert (
        cos.head_object(Bucket=server.bucket, Key=inputs["video"])["x-cos-meta-sha256"]
        == hashlib.sha256(data).hexdigest()
    )
    r = cos.file_hash(Bucket=server.bucket, Key=inputs["text"], Type="md5")
    assert r["FileHashCodeResult"]["MD5"] == hashlib.md5(b"not media").hexdigest()
    status, _, out = raw_request(server, "GET", "/" + inputs["video"], params={"ci-process": "avinfo"})
    assert status == 400 and b"<Code>InvalidArgument</Code>" in out
