"""Test helpers: signed raw requests (for what the SDKs refuse to send) and media-free payloads."""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
from typing import Any
from urllib.parse import quote, urlencode

import requests
from qcloud_cos.cos_auth import CosS3Auth
from requests.structures import CaseInsensitiveDict

from mediajobs.testing import ServerProcess


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def file_md5(path: str | os.PathLike[str]) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def bucket_host(server: ServerProcess, bucket: str | None = None) -> str:
    return f"{bucket or server.bucket}.cos.{server.region}.myqcloud.com"


def sign(server: ServerProcess, method: str, key: str, headers: dict[str, str], params: dict[str, str] | None = None,
         **conf: Any) -> str:  # fmt: skip
    """The Authorization header the Python SDK would compute for this request."""
    prepared = requests.Request(method, server.endpoint + "/", headers=headers).prepare()
    prepared.headers = CaseInsensitiveDict(headers)  # exactly the headers that will be sent
    CosS3Auth(server.cos_config(**conf), key=key, params=params or {})(prepared)
    return str(prepared.headers["Authorization"])


def raw_request(
    server: ServerProcess,
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    body: bytes | None = None,
    signed: bool = True,
    sign_path: str | None = None,
    host: str | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """Send `path` exactly as given (no dot-segment clean-up), optionally signed like the SDK signs."""
    hs = {"Host": host or bucket_host(server), **(headers or {})}
    if body is not None:
        hs.setdefault("Content-Length", str(len(body)))
    if signed:
        key = sign_path if sign_path is not None else path
        hs["Authorization"] = sign(server, method, key, hs, params)
    target = quote(path, safe="/-_.~%") + ("?" + urlencode(params) if params else "")
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(method, target, body=body, headers=hs)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def read_reply(sock: socket.socket) -> bytes:
    """One whole HTTP response (headers and a Content-Length body) from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def create_job(cos: Any, bucket: str, tag: str, key: str, op: dict[str, Any]) -> str:
    """Create one media job through the SDK; its JobId."""
    r = cos.ci_create_media_jobs(
        Bucket=bucket, Jobs={"Tag": tag, "Input": {"Object": key}, "Operation": op}, Lst={},
        ContentType="application/xml",
    )  # fmt: skip
    return str(r["JobsDetail"][0]["JobId"])


def wait_job(
    cos: Any, bucket: str, job_id: str, states: tuple[str, ...] = ("Success", "Failed"), timeout: float = 90
) -> dict[str, Any]:
    """Poll a media job until it reaches one of `states` (fails the test at the deadline)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        d: dict[str, Any] = cos.ci_get_media_jobs(Bucket=bucket, JobIDs=job_id)["JobsDetail"][0]
        if d["State"] in states:
            return d
        assert time.monotonic() < deadline, d
        time.sleep(0.05)
