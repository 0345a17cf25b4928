"""The store: one database, handed out in parts, one per kind of caller.

One :class:`Store` per process (build it in the process, call :meth:`Store.dispose` after a
fork). It is safe to share between threads, and several processes may use the same database at
once (see :mod:`evaluator.store.database`). Each caller uses only its part:

* :attr:`Store.ledger` -- the sampler's cursors, locks, items, source reads and rejections;
* :attr:`Store.results` -- the Celery task's scored batches and dead letters;
* :attr:`Store.queries` -- the reads of ``explain``, the reports, the exporter and the CLI;
* :attr:`Store.golden` -- the judge's golden-set scores and schedule;
* :attr:`Store.calibration` -- the calibration's pairs and maps.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, delete, func, select

from evaluator.config import StoreConfig
from evaluator.store.calibration import CalibrationStore
from evaluator.store.database import Clock, Database
from evaluator.store.golden import GoldenStore
from evaluator.store.ledger import Ledger
from evaluator.store.models import (
    calibration_pairs,
    explanations,
    failures,
    items,
    rejections,
    scores,
    source_reads,
)
from evaluator.store.queries import Queries
from evaluator.store.results import ResultWriter
from evaluator.store.writes import WritePath


class Store:
    """groundwatch's own database (SQLite or PostgreSQL), migrated by Alembic, in parts.

    ``clock`` returns the current time as an aware UTC datetime; it stamps every write and
    decides lock expiry (tests pass a fake one instead of sleeping).
    """

    def __init__(self, url: str, *, migrate: bool = True, clock: Clock | None = None) -> None:
        self.db = Database(url, clock=clock)
        path = WritePath(self.db)
        #: The sampler's part.
        self.ledger = Ledger(self.db, path)
        #: The Celery task's part.
        self.results = ResultWriter(self.db, path)
        #: The read-only part.
        self.queries = Queries(self.db)
        #: The judge's golden set.
        self.golden = GoldenStore(self.db)
        #: The calibration's pairs and maps.
        self.calibration = CalibrationStore(self.db)
        if migrate:
            self.migrate()

    @classmethod
    def from_config(cls, cfg: StoreConfig, *, migrate: bool = True,
                    clock: Clock | None = None) -> Store:
        """Build the store named by the ``[store]`` section of the config."""
        return cls(cfg.url.get_secret_value(), migrate=migrate, clock=clock)

    def __repr__(self) -> str:
        return repr(self.db)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def safe_url(self) -> str:
        """The store's URL with its password hidden, for showing to people."""
        return self.db.safe_url

    @property
    def engine(self) -> Engine:
        """The underlying engine (for diagnostics and tests; prefer the parts)."""
        return self.db.engine

    @property
    def dialect(self) -> str:
        """``'sqlite'`` or ``'postgresql'``."""
        return self.db.dialect

    def migrate(self) -> None:
        """Bring the schema to the newest revision (see :meth:`Database.migrate`)."""
        self.db.migrate()

    def dispose(self) -> None:
        """Forget the pooled connections inherited from a parent process; call it after fork."""
        self.db.dispose()

    def close(self) -> None:
        """Close every pooled connection. The store opens new ones if used again."""
        self.db.close()

    def purge(self, older_than: datetime) -> int:
        """Delete what is older than ``older_than``; return the number of rows deleted
        (:meth:`purge_tables` says how many of each table)."""
        return sum(self.purge_tables(older_than).values())

    def purge_tables(self, older_than: datetime, *, dry_run: bool = False) -> dict[str, int]:
        """Delete what is older than ``older_than``; return the rows deleted per table, or
        with ``dry_run`` the rows that would be, deleting nothing.

        Finished items (``scored`` or ``failed``, by last update), scores (by scoring time),
        explanations, failures, rejections and calibration pairs (by creation time), source
        reads (by log time).
        Queued items and cursors stay. One transaction.

        The golden set's tables are left out on purpose: a few rows per golden item, and a
        purge would reset the judge's baseline without anyone asking for it. So are the
        calibration maps: a few fits per key are kept (:data:`~evaluator.store.calibration.
        KEEP_PER_KEY`), and the newest usable one must outlive any retention.
        """
        conditions = (
            (items, items.c.status.in_(("scored", "failed")) & (items.c.updated_at < older_than)),
            (scores, scores.c.scored_at < older_than),
            (explanations, explanations.c.created_at < older_than),
            (failures, failures.c.created_at < older_than),
            (rejections, rejections.c.created_at < older_than),
            (source_reads, source_reads.c.log_timestamp < older_than),
            (calibration_pairs, calibration_pairs.c.created_at < older_than),
        )
        if dry_run:
            with self.db.engine.connect() as conn:
                return {table.name: int(conn.scalar(
                    select(func.count()).select_from(table).where(where)) or 0)
                    for table, where in conditions}
        with self.db.writer.begin() as conn:
            return {table.name: conn.execute(delete(table).where(where)).rowcount
                    for table, where in conditions}
