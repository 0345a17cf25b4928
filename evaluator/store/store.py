"""The store: sampled items, scores, explanations, failures, cursors and rejections, and the
judge's golden-set scores and schedule.

One :class:`Store` per process (build it in the process, call :meth:`Store.dispose` after a
fork). It is safe to share between threads, and several processes may use the same database at
once: SQLite runs in WAL mode with a busy timeout and every writing transaction starts with
``BEGIN IMMEDIATE`` (so it queues for the write lock up front instead of failing half-way);
PostgreSQL needs nothing special.

Writes are idempotent. Scores are unique per (request id, metric, scorer, scorer version) and
:meth:`Store.record_results` reports which ones it actually wrote, so a batch that Celery
delivers twice is counted once.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import (
    Connection,
    Engine,
    Table,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import StaticPool

from evaluator.config import StoreConfig
from evaluator.errors import ConfigError, InvalidRecordError, LockHeldError
from evaluator.records import LogRecord
from evaluator.scorers.base import (
    Detection,
    ItemResult,
    MetricResult,
    Outcome,
    ScoredBatch,
    ScorerRun,
    Written,
)
from evaluator.scorers.explanation import Explanation
from evaluator.store import models
from evaluator.store.models import (
    cursors,
    explanations,
    failures,
    golden_runs,
    golden_scores,
    items,
    rejections,
    scores,
    source_reads,
)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

#: ``source`` and ``rule`` of an item first seen by :meth:`Store.record_results` (scored without
#: going through the sampler, e.g. ``groundwatch score FILE``).
UNSAMPLED = "unsampled"

# Execution option that makes the SQLite ``begin`` hook emit BEGIN IMMEDIATE.
_WRITE = "groundwatch_write"
# Key of the PostgreSQL advisory lock held while migrating (any constant bigint will do).
_MIGRATION_LOCK_KEY = zlib.crc32(b"groundwatch.store.migrate")
# Rows per IN (...) list: far below SQLite's and PostgreSQL's bind parameter limits.
_IN_CHUNK = 1000
_MAX_REASON_CHARS = 4000

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _chunks(values: Sequence[str], size: int = _IN_CHUNK) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


@dataclass(frozen=True, slots=True)
class ScoreRow:
    """One stored score (``value`` is ``None`` unless ``outcome`` is ``ok``)."""

    request_id: str
    metric: str
    scorer: str
    scorer_version: str
    outcome: Outcome
    value: float | None
    reason: str | None
    route: str | None
    model: str | None
    log_timestamp: datetime
    scored_at: datetime


@dataclass(frozen=True, slots=True)
class ItemRow:
    """One sampled item; ``payload`` is the record's :meth:`LogRecord.to_message` dict."""

    request_id: str
    source: str
    log_timestamp: datetime
    route: str | None
    model: str | None
    rule: str
    status: str
    sampled_at: datetime
    updated_at: datetime
    payload: dict[str, Any]

    def record(self) -> LogRecord:
        """The log record as it was sampled."""
        return LogRecord.from_message(self.payload)


@dataclass(frozen=True, slots=True)
class ExplanationRow:
    """What a scorer said about one item, beyond the numbers."""

    request_id: str
    scorer: str
    scorer_version: str
    body: dict[str, Any]
    detections: tuple[Detection, ...]
    created_at: datetime

    @property
    def explanation(self) -> Explanation:
        """``body`` read back into its typed parts (unknown keys kept in ``extra``)."""
        return Explanation.from_dict(self.body)


@dataclass(frozen=True, slots=True)
class FailureRow:
    """A dead letter: work that failed for good at some ``stage``."""

    id: int
    request_id: str | None
    stage: str
    kind: str
    reason: str
    attempts: int
    task_id: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class CursorRow:
    source: str
    position: dict[str, Any] | None
    lock_owner: str | None
    lock_expires_at: datetime | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class RejectionRow:
    """A source row that could not be mapped onto a log record."""

    id: int
    source: str
    row_ref: str
    field: str
    reason: str
    detail: str
    created_at: datetime


