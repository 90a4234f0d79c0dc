"""The job APIs through cos-python-sdk-v5: create, query, list, cancel, queues, picture jobs, buckets."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from qcloud_cos import CosS3Client
from qcloud_cos.cos_exception import CosServiceError

from mediajobs.media.samples import make_audio, make_image, make_video
from mediajobs.testing import ServerProcess, running_server
from tests.helpers import raw_request, wait_job

QUEUE_PAUSE_TIMEOUT = 30


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("jobs"), args=["--test-controls", "--workers", "2"]) as s:
        yield s


@pytest.fixture(scope="module")
def cos(srv: ServerProcess) -> CosS3Client:
    return srv.client()


@pytest.fixture(scope="module")
def media(srv: ServerProcess, cos: CosS3Client, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A few real inputs in the bucket: key by name."""
    d = tmp_path_factory.mktemp("media")
    files = {
        "video.mp4": make_video(d / "video.mp4", seconds=2.0, width=320, height=240),
        "audio.mp3": make_audio(d / "audio.mp3", seconds=1.0),
        "image.png": make_image(d / "image.png", 64, 48),
    }
    keys = {}
    for name, path in files.items():
        key = f"inputs/{name}"
        cos.upload_file(Bucket=srv.bucket, Key=key, LocalFilePath=str(path))
        keys[name] = key
    cos.put_object(Bucket=srv.bucket, Key="inputs/notes.txt", Body=b"this is not media at all")
    d2 = d / "evil.m3u8"
    d2.write_text(
        f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\nfile://{files['video.mp4']}\n#EXT-X-ENDLIST\n"
    )
    cos.upload_file(Bucket=srv.bucket, Key="inputs/evil.m3u8", LocalFilePath=str(d2))
    d3 = d / "evil.ffconcat"
    d3.write_text(f"ffconcat version 1.0\nfile '{files['video.mp4']}'\n")
    cos.upload_file(Bucket=srv.bucket, Key="inputs/evil.ffconcat", LocalFilePath=str(d3))
    return keys


def create(
    cos: CosS3Client, bucket: str, key: str, *, tag: str = "MediaInfo", **extra: Any
) -> dict[str, Any]:
    job = {"Tag": tag, "Input": {"Object": key}, **extra}
    resp = cos.ci_create_media_jobs(Bucket=bucket, Jobs=job, Lst={}, ContentType="application/xml")
    detail: dict[str, Any] = resp["JobsDetail"][0]
    return detail


def hold(cos: CosS3Client, bucket: str, key: str, seconds: float, **extra: Any) -> dict[str, Any]:
    job = {"Tag": "MediaInfo", "Input": {"Object": key}, **extra}
    resp = cos.ci_create_media_jobs(
        Bucket=bucket,
        Jobs=job,
        Lst={},
        ContentType="application/xml",
        Metadata={"x-mediajobs-hold": str(seconds)},
    )
    detail: dict[str, Any] = resp["JobsDetail"][0]
    return detail


def wait_for(
    cos: CosS3Client, bucket: str, job_id: str, states: tuple[str, ...], timeout: float = 30
) -> dict[str, Any]:
    return wait_job(cos, bucket, job_id, states, timeout=timeout)


def failing(fn: Callable[..., Any], *args: Any, **kw: Any) -> tuple[int, str]:
    with pytest.raises(CosServiceError) as exc:
        fn(*args, **kw)
    assert exc.value.get_request_id()
    return exc.value.get_status_code(), exc.value.get_error_code()


