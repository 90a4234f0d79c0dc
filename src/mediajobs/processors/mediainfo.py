"""MediaInfo: probe the input with PyAV and report container and streams (spec/tags.md MediaInfo)."""

from __future__ import annotations

from typing import ClassVar

from ..nodes import Nodes
from . import register
from .base import JobContext, JobFailed, Submission


@register
class MediaInfoProcessor:
    tag: ClassVar[str] = "MediaInfo"
    kind: ClassVar[str] = "media"
    time_limit: ClassVar[float] = 60.0

    def validate(self, sub: Submission) -> None:
        # No nodes of its own: Operation may hold only UserData and JobLevel, or be absent.
        return None

    def run(self, ctx: JobContext) -> Nodes:
        # Imported here: API nodes validate MediaInfo jobs without loading PyAV.
        from ..media.probe import NotMedia, probe

        with ctx.input_file() as path:
            ctx.check()
            try:
                info = probe(path)
            except NotMedia as exc:
                raise JobFailed("InputFileInvalid", f"The input is not a media file: {exc}") from None
        return [("MediaInfo", info.nodes())]
