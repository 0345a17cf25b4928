"""The queue with real parts: Redis, Celery worker processes, the store, the metric files.

Faults are injected with the public test double ``evaluator.scorers.testing:FaultScorer``,
driven by each record's metadata, so the worker code path is the production one.
"""

from __future__ import annotations

import base64
import json
import re
import signal
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from evaluator.config import load_config
from evaluator.records import LogRecord
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
    return Counter(s.request_id for s in store.queries.scores())


def _redis() -> redis.Redis:
    return redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=TEST_REDIS_DB)


def _unacked() -> list[tuple[float, list[str]]]:
    """kombu's Redis transport keeps each delivered, unacknowledged message in the ``unacked``
    hash and its delivery time in the ``unacked_index`` sorted set: (delivered at, the
    request ids of its batch) per message."""
    r = _redis()
    out = []
    for tag, delivered_at in r.zrange("unacked_index", 0, -1, withscores=True):
        raw = r.hget("unacked", tag)
        if raw is None:
            continue
        message = json.loads(raw)[0]
        args = json.loads(base64.b64decode(message["body"]))[0]
        out.append((delivered_at, [m["request_id"] for m in args[0]]))
    return out


def test_killed_worker_batch_is_redone_exactly_once_in_effect(tmp_path: Path,
                                                               redis_db: None) -> None:
    # Solo pool, one batch at a time, each batch slowed by one item; batch 2 is slower (3 s),
    # so the kill, sent once batches 0 and 1 are stored and batch 2 is delivered, lands in it.
    visibility = 10
    config = write_config(tmp_path, scorer=FAULTS, pool="solo", concurrency=1,
                          visibility=visibility)
    slow = {0: "slow:300", 2: "slow:3000"}
    batches = [[record(b * 10 + i, slow.get(b, "slow:300") if i == 0 else None)
                for i in range(10)] for b in range(12)]
    n_items = 120
    enqueue_batches(config, batches)
    store = Store(f"sqlite:///{tmp_path}/gw.db")
    with processes() as procs:
        first = start(procs, groundwatch_cmd(config, "worker", "--name", "first@%h"),
                      tmp_path / "w1.log")
        third = [r["request_id"] for r in batches[2]]
        # Wait for batch 2 itself to be held, not for any unacked batch: batch 1 stays in
        # ``unacked`` from its store until its late ack, and a kill sent just after that ack
        # and before batch 2's delivery found nothing held (CI, stop 25).
        wait_until(lambda: store.queries.count_items_by_status()["scored"] >= 20
                   and [ids for _, ids in _unacked()] == [third],
                   timeout=60, what="two batches scored and the third delivered")
        first.send_signal(signal.SIGKILL)  # no warm shutdown: its reserved batch is unacked
        killed_at = time.time()
        first.wait(timeout=10)
        in_flight = _unacked()
        assert len(in_flight) == 1, in_flight  # prefetch 1 + acks_late: one batch held
        delivered_at, lost_ids = in_flight[0]
        assert lost_ids == third
        scored_at_kill = store.queries.count_items_by_status()["scored"]
        assert scored_at_kill < n_items
        start(procs, groundwatch_cmd(config, "worker", "--name", "second@%h"),
              tmp_path / "w2.log")
        # The unacked batch comes back after the visibility timeout plus at most one sweep of
        # kombu's unacked-restore (every visibility/10 s, see workers.app.broker_options).
        wait_until(lambda: len(scores_per_item(store)) == n_items, timeout=90,
                   what=f"all items scored (log: {log_tail(tmp_path / 'w2.log', 5)})")
    redone_at = min(s.scored_at.timestamp() for s in store.queries.scores()
                    if s.request_id in set(lost_ids))
    print(f"\nredelivery: batch delivered -> redone {redone_at - delivered_at:.1f}s, "
          f"worker killed -> redone {redone_at - killed_at:.1f}s "
          f"(visibility_timeout {visibility}s, the batch itself takes ~3s)")
    # Never before the timeout (it was delivered before the kill), and within it plus a
    # generous allowance for the second worker's start, a sweep and the 3 s batch.
    assert redone_at - delivered_at >= visibility
    assert redone_at - killed_at <= visibility + 30
    per_item = scores_per_item(store)
    assert set(per_item.values()) == {METRICS}, "each item has exactly one score per metric"
    # The metric files of the killed process are kept: totals are sums over both processes,
    # and the re-delivered batch counted once.
    parsed = parse_metrics(snapshot(tmp_path / "prom"))
    assert total(parsed, "groundwatch_score_outcomes_total") == METRICS * n_items
    assert total(parsed, "groundwatch_eval_lag_seconds_count") == n_items
    store.close()


def _lines(path: Path) -> list[str]:
    return path.read_text(errors="replace").splitlines() if path.exists() else []


def _first(lines: list[str], pattern: str) -> int | None:
    return next((i for i, line in enumerate(lines) if re.search(pattern, line)), None)


def test_worker_is_ready_only_once_its_model_is_loaded(tmp_path: Path, redis_db: None) -> None:
    # The embedded scorer loads its model lazily; the worker must load (and warm) it before it
    # says ready. Prefork: the model loads in the child, and the main process holds its
    # consumer (and the "ready." line and worker_ready signal) until the child is warm.
    config = write_config(tmp_path, scorer="embedded", pool="prefork", concurrency=1,
                          visibility=60)
    log = tmp_path / "w.log"
    enqueue_batches(config, [[record(i) for i in range(3)]])
    store = Store(f"sqlite:///{tmp_path}/gw.db")
    with processes() as procs:
        start(procs, groundwatch_cmd(config, "worker"), log)
        wait_until(lambda: len(scores_per_item(store)) == 3, timeout=240,
                   what=f"the batch scored: {log_tail(log)}")
    lines = _lines(log)
    warm, ready = _first(lines, r"scorer embedded warm in"), _first(lines, r" ready\.")
    received = _first(lines, r"Task groundwatch\.score_batch\[.*\] received")
    assert warm is not None and ready is not None and received is not None, log_tail(log)
    assert warm < ready <= received, "\n".join(lines[warm - 2:received + 2])
    store.close()


