"""The MediaInfo probe: values per container, the node tree of the spec, and refusal of unsafe inputs."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import pytest

from mediajobs.media import probe as probe_module
from mediajobs.media.probe import MediaInfo, NotMedia, probe
from mediajobs.media.samples import make_audio, make_image, make_video, run_ffmpeg
from mediajobs.nodes import Nodes, Value

# Children of <MediaInfo> in the spec example (tags.md, "## MediaInfo"), in order.
SPEC_FORMAT = [
    "Bitrate",
    "Duration",
    "FormatLongName",
    "FormatName",
    "NumProgram",
    "NumStream",
    "Size",
    "StartTime",
]
SPEC_AUDIO = [
    "Bitrate",
    "Channel",
    "ChannelLayout",
    "CodecLongName",
    "CodecName",
    "CodecTag",
    "CodecTagString",
    "CodecTimeBase",
    "Duration",
    "Index",
    "Language",
    "SampleFmt",
    "SampleRate",
    "StartTime",
    "Timebase",
]
SPEC_VIDEO = [
    "AvgFps",
    "Bitrate",
    "CodecLongName",
    "CodecName",
    "CodecTag",
    "CodecTagString",
    "CodecTimeBase",
    "ColorPrimaries",
    "ColorRange",
    "ColorTransfer",
    "Dar",
    "Duration",
    "FieldOrder",
    "Fps",
    "HasBFrame",
    "Height",
    "Index",
    "Language",
    "Level",
    "NumFrames",
    "PixFormat",
    "Profile",
    "RefFrames",
    "Rotation",
    "Sar",
    "StartTime",
    "Timebase",
    "Width",
]
SIX_DECIMALS = {"Bitrate", "Duration", "StartTime", "AvgFps", "Fps", "Rotation"}


@dataclass(frozen=True)
class Expect:
    demuxer: str
    format_name: str
    vcodec: str | None
    acodec: str | None
    sample_rate: int = 44100
    frames_exact: bool = True  # the container (or a full scan) gives the frame count


VIDEO_CASES = {
    "mp4": Expect("mov", "mov,mp4,m4a,3gp,3g2,mj2", "h264", "aac"),
    "mov": Expect("mov", "mov,mp4,m4a,3gp,3g2,mj2", "h264", "aac"),
    "mkv": Expect("matroska", "matroska,webm", "h264", "aac"),
    "webm": Expect("matroska", "matroska,webm", "vp9", "opus", sample_rate=48000),
    "flv": Expect("flv", "flv", "h264", "aac"),
    "ts": Expect("mpegts", "mpegts", "h264", "aac"),
}
AUDIO_CASES = {
    "mp3": Expect("mp3", "mp3", None, "mp3"),
    "m4a": Expect("mov", "mov,mp4,m4a,3gp,3g2,mj2", None, "aac"),
    "aac": Expect("aac", "aac", None, "aac"),
    "wav": Expect("wav", "wav", None, "pcm_s16le"),
    "flac": Expect("flac", "flac", None, "flac"),
    "ogg": Expect("ogg", "ogg", None, "vorbis"),
}
IMAGE_CASES = {
    "png": Expect("png_pipe", "png_pipe", "png", None),
    "jpg": Expect("jpeg_pipe", "jpeg_pipe", "mjpeg", None),
}


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One small file per format, made once for the module."""
    d = tmp_path_factory.mktemp("media")
    files = {ext: make_video(d / f"v.{ext}") for ext in VIDEO_CASES}
    files |= {ext: make_audio(d / f"a.{ext}") for ext in AUDIO_CASES}
    files["png"] = make_image(d / "i.png", 320, 240)
    files["jpg"] = make_image(d / "i.jpg", 160, 120)
    files["vp8.webm"] = make_video(d / "vp8.webm", vcodec="libvpx", acodec="libvorbis")
    return files


