"""A mediajobs cluster for the tests: API nodes and worker processes on one PostgreSQL and one S3,
one worker in a network namespace of its own.

`Netns` makes the namespace and a veth pair between it and the host: a /30 of 10.231.0.0/16
nobody on this machine uses, the host end .1 and the namespace end .2, no default route and
no forwarding, so the namespace reaches this host and nothing else. `Worker` runs
`python -m mediajobs worker` (one process, no supervisor: its pid is the worker's) with an
optional `ip netns exec` in front; `ip` execs the command, so the pid is still the worker's,
and the worker's lease owner (`<host>:<pid>:<random>`) names it.

`running_cluster` starts the lot: the namespace, PostgreSQL listening on TCP at the host's veth
address (tests/postgres.py), SeaweedFS's S3 gateway there too (tests/seaweed.py), two API nodes
(`serve --workers 0`) and three workers, every one of them reaching the database over TCP as a
role of its own. An audit trigger in the test's database records each job's changes of state
with the role, client address and lease owner that made them. Everything is stopped, and the
namespace removed, on the way out.

Root only (`ip netns` needs CAP_SYS_ADMIN), which is how CI runs.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from mediajobs.testing import ServerProcess, free_port
from tests.postgres import Cluster, start_cluster
from tests.seaweed import Seaweed, start_seaweed


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    ip = shutil.which("ip") or "/usr/sbin/ip"
    r = subprocess.run([ip, *args], capture_output=True, text=True, timeout=30, check=False)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


@dataclass
class Netns:
    """A network namespace joined to the host by one veth pair (`create`, then `delete`)."""

    name: str
    host_if: str
    ns_if: str
    host_ip: str
    ns_ip: str
    made: list[str] = field(default_factory=list)  # what exists, so delete() undoes only that

    @classmethod
    def create(cls) -> Netns:
        if os.geteuid() != 0:
            raise RuntimeError("tests/cluster.py: network namespaces need root (CI runs the tests as root)")
        tag = f"{os.getpid() % 100000}{secrets.token_hex(2)}"
        used = _ip("-4", "-o", "addr", "show").stdout + _ip("-4", "route", "show", "table", "all").stdout
        # A /30 in 10.231.0.0/16 that no address or route of this machine mentions.
        while True:
            third, fourth = random.randrange(1, 255), random.randrange(0, 256, 4)
            if f"10.231.{third}." not in used:
                break
        net = cls(
            name=f"mediajobs-test-{tag}",
            host_if=f"mjh{tag}",  # interface names have at most 15 characters
            ns_if=f"mjn{tag}",
            host_ip=f"10.231.{third}.{fourth + 1}",
            ns_ip=f"10.231.{third}.{fourth + 2}",
        )
        try:
            net._build()
        except BaseException:
            net.delete()
            raise
        return net

    @property
    def subnet(self) -> str:
        a, b, c, d = self.host_ip.split(".")
        return f"{a}.{b}.{c}.{int(d) - 1}/30"

    def _build(self) -> None:
        _ip("netns", "add", self.name)
        self.made.append("netns")
        _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        self.made.append("veth")
        _ip("link", "set", self.ns_if, "netns", self.name)
        _ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        _ip("link", "set", self.host_if, "up")
        inside = ("netns", "exec", self.name, shutil.which("ip") or "/usr/sbin/ip")
        _ip(*inside, "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if)
        _ip(*inside, "link", "set", self.ns_if, "up")
        _ip(*inside, "link", "set", "lo", "up")

    def exec_prefix(self) -> list[str]:
        """The argv prefix that runs a command inside the namespace."""
        return [shutil.which("ip") or "/usr/sbin/ip", "netns", "exec", self.name]

    def delete(self) -> None:
        """Remove the veth pair (both ends go together) and the namespace; never raises."""
        if "veth" in self.made:
            _ip("link", "del", self.host_if, check=False)
        if "netns" in self.made:
            _ip("netns", "del", self.name, check=False)
        self.made.clear()


@dataclass
class Worker:
    """One `mediajobs worker` process (no supervisor), its log in `<data_dir>/worker.log`."""

    name: str
    data_dir: Path
    args: list[str]
    prefix: list[str] = field(default_factory=list)  # e.g. Netns.exec_prefix()
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.data_dir / "worker.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Worker:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDIAJOBS_", "AWS_"))}
        env.update({"MEDIAJOBS_LOG_LEVEL": "info", **self.env})
        argv = [*self.prefix, sys.executable, "-m", "mediajobs", "worker", "--workers", "1",
                "--data-dir", str(self.data_dir), *self.args]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def stop(self, timeout: float = 10.0) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def dump_logs(named: Sequence[tuple[str, str]]) -> str:
    """One block per process: its name, then the tail of its log."""
    return "\n".join(f"----- {name} -----\n{tail}" for name, tail in named)


def wait_for(what: str, check: Callable[[], object], timeout: float, every: float = 0.05) -> None:
    """Poll `check()` until it is true; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


