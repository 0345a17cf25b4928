"""The ``sql`` source's reader: construction from config (reflection, column checks), cursors,
and the keyset page after the cursor. The order is in :mod:`.order`; the lookback window and
the whole-table audit in :mod:`.window`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import MetaData, Table, and_, func, inspect, or_, select, type_coerce
from sqlalchemy.exc import DBAPIError, InterfaceError, NoSuchTableError, OperationalError
from sqlalchemy.types import NullType

from evaluator.config import ColumnMap, Config
from evaluator.errors import ConfigError, TransientError, describe_error
from evaluator.records import ALL_FIELDS, REQUIRED_FIELDS, RowLimits
from evaluator.sources.base import PreflightScope, Seen, SourceBatch, SourceNote
from evaluator.sources.engine import create_source_engine, masked_url
from evaluator.sources.sql.completion import Completion, InFlight
from evaluator.sources.sql.cursor import pack_cursor, unpack_cursor
from evaluator.sources.sql.mapping import RowMapper
from evaluator.sources.sql.order import (
    Mark,
    Position,
    is_numeric,
    is_temporal,
    timestamp_position,
)
from evaluator.sources.sql.window import Lookback, TableAudit

log = logging.getLogger("evaluator.sources.sql")


class SqlSource:
    """Reads the app's request log from a table, in (position, request id) order.

    * Identifiers (table, schema, columns) come from config, are checked against the reflected
      table at construction and quoted by SQLAlchemy; nothing is pasted into SQL text.
    * A required field whose column is missing raises :class:`ConfigError` naming
      ``source.columns.<field>``. So does an optional field mapped to a column of another
      name; an optional field under its own name is simply not read when the table lacks it.
    * Rows that fail :func:`~evaluator.records.map_row` become rejections; the cursor still
      moves past them (they were decided). Rows without a position never move it.
    * (position, request id) must be unique: two rows sharing both may lose one at a batch
      boundary. A second row with a request id already read is rejected as ``duplicate_id``
      within one read, within the lookback window, and (for sampled items) by the store.
    """

    def __init__(
        self,
        name: str,
        url: str,
        table: str,
        schema: str | None = None,
        columns: ColumnMap | None = None,
        limits: RowLimits | None = None,
        *,
        mode: str = "timestamp",
        incrementing_column: str | None = None,
        lookback_s: float = 0.0,
        unplaceable_check_s: float = 300.0,
        max_future_s: float = 86400.0,
        settle_s: float = 0.0,
        complete_within_s: float = 0.0,
        transaction_wait_s: float = 0.0,
        config_path: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.name = name
        self._table_name = table
        self._url_shown = masked_url(url)
        self._lookback_configured = lookback_s
        self.limits = limits or RowLimits()
        self.mode = mode
        self.lookback_s = lookback_s if mode == "timestamp" else 0.0
        self.max_future = timedelta(seconds=max_future_s) if mode == "timestamp" else None
        self._wall = wall
        self.columns_cfg = columns or ColumnMap()
        self._config_path = config_path
        self.qualified = f"{schema}.{table}" if schema else table
        self.engine = create_source_engine(url, path=config_path)
        try:
            self.table = self._reflect(table, schema)
            self.columns = self._resolve_columns()
            if mode == "incrementing":
                if not incrementing_column or incrementing_column not in self.table.c:
                    raise ConfigError(
                        f"column {incrementing_column!r} is not in table {self.table.fullname!r}",
                        path=config_path, key="source.sql.incrementing_column")
                inc = self.table.c[incrementing_column]
                if not (is_numeric(inc.type) or is_temporal(inc.type)):
                    raise ConfigError(
                        f"column {incrementing_column!r} is {inc.type}: an incrementing column "
                        "must be a number (an auto-increment id) or a time the database sets",
                        path=config_path, key="source.sql.incrementing_column")
                self.order_column = incrementing_column
                self.position = Position(type_coerce(inc, NullType()), "raw", inc, exact=True)
            elif mode == "timestamp":
                self.order_column = self.columns["timestamp"]
                self.position = timestamp_position(self.table.c[self.order_column],
                                                    self.engine.dialect.name)
            else:
                raise ConfigError(f"unknown mode {mode!r} (timestamp, incrementing)",
                                  path=config_path, key="source.sql.mode")
        except BaseException:
            self.engine.dispose()
            raise
        self.rid_col = self.table.c[self.columns["request_id"]]
        self.rid = type_coerce(self.rid_col, NullType())
        self.placeable = and_(self.position.expr.is_not(None), self.rid_col.is_not(None))
        self._numeric_ms: bool | None = None
        self._lookback = Lookback(self)
        self._audit = TableAudit(self, unplaceable_check_s, clock)
        self.completion = Completion(self, settle_s=settle_s,
                                      complete_within_s=max(complete_within_s, settle_s),
                                      transaction_wait_s=transaction_wait_s, clock=clock)
        self.completion.in_flight.check_table()
        self._mapper = RowMapper(self)

    kind = "sql"
    positions_by_time = True

    @classmethod
    def check_connection(cls, config: Config, timeout_s: float) -> SourceNote | None:
        """Connect once, bounded (``timeout_s``), without reflecting anything: a clear problem
        for a database that does not exist or does not answer. A bad URL raises
        :class:`ConfigError`."""
        url = config.source.sql.url.get_secret_value()
        engine = create_source_engine(url, path=config.path, connect_timeout_s=timeout_s)
        try:
            with engine.connect():
                pass
        except Exception as exc:  # any driver error is this check's answer
            return SourceNote(f"cannot connect to the source database {masked_url(url)}: "
                              f"{describe_error(exc)}", key="source.sql.url", problem=True)
        finally:
            engine.dispose()
        return None

    @classmethod
    def from_config(cls, config: Config) -> SqlSource:
        src = config.source
        return cls(
            src.name,
            src.sql.url.get_secret_value(),
            src.sql.table,
            src.sql.schema_,
            src.columns,
            RowLimits.of(src),
            mode=src.sql.mode,
            incrementing_column=src.sql.incrementing_column,
            lookback_s=src.sql.lookback_s,
            unplaceable_check_s=src.sql.unplaceable_check,
            max_future_s=src.sql.max_future,
            settle_s=src.sql.settle,
            complete_within_s=src.sql.complete_within,
            transaction_wait_s=src.sql.transaction_wait,
            config_path=config.path,
        )

    # -- construction ----------------------------------------------------------------------
    def _reflect(self, table: str, schema: str | None) -> Table:
        try:
            # SQLite reports an unknown schema (attached database) as an OperationalError,
            # which would read as "unavailable" and be retried forever.
            if schema is not None and schema not in inspect(self.engine).get_schema_names():
                raise ConfigError(f"schema {schema!r} does not exist", path=self._config_path,
                                  key="source.sql.schema")
            return Table(table, MetaData(), schema=schema, autoload_with=self.engine)
        except NoSuchTableError:
            where = f"schema {schema!r}" if schema else "the database"
            raise ConfigError(f"table {table!r} does not exist in {where}",
                              path=self._config_path, key="source.sql.table") from None
        except DBAPIError as exc:
            raise TransientError("unavailable", f"cannot reflect table {table!r}: "
                                 f"{type(exc.orig).__name__}: {exc.orig}") from exc

    def _resolve_columns(self) -> dict[str, str]:
        """Field name → column name, for the fields this table can supply."""
        present = set(self.table.c.keys())
        defaults = type(self.columns_cfg).model_fields
        resolved: dict[str, str] = {}
        for fname in ALL_FIELDS:
            column = getattr(self.columns_cfg, fname)
            if column in present:
                resolved[fname] = column
            elif fname in REQUIRED_FIELDS or column != defaults[fname].default:
                # An optional field renamed to a column that is not there is a typo, not a
                # table without that column.
                shown = sorted(present)
                raise ConfigError(
                    f"column {column!r} is not in table {self.table.fullname!r} "
                    f"(columns: {', '.join(shown[:30])}{', ...' if len(shown) > 30 else ''})",
                    path=self._config_path, key=f"source.columns.{fname}")
        return resolved

    def describe(self) -> str:
        lookback = f", lookback {self.lookback_s:g}s" if self.lookback_s else ""
        settle = (f", settle {self.completion.settle.total_seconds():g}s"
                  if self.completion.settle else "")
        waits = ", waits for transactions in flight" if self.completion.in_flight.usable else ""
        return f"sql table {self._table_name!r}{lookback}{settle}{waits}"

    @property
    def timestamp_label(self) -> str:
        """The label of the timestamp field's column in :meth:`select_rows`."""
        return self.columns["timestamp"]

    def recount(self) -> bool:  # Source.recount: the audit re-baselines on the next read
        return self._audit.recount()

    def backfill_start(self, since: datetime) -> dict[str, Any] | None:
        """Timestamp mode seeks to ``since`` in the database's own order; in incrementing
        mode the table is read from its start and earlier rows are dropped."""
        return self.cursor_at(since) if self.mode == "timestamp" else None

    def preflight_scope(self) -> PreflightScope:
        return PreflightScope(label=f" table {self._table_name!r} of {self._url_shown}:")

    def preflight_notes(self) -> list[SourceNote]:
        """What ``check-config`` should tell the user about this source's order: a warning
        when the order is exact but slow, a problem when it cannot be exact."""
        notes = []
        if self.position.note:
            notes.append(SourceNote(self.position.note, key="source.sql.mode",
                                    problem=not self.position.exact))
        concurrency = self.completion.concurrency_note()
        if concurrency is not None:
            notes.append(concurrency)
        return notes

    def _cursor(self, mark: Mark) -> dict[str, Any]:
        return pack_cursor(self, mark)

    def _unpack(self, cursor: Mapping[str, Any] | None) -> Mark:
        """Where a stored cursor stands (see :class:`Mark`)."""
        return unpack_cursor(self, cursor)

    def cursor_at(self, when: datetime | None = None, *, value: Any = None) -> dict[str, Any]:
        """A cursor from which rows at or after the time ``when`` (timestamp mode), or after
        the raw position ``value`` (either mode), are read next."""
        if value is not None:
            return self._cursor(Mark(value, None, inclusive=False, floor=value))
        if when is None:
            raise ValueError("give a time or a value")
        if self.mode != "timestamp":
            raise ValueError("in incrementing mode, give the column's value")
        pos = self.position.from_time(when, numeric_unit_ms=self.column_in_ms())
        return self._cursor(Mark(pos, None, inclusive=True, floor=pos))

    def describe_cursor(self, cursor: Mapping[str, Any] | None) -> str:
        """One line for logs and ``groundwatch cursor show``."""
        mark = self._unpack(cursor)
        where = f"mode {self.mode} on column {self.order_column!r}"
        if mark.pos is None:
            return f"{where}: at the start of {self.qualified}"
        when = self.position.to_time(mark.pos) if self.mode == "timestamp" else None
        shown = when.isoformat() if when is not None else repr(mark.pos)
        after = ("at or after" if mark.inclusive else "after") if mark.rid is None else "after"
        tie = f" (request id {mark.rid!s})" if mark.rid is not None else ""
        extra = (f"; {len(mark.reported)} row(s) without a position reported"
                 if mark.reported else "")
        return f"{where}: next rows {after} {shown}{tie}{extra}"

    def column_in_ms(self) -> bool:
        """Whether a numeric timestamp column holds milliseconds (looked up once)."""
        if self._numeric_ms is None:
            self._numeric_ms = False
            if self.position.kind == "raw" and is_numeric(self.position.column.type):
                with self.engine.connect() as conn:
                    top = conn.scalar(select(func.max(self.position.column)))
                self._numeric_ms = top is not None and float(top) > 1e11
        return self._numeric_ms

    # -- reading ---------------------------------------------------------------------------
    def select_rows(self) -> Any:
        # Every column is read raw (as the driver returns it): the records module parses JSON
        # text, ISO text and numbers itself, and a type's result processor (SQLite DATETIME,
        # JSON) would otherwise raise mid-fetch on one malformed value and stall the source.
        names = sorted(set(self.columns.values()))
        selected = [type_coerce(self.table.c[n], NullType()).label(n) for n in names]
        return select(*selected, self.position.expr.label("_gw_pos"),
                      self.rid.label("_gw_rid"))

    def execute(self, query: Any) -> list[Mapping[str, Any]]:
        try:
            with self.engine.connect() as conn:
                return [dict(r) for r in conn.execute(query).mappings().all()]
        except DBAPIError as exc:
            if exc.connection_invalidated or isinstance(exc, (OperationalError, InterfaceError)):
                raise TransientError("unavailable", f"reading {self.qualified!r}: "
                                     f"{type(exc.orig).__name__}: {exc.orig}") from exc
            raise

    def after(self, mark: Mark) -> Any:
        """The rows after ``mark`` in the order."""
        p = self.position.expr
        if mark.rid is None:
            return p >= mark.pos if mark.inclusive else p > mark.pos
        # ``pos >= :pos`` is implied by the OR; it is spelled out so that an index on the
        # column gives a range scan on every database.
        return and_(p >= mark.pos, or_(p > mark.pos, and_(p == mark.pos, self.rid > mark.rid)))

    def read(self, cursor: Mapping[str, Any] | None, limit: int, *,
             seen: Seen | None = None) -> SourceBatch:
        """At most ``limit`` rows after the cursor that may be decided now (settled, and not
        behind a transaction in flight: :mod:`.completion`), the pending rows read again,
        plus (with ``lookback`` and ``seen``) the rows of the lookback window behind it whose
        ids ``seen`` does not know.

        ``seen(ids)`` returns, for the ids among ``ids`` that were read before, the log time of
        the row read (the sampler asks the store); without it, the lookback window is not
        re-read.
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        mark = self._unpack(cursor)
        now = self._wall()
        query = self.select_rows().where(self.placeable)
        settled = self.completion.settled_before(now) if self.mode == "timestamp" else None
        horizon = self.horizon()
        if settled is not None:
            # Rows are decided once they are `settle` old (later UPDATEs are seen).
            query = query.where(self.position.expr <= self.position.from_time(
                settled, numeric_unit_ms=self.column_in_ms()))
        elif horizon is not None:
            # A timestamp far in the future (garbage, or a clock or zone mistake) would become
            # the cursor and put every later row behind it: such rows wait for their time.
            query = query.where(self.position.expr <= horizon)
        if mark.pos is not None:
            query = query.where(self.after(mark))
        in_flight = self.completion.in_flight.horizon()
        if in_flight is not None:
            query = query.add_columns(InFlight.young(in_flight).label("_gw_young"))
        rows = self.execute(query.order_by(self.position.expr, self.rid).limit(limit))
        if len(rows) == limit:
            rows += self._exact_ties(rows)
        rows = self.completion.cut(rows, now)

        batch = SourceBatch(cursor=dict(cursor) if cursor is not None else None)
        pending_before = len(mark.pending)
        future_before = len(mark.future_reported)
        resolved = self._mapper.resolve_pending(mark, batch, now)
        read_ids: set[str] = set()
        lookback = seen if self.lookback_s > 0 else None
        if lookback is not None and mark.pos is not None:
            late, known = self._lookback.late_rows(mark, lookback)
            batch.late = self._mapper.map_rows(late, batch, read_ids, known=known, mark=mark, now=now)
        main_known = lookback([str(r["_gw_rid"]) for r in rows]) if lookback and rows else {}
        consumed = self._mapper.map_rows(rows, batch, read_ids, known=main_known, mark=mark, now=now)
        if consumed < len(rows):
            log.warning("source %r: %d rows are waiting for their missing fields, the most "
                        "that may; reading stops before the next incomplete row until some "
                        "complete or are due (source.sql.complete_within)", self.name,
                        len(mark.pending))
        rows = rows[:consumed]
        if rows:
            mark = Mark(rows[-1]["_gw_pos"], rows[-1]["_gw_rid"], reported=mark.reported,
                         floor=mark.floor, read_total=mark.read_total, pending=mark.pending,
                         future_reported=mark.future_reported)
        if mark.read_total is not None:
            mark.read_total += batch.rows_read
        batch.pending = len(mark.pending)
        batch.waiting_transactions = self.completion.in_flight.waiting
        changed = (resolved or len(mark.pending) != pending_before
                   or len(mark.future_reported) != future_before)
        if self._audit(batch, mark) or batch.rows_read or changed:
            batch.cursor = self._cursor(mark)
        if lookback is not None and mark.pos is not None:
            newest = self.position.to_time(mark.pos)
            if newest is not None:
                batch.forget_read_before = newest - timedelta(seconds=self.lookback_s)
        return batch

    def horizon(self) -> Any:
        """The position of now + ``max_future`` (timestamp mode), beyond which rows wait."""
        if self.max_future is None or not self.max_future:
            return None
        return self.position.from_time(self._wall() + self.max_future,
                                       numeric_unit_ms=self.column_in_ms())

    def _exact_ties(self, rows: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """The rows after a full page that share the (position, request id) of its last row.

        The next page starts strictly after that pair, so such a row (the same request logged
        twice at the same time) would be passed without a word; read in this page, it is
        rejected as ``duplicate_id``. They are one more read only when the page is full.
        """
        pos, rid = rows[-1]["_gw_pos"], rows[-1]["_gw_rid"]
        taken = 0
        for row in reversed(rows):
            if (row["_gw_pos"], row["_gw_rid"]) != (pos, rid):
                break
            taken += 1
        ties = self.execute(self.select_rows().where(self.placeable, self.position.expr == pos,
                                                  self.rid == rid))
        return ties[taken:]

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"SqlSource(name={self.name!r}, table={self.qualified!r}, url={self.engine.url!r})"

