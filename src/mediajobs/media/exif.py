"""EXIF tags as libvips reports them -> the body of ``?exif`` (spec: image-processing.md, section 5.2).

libvips exposes each EXIF entry of an image as a string field named ``exif-ifd<N>-<Tag>`` whose value
reads ``<value> (<readable value>, <TIFF type>, <n> components, <m> bytes)``, for instance
``1/125 (1/125 sec., Rational, 1 components, 8 bytes)``. `from_fields` turns those fields into the
Qiniu-shaped answer, one entry per tag: ``{"ExposureTime": {"val": "1/125 sec.", "type": 5}}``.

The readable value (libexif's) is preferred; where libexif could not name an enumerated value it prints
``Internal error (unknown value 6)``, and then the few common enumerations below name it, or the plain
value is kept. A tag present in several IFDs keeps the lowest IFD's entry (IFD1 describes the embedded
thumbnail, not the image).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["TIFF_TYPES", "from_fields", "parse_value"]

TIFF_TYPES = {
    "Byte": 1,
    "ASCII": 2,
    "Short": 3,
    "Long": 4,
    "Rational": 5,
    "SByte": 6,
    "Undefined": 7,
    "SShort": 8,
    "SLong": 9,
    "SRational": 10,
    "Float": 11,
    "Double": 12,
}
"""libexif's format names -> TIFF type numbers."""

_FIELD = re.compile(r"exif-ifd([0-9])-(.+)", re.ASCII)
_TAIL = re.compile(r", ([A-Za-z]+), [0-9]+ components?, [0-9]+ bytes?\)\Z", re.ASCII)
_UNNAMED = "Internal error"

_NAMES: dict[str, dict[str, str]] = {  # libexif's words, for when it failed to look them up itself
    "Orientation": {
        "1": "Top-left",
        "2": "Top-right",
        "3": "Bottom-right",
        "4": "Bottom-left",
        "5": "Left-top",
        "6": "Right-top",
        "7": "Right-bottom",
        "8": "Left-bottom",
    },
    "ResolutionUnit": {"2": "Inch", "3": "Centimeter"},
    "FocalPlaneResolutionUnit": {"2": "Inch", "3": "Centimeter"},
    "YCbCrPositioning": {"1": "Centered", "2": "Co-sited"},
    "ColorSpace": {"1": "sRGB", "2": "Adobe RGB", "65535": "Uncalibrated"},
}


def _split(head: str) -> tuple[str, str]:
    """``<value> (<readable>`` -> (value, readable)."""
    half = (len(head) - 2) // 2
    if head[half : half + 2] == " (" and head[:half] == head[half + 2 :]:
        return head[:half], head[half + 2 :]  # ASCII and long values are printed twice
    value, sep, readable = head.partition(" (")  # otherwise the value is numbers, with no parenthesis
    return (value, readable) if sep else (head, "")


def parse_value(text: str, tag: str = "") -> tuple[str, int] | None:
    """One libvips EXIF field value -> (readable value, TIFF type number), or None if it is not one."""
    m = _TAIL.search(text)
    if m is None or m[1] not in TIFF_TYPES:
        return None
    value, readable = _split(text[: m.start()])
    value = value.strip()
    if not readable or readable.startswith(_UNNAMED):
        readable = _NAMES.get(tag, {}).get(value, value)
    return readable, TIFF_TYPES[m[1]]


def from_fields(fields: Mapping[str, object]) -> dict[str, dict[str, str | int]]:
    """libvips image fields (any; only the ``exif-ifd<N>-<Tag>`` strings are read) -> the exif body,
    empty when there is no tag."""
    found: list[tuple[int, str, str]] = []
    for name, value in fields.items():
        m = _FIELD.fullmatch(name)
        if m is not None and isinstance(value, str):
            found.append((int(m[1]), m[2], value))
    out: dict[str, dict[str, str | int]] = {}
    for _, tag, text in sorted(found, key=lambda entry: entry[0]):
        if tag in out:
            continue
        parsed = parse_value(text, tag)
        if parsed is not None:
            out[tag] = {"val": parsed[0], "type": parsed[1]}
    return out
