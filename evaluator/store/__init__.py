"""groundwatch's own database: sampled items, scores, explanations, failures, cursors.

SQLite (WAL) by default, PostgreSQL in production; the schema is managed by the Alembic
migrations shipped in ``evaluator/store/migrations`` and applied by :meth:`Store.migrate`.
"""

from evaluator.store.store import (
    UNSAMPLED,
    ExplanationRow,
    FailureRow,
    ItemRow,
    RejectionRow,
    ScoreRow,
    Store,
    alembic_config,
)

__all__ = [
    "UNSAMPLED",
    "ExplanationRow",
    "FailureRow",
    "ItemRow",
    "RejectionRow",
    "ScoreRow",
    "Store",
    "alembic_config",
]
