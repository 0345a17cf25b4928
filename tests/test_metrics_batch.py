"""The batch writers must record exactly what one observe()/inc() per value would.

They write histogram buckets in bulk through prometheus_client internals
(:meth:`metrics.recorder.Recorder._observe_many`); this test is what pins that to observe()'s
behaviour (and why pyproject caps prometheus-client's version). The reference side writes each
value on its own, straight to the families, with the same rules.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from evaluator.config import MetricsConfig
from evaluator.records import LogRecord
from evaluator.scorers.base import MetricResult, Outcome
from evaluator.verdicts import NewScore, RunVerdict, Verdicts, is_quality_failure
from metrics.registry import Metrics


def samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in m.registry.collect():
        for s in family.samples:
            if s.name.endswith("_created") or s.name == "groundwatch_build_info":
                continue
            out[(s.name, tuple(sorted(s.labels.items())))] = round(s.value, 9)
    return out


def one_by_one(m: Metrics, records: list[LogRecord], scores: list[NewScore], now: float) -> None:
    """The reference: every value written on its own."""
    sampler, scoring, value = m.sampler, m.scoring, m.policy.value
    for record in records:
        sampler.logs_seen.labels("app").inc()
        key = (value("route", record.route), value("model", record.model))
        sampler.app_requests.labels(*key).inc()
        if record.status == "error" or (record.status is None and record.error):
            sampler.app_errors.labels(*key).inc()
        if record.latency_ms is not None and record.latency_ms >= 0:
            sampler.app_latency.labels(*key).observe(record.latency_ms / 1000.0)
        if record.cost_usd is not None and record.cost_usd > 0:
            sampler.app_cost.labels(*key).inc(record.cost_usd)
    for s in scores:
        r = s.result
        scoring.score_outcomes.labels(r.metric, "lexical", r.outcome.value).inc()
        if r.outcome is Outcome.OK and r.value is not None:
            route = value("route", s.route)
            scoring.score.labels(r.metric, "lexical", route, value("model", s.model)).observe(
                r.value)
            if s.quality_failure:
                scoring.quality_failures.labels(r.metric, "lexical", route).inc()
            scoring.last_score_timestamp.set(now)
        if s.log_timestamp is not None:
            scoring.eval_lag.observe(max(0.0, now - s.log_timestamp.timestamp()))
    for _ in range(7):
        scoring.scorer_latency.labels("lexical").observe(0.37 / 7)
    for route, rule in [("a", "default"), ("b", "x"), ("a", "default")]:
        sampler.items_sampled.labels(value("route", route), rule).inc()


def test_batch_writers_equal_item_writers() -> None:
    rng = random.Random(3)
    config = MetricsConfig(labels=["route", "model"])
    one, many = Metrics(config, multiprocess=False), Metrics(config, multiprocess=False)
    now = datetime.now(UTC).timestamp()
    records, scores = [], []
    thresholds = {"faithfulness": 0.5, "groundedness": 0.4}
    for i in range(300):
        route, model = rng.choice(["a", "b", None]), rng.choice(["m1", "m2"])
        records.append(LogRecord(
            f"r{i}", datetime.now(UTC) - timedelta(seconds=rng.uniform(0, 900)), "q", ("c",),
            "a", route=route, model=model, latency_ms=rng.choice([None, rng.uniform(1, 9000)]),
            status=rng.choice(["ok", "error", None]), cost_usd=rng.choice([None, 0.001])))
        for j, metric in enumerate(("faithfulness", "groundedness", "answer_relevance")):
            kind = rng.random()
            result = (MetricResult.ok(metric, rng.choice([0.0, 0.3, 0.5, 1.0, rng.random()]))
                      if kind < 0.8 else MetricResult.not_applicable(metric, "refusal")
                      if kind < 0.9 else MetricResult.error(metric, "timeout"))
            scores.append(NewScore(route, model, result,
                                   is_quality_failure(result, thresholds.get(metric)),
                                   records[-1].timestamp if j == 0 else None))

    one_by_one(one, records, scores, now)

    many.sampler.observe_logs(records, source="app")
    many.scoring.observe_written(
        Verdicts((RunVerdict("lexical", 0.37, 7, tuple(scores)),), (), ()), now=now)
    many.sampler.observe_sampled([("a", "default"), ("b", "x"), ("a", "default")])

    got, want = samples(many), samples(one)
    assert got == want
    assert any(k[0] == "groundwatch_score_bucket" for k in want)
