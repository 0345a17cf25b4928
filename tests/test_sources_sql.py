"""The sql source on real databases: a SQLite file always, PostgreSQL when marked so."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Float,
    Integer,
    MetaData,
    Table,
    Text,
    create_engine,
    text,
)
from sqlalchemy.types import TypeEngine

from evaluator.config import ColumnMap, Config
from evaluator.errors import ConfigError, TransientError
from evaluator.records import RowLimits
from evaluator.sources import build_source
from evaluator.sources.base import SourceBatch
from evaluator.sources.sql import SqlSource

PG_URL = os.environ.get("GROUNDWATCH_TEST_PG_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")
APP_COLUMNS = ColumnMap(request_id="req_uuid", timestamp="created_at",
                        question="user_question", contexts="retrieved_docs",
                        answer="llm_output", latency_ms="latency")
BASE = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


@dataclass
class Db:
    """A real database and a table name no other test uses."""

    kind: str
    url: str
    engine: Engine
    table_name: str

    def create(self, *columns: Column[Any], name: str | None = None) -> Table:
        table = Table(name or self.table_name, MetaData(), *columns)
        table.metadata.create_all(self.engine)
        return table

    def insert(self, table: Table, rows: list[dict[str, Any]]) -> None:
        with self.engine.begin() as conn:
            conn.execute(table.insert(), rows)


@pytest.fixture(params=[
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres",
                 marks=[pytest.mark.postgres, pytest.mark.integration]),
])
def db(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Db]:
    kind = request.param
    url = f"sqlite:///{tmp_path / 'app.db'}" if kind == "sqlite" else PG_URL
    engine = create_engine(url)
    if kind == "postgres":
        try:
            with engine.connect() as conn:
                conn.execute(text("select 1"))
        except Exception as exc:  # pragma: no cover - depends on the machine
            engine.dispose()
            # As in conftest.py: the server is part of the test bed, so a missing one fails
            # the test unless a developer opts out explicitly.
            if os.environ.get("GROUNDWATCH_TEST_SKIP_PG") == "1":
                pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {exc}")
            raise
    database = Db(kind, url, engine, f"gw_src_{uuid.uuid4().hex[:10]}")
    yield database
    created = MetaData()
    created.reflect(engine, only=lambda name, _: name.startswith(database.table_name))
    created.drop_all(engine)
    engine.dispose()


@pytest.fixture
def make_source(db: Db) -> Iterator[Callable[..., SqlSource]]:
    sources: list[SqlSource] = []

    def make(columns: ColumnMap = APP_COLUMNS, limits: RowLimits | None = None,
             table: str | None = None) -> SqlSource:
        source = SqlSource("app", db.url, table or db.table_name, None, columns,
                           limits or RowLimits())
        sources.append(source)
        return source

    yield make
    for source in sources:
        source.close()


def app_table(db: Db, ts_type: TypeEngine[Any] | None = None,
              contexts_type: TypeEngine[Any] | None = None,
              latency_type: TypeEngine[Any] | None = None) -> Table:
    return db.create(
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("req_uuid", Text),
        Column("created_at", ts_type if ts_type is not None else DateTime()),
        Column("user_question", Text),
        Column("retrieved_docs", contexts_type if contexts_type is not None else Text),
        Column("llm_output", Text),
        Column("route", Text),
        Column("latency", latency_type if latency_type is not None else Float),
    )


def app_row(i: int, ts: Any, **overrides: Any) -> dict[str, Any]:
    row = {"req_uuid": f"r{i:03d}", "created_at": ts, "user_question": f"question {i}?",
           "retrieved_docs": json.dumps([f"passage {i}a", f"passage {i}b"]),
           "llm_output": f"answer {i}", "route": "chat", "latency": 10.0 + i}
    row.update(overrides)
    return row


def drain(source: SqlSource, cursor: Any, limit: int) -> tuple[list[SourceBatch], Any]:
    """Read until caught up, passing the cursor through JSON as the store would."""
    batches = []
    for _ in range(1000):
        batch = source.read(cursor, limit)
        if batch.rows_read == 0:
            assert batch.cursor == cursor
            return batches, cursor
        assert batch.rows_read <= limit
        batches.append(batch)
        cursor = json.loads(json.dumps(batch.cursor))
    raise AssertionError("source never caught up")


def ids(batches: list[SourceBatch]) -> list[str]:
    return [r.request_id for b in batches for r in b.records]


# -- mapping ---------------------------------------------------------------------------------
def test_maps_the_apps_own_column_names(db: Db, make_source: Callable[..., SqlSource]) -> None:
    table = app_table(db)
    db.insert(table, [app_row(i, (BASE + timedelta(seconds=i)).replace(tzinfo=None))
                      for i in range(3)])
    batch = make_source().read(None, 10)

    assert batch.rows_read == 3 and batch.rejections == []
    first = batch.records[0]
    assert first.request_id == "r000"
    assert first.timestamp == BASE and first.timestamp.tzinfo is not None
    assert first.question == "question 0?"
    assert first.contexts == ("passage 0a", "passage 0b")
    assert first.answer == "answer 0"
    assert first.route == "chat" and first.latency_ms == 10.0
    # Optional fields the table has no column for are simply absent.
    assert first.model is None and first.metadata == {}
    json.dumps(batch.cursor)  # the store keeps it as JSON
    assert batch.cursor is not None and batch.cursor["request_id"] == {"type": "str",
                                                                       "value": "r002"}


def test_build_source_from_config(db: Db) -> None:
    table = app_table(db)
    db.insert(table, [app_row(0, BASE.replace(tzinfo=None))])
    # transaction_wait 0: the read must not wait on other tests' transactions in flight on
    # the same PostgreSQL cluster.
    config = Config.model_validate({"source": {
        "kind": "sql", "sql": {"url": db.url, "table": db.table_name, "transaction_wait": "0s"},
        "columns": APP_COLUMNS.model_dump(), "max_field_chars": 1000}})
    source = build_source(config)
    try:
        assert isinstance(source, SqlSource)
        assert source.limits.max_field_chars == 1000
        assert [r.request_id for r in source.read(None, 5).records] == ["r000"]
    finally:
        source.close()


def test_identifiers_are_quoted_not_pasted(db: Db, make_source: Callable[..., SqlSource]) -> None:
    name = f'{db.table_name} Log "v2"; drop table x'
    table = db.create(Column("Request ID", Text), Column("created at", DateTime()),
                      Column("Question", Text), Column("docs", Text), Column("Answer", Text),
                      name=name)
    db.insert(table, [{"Request ID": "a", "created at": BASE.replace(tzinfo=None),
                       "Question": "q?", "docs": "[]", "Answer": "ans"}])
    columns = ColumnMap(request_id="Request ID", timestamp="created at", question="Question",
                        contexts="docs", answer="Answer")
    batch = make_source(columns, table=name).read(None, 5)
    assert [r.request_id for r in batch.records] == ["a"]
    assert batch.records[0].contexts == ()


# -- configuration errors --------------------------------------------------------------------
def test_unknown_required_column_names_the_key_and_table(
        db: Db, make_source: Callable[..., SqlSource]) -> None:
    app_table(db)
    columns = APP_COLUMNS.model_copy(update={"question": "prompt_text"})
    with pytest.raises(ConfigError) as info:
        make_source(columns)
    assert info.value.key == "source.columns.question"
    assert "prompt_text" in str(info.value) and db.table_name in str(info.value)


def test_renamed_optional_column_must_exist_default_one_need_not(db: Db) -> None:
    app_table(db)
    # As in the shipped config: every optional field spelled out under its own name, and
    # the table has no "model", "status", ... columns: they are simply not read.
    columns = {**ColumnMap().model_dump(), **APP_COLUMNS.model_dump()}
    sql = {"url": db.url, "table": db.table_name}
    build_source(Config.model_validate(
        {"source": {"kind": "sql", "sql": sql, "columns": columns}})).close()
    # Renamed to a column the table lacks: a typo, reported with its key.
    config = Config.model_validate(
        {"source": {"kind": "sql", "sql": sql, "columns": {**columns, "status": "http_sttus"}}})
    with pytest.raises(ConfigError) as info:
        build_source(config)
    assert info.value.key == "source.columns.status"
    assert "http_sttus" in str(info.value)


def test_missing_table(db: Db, make_source: Callable[..., SqlSource]) -> None:
    with db.engine.connect():  # the database exists (a SQLite source is never created)...
        pass
    with pytest.raises(ConfigError) as info:  # ...but not the table
        make_source()
    assert info.value.key == "source.sql.table"


# -- incremental reading ---------------------------------------------------------------------
TS_KINDS: dict[str, tuple[Callable[[], TypeEngine[Any]], Callable[[datetime], Any]]] = {
    "datetime": (DateTime, lambda t: t.replace(tzinfo=None)),
    "datetime_tz": (lambda: DateTime(timezone=True), lambda t: t),
    "iso_text": (Text, lambda t: t.isoformat().replace("+00:00", "Z")),
    "epoch_int": (BigInteger, lambda t: int(t.timestamp())),
    "epoch_ms": (BigInteger, lambda t: int(t.timestamp() * 1000)),
    "epoch_float": (Float, lambda t: t.timestamp() + 0.25),
}


@pytest.mark.parametrize("ts_kind", list(TS_KINDS))
def test_incremental_reads_ties_appends_and_restarts(
        db: Db, make_source: Callable[..., SqlSource], ts_kind: str) -> None:
    ts_type, to_db = TS_KINDS[ts_kind]
    table = app_table(db, ts_type=ts_type())
    # Three rows per timestamp, inserted in random order: slices of 4 split every tie group.
    rows = [app_row(i, to_db(BASE + timedelta(seconds=i // 3))) for i in range(20)]
    random.Random(7).shuffle(rows)
    # NULL timestamp or request id: cannot be placed on the watermark, never read.
    rows += [app_row(900, None), app_row(901, to_db(BASE), req_uuid=None)]
    db.insert(table, rows)

    source = make_source()
    first = source.read(None, 4)
    assert ids([first]) == ["r000", "r001", "r002", "r003"]
    batches, cursor = drain(source, json.loads(json.dumps(first.cursor)), 4)
    got = ids([first, *batches])
    assert got == [f"r{i:03d}" for i in range(20)]  # none twice, none skipped, in order
    assert sum(b.rows_read for b in batches) + first.rows_read == 20

    # Appended rows, including one tying the last timestamp with a larger id, are picked up,
    # also by a new instance given the saved cursor (a restarted sampler).
    last_ts = BASE + timedelta(seconds=19 // 3)
    db.insert(table, [app_row(25, to_db(last_ts + timedelta(seconds=5))),
                      app_row(20, to_db(last_ts)),
                      app_row(21, to_db(last_ts + timedelta(seconds=1)))])
    restarted = make_source()
    more, cursor = drain(restarted, cursor, 2)
    assert ids(more) == ["r020", "r021", "r025"]
    assert restarted.read(cursor, 10).rows_read == 0


def test_bad_rows_are_rejected_and_good_rows_around_them_come_through(
        db: Db, make_source: Callable[..., SqlSource]) -> None:
    table = app_table(db, latency_type=Text())

    def at(i: int) -> datetime:
        return (BASE + timedelta(seconds=i)).replace(tzinfo=None)

    rows = [
        app_row(0, at(0), latency="12.5"),
        app_row(1, at(1), user_question=None),
        app_row(2, at(2), req_uuid=""),
        app_row(3, at(3), retrieved_docs="[1, 2]"),
        app_row(4, at(4), retrieved_docs="[oops"),
        app_row(5, at(5), llm_output="x" * 150),
        app_row(6, at(6), latency="fast"),
        app_row(7, at(7), latency=None),
    ]
    db.insert(table, rows)
    source = make_source(limits=RowLimits(max_field_chars=100))

    batches, cursor = drain(source, None, 3)
    # An optional field that cannot be read ("fast" as a latency) costs the field, not the row.
    assert ids(batches) == ["r000", "r006", "r007"]
    assert batches[0].records[0].latency_ms == 12.5
    assert batches[-1].records[-1].latency_ms is None
    assert [(d.field, d.reason, d.row_ref) for b in batches for d in b.dropped] == [
        ("latency_ms", "wrong_type", "r006")]
    rejected = [(e.reason, e.field, e.row_ref) for b in batches for e in b.rejections]
    assert rejected[0] == ("missing_field", "question", "r001")
    assert rejected[1][:2] == ("empty_field", "request_id")
    assert db.table_name in rejected[1][2]  # no id: named by its place in the table
    assert rejected[2:] == [("bad_contexts", "contexts", "r003"),
                            ("bad_contexts", "contexts", "r004"),
                            ("oversized", "answer", "r005")]
    assert sum(b.rows_read for b in batches) == 8
    assert cursor["request_id"]["value"] == "r007"  # the watermark moved past every row


# -- PostgreSQL native types -----------------------------------------------------------------
@pytest.mark.postgres
@pytest.mark.integration
@pytest.mark.parametrize("db", ["postgres"], indirect=True)
@pytest.mark.parametrize("native", ["array", "jsonb"])
def test_contexts_as_native_postgres_types(
        db: Db, make_source: Callable[..., SqlSource], native: str) -> None:
    from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

    table = db.create(
        Column("req_uuid", UUID(as_uuid=True)),
        Column("created_at", DateTime(timezone=True)),
        Column("user_question", Text),
        Column("retrieved_docs", ARRAY(Text) if native == "array" else JSONB),
        Column("llm_output", Text),
    )
    ids_in = sorted(uuid.uuid4() for _ in range(4))
    bad = [1, 2] if native == "jsonb" else None
    db.insert(table, [
        {"req_uuid": ids_in[0], "created_at": BASE, "user_question": "q0",
         "retrieved_docs": ["a", "b"], "llm_output": "a0"},
        {"req_uuid": ids_in[1], "created_at": BASE, "user_question": "q1",
         "retrieved_docs": [], "llm_output": "a1"},
        {"req_uuid": ids_in[2], "created_at": BASE, "user_question": "q2",
         "retrieved_docs": bad, "llm_output": "a2"},
        {"req_uuid": ids_in[3], "created_at": BASE + timedelta(seconds=1),
         "user_question": "q3", "retrieved_docs": ["c"], "llm_output": "a3"},
    ])
    source = make_source(APP_COLUMNS.model_copy(update={"latency_ms": "latency_ms"}))
    batches, cursor = drain(source, None, 2)
    records = [r for b in batches for r in b.records]
    assert [r.request_id for r in records] == [str(ids_in[0]), str(ids_in[1]), str(ids_in[3])]
    assert [r.contexts for r in records] == [("a", "b"), (), ("c",)]
    rejected = [(e.reason, e.field) for b in batches for e in b.rejections]
    expected_reason = "bad_contexts" if native == "jsonb" else "missing_field"
    assert rejected == [(expected_reason, "contexts")]
    assert cursor["request_id"] == {"type": "uuid", "value": str(ids_in[3])}
    assert cursor["pos"]["type"] == "datetime"


def test_schema_qualified_table(db: Db) -> None:
    table = app_table(db)
    db.insert(table, [app_row(0, BASE.replace(tzinfo=None))])
    schema = "main" if db.kind == "sqlite" else "public"
    source = SqlSource("app", db.url, db.table_name, schema, APP_COLUMNS, RowLimits())
    try:
        assert ids([source.read(None, 5)]) == ["r000"]
    finally:
        source.close()


def test_unreachable_database_is_transient() -> None:
    with pytest.raises(TransientError) as info:
        SqlSource("app", "postgresql+psycopg://postgres@127.0.0.1:1/test?connect_timeout=2",
                  "llm_requests")
    assert info.value.kind == "unavailable"


def test_choosing_a_source_imports_none_of_another_sources_dependencies() -> None:
    # Every source module is imported for its declaration (evaluator.plugins), so each must
    # keep its heavy dependencies out of module level: a SQL deployment never loads datasets.
    code = (
        "import sys\n"
        "from evaluator.config import Config\n"
        "from evaluator.sources import build_source\n"
        "try:\n"
        "    build_source(Config.model_validate({'source': {'kind': 'sql', 'sql': {"
        "'url': 'sqlite://', 'table': 'missing'}}}))\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__)\n"
        "print('datasets' in sys.modules, 'pyarrow' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    assert out == ["ConfigError", "False", "False"]


# -- cursor modes: the order is time, whatever the column holds --------------------------------
def iso_with_offset(t: datetime, hours: int) -> str:
    """``t`` written in a zone ``hours`` from UTC, as apps in several regions do."""
    from datetime import timezone

    return t.astimezone(timezone(timedelta(hours=hours))).isoformat()


class Seen:
    """What the sampler keeps in the store for a lookback: the ids read, by log time."""

    def __init__(self) -> None:
        self.ids: dict[str, dict[datetime, int]] = {}

    def __call__(self, ids: Any) -> dict[str, dict[datetime, int]]:
        return {i: self.ids[i] for i in ids if i in self.ids}

    def take(self, batch: SourceBatch) -> None:
        for rid, when in batch.read_ids:
            times = self.ids.setdefault(rid, {})
            times[when] = times.get(when, 0) + 1
        if batch.forget_read_before is not None:
            horizon = batch.forget_read_before
            self.ids = {i: kept for i, ts in self.ids.items()
                        if (kept := {t: n for t, n in ts.items() if t >= horizon})}


def drain_seen(source: SqlSource, cursor: Any, limit: int,
               seen: Seen) -> tuple[list[SourceBatch], Any]:
    batches = []
    for _ in range(1000):
        batch = source.read(cursor, limit, seen=seen)
        seen.take(batch)
        cursor = json.loads(json.dumps(batch.cursor))
        if batch.rows_read == 0:
            return batches, cursor
        batches.append(batch)
    raise AssertionError("source never caught up")


def test_timestamps_in_several_time_zones_are_ordered_as_times(
        db: Db, make_source: Callable[..., SqlSource]) -> None:
    # Finding 1 of issue 7: the watermark compared the column's text, so of 300 rows appended
    # later in +00:00, +01:00 and -05:00 only the +01:00 third was read.
    table = app_table(db, ts_type=Text())
    db.insert(table, [app_row(i, iso_with_offset(BASE + timedelta(seconds=i), 0))
                      for i in range(10)])
    source = make_source()
    batches, cursor = drain(source, None, 4)
    assert len(ids(batches)) == 10

    later = BASE + timedelta(seconds=10)
    rows = [app_row(100 + i, iso_with_offset(later + timedelta(seconds=i), (0, 1, -5)[i % 3]),
                    req_uuid=f"late{i:03d}") for i in range(300)]
    random.Random(3).shuffle(rows)
    db.insert(table, rows)
    more, cursor = drain(source, cursor, 64)
    got = [r.request_id for b in more for r in b.records]
    assert sorted(got) == sorted(f"late{i:03d}" for i in range(300))
    assert len(got) == len(set(got))
    times = [r.timestamp for b in more for r in b.records]
    assert times == sorted(times)  # read in the order of time, not of text


def test_a_garbage_timestamp_is_reported_once_and_never_becomes_the_cursor(
        db: Db, make_source: Callable[..., SqlSource]) -> None:
    # Finding 2: "yesterday-ish" sorted after every "2026-..." text, became the watermark,
    # and no later row was ever read.
    table = app_table(db, ts_type=Text())
    db.insert(table, [app_row(0, iso_with_offset(BASE, 0)),
                      app_row(1, "yesterday-ish"),
                      app_row(2, iso_with_offset(BASE + timedelta(seconds=2), 0)),
                      app_row(3, None)])
    source = make_source()
    first = source.read(None, 10)
    assert ids([first]) == ["r000", "r002"]
    assert [(e.reason, e.field, e.row_ref) for e in first.rejections] == [
        ("no_position", "timestamp", "r001"), ("no_position", "timestamp", "r003")]
    assert first.unplaceable == 2
    cursor = json.loads(json.dumps(first.cursor))

    db.insert(table, [app_row(4, iso_with_offset(BASE + timedelta(seconds=4), 2))])
    restarted = SqlSource("app", db.url, db.table_name, None, APP_COLUMNS, RowLimits())
    try:
        second = restarted.read(cursor, 10)
        assert ids([second]) == ["r004"]  # later rows are still read
        assert second.rejections == []  # and the bad ones are not reported twice
        assert second.unplaceable == 2  # but still counted
    finally:
        restarted.close()


def test_incrementing_mode_follows_the_id_whatever_the_timestamps_say(
        db: Db, make_source: Callable[..., SqlSource]) -> None:
    table = app_table(db, ts_type=Text())
    stamps = [iso_with_offset(BASE + timedelta(minutes=m), h)
              for m, h in ((5, 0), (1, 1), (9, -5), (0, 0))]
    db.insert(table, [app_row(i, ts) for i, ts in enumerate(stamps)])
    source = SqlSource("app", db.url, db.table_name, None, APP_COLUMNS, RowLimits(),
                       mode="incrementing", incrementing_column="id")
    try:
        batches, cursor = drain(source, None, 3)
        assert ids(batches) == ["r000", "r001", "r002", "r003"]  # insertion order
        assert cursor["mode"] == "incrementing" and cursor["column"] == "id"
        db.insert(table, [app_row(9, "not a time at all")])
        more, _ = drain(source, cursor, 3)
        # The timestamp is a field like any other here: a bad one rejects the row, in order.
        assert [(e.reason, e.row_ref) for b in more for e in b.rejections] == [
            ("bad_timestamp", "r009")]
        assert "incrementing on column 'id'" in source.describe_cursor(cursor)
    finally:
        source.close()


def test_incrementing_column_must_exist_and_grow(db: Db) -> None:
    app_table(db)
    with pytest.raises(ConfigError) as info:
        SqlSource("app", db.url, db.table_name, None, APP_COLUMNS, mode="incrementing",
                  incrementing_column="seq")
    assert info.value.key == "source.sql.incrementing_column"
    with pytest.raises(ConfigError) as info:
        SqlSource("app", db.url, db.table_name, None, APP_COLUMNS, mode="incrementing",
                  incrementing_column="route")  # text: no order of insertion
    assert info.value.key == "source.sql.incrementing_column" and "number" in str(info.value)


@pytest.mark.parametrize("ts_kind", ["datetime", "iso_text", "epoch_ms"])
def test_lookback_reads_rows_committed_late_once(db: Db, ts_kind: str) -> None:
    ts_type, to_db = TS_KINDS[ts_kind]
    table = app_table(db, ts_type=ts_type())
    db.insert(table, [app_row(i, to_db(BASE + timedelta(seconds=i))) for i in range(20)])
    source = SqlSource("app", db.url, db.table_name, None, APP_COLUMNS, RowLimits(),
                       lookback_s=60.0)
    seen = Seen()
    try:
        batches, cursor = drain_seen(source, None, 7, seen)
        assert ids(batches) == [f"r{i:03d}" for i in range(20)]
        assert all(b.late == 0 for b in batches)  # re-reading the window finds nothing new

        # Committed after the cursor passed their time: 30 s and 2 s behind it, and one
        # older than the window (documented: lost to a lookback this short).
        db.insert(table, [app_row(50, to_db(BASE + timedelta(seconds=19 - 30))),
                          app_row(51, to_db(BASE + timedelta(seconds=17))),
                          app_row(52, to_db(BASE + timedelta(seconds=19 - 61)))])
        late, cursor = drain_seen(source, cursor, 7, seen)
        assert sorted(ids(late)) == ["r050", "r051"]
        assert sum(b.late for b in late) == 2
        again, _ = drain_seen(source, cursor, 7, seen)
        assert again == []  # read once
        # What the store keeps is bounded by the window.
        assert min(min(ts) for ts in seen.ids.values()) >= BASE + timedelta(seconds=19 - 60)
    finally:
        source.close()


def test_a_second_row_with_a_read_id_is_a_duplicate(db: Db) -> None:
    table = app_table(db)
    at = [(BASE + timedelta(seconds=i)).replace(tzinfo=None) for i in range(4)]
    db.insert(table, [app_row(0, at[0]), app_row(1, at[1]), app_row(0, at[2]),
                      app_row(2, at[3])])
    source = SqlSource("app", db.url, db.table_name, None, APP_COLUMNS, RowLimits(),
                       lookback_s=60.0)
    seen = Seen()
    try:
        batches, _ = drain_seen(source, None, 2, seen)  # the copy is in another read
        assert ids(batches) == ["r000", "r001", "r002"]
        dupes = [(e.reason, e.row_ref) for b in batches for e in b.rejections]
        assert dupes == [("duplicate_id", "r000")]
    finally:
        source.close()


def test_cursor_of_an_earlier_version_carries_on(db: Db, make_source: Callable[..., SqlSource]) -> None:
    table = app_table(db, ts_type=Text())
    db.insert(table, [app_row(i, iso_with_offset(BASE + timedelta(seconds=i), 0))
                      for i in range(4)])
    old = {"ts": {"type": "str", "value": iso_with_offset(BASE + timedelta(seconds=1), 0)},
           "request_id": {"type": "str", "value": "r001"}}
    assert ids([make_source().read(old, 10)]) == ["r002", "r003"]


def test_cursor_at_a_time(db: Db, make_source: Callable[..., SqlSource]) -> None:
    table = app_table(db, ts_type=Text())
    db.insert(table, [app_row(i, iso_with_offset(BASE + timedelta(seconds=i), -5))
                      for i in range(5)])
    source = make_source()
    cursor = source.cursor_at(BASE + timedelta(seconds=3))
    assert ids([source.read(json.loads(json.dumps(cursor)), 10)]) == ["r003", "r004"]
    assert "at or after 2024-05-01T12:00:03+00:00" in source.describe_cursor(cursor)


def test_a_late_row_with_an_id_read_before_is_a_duplicate_not_dropped(db: Db) -> None:
    # Found by tests/test_properties.py: the lookback matched late rows by request id only,
    # so a second row with an id already read, committed late, vanished without a word.
    table = app_table(db)
    at = [(BASE + timedelta(seconds=i)).replace(tzinfo=None) for i in range(3)]
    db.insert(table, [app_row(0, at[0]), app_row(1, at[2])])
    source = SqlSource("app", db.url, db.table_name, None, APP_COLUMNS, RowLimits(),
                       lookback_s=60.0)
    seen = Seen()
    try:
        _, cursor = drain_seen(source, None, 10, seen)
        db.insert(table, [app_row(0, at[1])])  # r000 again, behind the cursor
        late, cursor = drain_seen(source, cursor, 10, seen)
        assert [(e.reason, e.row_ref) for b in late for e in b.rejections] == [
            ("duplicate_id", "r000")]
        assert sum(b.late for b in late) == 1
        assert drain_seen(source, cursor, 10, seen)[0] == []  # and only once
    finally:
        source.close()


@pytest.mark.parametrize("mode", ["timestamp", "incrementing"])
def test_rows_committed_behind_the_reach_of_the_cursor_are_counted_as_missed(
        db: Db, mode: str) -> None:
    # Loud, not silent: a row committed after the cursor passed it by more than the lookback
    # (or an id below the cursor committed late) cannot be read in order, but the audit sees
    # that the table holds more rows behind the cursor than it consumed.
    table = app_table(db)
    at = [(BASE + timedelta(seconds=i)).replace(tzinfo=None) for i in range(200)]
    db.insert(table, [app_row(i, at[100 + i]) for i in range(5)])
    kwargs: dict[str, Any] = ({"lookback_s": 60.0} if mode == "timestamp"
                              else {"mode": "incrementing", "incrementing_column": "id"})
    source = SqlSource("app", db.url, db.table_name, None, APP_COLUMNS, RowLimits(),
                       unplaceable_check_s=0.0, **kwargs)
    seen = Seen()
    try:
        batches, cursor = drain_seen(source, None, 10, seen)
        assert batches[0].missed == 0
        if mode == "timestamp":  # 100 s behind the cursor, the window is 60 s
            db.insert(table, [app_row(50, at[4])])
        else:  # an id handed out before the others, committed after them
            db.insert(table, [{**app_row(50, at[150]), "id": 0}])
        batch = source.read(cursor, 10, seen=seen)
        assert batch.rows_read == 0 and batch.missed == 1
    finally:
        source.close()


def test_a_timestamp_far_in_the_future_does_not_become_the_cursor(db: Db) -> None:
    # Found by tests/test_properties.py: epoch 9e13 ms (year 4821) became the cursor, and
    # every later row was behind it by more than the lookback.
    table = app_table(db, ts_type=Text())
    now = BASE + timedelta(hours=1)
    db.insert(table, [app_row(0, iso_with_offset(BASE, 0)),
                      app_row(1, "4821-01-01T00:00:00+00:00"),
                      app_row(2, iso_with_offset(now + timedelta(hours=3), 0))])  # clock skew
    source = SqlSource("app", db.url, db.table_name, None, APP_COLUMNS, RowLimits(),
                       lookback_s=60.0, unplaceable_check_s=0.0, wall=lambda: now)
    seen = Seen()
    try:
        batches, cursor = drain_seen(source, None, 10, seen)
        assert ids(batches) == ["r000", "r002"]  # hours ahead is within max_future (1 day)
        # Committed late, 10 s behind the cursor: read from the lookback window (had the year
        # 4821 row become the cursor, it would be centuries behind and missed).
        db.insert(table, [app_row(3, iso_with_offset(now + timedelta(hours=3, seconds=-10), 0))])
        late, _ = drain_seen(source, cursor, 10, seen)
        assert ids(late) == ["r003"]
        assert late[-1].future == 1 and late[-1].missed == 0
    finally:
        source.close()


def test_passages_logged_as_objects_are_read_with_the_configured_text_key(db: Db) -> None:
    # Issue 16: a table whose contexts are objects (LangChain documents, LlamaIndex nodes, an
    # app's own shape) lost every row as bad_contexts ("item 0 is dict, not a string").
    table = app_table(db)
    db.insert(table, [
        app_row(0, BASE.replace(tzinfo=None), retrieved_docs=json.dumps(
            [{"page_content": "p0", "metadata": {"source": "kb/a.md"}},
             {"node": {"text": "p1"}, "score": 0.4}])),
        app_row(1, (BASE + timedelta(seconds=1)).replace(tzinfo=None), retrieved_docs=json.dumps(
            [{"chunk": {"body": "p2"}, "score": 0.9}])),
    ])

    def read(**source: Any) -> SourceBatch:
        # transaction_wait 0: what is read must not depend on other tests' transactions in
        # flight on the same PostgreSQL cluster (the source waits for any of them).
        config = Config.model_validate({"source": {
            "kind": "sql", "sql": {"url": db.url, "table": db.table_name,
                                   "transaction_wait": "0s"},
            "columns": APP_COLUMNS.model_dump(), **source}})
        built = build_source(config)
        try:
            return built.read(None, 10)
        finally:
            built.close()

    plain = read()
    assert [r.contexts for r in plain.records] == [("p0", "p1")]
    assert [(e.row_ref, e.reason) for e in plain.rejections] == [("r001", "bad_contexts")]
    assert "set source.context_text_key" in plain.rejections[0].detail
    keyed = read(context_text_key="chunk.body")
    assert [r.contexts for r in keyed.records] == [("p2",)]
    assert [e.row_ref for e in keyed.rejections] == ["r000"]


# -- issue 16: rows completed later, settled rows, transactions in flight, edge rows ------------

class Wall:
    """A wall clock the test moves."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.mark.parametrize("mode", ["timestamp", "incrementing"])
