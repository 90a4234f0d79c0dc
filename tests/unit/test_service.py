"""ObjectService on a real database (SQLite, then PostgreSQL) and local blobs: listing order,
rollups, paging, crash safety, and writers that race each other."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect

from mediajobs import errors
from mediajobs.db.engine import make_engine, migrate
from mediajobs.db.schema import metadata
from mediajobs.storage.base import CRC64
from mediajobs.storage.local import LocalBlobStore
from mediajobs.storage.service import ObjectService

B = "examplebucket-1250000000"


@pytest.fixture
def svc(db_url: str, tmp_path: Path) -> Iterator[ObjectService]:
    engine = make_engine(db_url)
    migrate(engine)
    s = ObjectService(engine, LocalBlobStore(tmp_path))
    s.create_bucket(B, "ap-guangzhou")
    yield s
    engine.dispose()


def put(svc: ObjectService, key: str, data: bytes = b"x") -> None:
    w = svc.blobs.writer()
    w.write(data)
    svc.put(B, key, w.commit())


def walk(svc: ObjectService, **kw: object) -> list[str]:
    """All items of a listing, page by page, following NextMarker."""
    out: list[str] = []
    marker = ""
    while True:
        page = svc.list_objects(B, marker=marker, **kw)  # type: ignore[arg-type]
        out += [f"P:{p}" for p in page.common_prefixes] + [o.key for o in page.contents]
        if not page.is_truncated:
            return out
        assert page.next_marker
        marker = page.next_marker


def test_crc64_vectors() -> None:
    assert CRC64.calc(b"123456789") == 11051210869376104954
    assert CRC64.calc(b"hello world") == 5981764153023615706
    assert CRC64.calc(b"") == 0


def test_migrations_match_schema(svc: ObjectService) -> None:
    insp = inspect(svc.engine)
    for table in metadata.sorted_tables:
        cols = {c["name"] for c in insp.get_columns(table.name)}
        assert cols == {c.name for c in table.columns}, table.name


def test_listing_byte_order_prefix_delimiter_and_paging(svc: ObjectService) -> None:
    keys = ["a/1", "a/2", "a/b/3", "a+b", "a b", "b/1", "b/2/x", "c", "é/1", "z"]
    for k in keys:
        put(svc, k)
    everything = svc.list_objects(B)
    assert [o.key for o in everything.contents] == sorted(keys, key=lambda k: k.encode())
    page = svc.list_objects(B, delimiter="/")
    assert page.common_prefixes == ["a/", "b/", "é/"]
    assert [o.key for o in page.contents] == ["a b", "a+b", "c", "z"]
    assert svc.list_objects(B, prefix="a/", delimiter="/").common_prefixes == ["a/b/"]
    # Paging one item at a time returns the same items as one page, no repeats.
    for kw in ({}, {"delimiter": "/"}, {"prefix": "a", "delimiter": "/"}, {"prefix": "b/"}):
        one = svc.list_objects(B, max_keys=1000, **kw)  # type: ignore[arg-type]
        expected = sorted(
            [f"P:{p}" for p in one.common_prefixes] + [o.key for o in one.contents],
            key=lambda s: s.removeprefix("P:").encode(),
        )
        got = walk(svc, max_keys=1, **kw)
        assert sorted(got, key=lambda s: s.removeprefix("P:").encode()) == expected
        assert len(got) == len(set(got))


def test_listing_many_keys_under_rolled_up_prefixes(svc: ObjectService) -> None:
    # 2,000 keys under 4 prefixes: a delimiter listing is 4 prefixes, found by seeks, not a scan.
    with svc.engine.connect().execution_options(write=True) as conn, conn.begin():
        from mediajobs.db.schema import objects

        conn.execute(
            objects.insert(),
            [
                dict(bucket=B, key=f"d{i % 4}/{i:05d}", blob="0" * 32, size=0, etag="e", crc64="0",
                     last_modified=0.0, storage_class="STANDARD", headers="{}")
                for i in range(2000)
            ],
        )  # fmt: skip
    page = svc.list_objects(B, delimiter="/", max_keys=3)
    assert page.common_prefixes == ["d0/", "d1/", "d2/"] and page.is_truncated and page.next_marker == "d2/"
    rest = svc.list_objects(B, delimiter="/", marker="d2/")
    assert rest.common_prefixes == ["d3/"] and not rest.is_truncated


def test_overwrite_retires_old_blob(svc: ObjectService, tmp_path: Path) -> None:
    put(svc, "k", b"one")
    first = svc.head(B, "k").blob
    put(svc, "k", b"two")
    meta = svc.head(B, "k")
    assert meta.blob != first
    assert not svc.blobs.path(first).exists()  # type: ignore[attr-defined]
    assert b"".join(svc.blobs.read(meta.blob)) == b"two"


def test_aborted_writer_leaves_nothing(svc: ObjectService, tmp_path: Path) -> None:
    w = svc.blobs.writer()
    w.write(b"partial")
    w.abort()
    assert list((tmp_path / "tmp").iterdir()) == []
    with pytest.raises(errors.MediaJobsError):
        svc.head(B, "never")


def test_bucket_lifecycle(svc: ObjectService) -> None:
    with pytest.raises(errors.MediaJobsError) as info:
        svc.create_bucket(B, "ap-guangzhou")
    assert info.value.code == "BucketAlreadyOwnedByYou"
    put(svc, "k")
    with pytest.raises(errors.MediaJobsError) as info:
        svc.delete_bucket(B)
    assert info.value.code == "BucketNotEmpty"
    svc.delete(B, "k")
    svc.delete_bucket(B)
    with pytest.raises(errors.MediaJobsError) as info:
        svc.list_objects(B)
    assert info.value.code == "NoSuchBucket"


def test_delimiter_listing_seeks_the_index_instead_of_scanning(svc: ObjectService) -> None:
    """100,000 keys under 10 prefixes: the rolled-up listing costs one indexed query per prefix."""
    from sqlalchemy import event

    from mediajobs.db.schema import objects

    with svc.engine.connect().execution_options(write=True) as conn, conn.begin():
        rows = [
            dict(bucket=B, key=f"big/p{i % 10}/{i:06d}", blob="0" * 32, size=0, etag="e", crc64="0",
                 last_modified=0.0, storage_class="STANDARD", headers="{}")
            for i in range(100_000)
        ]  # fmt: skip
        conn.execute(objects.insert(), rows)
    seen: list[tuple[str, tuple[object, ...]]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT") and "FROM objects" in statement:
            seen.append((statement, parameters))

    event.listen(svc.engine, "before_cursor_execute", capture)
    try:
        page = svc.list_objects(B, prefix="big/", delimiter="/")
    finally:
        event.remove(svc.engine, "before_cursor_execute", capture)
    assert page.common_prefixes == [f"big/p{i}/" for i in range(10)] and not page.contents
    assert len(seen) <= 12
    postgres = svc.engine.dialect.name == "postgresql"
    with svc.engine.connect() as conn:
        for statement, parameters in seen:
            explain = "EXPLAIN " if postgres else "EXPLAIN QUERY PLAN "
            plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql(explain + statement, parameters))
            if postgres:  # the keys' "C" collation lets the primary key serve the range and the order
                assert (
                    "Index Scan using objects_pkey" in plan and "Seq Scan" not in plan and "Sort" not in plan
                ), plan
            else:
                assert "SEARCH objects USING" in plan and "SCAN" not in plan, plan


def test_head_revision_constant_matches_alembic() -> None:
    from alembic.script import ScriptDirectory

    from mediajobs.db.engine import alembic_config
    from mediajobs.db.schema import HEAD_REVISION

    assert ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head() == HEAD_REVISION


def test_racing_writers_of_one_key_leave_one_object_and_no_stray_blob(svc: ObjectService) -> None:
    """Overwrites, inline and file-backed, from several threads: on PostgreSQL they do not take
    turns as on SQLite, and the row locks must keep every retired blob retired exactly once."""
    failures: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(15):
                if (n + i) % 2:
                    svc.put_inline(B, "hot", f"{n}-{i}".encode())
                else:
                    put(svc, "hot", f"file {n}-{i}".encode())
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures
    meta = svc.head(B, "hot")
    blobs = {p.name for p in svc.blobs.root.rglob("*") if p.is_file()}  # type: ignore[attr-defined]
    assert blobs == ({meta.blob} if meta.blob else set())
    assert svc.collect_garbage() == 0
    with pytest.raises(errors.MediaJobsError):
        svc.create_bucket(B, "ap-guangzhou")
    assert svc.create_bucket(B, "elsewhere", exist_ok=True).region == "ap-guangzhou"
