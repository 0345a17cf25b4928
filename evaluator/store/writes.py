"""The hot write path, one per dialect, over conflict rules written once.

The rules (a score is kept unless it is an ``error`` and the new one is not; explanations are
replaced where a new score was written and otherwise added when missing; items the sampler
never stored are created; items are marked ``scored``; ``add_items`` leaves existing ids alone)
are the SQLAlchemy Core statements of :class:`WriteStatements`, built once per store.

Two ways run them. PostgreSQL: through SQLAlchemy, learning what was written from RETURNING.
SQLite: the same statements compiled to SQL text once and run with the sqlite3 driver's
``executemany``, their parameters prepared before ``BEGIN IMMEDIATE`` so the write lock is held
only while SQLite works (not while SQLAlchemy processes bind parameters); the sqlite3 driver
refuses RETURNING in ``executemany``, so it reads the stored outcomes first and applies
:func:`replaceable` -- the same function that builds the SQL ``WHERE`` -- to them.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import Connection, bindparam, select, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.sql.dml import Insert

from evaluator.scorers.base import Outcome
from evaluator.store.database import Database, chunks
from evaluator.store.models import calibration_pairs, explanations, items, scores

ITEM_COLUMNS = ("request_id", "source", "log_timestamp", "route", "model", "rule", "status",
                "sampled_at", "updated_at", "payload")
SCORE_COLUMNS = ("request_id", "metric", "scorer", "scorer_version", "outcome", "value",
                 "reason", "route", "model", "log_timestamp", "scored_at", "calibrated",
                 "calibration")
PAIR_COLUMNS = ("request_id", "metric", "scorer", "scorer_version", "judge", "route", "cheap",
                "target", "created_at")
EXPLANATION_COLUMNS = ("request_id", "scorer", "scorer_version", "body", "detections",
                       "created_at")

#: Items that a failure or a new score may still change: ``scored`` is final.
NOT_SCORED = items.c.status != "scored"

_SQLITE = sqlite.dialect()


def replaceable(old_outcome: Any, new_outcome: Any) -> Any:
    """The score rule: a stored score gives way only when it is an ``error`` and the new one is
    not (a retry may replace a failure with a real result).

    Works on SQL columns (the upsert's ``WHERE``) and on plain strings (SQLite's pre-read).
    """
    return (old_outcome == Outcome.ERROR.value) & (new_outcome != Outcome.ERROR.value)


def mark_items(status: str, request_ids: Sequence[Any]) -> Any:
    """UPDATE the items ``request_ids`` (values or bind parameters) to ``status`` at the bind
    ``b_updated_at``, except those already ``scored``."""
    return (update(items)
            .where(items.c.request_id.in_(request_ids), NOT_SCORED)
            .values(status=status, updated_at=bindparam("b_updated_at")))


class WriteStatements:
    """The hot path's statements, in the database's dialect: the conflict rules, once."""

    def __init__(self, db: Database) -> None:
        self.add_items = db.insert(items).on_conflict_do_nothing(
            index_elements=[items.c.request_id])
        ins = db.insert(scores)
        self.upsert_scores = ins.on_conflict_do_update(
            index_elements=[scores.c.request_id, scores.c.metric, scores.c.scorer,
                            scores.c.scorer_version],
            set_={name: ins.excluded[name] for name in SCORE_COLUMNS[4:]},
            where=replaceable(scores.c.outcome, ins.excluded.outcome),
        )
        key = [explanations.c.request_id, explanations.c.scorer, explanations.c.scorer_version]
        ins = db.insert(explanations)
        self.replace_explanations = ins.on_conflict_do_update(
            index_elements=key,
            set_={name: ins.excluded[name] for name in ("body", "detections", "created_at")},
        )
        self.add_explanations = db.insert(explanations).on_conflict_do_nothing(
            index_elements=key)
        self.add_pairs = db.insert(calibration_pairs).on_conflict_do_nothing(
            index_elements=list(calibration_pairs.primary_key.columns))

    def columns(self) -> dict[str, tuple[Any, tuple[str, ...]]]:
        """Each statement by name, with the order of the row tuples it takes."""
        return {
            "add_items": (self.add_items, ITEM_COLUMNS),
            "upsert_scores": (self.upsert_scores, SCORE_COLUMNS),
            "replace_explanations": (self.replace_explanations, EXPLANATION_COLUMNS),
            "add_explanations": (self.add_explanations, EXPLANATION_COLUMNS),
            "add_pairs": (self.add_pairs, PAIR_COLUMNS),
        }


def _sqlite_ts(d: datetime) -> str:
    # What SQLAlchemy's UTCDateTime stores on SQLite: naive UTC text, to the microsecond.
    return d.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _same(value: Any) -> Any:
    return value


class Transaction(Protocol):
    """One write transaction of the hot path; rows are what :meth:`WritePath.prepare` made."""

    def run(self, name: str, rows: Sequence[Any]) -> None:
        """Run statement ``name`` once per row."""

    def insert_new(self, name: str, rows: Sequence[Any]) -> int:
        """Run insert ``name`` once per row; return how many rows it inserted."""

    def upsert_scores(self, rows: Sequence[Any], keys: Sequence[tuple[str, str, str]],
                      scorer: str, scorer_version: str) -> set[tuple[str, str]]:
        """Upsert one scorer run's score ``rows`` (``keys``: their request id, metric and
        outcome); return the (request id, metric) it wrote."""

    def present_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are stored as items."""

    def mark_scored(self, ids: Sequence[str], now: Any) -> None:
        """Mark the items ``ids`` scored at ``now`` (a parameter, as :attr:`WritePath.ts` made
        it) with :func:`mark_items`: one UPDATE per :data:`IN_CHUNK` ids."""


