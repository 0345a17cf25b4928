"""The per-batch metric writers must record exactly what the per-item ones do.

They write histogram buckets in bulk through prometheus_client internals; this test is what
pins that to observe()'s behaviour (and why pyproject caps prometheus-client's version).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from evaluator.config import MetricsConfig
from evaluator.records import LogRecord
from evaluator.scorers.base import MetricResult
from metrics.registry import Metrics


def samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in m.registry.collect():
        for s in family.samples:
            if s.name.endswith("_created") or s.name == "groundwatch_build_info":
                continue
            out[(s.name, tuple(sorted(s.labels.items())))] = round(s.value, 9)
    return out


def test_batch_writers_equal_item_writers() -> None:
    rng = random.Random(3)
    config = MetricsConfig(labels=["route", "model"])
    one, many = Metrics(config, multiprocess=False), Metrics(config, multiprocess=False)
    now = datetime.now(UTC).timestamp()
    records, rows = [], []
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
            rows.append((route, model, result, records[-1].timestamp if j == 0 else None))
    thresholds = {"faithfulness": 0.5, "groundedness": 0.4}

    for record in records:
        one.observe_log(record, source="app")
    for route, model, result, ts in rows:
        one.observe_result(route, model, "lexical", result, thresholds.get(result.metric), ts,
                           now)
    one.observe_scorer_latency("lexical", 0.37, 7)
    for route, rule in [("a", "default"), ("b", "x"), ("a", "default")]:
        one.observe_sampled(route, rule)

    many.observe_logs(records, source="app")
    many.observe_results_batch(rows, "lexical", thresholds, now)
    many.observe_scorer_latency("lexical", 0.37, 7)
    many.observe_sampled_many([("a", "default"), ("b", "x"), ("a", "default")])

    got, want = samples(many), samples(one)
    assert got == want
    assert any(k[0] == "groundwatch_score_bucket" for k in want)
