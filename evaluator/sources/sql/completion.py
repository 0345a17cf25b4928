"""When a SQL row may be decided: once it is *settled* and *complete*, and once no transaction
still in flight could commit a row before it in the order.

* **Settled**: many apps insert the log row when a request starts and ``UPDATE`` it when the
  streamed answer ends, and feedback arrives later still. A row is read only once its time is
  ``settle`` old (``source.sql.settle``), so a sampling rule sees the answer, status and
  feedback the row ends with. In timestamp mode this is a bound in the query; in incrementing
  mode the page is cut before the first row that is not settled (by its timestamp, or, when
  that is ahead of this clock, ``settle`` after it was first seen).
* **Complete**: a row read while a required text field (question, answer, contexts) is still
  missing is not rejected: it is kept in the cursor as *pending* and read again by request id
  on every poll, until it is complete (then decided) or ``complete_within`` has passed since its
  time (then rejected ``incomplete``). The cursor moves on meanwhile; at most
  :data:`MAX_PENDING` rows wait, after which the read stops before the next incomplete row.
* **Committed in order** (PostgreSQL): ids and commit times are handed out when a transaction
  writes, not when it commits, so a long transaction may commit a row *before* rows already
  read. Each read takes ``pg_current_snapshot()``; the page is cut before the first row written
  by a transaction that started after the oldest one still in flight (``age(xmin)``), as
  Airbyte's xmin replication does. That is exact when a row gets its id (or time) as it is
  inserted, which is what a sequence default or ``now()`` does. A transaction in flight for
  longer than ``transaction_wait`` no longer holds the read back (an ``idle in transaction``
  session must not stall the sampler): rows it commits later behind the cursor are found by
  the lookback (timestamp mode) or counted by the audit as missed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, literal, literal_column, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.types import NullType

from evaluator.errors import InvalidRecordError
from evaluator.records import parse_timestamp
from evaluator.sources.base import SourceNote
from evaluator.sources.sql.order import decode_watermark_value, encode_watermark_value

if TYPE_CHECKING:
    from evaluator.sources.sql.source import SqlSource

log = logging.getLogger("evaluator.sources.sql")

#: Rows that may wait for their missing fields at once (they live in the cursor).
MAX_PENDING = 1000
#: The fields a row may get later (an ``UPDATE`` after the insert): missing, it waits.
COMPLETABLE_FIELDS = frozenset({"question", "answer", "contexts"})
_COMPLETABLE_REASONS = frozenset({"missing_field", "empty_field"})
_XID_MOD = 1 << 32
_IN_CHUNK = 500


def completable(err: InvalidRecordError) -> bool:
    """Whether a rejection may go away once the app finishes writing the row."""
    return err.field in COMPLETABLE_FIELDS and err.reason in _COMPLETABLE_REASONS


@dataclass
class PendingRow:
    """A row read before it was complete: its request id and position (as the driver returned
    them), and when it is due (rejected ``incomplete`` if still incomplete then)."""

    rid: Any
    pos: Any
    due: datetime

    def to_json(self) -> dict[str, Any]:
        return {"rid": encode_watermark_value(self.rid), "pos": encode_watermark_value(self.pos),
                "due": self.due.isoformat()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PendingRow:
        return cls(decode_watermark_value(data["rid"]), decode_watermark_value(data["pos"]),
                   datetime.fromisoformat(data["due"]))


class InFlight:
    """The oldest transaction in flight that a read must wait for (PostgreSQL only).

    ``horizon()`` is the 32-bit transaction id below which every row a read sees was written
    by a transaction older than all those still in flight (None: nothing to wait for, or not
    PostgreSQL). A transaction first seen in flight more than ``wait_s`` ago is given up on.
    """

    def __init__(self, source: SqlSource, wait_s: float, clock: Callable[[], float]) -> None:
        self.source = source
        self.wait_s = wait_s
        self.clock = clock
        self.first_seen: dict[int, float] = {}
        self.waiting = 0  # transactions the last read waited for
        self.usable = wait_s > 0 and source.engine.dialect.name == "postgresql"
        self.no_xmin: str | None = None  # why the table shows no row transaction ids
        self._given_up: set[int] = set()

    def check_table(self) -> str | None:
        """None when rows of the table show their writing transaction (``xmin``); otherwise
        why not (a view, say), and the read does not wait for transactions."""
        if not self.usable:
            return None
        src = self.source
        try:
            with src.engine.connect() as conn:
                conn.execute(select(literal_column("xmin")).select_from(src.table).limit(0))
        except DBAPIError as exc:
            self.usable = False
            self.no_xmin = f"{src.qualified} has no row transaction ids (xmin): {exc.orig}"
        return self.no_xmin

    def horizon(self) -> int | None:
        if not self.usable:
            return None
        with self.source.engine.connect() as conn:
            snapshot = str(conn.scalar(select(literal_column("pg_current_snapshot()::text"))))
        # "xmin:xmax:xip,xip,...": the transactions in flight are the last part.
        in_flight = [int(x) for x in snapshot.rpartition(":")[2].split(",") if x]
        now = self.clock()
        self.first_seen = {x: self.first_seen.get(x, now) for x in in_flight}
        held = [x for x, t in self.first_seen.items() if now - t < self.wait_s]
        for x in self.first_seen.keys() - set(held) - self._given_up:
            log.warning("source %r: transaction %d has been in flight for more than %g s; no "
                        "longer waiting for it (source.sql.transaction_wait): rows it commits "
                        "behind the cursor are read by the lookback or counted as missed",
                        self.source.name, x, self.wait_s)
        self._given_up = (self._given_up | (self.first_seen.keys() - set(held))) & set(in_flight)
        self.waiting = len(held)
        if not held:
            return None
        return min(held) % _XID_MOD

    @staticmethod
    def young(horizon: int) -> Any:
        """True for a row written by a transaction at or after ``horizon`` (wraparound-safe:
        ``age`` counts back from the current transaction id)."""
        return func.age(literal_column("xmin")) <= func.age(
            literal_column(f"'{int(horizon)}'::xid"))


class Completion:
    """What a read may decide now (see the module docstring)."""

    def __init__(self, source: SqlSource, *, settle_s: float, complete_within_s: float,
                 transaction_wait_s: float, clock: Callable[[], float]) -> None:
        self.source = source
        self.settle = timedelta(seconds=settle_s)
        self.complete_within = timedelta(seconds=complete_within_s)
        self.clock = clock
        self.in_flight = InFlight(source, transaction_wait_s, clock)
        self._first_seen: dict[Any, float] = {}  # incrementing mode: unsettled rows by position

    # -- settled --------------------------------------------------------------------------
    def settled_before(self, now: datetime) -> datetime | None:
        """Timestamp mode: rows after this time are not read yet."""
        return now - self.settle if self.settle else None

    def cut(self, rows: list[Mapping[str, Any]], now: datetime) -> list[Mapping[str, Any]]:
        """The rows before the first that may not be decided yet: written by a transaction
        younger than one still in flight (``_gw_young``), or (incrementing mode) not settled."""
        keep = len(rows)
        for i, row in enumerate(rows):
            if row.get("_gw_young") or not self._settled(row, now):
                keep = i
                break
        if keep < len(rows):
            self._first_seen = {p: t for p, t in self._first_seen.items()
                                if p in {r["_gw_pos"] for r in rows[keep:]}}
        return rows[:keep]

    def _settled(self, row: Mapping[str, Any], now: datetime) -> bool:
        src = self.source
        if not self.settle or src.mode == "timestamp":
            return True  # timestamp mode bounds the query itself
        try:
            when = parse_timestamp(row.get(src.timestamp_label))
        except InvalidRecordError:
            return True  # no time to wait for: the row is rejected for it
        if when <= now - self.settle:
            return True
        # A time ahead of this clock (skew): settled once seen for `settle`.
        first = self._first_seen.setdefault(row["_gw_pos"], self.clock())
        return self.clock() - first >= self.settle.total_seconds()

    # -- complete -------------------------------------------------------------------------
    def due(self, row_time: datetime | None, now: datetime) -> datetime:
        start = row_time if row_time is not None and row_time <= now else now - self.settle
        return start.astimezone(UTC) + self.complete_within

    def reread(self, pending: Sequence[PendingRow]) -> dict[int, Mapping[str, Any]]:
        """The current rows of ``pending`` (index → row); a row deleted since is absent."""
        src = self.source
        found: dict[int, Mapping[str, Any]] = {}
        by_rid: dict[str, list[int]] = {}
        for i, p in enumerate(pending):
            by_rid.setdefault(str(p.rid), []).append(i)
        rids = list({str(p.rid): p.rid for p in pending}.values())
        for start in range(0, len(rids), _IN_CHUNK):
            ids_ = [literal(rid, NullType()) for rid in rids[start:start + _IN_CHUNK]]
            rows = src.execute(src.select_rows().where(src.rid_col.in_(ids_)))
            for row in rows:
                for i in by_rid.get(str(row["_gw_rid"]), []):
                    # The same row (its position), or, if the app moved its time, the only
                    # row with that id.
                    if row["_gw_pos"] == pending[i].pos or i not in found:
                        found[i] = row
        return found

    def concurrency_note(self) -> SourceNote | None:
        """What the source's mode guarantees with concurrent writers on its database, when it
        is not everything (for ``check-config``)."""
        src = self.source
        dialect = src.engine.dialect.name
        if dialect == "sqlite" or self.in_flight.usable:
            return None  # one writer at a time; or reads wait for transactions in flight
        if dialect == "postgresql" and self.in_flight.no_xmin is None:
            return SourceNote(
                "transaction_wait = 0: reads do not wait for transactions in flight, so a "
                "row whose transaction commits after later rows were read is read only "
                + (f"within the lookback ({src.lookback_s:g} s)" if src.mode == "timestamp"
                   else "by a backfill (incrementing mode has no lookback)"),
                key="source.sql.transaction_wait")
        why = (self.in_flight.no_xmin if self.in_flight.no_xmin is not None else
               f"{dialect} offers no view of transactions in flight")
        if src.mode == "incrementing":
            return SourceNote(
                f"{why}: with concurrent writers, an id handed out before others but committed "
                "after them is passed by the cursor and never read (it is counted in "
                "groundwatch_source_missed_rows; read it with `groundwatch backfill`). Use "
                "mode = 'timestamp' with a lookback as long as the longest transaction that "
                "writes this table", key="source.sql.mode")
        return SourceNote(
            f"{why}: a row committed more than the lookback ({src.lookback_s:g} s) after its "
            "time is not read in order (counted in groundwatch_source_missed_rows); make "
            "source.sql.lookback at least as long as the longest transaction that writes "
            "this table", key="source.sql.lookback")

    # -- cursors ---------------------------------------------------------------------------
