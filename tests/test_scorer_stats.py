"""A scorer's optional ``stats()`` counters reach Prometheus as per-batch increases."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from evaluator.config import Config
from evaluator.records import LogRecord
from evaluator.scorers.base import ItemResult, MetricResult
from evaluator.store import Store
from metrics.registry import Metrics
from workers.context import WorkerContext
from workers.tasks import score_and_record


class CountingScorer:
    """Scores everything 1.0; its counters move by scripted amounts per batch."""

    name = "counting"
    version = "1"

    def __init__(self, steps: list[dict[str, int]]) -> None:
        self.steps = steps
        self.totals = {"truncations": 0, "cache_hits": 0, "cache_misses": 0}

    def score_batch(self, records: Sequence[LogRecord]) -> list[ItemResult]:
        for key, n in self.steps.pop(0).items():
            self.totals[key] += n
        return [ItemResult(r.request_id, (MetricResult.ok("faithfulness", 1.0),))
                for r in records]

    def stats(self) -> dict[str, int]:
        return dict(self.totals)

    def close(self) -> None:
        pass


def record(i: int) -> LogRecord:
    return LogRecord(request_id=f"r{i}", timestamp=datetime.now(UTC), question="q?",
                     contexts=("c",), answer="a")


def value(metrics: Metrics, name: str, **labels: str) -> float:
    got = metrics.registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


def test_score_and_record_exports_stats_deltas(tmp_path: Path) -> None:
    config = Config()
    store = Store(f"sqlite:///{tmp_path / 'gw.db'}")
    metrics = Metrics(config.metrics, multiprocess=False)
    scorer = CountingScorer([{"truncations": 2, "cache_hits": 3, "cache_misses": 5},
                             {"truncations": 1, "cache_hits": 7}])
    ctx = WorkerContext(config, store, scorer, metrics, os.getpid())
    batches = [[record(0), record(1)], [record(2)]]
    store.add_items([(r, "default") for b in batches for r in b], source="test")
    try:
        truncations = "groundwatch_scorer_truncations_total"
        lookups = "groundwatch_scorer_cache_lookups_total"
        assert score_and_record(ctx, batches[0]) == 2
        assert value(metrics, truncations, scorer="counting") == 2
        assert value(metrics, lookups, scorer="counting", result="hit") == 3
        assert value(metrics, lookups, scorer="counting", result="miss") == 5

        assert score_and_record(ctx, batches[1]) == 1  # only the increase is added
        assert value(metrics, truncations, scorer="counting") == 3
        assert value(metrics, lookups, scorer="counting", result="hit") == 10
        assert value(metrics, lookups, scorer="counting", result="miss") == 5
        assert ctx.scorer_stats_seen == {"truncations": 3, "cache_hits": 10, "cache_misses": 5}
    finally:
        store.close()


def test_scorer_without_stats_exports_nothing(tmp_path: Path) -> None:
    config = Config()
    store = Store(f"sqlite:///{tmp_path / 'gw.db'}")
    metrics = Metrics(config.metrics, multiprocess=False)
    scorer = CountingScorer([{}])
    scorer.stats = None  # type: ignore[assignment,method-assign]
    ctx = WorkerContext(config, store, scorer, metrics, os.getpid())
    store.add_items([(record(0), "default")], source="test")
    try:
        assert score_and_record(ctx, [record(0)]) == 1
        assert ctx.scorer_stats_seen == {}
        assert value(metrics, "groundwatch_scorer_truncations_total", scorer="counting") == 0
    finally:
        store.close()
