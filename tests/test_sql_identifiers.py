"""Table, schema and column names from config reach SQL only quoted, never pasted as text.

A table literally named ``x"; DROP TABLE y; --`` with columns named like injections is read
correctly, a canary table beside it survives, and every statement the source sends holds those
names only in their quoted form. Names that do not exist are ConfigErrors naming the key, and
names that can only be mistakes (empty, control characters, over-long) are refused by config.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, DateTime, Engine, MetaData, Table, Text, create_engine, event, inspect
from sqlalchemy.schema import CreateSchema, DropSchema

from evaluator.config import ColumnMap, load_config
from evaluator.errors import ConfigError
from evaluator.sources.sql import SqlSource

HOSTILE_TABLE = 'x"; DROP TABLE y; --'
HOSTILE_SCHEMA = 's"; DROP TABLE y; --'
COLUMNS = ColumnMap(
    request_id='id"; DELETE FROM y; --',
    timestamp="select",                    # a reserved word
    question="q'); DROP TABLE y;--",
    contexts="ctx with space",
    answer="ответ 🙂",
    route='r"."s',
)
BASE = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
# A double-quoted identifier ("" escapes a quote) or a single-quoted literal ('' likewise).
QUOTED = re.compile(r'"(?:[^"]|"")*"|\'(?:[^\']|\'\')*\'')


def _make_tables(engine: Engine, schema: str | None) -> None:
    meta = MetaData()
    Table("y", meta, Column("v", Text)).create(engine)  # the canary, in the default schema
    app = Table(HOSTILE_TABLE, meta,
                Column(COLUMNS.request_id, Text, primary_key=True),
                Column(COLUMNS.timestamp, DateTime(timezone=True)),
                Column(COLUMNS.question, Text), Column(COLUMNS.contexts, Text),
                Column(COLUMNS.answer, Text), Column(COLUMNS.route, Text), schema=schema)
    app.create(engine)
    with engine.begin() as conn:
        conn.execute(meta.tables["y"].insert(), [{"v": "still here"}])
        conn.execute(app.insert(), [
            {COLUMNS.request_id: f'r{i}"; --', COLUMNS.timestamp: BASE + timedelta(seconds=i),
             COLUMNS.question: f"question {i}'; DROP TABLE y; --",
             COLUMNS.contexts: '["a passage"]', COLUMNS.answer: f"answer {i}",
             COLUMNS.route: "chat"}
            for i in range(5)])


def _tables(engine: Engine, schema: str | None = None) -> set[str]:
    return set(inspect(engine).get_table_names(schema=schema))


class Statements:
    """Every SQL statement any engine sends while recording."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    def __call__(self, conn: Any, cursor: Any, statement: str, params: Any, *rest: Any) -> None:
        self.seen.append((statement, conn.dialect))


@pytest.fixture
def statements() -> Iterator[Statements]:
    recorder = Statements()
    event.listen(Engine, "before_cursor_execute", recorder)
    try:
        yield recorder
    finally:
        event.remove(Engine, "before_cursor_execute", recorder)


def _assert_only_quoted(recorder: Statements) -> None:
    quoted_table = [s for s, d in recorder.seen
                    if d.identifier_preparer.quote_identifier(HOSTILE_TABLE) in s]
    assert any(s.lstrip().upper().startswith("SELECT") for s in quoted_table), recorder.seen
    for statement, _ in recorder.seen:
        # Outside quoted identifiers and string literals, no fragment of the names is left.
        rest = QUOTED.sub("…", statement)
        for fragment in ("DROP", "DELETE", ";", "--", "ответ", "with space"):
            assert fragment not in rest, f"a name reached SQL unquoted: {statement}"


def _read_all(source: SqlSource) -> list[Any]:
    records, cursor = [], None
    for _ in range(10):  # batches of 2: the cursor's bound values go through the query too
        batch = source.read(cursor, 2)
        assert not batch.rejections, batch.rejections
        records += batch.records
        cursor = batch.cursor
        if batch.rows_read == 0:
            return records
    raise AssertionError("the source never ran dry")


