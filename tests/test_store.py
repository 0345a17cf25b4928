"""The store, on a SQLite file and on the real PostgreSQL server (marker ``postgres``)."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from pydantic import SecretStr
from sqlalchemy import event, func, inspect, select, text

from evaluator.config import StoreConfig
from evaluator.errors import ConfigError, InvalidRecordError, LockHeldError
from evaluator.records import LogRecord
from evaluator.scorers.base import METRICS, Detection, ItemResult, MetricResult, Outcome
from evaluator.store import UNSAMPLED, Store
from evaluator.store.models import VERSION_TABLE, golden_scores, metadata, scores

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
TABLES = {"gw_items", "gw_scores", "gw_explanations", "gw_failures", "gw_cursors",
          "gw_rejections", "gw_source_reads", "gw_golden_scores", "gw_golden_runs"}


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def store(db_url: str, clock: FakeClock) -> Iterator[Store]:
    with Store(db_url, clock=clock) as s:
        yield s


def record(rid: str, *, minutes: int = 0, route: str | None = "chat", **kw: Any) -> LogRecord:
    return LogRecord(
        request_id=rid,
        timestamp=T0 - timedelta(hours=1) + timedelta(minutes=minutes),
        question=f"question {rid}?",
        contexts=("passage one", "passage two"),
        answer=f"answer {rid}",
        route=route,
        model="m1",
        **kw,
    )


def ok_result(rid: str, value: float = 0.5, **kw: Any) -> ItemResult:
    return ItemResult(rid, tuple(MetricResult.ok(m, value) for m in METRICS), **kw)


def error_result(rid: str) -> ItemResult:
    return ItemResult(rid, tuple(MetricResult.error(m, "timeout") for m in METRICS))


def count(store: Store, table: str) -> int:
    with store.engine.connect() as conn:
        return conn.scalar(text(f"SELECT count(*) FROM {table}"))


# -- schema ---------------------------------------------------------------------------------

def test_migrations_create_the_tables_and_match_the_models(db_url: str) -> None:
    with Store(db_url) as store:
        names = set(inspect(store.engine).get_table_names())
        assert TABLES | {VERSION_TABLE} <= names
        assert "alembic_version" not in names  # never collide with the app's own Alembic
        with store.engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE,
                                                         "compare_type": True})
            assert ctx.get_current_revision() == "0003"
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


# -- items ----------------------------------------------------------------------------------

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


def test_oldest_unscored_counts_from_the_take_not_the_log_time(store: Store,
                                                                clock: FakeClock) -> None:
    # Finding 6 of issue 7: a table of 6-day-old rows showed a 513,308 s backlog. Age counts
    # from when the sampler stored the item; the log time is eval_lag's business.
    assert store.queries.oldest_unscored_sampled_at() is None
    recs = {r.request_id: r for r in (record("a", minutes=-9000), record("b", minutes=1),
                                      record("c", minutes=9))}
    store.ledger.add_items([(recs["a"], "default")], source="app")
    taken_first = clock.now
    clock.advance(30)
    store.ledger.add_items([(recs["b"], "default"), (recs["c"], "default")], source="app")
    assert store.queries.oldest_unscored_sampled_at() == taken_first
    store.results.record_results([ok_result("a")], recs, scorer="s", scorer_version="1")
    oldest = store.queries.oldest_unscored_sampled_at()
    assert oldest == clock.now and oldest is not None and oldest.tzinfo == UTC


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


# -- scores -----------------------------------------------------------------------------------

def test_record_results_is_idempotent(store: Store) -> None:
    recs = {rid: record(rid) for rid in ("a", "b")}
    store.ledger.add_items([(r, "default") for r in recs.values()], source="app")
    batch = [ok_result("a", 0.9, explanation={"claims": ["x"]},
                       detections=(Detection("refusal", "said no"),)),
             ItemResult("b", (MetricResult.not_applicable("faithfulness", "no claims"),))]

    first = store.results.record_results(batch, recs, scorer="lexical", scorer_version="1")
    assert [(rid, m.metric) for rid, m in first] == \
        [("a", m) for m in METRICS] + [("b", "faithfulness")]
    assert first[0][1] == MetricResult.ok("faithfulness", 0.9)

    assert store.results.record_results(batch, recs, scorer="lexical", scorer_version="1") == []
    assert count(store, "gw_scores") == 5
    assert count(store, "gw_explanations") == 2
    assert store.queries.count_items_by_status() == {"queued": 0, "scored": 2, "failed": 0}

    # Another scorer version is a different score.
    assert len(store.results.record_results(batch, recs, scorer="lexical", scorer_version="2")) == 5

    (expl,) = [e for e in store.queries.explanations("a") if e.scorer_version == "1"]
    assert expl.body == {"claims": ["x"]}
    assert expl.detections == (Detection("refusal", "said no"),)
    row = store.queries.scores_for("b")[0]
    assert (row.outcome, row.value, row.reason, row.route, row.model) == \
        (Outcome.NOT_APPLICABLE, None, "no claims", "chat", "m1")


def test_an_error_is_replaced_by_a_real_score_but_not_the_reverse(store: Store) -> None:
    recs = {"a": record("a")}
    kw = {"scorer": "judge", "scorer_version": "1"}
    assert len(store.results.record_results([error_result("a")], recs, **kw)) == 4
    # A retry that errors again writes nothing new (nothing to count twice).
    assert store.results.record_results([error_result("a")], recs, **kw) == []

    written = store.results.record_results([ok_result("a", 0.8, explanation={"v": 2})], recs, **kw)
    assert [m for _, m in written] == [MetricResult.ok(m, 0.8) for m in METRICS]
    assert {r.outcome for r in store.queries.scores_for("a")} == {Outcome.OK}
    assert store.queries.explanations("a")[0].body == {"v": 2}

    assert store.results.record_results([error_result("a")], recs, **kw) == []
    assert {r.value for r in store.queries.scores_for("a")} == {0.8}


def test_record_results_creates_items_the_sampler_never_saw(store: Store) -> None:
    rec = record("direct")
    store.results.record_results([ok_result("direct")], {"direct": rec}, scorer="s", scorer_version="1")
    item = store.queries.item("direct")
    assert item is not None
    assert (item.status, item.source, item.rule) == ("scored", UNSAMPLED, UNSAMPLED)
    assert item.record() == rec


def test_record_results_needs_every_record(store: Store) -> None:
    with pytest.raises(ValueError, match="no record"):
        store.results.record_results([ok_result("a")], {}, scorer="s", scorer_version="1")


def test_a_large_batch_is_one_transaction(store: Store) -> None:
    recs = {f"r{i:04d}": record(f"r{i:04d}", minutes=i % 60) for i in range(1000)}
    store.ledger.add_items([(r, "default") for r in recs.values()], source="app")
    results = [ok_result(rid, (i % 11) / 10) for i, rid in enumerate(recs)]
    commits: list[object] = []

    def on_commit(conn: object) -> None:
        commits.append(conn)

    event.listen(store.engine, "commit", on_commit)
    try:
        written = store.results.record_results(results, recs, scorer="lexical", scorer_version="1")
    finally:
        event.remove(store.engine, "commit", on_commit)
    assert len(commits) == 1
    assert len(written) == 4000
    assert count(store, "gw_scores") == 4000
    assert store.queries.count_items_by_status() == {"queued": 0, "scored": 1000, "failed": 0}
    with store.engine.connect() as conn:
        assert conn.scalar(select(func.count()).where(scores.c.value == 1.0)) == 4 * 90


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

def test_scores_filters(store: Store, clock: FakeClock) -> None:
    recs = {rid: record(rid) for rid in ("a", "b")}
    store.results.record_results([ok_result("a")], recs, scorer="lexical", scorer_version="1")
    clock.advance(60)
    store.results.record_results([ok_result("b")], recs, scorer="judge", scorer_version="1")
    assert len(store.queries.scores()) == 8
    assert {r.request_id for r in store.queries.scores(since=clock.now)} == {"b"}
    assert {r.request_id for r in store.queries.scores(scorer="lexical")} == {"a"}
    assert store.queries.scores(since=clock.now, scorer="lexical") == []


# -- failures and rejections ----------------------------------------------------------------

def test_record_failures_marks_unscored_items_failed(store: Store) -> None:
    recs = {rid: record(rid) for rid in ("a", "b")}
    store.ledger.add_items([(r, "default") for r in recs.values()], source="app")
    store.results.record_results([ok_result("a")], recs, scorer="s", scorer_version="1")
    store.results.record_failures(["a", "b"], stage="score", kind="unavailable", reason="judge down",
                          attempts=5, task_id="t-1")
    assert store.queries.count_items_by_status() == {"queued": 0, "scored": 1, "failed": 1}
    (failure,) = store.queries.failures("b")
    assert (failure.stage, failure.kind, failure.reason, failure.attempts, failure.task_id) == \
        ("score", "unavailable", "judge down", 5, "t-1")

    store.results.record_failures([], stage="enqueue", kind="broker", reason="x" * 10_000, attempts=1)
    latest = store.queries.failures(limit=1)[0]
    assert latest.request_id is None and len(latest.reason) == 4000
    assert len(store.queries.failures()) == 3


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


# -- cursors and locks --------------------------------------------------------------------

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


# -- retention ------------------------------------------------------------------------------

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


def test_record_golden_keeps_the_first_value_as_baseline(store: Store, clock: FakeClock) -> None:
    first = store.golden.record_golden("judge/1", {"a": {"faithfulness": 0.8, "groundedness": 0.6},
                                            "b": {"faithfulness": 0.4}})
    assert first == {("a", "faithfulness"): 0.8, ("a", "groundedness"): 0.6,
                     ("b", "faithfulness"): 0.4}
    clock.advance(60)
    again = store.golden.record_golden("judge/1", {"a": {"faithfulness": 0.1}, "c": {"faithfulness": 1}})
    # Only what was given comes back: the baseline of a, the first value of c.
    assert again == {("a", "faithfulness"): 0.8, ("c", "faithfulness"): 1.0}
    assert store.golden.golden_scores("judge/1") == {
        ("a", "faithfulness"): (0.8, 0.1), ("a", "groundedness"): (0.6, 0.6),
        ("b", "faithfulness"): (0.4, 0.4), ("c", "faithfulness"): (1.0, 1.0)}
    assert store.golden.golden_scores("judge/2") == {}
    assert store.golden.record_golden("judge/1", {}) == {}
    with store.engine.connect() as conn:
        row = conn.execute(select(golden_scores.c.baseline_at, golden_scores.c.last_at)
                           .where(golden_scores.c.request_id == "a",
                                  golden_scores.c.metric == "faithfulness")).one()
    assert tuple(row) == (T0, T0 + timedelta(seconds=60))  # the store's clock at each run


def test_a_golden_claim_uses_the_store_clock(store: Store, clock: FakeClock) -> None:
    assert store.golden.claim_golden_run("golden:j", 60) is True
    assert store.golden.claim_golden_run("golden:j", 60) is False
    clock.advance(59)
    assert store.golden.claim_golden_run("golden:j", 60) is False
    clock.advance(1)
    assert store.golden.claim_golden_run("golden:j", 60) is True


def test_downgrade_to_0002_drops_only_the_golden_tables(db_url: str) -> None:
    from alembic import command

    from evaluator.store.database import alembic_config

    with Store(db_url) as store:
        store.golden.record_golden("judge/1", {"a": {"faithfulness": 0.5}})
        with store.engine.begin() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0002")
        names = set(inspect(store.engine).get_table_names())
        assert "gw_golden_scores" not in names and "gw_golden_runs" not in names
        assert TABLES - {"gw_golden_scores", "gw_golden_runs"} <= names
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
