"""Faults with real processes: the broker, the store and the store's disk fail under a running
sampler, exporter and Celery workers, then come back. Nothing may be lost, nothing counted
twice, and no process may need a restart.

Each test owns the server it breaks (its own ``redis-server`` or PostgreSQL on a free loopback
port, a tmpfs of its own): the shared services are never touched. The measured recovery times
are printed (``pytest -s``) and summarised in docs/architecture.md, "Faults".
"""

from __future__ import annotations

import contextlib
import json
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from evaluator import demo_traffic
from evaluator.sampling import sample_hash
from evaluator.store import Store
from tests.fault_helpers import (
    Stopwatch,
    can_freeze,
    can_mount,
    frozen_files,
    postgres_server,
    redis_server,
    tiny_filesystem,
)
from tests.gw_helpers import (
    groundwatch_cmd,
    log_tail,
    parse_metrics,
    processes,
    start,
    total,
    write_config,
)
from tests.prom_helpers import free_port, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

FAULTS = "evaluator.scorers.testing:FaultScorer"
METRICS = ("answer_relevance", "context_relevance", "faithfulness", "groundedness")
RATE = 0.5
SALT = "e2e"  # tests.gw_helpers.CONFIG's salt


def log_rows(n: int, *, seed: int, start: datetime, slow_ms: int) -> list[dict[str, Any]]:
    """Synthetic rows whose metadata asks the fault scorer to take ``slow_ms`` per item, so a
    backlog is still queued in the broker when the fault hits."""
    rows = demo_traffic.make_rows(n, seed=seed, start=start)
    for row in rows:
        extra = json.loads(str(row["extra"]))
        row["extra"] = json.dumps({**extra, "gw_fault": f"slow:{slow_ms}"})
    return rows


def sampled_ids(rows: list[dict[str, Any]]) -> set[str]:
    """The request ids the sampling policy of tests.gw_helpers.CONFIG takes (no caps)."""
    return {str(r["req_uuid"]) for r in rows
            if r["thumbs"] == -1 or r["outcome"] == "error"
            or sample_hash(SALT, str(r["req_uuid"])) < RATE}


def assert_scored_once(store: Store, expected: set[str]) -> None:
    """Every expected item is stored and ``scored``, with exactly one score per metric."""
    counts = store.queries.count_items_by_status()
    assert counts == {"queued": 0, "scored": len(expected), "failed": 0}, counts
    per_pair = Counter((s.request_id, s.metric) for s in store.queries.scores())
    assert {rid for rid, _ in per_pair} == expected
    assert set(per_pair.values()) == {1}
    assert Counter(m for _, m in per_pair) == dict.fromkeys(METRICS, len(expected))


def healthz(port: int) -> tuple[int, dict[str, Any]]:
    response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
    return response.status_code, response.json()


