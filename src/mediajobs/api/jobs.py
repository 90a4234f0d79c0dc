"""The CI job APIs: media and picture jobs, queues, media buckets (spec/jobs.md, queues-templates.md).

Endpoints parse, call JobService, render. Rendering of a job (`job_detail`) is shared with
the callbacks, so a callback body is exactly what DescribeMediaJob would show.
"""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING

from .. import errors
from ..jobs.model import ALL_STATES, CATEGORY, MEDIA, PIC, NewJob, Queue, new_job_id
from ..jobs.render import fmt_time, job_detail
from ..jobs.store import ListFilter
from ..nodes import Nodes, Value, element_nodes
from ..processors import DOCUMENTED_TAGS, REGISTRY
from ..processors.base import InvalidOperation, Submission
from . import templates, xmlcodec
from .common import check_key, read_small, run
from .wire import WireResponse, empty, xml_response

if TYPE_CHECKING:
    from .server import Api, Call

MAX_IDS = 10
_FILTER_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:(Z)|([+\- ])(\d{2}):?(\d{2}))$")
_ID = {MEDIA: re.compile(r"^j[0-9a-f]{32}$"), PIC: re.compile(r"^c[0-9a-f]{32}$")}
_PRINTABLE = re.compile(r"^[\x20-\x7e]*$")


