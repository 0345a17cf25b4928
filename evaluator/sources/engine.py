"""Read-only SQLAlchemy engines for databases groundwatch only reads (the app's log table).

:func:`create_readonly_engine` is the one place that turns a configured URL into an engine that
cannot change the database it points at:

* SQLite is opened through a ``file:...?mode=ro`` URI (``uri=true``), so a missing file is an
  error (:class:`ConfigError` naming the key) instead of a new, empty database, and nothing can
  be written even by mistake.
* PostgreSQL sessions are read-only (``postgresql_readonly``); a read-only role is still the
  recommended set-up (README, "Configuration").
* An unknown dialect or a driver that is not installed is a one-line :class:`ConfigError` that
  says which package to install, not a ``ModuleNotFoundError`` from deep inside SQLAlchemy.

Nothing here connects: the first query does.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url

from evaluator.config import db_url_problem
from evaluator.errors import ConfigError

__all__ = ["DRIVER_PACKAGES", "create_readonly_engine", "create_source_engine", "load_dialect",
           "sqlite_file"]

#: DBAPI module → the pip package that provides it, for "driver not installed" messages.
DRIVER_PACKAGES = {
    "psycopg": "psycopg[binary]",
    "psycopg2": "psycopg2-binary",
    "asyncpg": "asyncpg",
    "pg8000": "pg8000",
    "pymysql": "PyMySQL",
    "MySQLdb": "mysqlclient",
    "mysql": "mysql-connector-python",
    "oracledb": "oracledb",
    "pyodbc": "pyodbc",
    "pymssql": "pymssql",
}


def masked_url(url: str) -> str:
    """``url`` with its password hidden, for showing to people; ``(url)`` when it is none."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(url)"


def load_dialect(url: str, *, key: str, path: str | None = None) -> URL:
    """Parse ``url`` and load its dialect class (not its driver); :class:`ConfigError` naming
    ``key`` if either fails."""
    problem = db_url_problem(url)
    if problem:
        raise ConfigError(problem, path=path, key=key)
    return make_url(url)


def sqlite_file(url: URL) -> Path | None:
    """The file a SQLite URL names, or ``None`` for an in-memory database."""
    database = url.database or ""
    if url.query.get("mode") == "memory" or database in ("", ":memory:"):
        return None
    if str(url.query.get("uri", "")).lower() in ("1", "true"):
        if not database.startswith("file:"):
            return Path(database)
        rest = urllib.parse.urlsplit(database)
        if database.startswith("file://") and rest.netloc not in ("", "localhost"):
            return None  # a remote authority; let SQLite refuse it
        return Path(urllib.parse.unquote(rest.path)) if rest.path not in ("", ":memory:") else None
    return Path(database).expanduser()


def _readonly_sqlite_url(url: URL, file: Path) -> URL:
    # SQLAlchemy appends the non-driver query keys (mode=ro, and any the user gave) to the
    # filename, so the URI is "file:/abs/path?mode=ro". Quoting keeps '?', '#' and '%' in a
    # file name from being read as URI syntax.
    query = {k: v for k, v in url.query.items() if k not in ("mode", "uri")}
    query.update(mode="ro", uri="true")
    return url.set(database="file:" + urllib.parse.quote(str(file.resolve())), query=query)


def create_readonly_engine(
    url: str,
    *,
    key: str,
    path: str | None = None,
    connect_timeout_s: float | None = None,
    role: str = "source",
    **engine_kwargs: Any,
) -> Engine:
    """An engine on ``url`` that can only read; :class:`ConfigError` naming ``key`` (and the
    config file ``path``) when the URL, its dialect, its driver or its SQLite file is wrong.

    ``connect_timeout_s`` bounds a connection attempt on drivers that take one (PostgreSQL,
    MySQL) unless the URL sets ``connect_timeout`` itself. ``role`` names the database in
    messages ("source database file ... does not exist").
    """
    parsed = load_dialect(url, key=key, path=path)
    backend = parsed.get_backend_name()
    kwargs: dict[str, Any] = {"pool_pre_ping": True, **engine_kwargs}
    if backend == "sqlite":
        file = sqlite_file(parsed)
        if file is not None:
            if not file.is_file():
                what = "is not a file" if file.exists() else "does not exist"
                raise ConfigError(f"{role} database file {str(file)!r} {what} (it is opened "
                                  "read-only and never created)", path=path, key=key)
            parsed = _readonly_sqlite_url(parsed, file)
    elif backend == "postgresql":
        kwargs.setdefault("execution_options", {"postgresql_readonly": True})
    if connect_timeout_s is not None and backend in ("postgresql", "mysql") \
            and "connect_timeout" not in parsed.query:
        connect_args = dict(kwargs.get("connect_args", {}))
        connect_args.setdefault("connect_timeout", max(1, round(connect_timeout_s)))
        kwargs["connect_args"] = connect_args
    try:
        engine = create_engine(parsed, **kwargs)
    except ImportError as exc:
        module = (exc.name or "").split(".")[0] or parsed.get_driver_name()
        package = DRIVER_PACKAGES.get(module, module)
        raise ConfigError(f"the {parsed.drivername!r} driver needs the Python package "
                          f"{module!r}, which is not installed: pip install '{package}'",
                          path=path, key=key) from None
    if backend == "sqlite":
        event.listen(engine, "connect", _lenient_text)
    return engine


def create_source_engine(url: str, *, path: str | None = None,
                         connect_timeout_s: float | None = None) -> Engine:
    """The read-only engine of the ``sql`` source (errors name ``source.sql.url``)."""
    return create_readonly_engine(url, key="source.sql.url", path=path,
                                  connect_timeout_s=connect_timeout_s)


def _lenient_text(dbapi_connection: Any, _record: Any) -> None:
    # SQLite stores whatever bytes it is given as TEXT; sqlite3 fails the whole fetch on one
    # value that is not UTF-8, which would stall the source on that row forever. Such a value
    # comes back as bytes instead, which the records module rejects (or, for contexts,
    # decodes) like a BLOB, with a reason. Not replaced by U+FFFD: the cursor must be able to
    # bind a request id back exactly as stored.
    dbapi_connection.text_factory = _decode_text


def _decode_text(raw: bytes) -> str | bytes:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw
