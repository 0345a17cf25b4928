"""How a SQL source turns fetched rows into a batch: records, rejections, and rows that wait
for the app to complete them (:mod:`.completion`)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from evaluator.errors import InvalidRecordError
from evaluator.records import FieldDrop, map_row, parse_timestamp
from evaluator.sources.base import SourceBatch
from evaluator.sources.sql.completion import MAX_PENDING, PendingRow, completable
from evaluator.sources.sql.order import Mark

if TYPE_CHECKING:
    from evaluator.sources.sql.source import SqlSource

log = logging.getLogger("evaluator.sources.sql")


class RowMapper:
    """Maps a SQL source's fetched rows into a :class:`SourceBatch`."""

    def __init__(self, source: SqlSource) -> None:
        self.source = source

    def resolve_pending(self, mark: Mark, batch: SourceBatch, now: datetime) -> bool:
        """Read the pending rows again: decide those now complete, reject those due and still
        incomplete (``incomplete``), keep the others. True when any left the list."""
        if not mark.pending:
            return False
        found = self.source.completion.reread(mark.pending)
        still: list[PendingRow] = []
        for i, waiting in enumerate(mark.pending):
            row = found.get(i)
            if row is None:
                log.info("source %r: pending row %s is gone from %s (deleted?); forgotten",
                         self.source.name, waiting.rid, self.source.qualified)
                continue
            raw, pos, rid = self.raw(row)
            drops: list[FieldDrop] = []
            try:
                batch.records.append(map_row(raw, self.source.columns, limits=self.source.limits,
                                             position=self.where(pos, rid), dropped=drops))
                batch.dropped.extend(drops)
            except InvalidRecordError as err:
                if completable(err) and now < waiting.due:
                    still.append(waiting)
                    continue
                if completable(err):
                    err = InvalidRecordError(
                        "incomplete", field=err.field, row_ref=err.row_ref,
                        detail=f"still {err.reason.replace('_', ' ')} ({err.detail}) "
                               f"{self.source.completion.complete_within} after the row's time: the "
                               "app never completed it (source.sql.complete_within)")
                batch.rejections.append(err)
        resolved = len(still) != len(mark.pending)
        mark.pending = still
        return resolved

    def raw(self, row: Mapping[str, Any]) -> tuple[dict[str, Any], Any, str]:
        """A fetched row's columns (native UUIDs as text), position and request id."""
        raw = dict(row)
        pos, rid = raw.pop("_gw_pos"), str(raw.pop("_gw_rid"))
        raw.pop("_gw_young", None)
        for key, value in raw.items():
            if isinstance(value, uuid.UUID):  # native UUID columns, e.g. PostgreSQL
                raw[key] = str(value)
        return raw, pos, rid

    def where(self, pos: Any, rid: str) -> str:
        when = self.source.position.to_time(pos)
        return f"{self.source.qualified}[{when.isoformat() if when else pos!s}, {rid}]"

    def map_rows(self, rows: Sequence[Mapping[str, Any]], batch: SourceBatch,
                  read_ids: set[str], *, known: Mapping[str, Mapping[datetime, int]],
                  mark: Mark, now: datetime) -> int:
        """Map ``rows`` into ``batch``; return how many were consumed (all, unless the pending
        list filled up before an incomplete row). A request id already in ``read_ids`` (this
        read) or ``known`` (read before, as another row) makes the row a ``duplicate_id``;
        a row missing a field the app may still write waits in ``mark.pending``; a row
        reported ``future_timestamp`` before is passed over (it was decided then)."""
        future = set(mark.future_reported)
        for i, row in enumerate(rows):
            raw, pos, rid = self.raw(row)
            when = self.source.position.to_time(pos)
            position = self.where(pos, rid)
            record = err = None
            drops: list[FieldDrop] = []
            if rid in future:
                mark.future_reported.remove(rid)
            elif rid in read_ids or rid in known:
                err = InvalidRecordError(
                    "duplicate_id", field="request_id", row_ref=rid,
                    detail=f"a row with this request id was read before; this one is at "
                           f"{position}")
            else:
                try:
                    record = map_row(raw, self.source.columns, limits=self.source.limits,
                                     position=position, dropped=drops)
                except InvalidRecordError as exc:
                    err = exc
            # A row already past its completion deadline (catching up, a backfill) is
            # rejected at once, for what it lacks.
            due = (self.source.completion.due(self.row_time(raw, when), now)
                   if err is not None and completable(err) else now)
            waits = now < due
            if waits and len(mark.pending) >= MAX_PENDING:
                return i  # not consumed: read again once there is room
            batch.rows_read += 1
            if self.source.lookback_s > 0 and when is not None:
                batch.read_ids.append((rid, when))  # duplicates too: each row is read once
            if rid in future:
                continue
            if err is None or err.reason != "duplicate_id":
                read_ids.add(rid)
            if waits:
                mark.pending.append(PendingRow(row["_gw_rid"], pos, due))
            elif err is not None:
                batch.rejections.append(err)
            elif record is not None:
                batch.records.append(record)
            batch.dropped.extend(drops)
        return len(rows)

    def row_time(self, raw: Mapping[str, Any], when: datetime | None) -> datetime | None:
        if self.source.mode == "timestamp":
            return when
        try:
            return parse_timestamp(raw.get(self.source.timestamp_label))
        except InvalidRecordError:
            return None

