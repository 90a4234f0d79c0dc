"""Engine creation and migrations, for SQLite (the default) and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import ClauseElement, CursorResult, Engine, create_engine, event, func, inspect, select, text
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import SingletonThreadPool

from .schema import HEAD_REVISION

if TYPE_CHECKING:
    import psycopg
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")

# Taken for the length of a migration so that API nodes starting together on one PostgreSQL
# database migrate it once, one after the other.
_MIGRATION_LOCK = zlib.crc32(b"mediajobs-migrate")


def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql", "postgres:"))


def _with_driver(url: str) -> str:
    """postgres:// and postgresql:// (the usual spellings) mean psycopg 3, the driver we ship."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain) :]
    return url


# A pooled PostgreSQL connection left unused for longer than this is pinged when it is next
# checked out (a server restarted, or an idle connection cut, shows up there and is replaced).
# One busy enough to be back sooner is not: a ping on every checkout was a round trip on each
# of a worker's three checkouts per job. Should the server go away in between, the statement
# fails, the pool drops every connection made before, and the caller's retry gets a new one.
PING_AFTER_IDLE = 1.0


def make_engine(
    url: str,
    *,
    fsync: bool = True,
    per_thread: bool = False,
    pool_size: int = 10,
    session: Mapping[str, str] | None = None,
) -> Engine:
    """An engine; `per_thread` (SQLite) gives each thread one connection of its own, for reads
    made on the event loop's thread that must never wait for a pooled connection.

    On PostgreSQL connections are pooled (QueuePool): `pool_size` stay open once made and as
    many again may be opened under load. The pool is sized for the threads that use it: the
    API's thread pool on an API node, the claim loop, its watcher and the callback deliverer in
    a worker process. `session`: settings made on every new connection (one SET, one round
    trip per connection: a pooler in session mode passes it on, where a startup option might be
    refused or dropped), which `session_settings` reports per connection.
    """
    if url.startswith("sqlite"):
        pool: dict[str, Any] = (
            {"poolclass": SingletonThreadPool} if per_thread else {"pool_size": 8, "max_overflow": 16}
        )
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **pool)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Python's sqlite3 opens transactions lazily; take control so BEGIN IMMEDIATE works.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # FULL: a write acknowledged to a client survives power loss.
            cur.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            # Writers take the lock up front and queue on busy_timeout, rather than
            # failing when a deferred read transaction tries to upgrade.
            immediate = conn.get_execution_options().get("write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    if is_postgres(url):
        url = _with_driver(url)
        # --no-fsync: commits return before their WAL is flushed (a crash loses the last few
        # acknowledged writes, never consistency), as synchronous=NORMAL does on SQLite.
        connect: dict[str, Any] = {"application_name": "mediajobs", "connect_timeout": 10}
        if not fsync:
            connect["options"] = "-c synchronous_commit=off"
        engine = create_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_timeout=30,
            pool_recycle=3600,
            # The connection used last goes out first: one thread's statements in a row share
            # a connection that has just answered, and connections beyond the load stay idle.
            pool_use_lifo=True,
            connect_args=connect,
        )
        _ping_when_idle(engine)
        settings = dict(session or {})
        statement = "; ".join(f"SET {name} = {value}" for name, value in settings.items())

        @event.listens_for(engine, "connect")
        def _session(dbapi_conn: Any, record: Any) -> None:
            if statement:
                autocommit = dbapi_conn.autocommit
                dbapi_conn.autocommit = True  # no transaction: a rollback must not undo it
                try:
                    dbapi_conn.execute(statement)
                finally:
                    dbapi_conn.autocommit = autocommit
            record.info["session"] = settings

        return engine
    return create_engine(url, pool_pre_ping=True)


def _ping_when_idle(engine: Engine) -> None:
    """Ping a pooled connection at checkout when it sat unused for more than PING_AFTER_IDLE
    seconds; one that does not answer is replaced (the pool retries the checkout with a new one)."""

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_conn: Any, record: Any) -> None:
        if record is not None:
            record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since <= PING_AFTER_IDLE:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:
            raise DisconnectionError("the pooled connection does not answer") from exc


def session_settings(conn: Connection) -> Mapping[str, str]:
    """The settings made on this PostgreSQL connection when it was opened (make_engine's `session`)."""
    found: Mapping[str, str] = conn.info.get("session", {})
    return found


