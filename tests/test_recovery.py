"""BrokerLossGuard on the real Redis: it re-sends the store's queued items exactly when the
broker's marker is missing (the whole outage, with processes, is in test_faults.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import redis

from evaluator.records import LogRecord
from evaluator.store import Store
from tests.gw_helpers import REDIS_HOST, REDIS_PORT, TEST_REDIS_DB
from workers.recovery import BrokerLossGuard

pytestmark = pytest.mark.integration


def record(i: int) -> LogRecord:
    return LogRecord(request_id=f"q{i:04d}", timestamp=datetime.now(UTC), question="q?",
                     contexts=("c",), answer="a")


def test_guard_resends_queued_items_only_when_the_marker_is_gone(sqlite_url: str) -> None:
    store = Store(sqlite_url)
    store.ledger.add_items([(record(i), "default") for i in range(7)], source="app")
    sent: list[list[dict[str, Any]]] = []
    queue = f"gw-test-{uuid.uuid4().hex[:8]}"
    clock = iter(range(0, 1000, 10))  # every check is past the previous one's interval
    guard = BrokerLossGuard(f"redis://{REDIS_HOST}:{REDIS_PORT}/{TEST_REDIS_DB}", queue, store.ledger,
                            sent.append, batch_size=3, clock=lambda: float(next(clock)))
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=TEST_REDIS_DB)
    try:
        assert guard.check() == 7  # no marker yet: a new (or emptied) broker
        assert [len(batch) for batch in sent] == [3, 3, 1]
        assert {m["request_id"] for batch in sent for m in batch} == {
            f"q{i:04d}" for i in range(7)}
        assert guard.check() == 0  # the marker is there: nothing was lost
        client.delete(guard.key)  # what a restart without persistence does
        assert guard.check() == 7
    finally:
        client.delete(guard.key)
        store.close()


def test_guard_on_an_unreachable_broker_sends_nothing_and_says_so_once(
        sqlite_url: str, caplog: pytest.LogCaptureFixture) -> None:
    store = Store(sqlite_url)
    store.ledger.add_items([(record(1), "default")], source="app")
    sent: list[list[dict[str, Any]]] = []
    clock = iter(range(0, 1000, 10))
    guard = BrokerLossGuard("redis://127.0.0.1:1/0", "q", store.ledger, sent.append, batch_size=3,
                            timeout_s=0.5, clock=lambda: float(next(clock)))
    try:
        assert guard.check() == 0 and guard.check() == 0
        assert sent == []
        assert sum("could not check the broker" in r.message for r in caplog.records) == 1
    finally:
        store.close()