def test_an_answer_written_later_is_read_when_it_is_there(db: Db, mode: str) -> None:
    # Finding 1: a row inserted when the request starts (answer NULL) and completed by an
    # UPDATE was rejected missing_field at first read and never read again.
    table = app_table(db)
    at = [(BASE + timedelta(seconds=i)).replace(tzinfo=None) for i in range(10)]
    db.insert(table, [app_row(0, at[0], llm_output=None), app_row(1, at[1]),
                      app_row(2, at[2], llm_output=None)])
    wall = Wall(BASE + timedelta(seconds=40))
    kwargs: dict[str, Any] = ({} if mode == "timestamp"
                              else {"mode": "incrementing", "incrementing_column": "id"})
    source = SqlSource("app", db.url, db.table_name, None, APP_COLUMNS, RowLimits(),
                       settle_s=30.0, complete_within_s=600.0, wall=wall, **kwargs)
    try:
        first = source.read(None, 10)
        assert ids([first]) == ["r001"] and first.rejections == []
        assert first.rows_read == 3 and first.pending == 2
        cursor = json.loads(json.dumps(first.cursor))
        with db.engine.begin() as conn:
            conn.execute(table.update().where(table.c.req_uuid == "r000")
                         .values(llm_output="the answer, streamed"))
        wall.now += timedelta(seconds=5)
        second = source.read(cursor, 10)
        assert [r.answer for r in second.records] == ["the answer, streamed"]
        assert second.rows_read == 0 and second.pending == 1
        cursor = json.loads(json.dumps(second.cursor))
        wall.now = BASE + timedelta(seconds=2 + 600)  # r002's deadline
        third = source.read(cursor, 10)
        assert third.records == []
        assert [(e.reason, e.field, e.row_ref) for e in third.rejections] == [
            ("incomplete", "answer", "r002")]
        assert "source.sql.complete_within" in third.rejections[0].detail
        assert third.pending == 0
        cursor = json.loads(json.dumps(third.cursor))
        assert "pending" not in cursor
        assert source.read(cursor, 10).rejections == []  # decided once
    finally:
        source.close()


