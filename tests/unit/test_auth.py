"""Signature verification against the spec's worked examples (spec/protocol.md 2.6-2.7)."""

from __future__ import annotations

import pytest

from mediajobs import errors
from mediajobs.api.auth import SignedRequest, verify

KEYS = {"AKIDEXAMPLE": "SECRETEXAMPLE"}
NOW = 1700000000
HOST = "examplebucket-1250000000.cos.ap-guangzhou.myqcloud.com"


def auth(sig: str, *, headers: str = "host", params: str = "", window: str = "1699999940;1700010000") -> str:
    return (
        f"q-sign-algorithm=sha1&q-ak=AKIDEXAMPLE&q-sign-time={window}&q-key-time={window}"
        f"&q-header-list={headers}&q-url-param-list={params}&q-signature={sig}"
    )


EXAMPLE_A = SignedRequest(
    "GET",
    "/jobs",
    [
        ("tag", "Transcode"),
        ("orderByTime", "Desc"),
        ("states", "All"),
        ("size", "2"),
        ("nextToken", ""),
        ("queueId", "p2242ab62c7c94486915508540933a2c6"),
        ("startCreationTime", "2022-06-27T15:23:12+0800"),
    ],
    {
        "host": HOST,
        "authorization": auth(
            "112f01b1e4aa05082a70df6319b6e6e6f5b5bf8e",
            params="nexttoken;orderbytime;queueid;size;startcreationtime;states;tag",
        ),
    },
)


def test_example_a_list_jobs() -> None:
    assert verify(EXAMPLE_A, KEYS.get, NOW) == "AKIDEXAMPLE"


def test_example_b_decoded_comma_in_path() -> None:
    req = SignedRequest(
        "GET",
        "/jobs/j8d121820f5e411ec926ef19d53ba9c6f,j9c0a4726f6ac11ec96aaa9b64ab18d00",
        [],
        {"host": HOST, "authorization": auth("e403e626180e675c4c6b44d1b20894d26d2ef9e0")},
    )
    assert verify(req, KEYS.get, NOW) == "AKIDEXAMPLE"


def test_example_c_signed_content_headers() -> None:
    req = SignedRequest(
        "POST",
        "/jobs",
        [],
        {
            "host": HOST,
            "content-type": "application/xml",
            "content-length": "124",
            "authorization": auth(
                "adda3fbbaa88004e221f4eccca269273cf7cf407", headers="content-length;content-type;host"
            ),
        },
    )
    assert verify(req, KEYS.get, NOW) == "AKIDEXAMPLE"


def test_example_d_ci_host() -> None:
    req = SignedRequest(
        "GET",
        "/jobs/j8d121820f5e411ec926ef19d53ba9c6f",
        [],
        {
            "host": "examplebucket-1250000000.ci.ap-guangzhou.myqcloud.com",
            "authorization": auth("1faf4d6425543f26e0d260eebf900b60aabf0eaa", window="1699999940;1700000300"),
        },
    )
    assert verify(req, KEYS.get, NOW) == "AKIDEXAMPLE"


def test_presigned_url_in_query() -> None:
    req = SignedRequest(
        "GET",
        "/input/demo.mp4",
        [
            ("q-sign-algorithm", "sha1"),
            ("q-ak", "AKIDEXAMPLE"),
            ("q-sign-time", "1699999940;1700000300"),
            ("q-key-time", "1699999940;1700000300"),
            ("q-header-list", "host"),
            ("q-url-param-list", ""),
            ("q-signature", "ae32c4c320d393908c77a9df0714aa3f12679b07"),
        ],
        {"host": HOST},
    )
    assert verify(req, KEYS.get, NOW) == "AKIDEXAMPLE"


def test_host_with_port_is_also_tried_without_it() -> None:
    req = SignedRequest(
        "GET",
        "/jobs/j8d121820f5e411ec926ef19d53ba9c6f",
        [],
        {
            "host": "examplebucket-1250000000.ci.ap-guangzhou.myqcloud.com:8790",
            "authorization": auth("1faf4d6425543f26e0d260eebf900b60aabf0eaa", window="1699999940;1700000300"),
        },
    )
    assert verify(req, KEYS.get, NOW) == "AKIDEXAMPLE"


def _with(req: SignedRequest, **headers: str) -> SignedRequest:
    return SignedRequest(req.method, req.path, req.params, {**req.headers, **headers})


@pytest.mark.parametrize(
    ("change", "code", "message"),
    [
        (
            lambda r: _with(r, authorization=r.headers["authorization"].replace("112f", "112e")),
            "SignatureDoesNotMatch",
            None,
        ),
        (
            lambda r: _with(r, authorization=r.headers["authorization"].replace("AKIDEXAMPLE", "AKIDOTHER")),
            "InvalidAccessKeyId",
            None,
        ),
        (lambda r: SignedRequest(r.method, r.path, r.params[1:], r.headers), "SignatureDoesNotMatch", None),
        (
            lambda r: SignedRequest(r.method, r.path, [("tag", "Snapshot"), *r.params[1:]], r.headers),
            "SignatureDoesNotMatch",
            None,
        ),
        (lambda r: SignedRequest("PUT", r.path, r.params, r.headers), "SignatureDoesNotMatch", None),
        (lambda r: _with(r, host="evil.example.com"), "SignatureDoesNotMatch", None),
        (lambda r: SignedRequest(r.method, r.path, r.params, {"host": HOST}), "AccessDenied", None),
        (
            lambda r: _with(r, authorization=r.headers["authorization"].replace("sha1", "md5", 1)),
            "AccessDenied",
            None,
        ),
        (lambda r: _with(r, authorization="q-sign-algorithm=sha1&q-ak=AKIDEXAMPLE"), "AccessDenied", None),
    ],
)
def test_rejections(change, code, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(errors.MediaJobsError) as info:
        verify(change(EXAMPLE_A), KEYS.get, NOW)
    assert info.value.code == code


def test_expired_and_future_signatures() -> None:
    with pytest.raises(errors.MediaJobsError) as info:
        verify(EXAMPLE_A, KEYS.get, 1700010001)
    assert (info.value.code, info.value.message, info.value.http_status) == (
        "AccessDenied",
        "Request has expired",
        403,
    )
    with pytest.raises(errors.MediaJobsError) as info:
        verify(EXAMPLE_A, KEYS.get, 1699999940 - 901)
    assert info.value.code == "RequestTimeTooSkewed"
    # inside the allowed skew the signature is fine
    assert verify(EXAMPLE_A, KEYS.get, 1699999940 - 899) == "AKIDEXAMPLE"
