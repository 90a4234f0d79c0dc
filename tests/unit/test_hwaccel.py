"""Hardware encoder detection and use, with a stand-in FFmpeg (CI machines have no GPU)."""

from __future__ import annotations

import stat
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from mediajobs.media import hwaccel
from mediajobs.media.probe import probe
from mediajobs.media.samples import make_video
from mediajobs.processors.transcode import build_args, parse_transcode

FAKE = """#!/bin/sh
case "$*" in
  *-encoders*) printf ' V....D libx264  x\\n V....D h264_nvenc  NVIDIA\\n V....D hevc_vaapi  VAAPI\\n V....D h264_qsv  QSV\\n'; exit 0;;
  *h264_nvenc*) exit 0;;
  *) exit 1;;
esac
"""


@pytest.fixture
def fake_ffmpeg(tmp_path: Path) -> str:
    exe = tmp_path / "ffmpeg"
    exe.write_text(FAKE)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    hwaccel.usable.cache_clear()
    return str(exe)


def test_listed_and_trial_encode_decide(fake_ffmpeg: str) -> None:
    assert hwaccel.listed(fake_ffmpeg) == {"h264_nvenc", "hevc_vaapi", "h264_qsv"}
    # listed but failing its trial encode (no device): not usable
    assert hwaccel.usable("auto", fake_ffmpeg) == {"h264_nvenc"}
    assert hwaccel.usable("vaapi", fake_ffmpeg) == frozenset()
    assert hwaccel.usable("off", fake_ffmpeg) == frozenset()
    assert hwaccel.choose("h264", frozenset({"h264_nvenc"})) == "h264_nvenc"
    assert hwaccel.choose("h265", frozenset({"h264_nvenc"})) is None


def test_this_machine_without_a_gpu_uses_none() -> None:
    hwaccel.usable.cache_clear()
    assert hwaccel.usable("auto") == frozenset()


def test_rate_control_mapping() -> None:
    assert hwaccel.encoder_args("h264_nvenc", crf=23, bitrate_k=None, preset="veryfast") == [
        "-c:v", "h264_nvenc", "-preset", "p2", "-rc", "vbr", "-cq", "23", "-b:v", "0",
    ]  # fmt: skip
    assert hwaccel.encoder_args("h264_qsv", crf=None, bitrate_k=2000, preset=None) == [
        "-c:v",
        "h264_qsv",
        "-b:v",
        "2000k",
    ]
    assert hwaccel.encoder_args("hevc_vaapi", crf=28.4, bitrate_k=None, preset=None) == [
        "-c:v",
        "hevc_vaapi",
        "-qp",
        "28",
    ]


def test_transcode_uses_the_hardware_encoder_when_chosen(tmp_path: Path) -> None:
    import dataclasses

    src = make_video(tmp_path / "in.mp4", seconds=0.5)
    op = ET.fromstring(
        "<Operation><Transcode><Container><Format>mp4</Format></Container><Video><Codec>H.264</Codec>"
        "<Width>160</Width><Crf>23</Crf></Video></Transcode></Operation>"
    )
    spec = parse_transcode(op)
    soft = build_args(spec, probe(src), src, tmp_path / "o.mp4")
    assert "libx264" in soft
    hard = build_args(dataclasses.replace(spec, hw_encoder="h264_vaapi"), probe(src), src, tmp_path / "o.mp4")
    assert "libx264" not in hard and "h264_vaapi" in hard
    assert hard[hard.index("-vaapi_device") + 1] == hwaccel.VAAPI_DEVICE
    assert hard.index("-vaapi_device") < hard.index("-i")
    assert "format=nv12,hwupload" in hard[hard.index("-vf") + 1]
