"""Operation.Output: parsing, output-name variables (spec/jobs.md 10) and MediaResult (jobs.md 11)."""

from __future__ import annotations

import posixpath
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from ..keys import key_problem
from ..nodes import Nodes, Value
from .base import InvalidOperation

_VAR = re.compile(r"\$\{([A-Za-z]+)\}")
_KNOWN = {"number", "inputname", "inputnameandext", "inputpath", "ext", "jobid", "runid", "time"}


@dataclass(frozen=True)
class Output:
    region: str
    bucket: str
    object: str


def parse_output(op: ET.Element | None) -> Output:
    node = op.find("Output") if op is not None else None
    if node is None:
        raise InvalidOperation("Output is required.")
    values = {name: (node.findtext(name) or "").strip() for name in ("Region", "Bucket", "Object")}
    for name, value in values.items():
        if not value:
            raise InvalidOperation(f"Output.{name} is required.")
    unknown = {m.lower() for m in _VAR.findall(values["Object"])} - _KNOWN
    if unknown:
        raise InvalidOperation(f"Output.Object uses unknown variables: {', '.join(sorted(unknown))}.")
    return Output(values["Region"], values["Bucket"], values["Object"].lstrip("/"))


def check_output_key(label: str, key: str) -> None:
    """An output key (variables not yet expanded) must be a valid key of its bucket."""
    problem = key_problem(key)
    if problem is not None:
        raise InvalidOperation(f"{label} {key!r} is not a valid object key: {problem[1]}")
    unknown = {m.lower() for m in _VAR.findall(key)} - _KNOWN
    if unknown:
        raise InvalidOperation(f"{label} uses unknown variables: {', '.join(sorted(unknown))}.")


def expand(pattern: str, *, input_key: str, job_id: str, ext: str, number: int | None = None) -> str:
    """Replace ${...} variables (names case-insensitive) in an output key."""
    name = posixpath.basename(input_key)
    stem, dot, _ = name.rpartition(".")
    values = {
        "inputname": stem if dot else name,
        "inputnameandext": name,
        "inputpath": posixpath.dirname(input_key),
        "ext": ext,
        "jobid": job_id,
        "runid": "",
        "time": "",
        "number": "" if number is None else str(number),
    }
    out = _VAR.sub(lambda m: values.get(m[1].lower(), m[0]), pattern)
    if number is not None and not re.search(r"\$\{number\}", pattern, re.IGNORECASE):
        # Several files but no ${Number}: the index goes before the extension.
        base, dot2, e = out.rpartition(".")
        out = f"{base}-{number}.{e}" if dot2 and "/" not in e else f"{out}-{number}"
    return out


def media_result(out: Output, keys_md5: list[tuple[str, str]], *, prefix: str = "") -> Nodes:
    """`MediaResult/OutputFile` for one output (prefix "") or several (names after the prefix)."""
    names: list[tuple[str, Value]] = [("ObjectName", k[len(prefix) :] if prefix else k) for k, _ in keys_md5]
    md5s: list[tuple[str, Value]] = [("Md5Info", [("Md5", md5), ("ObjectName", k)]) for k, md5 in keys_md5]
    return [
        (
            "OutputFile",
            [("Bucket", out.bucket), ("Region", out.region), *names, ("ObjectPrefix", prefix or None), *md5s],
        )
    ]