def parse_filter_time(name: str, value: str) -> float:
    """`%Y-%m-%dT%H:%M:%S%z`; also a colon in the offset, `Z`, or a space for a decoded '+'."""
    m = _FILTER_TIME.match(value.strip() if not value.endswith(" ") else value)
    if not m:
        raise errors.InvalidArgument(f"{name} {value!r} is not a time like 2022-06-27T15:23:12+0800.")
    try:
        base = datetime.strptime(m[1], "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        raise errors.InvalidArgument(f"{name} {value!r} is not a valid date and time.") from None
    if m[2]:
        tz = UTC
    else:
        minutes = int(m[4]) * 60 + int(m[5])
        if minutes >= 24 * 60:
            raise errors.InvalidArgument(f"{name} {value!r} has an offset out of range.")
        tz = timezone(timedelta(minutes=-minutes if m[3] == "-" else minutes))
    return base.replace(tzinfo=tz).timestamp()


# ---- rendering ---------------------------------------------------------------------------


def queue_nodes(q: Queue, tz: timezone) -> Nodes:
    n = q.notify
    return [
        ("QueueId", q.queue_id),
        ("Name", q.name),
        ("State", q.state),
        (
            "NotifyConfig",
            [
                ("Url", n.get("Url") or None),
                ("Event", n.get("Event") or None),
                ("Type", n.get("Type") or None),
                ("State", n.get("State") or None),
                ("ResultFormat", n.get("ResultFormat") or None),
                ("MqMode", n.get("MqMode") or None),
                ("MqName", n.get("MqName") or None),
                ("MqRegion", n.get("MqRegion") or None),
            ],
        ),
        ("MaxSize", str(q.max_size)),
        ("MaxConcurrent", str(q.max_concurrent)),
        ("UpdateTime", fmt_time(q.update_time, tz)),
        ("CreateTime", fmt_time(q.create_time, tz)),
        ("Category", q.category),
    ]


# ---- create ------------------------------------------------------------------------------


def _tag_processor(tag: str, kind: str) -> None:
    if not tag:
        raise errors.InvalidArgument("The request has no Tag.")
    if tag not in DOCUMENTED_TAGS:
        raise errors.InvalidArgument(f"Tag {tag} is not a Cloud Infinite job type.")
    proc = REGISTRY.get(tag)
    if proc is None:
        raise errors.InvalidArgument(f"Tag {tag} is not supported by this server yet.")
    if proc.kind != kind:
        where = "/pic_jobs" if proc.kind == PIC else "/jobs"
        raise errors.InvalidArgument(f"Tag {tag} jobs are created with {where}.")


def _operation_checks(op: ET.Element | None) -> int:
    if op is None:
        return 0
    user_data = op.find("UserData")
    if (
        user_data is not None
        and user_data.text
        and (len(user_data.text) > 1024 or not _PRINTABLE.match(user_data.text))
    ):
        raise errors.InvalidArgument("UserData must be at most 1024 printable ASCII characters.")
    level = xmlcodec.text(op, "JobLevel", "0")
    if level not in ("0", "1", "2"):
        raise errors.InvalidArgument(f"JobLevel must be 0, 1 or 2, not {level!r}.")
    return int(level)


def _callback(root: ET.Element) -> dict[str, str]:
    cb = {name: xmlcodec.text(root, name) for name in ("CallBack", "CallBackFormat", "CallBackType")}
    if cb["CallBackFormat"] and cb["CallBackFormat"].upper() not in ("XML", "JSON"):
        raise errors.InvalidArgument("CallBackFormat must be XML or JSON.")
    if cb["CallBackType"] and cb["CallBackType"] not in ("Url", "TDMQ", "Kafka"):
        raise errors.InvalidArgument("CallBackType must be Url, TDMQ or Kafka.")
    url = cb["CallBack"]
    if url and url != "no" and not re.match(r"^https?://[^\s]+$", url):
        raise errors.InvalidArgument("CallBack must be an http(s) URL or 'no'.")
    return {k: v for k, v in cb.items() if v}


async def _check_output(api: Api, op: ET.Element | None) -> None:
    if op is None or op.find("Output") is None:
        return
    key = xmlcodec.text(op, "Output/Object").lstrip("/")
    if key:
        try:
            check_key(key)
        except errors.MediaJobsError as exc:
            raise errors.InvalidArgument(f"Output.Object is not a valid object key: {exc.message}") from None
    bucket = xmlcodec.text(op, "Output/Bucket")
    if bucket and await run(api.service.get_bucket, bucket) is None:
        raise errors.InvalidArgument(f"Output.Bucket {bucket} does not exist.")


def _echo(op: ET.Element | None, level: int) -> Nodes:
    """The Operation as sent; JobLevel is always shown, as in every response of the docs."""
    nodes = list(element_nodes(op)) if op is not None else []
    if not any(name == "JobLevel" for name, _ in nodes):
        nodes.append(("JobLevel", str(level)))
    return nodes


async def create_jobs(api: Api, call: Call, kind: str) -> WireResponse:
    body = await read_small(call, api.settings.max_xml_size)
    root = xmlcodec.parse(body, root="Request")
    top_tag = xmlcodec.text(root, "Tag")
    input_object = xmlcodec.text(root, "Input/Object").lstrip("/")
    operations: list[ET.Element | None] = list(root.findall("Operation")) or [None]
    tags = [(xmlcodec.text(op, "Tag") if op is not None else "") or top_tag for op in operations]
    for tag in tags:
        _tag_processor(tag, kind)
    if not input_object:
        if any(getattr(REGISTRY[tag], "needs_input", True) for tag in tags):
            raise errors.InvalidArgument("Input.Object is required.")
    else:
        try:
            check_key(input_object)
        except errors.MediaJobsError as exc:
            raise errors.InvalidArgument(f"Input.Object is not a valid object key: {exc.message}") from None
    callback = _callback(root)
    hold = None
    if api.settings.test_controls and call.header("x-mediajobs-hold"):
        try:
            hold = min(float(call.header("x-mediajobs-hold")), 3600.0)
        except ValueError:
            raise errors.InvalidArgument("x-mediajobs-hold must be a number of seconds.") from None
    queue = await run(api.jobs.queue_for, call.bucket, kind, xmlcodec.text(root, "QueueId"))
    region = call.target.region or api.settings.region
    new: list[NewJob] = []
    now = time.time()
    for op, tag in zip(operations, tags, strict=True):
        level = _operation_checks(op)
        # Templates first (spec queues-templates 2.6): the processor judges the merged Operation.
        template_name = await templates.apply_templates(api, call.bucket, tag, op)
        try:
            REGISTRY[tag].validate(Submission(call.bucket, input_object, op))
        except InvalidOperation as exc:
            raise errors.InvalidArgument(f"{tag}: {exc}") from None
        templates.echo_template_name(op, template_name)
        await _check_output(api, op)
        new.append(
            NewJob(
                job_id=new_job_id(kind),
                kind=kind,
                bucket=call.bucket,
                region=region,
                queue_id=queue.queue_id,
                tag=tag,
                job_level=level,
                input_object=input_object,
                operation=_echo(op, level),
                callback=callback,
                hold=hold,
                created_at=now,
            )
        )
    created = await run(api.jobs.submit, new)
    return xml_response("Response", [("JobsDetail", job_detail(j, api.tz)) for j in created])


# ---- describe / list / cancel ----------------------------------------------------------------


async def describe_jobs(api: Api, call: Call, kind: str) -> WireResponse:
    raw = call.target.path.split("/", 2)[2]
    ids = list(dict.fromkeys(i for i in raw.split(",") if i))
    if len(ids) > MAX_IDS:
        raise errors.InvalidArgument(f"At most {MAX_IDS} job ids may be queried at once.")
    wanted = [i for i in ids if _ID[kind].match(i)]
    if api.inline_jobs is not None:
        # A point read by primary key on SQLite takes tens of microseconds: cheaper here than the
        # thread hop, and this is the call clients poll.
        found, missing = api.inline_jobs.describe(call.bucket, kind, wanted)
    elif api.jobs.store.loop_reads is not None:
        # PostgreSQL: the same read awaited on the loop, on a connection kept for such reads.
        found, missing = await api.jobs.describe_on_loop(call.bucket, kind, wanted)
    else:
        found, missing = await run(api.jobs.describe, call.bucket, kind, wanted)
    missing += [i for i in ids if not _ID[kind].match(i)]
    nodes: list[tuple[str, Value]] = [("JobsDetail", job_detail(j, api.tz)) for j in found]
    nodes += [("NonExistJobIds", i) for i in ids if i in missing]
    return xml_response("Response", nodes)


def _param(call: Call, name: str) -> str:
    return call.q.get(name, "").strip()


async def list_jobs(api: Api, call: Call, kind: str) -> WireResponse:
    tag = _param(call, "tag")
    if not tag:
        raise errors.InvalidArgument("tag is required.")
    if tag not in DOCUMENTED_TAGS:
        raise errors.InvalidArgument(f"tag {tag} is not a Cloud Infinite job type.")
    order = _param(call, "orderByTime") or "Desc"
    if order not in ("Desc", "Asc"):
        raise errors.InvalidArgument("orderByTime must be Desc or Asc.")
    size_text = _param(call, "size") or "10"
    if not size_text.isdigit() or not 1 <= int(size_text) <= 100:
        raise errors.InvalidArgument("size must be between 1 and 100")
    states_text = _param(call, "states") or "All"
    states = [s.strip() for s in states_text.split(",") if s.strip()]
    unknown = [s for s in states if s != "All" and s not in ALL_STATES]
    if unknown:
        raise errors.InvalidArgument(f"states has unknown values: {', '.join(unknown)}.")
    start = _param(call, "startCreationTime")
    end = call.q.get("endCreationTime", "")
    queue_id = _param(call, "queueId")
    if not queue_id and _param(call, "queueType"):
        queue_type = _param(call, "queueType")
        if queue_type not in ("Transcoding", "SpeedTranscoding", "PicProcess", "PicProcessing"):
            raise errors.InvalidArgument("queueType must be Transcoding or SpeedTranscoding.")
    f = ListFilter(
        bucket=call.bucket,
        kind=kind,
        tag=tag,
        queue_id=queue_id,
        states=() if "All" in states else tuple(sorted(set(states))),
        start=parse_filter_time("startCreationTime", call.q.get("startCreationTime", "")) if start else None,
        end=parse_filter_time("endCreationTime", end) if end.strip() else None,
        workflow_id=_param(call, "workflowId"),
        inventory_job_id=_param(call, "inventoryTriggerJobId"),
        input_object=_param(call, "inputObject"),
        ascending=order == "Asc",
    )
    page = await run(api.jobs.list_page, f, _param(call, "nextToken"), int(size_text))
    nodes: list[tuple[str, Value]] = [("JobsDetail", job_detail(j, api.tz)) for j in page.jobs]
    nodes.append(("NextToken", page.next_token or None))
    return xml_response("Response", nodes)


async def cancel_job(api: Api, call: Call, kind: str) -> WireResponse:
    job_id = call.target.path.rsplit("/", 1)[1]
    await run(api.jobs.cancel, call.bucket, kind, job_id)
    return empty(200)


# ---- queues and buckets ------------------------------------------------------------------


def _queue_category(call: Call) -> tuple[str, tuple[str, ...]]:
    if call.target.path.startswith("/picqueue"):
        return CATEGORY[PIC], (CATEGORY[PIC],)
    category = _param(call, "category") or "Transcoding"
    if category not in ("CateAll", "Transcoding", "SpeedTranscoding"):
        raise errors.InvalidArgument("category must be CateAll, Transcoding or SpeedTranscoding.")
    return CATEGORY[MEDIA], ((CATEGORY[MEDIA],) if category != "SpeedTranscoding" else ("SpeedTranscoding",))


def _page_param(call: Call, name: str, default: int, high: int) -> int:
    text = _param(call, name)
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise errors.InvalidArgument(f"{name} must be a positive integer.")
    return min(int(text), high)


async def list_queues(api: Api, call: Call) -> WireResponse:
    _, categories = _queue_category(call)
    state = _param(call, "state")
    if state not in ("", "All", "Active", "Paused"):
        raise errors.InvalidArgument("state must be Active or Paused.")
    found = await run(api.jobs.queues, call.bucket, categories)
    if state in ("Active", "Paused"):
        found = [q for q in found if q.state == state]
    ids_text = _param(call, "queueIds")
    if ids_text:
        ids = [i for i in ids_text.split(",") if i]
        if len(ids) > 10:
            raise errors.InvalidArgument("At most 10 queueIds may be given.")
        by_id = {q.queue_id: q for q in found}
        nodes: list[tuple[str, Value]] = [("RequestId", call.request_id)]
        nodes += [("QueueList", queue_nodes(by_id[i], api.tz)) for i in ids if i in by_id]
        nodes += [("NonExistPIDs", i) for i in ids if i not in by_id]
        return xml_response("Response", nodes)
    number = _page_param(call, "pageNumber", 1, 1_000_000)
    size = _page_param(call, "pageSize", 10, 100)
    page = found[(number - 1) * size : number * size]
    nodes = [
        ("RequestId", call.request_id),
        ("TotalCount", str(len(found))),
        ("PageNumber", str(number)),
        ("PageSize", str(size)),
    ]
    nodes += [("QueueList", queue_nodes(q, api.tz)) for q in page]
    return xml_response("Response", nodes)


async def update_queue(api: Api, call: Call) -> WireResponse:
    category, _ = _queue_category(call)
    queue_id = call.target.path.rsplit("/", 1)[1]
    body = await read_small(call, api.settings.max_xml_size)
    root = xmlcodec.parse(body, root="Request")
    given_id = xmlcodec.text(root, "QueueID") or xmlcodec.text(root, "QueueId")
    if given_id and given_id != queue_id:
        raise errors.InvalidArgument("QueueID in the body differs from the queue id in the path.")
    state = xmlcodec.text(root, "State")
    if state not in ("Active", "Paused"):
        raise errors.InvalidArgument("State must be Active or Paused.")
    notify = None
    nc = root.find("NotifyConfig")
    if nc is not None:
        notify = {c.tag: (c.text or "").strip() for c in nc if not len(c)}
        if notify.get("State", "Off") not in ("On", "Off"):
            raise errors.InvalidArgument("NotifyConfig.State must be On or Off.")
        if notify.get("ResultFormat") and notify["ResultFormat"].upper() not in ("XML", "JSON"):
            raise errors.InvalidArgument("NotifyConfig.ResultFormat must be XML or JSON.")
        if notify.get("Type", "Url") not in ("Url", "TDMQ", "Kafka"):
            raise errors.InvalidArgument("NotifyConfig.Type must be Url, TDMQ or Kafka.")
        url = notify.get("Url", "")
        if (
            notify.get("State") == "On"
            and notify.get("Type", "Url") == "Url"
            and not re.match(r"^https?://\S+$", url)
        ):
            raise errors.InvalidArgument(
                "NotifyConfig.Url must be an http(s) URL when the notification is On."
            )
        events = [e.strip() for e in notify.get("Event", "").split(",") if e.strip()]
        if any(e not in ("TaskFinish", "WorkflowFinish") for e in events):
            raise errors.InvalidArgument("NotifyConfig.Event may list TaskFinish and WorkflowFinish.")
        notify.setdefault("Type", "Url")
        notify.setdefault("Event", "TaskFinish")
        notify.setdefault("ResultFormat", "XML")
        notify.setdefault("State", "Off")
    name = xmlcodec.text(root, "Name") or None
    q = await run(api.jobs.update_queue, call.bucket, category, queue_id, name, state, notify)
    return xml_response("Response", [("RequestId", call.request_id), ("Queue", queue_nodes(q, api.tz))])


async def list_media_buckets(api: Api, call: Call) -> WireResponse:
    found = await run(api.service.list_buckets)
    region_filter = {r for r in _param(call, "regions").split(",") if r}
    names = {b for b in _param(call, "bucketNames").split(",") if b}
    fuzzy = _param(call, "bucketName")
    found = [
        b
        for b in found
        if (not region_filter or b.region in region_filter)
        and (not names or b.name in names)
        and (not fuzzy or fuzzy in b.name)
    ]
    number = _page_param(call, "pageNumber", 1, 1_000_000)
    size = _page_param(call, "pageSize", 10, 100)
    page = found[(number - 1) * size : number * size]
    nodes: list[tuple[str, Value]] = [
        ("RequestId", call.request_id),
        ("TotalCount", str(len(found))),
        ("PageNumber", str(number)),
        ("PageSize", str(size)),
    ]
    nodes += [
        (
            "MediaBucketList",
            [
                ("BucketId", b.name),
                ("Name", b.name),
                ("Region", b.region),
                ("CreateTime", fmt_time(b.created_at, api.tz)),
            ],
        )
        for b in page
    ]
    return xml_response("Response", nodes)
