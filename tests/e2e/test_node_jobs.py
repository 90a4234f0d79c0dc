"""Drive the job API of a real `mediajobs serve --test-controls` with Tencent's Node SDK (cos-nodejs-sdk-v5).

The JavaScript side is tests/node/jobs.test.mjs (run with `node --test`); its dependencies are pinned in
tests/node/package-lock.json and installed with `npm ci --prefix tests/node`. This test starts its own
server, because the held-job case needs `--test-controls`, and uploads a small real mp4 for MediaInfo jobs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from mediajobs.media.samples import make_video
from mediajobs.testing import ServerProcess, running_server

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = REPO_ROOT / "tests" / "node"
TEST_FILE = NODE_DIR / "jobs.test.mjs"
TIMEOUT_S = 240
VIDEO_KEY = "node-jobs-e2e/input/video.mp4"
WIDTH, HEIGHT = 320, 240

_PROXY_VARS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def _node_env(server: ServerProcess) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _PROXY_VARS and not k.startswith("MEDIAJOBS_")}
    env.update(
        {
            "MEDIAJOBS_TEST_PORT": str(server.port),
            "MEDIAJOBS_TEST_SECRET_ID": server.secret_id,
            "MEDIAJOBS_TEST_SECRET_KEY": server.secret_key,
            "MEDIAJOBS_TEST_BUCKET": server.bucket,
            "MEDIAJOBS_TEST_REGION": server.region,
            "MEDIAJOBS_TEST_VIDEO_KEY": VIDEO_KEY,
            "MEDIAJOBS_TEST_VIDEO_WIDTH": str(WIDTH),
            "MEDIAJOBS_TEST_VIDEO_HEIGHT": str(HEIGHT),
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
    )
    return env


def test_node_sdk_jobs(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("`node` (v20 or newer) is not on PATH; the Node SDK end-to-end test needs it")
    sdk = NODE_DIR / "node_modules" / "cos-nodejs-sdk-v5"
    if not sdk.is_dir():
        pytest.fail(
            f"{sdk.relative_to(REPO_ROOT)} is missing: run `npm ci --prefix tests/node` "
            "from the repository root to install the pinned Node SDK"
        )

    video = make_video(tmp_path / "video.mp4", seconds=1.0, width=WIDTH, height=HEIGHT)
    with running_server(tmp_path / "d", args=["--test-controls"]) as server:
        server.client().upload_file(Bucket=server.bucket, Key=VIDEO_KEY, LocalFilePath=str(video))
        try:
            proc = subprocess.run(
                [node, "--test", str(TEST_FILE.relative_to(REPO_ROOT))],
                cwd=REPO_ROOT,
                env=_node_env(server),
                capture_output=True,
                text=True,
                timeout=TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
            pytest.fail(
                f"node --test did not finish within {TIMEOUT_S}s\n{out}\n--- server log ---\n{server.log()}"
            )

        output = f"{proc.stdout}\n{proc.stderr}"
        assert proc.returncode == 0, (
            f"node --test {TEST_FILE.name} exited with {proc.returncode}\n{output}\n"
            f"--- server log ---\n{server.log()}"
        )
