"""Drive a real `mediajobs serve` with Tencent's official Node SDK (cos-nodejs-sdk-v5).

The JavaScript side is tests/node/objects.test.mjs (run with `node --test`); its dependencies are
pinned in tests/node/package-lock.json and installed with `npm ci --prefix tests/node`.
"""

from __future__ import annotations

from mediajobs.testing import ServerProcess
from tests.node_runner import run_node_test


def test_node_sdk_objects(server: ServerProcess) -> None:
    run_node_test("objects.test.mjs", server)
