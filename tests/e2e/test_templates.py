"""Media templates through cos-python-sdk-v5: CRUD, listing, Official presets, jobs that use them."""

from __future__ import annotations

import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from qcloud_cos import CosS3Client
from qcloud_cos.cos_exception import CosServiceError

from mediajobs.media.probe import probe
from mediajobs.media.samples import make_video
from mediajobs.testing import ServerProcess, running_server
from tests.helpers import raw_request

REGION = "ap-guangzhou"
MP4_FLU = "t02db40900dc1c43ad9bdbd8acec6075c5"  # the Official preset the SDK demos use
H264_MP4_LD = "t0e2b9f4cd25184c6ab73d0c85a6ee9cb5"
SNAPSHOT_320 = "t01d40e440761448fc8c538fb8d5a5b81e"

TRANSCODE: dict[str, Any] = {
    "Container": {"Format": "mp4"},
    "Video": {"Codec": "H.264", "Width": "256", "Crf": "30", "Preset": "veryfast"},
    "Audio": {"Codec": "aac", "Samplerate": "22050", "Channels": "1", "Bitrate": "48"},
    "TimeInterval": {"Start": "0", "Duration": "1"},
}
SNAPSHOT: dict[str, Any] = {
    "Mode": "Interval",
    "Width": "128",
    "Height": "128",
    "Count": "1",
    "SnapshotOutMode": "OnlySnapshot",
}
ANIMATION: dict[str, Any] = {
    "Container": {"Format": "gif"},
    "Video": {"Codec": "gif", "Width": "320", "Fps": "10", "AnimateFramesPerSecond": "10"},
    "TimeInterval": {"Start": "0", "Duration": "2"},
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(
        tmp_path_factory.mktemp("templates"), args=["--workers", "1", "--test-controls"]
    ) as s:
        d = tmp_path_factory.mktemp("media")
        s.client().upload_file(
            Bucket=s.bucket,
            Key="in/clip.mp4",
            LocalFilePath=str(make_video(d / "clip.mp4", seconds=2.0, width=320, height=180)),
        )
        yield s


@pytest.fixture(scope="module")
def cos(srv: ServerProcess) -> CosS3Client:
    return srv.client()


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def create(cos: CosS3Client, bucket: str, tag: str, name: str, params: dict[str, Any]) -> dict[str, Any]:
    resp = cos.ci_create_template(Bucket=bucket, Template={"Tag": tag, "Name": name, **params})
    template: dict[str, Any] = resp["Template"]
    return template


def submit(cos: CosS3Client, bucket: str, op: dict[str, Any], out: str, **kw: Any) -> dict[str, Any]:
    operation = {**op, "Output": {"Region": REGION, "Bucket": bucket, "Object": out}}
    resp = cos.ci_create_media_jobs(
        Bucket=bucket,
        Jobs={"Tag": "Transcode", "Input": {"Object": "in/clip.mp4"}, "Operation": operation},
        Lst={},
        ContentType="application/xml",
        **kw,
    )
    detail: dict[str, Any] = resp["JobsDetail"][0]
    return detail


def wait(cos: CosS3Client, bucket: str, job_id: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        d: dict[str, Any] = cos.ci_get_media_jobs(Bucket=bucket, JobIDs=job_id)["JobsDetail"][0]
        if d["State"] in ("Success", "Failed"):
            return d
        assert time.monotonic() < deadline, d
        time.sleep(0.05)


def fetch(cos: CosS3Client, bucket: str, key: str, tmp_path: Path) -> Path:
    path = tmp_path / key.replace("/", "_")
    cos.download_file(Bucket=bucket, Key=key, DestFilePath=str(path))
    return path


def error_of(exc: pytest.ExceptionInfo[CosServiceError]) -> tuple[int, str, str]:
    e = exc.value
    return e.get_status_code(), e.get_error_code(), e.get_error_msg()


# ---- create / describe / update / delete ------------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "params", "container"),
    [("Transcode", TRANSCODE, "TransTpl"), ("Snapshot", {"Snapshot": SNAPSHOT}, "Snapshot"),
     ("Animation", ANIMATION, "TransTpl")],
)  # fmt: skip
def test_crud(srv: ServerProcess, cos: CosS3Client, tag: str, params: dict[str, Any], container: str) -> None:
    name = unique(tag.lower())
    t = create(cos, srv.bucket, tag, name, params)
    tid = t["TemplateId"]
    assert tid.startswith("t1") and len(tid) == 34
    assert (t["Name"], t["Tag"], t["Category"], t["BucketId"]) == (name, tag, "Custom", srv.bucket)
    stored = t[container]
    if tag == "Snapshot":
        assert stored == SNAPSHOT
    else:
        assert stored["Container"] == params["Container"] and stored["Video"] == params["Video"]
    assert t["CreateTime"] == t["UpdateTime"] and t["CreateTime"][-5] == "+"

    listed = cos.ci_get_template(Bucket=srv.bucket, Ids=tid)
    assert listed["TotalCount"] == "1" and listed["TemplateList"][0] == t

    if tag == "Transcode":
        changed = {**params, "Video": {**params["Video"], "Width": "320"}}
    elif tag == "Snapshot":
        changed = {"Snapshot": {**SNAPSHOT, "Count": "3"}}
    else:
        changed = {**params, "Video": {**params["Video"], "Width": "160"}}
    u = cos.ci_update_template(
        Bucket=srv.bucket, TemplateId=tid, Template={"Tag": tag, "Name": name + "_v2", **changed}
    )["Template"]
    assert u["TemplateId"] == tid and u["Name"] == name + "_v2"
    assert u["CreateTime"] == t["CreateTime"] and u["UpdateTime"] >= t["UpdateTime"]
    again = cos.ci_get_template(Bucket=srv.bucket, Ids=tid)["TemplateList"][0]
    if tag == "Snapshot":
        assert again["Snapshot"]["Count"] == "3"
    else:
        assert again["TransTpl"]["Video"]["Width"] == changed["Video"]["Width"]

    # Tag cannot change on update.
    with pytest.raises(CosServiceError) as exc:
        cos.ci_update_template(
            Bucket=srv.bucket, TemplateId=tid, Template={"Tag": "Watermark", "Name": name, "Watermark": {}}
        )
    assert error_of(exc)[:2] == (400, "InvalidArgument")

    assert cos.ci_delete_template(Bucket=srv.bucket, TemplateId=tid)["TemplateId"] == tid
    assert cos.ci_get_template(Bucket=srv.bucket, Ids=tid)["TotalCount"] == "0"
    for call in (
        lambda: cos.ci_delete_template(Bucket=srv.bucket, TemplateId=tid),
        lambda: cos.ci_update_template(
            Bucket=srv.bucket, TemplateId=tid, Template={"Tag": tag, "Name": name, **params}
        ),
    ):
        with pytest.raises(CosServiceError) as exc:
            call()
        assert error_of(exc)[:2] == (404, "NoSuchResource")


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ({"Tag": "Transcode", "Name": "x", "Video": {"Codec": "H.264"}}, "Container"),
        ({"Tag": "Transcode", "Name": "x", "Container": {"Format": "avi"}}, "Transcode"),
        ({"Tag": "Transcode", "Name": "x", "Container": {"Format": "mp4"}, "Video": {"Width": "99999"}},
         "Width"),
        ({"Tag": "Animation", "Name": "x", "Container": {"Format": "gif"}}, "Video"),
        ({"Tag": "Snapshot", "Name": "x"}, "Snapshot"),
        ({"Tag": "Transcode", "Container": {"Format": "mp4"}}, "Name"),
        ({"Tag": "Transcode", "Name": "bad name!", "Container": {"Format": "mp4"}}, "Name"),
        ({"Tag": "Transcode", "Name": "n" * 65, "Container": {"Format": "mp4"}}, "Name"),
        ({"Tag": "Frobnicate", "Name": "x"}, "Frobnicate"),
        ({"Name": "x", "Container": {"Format": "mp4"}}, "Tag"),
    ],
)  # fmt: skip
def test_bad_templates_are_refused(
    srv: ServerProcess, cos: CosS3Client, template: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(CosServiceError) as exc:
        cos.ci_create_template(Bucket=srv.bucket, Template=template)
    status, code, message = error_of(exc)
    assert (status, code) == (400, "InvalidArgument")
    assert fragment in message


def test_tags_without_a_processor_are_stored(srv: ServerProcess, cos: CosS3Client) -> None:
    mark = {"Type": "Text", "Pos": "TopLeft", "LocMode": "Absolute", "Dx": "10", "Dy": "10",
            "Text": {"Text": "hello", "FontSize": "20", "FontType": "simfang.ttf", "FontColor": "0xFFFFFF",
                     "Transparency": "80"}}  # fmt: skip
    t = create(cos, srv.bucket, "Watermark", unique("wm"), {"Watermark": mark})
    assert t["Watermark"] == mark
    tts = create(
        cos, srv.bucket, "Tts", unique("tts"), {"Mode": "Asyc", "Codec": "mp3", "VoiceType": "ruxue"}
    )
    assert tts["TtsTpl"] == {"Mode": "Asyc", "Codec": "mp3", "VoiceType": "ruxue"}
    # A job may name a template of its Tag, but a Tag this server cannot run is still refused.
    with pytest.raises(CosServiceError) as exc:
        cos.ci_create_media_jobs(
            Bucket=srv.bucket,
            Jobs={"Tag": "Tts", "Input": {"Object": "in/clip.mp4"},
                  "Operation": {"TemplateId": tts["TemplateId"],
                                "Output": {"Region": REGION, "Bucket": srv.bucket, "Object": "o.mp3"}}},
            Lst={},
            ContentType="application/xml",
        )  # fmt: skip
    assert error_of(exc)[:2] == (400, "InvalidArgument")
    assert "Tts" in error_of(exc)[2]


# ---- describe: ids, name, tag, paging -----------------------------------------------------------


def test_describe_by_ids_name_tag_and_pages(srv: ServerProcess, cos: CosS3Client) -> None:
    prefix = unique("page")
    made = [create(cos, srv.bucket, "Transcode", f"{prefix}_{i}", TRANSCODE)["TemplateId"] for i in range(5)]
    snap = create(cos, srv.bucket, "Snapshot", f"{prefix}_snap", {"Snapshot": SNAPSHOT})["TemplateId"]

    missing = "t1" + "0" * 32
    r = cos.ci_get_template(Bucket=srv.bucket, Ids=f"{made[3]},{missing},{made[1]}")
    assert r["TotalCount"] == "2"
    assert [t["TemplateId"] for t in r["TemplateList"]] == [made[1], made[3]]  # creation order

    r = cos.ci_get_template(Bucket=srv.bucket, Name=prefix, PageSize=100)
    assert r["TotalCount"] == "6"
    assert {t["TemplateId"] for t in r["TemplateList"]} == {*made, snap}
    assert (
        cos.ci_get_template(Bucket=srv.bucket, Name=prefix + "_snap")["TemplateList"][0]["TemplateId"] == snap
    )
    assert cos.ci_get_template(Bucket=srv.bucket, Name="nosuch_" + prefix)["TotalCount"] == "0"

    pages = [
        cos.ci_get_template(Bucket=srv.bucket, Name=prefix + "_", PageNumber=n, PageSize=4) for n in (1, 2, 3)
    ]
    assert [p["TotalCount"] for p in pages] == ["6", "6", "6"]
    assert [(p["PageNumber"], p["PageSize"]) for p in pages] == [("1", "4"), ("2", "4"), ("3", "4")]
    ids = [t["TemplateId"] for p in pages for t in p.get("TemplateList", [])]
    assert ids == [*made, snap]  # oldest first, nothing repeated or lost across pages

    # The Python SDK cannot send `tag`; Go and Node do.
    status, _, body = raw_request(
        srv, "GET", "/template", params={"tag": "Snapshot", "name": prefix, "category": "Custom"}
    )
    assert status == 200, body
    root = ET.fromstring(body)
    assert root.findtext("TotalCount") == "1"
    assert [e.findtext("TemplateId") for e in root.findall("TemplateList")] == [snap]
    assert root.find("TemplateList/Snapshot/Count") is not None

    status, _, body = raw_request(srv, "GET", "/template", params={"tag": "Nonsense"})
    assert status == 400 and b"InvalidArgument" in body
    with pytest.raises(CosServiceError) as exc:
        cos.ci_get_template(Bucket=srv.bucket, Category="Mine")
    assert error_of(exc)[:2] == (400, "InvalidArgument")


# ---- Official presets ---------------------------------------------------------------------------


def test_official_presets(srv: ServerProcess, cos: CosS3Client) -> None:
    first = cos.ci_get_template(Bucket=srv.bucket, Category="Official", PageSize=100)
    presets = {t["TemplateId"]: t for t in first["TemplateList"]}
    assert int(first["TotalCount"]) == len(presets) >= 40
    assert all(i.startswith("t0") and len(i) == 34 for i in presets)
    assert all(t["Category"] == "Official" for t in presets.values())
    flu = presets[MP4_FLU]
    assert (flu["Name"], flu["Tag"]) == ("MP4-FLU", "Transcode")
    assert flu["TransTpl"]["Container"]["Format"] == "mp4"
    assert flu["TransTpl"]["Video"]["Width"] == "640"
    assert presets[H264_MP4_LD]["Name"] == "H264-MP4-LD-360P"
    assert presets["t0e165bef65ed24d568eeecc8661248af6"]["TransTpl"]["Container"]["Format"] == "flv"
    snap = presets[SNAPSHOT_320]
    assert snap["Tag"] == "Snapshot" and (snap["Snapshot"]["Width"], snap["Snapshot"]["Height"]) == (
        "320",
        "180",
    )
    gif = presets["t04373959a69c04d47b62fd214dd13d8e9"]
    assert gif["Name"] == "gif_320*180_1" and gif["TransTpl"]["Video"]["AnimateOnlyKeepKeyFrame"] == "true"

    by_id = cos.ci_get_template(Bucket=srv.bucket, Category="Official", Ids=f"{MP4_FLU},{SNAPSHOT_320}")
    assert [t["TemplateId"] for t in by_id["TemplateList"]] == [MP4_FLU, SNAPSHOT_320]
    by_name = cos.ci_get_template(Bucket=srv.bucket, Category="Official", Name="snapshot_", PageSize=100)
    assert by_name["TotalCount"] == "3"
    # Official ones are not in the Custom listing.
    assert cos.ci_get_template(Bucket=srv.bucket, Ids=MP4_FLU)["TotalCount"] == "0"

    for call in (
        lambda: cos.ci_delete_template(Bucket=srv.bucket, TemplateId=MP4_FLU),
        lambda: cos.ci_update_template(
            Bucket=srv.bucket,
            TemplateId=MP4_FLU,
            Template={"Tag": "Transcode", "Name": "mine", "Container": {"Format": "mp4"}},
        ),
    ):
        with pytest.raises(CosServiceError) as exc:
            call()
        assert error_of(exc)[:2] == (400, "InvalidRequest")
    again = cos.ci_get_template(Bucket=srv.bucket, Category="Official", Ids=MP4_FLU)["TemplateList"][0]
    assert again == flu


def test_every_official_preset_passes_its_processor() -> None:
    """Each preset, as a job would carry it, is accepted by the processor of its Tag."""
    from mediajobs.jobs.templates import OFFICIAL_TEMPLATES
    from mediajobs.nodes import build_element
    from mediajobs.processors import REGISTRY
    from mediajobs.processors.base import Submission

    assert {t.tag for t in OFFICIAL_TEMPLATES.values()} == {"Transcode", "Snapshot", "Animation"}
    for t in OFFICIAL_TEMPLATES.values():
        op = ET.Element("Operation")
        op.append(build_element(t.shape.job_node, t.params))
        out = ET.SubElement(op, "Output")
        for name, value in (("Region", REGION), ("Bucket", "b-1250000000"), ("Object", "out/x")):
            ET.SubElement(out, name).text = value
        REGISTRY[t.tag].validate(Submission("b-1250000000", "in.mp4", op))


def test_job_with_an_official_preset(srv: ServerProcess, cos: CosS3Client, tmp_path: Path) -> None:
    d = submit(cos, srv.bucket, {"TemplateId": MP4_FLU}, "out/preset.mp4")
    assert d["Operation"]["TemplateId"] == MP4_FLU and d["Operation"]["TemplateName"] == "MP4-FLU"
    d = wait(cos, srv.bucket, d["JobId"])
    assert d["State"] == "Success", d
    info = probe(fetch(cos, srv.bucket, "out/preset.mp4", tmp_path))
    v, a = info.video[0], info.audio[0]
    assert (v.codec_name, v.width, v.height) == ("h264", 640, 360)  # width fixed, height proportional
    assert (a.codec_name, a.sample_rate, a.channels) == ("aac", 44100, 2)
    assert abs(info.duration - 2.0) < 0.2


# ---- jobs using Custom templates ----------------------------------------------------------------


def test_transcode_job_by_template(srv: ServerProcess, cos: CosS3Client, tmp_path: Path) -> None:
    name = unique("job")
    tid = create(cos, srv.bucket, "Transcode", name, TRANSCODE)["TemplateId"]
    # Held in Running for a moment: the template changes meanwhile, and the job must not notice.
    created = submit(
        cos, srv.bucket, {"TemplateId": tid}, "out/${InputName}-tpl.mp4", Metadata={"x-mediajobs-hold": "1"}
    )
    op = created["Operation"]
    assert (op["TemplateId"], op["TemplateName"]) == (tid, name)
    cos.ci_update_template(
        Bucket=srv.bucket,
        TemplateId=tid,
        Template={"Tag": "Transcode", "Name": name, "Container": {"Format": "flv"}},
    )
    d = wait(cos, srv.bucket, created["JobId"])
    assert d["State"] == "Success", d
    assert d["Operation"]["TemplateName"] == name
    assert d["Operation"]["Transcode"]["Video"]["Width"] == "256"
    assert d["Operation"]["MediaResult"]["OutputFile"]["ObjectName"] == "out/clip-tpl.mp4"
    info = probe(fetch(cos, srv.bucket, "out/clip-tpl.mp4", tmp_path))
    assert info.demuxer == "mov"  # mp4
    v, a = info.video[0], info.audio[0]
    assert (v.codec_name, v.width, v.height) == ("h264", 256, 144)
    assert (a.codec_name, a.sample_rate, a.channels) == ("aac", 22050, 1)
    assert abs(info.duration - 1.0) < 0.15  # TimeInterval.Duration of the template


def test_template_wins_over_inline_node(srv: ServerProcess, cos: CosS3Client, tmp_path: Path) -> None:
    tid = create(cos, srv.bucket, "Transcode", unique("wins"), TRANSCODE)["TemplateId"]
    inline = {"Container": {"Format": "flv"}, "Video": {"Codec": "H.264", "Width": "320"}}
    d = wait(
        cos,
        srv.bucket,
        submit(cos, srv.bucket, {"TemplateId": tid, "Transcode": inline}, "out/wins.mp4")["JobId"],
    )
    assert d["State"] == "Success", d
    info = probe(fetch(cos, srv.bucket, "out/wins.mp4", tmp_path))
    assert info.demuxer == "mov"  # the template's mp4, not the inline flv
    assert (info.video[0].width, info.video[0].height) == (256, 144)
    assert info.audio[0].sample_rate == 22050


def test_unknown_or_mismatched_template_ids(srv: ServerProcess, cos: CosS3Client) -> None:
    snap = create(cos, srv.bucket, "Snapshot", unique("snap"), {"Snapshot": SNAPSHOT})["TemplateId"]
    unknown = "t1" + "f" * 32
    cases = [
        ({"TemplateId": unknown}, unknown),
        ({"TemplateId": snap}, snap),  # a Snapshot template for a Transcode job
        ({"TemplateId": SNAPSHOT_320}, SNAPSHOT_320),  # an Official one of the wrong Tag
        ({"TemplateId": "t1nothex"}, "t1nothex"),
        ({"Transcode": {"Container": {"Format": "mp4"}}, "WatermarkTemplateId": unknown}, unknown),
        ({"Transcode": {"Container": {"Format": "mp4"}}, "WatermarkTemplateId": MP4_FLU}, MP4_FLU),
    ]
    for op, named in cases:
        with pytest.raises(CosServiceError) as exc:
            submit(cos, srv.bucket, op, "out/never.mp4")
        status, code, message = error_of(exc)
        assert (status, code) == (400, "InvalidArgument"), op
        assert named in message
    # A template of another bucket does not exist for this one.
    other = "other-1250000000"
    cos.create_bucket(Bucket=other)
    theirs = create(cos, other, "Transcode", unique("theirs"), TRANSCODE)["TemplateId"]
    with pytest.raises(CosServiceError) as exc:
        submit(cos, srv.bucket, {"TemplateId": theirs}, "out/never.mp4")
    assert error_of(exc)[:2] == (400, "InvalidArgument")
    assert cos.ci_get_template(Bucket=srv.bucket, Ids=theirs)["TotalCount"] == "0"
    with pytest.raises(CosServiceError) as exc:
        cos.ci_delete_template(Bucket=srv.bucket, TemplateId=theirs)
    assert error_of(exc)[:2] == (404, "NoSuchResource")