def alembic_config(url: str | None = None) -> AlembicConfig:
    """An Alembic config for the migrations shipped inside this package (no alembic.ini)."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _set_wal(cursor: Any, attempts: int = 100) -> None:
    """Switch to WAL. SQLite answers "database is locked" at once, without its busy handler,
    while another connection creates the file or switches it; that race only exists when a
    fresh database is opened by several processes, so a short bounded retry settles it."""
    import sqlite3
    import time

    for attempt in range(attempts):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.01 + 0.002 * attempt)


def _sqlite_engine(url: URL) -> Engine:
    database = url.database or ""
    in_memory = database in ("", ":memory:") or url.query.get("mode") == "memory"
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if in_memory:
        # One shared connection, or every checkout would see a different empty database.
        kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
    elif not url.query.get("uri"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module (it would skip BEGIN for
        # SELECT and DDL); the "begin" hook below emits it instead.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # busy_timeout first: switching to WAL needs a lock another process may hold.
            cursor.execute("PRAGMA busy_timeout=30000")
            _set_wal(cursor)
            for pragma in ("synchronous=NORMAL", "foreign_keys=ON"):
                cursor.execute(f"PRAGMA {pragma}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A deferred transaction that reads and then writes can fail at once with SQLITE_BUSY
        # when another process committed in between; IMMEDIATE waits for the lock up front.
        # SQLite's busy handler (busy_timeout, 30 s) does the waiting; polling for the lock
        # ourselves every 1-2 ms measured no faster
        # (docs/decisions/0004-sqlite-wal-default-postgresql-for-scale.md).
        mode = "IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


class Store:
    """groundwatch's own database (SQLite or PostgreSQL), migrated by Alembic.

    ``clock`` returns the current time as an aware UTC datetime; it stamps every write and
    decides lock expiry (tests pass a fake one instead of sleeping).
    """

    def __init__(self, url: str, *, migrate: bool = True, clock: Clock | None = None) -> None:
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise ConfigError("not a SQLAlchemy URL", key="store.url") from None
        backend = parsed.get_backend_name()
        if backend not in ("sqlite", "postgresql"):
            raise ConfigError(
                f"the store runs on sqlite or postgresql, not {backend!r}", key="store.url"
            )
        self._url = parsed
        self._clock: Clock = clock or _utcnow
        self._dialect = backend
        if backend == "sqlite":
            self._engine = _sqlite_engine(parsed)
        else:
            self._engine = create_engine(parsed, pool_pre_ping=True)
        self._writer = self._engine.execution_options(**{_WRITE: True})
        if migrate:
            self.migrate()

    @classmethod
    def from_config(cls, cfg: StoreConfig, *, migrate: bool = True,
                    clock: Clock | None = None) -> Store:
        """Build the store named by the ``[store]`` section of the config."""
        return cls(cfg.url.get_secret_value(), migrate=migrate, clock=clock)

    def __repr__(self) -> str:
        return f"Store({self.safe_url!r})"

    @property
    def safe_url(self) -> str:
        """The store's URL with its password hidden, for showing to people."""
        return self._url.render_as_string(hide_password=True)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def engine(self) -> Engine:
        """The underlying engine (for diagnostics and tests; prefer the methods)."""
        return self._engine

    @property
    def dialect(self) -> str:
        """``'sqlite'`` or ``'postgresql'``."""
        return self._dialect

    def dispose(self) -> None:
        """Forget the pooled connections inherited from a parent process; call it after fork.

        The parent's connections are left open for the parent to keep using.
        """
        self._engine.dispose(close=False)

    def close(self) -> None:
        """Close every pooled connection. The store opens new ones if used again."""
        self._engine.dispose()

    # -- schema ---------------------------------------------------------------------------

    def migrate(self) -> None:
        """Bring the schema to the newest revision (``alembic upgrade head``). Idempotent.

        Runs inside one write transaction that first takes a lock (BEGIN IMMEDIATE on SQLite,
        an advisory lock on PostgreSQL), so processes starting together on a fresh database
        migrate one after the other and the later ones find nothing to do.
        """
        cfg = alembic_config()
        with self._writer.begin() as conn:
            if self._dialect == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(_MIGRATION_LOCK_KEY)))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    # -- writes -----------------------------------------------------------------------------

    def _insert(self, table: Table) -> Any:
        dialect_insert = sqlite.insert if self._dialect == "sqlite" else postgresql.insert
        return dialect_insert(table)

    def add_items(self, items_: Sequence[tuple[LogRecord, str]], *, source: str,
                  payloads: Sequence[dict[str, Any]] | None = None) -> int:
        """Store sampled (record, rule name) pairs as ``queued``; return how many were new.

        Request ids already present are left as they are. One transaction.
        """
        now = self._clock()
        if self._dialect == "sqlite":
            return self._add_items_sqlite(items_, source, payloads, now)
        rows: dict[str, dict[str, Any]] = {}
        for record, rule in items_:
            rows.setdefault(record.request_id, {
                "request_id": record.request_id,
                "source": source,
                "log_timestamp": record.timestamp,
                "route": record.route,
                "model": record.model,
                "rule": rule,
                "status": "queued",
                "sampled_at": now,
                "updated_at": now,
                "payload": record.to_message(),
            })
        if not rows:
            return 0
        stmt = (self._insert(items).on_conflict_do_nothing(index_elements=[items.c.request_id])
                .returning(items.c.request_id))
        with self._writer.begin() as conn:
            return len(conn.execute(stmt, list(rows.values())).all())

    def _add_items_sqlite(self, items_: Sequence[tuple[LogRecord, str]], source: str,
                          payloads: Sequence[dict[str, Any]] | None, now: datetime) -> int:
        import json

        def ts(d: datetime) -> str:
            return d.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ",
                                                                    timespec="microseconds")

        now_s = ts(now)
        rows: dict[str, tuple[Any, ...]] = {}
        for i, (record, rule) in enumerate(items_):
            if record.request_id in rows:
                continue
            payload = payloads[i] if payloads is not None else record.to_message()
            rows[record.request_id] = (record.request_id, source, ts(record.timestamp),
                                       record.route, record.model, rule, "queued", now_s, now_s,
                                       json.dumps(payload))
        if not rows:
            return 0
        with self._writer.begin() as conn:
            raw: Any = conn.connection.driver_connection  # sqlite3.Connection
            before = raw.total_changes
            raw.executemany(
                "INSERT INTO gw_items (request_id, source, log_timestamp, route, model, rule, "
                "status, sampled_at, updated_at, payload) VALUES (?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT (request_id) DO NOTHING", list(rows.values()))
            return raw.total_changes - before

    def record_results(
        self,
        results: Sequence[ItemResult],
        records: Mapping[str, LogRecord],
        *,
        scorer: str,
        scorer_version: str,
        now: datetime | None = None,
    ) -> list[tuple[str, MetricResult]]:
        """:meth:`record_batch` for one scorer's results; returns the (request id, score)
        pairs it newly wrote."""
        missing = [r.request_id for r in results if r.request_id not in records]
        if missing:
            raise ValueError(f"record_results: no record given for {len(missing)} result(s), "
                             f"e.g. {missing[:3]}")
        rids = dict.fromkeys(r.request_id for r in results)
        batch = ScoredBatch(tuple(records[rid] for rid in rids),
                            (ScorerRun(scorer, scorer_version, tuple(results)),))
        return [(w.request_id, w.result) for w in self.record_batch(batch, now=now)]

    def record_batch(self, batch: ScoredBatch, *, now: datetime | None = None) -> list[Written]:
        """Store a scored batch (every scorer's results) in one transaction; return the scores
        it newly wrote.

        A score already stored for the same (request id, metric, scorer, scorer version) is
        kept, unless it is an ``error`` and the new one is not: a retry may replace a failure
        with a real result. So a batch delivered twice writes (and returns) nothing the second
        time, and callers can count exactly the returned scores in their metrics.

        Explanations follow the scores: replaced where the item got a newly written score from
        that scorer, otherwise only added when missing. Every item is marked ``scored``; an
        item the sampler never stored is created (source and rule ``'unsampled'``). The batch
        must hold the record of every result (route, model and log time are copied onto the
        scores).
        """
        now = now or self._clock()
        records = batch.by_id
        runs: list[tuple[ScorerRun, dict[str, ItemResult]]] = []
        for run in batch.runs:
            by_id = {r.request_id: r for r in run.items}
            missing = [rid for rid in by_id if rid not in records]
            if missing:
                raise ValueError(f"record_batch: no record given for {len(missing)} result(s), "
                                 f"e.g. {missing[:3]}")
            if by_id:
                runs.append((run, by_id))
        if not runs:
            return []
        ids = list(dict.fromkeys(rid for _, by_id in runs for rid in by_id))
        if self._dialect == "sqlite":
            return self._record_batch_sqlite(runs, ids, records, now)
        out: list[Written] = []
        with self._writer.begin() as conn:
            for run, by_id in runs:
                out.extend(self._write_run(conn, run, by_id, records, now))
            self._mark_scored(conn, ids, records, now)
        return out

    def _write_run(self, conn: Connection, run: ScorerRun, by_id: Mapping[str, ItemResult],
                   records: Mapping[str, LogRecord], now: datetime) -> list[Written]:
        scorer, scorer_version = run.scorer, run.version
        wanted: dict[tuple[str, str], MetricResult] = {}
        score_rows: list[dict[str, Any]] = []
        for rid, result in by_id.items():
            record = records[rid]
            for metric in result.metrics:
                if (rid, metric.metric) in wanted:
                    raise ValueError(f"record_results: metric {metric.metric!r} twice for {rid}")
                wanted[rid, metric.metric] = metric
                score_rows.append({
                    "request_id": rid,
                    "metric": metric.metric,
                    "scorer": scorer,
                    "scorer_version": scorer_version,
                    "outcome": str(metric.outcome),
                    "value": metric.value,
                    "reason": metric.reason,
                    "route": record.route,
                    "model": record.model,
                    "log_timestamp": record.timestamp,
                    "scored_at": now,
                })
        written: set[tuple[str, str]] = set()
        if score_rows:
            ins = self._insert(scores)
            replaceable = (scores.c.outcome == Outcome.ERROR.value) & (
                ins.excluded.outcome != Outcome.ERROR.value)
            stmt = ins.on_conflict_do_update(
                index_elements=[scores.c.request_id, scores.c.metric, scores.c.scorer,
                                scores.c.scorer_version],
                set_={name: ins.excluded[name] for name in (
                    "outcome", "value", "reason", "route", "model", "log_timestamp",
                    "scored_at")},
                where=replaceable,
            ).returning(scores.c.request_id, scores.c.metric)
            written = {(row.request_id, row.metric)
                       for row in conn.execute(stmt, score_rows)}
        fresh_ids = {rid for rid, _ in written}
        self._write_explanations(conn, by_id, fresh_ids, scorer, scorer_version, now)
        return [Written(scorer, rid, wanted[rid, metric]) for rid, metric in wanted
                if (rid, metric) in written]

    def _record_batch_sqlite(self, runs: Sequence[tuple[ScorerRun, Mapping[str, ItemResult]]],
                             ids: Sequence[str], records: Mapping[str, LogRecord],
                             now: datetime) -> list[Written]:
        """SQLite: every parameter is built before BEGIN IMMEDIATE, so the write lock is held
        only while SQLite works (not while SQLAlchemy processes bind parameters)."""
        import json

        def ts(d: datetime) -> str:
            return d.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ",
                                                                    timespec="microseconds")

        now_s = ts(now)
        prepared = []
        for run, by_id in runs:
            scorer, scorer_version = run.scorer, run.version
            wanted: dict[tuple[str, str], MetricResult] = {}
            score_params: list[tuple[Any, ...]] = []
            expl: dict[str, tuple[Any, ...]] = {}
            for rid, result in by_id.items():
                record = records[rid]
                log_ts = ts(record.timestamp)
                for metric in result.metrics:
                    if (rid, metric.metric) in wanted:
                        raise ValueError(f"record_results: metric {metric.metric!r} twice "
                                         f"for {rid}")
                    wanted[rid, metric.metric] = metric
                    score_params.append((rid, metric.metric, scorer, scorer_version,
                                         metric.outcome.value, metric.value, metric.reason,
                                         record.route, record.model, log_ts, now_s))
                expl[rid] = (rid, scorer, scorer_version,
                             json.dumps(result.explanation.to_dict()),
                             json.dumps([{"kind": d.kind, "detail": d.detail}
                                         for d in result.detections]), now_s)
            prepared.append((run, list(by_id), wanted, score_params, expl))
        out: list[Written] = []
        with self._writer.begin() as conn:
            driver: Any = conn.connection.driver_connection  # sqlite3.Connection
            cur = driver.cursor()
            try:
                for run, run_ids, wanted, score_params, expl in prepared:
                    existing: dict[tuple[str, str], str] = {}
                    for chunk in _chunks(run_ids):
                        marks = ",".join("?" * len(chunk))
                        cur.execute("SELECT request_id, metric, outcome FROM gw_scores WHERE "
                                    "scorer = ? AND scorer_version = ? AND request_id IN "
                                    f"({marks})", (run.scorer, run.version, *chunk))
                        existing.update({(r, m): o for r, m, o in cur.fetchall()})
                    to_write = [p for p in score_params
                                if (p[0], p[1]) not in existing
                                or (existing[p[0], p[1]] == "error" and p[4] != "error")]
                    cur.executemany(
                        "INSERT INTO gw_scores (request_id, metric, scorer, scorer_version, "
                        "outcome, value, reason, route, model, log_timestamp, scored_at) VALUES "
                        "(?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (request_id, metric, scorer, "
                        "scorer_version) DO UPDATE SET outcome = excluded.outcome, value = "
                        "excluded.value, reason = excluded.reason, route = excluded.route, "
                        "model = excluded.model, log_timestamp = excluded.log_timestamp, "
                        "scored_at = excluded.scored_at WHERE gw_scores.outcome = 'error' AND "
                        "excluded.outcome != 'error'", to_write)
                    written = {(p[0], p[1]) for p in to_write}
                    fresh_ids = {rid for rid, _ in written}
                    cols = "(request_id, scorer, scorer_version, body, detections, created_at)"
                    fresh = [expl[r] for r in run_ids if r in fresh_ids]
                    other = [expl[r] for r in run_ids if r not in fresh_ids]
                    if fresh:
                        cur.executemany(
                            f"INSERT INTO gw_explanations {cols} VALUES (?,?,?,?,?,?) ON "
                            "CONFLICT (request_id, scorer, scorer_version) DO UPDATE SET body = "
                            "excluded.body, detections = excluded.detections, created_at = "
                            "excluded.created_at", fresh)
                    if other:
                        cur.executemany(
                            f"INSERT INTO gw_explanations {cols} VALUES (?,?,?,?,?,?) ON "
                            "CONFLICT (request_id, scorer, scorer_version) DO NOTHING", other)
                    out.extend(Written(run.scorer, rid, wanted[rid, metric])
                               for rid, metric in wanted if (rid, metric) in written)
                present: set[str] = set()
                for chunk in _chunks(ids):
                    marks = ",".join("?" * len(chunk))
                    cur.execute(f"SELECT request_id FROM gw_items WHERE request_id IN ({marks})",
                                tuple(chunk))
                    present.update(r for (r,) in cur.fetchall())
                new_rows = [(rid, UNSAMPLED, ts(records[rid].timestamp), records[rid].route,
                             records[rid].model, UNSAMPLED, "scored", now_s, now_s,
                             json.dumps(records[rid].to_message()))
                            for rid in ids if rid not in present]
                if new_rows:
                    cur.executemany(
                        "INSERT INTO gw_items (request_id, source, log_timestamp, route, model, "
                        "rule, status, sampled_at, updated_at, payload) VALUES "
                        "(?,?,?,?,?,?,?,?,?,?) ON CONFLICT (request_id) DO NOTHING", new_rows)
                for chunk in _chunks(ids):
                    marks = ",".join("?" * len(chunk))
                    cur.execute("UPDATE gw_items SET status = 'scored', updated_at = ? WHERE "
                                f"status != 'scored' AND request_id IN ({marks})",
                                (now_s, *chunk))
            finally:
                cur.close()
        return out

    def _write_explanations(self, conn: Connection, by_id: Mapping[str, ItemResult],
                            fresh_ids: set[str], scorer: str, scorer_version: str,
                            now: datetime) -> None:
        fresh: list[dict[str, Any]] = []
        other: list[dict[str, Any]] = []
        for rid, result in by_id.items():
            row = {
                "request_id": rid,
                "scorer": scorer,
                "scorer_version": scorer_version,
                "body": result.explanation.to_dict(),
                "detections": [{"kind": d.kind, "detail": d.detail} for d in result.detections],
                "created_at": now,
            }
            (fresh if rid in fresh_ids else other).append(row)
        key = [explanations.c.request_id, explanations.c.scorer, explanations.c.scorer_version]
        if fresh:
            ins = self._insert(explanations)
            conn.execute(ins.on_conflict_do_update(
                index_elements=key,
                set_={name: ins.excluded[name] for name in ("body", "detections", "created_at")},
            ), fresh)
        if other:
            conn.execute(self._insert(explanations).on_conflict_do_nothing(index_elements=key),
                         other)

    def _mark_scored(self, conn: Connection, ids: Sequence[str],
                     records: Mapping[str, LogRecord], now: datetime) -> None:
        # Look up which items exist first so the (possibly large) payloads are only sent for
        # the few that are missing. On PostgreSQL a concurrent add_items may slip in between;
        # the insert then does nothing and the update below still marks the row scored.
        existing: set[str] = set()
        for chunk in _chunks(ids):
            existing.update(conn.scalars(select(items.c.request_id)
                                         .where(items.c.request_id.in_(chunk))))
        new_rows = [{
            "request_id": rid,
            "source": UNSAMPLED,
            "log_timestamp": records[rid].timestamp,
            "route": records[rid].route,
            "model": records[rid].model,
            "rule": UNSAMPLED,
            "status": "scored",
            "sampled_at": now,
            "updated_at": now,
            "payload": records[rid].to_message(),
        } for rid in ids if rid not in existing]
        if new_rows:
            conn.execute(self._insert(items).on_conflict_do_nothing(
                index_elements=[items.c.request_id]), new_rows)
        for chunk in _chunks(ids):
            conn.execute(update(items)
                         .where(items.c.request_id.in_(chunk), items.c.status != "scored")
                         .values(status="scored", updated_at=now))

    def record_failures(
        self,
        request_ids: Sequence[str],
        *,
        stage: str,
        kind: str,
        reason: str,
        attempts: int,
        task_id: str | None = None,
    ) -> None:
        """Store a dead letter per request id and mark those items ``failed``.

        Items already ``scored`` keep their status. With no request ids (a failure before the
        batch was known), one row without a request id is stored so the failure is not lost.
        Reasons are cut to 4000 characters.
        """
        now = self._clock()
        base = {"stage": stage, "kind": kind, "reason": reason[:_MAX_REASON_CHARS],
                "attempts": attempts, "task_id": task_id, "created_at": now}
        ids = list(dict.fromkeys(request_ids))
        rows = [{"request_id": rid, **base} for rid in ids] or [{"request_id": None, **base}]
        with self._writer.begin() as conn:
            conn.execute(insert(failures), rows)
            for chunk in _chunks(ids):
                conn.execute(update(items)
                             .where(items.c.request_id.in_(chunk), items.c.status != "scored")
                             .values(status="failed", updated_at=now))

    def record_rejections(self, source: str, rejections_: Sequence[InvalidRecordError]) -> None:
        """Keep source rows that could not be mapped, for ``groundwatch`` to show later."""
        if not rejections_:
            return
        now = self._clock()
        rows = [{"source": source, "row_ref": r.row_ref, "field": r.field, "reason": r.reason,
                 "detail": r.detail[:_MAX_REASON_CHARS], "created_at": now} for r in rejections_]
        with self._writer.begin() as conn:
            conn.execute(insert(rejections), rows)

    # -- cursors and their locks -------------------------------------------------------------

    def acquire_lock(self, source: str, owner: str, ttl_s: float) -> bool:
        """Take or renew the lock on ``source``'s cursor for ``ttl_s`` seconds.

        Succeeds when the lock is free, expired, or already ``owner``'s. The check and the take
        are one conditional UPDATE, so two replicas can never both succeed.
        """
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s}")
        now = self._clock()
        with self._writer.begin() as conn:
            conn.execute(self._insert(cursors).on_conflict_do_nothing(
                index_elements=[cursors.c.source]), {"source": source, "updated_at": now})
            taken = conn.execute(
                update(cursors)
                .where(cursors.c.source == source,
                       or_(cursors.c.lock_owner.is_(None), cursors.c.lock_owner == owner,
                           cursors.c.lock_expires_at < now))
                .values(lock_owner=owner, lock_expires_at=now + timedelta(seconds=ttl_s),
                        updated_at=now)
            )
            return taken.rowcount == 1

    def release_lock(self, source: str, owner: str) -> bool:
        """Give up ``owner``'s lock on ``source``; False if ``owner`` did not hold it."""
        with self._writer.begin() as conn:
            released = conn.execute(
                update(cursors)
                .where(cursors.c.source == source, cursors.c.lock_owner == owner)
                .values(lock_owner=None, lock_expires_at=None, updated_at=self._clock())
            )
            return released.rowcount == 1

    def cursor_state(self, source: str) -> CursorRow | None:
        """``source``'s cursor with its lock and last update, or None if it has none."""
        with self._engine.connect() as conn:
            row = conn.execute(select(cursors).where(cursors.c.source == source)).first()
        if row is None:
            return None
        return CursorRow(row.source, None if row.position is None else dict(row.position),
                         row.lock_owner, row.lock_expires_at, row.updated_at)

    def get_cursor(self, source: str) -> dict[str, Any] | None:
        """The stored position of ``source``, or None if it has none yet."""
        with self._engine.connect() as conn:
            position = conn.scalar(select(cursors.c.position).where(cursors.c.source == source))
        return dict(position) if position is not None else None

    def set_cursor(self, source: str, position: Mapping[str, Any], *, owner: str,
                   read_ids: Sequence[tuple[str, datetime]] = (),
                   forget_read_before: datetime | None = None,
                   committed: Sequence[str] = ()) -> None:
        """Store ``source``'s position; only the holder of an unexpired lock may.

        In the same transaction, ``read_ids`` (request id, log time) are remembered as read by
        ``source`` and those with a log time before ``forget_read_before`` forgotten, and the
        items ``committed`` (sent in the slice the cursor moves past) are marked so: the cursor,
        what it read and what it sent move together or not at all.

        Raises :class:`LockHeldError` otherwise, so a replica that lost its lock (paused past
        the TTL, say) can never move the cursor under the replica that took over.
        """
        now = self._clock()
        with self._writer.begin() as conn:
            moved = conn.execute(
                update(cursors)
                .where(cursors.c.source == source, cursors.c.lock_owner == owner,
                       cursors.c.lock_expires_at > now)
                .values(position=dict(position), updated_at=now)
            )
            if moved.rowcount != 1:
                holder = conn.execute(
                    select(cursors.c.lock_owner, cursors.c.lock_expires_at)
                    .where(cursors.c.source == source)
                ).first()
                if holder is not None and holder.lock_owner and holder.lock_expires_at > now:
                    raise LockHeldError(source, holder.lock_owner)
                raise LockHeldError(source, f"no one ({owner} does not hold the lock)")
            counts = Counter(read_ids)
            if counts:
                stmt = self._insert(source_reads)
                conn.execute(stmt.on_conflict_do_update(
                    index_elements=[source_reads.c.source, source_reads.c.request_id,
                                    source_reads.c.log_timestamp],
                    set_={"rows": source_reads.c.rows + stmt.excluded.rows}),
                    [{"source": source, "request_id": rid, "log_timestamp": when, "rows": n}
                     for (rid, when), n in counts.items()])
            if forget_read_before is not None:
                conn.execute(delete(source_reads).where(
                    source_reads.c.source == source,
                    source_reads.c.log_timestamp < forget_read_before))
            for chunk in _chunks(list(dict.fromkeys(committed))):
                conn.execute(update(items).where(items.c.request_id.in_(chunk),
                                                 items.c.committed.is_(False))
                             .values(committed=True))

    def read_ids(self, source: str,
                 request_ids: Sequence[str]) -> dict[str, dict[datetime, int]]:
        """Those of ``request_ids`` that ``source`` remembers as read (see :meth:`set_cursor`):
        for each, the log times of the rows read under it and how many rows had that time."""
        found: dict[str, dict[datetime, int]] = {}
        with self._engine.connect() as conn:
            for chunk in _chunks(list(dict.fromkeys(request_ids))):
                for rid, when, n in conn.execute(
                        select(source_reads.c.request_id, source_reads.c.log_timestamp,
                               source_reads.c.rows)
                        .where(source_reads.c.source == source,
                               source_reads.c.request_id.in_(chunk))):
                    found.setdefault(rid, {})[when] = n
        return found

    def reset_cursor(self, source: str, position: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """Put ``source``'s cursor at ``position`` (None: the start) for an operator, and forget
        what it read; return the position it had. Refused while a sampler holds the lock."""
        now = self._clock()
        with self._writer.begin() as conn:
            conn.execute(self._insert(cursors).on_conflict_do_nothing(
                index_elements=[cursors.c.source]), {"source": source, "updated_at": now})
            row = conn.execute(select(cursors.c.position, cursors.c.lock_owner,
                                      cursors.c.lock_expires_at)
                               .where(cursors.c.source == source)).one()
            if row.lock_owner and row.lock_expires_at > now:
                raise LockHeldError(source, row.lock_owner)
            conn.execute(update(cursors).where(cursors.c.source == source)
                         .values(position=None if position is None else dict(position),
                                 updated_at=now))
            conn.execute(delete(source_reads).where(source_reads.c.source == source))
        return None if row.position is None else dict(row.position)

    # -- the judge's golden set ---------------------------------------------------------------

    def record_golden(self, judge_version: str,
                      values: Mapping[str, Mapping[str, float]],
                      now: datetime | None = None) -> dict[tuple[str, str], float]:
        """Store one golden run of ``judge_version``: ``values`` maps request id -> metric ->
        score. The first value of an (item, metric) becomes its baseline; later runs update
        only the newest value. Returns the baseline of every (request id, metric) given.

        One transaction: the upsert, then the baselines read back (a baseline never changes
        once written, so what is read is what a concurrent run would see too).
        """
        now = now or self._clock()
        rows = [{"judge_version": judge_version, "request_id": rid, "metric": metric,
                 "baseline_value": float(value), "baseline_at": now,
                 "last_value": float(value), "last_at": now}
                for rid, by_metric in values.items() for metric, value in by_metric.items()]
        if not rows:
            return {}
        wanted = {(row["request_id"], row["metric"]) for row in rows}
        ins = self._insert(golden_scores)
        stmt = ins.on_conflict_do_update(
            index_elements=[golden_scores.c.judge_version, golden_scores.c.request_id,
                            golden_scores.c.metric],
            set_={"last_value": ins.excluded.last_value, "last_at": ins.excluded.last_at})
        baselines: dict[tuple[str, str], float] = {}
        with self._writer.begin() as conn:
            conn.execute(stmt, rows)
            for chunk in _chunks(list(values)):
                for rid, metric, baseline in conn.execute(
                        select(golden_scores.c.request_id, golden_scores.c.metric,
                               golden_scores.c.baseline_value)
                        .where(golden_scores.c.judge_version == judge_version,
                               golden_scores.c.request_id.in_(chunk))):
                    if (rid, metric) in wanted:
                        baselines[rid, metric] = baseline
        return baselines

    def claim_golden_run(self, name: str, interval_s: float,
                         now: datetime | None = None) -> bool:
        """Claim the golden run ``name`` if it is due; True for exactly one caller per due time.

        A schedule never seen is due at once. A successful claim moves the next due time to
        ``now + interval_s``; the check and the move are one conditional UPDATE (as in
        :meth:`acquire_lock`), so of several processes claiming together one succeeds.
        """
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        now = now or self._clock()
        with self._writer.begin() as conn:
            conn.execute(self._insert(golden_runs).on_conflict_do_nothing(
                index_elements=[golden_runs.c.name]), {"name": name, "next_at": now})
            claimed = conn.execute(
                update(golden_runs)
                .where(golden_runs.c.name == name, golden_runs.c.next_at <= now)
                .values(next_at=now + timedelta(seconds=interval_s), last_run_at=now))
            return claimed.rowcount == 1

    def golden_scores(self, judge_version: str) -> dict[tuple[str, str], tuple[float, float]]:
        """(baseline, newest) per (request id, metric) of ``judge_version``'s golden runs."""
        with self._engine.connect() as conn:
            return {(row.request_id, row.metric): (row.baseline_value, row.last_value)
                    for row in conn.execute(
                        select(golden_scores.c.request_id, golden_scores.c.metric,
                               golden_scores.c.baseline_value, golden_scores.c.last_value)
                        .where(golden_scores.c.judge_version == judge_version))}

    # -- reads ------------------------------------------------------------------------------

    def oldest_unscored_sampled_at(self) -> datetime | None:
        """When the sampler took the oldest item still ``queued`` (None when there is none).

        The take time, not the log time: catching up on old logs is not a backlog.
        """
        with self._engine.connect() as conn:
            return conn.scalar(select(func.min(items.c.sampled_at))
                               .where(items.c.status == "queued"))

    def count_items_by_status(self) -> dict[str, int]:
        """Number of items per status; every status is present, zero when empty."""
        counts = dict.fromkeys(models.ITEM_STATUSES, 0)
        with self._engine.connect() as conn:
            for status, n in conn.execute(select(items.c.status, func.count())
                                          .group_by(items.c.status)):
                counts[status] = n
        return counts

    def _count_by(self, columns: Sequence[Any], when: Any,
                  since: datetime | None) -> dict[tuple[Any, ...], int]:
        """Rows per value of ``columns``; ``since`` (inclusive) compares the column ``when``."""
        stmt = select(*columns, func.count()).group_by(*columns)
        if since is not None:
            stmt = stmt.where(when >= since)
        with self._engine.connect() as conn:
            return {tuple(row[:-1]): row[-1] for row in conn.execute(stmt)}

    def count_items(self, *, since: datetime | None = None
                    ) -> dict[tuple[str | None, str, str], int]:
        """Number of items per (route, rule, status); ``since`` compares ``sampled_at``.

        Only what the sampler stored: rows skipped by the rate or capped are counted in the
        metrics alone.
        """
        return self._count_by((items.c.route, items.c.rule, items.c.status),
                              items.c.sampled_at, since)

    def count_rejections(self, *, since: datetime | None = None
                         ) -> dict[tuple[str, str], int]:
        """Number of stored rejections per (field, reason); ``since`` compares ``created_at``."""
        return self._count_by((rejections.c.field, rejections.c.reason),
                              rejections.c.created_at, since)

    def count_failures(self, *, since: datetime | None = None) -> dict[tuple[str, str], int]:
        """Number of dead letters per (stage, kind); ``since`` compares ``created_at``."""
        return self._count_by((failures.c.stage, failures.c.kind),
                              failures.c.created_at, since)

    def item_detections(self, *, since: datetime | None = None
                        ) -> dict[str, tuple[str | None, frozenset[str]]]:
        """Per explained item: its route and the detection kinds any scorer found in it (an
        empty set when none). ``since`` compares the explanation's ``created_at``."""
        stmt = (select(explanations.c.request_id, explanations.c.detections, items.c.route)
                .select_from(explanations.outerjoin(
                    items, items.c.request_id == explanations.c.request_id)))
        if since is not None:
            stmt = stmt.where(explanations.c.created_at >= since)
        found: dict[str, tuple[str | None, set[str]]] = {}
        with self._engine.connect() as conn:
            for rid, detections, route in conn.execute(stmt):
                kinds = found.setdefault(rid, (route, set()))[1]
                kinds.update(d["kind"] for d in detections or ())
        return {rid: (route, frozenset(kinds)) for rid, (route, kinds) in found.items()}

    _score_columns = (scores.c.request_id, scores.c.metric, scores.c.scorer,
                      scores.c.scorer_version, scores.c.outcome, scores.c.value, scores.c.reason,
                      scores.c.route, scores.c.model, scores.c.log_timestamp, scores.c.scored_at)

    @staticmethod
    def _score_row(row: Any) -> ScoreRow:
        return ScoreRow(row.request_id, row.metric, row.scorer, row.scorer_version,
                        Outcome(row.outcome), row.value, row.reason, row.route, row.model,
                        row.log_timestamp, row.scored_at)

    def scores(self, *, since: datetime | None = None,
               scorer: str | None = None) -> list[ScoreRow]:
        """Stored scores, oldest first; ``since`` is inclusive and compares ``scored_at``."""
        stmt = select(*self._score_columns).order_by(scores.c.scored_at, scores.c.id)
        if since is not None:
            stmt = stmt.where(scores.c.scored_at >= since)
        if scorer is not None:
            stmt = stmt.where(scores.c.scorer == scorer)
        with self._engine.connect() as conn:
            return [self._score_row(row) for row in conn.execute(stmt)]

    def scores_for(self, request_id: str) -> list[ScoreRow]:
        """Every score of one item, by scorer and metric."""
        stmt = (select(*self._score_columns).where(scores.c.request_id == request_id)
                .order_by(scores.c.scorer, scores.c.scorer_version, scores.c.metric))
        with self._engine.connect() as conn:
            return [self._score_row(row) for row in conn.execute(stmt)]

    def stored_item_origins(self, request_ids: Sequence[str]
                            ) -> dict[str, tuple[str, datetime, bool]]:
        """(source, log time, committed) of those of ``request_ids`` already stored as items.

        A row matching source and log time is the same row read again: sent again before the
        cursor moved past it (not committed), or replayed after (committed). Any other is
        another row with the same request id."""
        found: dict[str, tuple[str, datetime, bool]] = {}
        with self._engine.connect() as conn:
            for chunk in _chunks(list(dict.fromkeys(request_ids))):
                for row in conn.execute(select(items.c.request_id, items.c.source,
                                               items.c.log_timestamp, items.c.committed)
                                        .where(items.c.request_id.in_(chunk))):
                    found[row.request_id] = (row.source, row.log_timestamp, bool(row.committed))
        return found

    def stored_item_ids(self, request_ids: Sequence[str]) -> set[str]:
        """Which of ``request_ids`` are already stored as items (any status)."""
        found: set[str] = set()
        with self._engine.connect() as conn:
            for chunk in _chunks(list(dict.fromkeys(request_ids))):
                found.update(conn.execute(select(items.c.request_id)
                                          .where(items.c.request_id.in_(chunk))).scalars())
        return found

    def queued_payloads(self, batch_size: int = 500) -> Iterator[list[dict[str, Any]]]:
        """The task payloads of every item still ``queued``, ``batch_size`` at a time (by
        request id, one short query per batch, so memory stays bounded). For re-sending
        what a broker lost."""
        after = ""
        while True:
            stmt = (select(items.c.request_id, items.c.payload)
                    .where(items.c.status == "queued", items.c.request_id > after)
                    .order_by(items.c.request_id).limit(batch_size))
            with self._engine.connect() as conn:
                rows = conn.execute(stmt).all()
            if not rows:
                return
            yield [dict(row.payload) for row in rows]
            after = rows[-1].request_id

    def item(self, request_id: str) -> ItemRow | None:
        """One item with its payload, or None."""
        with self._engine.connect() as conn:
            row = conn.execute(select(items).where(items.c.request_id == request_id)).first()
        if row is None:
            return None
        return ItemRow(row.request_id, row.source, row.log_timestamp, row.route, row.model,
                       row.rule, row.status, row.sampled_at, row.updated_at, dict(row.payload))

    def explanations(self, request_id: str) -> list[ExplanationRow]:
        """The explanations of one item, one per scorer and version."""
        stmt = (select(explanations).where(explanations.c.request_id == request_id)
                .order_by(explanations.c.scorer, explanations.c.scorer_version))
        with self._engine.connect() as conn:
            return [
                ExplanationRow(row.request_id, row.scorer, row.scorer_version, dict(row.body),
                               tuple(Detection(d["kind"], d.get("detail", ""))
                                     for d in row.detections), row.created_at)
                for row in conn.execute(stmt)
            ]

    def failures(self, request_id: str | None = None, limit: int = 100) -> list[FailureRow]:
        """The newest dead letters, of one item or of all."""
        stmt = select(failures).order_by(failures.c.id.desc()).limit(limit)
        if request_id is not None:
            stmt = stmt.where(failures.c.request_id == request_id)
        with self._engine.connect() as conn:
            return [FailureRow(r.id, r.request_id, r.stage, r.kind, r.reason, r.attempts,
                               r.task_id, r.created_at) for r in conn.execute(stmt)]

    def rejections(self, limit: int = 100) -> list[RejectionRow]:
        """The newest rejected source rows."""
        stmt = select(rejections).order_by(rejections.c.id.desc()).limit(limit)
        with self._engine.connect() as conn:
            return [RejectionRow(r.id, r.source, r.row_ref, r.field, r.reason, r.detail,
                                 r.created_at) for r in conn.execute(stmt)]

    def rejections_for(self, row_ref: str, limit: int = 20) -> list[RejectionRow]:
        """The newest rejections of one source row (``row_ref``: its request id when the row
        had one), for ``groundwatch explain``."""
        stmt = (select(rejections).where(rejections.c.row_ref == row_ref)
                .order_by(rejections.c.id.desc()).limit(limit))
        with self._engine.connect() as conn:
            return [RejectionRow(r.id, r.source, r.row_ref, r.field, r.reason, r.detail,
                                 r.created_at) for r in conn.execute(stmt)]

    # -- retention --------------------------------------------------------------------------

    def purge(self, older_than: datetime) -> int:
        """Delete what is older than ``older_than``; return the number of rows deleted.

        Finished items (``scored`` or ``failed``, by last update), scores (by scoring time),
        explanations, failures and rejections (by creation time). Queued items and cursors
        stay. One transaction.

        The golden set's tables are left out on purpose: a few rows per golden item, and a
        purge would reset the judge's baseline without anyone asking for it.
        """
        statements = (
            delete(items).where(items.c.status.in_(("scored", "failed")),
                                items.c.updated_at < older_than),
            delete(scores).where(scores.c.scored_at < older_than),
            delete(explanations).where(explanations.c.created_at < older_than),
            delete(failures).where(failures.c.created_at < older_than),
            delete(rejections).where(rejections.c.created_at < older_than),
            delete(source_reads).where(source_reads.c.log_timestamp < older_than),
        )
        with self._writer.begin() as conn:
            return sum(conn.execute(stmt).rowcount for stmt in statements)
