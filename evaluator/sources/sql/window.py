"""What a SQL source reads besides its next page: the lookback window behind the cursor (rows
committed late), and a periodic look at the whole table for what ordered reads cannot see
(rows without a position, rows too far in the future, rows passed by the cursor unread).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, literal, not_, or_, select, type_coerce
from sqlalchemy.exc import DBAPIError
from sqlalchemy.types import NullType

from evaluator.errors import InvalidRecordError
from evaluator.sources.base import Seen, SourceBatch
from evaluator.sources.sql.order import Mark

if TYPE_CHECKING:
    from evaluator.sources.sql.source import SqlSource

log = logging.getLogger("evaluator.sources.sql")

# Ids of unplaceable rows already reported, kept in the cursor so a restart does not report
# them again; past this many, further ones are only counted (the gauge) and logged.
MAX_REPORTED_UNPLACEABLE = 1000
# The lookback window is read as ids first; a window holding more than this many rows is cut
# (and logged): size lookback to the traffic.
MAX_LOOKBACK_IDS = 100_000
_IN_CHUNK = 500


class Lookback:
    """The window of ``source.lookback_s`` behind the cursor, re-read on every poll."""

    def __init__(self, source: SqlSource) -> None:
        self.source = source

    def late_rows(self, mark: Mark, seen: Seen
                  ) -> tuple[list[Mapping[str, Any]], Mapping[str, Mapping[datetime, int]]]:
        """Rows of the lookback window behind ``mark`` that were not read before, and what
        ``seen`` knows of their ids (a known id is another row: a duplicate).

        Rows are told apart by (request id, time): of the window's rows sharing both, as many
        as ``seen`` counts were read before; the others were committed late. (Rows that share
        both are indistinguishable here, so which of them is taken as new is arbitrary; all
        but one of them are duplicates anyway.)
        """
        src = self.source
        newest = src.position.to_time(mark.pos)
        if newest is None:
            return [], {}
        floor = src.position.from_time(newest - timedelta(seconds=src.lookback_s),
                                        numeric_unit_ms=src.column_in_ms())
        if mark.floor is not None:
            floor = max(floor, mark.floor)
        behind = and_(src.placeable, src.position.expr >= floor, not_(src.after(mark)))
        p = src.position.expr
        window = src.execute(select(src.rid.label("rid"), p.label("pos"),
                                      func.count().label("n"))
                               .where(behind).group_by(src.rid, p)
                               .limit(MAX_LOOKBACK_IDS + 1))
        if len(window) > MAX_LOOKBACK_IDS:
            log.warning("source %r: the lookback window holds more than %d rows; only those "
                        "are checked for late commits (make source.sql.lookback shorter)",
                        src.name, MAX_LOOKBACK_IDS)
            window = window[:MAX_LOOKBACK_IDS]
        known = seen(list({str(r["rid"]) for r in window})) if window else {}

        def already(rid: Any, pos: Any) -> int:
            when = src.position.to_time(pos)
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
            for row in src.execute(src.select_rows().where(behind, src.rid_col.in_(ids_))
                                     .order_by(p, src.rid)):
                key = (str(row["_gw_rid"]), row["_gw_pos"])
                if key not in skip:
                    skip[key] = already(row["_gw_rid"], row["_gw_pos"])
                if skip[key] > 0:
                    skip[key] -= 1  # one of the rows read before
                    continue
                late.append(row)
        if late:
            log.info("source %r: %d row(s) committed late were read from the lookback window",
                     src.name, len(late))
        return late, known



class TableAudit:
    """Every ``every_s`` (``source.sql.unplaceable_check``), one look at the whole table."""

    def __init__(self, source: SqlSource, every_s: float, clock: Callable[[], float]) -> None:
        self.source = source
        self.every_s = every_s
        self.clock = clock
        self.last_at: float | None = None
        self.recount_pending = False

    def recount(self) -> bool:
        """Look at the table on the next read, whenever the last look was, and count every
        row at or behind the cursor as read (as after ``groundwatch cursor set``): a backfill
        read those the cursor had passed. That read says so (``batch.recounted``)."""
        self.recount_pending, self.last_at = True, None
        return True

    def __call__(self, batch: SourceBatch, mark: Mark) -> bool:
        """Now and then, look at the whole table for what ordered reads cannot see:

        * rows without a position: counted (``batch.unplaceable``), each new one reported
          once as a rejection (``mark.reported`` keeps their ids);
        * rows at or behind the cursor that were never read (``batch.missed``): committed
          later than the lookback window reaches, or, in incrementing mode, with an id below
          the cursor committed after it (the table holds more rows there than were consumed).

        True when ``mark`` changed and the cursor must be stored."""
        src = self.source
        reported = mark.reported
        now = self.clock()
        if self.last_at is not None and now - self.last_at < self.every_s:
            return False
        self.last_at = now
        if self.recount_pending:
            mark.read_total = None
        unplaceable = or_(src.position.expr.is_(None), src.rid_col.is_(None))
        order = type_coerce(src.table.c[src.order_column], NullType())
        changed = False
        try:
            with src.engine.connect() as conn:
                count = int(conn.scalar(select(func.count()).select_from(src.table)
                                        .where(unplaceable)) or 0)
                future = 0
                future_rows: list[Any] = []
                horizon = src.horizon()
                if horizon is not None:
                    beyond = and_(src.placeable, src.position.expr > horizon)
                    future = int(conn.scalar(select(func.count()).select_from(src.table)
                                             .where(beyond)) or 0)
                    if future:
                        future_rows = list(conn.execute(
                            select(src.rid.label("rid"), order.label("at")).where(beyond)
                            .order_by(src.position.expr).limit(MAX_REPORTED_UNPLACEABLE)))
                behind = 0
                if mark.pos is not None:
                    behind = int(conn.scalar(select(func.count()).select_from(src.table)
                                             .where(src.placeable, not_(src.after(mark))))
                                 or 0)
                rows = conn.execute(select(src.rid.label("rid"), order.label("at"))
                                    .where(unplaceable)
                                    .limit(MAX_REPORTED_UNPLACEABLE)).all()
        except DBAPIError as exc:
            log.warning("source %r: could not look for rows without a position: %s",
                        src.name, exc.orig)
            return False
        batch.unplaceable = count
        batch.future = future
        self.recount_pending = False
        if future:
            log.warning("source %r: %d row(s) of %s have a %s more than %s in the future (a "
                        "clock or time zone mistake, or garbage); each is rejected "
                        "'future_timestamp' and never read (source.sql.max_future)", src.name,
                        future, src.qualified, src.order_column, src.max_future)
            changed = self._report_future(batch, mark, future_rows) or changed
        if mark.read_total is None:  # after a move: from now on, count from the table's count
            mark.read_total, changed = behind, True
            batch.recounted = True
        batch.missed = max(0, behind - mark.read_total)
        if batch.missed:
            log.warning("source %r: %d row(s) of %s at or behind the cursor were never read: "
                        "committed after the cursor had passed their %s%s; read them with "
                        "`groundwatch backfill`, and %s", src.name, batch.missed,
                        src.qualified, src.order_column,
                        f" by more than the lookback ({src.lookback_s:g} s)"
                        if src.mode == "timestamp" else "",
                        "make source.sql.lookback longer" if src.mode == "timestamp"
                        else "mind that ids are handed out before their rows commit")
        if count:
            log.warning("source %r: %d row(s) of %s cannot be placed in the %s order (NULL or "
                        "unreadable %s, or NULL request id) and are not read; they are "
                        "listed as rejections 'no_position' (or 'missing_field' of "
                        "request_id)", src.name, count, src.qualified,
                        src.mode, src.order_column)
        known = set(reported)
        room = MAX_REPORTED_UNPLACEABLE - len(reported)
        fresh: list[tuple[str, Any, bool]] = []
        for r in rows:  # one report per request id: two unplaceable rows may share one
            # A row without a request id is named by its position (one report per position).
            ref = (str(r.rid) if r.rid is not None
                   else f"{src.qualified}[{src.order_column} = {str(r.at)[:60]}]")
            if ref not in known:
                known.add(ref)
                fresh.append((ref, r.at, r.rid is None))
        fresh = fresh[:max(0, room)]
        field = "timestamp" if src.mode == "timestamp" else src.order_column
        for row_ref, at, no_id in fresh:
            batch.rejections.append(
                InvalidRecordError(
                    "missing_field", field="request_id", row_ref=row_ref,
                    detail="the request id is NULL: the row cannot be told from others, so it "
                           "is not read until it has one") if no_id else
                InvalidRecordError(
                    "no_position", field=field, row_ref=row_ref,
                    detail=f"{src.order_column} = {str(at)[:60]!r} cannot be placed in the "
                           f"{src.mode} order; the row is not read until it is fixed"))
            reported.append(row_ref)
        batch.reported += len(fresh)
        return bool(fresh) or changed

    def _report_future(self, batch: SourceBatch, mark: Mark, rows: list[Any]) -> bool:
        """Reject each row dated beyond ``max_future`` once (``future_timestamp``); its id is
        kept in the cursor so that, should its time come, it is passed over, not read."""
        src = self.source
        known = set(mark.future_reported)
        fresh = 0
        for r in rows:
            if r.rid is None or str(r.rid) in known \
                    or len(mark.future_reported) >= MAX_REPORTED_UNPLACEABLE:
                continue
            known.add(str(r.rid))
            mark.future_reported.append(str(r.rid))
            batch.rejections.append(InvalidRecordError(
                "future_timestamp", field="timestamp", row_ref=str(r.rid),
                detail=f"{src.order_column} = {str(r.at)[:60]!r} is more than "
                       f"{src.max_future} ahead of now (source.sql.max_future): a clock or "
                       "time zone mistake, or garbage; the row is not read"))
            fresh += 1
        batch.reported += fresh
        return fresh > 0
