"""The server process itself: start-up, credentials, TLS, routing styles, header spelling, crashes."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests
from qcloud_cos import CosS3Client
from qcloud_cos.cos_exception import CosServiceError

from mediajobs.testing import BUCKET, ServerProcess, free_port, running_server
from tests.helpers import bucket_host, raw_request, read_reply


def test_generated_credentials_persist_across_restarts(tmp_path: Path) -> None:
    def start() -> tuple[subprocess.Popen[str], str]:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAJOBS_")}
        proc = subprocess.Popen(
            ["mediajobs", "serve", "--port", str(port), "--data-dir", str(tmp_path / "d"), "--bucket", BUCKET],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "SecretKey=" in line:
                return proc, line
        proc.kill()
        raise AssertionError("".join(lines))

    proc, first = start()
    proc.terminate()
    proc.wait(10)
    assert "generated" in first
    proc, second = start()
    try:
        sid = re.search(r"SecretId=(\S+)", second)
        key = re.search(r"SecretKey=(\S+)", second)
        assert sid and key and re.search(r"SecretId=(\S+)", first)[1] == sid[1]  # type: ignore[index]
    finally:
        proc.terminate()
        proc.wait(10)


def test_credentials_file_and_sts_token(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.write_text("# team keys\nAKIDalice alicekey\nAKIDbob   bobkey  # second\n")
    with running_server(tmp_path / "d", args=["--credentials-file", str(creds)]) as srv:
        for sid, key in (("AKIDalice", "alicekey"), ("AKIDbob", "bobkey")):
            c = srv.client(SecretId=sid, SecretKey=key)
            c.put_object(Bucket=srv.bucket, Key=f"{sid}.txt", Body=sid.encode())
        # The env pair is accepted too, and a temporary token is verified with its SecretId's key.
        sts = srv.client(Token="temporary-session-token")
        assert (
            sts.get_object(Bucket=srv.bucket, Key="AKIDbob.txt")["Body"].get_raw_stream().read() == b"AKIDbob"
        )
        with pytest.raises(CosServiceError) as exc:
            srv.client(SecretId="AKIDalice", SecretKey="bobkey").get_object(
                Bucket=srv.bucket, Key="AKIDbob.txt"
            )
        assert exc.value.get_error_code() == "SignatureDoesNotMatch"


def test_no_auth_and_path_style(tmp_path: Path) -> None:
    with running_server(tmp_path / "d", args=["--no-auth"]) as srv:
        url = f"{srv.endpoint}/{srv.bucket}/path/style.txt"
        assert requests.put(url, data=b"unsigned", timeout=10).status_code == 200
        r = requests.get(url, timeout=10)
        assert r.status_code == 200 and r.content == b"unsigned"
        listing = requests.get(f"{srv.endpoint}/{srv.bucket}/", params={"prefix": "path/"}, timeout=10)
        assert "<Key>path/style.txt</Key>" in listing.text
        assert f"<Name>{srv.bucket}</Name>" in requests.get(srv.endpoint + "/", timeout=10).text
        r = requests.get(f"{srv.endpoint}/not-a-bucket-name/x", timeout=10)
        assert r.status_code == 404 and "<Code>NoSuchBucket</Code>" in r.text


def test_config_file_and_environment(tmp_path: Path) -> None:
    conf = tmp_path / "mediajobs.toml"
    conf.write_text('[mediajobs]\nregion = "ap-beijing"\nmax-object-size = 1000\n')
    with running_server(
        tmp_path / "d", env={"MEDIAJOBS_CONFIG": str(conf), "MEDIAJOBS_REGION": "ap-chengdu"}
    ) as srv:
        c = srv.client()
        assert c.head_bucket(Bucket=srv.bucket)["x-cos-bucket-region"] == "ap-chengdu"  # env beats the file
        with pytest.raises(CosServiceError) as exc:
            c.put_object(Bucket=srv.bucket, Key="big", Body=b"x" * 1001)  # the file's limit applies
        assert exc.value.get_error_code() == "EntityTooLarge"


def test_tls(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    with running_server(tmp_path / "d", args=["--tls-cert", str(cert), "--tls-key", str(key)]) as srv:
        c = srv.client(Scheme="https", VerifySSL=str(cert))
        c.put_object(Bucket=srv.bucket, Key="secure.txt", Body=b"over tls")
        assert (
            c.get_object(Bucket=srv.bucket, Key="secure.txt")["Body"].get_raw_stream().read() == b"over tls"
        )


def test_header_names_are_spelled_as_cos_spells_them(server: ServerProcess, cos: CosS3Client) -> None:
    cos.put_object(Bucket=server.bucket, Key="spelling.txt", Body=b"abc", Metadata={"x-cos-meta-k": "v"})
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(f"HEAD /spelling.txt HTTP/1.1\r\nHost: {bucket_host(server)}\r\n\r\n".encode())
        head = read_reply(s).decode()
    # unsigned: an error, but the common headers are there with their spelling
    assert "x-cos-request-id: " in head and "\r\nServer: tencent-cos" in head and "\r\nDate: " in head
    status, headers, _ = raw_request(server, "GET", "/spelling.txt")
    assert status == 200
    for name in ("Content-Type", "Content-Length", "ETag", "Last-Modified", "Accept-Ranges",
                 "x-cos-hash-crc64ecma", "x-cos-request-id", "x-cos-meta-k", "Server", "Date"):  # fmt: skip
        assert name in headers, (name, list(headers))


def test_crash_mid_upload_keeps_the_previous_version(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    with running_server(data_dir) as srv:
        c = srv.client()
        v1 = os.urandom(100_000)  # above the inline limit: a file-backed object
        c.put_object(Bucket=srv.bucket, Key="video.mp4", Body=v1)
        c.put_object(Bucket=srv.bucket, Key="small.txt", Body=b"kept in its row")
        # Start an overwrite that sends half its body, then kill the server hard.
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        hs = {"Host": bucket_host(srv), "Content-Length": str(8 * 1024 * 1024)}
        from tests.helpers import sign

        hs["Authorization"] = sign(srv, "PUT", "/video.mp4", hs)
        s.sendall(
            b"PUT /video.mp4 HTTP/1.1\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in hs.items()).encode()
            + b"\r\n"
        )
        s.sendall(os.urandom(4 * 1024 * 1024))
        time.sleep(0.3)  # let the server write some of it to its temporary file
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait(10)
        s.close()
        srv.start()
        got = c.get_object(Bucket=srv.bucket, Key="video.mp4")
        assert got["Body"].get_raw_stream().read() == v1
        assert [o["Key"] for o in c.list_objects(Bucket=srv.bucket)["Contents"]] == ["small.txt", "video.mp4"]
        blobs = [p for p in (data_dir / "blobs").rglob("*") if p.is_file()]
        assert len(blobs) == 1  # version one; the half-written upload never became a blob


def test_chunked_upload_without_content_length(server: ServerProcess, cos: CosS3Client) -> None:
    from tests.helpers import sign

    parts = [os.urandom(300_000) for _ in range(4)]
    headers = {"Host": bucket_host(server), "Transfer-Encoding": "chunked"}
    headers["Authorization"] = sign(server, "PUT", "/chunked.bin", headers)
    r = requests.put(f"{server.endpoint}/chunked.bin", data=iter(parts), headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    got = cos.get_object(Bucket=server.bucket, Key="chunked.bin")["Body"].get_raw_stream().read()
    assert got == b"".join(parts)
    # neither a length nor chunked framing: 411
    hs = {"Host": bucket_host(server)}
    hs["Authorization"] = sign(server, "PUT", "/nolength.bin", hs)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(
            b"PUT /nolength.bin HTTP/1.1\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in hs.items()).encode()
            + b"\r\n"
        )
        reply = read_reply(s)
    assert reply.startswith(b"HTTP/1.1 411") and b"<Code>MissingContentLength</Code>" in reply
