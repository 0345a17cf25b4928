"""A sampler killed (SIGKILL) between the enqueue and the cursor update (issue 7, faults).

Real processes: a ``groundwatch sampler``, then a ``groundwatch worker``, real Redis, and the
store on the real PostgreSQL (its own schema). To kill the sampler exactly in that window, the
test holds the store's cursor row with ``SELECT ... FOR UPDATE``: the sampler stores the new
slice's items and publishes its batches, then blocks on the cursor update, and is killed there.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, text

from evaluator import demo_traffic
from evaluator.config import load_config
from evaluator.store import Store
from tests.gw_helpers import (
    REDIS_HOST,
    REDIS_PORT,
    TEST_REDIS_DB,
    flush_test_redis,
    groundwatch_cmd,
    log_tail,
    parse_metrics,
    processes,
    snapshot,
    start,
    total,
    write_config,
)
from tests.prom_helpers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

FIRST, SECOND = 40, 30


def test_sampler_killed_between_enqueue_and_cursor_resends_and_counts_once(
        tmp_path: Path, pg_url: str) -> None:
    flush_test_redis()
    path = write_config(tmp_path, rate=1.0, batch_size=25)
    text_cfg = path.read_text().replace(f'url = "sqlite:///{tmp_path.as_posix()}/gw.db"',
                                        f'url = "{pg_url}"', 1)
    # A lock TTL long enough that no renewal falls inside the test's window, short enough
    # that the restarted sampler does not wait long for the dead one's lock.
    path.write_text(text_cfg + "[sampler]\nlock_ttl_s = 12\n")
    config = load_config(path, environ={})
    logs_url = f"sqlite:///{tmp_path}/logs.db"
    demo_traffic.create_log_table(logs_url)
    rows = demo_traffic.make_rows(FIRST + SECOND, seed=11)
    for r in rows:
        r["thumbs"] = 0
    demo_traffic.write_rows(logs_url, rows[:FIRST])
    queue = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=TEST_REDIS_DB)
    store = Store.from_config(config.store)
    engine = create_engine(pg_url)
    try:
        with processes() as procs:
            log = tmp_path / "sampler.log"
            sampler = start(procs, groundwatch_cmd(path, "sampler"), log)
            wait_until(lambda: (store.ledger.get_cursor("app") or {}).get("request_id", {}).get("value")
                       == rows[FIRST - 1]["req_uuid"], timeout=60, what="the first slice")
            assert queue.llen(config.broker.queue) == 2  # 40 items in batches of 25
            # Just after a lock renewal, so that none is due in the window below.
            renewed = store.ledger.cursor_state("app")
            assert renewed is not None
            wait_until(lambda: (s := store.ledger.cursor_state("app")) is not None
                       and s.lock_expires_at != renewed.lock_expires_at, timeout=30,
                       what="a lock renewal")
            with engine.connect() as blocker:
                blocker.execute(text("SELECT * FROM gw_cursors WHERE source = 'app' FOR UPDATE"))
                demo_traffic.write_rows(logs_url, rows[FIRST:])
                wait_until(lambda: queue.llen(config.broker.queue) == 4, timeout=20,
                           what="the second slice published")
                assert sum(store.queries.count_items_by_status().values()) == FIRST + SECOND
                sampler.send_signal(signal.SIGKILL)
                sampler.wait(timeout=10)
                blocker.rollback()
            # The cursor did not move past the slice it could not commit.
            assert (store.ledger.get_cursor("app") or {})["request_id"]["value"] == \
                rows[FIRST - 1]["req_uuid"]

            restarted = start(procs, groundwatch_cmd(path, "sampler"), log)
            wait_until(lambda: (store.ledger.get_cursor("app") or {}).get("request_id", {}).get("value")
                       == rows[-1]["req_uuid"], timeout=60,
                       what=f"the restarted sampler to commit the slice\n{log_tail(log)}")
            assert queue.llen(config.broker.queue) == 6  # the slice was sent again...
            assert restarted.poll() is None

            # ...and the idempotent writes absorb the duplicate.
            start(procs, groundwatch_cmd(path, "worker"), tmp_path / "worker.log")
            wait_until(lambda: store.queries.count_items_by_status()["scored"] == FIRST + SECOND
                       and queue.llen(config.broker.queue) == 0, timeout=90,
                       what=f"scoring\n{log_tail(tmp_path / 'worker.log')}")
            with engine.connect() as conn:
                per_item = conn.execute(text(
                    "SELECT request_id, count(*) FROM gw_scores GROUP BY request_id")).all()
            metrics_per_item = {n for _, n in per_item}
            assert len(per_item) == FIRST + SECOND and len(metrics_per_item) == 1
            n_metrics = metrics_per_item.pop()
            wait_until(lambda: total(parse_metrics(snapshot(tmp_path / "prom")),
                                     "groundwatch_score_outcomes_total")
                       == (FIRST + SECOND) * n_metrics, timeout=30, what="outcome counters")
        parsed = parse_metrics(snapshot(tmp_path / "prom"))
        # Counted once: the killed sampler had not counted the slice it could not commit.
        assert total(parsed, "groundwatch_items_sampled_total") == FIRST + SECOND
        assert total(parsed, "groundwatch_app_requests_total") == FIRST + SECOND
        assert total(parsed, "groundwatch_logs_seen_total") == FIRST + SECOND
        assert total(parsed, "groundwatch_score_outcomes_total") == (FIRST + SECOND) * n_metrics
        assert store.queries.rejections() == []
    finally:
        engine.dispose()
        store.close()
        flush_test_redis()