def report(name: str, **figures: Any) -> None:
    print(f"\n[fault] {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


# -- the broker ---------------------------------------------------------------------------------

@pytest.mark.parametrize("persistent", [True, False], ids=["redis-aof", "redis-no-persistence"])
def test_redis_stopped_mid_run_loses_and_doubles_nothing(tmp_path: Path,
                                                          persistent: bool) -> None:
    start_at = datetime.now(UTC) - timedelta(minutes=20)
    first = log_rows(240, seed=31, start=start_at, slow_ms=40)
    later = log_rows(60, seed=32, start=start_at + timedelta(minutes=5), slow_ms=40)
    expected = sampled_ids(first + later)
    logs_url = f"sqlite:///{tmp_path}/logs.db"
    demo_traffic.create_log_table(logs_url)
    demo_traffic.write_rows(logs_url, first)

    with redis_server(tmp_path / "redis", persistent=persistent) as broker:
        port = free_port()
        config = write_config(tmp_path, rate=RATE, scorer=FAULTS, batch_size=10, visibility=10,
                              concurrency=1, port=port, broker_url=broker.url)
        store = Store(f"sqlite:///{tmp_path}/gw.db")
        with processes() as procs:
            workers = [start(procs, groundwatch_cmd(config, "worker", "--name", f"w{i}@%h"),
                             tmp_path / f"worker{i}.log") for i in range(2)]
            exporter = start(procs, groundwatch_cmd(config, "exporter"), tmp_path / "exp.log")
            sampler = start(procs, groundwatch_cmd(config, "sampler"), tmp_path / "sampler.log")
            everyone = [*workers, exporter, sampler]

            # Stop the broker with scored items behind and a backlog in its queue.
            def under_way() -> bool:
                c = store.queries.count_items_by_status()
                return c["scored"] >= 20 and c["queued"] >= 40
            wait_until(under_way, timeout=60, what="scoring under way with a backlog: "
                       + log_tail(tmp_path / "worker0.log", 10))
            broker.stop()
            down = Stopwatch()
            scored_at_stop = store.queries.count_items_by_status()["scored"]

            # While it is down: /healthz says so, new rows keep arriving, the sampler tries.
            seen: list[Any] = []

            def degraded() -> dict[str, Any] | None:
                status, body = healthz(port)
                seen.append((round(down.elapsed, 1), status, body))
                return body if status == 503 else None
            try:
                body = wait_until(degraded, timeout=20, what="/healthz degraded")
            except TimeoutError as exc:
                raise AssertionError(f"{exc}; last answers: {seen[-3:]}") from exc
            assert body["status"] == "degraded" and body["store"] == "ok", body
            assert body["broker"].startswith("error"), body
            demo_traffic.write_rows(logs_url, later)
            later_ids = {str(r["req_uuid"]) for r in later} & expected
            wait_until(lambda: later_ids <= store.ledger.stored_item_ids(sorted(later_ids)),
                       timeout=30, what="the sampler reading rows during the outage")
            wait_until(lambda: "sampler step failed" in log_tail(tmp_path / "sampler.log", 200),
                       timeout=30, what="the sampler backing off")
            assert all(p.poll() is None for p in everyone), "a process gave up on the broker"
            outage = down.elapsed

            broker.start()
            back = Stopwatch()
            wait_until(lambda: healthz(port)[0] == 200, timeout=30, what="/healthz ok again")
            health_back = back.elapsed

            def all_scored() -> bool:
                for i, w in enumerate(workers):
                    assert w.poll() is None, log_tail(tmp_path / f"worker{i}.log")
                return store.queries.count_items_by_status()["scored"] == len(expected)
            wait_until(all_scored, timeout=60,
                       what=f"all {len(expected)} items scored after the restart "
                            f"({store.queries.count_items_by_status()}); sampler: "
                            + log_tail(tmp_path / "sampler.log", 5))
            recovered = back.elapsed
            assert all(p.poll() is None for p in everyone), "no process may need a restart"

            assert_scored_once(store, expected)
            sampler_log = (tmp_path / "sampler.log").read_text()
            assert ("re-sent" in sampler_log) is not persistent, \
                "re-sent exactly when the broker lost its data"
            assert "Traceback" not in sampler_log, "an outage is one line per try"

            def counted() -> dict[str, Any] | None:
                parsed = parse_metrics(httpx.get(f"http://127.0.0.1:{port}/metrics").text)
                done = total(parsed, "groundwatch_score_outcomes_total") >= 4 * len(expected)
                return parsed if done else None
            m = wait_until(counted, timeout=30, what="the scores in /metrics")
            assert total(m, "groundwatch_score_outcomes_total") == 4 * len(expected)
            assert total(m, "groundwatch_eval_lag_seconds_count") == len(expected)
            assert total(m, "groundwatch_logs_seen_total") == len(first) + len(later)
            assert total(m, "groundwatch_items_sampled_total") == len(expected)
            report(f"redis stopped ({'aof' if persistent else 'no persistence'})",
                   items=len(expected), scored_before_stop=scored_at_stop,
                   outage_s=f"{outage:.1f}", healthz_ok_after_s=f"{health_back:.1f}",
                   all_scored_after_restart_s=f"{recovered:.1f}",
                   enqueue_errors=total(m, "groundwatch_enqueue_errors_total"))
        store.close()



# -- the store ----------------------------------------------------------------------------------

def test_postgres_store_stopped_mid_run_waits_and_writes_nothing_by_halves(
        tmp_path: Path) -> None:
    rows = log_rows(240, seed=41, start=datetime.now(UTC) - timedelta(minutes=20), slow_ms=40)
    expected = sampled_ids(rows)
    logs_url = f"sqlite:///{tmp_path}/logs.db"
    demo_traffic.create_log_table(logs_url)
    demo_traffic.write_rows(logs_url, rows)

    with postgres_server() as pg, redis_server(tmp_path / "redis", persistent=False) as broker:
        port = free_port()
        config = write_config(tmp_path, rate=RATE, scorer=FAULTS, batch_size=10, visibility=10,
                              concurrency=1, port=port, broker_url=broker.url,
                              store_url=pg.url)
        max_retries = 4  # tests.gw_helpers.CONFIG: worker.max_retries
        store = Store(pg.url)
        with processes() as procs:
            workers = [start(procs, groundwatch_cmd(config, "worker", "--name", f"w{i}@%h"),
                             tmp_path / f"worker{i}.log") for i in range(2)]
            exporter = start(procs, groundwatch_cmd(config, "exporter"), tmp_path / "exp.log")
            sampler = start(procs, groundwatch_cmd(config, "sampler"), tmp_path / "sampler.log")
            everyone = [*workers, exporter, sampler]

            def under_way() -> bool:
                c = store.queries.count_items_by_status()
                return c["scored"] >= 20 and c["queued"] >= 40
            wait_until(under_way, timeout=60, what="scoring under way with a backlog")
            pg.stop("fast")  # every session ends, as in a database restart or failover
            down = Stopwatch()

            def retries() -> Counter[str]:
                """Retries per task id, from Celery's own log lines."""
                logs = "".join(log_tail(tmp_path / f"worker{i}.log", 5000) for i in range(2))
                assert "failed for good" not in logs, "a batch was given up while the store " \
                    "was down: " + logs[logs.index("failed for good") - 200:][:600]
                return Counter(re.findall(r"score_batch\[([0-9a-f-]+)\] retry:", logs))

            # Down for longer than a batch's retry budget: the batches must still wait.
            wait_until(lambda: max(retries().values(), default=0) > max_retries + 2,
                       timeout=45, what="a batch retrying past its retry budget")
            status, body = healthz(port)
            assert status == 503 and body["store"].startswith("error"), body
            assert all(p.poll() is None for p in everyone), "a process gave up on the store"
            outage = down.elapsed

            pg.start()
            back = Stopwatch()

            def all_done() -> bool:
                c = store.queries.count_items_by_status()
                return c["scored"] + c["failed"] == len(expected) and c["queued"] == 0
            try:
                wait_until(all_done, timeout=60, what="every item settled after the restart")
            except TimeoutError as exc:
                raise AssertionError(f"{exc}: {store.queries.count_items_by_status()}") from exc
            recovered = back.elapsed
            assert all(p.poll() is None for p in everyone), "no process may need a restart"

            assert_scored_once(store, expected)
            with store.engine.connect() as conn:
                # Nothing by halves: scores exist only for items marked scored, and every scored
                # item has all its scores and its explanation.
                orphans = conn.execute(text(
                    "SELECT count(*) FROM gw_scores s JOIN gw_items i USING (request_id) "
                    "WHERE i.status <> 'scored'")).scalar_one()
                incomplete = conn.execute(text(
                    "SELECT count(*) FROM gw_items i WHERE i.status = 'scored' AND "
                    f"((SELECT count(*) FROM gw_scores s WHERE s.request_id = i.request_id) <> "
                    f"{len(METRICS)} OR NOT EXISTS (SELECT 1 FROM gw_explanations e "
                    "WHERE e.request_id = i.request_id))")).scalar_one()
                dead = conn.execute(text("SELECT count(*) FROM gw_failures")).scalar_one()
            assert (orphans, incomplete, dead) == (0, 0, 0)
            assert "Traceback" not in (tmp_path / "sampler.log").read_text()
            report("postgres store stopped", items=len(expected), outage_s=f"{outage:.1f}",
                   worker_retries=sum(retries().values()), all_scored_after_restart_s=f"{recovered:.1f}")
        store.close()


# -- the store's disk ---------------------------------------------------------------------------

def big_rows(n: int, *, seed: int, start: datetime) -> list[dict[str, Any]]:
    """Rows with ~20 kB contexts, so that storing them needs new pages (a write that fits in
    pages the database or its WAL already holds would succeed on a full disk)."""
    rows = log_rows(n, seed=seed, start=start, slow_ms=1)
    for i, row in enumerate(rows):
        row["retrieved_docs"] = json.dumps([f"passage {seed}-{i}: " + "lorem ipsum " * 1700])
        row["thumbs"] = -1  # always sampled: every row must reach the store
    return rows


@pytest.mark.parametrize("fault", ["disk-full", "read-only"])
def test_sqlite_store_that_cannot_be_written_holds_the_cursor_and_loses_nothing(
        tmp_path: Path, fault: str) -> None:
    """disk-full: the store on a tmpfs of its own, filled up. read-only: the store's files made
    immutable (``chattr +i``; as root, chmod would not stop a write)."""
    if fault == "disk-full" and not can_mount():
        pytest.skip("needs root with CAP_SYS_ADMIN to mount a tmpfs")
    if fault == "read-only" and not can_freeze(tmp_path):
        pytest.skip("needs root and a filesystem with chattr +i")
    start_at = datetime.now(UTC) - timedelta(minutes=20)
    first = log_rows(40, seed=51, start=start_at, slow_ms=1)
    later = big_rows(40, seed=52, start=start_at + timedelta(minutes=2))
    expected = sampled_ids(first + later)
    logs_url = f"sqlite:///{tmp_path}/logs.db"
    demo_traffic.create_log_table(logs_url)
    demo_traffic.write_rows(logs_url, first)

    with contextlib.ExitStack() as stack:
        broker = stack.enter_context(redis_server(tmp_path / "redis", persistent=False))
        if fault == "disk-full":
            fs = stack.enter_context(tiny_filesystem(tmp_path / "storefs", 8 << 20))
            store_dir, word = fs.path, "SQLITE_FULL"
            breaks, mends = fs.fill, fs.drain
        else:
            # SQLite's word for a write the OS refuses (EPERM) is an I/O error.
            store_dir, word = tmp_path / "store", "SQLITE_IOERR_WRITE"
            store_dir.mkdir()
            frozen = stack.enter_context(frozen_files(store_dir))
            # Not the -shm file: it is mapped in memory, and a frozen mapping kills its readers.
            breaks = lambda: frozen.freeze("gw.db") or frozen.freeze("gw.db-wal")  # noqa: E731
            mends = frozen.thaw
        store_url = f"sqlite:///{store_dir}/gw.db"
        config = write_config(tmp_path, rate=RATE, scorer=FAULTS, batch_size=10,
                              concurrency=1, broker_url=broker.url, store_url=store_url)
        store = stack.enter_context(Store(store_url))
        sampler_log = tmp_path / "sampler.log"
        procs = stack.enter_context(processes())
        worker = start(procs, groundwatch_cmd(config, "worker"), tmp_path / "worker.log")
        sampler = start(procs, groundwatch_cmd(config, "sampler"), sampler_log)
        first_ids = sampled_ids(first)
        wait_until(lambda: store.queries.count_items_by_status()["scored"] == len(first_ids),
                   timeout=60, what="the first rows scored")
        cursor = store.ledger.get_cursor("app")
        assert cursor is not None

        breaks()
        broke = Stopwatch()
        log_size = sampler_log.stat().st_size
        demo_traffic.write_rows(logs_url, later)

        def new_log() -> str:
            with sampler_log.open(errors="replace") as f:
                f.seek(log_size)
                return f.read()
        # The sampler backs off and keeps trying: wait for its third try in a row.
        line = wait_until(lambda: next((ln for ln in new_log().splitlines()
                                        if "sampler step failed (3 in a row)" in ln), None),
                          timeout=30, what=f"the sampler's error on a {fault} store")
        # One line that names the store and says what is wrong, not a traceback.
        assert f"{store_dir}/gw.db" in line and word in line, line
        assert "Traceback" not in new_log(), new_log()[-3000:]
        assert store.ledger.get_cursor("app") == cursor, "the cursor moved past unstored rows"
        assert sampler.poll() is None and worker.poll() is None

        mends()
        back = Stopwatch()
        wait_until(lambda: store.queries.count_items_by_status()["scored"] == len(expected),
                   timeout=60, what=f"every row scored once the store is {fault} no more")
        assert sampler.poll() is None and worker.poll() is None, "no process may need a restart"
        assert_scored_once(store, expected)
        report(f"sqlite store {fault}", rows=len(later),
               failing_for_s=f"{back.started - broke.started:.1f}",
               all_scored_after_fix_s=f"{back.elapsed:.1f}")
