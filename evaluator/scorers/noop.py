"""``noop``: returns a fixed score without looking at the text.

It exists to measure groundwatch's own overhead (sample → queue → store → metrics) apart from
any scoring work (``make bench``). Never use it to judge an app.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from evaluator.plugins import ScorerPlugin
from evaluator.records import LogRecord
from evaluator.scorers.base import ItemResult, MetricResult, WholeBatchScorer

if TYPE_CHECKING:
    from evaluator.config import Config

_METRICS = ("faithfulness", "groundedness", "answer_relevance", "context_relevance")


# Microseconds per item: groundwatch's own overhead is what it measures (make bench).
PLUGINS = (ScorerPlugin("noop", "evaluator.scorers.noop:NoopScorer", item_seconds=0.001),)


class NoopScorer(WholeBatchScorer):
    name = "noop"
    version = "1"

    @classmethod
    def from_config(cls, config: Config) -> NoopScorer:
        return cls()

    def score_batch(self, records: Sequence[LogRecord]) -> list[ItemResult]:
        results = tuple(MetricResult.ok(m, 1.0) for m in _METRICS)
        return [ItemResult(r.request_id, results) for r in records]