def test_mediainfo_job_end_to_end(srv: ServerProcess, cos: CosS3Client, media: dict[str, str]) -> None:
    d = create(cos, srv.bucket, media["video.mp4"], Operation={"UserData": "my data", "JobLevel": "1"})
    assert d["Code"] == "Success" and d["JobId"].startswith("j") and len(d["JobId"]) == 33
    assert d["State"] in ("Submitted", "Running", "Success")
    assert d["Input"] == {"BucketId": srv.bucket, "Object": media["video.mp4"], "Region": srv.region}
    assert d["Operation"]["UserData"] == "my data" and d["Operation"]["JobLevel"] == "1"
    assert d["QueueId"].startswith("p") and len(d["QueueId"]) == 33
    assert d["CreationTime"].endswith("+0800")
    done = wait_for(cos, srv.bucket, d["JobId"], ("Success", "Failed"))
    assert done["State"] == "Success", done
    assert done["Progress"] == "100" and done["EndTime"] != "-" and done["StartTime"] != "-"
    info = done["Operation"]["MediaInfo"]
    video, audio = info["Stream"]["Video"], info["Stream"]["Audio"]
    assert (video["Width"], video["Height"], video["CodecName"]) == ("320", "240", "h264")
    assert audio["CodecName"] == "aac" and audio["SampleRate"] == "44100"
    assert abs(float(info["Format"]["Duration"]) - 2.0) < 0.2
    assert info["Format"]["NumStream"] == "2"
    assert done["Operation"]["UserData"] == "my data"


def test_mediainfo_of_audio_and_image(srv: ServerProcess, cos: CosS3Client, media: dict[str, str]) -> None:
    a = wait_for(cos, srv.bucket, create(cos, srv.bucket, media["audio.mp3"])["JobId"], ("Success", "Failed"))
    assert a["State"] == "Success" and a["Operation"]["MediaInfo"]["Stream"]["Audio"]["CodecName"] == "mp3"
    i = wait_for(cos, srv.bucket, create(cos, srv.bucket, media["image.png"])["JobId"], ("Success", "Failed"))
    assert i["State"] == "Success"
    assert i["Operation"]["MediaInfo"]["Stream"]["Video"]["Width"] == "64"


@pytest.mark.parametrize(
    ("key", "code"),
    [
        ("inputs/does-not-exist.mp4", "InputFileNotExist"),
        ("inputs/notes.txt", "InputFileInvalid"),
        ("inputs/evil.m3u8", "InputFileInvalid"),
        ("inputs/evil.ffconcat", "InputFileInvalid"),
    ],
)
def test_bad_inputs_fail_the_job(
    srv: ServerProcess, cos: CosS3Client, media: dict[str, str], key: str, code: str
) -> None:
    done = wait_for(cos, srv.bucket, create(cos, srv.bucket, key)["JobId"], ("Success", "Failed"))
    assert (done["State"], done["Code"]) == ("Failed", code), done
    assert done["Message"] and "MediaInfo" not in (done.get("Operation") or {})


def test_describe_many_and_missing_ids(srv: ServerProcess, cos: CosS3Client, media: dict[str, str]) -> None:
    ids = [create(cos, srv.bucket, media["video.mp4"])["JobId"] for _ in range(3)]
    missing = "j" + "0" * 32
    r = cos.ci_get_media_jobs(Bucket=srv.bucket, JobIDs=",".join([*ids, missing]))
    assert [j["JobId"] for j in r["JobsDetail"]] == ids
    assert r["NonExistJobIds"] == missing
    r = cos.ci_get_media_jobs(Bucket=srv.bucket, JobIDs=ids[0])
    assert "NonExistJobIds" not in r
    r = cos.ci_get_media_jobs(Bucket=srv.bucket, JobIDs=f"{missing},j{'1' * 32}")
    assert not r.get("JobsDetail") and r["NonExistJobIds"] == [missing, "j" + "1" * 32]
    # On the .ci. host every path is a CI call, so a malformed id is simply not found.
    ci_host = f"{srv.bucket}.ci.{srv.region}.myqcloud.com"
    status, _, out = raw_request(srv, "GET", f"/jobs/{ids[0]},notanid", host=ci_host)
    assert status == 200 and b"<NonExistJobIds>notanid</NonExistJobIds>" in out and ids[0].encode() in out
    eleven = ",".join(["j" + f"{i:032x}" for i in range(11)])
    assert failing(cos.ci_get_media_jobs, Bucket=srv.bucket, JobIDs=eleven) == (400, "InvalidArgument")


