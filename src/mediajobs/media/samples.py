"""Small, deterministic media files made with the bundled ffmpeg, for tests and benchmarks.

Every maker runs the imageio-ffmpeg binary on lavfi sources (`testsrc2` for pictures, `sine`
for sound) with an argument list, never a shell string, and returns the path it wrote. Outputs
carry no creation time or encoder string and are made with bit-exact flags: the same call gives
the same bytes on the same ffmpeg build.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import imageio_ffmpeg

# Container (muxer name) chosen from the file extension when `container` is not given.
_MUXER_BY_SUFFIX = {
    ".mp4": "mp4",
    ".m4a": "ipod",
    ".mov": "mov",
    ".mkv": "matroska",
    ".webm": "webm",
    ".flv": "flv",
    ".ts": "mpegts",
    ".mp3": "mp3",
    ".aac": "adts",
    ".wav": "wav",
    ".flac": "flac",
    ".ogg": "ogg",
    ".oga": "ogg",
    ".opus": "ogg",
}

# The encoder that fits each audio-only container by default.
_AUDIO_CODEC_BY_SUFFIX = {
    ".mp3": "libmp3lame",
    ".aac": "aac",
    ".m4a": "aac",
    ".wav": "pcm_s16le",
    ".flac": "flac",
    ".ogg": "libvorbis",
    ".oga": "libvorbis",
    ".opus": "libopus",
}

# Codecs a video container gets when the caller names none.
_VIDEO_CODECS_BY_MUXER = {"webm": ("libvpx-vp9", "libopus")}
_DEFAULT_VIDEO_CODECS = ("libx264", "aac")

# Encoder options: the fastest settings, small output, 8-bit 4:2:0.
_VPX = ["-deadline", "realtime", "-cpu-used", "8", "-b:v", "200k", "-pix_fmt", "yuv420p"]
_VIDEO_OPTIONS = {
    "libx264": ["-preset", "ultrafast", "-pix_fmt", "yuv420p"],
    "libx265": ["-preset", "ultrafast", "-x265-params", "log-level=none", "-pix_fmt", "yuv420p"],
    "libvpx": _VPX,
    "libvpx-vp9": _VPX,
}

# Flags that keep the output reproducible: no encoder string, no creation time, no random ids.
_BITEXACT = ["-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact"]


def ffmpeg_exe() -> str:
    """Path of the bundled ffmpeg binary."""
    return str(imageio_ffmpeg.get_ffmpeg_exe())


def run_ffmpeg(args: list[str], *, timeout: float = 60.0) -> None:
    """Run ffmpeg with `args` (after the quiet, non-interactive, overwrite flags); raise on failure."""
    argv = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", "-loglevel", "error", *args]
    proc = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(
            f"ffmpeg failed ({proc.returncode}): {proc.stderr.decode(errors='replace').strip()}"
        )


def _muxer(path: Path, container: str | None) -> str:
    if container is not None:
        return container
    try:
        return _MUXER_BY_SUFFIX[path.suffix.lower()]
    except KeyError:
        raise ValueError(f"no default container for {path.suffix!r}; pass container=") from None


def _video_args(vcodec: str, fps: int) -> list[str]:
    # A one-second GOP gives a few key frames to seek on.
    return ["-c:v", vcodec, *_VIDEO_OPTIONS.get(vcodec, []), "-g", str(fps)]


def _audio_args(acodec: str, sample_rate: int, channels: int) -> list[str]:
    if acodec == "libopus":
        sample_rate = 48000  # Opus runs at 48 kHz (libopus would resample anyway)
    return ["-c:a", acodec, "-ar", str(sample_rate), "-ac", str(channels)]


def make_video(
    path: str | os.PathLike[str],
    *,
    seconds: float = 2.0,
    width: int = 320,
    height: int = 240,
    fps: int = 25,
    vcodec: str | None = None,
    acodec: str | None = None,
    audio: bool = True,
    sample_rate: int = 44100,
    channels: int = 2,
    container: str | None = None,
    extra: list[str] | None = None,
) -> Path:
    """Write `seconds` of testsrc2 plus, when `audio`, a 440 Hz sine to `path`.

    The container is taken from the extension (`.mp4`, `.mov`, `.mkv`, `.webm`, `.flv`, `.ts`)
    unless `container` names a muxer. Codecs default to libx264 + aac, or libvpx-vp9 + libopus for
    WebM. `extra` is appended just before the output options.
    """
    out = Path(path)
    muxer = _muxer(out, container)
    default_v, default_a = _VIDEO_CODECS_BY_MUXER.get(muxer, _DEFAULT_VIDEO_CODECS)
    args = ["-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={fps}:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={sample_rate}:duration={seconds}"]
    args += ["-map", "0:v"]
    if audio:
        args += ["-map", "1:a"]
    args += _video_args(vcodec or default_v, fps)
    if audio:
        args += _audio_args(acodec or default_a, sample_rate, channels)
    args += [*_BITEXACT, *(extra or []), "-f", muxer, str(out)]
    run_ffmpeg(args)
    return out


def make_audio(
    path: str | os.PathLike[str],
    *,
    seconds: float = 2.0,
    codec: str | None = None,
    sample_rate: int = 44100,
    channels: int = 2,
    container: str | None = None,
    extra: list[str] | None = None,
) -> Path:
    """Write `seconds` of a 440 Hz sine to `path`, audio only.

    The codec defaults by extension: `.mp3` libmp3lame, `.aac`/`.m4a` aac, `.wav` pcm_s16le,
    `.flac` flac, `.ogg` libvorbis, `.opus` libopus.
    """
    out = Path(path)
    if codec is None:
        try:
            codec = _AUDIO_CODEC_BY_SUFFIX[out.suffix.lower()]
        except KeyError:
            raise ValueError(f"no default audio codec for {out.suffix!r}; pass codec=") from None
    args = ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={sample_rate}:duration={seconds}"]
    args += _audio_args(codec, sample_rate, channels)
    args += [*_BITEXACT, *(extra or []), "-f", _muxer(out, container), str(out)]
    run_ffmpeg(args)
    return out


def make_image(path: str | os.PathLike[str], width: int = 320, height: int = 240) -> Path:
    """Write one testsrc2 frame as a still image; the format comes from the extension (png, jpg, webp, bmp, gif)."""
    out = Path(path)
    suffix = out.suffix.lower()
    codec = {
        ".png": "png",
        ".jpg": "mjpeg",
        ".jpeg": "mjpeg",
        ".webp": "libwebp",
        ".bmp": "bmp",
        ".gif": "gif",
    }.get(suffix)
    if codec is None:
        raise ValueError(f"no image encoder for {suffix!r}")
    args = ["-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate=1", "-frames:v", "1", "-c:v", codec]
    if codec == "mjpeg":
        args += ["-pix_fmt", "yuvj420p", "-q:v", "3"]
    elif codec == "gif":
        args += ["-pix_fmt", "rgb8"]
    args += [*_BITEXACT, "-f", "image2", "-update", "1", str(out)]
    run_ffmpeg(args)
    return out