def leaves(nodes: Nodes, path: str = "") -> Iterator[tuple[str, Value]]:
    for name, value in nodes:
        if isinstance(value, str) or value is None:
            yield f"{path}/{name}", value
        else:
            yield from leaves(value, f"{path}/{name}")


def children(nodes: Nodes, name: str) -> list[Nodes | None]:
    out: list[Nodes | None] = []
    for n, v in nodes:
        if n == name:
            assert not isinstance(v, str)
            out.append(v)
    return out


def as_dict(nodes: Nodes | None) -> dict[str, str]:
    assert nodes is not None
    out = {}
    for n, v in nodes:
        assert isinstance(v, str), n
        out[n] = v
    return out


def assert_well_formed(info: MediaInfo) -> None:
    """The node tree has the spec's shape and no value is empty or N/A."""
    tree = info.nodes()
    assert [n for n, _ in tree] == ["Format", "Stream"]
    fmt = as_dict(children(tree, "Format")[0])
    assert list(fmt) == SPEC_FORMAT
    stream = children(tree, "Stream")[0]
    assert stream is not None
    kinds = [n for n, _ in stream]
    assert kinds == sorted(kinds) and set(kinds) == {"Audio", "Subtitle", "Video"}
    for path, value in leaves(tree):
        if value is None:
            # only a kind with no stream is an empty element
            assert path in ("/Stream/Audio", "/Stream/Subtitle", "/Stream/Video"), path
            continue
        assert value.strip() and value != "N/A" and "nan" not in value.lower(), (path, value)
        name = path.rsplit("/", 1)[1]
        if name in SIX_DECIMALS:
            whole, _, decimals = value.partition(".")
            assert len(decimals) == 6 and whole.lstrip("-").isdigit(), (path, value)
        if name in ("Width", "Height", "NumFrames", "Channel", "SampleRate", "Index", "Size", "NumStream"):
            assert value.isdigit(), (path, value)
        if name == "CodecTag":
            assert value.startswith("0x") and len(value) == 10, value
    for video in children(stream, "Video"):
        if video is not None:
            assert list(as_dict(video)) == SPEC_VIDEO
    for audio in children(stream, "Audio"):
        if audio is not None:
            assert list(as_dict(audio)) == SPEC_AUDIO


@pytest.mark.parametrize("ext", [*VIDEO_CASES, "vp8.webm"])
def test_video_containers(media: dict[str, Path], ext: str) -> None:
    exp = VIDEO_CASES.get(ext, Expect("matroska", "matroska,webm", "vp8", "vorbis"))
    info = probe(media[ext])
    assert_well_formed(info)
    assert (info.demuxer, info.format_name) == (exp.demuxer, exp.format_name)
    assert info.size == media[ext].stat().st_size
    assert info.num_streams == 2 and len(info.video) == 1 and len(info.audio) == 1
    assert info.num_programs == (1 if ext == "ts" else 0)
    assert info.duration == pytest.approx(2.0, abs=0.1)
    assert info.bit_rate > 0
    v, a = info.video[0], info.audio[0]
    assert (v.index, a.index) == (0, 1)
    assert (v.codec_name, v.width, v.height) == (exp.vcodec, 320, 240)
    assert (v.fps, v.avg_fps) == (25, 25)
    assert v.pix_fmt == "yuv420p" and str(v.sar) == "1" and v.dar == pytest.approx(4 / 3)
    assert v.duration == pytest.approx(2.0, abs=0.1)
    assert v.num_frames == 50
    assert 20_000 < v.bit_rate < 5_000_000
    assert v.rotation == 0.0 and v.ref_frames == 1 and v.language == "und"
    assert (a.codec_name, a.sample_rate, a.channels, a.channel_layout) == (
        exp.acodec,
        exp.sample_rate,
        2,
        "stereo",
    )
    assert a.duration == pytest.approx(2.0, abs=0.1)
    assert 8_000 < a.bit_rate < 400_000
    if v.codec_name == "h264":
        assert v.profile == "Constrained Baseline" and v.level == 13  # libx264 ultrafast at 320x240
    node = as_dict(children(children(info.nodes(), "Stream")[0] or [], "Video")[0])
    assert node["Width"] == "320" and node["Dar"] == "4:3" and node["Sar"] == "1:1"
    assert node["Fps"] == "25.000000" and node["NumFrames"] == "50"


