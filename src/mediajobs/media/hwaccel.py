"""Hardware video encoders (NVENC, VAAPI, QSV): found once when a worker starts, used when the
operator asks for them (setting `hardware_encoder`).

An encoder counts as present only if FFmpeg lists it *and* a one-frame trial encode succeeds:
a build with NVENC compiled in but no GPU (every CI machine) lists it and then fails.
"""

from __future__ import annotations

import functools
import logging
import subprocess
from collections.abc import Sequence

from .ffmpeg import ffmpeg_exe

log = logging.getLogger("mediajobs.hwaccel")

FAMILIES = ("nvenc", "vaapi", "qsv")
# codec (as processors name it) -> family -> FFmpeg encoder
ENCODERS: dict[str, dict[str, str]] = {
    "h264": {"nvenc": "h264_nvenc", "vaapi": "h264_vaapi", "qsv": "h264_qsv"},
    "h265": {"nvenc": "hevc_nvenc", "vaapi": "hevc_vaapi", "qsv": "hevc_qsv"},
    "av1": {"nvenc": "av1_nvenc", "vaapi": "av1_vaapi", "qsv": "av1_qsv"},
}
VAAPI_DEVICE = "/dev/dri/renderD128"
_X264_TO_NVENC = {"ultrafast": "p1", "superfast": "p1", "veryfast": "p2", "faster": "p3", "fast": "p3",
                  "medium": "p4", "slow": "p5", "slower": "p6", "veryslow": "p7"}  # fmt: skip


def listed(ffmpeg: str | None = None) -> set[str]:
    """Hardware encoder names the FFmpeg build lists."""
    wanted = {enc for fams in ENCODERS.values() for enc in fams.values()}
    try:
        out = subprocess.run(
            [ffmpeg or ffmpeg_exe(), "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=20
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return set()
    found = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1] in wanted:
            found.add(parts[1])
    return found


def _trial(ffmpeg: str, encoder: str) -> bool:
    family = encoder.rsplit("_", 1)[1]
    args = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error"]
    if family == "vaapi":
        args += ["-vaapi_device", VAAPI_DEVICE]
    args += ["-f", "lavfi", "-i", "color=c=black:s=256x256:d=0.1", "-frames:v", "1"]
    if family == "vaapi":
        args += ["-vf", "format=nv12,hwupload"]
    args += ["-c:v", encoder, "-f", "null", "-"]
    try:
        return subprocess.run(args, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@functools.lru_cache(maxsize=4)
def usable(setting: str, ffmpeg: str | None = None) -> frozenset[str]:
    """The hardware encoders to use under `setting` (off, auto, nvenc, vaapi, qsv)."""
    if setting == "off":
        return frozenset()
    families = FAMILIES if setting == "auto" else (setting,)
    exe = ffmpeg or ffmpeg_exe()
    candidates = sorted(e for e in listed(exe) if e.rsplit("_", 1)[1] in families)
    working = frozenset(e for e in candidates if _trial(exe, e))
    log.info(
        "hardware encoders (%s): %s", setting, ", ".join(sorted(working)) or "none usable on this machine"
    )
    return working


def choose(codec: str, available: frozenset[str]) -> str | None:
    """The hardware encoder for `codec`, if one is usable (NVENC before QSV before VAAPI)."""
    for family in ("nvenc", "qsv", "vaapi"):
        enc = ENCODERS.get(codec, {}).get(family)
        if enc in available:
            return enc
    return None


def encoder_args(encoder: str, *, crf: float | None, bitrate_k: int | None, preset: str | None) -> list[str]:
    """Rate control and speed options of a hardware encoder, mapped from the x264-style request."""
    family = encoder.rsplit("_", 1)[1]
    args = ["-c:v", encoder]
    if family == "nvenc":
        args += ["-preset", _X264_TO_NVENC.get(preset or "medium", "p4")]
        if bitrate_k:
            args += ["-b:v", f"{bitrate_k}k"]
        elif crf is not None:
            args += ["-rc", "vbr", "-cq", f"{crf:g}", "-b:v", "0"]
    elif family == "qsv":
        if bitrate_k:
            args += ["-b:v", f"{bitrate_k}k"]
        elif crf is not None:
            args += ["-global_quality", f"{crf:g}"]
    else:  # vaapi: frames must be uploaded to the device first (see filters())
        if bitrate_k:
            args += ["-b:v", f"{bitrate_k}k"]
        elif crf is not None:
            args += ["-qp", f"{round(crf)}"]
    return args


def input_args(encoder: str) -> list[str]:
    """Options before the inputs (the VAAPI device)."""
    return ["-vaapi_device", VAAPI_DEVICE] if encoder.endswith("_vaapi") else []


def filters(encoder: str) -> Sequence[str]:
    """Filters to append to the video chain for this encoder."""
    return ["format=nv12", "hwupload"] if encoder.endswith("_vaapi") else []
