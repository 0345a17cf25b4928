"""The scoring layer: a batch of records in, one :class:`ScoredBatch` out.

The applicability gates run once per record (:mod:`evaluator.scorers.gates`), then every
scorer in turn judges what they left open; each run's usage (judge calls, tokens, cost, cache
lookups, truncations, wall time) comes back beside its results. Today a process has one
scorer (``[scoring] scorer``); a cascade will hand this layer two.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

from evaluator.records import LogRecord
from evaluator.scorers.base import ItemResult, ScoredBatch, Scorer, ScorerRun, Usage
from evaluator.scorers.gates import Gated, apply_gates


class Scoring:
    """Runs ``scorers`` over batches. Holds no per-call state (thread-safe as the scorers are)."""

    def __init__(self, scorers: Sequence[Scorer]) -> None:
        if not scorers:
            raise ValueError("Scoring needs at least one scorer")
        self.scorers = tuple(scorers)

    @property
    def primary(self) -> Scorer:
        """The first scorer: the one that scores every item."""
        return self.scorers[0]

    def score(self, records: Sequence[LogRecord]) -> ScoredBatch:
        """Score ``records`` with every scorer. Per-item problems are ``error`` outcomes in
        the results; what a scorer raises (an outage, a bug) propagates."""
        records = tuple(records)
        gated = apply_gates(records)
        return ScoredBatch(records, tuple(self._run(s, records, gated) for s in self.scorers))

    @staticmethod
    def _run(scorer: Scorer, records: Sequence[LogRecord],
             gated: Sequence[Gated]) -> ScorerRun:
        started = time.perf_counter()
        score_gated = getattr(scorer, "score_gated", None)
        results: list[ItemResult]
        if callable(score_gated):
            results, usage = score_gated(gated)
        else:  # a scorer with score_batch only (a team's own): it gates itself
            results, usage = scorer.score_batch(records), Usage()
        elapsed = time.perf_counter() - started
        if len(results) != len(records):
            raise RuntimeError(f"scorer {scorer.name} returned {len(results)} results "
                               f"for {len(records)} records")
        return ScorerRun(scorer.name, scorer.version, tuple(results),
                         dataclasses.replace(usage, latency_s=elapsed))
