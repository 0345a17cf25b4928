"""What the store's reads return: typed, frozen rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from evaluator.records import LogRecord
from evaluator.scorers.base import Detection, Outcome
from evaluator.scorers.explanation import Explanation

#: ``source`` and ``rule`` of an item first seen by the result writer (scored without going
#: through the sampler, e.g. ``groundwatch score FILE``).
UNSAMPLED = "unsampled"


@dataclass(frozen=True, slots=True)
class ScoreRow:
    """One stored score (``value`` is ``None`` unless ``outcome`` is ``ok``)."""

    request_id: str
    metric: str
    scorer: str
    scorer_version: str
    outcome: Outcome
    value: float | None
    reason: str | None
    route: str | None
    model: str | None
    log_timestamp: datetime
    scored_at: datetime
    # The value after the calibration map named ``calibration``; None where none applied.
    calibrated: float | None = None
    calibration: str | None = None


@dataclass(frozen=True, slots=True)
class ItemRow:
    """One sampled item; ``payload`` is the record's :meth:`LogRecord.to_message` dict."""

    request_id: str
    source: str
    log_timestamp: datetime
    route: str | None
    model: str | None
    rule: str
    status: str
    sampled_at: datetime
    updated_at: datetime
    payload: dict[str, Any]

    def record(self) -> LogRecord:
        """The log record as it was sampled."""
        return LogRecord.from_message(self.payload)


@dataclass(frozen=True, slots=True)
class ExplanationRow:
    """What a scorer said about one item, beyond the numbers."""

    request_id: str
    scorer: str
    scorer_version: str
    body: dict[str, Any]
    detections: tuple[Detection, ...]
    created_at: datetime

    @property
    def explanation(self) -> Explanation:
        """``body`` read back into its typed parts (unknown keys kept in ``extra``)."""
        return Explanation.from_dict(self.body)


@dataclass(frozen=True, slots=True)
class FailureRow:
    """A dead letter: work that failed for good at some ``stage``."""

    id: int
    request_id: str | None
    stage: str
    kind: str
    reason: str
    attempts: int
    task_id: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class CursorRow:
    """A source's cursor: its position, the lock on it and its last update."""

    source: str
    position: dict[str, Any] | None
    lock_owner: str | None
    lock_expires_at: datetime | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class RecountRequest:
    """A backfill's request that the live sampler count its missed rows afresh."""

    at: datetime
    by: str


@dataclass(frozen=True, slots=True)
class RejectionRow:
    """A source row that could not be mapped onto a log record."""

    id: int
    source: str
    row_ref: str
    field: str
    reason: str
    detail: str
    created_at: datetime
