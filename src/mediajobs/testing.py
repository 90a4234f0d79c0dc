"""Public test helpers: run a real `mediajobs serve` process and get SDK clients for it.

Users get the same helpers for their own tests, so they are part of the package.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REGION = "ap-guangzhou"
BUCKET = "examplebucket-1250000000"
SECRET_ID = "AKIDmediajobstest0000000000000000"
SECRET_KEY = "mediajobs-test-secret-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    """A `mediajobs serve` child process on 127.0.0.1."""

    data_dir: Path
    port: int
    secret_id: str = SECRET_ID
    secret_key: str = SECRET_KEY
    bucket: str = BUCKET
    region: str = REGION
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    database_url: str = ""  # empty: SQLite in data_dir

    @property
    def scheme(self) -> str:
        return "https" if "--tls-cert" in self.extra_args else "http"

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> ServerProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAJOBS_")}
        env.update(
            {
                "MEDIAJOBS_SECRET_ID": self.secret_id,
                "MEDIAJOBS_SECRET_KEY": self.secret_key,
                "MEDIAJOBS_LOG_LEVEL": "warning",
            }
        )
        env.update(self.env)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir / "serve.log"
        args = [
            sys.executable, "-m", "mediajobs", "serve",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--data-dir", str(self.data_dir), "--bucket", self.bucket,
            *(["--database-url", self.database_url] if self.database_url else []),
            *self.extra_args,
        ]  # fmt: skip
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mediajobs serve exited with {self.proc.returncode}: {self.log()}")
            # The probe only needs an answer: a test's self-signed certificate is fine.
            ctx = ssl._create_unverified_context() if self.scheme == "https" else None
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.endpoint}/healthz", timeout=1, context=ctx) as r,
            ):
                if r.status == 200:
                    return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mediajobs serve did not answer within {timeout}s: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def stop(self, sig: int | None = None) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        if sig is None:
            self.proc.terminate()
        else:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def cos_config(self, **overrides: Any) -> Any:
        from qcloud_cos import CosConfig  # type: ignore[import-untyped]

        kw: dict[str, Any] = {
            "Region": self.region,
            "SecretId": self.secret_id,
            "SecretKey": self.secret_key,
            "IP": "127.0.0.1",
            "Port": self.port,
            "Scheme": "http",
        }
        kw.update(overrides)
        return CosConfig(**{k: v for k, v in kw.items() if v is not None})

    def client(self, **overrides: Any) -> Any:
        """A `qcloud_cos.CosS3Client` pointed at this server the documented way (IP + Port)."""
        from qcloud_cos import CosS3Client

        return CosS3Client(self.cos_config(**overrides), retry=0)


@contextlib.contextmanager
def running_server(
    data_dir: Path, *, args: list[str] | None = None, env: Mapping[str, str] | None = None, **kw: Any
) -> Iterator[ServerProcess]:
    srv = ServerProcess(
        data_dir=data_dir, port=free_port(), extra_args=list(args or []), env=dict(env or {}), **kw
    )
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
