"""`mediajobs serve --database-url postgresql+psycopg://...`: objects, multipart uploads and jobs
through cos-python-sdk-v5, with every row in PostgreSQL and workers woken by NOTIFY."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qcloud_cos import CosS3Client

from mediajobs.media.samples import make_video
from mediajobs.testing import running_server
from tests.helpers import md5, wait_job


def _state(cos: CosS3Client, bucket: str, job_id: str, states: tuple[str, ...]) -> dict[str, Any]:
    return wait_job(cos, bucket, job_id, states, timeout=60)


def test_serve_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    video = make_video(tmp_path / "clip.mp4", seconds=1.0, width=160, height=120)
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * (10 * 1024))  # 2.5 MiB: three parts of 1 MiB
    args = ["--workers", "1", "--test-controls"]
    with running_server(tmp_path / "data", database_url=pg_url, args=args) as srv:
        cos = srv.client()
        b = srv.bucket
        assert not (tmp_path / "data" / "mediajobs.db").exists()  # nothing went to SQLite

        # Objects: inline (small) and file-backed, a multipart upload, listing in byte order.
        cos.put_object(Bucket=b, Key="notes/a b.txt", Body=b"hello postgres")
        got = cos.get_object(Bucket=b, Key="notes/a b.txt")["Body"].get_raw_stream().read()
        assert got == b"hello postgres"
        cos.upload_file(Bucket=b, Key="in/clip.mp4", LocalFilePath=str(video))
        cos.upload_file(Bucket=b, Key="in/big.bin", LocalFilePath=str(big), PartSize=1, MAXThread=3)
        assert cos.head_object(Bucket=b, Key="in/big.bin")["ETag"].strip('"').endswith("-3")
        out = tmp_path / "big.copy"
        cos.download_file(Bucket=b, Key="in/big.bin", DestFilePath=str(out))
        assert md5(out.read_bytes()) == md5(big.read_bytes())
        listing = cos.list_objects(Bucket=b, Delimiter="/")
        assert [p["Prefix"] for p in listing["CommonPrefixes"]] == ["in/", "notes/"]
        assert [o["Key"] for o in cos.list_objects(Bucket=b, Prefix="in/")["Contents"]] == [
            "in/big.bin",
            "in/clip.mp4",
        ]

        # A MediaInfo job runs on a worker that PostgreSQL woke, and is read back and listed.
        job = {"Tag": "MediaInfo", "Input": {"Object": "in/clip.mp4"}}
        created = cos.ci_create_media_jobs(Bucket=b, Jobs=job, Lst={}, ContentType="application/xml")
        job_id = created["JobsDetail"][0]["JobId"]
        done = _state(cos, b, job_id, ("Success", "Failed"))
        assert done["State"] == "Success", done
        assert done["Operation"]["MediaInfo"]["Stream"]["Video"]["Width"] == "160"
        listed = cos.ci_list_media_jobs(Bucket=b, Tag="MediaInfo", Size=10)["JobsDetail"]
        assert [j["JobId"] for j in (listed if isinstance(listed, list) else [listed])] == [job_id]

        # A cancel reaches the worker running the job (its watcher is woken the same way).
        held = cos.ci_create_media_jobs(
            Bucket=b, Jobs=job, Lst={}, ContentType="application/xml", Metadata={"x-mediajobs-hold": "60"}
        )["JobsDetail"][0]["JobId"]
        _state(cos, b, held, ("Running",))
        cos.ci_cancel_jobs(Bucket=b, JobID=held)
        assert _state(cos, b, held, ("Cancel",))["State"] == "Cancel"
        again = cos.ci_create_media_jobs(Bucket=b, Jobs=job, Lst={}, ContentType="application/xml")
        assert _state(cos, b, again["JobsDetail"][0]["JobId"], ("Success", "Failed"))["State"] == "Success"

        cos.delete_object(Bucket=b, Key="in/big.bin")
        assert "Traceback" not in srv.log(), srv.log()
