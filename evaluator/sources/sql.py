"""The ``sql`` source: any SQLAlchemy URL, any table, read incrementally by a watermark.

The watermark is the pair (timestamp column, request-id column) of the last row consumed. A
slice is ``WHERE ts > :ts OR (ts = :ts AND rid > :rid) ORDER BY ts, rid LIMIT :limit``, so ties
on the timestamp are neither skipped nor read twice, whatever the batch boundaries.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import MetaData, Table, and_, create_engine, inspect, or_, select, type_coerce
from sqlalchemy.exc import DBAPIError, InterfaceError, NoSuchTableError, OperationalError
from sqlalchemy.types import NullType

from evaluator.errors import ConfigError, InvalidRecordError, TransientError
from evaluator.records import ALL_FIELDS, REQUIRED_FIELDS, RowLimits, map_row
from evaluator.sources.base import SourceBatch

if TYPE_CHECKING:
    from evaluator.config import ColumnMap, Config

__all__ = ["SqlSource", "decode_watermark_value", "encode_watermark_value"]


def encode_watermark_value(value: Any) -> dict[str, Any]:
    """Tag a raw column value so that it is bound back with its native type.

    A datetime must come back as a datetime (not as text) for ``ts > :ts`` to compare the way
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
    raise TypeError(f"a watermark column value of type {type(value).__name__} is not supported")


def decode_watermark_value(tagged: Mapping[str, Any]) -> Any:
    """The inverse of :func:`encode_watermark_value`."""
    kind, value = tagged["type"], tagged["value"]
    decoders: dict[str, Any] = {
        "bool": bool, "datetime": datetime.fromisoformat, "date": date.fromisoformat, "int": int,
        "float": float, "decimal": Decimal, "str": str, "uuid": uuid.UUID,
    }
    if kind not in decoders:
        raise ValueError(f"unknown watermark value type {kind!r}")
    return decoders[kind](value)


class SqlSource:
    """Reads the app's request log from a table, in (timestamp, request id) order.

    * Identifiers (table, schema, columns) come from config, are checked against the reflected
      table at construction and quoted by SQLAlchemy; nothing is pasted into SQL text.
    * A required field whose column is missing raises :class:`ConfigError` naming
      ``source.columns.<field>``. So does an optional field mapped to a column of another
      name; an optional field under its own name is simply not read when the table lacks it.
    * The timestamp column may be a DATETIME/TIMESTAMP, ISO-8601 text or epoch numbers: the
      watermark stores the column's *raw* value with a type tag and compares it with the
      column's own ordering, so it never depends on parsing.
    * Rows whose timestamp or request id is NULL cannot be placed on the watermark and are
      never read (they are filtered out in the query, not rejected).
    * Rows that fail :func:`~evaluator.records.map_row` become rejections; the watermark still
      moves past them.
    * (timestamp, request id) must be unique: two rows sharing both may lose one at a batch
      boundary. Rows committed later with a timestamp at or before the watermark (late
      arrivals) are not read.
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
        config_path: str | None = None,
    ) -> None:
        from evaluator.config import ColumnMap

        self.name = name
        self.limits = limits or RowLimits()
        self._columns_cfg = columns or ColumnMap()
        self._config_path = config_path
        self._qualified = f"{schema}.{table}" if schema else table
        self.engine = create_engine(url, pool_pre_ping=True)
        try:
            self.table = self._reflect(table, schema)
            self._columns = self._resolve_columns()
        except BaseException:
            self.engine.dispose()
            raise
        self._ts = self.table.c[self._columns["timestamp"]]
        self._rid = self.table.c[self._columns["request_id"]]

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

    # -- reading ---------------------------------------------------------------------------
    def read(self, cursor: Mapping[str, Any] | None, limit: int) -> SourceBatch:
        """At most ``limit`` rows strictly after the watermark in ``cursor``."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        # Every column is read raw (as the driver returns it): the records module parses JSON
        # text, ISO text and numbers itself, and a type's result processor (SQLite DATETIME,
        # JSON) would otherwise raise mid-fetch on one malformed value and stall the source.
        names = sorted(set(self._columns.values()))
        selected = [type_coerce(self.table.c[n], NullType()).label(n) for n in names]
        ts = type_coerce(self._ts, NullType())
        rid = type_coerce(self._rid, NullType())
        query = select(*selected).where(self._ts.is_not(None), self._rid.is_not(None))
        if cursor is not None:
            last_ts, last_rid = self._watermark(cursor)
            # ``ts >= :ts`` is implied by the OR; it is spelled out so that an index on the
            # timestamp column gives a range scan on every database.
            query = query.where(ts >= last_ts, or_(ts > last_ts, and_(ts == last_ts,
                                                                     rid > last_rid)))
        query = query.order_by(ts, rid).limit(limit)
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(query).mappings().all()
        except DBAPIError as exc:
            if exc.connection_invalidated or isinstance(exc, (OperationalError, InterfaceError)):
                raise TransientError("unavailable", f"reading {self._qualified!r}: "
                                     f"{type(exc.orig).__name__}: {exc.orig}") from exc
            raise

        batch = SourceBatch(cursor=dict(cursor) if cursor is not None else None)
        ts_col, rid_col = self._columns["timestamp"], self._columns["request_id"]
        for row in rows:
            raw = dict(row)
            for key, value in raw.items():
                if isinstance(value, uuid.UUID):  # native UUID columns, e.g. PostgreSQL
                    raw[key] = str(value)
            position = f"{self._qualified}[{row[ts_col]!s}, {row[rid_col]!s}]"
            try:
                batch.records.append(map_row(raw, self._columns, limits=self.limits,
                                             position=position))
            except InvalidRecordError as err:
                batch.rejections.append(err)
            batch.rows_read += 1
            batch.cursor = {"ts": encode_watermark_value(row[ts_col]),
                            "request_id": encode_watermark_value(row[rid_col])}
        return batch

    def _watermark(self, cursor: Mapping[str, Any]) -> tuple[Any, Any]:
        try:
            return (decode_watermark_value(cursor["ts"]),
                    decode_watermark_value(cursor["request_id"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"source {self.name!r}: not an sql cursor: {dict(cursor)!r}") from exc

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"SqlSource(name={self.name!r}, table={self._qualified!r}, url={self.engine.url!r})"