def test_mp4_nodes_match_the_spec_example_formats(media: dict[str, Path]) -> None:
    tree = probe(media["mp4"]).nodes()
    fmt = as_dict(children(tree, "Format")[0])
    assert fmt["FormatName"] == "mov,mp4,m4a,3gp,3g2,mj2" and fmt["FormatLongName"] == "QuickTime / MOV"
    assert fmt["NumProgram"] == "0" and fmt["NumStream"] == "2" and fmt["StartTime"] == "0.000000"
    assert fmt["Size"] == str(media["mp4"].stat().st_size)
    stream = children(tree, "Stream")[0]
    assert stream is not None
    assert children(stream, "Subtitle") == [None]
    video = as_dict(children(stream, "Video")[0])
    audio = as_dict(children(stream, "Audio")[0])
    assert video["CodecTag"] == "0x31637661" and video["CodecTagString"] == "avc1"
    assert video["CodecName"] == "h264"
    assert video["CodecLongName"] == "H.264 / AVC / MPEG-4 AVC / MPEG-4 part 10"
    assert video["Timebase"] == video["CodecTimeBase"] == "1/12800"
    assert video["HasBFrame"] == "0" and video["RefFrames"] == "1" and video["Rotation"] == "0.000000"
    assert video["FieldOrder"] == "progressive" and video["Profile"] == "Constrained Baseline"
    assert audio["CodecTag"] == "0x6134706d" and audio["CodecTagString"] == "mp4a"
    assert audio["CodecTimeBase"] == audio["Timebase"] == "1/44100"
    assert audio["SampleFmt"] == "fltp" and audio["Language"] == "und"
    assert audio["Bitrate"].startswith("127.") or audio["Bitrate"].startswith("128.")


@pytest.mark.parametrize("ext", list(AUDIO_CASES))
def test_audio_containers(media: dict[str, Path], ext: str) -> None:
    exp = AUDIO_CASES[ext]
    info = probe(media[ext])
    assert_well_formed(info)
    assert (info.demuxer, info.format_name) == (exp.demuxer, exp.format_name)
    assert info.num_streams == 1 and not info.video and len(info.audio) == 1
    a = info.audio[0]
    assert (a.codec_name, a.sample_rate, a.channels, a.channel_layout) == (
        exp.acodec,
        exp.sample_rate,
        2,
        "stereo",
    )
    assert a.duration == pytest.approx(2.0, abs=0.1)
    assert info.duration == pytest.approx(2.0, abs=0.1)
    assert a.bit_rate > 8_000
    stream = children(info.nodes(), "Stream")[0]
    assert stream is not None
    assert children(stream, "Video") == [None] and children(stream, "Subtitle") == [None]


@pytest.mark.parametrize(("ext", "size"), [("png", (320, 240)), ("jpg", (160, 120))])
def test_still_images(media: dict[str, Path], ext: str, size: tuple[int, int]) -> None:
    exp = IMAGE_CASES[ext]
    info = probe(media[ext])
    assert_well_formed(info)
    assert info.demuxer == exp.demuxer and info.num_streams == 1 and not info.audio
    v = info.video[0]
    assert (v.codec_name, v.width, v.height, v.num_frames) == (exp.vcodec, *size, 1)


