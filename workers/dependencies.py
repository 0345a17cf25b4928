"""Whether a process's store and broker answer: before it says it is ready, and while it runs.

Every long-running role (worker, sampler, exporter, and ``run``, which is all three) calls
:func:`require_dependencies` before it reports ready or writes a heartbeat. A store or broker
that does not answer within ``[health] check_timeout_s`` stops it with one line naming the key
(``store.url`` or ``broker.url``) and where it was set (the file, or the ``GROUNDWATCH__…``
variable that set it): an :class:`~evaluator.errors.UnreachableError`, which the CLI prints
without a traceback and exits 2 on, like any config error. Before this, a PostgreSQL URL
naming a database that does not exist gave a worker that logged two tracebacks, said
"ready." and beat "alive" (issue 16, item 8).

After start, :func:`store_problem` runs again with every heartbeat (workers/health.py): a beat
says ``healthy: false`` while the store does not answer, so ``groundwatch health`` fails and
the heartbeat gauge stops moving (WorkerDown, SamplerDown fire), and the next beat after the
store is back is healthy again. ``groundwatch health`` runs the same check itself: a beat
written a second before the store went away does not vouch for it.

The broker after start needs no check here: with Redis, every heartbeat is itself a write to
the broker, and a beat that cannot be written expires.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import redis
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from evaluator.config import Config, env_name_for
from evaluator.errors import ConfigError, UnreachableError, describe_error
from evaluator.sources.engine import create_readonly_engine, masked_url
from evaluator.store import Store


def _flat(text_: str, limit: int = 300) -> str:
    """A driver's message (libpq's span lines) as one line, cut to ``limit``."""
    text_ = " ".join(text_.split())
    return text_ if len(text_) <= limit else text_[:limit - 3] + "..."


def unreachable(config: Config, key: str, problem: str,
                environ: Mapping[str, str] | None = None) -> UnreachableError:
    """The error for ``key``, naming the variable that set it, else the config file."""
    env = env_name_for(key, os.environ if environ is None else environ)
    if env:
        return UnreachableError(problem, key=key, env=env)
    return UnreachableError(problem, key=key, path=config.path)


def store_problem(config: Config, timeout_s: float | None = None) -> str | None:
    """None while the store answers a query, else why not, in one line. A connection of its
    own, read-only, opened and closed here (a pooled one could still answer from a SQLite
    file that was deleted), bounded by ``timeout_s`` (default ``[health] check_timeout_s``)."""
    timeout_s = config.health.check_timeout_s if timeout_s is None else timeout_s
    url = config.store.url.get_secret_value()
    try:
        engine = create_readonly_engine(url, key="store.url", connect_timeout_s=timeout_s,
                                        role="store", poolclass=NullPool)
    except ConfigError as exc:
        return f"the store {masked_url(url)} cannot be opened: {exc.problem}"
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        return f"the store {masked_url(url)} does not answer: {_flat(describe_error(exc))}"
    finally:
        engine.dispose()
    return None


def broker_problem(config: Config, timeout_s: float | None = None) -> str | None:
    """None while the broker accepts a connection (Redis: answers PING), else why not. The
    filesystem and memory brokers have nothing to connect to."""
    timeout_s = config.health.check_timeout_s if timeout_s is None else timeout_s
    url = config.broker.url.get_secret_value()
    scheme = url.partition("://")[0].split("+")[0]
    if scheme in ("filesystem", "memory"):
        return None
    try:
        if scheme in ("redis", "rediss"):
            client = redis.Redis.from_url(url, socket_timeout=timeout_s,
                                          socket_connect_timeout=timeout_s)
            try:
                client.ping()
            finally:
                client.close()
        else:
            # kombu is slow to import, and only brokers other than Redis need it here.
            from kombu import Connection

            conn = Connection(url, connect_timeout=timeout_s)
            try:
                # One attempt: kombu's default retries would wait seconds for nothing.
                conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0,
                                       interval_max=0, timeout=timeout_s)
            finally:
                conn.release()
    except Exception as exc:
        return (f"the broker {masked_url(url)} does not answer: "
                f"{type(exc).__name__}: {_flat(str(exc))}")
    return None


def open_store(config: Config) -> Store:
    """The store, migrated; :class:`UnreachableError` naming ``store.url`` when it cannot be
    opened (a server that refuses, a database that does not exist, a directory that cannot
    hold the SQLite file). PostgreSQL connections are bounded in time by the store itself."""
    url = config.store.url.get_secret_value()
    try:
        return Store.from_config(config.store)
    except (SQLAlchemyError, OSError) as exc:
        raise unreachable(config, "store.url", f"cannot open the store {masked_url(url)}: "
                          f"{_flat(describe_error(exc))}") from None


def require_dependencies(config: Config, *, store: bool = True) -> None:
    """Stop this process with one line (an :class:`UnreachableError`) unless its broker
    answers and (``store``) its store opens, migrated, and answers."""
    problem = broker_problem(config)
    if problem is not None:
        raise unreachable(config, "broker.url", problem)
    if store:
        open_store(config).close()
