"""Helpers for tests that run groundwatch's real processes (workers, sampler, exporter)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import redis

from evaluator import demo_traffic

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
# Dedicated DB numbers, flushed by the tests that use them (the benchmark uses 12). Two
# checkouts testing at once on one Redis pick different numbers with GROUNDWATCH_TEST_REDIS_DB;
# `make test` runs the suite in pytest-xdist processes (gw0, gw1, ...), and each after the
# first takes its own number above 12, so that no two processes flush each other's queue.
_XDIST_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
TEST_REDIS_DB = int(os.environ.get("GROUNDWATCH_TEST_REDIS_DB", "11")) + (
    0 if _XDIST_WORKER == 0 else 1 + _XDIST_WORKER)
if TEST_REDIS_DB > 15:
    raise RuntimeError(f"Redis DB {TEST_REDIS_DB} (xdist worker {_XDIST_WORKER}) is out of "
                       "range: run fewer pytest-xdist workers or a lower GROUNDWATCH_TEST_REDIS_DB")

CONFIG = """
[store]
url = "{store_url}"
[broker]
url = "{broker_url}"
queue = "{queue}"
batch_size = {batch_size}
visibility_timeout_s = {visibility}
[source]
name = "app"
poll_interval_s = 0.2
read_batch_rows = 200
[source.sql]
url = "sqlite:///{tmp}/logs.db"
table = "chat_logs"
# Rows written "now" are decided at once, not 30 s later (the default), and a row missing a
# field is rejected then, not waited for: these tests time alerts and the pipeline, and
# settling only shifts them (what settling and completion do is tested in
# test_sources_sql.py and test_source_writers.py).
settle = "0s"
complete_within = "0s"
[source.columns]
{columns}
[sampling]
salt = "e2e"
default_rate = {rate}
max_items_per_minute = 1000000
[[sampling.rules]]
name = "thumbs_down"
match = {{ feedback = -1 }}
rate = 1.0
[[sampling.rules]]
name = "errors"
match = {{ status = "error" }}
rate = 1.0
[scoring]
scorer = "{scorer}"
[worker]
pool = "{pool}"
concurrency = {concurrency}
retry_backoff_s = 0.05
retry_backoff_max_s = 0.5
max_retries = 4
[metrics]
multiproc_dir = "{tmp}/prom"
port = {metrics_port}
"""


def write_config(tmp: Path, *, rate: float = 0.5, scorer: str = "lexical", batch_size: int = 25,
                 visibility: int = 3600, pool: str = "threads", concurrency: int = 2,
                 port: int = 0, broker_url: str | None = None,
                 store_url: str | None = None) -> Path:
    """A config for tests: the shared Redis's test DB and a SQLite store in ``tmp`` unless
    ``broker_url`` / ``store_url`` name others (fault tests run their own servers)."""
    columns = "\n".join(f'{k} = "{v}"' for k, v in demo_traffic.COLUMNS.items())
    path = tmp / "gw.toml"
    path.write_text(CONFIG.format(
        tmp=tmp.as_posix(), metrics_port=port,
        broker_url=broker_url or f"redis://{REDIS_HOST}:{REDIS_PORT}/{TEST_REDIS_DB}",
        store_url=store_url or f"sqlite:///{tmp.as_posix()}/gw.db",
        queue=f"gw-test-{uuid.uuid4().hex[:8]}", batch_size=batch_size, visibility=visibility,
        columns=columns, rate=rate, scorer=scorer, pool=pool, concurrency=concurrency,
    ))
    (tmp / "prom").mkdir(exist_ok=True)
    return path


def flush_test_redis() -> None:
    redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=TEST_REDIS_DB).flushdb()


def groundwatch_cmd(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "groundwatch", "--config", str(config), *args]


@contextmanager
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Child processes that are always stopped (TERM, then KILL) when the block ends."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)


def start(procs: list[subprocess.Popen[bytes]], cmd: Sequence[str], log: Path,
          env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})})
    out.close()
    procs.append(proc)
    return proc


def parse_metrics(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Exposition text → {sample name: [(labels, value)]}."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return out


def total(parsed: dict[str, list[tuple[dict[str, str], float]]], name: str,
          **labels: str) -> float:
    return sum(v for lab, v in parsed.get(name, [])
               if all(lab.get(k) == want for k, want in labels.items()))


def snapshot(directory: Path) -> str:
    """The exposition text of a multiprocess directory, rendered in a child process."""
    code = ("import sys; from metrics.exporter import snapshot_text; "
            "sys.stdout.write(snapshot_text(sys.argv[1]))")
    return subprocess.run([sys.executable, "-c", code, str(directory)], check=True,
                          capture_output=True, text=True, timeout=60).stdout


def log_tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""

