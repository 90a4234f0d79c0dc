"""The ASGI application: parse, authenticate, route, and turn every failure into a COS error body.

No exception leaves `__call__` as a traceback: a MediaJobsError becomes its own Code and
status, anything else is logged with the request id and answered as InternalError.
"""

from __future__ import annotations

import base64
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from urllib.parse import unquote_plus, unquote_to_bytes

import anyio.to_thread
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from .. import errors
from ..jobs.model import MEDIA, PIC
from ..jobs.render import tz_of
from ..jobs.service import JobService
from ..settings import Settings
from ..storage.service import ObjectService
from . import auth, buckets, jobs, objects, routes, templates
from .wire import WireResponse, empty, xml_response

log = logging.getLogger("mediajobs.api")

_counter = 0
_counter_lock = threading.Lock()
_PID = os.getpid() & 0xFFFF


def new_request_id() -> str:
    """base64 of `<hex time>_<hex pid>_<hex seq>_1`, the shape of Tencent's request ids."""
    global _counter
    with _counter_lock:
        _counter += 1
        n = _counter
    return base64.b64encode(f"{int(time.time()):08x}_{_PID:04x}_{n:x}_1".encode()).decode()


def _http_date(_cache: list[object] = [0, ""]) -> str:  # noqa: B006 - a one-second cache
    now = int(time.time())
    if _cache[0] != now:
        _cache[0], _cache[1] = now, formatdate(now, usegmt=True)
    return str(_cache[1])


def parse_query(raw: bytes) -> list[tuple[str, str]]:
    """Percent-decode names and values; a raw '+' is a space.

    protocol.md 2.3 says the SDKs send '+' as %2B, which holds for Node and Go; but the
    Python SDK lets `requests` form-encode its query, so a space in `prefix=` arrives as a
    raw '+' while the signature covers the space. Decoding '+' as a space fits all three.
    """
    out: list[tuple[str, str]] = []
    if not raw:
        return out
    for item in raw.decode("latin-1").split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        try:
            out.append((unquote_plus(name, errors="strict"), unquote_plus(value, errors="strict")))
        except UnicodeDecodeError:
            raise errors.InvalidURI("The query string is not valid UTF-8 after percent-decoding.") from None
    return out


