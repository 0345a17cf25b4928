"""What the store's tests share: the database and store fixtures (SQLite, and PostgreSQL
under the ``postgres`` marker), a fake clock, records and results."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from evaluator.records import LogRecord
from evaluator.scorers.base import METRICS, ItemResult, MetricResult
from evaluator.store import Store

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
TABLES = {"gw_items", "gw_scores", "gw_explanations", "gw_failures", "gw_cursors",
          "gw_rejections", "gw_source_reads", "gw_golden_scores", "gw_golden_runs",
          "gw_calibration_pairs", "gw_calibration_maps"}


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def record(rid: str, *, minutes: int = 0, route: str | None = "chat", **kw: Any) -> LogRecord:
    return LogRecord(
        request_id=rid,
        timestamp=T0 - timedelta(hours=1) + timedelta(minutes=minutes),
        question=f"question {rid}?",
        contexts=("passage one", "passage two"),
        answer=f"answer {rid}",
        route=route,
        model="m1",
        **kw,
    )


def ok_result(rid: str, value: float = 0.5, **kw: Any) -> ItemResult:
    return ItemResult(rid, tuple(MetricResult.ok(m, value) for m in METRICS), **kw)


def error_result(rid: str) -> ItemResult:
    return ItemResult(rid, tuple(MetricResult.error(m, "timeout") for m in METRICS))


def count(store: Store, table: str) -> int:
    with store.engine.connect() as conn:
        return conn.scalar(text(f"SELECT count(*) FROM {table}"))
