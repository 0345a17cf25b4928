"""A SQL source's stored cursor: :class:`~.order.Mark` to JSON and back, including the cursors
of earlier versions."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from evaluator.errors import InvalidRecordError
from evaluator.records import parse_timestamp
from evaluator.sources.sql.completion import PendingRow
from evaluator.sources.sql.order import (
    CURSOR_VERSION,
    Mark,
    decode_watermark_value,
    encode_watermark_value,
)

if TYPE_CHECKING:
    from evaluator.sources.sql.source import SqlSource

log = logging.getLogger("evaluator.sources.sql")


def pack_cursor(src: SqlSource, mark: Mark) -> dict[str, Any]:
    """The JSON cursor of ``mark``."""
    return {"v": CURSOR_VERSION, "mode": src.mode, "column": src.order_column,
            "pos": None if mark.pos is None else encode_watermark_value(mark.pos),
            "request_id": None if mark.rid is None else encode_watermark_value(mark.rid),
            "inclusive": mark.inclusive, "unplaceable_reported": list(mark.reported),
            "floor": None if mark.floor is None else encode_watermark_value(mark.floor),
            "read_total": mark.read_total,
            **({"pending": [p.to_json() for p in mark.pending]} if mark.pending else {}),
            **({"future_reported": list(mark.future_reported)}
               if mark.future_reported else {})}


def unpack_cursor(src: SqlSource, cursor: Mapping[str, Any] | None) -> Mark:
    """Where a stored cursor stands (see :class:`Mark`)."""
    if cursor is None:
        return Mark(read_total=0)
    try:
        if "v" not in cursor:  # written before cursor modes: the raw timestamp value
            raw = decode_watermark_value(cursor["ts"])
            rid = decode_watermark_value(cursor["request_id"])
            if src.mode != "timestamp":
                raise ValueError("a timestamp cursor cannot be used in incrementing mode")
            if src.position.kind == "raw":
                return Mark(raw, rid)
            try:
                when: datetime | None = parse_timestamp(raw)
            except InvalidRecordError:
                when = None
            if when is None:
                log.warning("source %r: stored cursor %r is no time; reading from the "
                            "start (items already stored are not sent again)", src.name, raw)
                return Mark()
            return Mark(src.position.from_time(when), rid)
        reported = [str(r) for r in cursor.get("unplaceable_reported") or []]
        if cursor.get("pos") is None:
            # Never moved (e.g. every row unplaceable under a mapping since fixed): a
            # cursor at the start fits any mode and column. The rows it reported stay
            # reported, or each check would report (and count) them again.
            return Mark(reported=reported, read_total=0)
        if cursor.get("mode") != src.mode or cursor.get("column") != src.order_column:
            raise ValueError(
                f"source {src.name!r}: the stored cursor is for mode {cursor.get('mode')!r} "
                f"on column {cursor.get('column')!r}, the config says mode {src.mode!r} on "
                f"{src.order_column!r}: move it with `groundwatch cursor set` or "
                "`groundwatch cursor reset`")
        pos = None if cursor["pos"] is None else decode_watermark_value(cursor["pos"])
        rid = (None if cursor.get("request_id") is None
               else decode_watermark_value(cursor["request_id"]))
        floor = (None if cursor.get("floor") is None
                 else decode_watermark_value(cursor["floor"]))
        total = cursor.get("read_total")
        return Mark(pos, rid, bool(cursor.get("inclusive")), reported, floor,
                     None if total is None else int(total),
                     [PendingRow.from_json(p) for p in cursor.get("pending") or []],
                     [str(r) for r in cursor.get("future_reported") or []])
    except (KeyError, TypeError) as exc:
        raise ValueError(f"source {src.name!r}: not an sql cursor: {dict(cursor)!r}") from exc