class WritePath:
    """How this database runs :class:`WriteStatements`: ``ts`` and ``js`` turn datetimes and
    JSON values into the statement parameters, :meth:`prepare` makes rows of them ready (call
    it before :meth:`begin`), :meth:`begin` opens a write transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.statements = WriteStatements(db)
        self.sqlite = db.dialect == "sqlite"
        self.ts = _sqlite_ts if self.sqlite else _same
        self.js = json.dumps if self.sqlite else _same
        self._columns = self.statements.columns()
        self._compiled = ({name: _Compiled(stmt, cols)
                           for name, (stmt, cols) in self._columns.items()}
                          if self.sqlite else {})

    def prepare(self, name: str, rows: Sequence[tuple[Any, ...]]) -> list[Any]:
        """``rows`` (tuples in the statement's column order) as statement ``name`` takes them."""
        if self.sqlite:
            return self._compiled[name].params(rows)
        cols = self._columns[name][1]
        return [dict(zip(cols, row, strict=True)) for row in rows]

    @contextmanager
    def begin(self) -> Iterator[Transaction]:
        """A write transaction (BEGIN IMMEDIATE on SQLite), committed on leaving."""
        with self.db.writer.begin() as conn:
            if self.sqlite:
                driver: Any = conn.connection.driver_connection  # sqlite3.Connection
                cur = driver.cursor()
                try:
                    yield _SqliteTransaction(driver, cur, self._compiled)
                finally:
                    cur.close()
            else:
                yield _CoreTransaction(conn, self.statements)


@functools.lru_cache(maxsize=64)
def _mark_scored_sqlite(n: int) -> _Compiled:
    """:func:`mark_items` for ``n`` ids, compiled for SQLite (batches repeat a few sizes)."""
    names = tuple(f"b_id{i}" for i in range(n))
    return _Compiled(mark_items("scored", [bindparam(name) for name in names]),
                     ("b_updated_at", *names))


class _Compiled:
    """A statement compiled to SQLite text once, with how to lay out a row's parameters: the
    row's columns plus the constants SQLAlchemy bound (such as ``'error'``), in bind order."""

    def __init__(self, stmt: Any, columns: tuple[str, ...]) -> None:
        compiled = stmt.compile(dialect=_SQLITE,
                                column_keys=list(columns) if isinstance(stmt, Insert) else None)
        self.sql = compiled.string
        names = list(compiled.positiontup or ())
        consts = [name for name in names if name not in columns]
        self.consts = tuple(compiled.params[name] for name in consts)
        extended = list(columns) + consts
        order = [extended.index(name) for name in names]
        self.order = None if order == list(range(len(extended))) else order

    def params(self, rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        consts, order = self.consts, self.order
        if order is None:
            return [row + consts for row in rows] if consts else list(rows)
        out = []
        for row in rows:
            full = row + consts
            out.append(tuple(full[i] for i in order))
        return out


class _SqliteTransaction:
    def __init__(self, driver: Any, cur: Any, compiled: Mapping[str, _Compiled]) -> None:
        self._driver = driver
        self._cur = cur
        self._compiled = compiled

    def run(self, name: str, rows: Sequence[Any]) -> None:
        if rows:
            self._cur.executemany(self._compiled[name].sql, rows)

    def insert_new(self, name: str, rows: Sequence[Any]) -> int:
        before = self._driver.total_changes
        self.run(name, rows)
        return int(self._driver.total_changes - before)

    def upsert_scores(self, rows: Sequence[Any], keys: Sequence[tuple[str, str, str]],
                      scorer: str, scorer_version: str) -> set[tuple[str, str]]:
        stored: dict[tuple[str, str], str] = {}
        for chunk in chunks(list(dict.fromkeys(rid for rid, _, _ in keys))):
            marks = ",".join("?" * len(chunk))
            self._cur.execute("SELECT request_id, metric, outcome FROM gw_scores WHERE "
                              "scorer = ? AND scorer_version = ? AND request_id IN "
                              f"({marks})", (scorer, scorer_version, *chunk))
            stored.update({(r, m): o for r, m, o in self._cur.fetchall()})
        to_write = [i for i, (rid, metric, outcome) in enumerate(keys)
                    if (rid, metric) not in stored
                    or replaceable(stored[rid, metric], outcome)]
        self.run("upsert_scores", [rows[i] for i in to_write])
        return {(keys[i][0], keys[i][1]) for i in to_write}

    def present_ids(self, ids: Sequence[str]) -> set[str]:
        present: set[str] = set()
        for chunk in chunks(ids):
            marks = ",".join("?" * len(chunk))
            self._cur.execute(f"SELECT request_id FROM gw_items WHERE request_id IN ({marks})",
                              tuple(chunk))
            present.update(r for (r,) in self._cur.fetchall())
        return present

    def mark_scored(self, ids: Sequence[str], now: Any) -> None:
        for chunk in chunks(ids):
            marks = _mark_scored_sqlite(len(chunk))
            self._cur.execute(marks.sql, marks.params([(now, *chunk)])[0])


class _CoreTransaction:
    def __init__(self, conn: Connection, statements: WriteStatements) -> None:
        self._conn = conn
        self._stmts = statements

    def run(self, name: str, rows: Sequence[Any]) -> None:
        if rows:
            self._conn.execute(getattr(self._stmts, name), list(rows))

    def insert_new(self, name: str, rows: Sequence[Any]) -> int:
        if not rows:
            return 0
        stmt = getattr(self._stmts, name)
        return len(self._conn.execute(stmt.returning(*stmt.table.primary_key.columns),
                                      list(rows)).all())

    def upsert_scores(self, rows: Sequence[Any], keys: Sequence[tuple[str, str, str]],
                      scorer: str, scorer_version: str) -> set[tuple[str, str]]:
        if not rows:
            return set()
        stmt = self._stmts.upsert_scores.returning(scores.c.request_id, scores.c.metric)
        return {(row.request_id, row.metric) for row in self._conn.execute(stmt, list(rows))}

    def present_ids(self, ids: Sequence[str]) -> set[str]:
        present: set[str] = set()
        for chunk in chunks(ids):
            present.update(self._conn.scalars(select(items.c.request_id)
                                              .where(items.c.request_id.in_(chunk))))
        return present

    def mark_scored(self, ids: Sequence[str], now: Any) -> None:
        for chunk in chunks(ids):
            self._conn.execute(mark_items("scored", chunk), {"b_updated_at": now})
