"""groundwatch needs nothing but SELECT on the source: the role of docs/deploy-sources.md.

On the real PostgreSQL server: a fresh LOGIN role gets exactly the documented grants on a fresh
schema and log table; the sql source reads every row through a URL for that role, and the role
cannot insert, update, delete or create. Role, schema and table are dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Column, DateTime, Engine, MetaData, Table, Text, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from evaluator.sources.sql import SqlSource

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

PG_URL = os.environ.get("GROUNDWATCH_TEST_PG_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BASE = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@dataclass
class ReadOnlySetup:
    admin: Engine
    role: str
    schema: str
    url: str  # the role's URL


def _documented_grants(role: str, database: str, schema: str, table: str) -> list[str]:
    """The statements of docs/deploy-sources.md, for these names (quoted: they are ours)."""
    return [
        f'CREATE ROLE "{role}" LOGIN',
        f'GRANT CONNECT ON DATABASE "{database}" TO "{role}"',
        f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"',
        f'GRANT SELECT ON "{schema}"."{table}" TO "{role}"',
        f'ALTER ROLE "{role}" SET default_transaction_read_only = on',
        f"ALTER ROLE \"{role}\" SET statement_timeout = '30s'",
    ]


@pytest.fixture
def readonly() -> Iterator[ReadOnlySetup]:
    base = make_url(PG_URL)
    tag = uuid.uuid4().hex[:12]
    role, schema = f"gw_reader_{tag}", f"gw_app_{tag}"
    admin = create_engine(base, poolclass=NullPool)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        logs = Table("llm_requests", MetaData(),
                     Column("request_id", Text, primary_key=True),
                     Column("timestamp", DateTime(timezone=True)), Column("question", Text),
                     Column("contexts", Text), Column("answer", Text), schema=schema)
        logs.create(admin)
        with admin.begin() as conn:
            conn.execute(logs.insert(), [
                {"request_id": f"r{i}", "timestamp": BASE + timedelta(seconds=i),
                 "question": f"question {i}", "contexts": '["a passage"]',
                 "answer": f"answer {i}"} for i in range(7)])
            for statement in _documented_grants(role, str(base.database), schema,
                                                "llm_requests"):
                conn.execute(text(statement))
        url = base.set(username=role, password=None).render_as_string(hide_password=False)
        yield ReadOnlySetup(admin, role, schema, url)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"),
                                  {"r": role}).scalar()
            if exists:
                conn.execute(text(f'DROP OWNED BY "{role}"'))  # revokes the CONNECT grant
                conn.execute(text(f'DROP ROLE "{role}"'))
        admin.dispose()


def test_the_sql_source_reads_through_a_select_only_role(readonly: ReadOnlySetup) -> None:
    source = SqlSource("app", readonly.url, "llm_requests", readonly.schema)
    try:
        first = source.read(None, 4)
        rest = source.read(first.cursor, 100)
        done = source.read(rest.cursor, 100)
    finally:
        source.close()
    assert not first.rejections and not rest.rejections
    ids = [r.request_id for r in first.records + rest.records]
    assert ids == [f"r{i}" for i in range(7)]
    assert done.rows_read == 0
    assert first.records[2].question == "question 2"


@pytest.mark.parametrize("statement", [
    "INSERT INTO {t} (request_id, question, contexts, answer) VALUES ('x', 'q', '[]', 'a')",
    "UPDATE {t} SET answer = 'changed'",
    "DELETE FROM {t}",
    'CREATE TABLE "{s}".gw_should_not_exist (x int)',
    "TRUNCATE {t}",
], ids=["insert", "update", "delete", "create", "truncate"])
def test_the_role_cannot_write(readonly: ReadOnlySetup, statement: str) -> None:
    sql = statement.format(t=f'"{readonly.schema}".llm_requests', s=readonly.schema)
    role = create_engine(readonly.url, poolclass=NullPool)
    try:
        with pytest.raises(DBAPIError) as caught, role.connect() as conn:
            # Past the session default too: the grants alone must refuse it.
            conn.execute(text("SET TRANSACTION READ WRITE"))
            conn.execute(text(sql))
            conn.commit()
        assert "permission denied" in str(caught.value.orig)
    finally:
        role.dispose()
    with readonly.admin.connect() as conn:
        assert conn.execute(text(
            f'SELECT count(*) FROM "{readonly.schema}".llm_requests WHERE answer LIKE '
            "'answer %'")).scalar() == 7