def test_detection_is_by_content_not_name(media: dict[str, Path], tmp_path: Path) -> None:
    for src, name, demuxer in [
        ("mp4", "video.mp3", "mov"),
        ("mp3", "noext", "mp3"),
        ("jpg", "x.png", "jpeg_pipe"),
    ]:
        target = tmp_path / name
        shutil.copy(media[src], target)
        assert probe(target).demuxer == demuxer
    # an image2 pattern in the name is just a name: the file itself is read, nothing else
    make_image(tmp_path / "frame1.png", 64, 48)
    shutil.copy(media["png"], tmp_path / "frame%d.png")
    assert probe(tmp_path / "frame%d.png").video[0].width == 320


def test_demuxer_pins_ffmpeg(media: dict[str, Path]) -> None:
    for ext in ("mp4", "mkv", "ts", "flv", "aac", "jpg"):
        info = probe(media[ext])
        run_ffmpeg(["-f", info.demuxer, "-i", str(media[ext]), "-t", "0.1", "-f", "null", "-"])


def test_rotation_from_display_matrix(media: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "rot.mp4"
    run_ffmpeg(["-display_rotation", "90", "-i", str(media["mp4"]), "-c", "copy", str(out)])
    info = probe(out)
    with av.open(str(out)) as c:
        frame = next(c.decode(video=0))
    assert info.video[0].rotation == frame.rotation == 90
    assert as_dict(children(children(info.nodes(), "Stream")[0] or [], "Video")[0])["Rotation"] == "90.000000"
    assert (info.video[0].width, info.video[0].height) == (320, 240)  # coded size, before rotation


def test_several_streams_of_a_kind_and_subtitles(tmp_path: Path) -> None:
    srt = tmp_path / "s.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n\n2\n00:00:01,000 --> 00:00:01,900\nbye\n")
    out = tmp_path / "multi.mkv"
    src = "sine=frequency={}:sample_rate=48000:duration=1"
    run_ffmpeg(
        [
            *("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=1"),
            *("-f", "lavfi", "-i", src.format(440), "-f", "lavfi", "-i", src.format(660), "-i", str(srt)),
            *("-map", "0:v", "-map", "1:a", "-map", "2:a", "-map", "3:s"),
            *("-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-ac:a:0", "2", "-c:s", "srt"),
            *("-metadata:s:a:0", "language=eng", "-metadata:s:a:1", "language=chi"),
            *("-metadata:s:s:0", "language=fre", str(out)),
        ]
    )
    info = probe(out)
    assert_well_formed(info)
    assert info.num_streams == 4
    assert [(a.index, a.language, a.channels, a.channel_layout) for a in info.audio] == [
        (1, "eng", 2, "stereo"),
        (2, "chi", 1, "mono"),
    ]
    stream = children(info.nodes(), "Stream")[0]
    assert stream is not None
    assert [n for n, _ in stream] == ["Audio", "Audio", "Subtitle", "Video"]
    assert as_dict(children(stream, "Subtitle")[0]) == {"Index": "3", "Language": "fre"}
    assert info.video[0].num_frames == 25


