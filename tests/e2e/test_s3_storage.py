"""`mediajobs serve --storage s3://...`: the object API and jobs with every byte in S3 (SeaweedFS).

Driven by cos-python-sdk-v5 exactly like the local-storage tests; the S3 side is checked with
boto3 (the blobs are there, nothing is left behind) and the data dir holds no object bytes.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from qcloud_cos import CosS3Client
from qcloud_cos.cos_exception import CosServiceError

from mediajobs.media.samples import make_video
from mediajobs.testing import ServerProcess, running_server
from tests.helpers import create_job, file_md5, md5, wait_job
from tests.seaweed import Seaweed

MiB = 1024 * 1024
PREFIX = "mediajobs-e2e"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, seaweed: Seaweed) -> Iterator[ServerProcess]:
    args = ["--storage", seaweed.url(PREFIX), "--s3-endpoint", seaweed.endpoint, "--workers", "1"]
    # Keys through boto3's standard chain (AWS_* variables), which workers inherit too; no
    # object is kept inline in the database, so every object's bytes are in S3.
    env = {
        "AWS_ACCESS_KEY_ID": seaweed.access_key,
        "AWS_SECRET_ACCESS_KEY": seaweed.secret_key,
        "MEDIAJOBS_INLINE_MAX": "0",
    }
    with running_server(tmp_path_factory.mktemp("serve-s3"), args=args, env=env) as s:
        yield s


@pytest.fixture(scope="module")
def cos(srv: ServerProcess) -> CosS3Client:
    return srv.client()


def blobs(seaweed: Seaweed) -> set[str]:
    """The blob objects our server keeps in S3."""
    pages = (
        seaweed.client().get_paginator("list_objects_v2").paginate(Bucket=seaweed.bucket, Prefix=PREFIX + "/")
    )
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


def s3_uploads(seaweed: Seaweed) -> list[Any]:
    page = seaweed.client().list_multipart_uploads(Bucket=seaweed.bucket, Prefix=PREFIX + "/")
    return list(page.get("Uploads", []))


def body(resp: dict[str, Any]) -> bytes:
    return bytes(resp["Body"].get_raw_stream().read())


def uniq(name: str) -> str:
    return f"s3-{uuid.uuid4().hex[:10]}/{name}"


def test_put_get_head_range_copy_delete(srv: ServerProcess, cos: CosS3Client, seaweed: Seaweed) -> None:
    before = blobs(seaweed)
    small, large = os.urandom(5000), os.urandom(3 * MiB + 5)  # one read; a streamed GET
    k1, k2 = uniq("small.bin"), uniq("large.bin")
    assert cos.put_object(Bucket=srv.bucket, Key=k1, Body=small)["ETag"] == f'"{md5(small)}"'
    cos.put_object(Bucket=srv.bucket, Key=k2, Body=large, ContentType="application/x-test")
    added = blobs(seaweed) - before
    assert len(added) == 2 and all(k.startswith(PREFIX + "/blobs/") for k in added)
    assert not (srv.data_dir / "blobs").exists()

    assert body(cos.get_object(Bucket=srv.bucket, Key=k1)) == small
    got = cos.get_object(Bucket=srv.bucket, Key=k2)
    assert got["Content-Type"] == "application/x-test" and body(got) == large
    head = cos.head_object(Bucket=srv.bucket, Key=k2)
    assert head["Content-Length"] == str(len(large)) and head["ETag"] == f'"{md5(large)}"'
    part = cos.get_object(Bucket=srv.bucket, Key=k2, Range="bytes=1048570-2097160")
    assert part["Content-Range"] == f"bytes 1048570-2097160/{len(large)}"
    assert body(part) == large[1048570:2097161]
    assert body(cos.get_object(Bucket=srv.bucket, Key=k1, Range="bytes=-10")) == small[-10:]

    src = {"Bucket": srv.bucket, "Key": k2, "Region": srv.region}
    assert cos.copy_object(Bucket=srv.bucket, Key=k2 + ".copy", CopySource=src)["ETag"] == f'"{md5(large)}"'
    assert md5(body(cos.get_object(Bucket=srv.bucket, Key=k2 + ".copy"))) == md5(large)
    assert len(blobs(seaweed) - before) == 3

    for key in (k1, k2, k2 + ".copy"):
        cos.delete_object(Bucket=srv.bucket, Key=key)
    with pytest.raises(CosServiceError) as exc:
        cos.head_object(Bucket=srv.bucket, Key=k2)
    assert exc.value.get_status_code() == 404
    assert blobs(seaweed) - before == set()


@pytest.mark.parametrize(("size_mb", "part_mb"), [(30, 8), (6, 1)], ids=["copied-parts", "streamed-parts"])
def test_upload_file_multipart_and_download_file(
    srv: ServerProcess, cos: CosS3Client, seaweed: Seaweed, tmp_path: Path, size_mb: int, part_mb: int
) -> None:
    # 8 MiB parts are joined by UploadPartCopy inside S3; 1 MiB parts are too small for S3's
    # 5 MiB minimum, so the server streams them into a new object instead.
    before = blobs(seaweed)
    src = tmp_path / "big.bin"
    with open(src, "wb") as fh:
        for _ in range(size_mb):
            fh.write(os.urandom(MiB))
    key = uniq("big.bin")
    cos.upload_file(Bucket=srv.bucket, Key=key, LocalFilePath=str(src), PartSize=part_mb, MAXThread=4)
    head = cos.head_object(Bucket=srv.bucket, Key=key)
    assert head["Content-Length"] == str(size_mb * MiB)
    assert head["ETag"].endswith(f'-{-(-size_mb // part_mb)}"')
    # One blob for the object: the parts' blobs are gone, and no S3 upload is left open.
    assert len(blobs(seaweed) - before) == 1 and s3_uploads(seaweed) == []
    dst = tmp_path / "back.bin"
    cos.download_file(
        Bucket=srv.bucket, Key=key, DestFilePath=str(dst), PartSize=4, MAXThread=4, EnableCRC=True
    )
    assert file_md5(dst) == file_md5(src)
    cos.delete_object(Bucket=srv.bucket, Key=key)


def test_jobs_and_sync_processing_read_and_write_s3(
    srv: ServerProcess, cos: CosS3Client, seaweed: Seaweed, tmp_path: Path
) -> None:
    video = make_video(tmp_path / "clip.mp4", seconds=2.0, width=320, height=240, audio=False)
    key = uniq("clip.mp4")
    cos.upload_file(Bucket=srv.bucket, Key=key, LocalFilePath=str(video))
    before = blobs(seaweed)

    info = wait_job(cos, srv.bucket, create_job(cos, srv.bucket, "MediaInfo", key, {}))
    assert info["State"] == "Success", info
    assert info["Operation"]["MediaInfo"]["Stream"]["Video"]["Width"] == "320"

    out = f"{key}.snap/${{Number}}.jpg"
    op = {
        "Snapshot": {"Mode": "Interval", "TimeInterval": "1", "Count": "2"},
        "Output": {"Region": srv.region, "Bucket": srv.bucket, "Object": out},
    }
    d = wait_job(cos, srv.bucket, create_job(cos, srv.bucket, "Snapshot", key, op))
    assert d["State"] == "Success", d
    result = d["Operation"]["MediaResult"]["OutputFile"]
    names = [result["ObjectPrefix"] + n for n in result["ObjectName"]]
    md5s = {m["ObjectName"]: m["Md5"] for m in result["Md5Info"]}
    assert len(names) == 2
    for name in names:
        jpeg = body(cos.get_object(Bucket=srv.bucket, Key=name))
        assert jpeg[:3] == b"\xff\xd8\xff" and hashlib.md5(jpeg).hexdigest() == md5s[name]
    assert len(blobs(seaweed) - before) == 2  # the outputs went to S3

    # Synchronous processing on GET needs a local copy too.
    frame = body(cos.get_snapshot(Bucket=srv.bucket, Key=key, Time=1, Format="png"))
    assert frame[:8] == b"\x89PNG\r\n\x1a\n"
    # Nothing is left in the scratch directory: inputs and work directories are removed.
    assert list((srv.data_dir / "tmp").iterdir()) == []
