"""The blob store contract, on local files and on S3 (SeaweedFS): the same tests for both."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ResponseStreamingError

from mediajobs.storage.base import CRC64, BlobStore
from mediajobs.storage.local import LocalBlobStore
from mediajobs.storage.s3 import MAX_COPY_PART, MIN_COPY_PART, S3BlobStore, _copy_ranges, parse_url
from tests.seaweed import Seaweed

MiB = 1024 * 1024


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "local":
        yield LocalBlobStore(tmp_path, fsync=False)
        return
    sw: Seaweed = request.getfixturevalue("seaweed")
    # A prefix of its own per test, and S3's smallest part size so multipart starts early.
    yield S3BlobStore(
        sw.url(f"contract/{uuid.uuid4().hex[:12]}"),
        scratch=tmp_path / "tmp",
        endpoint_url=sw.endpoint,
        access_key=sw.access_key,
        secret_key=sw.secret_key,
        part_size=MIN_COPY_PART,
    )


def put(store: BlobStore, data: bytes, step: int = MiB) -> str:
    w = store.writer()
    for i in range(0, len(data), step):
        w.write(data[i : i + step])
    info = w.commit()
    assert info.blob == w.blob and info.size == len(data)
    assert info.md5_hex == hashlib.md5(data).hexdigest() and info.md5_digest == hashlib.md5(data).digest()
    assert info.crc64 == (CRC64.calc(data) if data else 0)
    return info.blob


def read(store: BlobStore, blob: str, start: int = 0, length: int | None = None, chunk: int = MiB) -> bytes:
    return b"".join(store.read(blob, start, length, chunk))


def s3_uploads(store: BlobStore) -> list[dict[str, Any]]:
    assert isinstance(store, S3BlobStore)
    page = store.client.list_multipart_uploads(Bucket=store.bucket, Prefix=store.prefix)
    return list(page.get("Uploads", []))


def test_small_blob_write_read_ranges(store: BlobStore) -> None:
    data = bytes(range(256)) * 4
    blob = put(store, data, step=100)
    assert store.read_all(blob) == data
    assert read(store, blob) == data
    assert read(store, blob, 1, 3) == data[1:4]
    assert read(store, blob, 1000) == data[1000:]
    assert read(store, blob, 0, 0) == b""
    assert read(store, blob, 1020, 100) == data[1020:]  # a range past the end stops at the end
    assert read(store, blob, len(data)) == b""
    chunks = list(store.read(blob, 10, 500, chunk=128))
    assert b"".join(chunks) == data[10:510] and max(len(c) for c in chunks) <= 128 and len(chunks) >= 4


def test_empty_blob(store: BlobStore) -> None:
    blob = put(store, b"")
    assert read(store, blob) == b"" and store.read_all(blob) == b""


def test_large_blob_is_streamed_in_parts(store: BlobStore) -> None:
    data = os.urandom(12 * MiB + 123)
    blob = put(store, data, step=MiB // 2)
    assert hashlib.md5(read(store, blob)).digest() == hashlib.md5(data).digest()
    boundary = 5 * MiB  # a part boundary on S3
    assert read(store, blob, boundary - 10, 20) == data[boundary - 10 : boundary + 10]
    assert read(store, blob, 11 * MiB) == data[11 * MiB :]
    chunks = list(store.read(blob, 0, 3 * MiB, chunk=MiB))
    assert [len(c) for c in chunks] == [MiB] * 3


def test_concat_small_pieces(store: BlobStore) -> None:
    a, b, c = b"a" * 100, b"b" * 200, os.urandom(3000)
    ids = [put(store, x) for x in (a, b, c)]
    joined = store.concat([(ids[0], 100), (ids[1], 200), (ids[2], 3000)])
    assert joined not in ids
    assert read(store, joined) == a + b + c
    single = store.concat([(ids[2], 3000)])  # Copy: one piece
    assert read(store, single) == c
    for blob in ids:  # the pieces are untouched
        assert store.read_all(blob)


def test_concat_large_pieces_server_side(store: BlobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    pieces = [os.urandom(5 * MiB), os.urandom(6 * MiB + 7), b"tail"]
    ids = [put(store, x) for x in pieces]
    if isinstance(store, S3BlobStore):
        # Every piece but the last is >= 5 MiB: parts are copied by S3, never streamed through us.
        def streamed(_: Any) -> str:
            raise AssertionError("streamed instead of copied on the server")

        monkeypatch.setattr(store, "_concat_streamed", streamed)
    joined = store.concat([(i, len(x)) for i, x in zip(ids, pieces, strict=True)])
    got = read(store, joined)
    assert len(got) == sum(map(len, pieces))
    assert hashlib.md5(got).digest() == hashlib.md5(b"".join(pieces)).digest()
    copy = store.concat([(ids[1], len(pieces[1]))])
    assert read(store, copy, 6 * MiB) == pieces[1][6 * MiB :]
    monkeypatch.undo()
    # A small piece in the middle: S3 refuses such a part, so the bytes are streamed.
    mixed = store.concat([(ids[0], len(pieces[0])), (ids[2], 4), (ids[0], len(pieces[0]))])
    assert hashlib.md5(read(store, mixed)).digest() == hashlib.md5(pieces[0] + b"tail" + pieces[0]).digest()
    if isinstance(store, S3BlobStore):
        assert s3_uploads(store) == []


def test_delete(store: BlobStore) -> None:
    blob = put(store, b"gone soon")
    other = put(store, b"stays")
    store.delete(blob)
    with pytest.raises(FileNotFoundError):
        read(store, blob)
    with pytest.raises(FileNotFoundError):
        store.read_all(blob)
    store.delete(blob)  # deleting twice is fine
    assert store.read_all(other) == b"stays"


def test_abort_leaves_nothing(store: BlobStore, tmp_path: Path) -> None:
    small = store.writer()
    small.write(b"never committed")
    small.abort()
    big = store.writer()
    for _ in range(6):
        big.write(os.urandom(MiB))  # past one part: a multipart upload is under way on S3
    if isinstance(store, S3BlobStore):
        assert len(s3_uploads(store)) == 1
    big.abort()
    big.abort()  # twice is harmless
    for w in (small, big):
        with pytest.raises(FileNotFoundError):
            read(store, w.blob)
    if isinstance(store, S3BlobStore):
        assert s3_uploads(store) == []
    else:
        assert list((tmp_path / "tmp").iterdir()) == []


def test_abort_after_commit_keeps_the_blob(store: BlobStore) -> None:
    w = store.writer()
    w.write(b"kept")
    w.commit()
    w.abort()  # what receive_blob does when the step after the commit fails
    assert store.read_all(w.blob) == b"kept"


def test_sweep_removes_only_old_leftovers(store: BlobStore) -> None:
    left = store.writer()
    for _ in range(6):
        left.write(b"z" * MiB)  # a crash here leaves a multipart upload (S3) or a tmp file (local)
    assert store.sweep_temporary(older_than=3600) == 0  # young: perhaps an upload in flight
    if isinstance(store, S3BlobStore):
        assert len(s3_uploads(store)) == 1
    # A negative age counts every leftover as old, whatever the service's clock resolution.
    assert store.sweep_temporary(older_than=-60) >= 1
    if isinstance(store, S3BlobStore):
        assert s3_uploads(store) == []
    with pytest.raises(OSError):
        left.write(b"z")
        left.commit()
    left.abort()


def test_missing_blob_and_bad_ids(store: BlobStore) -> None:
    with pytest.raises(FileNotFoundError):
        read(store, "0" * 32)
    for bad in ("../../etc/passwd", "ABC", "0" * 31 + "/"):
        with pytest.raises(ValueError):
            read(store, bad)


# ---- S3 only ---------------------------------------------------------------------------------


@pytest.fixture
def s3(seaweed: Seaweed, tmp_path: Path) -> S3BlobStore:
    return S3BlobStore(
        seaweed.url(f"s3only/{uuid.uuid4().hex[:12]}"), scratch=tmp_path, endpoint_url=seaweed.endpoint,
        access_key=seaweed.access_key, secret_key=seaweed.secret_key,
    )  # fmt: skip


def test_s3_writer_buffers_at_most_one_part(s3: S3BlobStore) -> None:
    w = s3.writer()
    most = 0
    for _ in range(20):
        w.write(b"x" * MiB)
        most = max(most, len(w._buf))
    info = w.commit()
    assert most < s3.part_size and info.size == 20 * MiB
    head = s3.client.head_object(Bucket=s3.bucket, Key=s3.key(w.blob))
    assert head["ContentLength"] == 20 * MiB and head["ETag"].endswith('-3"')  # 8 + 8 + 4 MiB


def test_s3_read_resumes_after_a_broken_connection(s3: S3BlobStore) -> None:
    store = s3
    data = os.urandom(3 * MiB)
    blob = put(store, data)
    real = store.client.get_object
    ranges: list[str] = []

    class Breaks:
        """A body that breaks off after its first chunk."""

        def __init__(self, body: Any) -> None:
            self.body = body

        def iter_chunks(self, size: int) -> Iterator[bytes]:
            yield next(iter(self.body.iter_chunks(size)))
            raise ResponseStreamingError(error="connection reset")

        def close(self) -> None:
            self.body.close()

    def get_object(**kw: Any) -> Any:
        ranges.append(kw.get("Range", ""))
        r = real(**kw)
        return {**r, "Body": Breaks(r["Body"])} if len(ranges) == 1 else r

    store.client.get_object = get_object
    assert read(store, blob, 100, None, chunk=MiB) == data[100:]
    assert ranges == ["bytes=100-", f"bytes={100 + MiB}-"]


def test_s3_settings_and_url() -> None:
    assert parse_url("s3://bucket") == ("bucket", "")
    assert parse_url("s3://bucket/a/b/") == ("bucket", "a/b/")
    for bad in ("bucket/x", "http://bucket/x", "s3:///x", "s3://b/x?y=1"):
        with pytest.raises(ValueError):
            parse_url(bad)
    from mediajobs import settings

    conf = settings.load(env={"MEDIAJOBS_STORAGE": "s3://b/p", "MEDIAJOBS_S3_ENDPOINT": "http://h:1"})
    assert (conf.storage, conf.s3_endpoint) == ("s3://b/p", "http://h:1")
    with pytest.raises(ValueError):
        settings.load({"storage": "/var/blobs"}, env={})
    with pytest.raises(ValueError):
        settings.load({"storage": "s3://b", "s3_access_key": "only-half"}, env={})


def test_copy_plan_splits_huge_pieces() -> None:
    G = 1024**3
    assert _copy_ranges([("a", 5 * MiB), ("b", 1)]) == [("a", 0, 5 * MiB - 1), ("b", 0, 0)]
    assert _copy_ranges([("a", 5 * MiB - 1), ("b", 5 * MiB)]) is None
    plan = _copy_ranges([("a", 12 * G), ("b", 3)])
    assert plan is not None and len(plan) == 4
    assert all(last - first + 1 <= MAX_COPY_PART for _, first, last in plan)
    assert plan[0] == ("a", 0, 4 * G - 1) and plan[2] == ("a", 8 * G, 12 * G - 1) and plan[3] == ("b", 0, 2)


def test_sweep_leaves_job_workdirs_to_the_worker(store: BlobStore) -> None:
    # Work directories of jobs share the scratch dir; an old one must not stop the sweep.
    tmp_dir: Path = store.tmp_dir  # type: ignore[attr-defined]
    workdir = tmp_dir / "job-abc-123"
    workdir.mkdir()
    os.utime(workdir, (0, 0))
    assert store.sweep_temporary(older_than=60) == 0
    assert workdir.is_dir()
