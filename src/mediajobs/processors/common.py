"""Steps most FFmpeg processors share: probe the input within limits, run FFmpeg for a job."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..media import ffmpeg
from .base import Cancelled, JobContext, JobFailed

if TYPE_CHECKING:
    from ..media.probe import MediaInfo

MAX_INPUT_SECONDS = 4 * 3600
MAX_INPUT_PIXELS = 4096 * 4096
MAX_INPUT_STREAMS = 16
MAX_INPUT_BITRATE = 400_000_000  # bit/s: far above any camera's, far below a decompression bomb's


def probe_input(path: Path, *, need_video: bool = False, need_audio: bool = False) -> MediaInfo:
    """Probe an input and check it against the limits before any work is spent on it."""
    from ..media.probe import NotMedia, probe

    try:
        info = probe(path)
    except NotMedia as exc:
        raise JobFailed("InputFileInvalid", f"The input is not a media file: {exc}") from None
    if info.duration > MAX_INPUT_SECONDS:
        raise JobFailed("InputFileInvalid", f"The input is longer than {MAX_INPUT_SECONDS} s.")
    if any(v.width * v.height > MAX_INPUT_PIXELS for v in info.video):
        raise JobFailed("InputFileInvalid", "The input's resolution exceeds 4096x4096.")
    if info.bit_rate > MAX_INPUT_BITRATE:
        raise JobFailed(
            "InputFileInvalid", f"The input's bitrate exceeds {MAX_INPUT_BITRATE // 1_000_000} Mbit/s."
        )
    if info.num_streams > MAX_INPUT_STREAMS:
        raise JobFailed("InputFileInvalid", f"The input has more than {MAX_INPUT_STREAMS} streams.")
    if need_video and not info.video:
        raise JobFailed("InvalidParameter", "The input has no video stream.")
    if need_audio and not info.audio:
        raise JobFailed("InvalidParameter", "The input has no audio stream.")
    return info


def run_ffmpeg(ctx: JobContext, args: Sequence[str], expected_duration: float | None = None) -> None:
    """Run FFmpeg for this job: progress into the job, cancel and deadline honoured, errors as Codes."""
    try:
        ffmpeg.run(
            args,
            deadline=ctx.deadline,
            cancelled=ctx.cancelled,
            expected_duration=expected_duration,
            on_progress=ctx.progress,
        )
    except ffmpeg.FFmpegCancelled:
        raise Cancelled() from None
    except ffmpeg.FFmpegTimeout:
        raise JobFailed("JobTimeout", "The job exceeded its maximum run time.") from None
    except ffmpeg.FFmpegError as exc:
        raise JobFailed("InternalError", f"FFmpeg failed: {exc}") from None
    ctx.check()
