"""REGISTRY: Tag -> Processor. A new Tag is one module with one `@register` class."""

from __future__ import annotations

from typing import TypeVar

from .base import Processor

REGISTRY: dict[str, Processor] = {}

P = TypeVar("P")

# Every Tag the service documents (spec/tags.md), so that an unknown name and a known but
# unsupported one get different messages.
DOCUMENTED_TAGS = frozenset(
    (
        "MediaInfo", "Transcode", "Snapshot", "Animation", "Concat", "Segment", "SmartCover",
        "VideoMontage", "Watermark", "StreamExtract", "VoiceSeparate", "NoiseReduction", "SDRtoHDR",
        "VideoEnhance", "VideoProcess", "SuperResolution", "DigitalWatermark", "ExtractDigitalWatermark",
        "VideoTag", "QualityEstimate", "PicProcess", "Tts", "SpeechRecognition", "Translation",
        "WordsGeneralize", "VideoTargetRec", "SegmentVideoBody", "SplitVideoParts", "TranscodePro",
        "ImageInspect", "SoundHound", "VocalScore", "FillConcat", "VideoSynthesis", "GeneratePlayList", "DNA",
    )
)  # fmt: skip


def register(cls: type[P]) -> type[P]:
    tag = getattr(cls, "tag")  # noqa: B009 - checked at import
    if tag in REGISTRY:
        raise RuntimeError(f"two processors for Tag {tag}")
    REGISTRY[tag] = cls()  # type: ignore[assignment]
    return cls


from . import animation as _animation  # noqa: E402, F401
from . import concat as _concat  # noqa: E402, F401
from . import mediainfo as _mediainfo  # noqa: E402, F401  - each registers itself
from . import picprocess as _picprocess  # noqa: E402, F401
from . import segment as _segment  # noqa: E402, F401
from . import smartcover as _smartcover  # noqa: E402, F401
from . import snapshot as _snapshot  # noqa: E402, F401
from . import streamextract as _streamextract  # noqa: E402, F401
from . import transcode as _transcode  # noqa: E402, F401
from . import videomontage as _videomontage  # noqa: E402, F401
