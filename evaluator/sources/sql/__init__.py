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

from evaluator.plugins import SourcePlugin
from evaluator.sources.sql.order import decode_watermark_value, encode_watermark_value
from evaluator.sources.sql.source import SqlSource

PLUGINS = (SourcePlugin("sql", "evaluator.sources.sql.source:SqlSource",
                        key="source.sql.table", connect_key="source.sql.url"),)

__all__ = ["PLUGINS", "SqlSource", "decode_watermark_value", "encode_watermark_value"]
