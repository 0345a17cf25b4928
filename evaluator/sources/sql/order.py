"""The order a SQL source reads in: a row's *position* (the timestamp compared as a UTC time,
or an increasing column), how a position converts to and from a time, and where a cursor
stands (:class:`Mark`). How the position of a timestamp is computed is in the package's
docstring.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Float, Integer, Numeric, String, and_, case, cast, func, type_coerce
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import Date, DateTime, NullType

from evaluator.errors import InvalidRecordError
from evaluator.records import parse_timestamp

CURSOR_VERSION = 2
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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


def is_numeric(column_type: Any) -> bool:
    return isinstance(column_type, (Integer, Numeric, Float))


def is_temporal(column_type: Any) -> bool:
    return isinstance(column_type, (DateTime, Date))


class Position:
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
        if is_numeric(column_type):
            seconds = (when - EPOCH).total_seconds()
            value = seconds * 1000 if numeric_unit_ms else seconds
            return int(value) if isinstance(column_type, Integer) else value
        if isinstance(column_type, DateTime) and not column_type.timezone:
            return when.replace(tzinfo=None)
        if isinstance(column_type, Date) and not isinstance(column_type, DateTime):
            return when.date()
        return when


def timestamp_position(column: Any, dialect: str) -> Position:
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
        return Position(type_coerce(expr, Integer()), "sqlite_ms", column, exact=True)
    if is_temporal(column.type) or is_numeric(column.type):
        return Position(raw, "raw", column, exact=True)
    if dialect == "postgresql" and isinstance(column.type, String):
        text_col = cast(raw, String)
        expr = case(
            (text_col.op("~")(_PG_AWARE), cast(text_col, DateTime(timezone=True))),
            (text_col.op("~")(_PG_NAIVE),
             func.timezone("UTC", cast(text_col, DateTime(timezone=False)))),
            else_=None,
        )
        return Position(type_coerce(expr, DateTime(timezone=True)), "pg_text", column,
                         exact=True,
                         note="the timestamp column is text: it is parsed in the database on "
                              "every read (no index helps); mode = 'incrementing' on an "
                              "indexed id column is cheaper on a large table")
    return Position(raw, "raw", column, exact=False,
                     note=f"the timestamp column is {column.type} on {dialect}: it is compared "
                          "as text, which follows time only when every row has the same "
                          "format and offset; use mode = 'incrementing' with an "
                          "auto-increment column for an exact order")


@dataclass
class Mark:
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
    # Rows read before they were complete, read again until they are or are due
    # (:class:`~evaluator.sources.sql.completion.PendingRow`).
    pending: list[Any] = field(default_factory=list)
    # Ids of rows reported ``future_timestamp``: rejected, so skipped if their time comes.
    future_reported: list[str] = field(default_factory=list)