def test_list_filters_orders_and_paging(srv: ServerProcess, cos: CosS3Client, media: dict[str, str]) -> None:
    tag_key = f"inputs/list-{uuid.uuid4().hex[:6]}.mp4"
    cos.copy_object(
        Bucket=srv.bucket,
        Key=tag_key,
        CopySource={"Bucket": srv.bucket, "Key": media["video.mp4"], "Region": srv.region},
    )
    start = time.strftime("%Y-%m-%dT%H:%M:%S+0800", time.gmtime(time.time() + 8 * 3600 - 1))
    mine = [create(cos, srv.bucket, tag_key)["JobId"] for _ in range(7)]
    for j in mine:
        wait_for(cos, srv.bucket, j, ("Success",))

    def walk(size: int, order: str, **kw: Any) -> list[str]:
        seen: list[str] = []
        token = ""
        while True:
            r = cos.ci_list_media_jobs(Bucket=srv.bucket, Tag="MediaInfo", Size=size, OrderByTime=order, NextToken=token,
                                       StartCreationTime=start, **kw)  # fmt: skip
            seen += [j["JobId"] for j in r.get("JobsDetail") or [] if j["Input"]["Object"] == tag_key]
            token = r.get("NextToken") or ""
            if not token:
                return seen

    desc = walk(3, "Desc")
    assert desc == list(reversed(mine))
    assert walk(2, "Asc") == mine
    assert walk(100, "Desc", States="Success") == list(reversed(mine))
    assert walk(100, "Desc", States="Failed,Cancel") == []
    queue_id = cos.ci_get_media_queue(Bucket=srv.bucket)["QueueList"][0]["QueueId"]
    assert walk(5, "Asc", QueueId=queue_id) == mine
    future = time.strftime("%Y-%m-%dT%H:%M:%S+0800", time.gmtime(time.time() + 8 * 3600 + 3600))
    r = cos.ci_list_media_jobs(Bucket=srv.bucket, Tag="MediaInfo", StartCreationTime=future)
    assert not r.get("JobsDetail") and not r.get("NextToken")
    r = cos.ci_list_media_jobs(Bucket=srv.bucket, Tag="Transcode")
    assert not r.get("JobsDetail")


def test_paging_neither_skips_nor_repeats_while_jobs_arrive(
    srv: ServerProcess, cos: CosS3Client, media: dict[str, str]
) -> None:
    key = f"inputs/paging-{uuid.uuid4().hex[:6]}.mp4"
    cos.copy_object(
        Bucket=srv.bucket,
        Key=key,
        CopySource={"Bucket": srv.bucket, "Key": media["video.mp4"], "Region": srv.region},
    )
    before = [create(cos, srv.bucket, key)["JobId"] for _ in range(12)]
    stop = threading.Event()
    arrived: list[str] = []

    def keep_creating() -> None:
        while not stop.is_set():
            arrived.append(create(cos, srv.bucket, key)["JobId"])
            time.sleep(0.01)

    t = threading.Thread(target=keep_creating)
    t.start()
    new: list[str] = []
    try:
        for order, expected in (("Desc", list(reversed(before))), ("Asc", before)):
            seen: list[str] = []
            token = ""
            while True:
                r = cos.ci_list_media_jobs(
                    Bucket=srv.bucket, Tag="MediaInfo", Size=5, OrderByTime=order, NextToken=token
                )
                seen += [j["JobId"] for j in r.get("JobsDetail") or [] if j["Input"]["Object"] == key]
                token = r.get("NextToken") or ""
                if not token:
                    break
            assert len(seen) == len(set(seen)), "a job was repeated"
            got = [j for j in seen if j in set(before)]
            assert got == expected, "a job was skipped or reordered"
            if order == "Asc":
                new = [j for j in seen if j not in set(before)]
    finally:
        stop.set()
        t.join()
    # Walking oldest-first also reaches jobs created during the walk, in their order. (Compared
    # once the creator has stopped: a job can be listed before its create call has returned.)
    assert new == [j for j in arrived if j in set(new)]


