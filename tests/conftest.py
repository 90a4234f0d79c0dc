from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mediajobs.testing import ServerProcess, running_server

for _k in [k for k in os.environ if k.startswith("MEDIAJOBS_")]:
    del os.environ[_k]


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real `mediajobs serve` process shared by the tests of a session."""
    with running_server(tmp_path_factory.mktemp("serve")) as srv:
        yield srv


@pytest.fixture
def cos(server: ServerProcess):  # type: ignore[no-untyped-def]
    return server.client()


@pytest.fixture
def bucket(server: ServerProcess) -> str:
    return server.bucket


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"