@pytest.fixture(params=[
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=[pytest.mark.postgres, pytest.mark.integration]),
])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    """(url, schema) of a database holding the hostile table and the canary."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'app.db'}"
        engine = create_engine(url)
        _make_tables(engine, None)
        engine.dispose()
        yield url, None
        return
    url = request.getfixturevalue("pg_url")  # confined to a fresh schema, dropped afterwards
    engine = create_engine(url)
    schema = f"{HOSTILE_SCHEMA} {uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.execute(CreateSchema(schema))
    try:
        _make_tables(engine, schema)
        yield url, schema
    finally:
        with engine.begin() as conn:
            conn.execute(DropSchema(schema, cascade=True))
        engine.dispose()


def test_a_table_named_like_an_injection_is_read_and_nothing_else_is_touched(
        database: tuple[str, str | None], statements: Statements) -> None:
    url, schema = database
    admin = create_engine(url)
    before = _tables(admin), _tables(admin, schema)
    source = SqlSource("app", url, HOSTILE_TABLE, schema, COLUMNS)
    try:
        records = _read_all(source)
    finally:
        source.close()
    _assert_only_quoted(statements)
    assert [r.request_id for r in records] == [f'r{i}"; --' for i in range(5)]
    assert records[3].question == "question 3'; DROP TABLE y; --"
    assert list(records[3].contexts) == ["a passage"] and records[3].route == "chat"
    assert (_tables(admin), _tables(admin, schema)) == before
    with admin.connect() as conn:
        assert conn.exec_driver_sql("SELECT v FROM y").scalars().all() == ["still here"]
    admin.dispose()


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a TOML basic string, for these names


def _write_config(tmp_path: Path, url: str, sql: dict[str, str],
                  columns: dict[str, str]) -> Path:
    mapped = {f: getattr(COLUMNS, f) for f in ("request_id", "timestamp", "question",
                                               "contexts", "answer", "route")} | columns
    path = tmp_path / "gw.toml"
    path.write_text("[source.sql]\n" + "".join(f"{k} = {_q(v)}\n" for k, v in
                                               ({"url": url, "table": HOSTILE_TABLE} | sql).items())
                    + "[source.columns]\n" + "".join(f"{k} = {_q(v)}\n"
                                                      for k, v in mapped.items()))
    return path


@pytest.mark.parametrize("sql,columns,key", [
    ({}, {}, None),
    ({"table": 'nope"; --'}, {}, "source.sql.table"),
    ({"schema": "no such schema"}, {}, "source.sql.schema"),
    ({}, {"question": "not a column"}, "source.columns.question"),
    ({}, {"model": "renamed model"}, "source.columns.model"),
], ids=["exists", "table", "schema", "required-column", "renamed-optional-column"])
def test_a_name_that_does_not_exist_is_a_config_error_naming_its_key(
        tmp_path: Path, sql: dict[str, str], columns: dict[str, str], key: str | None) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    engine = create_engine(url)
    _make_tables(engine, None)
    engine.dispose()
    config = load_config(_write_config(tmp_path, url, sql, columns), environ={})
    if key is None:
        SqlSource.from_config(config).close()
        return
    with pytest.raises(ConfigError) as caught:
        SqlSource.from_config(config).close()
    assert caught.value.key == key
    assert config.path is not None and config.path in str(caught.value)


@pytest.mark.parametrize("key,value,problem", [
    ("source.sql.table", '""', "must not be empty"),
    ("source.sql.table", '"   "', "must not be empty"),
    ("source.sql.table", '"a\\u0000b"', "control or invisible"),
    ("source.sql.schema", '"s\\nt"', "control or invisible"),
    ("source.columns.question", '"q\\u200bq"', "control or invisible"),
    ("source.columns.answer", '"' + "a" * 129 + '"', "at most 128"),
    ("source.columns.request_id", '""', "must not be empty"),
])
def test_names_that_can_only_be_mistakes_are_refused_at_load(
        tmp_path: Path, key: str, value: str, problem: str) -> None:
    section, _, name = key.rpartition(".")
    path = tmp_path / "gw.toml"
    path.write_text(f"[{section}]\n{name} = {value}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.key == key and problem in str(caught.value)


def test_odd_but_legal_names_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text('[source.sql]\ntable = "x\\"; DROP TABLE y; --"\nschema = "s p"\n'
                    '[source.columns]\nquestion = "ответ \'; --"\nanswer = "' + "a" * 128 + '"\n')
    config = load_config(path, environ={})
    assert config.source.sql.table == HOSTILE_TABLE
    assert config.source.sql.schema_ == "s p"
    assert config.source.columns.question == "ответ '; --"
