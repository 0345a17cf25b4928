"""groundwatch's own database: sampled items, scores, explanations, failures, cursors.

SQLite (WAL) by default, PostgreSQL in production; the schema is managed by the Alembic
migrations shipped in ``evaluator/store/migrations`` and applied by :meth:`Store.migrate`.
:class:`Store` opens the database once and hands out its parts: ``ledger`` (the sampler),
``results`` (the Celery task), ``queries`` (reads) and ``golden`` (the judge's golden set).
"""

from evaluator.store.database import Database, alembic_config
from evaluator.store.golden import GoldenStore
from evaluator.store.ledger import Ledger
from evaluator.store.queries import Queries
from evaluator.store.results import ResultWriter
from evaluator.store.rows import (
    UNSAMPLED,
    CursorRow,
    ExplanationRow,
    FailureRow,
    ItemRow,
    RecountRequest,
    RejectionRow,
    ScoreRow,
)
from evaluator.store.store import Store

__all__ = [
    "UNSAMPLED",
    "CursorRow",
    "Database",
    "ExplanationRow",
    "FailureRow",
    "GoldenStore",
    "ItemRow",
    "Ledger",
    "Queries",
    "RecountRequest",
    "RejectionRow",
    "ResultWriter",
    "ScoreRow",
    "Store",
    "alembic_config",
]
