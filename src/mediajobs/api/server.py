"""The ASGI application: parse, authenticate, route, and turn every failure into a COS error body.

No exception leaves `__call__` as a traceback: a MediaJobsError becomes its own Code and
status, anything else is logged with the request id and answered as InternalError.
"""

from __future__ import annotations

import asyncio
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

from .. import errors, logs
from ..db.engine import probe
from ..jobs.model import MEDIA, PIC
from ..jobs.render import tz_of
from ..jobs.service import JobService
from ..settings import Settings
from ..storage.service import ObjectService
from . import auth, buckets, jobs, objects, routes, templates
from .metrics import NodeMetrics, operation
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
# /readyz asks the database at most this often, and gives it this long to answer.
READY_CACHE_SECONDS = 1.0
READY_TIMEOUT = 2.0
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
        self.metrics = NodeMetrics(job_service.store)
        self._ready: tuple[float, str | None] = (-READY_CACHE_SECONDS, None)  # (checked at, problem)
        self._ready_lock: asyncio.Lock | None = None
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
        began = time.perf_counter()
        request_id = new_request_id()
        # Every log line made for this request (its thread hops too) carries its id.
        context = logs.request_id.set(request_id)
        method = scope["method"]
        host = ""
        path = "/"
        ci = False
        target: routes.Target | None = None
        action: str | None = None
        params: list[tuple[str, str]] = []
        failure: BaseException | None = None
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
            failure = exc
            response = self.error(exc, method, host, path, request_id)
        except Exception as exc:
            failure = exc
            response = self.error(errors.InternalError(), method, host, path, request_id)
        response.add(
            [
                ("Server", "tencent-ci" if ci else "tencent-cos"),
                ("Date", _http_date()),
                ("x-cos-request-id", request_id),
                *([("x-ci-request-id", request_id)] if ci else []),
            ]
        )
        status = response.status_code
        # A failing /readyz logs when readiness changes (see `readiness`), not at every probe.
        not_ready = isinstance(failure, errors.ServiceUnavailable) and target is not None and target.health
        if status >= 400 and not not_ready:
            self.log_failure(method, path, status, failure)
        try:
            await response(scope, receive, send)
        except OSError:
            log.info("client went away during the response, request %s", request_id)
        finally:
            self.metrics.requests.observe(
                operation(method, target, action, params), status, time.perf_counter() - began
            )
            logs.request_id.reset(context)

    @staticmethod
    def log_failure(method: str, path: str, status: int, failure: BaseException | None) -> None:
        """One line per failed request: 4xx at info, 5xx at error with the traceback."""
        code = failure.code if isinstance(failure, errors.MediaJobsError) else ""
        extra = {"method": method, "path": path, "status": status, **({"code": code} if code else {})}
        if status < 500:
            log.info("%s %s answered %d %s", method, path, status, code, extra=extra)
        elif failure is not None and not isinstance(failure, errors.MediaJobsError):
            log.error("%s %s failed unexpectedly", method, path, exc_info=failure, extra=extra)
        else:
            log.error("%s %s answered %d %s", method, path, status, code, exc_info=failure, extra=extra)

    def error(
        self, exc: errors.MediaJobsError, method: str, host: str, path: str, request_id: str
    ) -> WireResponse:
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
        if call.target.health == "metrics":
            if call.method not in ("GET", "HEAD"):
                raise errors.MethodNotAllowed()
            body, content_type = await self.metrics.render()
            return WireResponse(200, body if call.method == "GET" else b"", content_type=content_type,
                                content_length=len(body))  # fmt: skip
        if call.target.health == "readyz" and await self.readiness() is not None:
            raise errors.ServiceUnavailable("The metadata database does not answer.")
        return xml_response("Health", [("Status", "ok")])

    async def readiness(self) -> str | None:
        """None when the database answers `SELECT 1` on a fresh connection within READY_TIMEOUT;
        else what went wrong. Asked at most once per READY_CACHE_SECONDS, whoever probes."""
        if self._ready_lock is None:
            self._ready_lock = asyncio.Lock()
        async with self._ready_lock:
            checked, problem = self._ready
            if time.monotonic() - checked < READY_CACHE_SECONDS:
                return problem
            try:
                with anyio.fail_after(READY_TIMEOUT + 1.0):
                    await anyio.to_thread.run_sync(
                        probe, self.service.engine, READY_TIMEOUT, abandon_on_cancel=True
                    )
                now: str | None = None
            except TimeoutError:
                now = "no answer within the timeout"
            except Exception as exc:
                now = f"{type(exc).__name__}: {exc}".strip()
            if now != problem:
                if now is None:
                    log.warning("ready: the database answers again")
                else:
                    log.warning("not ready: the database does not answer (%s)", now)
            self._ready = (time.monotonic(), now)
            return now
