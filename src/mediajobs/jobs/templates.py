"""Media templates (spec/queues-templates.md 2): where each Tag keeps its parameters, the
Official presets, and the store of Custom templates.

A template is one Tag's parameter nodes under an id. Custom templates (`t1...`) belong to a
bucket and live in the database; Official ones (`t0...`) are data in this module, the same
for every bucket, and cannot be changed. A job that names a template copies its parameters
into its own Operation at submission, so later changes to the template do not reach it.
"""

from __future__ import annotations

import json
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, and_, delete, func, insert, select, update

from ..db.schema import templates
from ..nodes import Nodes, Value, element_nodes
from .model import as_nodes

CUSTOM = "Custom"
OFFICIAL = "Official"
MAX_NAME = 64
MAX_PAGE_SIZE = 100
MAX_IDS = 100


@dataclass(frozen=True)
class Shape:
    """How one Tag's parameters travel: in a create request, in a stored template, in a job."""

    container: str  # the element under <Template> that holds the parameters
    job_node: str  # the Operation element a job using the template gets
    direct: tuple[str, ...] = ()  # parameter nodes that sit directly under <Request>
    single: str = ""  # else: the one <Request> child whose children are the parameters
    required: tuple[str, ...] = ()  # essential nodes (direct) or the single node itself
    open: bool = False  # out of scope: every child of <Request> but Tag and Name is kept as is
    validate: bool = True  # a job of this Tag is described by the template alone


_TRANS = ("Container", "Video", "Audio", "TimeInterval", "TransConfig", "AudioMix", "AudioMixArray")

SHAPES: dict[str, Shape] = {
    "Transcode": Shape("TransTpl", "Transcode", direct=_TRANS, required=("Container",)),
    "Animation": Shape(
        "TransTpl",
        "Animation",
        direct=("Container", "Video", "TimeInterval"),
        required=("Container", "Video"),
    ),
    "Snapshot": Shape("Snapshot", "Snapshot", single="Snapshot", required=("Snapshot",)),
    "Concat": Shape(
        "ConcatTemplate", "ConcatTemplate", single="ConcatTemplate", required=("ConcatTemplate",)
    ),
    "Watermark": Shape("Watermark", "Watermark", single="Watermark", required=("Watermark",)),
    "VideoMontage": Shape(
        "VideoMontage",
        "VideoMontage",
        direct=("Container", "Video", "Audio", "Duration", "Scene", "AudioMix", "AudioMixArray"),
    ),
    "VoiceSeparate": Shape(
        "VoiceSeparate", "VoiceSeparate", direct=("AudioMode", "AudioConfig"), required=("AudioMode",)
    ),
    "SmartCover": Shape("SmartCover", "SmartCover", single="SmartCover", required=("SmartCover",)),
    "PicProcess": Shape("PicProcess", "PicProcess", single="PicProcess", required=("PicProcess",)),
    # The next three Tags also need a Transcode (template or node) in the job: their templates
    # hold only part of a job, so a job's processor cannot judge them alone.
    "VideoProcess": Shape(
        "VideoProcess", "VideoProcess", direct=("ColorEnhance", "MsSharpen"), validate=False
    ),
    "SuperResolution": Shape(
        "SuperResolution",
        "SuperResolution",
        direct=("Resolution", "EnableScaleUp", "Version"),
        validate=False,
    ),
    "VideoEnhance": Shape(
        "VideoEnhance", "VideoEnhance", single="VideoEnhance", required=("VideoEnhance",), validate=False
    ),
    "NoiseReduction": Shape(
        "NoiseReduction", "NoiseReduction", single="NoiseReduction", required=("NoiseReduction",)
    ),
    # Out of scope: stored and echoed as sent (jobs of these Tags are refused by the Tag check).
    "TranscodePro": Shape("TransProTpl", "TranscodePro", open=True, validate=False),
    "HighSpeedHd": Shape("TransTpl", "HighSpeedHd", open=True, validate=False),
    "Tts": Shape("TtsTpl", "Tts", open=True, validate=False),
    "SpeechRecognition": Shape("SpeechRecognition", "SpeechRecognition", open=True, validate=False),
    "VideoTargetRec": Shape("VideoTargetRec", "VideoTargetRec", open=True, validate=False),
    "ImageOCR": Shape("ImageOCR", "ImageOCR", open=True, validate=False),
}


class BadTemplate(ValueError):
    """The template's nodes are missing or misplaced (becomes 400 InvalidArgument)."""


@dataclass(frozen=True)
class Template:
    template_id: str
    bucket: str  # "" for Official templates
    tag: str
    name: str
    category: str
    params: Nodes  # the children of the Tag's container node
    create_time: float
    update_time: float

    @property
    def shape(self) -> Shape:
        return SHAPES[self.tag]


