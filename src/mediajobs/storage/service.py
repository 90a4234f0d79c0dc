"""ObjectService: buckets, objects and multipart uploads over the database and a blob store.

Every method is synchronous (called from a worker thread by the API). A write first makes
its blob durable, then commits the row that points at it, then retires the blob the row
used to point at; so a crash at any point leaves the previous object or the new one, never
a torn one.

The same statements run on SQLite, whose writers take turns (BEGIN IMMEDIATE), and on
PostgreSQL under READ COMMITTED, where they do not: a transaction that writes on what it has
read locks what it read (`with_for_update`, compiled to nothing on SQLite), and an insert
that may race another one says what to do on conflict.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import secrets
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from .. import errors
from ..db.engine import Compiled
from ..db.schema import blob_gc, buckets, credentials, objects, parts, uploads
from .base import CRC64, BlobInfo, BlobStore, crc64_combine

MIN_PART_SIZE = 1024 * 1024
MAX_PART_NUMBER = 10000


@dataclass(frozen=True)
class Bucket:
    name: str
    region: str
    created_at: float


@dataclass(frozen=True)
class ObjectMeta:
    bucket: str
    key: str
    blob: str
    size: int
    etag: str  # without quotes
    crc64: str
    last_modified: float
    storage_class: str
    headers: dict[str, str] = field(default_factory=dict)
    data: bytes | None = None  # the bytes of an inline object (blob is "")


@dataclass(frozen=True)
class Upload:
    upload_id: str
    bucket: str
    key: str
    initiated: float
    storage_class: str
    headers: dict[str, str]


@dataclass(frozen=True)
class Part:
    part_number: int
    blob: str
    size: int
    etag: str
    crc64: str
    last_modified: float


@dataclass(frozen=True)
class Listing:
    contents: list[ObjectMeta]
    common_prefixes: list[str]
    is_truncated: bool
    next_marker: str | None


def _obj(row: Any) -> ObjectMeta:
    return ObjectMeta(
        bucket=row.bucket,
        key=row.key,
        blob=row.blob,
        size=row.size,
        etag=row.etag,
        crc64=row.crc64,
        last_modified=row.last_modified,
        storage_class=row.storage_class,
        headers=json.loads(row.headers),
        data=row._mapping.get("data"),
    )


# Listing never needs the bytes of inline objects.
_LISTED = [c for c in objects.c if c.name != "data"]


def _after_prefix(prefix: str) -> str | None:
    """Smallest string greater than every string that starts with `prefix`.

    Code-point order equals UTF-8 byte order, the order keys are stored in.
    """
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF:
            nxt = last + 1
            if 0xD800 <= nxt <= 0xDFFF:  # skip surrogates: they cannot be stored
                nxt = 0xE000
            return prefix[:-1] + chr(nxt)
        prefix = prefix[:-1]
    return None


class ObjectService:
    def __init__(self, engine: Engine, blobs: BlobStore) -> None:
        self.engine = engine
        self.blobs = blobs
        self._postgres = engine.dialect.name == "postgresql"
        self._insert = pg_insert if self._postgres else sqlite_insert
        self._head = Compiled(
            select(objects).where(
                objects.c.bucket == bindparam("bucket", required=False),
                objects.c.key == bindparam("key", required=False),
            ),
            engine.dialect,
        )

    def _write(self) -> Any:
        return self.engine.connect().execution_options(write=True)

    # ---- credentials -------------------------------------------------------------------

    def credentials(self) -> dict[str, str]:
        with self.engine.connect() as conn:
            return {r.secret_id: r.secret_key for r in conn.execute(select(credentials))}

    def add_credentials(self, secret_id: str, secret_key: str) -> None:
        with self._write() as conn, conn.begin():
            conn.execute(
                self._insert(credentials)
                .values(secret_id=secret_id, secret_key=secret_key, created_at=time.time())
                .on_conflict_do_update(index_elements=["secret_id"], set_={"secret_key": secret_key})
            )

    # ---- buckets -----------------------------------------------------------------------

    def get_bucket(self, name: str) -> Bucket | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(buckets).where(buckets.c.name == name)).first()
        return Bucket(row.name, row.region, row.created_at) if row else None

    def require_bucket(self, name: str) -> Bucket:
        b = self.get_bucket(name)
        if b is None:
            raise errors.NoSuchBucket()
        return b

    def list_buckets(self) -> list[Bucket]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(buckets).order_by(buckets.c.name)).all()
        return [Bucket(r.name, r.region, r.created_at) for r in rows]

    def create_bucket(self, name: str, region: str, *, exist_ok: bool = False) -> Bucket:
        now = time.time()
        with self._write() as conn, conn.begin():
            # API nodes starting together each create their --bucket: one insert wins.
            made = conn.execute(
                self._insert(buckets)
                .values(name=name, region=region, created_at=now)
                .on_conflict_do_nothing()
                .returning(buckets.c.name)
            ).first()
            if made is None:
                if not exist_ok:
                    raise errors.BucketAlreadyOwnedByYou()
                row = conn.execute(select(buckets).where(buckets.c.name == name)).one()
                return Bucket(row.name, row.region, row.created_at)
        return Bucket(name, region, now)

    def delete_bucket(self, name: str) -> None:
        with self._write() as conn, conn.begin():
            # The lock waits for writes into the bucket that are under way (they share-lock it).
            mine = select(buckets.c.name).where(buckets.c.name == name).with_for_update()
            if conn.execute(mine).first() is None:
                raise errors.NoSuchBucket()
            busy = conn.execute(select(objects.c.key).where(objects.c.bucket == name).limit(1)).first()
            busy = (
                busy
                or conn.execute(select(uploads.c.upload_id).where(uploads.c.bucket == name).limit(1)).first()
            )
            if busy:
                raise errors.BucketNotEmpty()
            conn.execute(delete(buckets).where(buckets.c.name == name))

    # ---- objects -----------------------------------------------------------------------

    def head(self, bucket: str, key: str) -> ObjectMeta:
        # Every job's input lookup: compiled once, and on PostgreSQL one round trip.
        conn = self.engine.connect()
        if self._postgres:
            conn.execution_options(isolation_level="AUTOCOMMIT")
        with conn:
            row = self._head.run(conn, bucket=bucket, key=key).first()
            if row is None:
                if conn.execute(select(buckets.c.name).where(buckets.c.name == bucket)).first() is None:
                    raise errors.NoSuchBucket()
                raise errors.NoSuchKey()
        return _obj(row)

    def _retire(self, conn: Connection, blob_ids: Iterable[str]) -> list[str]:
        ids = [b for b in blob_ids if b]
        if ids:
            conn.execute(insert(blob_gc), [{"blob": b} for b in ids])
        return ids

    def _collect(self, blob_ids: Sequence[str]) -> None:
        if not blob_ids:
            return
        for b in blob_ids:
            self.blobs.delete(b)
        with self._write() as conn, conn.begin():
            conn.execute(delete(blob_gc).where(blob_gc.c.blob.in_(list(blob_ids))))

    def collect_garbage(self) -> int:
        """Delete blobs retired by writes that died before they could delete them."""
        with self.engine.connect() as conn:
            ids = [r.blob for r in conn.execute(select(blob_gc.c.blob))]
        self._collect(ids)
        return len(ids)

    def put(
        self,
        bucket: str,
        key: str,
        info: BlobInfo,
        *,
        etag: str | None = None,
        storage_class: str = "STANDARD",
        headers: dict[str, str] | None = None,
        last_modified: float | None = None,
    ) -> ObjectMeta:
        """Point `bucket/key` at the already-durable blob `info`."""
        meta = ObjectMeta(
            bucket=bucket,
            key=key,
            blob=info.blob,
            size=info.size,
            etag=etag or info.md5_hex,
            crc64=str(info.crc64),
            last_modified=last_modified or time.time(),
            storage_class=storage_class,
            headers=headers or {},
        )
        try:
            with self._write() as conn, conn.begin():
                retired = self._upsert(conn, meta)
        except BaseException:
            self.blobs.delete(info.blob)
            raise
        self._collect(retired)
        return meta

    def _upsert(self, conn: Connection, meta: ObjectMeta) -> list[str]:
        self._require_bucket(conn, meta.bucket, lock=True)
        values = {
            "blob": meta.blob,
            "size": meta.size,
            "etag": meta.etag,
            "crc64": meta.crc64,
            "last_modified": meta.last_modified,
            "storage_class": meta.storage_class,
            "headers": json.dumps(meta.headers, separators=(",", ":")),
            "data": meta.data,
        }
        where = (objects.c.bucket == meta.bucket, objects.c.key == meta.key)
        while True:
            # Locked: a concurrent writer of the same key waits, then retires our blob, not this one.
            old = conn.execute(select(objects.c.blob).where(*where).with_for_update()).first()
            if old is not None:
                conn.execute(update(objects).where(*where).values(**values))
                return self._retire(conn, [old.blob])
            ins = self._insert(objects).values(bucket=meta.bucket, key=meta.key, **values)
            if conn.execute(ins.on_conflict_do_nothing().returning(objects.c.key)).first() is not None:
                return []
            # Another writer created the key since we looked (PostgreSQL): overwrite it.

    def write_blob(self, chunks: Iterable[bytes | memoryview]) -> BlobInfo:
        """A new durable blob holding `chunks` back to back (nothing is left behind if one fails)."""
        writer = self.blobs.writer()
        try:
            for chunk in chunks:
                writer.write(chunk)
            return writer.commit()
        except BaseException:
            writer.abort()
            raise

    def put_inline(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        storage_class: str = "STANDARD",
        headers: dict[str, str] | None = None,
        md5_hex: str | None = None,
        crc64: int | None = None,
    ) -> ObjectMeta:
        """Store a small object in its row: one transaction, one fsync."""
        meta = ObjectMeta(
            bucket=bucket,
            key=key,
            blob="",
            size=len(data),
            etag=md5_hex or hashlib.md5(data).hexdigest(),
            crc64=str(crc64 if crc64 is not None else CRC64.calc(data)),
            last_modified=time.time(),
            storage_class=storage_class,
            headers=headers or {},
            data=data,
        )
        with self._write() as conn, conn.begin():
            retired = self._upsert(conn, meta)
        self._collect(retired)
        return meta

    @contextlib.contextmanager
    def local_file(self, meta: ObjectMeta) -> Iterator[Path]:
        """A local path with the object's bytes, for tools that read files (FFmpeg, PyAV).

        Blobs in local files are handed out in place (read-only use); an inline object, or a
        blob in a remote store (S3), is written to a private temporary file in the store's
        scratch directory, removed afterwards.
        """
        local = getattr(self.blobs, "path", None)
        if meta.data is None and local is not None:
            yield Path(local(meta.blob))
            return
        tmp_dir = getattr(self.blobs, "tmp_dir", None)
        with tempfile.NamedTemporaryFile(dir=tmp_dir, prefix="input-", suffix=".part") as fh:
            if meta.data is not None:
                fh.write(meta.data)
            else:
                for chunk in self.blobs.read(meta.blob):
                    fh.write(chunk)
            fh.flush()
            yield Path(fh.name)

    def update_headers(self, bucket: str, key: str, etag: str, headers: dict[str, str]) -> bool:
        """Merge `headers` into an object's stored headers if it still has `etag`."""
        with self._write() as conn, conn.begin():
            row = conn.execute(
                select(objects.c.headers)
                .where(objects.c.bucket == bucket, objects.c.key == key, objects.c.etag == etag)
                .with_for_update()
            ).first()
            if row is None:
                return False
            merged = {**json.loads(row.headers), **headers}
            conn.execute(
                update(objects)
                .where(objects.c.bucket == bucket, objects.c.key == key, objects.c.etag == etag)
                .values(headers=json.dumps(merged, separators=(",", ":")))
            )
        return True

    def delete(self, bucket: str, key: str) -> None:
        self.delete_many(bucket, [key])

    def delete_many(self, bucket: str, keys: Sequence[str]) -> None:
        with self._write() as conn, conn.begin():
            if conn.execute(select(buckets.c.name).where(buckets.c.name == bucket)).first() is None:
                raise errors.NoSuchBucket()
            retired: list[str] = []
            for i in range(0, len(keys), 500):
                chunk = list(keys[i : i + 500])
                cond = (objects.c.bucket == bucket) & objects.c.key.in_(chunk)
                # The blobs of the rows actually deleted (a concurrent overwrite may have changed them).
                retired += [
                    r.blob for r in conn.execute(delete(objects).where(cond).returning(objects.c.blob))
                ]
            retired = self._retire(conn, retired)  # inline objects have no blob to retire
        self._collect(retired)

    def copy(
        self,
        src: ObjectMeta,
        bucket: str,
        key: str,
        *,
        storage_class: str,
        headers: dict[str, str],
    ) -> ObjectMeta:
        if src.data is not None:
            return self.put_inline(
                bucket, key, src.data, storage_class=storage_class, headers=headers, md5_hex=src.etag,
                crc64=int(src.crc64),
            )  # fmt: skip
        blob = self.blobs.concat([(src.blob, src.size)])
        info = BlobInfo(blob, src.size, src.etag, b"", int(src.crc64))
        return self.put(bucket, key, info, etag=src.etag, storage_class=storage_class, headers=headers)

    def list_objects(
        self,
        bucket: str,
        *,
        prefix: str = "",
        delimiter: str = "",
        marker: str = "",
        max_keys: int = 1000,
    ) -> Listing:
        """One page of keys in byte order, with common prefixes rolled up.

        Each rolled-up prefix costs one index seek past its keys, so a page is
        O(max_keys) seeks whatever the number of keys under the prefix.
        """
        if max_keys <= 0:
            return Listing([], [], False, None)
        lower, inclusive = marker, False
        if prefix > marker:
            lower, inclusive = prefix, True
        upper = _after_prefix(prefix) if prefix else None
        want = max_keys + 1  # one extra item tells whether the page is truncated
        items: list[tuple[str, ObjectMeta | None]] = []
        with self.engine.connect() as conn:
            self._require_bucket(conn, bucket)
            while len(items) < want:
                q = select(*_LISTED).where(objects.c.bucket == bucket)
                q = q.where(objects.c.key >= lower if inclusive else objects.c.key > lower)
                if upper is not None:
                    q = q.where(objects.c.key < upper)
                batch = want - len(items)
                rows = conn.execute(q.order_by(objects.c.key).limit(batch)).all()
                if not rows:
                    break
                restarted = False
                for row in rows:
                    k: str = row.key
                    if delimiter:
                        idx = k.find(delimiter, len(prefix))
                        if idx >= 0:
                            cp = k[: idx + len(delimiter)]
                            if not (marker and cp <= marker):
                                items.append((cp, None))
                            nxt = _after_prefix(cp)
                            if nxt is None:
                                return self._page(items, max_keys)
                            lower, inclusive, restarted = nxt, True, True
                            break
                    items.append((k, _obj(row)))
                    lower, inclusive = k, False
                    if len(items) >= want:
                        break
                if not restarted and len(rows) < batch:
                    break
        return self._page(items, max_keys)

    @staticmethod
    def _page(items: list[tuple[str, ObjectMeta | None]], max_keys: int) -> Listing:
        truncated = len(items) > max_keys
        items = items[:max_keys]
        contents = [m for _, m in items if m is not None]
        prefixes = [name for name, m in items if m is None]
        return Listing(contents, prefixes, truncated, items[-1][0] if truncated and items else None)

    def _require_bucket(self, conn: Connection, bucket: str, *, lock: bool = False) -> None:
        """NoSuchBucket unless the bucket exists; `lock`: and keep it until the commit (a write
        into the bucket: DELETE Bucket waits for it, and then finds the bucket not empty)."""
        q = select(buckets.c.name).where(buckets.c.name == bucket)
        if lock:
            q = q.with_for_update(read=True, key_share=True)
        if conn.execute(q).first() is None:
            raise errors.NoSuchBucket()

    # ---- multipart ---------------------------------------------------------------------

    def initiate(self, bucket: str, key: str, storage_class: str, headers: dict[str, str]) -> Upload:
        up = Upload(secrets.token_hex(24), bucket, key, time.time(), storage_class, headers)
        with self._write() as conn, conn.begin():
            self._require_bucket(conn, bucket, lock=True)
            conn.execute(
                insert(uploads).values(
                    upload_id=up.upload_id,
                    bucket=bucket,
                    key=key,
                    initiated=up.initiated,
                    storage_class=storage_class,
                    headers=json.dumps(headers, separators=(",", ":")),
                )
            )
        return up

    def get_upload(self, bucket: str, key: str, upload_id: str) -> Upload:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(uploads).where(
                    uploads.c.upload_id == upload_id, uploads.c.bucket == bucket, uploads.c.key == key
                )
            ).first()
            if row is None:
                self._require_bucket(conn, bucket)
                raise errors.NoSuchUpload()
        return Upload(
            row.upload_id, row.bucket, row.key, row.initiated, row.storage_class, json.loads(row.headers)
        )

    def put_part(self, upload: Upload, number: int, info: BlobInfo) -> Part:
        part = Part(number, info.blob, info.size, info.md5_hex, str(info.crc64), time.time())
        try:
            with self._write() as conn, conn.begin():
                # Locked until the commit: completing or aborting the upload waits for this part.
                if (
                    conn.execute(
                        select(uploads.c.upload_id)
                        .where(uploads.c.upload_id == upload.upload_id)
                        .with_for_update()
                    ).first()
                    is None
                ):
                    raise errors.NoSuchUpload()
                old = conn.execute(
                    select(parts.c.blob).where(
                        parts.c.upload_id == upload.upload_id, parts.c.part_number == number
                    )
                ).first()
                values = {
                    "blob": part.blob,
                    "size": part.size,
                    "etag": part.etag,
                    "crc64": part.crc64,
                    "last_modified": part.last_modified,
                }
                if old is None:
                    conn.execute(
                        insert(parts).values(upload_id=upload.upload_id, part_number=number, **values)
                    )
                    retired: list[str] = []
                else:
                    conn.execute(
                        update(parts)
                        .where(parts.c.upload_id == upload.upload_id, parts.c.part_number == number)
                        .values(**values)
                    )
                    retired = self._retire(conn, [old.blob])
        except BaseException:
            self.blobs.delete(info.blob)
            raise
        self._collect(retired)
        return part

    def list_parts(self, upload_id: str, marker: int, max_parts: int) -> tuple[list[Part], bool]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(parts)
                .where(parts.c.upload_id == upload_id, parts.c.part_number > marker)
                .order_by(parts.c.part_number)
                .limit(max_parts + 1)
            ).all()
        out = [Part(r.part_number, r.blob, r.size, r.etag, r.crc64, r.last_modified) for r in rows]
        return out[:max_parts], len(out) > max_parts

    def list_uploads(
        self, bucket: str, prefix: str, key_marker: str, upload_id_marker: str, max_uploads: int
    ) -> tuple[list[Upload], bool]:
        with self.engine.connect() as conn:
            self._require_bucket(conn, bucket)
            q = select(uploads).where(uploads.c.bucket == bucket)
            if prefix:
                upper = _after_prefix(prefix)
                q = q.where(uploads.c.key >= prefix)
                if upper is not None:
                    q = q.where(uploads.c.key < upper)
            if key_marker:
                if upload_id_marker:
                    # Uploads of key_marker initiated after the marker upload, then later keys.
                    marker_row = conn.execute(
                        select(uploads.c.initiated).where(uploads.c.upload_id == upload_id_marker)
                    ).first()
                    after = marker_row.initiated if marker_row else -1.0
                    q = q.where(
                        (uploads.c.key > key_marker)
                        | ((uploads.c.key == key_marker) & (uploads.c.initiated > after))
                    )
                else:
                    q = q.where(uploads.c.key > key_marker)
            rows = conn.execute(
                q.order_by(uploads.c.key, uploads.c.initiated, uploads.c.upload_id).limit(max_uploads + 1)
            ).all()
        out = [
            Upload(r.upload_id, r.bucket, r.key, r.initiated, r.storage_class, json.loads(r.headers))
            for r in rows
        ]
        return out[:max_uploads], len(out) > max_uploads

    def complete(
        self, upload: Upload, requested: Sequence[tuple[int, str]], headers: dict[str, str]
    ) -> ObjectMeta:
        """Assemble the listed parts (number, etag) into the object, in order."""
        if not requested:
            raise errors.MalformedXML("CompleteMultipartUpload lists no Part.")
        numbers = [n for n, _ in requested]
        if any(b <= a for a, b in itertools.pairwise(numbers)):
            raise errors.InvalidPartOrder()
        with self.engine.connect() as conn:
            rows = {
                r.part_number: r
                for r in conn.execute(select(parts).where(parts.c.upload_id == upload.upload_id))
            }
        chosen = []
        for i, (number, etag) in enumerate(requested):
            row = rows.get(number)
            if row is None or etag.strip().strip('"').lower() != row.etag:
                raise errors.InvalidPart(f"Part {number} was not uploaded or its ETag does not match.")
            if i < len(requested) - 1 and row.size < MIN_PART_SIZE:
                raise errors.EntityTooSmall(f"Part {number} is smaller than the minimum of 1 MiB.")
            chosen.append(row)
        blob = self.blobs.concat([(r.blob, r.size) for r in chosen])
        size = sum(r.size for r in chosen)
        crc = int(chosen[0].crc64)
        for r in chosen[1:]:
            crc = crc64_combine(crc, int(r.crc64), r.size)
        etag = hashlib.md5(b"".join(bytes.fromhex(r.etag) for r in chosen)).hexdigest() + f"-{len(chosen)}"
        meta = ObjectMeta(
            bucket=upload.bucket,
            key=upload.key,
            blob=blob,
            size=size,
            etag=etag,
            crc64=str(crc),
            last_modified=time.time(),
            storage_class=upload.storage_class,
            headers=headers,
        )
        try:
            with self._write() as conn, conn.begin():
                gone = (
                    conn.execute(
                        select(uploads.c.upload_id)
                        .where(uploads.c.upload_id == upload.upload_id)
                        .with_for_update()
                    ).first()
                    is None
                )
                if gone:
                    raise errors.NoSuchUpload()
                retired = self._upsert(conn, meta)
                part_blobs = [
                    r.blob
                    for r in conn.execute(select(parts.c.blob).where(parts.c.upload_id == upload.upload_id))
                ]
                conn.execute(delete(parts).where(parts.c.upload_id == upload.upload_id))
                conn.execute(delete(uploads).where(uploads.c.upload_id == upload.upload_id))
                retired += self._retire(conn, part_blobs)
        except BaseException:
            self.blobs.delete(blob)
            raise
        self._collect(retired)
        return meta

    def abort(self, upload: Upload) -> None:
        with self._write() as conn, conn.begin():
            # The upload row first: a part being added finishes before (or finds the upload gone).
            n = conn.execute(delete(uploads).where(uploads.c.upload_id == upload.upload_id)).rowcount
            if not n:
                raise errors.NoSuchUpload()
            part_blobs = [
                r.blob
                for r in conn.execute(
                    delete(parts).where(parts.c.upload_id == upload.upload_id).returning(parts.c.blob)
                )
            ]
            retired = self._retire(conn, part_blobs)
        self._collect(retired)

    def count_objects(self, bucket: str) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).select_from(objects).where(objects.c.bucket == bucket)
                ).scalar_one()
            )