@dataclass
class Call:
    """One request, parsed once."""

    request: Request
    method: str
    path: str
    params: list[tuple[str, str]]
    headers: dict[str, str]
    target: routes.Target
    request_id: str
    host: str
    q: dict[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str:
        """A request header's value; empty means absent (Node sends empty Cache-Control)."""
        return self.headers.get(name, "").strip()

    @property
    def bucket(self) -> str:
        assert self.target.bucket is not None
        return self.target.bucket

    @property
    def key(self) -> str:
        assert self.target.key is not None
        return self.target.key


class Credentials:
    """SecretId -> SecretKey, from the database, reloaded when an unknown id shows up."""

    def __init__(self, service: ObjectService, static: dict[str, str]) -> None:
        self.service = service
        self.static = static
        self.keys = {**service.credentials(), **static}
        self.loaded = time.monotonic()

    def lookup(self, secret_id: str) -> str | None:
        key = self.keys.get(secret_id)
        if key is None and time.monotonic() - self.loaded > 2.0:
            # Another API node may have created it since; rate-limited so a flood of
            # unknown ids cannot turn into a flood of queries.
            self.keys = {**self.service.credentials(), **self.static}
            self.loaded = time.monotonic()
            key = self.keys.get(secret_id)
        return key


CiHandler = Callable[["Api", Call], Awaitable[WireResponse]]

CI_HANDLERS: dict[str, CiHandler] = {
    "CreateMediaJobs": lambda api, call: jobs.create_jobs(api, call, MEDIA),
    "DescribeMediaJob": lambda api, call: jobs.describe_jobs(api, call, MEDIA),
    "DescribeMediaJobs": lambda api, call: jobs.list_jobs(api, call, MEDIA),
    "CancelMediaJob": lambda api, call: jobs.cancel_job(api, call, MEDIA),
    "CreatePicProcessJobs": lambda api, call: jobs.create_jobs(api, call, PIC),
    "DescribePicProcessJob": lambda api, call: jobs.describe_jobs(api, call, PIC),
    "DescribePicProcessJobs": lambda api, call: jobs.list_jobs(api, call, PIC),
    "CancelPicProcessJob": lambda api, call: jobs.cancel_job(api, call, PIC),
    "DescribeMediaQueues": jobs.list_queues,
    "UpdateMediaQueue": jobs.update_queue,
    "DescribePicProcessQueues": jobs.list_queues,
    "UpdatePicProcessQueue": jobs.update_queue,
    "DescribeMediaBuckets": jobs.list_media_buckets,
    "CreateMediaTemplate": templates.create_template,
    "DescribeMediaTemplates": templates.describe_templates,
    "UpdateMediaTemplate": templates.update_template,
    "DeleteMediaTemplate": templates.delete_template,
}
BUCKET_CACHE_SECONDS = 2.0
# Served without a bucket in the Host (ci.<region>.myqcloud.com, or the bare IP with Python).
BUCKETLESS = frozenset(("DescribeMediaBuckets",))


class Api:
    def __init__(
        self, settings: Settings, service: ObjectService, credentials: Credentials, job_service: JobService
    ) -> None:
        self.settings = settings
        self.service = service
        self.credentials = credentials
        self.jobs = job_service
        self.tz = tz_of(settings.time_offset)
        self._buckets_seen: dict[str, float] = {}
        # On SQLite, the job query clients poll runs on the event loop, on a connection of its own
        # (on PostgreSQL it is awaited there instead: JobStore.loop_reads).
        self.inline_jobs: JobService | None = None
        if service.engine.dialect.name == "sqlite":
            from ..db.engine import make_engine
            from ..jobs.store import JobStore

            url = service.engine.url.render_as_string(hide_password=False)
            self.inline_jobs = JobService(JobStore(make_engine(url, per_thread=True)), None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        request_id = new_request_id()
        method = scope["method"]
        host = ""
        path = "/"
        ci = False
        try:
            request = Request(scope, receive)
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            host = headers.get("host", "")
            raw_path = scope.get("raw_path") or scope["path"].encode()
            try:
                path = unquote_to_bytes(raw_path.split(b"?", 1)[0]).decode("utf-8")
            except UnicodeDecodeError:
                raise errors.InvalidURI("The path is not valid UTF-8 after percent-decoding.") from None
            if not path.startswith("/"):
                raise errors.InvalidURI()
            params = parse_query(scope.get("query_string", b""))
            target = routes.resolve(host, path, self.settings.default_bucket or None)
            call = Call(request, method, path, params, headers, target, request_id, host)
            call.q = {}
            for k, v in params:
                call.q.setdefault(k, v)
            action = routes.ci_action(method, target.path, call.q, ci_host=target.ci_host)
            ci = action is not None
            response = await self.handle(call, action)
        except errors.MediaJobsError as exc:
            response = self.error(exc, method, host, path, request_id)
        except Exception:
            log.exception("unexpected failure, request %s %s %s", request_id, method, path)
            response = self.error(errors.InternalError(), method, host, path, request_id)
        response.add(
            [
                ("Server", "tencent-ci" if ci else "tencent-cos"),
                ("Date", _http_date()),
                ("x-cos-request-id", request_id),
                *([("x-ci-request-id", request_id)] if ci else []),
            ]
        )
        try:
            await response(scope, receive, send)
        except OSError:
            log.info("client went away during the response, request %s", request_id)

    def error(
        self, exc: errors.MediaJobsError, method: str, host: str, path: str, request_id: str
    ) -> WireResponse:
        if exc.http_status >= 500:
            log.warning("request %s answered %s %s", request_id, exc.http_status, exc.code)
        headers = list(exc.headers.items())
        if method == "HEAD":
            return empty(exc.http_status, headers)
        return xml_response(
            "Error",
            [
                ("Code", exc.code),
                ("Message", exc.message),
                ("Resource", f"{host}{path}" or "/"),
                ("RequestId", request_id),
                ("TraceId", request_id),
            ],
            exc.http_status,
            headers,
        )

    def authenticate(self, call: Call) -> None:
        if self.settings.no_auth:
            return
        signed = auth.SignedRequest(call.method, call.path, call.params, call.headers)
        auth.verify(signed, self.credentials.lookup, time.time(), skew=self.settings.sign_skew)

    async def handle(self, call: Call, action: str | None) -> WireResponse:
        target = call.target
        if target.health is not None:
            return await self.health(call)
        # Checking a signature costs two HMACs and no I/O: no thread hop.
        self.authenticate(call)
        if action is not None:
            return await self.ci(call, action)
        if target.service:
            if call.method not in ("GET", "HEAD"):
                raise errors.MethodNotAllowed()
            return await buckets.list_buckets(self, call)
        if target.bucket is None:
            raise errors.NoSuchBucket(
                "The request names no bucket: use the bucket's host name or a path-style URL."
            )
        if target.key is None:
            return await buckets.dispatch(self, call)
        return await objects.dispatch(self, call)

    async def ci(self, call: Call, action: str) -> WireResponse:
        handler = CI_HANDLERS.get(action)
        if handler is None:
            raise errors.NotImplementedByServer(
                f"The Cloud Infinite API {action} is not available on this server yet."
                if action != "Unknown"
                else "No Cloud Infinite API has this method and path."
            )
        if action not in BUCKETLESS:
            if call.target.bucket is None:
                raise errors.NoSuchBucket("The request names no bucket: use the bucket's host name.")
            await self.require_bucket(call.bucket)
        return await handler(self, call)

    async def require_bucket(self, bucket: str) -> None:
        # A bucket seen a moment ago still exists: saves a thread hop and a query on every poll.
        if self._buckets_seen.get(bucket, 0.0) > time.monotonic():
            return
        await anyio.to_thread.run_sync(self.service.require_bucket, bucket)
        self._buckets_seen[bucket] = time.monotonic() + BUCKET_CACHE_SECONDS

    async def health(self, call: Call) -> WireResponse:
        if call.target.health == "readyz":
            await anyio.to_thread.run_sync(self.service.get_bucket, "-")
        return xml_response("Health", [("Status", "ok")])