@pytest.mark.parametrize("mode", ["timestamp", "incrementing"])
def test_a_row_is_decided_once_it_has_settled(db: Db, mode: str) -> None:
    # A thumbs-down written a few seconds after the answer must be there when the row is
    # decided: rows younger than `settle` wait (and in incrementing mode, hold the ones after).
    table = db.create(
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("req_uuid", Text), Column("created_at", DateTime()),
        Column("user_question", Text), Column("retrieved_docs", Text),
        Column("llm_output", Text), Column("feedback", Integer))
    now = BASE + timedelta(minutes=5)
    stamps = [now - timedelta(seconds=s) for s in (90, 20, 45)]  # the second is young
    db.insert(table, [{**app_row(i, t.replace(tzinfo=None)), "feedback": None}
                      for i, t in enumerate(stamps)])
    wall = Wall(now)
    kwargs: dict[str, Any] = ({} if mode == "timestamp"
                              else {"mode": "incrementing", "incrementing_column": "id"})
    columns = APP_COLUMNS.model_copy(update={"latency_ms": "latency_ms"})
    source = SqlSource("app", db.url, db.table_name, None, columns, RowLimits(), settle_s=30.0,
                       complete_within_s=600.0, wall=wall, **kwargs)
    try:
        first = source.read(None, 10)
        expected = ["r000", "r002"] if mode == "timestamp" else ["r000"]
        assert ids([first]) == expected
        cursor = json.loads(json.dumps(first.cursor))
        with db.engine.begin() as conn:
            conn.execute(table.update().where(table.c.req_uuid == "r001").values(feedback=-1))
        assert source.read(cursor, 10).rows_read == 0  # still young
        wall.now += timedelta(seconds=15)
        second = source.read(cursor, 10)
        assert [(r.request_id, r.feedback) for r in second.records] == (
            [("r001", -1)] if mode == "timestamp" else [("r001", -1), ("r002", None)])
    finally:
        source.close()


