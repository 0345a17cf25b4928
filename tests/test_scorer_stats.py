"""A scorer's per-batch usage (truncations, cache lookups) reaches Prometheus."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from evaluator.config import Config
from evaluator.records import LogRecord
from evaluator.scorers.base import ItemResult, MetricResult, Usage
from evaluator.scorers.gates import Assessment, Gated, GatedScorer
from evaluator.scoring import Scoring
from evaluator.store import Store
from metrics.registry import Metrics
from workers.context import WorkerContext
from workers.tasks import score_and_record


class CountingScorer(GatedScorer):
    """Scores faithfulness 1.0; reports scripted usage per batch."""

    name = "counting"
    version = "1"

    def __init__(self, steps: list[dict[str, int]]) -> None:
        self.steps = steps

    def assess(self, items: Sequence[Gated]) -> tuple[list[Assessment], Usage]:
        usage = Usage(**self.steps.pop(0))
        return [Assessment((MetricResult.ok("faithfulness", 1.0),)) for _ in items], usage


class PlainScorer:
    """A scorer with ``score_batch`` only (a team's own): it reports no usage."""

    name = "counting"
    version = "1"

    def score_batch(self, records: Sequence[LogRecord]) -> list[ItemResult]:
        return [ItemResult(r.request_id, (MetricResult.ok("faithfulness", 1.0),))
                for r in records]

    def close(self) -> None:
        pass


def record(i: int) -> LogRecord:
    return LogRecord(request_id=f"r{i}", timestamp=datetime.now(UTC), question="q?",
                     contexts=("c",), answer="a")


def value(metrics: Metrics, name: str, **labels: str) -> float:
    got = metrics.registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


def test_score_and_record_exports_each_batchs_usage(tmp_path: Path) -> None:
    config = Config()
    store = Store(f"sqlite:///{tmp_path / 'gw.db'}")
    metrics = Metrics(config.metrics, multiprocess=False)
    scorer = CountingScorer([{"truncations": 2, "cache_hits": 3, "cache_misses": 5},
                             {"truncations": 1, "cache_hits": 7}])
    ctx = WorkerContext(config, store, Scoring([scorer]), metrics, os.getpid())
    batches = [[record(0), record(1)], [record(2)]]
    store.ledger.add_items([(r, "default") for b in batches for r in b], source="test")
    try:
        truncations = "groundwatch_scorer_truncations_total"
        lookups = "groundwatch_scorer_cache_lookups_total"
        assert score_and_record(ctx, batches[0]) == 2
        assert value(metrics, truncations, scorer="counting") == 2
        assert value(metrics, lookups, scorer="counting", result="hit") == 3
        assert value(metrics, lookups, scorer="counting", result="miss") == 5

        assert score_and_record(ctx, batches[1]) == 1  # the second batch's usage is added
        assert value(metrics, truncations, scorer="counting") == 3
        assert value(metrics, lookups, scorer="counting", result="hit") == 10
        assert value(metrics, lookups, scorer="counting", result="miss") == 5
    finally:
        store.close()


def test_scorer_without_usage_exports_nothing(tmp_path: Path) -> None:
    config = Config()
    store = Store(f"sqlite:///{tmp_path / 'gw.db'}")
    metrics = Metrics(config.metrics, multiprocess=False)
    ctx = WorkerContext(config, store, Scoring([PlainScorer()]), metrics, os.getpid())
    store.ledger.add_items([(record(0), "default")], source="test")
    try:
        assert score_and_record(ctx, [record(0)]) == 1
        assert value(metrics, "groundwatch_scorer_truncations_total", scorer="counting") == 0
    finally:
        store.close()
