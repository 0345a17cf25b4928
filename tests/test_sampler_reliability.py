"""The sampler on an app's own table: nothing lost silently, every count once (issue 7).

A real SQLite source and store, real metrics (in-process), and a list as the queue.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, Text, create_engine

from evaluator.config import load_config
from evaluator.store import Store
from metrics.registry import Metrics
from workers.sampler import Backfill, build_sampler
from workers.services import backfill_config

# The fixture db_url: a SQLite file, and PostgreSQL under the postgres marker.
pytest_plugins = ["tests.store_fixtures"]

BASE = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)

CONFIG = """
[store]
url = "sqlite:///{tmp}/gw.db"
[source]
name = "app"
read_batch_rows = {read_rows}
[source.sql]
url = "sqlite:///{tmp}/app.db"
table = "requests"
{sql_extra}
[source.columns]
request_id = "rid"
timestamp = "logged_at"
question = "prompt"
contexts = "{contexts}"
answer = "completion"
status = "{status}"
latency_ms = "latency"
[sampling]
default_rate = 1.0
max_items_per_minute = 0
[sampler]
progress_every_s = {progress}
"""


def app_db(tmp: Path, rows: list[dict[str, Any]]) -> None:
    """The app's own table: its names, contexts as JSON text, ISO timestamps, an integer
    HTTP status, and no uniqueness on the request id."""
    engine = create_engine(f"sqlite:///{tmp}/app.db")
    table = Table("requests", MetaData(),
                  Column("id", Integer, primary_key=True, autoincrement=True),
                  Column("rid", Text), Column("logged_at", Text), Column("prompt", Text),
                  Column("docs", Text), Column("completion", Text),
                  Column("http_status", Integer), Column("latency", Text))
    table.metadata.create_all(engine)
    if rows:
        with engine.begin() as conn:
            conn.execute(table.insert(), rows)
    engine.dispose()


def row(i: int, *, at: datetime | None = None, offset: int = 0, **over: Any) -> dict[str, Any]:
    when = (at or BASE + timedelta(seconds=i)).astimezone(timezone(timedelta(hours=offset)))
    base = {"rid": f"q{i:04d}", "logged_at": when.isoformat(), "prompt": f"How do I do {i}?",
            "docs": json.dumps([f"Step {i} is documented here."]),
            "completion": f"Do step {i}.", "http_status": 200, "latency": "120"}
    base.update(over)
    return base


def make(tmp: Path, *, contexts: str = "docs", status: str = "http_status",
         read_rows: int = 100, sql_extra: str = "", progress: float = 60.0,
         store_url: str | None = None) -> Any:
    path = tmp / "gw.toml"
    path.write_text(CONFIG.format(tmp=tmp, contexts=contexts, status=status,
                                  read_rows=read_rows, sql_extra=sql_extra, progress=progress))
    config = load_config(path, environ={})
    store = Store(store_url) if store_url else Store.from_config(config.store)
    metrics = Metrics(config.metrics, multiprocess=False)
    queue: list[dict[str, Any]] = []
    sampler = build_sampler(config, store.ledger, metrics, queue.extend)
    return sampler, store, metrics, queue


def drain(sampler: Any) -> list[Any]:
    steps = []
    for _ in range(200):
        step = sampler.step()
        if step.idle or step.held:
            return steps
        steps.append(step)
    raise AssertionError("the sampler never caught up")


def metric(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def total(metrics: Metrics, name: str) -> float:
    return sum(s.value for fam in metrics.registry.collect() if fam.name + "_total" == name
               or fam.name == name for s in fam.samples if s.name == name)


def test_an_integer_http_status_costs_no_row(tmp_path: Path) -> None:
    # Finding 3: mapping status to an integer column rejected 2004 of 2010 rows as wrong_type,
    # sampled nothing and still moved the cursor to the end.
    rows = [row(i, http_status=(200, 500, 404)[i % 3]) for i in range(30)]
    rows[4]["latency"] = "fast"  # an optional field that cannot be read: dropped, row kept
    app_db(tmp_path, rows)
    sampler, store, metrics, queue = make(tmp_path)
    drain(sampler)
    assert len(queue) == 30
    assert [m["status"] for m in queue[:3]] == ["ok", "error", "error"]
    assert store.queries.rejections() == []
    assert metric(metrics, "groundwatch_fields_dropped_total", field="latency_ms",
                  reason="wrong_type") == 1
    assert total(metrics, "groundwatch_app_errors_total") == 20
    store.close()


def test_a_mapping_mistake_holds_the_cursor_and_loses_nothing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Finding 3: contexts mapped to a text column that is no JSON list: every row rejected
    # for the same field and reason. That is the config's fault; the cursor must not move.
    app_db(tmp_path, [row(i) for i in range(80)])
    sampler, store, metrics, queue = make(tmp_path, contexts="prompt", read_rows=60)
    with caplog.at_level(logging.ERROR, logger="groundwatch.sampler"):
        assert sampler.step().held
        assert sampler.step().held  # retried on the next poll, logged once
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "source.columns.contexts" in errors[0] and "'prompt'" in errors[0]
    assert str(tmp_path / "gw.toml") in errors[0]
    assert store.ledger.get_cursor("app") is None and queue == [] and store.queries.rejections() == []
    assert metric(metrics, "groundwatch_source_held", source="app") == 1
    store.ledger.release_lock("app", sampler.owner)  # as a stopped sampler does
    store.close()

    # Fixed and restarted: every row comes through, none was skipped.
    sampler, store, metrics, queue = make(tmp_path, contexts="docs", read_rows=60)
    drain(sampler)
    assert sorted(m["request_id"] for m in queue) == [f"q{i:04d}" for i in range(80)]
    assert metric(metrics, "groundwatch_source_held", source="app") == 0
    store.close()


def test_a_few_bad_rows_at_the_end_do_not_hold(tmp_path: Path) -> None:
    app_db(tmp_path, [row(i) for i in range(5)] + [row(5, docs="[oops")])
    sampler, store, _, queue = make(tmp_path)
    assert not sampler.step().held
    assert len(queue) == 5 and [r.reason for r in store.queries.rejections()] == ["bad_contexts"]
    assert not sampler.step().held  # one bad row alone in a read: rejected, not a hold
    store.close()


def test_duplicate_request_ids_count_once_everywhere(tmp_path: Path) -> None:
    # Finding 7: a duplicate request_id was stored and scored once but counted twice in
    # items_sampled_total and app_requests_total.
    rows = [row(i) for i in range(20)]
    rows.append(row(3, at=BASE + timedelta(seconds=20)))  # the same id, another row, later
    rows.append(row(7, at=BASE + timedelta(seconds=5)))  # and one inside the same read
    app_db(tmp_path, rows)
    sampler, store, metrics, queue = make(tmp_path, read_rows=8)
    drain(sampler)
    assert sorted(m["request_id"] for m in queue) == [f"q{i:04d}" for i in range(20)]
    stored = store.queries.count_items_by_status()
    sampled = total(metrics, "groundwatch_items_sampled_total")
    assert sampled == sum(stored.values()) == 20  # sampled == scored + failed + waiting
    assert total(metrics, "groundwatch_app_requests_total") == 20
    assert metric(metrics, "groundwatch_items_rejected_total", reason="duplicate_id") == 2
    assert metric(metrics, "groundwatch_logs_seen_total", source="app") == 22  # every row read
    assert sorted(r.row_ref for r in store.queries.rejections()) == ["q0003", "q0007"]
    store.close()


def test_a_slice_resent_after_a_failed_enqueue_is_counted_once(tmp_path: Path) -> None:
    app_db(tmp_path, [row(i) for i in range(12)])
    sampler, store, metrics, queue = make(tmp_path)

    def broken(_: Any) -> None:
        raise ConnectionError("broker down")

    good, sampler.enqueue = sampler.enqueue, broken
    with pytest.raises(ConnectionError):
        sampler.step()  # the items are stored, not queued; the cursor stays
    assert (store.ledger.get_cursor("app") is None
            and total(metrics, "groundwatch_items_sampled_total") == 0)
    sampler.enqueue = good
    drain(sampler)
    assert len(queue) == 12
    assert total(metrics, "groundwatch_items_sampled_total") == 12  # not 0, not 24
    assert total(metrics, "groundwatch_app_requests_total") == 12
    assert store.queries.rejections() == []  # a re-send is not a duplicate
    store.close()


def test_late_rows_in_several_zones_are_read_once_with_a_lookback(tmp_path: Path) -> None:
    app_db(tmp_path, [row(i, offset=(0, 1, -5)[i % 3]) for i in range(30)])
    sampler, store, metrics, queue = make(tmp_path, read_rows=7, sql_extra='lookback = "2m"')
    drain(sampler)
    assert len(queue) == 30
    # Committed after the cursor went past their time (written with another offset).
    more = [row(100 + i, at=BASE + timedelta(seconds=25 - i), offset=-5) for i in range(3)]
    engine = create_engine(f"sqlite:///{tmp_path}/app.db")
    table = Table("requests", MetaData(), autoload_with=engine)
    with engine.begin() as conn:
        conn.execute(table.insert(), more)
    engine.dispose()
    drain(sampler)
    drain(sampler)
    assert sorted(m["request_id"] for m in queue[30:]) == ["q0100", "q0101", "q0102"]
    assert metric(metrics, "groundwatch_source_late_rows_total", source="app") == 3
    assert total(metrics, "groundwatch_app_requests_total") == 33  # the window re-read counts 0
    assert total(metrics, "groundwatch_items_sampled_total") == 33
    store.close()


def test_the_sampler_says_what_it_does(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Finding 8: no start line, no progress, no warning when most rows are rejected.
    rows = [row(i) for i in range(10)] + [row(10 + i, prompt=None) for i in range(10)]
    rows.append(row(99, logged_at="yesterday-ish"))
    app_db(tmp_path, rows)
    sampler, store, metrics, _ = make(tmp_path, progress=1e-6)
    import threading

    with caplog.at_level(logging.INFO):
        totals = sampler.run(threading.Event(), until_idle=True)
    lines = [r.getMessage() for r in caplog.records]
    start = next(line for line in lines if line.startswith("sampler for source 'app'"))
    assert "sql table 'requests'" in start and "mode timestamp on column 'logged_at'" in start
    assert "at the start" in start
    assert any("last " in line and "read 20 rows" in line for line in lines)
    warning = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                   and "were rejected" in r.getMessage())
    assert "missing_field 10" in warning and "no_position 1" in warning
    assert any("cannot be placed" in line for line in lines)
    assert totals.rows == 20 and totals.sampled == 10 and totals.by_reason == {
        "missing_field": 10, "no_position": 1}
    assert metric(metrics, "groundwatch_source_unplaceable_rows", source="app") == 1
    store.close()


def test_a_setting_that_needs_a_restart_says_so(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    app_db(tmp_path, [])
    sampler, store, _, _ = make(tmp_path)
    path = tmp_path / "gw.toml"
    text = path.read_text().replace("read_batch_rows = 100", "read_batch_rows = 10")
    path.write_text(text.replace("default_rate = 1.0", "default_rate = 0.5"))
    import os

    os.utime(path, (1, 1))  # a new mtime whatever the file system's resolution
    with caplog.at_level(logging.INFO, logger="groundwatch.sampler"):
        assert sampler.maybe_reload()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "source.read_batch_rows" in warnings[0]
    assert "restart" in warnings[0]
    assert sampler.config.sampling.default_rate == 0.5  # the sampling section did reload
    assert sampler.config.source.read_batch_rows == 100
    store.close()


def test_cursor_show_set_and_reset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from groundwatch.cli import main

    app_db(tmp_path, [row(i, offset=(0, 1, -5)[i % 3]) for i in range(20)])
    sampler, store, metrics, queue = make(tmp_path, read_rows=8)
    drain(sampler)
    cfg = str(tmp_path / "gw.toml")
    assert main(["cursor", "show", "--config", cfg]) == 0
    out = capsys.readouterr().out
    assert "source 'app': mode timestamp on column 'logged_at': next rows after " \
           "2026-11-24T09:00:19+00:00 (request id q0019)" in out
    assert "lock: " in out and "held until" in out

    # Moving it while a sampler holds the lock is refused...
    assert main(["cursor", "set", "--at", "2026-11-24T09:00:10Z", "--yes", "-c", cfg]) == 1
    assert "stop that sampler first" in capsys.readouterr().err
    store.ledger.release_lock("app", sampler.owner)  # the sampler stopped
    # ...then the rows from that time on are read again, but neither sent nor counted again.
    assert main(["cursor", "set", "--at", "2026-11-24T09:00:10Z", "--yes", "-c", cfg]) == 0
    assert "now mode timestamp on column 'logged_at': next rows at or after " \
           "2026-11-24T09:00:10+00:00" in capsys.readouterr().out
    sampled_before = total(metrics, "groundwatch_items_sampled_total")
    requests_before = total(metrics, "groundwatch_app_requests_total")
    sampler = build_sampler(sampler.config, store.ledger, metrics, queue.extend)  # started again
    steps = drain(sampler)
    assert sum(s.rows for s in steps) == 10 and sum(s.already_stored for s in steps) == 10
    assert len(queue) == 20 and total(metrics, "groundwatch_items_sampled_total") == sampled_before
    assert total(metrics, "groundwatch_app_requests_total") == requests_before
    assert store.queries.rejections() == []  # a replay is not a duplicate

    store.ledger.release_lock("app", sampler.owner)
    assert main(["cursor", "reset", "--yes", "-c", cfg]) == 0
    assert "now mode timestamp on column 'logged_at': at the start" in capsys.readouterr().out
    assert store.ledger.get_cursor("app") is None
    with pytest.raises(SystemExit) as info:  # argparse: one place at a time
        main(["cursor", "set", "--value", "x", "--at", "2026-01-01", "--yes", "-c", cfg])
    assert info.value.code == 2
    assert main(["cursor", "set", "--yes", "-c", cfg]) == 2  # and at least one
    assert "give a time or a value" in capsys.readouterr().err
    store.close()


def test_a_backfill_stores_and_counts_only_rejections_not_stored_before(
        tmp_path: Path, db_url: str) -> None:
    # Issue 16: a backfill re-reads rows the live sampler read, and stored each of their
    # rejections a second time (and counted them in its totals).
    rows = [row(i) for i in range(10)]
    rows[3]["prompt"] = None
    rows[6]["docs"] = "[oops"
    app_db(tmp_path, rows)
    live, store, _, _ = make(tmp_path, read_rows=4, store_url=db_url)
    drain(live)
    stored = sorted((r.source, r.row_ref, r.field, r.reason) for r in store.queries.rejections())
    assert stored == [("app", "q0003", "question", "missing_field"),
                      ("app", "q0006", "contexts", "bad_contexts")]
    # A bad row the live sampler never read (committed behind its cursor, say).
    app_db(tmp_path, [row(2, at=BASE + timedelta(seconds=2.5), rid="q0100", docs="{}")])

    def backfill() -> list[Any]:
        config = backfill_config(live.config, "all")
        sampler = build_sampler(config, store.ledger, Metrics(config.metrics, multiprocess=False),
                                lambda _: None, backfill=Backfill())
        try:
            return drain(sampler)
        finally:
            store.ledger.release_lock(config.source.name, sampler.owner)

    steps = backfill()
    assert sum(s.rejected for s in steps) == 1
    assert {k: v for s in steps for k, v in s.by_reason.items()} == {"bad_contexts": 1}
    stored = sorted((r.source, r.row_ref, r.reason) for r in store.queries.rejections())
    assert stored == [("app", "q0003", "missing_field"), ("app", "q0006", "bad_contexts"),
                      ("app.backfill.all", "q0100", "bad_contexts")]
    # The same backfill run again from the start stores nothing more either.
    store.ledger.reset_cursor("app.backfill.all", None)
    assert sum(s.rejected for s in backfill()) == 0
    assert len(store.queries.rejections()) == 3
    store.close()


def test_a_backfill_that_ran_to_its_end_clears_the_missed_rows_count(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Issue 16: the missed-rows warning and gauge (rows committed behind the cursor) recommend
    # `groundwatch backfill`, and neither cleared after it: only `cursor set` re-baselined.
    app_db(tmp_path, [row(i) for i in range(1, 11)])
    sampler, store, metrics, _ = make(tmp_path, sql_extra='mode = "incrementing"\n'
                                      'incrementing_column = "id"\nunplaceable_check = 0')
    missed = {"source": "app"}
    drain(sampler)
    assert metric(metrics, "groundwatch_source_missed_rows", **missed) == 0
    # An id handed out before the others, its row committed after the cursor passed it.
    engine = create_engine(f"sqlite:///{tmp_path}/app.db")
    with engine.begin() as conn:
        conn.execute(Table("requests", MetaData(), autoload_with=engine).insert(),
                     [{**row(50), "id": 0}])
    engine.dispose()
    with caplog.at_level(logging.WARNING, logger="evaluator.sources.sql"):
        sampler.step()
    assert metric(metrics, "groundwatch_source_missed_rows", **missed) == 1
    assert "were never read" in caplog.text

    path = tmp_path / "gw.toml"
    path.write_text(path.read_text() + f'[broker]\nurl = "filesystem://{tmp_path}/broker"\n'
                    f'[metrics]\nmultiproc_dir = "{tmp_path}/prom"\n')
    (tmp_path / "broker").mkdir()
    done = subprocess.run([sys.executable, "-m", "groundwatch", "--config", str(path),
                           "backfill", "gap"], capture_output=True, text=True, timeout=120,
                          check=False, env={**os.environ, "GROUNDWATCH_LOG_LEVEL": "WARNING"})
    assert done.returncode == 0, done.stderr
    assert store.queries.item("q0050") is not None  # the backfill read the missed row

    caplog.clear()
    with caplog.at_level(logging.INFO):
        sampler.step()
    assert metric(metrics, "groundwatch_source_missed_rows", **missed) == 0
    assert "missed-rows count was reset to 0 after backfill 'app.backfill.gap'" in caplog.text
    assert store.ledger.recount_request("app") is None  # cleared with the stored cursor
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        sampler.step()
        sampler.step()
    assert "were never read" not in caplog.text
    assert metric(metrics, "groundwatch_source_missed_rows", **missed) == 0
    store.close()
