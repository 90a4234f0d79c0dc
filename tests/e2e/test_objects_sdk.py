"""Every object operation of issue 3 through cos-python-sdk-v5 against a real server process."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import crcmod
import pytest
from qcloud_cos import CosS3Client
from qcloud_cos.cos_exception import CosServiceError

from mediajobs.testing import ServerProcess
from tests.helpers import file_md5, md5

crc64 = crcmod.mkCrcFun(0x142F0E1EBA9EA3693, initCrc=0, xorOut=0xFFFFFFFFFFFFFFFF, rev=True)


def uniq(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}/"


def body(resp: dict[str, Any]) -> bytes:
    return bytes(resp["Body"].get_raw_stream().read())


def code_of(exc: pytest.ExceptionInfo[CosServiceError]) -> tuple[int, str]:
    return exc.value.get_status_code(), exc.value.get_error_code()


def test_put_get_head_delete_with_metadata(cos: CosS3Client, bucket: str) -> None:
    key = uniq() + "hello.txt"
    data = b"hello world"
    put = cos.put_object(
        Bucket=bucket, Key=key, Body=data, ContentType="text/plain", CacheControl="max-age=60",
        ContentDisposition='attachment; filename="a.txt"', Metadata={"x-cos-meta-author": "alice"},
    )  # fmt: skip
    assert put["ETag"] == f'"{md5(data)}"'
    assert put["x-cos-hash-crc64ecma"] == str(crc64(data)) == "5981764153023615706"
    got = cos.get_object(Bucket=bucket, Key=key)
    assert body(got) == data
    assert got["Content-Type"] == "text/plain"
    assert got["Content-Length"] == "11"
    assert got["Cache-Control"] == "max-age=60"
    assert got["Content-Disposition"] == 'attachment; filename="a.txt"'
    assert got["x-cos-meta-author"] == "alice"
    assert got["ETag"] == put["ETag"]
    head = cos.head_object(Bucket=bucket, Key=key)
    assert head["Content-Length"] == "11" and head["ETag"] == put["ETag"]
    assert head["Last-Modified"] == got["Last-Modified"]
    assert head["x-cos-hash-crc64ecma"] == put["x-cos-hash-crc64ecma"]
    assert cos.object_exists(Bucket=bucket, Key=key)
    cos.delete_object(Bucket=bucket, Key=key)
    assert not cos.object_exists(Bucket=bucket, Key=key)
    cos.delete_object(Bucket=bucket, Key=key)  # deleting a missing key still succeeds


def test_overwrite_and_content_type_guess(cos: CosS3Client, bucket: str) -> None:
    key = uniq() + "clip.mp4"
    cos.put_object(Bucket=bucket, Key=key, Body=b"one")
    cos.put_object(Bucket=bucket, Key=key, Body=b"second version")
    got = cos.get_object(Bucket=bucket, Key=key)
    assert body(got) == b"second version"
    assert got["Content-Type"] == "video/mp4"


def test_range_conditional_and_response_overrides(cos: CosS3Client, bucket: str) -> None:
    key = uniq() + "range.bin"
    data = bytes(range(256)) * 4  # 1000+ bytes
    data = data[:1000]
    etag = cos.put_object(Bucket=bucket, Key=key, Body=data)["ETag"]
    r = cos.get_object(Bucket=bucket, Key=key, Range="bytes=0-99")
    assert body(r) == data[:100] and r["Content-Range"] == "bytes 0-99/1000" and r["Content-Length"] == "100"
    r = cos.get_object(Bucket=bucket, Key=key, Range="bytes=900-")
    assert body(r) == data[900:] and r["Content-Range"] == "bytes 900-999/1000"
    r = cos.get_object(Bucket=bucket, Key=key, Range="bytes=-100")
    assert body(r) == data[-100:]
    r = cos.get_object(Bucket=bucket, Key=key, Range="bytes=990-2000")
    assert body(r) == data[990:] and r["Content-Range"] == "bytes 990-999/1000"
    assert r["x-cos-hash-crc64ecma"] == str(crc64(data))  # whole-object CRC, never the range's
    with pytest.raises(CosServiceError) as exc:
        cos.get_object(Bucket=bucket, Key=key, Range="bytes=1000-")
    assert code_of(exc) == (416, "InvalidRange")
    r = cos.get_object(Bucket=bucket, Key=key, IfNoneMatch=etag)
    assert r["Content-Length"] == "0" and body(r) == b""
    r = cos.get_object(Bucket=bucket, Key=key, IfModifiedSince=r["Last-Modified"])
    assert r["Content-Length"] == "0"
    with pytest.raises(CosServiceError) as exc:
        cos.get_object(Bucket=bucket, Key=key, IfMatch='"0000"')
    assert code_of(exc) == (412, "PreconditionFailed")
    r = cos.get_object(
        Bucket=bucket, Key=key, ResponseContentType="application/x-test", ResponseContentDisposition="inline",
        ResponseCacheControl="no-cache",
    )  # fmt: skip
    assert r["Content-Type"] == "application/x-test"
    assert r["Content-Disposition"] == "inline" and r["Cache-Control"] == "no-cache"


@pytest.mark.parametrize(
    "key",
    [
        "中文 目录/文件 名.txt",
        "a b+c&d=e?f#g.txt",
        "dots/../x",
        "dots/./y",
        "pct%2Fkept",
        "a//b",
        "k" * 850,
        "!'()*;:@$,",
    ],
)
def test_key_round_trips(cos: CosS3Client, bucket: str, key: str) -> None:
    data = key.encode()[:50] + b"-payload"
    cos.put_object(Bucket=bucket, Key=key, Body=data)
    assert body(cos.get_object(Bucket=bucket, Key=key)) == data
    listed = cos.list_objects(Bucket=bucket, Prefix=key)
    assert next(c["Key"] for c in listed["Contents"]) == key
    cos.delete_object(Bucket=bucket, Key=key)


def test_listing_prefix_delimiter_marker_paging(cos: CosS3Client, bucket: str) -> None:
    base = uniq("list")
    keys = [f"{base}a/1.txt", f"{base}a/2.txt", f"{base}b/3.txt", f"{base}c+d e.txt", f"{base}z.txt"]
    for k in keys:
        cos.put_object(Bucket=bucket, Key=k, Body=b"x")
    r = cos.list_objects(Bucket=bucket, Prefix=base, Delimiter="/")
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == [f"{base}a/", f"{base}b/"]
    assert [c["Key"] for c in r["Contents"]] == [f"{base}c+d e.txt", f"{base}z.txt"]
    assert r["IsTruncated"] == "false" and r["Delimiter"] == "/"
    seen: list[str] = []
    marker = ""
    while True:
        r = cos.list_objects(Bucket=bucket, Prefix=base, Marker=marker, MaxKeys=2)
        seen += [c["Key"] for c in r.get("Contents", [])]
        if r["IsTruncated"] == "false":
            break
        marker = r["NextMarker"]
    assert seen == keys
    # Without encoding-type the keys come back raw (the SDK sends url unless told otherwise).
    raw = cos.list_objects(Bucket=bucket, Prefix=f"{base}c", EncodingType="")
    assert raw["Contents"][0]["Key"] == f"{base}c+d e.txt"
    url = cos.list_objects(Bucket=bucket, Prefix=f"{base}c", EncodingType="url")
    assert url["EncodingType"] == "url"


def test_multi_delete(cos: CosS3Client, bucket: str) -> None:
    base = uniq("del")
    for k in ("a", "b"):
        cos.put_object(Bucket=bucket, Key=base + k, Body=b"x")
    r = cos.delete_objects(
        Bucket=bucket,
        Delete={
            "Quiet": "false",
            "Object": [{"Key": base + "a"}, {"Key": base + "b"}, {"Key": base + "missing"}],
        },
    )
    assert sorted(d["Key"] for d in r["Deleted"]) == sorted([base + "a", base + "b", base + "missing"])
    assert cos.list_objects(Bucket=bucket, Prefix=base).get("Contents") is None
    quiet = cos.delete_objects(Bucket=bucket, Delete={"Quiet": "true", "Object": [{"Key": base + "a"}]})
    assert not quiet.get("Deleted")


def test_copy_within_and_across_buckets(server: ServerProcess, cos: CosS3Client, bucket: str) -> None:
    key = uniq("copy") + "src.txt"
    cos.put_object(
        Bucket=bucket, Key=key, Body=b"copy me", ContentType="text/x-src", Metadata={"x-cos-meta-a": "1"}
    )
    src = {"Bucket": bucket, "Key": key, "Region": server.region}
    r = cos.copy_object(Bucket=bucket, Key=key + ".copy", CopySource=src)
    assert r["ETag"] == f'"{md5(b"copy me")}"'
    got = cos.get_object(Bucket=bucket, Key=key + ".copy")
    assert body(got) == b"copy me" and got["Content-Type"] == "text/x-src" and got["x-cos-meta-a"] == "1"
    r = cos.copy_object(
        Bucket=bucket, Key=key + ".replaced", CopySource=src, CopyStatus="Replaced", ContentType="text/y",
        Metadata={"x-cos-meta-b": "2"},
    )  # fmt: skip
    got = cos.head_object(Bucket=bucket, Key=key + ".replaced")
    assert got["Content-Type"] == "text/y" and got["x-cos-meta-b"] == "2" and "x-cos-meta-a" not in got
    other = "otherbucket-1250000000"
    cos.create_bucket(Bucket=other)
    try:
        cos.copy_object(Bucket=other, Key="x/y.txt", CopySource=src)
        assert body(cos.get_object(Bucket=other, Key="x/y.txt")) == b"copy me"
        with pytest.raises(CosServiceError) as exc:
            cos.copy_object(Bucket=bucket, Key=key, CopySource=src)  # onto itself without Replaced
        assert code_of(exc) == (400, "InvalidRequest")
        with pytest.raises(CosServiceError) as exc:
            cos.copy_object(Bucket=bucket, Key="dst", CopySource={**src, "Key": "no/such/key"})
        assert code_of(exc) == (404, "NoSuchKey")
    finally:
        cos.delete_object(Bucket=other, Key="x/y.txt")
        cos.delete_bucket(Bucket=other)


def test_bucket_lifecycle_and_list_buckets(server: ServerProcess, cos: CosS3Client) -> None:
    name = f"lifecycle{uuid.uuid4().hex[:6]}-1250000000"
    cos.create_bucket(Bucket=name)
    assert cos.bucket_exists(Bucket=name)
    head = cos.head_bucket(Bucket=name)
    assert head["x-cos-bucket-region"] == server.region
    with pytest.raises(CosServiceError) as exc:
        cos.create_bucket(Bucket=name)
    assert code_of(exc) == (409, "BucketAlreadyOwnedByYou")
    service = CosS3Client(
        server.cos_config(IP=None, Port=None, ServiceDomain=f"127.0.0.1:{server.port}"), retry=0
    )
    names = [b["Name"] for b in service.list_buckets()["Buckets"]["Bucket"]]
    assert name in names and server.bucket in names
    cos.put_object(Bucket=name, Key="k", Body=b"x")
    with pytest.raises(CosServiceError) as exc:
        cos.delete_bucket(Bucket=name)
    assert code_of(exc) == (409, "BucketNotEmpty")
    cos.delete_object(Bucket=name, Key="k")
    cos.delete_bucket(Bucket=name)
    assert not cos.bucket_exists(Bucket=name)


def test_multipart_by_hand(cos: CosS3Client, bucket: str) -> None:
    key = uniq("mp") + "movie.bin"
    parts_data = [os.urandom(1024 * 1024), os.urandom(1024 * 1024), b"tail"]
    up = cos.create_multipart_upload(Bucket=bucket, Key=key, ContentType="application/x-movie")
    uid = up["UploadId"]
    listed = cos.list_multipart_uploads(Bucket=bucket, Prefix=key)
    assert [u["UploadId"] for u in listed["Upload"]] == [uid]
    etags = []
    for n, data in enumerate(parts_data, 1):
        r = cos.upload_part(Bucket=bucket, Key=key, Body=data, PartNumber=n, UploadId=uid)
        assert r["ETag"] == f'"{md5(data)}"' and r["x-cos-hash-crc64ecma"] == str(crc64(data))
        etags.append(r["ETag"])
    parts = cos.list_parts(Bucket=bucket, Key=key, UploadId=uid)
    assert [p["PartNumber"] for p in parts["Part"]] == ["1", "2", "3"]
    assert [p["ETag"] for p in parts["Part"]] == etags and parts["IsTruncated"] == "false"
    page = cos.list_parts(Bucket=bucket, Key=key, UploadId=uid, MaxParts=2)
    assert page["IsTruncated"] == "true" and page["NextPartNumberMarker"] == "2"
    done = cos.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=uid,
        MultipartUpload={"Part": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]},
    )  # fmt: skip
    whole = b"".join(parts_data)
    assert done["ETag"].endswith('-3"')
    assert done["x-cos-hash-crc64ecma"] == str(crc64(whole))
    got = cos.get_object(Bucket=bucket, Key=key)
    assert body(got) == whole and got["Content-Type"] == "application/x-movie"
    assert cos.list_multipart_uploads(Bucket=bucket, Prefix=key).get("Upload") is None
    # abort
    uid2 = cos.create_multipart_upload(Bucket=bucket, Key=key + "2")["UploadId"]
    cos.upload_part(Bucket=bucket, Key=key + "2", Body=b"x", PartNumber=1, UploadId=uid2)
    cos.abort_multipart_upload(Bucket=bucket, Key=key + "2", UploadId=uid2)
    with pytest.raises(CosServiceError) as exc:
        cos.list_parts(Bucket=bucket, Key=key + "2", UploadId=uid2)
    assert code_of(exc) == (404, "NoSuchUpload")


def test_upload_file_30mb_and_download_file(cos: CosS3Client, bucket: str, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    with open(src, "wb") as fh:
        for _ in range(30):
            fh.write(os.urandom(1024 * 1024))
    key = uniq("big") + "big.bin"
    cos.upload_file(Bucket=bucket, Key=key, LocalFilePath=str(src), PartSize=4, MAXThread=4)
    head = cos.head_object(Bucket=bucket, Key=key)
    assert head["Content-Length"] == str(30 * 1024 * 1024)
    assert head["ETag"].endswith('-8"')  # 30 MiB in 4 MiB parts
    dst = tmp_path / "back.bin"
    cos.download_file(Bucket=bucket, Key=key, DestFilePath=str(dst), PartSize=4, MAXThread=4, EnableCRC=True)
    assert file_md5(dst) == file_md5(src)


def test_upload_file_resumes_with_listed_parts(cos: CosS3Client, bucket: str, tmp_path: Path) -> None:
    # upload_file looks for an unfinished upload of the key and reuses parts whose ETag matches.
    src = tmp_path / "resume.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024))
    key = uniq("resume") + "r.bin"
    uid = cos.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    cos.upload_part(Bucket=bucket, Key=key, Body=src.read_bytes()[: 1024 * 1024], PartNumber=1, UploadId=uid)
    cos.upload_file(Bucket=bucket, Key=key, LocalFilePath=str(src), PartSize=1)
    assert body(cos.get_object(Bucket=bucket, Key=key)) == src.read_bytes()
    assert cos.list_multipart_uploads(Bucket=bucket, Prefix=key).get("Upload") is None