# ---- node trees ------------------------------------------------------------------------------


def request_params(tag: str, request: ET.Element) -> Nodes:
    """The parameter nodes of a Create/Update body, as they will be stored."""
    shape = SHAPES[tag]
    if shape.open:
        return [(n, v) for n, v in element_nodes(request) if n not in ("Tag", "Name")]
    if shape.single:
        node = request.find(shape.single)
        if node is None:
            if shape.single in shape.required:
                raise BadTemplate(f"A {tag} template needs the {shape.single} node under Request.")
            return []
        return element_nodes(node)
    params = [(n, v) for n, v in element_nodes(request) if n in shape.direct]
    missing = [n for n in shape.required if not any(name == n for name, _ in params)]
    if missing:
        raise BadTemplate(f"A {tag} template needs {', '.join(missing)} under Request.")
    return params


# ---- Official presets (spec 2.5) --------------------------------------------------------------

# Presets carry a fixed creation time: they predate every bucket.
_PRESET_TIME = 1577808000.0  # 2020-01-01T00:00:00+0800

_TRANSCODE_PRESETS = (
    # (id, name, container, width, video kbit/s, video codec)
    ("t0e2b9f4cd25184c6ab73d0c85a6ee9cb5", "H264-MP4-LD-360P", "mp4", 640, 512, "H.264"),
    ("t0876739cd865042d1957d73c78f0484fb", "H264-MP4-SD-480P", "mp4", 720, 1024, "H.264"),
    ("t0852e7ff4acd4484e99ba104f3840d3cb", "H264-MP4-HD-720P", "mp4", 1280, 2000, "H.264"),
    ("t04df9eb0c373c4a8780ec894ce05469a7", "H264-MP4-FHD-1080P", "mp4", 1920, 3500, "H.264"),
    ("t09d027135634d47048e5a30dc1e19ee90", "H264-MP4-2K", "mp4", 2048, 4800, "H.264"),
    ("t0e634622e8dfb49339ba478d60ddc7188", "H264-HLS-LD-360P", "hls", 640, 512, "H.264"),
    ("t0fa5bdbf58bb348e88bf73fae5d674fdf", "H264-HLS-SD-480P", "hls", 720, 1024, "H.264"),
    ("t09d0f419921e44ed98190f355ec9fd629", "H264-HLS-HD-720P", "hls", 1280, 2000, "H.264"),
    ("t080ae8a06f9074f3daa46201078f8d4b1", "H264-HLS-FHD-1080P", "hls", 1920, 3500, "H.264"),
    ("t0ab68939cef0f40d19c4a135df540239f", "H264-HLS-2K", "hls", 2048, 4800, "H.264"),
    ("t0e165bef65ed24d568eeecc8661248af6", "H264-FLV-LD-360P", "flv", 640, 512, "H.264"),
    ("t057d0410c32444e48b9220f9571e6097a", "H264-FLV-SD-480P", "flv", 720, 1024, "H.264"),
    ("t00daf332ba39049f8bfb899c1ed0134b0", "H264-FLV-HD-720P", "flv", 1280, 2000, "H.264"),
    ("t0d41905a814434c8a81897ecb54d53a32", "H264-FLV-FHD-1080P", "flv", 1920, 3500, "H.264"),
    ("t0e287e59454b94a8983ba78a6a30ee864", "H264-FLV-2K", "flv", 2048, 4800, "H.264"),
    # The older revision of the same presets: the ids the SDK demos use.
    ("t02db40900dc1c43ad9bdbd8acec6075c5", "MP4-FLU", "mp4", 640, 512, "H.264"),
    ("t04e1ab86554984f1aa17c062fbf6c007c", "MP4-SD", "mp4", 720, 1024, "H.264"),
    ("t02d06d8ad881648e69f9ca95b2e7e4b6a", "MP4-HD", "mp4", 1280, 2000, "H.264"),
    ("t064fb9214850f49aaac44b5561a7b0b3b", "MP4-FHD", "mp4", 1920, 3500, "H.264"),
    ("t077211ea3e0e74168b8ed921fcb2d5a6b", "MP4-2K", "mp4", 2048, 4800, "H.264"),
    ("t0c9cfaffb5055467691b85eed1242cd03", "FLV-FLU", "flv", 640, 512, "H.264"),
    ("t0b612860a293f410785b3e672465dca38", "FLV-SD", "flv", 720, 1024, "H.264"),
    ("t0b6a845f5e42847bd810ee9cbf337f83c", "FLV-HD", "flv", 1280, 2000, "H.264"),
    # Seen in workflow examples; parameters inferred from the names.
    ("t01e57db1c2d154d2fb57aa5de9313a897", "MP4-265-SD", "mp4", 720, 1024, "H.265"),
    ("t088613dea8d564a9ba7e6b02cbd5de877", "HLS-FHD", "hls", 1920, 3500, "H.264"),
)

