"""Concat, Segment and StreamExtract jobs through cos-python-sdk-v5: outputs downloaded and measured."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest
from qcloud_cos import CosS3Client
from qcloud_cos.cos_exception import CosServiceError

from mediajobs.media.samples import make_image, make_video
from mediajobs.processors.base import InvalidOperation, JobFailed
from mediajobs.processors.concat import Clip, ConcatSpec, Fragment, clip_order, fragment_key
from mediajobs.processors.segment import cut_points, cuts_on_keyframes
from mediajobs.processors.streamextract import container_for
from mediajobs.testing import ServerProcess, running_server
from tests.helpers import create_job, wait_job

REGION = "ap-guangzhou"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("concat"), args=["--workers", "1"]) as s:
        cos = s.client()
        d = tmp_path_factory.mktemp("media")
        clips = {
            "in/a.mp4": make_video(d / "a.mp4", seconds=1.0),
            "in/b.mp4": make_video(d / "b.mp4", seconds=1.6),
            "in/c.mp4": make_video(d / "c.mp4", seconds=2.0),
            # another size and no sound: the re-encode path pads it and fills in silence
            "in/wide.mp4": make_video(d / "wide.mp4", seconds=1.0, width=640, height=360, audio=False),
            "in/four.mp4": make_video(d / "four.mp4", seconds=4.0),  # a key frame every second
            "in/onegop.mp4": make_video(d / "onegop.mp4", seconds=4.0, extra=["-g", "250"]),
            "in/vp9.webm": make_video(d / "vp9.webm", seconds=1.0),
            "in/still.png": make_image(d / "still.png"),
        }
        for key, path in clips.items():
            cos.upload_file(Bucket=s.bucket, Key=key, LocalFilePath=str(path))
        yield s


@pytest.fixture(scope="module")
def cos(srv: ServerProcess) -> CosS3Client:
    return srv.client()


def submit(cos: CosS3Client, bucket: str, tag: str, key: str, op: dict[str, Any]) -> str:
    return create_job(cos, bucket, tag, key, op)


def out(bucket: str, key: str) -> dict[str, str]:
    return {"Region": REGION, "Bucket": bucket, "Object": key}


def wait(cos: CosS3Client, bucket: str, job_id: str, timeout: float = 120) -> dict[str, Any]:
    return wait_job(cos, bucket, job_id, timeout=timeout)


def run(cos: CosS3Client, bucket: str, tag: str, key: str, op: dict[str, Any]) -> dict[str, Any]:
    return wait(cos, bucket, submit(cos, bucket, tag, key, op))


def fetch(cos: CosS3Client, bucket: str, key: str, tmp_path: Path) -> Path:
    path = tmp_path / key.replace("/", "_")
    cos.download_file(Bucket=bucket, Key=key, DestFilePath=str(path))
    return path


def read(cos: CosS3Client, bucket: str, key: str) -> bytes:
    return bytes(cos.get_object(Bucket=bucket, Key=key)["Body"].get_raw_stream().read())


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def video_packets(path: Path) -> list[bytes]:
    """The coded pictures of an MP4/MKV H.264 track, without in-band parameter sets (a muxer may repeat them)."""
    with av.open(str(path)) as c:
        return [_drop_parameter_sets(bytes(p)) for p in c.demux(video=0) if p.size]


def _drop_parameter_sets(packet: bytes) -> bytes:
    kept, pos = [], 0
    while pos + 4 <= len(packet):
        size = int.from_bytes(packet[pos : pos + 4], "big")
        nal = packet[pos : pos + 4 + size]
        if nal[4] & 0x1F not in (7, 8):  # SPS, PPS
            kept.append(nal)
        pos += 4 + size
    return b"".join(kept)


def cname(stream: Any) -> str:
    """The codec's name as MediaInfo gives it ("mp3", not the decoder's "mp3float")."""
    return str(stream.codec_context.codec.canonical_name)


def frames(path: Path, **kw: Any) -> int:
    with av.open(str(path), **kw) as c:
        return sum(1 for _ in c.decode(video=0))


def duration(path: Path) -> float:
    with av.open(str(path)) as c:
        return float(c.duration or 0) / 1e6


def outputs(result: dict[str, Any]) -> tuple[str, list[str], dict[str, str]]:
    f = result["OutputFile"]
    md5s = {m["ObjectName"]: m["Md5"] for m in as_list(f["Md5Info"])}
    return f.get("ObjectPrefix") or "", as_list(f["ObjectName"]), md5s


# --------------------------------------------------------------------------- Concat


def test_concat_by_stream_copy(srv: ServerProcess, cos: CosS3Client, tmp_path: Path) -> None:
    b = srv.bucket
    concat = {
        # a plain key and a COS URL of this bucket with the '/' percent-encoded, as the console writes them
        "ConcatFragment": [{"Url": "in/b.mp4"}, {"Url": f"https://{b}.cos.{REGION}.myqcloud.com/in%2Fc.mp4"}],
        "Container": {"Format": "mp4"},
    }
    d = run(cos, b, "Concat", "in/a.mp4", {"ConcatTemplate": concat, "Output": out(b, "cat/copy.mp4")})
    assert d["State"] == "Success", d
    result = d["Operation"]["MediaResult"]["OutputFile"]
    assert result["ObjectName"] == "cat/copy.mp4"
    path = fetch(cos, b, "cat/copy.mp4", tmp_path)
    assert result["Md5Info"]["Md5"] == hashlib.md5(path.read_bytes()).hexdigest()
    # Input first (Index defaults to 0), then the fragments in order, each packet copied as it was.
    sources = [fetch(cos, b, f"in/{n}.mp4", tmp_path) for n in "abc"]
    assert video_packets(path) == [p for s in sources for p in video_packets(s)]
    assert frames(path) == sum(frames(s) for s in sources) == 115  # 25 + 40 + 50
    assert abs(duration(path) - 4.6) < 0.15
    with av.open(str(path)) as c:
        assert cname(c.streams.audio[0]) == "aac"
    assert abs(float(d["Operation"]["MediaInfo"]["Format"]["Duration"]) - 4.6) < 0.15


def test_concat_re_encodes_mixed_clips(srv: ServerProcess, cos: CosS3Client, tmp_path: Path) -> None:
    b = srv.bucket
    concat = {
        "ConcatFragment": [
            {"Url": f"http://{b}.cos.{REGION}.myqcloud.com/in/wide.mp4", "FragmentIndex": "0"},
            {"Url": "in/c.mp4", "FragmentIndex": "1", "StartTime": "0.5", "EndTime": "1.5"},
        ],
        "Index": "1",  # the Input between the two fragments
        "Container": {"Format": "mp4"},
        "Video": {"Codec": "H.264", "Width": "320"},
        "Audio": {"Codec": "mp3", "Samplerate": "22050"},
    }
    d = run(cos, b, "Concat", "in/a.mp4", {"ConcatTemplate": concat, "Output": out(b, "cat/mixed.mp4")})
    assert d["State"] == "Success", d
    path = fetch(cos, b, "cat/mixed.mp4", tmp_path)
    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert (cname(v), v.width, v.height) == ("h264", 320, 180)  # aspect of the first clip
        assert (cname(a), a.sample_rate) == ("mp3", 22050)
    assert abs(duration(path) - 3.0) < 0.15  # 1.0 + 1.0 + the 1.0 s cut of c
    assert 74 <= frames(path) <= 76
    # The first second (the clip without sound) is silent; the Input's sine follows.
    with av.open(str(path)) as c:
        levels = [(float(f.time or 0), float(abs(f.to_ndarray()).max())) for f in c.decode(audio=0)]
    assert max(level for t, level in levels if 0.1 < t < 0.8) < 0.01
    assert min(level for t, level in levels if 1.2 < t < 1.8) > 0.05  # lavfi sine: amplitude 1/8


def test_concat_hls_and_failures(srv: ServerProcess, cos: CosS3Client, tmp_path: Path) -> None:
    b = srv.bucket
    concat = {"ConcatFragment": [{"Url": "in/b.mp4", "Mode": "Start"}], "Container": {"Format": "hls"}}
    d = run(cos, b, "Concat", "in/a.mp4", {"ConcatTemplate": concat, "Output": out(b, "cathls/all.m3u8")})
    assert d["State"] == "Success", d
    playlist = read(cos, b, "cathls/all.m3u8").decode()
    local = tmp_path / "hls"
    local.mkdir()
    (local / "all.m3u8").write_text(playlist)
    for name in re.findall(r"^(all-\d+\.ts)$", playlist, re.M):
        (local / name).write_bytes(read(cos, b, f"cathls/{name}"))
    assert frames(local / "all.m3u8") == 65  # b (Mode Start) then a

    missing = {"ConcatFragment": [{"Url": "in/nothere.mp4"}], "Container": {"Format": "mp4"}}
    d = run(cos, b, "Concat", "in/a.mp4", {"ConcatTemplate": missing, "Output": out(b, "cat/never.mp4")})
    assert (d["State"], d["Code"]) == ("Failed", "InputFileNotExist"), d
    direct = {
        "ConcatFragment": [{"Url": "in/wide.mp4"}],
        "Container": {"Format": "mp4"},
        "DirectConcat": "true",
    }
    d = run(cos, b, "Concat", "in/a.mp4", {"ConcatTemplate": direct, "Output": out(b, "cat/never.mp4")})
    assert (d["State"], d["Code"]) == ("Failed", "InvalidParameter"), d
    assert not cos.object_exists(Bucket=b, Key="cat/never.mp4")


@pytest.mark.parametrize(
    "concat",
    [
        {"Container": {"Format": "mp4"}},
        {"ConcatFragment": [{"Url": "http://example.com/in/b.mp4"}], "Container": {"Format": "mp4"}},
        {
            "ConcatFragment": [{"Url": f"http://other-1250000000.cos.{REGION}.myqcloud.com/b.mp4"}],
            "Container": {"Format": "mp4"},
        },
        {"ConcatFragment": [{"Url": "file:///etc/passwd"}], "Container": {"Format": "mp4"}},
        {"ConcatFragment": [{"Url": "concat:in/a.mp4|in/b.mp4"}], "Container": {"Format": "mp4"}},
        {"ConcatFragment": [{"Url": "in/b.mp4"}], "Container": {"Format": "avi"}},
        {"ConcatFragment": [{"Url": "in/b.mp4"}]},
        {"ConcatFragment": [{"Url": "in/b.mp4"}], "Container": {"Format": "mp4"}, "Index": "2"},
        {
            "ConcatFragment": [{"Url": "in/b.mp4", "StartTime": "2", "EndTime": "1"}],
            "Container": {"Format": "mp4"},
        },
        {
            "ConcatFragment": [{"Url": "in/b.mp4"}],
            "Container": {"Format": "mp4"},
            "SceneChangeInfo": {"Mode": "FADE"},
        },
        {"ConcatFragment": [{"Url": "in/b.mp4"}], "Container": {"Format": "mp4"}, "Audio": {"Codec": "opus"}},
        {
            "ConcatFragment": [{"Url": "in/b.mp4"}],
            "Container": {"Format": "flv"},
            "Video": {"Codec": "H.265"},
        },
    ],
)
def test_concat_refusals(srv: ServerProcess, cos: CosS3Client, concat: dict[str, Any]) -> None:
    with pytest.raises(CosServiceError) as exc:
        submit(
            cos,
            srv.bucket,
            "Concat",
            "in/a.mp4",
            {"ConcatTemplate": concat, "Output": out(srv.bucket, "x.mp4")},
        )
    assert (exc.value.get_status_code(), exc.value.get_error_code()) == (400, "InvalidArgument")
    assert "Concat" in exc.value.get_error_msg()


def test_fragment_urls_resolve_to_keys_of_the_bucket() -> None:
    b = "examplebucket-1250000000"
    assert fragment_key("in/a.mp4", b) == "in/a.mp4"
    assert fragment_key("/in/a.mp4", b) == "in/a.mp4"
    assert (
        fragment_key(f"http://{b}.cos.ap-beijing.myqcloud.com/in/a%20b.mp4?q-sign-algorithm=sha1", b)
        == "in/a b.mp4"
    )
    assert fragment_key(f"https://{b}.cos.ap-guangzhou.tencentcos.cn/x.mp4", b) == "x.mp4"
    assert fragment_key(f"https://cos.ap-guangzhou.myqcloud.com/{b}/dir/x.mp4", b) == "dir/x.mp4"
    for bad in (
        "",
        "http://127.0.0.1:8080/examplebucket-1250000000/x.mp4",
        f"http://user:pw@{b}.cos.ap-guangzhou.myqcloud.com/x.mp4",
        f"ftp://{b}.cos.ap-guangzhou.myqcloud.com/x.mp4",
        "https://cos.ap-guangzhou.myqcloud.com/other-1250000000/x.mp4",
        "file:/etc/passwd",
        "data:video/mp4;base64,AAAA",
        f"https://{b}.cos.ap-guangzhou.myqcloud.com/",
        "a\nb.mp4",
    ):
        with pytest.raises(InvalidOperation):
            fragment_key(bad, b)


def test_clip_order() -> None:
    def frag(key: str, mode: str = "", index: int | None = None) -> Fragment:
        return Fragment(key, mode, None, None, index)

    def keys(spec: ConcatSpec, input_key: str) -> list[str]:
        return [c.key for c in clip_order(spec, input_key)]

    spec = ConcatSpec([frag("x", index=1), frag("y", index=0)], "mp4")
    assert keys(spec, "in") == ["in", "y", "x"]
    spec.input_index = 2
    assert keys(spec, "in") == ["y", "x", "in"]
    assert keys(spec, "") == ["y", "x"]
    assert keys(ConcatSpec([frag("e", "End"), frag("s", "Start")], "mp4"), "in") == ["s", "in", "e"]
    assert Clip("k", 0.0, None).trimmed is False and Clip("k", 0.5).trimmed is True


def test_segment_and_extract_helpers() -> None:
    assert cut_points(4.02, 2) == [2.0]  # no 0.02 s piece at the end
    assert cut_points(4.5, 2) == [2.0, 4.0]
    assert cuts_on_keyframes([0.0, 1.0, 2.0, 3.0], 0.0, 3.96, 1.0)
    assert not cuts_on_keyframes([0.0, 1.0, 2.0, 3.0], 0.0, 3.96, 1.5)  # 1.5 has no key frame near
    assert cuts_on_keyframes([0.0, 2.0, 4.0, 6.0], 0.0, 7.9, 5.0)  # 6.0 is close enough after 5.0
    assert container_for("v.mkv", "vp9") == ("matroska", "mkv")
    assert container_for("a/b", "opus") == ("ogg", "ogg")
    assert container_for("a/b.srt", "subrip") == ("srt", "srt")
    with pytest.raises(JobFailed):
        container_for("v.mp3", "h264")


# --------------------------------------------------------------------------- Segment


def test_segment_mp4_pieces_by_stream_copy(srv: ServerProcess, cos: CosS3Client, tmp_path: Path) -> None:
    b = srv.bucket
    op = {"Segment": {"Format": "mp4", "Duration": "1"}, "Output": out(b, "seg/${InputName}-${Number}.mp4")}
    d = run(cos, b, "Segment", "in/four.mp4", op)
    assert d["State"] == "Success", d
    prefix, names, md5s = outputs(d["Operation"]["MediaResult"])
    assert (prefix, names) == ("seg/four-", ["0.mp4", "1.mp4", "2.mp4", "3.mp4"])
    pieces = [fetch(cos, b, prefix + n, tmp_path) for n in names]
    for piece in pieces:
        assert md5s[f"seg/four-{piece.name.rsplit('-', 1)[1]}"] == hashlib.md5(piece.read_bytes()).hexdigest()
        assert abs(duration(piece) - 1.0) < 0.1
        assert frames(piece) == 25
    # Cut on the source's key frames: the video packets are the source's, unchanged.
    source = fetch(cos, b, "in/four.mp4", tmp_path)
    assert [p for piece in pieces for p in video_packets(piece)] == video_packets(source)


def test_segment_ts_forces_key_frames(srv: ServerProcess, cos: CosS3Client, tmp_path: Path) -> None:
    b = srv.bucket
    # One key frame in 4 s: the cuts need new ones, so the video is encoded with them at 1.5 s steps.
    op = {"Segment": {"Format": "ts", "Duration": "1.5"}, "Output": out(b, "segts/p-${Number}.ts")}
    d = run(cos, b, "Segment", "in/onegop.mp4", op)
    assert d["State"] == "Success", d
    prefix, names, _ = outputs(d["Operation"]["MediaResult"])
    assert (prefix, names) == ("segts/p-", ["0.ts", "1.ts", "2.ts"])
    counts = [frames(fetch(cos, b, prefix + n, tmp_path)) for n in names]
    assert counts == [38, 37, 25]  # frames at t >= 1.5 and t >= 3.0 start new pieces
    with av.open(str(tmp_path / "segts_p-1.ts")) as c:
        first = next(p for p in c.demux(video=0) if p.size)
        assert first.is_keyframe
        assert cname(c.streams.audio[0]) == "aac"


def test_segment_single_remux_and_audio_pieces(srv: ServerProcess, cos: CosS3Client, tmp_path: Path) -> None:
    b = srv.bucket
    d = run(
        cos, b, "Segment", "in/four.mp4", {"Segment": {"Format": "mkv"}, "Output": out(b, "remux/four.mkv")}
    )
    assert d["State"] == "Success", d
    prefix, names, md5s = outputs(d["Operation"]["MediaResult"])
    assert (prefix, names) == ("", ["remux/four.mkv"])
    path = fetch(cos, b, "remux/four.mkv", tmp_path)
    assert md5s["remux/four.mkv"] == hashlib.md5(path.read_bytes()).hexdigest()
    assert video_packets(path) == video_packets(fetch(cos, b, "in/four.mp4", tmp_path))
    assert d["Operation"]["MediaInfo"]["Format"]["FormatName"] == "matroska,webm"
    # aac cannot go into .mp3: the audio is encoded to MP3, cut in two pieces without ${Number}
    d = run(
        cos,
        b,
        "Segment",
        "in/four.mp4",
        {"Segment": {"Format": "mp3", "Duration": "2"}, "Output": out(b, "au/s.mp3")},
    )
    assert d["State"] == "Success", d
    prefix, names, _ = outputs(d["Operation"]["MediaResult"])
    assert (prefix, names) == ("au/s-", ["0.mp3", "1.mp3"])
    for n in names:
        with av.open(str(fetch(cos, b, prefix + n, tmp_path))) as c:
            assert not c.streams.video and cname(c.streams.audio[0]) == "mp3"
            assert abs(float(c.duration or 0) / 1e6 - 2.0) < 0.1


def test_segment_hls_encrypted(srv: ServerProcess, cos: CosS3Client, tmp_path: Path) -> None:
    b = srv.bucket
    uri = "https://keys.example.com/v1/key?id=7"
    op = {
        "Segment": {"Format": "hls", "Duration": "1", "HlsEncrypt": {"IsHlsEncrypt": "true", "UriKey": uri}},
        "Output": out(b, "enc/play.m3u8"),
    }
    d = run(cos, b, "Segment", "in/four.mp4", op)
    assert d["State"] == "Success", d
    assert d["Operation"]["MediaResult"]["OutputFile"]["ObjectName"] == "enc/play.m3u8"
    playlist = read(cos, b, "enc/play.m3u8").decode()
    m = re.search(r'^#EXT-X-KEY:METHOD=AES-128,URI="([^"]+)",IV=0x([0-9a-f]{32})$', playlist, re.M)
    assert m and m[1] == uri, playlist
    key = read(cos, b, "enc/play.key")
    assert len(key) == 16
    segments = re.findall(r"^(play-\d+\.ts)$", playlist, re.M)
    assert segments == ["play-0.ts", "play-1.ts", "play-2.ts", "play-3.ts"]
    seg = tmp_path / "seg.ts"
    seg.write_bytes(read(cos, b, "enc/play-1.ts"))
    with pytest.raises(av.error.FFmpegError):
        frames(seg)  # ciphertext
    # FFmpeg's crypto protocol decrypts with the stored key and the playlist's IV: a decodable TS.
    assert frames(Path(f"crypto:{seg}"), options={"key": key.hex(), "iv": m[2]}) == 25

    # Without UriKey the playlist points at the key object beside it, so the folder plays as it is.
    op = {
        "Segment": {"Format": "hls", "Duration": "2", "HlsEncrypt": {"IsHlsEncrypt": "true"}},
        "Output": out(b, "enc2/p.m3u8"),
    }
    d = run(cos, b, "Segment", "in/four.mp4", op)
    assert d["State"] == "Success", d
    local = tmp_path / "enc2"
    local.mkdir()
    for obj in cos.list_objects(Bucket=b, Prefix="enc2/")["Contents"]:
        (local / obj["Key"].split("/")[-1]).write_bytes(read(cos, b, obj["Key"]))
    assert sorted(p.name for p in local.iterdir()) == ["p-0.ts", "p-1.ts", "p.key", "p.m3u8"]
    assert 'URI="p.key"' in (local / "p.m3u8").read_text()
    assert frames(local / "p.m3u8", options={"allowed_extensions": "ALL"}) == 100


@pytest.mark.parametrize(
    "segment",
    [
        {"Duration": "5"},
        {"Format": "avi"},
        {"Format": "mp4", "Duration": "0"},
        {"Format": "mp4", "HlsEncrypt": {"IsHlsEncrypt": "true"}},
        {"Format": "hls", "HlsEncrypt": {"IsHlsEncrypt": "true", "UriKey": 'x"\n#EXT-X-ENDLIST'}},
        {"Format": "mp4", "TranscodeIndex": "1"},
        {"Format": "mp4", "StartTime": "3", "EndTime": "2"},
    ],
)
def test_segment_refusals(srv: ServerProcess, cos: CosS3Client, segment: dict[str, Any]) -> None:
    with pytest.raises(CosServiceError) as exc:
        submit(
            cos,
            srv.bucket,
            "Segment",
            "in/four.mp4",
            {"Segment": segment, "Output": out(srv.bucket, "x.mp4")},
        )
    assert (exc.value.get_status_code(), exc.value.get_error_code()) == (400, "InvalidArgument")
    assert "Segment" in exc.value.get_error_msg()


# --------------------------------------------------------------------------- StreamExtract


def extract_op(bucket: str, entries: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "Output": {
            "Region": REGION,
            "Bucket": bucket,
            "StreamExtract": [{"Index": i, "Object": o} for i, o in entries],
        }
    }


def test_stream_extract(srv: ServerProcess, cos: CosS3Client, tmp_path: Path) -> None:
    b = srv.bucket
    d = run(
        cos,
        b,
        "StreamExtract",
        "in/a.mp4",
        extract_op(b, [("0", "ex/video.mp4"), ("1", "ex/${InputName}.aac")]),
    )
    assert d["State"] == "Success", d
    prefix, names, md5s = outputs(d["Operation"]["MediaResult"])
    assert (prefix, names) == ("", ["ex/video.mp4", "ex/a.aac"])
    video, audio = (fetch(cos, b, n, tmp_path) for n in names)
    assert md5s["ex/video.mp4"] == hashlib.md5(video.read_bytes()).hexdigest()
    with av.open(str(video)) as c:
        assert [s.type for s in c.streams] == ["video"] and cname(c.streams.video[0]) == "h264"
    assert video_packets(video) == video_packets(fetch(cos, b, "in/a.mp4", tmp_path))
    with av.open(str(audio)) as c:
        assert c.format.name == "aac" and [cname(s) for s in c.streams] == ["aac"]

    # Keys without an extension get the codec's usual container: VP9 in WebM, Opus in Ogg.
    d = run(cos, b, "StreamExtract", "in/vp9.webm", extract_op(b, [("1", "ex/sound"), ("0", "ex/picture")]))
    assert d["State"] == "Success", d
    with av.open(str(fetch(cos, b, "ex/sound", tmp_path))) as c:
        assert c.format.name == "ogg" and [cname(s) for s in c.streams] == ["opus"]
    with av.open(str(fetch(cos, b, "ex/picture", tmp_path))) as c:
        assert "webm" in c.format.name and [cname(s) for s in c.streams] == ["vp9"]


def test_stream_extract_failures(srv: ServerProcess, cos: CosS3Client) -> None:
    b = srv.bucket
    d = run(cos, b, "StreamExtract", "in/a.mp4", extract_op(b, [("0", "exf/v.mp4"), ("5", "exf/none.mp4")]))
    assert (d["State"], d["Code"]) == ("Failed", "InvalidParameter"), d
    assert "Index 5" in d["Message"]
    d = run(cos, b, "StreamExtract", "in/a.mp4", extract_op(b, [("0", "exf/v.mp3")]))
    assert (d["State"], d["Code"]) == ("Failed", "InvalidParameter"), d
    d = run(cos, b, "StreamExtract", "in/wide.mp4", extract_op(b, [("1", "exf/a.aac")]))  # no audio stream
    assert (d["State"], d["Code"]) == ("Failed", "InvalidParameter"), d
    assert not cos.list_objects(Bucket=b, Prefix="exf/").get("Contents")


@pytest.mark.parametrize(
    "output",
    [
        {"Region": REGION, "Bucket": "examplebucket-1250000000"},
        {"Region": REGION, "Bucket": "examplebucket-1250000000", "StreamExtract": {"Object": "x.mp4"}},
        {
            "Region": REGION,
            "Bucket": "examplebucket-1250000000",
            "StreamExtract": {"Index": "-1", "Object": "x.mp4"},
        },
        {"Region": REGION, "Bucket": "examplebucket-1250000000", "StreamExtract": {"Index": "0"}},
        {
            "Region": REGION,
            "Bucket": "examplebucket-1250000000",
            "StreamExtract": [{"Index": "0", "Object": "x.mp4"}, {"Index": "1", "Object": "x.mp4"}],
        },
        {"Bucket": "examplebucket-1250000000", "StreamExtract": {"Index": "0", "Object": "x.mp4"}},
    ],
)
def test_stream_extract_refusals(srv: ServerProcess, cos: CosS3Client, output: dict[str, Any]) -> None:
    assert output.get("Bucket") == srv.bucket
    with pytest.raises(CosServiceError) as exc:
        submit(cos, srv.bucket, "StreamExtract", "in/a.mp4", {"Output": output})
    assert (exc.value.get_status_code(), exc.value.get_error_code()) == (400, "InvalidArgument")
    assert "StreamExtract" in exc.value.get_error_msg()


def test_concat_of_fragments_alone_needs_no_input(
    srv: ServerProcess, cos: CosS3Client, tmp_path: Path
) -> None:
    b = srv.bucket
    concat = {
        "ConcatFragment": [
            {"Url": "in/c.mp4", "FragmentIndex": "1"},
            {"Url": "in/b.mp4", "FragmentIndex": "0"},
        ],
        "Container": {"Format": "mp4"},
    }
    job = {"Tag": "Concat", "Operation": {"ConcatTemplate": concat, "Output": out(b, "cat/no-input.mp4")}}
    r = cos.ci_create_media_jobs(Bucket=b, Jobs=job, Lst={}, ContentType="application/xml")
    jid = r["JobsDetail"][0]["JobId"]
    deadline = time.monotonic() + 60
    while (d := cos.ci_get_media_jobs(Bucket=b, JobIDs=jid)["JobsDetail"][0])["State"] not in (
        "Success",
        "Failed",
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert d["State"] == "Success", d
    path = fetch(cos, b, "cat/no-input.mp4", tmp_path)
    assert frames(path) == 90  # b (40) then c (50), by FragmentIndex
    # a Tag that needs an input still refuses a request without one
    with pytest.raises(CosServiceError) as exc:
        cos.ci_create_media_jobs(
            Bucket=b, Jobs={"Tag": "Transcode", "Operation": {}}, Lst={}, ContentType="application/xml"
        )
    assert exc.value.get_error_code() == "InvalidArgument"
