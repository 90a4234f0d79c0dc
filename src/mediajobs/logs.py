"""Log lines as text or as one JSON object per line, carrying the request, job and worker they belong to.

The API sets `request_id` for the length of a request (the id it returns in x-cos-request-id
and in error bodies); a worker sets `worker` once and `job_id` around each job. They are
context variables: asyncio tasks and the API's thread hops (anyio copies the context) each see
their own, and a thread started with `contextvars.copy_context().run` sees its starter's.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from typing import Any

request_id: ContextVar[str | None] = ContextVar("mediajobs_request_id", default=None)
job_id: ContextVar[str | None] = ContextVar("mediajobs_job_id", default=None)
worker: ContextVar[str | None] = ContextVar("mediajobs_worker", default=None)

FORMATS = ("text", "json")
_CONTEXT = (("request_id", request_id), ("job_id", job_id), ("worker", worker))
# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged too
# (but uvicorn's color_message, the message again with terminal colours).
_RECORD = logging.LogRecord("", 0, "", 0, "", None, None)
_STANDARD = frozenset(_RECORD.__dict__) | {"message", "asctime", "color_message"}


def _context() -> list[tuple[str, str]]:
    return [(name, value) for name, var in _CONTEXT if (value := var.get()) is not None]


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """{"time", "level", "logger", "message", request_id/job_id/worker when known, extras,
    "traceback" when an exception is attached}: one line per record."""

    def format(self, record: logging.LogRecord) -> str:
        t = record.created
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(_context())
        for k, v in _extras(record).items():
            out.setdefault(k, v if isinstance(v, (str, int, float, bool)) or v is None else str(v))
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        elif record.stack_info:
            out["traceback"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message`, then `key=value` for the request, job and worker when known
    (the extras a JSON line carries are in the message already)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        return line + "".join(f" {k}={v}" for k, v in _context())


def setup(level: str, fmt: str = "text") -> None:
    """Send every log line to stderr in `fmt` (text or json), from `level` up."""
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: use text or json")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("alembic").setLevel(logging.WARNING)


def flush() -> None:
    """Write out what the handlers hold (before an `os._exit`)."""
    for handler in logging.getLogger().handlers:
        handler.flush()
