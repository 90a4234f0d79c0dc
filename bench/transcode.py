"""Job overhead over FFmpeg itself: each job submitted through the SDK and polled every 10 ms,
beside the same FFmpeg command run directly in the same run (issue 5's figures).

    python bench/transcode.py [--runs 3]

(a) Transcode of a 10 s 1080p30 H.264+AAC file to 720p H.264 (crf 23, veryfast) + AAC 128k;
(b) Snapshot of one frame at 5 s, beside `ffmpeg -ss 5 -i in -frames:v 1 -q:v 2 out.jpg`;
(c) a 5 s GIF at 480 px wide and 10 fps (the Animation processor's own command as the baseline);
(d) two Transcode jobs at once (two workers) beside two FFmpeg runs at once.
The direct runs use the exact argument list the processor builds (for (a) and (d)), so the
ratio is the job system's cost: HTTP, queueing, probing, storing the output, polling.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mediajobs.media.ffmpeg import ffmpeg_exe
from mediajobs.media.probe import probe
from mediajobs.media.samples import make_video
from mediajobs.processors.transcode import build_args, parse_transcode
from mediajobs.testing import running_server

POLL = 0.010
TRANSCODE = {
    "Container": {"Format": "mp4"},
    "Video": {"Codec": "H.264", "Width": "1280", "Height": "720", "Crf": "23", "Preset": "veryfast"},
    "Audio": {"Codec": "aac", "Bitrate": "128"},
}


# 10 frames taken per second (AnimateFramesPerSecond) and played at 10 fps (Fps): a 5 s GIF.
GIF = {
    "Container": {"Format": "gif"},
    "Video": {"Codec": "gif", "Width": "480", "Fps": "10", "AnimateFramesPerSecond": "10"},
    "TimeInterval": {"Start": "0", "Duration": "5"},
}


def gif_args(src: Path, dst: Path) -> list[str]:
    """The exact command the Animation processor builds for GIF."""
    from mediajobs.processors import animation

    op = ET.fromstring(
        "<Operation><Animation><Container><Format>gif</Format></Container><Video><Codec>gif</Codec>"
        "<Width>480</Width><Fps>10</Fps><AnimateFramesPerSecond>10</AnimateFramesPerSecond></Video>"
        "<TimeInterval><Start>0</Start><Duration>5</Duration></TimeInterval></Animation></Operation>"
    )
    spec = animation.parse_animation(op)
    info = probe(src)
    return animation.build_args(spec, animation.make_plan(spec, info), info, src, dst)


def ffmpeg(args: list[str]) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", *args], check=True)


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def job(cos: Any, bucket: str, tag: str, op: dict[str, Any]) -> None:
    r = cos.ci_create_media_jobs(
        Bucket=bucket, Jobs={"Tag": tag, "Input": {"Object": "in/src.mp4"}, "Operation": op}, Lst={},
        ContentType="application/xml",
    )  # fmt: skip
    jid = r["JobsDetail"][0]["JobId"]
    while True:
        d = cos.ci_get_media_jobs(Bucket=bucket, JobIDs=jid)["JobsDetail"][0]
        if d["State"] == "Success":
            return
        if d["State"] in ("Failed", "Cancel"):
            raise RuntimeError(f"{tag} job ended {d['State']}: {d.get('Code')} {d.get('Message')}")
        time.sleep(POLL)


def output(bucket: str, key: str) -> dict[str, str]:
    return {"Region": "ap-guangzhou", "Bucket": bucket, "Object": key}


def transcode_args(src: Path, dst: Path) -> list[str]:
    op = ET.fromstring(
        "<Operation><Transcode><Container><Format>mp4</Format></Container><Video><Codec>H.264</Codec>"
        "<Width>1280</Width><Height>720</Height><Crf>23</Crf><Preset>veryfast</Preset></Video>"
        "<Audio><Codec>aac</Codec><Bitrate>128</Bitrate></Audio></Transcode></Operation>"
    )
    return build_args(parse_transcode(op), probe(src), src, dst)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="runs per figure (the median is reported)")
    ns = ap.parse_args()
    rows: list[tuple[str, float, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="mediajobs-bench-transcode-") as tmp:
        d = Path(tmp)
        src = make_video(d / "src.mp4", seconds=10.0, width=1920, height=1080, fps=30)
        print(
            f"input: {src.stat().st_size / 1e6:.1f} MB, 10 s 1920x1080 30 fps H.264 + AAC; {os.cpu_count()} cores"
        )
        with running_server(d / "data", args=["--workers", "2"]) as srv:
            cos = srv.client()
            b = srv.bucket
            cos.upload_file(Bucket=b, Key="in/src.mp4", LocalFilePath=str(src))
            figures: list[tuple[str, Callable[[], Any], Callable[[], Any], float]] = [
                (
                    "(a) Transcode 1080p -> 720p",
                    lambda: job(
                        cos, b, "Transcode", {"Transcode": TRANSCODE, "Output": output(b, "out/a.mp4")}
                    ),
                    lambda: ffmpeg(transcode_args(src, d / "a.mp4")),
                    1.05,
                ),
            ]
            has_snapshot = "Snapshot" in _tags()
            has_animation = "Animation" in _tags()
            if has_snapshot:
                figures.append(
                    (
                        "(b) Snapshot at 5 s",
                        lambda: job(
                            cos,
                            b,
                            "Snapshot",
                            {
                                "Snapshot": {"Mode": "Interval", "Start": "5", "Count": "1"},
                                "Output": output(b, "out/snap-${Number}.jpg"),
                            },
                        ),
                        lambda: ffmpeg(
                            [
                                "-ss",
                                "5",
                                "-i",
                                str(src),
                                "-frames:v",
                                "1",
                                "-q:v",
                                "2",
                                "-y",
                                str(d / "s.jpg"),
                            ]
                        ),
                        1.2,
                    )
                )
            if has_animation:
                figures.append(
                    (
                        "(c) 5 s GIF, 480 px, 10 fps",
                        lambda: job(
                            cos, b, "Animation", {"Animation": GIF, "Output": output(b, "out/c.gif")}
                        ),
                        lambda: ffmpeg(gif_args(src, d / "c.gif")),
                        1.1,
                    )
                )

            def two_jobs() -> None:
                ts = [
                    threading.Thread(target=job, args=(cos, b, "Transcode", {"Transcode": TRANSCODE, "Output": output(b, f"out/d{i}.mp4")}))
                    for i in range(2)
                ]  # fmt: skip
                for t in ts:
                    t.start()
                for t in ts:
                    t.join()

            def two_ffmpeg() -> None:
                ps = [
                    subprocess.Popen(
                        [
                            ffmpeg_exe(),
                            "-hide_banner",
                            "-nostdin",
                            "-loglevel",
                            "error",
                            *transcode_args(src, d / f"d{i}.mp4"),
                        ]
                    )
                    for i in range(2)
                ]
                for p in ps:
                    if p.wait() != 0:
                        raise RuntimeError("ffmpeg failed")

            figures.append(("(d) two Transcodes at once", two_jobs, two_ffmpeg, 1.05))
            for name, via_job, direct, target in figures:
                via_job()  # warm-up: page cache, worker imports, encoder start-up
                jobs_t, ff_t = [], []
                for _ in range(ns.runs):
                    jobs_t.append(timed(via_job))
                    ff_t.append(timed(direct))
                j, f = statistics.median(jobs_t), statistics.median(ff_t)
                rows.append((name, j, f, target))
                print(
                    f"  {name}: job {[f'{x:.3f}' for x in jobs_t]} s, ffmpeg {[f'{x:.3f}' for x in ff_t]} s",
                    flush=True,
                )
            if not has_snapshot:
                print("  (b) skipped: this server has no Snapshot processor")
            if not has_animation:
                print("  (c) skipped: this server has no Animation processor")
    print(
        f"\nmedian of {ns.runs} runs; jobs submitted through cos-python-sdk-v5 and polled every {POLL * 1000:.0f} ms\n"
    )
    print("| figure | job (s) | ffmpeg alone (s) | ratio | target |")
    print("|---|---|---|---|---|")
    for name, j, f, target in rows:
        ok = "ok" if j / f <= target else "ABOVE"
        print(f"| {name} | {j:.3f} | {f:.3f} | {j / f:.3f} | <= {target} {ok} |")
    return 0


def _tags() -> set[str]:
    from mediajobs.processors import REGISTRY

    return set(REGISTRY)


if __name__ == "__main__":
    sys.exit(main())
