"""The store's ledger (the sampler's part): items, source reads, rejections, cursors, locks."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from evaluator.errors import InvalidRecordError, LockHeldError
from evaluator.store import Store
from tests.store_helpers import FakeClock, record

# The fixtures db_url, clock and store.
pytest_plugins = ["tests.store_fixtures"]


def test_add_items_inserts_new_ones_only(store: Store, clock: FakeClock) -> None:
    rec = record("a", metadata={"user_tier": "free"})
    assert store.ledger.add_items([(rec, "thumbs_down"), (record("b"), "default"),
                            (record("b"), "default")], source="app") == 2
    assert store.ledger.add_items([(rec, "other"), (record("c"), "default")], source="app") == 1
    assert store.ledger.add_items([], source="app") == 0

    item = store.queries.item("a")
    assert item is not None
    assert (item.source, item.rule, item.status, item.route) == ("app", "thumbs_down", "queued",
                                                                 "chat")
    assert item.sampled_at == clock.now
    assert item.record() == rec
    assert store.queries.item("nope") is None
    assert store.queries.count_items_by_status() == {"queued": 3, "scored": 0, "failed": 0}


def test_read_ids_move_with_the_cursor_and_are_forgotten_behind_the_window(
        store: Store, clock: FakeClock) -> None:
    t0 = datetime(2026, 11, 1, 12, tzinfo=UTC)
    assert store.ledger.acquire_lock("app", "a", 60)
    store.ledger.set_cursor("app", {"pos": 1}, owner="a",
                     read_ids=[("r1", t0), ("r2", t0 + timedelta(seconds=30))])
    assert store.ledger.read_ids("app", ["r1", "r2", "r3"]) == {"r1": {t0: 1},
                                                         "r2": {t0 + timedelta(seconds=30): 1}}
    assert store.ledger.read_ids("other", ["r1"]) == {}
    store.ledger.set_cursor("app", {"pos": 2}, owner="a", read_ids=[("r3", t0 + timedelta(seconds=90))],
                     forget_read_before=t0 + timedelta(seconds=10))
    assert set(store.ledger.read_ids("app", ["r1", "r2", "r3"])) == {"r2", "r3"}
    # A refused cursor move remembers nothing.
    with pytest.raises(LockHeldError):
        store.ledger.set_cursor("app", {"pos": 3}, owner="b", read_ids=[("r4", t0)])
    assert store.ledger.read_ids("app", ["r4"]) == {}
    # An operator's reset is refused while a sampler holds the lock, then forgets the reads.
    with pytest.raises(LockHeldError):
        store.ledger.reset_cursor("app", None)
    store.ledger.release_lock("app", "a")
    assert store.ledger.reset_cursor("app", None) == {"pos": 2}
    assert store.ledger.get_cursor("app") is None and store.ledger.read_ids("app", ["r2", "r3"]) == {}


def test_stored_item_origins_tell_a_resend_from_another_row(store: Store) -> None:
    rec = record("a")
    store.ledger.add_items([(rec, "default")], source="app")
    assert store.ledger.stored_item_origins(["a", "zz"]) == {"a": ("app", rec.timestamp, False)}
    assert store.ledger.acquire_lock("app", "s", 60)
    store.ledger.set_cursor("app", {"pos": 1}, owner="s", committed=["a"])
    assert store.ledger.stored_item_origins(["a"]) == {"a": ("app", rec.timestamp, True)}


def test_record_rejections(store: Store, clock: FakeClock) -> None:
    errs = [InvalidRecordError("missing_field", field="answer", row_ref="r1", detail="no value"),
            InvalidRecordError("bad_timestamp", field="timestamp", row_ref="logs.jsonl:7",
                               detail="'yesterday' is not ISO-8601")]
    store.ledger.record_rejections("app", errs)
    store.ledger.record_rejections("app", [])
    rows = store.queries.rejections()
    assert [(r.row_ref, r.field, r.reason) for r in rows] == \
        [("logs.jsonl:7", "timestamp", "bad_timestamp"), ("r1", "answer", "missing_field")]
    assert rows[0].created_at == clock.now and rows[0].source == "app"
    assert len(store.queries.rejections(limit=1)) == 1


def test_lock_is_exclusive_until_it_expires(store: Store, clock: FakeClock) -> None:
    assert store.ledger.acquire_lock("app", "replica-a", ttl_s=10)
    assert not store.ledger.acquire_lock("app", "replica-b", ttl_s=10)
    clock.advance(8)
    assert store.ledger.acquire_lock("app", "replica-a", ttl_s=10)  # renewed until t+18
    clock.advance(8)
    assert not store.ledger.acquire_lock("app", "replica-b", ttl_s=10)
    clock.advance(2.001)
    assert store.ledger.acquire_lock("app", "replica-b", ttl_s=10)  # a's lock expired
    assert not store.ledger.acquire_lock("app", "replica-a", ttl_s=10)

    assert not store.ledger.release_lock("app", "replica-a")
    assert store.ledger.release_lock("app", "replica-b")
    assert store.ledger.acquire_lock("app", "replica-a", ttl_s=10)
    assert store.ledger.acquire_lock("other-source", "replica-b", ttl_s=10)
    with pytest.raises(ValueError):
        store.ledger.acquire_lock("app", "replica-a", ttl_s=0)


def test_only_the_lock_holder_moves_the_cursor(store: Store, clock: FakeClock) -> None:
    assert store.ledger.get_cursor("app") is None
    with pytest.raises(LockHeldError):
        store.ledger.set_cursor("app", {"offset": 1}, owner="replica-a")  # no row, no lock

    assert store.ledger.acquire_lock("app", "replica-a", ttl_s=10)
    store.ledger.set_cursor("app", {"ts": "2025-03-01T11:00:00+00:00", "id": "r9"}, owner="replica-a")
    assert store.ledger.get_cursor("app") == {"ts": "2025-03-01T11:00:00+00:00", "id": "r9"}

    with pytest.raises(LockHeldError) as raised:
        store.ledger.set_cursor("app", {"id": "evil"}, owner="replica-b")
    assert raised.value.owner == "replica-a"

    clock.advance(11)  # a paused past its TTL: it must not write any more
    with pytest.raises(LockHeldError):
        store.ledger.set_cursor("app", {"id": "stale"}, owner="replica-a")
    assert store.ledger.acquire_lock("app", "replica-b", ttl_s=10)
    store.ledger.set_cursor("app", {"id": "r10"}, owner="replica-b")
    assert store.ledger.get_cursor("app") == {"id": "r10"}


def _contend_for_lock(url: str, owner: str, barrier: Any, results: Any) -> None:
    """Child process: open the store (migrating, all at once), then race for the lock."""
    try:
        barrier.wait(timeout=60)
        with Store(url) as store:
            barrier.wait(timeout=60)
            results.put((owner, store.ledger.acquire_lock("app", owner, ttl_s=60)))
    except BaseException as exc:
        results.put((owner, repr(exc)))
        raise


def test_lock_contention_between_processes_has_one_winner(sqlite_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    n = 4
    barrier = ctx.Barrier(n)
    results = ctx.Queue()
    procs = [ctx.Process(target=_contend_for_lock, args=(sqlite_url, f"p{i}", barrier, results))
             for i in range(n)]
    for p in procs:
        p.start()
    try:
        outcomes = dict(results.get(timeout=120) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=60)
    assert sorted(map(str, outcomes.values())) == ["False"] * (n - 1) + ["True"], outcomes
    assert all(p.exitcode == 0 for p in procs)
    winner = next(owner for owner, won in outcomes.items() if won is True)
    with Store(sqlite_url, migrate=False) as store:
        assert store.ledger.acquire_lock("app", winner, ttl_s=60)
        assert not store.ledger.acquire_lock("app", "outsider", ttl_s=60)
