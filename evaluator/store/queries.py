"""The read-only side of the store, for ``explain``, the reports, the exporter and the CLI."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from evaluator.scorers.base import Detection, Outcome
from evaluator.store.database import Database
from evaluator.store.models import ITEM_STATUSES, explanations, failures, items, rejections, scores
from evaluator.store.rows import ExplanationRow, FailureRow, ItemRow, RejectionRow, ScoreRow

_SCORE_COLUMNS = (scores.c.request_id, scores.c.metric, scores.c.scorer,
                  scores.c.scorer_version, scores.c.outcome, scores.c.value, scores.c.reason,
                  scores.c.route, scores.c.model, scores.c.log_timestamp, scores.c.scored_at,
                  scores.c.calibrated, scores.c.calibration)


def _score_row(row: Any) -> ScoreRow:
    return ScoreRow(row.request_id, row.metric, row.scorer, row.scorer_version,
                    Outcome(row.outcome), row.value, row.reason, row.route, row.model,
                    row.log_timestamp, row.scored_at, row.calibrated, row.calibration)


def _rejection_row(r: Any) -> RejectionRow:
    return RejectionRow(r.id, r.source, r.row_ref, r.field, r.reason, r.detail, r.created_at)


class Queries:
    """Counts, scores, items, explanations, dead letters and rejections, read back."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def __repr__(self) -> str:
        return repr(self._db)

    def oldest_unscored_sampled_at(self) -> datetime | None:
        """When the sampler took the oldest item still ``queued`` (None when there is none).

        The take time, not the log time: catching up on old logs is not a backlog.
        """
        with self._db.engine.connect() as conn:
            return conn.scalar(select(func.min(items.c.sampled_at))
                               .where(items.c.status == "queued"))

    def count_items_by_status(self) -> dict[str, int]:
        """Number of items per status; every status is present, zero when empty."""
        counts = dict.fromkeys(ITEM_STATUSES, 0)
        with self._db.engine.connect() as conn:
            for status, n in conn.execute(select(items.c.status, func.count())
                                          .group_by(items.c.status)):
                counts[status] = n
        return counts

    def _count_by(self, columns: Sequence[Any], when: Any,
                  since: datetime | None) -> dict[tuple[Any, ...], int]:
        """Rows per value of ``columns``; ``since`` (inclusive) compares the column ``when``."""
        stmt = select(*columns, func.count()).group_by(*columns)
        if since is not None:
            stmt = stmt.where(when >= since)
        with self._db.engine.connect() as conn:
            return {tuple(row[:-1]): row[-1] for row in conn.execute(stmt)}

    def count_items(self, *, since: datetime | None = None
                    ) -> dict[tuple[str | None, str, str], int]:
        """Number of items per (route, rule, status); ``since`` compares ``sampled_at``.

        Only what the sampler stored: rows skipped by the rate or capped are counted in the
        metrics alone.
        """
        return self._count_by((items.c.route, items.c.rule, items.c.status),
                              items.c.sampled_at, since)

    def count_rejections(self, *, since: datetime | None = None
                         ) -> dict[tuple[str, str], int]:
        """Number of stored rejections per (field, reason); ``since`` compares ``created_at``."""
        return self._count_by((rejections.c.field, rejections.c.reason),
                              rejections.c.created_at, since)

    def count_failures(self, *, since: datetime | None = None) -> dict[tuple[str, str], int]:
        """Number of dead letters per (stage, kind); ``since`` compares ``created_at``."""
        return self._count_by((failures.c.stage, failures.c.kind),
                              failures.c.created_at, since)

    def item_detections(self, *, since: datetime | None = None
                        ) -> dict[str, tuple[str | None, frozenset[str]]]:
        """Per explained item: its route and the detection kinds any scorer found in it (an
        empty set when none). ``since`` compares the explanation's ``created_at``."""
        stmt = (select(explanations.c.request_id, explanations.c.detections, items.c.route)
                .select_from(explanations.outerjoin(
                    items, items.c.request_id == explanations.c.request_id)))
        if since is not None:
            stmt = stmt.where(explanations.c.created_at >= since)
        found: dict[str, tuple[str | None, set[str]]] = {}
        with self._db.engine.connect() as conn:
            for rid, detections, route in conn.execute(stmt):
                kinds = found.setdefault(rid, (route, set()))[1]
                kinds.update(d["kind"] for d in detections or ())
        return {rid: (route, frozenset(kinds)) for rid, (route, kinds) in found.items()}

    def scores(self, *, since: datetime | None = None,
               scorer: str | None = None) -> list[ScoreRow]:
        """Stored scores, oldest first; ``since`` is inclusive and compares ``scored_at``."""
        stmt = select(*_SCORE_COLUMNS).order_by(scores.c.scored_at, scores.c.id)
        if since is not None:
            stmt = stmt.where(scores.c.scored_at >= since)
        if scorer is not None:
            stmt = stmt.where(scores.c.scorer == scorer)
        with self._db.engine.connect() as conn:
            return [_score_row(row) for row in conn.execute(stmt)]

    def scores_for(self, request_id: str) -> list[ScoreRow]:
        """Every score of one item, by scorer and metric."""
        stmt = (select(*_SCORE_COLUMNS).where(scores.c.request_id == request_id)
                .order_by(scores.c.scorer, scores.c.scorer_version, scores.c.metric))
        with self._db.engine.connect() as conn:
            return [_score_row(row) for row in conn.execute(stmt)]

    def item(self, request_id: str) -> ItemRow | None:
        """One item with its payload, or None."""
        with self._db.engine.connect() as conn:
            row = conn.execute(select(items).where(items.c.request_id == request_id)).first()
        if row is None:
            return None
        return ItemRow(row.request_id, row.source, row.log_timestamp, row.route, row.model,
                       row.rule, row.status, row.sampled_at, row.updated_at, dict(row.payload))

    def explanations(self, request_id: str) -> list[ExplanationRow]:
        """The explanations of one item, one per scorer and version."""
        stmt = (select(explanations).where(explanations.c.request_id == request_id)
                .order_by(explanations.c.scorer, explanations.c.scorer_version))
        with self._db.engine.connect() as conn:
            return [
                ExplanationRow(row.request_id, row.scorer, row.scorer_version, dict(row.body),
                               tuple(Detection(d["kind"], d.get("detail", ""))
                                     for d in row.detections), row.created_at)
                for row in conn.execute(stmt)
            ]

    def failures(self, request_id: str | None = None, limit: int = 100) -> list[FailureRow]:
        """The newest dead letters, of one item or of all."""
        stmt = select(failures).order_by(failures.c.id.desc()).limit(limit)
        if request_id is not None:
            stmt = stmt.where(failures.c.request_id == request_id)
        with self._db.engine.connect() as conn:
            return [FailureRow(r.id, r.request_id, r.stage, r.kind, r.reason, r.attempts,
                               r.task_id, r.created_at) for r in conn.execute(stmt)]

    def rejections(self, limit: int = 100) -> list[RejectionRow]:
        """The newest rejected source rows."""
        stmt = select(rejections).order_by(rejections.c.id.desc()).limit(limit)
        with self._db.engine.connect() as conn:
            return [_rejection_row(r) for r in conn.execute(stmt)]

    def rejections_for(self, row_ref: str, limit: int = 20) -> list[RejectionRow]:
        """The newest rejections of one source row (``row_ref``: its request id when the row
        had one), for ``groundwatch explain``."""
        stmt = (select(rejections).where(rejections.c.row_ref == row_ref)
                .order_by(rejections.c.id.desc()).limit(limit))
        with self._db.engine.connect() as conn:
            return [_rejection_row(r) for r in conn.execute(stmt)]
