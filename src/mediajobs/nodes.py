"""The node tree every XML (and JSON callback) body is rendered from.

A body is a sequence of (element name, value) pairs; a value is text, None (an empty
element) or a nested sequence. Repeated siblings are repeated pairs. It lives apart from the
API so that processors and probes can build results without importing the HTTP layer.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Union
from xml.sax.saxutils import escape

Value = Union[str, "Nodes", None]
Nodes = Sequence[tuple[str, Value]]


XML_DECLARATION = "<?xml version='1.0' encoding='utf-8' ?>\n"
_ENTITIES = {'"': "&quot;"}


def _render(nodes: Nodes, out: list[str]) -> None:
    for name, value in nodes:
        if value is None:
            out.append(f"<{name}/>")
        elif isinstance(value, str):
            out.append(f"<{name}>{escape(value, _ENTITIES)}</{name}>")
        else:
            out.append(f"<{name}>")
            _render(value, out)
            out.append(f"</{name}>")


def render_xml(root: str, nodes: Nodes) -> bytes:
    """The XML document `<root>nodes</root>`, in node order, with the declaration COS sends."""
    out = [XML_DECLARATION, f"<{root}>"]
    _render(nodes, out)
    out.append(f"</{root}>")
    return "".join(out).encode()


def element_nodes(elem: ET.Element) -> Nodes:
    """An element's children as a node tree (empty leaves become None); the inverse of render_xml."""
    out: list[tuple[str, Value]] = []
    for child in elem:
        if len(child):
            out.append((child.tag, element_nodes(child)))
        else:
            out.append((child.tag, (child.text or "").strip() or None))
    return out


def build_element(name: str, nodes: Nodes) -> ET.Element:
    """`<name>nodes</name>` as an element: the inverse of element_nodes."""
    elem = ET.Element(name)
    for child_name, value in nodes:
        if value is None or isinstance(value, str):
            ET.SubElement(elem, child_name).text = value
        else:
            elem.append(build_element(child_name, value))
    return elem
