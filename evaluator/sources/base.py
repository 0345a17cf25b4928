"""The source protocol: read log rows after a cursor, map them, report rejections.

A source never advances anything by itself. :meth:`Source.read` returns the records of the next
slice and the cursor *after* it; the sampler stores that cursor only once the slice is durably
enqueued, so a crash may re-send a slice but never skips one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from evaluator.errors import InvalidRecordError
from evaluator.records import FieldDrop, LogRecord

#: ``seen(ids)``: those of ``ids`` a source read before, with the log times of the rows read
#: under each and how many rows shared that time (the sampler answers from the store, for
#: sources that re-read a window).
Seen = Callable[[Sequence[str]], Mapping[str, Mapping[datetime, int]]]


@dataclass(slots=True)
class SourceBatch:
    """One slice of a source.

    ``cursor`` is JSON-able and opaque to everyone but the source that made it. ``rows_read``
    counts every row consumed, mapped or rejected. An empty slice (``rows_read == 0``) means the
    source is caught up for now.

    ``dropped`` lists optional fields left out of records (the rows were kept). ``read_ids``
    (request id, log time) are the rows to remember as read, for a source that re-reads a
    lookback window; ``forget_read_before`` is the time before which they may be forgotten.
    ``late`` counts rows read from behind the cursor (committed late); ``unplaceable`` is the
    number of rows the source cannot place in its order, when it looked this time.
    """

    records: list[LogRecord] = field(default_factory=list)
    rejections: list[InvalidRecordError] = field(default_factory=list)
    cursor: Mapping[str, Any] | None = None
    rows_read: int = 0
    dropped: list[FieldDrop] = field(default_factory=list)
    read_ids: list[tuple[str, datetime]] = field(default_factory=list)
    forget_read_before: datetime | None = None
    late: int = 0
    unplaceable: int | None = None
    rewritten: int = 0  # files found rewritten in place (or shrunk) and read again
    missed: int | None = None  # rows at or behind the cursor never read (when it looked)
    recounted: bool = False  # missed rows counted afresh: what is behind the cursor is read
    future: int | None = None  # rows whose time is too far ahead to be read yet (when it looked)
    pending: int | None = None  # rows read incomplete, waiting for the app to finish them
    # Of ``rejections``, those the source reported from a look at the whole table (rows it
    # cannot read in order: no position, no request id, a time too far ahead), not rows read.
    reported: int = 0
    waiting_transactions: int | None = None  # transactions in flight the read waits for


class Source(Protocol):
    """A readable log of the watched app.

    Each backend declares itself (``PLUGINS``, :mod:`evaluator.plugins`) and implements all of
    this: the sampler, ``cursor``, ``backfill`` and ``check-config`` call every source the same
    way, never asking which kind it is."""

    name: str
    #: ``source.kind`` of this backend.
    kind: str
    #: Whether :meth:`cursor_at` can place the cursor at a time (``cursor set --at``).
    positions_by_time: bool

    def read(self, cursor: Mapping[str, Any] | None, limit: int, *,
             seen: Seen | None = None) -> SourceBatch:
        """At most ``limit`` rows strictly after ``cursor`` (``None``: from the beginning).

        ``seen(ids)`` answers which of ``ids`` were read before (with the log time of the row
        read), for sources that re-read.
        """
        ...

    def describe(self) -> str:
        """Where the source reads, for the sampler's start line (``sql table 'logs', lookback
        60s``)."""
        ...

    def describe_cursor(self, cursor: Mapping[str, Any] | None) -> str:
        """One line for logs and ``groundwatch cursor show``."""
        ...

    def cursor_at(self, when: datetime | None = None, *, value: Any = None) -> dict[str, Any]:
        """A cursor from which rows at or after ``when`` (or after the raw position ``value``)
        are read next; ``ValueError`` when this source cannot place one so."""
        ...

    def backfill_start(self, since: datetime) -> dict[str, Any] | None:
        """Where a first backfill from ``since`` starts reading, when the source can seek
        there in its own order; None to read from the start and drop earlier rows."""
        ...

    def recount(self) -> bool:
        """Take every row at or behind the cursor as read from the next :meth:`read` on (a
        backfill read the ones missed), which then says so (``SourceBatch.recounted``);
        False when this source counts no missed rows, so there is nothing to do."""
        ...

    def preflight_scope(self) -> PreflightScope:
        """``check-config``'s look at what the source will read, before the sample read."""
        ...

    def preflight_notes(self) -> Sequence[SourceNote | str]:
        """What ``check-config`` should say that the schema cannot (after the sample read);
        a plain string is a warning on the source's own key."""
        ...

    def close(self) -> None:
        ...


class PreflightScope(NamedTuple):
    """What a source found before reading (``check-config``): ``line``, a summary line for the
    report (or None); ``problem``, a reason to stop before the sample read (or None); and
    ``label``, what the sample's line says the source is (`` table 'logs' of URL:``)."""

    line: str | None = None
    problem: SourceNote | None = None
    label: str = ""


class SourceNote(NamedTuple):
    """Something a source wants ``groundwatch check-config`` to say about its settings.

    A source's ``preflight_notes()`` returns them; the preflight calls it after reading its
    sample. ``key`` is the config key the note is
    about (``source.sql.mode``); ``problem`` makes it a failure (exit 2) instead of a warning,
    e.g. "text timestamps cannot be ordered exactly in mode 'timestamp': use 'incrementing'".
    """

    text: str
    key: str | None = None
    problem: bool = False