def test_list_bad_parameters(srv: ServerProcess, cos: CosS3Client) -> None:
    bucket = srv.bucket
    assert failing(cos.ci_list_media_jobs, Bucket=bucket, Tag="MediaInfo", Size=101) == (
        400,
        "InvalidArgument",
    )
    assert failing(cos.ci_list_media_jobs, Bucket=bucket, Tag="MediaInfo", Size=0) == (400, "InvalidArgument")
    assert failing(cos.ci_list_media_jobs, Bucket=bucket, Tag="MediaInfo", States="Done") == (
        400,
        "InvalidArgument",
    )
    assert failing(cos.ci_list_media_jobs, Bucket=bucket, Tag="MediaInfo", OrderByTime="Up") == (
        400,
        "InvalidArgument",
    )
    assert failing(cos.ci_list_media_jobs, Bucket=bucket, Tag="MediaInfo", StartCreationTime="yesterday") == (
        400,
        "InvalidArgument",
    )
    assert failing(
        cos.ci_list_media_jobs, Bucket=bucket, Tag="MediaInfo", EndCreationTime="2022-13-45T99:00:00+0800"
    ) == (400, "InvalidArgument")
    assert failing(cos.ci_list_media_jobs, Bucket=bucket, Tag="MediaInfo", NextToken="forged") == (
        400,
        "InvalidArgument",
    )
    # a real token, replayed with another filter or order, is refused
    for _ in range(3):
        create(cos, bucket, "inputs/video.mp4")
    token = cos.ci_list_media_jobs(Bucket=bucket, Tag="MediaInfo", Size=1)["NextToken"]
    assert token
    assert failing(
        cos.ci_list_media_jobs, Bucket=bucket, Tag="MediaInfo", Size=1, NextToken=token, OrderByTime="Asc"
    ) == (400, "InvalidArgument")
    assert failing(
        cos.ci_list_media_jobs, Bucket=bucket, Tag="MediaInfo", Size=1, NextToken=token, States="Success"
    ) == (400, "InvalidArgument")
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert failing(cos.ci_list_media_jobs, Bucket=bucket, Tag="MediaInfo", Size=1, NextToken=tampered) == (
        400,
        "InvalidArgument",
    )
    # the same token is fine with the same filters
    cos.ci_list_media_jobs(Bucket=bucket, Tag="MediaInfo", Size=1, NextToken=token)


def test_cancel(srv: ServerProcess, cos: CosS3Client, media: dict[str, str]) -> None:
    running = hold(cos, srv.bucket, media["video.mp4"], 30)
    wait_for(cos, srv.bucket, running["JobId"], ("Running",))
    t0 = time.monotonic()
    assert cos.ci_cancel_jobs(Bucket=srv.bucket, JobID=running["JobId"]) == ""
    done = wait_for(cos, srv.bucket, running["JobId"], ("Cancel",), timeout=5)
    assert time.monotonic() - t0 < 5 and done["EndTime"] != "-"
    assert "MediaInfo" not in done["Operation"]
    cos.ci_cancel_jobs(Bucket=srv.bucket, JobID=running["JobId"])  # idempotent
    finished = wait_for(cos, srv.bucket, create(cos, srv.bucket, media["video.mp4"])["JobId"], ("Success",))
    assert failing(cos.ci_cancel_jobs, Bucket=srv.bucket, JobID=finished["JobId"]) == (400, "InvalidRequest")
    assert failing(cos.ci_cancel_jobs, Bucket=srv.bucket, JobID="j" + "0" * 32) == (404, "NoSuchResource")
    # a job id of another bucket is unknown here
    cos.create_bucket(Bucket="otherjobs-1250000000")
    assert failing(cos.ci_cancel_jobs, Bucket="otherjobs-1250000000", JobID=finished["JobId"]) == (
        404,
        "NoSuchResource",
    )
    r = cos.ci_get_media_jobs(Bucket="otherjobs-1250000000", JobIDs=finished["JobId"])
    assert r["NonExistJobIds"] == finished["JobId"]
    # Node's form: PUT /jobs/<id>?cancel= (signed) and the demo's bare PUT /jobs/<id>
    waiting = hold(cos, srv.bucket, media["video.mp4"], 30)
    status, _, _ = raw_request(srv, "PUT", f"/jobs/{waiting['JobId']}", params={"cancel": ""})
    assert status == 200
    assert wait_for(cos, srv.bucket, waiting["JobId"], ("Cancel",))["State"] == "Cancel"


