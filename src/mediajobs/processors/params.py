"""Reading a Tag's Operation nodes: typed values with ranges, errors that name the node."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

from ..nodes import Nodes, build_element
from .base import InvalidOperation


def text(node: ET.Element | None, path: str) -> str:
    return (node.findtext(path) or "").strip() if node is not None else ""


def num(node: ET.Element | None, path: str, lo: float, hi: float, *, lo_open: bool = False) -> float | None:
    """A number in [lo, hi] (or (lo, hi] with lo_open); None when the node is absent or empty."""
    value_text = text(node, path)
    if not value_text:
        return None
    try:
        value = float(value_text)
    except ValueError:
        raise InvalidOperation(f"{path} must be a number, not {value_text!r}.") from None
    if not math.isfinite(value) or value > hi or value < lo or (lo_open and value == lo):
        bound = f"({lo:g}, {hi:g}]" if lo_open else f"[{lo:g}, {hi:g}]"
        raise InvalidOperation(f"{path} must be in {bound}, not {value_text}.")
    return value


def integer(node: ET.Element | None, path: str, lo: int, hi: int) -> int | None:
    value = num(node, path, lo, hi)
    if value is None:
        return None
    if value != int(value):
        raise InvalidOperation(f"{path} must be an integer.")
    return int(value)


def flag(node: ET.Element | None, path: str) -> bool:
    value = text(node, path).lower()
    if value not in ("", "true", "false"):
        raise InvalidOperation(f"{path} must be true or false.")
    return value == "true"


def choice(node: ET.Element | None, path: str, allowed: tuple[str, ...], default: str) -> str:
    value = text(node, path)
    if not value:
        return default
    for a in allowed:
        if value.lower() == a.lower():
            return a
    raise InvalidOperation(f"{path} must be one of {', '.join(allowed)}, not {value!r}.")


def operation_element(nodes: Nodes) -> ET.Element:
    """A job's stored Operation as an element again, for the parser the API validated it with."""
    return build_element("Operation", nodes)
