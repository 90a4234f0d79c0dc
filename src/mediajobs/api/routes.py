"""Where a request goes: bucket and key from Host and path; CI route or object API.

spec/protocol.md 1.2 and spec/objects.md 2.1. The CI route table is data; on a `.cos.`
host (or one naming no bucket) a request is a CI request only when it fits one of its
rows exactly, so that an object named `jobs/2024/a.mp4` stays an object.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .. import errors

BUCKET_LABEL = re.compile(r"^[a-z0-9][a-z0-9-]*-\d+$")
BUCKET_NAME = re.compile(r"^(?P<name>[a-z0-9](?:[a-z0-9-]{0,48}[a-z0-9])?)-(?P<appid>\d+)$")
_BUCKET_HOST = re.compile(
    r"^(?P<bucket>[^.]+)\.(?P<svc>cos|ci|pic|cos-internal|cos-cdc|cosv6)\.(?P<region>[a-z0-9-]+)"
    r"\.(?:myqcloud\.com|tencentcos\.cn)$",
    re.IGNORECASE,
)
_SERVICE_HOST = re.compile(
    r"^(?:service\.cos|(?:cos|ci)\.(?P<region>[a-z0-9-]+))\.(?:myqcloud\.com|tencentcos\.cn)$"
)
# Unsigned operational endpoints, on hosts that name no bucket (docs/operations.md).
HEALTH_PATHS = frozenset(("/healthz", "/readyz", "/metrics"))


def check_bucket_name(name: str) -> None:
    if not BUCKET_NAME.match(name) or len(name) > 60:
        raise errors.InvalidBucketName(
            f"Bucket name {name!r} must be <name>-<appid>: 1-50 lower-case letters, digits or '-' "
            "(not first or last), '-', then the digits of the APPID; at most 60 characters."
        )


@dataclass(frozen=True)
class Target:
    """What a request addresses."""

    bucket: str | None
    key: str | None  # None: the bucket itself (path "/")
    region: str | None
    ci_host: bool  # the Host was a `.ci.` host: every route is a CI route
    service: bool = False  # GET Service (list buckets)
    health: str | None = None
    path: str = "/"  # the path below the bucket (path-style prefix removed)


def strip_port(host: str) -> str:
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if ":" in host else host


def resolve(host: str, path: str, default_bucket: str | None) -> Target:
    """Bucket and key of a request from its Host header and decoded path."""
    h = strip_port(host.strip())
    m = _BUCKET_HOST.match(h)
    if m:
        # The bucket label keeps its case: `Upper-125...` is an invalid name, not `upper-125...`.
        return Target(m["bucket"], _key(path), m["region"].lower(), m["svc"].lower() == "ci", path=path)
    h = h.lower()
    s = _SERVICE_HOST.match(h)
    if s:
        return Target(None, None, s["region"], h.startswith("ci."), service=path == "/", path=path)
    if path in HEALTH_PATHS:
        return Target(None, None, None, False, health=path[1:], path=path)
    first, sep, rest = path[1:].partition("/")
    if BUCKET_LABEL.match(first):
        return Target(first, rest if sep and rest else None, None, False, path="/" + rest)
    if default_bucket:
        return Target(default_bucket, _key(path), None, False, path=path)
    return Target(None, None, None, False, service=path == "/", path=path)


def _key(path: str) -> str | None:
    return path[1:] or None


# ---- the CI route table (spec/protocol.md 1.3) ------------------------------------------

_JOB_ID = r"j[0-9a-f]{32}"
_PIC_JOB_ID = r"c[0-9a-f]{32}"
_QUEUE_ID = r"p[0-9a-f]{32}"
_TEMPLATE_ID = r"t[01][0-9a-f]{32}"
_WORKFLOW_ID = r"w[0-9a-f]{32}"


def _ids(one: str) -> str:
    return rf"{one}(?:,{one})*"


def _has(*names: str) -> Callable[[Mapping[str, str]], bool]:
    return lambda params: any(n in params for n in names)


def _always(_params: Mapping[str, str]) -> bool:
    return True


@dataclass(frozen=True)
class CiRoute:
    method: str
    pattern: re.Pattern[str]
    loose: re.Pattern[str]  # any id in place of the id grammar: used on `.ci.` hosts
    action: str
    needs: Callable[[Mapping[str, str]], bool] = _always


def _r(method: str, path: str, action: str, needs: Callable[[Mapping[str, str]], bool] = _always) -> CiRoute:
    head, sep, _ = path[1:].partition("/")
    loose = f"/{head}/[^/]+" if sep else path
    return CiRoute(method, re.compile(f"^{path}$"), re.compile(f"^{loose}$"), action, needs)


CI_ROUTES: tuple[CiRoute, ...] = (
    _r("POST", "/jobs", "CreateMediaJobs"),
    _r("GET", f"/jobs/{_ids(_JOB_ID)}", "DescribeMediaJob"),
    _r("GET", "/jobs", "DescribeMediaJobs", _has("tag", "queueId")),
    _r("PUT", f"/jobs/{_JOB_ID}", "CancelMediaJob"),
    _r("POST", "/pic_jobs", "CreatePicProcessJobs"),
    _r("GET", f"/pic_jobs/{_ids(_PIC_JOB_ID)}", "DescribePicProcessJob"),
    _r("GET", "/pic_jobs", "DescribePicProcessJobs", _has("tag", "queueId")),
    _r("PUT", f"/pic_jobs/{_PIC_JOB_ID}", "CancelPicProcessJob"),
    _r("GET", "/queue", "DescribeMediaQueues"),
    _r("PUT", f"/queue/{_QUEUE_ID}", "UpdateMediaQueue"),
    _r("GET", "/picqueue", "DescribePicProcessQueues"),
    _r("PUT", f"/picqueue/{_QUEUE_ID}", "UpdatePicProcessQueue"),
    _r("POST", "/template", "CreateMediaTemplate"),
    _r("GET", "/template", "DescribeMediaTemplates"),
    _r("PUT", f"/template/{_TEMPLATE_ID}", "UpdateMediaTemplate"),
    _r("DELETE", f"/template/{_TEMPLATE_ID}", "DeleteMediaTemplate"),
    _r("GET", "/mediabucket", "DescribeMediaBuckets"),
    _r("POST", "/mediabucket", "CreateMediaProcessBucket"),
    _r("GET", "/picbucket", "DescribePicProcessBuckets"),
    _r("POST", "/workflow", "CreateMediaWorkflow"),
    _r("PUT", f"/workflow/{_WORKFLOW_ID}", "UpdateMediaWorkflow"),
    _r("GET", "/workflow", "DescribeMediaWorkflows"),
    _r("DELETE", f"/workflow/{_WORKFLOW_ID}", "DeleteMediaWorkflow"),
    _r("POST", "/triggerworkflow", "TriggerWorkflow"),
)


def ci_action(method: str, path: str, params: Mapping[str, str], *, ci_host: bool) -> str | None:
    """The CI API a request calls, or None when it belongs to the object API.

    On a `.ci.` host any request is a CI request; an unmatched one gets its name "Unknown".
    """
    for route in CI_ROUTES:
        if route.method == method and route.pattern.match(path) and (ci_host or route.needs(params)):
            return route.action
    if ci_host:
        # On a `.ci.` host nothing is an object: a malformed id is the API's to answer.
        for route in CI_ROUTES:
            if route.method == method and route.loose.match(path):
                return route.action
        return "Unknown"
    return None
