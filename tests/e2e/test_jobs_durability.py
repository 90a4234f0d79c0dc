"""Callbacks (both formats, a receiver that fails first) and a SIGKILL of the whole server mid-work."""

from __future__ import annotations

import json
import signal
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from qcloud_cos import CosS3Client

from mediajobs.media.samples import make_video
from mediajobs.testing import ServerProcess, running_server


class Receiver:
    """A small HTTP server that records callback bodies; it can refuse the first N."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_left = fail_first
        self.received: list[tuple[str, bytes]] = []
        self.attempts = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with outer.lock:
                    outer.attempts += 1
                    fail = outer.fail_left > 0
                    if fail:
                        outer.fail_left -= 1
                    else:
                        outer.received.append((self.headers.get("Content-Type", ""), body))
                self.send_response(500 if fail else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/cb"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def wait(self, count: int, timeout: float) -> list[tuple[str, bytes]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.05)
        raise AssertionError(f"got {len(self.received)} callbacks of {count} ({self.attempts} attempts)")

    def close(self) -> None:
        self.httpd.shutdown()


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("v") / "in.mp4", seconds=1.0)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def submit(cos: CosS3Client, bucket: str, key: str, **extra: Any) -> str:
    job = {"Tag": "MediaInfo", "Input": {"Object": key}, **extra}
    return str(
        cos.ci_create_media_jobs(Bucket=bucket, Jobs=job, Lst={}, ContentType="application/xml")[
            "JobsDetail"
        ][0]["JobId"]
    )


def test_callbacks_xml_json_and_queue_notify(tmp_path: Path, video: Path, receiver: Receiver) -> None:
    with running_server(tmp_path / "d") as srv:
        cos = srv.client()
        cos.upload_file(Bucket=srv.bucket, Key="in.mp4", LocalFilePath=str(video))
        xml_job = submit(cos, srv.bucket, "in.mp4", CallBack=receiver.url, Operation={"UserData": "u1"})
        json_job = submit(cos, srv.bucket, "in.mp4", CallBack=receiver.url, CallBackFormat="JSON")
        quiet = submit(cos, srv.bucket, "in.mp4", CallBack="no")
        got = receiver.wait(2, 20)
        by_type = {ctype: body for ctype, body in got}
        root = ET.fromstring(by_type["application/xml"])
        assert root.tag == "Response" and root.findtext("EventName") == "TaskFinish"
        detail = root.find("JobsDetail")
        assert detail is not None
        assert detail.findtext("JobId") == xml_job and detail.findtext("State") == "Success"
        assert detail.findtext("Operation/UserData") == "u1"
        assert detail.findtext("Operation/MediaInfo/Stream/Video/Width") == "320"
        body = json.loads(by_type["application/json"])
        assert body["EventName"] == "TaskFinish" and body["JobsDetail"]["JobId"] == json_job
        assert body["JobsDetail"]["State"] == "Success" and "Message" not in body["JobsDetail"]
        assert body["JobsDetail"]["Operation"]["MediaInfo"]["Stream"]["Video"]["CodecName"] == "h264"
        # the queue's NotifyConfig applies to jobs without their own CallBack
        qid = cos.ci_get_media_queue(Bucket=srv.bucket)["QueueList"][0]["QueueId"]
        cos.ci_update_media_queue(
            Bucket=srv.bucket, QueueId=qid, ContentType="application/xml",
            Request={"Name": "q", "QueueID": qid, "State": "Active",
                     "NotifyConfig": {"Url": receiver.url, "Event": "TaskFinish", "Type": "Url", "State": "On", "ResultFormat": "JSON"}},
        )  # fmt: skip
        by_queue = submit(cos, srv.bucket, "in.mp4")
        got = receiver.wait(3, 20)
        assert json.loads(got[2][1])["JobsDetail"]["JobId"] == by_queue
        time.sleep(0.5)
        assert quiet not in b"".join(b for _, b in receiver.received).decode()


def test_receiver_that_fails_twice_gets_it_on_the_third_try(tmp_path: Path, video: Path) -> None:
    receiver = Receiver(fail_first=2)
    try:
        with running_server(tmp_path / "d") as srv:
            cos = srv.client()
            cos.upload_file(Bucket=srv.bucket, Key="in.mp4", LocalFilePath=str(video))
            job = submit(cos, srv.bucket, "in.mp4", CallBack=receiver.url)
            # meanwhile other jobs are not held up by the failing receiver
            other = submit(cos, srv.bucket, "in.mp4")
            deadline = time.monotonic() + 10
            while (
                cos.ci_get_media_jobs(Bucket=srv.bucket, JobIDs=other)["JobsDetail"][0]["State"] != "Success"
            ):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            got = receiver.wait(1, 30)
            assert receiver.attempts == 3
            assert ET.fromstring(got[0][1]).findtext("JobsDetail/JobId") == job
    finally:
        receiver.close()


def states(cos: CosS3Client, bucket: str, ids: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for i in range(0, len(ids), 10):
        r = cos.ci_get_media_jobs(Bucket=bucket, JobIDs=",".join(ids[i : i + 10]))
        out.update({j["JobId"]: j for j in r["JobsDetail"]})
    return out


def test_sigkill_of_the_server_loses_and_duplicates_nothing(tmp_path: Path, video: Path) -> None:
    receiver = Receiver()
    data_dir = tmp_path / "d"
    args = ["--test-controls", "--lease-seconds", "2", "--workers", "2"]
    srv = ServerProcess(data_dir, 0)
    try:
        with running_server(data_dir, args=args) as srv:
            cos = srv.client()
            cos.upload_file(Bucket=srv.bucket, Key="in.mp4", LocalFilePath=str(video))
            ids = []
            for _ in range(6):
                job = {"Tag": "MediaInfo", "Input": {"Object": "in.mp4"}, "CallBack": receiver.url}
                r = cos.ci_create_media_jobs(
                    Bucket=srv.bucket, Jobs=job, Lst={}, ContentType="application/xml",
                    Metadata={"x-mediajobs-hold": "1.5"},
                )  # fmt: skip
                ids.append(r["JobsDetail"][0]["JobId"])
            deadline = time.monotonic() + 10
            while not any(j["State"] == "Running" for j in states(cos, srv.bucket, ids).values()):
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert srv.proc is not None
            srv.proc.send_signal(signal.SIGKILL)  # the API process and, with it, its workers
            srv.proc.wait(10)
            time.sleep(0.5)
            srv.start()
            deadline = time.monotonic() + 60
            while True:
                now = states(cos, srv.bucket, ids)
                if all(j["State"] in ("Success", "Failed", "Cancel") for j in now.values()):
                    break
                assert time.monotonic() < deadline, {k: v["State"] for k, v in now.items()}
                time.sleep(0.1)
            assert {j["State"] for j in now.values()} == {"Success"}
            for j in now.values():
                assert j["Operation"]["MediaInfo"]["Stream"]["Video"]["Width"] == "320"
            got = receiver.wait(len(ids), 30)
            delivered = [ET.fromstring(body).findtext("JobsDetail/JobId") for _, body in got]
            assert sorted(set(delivered)) == sorted(ids)
            # A Success is recorded once: every callback reports the one final state.
            assert all(ET.fromstring(body).findtext("JobsDetail/State") == "Success" for _, body in got)
    finally:
        srv.stop()
        receiver.close()
