"""Scale-out with real processes: replicas of the sampler are hot standbys that never enqueue
an item twice, and workers started separately share one queue.

These tests do not flush Redis: each uses its own queue (``write_config`` names one) and
deletes it afterwards, so they may share a DB with other runs.
"""

from __future__ import annotations

import base64
import json
import re
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from evaluator import demo_traffic
from evaluator.config import load_config
from evaluator.records import LogRecord
from evaluator.sampling import sample_hash
from evaluator.store import Store
from evaluator.store.models import cursors
from tests.gw_helpers import (
    REDIS_HOST,
    REDIS_PORT,
    TEST_REDIS_DB,
    groundwatch_cmd,
    log_tail,
    processes,
    start,
    write_config,
)
from tests.prom_helpers import wait_until
from workers.app import make_celery
from workers.sampler import celery_enqueue

pytestmark = pytest.mark.integration

LOCK_TTL_S = 5
READ_BATCH_ROWS = 200  # write_config's source.read_batch_rows: the most one slice re-sends


def _redis() -> redis.Redis:
    return redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=TEST_REDIS_DB)


@pytest.fixture
def queue_cleanup() -> Iterator[list[str]]:
    """Queue names to delete from Redis after the test, whatever happened."""
    names: list[str] = []
    yield names
    r = _redis()
    for name in names:
        r.delete(name)


def queued_request_ids(queue: str) -> list[str]:
    """The request ids of every message waiting in ``queue``, one entry per enqueue.

    kombu's Redis transport keeps a queue as a list of JSON envelopes whose body is the
    base64 of Celery's ``[args, kwargs, embed]``; our task's one argument is the batch."""
    r = _redis()
    ids: list[str] = []
    for raw in r.lrange(queue, 0, -1):
        envelope = json.loads(raw)
        args = json.loads(base64.b64decode(envelope["body"]))[0]
        ids += [m["request_id"] for m in args[0]]
    return ids


def expected_sampled(rows: list[dict[str, Any]], rate: float) -> set[str]:
    """The ids write_config's policy samples: thumbs_down and errors always, else the hash."""
    return {str(row["req_uuid"]) for row in rows
            if row["thumbs"] == -1 or row["outcome"] == "error"
            or sample_hash("e2e", str(row["req_uuid"])) < rate}


def lock_owner(store_url: str) -> str | None:
    engine = sa.create_engine(store_url)
    try:
        with engine.connect() as conn:
            return conn.scalar(sa.select(cursors.c.lock_owner)
                               .where(cursors.c.source == "app"))
    finally:
        engine.dispose()


def owner_pid(owner: str | None) -> int | None:
    """The pid in a sampler's owner string (``host:pid:random``)."""
    return None if owner is None else int(owner.split(":")[-2])


