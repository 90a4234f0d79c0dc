"""Drive the job API of a real `mediajobs serve --test-controls` with Tencent's Node SDK (cos-nodejs-sdk-v5).

The JavaScript side is tests/node/jobs.test.mjs (run with `node --test`); its dependencies are pinned in
tests/node/package-lock.json and installed with `npm ci --prefix tests/node`. This test starts its own
server, because the held-job case needs `--test-controls`, and uploads a small real mp4 for MediaInfo jobs.
"""

from __future__ import annotations

from pathlib import Path

from mediajobs.media.samples import make_video
from mediajobs.testing import running_server
from tests.node_runner import run_node_test

VIDEO_KEY = "node-jobs-e2e/input/video.mp4"
WIDTH, HEIGHT = 320, 240


def test_node_sdk_jobs(tmp_path: Path) -> None:
    video = make_video(tmp_path / "video.mp4", seconds=1.0, width=WIDTH, height=HEIGHT)
    with running_server(tmp_path / "d", args=["--test-controls"]) as server:
        server.client().upload_file(Bucket=server.bucket, Key=VIDEO_KEY, LocalFilePath=str(video))
        run_node_test(
            "jobs.test.mjs",
            server,
            {
                "MEDIAJOBS_TEST_VIDEO_KEY": VIDEO_KEY,
                "MEDIAJOBS_TEST_VIDEO_WIDTH": str(WIDTH),
                "MEDIAJOBS_TEST_VIDEO_HEIGHT": str(HEIGHT),
            },
        )
