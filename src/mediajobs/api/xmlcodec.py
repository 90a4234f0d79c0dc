"""Safe XML in, spec-ordered XML out.

Parsing goes through defusedxml: DTDs, entity declarations and external references are
refused before any expansion, so "billion laughs" and XXE bodies fail as MalformedXML.
Rendering is plain string building over a tiny tree of (name, value) pairs, which keeps
the node order of the spec and costs nothing measurable per response.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from .. import errors
from ..nodes import Nodes, Value, render_xml

__all__ = ["Nodes", "Value", "bool_text", "parse", "render", "text"]


def parse(body: bytes, *, root: str | None = None) -> ET.Element:
    if not body.strip():
        raise errors.MissingRequestBodyError()
    try:
        elem: ET.Element = fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (ET.ParseError, DefusedXmlException, ValueError) as exc:
        raise errors.MalformedXML(
            f"The XML you provided was not well-formed: {type(exc).__name__}."
        ) from None
    if root is not None and elem.tag != root:
        raise errors.MalformedXML(f"The root element must be {root}, not {elem.tag}.")
    return elem


def text(elem: ET.Element, name: str, default: str = "") -> str:
    child = elem.find(name)
    if child is None or child.text is None:
        return default
    return child.text.strip()


def render(root: str, nodes: Nodes) -> bytes:
    return render_xml(root, nodes)


def bool_text(value: bool) -> str:
    return "true" if value else "false"
