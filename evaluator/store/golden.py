"""The judge's golden set in the store: scores per judge version, and the run schedule."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from sqlalchemy import select, update

from evaluator.store.database import Database, chunks
from evaluator.store.models import golden_runs, golden_scores


class GoldenStore:
    """Golden-set scores (a baseline and the newest value per item and metric) and the claims
    that make one process run each due golden run."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def __repr__(self) -> str:
        return repr(self._db)

    def record_golden(self, judge_version: str,
                      values: Mapping[str, Mapping[str, float]],
                      now: datetime | None = None) -> dict[tuple[str, str], float]:
        """Store one golden run of ``judge_version``: ``values`` maps request id -> metric ->
        score. The first value of an (item, metric) becomes its baseline; later runs update
        only the newest value. Returns the baseline of every (request id, metric) given.

        One transaction: the upsert, then the baselines read back (a baseline never changes
        once written, so what is read is what a concurrent run would see too).
        """
        now = now or self._db.clock()
        rows = [{"judge_version": judge_version, "request_id": rid, "metric": metric,
                 "baseline_value": float(value), "baseline_at": now,
                 "last_value": float(value), "last_at": now}
                for rid, by_metric in values.items() for metric, value in by_metric.items()]
        if not rows:
            return {}
        wanted = {(row["request_id"], row["metric"]) for row in rows}
        ins = self._db.insert(golden_scores)
        stmt = ins.on_conflict_do_update(
            index_elements=[golden_scores.c.judge_version, golden_scores.c.request_id,
                            golden_scores.c.metric],
            set_={"last_value": ins.excluded.last_value, "last_at": ins.excluded.last_at})
        baselines: dict[tuple[str, str], float] = {}
        with self._db.writer.begin() as conn:
            conn.execute(stmt, rows)
            for chunk in chunks(list(values)):
                for rid, metric, baseline in conn.execute(
                        select(golden_scores.c.request_id, golden_scores.c.metric,
                               golden_scores.c.baseline_value)
                        .where(golden_scores.c.judge_version == judge_version,
                               golden_scores.c.request_id.in_(chunk))):
                    if (rid, metric) in wanted:
                        baselines[rid, metric] = baseline
        return baselines

    def claim_golden_run(self, name: str, interval_s: float,
                         now: datetime | None = None) -> bool:
        """Claim the golden run ``name`` if it is due; True for exactly one caller per due time.

        A schedule never seen is due at once. A successful claim moves the next due time to
        ``now + interval_s``; the check and the move are one conditional UPDATE (as in
        :meth:`Ledger.acquire_lock <evaluator.store.ledger.Ledger.acquire_lock>`), so of several
        processes claiming together one succeeds.
        """
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        now = now or self._db.clock()
        with self._db.writer.begin() as conn:
            conn.execute(self._db.insert(golden_runs).on_conflict_do_nothing(
                index_elements=[golden_runs.c.name]), {"name": name, "next_at": now})
            claimed = conn.execute(
                update(golden_runs)
                .where(golden_runs.c.name == name, golden_runs.c.next_at <= now)
                .values(next_at=now + timedelta(seconds=interval_s), last_run_at=now))
            return claimed.rowcount == 1

    def golden_scores(self, judge_version: str) -> dict[tuple[str, str], tuple[float, float]]:
        """(baseline, newest) per (request id, metric) of ``judge_version``'s golden runs."""
        with self._db.engine.connect() as conn:
            return {(row.request_id, row.metric): (row.baseline_value, row.last_value)
                    for row in conn.execute(
                        select(golden_scores.c.request_id, golden_scores.c.metric,
                               golden_scores.c.baseline_value, golden_scores.c.last_value)
                        .where(golden_scores.c.judge_version == judge_version))}