def test_queue_pause_resume_and_priority(srv: ServerProcess, cos: CosS3Client, media: dict[str, str]) -> None:
    queues = cos.ci_get_media_queue(Bucket=srv.bucket)["QueueList"]
    assert len(queues) == 1 and queues[0]["Category"] == "Transcoding" and queues[0]["State"] == "Active"
    qid = queues[0]["QueueId"]
    r = cos.ci_update_media_queue(
        Bucket=srv.bucket,
        QueueId=qid,
        Request={"Name": "paused-q", "QueueID": qid, "State": "Paused"},
        ContentType="application/xml",
    )
    assert r["Queue"][0]["State"] == "Paused" and r["Queue"][0]["Name"] == "paused-q"
    try:
        low = create(cos, srv.bucket, media["video.mp4"], Operation={"JobLevel": "0"})
        high = create(cos, srv.bucket, media["video.mp4"], Operation={"JobLevel": "2"})
        assert low["State"] == high["State"] == "Pause"
        time.sleep(0.3)
        r = cos.ci_get_media_jobs(Bucket=srv.bucket, JobIDs=f"{low['JobId']},{high['JobId']}")
        assert [j["State"] for j in r["JobsDetail"]] == ["Pause", "Pause"]
    finally:
        cos.ci_update_media_queue(
            Bucket=srv.bucket,
            QueueId=qid,
            Request={"Name": "queue-1", "QueueID": qid, "State": "Active"},
            ContentType="application/xml",
        )
    lo = wait_for(cos, srv.bucket, low["JobId"], ("Success",))
    hi = wait_for(cos, srv.bucket, high["JobId"], ("Success",))
    assert hi["StartTime"] <= lo["StartTime"]
    assert failing(cos.ci_update_media_queue, Bucket=srv.bucket, QueueId="p" + "0" * 32,
                   Request={"State": "Paused"}, ContentType="application/xml") == (404, "NoSuchResource")  # fmt: skip
    assert failing(cos.ci_update_media_queue, Bucket=srv.bucket, QueueId=qid,
                   Request={"State": "Sleeping"}, ContentType="application/xml") == (400, "InvalidArgument")  # fmt: skip


