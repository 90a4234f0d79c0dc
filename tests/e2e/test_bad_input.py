"""Bad input: each answered with its documented code and status, and nothing stored changes.

Runs its own server with a default bucket (so pre-signed URLs made in IP mode resolve) and a
2 MiB body limit.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import qcloud_cos.cos_auth as cos_auth
import requests
from qcloud_cos import CosS3Client
from qcloud_cos.cos_exception import CosServiceError

from mediajobs.testing import ServerProcess, running_server
from tests.helpers import raw_request, read_reply

LIMIT = 2 * 1024 * 1024
KEY = "keep/original.txt"
ORIGINAL = b"the original bytes"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(
        tmp_path_factory.mktemp("bad"),
        args=["--default-bucket", "examplebucket-1250000000", "--max-object-size", str(LIMIT)],
    ) as s:
        s.client().put_object(Bucket=s.bucket, Key=KEY, Body=ORIGINAL)
        yield s


@pytest.fixture
def cos(srv: ServerProcess) -> CosS3Client:
    return srv.client()


@pytest.fixture(autouse=True)
def original_survives(srv: ServerProcess) -> Iterator[None]:
    yield
    got = srv.client().get_object(Bucket=srv.bucket, Key=KEY)
    assert got["Body"].get_raw_stream().read() == ORIGINAL


def fails(fn: Any, *args: Any, **kw: Any) -> tuple[int, str, str]:
    with pytest.raises(CosServiceError) as exc:
        fn(*args, **kw)
    e = exc.value
    assert e.get_request_id(), "error body must carry a RequestId"
    return e.get_status_code(), e.get_error_code(), e.get_error_msg()


def test_wrong_secret(srv: ServerProcess) -> None:
    bad = srv.client(SecretKey="wrong-key")
    assert fails(bad.get_object, Bucket=srv.bucket, Key=KEY)[:2] == (403, "SignatureDoesNotMatch")
    assert fails(bad.put_object, Bucket=srv.bucket, Key=KEY, Body=b"overwrite")[:2] == (
        403,
        "SignatureDoesNotMatch",
    )


def test_unknown_secret_id(srv: ServerProcess) -> None:
    bad = srv.client(SecretId="AKIDnobodyhasthis")
    assert fails(bad.delete_object, Bucket=srv.bucket, Key=KEY)[:2] == (403, "InvalidAccessKeyId")


def test_expired_signature(srv: ServerProcess, cos: CosS3Client, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    # The SDK reads the clock through cos_auth.time: sign as of two days ago.
    monkeypatch.setattr(cos_auth, "time", types.SimpleNamespace(time=lambda: time.time() - 2 * 86400))
    status, code, msg = fails(cos.delete_object, Bucket=srv.bucket, Key=KEY)
    assert (status, code, msg) == (403, "AccessDenied", "Request has expired")


def test_unsigned_request_is_refused(srv: ServerProcess) -> None:
    status, headers, body = raw_request(srv, "GET", "/" + KEY, signed=False)
    assert status == 403 and b"<Code>AccessDenied</Code>" in body
    assert headers["x-cos-request-id"]


def test_presigned_urls(srv: ServerProcess, cos: CosS3Client) -> None:
    url = cos.get_presigned_url(Bucket=srv.bucket, Key=KEY, Method="GET", Expired=300)
    r = requests.get(url, timeout=10)
    assert r.status_code == 200 and r.content == ORIGINAL
    tampered = url.replace("original", "0riginal")
    r = requests.get(tampered, timeout=10)
    assert r.status_code == 403 and "<Code>SignatureDoesNotMatch</Code>" in r.text
    sig = url.split("q-signature=")[1][:40]
    r = requests.get(url.replace(sig, "0" * 40), timeout=10)
    assert r.status_code == 403 and "<Code>SignatureDoesNotMatch</Code>" in r.text
    # a GET URL does not authorise a PUT
    r = requests.put(url, data=b"overwrite", timeout=10)
    assert r.status_code == 403


def test_bad_bucket_names(srv: ServerProcess, cos: CosS3Client) -> None:
    for name in ("UpperCase-1250000000", "nodigits", "a" * 51 + "-1250000000", "double--dash-x"):
        assert fails(cos.create_bucket, Bucket=name)[:2] == (400, "InvalidBucketName"), name


def test_missing_bucket_and_key(srv: ServerProcess, cos: CosS3Client) -> None:
    assert fails(cos.get_object, Bucket="nosuchbucket-1250000000", Key="k")[:2] == (404, "NoSuchBucket")
    assert fails(cos.put_object, Bucket="nosuchbucket-1250000000", Key="k", Body=b"x")[:2] == (
        404,
        "NoSuchBucket",
    )
    assert fails(cos.list_objects, Bucket="nosuchbucket-1250000000")[:2] == (404, "NoSuchBucket")
    assert fails(cos.get_object, Bucket=srv.bucket, Key="no/such/key")[:2] == (404, "NoSuchKey")
    # HEAD errors carry no body; the SDK reports NoSuchResource for any HEAD 404
    assert fails(cos.head_object, Bucket=srv.bucket, Key="no/such/key")[0] == 404


def test_wrong_content_md5(srv: ServerProcess, cos: CosS3Client) -> None:
    wrong = base64.b64encode(hashlib.md5(b"something else").digest()).decode()
    assert fails(cos.put_object, Bucket=srv.bucket, Key=KEY, Body=b"tampered", ContentMD5=wrong)[:2] == (
        400,
        "BadDigest",
    )
    assert fails(cos.put_object, Bucket=srv.bucket, Key=KEY, Body=b"tampered", ContentMD5="not-base64!")[
        :2
    ] == (
        400,
        "InvalidDigest",
    )
    right = base64.b64encode(hashlib.md5(b"fine").digest()).decode()
    cos.put_object(Bucket=srv.bucket, Key="md5/ok", Body=b"fine", ContentMD5=right)


def test_multipart_order_and_missing_parts(srv: ServerProcess, cos: CosS3Client) -> None:
    key = "mp/bad"
    uid = cos.create_multipart_upload(Bucket=srv.bucket, Key=key)["UploadId"]
    e1 = cos.upload_part(
        Bucket=srv.bucket, Key=key, Body=os.urandom(1024 * 1024), PartNumber=1, UploadId=uid
    )["ETag"]
    e2 = cos.upload_part(Bucket=srv.bucket, Key=key, Body=b"small", PartNumber=2, UploadId=uid)["ETag"]
    e3 = cos.upload_part(Bucket=srv.bucket, Key=key, Body=b"small", PartNumber=3, UploadId=uid)["ETag"]

    def complete(parts: list[tuple[int, str]]) -> tuple[int, str, str]:
        return fails(
            cos.complete_multipart_upload, Bucket=srv.bucket, Key=key, UploadId=uid,
            MultipartUpload={"Part": [{"PartNumber": n, "ETag": e} for n, e in parts]},
        )  # fmt: skip

    assert complete([(2, e2), (1, e1)])[:2] == (400, "InvalidPartOrder")
    assert complete([(1, e1), (4, e2)])[:2] == (400, "InvalidPart")
    assert complete([(1, e1), (2, e1)])[:2] == (400, "InvalidPart")  # ETag of another part
    assert complete([(1, e1), (2, e2), (3, e3)])[:2] == (400, "EntityTooSmall")  # part 2 < 1 MiB, not last
    assert fails(cos.get_object, Bucket=srv.bucket, Key=key)[:2] == (404, "NoSuchKey")
    # the upload is intact after the refusals and completes once the list is right
    cos.complete_multipart_upload(
        Bucket=srv.bucket,
        Key=key,
        UploadId=uid,
        MultipartUpload={"Part": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 3, "ETag": e3}]},
    )
    assert int(cos.head_object(Bucket=srv.bucket, Key=key)["Content-Length"]) == 1024 * 1024 + 5
    assert fails(cos.upload_part, Bucket=srv.bucket, Key=key, Body=b"x", PartNumber=1, UploadId=uid)[:2] == (
        404,
        "NoSuchUpload",
    )
    assert fails(cos.upload_part, Bucket=srv.bucket, Key=key, Body=b"x", PartNumber=10001, UploadId=uid)[
        :2
    ] == (
        400,
        "InvalidArgument",
    )


def test_range_past_the_end(srv: ServerProcess, cos: CosS3Client) -> None:
    assert fails(cos.get_object, Bucket=srv.bucket, Key=KEY, Range="bytes=5000-6000")[:2] == (
        416,
        "InvalidRange",
    )


def test_body_over_limit(srv: ServerProcess, cos: CosS3Client) -> None:
    too_big = os.urandom(LIMIT + 1)
    assert fails(cos.put_object, Bucket=srv.bucket, Key=KEY, Body=too_big)[:2] == (400, "EntityTooLarge")
    uid = cos.create_multipart_upload(Bucket=srv.bucket, Key="mp/limit")["UploadId"]
    assert fails(
        cos.upload_part, Bucket=srv.bucket, Key="mp/limit", Body=too_big, PartNumber=1, UploadId=uid
    )[:2] == (
        400,
        "EntityTooLarge",
    )
    cos.abort_multipart_upload(Bucket=srv.bucket, Key="mp/limit", UploadId=uid)


@pytest.mark.parametrize("key", ["..", ".", "a/..", "./"])
def test_keys_that_name_the_bucket_itself(srv: ServerProcess, key: str) -> None:
    status, _, body = raw_request(srv, "PUT", "/" + key, body=b"x")
    assert status == 400 and b"<Code>InvalidObjectName</Code>" in body
    status, _, body = raw_request(srv, "GET", "/" + key)
    assert status == 400 and b"<Code>InvalidObjectName</Code>" in body


def test_control_characters_and_long_keys(srv: ServerProcess) -> None:
    status, _, body = raw_request(srv, "PUT", "/bad%1Bkey", sign_path="/bad\x1bkey", body=b"x")
    assert status == 400 and b"<Code>InvalidObjectName</Code>" in body
    status, _, body = raw_request(srv, "PUT", "/" + "k" * 851, body=b"x")
    assert status == 400 and b"<Code>KeyTooLong</Code>" in body


def test_raw_dot_dot_paths_stay_inside_the_bucket(srv: ServerProcess, tmp_path: Path) -> None:
    for path in ("/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/..%2F..%2Fetc%2Fpasswd"):
        status, _, body = raw_request(srv, "GET", path, signed=False)
        assert status == 403 and b"root:" not in body
        # Signed, it is an ordinary (missing) key of this bucket.
        from urllib.parse import unquote

        status, _headers, body = raw_request(srv, "GET", path, sign_path=unquote(path))
        assert status == 404 and b"<Code>NoSuchKey</Code>" in body and b"root:" not in body
    # Written under such a key, the bytes land in the bucket's store, never at the path.
    status, _, _ = raw_request(srv, "PUT", "/../../mediajobs-escape.txt", body=b"contained")
    assert status == 200
    assert not (srv.data_dir.parent / "mediajobs-escape.txt").exists()
    assert not Path("/mediajobs-escape.txt").exists()
    status, _, body = raw_request(srv, "GET", "/../../mediajobs-escape.txt")
    assert status == 200 and body == b"contained"


def test_unknown_subresources_are_not_object_operations(srv: ServerProcess, cos: CosS3Client) -> None:
    assert fails(cos.get_object_tagging, Bucket=srv.bucket, Key=KEY)[:2] == (501, "NotImplemented")
    assert fails(
        cos.put_object_tagging,
        Bucket=srv.bucket,
        Key=KEY,
        Tagging={"TagSet": {"Tag": [{"Key": "a", "Value": "b"}]}},
    )[:2] == (501, "NotImplemented")
    assert fails(cos.delete_object_tagging, Bucket=srv.bucket, Key=KEY)[:2] == (501, "NotImplemented")
    assert fails(cos.get_object_acl, Bucket=srv.bucket, Key=KEY)[:2] == (501, "NotImplemented")
    status, _, body = raw_request(srv, "PUT", "/" + KEY, params={"restore": ""}, body=b"overwrite?")
    assert status == 501 and b"<Code>NotImplemented</Code>" in body


def test_malformed_requests_never_500(srv: ServerProcess) -> None:
    cases = [
        ("POST", "/", {"delete": ""}, b"<Delete><Object><Key>a</Key></Object>"),  # broken XML
        (
            "POST",
            "/",
            {"delete": ""},
            b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaa">]><Delete>&a;</Delete>',
        ),
        ("POST", "/" + KEY, {"uploadId": "nope"}, b"<CompleteMultipartUpload/>"),
        ("PATCH", "/" + KEY, {}, b"x"),
        ("POST", "/" + KEY, {}, b"x"),
        ("GET", "/", {"max-keys": "many"}, None),
        ("GET", "/", {"encoding-type": "base64"}, None),
        ("PUT", "/" + KEY, {"partNumber": "1"}, b"x"),
    ]
    for method, path, params, body in cases:
        status, headers, out = raw_request(srv, method, path, params=params, body=body)
        assert 400 <= status < 500, (method, path, params, status, out)
        assert b"<Error>" in out and b"<RequestId>" in out and headers["x-cos-request-id"]


def test_garbage_on_the_socket_gets_an_http_error(srv: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(b"GET /%ZZ%\xff HTTP/1.1\r\nHost: examplebucket-1250000000.cos.x.myqcloud.com\r\n\r\n")
        reply = read_reply(s)
    assert reply.startswith(b"HTTP/1.1 4"), reply[:100]
    assert b"Traceback" not in reply