_SNAPSHOT_PRESETS = (
    # (id, name, interval s, width, height)
    ("t01d40e440761448fc8c538fb8d5a5b81e", "snapshot_320*180_1", 2, 320, 180),
    ("t0a60a2bc71a4b40c7b3d7f7e8a2779a81", "snapshot_640*360_2", 10, 640, 360),
    ("t07740e32081b44ad7a0aea03adcffd54a", "snapshot_1280*720_3", 10, 1280, 720),
)

_ANIMATION_PRESETS = (
    "t04373959a69c04d47b62fd214dd13d8e9 gif_320*180_1",
    "t0341b0ab2b8a340ff826e9cb4f3a7baea gif_320*180_2",
    "t046b1d8e5bdf842c6a58d8028b48eafee gif_320*180_3",
    "t0ef2077f215864c018a2fca73614ceca6 gif_640*360_4",
    "t0d21406ca737a40869973a37a5daa349a gif_640*360_5",
    "t0878a9c9c1f054cb5bca68b8b06e556c2 gif_640*360_6",
    "t0dae821708cea4ba5b3e271810ac80a21 gif_1280*720_7",
    "t03fef67ad94d2466b9c0c89252ed72e87 gif_1280*720_8",
    "t030a64e9f9f5a4f53a9ef64bb7ce490b5 gif_1280*720_9",
    "t03b0e9eca4fc34e2cba9da89d9c7c13a2 webp_320*180_1",
    "t016fcddf6bc3c44b793e9b7b07119b4ee webp_320*180_2",
    "t0bf1f1ce6d2404b258c0f81fbb9aaece1 webp_320*180_3",
    "t098d6d3fcfd2c45309a408594a42559f6 webp_640*360_4",
    "t0169a6a9c2eec4b51972eb63bafcbf08d webp_640*360_5",
    "t0ef9ba537011e4876b8777aebc19d10a5 webp_640*360_6",
    "t02743d344b5e74c579e50e9e135b432b8 webp_1280*720_7",
    "t0dd27c136ff2741538bec96981e058868 webp_1280*720_8",
    "t00ad05235d67a45a9a697b553052b7346 webp_1280*720_9",
)


def _preset(template_id: str, name: str, tag: str, params: Nodes) -> Template:
    return Template(template_id, "", tag, name, OFFICIAL, params, _PRESET_TIME, _PRESET_TIME)


def _transcode_params(container: str, width: int, kbps: int, codec: str) -> Nodes:
    return [
        ("Container", [("Format", container)]),
        (
            "Video",
            [
                ("Codec", codec),
                *([("Profile", "high")] if codec == "H.264" else []),
                ("Width", str(width)),
                ("Height", None),
                ("Bitrate", str(kbps)),
                ("Preset", "medium"),
            ],
        ),
        ("Audio", [("Codec", "aac"), ("Samplerate", "44100"), ("Bitrate", "128"), ("Channels", "2")]),
        ("TimeInterval", [("Start", "0"), ("Duration", None)]),
    ]


def _snapshot_params(interval: int, width: int, height: int) -> Nodes:
    return [
        ("Mode", "Interval"),
        ("Start", "0"),
        ("TimeInterval", str(interval)),
        ("Count", "5"),
        ("Width", str(width)),
        ("Height", str(height)),
        ("Format", "jpg"),
        ("SnapshotOutMode", "OnlySnapshot"),
    ]


def _animation_params(name: str) -> Nodes:
    fmt, size, variant = name.split("_")
    width, height = size.split("*")
    kind = (int(variant) - 1) % 3  # 0: key frames only, 1: one frame every 10 s, 2: 10 frames a second
    video: list[tuple[str, Value]] = [("Codec", fmt), ("Width", width), ("Height", height)]
    if kind == 0:
        video.append(("AnimateOnlyKeepKeyFrame", "true"))
    elif kind == 1:
        video.append(("AnimateTimeIntervalOfFrame", "10"))
    else:
        video.append(("AnimateFramesPerSecond", "10"))
    if fmt == "webp":
        video.append(("Quality", "75"))
    duration = "60" if fmt == "webp" and kind == 0 else "600"
    return [
        ("Container", [("Format", fmt)]),
        ("Video", video),
        ("TimeInterval", [("Start", "0"), ("Duration", duration)]),
    ]


def _presets() -> dict[str, Template]:
    out: list[Template] = []
    for tid, name, container, width, kbps, codec in _TRANSCODE_PRESETS:
        out.append(_preset(tid, name, "Transcode", _transcode_params(container, width, kbps, codec)))
    for tid, name, interval, width, height in _SNAPSHOT_PRESETS:
        out.append(_preset(tid, name, "Snapshot", _snapshot_params(interval, width, height)))
    for line in _ANIMATION_PRESETS:
        tid, name = line.split()
        out.append(_preset(tid, name, "Animation", _animation_params(name)))
    return {t.template_id: t for t in out}


