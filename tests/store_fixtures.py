"""The store's test fixtures: ``db_url`` (a SQLite file, and PostgreSQL under the ``postgres``
marker), ``clock`` (a fake one) and ``store``. Test modules load it as a plugin
(``pytest_plugins``), so its fixtures are not imported names that test parameters shadow."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from evaluator.store import Store
from tests.store_helpers import T0, FakeClock


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