def test_a_worker_still_warming_takes_nothing_a_second_worker_redoes(tmp_path: Path,
                                                                     redis_db: None) -> None:
    # The field report: a worker said "ready" before loading its model, its first batch took
    # longer than the visibility timeout, Redis handed the batch to a second worker, and both
    # scored it. Here the first worker's "model" takes longer than the visibility timeout to
    # load; a second worker starts meanwhile. Every batch must be delivered exactly once.
    visibility = 10
    config = write_config(tmp_path, scorer=FAULTS, pool="solo", concurrency=1,
                          visibility=visibility)
    batches = [[record(b * 5 + i) for i in range(5)] for b in range(6)]
    enqueue_batches(config, batches)
    queue = load_config(config, environ={}).broker.queue
    store = Store(f"sqlite:///{tmp_path}/gw.db")
    slow_log, fast_log = tmp_path / "slow.log", tmp_path / "fast.log"
    with processes() as procs:
        start(procs, groundwatch_cmd(config, "worker", "--name", "slow@%h"), slow_log,
              env={"GROUNDWATCH_FAULT_WARM_UP_S": str(visibility + 4)})
        wait_until(lambda: _first(_lines(slow_log), "fault scorer warming up") is not None,
                   timeout=60, what=f"the first worker warming up: {log_tail(slow_log)}")
        start(procs, groundwatch_cmd(config, "worker", "--name", "fast@%h"), fast_log,
              env={"GROUNDWATCH_FAULT_WARM_UP_S": "0"})

        def settled() -> bool:
            r = _redis()
            return (len(scores_per_item(store)) == 30
                    and _first(_lines(slow_log), r" ready\.") is not None
                    and r.llen(queue) == 0 and r.hlen("unacked") == 0)
        wait_until(settled, timeout=120,
                   what=f"all batches done: {log_tail(slow_log, 5)} {log_tail(fast_log, 5)}")
    received = Counter(m.group(1) for path in (slow_log, fast_log) for line in _lines(path)
                       if (m := re.search(r"score_batch\[([0-9a-f-]+)\] received", line)))
    assert len(received) == len(batches)
    assert set(received.values()) == {1}, f"a batch was delivered twice: {received}"
    slow_lines = _lines(slow_log)
    warm, ready = _first(slow_lines, "scorer fault warm in"), _first(slow_lines, r" ready\.")
    assert warm is not None and ready is not None and warm < ready
    per_item = scores_per_item(store)
    assert set(per_item.values()) == {METRICS}
    parsed = parse_metrics(snapshot(tmp_path / "prom"))
    assert total(parsed, "groundwatch_score_outcomes_total") == METRICS * 30
    assert total(parsed, "groundwatch_slow_batches_total") == 0
    store.close()


def test_a_batch_past_half_the_visibility_timeout_is_logged_and_counted(
        tmp_path: Path, redis_db: None) -> None:
    visibility = 10
    config = write_config(tmp_path, scorer=FAULTS, pool="solo", concurrency=1,
                          visibility=visibility)
    enqueue_batches(config, [[record(0, "slow:6000"), record(1)], [record(2)]])
    store = Store(f"sqlite:///{tmp_path}/gw.db")
    log = tmp_path / "w.log"
    with processes() as procs:
        start(procs, groundwatch_cmd(config, "worker"), log)
        wait_until(lambda: len(scores_per_item(store)) == 3, timeout=90,
                   what=f"both batches scored: {log_tail(log)}")
    warnings = [line for line in _lines(log) if "broker.visibility_timeout_s" in line]
    assert len(warnings) == 1 and "batch of 2 took" in warnings[0], warnings
    parsed = parse_metrics(snapshot(tmp_path / "prom"))
    assert total(parsed, "groundwatch_slow_batches_total", scorer="fault") == 1
    longest = total(parsed, "groundwatch_batch_seconds_max", scorer="fault")
    assert visibility / 2 < longest < visibility * 10
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
            failed = {f.request_id for f in store.queries.failures(limit=1000)}
            return len(scores_per_item(store)) == 4 and {"r0002", "r0003", "r0006",
                                                          "r0007"} <= failed
        wait_until(settled, timeout=90, what=f"batches settled: {log_tail(tmp_path / 'w.log')}")

    per_item = scores_per_item(store)
    assert set(per_item) == {"r0000", "r0001", "r0004", "r0005"}
    errors = {s.metric: s.reason for s in store.queries.scores_for("r0004")}
    assert set(errors) == {"faithfulness", "groundedness", "answer_relevance",
                           "context_relevance"}
    assert all(s.outcome == "error" and s.value is None for s in store.queries.scores_for("r0004"))
    failures = {f.request_id: f for f in store.queries.failures(limit=1000)}
    assert failures["r0002"].kind == "internal" and "scripted crash" in failures["r0002"].reason
    assert failures["r0006"].kind == "unavailable" and failures["r0006"].attempts == 5
    parsed = parse_metrics(snapshot(tmp_path / "prom"))
    assert total(parsed, "groundwatch_task_retries_total", kind="unavailable") == 2 + 4
    assert total(parsed, "groundwatch_task_failures_total", kind="internal") == 2
    assert total(parsed, "groundwatch_task_failures_total", kind="unavailable") == 2
    assert total(parsed, "groundwatch_score_outcomes_total", outcome="error") == 4
    store.close()
