"""The media template APIs (spec/queues-templates.md 2) and how a job takes in its templates (2.6).

Endpoints parse, call the TemplateStore, render. `apply_templates` is what CreateMediaJobs
calls for each Operation before its processor validates it.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import timezone
from typing import TYPE_CHECKING

from .. import errors
from ..jobs.render import fmt_time
from ..jobs.templates import (
    CUSTOM,
    MAX_IDS,
    MAX_NAME,
    MAX_PAGE_SIZE,
    OFFICIAL,
    OFFICIAL_TEMPLATES,
    SHAPES,
    BadTemplate,
    Query,
    Template,
    TemplateStore,
    request_params,
)
from ..nodes import Nodes, Value, build_element
from ..processors import REGISTRY
from ..processors.base import InvalidOperation, Submission
from . import xmlcodec
from .common import read_small, run
from .wire import WireResponse, xml_response

if TYPE_CHECKING:
    from .server import Api, Call

_NAME = re.compile(rf"^[\w\-*]{{1,{MAX_NAME}}}$")
_TEMPLATE_ID = re.compile(r"^t[01][0-9a-f]{32}$")
MAX_WATERMARKS = 3


def _store(api: Api) -> TemplateStore:
    return TemplateStore(api.jobs.store.engine)


def template_nodes(t: Template, tz: timezone) -> Nodes:
    return [
        ("TemplateId", t.template_id),
        ("Name", t.name),
        ("Tag", t.tag),
        ("BucketId", t.bucket or None),
        ("Category", t.category),
        (t.shape.container, t.params or None),
        ("CreateTime", fmt_time(t.create_time, tz)),
        ("UpdateTime", fmt_time(t.update_time, tz)),
    ]


def _check_params(bucket: str, tag: str, root: ET.Element) -> Nodes:
    """The parameters of a Create/Update body, checked the way a job of the Tag would be."""
    try:
        params = request_params(tag, root)
    except BadTemplate as exc:
        raise errors.InvalidArgument(str(exc)) from None
    shape = SHAPES[tag]
    proc = REGISTRY.get(tag)
    if proc is not None and shape.validate:
        # The Operation a job using this template would carry, with a stand-in Output.
        op = ET.Element("Operation")
        op.append(build_element(shape.job_node, params))
        out = ET.SubElement(op, "Output")
        for name, value in (("Region", "ap-guangzhou"), ("Bucket", bucket), ("Object", "template-check")):
            ET.SubElement(out, name).text = value
        try:
            proc.validate(Submission(bucket, "template-check", op))
        except InvalidOperation as exc:
            raise errors.InvalidArgument(f"{tag}: {exc}") from None
    return params


def _tag_and_name(root: ET.Element) -> tuple[str, str]:
    tag = xmlcodec.text(root, "Tag")
    if not tag:
        raise errors.InvalidArgument("Tag is required.")
    if tag not in SHAPES:
        raise errors.InvalidArgument(
            f"Tag {tag} has no templates; template Tags are {', '.join(sorted(SHAPES))}."
        )
    return tag, _name(root)


def _name(root: ET.Element) -> str:
    name = xmlcodec.text(root, "Name")
    if name and not _NAME.match(name):
        raise errors.InvalidArgument(
            f"Name must be 1-{MAX_NAME} letters, digits, CJK characters, '_', '-' or '*'."
        )
    return name


# ---- endpoints ---------------------------------------------------------------------------------


async def create_template(api: Api, call: Call) -> WireResponse:
    root = xmlcodec.parse(await read_small(call, api.settings.max_xml_size), root="Request")
    tag, name = _tag_and_name(root)
    if not name:
        raise errors.InvalidArgument("Name is required.")
    params = _check_params(call.bucket, tag, root)
    t = await run(_store(api).create, call.bucket, tag, name, params)
    return xml_response("Response", [("RequestId", call.request_id), ("Template", template_nodes(t, api.tz))])


def _path_id(call: Call) -> str:
    """The template id of an Update/Delete path; Official ones are view-only."""
    template_id = call.target.path.rsplit("/", 1)[1]
    if template_id in OFFICIAL_TEMPLATES:
        raise errors.InvalidRequest(f"Template {template_id} is an Official template: it cannot be changed.")
    if not _TEMPLATE_ID.match(template_id):
        raise errors.NoSuchResource(f"Template {template_id} does not exist.")
    return template_id


async def update_template(api: Api, call: Call) -> WireResponse:
    template_id = _path_id(call)
    root = xmlcodec.parse(await read_small(call, api.settings.max_xml_size), root="Request")
    store = _store(api)
    old = await run(store.get, call.bucket, template_id)
    if old is None:
        raise errors.NoSuchResource(f"Template {template_id} does not exist.")
    tag = xmlcodec.text(root, "Tag") or old.tag
    if tag != old.tag:
        raise errors.InvalidArgument(
            f"Template {template_id} is a {old.tag} template; Tag cannot become {tag}."
        )
    name = _name(root)
    params = _check_params(call.bucket, tag, root)
    t = await run(store.update, call.bucket, template_id, tag, name or old.name, params)
    if t is None:  # deleted meanwhile
        raise errors.NoSuchResource(f"Template {template_id} does not exist.")
    return xml_response("Response", [("RequestId", call.request_id), ("Template", template_nodes(t, api.tz))])


async def delete_template(api: Api, call: Call) -> WireResponse:
    template_id = _path_id(call)
    if not await run(_store(api).delete, call.bucket, template_id):
        raise errors.NoSuchResource(f"Template {template_id} does not exist.")
    return xml_response("Response", [("RequestId", call.request_id), ("TemplateId", template_id)])


def _int_param(call: Call, name: str, default: int, high: int) -> int:
    text = call.q.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise errors.InvalidArgument(f"{name} must be a positive integer.")
    return min(int(text), high)


async def describe_templates(api: Api, call: Call) -> WireResponse:
    category = call.q.get("category", "").strip() or CUSTOM
    if category not in (CUSTOM, OFFICIAL):
        raise errors.InvalidArgument("category must be Custom or Official.")
    tag = call.q.get("tag", "").strip()
    if tag and tag not in SHAPES:
        raise errors.InvalidArgument(f"tag {tag} is not a template Tag.")
    ids = tuple(dict.fromkeys(i.strip() for i in call.q.get("ids", "").split(",") if i.strip()))
    if len(ids) > MAX_IDS:
        raise errors.InvalidArgument(f"At most {MAX_IDS} template ids may be queried at once.")
    q = Query(
        bucket=call.bucket,
        category=category,
        tag=tag,
        ids=ids,
        name_prefix=call.q.get("name", "").strip(),
        page_number=_int_param(call, "pageNumber", 1, 1_000_000),
        page_size=_int_param(call, "pageSize", 10, MAX_PAGE_SIZE),
    )
    total, page = await run(_store(api).list_page, q)
    nodes: list[tuple[str, Value]] = [
        ("RequestId", call.request_id),
        ("TotalCount", str(total)),
        ("PageNumber", str(q.page_number)),
        ("PageSize", str(q.page_size)),
    ]
    nodes += [("TemplateList", template_nodes(t, api.tz)) for t in page]
    return xml_response("Response", nodes)


# ---- jobs (spec 2.6) -----------------------------------------------------------------------------


def _replace(op: ET.Element, name: str, new: list[ET.Element], after: str) -> None:
    """Put `new` where the `name` children were (else after the `after` child), removing those."""
    children = list(op)
    old = [i for i, c in enumerate(children) if c.tag == name]
    if old:
        at = old[0]
    else:
        anchors = [i for i, c in enumerate(children) if c.tag == after]
        at = anchors[0] + 1 if anchors else len(children)
    for c in children:
        if c.tag == name:
            op.remove(c)
    for offset, elem in enumerate(new):
        op.insert(at + offset, elem)


def _resolve(found: dict[str, Template], node: str, template_id: str, want: str) -> Template:
    t = found.get(template_id)
    if t is None:
        raise errors.InvalidArgument(f"{node} {template_id} does not exist.")
    if t.tag != want:
        raise errors.InvalidArgument(
            f"{node} {template_id} is a {t.tag} template; this needs a {want} template."
        )
    return t


async def apply_templates(api: Api, bucket: str, tag: str, op: ET.Element | None) -> str | None:
    """Merge the Operation's templates into it, in place; return the TemplateName to echo.

    `TemplateId` (a template of the job's Tag) replaces the Tag's inline node: the template
    wins. `TranscodeTemplateId` replaces an inline `Transcode`. `WatermarkTemplateId`s (at most
    3) become `Watermark` nodes ahead of the inline ones, 3 in all. The job keeps the copied
    parameters, so later changes to a template do not reach it.
    """
    if op is None:
        return None
    template_id = xmlcodec.text(op, "TemplateId")
    transcode_id = xmlcodec.text(op, "TranscodeTemplateId")
    watermark_ids = [
        (e.text or "").strip() for e in op.findall("WatermarkTemplateId") if (e.text or "").strip()
    ]
    if not (template_id or transcode_id or watermark_ids):
        return None
    if len(watermark_ids) > MAX_WATERMARKS:
        raise errors.InvalidArgument(f"At most {MAX_WATERMARKS} WatermarkTemplateId may be given.")
    wanted = [i for i in (template_id, transcode_id, *watermark_ids) if i]
    found = await run(_store(api).get_many, bucket, wanted)
    if transcode_id:
        t = _resolve(found, "TranscodeTemplateId", transcode_id, "Transcode")
        _replace(op, "Transcode", [build_element("Transcode", t.params)], "TranscodeTemplateId")
    if watermark_ids:
        marks = [build_element("Watermark", _resolve(found, "WatermarkTemplateId", i, "Watermark").params)
                 for i in watermark_ids]  # fmt: skip
        marks += op.findall("Watermark")
        _replace(op, "Watermark", marks[:MAX_WATERMARKS], "WatermarkTemplateId")
    if not template_id:
        return None
    t = _resolve(found, "TemplateId", template_id, tag)
    _replace(op, t.shape.job_node, [build_element(t.shape.job_node, t.params)], "TemplateId")
    return t.name


def echo_template_name(op: ET.Element | None, name: str | None) -> None:
    """Add `TemplateName` right after `TemplateId` (spec 2.6: the job's Operation shows it)."""
    if op is None or name is None:
        return
    elem = ET.Element("TemplateName")
    elem.text = name
    _replace(op, "TemplateName", [elem], "TemplateId")
