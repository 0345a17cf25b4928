"""The store as a whole, on a SQLite file and on the real PostgreSQL server (marker
``postgres``): its database, schema and migrations, threads, retention."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from pydantic import SecretStr
from sqlalchemy import inspect, text

from evaluator.config import StoreConfig
from evaluator.errors import ConfigError, InvalidRecordError
from evaluator.records import LogRecord
from evaluator.store import Store
from evaluator.store.models import VERSION_TABLE, metadata
from tests.store_helpers import T0, TABLES, FakeClock, count, ok_result, record

# The fixtures db_url, clock and store.
pytest_plugins = ["tests.store_fixtures"]





def test_migrations_create_the_tables_and_match_the_models(db_url: str) -> None:
    with Store(db_url) as store:
        names = set(inspect(store.engine).get_table_names())
        assert TABLES | {VERSION_TABLE} <= names
        assert "alembic_version" not in names  # never collide with the app's own Alembic
        with store.engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE,
                                                         "compare_type": True})
            assert ctx.get_current_revision() == "0005"
            assert compare_metadata(ctx, metadata) == []


def test_migrate_is_idempotent(db_url: str) -> None:
    with Store(db_url) as store:
        store.ledger.add_items([(record("a"), "default")], source="app")
        store.migrate()
        store.migrate()
    with Store(db_url) as again:
        assert again.queries.item("a") is not None
        assert again.queries.count_items_by_status()["queued"] == 1


def test_concurrent_first_migrations_do_not_collide(db_url: str) -> None:
    start = threading.Barrier(4)

    def open_store() -> int:
        start.wait(timeout=30)
        with Store(db_url) as store:
            return store.queries.count_items_by_status()["queued"]

    with ThreadPoolExecutor(4) as pool:
        assert [f.result(timeout=120) for f in [pool.submit(open_store) for _ in range(4)]] == \
            [0, 0, 0, 0]


def test_unsupported_database_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"store\.url"):
        Store("mysql://u@localhost/db", migrate=False)


def test_from_config_reads_the_secret_url_and_repr_hides_the_password(sqlite_url: str) -> None:
    with Store.from_config(StoreConfig(url=SecretStr(sqlite_url))) as store:
        assert store.dialect == "sqlite"
        assert store.queries.count_items_by_status() == {"queued": 0, "scored": 0, "failed": 0}
    hidden = Store("postgresql+psycopg://u:hunter2@127.0.0.1:1/x", migrate=False)
    assert "hunter2" not in repr(hidden)


def test_sqlite_connections_use_wal_and_wait_for_locks(sqlite_url: str) -> None:
    with Store(sqlite_url) as store, store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_sqlite_parent_directories_are_created(tmp_path: Any) -> None:
    with Store(f"sqlite:///{tmp_path / 'a' / 'b' / 'gw.db'}") as store:
        store.ledger.add_items([(record("x"), "default")], source="app")
    assert (tmp_path / "a" / "b" / "gw.db").exists()





def test_datetimes_round_trip_as_aware_utc(store: Store) -> None:
    plus_two = timezone(timedelta(hours=2))
    local = datetime(2025, 6, 1, 14, 30, 15, 123456, tzinfo=plus_two)
    rec = LogRecord("tz", local, "q?", (), "a")
    store.ledger.add_items([(rec, "default")], source="app")
    store.results.record_results([ok_result("tz")], {"tz": rec}, scorer="s", scorer_version="1")

    item = store.queries.item("tz")
    assert item is not None
    assert item.log_timestamp == local
    assert item.log_timestamp.tzinfo == UTC
    assert item.log_timestamp.hour == 12
    row = store.queries.scores_for("tz")[0]
    assert row.log_timestamp == local and row.log_timestamp.tzinfo == UTC
    assert row.scored_at.tzinfo == UTC


def test_naive_datetimes_are_refused(store: Store) -> None:
    with pytest.raises(Exception, match="naive datetime"):
        store.purge(datetime(2025, 1, 1))





def test_one_store_is_shared_by_threads(store: Store) -> None:
    recs = {f"r{i}": record(f"r{i}") for i in range(400)}
    ids = list(recs)

    def work(part: int) -> int:
        mine = ids[part::4]
        store.ledger.add_items([(recs[rid], "default") for rid in mine], source="app")
        written = store.results.record_results([ok_result(rid) for rid in mine], recs, scorer="s",
                                       scorer_version="1")
        store.ledger.acquire_lock("app", f"thread-{part}", ttl_s=10)
        return len(written)

    with ThreadPoolExecutor(4) as pool:
        assert sum(pool.map(work, range(4))) == 1600
    assert store.queries.count_items_by_status()["scored"] == 400











def test_purge_deletes_old_finished_work_only(store: Store, clock: FakeClock) -> None:
    recs = {rid: record(rid) for rid in ("old-scored", "old-failed", "old-queued", "new")}
    store.ledger.add_items([(r, "default") for r in recs.values()], source="app")
    store.results.record_results([ok_result("old-scored")], recs, scorer="s", scorer_version="1")
    store.results.record_failures(["old-failed"], stage="score", kind="internal", reason="boom",
                          attempts=1)
    store.ledger.record_rejections("app", [InvalidRecordError("bad_json", field="metadata",
                                                       row_ref="r", detail="x")])
    assert store.ledger.acquire_lock("app", "replica-a", ttl_s=10)
    store.ledger.set_cursor("app", {"id": "old"}, owner="replica-a")
    store.golden.record_golden("judge/1", {"g1": {"faithfulness": 0.5}})
    assert store.golden.claim_golden_run("golden:judge/1", 60)
    cutoff = clock.now + timedelta(seconds=1)
    clock.advance(3600)
    store.results.record_results([ok_result("new")], recs, scorer="s", scorer_version="1")

    # items 2, scores 4, explanations 1, failures 1, rejections 1
    planned = store.purge_tables(cutoff, dry_run=True)
    assert planned == {"gw_items": 2, "gw_scores": 4, "gw_explanations": 1, "gw_failures": 1,
                       "gw_rejections": 1, "gw_source_reads": 0, "gw_calibration_pairs": 0}
    assert store.purge_tables(cutoff, dry_run=True) == planned  # a dry run deletes nothing
    assert store.purge(cutoff) == 9
    assert store.queries.item("old-scored") is None and store.queries.item("old-failed") is None
    queued = store.queries.item("old-queued")
    assert queued is not None and queued.status == "queued"
    assert {r.request_id for r in store.queries.scores()} == {"new"}
    assert store.queries.explanations("new") and not store.queries.explanations("old-scored")
    assert store.queries.failures() == [] and store.queries.rejections() == []
    assert store.ledger.get_cursor("app") == {"id": "old"}
    # The golden set's baselines are never purged (resetting one is a decision).
    assert store.golden.golden_scores("judge/1") == {("g1", "faithfulness"): (0.5, 0.5)}
    assert count(store, "gw_golden_runs") == 1
    assert store.purge(cutoff) == 0


def test_downgrade_to_0002_drops_only_the_later_tables(db_url: str) -> None:
    from alembic import command

    from evaluator.store.database import alembic_config

    with Store(db_url) as store:
        store.golden.record_golden("judge/1", {"a": {"faithfulness": 0.5}})
        with store.engine.begin() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0002")
        names = set(inspect(store.engine).get_table_names())
        later = {"gw_golden_scores", "gw_golden_runs", "gw_calibration_pairs",
                 "gw_calibration_maps"}  # 0003 and 0005
        assert not later & names
        assert TABLES - later <= names
    with Store(db_url) as again:  # migrates back to head
        assert again.golden.golden_scores("judge/1") == {}


def test_upgrade_from_0001_keeps_items_and_marks_them_committed(db_url: str) -> None:
    # Items stored before 0002 were sent by a sampler whose cursor moved on: a rewind must
    # not send them again as if a crash had cut their first sending short.
    from alembic import command
    from sqlalchemy import create_engine

    from evaluator.store.database import alembic_config

    engine = create_engine(db_url)
    with engine.begin() as conn:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.execute(text(
            "INSERT INTO gw_items (request_id, source, log_timestamp, rule, status, sampled_at, "
            "updated_at, payload) VALUES ('old', 'app', :t, 'default', 'queued', :t, :t, '{}')"),
            {"t": T0})
    engine.dispose()
    with Store(db_url) as store:
        assert store.ledger.stored_item_origins(["old"])["old"][2] is True
        store.ledger.add_items([(record("new"), "default")], source="app")
        assert store.ledger.stored_item_origins(["new"])["new"][2] is False
