"""EXIF fields as libvips prints them -> the Qiniu-shaped `exif` body."""

from __future__ import annotations

import pytest

from mediajobs.media.exif import TIFF_TYPES, from_fields, parse_value


@pytest.mark.parametrize(
    ("text", "tag", "want"),
    [
        ("Canon (Canon, ASCII, 6 components, 6 bytes)", "Make", ("Canon", 2)),
        ("Canon (Japan) (Canon (Japan), ASCII, 14 components, 14 bytes)", "Make", ("Canon (Japan)", 2)),
        ("A, B (A, B, ASCII, 5 components, 5 bytes)", "Artist", ("A, B", 2)),
        (" (, ASCII, 1 components, 1 bytes)", "Artist", ("", 2)),
        ("1/125 (1/125 sec., Rational, 1 components, 8 bytes)", "ExposureTime", ("1/125 sec.", 5)),
        ("25400/1000 (25.400, Rational, 1 components, 8 bytes)", "XResolution", ("25.400", 5)),
        ("-1/3 (-0.33 EV, SRational, 1 components, 8 bytes)", "ExposureBiasValue", ("-0.33 EV", 10)),
        ("6 (Right-top, Short, 1 components, 2 bytes)", "Orientation", ("Right-top", 3)),
        # libexif could not name it: named here, or the number kept
        (
            "6 (Internal error (unknown value 6), Short, 1 components, 2 bytes)",
            "Orientation",
            ("Right-top", 3),
        ),
        ("2 (Internal error (unknown value 2), Short, 1 components, 2 bytes)", "ResolutionUnit", ("Inch", 3)),
        ("5 (Internal error (unknown value 5), Short, 1 components, 2 bytes)", "MeteringMode", ("5", 3)),
        ("64 (64, Long, 1 components, 4 bytes)", "PixelXDimension", ("64", 4)),
        (
            "Exif Version 2.1 (Exif Version 2.1, Undefined, 4 components, 4 bytes)",
            "ExifVersion",
            ("Exif Version 2.1", 7),
        ),
        ("8 8 8 (8 8 8, Short, 3 components, 6 bytes)", "BitsPerSample", ("8 8 8", 3)),
        ("1 (1, Byte, 1 component, 1 byte)", "GPSAltitudeRef", ("1", 1)),
    ],
)
def test_parse_value(text: str, tag: str, want: tuple[str, int]) -> None:
    assert parse_value(text, tag) == want


@pytest.mark.parametrize(
    "text",
    ["Canon", "", "x (y, Nibble, 1 components, 1 bytes)", "x (y, ASCII, some components, 1 bytes)"],
)
def test_not_an_exif_value(text: str) -> None:
    assert parse_value(text) is None


def test_tiff_types_are_the_tiff_numbers() -> None:
    assert sorted(TIFF_TYPES.values()) == list(range(1, 13))
    assert TIFF_TYPES["ASCII"] == 2 and TIFF_TYPES["Rational"] == 5 and TIFF_TYPES["Undefined"] == 7


def test_from_fields() -> None:
    fields: dict[str, object] = {
        "width": 64,
        "exif-data": b"Exif\0\0II*\0",
        "orientation": 6,
        "exif-ifd1-XResolution": "72/1 (72, Rational, 1 components, 8 bytes)",  # the thumbnail's
        "exif-ifd0-XResolution": "300/1 (300, Rational, 1 components, 8 bytes)",
        "exif-ifd0-Make": "Canon (Canon, ASCII, 6 components, 6 bytes)",
        "exif-ifd2-DateTimeOriginal": "2019:05:16 14:44:49 (2019:05:16 14:44:49, ASCII, 20 components, 20 bytes)",
        "exif-ifd3-GPSLatitudeRef": "N (N, ASCII, 2 components, 2 bytes)",
        "exif-ifd2-Odd": "not in libvips' format",
        "exif-ifd2-Number": 5,
    }
    assert from_fields(fields) == {
        "XResolution": {"val": "300", "type": 5},
        "Make": {"val": "Canon", "type": 2},
        "DateTimeOriginal": {"val": "2019:05:16 14:44:49", "type": 2},
        "GPSLatitudeRef": {"val": "N", "type": 2},
    }
    assert from_fields({"width": 1, "exif-data": b""}) == {}
