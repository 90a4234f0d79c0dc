"""Responses whose header names go out exactly as written.

The Python SDK copies response headers into a plain dict and looks up `ETag`,
`Content-Length`, `x-cos-hash-crc64ecma`... case-sensitively (spec/objects.md 1.1), while
Starlette lower-cases names. These classes keep the given spelling, and api/httpserver.py
makes uvicorn write it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from . import xmlcodec

Headers = Sequence[tuple[str, str]]


def _raw(headers: Headers) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]


class WireResponse(Response):
    def __init__(
        self,
        status: int = 200,
        body: bytes = b"",
        headers: Headers = (),
        *,
        content_type: str | None = None,
        content_length: int | None = None,
    ) -> None:
        self.status_code = status
        self.body = body
        self.background = None
        hs = list(headers)
        if content_type is not None:
            hs.insert(0, ("Content-Type", content_type))
        if not any(k == "Content-Length" for k, _ in hs):
            hs.insert(
                1 if content_type else 0,
                ("Content-Length", str(len(body) if content_length is None else content_length)),
            )
        self.raw_headers = _raw(hs)

    def add(self, headers: Headers) -> None:
        self.raw_headers.extend(_raw(headers))


class WireStream(WireResponse):
    """A body produced chunk by chunk (object GET); Content-Length is known up front."""

    def __init__(
        self, status: int, chunks: AsyncIterator[bytes], headers: Headers, *, content_length: int
    ) -> None:
        super().__init__(status, b"", headers, content_length=content_length)
        self.chunks = chunks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        try:
            async for chunk in self.chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            aclose = getattr(self.chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def xml_response(root: str, nodes: xmlcodec.Nodes, status: int = 200, headers: Headers = ()) -> WireResponse:
    return WireResponse(status, xmlcodec.render(root, nodes), headers, content_type="application/xml")


def empty(status: int = 200, headers: Headers = ()) -> WireResponse:
    return WireResponse(status, b"", headers)
