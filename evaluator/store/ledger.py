"""The sampler's side of the store: its cursors and their locks, the items it sampled, the
rows it read and the rows it rejected.

The cursor, what was read under it and what was sent move together (:meth:`Ledger.set_cursor`
is one transaction), and only the holder of an unexpired lock may move a cursor.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, or_, select, update

from evaluator.errors import InvalidRecordError, LockHeldError
from evaluator.records import LogRecord
from evaluator.store.database import Database, chunks
from evaluator.store.models import cursors, items, rejections, source_reads
from evaluator.store.results import MAX_REASON_CHARS
from evaluator.store.rows import CursorRow, RecountRequest
from evaluator.store.writes import WritePath


class Ledger:
    """Cursors, locks, sampled items, source reads and rejections, for the sampler."""

    def __init__(self, db: Database, path: WritePath) -> None:
        self._db = db
        self._path = path

    def __repr__(self) -> str:
        return repr(self._db)

    def add_items(self, items_: Sequence[tuple[LogRecord, str]], *, source: str,
                  payloads: Sequence[dict[str, Any]] | None = None) -> int:
        """Store sampled (record, rule name) pairs as ``queued``; return how many were new.

        ``payloads`` are the records' :meth:`LogRecord.to_message` dicts when the caller has
        them already. Request ids already present are left as they are. One transaction.
        """
        ts, js = self._path.ts, self._path.js
        now_p = ts(self._db.clock())
        rows: dict[str, tuple[Any, ...]] = {}
        for i, (record, rule) in enumerate(items_):
            if record.request_id in rows:
                continue
            payload = payloads[i] if payloads is not None else record.to_message()
            rows[record.request_id] = (record.request_id, source, ts(record.timestamp),
                                       record.route, record.model, rule, "queued", now_p, now_p,
                                       js(payload))
        if not rows:
            return 0
        prepared = self._path.prepare("add_items", list(rows.values()))
        with self._path.begin() as tx:
            return tx.insert_new("add_items", prepared)

    def record_rejections(self, source: str, rejections_: Sequence[InvalidRecordError]) -> None:
        """Keep source rows that could not be mapped, for ``groundwatch`` to show later."""
        if not rejections_:
            return
        now = self._db.clock()
        rows = [{"source": source, "row_ref": r.row_ref, "field": r.field, "reason": r.reason,
                 "detail": r.detail[:MAX_REASON_CHARS], "created_at": now} for r in rejections_]
        with self._db.writer.begin() as conn:
            conn.execute(insert(rejections), rows)

    def new_rejections(self, sources: Sequence[str],
                       rejections_: Sequence[InvalidRecordError]) -> list[InvalidRecordError]:
        """Those of ``rejections_`` not stored yet under any of ``sources`` for the same row,
        field and reason, each once: a backfill re-reads rows the live sampler rejected."""
        fresh: dict[tuple[str, str, str], InvalidRecordError] = {}
        for r in rejections_:
            fresh.setdefault((r.row_ref, r.field, r.reason), r)
        if not fresh or not sources:
            return list(fresh.values())
        with self._db.engine.connect() as conn:
            for chunk in chunks(list({row_ref for row_ref, _, _ in fresh})):
                for known in conn.execute(
                        select(rejections.c.row_ref, rejections.c.field, rejections.c.reason)
                        .where(rejections.c.source.in_(list(sources)),
                               rejections.c.row_ref.in_(chunk))):
                    fresh.pop((known.row_ref, known.field, known.reason), None)
        return list(fresh.values())

    # -- cursors and their locks -------------------------------------------------------------

    def acquire_lock(self, source: str, owner: str, ttl_s: float) -> bool:
        """Take or renew the lock on ``source``'s cursor for ``ttl_s`` seconds.

        Succeeds when the lock is free, expired, or already ``owner``'s. The check and the take
        are one conditional UPDATE, so two replicas can never both succeed.
        """
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s}")
        now = self._db.clock()
        with self._db.writer.begin() as conn:
            conn.execute(self._db.insert(cursors).on_conflict_do_nothing(
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
        with self._db.writer.begin() as conn:
            released = conn.execute(
                update(cursors)
                .where(cursors.c.source == source, cursors.c.lock_owner == owner)
                .values(lock_owner=None, lock_expires_at=None, updated_at=self._db.clock())
            )
            return released.rowcount == 1

    def cursor_state(self, source: str) -> CursorRow | None:
        """``source``'s cursor with its lock and last update, or None if it has none."""
        with self._db.engine.connect() as conn:
            row = conn.execute(select(cursors).where(cursors.c.source == source)).first()
        if row is None:
            return None
        return CursorRow(row.source, None if row.position is None else dict(row.position),
                         row.lock_owner, row.lock_expires_at, row.updated_at)

    def get_cursor(self, source: str) -> dict[str, Any] | None:
        """The stored position of ``source``, or None if it has none yet."""
        with self._db.engine.connect() as conn:
            position = conn.scalar(select(cursors.c.position).where(cursors.c.source == source))
        return dict(position) if position is not None else None

    def request_recount(self, source: str, *, by: str) -> None:
        """Ask the sampler of ``source`` to count its missed rows afresh on its next step:
        ``by`` (a backfill, as shown in the log) read them. The sampler holds the cursor's
        lock, so this is a request beside the cursor, not a write of it."""
        now = self._db.clock()
        with self._db.writer.begin() as conn:
            conn.execute(self._db.insert(cursors).on_conflict_do_nothing(
                index_elements=[cursors.c.source]), {"source": source, "updated_at": now})
            conn.execute(update(cursors).where(cursors.c.source == source)
                         .values(recount_requested_at=now, recount_requested_by=by[:200]))

    def recount_request(self, source: str) -> RecountRequest | None:
        """The pending :meth:`request_recount` of ``source``, if any."""
        with self._db.engine.connect() as conn:
            row = conn.execute(select(cursors.c.recount_requested_at,
                                      cursors.c.recount_requested_by)
                               .where(cursors.c.source == source)).first()
        if row is None or row.recount_requested_at is None:
            return None
        return RecountRequest(row.recount_requested_at, row.recount_requested_by or "?")

    def clear_recount(self, source: str, request: RecountRequest) -> None:
        """Clear ``request`` (not a newer one) without moving the cursor."""
        with self._db.writer.begin() as conn:
            conn.execute(_clear_recount(source, request))

    def set_cursor(self, source: str, position: Mapping[str, Any], *, owner: str,
                   read_ids: Sequence[tuple[str, datetime]] = (),
                   forget_read_before: datetime | None = None,
                   committed: Sequence[str] = (),
                   recounted: RecountRequest | None = None) -> None:
        """Store ``source``'s position; only the holder of an unexpired lock may.

        In the same transaction, ``read_ids`` (request id, log time) are remembered as read by
        ``source`` and those with a log time before ``forget_read_before`` forgotten, and the
        items ``committed`` (sent in the slice the cursor moves past) are marked so: the cursor,
        what it read and what it sent move together or not at all. ``recounted``, the request
        this position answers (its missed rows counted afresh), is cleared with it, unless a
        newer one came meanwhile.

        Raises :class:`LockHeldError` otherwise, so a replica that lost its lock (paused past
        the TTL, say) can never move the cursor under the replica that took over.
        """
        now = self._db.clock()
        with self._db.writer.begin() as conn:
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
                stmt = self._db.insert(source_reads)
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
            for chunk in chunks(list(dict.fromkeys(committed))):
                conn.execute(update(items).where(items.c.request_id.in_(chunk),
                                                 items.c.committed.is_(False))
                             .values(committed=True))
            if recounted is not None:
                conn.execute(_clear_recount(source, recounted))

    def read_ids(self, source: str,
                 request_ids: Sequence[str]) -> dict[str, dict[datetime, int]]:
        """Those of ``request_ids`` that ``source`` remembers as read (see :meth:`set_cursor`):
        for each, the log times of the rows read under it and how many rows had that time."""
        found: dict[str, dict[datetime, int]] = {}
        with self._db.engine.connect() as conn:
            for chunk in chunks(list(dict.fromkeys(request_ids))):
                for rid, when, n in conn.execute(
                        select(source_reads.c.request_id, source_reads.c.log_timestamp,
                               source_reads.c.rows)
                        .where(source_reads.c.source == source,
                               source_reads.c.request_id.in_(chunk))):
                    found.setdefault(rid, {})[when] = n
        return found

    def count_reads(self, source: str) -> int:
        """How many read-row records ``source`` holds (what :meth:`reset_cursor` forgets)."""
        with self._db.engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(source_reads)
                                   .where(source_reads.c.source == source)) or 0)

    def reset_cursor(self, source: str, position: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """Put ``source``'s cursor at ``position`` (None: the start) for an operator, and forget
        what it read; return the position it had. Refused while a sampler holds the lock."""
        now = self._db.clock()
        with self._db.writer.begin() as conn:
            conn.execute(self._db.insert(cursors).on_conflict_do_nothing(
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

    # -- what is stored already ------------------------------------------------------------

    def stored_item_origins(self, request_ids: Sequence[str]
                            ) -> dict[str, tuple[str, datetime, bool]]:
        """(source, log time, committed) of those of ``request_ids`` already stored as items.

        A row matching source and log time is the same row read again: sent again before the
        cursor moved past it (not committed), or replayed after (committed). Any other is
        another row with the same request id."""
        found: dict[str, tuple[str, datetime, bool]] = {}
        with self._db.engine.connect() as conn:
            for chunk in chunks(list(dict.fromkeys(request_ids))):
                for row in conn.execute(select(items.c.request_id, items.c.source,
                                               items.c.log_timestamp, items.c.committed)
                                        .where(items.c.request_id.in_(chunk))):
                    found[row.request_id] = (row.source, row.log_timestamp, bool(row.committed))
        return found

    def stored_item_ids(self, request_ids: Sequence[str]) -> set[str]:
        """Which of ``request_ids`` are already stored as items (any status)."""
        found: set[str] = set()
        with self._db.engine.connect() as conn:
            for chunk in chunks(list(dict.fromkeys(request_ids))):
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
            with self._db.engine.connect() as conn:
                rows = conn.execute(stmt).all()
            if not rows:
                return
            yield [dict(row.payload) for row in rows]
            after = rows[-1].request_id


def _clear_recount(source: str, request: RecountRequest) -> Any:
    return (update(cursors)
            .where(cursors.c.source == source, cursors.c.recount_requested_at == request.at)
            .values(recount_requested_at=None, recount_requested_by=None))