# ---- the whole cluster ----------------------------------------------------------------------

# The database roles, one per process, so that the database itself says who did what
# (pg_stat_activity.usename, and current_user in the audit trigger below).
API_ROLES = ("mj_api_a", "mj_api_b")
HOST_WORKER_ROLES = ("mj_worker_1", "mj_worker_2")
NETNS_WORKER_ROLE = "mj_worker_ns"
S3_PREFIX = "cluster"

# Every change of a job's state and every new job, with who made it: the role, the client's
# address and the lease owner (the claimer on a claim, the finisher on a finish, the dead worker
# on a recovery). A test table and trigger in the test's own database copy; mediajobs never reads it.
AUDIT_SQL = """
CREATE TABLE test_job_audit (
    id bigserial PRIMARY KEY,
    job_id text NOT NULL,
    old_state text,
    new_state text NOT NULL,
    owner text,
    attempts integer,
    role text NOT NULL,
    client inet,
    at double precision NOT NULL DEFAULT extract(epoch FROM clock_timestamp())
);
CREATE FUNCTION test_job_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.state IS DISTINCT FROM OLD.state THEN
        INSERT INTO test_job_audit (job_id, old_state, new_state, owner, attempts, role, client)
        VALUES (NEW.job_id, CASE WHEN TG_OP = 'UPDATE' THEN OLD.state END, NEW.state,
                COALESCE(NEW.lease_owner, CASE WHEN TG_OP = 'UPDATE' THEN OLD.lease_owner END),
                NEW.attempts, current_user, inet_client_addr());
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER test_job_audit AFTER INSERT OR UPDATE ON jobs
    FOR EACH ROW EXECUTE FUNCTION test_job_audit();
"""


