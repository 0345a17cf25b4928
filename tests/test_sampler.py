"""The sampler loop against a real SQL source and store, with an in-memory queue.

Metrics are real (in-process mode); the queue is a list, because what is tested here is the
order of enqueue and cursor, not Celery (tests/test_pipeline.py runs real workers).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from evaluator import demo_traffic
from evaluator.config import load_config
from evaluator.sampling import sample_hash
from evaluator.store import Store
from metrics.registry import Metrics
from workers.sampler import build_sampler

CONFIG = """
[store]
url = "sqlite:///{tmp}/gw.db"
[source]
name = "app"
read_batch_rows = {read_rows}
[source.sql]
url = "sqlite:///{tmp}/logs.db"
table = "chat_logs"
[source.columns]
{columns}
[sampling]
salt = "s"
default_rate = {rate}
[[sampling.rules]]
name = "thumbs_down"
match = {{ feedback = -1 }}
rate = 1.0
[broker]
batch_size = 7
"""


def write_config(tmp: Path, *, rate: float = 0.5, read_rows: int = 50) -> Path:
    columns = "\n".join(f'{k} = "{v}"' for k, v in demo_traffic.COLUMNS.items())
    path = tmp / "gw.toml"
    path.write_text(CONFIG.format(tmp=tmp, columns=columns, rate=rate, read_rows=read_rows))
    return path


class Queue:
    def __init__(self) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.fail = False

    def __call__(self, messages: list[dict[str, Any]]) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.batches.append(messages)

    def ids(self) -> list[str]:
        return [m["request_id"] for b in self.batches for m in b]


@pytest.fixture
def setup(tmp_path: Path) -> Any:
    rows = demo_traffic.make_rows(120, seed=3)
    rows[5]["retrieved_docs"] = "{not json"
    rows[9]["user_question"] = None
    demo_traffic.create_log_table(f"sqlite:///{tmp_path}/logs.db")
    demo_traffic.write_rows(f"sqlite:///{tmp_path}/logs.db", rows)
    config = load_config(write_config(tmp_path), environ={})
    store = Store.from_config(config.store)
    yield tmp_path, rows, config, store
    store.close()


def expected_ids(rows: list[dict[str, Any]], rate: float) -> list[str]:
    good = [r for i, r in enumerate(rows) if i not in (5, 9)]
    return [r["req_uuid"] for r in good
            if r["thumbs"] == -1 or sample_hash("s", str(r["req_uuid"])) < rate]


def test_samples_exactly_the_deterministic_set_and_stores_rejections(setup: Any) -> None:
    _, rows, config, store = setup
    queue = Queue()
    sampler = build_sampler(config, store.ledger, Metrics(config.metrics, multiprocess=False), queue)
    steps = []
    while not (step := sampler.step()).idle:
        steps.append(step)
    assert queue.ids() == expected_ids(rows, 0.5)
    assert all(len(b) <= 7 for b in queue.batches)
    assert sum(s.rows for s in steps) == 120
    rejected = {(r.row_ref, r.field, r.reason) for r in store.queries.rejections()}
    assert rejected == {("req-3-000005", "contexts", "bad_contexts"),
                        ("req-3-000009", "question", "missing_field")}
    assert store.queries.count_items_by_status()["queued"] == len(queue.ids())
    m = sampler.metrics
    assert m.registry.get_sample_value("groundwatch_logs_seen_total", {"source": "app"}) == 120
    assert m.registry.get_sample_value("groundwatch_items_rejected_total",
                                       {"reason": "bad_contexts"}) == 1


def test_cursor_moves_only_after_enqueue(setup: Any) -> None:
    _, rows, config, store = setup
    queue = Queue()
    sampler = build_sampler(config, store.ledger, Metrics(config.metrics, multiprocess=False), queue)
    queue.fail = True
    with pytest.raises(ConnectionError):
        sampler.step()
    assert store.ledger.get_cursor("app") is None
    assert store.queries.rejections() == []  # counted and stored once the slice is safely queued
    queue.fail = False
    while not sampler.step().idle:
        pass
    assert queue.ids() == expected_ids(rows, 0.5)  # nothing skipped, nothing twice
    assert len(store.queries.rejections()) == 2


def test_second_replica_waits_for_the_lock(setup: Any) -> None:
    _, rows, config, store = setup
    first_q, second_q = Queue(), Queue()
    first = build_sampler(config, store.ledger, Metrics(config.metrics, multiprocess=False), first_q,
                          owner="a")
    second = build_sampler(config, store.ledger, Metrics(config.metrics, multiprocess=False), second_q,
                           owner="b")
    assert first.step().locked
    waiting = second.step()
    assert not waiting.locked and second_q.batches == []
    store.ledger.release_lock("app", "a")
    while not (step := second.step()).idle:
        assert step.locked
    assert first_q.ids() + second_q.ids() == expected_ids(rows, 0.5)


def test_sampling_config_reloads_without_restart(setup: Any) -> None:
    _, rows, config, store = setup
    queue = Queue()
    sampler = build_sampler(config, store.ledger, Metrics(config.metrics, multiprocess=False), queue)
    path = Path(config.path or "")
    path.write_text(path.read_text().replace("default_rate = 0.5", "default_rate = 1.0"))
    os.utime(path, (path.stat().st_atime, path.stat().st_mtime + 5))
    assert sampler.maybe_reload()
    while not sampler.step().idle:
        pass
    assert queue.ids() == expected_ids(rows, 1.0)
    # A broken edit is refused and counted; the running policy stays.
    path.write_text(path.read_text().replace("default_rate = 1.0", "default_rate = 7"))
    os.utime(path, (path.stat().st_atime, path.stat().st_mtime + 10))
    assert not sampler.maybe_reload()
    assert sampler.policy.config.default_rate == 1.0
    reg = sampler.metrics.registry
    assert reg.get_sample_value("groundwatch_config_reloads_total", {"result": "ok"}) == 1
    assert reg.get_sample_value("groundwatch_config_reloads_total", {"result": "error"}) == 1
    assert json.dumps(store.ledger.get_cursor("app"))  # the cursor is JSON


def test_route_minimums_reach_the_queue_and_the_metrics(tmp_path: Path) -> None:
    rows = demo_traffic.make_rows(120, seed=3)
    demo_traffic.create_log_table(f"sqlite:///{tmp_path}/logs.db")
    demo_traffic.write_rows(f"sqlite:///{tmp_path}/logs.db", rows)
    path = write_config(tmp_path, rate=0.0)
    path.write_text(path.read_text().replace(
        'default_rate = 0.0', 'default_rate = 0.0\nmin_items_per_route_per_hour = 4\n'
        'route_minimums = { billing = 2 }'))
    config = load_config(path, environ={})
    store = Store.from_config(config.store)
    queue = Queue()
    sampler = build_sampler(config, store.ledger, Metrics(config.metrics, multiprocess=False), queue)
    while not sampler.step().idle:
        pass
    store.close()
    by_id = {str(r["req_uuid"]): r for r in rows}
    topped = [i for i in queue.ids() if by_id[i]["thumbs"] != -1]
    routes = [by_id[i]["endpoint"] for i in topped]
    # In log order, every sampled item of a route takes one of its minimum's tokens while any
    # is left; thumbs-down items are sampled by their rule anyway, the others only by a token.
    tokens = {"billing": 2, "docs_qa": 4, "support_chat": 4}
    expected = []
    for r in rows:
        route, down = str(r["endpoint"]), r["thumbs"] == -1
        if down or tokens[route] > 0:
            if not down:
                expected.append(str(r["req_uuid"]))
            tokens[route] = max(0, tokens[route] - 1)
    assert topped == expected
    assert sorted(set(routes)) == ["billing", "docs_qa", "support_chat"]
    value = sampler.metrics.registry.get_sample_value
    assert sum(value("groundwatch_items_sampled_total", {"route": r, "rule": "route_minimum"})
               or 0 for r in ("billing", "docs_qa", "support_chat")) == len(topped)


def test_backfill_replays_a_time_range_once_without_touching_the_live_sampler(
        tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from workers.sampler import Backfill
    from workers.services import backfill_config

    start = datetime(2026, 11, 1, tzinfo=UTC)
    rows = demo_traffic.make_rows(120, seed=3, start=start)  # one row every 250 ms
    demo_traffic.create_log_table(f"sqlite:///{tmp_path}/logs.db")
    demo_traffic.write_rows(f"sqlite:///{tmp_path}/logs.db", rows)
    config = load_config(write_config(tmp_path, rate=0.5), environ={})
    store = Store.from_config(config.store)
    live_queue = Queue()
    live = build_sampler(config, store.ledger, Metrics(config.metrics, multiprocess=False), live_queue)
    while not live.step().idle:
        pass
    live_cursor = store.ledger.get_cursor("app")

    since, until = start + timedelta(seconds=10), start + timedelta(seconds=20)  # rows 40-79
    bf_config = backfill_config(config, "nov", rate=1.0)
    queue = Queue()
    metrics = Metrics(config.metrics, multiprocess=False)
    backfill = build_sampler(bf_config, store.ledger, metrics, queue, backfill=Backfill(since, until))
    steps = []
    while True:
        step = backfill.step()
        steps.append(step)
        if step.idle or step.done:
            break
    in_range = [str(r["req_uuid"]) for r in rows[40:80]]
    live_ids = set(live_queue.ids())
    assert queue.ids() == [i for i in in_range if i not in live_ids]
    assert sum(s.already_stored for s in steps) == len([i for i in in_range if i in live_ids])
    assert steps[-1].done and sum(s.rows for s in steps) < len(rows)  # stopped at `until`
    assert store.ledger.get_cursor("app") == live_cursor
    assert store.ledger.get_cursor("app.backfill.nov") is not None
    # The replayed rows are not counted again as app traffic; the new items are counted.
    value = metrics.registry.get_sample_value
    assert value("groundwatch_logs_seen_total", {"source": "app.backfill.nov"}) is None
    assert sum(value("groundwatch_items_sampled_total", {"route": r, "rule": "default"}) or 0
               for r in ("billing", "docs_qa", "support_chat")) + sum(
        value("groundwatch_items_sampled_total", {"route": r, "rule": "thumbs_down"}) or 0
        for r in ("billing", "docs_qa", "support_chat")) == len(queue.ids())
    # Running the same backfill again (the first run released its lock) sends nothing more.
    store.ledger.release_lock("app.backfill.nov", backfill.owner)
    again = Queue()
    rerun = build_sampler(bf_config, store.ledger, Metrics(config.metrics, multiprocess=False), again,
                          backfill=Backfill(since, until))
    while not ((step := rerun.step()).idle or step.done):
        assert step.locked
    assert again.ids() == []
    store.close()


def test_groundwatch_backfill_cli(tmp_path: Path) -> None:
    import subprocess
    import sys
    from datetime import UTC, datetime

    start = datetime(2026, 11, 1, tzinfo=UTC)
    rows = demo_traffic.make_rows(120, seed=3, start=start)
    demo_traffic.create_log_table(f"sqlite:///{tmp_path}/logs.db")
    demo_traffic.write_rows(f"sqlite:///{tmp_path}/logs.db", rows)
    path = write_config(tmp_path, rate=0.0)
    path.write_text(path.read_text() + f'url = "filesystem://{tmp_path}/broker"\n'
                    f'[metrics]\nmultiproc_dir = "{tmp_path}/prom"\n')
    (tmp_path / "broker").mkdir()

    def backfill(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "groundwatch", "--config", str(path),
                               "backfill", *args], capture_output=True, text=True, timeout=120,
                              check=False, env={**os.environ, "GROUNDWATCH_LOG_LEVEL": "WARNING"})

    bad = backfill("x", "--since", "2026-11-02", "--until", "2026-11-01")
    assert bad.returncode == 2 and "must be before --until" in bad.stderr
    assert backfill("x", "--since", "yesterday").returncode == 2
    assert backfill("x", "--rate", "1.5").returncode == 2

    done = backfill("nov", "--since", "2026-11-01T00:00:10", "--until", "2026-11-01T00:00:20",
                    "--rate", "1")
    assert done.returncode == 0, done.stderr
    # The first read starts at --since in the table's own order: no row before it is read.
    assert "read 50 rows (10 outside the range, 0 rejected); enqueued 40 items" in done.stdout
    store = Store(f"sqlite:///{tmp_path}/gw.db")
    assert store.queries.count_items_by_status()["queued"] == 40
    assert store.ledger.get_cursor("app") is None  # the live sampler's cursor is untouched
    store.close()
    # Batches of broker.batch_size (7): one slice of 50 rows from `since`, 40 in range, which
    # also passed `until` and ended the run: 6 messages.
    assert len([p for p in (tmp_path / "broker").iterdir() if p.suffix == ".msg"]) == 6
