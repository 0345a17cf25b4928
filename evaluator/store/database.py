"""The store's database: one engine over one schema, shared by every part of the store.

SQLite runs in WAL mode with a busy timeout and every writing transaction starts with
``BEGIN IMMEDIATE`` (so it queues for the write lock up front instead of failing half-way);
PostgreSQL needs nothing special. The schema is managed by the Alembic migrations shipped in
``evaluator/store/migrations``.
"""

from __future__ import annotations

import sqlite3
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Connection, Engine, Table, create_engine, event, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import StaticPool

from evaluator.errors import ConfigError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# Execution option that makes the SQLite ``begin`` hook emit BEGIN IMMEDIATE.
_WRITE = "groundwatch_write"
# Key of the PostgreSQL advisory lock held while migrating (any constant bigint will do).
_MIGRATION_LOCK_KEY = zlib.crc32(b"groundwatch.store.migrate")
# Rows per IN (...) list: far below SQLite's and PostgreSQL's bind parameter limits.
IN_CHUNK = 1000
# Every new PostgreSQL connection of the store gives up after this many seconds (libpq's
# connect_timeout) unless the URL sets its own: a server that is gone, or a black hole on its
# address, must not hold a task, a sampler step or a heartbeat's check for minutes.
PG_CONNECT_TIMEOUT_S = 10

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """The current time, aware, in UTC (the store's default clock)."""
    return datetime.now(UTC)


def chunks(values: Sequence[str], size: int = IN_CHUNK) -> Iterator[Sequence[str]]:
    """``values`` in slices of at most ``size``, for IN (...) lists."""
    for start in range(0, len(values), size):
        yield values[start:start + size]


def alembic_config(url: str | None = None) -> AlembicConfig:
    """An Alembic config for the migrations shipped inside this package (no alembic.ini)."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _set_wal(cursor: Any, attempts: int = 100) -> None:
    """Switch to WAL. SQLite answers "database is locked" at once, without its busy handler,
    while another connection creates the file or switches it; that race only exists when a
    fresh database is opened by several processes, so a short bounded retry settles it."""
    for attempt in range(attempts):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.01 + 0.002 * attempt)


def _sqlite_engine(url: URL) -> Engine:
    database = url.database or ""
    in_memory = database in ("", ":memory:") or url.query.get("mode") == "memory"
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if in_memory:
        # One shared connection, or every checkout would see a different empty database.
        kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
    elif not url.query.get("uri"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module (it would skip BEGIN for
        # SELECT and DDL); the "begin" hook below emits it instead.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # busy_timeout first: switching to WAL needs a lock another process may hold.
            cursor.execute("PRAGMA busy_timeout=30000")
            _set_wal(cursor)
            for pragma in ("synchronous=NORMAL", "foreign_keys=ON"):
                cursor.execute(f"PRAGMA {pragma}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A deferred transaction that reads and then writes can fail at once with SQLITE_BUSY
        # when another process committed in between; IMMEDIATE waits for the lock up front.
        # SQLite's busy handler (busy_timeout, 30 s) does the waiting; polling for the lock
        # ourselves every 1-2 ms measured no faster
        # (docs/decisions/0004-sqlite-wal-default-postgresql-for-scale.md).
        mode = "IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


class Database:
    """One engine (SQLite or PostgreSQL) and the clock every part of the store stamps with.

    ``clock`` returns the current time as an aware UTC datetime; it stamps every write and
    decides lock expiry (tests pass a fake one instead of sleeping).
    """

    def __init__(self, url: str, *, clock: Clock | None = None) -> None:
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise ConfigError("not a SQLAlchemy URL", key="store.url") from None
        backend = parsed.get_backend_name()
        if backend not in ("sqlite", "postgresql"):
            raise ConfigError(
                f"the store runs on sqlite or postgresql, not {backend!r}", key="store.url"
            )
        self.url = parsed
        self.clock: Clock = clock or utcnow
        self.dialect = backend
        if backend == "sqlite":
            self.engine = _sqlite_engine(parsed)
        else:
            connect_args = ({} if "connect_timeout" in parsed.query
                            else {"connect_timeout": PG_CONNECT_TIMEOUT_S})
            self.engine = create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)
        #: The engine for writing transactions (BEGIN IMMEDIATE on SQLite).
        self.writer = self.engine.execution_options(**{_WRITE: True})

    def __repr__(self) -> str:
        # Operators know it as the store; error lines name it so (docs/architecture.md).
        return f"Store({self.safe_url!r})"

    @property
    def safe_url(self) -> str:
        """The URL with its password hidden, for showing to people."""
        return self.url.render_as_string(hide_password=True)

    def insert(self, table: Table) -> Any:
        """An INSERT of the database's dialect (with ``on_conflict_do_*``)."""
        return (sqlite.insert if self.dialect == "sqlite" else postgresql.insert)(table)

    def migrate(self) -> None:
        """Bring the schema to the newest revision (``alembic upgrade head``). Idempotent.

        Runs inside one write transaction that first takes a lock (BEGIN IMMEDIATE on SQLite,
        an advisory lock on PostgreSQL), so processes starting together on a fresh database
        migrate one after the other and the later ones find nothing to do.
        """
        cfg = alembic_config()
        with self.writer.begin() as conn:
            if self.dialect == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(_MIGRATION_LOCK_KEY)))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def dispose(self) -> None:
        """Forget the pooled connections inherited from a parent process; call it after fork.

        The parent's connections are left open for the parent to keep using.
        """
        self.engine.dispose(close=False)

    def close(self) -> None:
        """Close every pooled connection. New ones are opened if used again."""
        self.engine.dispose()