OFFICIAL_TEMPLATES: dict[str, Template] = _presets()


# ---- the store -------------------------------------------------------------------------------


def new_template_id() -> str:
    return "t1" + uuid.uuid4().hex


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _template(row: Any) -> Template:
    return Template(
        template_id=row.template_id,
        bucket=row.bucket,
        tag=row.tag,
        name=row.name,
        category=CUSTOM,
        params=as_nodes(json.loads(row.params)),
        create_time=row.create_time,
        update_time=row.update_time,
    )


@dataclass(frozen=True)
class Query:
    bucket: str
    category: str = CUSTOM
    tag: str = ""
    ids: tuple[str, ...] = ()
    name_prefix: str = ""
    page_number: int = 1
    page_size: int = 10


class TemplateStore:
    """Custom templates in the database; Official ones from OFFICIAL_TEMPLATES."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, bucket: str, tag: str, name: str, params: Nodes) -> Template:
        now = time.time()
        t = Template(new_template_id(), bucket, tag, name, CUSTOM, params, now, now)
        with self.engine.connect().execution_options(write=True) as conn, conn.begin():
            conn.execute(
                insert(templates).values(
                    template_id=t.template_id,
                    bucket=bucket,
                    tag=tag,
                    name=name,
                    params=_dumps(params),
                    create_time=now,
                    update_time=now,
                )
            )
        return t

    def get(self, bucket: str, template_id: str) -> Template | None:
        """A template the bucket may use: its own Custom ones, and every Official one."""
        official = OFFICIAL_TEMPLATES.get(template_id)
        if official is not None:
            return official
        with self.engine.connect() as conn:
            row = conn.execute(
                select(templates).where(templates.c.template_id == template_id, templates.c.bucket == bucket)
            ).first()
        return _template(row) if row else None

    def get_many(self, bucket: str, ids: Sequence[str]) -> dict[str, Template]:
        found = {i: OFFICIAL_TEMPLATES[i] for i in ids if i in OFFICIAL_TEMPLATES}
        custom = [i for i in ids if i not in found]
        if custom:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(templates).where(templates.c.template_id.in_(custom), templates.c.bucket == bucket)
                ).all()
            found.update({r.template_id: _template(r) for r in rows})
        return found

    def list_page(self, q: Query) -> tuple[int, list[Template]]:
        """(total matching, the page's templates); Custom ones oldest first, Official in table order."""
        offset = (q.page_number - 1) * q.page_size
        if q.category == OFFICIAL:
            matching = [
                t
                for t in OFFICIAL_TEMPLATES.values()
                if (not q.tag or t.tag == q.tag)
                and (not q.ids or t.template_id in q.ids)
                and t.name.startswith(q.name_prefix)
            ]
            return len(matching), matching[offset : offset + q.page_size]
        where = [templates.c.bucket == q.bucket]
        if q.tag:
            where.append(templates.c.tag == q.tag)
        if q.ids:
            where.append(templates.c.template_id.in_(list(q.ids)))
        if q.name_prefix:
            # An exact prefix: no LIKE, so '_' and '*' in names are plain characters.
            where.append(func.substr(templates.c.name, 1, len(q.name_prefix)) == q.name_prefix)
        cond = and_(*where)
        with self.engine.connect() as conn:
            total = int(conn.execute(select(func.count()).select_from(templates).where(cond)).scalar_one())
            rows = conn.execute(
                select(templates)
                .where(cond)
                .order_by(templates.c.create_time, templates.c.template_id)
                .offset(offset)
                .limit(q.page_size)
            ).all()
        return total, [_template(r) for r in rows]

    def update(self, bucket: str, template_id: str, tag: str, name: str, params: Nodes) -> Template | None:
        """Replace a Custom template's name and parameters; None when no such template of that Tag."""
        with self.engine.connect().execution_options(write=True) as conn, conn.begin():
            n = conn.execute(
                update(templates)
                .where(
                    templates.c.template_id == template_id,
                    templates.c.bucket == bucket,
                    templates.c.tag == tag,
                )
                .values(name=name, params=_dumps(params), update_time=time.time())
            ).rowcount
            if not n:
                return None
            row = conn.execute(select(templates).where(templates.c.template_id == template_id)).one()
        return _template(row)

    def delete(self, bucket: str, template_id: str) -> bool:
        with self.engine.connect().execution_options(write=True) as conn, conn.begin():
            n = conn.execute(
                delete(templates).where(templates.c.template_id == template_id, templates.c.bucket == bucket)
            ).rowcount
        return bool(n)
