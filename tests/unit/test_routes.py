from __future__ import annotations

import pytest

from mediajobs import errors
from mediajobs.api.routes import check_bucket_name, ci_action, resolve

B = "examplebucket-1250000000"


@pytest.mark.parametrize(
    ("host", "path", "bucket", "key", "ci_host"),
    [
        (f"{B}.cos.ap-guangzhou.myqcloud.com", "/a/b.mp4", B, "a/b.mp4", False),
        (f"{B}.cos.ap-guangzhou.myqcloud.com:8790", "/", B, None, False),
        (f"{B}.ci.ap-guangzhou.myqcloud.com", "/jobs", B, "jobs", True),
        (f"{B}.cos.ap-beijing.tencentcos.cn", "/x", B, "x", False),
        ("127.0.0.1:8790", f"/{B}/dir/k", B, "dir/k", False),
        ("127.0.0.1:8790", f"/{B}", B, None, False),
        ("127.0.0.1:8790", f"/{B}/", B, None, False),
        ("localhost", "/notabucket/k", None, None, False),
    ],
)
def test_resolve(host: str, path: str, bucket: str | None, key: str | None, ci_host: bool) -> None:
    t = resolve(host, path, None)
    assert (t.bucket, t.key, t.ci_host) == (bucket, key, ci_host)


def test_service_health_and_default_bucket() -> None:
    assert resolve("service.cos.myqcloud.com", "/", None).service
    assert resolve("127.0.0.1:8790", "/", None).service
    assert resolve("127.0.0.1:8790", "/healthz", None).health == "healthz"
    t = resolve("files.example.com", "/a.txt", B)
    assert (t.bucket, t.key) == (B, "a.txt")
    # a bucket host never answers health: /healthz there is an object
    assert resolve(f"{B}.cos.ap-guangzhou.myqcloud.com", "/healthz", None).key == "healthz"
    for name in ("readyz", "metrics"):
        assert resolve("127.0.0.1:8790", f"/{name}", B).health == name  # before the default bucket
        assert resolve(f"{B}.cos.ap-guangzhou.myqcloud.com", f"/{name}", None).key == name


JOB = "j" + "0" * 32


@pytest.mark.parametrize(
    ("method", "path", "params", "ci_host", "action"),
    [
        ("POST", "/jobs", {}, False, "CreateMediaJobs"),
        ("GET", f"/jobs/{JOB},{JOB}", {}, False, "DescribeMediaJob"),
        ("GET", "/jobs", {"tag": "Transcode"}, False, "DescribeMediaJobs"),
        ("GET", "/jobs", {}, False, None),  # an object named "jobs"
        ("GET", "/jobs/2024/a.mp4", {}, False, None),
        ("PUT", "/jobs/notanid", {}, False, None),
        ("PUT", f"/jobs/{JOB}", {"cancel": ""}, False, "CancelMediaJob"),
        ("GET", "/template/x.json", {}, False, None),
        ("GET", "/queue", {}, False, "DescribeMediaQueues"),
        ("GET", "/whatever", {}, True, "Unknown"),
    ],
)
def test_ci_or_object(
    method: str, path: str, params: dict[str, str], ci_host: bool, action: str | None
) -> None:
    assert ci_action(method, path, params, ci_host=ci_host) == action


@pytest.mark.parametrize(
    "name",
    ["Example-1250000000", "example", "-a-1250000000", "a--1250000000x", "a" * 51 + "-125", "a_b-1250000000"],
)
def test_bad_bucket_names(name: str) -> None:
    with pytest.raises(errors.MediaJobsError) as info:
        check_bucket_name(name)
    assert info.value.code == "InvalidBucketName"


def test_good_bucket_names() -> None:
    for name in [B, "a-1", "my-media-2-1300000000"]:
        check_bucket_name(name)
