"""Persistent image processing through cos-python-sdk-v5 (spec/image-processing.md 6): `Pic-Operations`
on PUT (`ci_put_object`), on an existing object (`ci_image_process`), bad headers refused before anything
is stored, and a failing rule that keeps the stored original. The Node SDK's putObject and its
multipart uploadFile (which sends the header with Complete Multipart Upload) are in
tests/node/pictures.test.mjs, run at the end."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest
import pyvips
from qcloud_cos import CosS3Client
from qcloud_cos.cos_exception import CosServiceError

from mediajobs.testing import ServerProcess
from tests.node_runner import run_node_test


def _photo(width: int, height: int, q: int = 90) -> bytes:
    xyz = pyvips.Image.xyz(width, height)
    img = xyz[0].bandjoin([xyz[1], (xyz[0] + xyz[1]) / 2]).cast("uchar")
    return bytes(img.jpegsave_buffer(Q=q))


def _get(cos: CosS3Client, bucket: str, key: str) -> bytes:
    return bytes(cos.get_object(Bucket=bucket, Key=key)["Body"].get_raw_stream().read())


def _objects(data: dict[str, object]) -> list[dict[str, str]]:
    found = data["ProcessResults"]["Object"]  # type: ignore[index]
    return found if isinstance(found, list) else [found]  # xml_to_dict: a dict for one, a list for more


@pytest.fixture
def prefix() -> str:
    return f"upload-{uuid.uuid4().hex[:8]}"


def test_put_with_pic_operations(cos: CosS3Client, bucket: str, prefix: str) -> None:
    body = _photo(1200, 800)
    ops = {
        "is_pic_info": 1,
        "rules": [
            {"fileid": "thumbs/small.webp", "rule": "imageMogr2/thumbnail/!50p|imageMogr2/format/webp"},
            {"fileid": f"/{prefix}-abs/cover.png", "rule": "imageView2/1/w/300/h/300/format/png"},
        ],
    }
    headers, data = cos.ci_put_object(
        Bucket=bucket,
        Body=body,
        Key=f"{prefix}/cat.jpg",
        PicOperations=json.dumps(ops, separators=(", ", ": ")),
    )
    assert headers["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    original = data["OriginalInfo"]
    assert original["Key"] == f"{prefix}/cat.jpg"
    assert original["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    assert original["Location"].endswith(f".myqcloud.com/{prefix}/cat.jpg")
    info = original["ImageInfo"]
    assert (info["Format"], info["Width"], info["Height"]) == ("JPEG", "1200", "800")
    assert abs(int(info["Quality"]) - 90) <= 2 and info["Ave"].startswith("0x")
    small, cover = _objects(data)
    assert small["Key"] == f"{prefix}/thumbs/small.webp"  # relative to the source's directory
    assert cover["Key"] == f"{prefix}-abs/cover.png"  # a leading '/' is absolute
    for node, size, fmt in ((small, (600, 400), "WEBP"), (cover, (300, 300), "PNG")):
        stored = _get(cos, bucket, node["Key"])
        assert node["ETag"] == f'"{hashlib.md5(stored).hexdigest()}"'
        assert node["Size"] == str(len(stored))
        assert (node["Format"], node["Width"], node["Height"]) == (fmt, str(size[0]), str(size[1]))
        img = pyvips.Image.new_from_buffer(stored, "")
        assert (img.width, img.height) == size
        assert img.get("vips-loader").startswith(fmt.lower())
    assert _get(cos, bucket, f"{prefix}/cat.jpg") == body  # the original, stored as sent
    head = cos.head_object(Bucket=bucket, Key=f"{prefix}/thumbs/small.webp")
    assert head["Content-Type"] == "image/webp"


def test_rule_may_overwrite_the_source(cos: CosS3Client, bucket: str, prefix: str) -> None:
    ops = {"rules": [{"fileid": "a.jpg", "rule": "imageMogr2/thumbnail/200x"},
                     {"fileid": "b.png", "rule": "imageMogr2/thumbnail/100x/format/png"},
                     {"fileid": "a.jpg", "rule": "imageMogr2/thumbnail/300x"}]}  # fmt: skip
    _, data = cos.ci_put_object(
        Bucket=bucket, Body=_photo(800, 400), Key=f"{prefix}/a.jpg", PicOperations=json.dumps(ops)
    )
    first, second, third = _objects(data)
    stored = _get(cos, bucket, f"{prefix}/a.jpg")
    assert pyvips.Image.new_from_buffer(stored, "").width == 300  # the last rule written wins
    assert (first["Width"], third["Width"]) == ("200", "300")
    assert data["OriginalInfo"]["ETag"] == third["ETag"] == f'"{hashlib.md5(stored).hexdigest()}"'
    # the later rules still read the uploaded image, not an earlier rule's output
    assert pyvips.Image.new_from_buffer(_get(cos, bucket, f"{prefix}/b.png"), "").height == 50
    assert "ImageInfo" not in data["OriginalInfo"]  # is_pic_info defaults to 0
    assert second["Width"] == "100"


def test_image_process_on_stored_object(cos: CosS3Client, bucket: str, prefix: str) -> None:
    cos.put_object(Bucket=bucket, Key=f"{prefix}/p.jpg", Body=_photo(640, 480))
    ops = {
        "is_pic_info": "1",
        "rules": [{"fileid": "p-gray.jpg", "rule": "imageMogr2/grayscale/1/crop/100x50"}],
    }
    _, data = cos.ci_image_process(Bucket=bucket, Key=f"{prefix}/p.jpg", PicOperations=json.dumps(ops))
    (node,) = _objects(data)
    img = pyvips.Image.new_from_buffer(_get(cos, bucket, f"{prefix}/p-gray.jpg"), "")
    assert (img.width, img.height, img.bands) == (100, 50, 1)
    assert node["Key"] == f"{prefix}/p-gray.jpg"
    with pytest.raises(CosServiceError) as exc:
        cos.ci_image_process(Bucket=bucket, Key=f"{prefix}/missing.jpg", PicOperations=json.dumps(ops))
    assert (exc.value.get_status_code(), exc.value.get_error_code()) == (404, "NoSuchKey")


@pytest.mark.parametrize(
    ("header", "code"),
    [
        ("{not json", "InvalidPicOperations"),
        ('{"rules": {"fileid": "x"}}', "InvalidPicOperations"),
        (json.dumps({"rules": [{"fileid": f"o{i}.jpg", "rule": "imageMogr2/thumbnail/10x"} for i in range(6)]}),
         "InvalidPicOperations"),
        ('{"rules": [{"rule": "imageMogr2/thumbnail/10x"}]}', "InvalidPicOperations"),
        ('{"rules": [{"fileid": "dir/", "rule": "imageMogr2/thumbnail/10x"}]}', "InvalidPicOperations"),
        ('{"rules": [{"fileid": "x.jpg"}]}', "InvalidPicOperations"),
        ('{"rules": [{"fileid": "x.jpg", "rule": "imageMogr2/thumbnail/abc"}]}', "InvalidArgument"),
        ('{"rules": [{"fileid": "x.jpg", "rule": "imageMogr2/thumbnail/10x|imageInfo"}]}', "InvalidPicOperations"),
        ('{"rules": [{"fileid": "x.jpg", "rule": "style/small"}]}', "InvalidArgument"),
    ],
)  # fmt: skip
def test_bad_pic_operations_store_nothing(
    cos: CosS3Client, bucket: str, prefix: str, header: str, code: str
) -> None:
    with pytest.raises(CosServiceError) as exc:
        cos.ci_put_object(Bucket=bucket, Body=_photo(64, 64), Key=f"{prefix}/bad.jpg", PicOperations=header)
    assert (exc.value.get_status_code(), exc.value.get_error_code()) == (400, code)
    assert exc.value.get_request_id()
    assert not cos.object_exists(Bucket=bucket, Key=f"{prefix}/bad.jpg")


def test_failing_rule_keeps_the_original(cos: CosS3Client, bucket: str, prefix: str) -> None:
    body = b"this is not an image" * 10
    ops = {"rules": [{"fileid": "t.jpg", "rule": "imageMogr2/thumbnail/10x"}]}
    with pytest.raises(CosServiceError) as exc:
        cos.ci_put_object(Bucket=bucket, Body=body, Key=f"{prefix}/text.jpg", PicOperations=json.dumps(ops))
    assert (exc.value.get_status_code(), exc.value.get_error_code()) == (400, "InvalidImageFormat")
    assert _get(cos, bucket, f"{prefix}/text.jpg") == body
    assert not cos.object_exists(Bucket=bucket, Key=f"{prefix}/t.jpg")
    missing = {
        "rules": [{"bucket": "nosuch-1250000000", "fileid": "t.jpg", "rule": "imageMogr2/thumbnail/10x"}]
    }
    with pytest.raises(CosServiceError) as exc:
        cos.ci_image_process(Bucket=bucket, Key=f"{prefix}/text.jpg", PicOperations=json.dumps(missing))
    assert (exc.value.get_status_code(), exc.value.get_error_code()) == (404, "NoSuchBucket")


def test_node_sdk_pic_operations(server: ServerProcess, tmp_path: Path) -> None:
    run_node_test("pictures.test.mjs", server)