def test_a_timestamp_beyond_max_future_is_rejected_once_and_never_read(db: Db) -> None:
    # Finding 7: a row dated year 5138 waited forever in source_future_rows, neither decided
    # nor visible in `explain`.
    table = app_table(db, ts_type=Text())
    now = BASE + timedelta(hours=1)
    db.insert(table, [app_row(0, iso_with_offset(BASE, 0)),
                      app_row(1, "5138-01-01T00:00:00+00:00")])
    wall = Wall(now)
    source = SqlSource("app", db.url, db.table_name, None, APP_COLUMNS, RowLimits(),
                       unplaceable_check_s=0.0, wall=wall)
    try:
        first = source.read(None, 10)
        assert ids([first]) == ["r000"]
        assert [(e.reason, e.field, e.row_ref) for e in first.rejections] == [
            ("future_timestamp", "timestamp", "r001")]
        assert first.future == 1
        cursor = json.loads(json.dumps(first.cursor))
        again = source.read(cursor, 10)
        assert again.rejections == [] and again.future == 1  # reported once, still counted
        cursor = json.loads(json.dumps(again.cursor))
        wall.now = datetime(5138, 1, 2, tzinfo=UTC)  # its time has come: it was decided
        late = source.read(cursor, 10)
        assert late.records == [] and late.rejections == [] and late.rows_read == 1
    finally:
        source.close()


