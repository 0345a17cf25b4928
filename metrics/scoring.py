"""The workers' metrics: the scores they wrote and what those mean, the scorers' work, the
scoring tasks' fate and time, and the cascade's agreement.

What a score means (a quality failure, an agreement) is decided in :mod:`evaluator.verdicts`;
this module only counts it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from evaluator.scorers.base import Outcome
from metrics.recorder import Recorder

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from evaluator.scorers.base import ScoredBatch
    from evaluator.verdicts import NewScore, Verdicts
    from metrics.labels import LabelPolicy

# Scores live in [0, 1]. Steps of 0.1 rather than 0.05: the series count is
# buckets × metric × scorer × route × model, so halving the buckets halves the biggest family.
# Exact threshold counting does not need buckets (quality_failures_total does it), and the mean
# (sum / count) is exact whatever the buckets. le="0.5" and le="0.3" coincide with the default
# thresholds, so the histogram can also answer "share at or below the threshold" for them.
SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
# |cheap - judge| on one metric of one item.
DIFF_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
# Log time → score time. Healthy: seconds to a few minutes (poll interval + queue); backlog or
# backfill: hours; beyond a day the value is "a day or more", which is all an alert needs.
EVAL_LAG_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)
# Per item: the lexical scorer takes well under a millisecond, the embedded one tens of
# milliseconds on CPU, an LLM judge seconds to a minute.
SCORER_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
)


class ScoringMetrics(Recorder):
    """Recorded by ``workers.tasks``: once per batch, aggregated (one write per series and
    touched bucket)."""

    def __init__(self, registry: CollectorRegistry, policy: LabelPolicy) -> None:
        super().__init__(registry, policy)
        self._define_quality()
        self._define_work()
        self._define_batches()
        self._define_agreement()

    def _define_quality(self) -> None:
        self.score = self._histogram(
            "score", "Scores with outcome ok, in [0, 1].",
            ("metric", "scorer", "route", "model"), SCORE_BUCKETS)
        self.score_outcomes = self._counter(
            "score_outcomes_total", "Metric results by outcome (ok, not_applicable, error).",
            ("metric", "scorer", "outcome"))
        # Per scorer: in a cascade the judge scores a share of the items chosen to lean
        # towards failures, so the quality alerts read the cheap scorer's count alone (the
        # denominator, groundwatch_score_count, is per scorer already).
        self.quality_failures = self._counter(
            "quality_failures_total", "Ok scores below their configured threshold, by scorer.",
            ("metric", "scorer", "route"))
        # The calibrated twins of the two above, for the scorer that sees every item: after
        # the calibration map that applied to the item's route and metric, the raw value where
        # none did (evaluator/calibration; docs/calibration.md).
        self.calibrated_score = self._histogram(
            "calibrated_score",
            "The first scorer's ok scores after the calibration map of their route and metric "
            "(the raw score where no map applies).", ("metric", "scorer", "route", "model"),
            SCORE_BUCKETS)
        self.calibrated_quality_failures = self._counter(
            "calibrated_quality_failures_total",
            "calibrated_score values below their configured threshold.",
            ("metric", "scorer", "route"))
        self.detections = self._counter(
            "detections_total",
            "Failure modes found (no_relevant_context, out_of_scope, empty_answer, refusal).",
            ("kind", "route"))
        self.eval_lag = self._histogram(
            "eval_lag_seconds", "Time from the app's log timestamp to its score.", (),
            EVAL_LAG_BUCKETS)
        # max (not livemax): the newest ok score of any process, including processes that have
        # exited since; "the pipeline stalled" must not be confused with "a worker restarted".
        self.last_score_timestamp = self._gauge(
            "last_score_timestamp_seconds", "Unix time of the newest ok score.", (), "max")

    def _define_work(self) -> None:
        self.scorer_latency = self._histogram(
            "scorer_latency_seconds",
            "Scoring time per item (a batch's time divided evenly over its items).",
            ("scorer",), SCORER_LATENCY_BUCKETS)
        self.scorer_truncations = self._counter(
            "scorer_truncations_total",
            "Scorer inputs (question, answer, passages) cut to the configured size.",
            ("scorer",))
        self.scorer_cache_lookups = self._counter(
            "scorer_cache_lookups_total",
            "Lookups in the scorer's per-process cache (passage embeddings) by result.",
            ("scorer", "result"))
        self.scorer_shared_cache_lookups = self._counter(
            "scorer_shared_cache_lookups_total",
            "Lookups of per-process cache misses in the cache all workers share (Redis), by "
            "result: hit, miss, or error (not reachable: the texts were embedded locally).",
            ("scorer", "result"))

    def _define_batches(self) -> None:
        self.task_failures = self._counter(
            "task_failures_total", "Scoring tasks that failed for good (dead letters).",
            ("kind",))
        self.task_retries = self._counter(
            "task_retries_total", "Scoring task retries after a transient error.", ("kind",))
        # A batch still running when the visibility timeout expires is handed to a second
        # worker; slow_batches_total counts those past half of it, exactly, as a warning.
        # The longest batch is a max gauge rather than a histogram: the question it answers is
        # "what must broker.visibility_timeout_s exceed", one number, and a histogram's top
        # bucket would only bound it (the per-item distribution is scorer_latency_seconds).
        # max (not livemax): a process that exited keeps its longest batch in the answer.
        self.slow_batches = self._counter(
            "slow_batches_total",
            "Scoring batches that ran past half of broker.visibility_timeout_s.", ("scorer",))
        self.batch_seconds_max = self._gauge(
            "batch_seconds_max",
            "Longest scoring batch (task start to stored) of any process, in seconds.",
            ("scorer",), "max")
        self._batch_max_seen: dict[str, float] = {}
        self._batch_max_lock = threading.Lock()  # thread pools: never set a lower max last

    def _define_agreement(self) -> None:
        # The cascade: the judge against the cheap scorer on the items of the random share
        # (the low and band picks are chosen by the cheap score, so they would bias it).
        self.cascade_compared = self._counter(
            "cascade_compared_total",
            "Random-share items both scorers scored, by whether they agree on the side of "
            "the metric's threshold (agree = yes | no).", ("metric", "route", "agree"))
        self.cascade_abs_diff = self._histogram(
            "cascade_abs_diff",
            "|cheap - judge| per metric on the random-share items both scored.", ("metric",),
            DIFF_BUCKETS)

    # --- recording ---------------------------------------------------------------------------

    def observe_written(self, verdicts: Verdicts, now: float | None = None) -> None:
        """The scores the store newly wrote for one batch (:class:`~evaluator.verdicts.Verdicts`):
        per scorer its latency (per item) and scores (outcome, score, quality failures, eval
        lag once per item), the cascade's agreement, and each newly scored item's detections.
        A batch delivered twice counts nothing the second time (the latency excepted: it is
        work done)."""
        now = time.time() if now is None else now
        value = self.policy.value
        for run in verdicts.runs:
            self._observe_latency(run.scorer, run.latency_s, run.n_items)
            self._observe_scores(run.scorer, run.scores, now)
        for a in verdicts.agreements:
            self._child(self.cascade_compared, a.metric, value("route", a.route),
                        "yes" if a.agree else "no").inc()
            self._child(self.cascade_abs_diff, a.metric).observe(a.abs_diff)
        for d in verdicts.detections:
            self._child(self.detections, value("kind", d.kind), value("route", d.route)).inc()

    def _observe_latency(self, scorer: str, seconds: float, n_items: int) -> None:
        """A run of ``n_items`` took ``seconds``: each item is recorded with the mean time, so
        the histogram counts items and its quantiles are per-item times."""
        if n_items <= 0 or seconds < 0:
            return
        child = self._child(self.scorer_latency, self.policy.value("scorer", scorer))
        self._observe_many(child, [seconds / n_items] * n_items)

    def _observe_scores(self, scorer: str, scores: Sequence[NewScore], now: float) -> None:
        """One scorer's new scores, aggregated: one write per series and touched bucket."""
        value = self.policy.value
        scorer_v = value("scorer", scorer)
        outcomes: Counter[tuple[str, str, str]] = Counter()
        failures: Counter[tuple[str, str, str]] = Counter()
        values: defaultdict[tuple[str, ...], list[float]] = defaultdict(list)
        calibrated: defaultdict[tuple[str, ...], list[float]] = defaultdict(list)
        calibrated_failures: Counter[tuple[str, str, str]] = Counter()
        lags: list[float] = []
        any_ok = False
        for s in scores:
            result = s.result
            outcomes[(result.metric, scorer_v, result.outcome.value)] += 1
            if result.outcome is Outcome.OK and result.value is not None:
                route_v = value("route", s.route)
                values[(result.metric, scorer_v, route_v, value("model", s.model))].append(
                    result.value)
                if s.quality_failure:
                    failures[(result.metric, scorer_v, route_v)] += 1
                if s.calibrated is not None:
                    calibrated[(result.metric, scorer_v, route_v,
                                value("model", s.model))].append(s.calibrated)
                    if s.calibrated_failure:
                        calibrated_failures[(result.metric, scorer_v, route_v)] += 1
                any_ok = True
            if s.log_timestamp is not None:
                lags.append(max(0.0, now - _epoch(s.log_timestamp)))
        for key, k in outcomes.items():
            self._child(self.score_outcomes, *key).inc(k)
        for score_key, vals in values.items():
            self._observe_many(self._child(self.score, *score_key), vals)
        for key, k in failures.items():
            self._child(self.quality_failures, *key).inc(k)
        for score_key, vals in calibrated.items():
            self._observe_many(self._child(self.calibrated_score, *score_key), vals)
        for key, k in calibrated_failures.items():
            self._child(self.calibrated_quality_failures, *key).inc(k)
        if any_ok:
            self.last_score_timestamp.set(now)
        self._observe_many(self.eval_lag, lags)

    def observe_usage(self, batch: ScoredBatch) -> None:
        """Each scorer's work on ``batch``: its truncations and cache lookups (work done,
        counted whether or not the store then takes the scores). The judge's spend is
        :meth:`metrics.judge.JudgeMetrics.observe_usage`."""
        for run in batch.runs:
            usage = run.usage
            scorer_v = self.policy.value("scorer", run.scorer)
            if usage.truncations > 0:
                self._child(self.scorer_truncations, scorer_v).inc(usage.truncations)
            for n, result in ((usage.cache_hits, "hit"), (usage.cache_misses, "miss")):
                if n > 0:
                    self._child(self.scorer_cache_lookups, scorer_v, result).inc(n)
            for n, result in ((usage.shared_cache_hits, "hit"),
                              (usage.shared_cache_misses, "miss"),
                              (usage.shared_cache_errors, "error")):
                if n > 0:
                    self._child(self.scorer_shared_cache_lookups, scorer_v, result).inc(n)

    def observe_task_failure(self, kind: str) -> None:
        """A scoring task failed for good (its batch went to the dead letters)."""
        self._child(self.task_failures, self.policy.value("kind", kind)).inc()

    def observe_task_retry(self, kind: str) -> None:
        """A scoring task will be retried after a transient error of ``kind``."""
        self._child(self.task_retries, self.policy.value("kind", kind)).inc()

    def observe_batch(self, scorer: str, seconds: float, *, slow: bool) -> None:
        """A scoring task took ``seconds``; ``slow`` when past half the visibility timeout."""
        scorer_v = self.policy.value("scorer", scorer)
        if slow:
            self._child(self.slow_batches, scorer_v).inc()
        with self._batch_max_lock:
            if seconds > self._batch_max_seen.get(scorer_v, -1.0):
                self._batch_max_seen[scorer_v] = seconds
                self._child(self.batch_seconds_max, scorer_v).set(seconds)


def _epoch(ts: datetime | float) -> float:
    return ts.timestamp() if isinstance(ts, datetime) else float(ts)
