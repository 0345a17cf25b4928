"""The scoring layer: a batch of records in, one :class:`ScoredBatch` out.

The applicability gates run once per record (:mod:`evaluator.scorers.gates`), then every
scorer in turn judges what they left open; each run's usage (judge calls, tokens, cost, cache
lookups, truncations, wall time) comes back beside its results.

With a judge (the cascade): the cheap scorer (``[scoring] scorer``) scores every record; the
judge then scores a random share of them (``judge.cascade.share``, decided by a hash of the
request id, so a re-delivered batch picks the same items) plus those whose cheap score of
``judge.cascade.on`` is below ``low`` or inside ``band``. The judge's run carries, per item,
why it was picked (``ScorerRun.selection``): only the random share measures the agreement
between the two without bias.

With a :class:`~evaluator.calibration.apply.Calibrator`, the cheap scorer's values then get
their calibrated twins (after the pick: the cascade's ``low`` and ``band`` are raw values).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from evaluator.judge.types import FINAL_ATTEMPT
from evaluator.records import LogRecord
from evaluator.scorers.base import (
    BatchScorer,
    ItemResult,
    ScoredBatch,
    Scorer,
    ScorerRun,
    as_scorer,
)
from evaluator.scorers.gates import Gated, apply_gates
from evaluator.stopping import STOP, StopRequest

if TYPE_CHECKING:
    from evaluator.calibration.apply import Calibrator
    from evaluator.config import JudgeCascadeConfig


class Scoring:
    """Runs ``scorers`` over batches. Holds no per-call state (thread-safe as the scorers are)."""

    def __init__(self, scorers: Sequence[Scorer | BatchScorer], *,
                 judge: Scorer | BatchScorer | None = None,
                 cascade: JudgeCascadeConfig | None = None, salt: str = "",
                 calibrator: Calibrator | None = None) -> None:
        if not scorers:
            raise ValueError("Scoring needs at least one scorer")
        if judge is not None and cascade is None:
            raise ValueError("a judge needs the cascade's settings")
        # A team's own scorer may have score_batch only: adapted once here, then called
        # like every other.
        self.scorers = tuple(as_scorer(s) for s in scorers)
        self.judge = as_scorer(judge) if judge is not None else None
        self.cascade = cascade
        self.salt = salt
        self.calibrator = calibrator

    @property
    def all_scorers(self) -> tuple[Scorer, ...]:
        return self.scorers + ((self.judge,) if self.judge is not None else ())

    @property
    def primary(self) -> Scorer:
        """The first scorer: the one that scores every item."""
        return self.scorers[0]

    def score(self, records: Sequence[LogRecord], *, final_attempt: bool = True,
              stop: StopRequest | None = None) -> ScoredBatch:
        """Score ``records`` with every scorer, then the judge on the cascade's pick.
        Per-item problems are ``error`` outcomes in the results; what a scorer raises (an
        outage, a bug, a rate-limited judge on an attempt that is not the last, a judge cut by
        ``stop``'s grace: :class:`~evaluator.errors.Stopping`) propagates."""
        records = tuple(records)
        gated = apply_gates(records)
        runs = [self._run(s, records, gated) for s in self.scorers]
        if self.judge is not None:
            picked = self.pick(runs[0], gated)
            if picked:
                token = FINAL_ATTEMPT.set(final_attempt)
                stop_token = STOP.set(stop)
                try:
                    run = self._run(self.judge, [g.record for g, _ in picked],
                                    [g for g, _ in picked])
                finally:
                    STOP.reset(stop_token)
                    FINAL_ATTEMPT.reset(token)
                why = {g.record.request_id: reason for g, reason in picked}
                runs.append(dataclasses.replace(
                    run, items=tuple(_with_selection(i, why[i.request_id]) for i in run.items),
                    selection=why))
        if self.calibrator is not None:
            runs[0] = self.calibrator.apply(runs[0], {r.request_id: r for r in records})
        return ScoredBatch(records, tuple(runs))

    def in_share(self, request_id: str) -> bool:
        """Is ``request_id`` in the judge's random share (stable across processes)?"""
        assert self.cascade is not None
        if self.cascade.share <= 0:
            return False
        digest = hashlib.sha256(f"judge|{self.salt}|{request_id}".encode(
            "utf-8", "surrogatepass")).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.cascade.share

    def pick(self, cheap: ScorerRun, gated: Sequence[Gated]) -> list[tuple[Gated, str]]:
        """The records the judge scores and why: ``random``, ``low`` or ``band``."""
        assert self.cascade is not None
        on, low, (band_lo, band_hi) = self.cascade.on, self.cascade.low, self.cascade.band
        out: list[tuple[Gated, str]] = []
        for g, result in zip(gated, cheap.items, strict=True):
            if self.in_share(g.record.request_id):
                out.append((g, "random"))
                continue
            value = next((m.value for m in result.metrics
                          if m.metric == on and m.value is not None), None)
            if value is None:
                continue
            if value < low:
                out.append((g, "low"))
            elif band_lo <= value <= band_hi:
                out.append((g, "band"))
        return out

    @staticmethod
    def _run(scorer: Scorer, records: Sequence[LogRecord],
             gated: Sequence[Gated]) -> ScorerRun:
        started = time.perf_counter()
        results, usage = scorer.score_gated(gated)
        elapsed = time.perf_counter() - started
        if len(results) != len(records):
            raise RuntimeError(f"scorer {scorer.name} returned {len(results)} results "
                               f"for {len(records)} records")
        return ScorerRun(scorer.name, scorer.version, tuple(results),
                         dataclasses.replace(usage, latency_s=elapsed))


def _with_selection(item: ItemResult, reason: str) -> ItemResult:
    """``item`` with the cascade's reason in its judge trace (what explain shows)."""
    trace = item.explanation.judge
    if trace is None:
        return item
    return dataclasses.replace(item, explanation=dataclasses.replace(
        item.explanation, judge=dataclasses.replace(trace, selected_by=reason)))