def test_a_row_without_a_request_id_is_a_rejection_row(db: Db) -> None:
    # Finding 7: a NULL request id was only counted (source_unplaceable_rows), while the log
    # said it was listed as a rejection.
    table = app_table(db)
    at = (BASE).replace(tzinfo=None)
    db.insert(table, [app_row(0, at), app_row(1, at, req_uuid=None)])
    source = SqlSource("app", db.url, db.table_name, None, APP_COLUMNS, RowLimits(),
                       unplaceable_check_s=0.0)
    try:
        first = source.read(None, 10)
        assert ids([first]) == ["r000"]
        assert [(e.reason, e.field) for e in first.rejections] == [
            ("missing_field", "request_id")]
        assert first.rejections[0].row_ref.startswith(f"{db.table_name}[created_at = ")
        assert first.unplaceable == 1
        again = source.read(json.loads(json.dumps(first.cursor)), 10)
        assert again.rejections == []  # once
    finally:
        source.close()


@pytest.mark.postgres
@pytest.mark.integration
@pytest.mark.parametrize("db", ["postgres"], indirect=True)
@pytest.mark.parametrize("mode", ["timestamp", "incrementing"])
@pytest.mark.serial  # any write transaction in flight on the cluster holds the read back
def test_a_transaction_in_flight_holds_the_read_until_it_commits(db: Db, mode: str) -> None:
    # Finding 2: a transaction that took id 1 and committed after id 2 was read lost its row
    # for good (incrementing mode; timestamp mode with a short lookback alike).
    table = app_table(db)
    kwargs: dict[str, Any] = ({"lookback_s": 0.0} if mode == "timestamp"
                              else {"mode": "incrementing", "incrementing_column": "id"})
    clock = [0.0]
    source = SqlSource("app", db.url, db.table_name, None, APP_COLUMNS, RowLimits(),
                       transaction_wait_s=60.0, clock=lambda: clock[0], **kwargs)
    slow = db.engine.connect()
    try:
        def row(i: int) -> dict[str, Any]:
            return app_row(i, (BASE + timedelta(seconds=i)).replace(tzinfo=None))

        db.insert(table, [row(0)])
        tx = slow.begin()
        slow.execute(table.insert(), [row(1)])  # takes id 2 and time +1 s, commits last
        db.insert(table, [row(2)])
        first = source.read(None, 10)
        assert ids([first]) == ["r000"] and first.waiting_transactions == 1
        cursor = json.loads(json.dumps(first.cursor))
        assert source.read(cursor, 10).rows_read == 0  # still in flight: wait
        tx.commit()
        second = source.read(cursor, 10)
        assert ids([second]) == ["r001", "r002"] and second.waiting_transactions == 0

        # A transaction in flight for longer than transaction_wait is not waited for.
        tx = slow.begin()
        slow.execute(table.insert(), [row(3)])
        db.insert(table, [row(4)])
        cursor = json.loads(json.dumps(second.cursor))
        assert source.read(cursor, 10).rows_read == 0
        clock[0] += 61.0
        third = source.read(cursor, 10)
        assert ids([third]) == ["r004"] and third.waiting_transactions == 0
        tx.rollback()
    finally:
        slow.close()
        source.close()


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_a_blob_in_a_text_column_is_decoded_like_a_blob_context(
        db: Db, make_source: Callable[..., SqlSource]) -> None:
    # Issue 16: SQLite lets a TEXT column hold a BLOB. A BLOB of contexts was decoded, a BLOB
    # question was rejected as wrong_type ("expected text, got bytes"): UTF-8 bytes are text
    # in every text field, and bytes that are not UTF-8 are rejected naming the field.
    table = app_table(db)

    def at(i: int) -> datetime:
        return (BASE + timedelta(seconds=i)).replace(tzinfo=None)

    db.insert(table, [
        app_row(0, at(0), user_question="¿qué pasó?".encode(), llm_output=b"answer 0",
                route=b"chat", retrieved_docs=json.dumps(["p0"]).encode()),
        app_row(1, at(1), user_question=b"\xff\xfe not utf-8"),
        app_row(2, at(2), llm_output=b"\xc3("),
        app_row(3, at(3), route=b"\xff"),
    ])
    batches, _ = drain(make_source(), None, 10)
    records = [r for b in batches for r in b.records]
    assert [(r.request_id, r.question, r.answer, r.route, r.contexts) for r in records] == [
        ("r000", "¿qué pasó?", "answer 0", "chat", ("p0",)), ("r003", "question 3?",
                                                             "answer 3", None, ("passage 3a",
                                                                                "passage 3b"))]
    rejected = [(e.row_ref, e.field, e.reason) for b in batches for e in b.rejections]
    assert rejected == [("r001", "question", "wrong_type"), ("r002", "answer", "wrong_type")]
    assert all("not valid UTF-8" in e.detail for b in batches for e in b.rejections)
    # An optional field's bad bytes cost the field, not the row.
    assert [(d.row_ref, d.field, d.reason) for b in batches for d in b.dropped] == [
        ("r003", "route", "wrong_type")]


