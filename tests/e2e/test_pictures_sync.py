"""Image processing on GET through cos-python-sdk-v5: `ci_get_object(Rule=...)` and `ci_get_image_info`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pyvips
from qcloud_cos import CosS3Client
from qcloud_cos.cos_exception import CosServiceError

from mediajobs.testing import ServerProcess


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
