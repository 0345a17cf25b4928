"""Shared fixtures.

Database URLs: ``sqlite_url`` is a file in the test's own tmp_path; ``pg_url`` points at the
real PostgreSQL server (``GROUNDWATCH_TEST_PG_URL``, default below) with every connection
confined to a fresh schema that is dropped afterwards, so tests never see each other's tables
and leave nothing behind. Tests using ``pg_url`` carry the ``postgres`` marker.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

PG_URL = os.environ.get(
    "GROUNDWATCH_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


# -- databases ----------------------------------------------------------------------------

@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite database file of this test's own (not created yet)."""
    return f"sqlite:///{tmp_path / 'groundwatch.db'}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose connections see only a new, empty schema (search_path)."""
    base = make_url(PG_URL)
    schema = f"gw_test_{uuid.uuid4().hex[:16]}"
    admin = create_engine(base, poolclass=NullPool)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except OperationalError as exc:
        admin.dispose()
        # The server is part of the test bed (.ci/run starts it): a missing server is a
        # failure, not a reason to skip, unless a developer opts out explicitly.
        if os.environ.get("GROUNDWATCH_TEST_SKIP_PG") == "1":
            pytest.skip(f"PostgreSQL is not reachable at {base.render_as_string()}: {exc.orig}")
        raise
    try:
        url = base.update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()