@pytest.mark.parametrize("mode", ["timestamp", "incrementing"])
def test_check_config_says_what_a_mode_guarantees_with_concurrent_writers(
        db: Db, mode: str) -> None:
    # Finding 2: incrementing mode was called exact and check-config said nothing about
    # concurrent writers. SQLite has one writer at a time; PostgreSQL reads wait for
    # transactions in flight unless transaction_wait = 0, and then the note says what is lost.
    app_table(db)
    kwargs: dict[str, Any] = ({"lookback_s": 5.0} if mode == "timestamp"
                              else {"mode": "incrementing", "incrementing_column": "id"})
    waits = SqlSource("app", db.url, db.table_name, None, APP_COLUMNS, RowLimits(),
                      transaction_wait_s=120.0, **kwargs)
    blind = SqlSource("app", db.url, db.table_name, None, APP_COLUMNS, RowLimits(),
                      transaction_wait_s=0.0, **kwargs)
    try:
        assert waits.preflight_notes() == []
        notes = blind.preflight_notes()
        if db.kind == "sqlite":
            assert notes == []
        else:
            (note,) = notes
            assert note.key == "source.sql.transaction_wait" and not note.problem
            assert ("within the lookback (5 s)" if mode == "timestamp"
                    else "by a backfill") in note.text
            assert "waits for transactions in flight" in waits.describe()
    finally:
        waits.close()
        blind.close()
