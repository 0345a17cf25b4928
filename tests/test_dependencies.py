"""Never healthy while broken (issue 16, item 8; workers/dependencies.py).

Real processes on real services: a PostgreSQL store URL naming a database that does not exist
and a Redis URL on a closed port stop every role at start with one line naming the key and
exit 2; a store that goes away after start (a database that stops taking connections) makes
the heartbeat unhealthy and ``groundwatch health`` fail, and both recover when it is back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from evaluator.config import load_config
from evaluator.errors import ConfigError
from tests.conftest import PG_URL
from tests.gw_helpers import (
    REDIS_HOST,
    REDIS_PORT,
    TEST_REDIS_DB,
    flush_test_redis,
    groundwatch_cmd,
    log_tail,
    processes,
    start,
    write_config,
)
from tests.prom_helpers import free_port, wait_until
from workers.health import KEY_PREFIX, Beat, check_role
from workers.services import run_all, run_exporter, run_sampler

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

def _pg(database: str) -> str:
    return make_url(PG_URL).set(database=database).render_as_string(hide_password=False)


def _admin() -> object:
    return create_engine(PG_URL, poolclass=NullPool, isolation_level="AUTOCOMMIT")


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A database of this test's own on the shared server, dropped afterwards."""
    name = f"gw_dep_{uuid.uuid4().hex[:12]}"
    admin = _admin()
    with admin.connect() as conn:  # type: ignore[attr-defined]
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield name
    finally:
        with admin.connect() as conn:  # type: ignore[attr-defined]
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()  # type: ignore[attr-defined]


def _run_role(config: Path, role: str, env: dict[str, str] | None = None
              ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(groundwatch_cmd(config, role), capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})})


def test_a_store_database_that_does_not_exist_stops_the_worker_with_one_line(
        tmp_path: Path) -> None:
    # The report's case: the worker logged two tracebacks, said "ready." and beat "alive".
    missing = f"no_such_db_{uuid.uuid4().hex[:8]}"
    config = write_config(tmp_path, store_url=_pg(missing))
    result = _run_role(config, "worker")
    out = result.stdout + result.stderr
    assert result.returncode == 2, out[-3000:]
    lines = out.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out, out[-3000:]
    assert f"file {config}" in lines[0] and "key 'store.url'" in lines[0], lines[0]
    assert missing in lines[0] and "does not exist" in lines[0], lines[0]
    assert _beats() == []  # it never beat


@pytest.mark.parametrize("role", ["sampler", "exporter", "run"])
def test_every_other_role_stops_before_it_starts_on_a_missing_store_database(
        tmp_path: Path, role: str) -> None:
    # In process (the CLI prints the error's one line and exits 2, as for the worker above):
    # each role raises before it builds anything, spawns a worker or serves /metrics.
    missing = f"no_such_db_{uuid.uuid4().hex[:8]}"
    config = load_config(write_config(tmp_path, store_url=_pg(missing), port=free_port()))
    run = {"sampler": run_sampler, "exporter": run_exporter, "run": run_all}[role]
    with pytest.raises(ConfigError) as caught:  # UnreachableError, a ConfigError
        run(config)
    line = str(caught.value)
    assert line.startswith(f"cannot start: file {config.path}, key 'store.url': ") and \
        missing in line and "\n" not in line, line
    assert caught.value.key == "store.url"


def test_a_broker_on_a_closed_port_stops_a_role_naming_the_variable_that_set_it(
        tmp_path: Path) -> None:
    config = write_config(tmp_path)
    closed = f"redis://127.0.0.1:{free_port()}/0"
    result = _run_role(config, "worker", env={"GROUNDWATCH__BROKER__URL": closed})
    out = result.stdout + result.stderr
    assert result.returncode == 2 and len(out.strip().splitlines()) == 1, out[-3000:]
    assert "environment variable GROUNDWATCH__BROKER__URL (key 'broker.url')" in out, out


def _health(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(groundwatch_cmd(config, "health", "worker"), capture_output=True,
                          text=True, timeout=60)


def _beats() -> list[Beat]:
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=TEST_REDIS_DB)
    keys = list(client.scan_iter(match=f"{KEY_PREFIX}:*:worker:*"))
    beats = [Beat.from_json(raw) for raw in (client.mget(keys) if keys else []) if raw]
    return [b for b in beats if b is not None]


def test_a_store_that_goes_away_after_start_fails_health_until_it_is_back(
        tmp_path: Path, pg_database: str) -> None:
    flush_test_redis()
    config = write_config(tmp_path, store_url=_pg(pg_database))
    config.write_text(config.read_text() + "\n[health]\ninterval_s = 1.0\n")
    log = tmp_path / "worker.log"
    admin = _admin()
    try:
        with processes() as procs:
            worker = start(procs, groundwatch_cmd(config, "worker"), log)

            loaded = load_config(config)

            def healthy() -> bool:
                assert worker.poll() is None, log_tail(log)
                return check_role(loaded, "worker").ok
            wait_until(healthy, timeout=90, what="the worker is healthy on its store")

            # The store goes away: its database takes no new connection, the open ones end.
            with admin.connect() as conn:  # type: ignore[attr-defined]
                conn.execute(text(f'ALTER DATABASE "{pg_database}" ALLOW_CONNECTIONS false'))
                conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  "WHERE datname = :d"), {"d": pg_database})
            # At once, however fresh the beat: `health` checks the store itself.
            down = _health(config)
            assert down.returncode == 1, down.stdout + down.stderr
            assert down.stdout.startswith("worker: unhealthy: the store ") and \
                pg_database in down.stdout, down.stdout
            # And the worker's own beat says so within an interval or two.
            wait_until(lambda: any(not b.healthy and "store" in (b.problem or "")
                                   for b in _beats()),
                       timeout=20, what="an unhealthy beat while the store is away")
            assert worker.poll() is None, log_tail(log)

            # Back: healthy again, without a restart.
            with admin.connect() as conn:  # type: ignore[attr-defined]
                conn.execute(text(f'ALTER DATABASE "{pg_database}" ALLOW_CONNECTIONS true'))
            wait_until(lambda: check_role(loaded, "worker").ok, timeout=30,
                       what="healthy again once the store is back")
            assert all(b.healthy for b in _beats())
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=60) == 0, log_tail(log)
        assert "reporting unhealthy until it answers" in log.read_text()
    finally:
        admin.dispose()  # type: ignore[attr-defined]
        flush_test_redis()