class Compiled:
    """A Core statement compiled once for one dialect, and run with `exec_driver_sql`.

    SQLAlchemy builds, cache-keys and looks up a statement on each execute; for a statement run
    once per job by every worker that was most of the engine's own CPU per job. Built once with
    named bind parameters, the statement costs a dictionary per run. Literal values and
    expanded IN lists are fixed when it is compiled; `run` fills the named parameters.
    """

    def __init__(self, stmt: ClauseElement, dialect: Dialect) -> None:
        compiled = stmt.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
        self.sql = str(compiled)
        self._defaults = dict(compiled.params)
        self._order = getattr(
            compiled, "positiontup", None
        )  # positional paramstyles (SQLite's qmark); else None
        self._processors: dict[str, Callable[[Any], Any]] = dict(getattr(compiled, "_bind_processors", {}))

    def params(self, values: Mapping[str, Any]) -> dict[str, Any] | tuple[Any, ...]:
        params = {**self._defaults, **values}
        for name, process in self._processors.items():
            if params.get(name) is not None:
                params[name] = process(params[name])
        if self._order is None:
            return params
        return tuple(params[name] for name in self._order)

    def run(self, conn: Connection, **values: Any) -> CursorResult[Any]:
        return conn.exec_driver_sql(self.sql, self.params(values))


def connect_kwargs(engine: Engine) -> dict[str, Any]:
    """psycopg.connect() arguments for the database of a PostgreSQL engine (for connections
    kept outside the pool: LISTEN, and reads on the event loop)."""
    args, kwargs = engine.dialect.create_connect_args(engine.url)
    assert not args, args
    return {"application_name": "mediajobs", "connect_timeout": 10, **kwargs}


def probe(engine: Engine, timeout: float = 2.0) -> None:
    """Raise unless the database answers a trivial query within about `timeout` seconds.

    On a connection of its own, never the pool's: a pooled connection can outlive what it
    points at (an SQLite file renamed away keeps answering through its open descriptor), and a
    pooled PostgreSQL checkout that finds the server gone waits out the engine's 10 s connect
    timeout.
    """
    if engine.dialect.name == "sqlite":
        import sqlite3

        path = engine.url.database
        if not path or path == ":memory:":
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return
        # Read-only, and never created: a missing database file is a missing database.
        uri = Path(path).resolve().as_uri() + "?mode=ro"
        db = sqlite3.connect(uri, uri=True, timeout=timeout, check_same_thread=False)
        try:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            db.close()
        return
    if engine.dialect.name == "postgresql":
        import psycopg

        kwargs = connect_kwargs(engine)
        # libpq's connect_timeout counts whole seconds, at least 2.
        kwargs["connect_timeout"] = max(2, round(timeout))
        kwargs["options"] = f"{kwargs.get('options', '')} -c statement_timeout={int(timeout * 1000)}".strip()
        with psycopg.connect(**kwargs, autocommit=True) as conn:
            conn.execute("SELECT 1").fetchone()
        return
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


class AsyncReads:
    """Reads made on the event loop of a PostgreSQL API node: a few psycopg async connections,
    used one query at a time, so a poll of a job costs no thread hop and never blocks the loop.

    The counterpart of the per-thread SQLite connection (see `make_engine`). Statements are
    SQLAlchemy Core selects compiled for the engine's dialect, so they are the very statements
    the synchronous store runs.
    """

    def __init__(self, engine: Engine, size: int = 4) -> None:
        self.engine = engine
        self.size = size
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._slots: asyncio.Semaphore | None = None

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        import psycopg
        from psycopg.rows import namedtuple_row

        return await psycopg.AsyncConnection.connect(
            **connect_kwargs(self.engine), autocommit=True, row_factory=namedtuple_row
        )

    async def all(self, stmt: ClauseElement) -> Sequence[Any]:
        """The rows of `stmt` (attribute access by column name, like SQLAlchemy rows)."""
        import psycopg

        compiled = stmt.compile(dialect=self.engine.dialect, compile_kwargs={"render_postcompile": True})
        sql, params = str(compiled), compiled.params
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.size)
        async with self._slots:
            for attempt in (1, 2):
                conn = self._idle.pop() if self._idle else await self._connect()
                try:
                    cur = await conn.execute(sql, params)
                    rows = await cur.fetchall()
                except psycopg.OperationalError:
                    await conn.close()
                    if attempt == 2:
                        raise
                    continue  # a connection the server closed: once more on a fresh one
                except BaseException:
                    await conn.close()
                    raise
                self._idle.append(conn)
                return rows
        raise AssertionError("unreachable")

    async def close(self) -> None:
        while self._idle:
            await self._idle.pop().close()


def alembic_config(url: str) -> Config:
    # Imported here: workers never migrate, and Alembic costs ~12 MB of memory per process.
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    if current_revision(engine) == HEAD_REVISION:
        return
    from alembic import command

    cfg = alembic_config(str(engine.url.render_as_string(hide_password=False)))
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # Another node may be migrating right now: wait for it, then look again.
            conn.execute(select(func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
            if inspect(conn).has_table("alembic_version") and (
                conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == HEAD_REVISION
            ):
                return
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
