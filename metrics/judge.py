"""The LLM judge's metrics: its calls, tokens and spend, the items it was given or refused,
whether it answers, and the golden set that watches it drift."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from evaluator.scorers.base import NotJudged
from metrics.recorder import Recorder

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from evaluator.judge.golden import LabelAccuracy
    from evaluator.scorers.base import ScoredBatch, ScorerRun
    from metrics.labels import LabelPolicy


class JudgeMetrics(Recorder):
    """Recorded by ``workers.tasks`` (each batch's judge spend, ``judge_up``) and by the golden
    runs (``evaluator.judge.golden``)."""

    def __init__(self, registry: CollectorRegistry, policy: LabelPolicy) -> None:
        super().__init__(registry, policy)
        self._define_spend()
        self._define_golden()
        # Known label values start at 0 so that rate() and absent() see the series from the start.
        for kind in ("prompt", "completion"):
            self.judge_tokens.labels(kind)

    def _define_spend(self) -> None:
        self.judge_requests = self._counter(
            "judge_requests_total", "Calls to the judge endpoint by result.", ("status",))
        self.judge_tokens = self._counter(
            "judge_tokens_total", "Judge tokens used (kind = prompt | completion).", ("kind",))
        self.judge_cost = self._counter("judge_cost_usd_total", "Judge spend in USD.")
        self.budget_exhausted = self._counter(
            "budget_exhausted_total", "Items the judge skipped because a budget was spent.")
        # livemax: 1 while at least one *running* process reached the judge on its last call.
        # Plain max would keep a dead process's last 1 forever and hide an outage. Labelled by
        # judge so that processes without a judge (the sampler, a lexical-only worker) export
        # no series at all instead of an unlabelled 0 that would read as "judge down".
        self.judge_up = self._gauge(
            "judge_up", "1 if the judge answered the last call of some live process.",
            ("judge",), "livemax")
        self.judge_not_judged = self._counter(
            "judge_not_judged_total",
            "Items picked for the judge but not judged (reason = budget | circuit_open).",
            ("judge", "reason"))
        self.judge_redactions = self._counter(
            "judge_redactions_total",
            "PII values replaced before text was sent to the judge, by kind.", ("kind",))
        self.judge_abandoned = self._counter(
            "judge_replies_abandoned_total",
            "Streamed judge replies given up as soon as they looped (judge.stream = on); "
            "their tokens are estimated (the server never reported them).", ("judge",))
        self.cascade_picked = self._counter(
            "cascade_picked_total",
            "Items the cascade gave the judge, by why (random | low | band).", ("reason",))

    def _define_golden(self) -> None:
        # The golden set: the judge's mean score on it per run, and how far the run moved
        # from the first run (the baseline) on average per item. mostrecent: the newest run
        # of any process (runs are rare and set both gauges together).
        self.golden_score = self._gauge(
            "golden_score", "The judge's mean score on the golden set, newest run.",
            ("metric",), "mostrecent")
        self.golden_drift = self._gauge(
            "golden_drift",
            "Mean |score - baseline score| per golden item at the newest run.", ("metric",),
            "mostrecent")
        self.golden_accuracy = self._gauge(
            "golden_accuracy",
            "Share of the labelled golden items on which a scorer's ok score falls on the same "
            "side of the metric's threshold as the person's label, newest run.",
            ("scorer", "metric"), "mostrecent")
        self.golden_runs = self._counter(
            "golden_runs_total", "Golden-set runs by result (ok | error).", ("result",))

    def observe_usage(self, batch: ScoredBatch) -> None:
        """What each run of ``batch`` spent on the judge: calls by status, tokens, cost, items
        not judged (a spent budget also counts in ``budget_exhausted_total``), PII redacted,
        and the items the cascade picked. Work done, counted whether or not the store then
        takes the scores. Offline scorers spend nothing, so count nothing here."""
        for run in batch.runs:
            self._observe_spend(run)
            for reason in run.selection.values():
                self._child(self.cascade_picked, reason).inc()

    def _observe_spend(self, run: ScorerRun) -> None:
        usage, value = run.usage, self.policy.value
        if usage.prompt_tokens > 0:
            self._child(self.judge_tokens, "prompt").inc(usage.prompt_tokens)
        if usage.completion_tokens > 0:
            self._child(self.judge_tokens, "completion").inc(usage.completion_tokens)
        if usage.cost_usd > 0:
            self.judge_cost.inc(usage.cost_usd)
        for status, n in usage.judge_statuses.items():
            if n > 0:
                self._child(self.judge_requests, value("status", status)).inc(n)
        scorer_v = value("scorer", run.scorer)
        for reason, n in usage.not_judged.items():
            if n > 0:
                self._child(self.judge_not_judged, scorer_v, reason.value).inc(n)
                if reason is NotJudged.BUDGET:
                    self.budget_exhausted.inc(n)
        for kind, n in usage.redactions.items():
            if n > 0:
                self._child(self.judge_redactions, value("kind", kind)).inc(n)
        if usage.abandoned > 0:
            self._child(self.judge_abandoned, scorer_v).inc(usage.abandoned)

    def set_judge_up(self, judge: str, up: bool) -> None:
        """Whether ``judge`` answered this process's last call."""
        self._child(self.judge_up, self.policy.value("judge", judge)).set(1 if up else 0)

    def set_golden(self, scores: Mapping[str, float], drift: Mapping[str, float]) -> None:
        """A golden run's mean score and drift per metric."""
        for metric, value in scores.items():
            self._child(self.golden_score, metric).set(value)
        for metric, value in drift.items():
            self._child(self.golden_drift, metric).set(value)

    def set_golden_accuracy(self, accuracy: Sequence[LabelAccuracy]) -> None:
        """A golden run's accuracy against the labels, per scorer and metric."""
        for a in accuracy:
            self._child(self.golden_accuracy, self.policy.value("scorer", a.scorer),
                        a.metric).set(a.accuracy)

    def observe_golden_run(self, result: str) -> None:
        """A golden-set run ended: ``ok``, or ``error`` (the judge raised, the store failed,
        or no metric of any item came back ``ok``); any other word counts as ``error``."""
        self._child(self.golden_runs, "ok" if result == "ok" else "error").inc()
