"""The queue with real parts: Redis, Celery worker processes, the store, the metric files.

Faults are injected with the public test double ``evaluator.scorers.testing:FaultScorer``,
driven by each record's metadata, so the worker code path is the production one.
"""

from __future__ import annotations

import signal
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from evaluator.config import load_config
from evaluator.records import LogRecord
from evaluator.store import Store
from tests.gw_helpers import (
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
from workers.app import make_celery
from workers.sampler import celery_enqueue

pytestmark = pytest.mark.integration

FAULTS = "evaluator.scorers.testing:FaultScorer"
METRICS = 4


def record(i: int, fault: str | None = None) -> dict[str, Any]:
    return LogRecord(
        request_id=f"r{i:04d}", timestamp=datetime.now(UTC), route="docs",
        question="How long are deleted buckets kept?",
        contexts=("Deleted buckets are kept for 30 days.",),
        answer="Deleted buckets are kept for 30 days.",
        metadata={"gw_fault": fault} if fault else {},
    ).to_message()


def enqueue_batches(config_path: Path, batches: list[list[dict[str, Any]]]) -> None:
    config = load_config(config_path, environ={})
    app = make_celery(config)
    send = celery_enqueue(app, config.broker.queue)
    for batch in batches:
        send(batch)


@pytest.fixture
def redis_db() -> Any:
    flush_test_redis()
    yield
    flush_test_redis()


def scores_per_item(store: Store) -> Counter[str]:
    return Counter(s.request_id for s in store.scores())


def test_killed_worker_batch_is_redone_exactly_once_in_effect(tmp_path: Path,
                                                               redis_db: None) -> None:
    # Solo pool, one batch at a time, each batch slowed by one item: the kill lands mid-queue.
    config = write_config(tmp_path, scorer=FAULTS, pool="solo", concurrency=1, visibility=10)
    batches = [[record(b * 10 + i, "slow:300" if i == 0 else None) for i in range(10)]
               for b in range(12)]
    n_items = 120
    enqueue_batches(config, batches)
    store = Store(f"sqlite:///{tmp_path}/gw.db")
    with processes() as procs:
        first = start(procs, groundwatch_cmd(config, "worker", "--name", "first@%h"),
                      tmp_path / "w1.log")
        wait_until(lambda: store.count_items_by_status()["scored"] >= 20, timeout=60,
                   what="a few batches scored")
        first.send_signal(signal.SIGKILL)  # no warm shutdown: its reserved batch is unacked
        first.wait(timeout=10)
        scored_at_kill = store.count_items_by_status()["scored"]
        assert scored_at_kill < n_items
        start(procs, groundwatch_cmd(config, "worker", "--name", "second@%h"),
              tmp_path / "w2.log")
        # The unacked batch comes back after the visibility timeout (10 s).
        wait_until(lambda: len(scores_per_item(store)) == n_items, timeout=90,
                   what=f"all items scored (log: {log_tail(tmp_path / 'w2.log', 5)})")
    per_item = scores_per_item(store)
    assert set(per_item.values()) == {METRICS}, "each item has exactly one score per metric"
    # The metric files of the killed process are kept: totals are sums over both processes,
    # and the re-delivered batch counted once.
    parsed = parse_metrics(snapshot(tmp_path / "prom"))
    assert total(parsed, "groundwatch_score_outcomes_total") == METRICS * n_items
    assert total(parsed, "groundwatch_eval_lag_seconds_count") == n_items
    store.close()


def test_transient_errors_retry_and_permanent_ones_are_recorded(tmp_path: Path,
                                                                 redis_db: None) -> None:
    config = write_config(tmp_path, scorer=FAULTS)
    batches = [
        [record(0, "transient:2"), record(1)],  # fails twice, then scores
        [record(2, "crash"), record(3)],  # permanent: both recorded as failures
        [record(4, "item_error"), record(5)],  # one item's scores are errors, not gaps
        [record(6, "transient:99"), record(7)],  # retries exhausted: recorded as failures
    ]
    enqueue_batches(config, batches)
    store = Store(f"sqlite:///{tmp_path}/gw.db")
    with processes() as procs:
        start(procs, groundwatch_cmd(config, "worker"), tmp_path / "w.log")

        def settled() -> bool:
            failed = {f.request_id for f in store.failures(limit=1000)}
            return len(scores_per_item(store)) == 4 and {"r0002", "r0003", "r0006",
                                                          "r0007"} <= failed
        wait_until(settled, timeout=90, what=f"batches settled: {log_tail(tmp_path / 'w.log')}")

    per_item = scores_per_item(store)
    assert set(per_item) == {"r0000", "r0001", "r0004", "r0005"}
    errors = {s.metric: s.reason for s in store.scores_for("r0004")}
    assert set(errors) == {"faithfulness", "groundedness", "answer_relevance",
                           "context_relevance"}
    assert all(s.outcome == "error" and s.value is None for s in store.scores_for("r0004"))
    failures = {f.request_id: f for f in store.failures(limit=1000)}
    assert failures["r0002"].kind == "internal" and "scripted crash" in failures["r0002"].reason
    assert failures["r0006"].kind == "unavailable" and failures["r0006"].attempts == 5
    parsed = parse_metrics(snapshot(tmp_path / "prom"))
    assert total(parsed, "groundwatch_task_retries_total", kind="unavailable") == 2 + 4
    assert total(parsed, "groundwatch_task_failures_total", kind="internal") == 2
    assert total(parsed, "groundwatch_task_failures_total", kind="unavailable") == 2
    assert total(parsed, "groundwatch_score_outcomes_total", outcome="error") == 4
    store.close()
