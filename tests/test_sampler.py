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
    sampler = build_sampler(config, store, Metrics(config.metrics, multiprocess=False), queue)
    steps = []
    while not (step := sampler.step()).idle:
        steps.append(step)
    assert queue.ids() == expected_ids(rows, 0.5)
    assert all(len(b) <= 7 for b in queue.batches)
    assert sum(s.rows for s in steps) == 120
    rejected = {(r.row_ref, r.field, r.reason) for r in store.rejections()}
    assert rejected == {("req-3-000005", "contexts", "bad_contexts"),
                        ("req-3-000009", "question", "missing_field")}
    assert store.count_items_by_status()["queued"] == len(queue.ids())
    m = sampler.metrics
    assert m.registry.get_sample_value("groundwatch_logs_seen_total", {"source": "app"}) == 120
    assert m.registry.get_sample_value("groundwatch_items_rejected_total",
                                       {"reason": "bad_contexts"}) == 1


def test_cursor_moves_only_after_enqueue(setup: Any) -> None:
    _, rows, config, store = setup
    queue = Queue()
    sampler = build_sampler(config, store, Metrics(config.metrics, multiprocess=False), queue)
    queue.fail = True
    with pytest.raises(ConnectionError):
        sampler.step()
    assert store.get_cursor("app") is None
    assert store.rejections() == []  # counted and stored once the slice is safely queued
    queue.fail = False
    while not sampler.step().idle:
        pass
    assert queue.ids() == expected_ids(rows, 0.5)  # nothing skipped, nothing twice
    assert len(store.rejections()) == 2


def test_second_replica_waits_for_the_lock(setup: Any) -> None:
    _, rows, config, store = setup
    first_q, second_q = Queue(), Queue()
    first = build_sampler(config, store, Metrics(config.metrics, multiprocess=False), first_q,
                          owner="a")
    second = build_sampler(config, store, Metrics(config.metrics, multiprocess=False), second_q,
                           owner="b")
    assert first.step().locked
    waiting = second.step()
    assert not waiting.locked and second_q.batches == []
    store.release_lock("app", "a")
    while not (step := second.step()).idle:
        assert step.locked
    assert first_q.ids() + second_q.ids() == expected_ids(rows, 0.5)


def test_sampling_config_reloads_without_restart(setup: Any) -> None:
    _, rows, config, store = setup
    queue = Queue()
    sampler = build_sampler(config, store, Metrics(config.metrics, multiprocess=False), queue)
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
    assert json.dumps(store.get_cursor("app"))  # the cursor is JSON


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
    sampler = build_sampler(config, store, Metrics(config.metrics, multiprocess=False), queue)
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
