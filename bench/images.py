#!/usr/bin/env python3
"""Image processing on GET: `mediajobs serve` (`?imageMogr2/...`) against thumbor 7 and pyvips in-process.

Run by hand, not in CI:

    pip install -e '.[test,bench]'
    python bench/images.py              # all parts, about 4 minutes on 2 cores
    python bench/images.py --quick      # smoke run, about a minute
    python bench/images.py --parts a    # only part (a)

(a) a 4000x3000 photo-like JPEG (Q90) thumbnailed to 800 px wide, JPEG quality exactly 85:
    1 and 4 concurrent clients; pyvips in-process with 1 stream and 2 processes;
(b) imgproxy's benchmark workload: a 2048x1365 JPEG fitted into 512x512, JPEG quality 80, 2 clients;
(c) a 1000x1000 PNG to a 400 px wide JPEG (quality: the server's default, 75 on both), 1 and 2 clients.

mediajobs gets pre-signed GET URLs (cos-python-sdk-v5 `get_presigned_url`, the rule signed in as a
query parameter), so authentication stays on; thumbor (installed by this script into its own virtualenv
under bench/.cache) reads the same files through its file loader with storage and result storage off.
Both servers run as child processes on 127.0.0.1 with fresh temporary directories and are stopped at the
end, also on failure or Ctrl-C. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import multiprocessing as mp
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import psutil
except ImportError:  # pragma: no cover - a hint for people running it by hand
    sys.exit("bench/images.py needs psutil: pip install psutil  (or pip install -e '.[bench]')")

import pyvips  # type: ignore[import-untyped]
from common import RssSampler, cpu_summary, log, machine_cpu, mediajobs_revision, on_alarm, on_term

from mediajobs import __version__ as MEDIAJOBS_VERSION
from mediajobs.media.vips import estimate_jpeg_quality
from mediajobs.testing import ServerProcess, free_port

MIB = 1024 * 1024
THUMBOR_VERSION = "7.8.0"
DEFAULT_VENV = Path(__file__).resolve().parent / ".cache" / "thumbor-venv"
SERVER_DEFAULT_QUALITY = 75  # mediajobs's q0 for a source whose quality can't be estimated (a PNG)


# ---- workloads --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    part: str
    title: str
    source: str  # file name, also the object key under img/
    size: tuple[int, int]  # source width, height
    out: tuple[int, int]  # expected output width, height
    quality: int  # expected JPEG quality of the output
    rule: str  # mediajobs imageMogr2 rule
    thumbor: str  # thumbor path before the file name
    pyvips: Callable[[str], bytes]  # the same operation in-process
    pyvips_text: str
    clients: tuple[int, ...]  # concurrent clients for the servers
    streams: tuple[int, ...]  # pyvips processes, paired with `clients` in the table


def _pv_a(path: str) -> bytes:
    return bytes(pyvips.Image.thumbnail(path, 800).jpegsave_buffer(Q=85, optimize_coding=True))


def _pv_b(path: str) -> bytes:
    return bytes(pyvips.Image.thumbnail(path, 512, height=512).jpegsave_buffer(Q=80, optimize_coding=True))


def _pv_c(path: str) -> bytes:
    image = pyvips.Image.thumbnail(path, 400)
    return bytes(image.jpegsave_buffer(Q=SERVER_DEFAULT_QUALITY, optimize_coding=True))


WORKLOADS = {
    "a": Workload(
        "a", "4000x3000 JPEG -> 800 px wide, q85", "photo-4000x3000.jpg", (4000, 3000), (800, 600), 85,
        "imageMogr2/thumbnail/800x/quality/85!", "/unsafe/800x0/filters:quality(85)/",
        _pv_a, "thumbnail(path, 800).jpegsave_buffer(Q=85, optimize_coding=True)",
        (1, 4), (1, 2),
    ),
    "b": Workload(
        "b", "2048x1365 JPEG fit in 512x512, q80 (imgproxy's workload)", "photo-2048x1365.jpg",
        (2048, 1365), (512, 341), 80,
        "imageMogr2/thumbnail/512x512/quality/80!", "/unsafe/fit-in/512x512/filters:quality(80)/",
        _pv_b, "thumbnail(path, 512, height=512).jpegsave_buffer(Q=80, optimize_coding=True)",
        (2,), (2,),
    ),
    "c": Workload(
        "c", "1000x1000 PNG -> 400 px wide JPEG", "graphic-1000x1000.png", (1000, 1000), (400, 400),
        SERVER_DEFAULT_QUALITY,
        "imageMogr2/thumbnail/400x/format/jpg", "/unsafe/400x0/filters:format(jpeg)/",
        _pv_c, "thumbnail(path, 400).jpegsave_buffer(Q=75, optimize_coding=True)",
        (1, 2), (1, 2),
    ),
}  # fmt: skip


# ---- helpers ----------------------------------------------------------------------------------------


def tree(pid: int) -> list[psutil.Process]:
    try:
        top = psutil.Process(pid)
        return [top, *top.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_cpu(pid: int) -> float:
    total = 0.0
    for p in tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


def main_thread_cpu(pid: int) -> float:
    """CPU seconds of the main thread of `pid` (an asyncio server's event loop), NaN if unreadable."""
    try:
        for t in psutil.Process(pid).threads():
            if t.id == pid:
                return float(t.user_time + t.system_time)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass
    return float("nan")


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


# ---- test images ------------------------------------------------------------------------------------


def _noise_field(w: int, h: int, cell: int, sigma: float) -> Any:
    """A smooth random RGB field: Gaussian noise on a coarse grid, upscaled with a cubic kernel."""
    lw, lh = w // cell + 2, h // cell + 2
    bands = [pyvips.Image.gaussnoise(lw, lh, sigma=sigma, mean=0) for _ in range(3)]
    return bands[0].bandjoin(bands[1:]).resize(cell, kernel="cubic").crop(0, 0, w, h)


def photo_like(w: int, h: int, seed: int) -> Any:
    """A landscape-ish picture with the statistics of a photo, so that decoding costs what a photo costs.

    Sky and ground gradients split by a wavy horizon, large soft colour blotches, fine foliage-like
    texture on the ground, a few solid objects and a line of text, a slight blur, a vignette and
    sensor grain. At Q90 a 4000x3000 one is about 3.3 MB, like a 12 MP camera JPEG.
    """
    rnd = random.Random(seed)
    xyz = pyvips.Image.xyz(w, h)
    x, y = xyz[0] / w, xyz[1] / h
    horizon = 0.45 + 0.08 * (x * 720).sin() + 0.04 * (x * 1900 + 40).sin()
    sky = (y * 80 + 90).bandjoin([y * 60 + 140, y * 30 + 210])
    ground = (60 + 50 * (1 - y)).bandjoin([90 + 40 * (1 - y), 40 + 20 * (1 - y)])
    img = (y < horizon).ifthenelse(sky, ground)
    img = img + _noise_field(w, h, max(8, w // 12), 18)
    img = img + _noise_field(w, h, max(4, w // 160), 14) * (y > horizon).ifthenelse(1.6, 0.4)
    img = img.cast("uchar").copy(interpretation="srgb")
    for _ in range(18):
        cx, cy, rad = rnd.randrange(w), rnd.randrange(h // 3, h), rnd.randrange(w // 60, w // 14)
        colour = [rnd.randrange(30, 220) for _ in range(3)]
        if rnd.random() < 0.5:
            img = img.draw_circle(colour, cx, cy, rad, fill=True)
        else:
            img = img.draw_rect(colour, cx, cy, rad * 2, rad * 3, fill=True)
    with contextlib.suppress(pyvips.Error):  # a libvips without text rendering: no caption
        text = pyvips.Image.text("MEDIAJOBS BENCH  ·  Hotel Pano 2048", dpi=max(72, w // 8), font="sans bold")
        img = (text.embed(w // 16, h // 8, w, h) > 128).ifthenelse([245, 240, 225], img)
    img = img.gaussblur(1.0)
    img = img * (1.15 - 0.35 * (((x - 0.5) ** 2 + (y - 0.5) ** 2) ** 0.5))
    img = img + pyvips.Image.gaussnoise(w, h, sigma=5, mean=0)
    return img.cast("uchar").copy(interpretation="srgb")


def make_images(root: Path, parts: str) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for p in parts:
        wl = WORKLOADS[p]
        path = root / wl.source
        image = photo_like(*wl.size, seed=ord(p))
        if path.suffix == ".png":
            image.pngsave(str(path))  # RGB, no alpha: no flattening question between the engines
        else:
            image.jpegsave(str(path), Q=90)
        paths[p] = path
    return paths


# ---- verification -----------------------------------------------------------------------------------


def verify(who: str, wl: Workload, body: bytes) -> str:
    """Decode `body` and check size, format and JPEG quality; returns a one-line description."""
    try:
        img = pyvips.Image.new_from_buffer(body, "")
        loader = str(img.get("vips-loader"))
        img.avg()  # decode every pixel: a truncated or corrupt body fails here
    except pyvips.Error as exc:
        raise RuntimeError(f"{who} ({wl.part}): the response is not a decodable image: {exc}") from exc
    if not loader.startswith("jpeg"):
        raise RuntimeError(f"{who} ({wl.part}): answered {loader}, want a JPEG")
    want_w, want_h = wl.out
    if (img.width, img.height) != (want_w, want_h):
        raise RuntimeError(f"{who} ({wl.part}): answered {img.width}x{img.height}, want {want_w}x{want_h}")
    with tempfile.NamedTemporaryFile(suffix=".jpg") as fh:
        fh.write(body)
        fh.flush()
        q = estimate_jpeg_quality(fh.name)
    if q != wl.quality:
        raise RuntimeError(f"{who} ({wl.part}): JPEG quality {q}, want {wl.quality}")
    progressive = "interlaced" in img.get_fields() and bool(img.get("interlaced"))
    return f"{img.width}x{img.height} JPEG q{q}{' progressive' if progressive else ''}, {len(body):,} bytes"


def cheap_check(status: int, ctype: str, body: bytes) -> str | None:
    """Checks every response gets: why it is wrong, or None."""
    if status != 200:
        return f"HTTP {status}: {body[:200]!r}"
    if not ctype.startswith("image/jpeg"):
        return f"Content-Type {ctype!r}"
    if not (body.startswith(b"\xff\xd8") and body.rstrip(b"\0").endswith(b"\xff\xd9")):
        return "not a complete JPEG (no SOI/EOI marker)"
    return None


# ---- load generation against an HTTP server ---------------------------------------------------------


@dataclass
class Run:
    requests: int
    wall: float
    server_cpu: float  # CPU seconds of the server's process tree
    client_cpu: float  # CPU seconds of this process (the client threads)
    others: float  # cores the rest of the machine kept busy
    latencies: list[float] = field(default_factory=list)
    main_cpu: float = float("nan")  # CPU seconds of the server's main thread (its event loop)

    @property
    def rate(self) -> float:
        return self.requests / self.wall if self.wall > 0 else float("nan")


class Verified:
    """The first response of each (server, workload) is decoded; any later one of another length too."""

    def __init__(self) -> None:
        self.lengths: dict[tuple[str, str], set[int]] = {}
        self.notes: dict[tuple[str, str], str] = {}
        self.lock = threading.Lock()

    def check(self, who: str, wl: Workload, body: bytes) -> None:
        key = (who, wl.part)
        with self.lock:
            if len(body) in self.lengths.get(key, set()):
                return
        note = verify(who, wl, body)
        with self.lock:
            self.lengths.setdefault(key, set()).add(len(body))
            self.notes.setdefault(key, note)


def http_load(
    who: str,
    wl: Workload,
    port: int,
    target: tuple[str, str],
    clients: int,
    seconds: float,
    warmup: int,
    server_pid: int,
    verified: Verified,
    timeout: float,
) -> Run:
    """`clients` threads, each with its own keep-alive connection, GET `target` for `seconds`."""
    errors: list[str] = []
    counts = [0] * clients
    finished = [0.0] * clients
    latencies: list[list[float]] = [[] for _ in range(clients)]
    ready = threading.Barrier(clients + 1)
    go = threading.Event()
    deadline = [0.0]

    def get(conn: http.client.HTTPConnection) -> bytes:
        conn.request("GET", target[1], headers={"Host": target[0]})
        resp = conn.getresponse()
        body = resp.read()
        problem = cheap_check(resp.status, resp.getheader("Content-Type", ""), body)
        if problem:
            raise RuntimeError(f"{who} ({wl.part}) GET {target[1][:80]}...: {problem}")
        return body

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            for _ in range(warmup):
                verified.check(who, wl, get(conn))
            ready.wait()
            go.wait()
            while True:
                t0 = time.perf_counter()
                if t0 >= deadline[0]:
                    break
                body = get(conn)
                t1 = time.perf_counter()
                latencies[i].append(t1 - t0)
                counts[i] += 1
                verified.check(who, wl, body)  # a dict lookup unless the length is new
            finished[i] = time.perf_counter()
        except BaseException as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(threading.BrokenBarrierError):
                ready.abort()
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    try:
        ready.wait(timeout=timeout * max(1, warmup) + 30)
    except threading.BrokenBarrierError:
        for t in threads:
            t.join(timeout)
        raise RuntimeError(f"{who} ({wl.part}) warm-up failed: {errors[:1]}") from None
    others0 = (machine_cpu(), tree_cpu(os.getpid()))
    s0, c0, main0 = tree_cpu(server_pid), time.process_time(), main_thread_cpu(server_pid)
    t0 = time.perf_counter()
    deadline[0] = t0 + seconds
    go.set()
    for t in threads:
        t.join(seconds + timeout + 30)
    if errors:
        raise RuntimeError(errors[0])
    if any(t.is_alive() for t in threads):
        raise RuntimeError(f"{who} ({wl.part}): a client did not finish")
    wall = max(finished) - t0
    server_cpu, client_cpu = tree_cpu(server_pid) - s0, time.process_time() - c0
    main_cpu = main_thread_cpu(server_pid) - main0
    m1, ours1 = machine_cpu(), tree_cpu(os.getpid())
    others = max(0.0, (m1 - others0[0]) - (ours1 - others0[1])) / wall
    lats = [x for lat in latencies for x in lat]
    return Run(sum(counts), wall, server_cpu, client_cpu, others, lats, main_cpu)


# ---- pyvips in-process ------------------------------------------------------------------------------


def _pyvips_worker(part: str, path: str, warmup: int, seconds: float, ready: Any, go: Any, out: Any) -> None:
    """One stream: the workload's operation in a loop, in this (spawned) process."""
    try:
        wl = WORKLOADS[part]
        body = b""
        for _ in range(max(1, warmup)):
            body = wl.pyvips(path)
        out.put(("verify", body))
        ready.set()
        go.wait()
        n, c0, t0 = 0, time.process_time(), time.perf_counter()
        end = t0 + seconds
        while time.perf_counter() < end:
            wl.pyvips(path)
            n += 1
        out.put(("done", (n, t0, time.perf_counter(), time.process_time() - c0)))
    except BaseException as exc:
        ready.set()
        out.put(("error", f"{type(exc).__name__}: {exc}"))


def pyvips_load(
    wl: Workload, path: Path, streams: int, seconds: float, warmup: int, verified: Verified
) -> Run:
    """`streams` processes running the operation directly; requests/s is their total."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    go = ctx.Event()
    readies = [ctx.Event() for _ in range(streams)]
    procs = [
        ctx.Process(target=_pyvips_worker, args=(wl.part, str(path), warmup, seconds, readies[i], go, out))
        for i in range(streams)
    ]
    for p in procs:
        p.start()
    try:
        limit = time.monotonic() + 120
        while not all(r.is_set() for r in readies):
            dead = [p.exitcode for p in procs if p.exitcode is not None]
            if dead or time.monotonic() > limit:
                why = f"exited with {dead[0]}" if dead else "did not get ready in 120 s"
                raise RuntimeError(f"pyvips ({wl.part}): a worker {why}")
            time.sleep(0.02)
        bodies = [out.get(timeout=10) for _ in range(streams)]
        for kind, value in bodies:
            if kind == "error":
                raise RuntimeError(f"pyvips ({wl.part}): {value}")
            verified.check("pyvips", wl, value)
        m0, ours0 = machine_cpu(), tree_cpu(os.getpid())
        go.set()
        results = []
        for _ in range(streams):
            kind, value = out.get(timeout=seconds + 120)
            if kind == "error":
                raise RuntimeError(f"pyvips ({wl.part}): {value}")
            results.append(value)
        m1, ours1 = machine_cpu(), tree_cpu(os.getpid())
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
    n = sum(r[0] for r in results)
    wall = max(r[2] for r in results) - min(r[1] for r in results)
    cpu = sum(r[3] for r in results)
    others = max(0.0, (m1 - m0) - (ours1 - ours0)) / wall
    return Run(n, wall, cpu, 0.0, others)


# ---- RSS sampling -----------------------------------------------------------------------------------


# ---- thumbor ----------------------------------------------------------------------------------------


def ensure_thumbor(venv: Path) -> Path:
    """The `thumbor` script of a virtualenv holding thumbor THUMBOR_VERSION (created on first use).

    thumbor pins its own Pillow, tornado etc., so it gets a virtualenv of its own, not this one.
    """
    exe = venv / "bin" / "thumbor"
    if exe.exists():
        out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
        if f"v{THUMBOR_VERSION}" in out.stdout + out.stderr:
            return exe
        log(f"{venv} holds another thumbor ({(out.stdout + out.stderr).strip()!r}); recreating it")
        shutil.rmtree(venv)
    log(f"creating {venv} and installing thumbor=={THUMBOR_VERSION} (once; about a minute)")
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    res = subprocess.run([*pip, f"thumbor=={THUMBOR_VERSION}"], capture_output=True, text=True)
    if res.returncode != 0 or not exe.exists():
        shutil.rmtree(venv, ignore_errors=True)
        sys.exit(f"installing thumbor failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return exe


def thumbor_versions(exe: Path) -> str:
    py = exe.parent / "python"
    code = "import PIL, tornado; print(f'Pillow {PIL.__version__}, tornado {tornado.version}')"
    out = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=60)
    return f"thumbor {THUMBOR_VERSION} ({out.stdout.strip() or 'versions unknown'})"


THUMBOR_CONF = """\
# Written by bench/images.py. Everything not set here is thumbor's default.
LOADER = "thumbor.loaders.file_loader"
FILE_LOADER_ROOT_PATH = {images!r}
STORAGE = "thumbor.storages.no_storage"   # no cache of originals
RESULT_STORAGE = None                     # no result cache (the default; said out loud)
ALLOW_UNSAFE_URL = True
SECURITY_KEY = "mediajobs-bench"
ENGINE = "thumbor.engines.pil"            # the default engine
ENGINE_THREADPOOL_SIZE = {threads}        # default 0: the engine runs on the IO loop
QUALITY = {quality}                       # the quality when the URL names none (default 80)
PROGRESSIVE_JPEG = False                  # default True; mediajobs writes baseline JPEG
RESPECT_ORIENTATION = False
AUTO_WEBP = False
"""


@dataclass
class Thumbor:
    exe: Path
    root: Path
    images: Path
    threads: int
    processes: int = 1
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        conf = self.root / "thumbor.conf"
        conf.write_text(
            THUMBOR_CONF.format(images=str(self.images), threads=self.threads, quality=SERVER_DEFAULT_QUALITY)
        )
        self.port = free_port()
        args = [
            str(self.exe), "--ip", "127.0.0.1", "--port", str(self.port), "--conf", str(conf),
            "--processes", str(self.processes), "--log-level", "warning",
        ]  # fmt: skip
        out = open(self.root / "thumbor.out", "wb")  # noqa: SIM115 - handed to the child
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        self.proc = subprocess.Popen(args, cwd=self.root, stdout=out, stderr=subprocess.STDOUT, env=env)
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"thumbor exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/healthcheck")
                if conn.getresponse().status == 200:
                    conn.close()
                    return
                conn.close()
            time.sleep(0.1)
        raise RuntimeError(f"thumbor did not answer within {timeout}s:\n{self.log_tail()}")

    def log_tail(self, n: int = 30) -> str:
        path = self.root / "thumbor.out"
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""

    def stop(self) -> None:
        if self.proc is None:
            return
        reap(tree(self.proc.pid))
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


# ---- mediajobs --------------------------------------------------------------------------------------


def presigned_target(srv: ServerProcess, key: str, rule: str) -> tuple[str, str]:
    """(Host, path and query) of a pre-signed GET URL with the rule signed in, made once and reused.

    The SDK is configured with IP + Port (as testing.ServerProcess does), so the URL names 127.0.0.1;
    like the SDK's own requests, ours carry the bucket's host name in Host, which names the bucket. So
    the host is left out of the signature (SignHost=False): the SDK would sign 127.0.0.1:port.
    """
    client = srv.client()
    url = client.get_presigned_url(
        Bucket=srv.bucket, Key=key, Method="GET", Expired=24 * 3600, Params={rule: ""}, SignHost=False
    )
    parts = urllib.parse.urlsplit(url)
    return client._conf.get_host(Bucket=srv.bucket), f"{parts.path}?{parts.query}"


# ---- report -----------------------------------------------------------------------------------------


def fmt(v: float, digits: int = 1) -> str:
    return "-" if v != v else f"{v:,.{digits}f}"


def ratio(a: float, b: float) -> float:
    return a / b if b and a == a and b == b else float("nan")


def print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(r: tuple[str, ...]) -> str:
        cells = (c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))
        return "| " + " | ".join(cells) + " |"

    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


# ---- main -------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="abc", help="which parts to run: any of a, b, c (default abc)")
    ap.add_argument("--quick", action="store_true", help="smoke run: short runs, one repeat (~1 minute)")
    ap.add_argument("--seconds", type=float, help="length of each timed run (default 4; --quick 1.5)")
    ap.add_argument("--repeats", type=int, help="runs of each figure, interleaved (default 3; --quick 1)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed requests per client first (default 2)")
    ap.add_argument(
        "--pick",
        choices=["best", "median"],
        default="median",
        help="which run the table shows (default median)",
    )
    ap.add_argument(
        "--thumbor-venv",
        type=Path,
        default=DEFAULT_VENV,
        help=f"thumbor's virtualenv (default {DEFAULT_VENV})",
    )
    ap.add_argument(
        "--thumbor-threads",
        type=int,
        default=os.cpu_count() or 1,
        help="thumbor ENGINE_THREADPOOL_SIZE (default: the core count; thumbor's own default is 0)",
    )
    ap.add_argument(
        "--processes",
        type=int,
        default=os.cpu_count() or 1,
        help="image processes of mediajobs (--image-workers) and thumbor (--processes); default: the core count",
    )
    ap.add_argument("--no-thumbor", action="store_true", help="skip thumbor (no install, no columns)")
    ap.add_argument("--rss-interval-ms", type=float, default=20.0, help="RSS sampling period (default 20)")
    ap.add_argument("--timeout", type=float, default=60.0, help="per-request client timeout in seconds")
    ap.add_argument("--max-seconds", type=int, default=900, help="abort the whole run after this long")
    ap.add_argument(
        "--keep", action="store_true", help="keep the temp dir (server logs, images) for inspection"
    )
    ns = ap.parse_args(argv)
    ns.parts = "".join(p for p in "abc" if p in ns.parts.lower())
    if not ns.parts:
        ap.error("--parts needs at least one of a, b, c")
    ns.seconds = ns.seconds if ns.seconds is not None else (1.5 if ns.quick else 4.0)
    ns.repeats = ns.repeats if ns.repeats is not None else (1 if ns.quick else 3)
    if ns.seconds <= 0 or ns.repeats < 1 or ns.warmup < 1 or ns.thumbor_threads < 0:
        ap.error("--seconds must be > 0, --repeats and --warmup >= 1, --thumbor-threads >= 0")
    return ns


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(ns.max_seconds)
    exe = None if ns.no_thumbor else ensure_thumbor(ns.thumbor_venv)
    root = Path(tempfile.mkdtemp(prefix="mediajobs-bench-images-"))
    # --workers 0: a GET with a rule is processed by the API node's image processes; idle job workers
    # would only add RSS and polling to the figures.
    srv = ServerProcess(
        data_dir=root / "mediajobs",
        port=free_port(),
        extra_args=["--workers", "0", "--image-workers", str(ns.processes)],
    )
    th = (
        None
        if exe is None
        else Thumbor(exe, root / "thumbor", root / "images", ns.thumbor_threads, ns.processes)
    )
    try:
        return run(ns, root, srv, th)
    finally:
        signal.alarm(0)
        children: list[psutil.Process] = []
        with contextlib.suppress(Exception):
            if srv.proc is not None:
                children = psutil.Process(srv.proc.pid).children(recursive=True)
        with contextlib.suppress(Exception):
            srv.stop()
        reap(children)
        if th is not None:
            with contextlib.suppress(Exception):
                th.stop()
        if ns.keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def run(ns: argparse.Namespace, root: Path, srv: ServerProcess, th: Thumbor | None) -> int:
    log(f"temp dir {root}; generating the test images")
    images = make_images(root / "images", ns.parts)
    for p, path in images.items():
        log(f"  ({p}) {path.name}: {path.stat().st_size / MIB:.2f} MiB")

    log(
        f"starting mediajobs {MEDIAJOBS_VERSION} on 127.0.0.1:{srv.port} "
        f"(--workers 0, --image-workers {ns.processes}, auth on)"
    )
    srv.start(timeout=60)
    assert srv.proc is not None
    mj_pid = srv.proc.pid
    cos = srv.client()
    targets: dict[tuple[str, str], tuple[str, str]] = {}
    for p, path in images.items():
        wl = WORKLOADS[p]
        cos.upload_file(Bucket=srv.bucket, Key=f"img/{wl.source}", LocalFilePath=str(path))
        targets[("mediajobs", p)] = presigned_target(srv, f"img/{wl.source}", wl.rule)
    th_version = "thumbor skipped (--no-thumbor)"
    if th is not None:
        th_version = thumbor_versions(th.exe)
        log(f"starting {th_version}: --processes {th.processes}, ENGINE_THREADPOOL_SIZE {th.threads}")
        th.start()
        for p in images:
            wl = WORKLOADS[p]
            targets[("thumbor", p)] = (f"127.0.0.1:{th.port}", wl.thumbor + wl.source)

    idle_rss = RssSampler(mj_pid, 0).sample()[0]
    th_idle_rss = RssSampler(th.proc.pid, 0).sample()[0] if th is not None and th.proc else 0
    mj_peak = th_peak = 0
    mj_procs = 1
    interval = ns.rss_interval_ms / 1000.0
    verified = Verified()
    runs: dict[tuple[str, str, int], list[Run]] = {}
    load0, m0, t_start = os.getloadavg(), machine_cpu(), time.perf_counter()
    ours0 = tree_cpu(os.getpid())

    def one(who: str, wl: Workload, n: int, rep: int) -> None:
        nonlocal mj_peak, th_peak, mj_procs
        if who == "pyvips":
            r = pyvips_load(wl, images[wl.part], n, ns.seconds, ns.warmup, verified)
        else:
            pid = mj_pid if who == "mediajobs" else th.proc.pid  # type: ignore[union-attr]
            port = srv.port if who == "mediajobs" else th.port  # type: ignore[union-attr]
            with RssSampler(pid, interval) as sampler:
                r = http_load(
                    who,
                    wl,
                    port,
                    targets[(who, wl.part)],
                    n,
                    ns.seconds,
                    ns.warmup,
                    pid,
                    verified,
                    ns.timeout,
                )
            if who == "mediajobs":
                mj_peak, mj_procs = max(mj_peak, sampler.peak), max(mj_procs, sampler.max_procs)
            else:
                th_peak = max(th_peak, sampler.peak)
        runs.setdefault((who, wl.part, n), []).append(r)
        unit = ("stream" if who == "pyvips" else "client") + ("s" if n != 1 else "")
        lat = f", mean latency {statistics.mean(r.latencies) * 1000:6.1f} ms" if r.latencies else ""
        log(
            f"run {rep + 1}: ({wl.part}) {who:9} {n} {unit}: {r.rate:6.2f} req/s{lat}  "
            f"(server CPU {r.server_cpu / max(1, r.requests) * 1000:5.1f} ms/req, "
            f"client CPU {r.client_cpu / r.wall:.2f} cores, rest of machine {r.others:.2f} cores)"
        )

    whos = ["mediajobs", *(["thumbor"] if th is not None else [])]
    # Interleaved per repeat, so drift on the machine hits every contender alike.
    for rep in range(ns.repeats):
        for p in ns.parts:
            wl = WORKLOADS[p]
            for n, streams in zip(wl.clients, wl.streams, strict=True):
                for who in whos:
                    one(who, wl, n, rep)
                if ("pyvips", p, streams) not in runs or len(runs[("pyvips", p, streams)]) <= rep:
                    one("pyvips", wl, streams, rep)
    wall = time.perf_counter() - t_start
    others_all = max(0.0, (machine_cpu() - m0) - (tree_cpu(os.getpid()) - ours0)) / wall
    load1 = os.getloadavg()

    def pick(key: tuple[str, str, int]) -> Run | None:
        rs = runs.get(key)
        if not rs:
            return None
        if ns.pick == "best":
            return max(rs, key=lambda r: r.rate)
        return sorted(rs, key=lambda r: r.rate)[(len(rs) - 1) // 2]

    def rate(key: tuple[str, str, int]) -> float:
        r = pick(key)
        return r.rate if r else float("nan")

    print()
    print(
        f"Results: {ns.pick} of {ns.repeats} run(s) of {ns.seconds:g} s per figure, requests/s (higher is "
        f"better); every contender warmed up first; runs interleaved."
    )
    header = ("figure", "clients", "mediajobs", "thumbor", "pyvips (streams)", "mj/pyvips", "mj/thumbor")
    rows: list[tuple[str, ...]] = []
    for p in ns.parts:
        wl = WORKLOADS[p]
        for n, streams in zip(wl.clients, wl.streams, strict=True):
            mj, thr, pv = rate(("mediajobs", p, n)), rate(("thumbor", p, n)), rate(("pyvips", p, streams))
            r_pv, r_th = ratio(mj, pv), ratio(mj, thr)
            pv_target = 0.9 if (p, n, streams) == ("a", 1, 1) else None
            th_target = 1.3 if p == "b" else 1.0
            pv_mark = "" if pv_target is None or r_pv != r_pv else (" ok" if r_pv >= pv_target else " LOW")
            th_mark = "" if r_th != r_th else (" ok" if r_th >= th_target and r_th > 1.0 else " LOW")
            rows.append(
                (
                    f"({p}) {wl.title}",
                    str(n),
                    fmt(mj),
                    fmt(thr),
                    f"{fmt(pv)} ({streams})",
                    fmt(r_pv, 2) + pv_mark,
                    fmt(r_th, 2) + th_mark,
                )
            )
    print_table(header, rows)
    print()
    print("Targets: mj/pyvips >= 0.9 on (a) 1 client vs 1 stream; mj/thumbor > 1 everywhere, >= 1.3 on (b).")
    print()
    print(
        "Detail (all runs' req/s; for the picked run: CPU per request, of it the server's main thread (the "
        "event loop; the rest is its worker and libvips threads), client CPU, latency p50/p99):"
    )
    for p in ns.parts:
        wl = WORKLOADS[p]
        for n, streams in zip(wl.clients, wl.streams, strict=True):
            for who, k in (("mediajobs", n), ("thumbor", n), ("pyvips", streams)):
                r = pick((who, p, k))
                if r is None:
                    continue
                rates = ", ".join(fmt(x.rate) for x in runs[(who, p, k)])
                per = r.server_cpu / max(1, r.requests) * 1000
                if who == "pyvips":
                    extra = "in-process"
                else:
                    loop = r.main_cpu / max(1, r.requests) * 1000
                    extra = (
                        f"main thread {fmt(loop, 2)} ms/req; client {r.client_cpu / r.wall:.2f} cores; latency "
                        f"p50 {percentile(r.latencies, 0.5) * 1000:.1f} / p99 {percentile(r.latencies, 0.99) * 1000:.1f} ms"
                    )
                unit = ("stream" if who == "pyvips" else "client") + ("s" if k != 1 else "")
                print(f"  ({p}) {who:9} {k} {unit:7}: {rates:20} CPU {per:5.1f} ms/req; {extra}")
    # What the server adds per request over the library, from the 1-client figures.
    overhead = []
    for p in ns.parts:
        mj, pv = pick(("mediajobs", p, 1)), pick(("pyvips", p, 1))
        if mj and pv and mj.latencies and pv.requests:
            lat = statistics.mean(mj.latencies) * 1000
            op = pv.wall / pv.requests * 1000
            overhead.append(f"({p}) {lat:.1f} ms per request vs {op:.1f} ms in-process: {lat - op:+.1f} ms")
    if overhead:
        print("mediajobs, 1 client, mean latency against the in-process operation: " + "; ".join(overhead))
    print()
    print("Verified (decoded once per contender and part, and again whenever a response's length changed):")
    for (who, p), note in sorted(verified.notes.items()):
        sizes = sorted(verified.lengths[(who, p)])
        print(f"  ({p}) {who:9} {note}" + (f" (lengths seen: {sizes})" if len(sizes) > 1 else ""))
    print("  Every response: HTTP 200, Content-Type image/jpeg, starts with SOI and ends with EOI.")
    print()
    print(
        f"Peak RSS of the `mediajobs serve` process tree ({mj_procs} process(es)) during its runs "
        f"(sampled every {ns.rss_interval_ms:g} ms): {mj_peak / MIB:.1f} MiB (idle before "
        f"{idle_rss / MIB:.1f} MiB)"
        + (f"; thumbor: {th_peak / MIB:.1f} MiB (idle {th_idle_rss / MIB:.1f} MiB)" if th is not None else "")
    )
    busy = [(f"({p}) {who} {n}", r.others) for (who, p, n), rs in runs.items() for r in rs]
    worst = max(busy, key=lambda x: x[1]) if busy else ("-", 0.0)
    print(
        f"Machine: {cpu_summary()}; load average {load0[0]:.2f} at start, {load1[0]:.2f} at end; the rest "
        f"of the machine kept {others_all:.2f} cores busy over the whole run (worst run: {worst[0]}, "
        f"{worst[1]:.2f} cores)."
    )
    if others_all > 0.2 or worst[1] > 0.3:
        print(
            "WARNING: other processes used the CPU while this ran; the figures are skewed. Rerun on an idle machine."
        )
    print(
        f"Versions: Python {sys.version.split()[0]}; mediajobs {mediajobs_revision()}; libvips "
        f"{pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)} (pyvips {pyvips.__version__}); {th_version}"
    )
    print(
        f"Setup: mediajobs `serve --workers 0 --image-workers {ns.processes}` (a GET with a rule runs in one of "
        "the API node's image processes, libvips threads inside), pre-signed URLs reused (auth on), objects > "
        f"64 KiB stored as files; thumbor --processes {ns.processes} (as many as mediajobs uses for this path), "
        f"ENGINE_THREADPOOL_SIZE {ns.thumbor_threads}, "
        "file loader, no storage, no result storage, PROGRESSIVE_JPEG False, QUALITY 75; no result cache "
        "anywhere. Clients: threads in this process, one keep-alive http.client connection each. "
        "pyvips: spawned processes each looping the operation (" + "; ".join(
            f"({p}) {WORKLOADS[p].pyvips_text}" for p in ns.parts
        ) + ")."
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