@dataclass
class MediaCluster:
    """Two API nodes (`serve --workers 0`) and three workers on one PostgreSQL database and one
    S3 bucket; workers `host1` and `host2` on the host, `netns` in the network namespace."""

    root: Path
    netns: Netns
    pg: Cluster
    s3: Seaweed
    database: str
    password: str
    lease: float
    apis: dict[str, ServerProcess] = field(default_factory=dict)
    workers: dict[str, Worker] = field(default_factory=dict)

    def db_url(self, role: str) -> str:
        """How `role` reaches the database: over TCP at the host's veth address, with a password."""
        return self.pg.tcp_url(self.database, host=self.netns.host_ip, user=role, password=self.password)

    def storage_args(self) -> list[str]:
        return ["--storage", self.s3.url(S3_PREFIX), "--s3-endpoint", self.s3.endpoint,
                "--s3-access-key", self.s3.access_key, "--s3-secret-key", self.s3.secret_key]  # fmt: skip

    def sql(self, query: str, *params: Any) -> list[Any]:
        """Rows of `query` on the test database (as the superuser, over the UNIX socket)."""
        import psycopg

        with psycopg.connect(
            dbname=self.database, user="postgres", host=str(self.pg.socket_dir), port=self.pg.port,
            autocommit=True,
        ) as conn:  # fmt: skip
            cur = conn.execute(query, params or None)  # no parameters: several statements may go
            return cur.fetchall() if cur.description else []

    def api(self, name: str, role: str) -> ServerProcess:
        """An API node (not started yet) connecting to the database as `role`."""
        srv = ServerProcess(
            data_dir=self.root / f"api-{name}",
            port=free_port(),
            extra_args=["--workers", "0", *self.storage_args()],
            # Every object's bytes go to S3, the inputs' too (none is kept in its database row).
            env={"MEDIAJOBS_INLINE_MAX": "0"},
            database_url=self.db_url(role),
        )
        self.apis[name] = srv
        return srv

    def worker(self, name: str, role: str, prefix: Sequence[str] = ()) -> Worker:
        """A worker (not started yet) connecting to the database as `role`, run under `prefix`."""
        w = Worker(
            name,
            self.root / f"worker-{name}",  # scratch only: every byte it keeps is in S3
            ["--database-url", self.db_url(role), *self.storage_args(), "--lease-seconds", str(self.lease)],
            prefix=list(prefix),
        )
        self.workers[name] = w
        return w

    def wait_workers_ready(self, timeout: float = 60.0) -> None:
        """Until every worker has registered in the `workers` table (so it reached PostgreSQL)."""

        def ready() -> bool:
            for name, w in self.workers.items():
                if not w.alive():
                    raise AssertionError(f"worker {name} exited with {w.proc and w.proc.returncode}")
            pids = {r[0] for r in self.sql("SELECT pid FROM workers")}
            return all(w.pid in pids for w in self.workers.values())

        wait_for("the workers to register", ready, timeout)

    def log_tails(self, n: int = 40) -> str:
        named = [(f"api {k}", "\n".join(s.log().splitlines()[-n:])) for k, s in self.apis.items()]
        named += [
            (f"worker {k} (pid {w.proc and w.proc.pid})", w.log_tail(n)) for k, w in self.workers.items()
        ]
        named.append(("seaweedfs", self.s3.log_tail(n)))
        pg_log = Path(self.pg.server.log)
        if pg_log.exists():
            named.append(("postgresql", "\n".join(pg_log.read_text(errors="replace").splitlines()[-n:])))
        return dump_logs(named)


@contextlib.contextmanager
def running_cluster(root: Path, *, lease: float = 3.0) -> Iterator[MediaCluster]:
    """Start the namespace, PostgreSQL, SeaweedFS, two API nodes and three workers; stop them all
    (and remove the namespace) on the way out, whatever happened."""
    with contextlib.ExitStack() as stack:
        netns = Netns.create()
        stack.callback(netns.delete)
        pg = start_cluster(listen=["127.0.0.1", netns.host_ip], password_from=[netns.subnet])
        stack.callback(pg.stop)
        s3 = start_seaweed(root / "seaweedfs", s3_ip=netns.host_ip)
        stack.callback(s3.stop)
        database = make_url(pg.create_database()).database
        assert database
        c = MediaCluster(root, netns, pg, s3, database, secrets.token_hex(12), lease)
        for role in (*API_ROLES, *HOST_WORKER_ROLES, NETNS_WORKER_ROLE):
            c.sql(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{c.password}'")
        c.sql(AUDIT_SQL)
        # Stopped in reverse order: workers first (the namespaced one before its namespace).
        for name, role in zip(("a", "b"), API_ROLES, strict=True):
            srv = c.api(name, role)
            stack.callback(srv.stop)
            srv.start(timeout=60)
        workers = [
            c.worker(name, role) for name, role in zip(("host1", "host2"), HOST_WORKER_ROLES, strict=True)
        ]
        workers.append(c.worker("netns", NETNS_WORKER_ROLE, netns.exec_prefix()))
        for w in workers:
            stack.callback(w.stop)
            w.start()
        try:
            c.wait_workers_ready()
            yield c
        except BaseException:
            print(c.log_tails())
            raise
