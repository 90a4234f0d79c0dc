"""uvicorn's httptools protocol, writing response header names in the spelling COS uses.

The Python SDK reads `ETag`, `Content-Length`, `x-cos-hash-crc64ecma`... from a plain dict
with exact case (spec/objects.md 1.1), and uvicorn's fast httptools protocol lower-cases every
name it writes. h11 keeps the spelling but costs about twice as much CPU per request. So we
keep httptools and restore the spelling of the one write that carries the status line and
headers: the write made while the response-start message is being sent.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

# Lower-case name -> the spelling COS sends. Names not listed (x-cos-*, x-ci-*) are lower case
# on the wire already.
_SPELLING = {
    name.lower().encode(): name.encode()
    for name in (
        "Content-Type", "Content-Length", "ETag", "Last-Modified", "Accept-Ranges", "Content-Range",
        "Cache-Control", "Content-Disposition", "Content-Encoding", "Content-Language", "Expires",
        "Server", "Date", "Connection", "Location", "Transfer-Encoding", "Vary",
    )
}  # fmt: skip


class _SpelledHeaders:
    """A transport whose next write is a response head: restores the names' spelling."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport

    def write(self, data: bytes) -> None:
        head, sep, rest = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        for i in range(1, len(lines)):
            name, colon, value = lines[i].partition(b":")
            spelled = _SPELLING.get(name)
            if spelled is not None:
                lines[i] = spelled + colon + value
        self._transport.write(b"\r\n".join(lines) + sep + rest)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _Cycle(RequestResponseCycle):
    async def send(self, message: Any) -> None:
        if message["type"] == "http.response.start" and not self.response_started:
            transport = self.transport
            self.transport = _SpelledHeaders(transport)  # type: ignore[assignment]
            try:
                await super().send(message)
            finally:
                self.transport = transport
        else:
            await super().send(message)


class SpelledHttpToolsProtocol(HttpToolsProtocol):
    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        # The request's task has not run yet: every send it makes goes through _Cycle.send.
        if type(self.cycle) is RequestResponseCycle:
            self.cycle.__class__ = _Cycle