def test_estimates_when_the_scan_budget_runs_out(
    media: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    full = probe(media["ts"])
    monkeypatch.setattr(probe_module, "SCAN_MAX_PACKETS", 20)
    part = probe(media["ts"])
    assert_well_formed(part)
    v_full, v_part = full.video[0], part.video[0]
    assert v_part.num_frames == pytest.approx(v_full.num_frames, abs=2)  # duration x frame rate
    assert v_part.bit_rate == pytest.approx(v_full.bit_rate, rel=0.6)  # bitrate of the part read


# --------------------------------------------------------------------------- refusals


def write_playlist(path: Path, *segments: str) -> Path:
    body = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:3", "#EXT-X-MEDIA-SEQUENCE:0"]
    for seg in segments:
        body += ["#EXTINF:2.0,", seg]
    path.write_text("\n".join([*body, "#EXT-X-ENDLIST", ""]))
    return path


def test_the_attacks_are_real_without_the_guards(media: dict[str, Path], tmp_path: Path) -> None:
    """Plain PyAV follows these files to the media they name; the probe must not (tests below)."""
    playlist = write_playlist(tmp_path / "p.m3u8", str(media["ts"]))
    with av.open(str(playlist)) as c:
        assert c.format.name == "hls" and c.streams.video[0].codec_context.width == 320
    shutil.copy(media["mp4"], tmp_path / "inner.mp4")
    concat = tmp_path / "list.ffconcat"
    concat.write_text("ffconcat version 1.0\nfile 'inner.mp4'\n")
    with av.open(str(concat)) as c:
        assert c.format.name == "concat" and c.streams.video[0].codec_context.width == 320


@pytest.mark.parametrize("how", ["absolute", "file-url", "relative"])
def test_hls_playlist_pointing_at_local_media_is_refused(
    media: dict[str, Path], tmp_path: Path, how: str
) -> None:
    shutil.copy(media["ts"], tmp_path / "seg.ts")
    segment = {
        "absolute": str(tmp_path / "seg.ts"),
        "file-url": (tmp_path / "seg.ts").as_uri(),
        "relative": "seg.ts",
    }[how]
    playlist = write_playlist(tmp_path / "index.m3u8", segment)
    with pytest.raises(NotMedia):
        probe(playlist)


def test_ffconcat_pointing_at_local_media_is_refused(media: dict[str, Path], tmp_path: Path) -> None:
    shutil.copy(media["mp4"], tmp_path / "inner.mp4")
    for name, ref in [("rel.ffconcat", "inner.mp4"), ("abs.ffconcat", str(tmp_path / "inner.mp4"))]:
        listing = tmp_path / name
        listing.write_text(f"ffconcat version 1.0\nfile '{ref}'\nduration 2.0\n")
        with pytest.raises(NotMedia, match="not accepted"):
            probe(listing)


def test_playlist_pointing_at_a_url_fails_fast(tmp_path: Path) -> None:
    playlist = write_playlist(tmp_path / "remote.m3u8", "http://127.0.0.1:1/x.ts", "http://127.0.0.1:1/y.ts")
    started = time.monotonic()
    with pytest.raises(NotMedia):
        probe(playlist)
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize("demuxer", ["concat", "hls"])
def test_references_are_refused_even_past_the_whitelist(
    media: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, demuxer: str
) -> None:
    """The guards behind the whitelist: let concat or hls through it, and their opens still fail."""
    options = dict(probe_module._OPEN_OPTIONS)
    options["format_whitelist"] += f",{demuxer}"
    monkeypatch.setattr(probe_module, "_OPEN_OPTIONS", options)
    # hls only recognises a playlist by its name; the probe's neutral name would hide it
    monkeypatch.setattr(probe_module._Source, "name", "upload.m3u8")
    monkeypatch.chdir(tmp_path)  # relative entries resolve against the working directory
    shutil.copy(media["mp4"], tmp_path / "inner.mp4")
    shutil.copy(media["ts"], tmp_path / "seg.ts")
    if demuxer == "concat":
        listing = tmp_path / "list.txt"
        listing.write_text("ffconcat version 1.0\nfile 'inner.mp4'\n")
    else:
        listing = write_playlist(tmp_path / "list.m3u8", str(tmp_path / "seg.ts"))
    with av.open(str(listing), container_options={"format_whitelist": f"{demuxer},mov,mpegts"}) as c:
        assert c.streams.video[0].codec_context.width == 320  # really reachable without the guards
    with pytest.raises(NotMedia):
        probe(listing)


def test_text_empty_and_odd_files(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not a video\n" * 50)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    garbage = tmp_path / "random.mp4"
    garbage.write_bytes(os.urandom(64 * 1024))
    for path in (text, empty, garbage, tmp_path):
        with pytest.raises(NotMedia):
            probe(path)
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    with pytest.raises(NotMedia, match="regular file"):
        probe(fifo)  # must not block waiting for a writer


def test_missing_file_is_not_notmedia(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        probe(tmp_path / "nope.mp4")