def test_picture_endpoints(srv: ServerProcess, cos: CosS3Client, media: dict[str, str]) -> None:
    pq = cos.ci_get_media_pic_queue(Bucket=srv.bucket)["QueueList"]
    assert len(pq) == 1 and pq[0]["Category"] == "PicProcessing"
    qid = pq[0]["QueueId"]
    r = cos.ci_update_media_pic_queue(
        Bucket=srv.bucket,
        QueueId=qid,
        Request={"Name": "pics", "QueueID": qid, "State": "Active"},
        ContentType="application/xml",
    )
    assert r["Queue"][0]["Name"] == "pics"
    job = {
        "Tag": "PicProcess",
        "Input": {"Object": media["image.png"]},
        "Operation": {
            "PicProcess": {"IsPicInfo": "true", "ProcessRule": "imageMogr2/rotate/90"},
            "Output": {"Region": srv.region, "Bucket": srv.bucket, "Object": "out.png"},
        },
    }
    created = cos.ci_create_media_pic_jobs(Bucket=srv.bucket, Jobs=job, Lst={}, ContentType="application/xml")
    cid = created["JobsDetail"][0]["JobId"]
    assert cid.startswith("c") and len(cid) == 33 and created["JobsDetail"][0]["QueueId"] == qid
    deadline = time.monotonic() + 30
    while (d := cos.ci_get_media_pic_jobs(Bucket=srv.bucket, JobIDs=cid)["JobsDetail"][0])["State"] not in (
        "Success",
        "Failed",
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert d["State"] == "Success", d
    result = d["Operation"]["PicProcessResult"]
    assert result["ObjectName"] == "out.png"
    assert (result["ProcessResult"]["Width"], result["ProcessResult"]["Height"]) == (
        "48",
        "64",
    )  # 64x48 turned
    assert result["OriginalInfo"]["ImageInfo"]["Width"] == "64"
    assert result["UploadResult"]["ProcessResults"]["Object"]["Key"] == "out.png"
    body = cos.get_object(Bucket=srv.bucket, Key="out.png")["Body"].get_raw_stream().read()
    assert body[:8] == b"\x89PNG\r\n\x1a\n"
    listed = cos.ci_list_media_pic_jobs(Bucket=srv.bucket, Tag="PicProcess")
    assert [j["JobId"] for j in listed["JobsDetail"]] == [cid]
    bad = {**job, "Operation": {**job["Operation"], "PicProcess": {"ProcessRule": "imageMogr2/rotate/abc"}}}
    with pytest.raises(CosServiceError) as exc:
        cos.ci_create_media_pic_jobs(Bucket=srv.bucket, Jobs=bad, Lst={}, ContentType="application/xml")
    assert (exc.value.get_status_code(), exc.value.get_error_code()) == (400, "InvalidArgument")
    assert "rotate" in exc.value.get_error_msg()
    missing = "c" + "0" * 32
    assert cos.ci_get_media_pic_jobs(Bucket=srv.bucket, JobIDs=missing)["NonExistJobIds"] == missing
    # a media job id is not a picture job
    media_job = create(cos, srv.bucket, media["video.mp4"])["JobId"]
    status, _, out = raw_request(
        srv, "GET", f"/pic_jobs/{media_job}", host=f"{srv.bucket}.ci.{srv.region}.myqcloud.com"
    )
    assert status == 200 and f"<NonExistJobIds>{media_job}</NonExistJobIds>".encode() in out


def test_media_buckets(srv: ServerProcess, cos: CosS3Client) -> None:
    r = cos.ci_get_media_bucket(Regions=srv.region)
    names = [b["Name"] for b in r["MediaBucketList"]]
    assert srv.bucket in names and r["TotalCount"] == str(len(names))


def test_bad_create_requests(srv: ServerProcess, cos: CosS3Client, media: dict[str, str]) -> None:
    b = srv.bucket
    cases: list[tuple[dict[str, Any], str]] = [
        ({"Input": {"Object": media["video.mp4"]}}, "InvalidArgument"),  # no Tag
        ({"Tag": "Bogus", "Input": {"Object": media["video.mp4"]}}, "InvalidArgument"),
        ({"Tag": "Tts", "Input": {"Object": media["video.mp4"]}}, "InvalidArgument"),
        ({"Tag": "MediaInfo"}, "InvalidArgument"),  # no Input.Object
        (
            {
                "Tag": "MediaInfo",
                "Input": {"Object": media["video.mp4"]},
                "Operation": {"UserData": "x" * 1025},
            },
            "InvalidArgument",
        ),
        (
            {
                "Tag": "MediaInfo",
                "Input": {"Object": media["video.mp4"]},
                "Operation": {"UserData": "caf\u00e9"},
            },
            "InvalidArgument",
        ),
        (
            {"Tag": "MediaInfo", "Input": {"Object": media["video.mp4"]}, "Operation": {"JobLevel": "3"}},
            "InvalidArgument",
        ),
        (
            {"Tag": "MediaInfo", "Input": {"Object": media["video.mp4"]}, "QueueId": "p" + "0" * 32},
            "InvalidArgument",
        ),
        ({"Tag": "PicProcess", "Input": {"Object": media["video.mp4"]}}, "InvalidArgument"),
        (
            {"Tag": "MediaInfo", "Input": {"Object": media["video.mp4"]}, "CallBackFormat": "YAML"},
            "InvalidArgument",
        ),
    ]
    before = cos.ci_list_media_jobs(Bucket=b, Tag="MediaInfo", Size=100)
    for job, code in cases:
        with pytest.raises(CosServiceError) as exc:
            cos.ci_create_media_jobs(Bucket=b, Jobs=job, Lst={}, ContentType="application/xml")
        assert (exc.value.get_status_code(), exc.value.get_error_code()) == (400, code), job
        assert exc.value.get_error_msg()
    pic_queue = cos.ci_get_media_pic_queue(Bucket=b)["QueueList"][0]["QueueId"]
    with pytest.raises(CosServiceError) as exc:
        create(cos, b, media["video.mp4"], QueueId=pic_queue)
    assert exc.value.get_error_code() == "InvalidArgument"
    raw_bodies = [
        b"<Request><Tag>MediaInfo</Tag>",
        b"<Job><Tag>MediaInfo</Tag></Job>",
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><Request><Tag>&b;</Tag></Request>',
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><Request><Tag>MediaInfo</Tag><Input><Object>&x;</Object></Input></Request>',
        b"",
    ]
    for body in raw_bodies:
        status, _, out = raw_request(
            srv, "POST", "/jobs", body=body, headers={"Content-Type": "application/xml"}
        )
        assert status == 400 and (b"MalformedXML" in out or b"MissingRequestBody" in out), (body, out)
        assert b"root:" not in out
    status, _, out = raw_request(
        srv, "POST", "/jobs", body=b"<Request>" + b" " * (1024 * 1024 + 10) + b"</Request>"
    )
    assert status == 400 and b"XMLSizeLimit" in out
    after = cos.ci_list_media_jobs(Bucket=b, Tag="MediaInfo", Size=100)
    assert len(after.get("JobsDetail") or []) == len(before.get("JobsDetail") or [])


def test_several_operations_make_several_jobs(
    srv: ServerProcess, cos: CosS3Client, media: dict[str, str]
) -> None:
    body = (
        "<Request><Input><Object>" + media["video.mp4"] + "</Object></Input>"
        "<Operation><Tag>MediaInfo</Tag><UserData>one</UserData></Operation>"
        "<Operation><Tag>MediaInfo</Tag><UserData>two</UserData></Operation></Request>"
    ).encode()
    status, _, out = raw_request(srv, "POST", "/jobs", body=body, headers={"Content-Type": "application/xml"})
    assert status == 200 and out.count(b"<JobsDetail>") == 2
    # one bad operation refuses the whole request
    bad = body.replace(b"<Tag>MediaInfo</Tag><UserData>two", b"<Tag>Bogus</Tag><UserData>two")
    status, _, out = raw_request(srv, "POST", "/jobs", body=bad, headers={"Content-Type": "application/xml"})
    assert status == 400


def test_ci_host_routes_and_objects_named_like_routes(srv: ServerProcess, cos: CosS3Client) -> None:
    cos.put_object(Bucket=srv.bucket, Key="jobs/2024/a.mp4", Body=b"an object, not a job")
    got = cos.get_object(Bucket=srv.bucket, Key="jobs/2024/a.mp4")["Body"].get_raw_stream().read()
    assert got == b"an object, not a job"
    ci_host = f"{srv.bucket}.ci.{srv.region}.myqcloud.com"
    status, _, out = raw_request(srv, "GET", "/queue", host=ci_host)
    assert status == 200 and b"<QueueList>" in out
    status, _, out = raw_request(srv, "GET", "/jobs/2024/a.mp4", host=ci_host)
    assert status == 501 and b"<Code>NotImplemented</Code>" in out