class Feeder(threading.Thread):
    """Appends ``rows`` to the log table in chunks, timestamped when written, until done or
    stopped; ``written`` says how many are in."""

    def __init__(self, url: str, rows: list[dict[str, Any]], chunk: int = 20,
                 every_s: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.url, self.rows, self.chunk, self.every_s = url, rows, chunk, every_s
        self.stop = threading.Event()
        self.written = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        engine = sa.create_engine(self.url)
        table = sa.Table(demo_traffic.TABLE, sa.MetaData(), autoload_with=engine)
        try:
            while self.written < len(self.rows) and not self.stop.is_set():
                now = datetime.now(UTC)
                part = [{**row, "created_at": now}
                        for row in self.rows[self.written:self.written + self.chunk]]
                with engine.begin() as conn:
                    conn.execute(table.insert(), part)
                self.written += len(part)
                self.stop.wait(self.every_s)
        except BaseException as exc:  # surfaced by the test
            self.error = exc
        finally:
            engine.dispose()


def test_two_samplers_enqueue_each_item_once_and_a_standby_takes_over(
        tmp_path: Path, queue_cleanup: list[str]) -> None:
    rate = 0.5
    config = write_config(tmp_path, rate=rate)
    with config.open("a") as f:
        f.write(f"[sampler]\nlock_ttl_s = {LOCK_TTL_S}\n")
    queue = load_config(config, environ={}).broker.queue
    queue_cleanup.append(queue)
    store_url = f"sqlite:///{tmp_path}/gw.db"
    logs_url = f"sqlite:///{tmp_path}/logs.db"
    demo_traffic.create_log_table(logs_url)
    rows = demo_traffic.make_rows(1200, seed=21)
    expected = expected_sampled(rows, rate)
    Store(store_url).close()  # migrated once, before two processes race to do it

    feeder = Feeder(logs_url, rows)
    try:
        with processes() as procs:
            a = start(procs, groundwatch_cmd(config, "sampler"), tmp_path / "a.log")
            wait_until(lambda: owner_pid(lock_owner(store_url)) == a.pid, timeout=60,
                       what="sampler A holding the cursor lock")
            b = start(procs, groundwatch_cmd(config, "sampler"), tmp_path / "b.log")
            wait_until(lambda: b"locked by another sampler" in (tmp_path / "b.log").read_bytes(),
                       timeout=60, what="sampler B waiting as a standby")
            by_pid = {a.pid: (a, tmp_path / "a.log"), b.pid: (b, tmp_path / "b.log")}

            # Both run while rows arrive; kill the lock holder mid-feed, with no warning.
            feeder.start()
            wait_until(lambda: feeder.written >= len(rows) // 2
                       and len(queued_request_ids(queue)) > 0, timeout=60,
                       what="half the rows written and some items enqueued")
            holder_pid = owner_pid(lock_owner(store_url))
            assert holder_pid in by_pid, lock_owner(store_url)
            holder, holder_log = by_pid.pop(holder_pid)
            holder.send_signal(signal.SIGKILL)
            holder.wait(timeout=10)
            # Only the lock holder enqueues and it is dead: the queue now holds exactly what
            # was enqueued while both samplers ran.
            before_kill = queued_request_ids(queue)
            assert before_kill and len(before_kill) == len(set(before_kill)), (
                Counter(before_kill).most_common(3), log_tail(holder_log))

            (survivor, survivor_log), = by_pid.values()
            wait_until(lambda: owner_pid(lock_owner(store_url)) == survivor.pid, timeout=60,
                       what="the standby taking the lock over after its TTL")
            feeder.join(timeout=60)
            assert feeder.error is None and feeder.written == len(rows), feeder.error

            def all_enqueued() -> bool:
                assert survivor.poll() is None, log_tail(survivor_log)
                return set(queued_request_ids(queue)) >= expected
            wait_until(all_enqueued, timeout=90, what="every sampled row enqueued")
            enqueued = queued_request_ids(queue)
    finally:
        feeder.stop.set()
        feeder.join(timeout=30)

    # Nothing is lost and nothing unsampled is sent.
    assert set(enqueued) == expected
    # The kill may land between an enqueue and the cursor update; then the survivor re-sends
    # that one slice (by design: a crash may re-send, never skip), and nothing else.
    again = Counter(enqueued) - Counter(set(enqueued))
    assert set(again) <= set(before_kill)
    assert max(again.values(), default=1) == 1
    assert len(again) <= READ_BATCH_ROWS
    store = Store(store_url)
    try:
        assert store.queries.count_items_by_status()["queued"] == len(expected)
    finally:
        store.close()


def message(i: int) -> dict[str, Any]:
    # The first item of each batch asks the fault scorer for a 50 ms pause, so that a batch
    # lasts long enough for the other worker to fetch the next one.
    return LogRecord(
        request_id=f"s{i:05d}", timestamp=datetime.now(UTC), route="docs",
        question="How long are deleted buckets kept?",
        contexts=("Deleted buckets are kept for 30 days.",),
        answer="Deleted buckets are kept for 30 days.",
        metadata={"gw_fault": "slow:50"} if i % 25 == 0 else {},
    ).to_message()


SUCCEEDED = re.compile(rb"Task groundwatch\.score_batch\[([0-9a-f-]+)\] succeeded")


def test_two_separately_started_workers_share_the_queue(
        tmp_path: Path, queue_cleanup: list[str]) -> None:
    n_batches, size = 40, 25
    config = write_config(tmp_path, scorer="evaluator.scorers.testing:FaultScorer",
                          pool="solo", concurrency=1)
    cfg = load_config(config, environ={})
    queue_cleanup.append(cfg.broker.queue)
    store = Store(f"sqlite:///{tmp_path}/gw.db")
    logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
    try:
        with processes() as procs:
            workers = [start(procs, groundwatch_cmd(config, "worker", "--name", f"w{i}@%h"),
                             logs[i - 1]) for i in (1, 2)]
            wait_until(lambda: all(p.exists() and b" ready." in p.read_bytes() for p in logs),
                       timeout=90, what="both workers ready")
            send = celery_enqueue(make_celery(cfg), cfg.broker.queue)
            for b in range(n_batches):
                send([message(b * size + i) for i in range(size)])

            def all_scored() -> bool:
                for w, path in zip(workers, logs, strict=True):
                    assert w.poll() is None, log_tail(path)
                return store.queries.count_items_by_status()["scored"] == n_batches * size
            wait_until(all_scored, timeout=120, what="every item scored")
            # A task's log line comes after its results are stored: wait for the last ones.
            wait_until(lambda: sum(len(SUCCEEDED.findall(p.read_bytes())) for p in logs)
                       >= n_batches, timeout=30, what="every task logged as succeeded")
    finally:
        store.close()

    store = Store(f"sqlite:///{tmp_path}/gw.db")
    try:
        per_item = Counter((s.request_id, s.metric) for s in store.queries.scores())
        assert len({rid for rid, _ in per_item}) == n_batches * size
        assert set(per_item.values()) == {1}
        assert store.queries.count_items_by_status().get("failed", 0) == 0
    finally:
        store.close()
    tasks = [SUCCEEDED.findall(p.read_bytes()) for p in logs]
    # Both workers took part, and each batch ran once, on one of them.
    assert all(tasks), [len(t) for t in tasks]
    everything = tasks[0] + tasks[1]
    assert len(everything) == len(set(everything)) == n_batches
