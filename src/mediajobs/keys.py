"""The one place that says what an object key may be (spec/objects.md 2.4).

Used by the object API (which answers with the COS codes) and by job processors (which name
the Operation node), so the two can never disagree.
"""

from __future__ import annotations

import posixpath

MAX_KEY_BYTES = 850


def key_problem(key: str) -> tuple[str, str] | None:
    """None for a valid key, else (COS error code, reason)."""
    if not key:
        return "InvalidObjectName", "The key is empty."
    if len(key.encode()) > MAX_KEY_BYTES:
        return "KeyTooLong", f"The key is longer than {MAX_KEY_BYTES} bytes."
    if key.startswith(("/", "\\")):
        return "InvalidObjectName", "The key must not start with '/' or '\\'."
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
        return "InvalidObjectName", "The key must not contain control characters."
    if posixpath.normpath("/" + key) == "/":
        return "InvalidObjectName", f"The key {key!r} names no object: it resolves to the bucket itself."
    return None
