"""The ``sql`` source: any SQLAlchemy URL, any table, read incrementally by a cursor.

Every row has a *position*: in ``timestamp`` mode the timestamp column compared as a UTC time,
in ``incrementing`` mode an increasing column the database sets. A slice is the keyset page
``WHERE pos > :pos OR (pos = :pos AND rid > :rid) ORDER BY pos, rid LIMIT :limit``, so ties on
the position are neither skipped nor read twice, whatever the batch boundaries.

How the position of a timestamp is computed, so that it is a time and not text:

* SQLite: whole milliseconds since the epoch, from ISO-8601 text with any offset or ``Z``
  (``strftime``) or from epoch numbers (seconds, or milliseconds above 1e11, as
  :func:`~evaluator.records.parse_timestamp` reads them). No index on the column helps.
* PostgreSQL: a typed column (``timestamp``, ``timestamptz``, numbers) as it is, so an index
  serves the range; text is cast to ``timestamptz`` behind a pattern that only lets valid
  ISO-8601 dates through (naive text is taken as UTC), so one bad value cannot fail the query.
* Other databases: typed columns as they are; text compares as text, which is exact only when
  every row is written with the same offset (``check-config`` says so).

A row whose position is NULL or unreadable (a NULL or garbage timestamp, a NULL request id) is
never read in order and never moves the cursor; a periodic scan finds such rows, reports each
(by request id) once as a rejection ``no_position`` and counts them all in a gauge.

In ``timestamp`` mode ``lookback`` re-reads the window behind the cursor on every poll: rows of
that window whose request id was not read before (committed late) are read now. Which ids were
read is kept by the sampler in the store for the window's length (``SourceBatch.read_ids``).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Float,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    and_,
    case,
    cast,
    func,
    inspect,
    literal,
    not_,
    or_,
    select,
    type_coerce,
)
from sqlalchemy.exc import DBAPIError, InterfaceError, NoSuchTableError, OperationalError
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import Date, DateTime, NullType

from evaluator.errors import ConfigError, InvalidRecordError, TransientError
from evaluator.records import ALL_FIELDS, REQUIRED_FIELDS, FieldDrop, RowLimits, map_row, parse_timestamp
from evaluator.sources.base import Seen, SourceBatch, SourceNote
from evaluator.sources.engine import create_source_engine

if TYPE_CHECKING:
    from evaluator.config import ColumnMap, Config

__all__ = ["SqlSource", "decode_watermark_value", "encode_watermark_value"]

log = logging.getLogger(__name__)

CURSOR_VERSION = 2
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Ids of unplaceable rows already reported, kept in the cursor so a restart does not report
# them again; past this many, further ones are only counted (the gauge) and logged.
MAX_REPORTED_UNPLACEABLE = 1000
# The lookback window is read as ids first; a window holding more than this many rows is cut
# (and logged): size lookback to the traffic.
MAX_LOOKBACK_IDS = 100_000
_IN_CHUNK = 500

# ISO-8601 dates PostgreSQL's timestamptz input accepts without an error: real calendar days
# (leap years included), 24-hour times, optional fraction and offset. Anything else is NULL.
_PG_YEAR = r"[1-9][0-9]{3}"
_PG_DATE = (
    rf"(?:{_PG_YEAR}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    r"|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))"
    r"|[0-9]{2}(?:0[48]|[2468][048]|[13579][26])-02-29|(?:[02468][048]|[13579][26])00-02-29)"
)
_PG_TIME = r"(?:[T ](?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{1,9})?)?)?"
_PG_OFFSET = r"(?:Z|z|[+-](?:0[0-9]|1[0-4])(?::?[0-5][0-9])?)"
_PG_NAIVE = f"^{_PG_DATE}{_PG_TIME}$"
_PG_AWARE = f"^{_PG_DATE}{_PG_TIME} ?{_PG_OFFSET}$"


def encode_watermark_value(value: Any) -> dict[str, Any]:
    """Tag a raw column value so that it is bound back with its native type.

    A datetime must come back as a datetime (not as text) for ``pos > :pos`` to compare the way
    the database orders the column; likewise numbers and text.
    """
    if isinstance(value, bool):
        return {"type": "bool", "value": value}
    if isinstance(value, datetime):
        return {"type": "datetime", "value": value.isoformat()}
    if isinstance(value, date):
        return {"type": "date", "value": value.isoformat()}
    if isinstance(value, int):
        return {"type": "int", "value": value}
    if isinstance(value, float):
        return {"type": "float", "value": value}  # repr round-trips exactly through JSON
    if isinstance(value, Decimal):
        return {"type": "decimal", "value": str(value)}
    if isinstance(value, str):
        return {"type": "str", "value": value}
    if isinstance(value, uuid.UUID):
        return {"type": "uuid", "value": str(value)}
    if isinstance(value, (bytes, bytearray, memoryview)):
        # A BLOB request id (SQLite keeps what it is given): the row is rejected, but when it
        # ends a page the cursor must still be able to stand after it.
        return {"type": "bytes", "value": bytes(value).hex()}
    raise TypeError(f"a watermark column value of type {type(value).__name__} is not supported")


def decode_watermark_value(tagged: Mapping[str, Any]) -> Any:
    """The inverse of :func:`encode_watermark_value`."""
    kind, value = tagged["type"], tagged["value"]
    decoders: dict[str, Any] = {
        "bool": bool, "datetime": datetime.fromisoformat, "date": date.fromisoformat, "int": int,
        "float": float, "decimal": Decimal, "str": str, "uuid": uuid.UUID,
        "bytes": bytes.fromhex,
    }
    if kind not in decoders:
        raise ValueError(f"unknown watermark value type {kind!r}")
    return decoders[kind](value)


def _is_numeric(column_type: Any) -> bool:
    return isinstance(column_type, (Integer, Numeric, Float))


def _is_temporal(column_type: Any) -> bool:
    return isinstance(column_type, (DateTime, Date))


class _Position:
    """How a row's place in the order is computed (``expr``), and converted to and from a time.

    ``kind`` is one of ``raw`` (the column itself, compared natively), ``sqlite_ms`` (whole
    milliseconds since the epoch) and ``pg_text`` (text cast to timestamptz).
    """

    def __init__(self, expr: ColumnElement[Any], kind: str, column: Any, *, exact: bool,
                 note: str | None = None) -> None:
        self.expr = expr
        self.kind = kind
        self.column = column
        self.exact = exact  # the order is the order of time (or of the increasing column)
        self.note = note

    def to_time(self, value: Any) -> datetime | None:
        """The UTC time of a position value (None when it is no time)."""
        try:
            if self.kind == "sqlite_ms":
                return EPOCH + timedelta(milliseconds=int(value))
            return parse_timestamp(value)
        except (InvalidRecordError, OverflowError, ValueError, TypeError):
            return None

    def from_time(self, when: datetime, *, numeric_unit_ms: bool = False) -> Any:
        """The position value of the time ``when`` (for lookback bounds and ``cursor set``)."""
        when = when.astimezone(UTC)
        if self.kind == "sqlite_ms":
            return (when - EPOCH) // timedelta(milliseconds=1)
        if self.kind == "pg_text":
            return when
        column_type = self.column.type
        if _is_numeric(column_type):
            seconds = (when - EPOCH).total_seconds()
            value = seconds * 1000 if numeric_unit_ms else seconds
            return int(value) if isinstance(column_type, Integer) else value
        if isinstance(column_type, DateTime) and not column_type.timezone:
            return when.replace(tzinfo=None)
        if isinstance(column_type, Date) and not isinstance(column_type, DateTime):
            return when.date()
        return when


def _timestamp_position(column: Any, dialect: str) -> _Position:
    raw = type_coerce(column, NullType())
    if dialect == "sqlite":
        # SQLite stores what it is given whatever the declared type: decide per value.
        seconds = func.strftime("%s", raw)
        millis = func.substr(func.strftime("%f", raw), 4, 3)
        iso = and_(func.typeof(raw) == "text",
                   raw.op("GLOB")("[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*"))
        number = and_(func.typeof(raw).in_(["integer", "real"]), func.abs(raw) < 1e14)
        expr = case(
            (number, cast(case((raw > 1e11, raw), else_=raw * 1000), Integer)),
            (iso, cast(seconds, Integer) * 1000 + cast(millis, Integer)),
            else_=None,
        )
        return _Position(type_coerce(expr, Integer()), "sqlite_ms", column, exact=True)
    if _is_temporal(column.type) or _is_numeric(column.type):
        return _Position(raw, "raw", column, exact=True)
    if dialect == "postgresql" and isinstance(column.type, String):
        text_col = cast(raw, String)
        expr = case(
            (text_col.op("~")(_PG_AWARE), cast(text_col, DateTime(timezone=True))),
            (text_col.op("~")(_PG_NAIVE),
             func.timezone("UTC", cast(text_col, DateTime(timezone=False)))),
            else_=None,
        )
        return _Position(type_coerce(expr, DateTime(timezone=True)), "pg_text", column,
                         exact=True,
                         note="the timestamp column is text: it is parsed in the database on "
                              "every read (no index helps); mode = 'incrementing' on an "
                              "indexed id column is cheaper on a large table")
    return _Position(raw, "raw", column, exact=False,
                     note=f"the timestamp column is {column.type} on {dialect}: it is compared "
                          "as text, which follows time only when every row has the same "
                          "format and offset; use mode = 'incrementing' with an "
                          "auto-increment column for an exact order")


@dataclass
class _Mark:
    """Where a cursor stands: after (``pos``, ``rid``) in the order; with ``rid`` None, after
    ``pos`` (``inclusive``: at or after); with ``pos`` None, at the start. ``reported`` holds
    the ids of rows without a position already reported; ``floor`` bounds the lookback."""

    pos: Any = None
    rid: Any = None
    inclusive: bool = False
    reported: list[str] = field(default_factory=list)
    # Where an operator put the cursor (``cursor set``): the lookback never reaches behind
    # it, since the ids read there before were forgotten with the move.
    floor: Any = None
    # Rows consumed at or before the cursor, to compare with what the table holds there
    # (None: not known yet, e.g. after a move; the next audit takes the table's count).
    read_total: int | None = None


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
        config_path: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        from evaluator.config import ColumnMap

        self.name = name
        self.limits = limits or RowLimits()
        self.mode = mode
        self.lookback_s = lookback_s if mode == "timestamp" else 0.0
        self._unplaceable_every = unplaceable_check_s
        self._max_future = timedelta(seconds=max_future_s) if mode == "timestamp" else None
        self._wall = wall
        self._unplaceable_at: float | None = None
        self._clock = clock
        self._columns_cfg = columns or ColumnMap()
        self._config_path = config_path
        self._qualified = f"{schema}.{table}" if schema else table
        self.engine = create_source_engine(url, path=config_path)
        try:
            self.table = self._reflect(table, schema)
            self._columns = self._resolve_columns()
            if mode == "incrementing":
                if not incrementing_column or incrementing_column not in self.table.c:
                    raise ConfigError(
                        f"column {incrementing_column!r} is not in table {self.table.fullname!r}",
                        path=config_path, key="source.sql.incrementing_column")
                inc = self.table.c[incrementing_column]
                if not (_is_numeric(inc.type) or _is_temporal(inc.type)):
                    raise ConfigError(
                        f"column {incrementing_column!r} is {inc.type}: an incrementing column "
                        "must be a number (an auto-increment id) or a time the database sets",
                        path=config_path, key="source.sql.incrementing_column")
                self._order_column = incrementing_column
                self.position = _Position(type_coerce(inc, NullType()), "raw", inc, exact=True)
            elif mode == "timestamp":
                self._order_column = self._columns["timestamp"]
                self.position = _timestamp_position(self.table.c[self._order_column],
                                                    self.engine.dialect.name)
            else:
                raise ConfigError(f"unknown mode {mode!r} (timestamp, incrementing)",
                                  path=config_path, key="source.sql.mode")
        except BaseException:
            self.engine.dispose()
            raise
        self._rid_col = self.table.c[self._columns["request_id"]]
        self._rid = type_coerce(self._rid_col, NullType())
        self._placeable = and_(self.position.expr.is_not(None), self._rid_col.is_not(None))
        self._numeric_ms: bool | None = None

    @classmethod
    def from_config(cls, config: Config) -> SqlSource:
        src = config.source
        return cls(
            src.name,
            src.sql.url.get_secret_value(),
            src.sql.table,
            src.sql.schema_,
            src.columns,
            RowLimits(max_field_chars=src.max_field_chars, max_contexts=src.max_contexts),
            mode=src.sql.mode,
            incrementing_column=src.sql.incrementing_column,
            lookback_s=src.sql.lookback_s,
            unplaceable_check_s=src.sql.unplaceable_check,
            max_future_s=src.sql.max_future,
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
        defaults = type(self._columns_cfg).model_fields
        resolved: dict[str, str] = {}
        for fname in ALL_FIELDS:
            column = getattr(self._columns_cfg, fname)
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

    def preflight_notes(self) -> list[SourceNote]:
        """What ``check-config`` should tell the user about this source's order: a warning
        when the order is exact but slow, a problem when it cannot be exact."""
        if not self.position.note:
            return []
        return [SourceNote(self.position.note, key="source.sql.mode",
                           problem=not self.position.exact)]

    # -- cursors ---------------------------------------------------------------------------
    def _cursor(self, mark: _Mark) -> dict[str, Any]:
        return {"v": CURSOR_VERSION, "mode": self.mode, "column": self._order_column,
                "pos": None if mark.pos is None else encode_watermark_value(mark.pos),
                "request_id": None if mark.rid is None else encode_watermark_value(mark.rid),
                "inclusive": mark.inclusive, "unplaceable_reported": list(mark.reported),
                "floor": None if mark.floor is None else encode_watermark_value(mark.floor),
                "read_total": mark.read_total}

    def _unpack(self, cursor: Mapping[str, Any] | None) -> _Mark:
        """Where a stored cursor stands (see :class:`_Mark`)."""
        if cursor is None:
            return _Mark(read_total=0)
        try:
            if "v" not in cursor:  # written before cursor modes: the raw timestamp value
                raw = decode_watermark_value(cursor["ts"])
                rid = decode_watermark_value(cursor["request_id"])
                if self.mode != "timestamp":
                    raise ValueError("a timestamp cursor cannot be used in incrementing mode")
                if self.position.kind == "raw":
                    return _Mark(raw, rid)
                try:
                    when: datetime | None = parse_timestamp(raw)
                except InvalidRecordError:
                    when = None
                if when is None:
                    log.warning("source %r: stored cursor %r is no time; reading from the "
                                "start (items already stored are not sent again)", self.name, raw)
                    return _Mark()
                return _Mark(self.position.from_time(when), rid)
            reported = [str(r) for r in cursor.get("unplaceable_reported") or []]
            if cursor.get("pos") is None:
                # Never moved (e.g. every row unplaceable under a mapping since fixed): a
                # cursor at the start fits any mode and column. The rows it reported stay
                # reported, or each check would report (and count) them again.
                return _Mark(reported=reported, read_total=0)
            if cursor.get("mode") != self.mode or cursor.get("column") != self._order_column:
                raise ValueError(
                    f"source {self.name!r}: the stored cursor is for mode {cursor.get('mode')!r} "
                    f"on column {cursor.get('column')!r}, the config says mode {self.mode!r} on "
                    f"{self._order_column!r}: move it with `groundwatch cursor set` or "
                    "`groundwatch cursor reset`")
            pos = None if cursor["pos"] is None else decode_watermark_value(cursor["pos"])
            rid = (None if cursor.get("request_id") is None
                   else decode_watermark_value(cursor["request_id"]))
            floor = (None if cursor.get("floor") is None
                     else decode_watermark_value(cursor["floor"]))
            total = cursor.get("read_total")
            return _Mark(pos, rid, bool(cursor.get("inclusive")), reported, floor,
                         None if total is None else int(total))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"source {self.name!r}: not an sql cursor: {dict(cursor)!r}") from exc

    def cursor_at(self, when: datetime | None = None, *, value: Any = None) -> dict[str, Any]:
        """A cursor from which rows at or after the time ``when`` (timestamp mode), or after
        the raw position ``value`` (either mode), are read next."""
        if value is not None:
            return self._cursor(_Mark(value, None, inclusive=False, floor=value))
        if when is None:
            raise ValueError("give a time or a value")
        if self.mode != "timestamp":
            raise ValueError("in incrementing mode, give the column's value")
        pos = self.position.from_time(when, numeric_unit_ms=self._column_in_ms())
        return self._cursor(_Mark(pos, None, inclusive=True, floor=pos))

    def describe_cursor(self, cursor: Mapping[str, Any] | None) -> str:
        """One line for logs and ``groundwatch cursor show``."""
        mark = self._unpack(cursor)
        where = f"mode {self.mode} on column {self._order_column!r}"
        if mark.pos is None:
            return f"{where}: at the start of {self._qualified}"
        when = self.position.to_time(mark.pos) if self.mode == "timestamp" else None
        shown = when.isoformat() if when is not None else repr(mark.pos)
        after = ("at or after" if mark.inclusive else "after") if mark.rid is None else "after"
        tie = f" (request id {mark.rid!s})" if mark.rid is not None else ""
        extra = (f"; {len(mark.reported)} row(s) without a position reported"
                 if mark.reported else "")
        return f"{where}: next rows {after} {shown}{tie}{extra}"

    def _column_in_ms(self) -> bool:
        """Whether a numeric timestamp column holds milliseconds (looked up once)."""
        if self._numeric_ms is None:
            self._numeric_ms = False
            if self.position.kind == "raw" and _is_numeric(self.position.column.type):
                with self.engine.connect() as conn:
                    top = conn.scalar(select(func.max(self.position.column)))
                self._numeric_ms = top is not None and float(top) > 1e11
        return self._numeric_ms

    # -- reading ---------------------------------------------------------------------------
    def _select(self) -> Any:
        # Every column is read raw (as the driver returns it): the records module parses JSON
        # text, ISO text and numbers itself, and a type's result processor (SQLite DATETIME,
        # JSON) would otherwise raise mid-fetch on one malformed value and stall the source.
        names = sorted(set(self._columns.values()))
        selected = [type_coerce(self.table.c[n], NullType()).label(n) for n in names]
        return select(*selected, self.position.expr.label("_gw_pos"),
                      self._rid.label("_gw_rid"))

    def _execute(self, query: Any) -> list[Mapping[str, Any]]:
        try:
            with self.engine.connect() as conn:
                return [dict(r) for r in conn.execute(query).mappings().all()]
        except DBAPIError as exc:
            if exc.connection_invalidated or isinstance(exc, (OperationalError, InterfaceError)):
                raise TransientError("unavailable", f"reading {self._qualified!r}: "
                                     f"{type(exc.orig).__name__}: {exc.orig}") from exc
            raise

    def _after(self, mark: _Mark) -> Any:
        """The rows after ``mark`` in the order."""
        p = self.position.expr
        if mark.rid is None:
            return p >= mark.pos if mark.inclusive else p > mark.pos
        # ``pos >= :pos`` is implied by the OR; it is spelled out so that an index on the
        # column gives a range scan on every database.
        return and_(p >= mark.pos, or_(p > mark.pos, and_(p == mark.pos, self._rid > mark.rid)))

    def read(self, cursor: Mapping[str, Any] | None, limit: int, *,
             seen: Seen | None = None) -> SourceBatch:
        """At most ``limit`` rows after the cursor, plus (with ``lookback`` and ``seen``) the
        rows of the lookback window behind it whose ids ``seen`` does not know.

        ``seen(ids)`` returns, for the ids among ``ids`` that were read before, the log time of
        the row read (the sampler asks the store); without it, the lookback window is not
        re-read.
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        mark = self._unpack(cursor)
        query = self._select().where(self._placeable)
        horizon = self._horizon()
        if horizon is not None:
            # A timestamp far in the future (garbage, or a clock or zone mistake) would become
            # the cursor and put every later row behind it: such rows wait for their time.
            query = query.where(self.position.expr <= horizon)
        if mark.pos is not None:
            query = query.where(self._after(mark))
        rows = self._execute(query.order_by(self.position.expr, self._rid).limit(limit))
        if len(rows) == limit:
            rows += self._exact_ties(rows)

        batch = SourceBatch(cursor=dict(cursor) if cursor is not None else None)
        read_ids: set[str] = set()
        lookback = seen if self.lookback_s > 0 else None
        if lookback is not None and mark.pos is not None:
            late, known = self._late_rows(mark, lookback)
            batch.late = len(late)
            self._map_rows(late, batch, read_ids, known=known)
        main_known = lookback([str(r["_gw_rid"]) for r in rows]) if lookback and rows else {}
        self._map_rows(rows, batch, read_ids, known=main_known)
        if rows:
            mark = _Mark(rows[-1]["_gw_pos"], rows[-1]["_gw_rid"], reported=mark.reported,
                         floor=mark.floor, read_total=mark.read_total)
        if mark.read_total is not None:
            mark.read_total += batch.rows_read
        if self._audit(batch, mark) or batch.rows_read:
            batch.cursor = self._cursor(mark)
        if lookback is not None and mark.pos is not None:
            newest = self.position.to_time(mark.pos)
            if newest is not None:
                batch.forget_read_before = newest - timedelta(seconds=self.lookback_s)
        return batch

    def _horizon(self) -> Any:
        """The position of now + ``max_future`` (timestamp mode), beyond which rows wait."""
        if self._max_future is None or not self._max_future:
            return None
        return self.position.from_time(self._wall() + self._max_future,
                                       numeric_unit_ms=self._column_in_ms())

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
        ties = self._execute(self._select().where(self._placeable, self.position.expr == pos,
                                                  self._rid == rid))
        return ties[taken:]

    def _map_rows(self, rows: Iterable[Mapping[str, Any]], batch: SourceBatch,
                  read_ids: set[str], *, known: Mapping[str, Mapping[datetime, int]]) -> None:
        """Map ``rows`` into ``batch``; a request id already in ``read_ids`` (this read) or
        ``known`` (read before, as another row) makes the row a ``duplicate_id``."""
        for row in rows:
            raw = dict(row)
            pos, rid = raw.pop("_gw_pos"), str(raw.pop("_gw_rid"))
            for key, value in raw.items():
                if isinstance(value, uuid.UUID):  # native UUID columns, e.g. PostgreSQL
                    raw[key] = str(value)
            batch.rows_read += 1
            when = self.position.to_time(pos)
            position = f"{self._qualified}[{when.isoformat() if when else pos!s}, {rid}]"
            if self.lookback_s > 0 and when is not None:
                batch.read_ids.append((rid, when))  # duplicates too: each row is read once
            if rid in read_ids or rid in known:
                batch.rejections.append(InvalidRecordError(
                    "duplicate_id", field="request_id", row_ref=rid,
                    detail=f"a row with this request id was read before; this one is at "
                           f"{position}"))
                continue
            read_ids.add(rid)
            drops: list[FieldDrop] = []
            try:
                batch.records.append(map_row(raw, self._columns, limits=self.limits,
                                             position=position, dropped=drops))
            except InvalidRecordError as err:
                batch.rejections.append(err)
            batch.dropped.extend(drops)

    def _late_rows(self, mark: _Mark, seen: Seen
                   ) -> tuple[list[Mapping[str, Any]], Mapping[str, Mapping[datetime, int]]]:
        """Rows of the lookback window behind ``mark`` that were not read before, and what
        ``seen`` knows of their ids (a known id is another row: a duplicate).

        Rows are told apart by (request id, time): of the window's rows sharing both, as many
        as ``seen`` counts were read before; the others were committed late. (Rows that share
        both are indistinguishable here, so which of them is taken as new is arbitrary; all
        but one of them are duplicates anyway.)
        """
        newest = self.position.to_time(mark.pos)
        if newest is None:
            return [], {}
        floor = self.position.from_time(newest - timedelta(seconds=self.lookback_s),
                                        numeric_unit_ms=self._column_in_ms())
        if mark.floor is not None:
            floor = max(floor, mark.floor)
        behind = and_(self._placeable, self.position.expr >= floor, not_(self._after(mark)))
        p = self.position.expr
        window = self._execute(select(self._rid.label("rid"), p.label("pos"),
                                      func.count().label("n"))
                               .where(behind).group_by(self._rid, p)
                               .limit(MAX_LOOKBACK_IDS + 1))
        if len(window) > MAX_LOOKBACK_IDS:
            log.warning("source %r: the lookback window holds more than %d rows; only those "
                        "are checked for late commits (make source.sql.lookback shorter)",
                        self.name, MAX_LOOKBACK_IDS)
            window = window[:MAX_LOOKBACK_IDS]
        known = seen(list({str(r["rid"]) for r in window})) if window else {}

        def already(rid: Any, pos: Any) -> int:
            when = self.position.to_time(pos)
            return known.get(str(rid), {}).get(when, 0) if when is not None else 0

        unseen = list({str(r["rid"]): r["rid"] for r in window
                       if r["n"] > already(r["rid"], r["pos"])}.values())
        late: list[Mapping[str, Any]] = []
        skip: dict[tuple[str, Any], int] = {}
        for start in range(0, len(unseen), _IN_CHUNK):
            chunk = unseen[start:start + _IN_CHUNK]
            # Bound untyped: the ids are as the driver returned them, and SQLite may hold
            # text, numbers and BLOBs in one column (a typed bind would convert, and fail).
            ids_ = [literal(rid, NullType()) for rid in chunk]
            for row in self._execute(self._select().where(behind, self._rid_col.in_(ids_))
                                     .order_by(p, self._rid)):
                key = (str(row["_gw_rid"]), row["_gw_pos"])
                if key not in skip:
                    skip[key] = already(row["_gw_rid"], row["_gw_pos"])
                if skip[key] > 0:
                    skip[key] -= 1  # one of the rows read before
                    continue
                late.append(row)
        if late:
            log.info("source %r: %d row(s) committed late were read from the lookback window",
                     self.name, len(late))
        return late, known

    def _audit(self, batch: SourceBatch, mark: _Mark) -> bool:
        """Now and then, look at the whole table for what ordered reads cannot see:

        * rows without a position: counted (``batch.unplaceable``), each new one reported
          once as a rejection (``mark.reported`` keeps their ids);
        * rows at or behind the cursor that were never read (``batch.missed``): committed
          later than the lookback window reaches, or, in incrementing mode, with an id below
          the cursor committed after it (the table holds more rows there than were consumed).

        True when ``mark`` changed and the cursor must be stored."""
        reported = mark.reported
        now = self._clock()
        if self._unplaceable_at is not None and now - self._unplaceable_at < self._unplaceable_every:
            return False
        self._unplaceable_at = now
        unplaceable = or_(self.position.expr.is_(None), self._rid_col.is_(None))
        order = type_coerce(self.table.c[self._order_column], NullType())
        changed = False
        try:
            with self.engine.connect() as conn:
                count = int(conn.scalar(select(func.count()).select_from(self.table)
                                        .where(unplaceable)) or 0)
                future = 0
                horizon = self._horizon()
                if horizon is not None:
                    future = int(conn.scalar(select(func.count()).select_from(self.table)
                                             .where(self._placeable,
                                                    self.position.expr > horizon)) or 0)
                behind = 0
                if mark.pos is not None:
                    behind = int(conn.scalar(select(func.count()).select_from(self.table)
                                             .where(self._placeable, not_(self._after(mark))))
                                 or 0)
                rows = conn.execute(select(self._rid.label("rid"), order.label("at"))
                                    .where(unplaceable, self._rid_col.is_not(None))
                                    .limit(MAX_REPORTED_UNPLACEABLE)).all()
        except DBAPIError as exc:
            log.warning("source %r: could not look for rows without a position: %s",
                        self.name, exc.orig)
            return False
        batch.unplaceable = count
        batch.future = future
        if future:
            log.warning("source %r: %d row(s) of %s have a %s more than %s in the future (a "
                        "clock or time zone mistake, or garbage); they are read when their "
                        "time comes (source.sql.max_future)", self.name, future,
                        self._qualified, self._order_column, self._max_future)
        if mark.read_total is None:  # after a move: from now on, count from the table's count
            mark.read_total, changed = behind, True
        batch.missed = max(0, behind - mark.read_total)
        if batch.missed:
            log.warning("source %r: %d row(s) of %s at or behind the cursor were never read: "
                        "committed after the cursor had passed their %s%s; read them with "
                        "`groundwatch backfill`, and %s", self.name, batch.missed,
                        self._qualified, self._order_column,
                        f" by more than the lookback ({self.lookback_s:g} s)"
                        if self.mode == "timestamp" else "",
                        "make source.sql.lookback longer" if self.mode == "timestamp"
                        else "mind that ids are handed out before their rows commit")
        if count:
            log.warning("source %r: %d row(s) of %s cannot be placed in the %s order (NULL or "
                        "unreadable %s, or NULL request id) and are not read; they are "
                        "listed as rejections 'no_position'", self.name, count, self._qualified,
                        self.mode, self._order_column)
        known = set(reported)
        room = MAX_REPORTED_UNPLACEABLE - len(reported)
        fresh: list[tuple[str, Any]] = []
        for r in rows:  # one report per request id: two unplaceable rows may share one
            if str(r.rid) not in known:
                known.add(str(r.rid))
                fresh.append((str(r.rid), r.at))
        fresh = fresh[:max(0, room)]
        field = "timestamp" if self.mode == "timestamp" else self._order_column
        for row_ref, at in fresh:
            batch.rejections.append(InvalidRecordError(
                "no_position", field=field, row_ref=row_ref,
                detail=f"{self._order_column} = {str(at)[:60]!r} cannot be placed in the "
                       f"{self.mode} order; the row is not read until it is fixed"))
            reported.append(row_ref)
        return bool(fresh) or changed

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"SqlSource(name={self.name!r}, table={self._qualified!r}, url={self.engine.url!r})"

