"""Run a `node --test` file of tests/node against a running server (shared by the Node SDK tests)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from mediajobs.testing import ServerProcess

REPO_ROOT = Path(__file__).resolve().parents[1]
NODE_DIR = REPO_ROOT / "tests" / "node"
TIMEOUT_S = 240

_PROXY_VARS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def node_env(server: ServerProcess, extra: dict[str, str] | None = None) -> dict[str, str]:
    # The SDK's HTTP library honours proxy variables: keep every request on loopback.
    env = {k: v for k, v in os.environ.items() if k not in _PROXY_VARS and not k.startswith("MEDIAJOBS_")}
    env.update(
        {
            "MEDIAJOBS_TEST_PORT": str(server.port),
            "MEDIAJOBS_TEST_SECRET_ID": server.secret_id,
            "MEDIAJOBS_TEST_SECRET_KEY": server.secret_key,
            "MEDIAJOBS_TEST_BUCKET": server.bucket,
            "MEDIAJOBS_TEST_REGION": server.region,
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            **(extra or {}),
        }
    )
    return env


def run_node_test(test_file: str, server: ServerProcess, extra_env: dict[str, str] | None = None) -> None:
    """Fail (never skip) when node or the pinned SDK is missing; fail with both logs when a test fails."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("`node` (v20 or newer) is not on PATH; the Node SDK end-to-end tests need it")
    sdk = NODE_DIR / "node_modules" / "cos-nodejs-sdk-v5"
    if not sdk.is_dir():
        pytest.fail(
            f"{sdk.relative_to(REPO_ROOT)} is missing: run `npm ci --prefix tests/node` "
            "from the repository root to install the pinned Node SDK"
        )
    path = NODE_DIR / test_file
    try:
        proc = subprocess.run(
            [node, "--test", str(path.relative_to(REPO_ROOT))],
            cwd=REPO_ROOT,
            env=node_env(server, extra_env),
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
    assert proc.returncode == 0, (
        f"node --test {test_file} exited with {proc.returncode}\n{proc.stdout}\n{proc.stderr}\n"
        f"--- server log ---\n{server.log()}"
    )
