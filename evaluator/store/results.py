"""The Celery task's side of the store: scored batches and dead letters.

Writes are idempotent. Scores are unique per (request id, metric, scorer, scorer version) and
:meth:`ResultWriter.record_batch` reports which ones it actually wrote, so a batch that Celery
delivers twice is counted once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert

from evaluator.calibration.maps import NO_ROUTE
from evaluator.records import LogRecord
from evaluator.scorers.base import ItemResult, MetricResult, ScoredBatch, ScorerRun, Written
from evaluator.store.database import Database, chunks
from evaluator.store.models import failures
from evaluator.store.rows import UNSAMPLED
from evaluator.store.writes import Transaction, WritePath, mark_items
from evaluator.verdicts import random_share_pairs

MAX_REASON_CHARS = 4000


@dataclass(frozen=True, slots=True)
class _PreparedRun:
    """One scorer run's rows, ready for the statements before the transaction begins."""

    run: ScorerRun
    ids: list[str]
    wanted: dict[tuple[str, str], MetricResult]
    score_rows: list[Any]
    score_keys: list[tuple[str, str, str]]
    explanation_rows: dict[str, Any]


class ResultWriter:
    """Stores what the scorers said (:meth:`record_batch`) and what failed for good
    (:meth:`record_failures`)."""

    def __init__(self, db: Database, path: WritePath) -> None:
        self._db = db
        self._path = path

    def __repr__(self) -> str:
        return repr(self._db)

    def record_results(
        self,
        results: Sequence[ItemResult],
        records: Mapping[str, LogRecord],
        *,
        scorer: str,
        scorer_version: str,
        now: datetime | None = None,
    ) -> list[tuple[str, MetricResult]]:
        """:meth:`record_batch` for one scorer's results; returns the (request id, score)
        pairs it newly wrote."""
        missing = [r.request_id for r in results if r.request_id not in records]
        if missing:
            raise ValueError(f"record_results: no record given for {len(missing)} result(s), "
                             f"e.g. {missing[:3]}")
        rids = dict.fromkeys(r.request_id for r in results)
        batch = ScoredBatch(tuple(records[rid] for rid in rids),
                            (ScorerRun(scorer, scorer_version, tuple(results)),))
        return [(w.request_id, w.result) for w in self.record_batch(batch, now=now)]

    def record_batch(self, batch: ScoredBatch, *, now: datetime | None = None) -> list[Written]:
        """Store a scored batch (every scorer's results) in one transaction; return the scores
        it newly wrote.

        A score already stored for the same (request id, metric, scorer, scorer version) is
        kept, unless it is an ``error`` and the new one is not: a retry may replace a failure
        with a real result. So a batch delivered twice writes (and returns) nothing the second
        time, and callers can count exactly the returned scores in their metrics.

        Explanations follow the scores: replaced where the item got a newly written score from
        that scorer, otherwise only added when missing. Every item is marked ``scored``; an
        item the sampler never stored is created (source and rule ``'unsampled'``). The batch
        must hold the record of every result (route, model and log time are copied onto the
        scores).
        """
        now = now or self._db.clock()
        records = batch.by_id
        runs: list[tuple[ScorerRun, dict[str, ItemResult]]] = []
        for run in batch.runs:
            by_id = {r.request_id: r for r in run.items}
            missing = [rid for rid in by_id if rid not in records]
            if missing:
                raise ValueError(f"record_batch: no record given for {len(missing)} result(s), "
                                 f"e.g. {missing[:3]}")
            if by_id:
                runs.append((run, by_id))
        if not runs:
            return []
        ids = list(dict.fromkeys(rid for _, by_id in runs for rid in by_id))
        prepared = [self._prepare(run, by_id, records, now) for run, by_id in runs]
        out: list[Written] = []
        with self._path.begin() as tx:
            for p in prepared:
                out.extend(self._write_run(tx, p))
            self._mark_scored(tx, ids, records, now)
            self._add_pairs(tx, batch, out, now)
        return out

    def _add_pairs(self, tx: Transaction, batch: ScoredBatch, written: Sequence[Written],
                   now: datetime) -> None:
        """The calibration's pairs (:func:`~evaluator.verdicts.random_share_pairs`), in the
        scores' transaction: a batch's pairs are stored exactly when its judge scores are."""
        pairs = random_share_pairs(batch, written)
        if not pairs:
            return
        now_p = self._path.ts(now)
        tx.run("add_pairs", self._path.prepare("add_pairs", [
            (p.request_id, p.metric, p.cheap_scorer, p.cheap_version, p.judge[:200],
             p.route or NO_ROUTE, p.cheap, p.judge_value, now_p) for p in pairs]))

    def _prepare(self, run: ScorerRun, by_id: Mapping[str, ItemResult],
                 records: Mapping[str, LogRecord], now: datetime) -> _PreparedRun:
        ts, js = self._path.ts, self._path.js
        now_p = ts(now)
        wanted: dict[tuple[str, str], MetricResult] = {}
        score_rows: list[tuple[Any, ...]] = []
        keys: list[tuple[str, str, str]] = []
        expl: dict[str, tuple[Any, ...]] = {}
        for rid, result in by_id.items():
            record = records[rid]
            log_ts = ts(record.timestamp)
            for metric in result.metrics:
                if (rid, metric.metric) in wanted:
                    raise ValueError(f"record_results: metric {metric.metric!r} twice for {rid}")
                wanted[rid, metric.metric] = metric
                outcome = metric.outcome.value
                keys.append((rid, metric.metric, outcome))
                score_rows.append((rid, metric.metric, run.scorer, run.version, outcome,
                                   metric.value, metric.reason, record.route, record.model,
                                   log_ts, now_p, metric.calibrated, metric.calibration))
            expl[rid] = (rid, run.scorer, run.version, js(result.explanation.to_dict()),
                         js([{"kind": d.kind, "detail": d.detail} for d in result.detections]),
                         now_p)
        prepare = self._path.prepare
        return _PreparedRun(run, list(by_id), wanted, prepare("upsert_scores", score_rows),
                            keys, dict(zip(expl, prepare("add_explanations",
                                                         list(expl.values())), strict=True)))

    @staticmethod
    def _write_run(tx: Transaction, p: _PreparedRun) -> list[Written]:
        written = tx.upsert_scores(p.score_rows, p.score_keys, p.run.scorer, p.run.version)
        fresh_ids = {rid for rid, _ in written}
        tx.run("replace_explanations",
               [p.explanation_rows[r] for r in p.ids if r in fresh_ids])
        tx.run("add_explanations",
               [p.explanation_rows[r] for r in p.ids if r not in fresh_ids])
        return [Written(p.run.scorer, rid, p.wanted[rid, metric]) for rid, metric in p.wanted
                if (rid, metric) in written]

    def _mark_scored(self, tx: Transaction, ids: Sequence[str],
                     records: Mapping[str, LogRecord], now: datetime) -> None:
        # Look up which items exist first so the (possibly large) payloads are only encoded
        # and sent for the few that are missing. On PostgreSQL a concurrent add_items may slip
        # in between; the insert then does nothing and the update still marks the row scored.
        present = tx.present_ids(ids)
        ts, js = self._path.ts, self._path.js
        now_p = ts(now)
        tx.run("add_items", self._path.prepare("add_items", [
            (rid, UNSAMPLED, ts(records[rid].timestamp), records[rid].route,
             records[rid].model, UNSAMPLED, "scored", now_p, now_p,
             js(records[rid].to_message()))
            for rid in ids if rid not in present]))
        tx.mark_scored(ids, now_p)

    def record_failures(
        self,
        request_ids: Sequence[str],
        *,
        stage: str,
        kind: str,
        reason: str,
        attempts: int,
        task_id: str | None = None,
    ) -> None:
        """Store a dead letter per request id and mark those items ``failed``.

        Items already ``scored`` keep their status. With no request ids (a failure before the
        batch was known), one row without a request id is stored so the failure is not lost.
        Reasons are cut to 4000 characters.
        """
        now = self._db.clock()
        base = {"stage": stage, "kind": kind, "reason": reason[:MAX_REASON_CHARS],
                "attempts": attempts, "task_id": task_id, "created_at": now}
        ids = list(dict.fromkeys(request_ids))
        rows = [{"request_id": rid, **base} for rid in ids] or [{"request_id": None, **base}]
        with self._db.writer.begin() as conn:
            conn.execute(insert(failures), rows)
            for chunk in chunks(ids):
                conn.execute(mark_items("failed", chunk), {"b_updated_at": now})
