"""The metrics package: label policy, the import-order rule, the Metrics methods, and the
multiprocess aggregation across real processes (scraped through the exporter over HTTP)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from evaluator.config import MetricsConfig
from evaluator.records import LogRecord
from evaluator.scorers.base import (
    Detection,
    ItemResult,
    MetricResult,
    NotJudged,
    ScoredBatch,
    ScorerRun,
    Usage,
    Written,
)
from evaluator.verdicts import Verdicts, is_quality_failure
from metrics.exporter import Exporter
from metrics.labels import OTHER, LabelPolicy
from metrics.multiprocess import ENV_VAR
from metrics.registry import Metrics
from metrics.scoring import SCORE_BUCKETS
from tests.prom_helpers import MetricsProcess

ROOT = Path(__file__).resolve().parent.parent

# --- label policy -------------------------------------------------------------------------


def test_optional_labels_are_empty_unless_allowed() -> None:
    policy = LabelPolicy(["route"], max_values=10, fixed_values={})
    assert policy.value("route", "chat") == "chat"
    assert policy.value("model", "gpt-4o") == ""
    assert LabelPolicy([], 10, {}).value("route", "chat") == ""
    # Labels that are not optional are always filled.
    assert policy.value("reason", "wrong_type") == "wrong_type"


def test_none_and_long_values() -> None:
    policy = LabelPolicy(["route", "model"], max_values=10, fixed_values={})
    assert policy.value("route", None) == "none"
    long = "x" * 200
    assert policy.value("model", long) == "x" * 64


def test_cap_turns_newcomers_into_other() -> None:
    policy = LabelPolicy(["route"], max_values=3, fixed_values={})
    assert [policy.value("route", r) for r in ("a", "b", "c", "d", "a", "e")] == [
        "a", "b", "c", OTHER, "a", OTHER]
    assert policy.distinct_values("route") == {"a", "b", "c"}
    # Each label has its own cap.
    assert policy.value("reason", "d") == "d"
    # Values cut to the same 64 characters are one value.
    policy2 = LabelPolicy(["route"], max_values=1, fixed_values={})
    assert policy2.value("route", "p" * 64 + "1") == "p" * 64
    assert policy2.value("route", "p" * 64 + "2") == "p" * 64


def test_fixed_values_only_those_pass() -> None:
    policy = LabelPolicy(["route", "model"], max_values=1,
                         fixed_values={"route": ["chat", "search", "faq"]})
    assert [policy.value("route", r) for r in ("chat", "search", "faq", "admin")] == [
        "chat", "search", "faq", OTHER]
    assert policy.value("route", None) == "none"
    # The cap does not apply to a fixed label, and still applies to the others.
    assert policy.value("model", "m1") == "m1"
    assert policy.value("model", "m2") == OTHER


def test_policy_from_config() -> None:
    config = MetricsConfig(labels=["model"], max_label_values=2,
                           label_values={"route": ["chat"]})
    policy = LabelPolicy.from_config(config)
    assert policy.value("route", "chat") == ""  # route is not switched on
    assert [policy.value("model", m) for m in "abc"] == ["a", "b", OTHER]


def test_unknown_optional_label_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown optional labels"):
        LabelPolicy(["user"], max_values=1, fixed_values={})


def test_policy_is_thread_safe() -> None:
    policy = LabelPolicy(["route"], max_values=50, fixed_values={})
    results: list[list[str]] = []
    barrier = threading.Barrier(8)

    def worker(offset: int) -> None:
        barrier.wait()
        results.append([policy.value("route", f"r{(i * 7 + offset) % 400}") for i in range(2000)])

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    admitted = {v for r in results for v in r} - {OTHER}
    assert len(admitted) == 50
    assert policy.distinct_values("route") == admitted


# --- the import-order rule (each case in a fresh interpreter) ------------------------------


def _python(code: str, *env: tuple[str, str]) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    environ.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=environ, timeout=60, check=False)


def test_importing_metrics_does_not_import_prometheus_client() -> None:
    done = _python("import sys, metrics, metrics.registry, metrics.exporter, metrics.labels, "
                   "metrics.multiprocess, metrics.sampler, metrics.scoring, metrics.judge, "
                   "metrics.health, metrics.recorder\n"
                   "assert 'prometheus_client' not in sys.modules, 'imported too early'")
    assert done.returncode == 0, done.stderr


def test_setup_after_prometheus_client_import_raises(tmp_path: Path) -> None:
    done = _python("import prometheus_client\n"
                   "from metrics.multiprocess import setup_multiprocess\n"
                   f"setup_multiprocess({str(tmp_path)!r}, clean=False)")
    assert done.returncode != 0
    assert "RuntimeError: prometheus_client was imported before" in done.stderr


def test_metrics_without_setup_raises() -> None:
    done = _python("from evaluator.config import MetricsConfig\n"
                   "from metrics.registry import Metrics\n"
                   "Metrics(MetricsConfig())")
    assert done.returncode != 0
    assert "RuntimeError: Metrics(multiprocess=True) needs" in done.stderr


def test_switching_directory_raises(tmp_path: Path) -> None:
    done = _python("from evaluator.config import MetricsConfig\n"
                   "from metrics.multiprocess import setup_multiprocess\n"
                   "from metrics.registry import Metrics\n"
                   f"setup_multiprocess({str(tmp_path / 'a')!r}, clean=False)\n"
                   "Metrics(MetricsConfig())\n"
                   f"setup_multiprocess({str(tmp_path / 'b')!r}, clean=False)")
    assert done.returncode != 0
    assert "cannot switch" in done.stderr


def test_env_var_set_before_start_is_accepted(tmp_path: Path) -> None:
    # A container may set PROMETHEUS_MULTIPROC_DIR itself; setup_multiprocess then agrees with it.
    done = _python("import prometheus_client\n"
                   "from evaluator.config import MetricsConfig\n"
                   "from metrics.multiprocess import setup_multiprocess, multiprocess_dir\n"
                   "from metrics.registry import Metrics\n"
                   f"setup_multiprocess({str(tmp_path)!r}, clean=False)\n"
                   "m = Metrics(MetricsConfig()); m.sampler.observe_unmapped('wrong_type')\n"
                   f"assert multiprocess_dir() == {str(tmp_path)!r}",
                   (ENV_VAR, str(tmp_path)))
    assert done.returncode == 0, done.stderr
    assert list(tmp_path.glob("counter_*.db"))


def test_clean_wipes_only_db_files(tmp_path: Path) -> None:
    (tmp_path / "counter_999999.db").write_bytes(b"stale")
    (tmp_path / "keep.txt").write_text("not ours")
    done = _python("from metrics.multiprocess import setup_multiprocess\n"
                   f"setup_multiprocess({str(tmp_path)!r}, clean=True)")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


# --- Metrics methods, in-process (multiprocess=False) --------------------------------------


@pytest.fixture
def local_metrics(monkeypatch: pytest.MonkeyPatch) -> Iterator[Metrics]:
    """A single-process Metrics; skipped if this pytest process was put in multiprocess mode."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    from prometheus_client import values

    if getattr(values.ValueClass, "_multiprocess", False):
        pytest.skip("prometheus_client was imported with PROMETHEUS_MULTIPROC_DIR set")
    yield Metrics(MetricsConfig(labels=["route"], max_label_values=5), multiprocess=False)


def _record(**kw: object) -> LogRecord:
    base: dict[str, object] = dict(request_id="r", timestamp=datetime.fromtimestamp(1000, UTC),
                                   question="q", contexts=(), answer="a")
    base.update(kw)
    return LogRecord(**base)  # type: ignore[arg-type]


def test_observe_logs_app_metrics(local_metrics: Metrics) -> None:
    m = local_metrics
    get = m.registry.get_sample_value
    m.sampler.observe_logs([_record(route="chat", model="gpt", latency_ms=1500, cost_usd=0.5),
                            _record(route="chat", error="boom")])
    m.sampler.observe_logs([_record(route="chat", status="error", cost_usd=-1.0)], "shipped")
    m.sampler.observe_logs([])  # an empty read counts nothing
    labels = {"route": "chat", "model": ""}  # model is not switched on
    assert get("groundwatch_logs_seen_total", {"source": "app"}) == 2
    assert get("groundwatch_logs_seen_total", {"source": "shipped"}) == 1
    assert get("groundwatch_app_requests_total", labels) == 3
    # An error is status "error", or an error message with no status.
    assert get("groundwatch_app_errors_total", labels) == 2
    assert get("groundwatch_app_cost_usd_total", labels) == 0.5  # negative cost skipped
    assert get("groundwatch_app_latency_seconds_count", labels) == 1
    assert get("groundwatch_app_latency_seconds_sum", labels) == 1.5


def _batch(scorer: str, results: dict[str, tuple[MetricResult, ...]], route: str = "chat",
           detections: tuple[Detection, ...] = ()) -> tuple[ScoredBatch, list[Written]]:
    """One run of ``scorer`` over one record per request id, every result newly written."""
    records = tuple(_record(request_id=rid, route=route, model="gpt") for rid in results)
    run = ScorerRun(scorer, "1", tuple(ItemResult(rid, ms, detections=detections)
                                       for rid, ms in results.items()))
    return ScoredBatch(records, (run,)), [Written(scorer, rid, r)
                                          for rid, ms in results.items() for r in ms]


def test_quality_failure_is_an_ok_value_strictly_below_its_threshold() -> None:
    assert is_quality_failure(MetricResult.ok("faithfulness", 0.3), 0.5)
    assert not is_quality_failure(MetricResult.ok("faithfulness", 0.5), 0.5)
    assert not is_quality_failure(MetricResult.ok("faithfulness", 0.1), None)  # no threshold
    assert not is_quality_failure(MetricResult.not_applicable("faithfulness", "no claims"), 0.5)
    assert not is_quality_failure(MetricResult.error("faithfulness", "timeout"), 0.5)


def test_observe_written_outcomes_threshold_and_lag(local_metrics: Metrics) -> None:
    m = local_metrics
    get = m.registry.get_sample_value
    batch, written = _batch("lexical", {
        "r0": (MetricResult.ok("faithfulness", 0.3),),
        "r1": (MetricResult.ok("faithfulness", 0.5),),
        "r2": (MetricResult.ok("groundedness", 0.1),),  # no threshold: never a failure
        "r3": (MetricResult.not_applicable("faithfulness", "no claims"),),
        "r4": (MetricResult.error("faithfulness", "timeout"),)})
    m.scoring.observe_written(Verdicts.of(batch, written, {"faithfulness": 0.5}), now=1030.0)
    outcome = {"metric": "faithfulness", "scorer": "lexical"}
    assert get("groundwatch_score_outcomes_total", {**outcome, "outcome": "ok"}) == 2
    assert get("groundwatch_score_outcomes_total", {**outcome, "outcome": "not_applicable"}) == 1
    assert get("groundwatch_score_outcomes_total", {**outcome, "outcome": "error"}) == 1
    score = {"metric": "faithfulness", "scorer": "lexical", "route": "chat", "model": ""}
    assert get("groundwatch_score_count", score) == 2  # ok outcomes only
    assert get("groundwatch_score_bucket", {**score, "le": "0.3"}) == 1
    # 0.3 < 0.5 fails; 0.5 is not below 0.5; no threshold means no failure.
    assert get("groundwatch_quality_failures_total",
               {"metric": "faithfulness", "scorer": "lexical", "route": "chat"}) == 1
    assert get("groundwatch_quality_failures_total",
               {"metric": "groundedness", "scorer": "lexical", "route": "chat"}) is None
    assert get("groundwatch_eval_lag_seconds_count") == 5  # once per item, whatever the outcome
    assert get("groundwatch_eval_lag_seconds_sum") == 5 * 30
    assert get("groundwatch_last_score_timestamp_seconds") == 1030.0
    # A batch with no ok score does not move the newest score's time.
    batch, written = _batch("lexical", {
        "r5": (MetricResult.not_applicable("faithfulness", "no claims"),)})
    m.scoring.observe_written(Verdicts.of(batch, written, {"faithfulness": 0.5}), now=1100.0)
    assert get("groundwatch_last_score_timestamp_seconds") == 1030.0
    # What the store did not newly write (a re-delivered batch) counts nothing.
    m.scoring.observe_written(Verdicts.of(batch, [], {"faithfulness": 0.5}), now=1200.0)
    assert get("groundwatch_eval_lag_seconds_count") == 6


def test_observe_written_counts_lag_and_detections_once_per_item(
        local_metrics: Metrics) -> None:
    m = local_metrics
    get = m.registry.get_sample_value
    metrics = tuple(MetricResult.ok(x, 0.9) for x in (
        "faithfulness", "groundedness", "answer_relevance", "context_relevance"))
    detections = (Detection("refusal"), Detection("out_of_scope"))
    batch, written = _batch("embedded", {"r": metrics}, route="faq", detections=detections)
    # A second scorer that found the same failure modes in the same item.
    judge = ScorerRun("compact", "1", (ItemResult("r", metrics, detections=detections),))
    batch = ScoredBatch(batch.records, (*batch.runs, judge))
    written += [Written("compact", "r", r) for r in metrics]
    m.scoring.observe_written(Verdicts.of(batch, written, {"faithfulness": 0.95}), now=1010.0)
    assert get("groundwatch_eval_lag_seconds_count") == 1
    assert get("groundwatch_eval_lag_seconds_sum") == 10
    assert get("groundwatch_quality_failures_total",
               {"metric": "faithfulness", "scorer": "embedded", "route": "faq"}) == 1
    assert get("groundwatch_detections_total", {"kind": "refusal", "route": "faq"}) == 1
    assert get("groundwatch_detections_total", {"kind": "out_of_scope", "route": "faq"}) == 1


def test_quality_failures_are_counted_per_scorer_in_a_cascade(local_metrics: Metrics) -> None:
    """The judge's failures are its own series: the quality alerts read the cheap scorer's,
    which scores every item, and leave out the judge's picks (docs/alerts.md)."""
    m = local_metrics
    get = m.registry.get_sample_value
    records = tuple(_record(request_id=f"r{i}", route="chat") for i in range(4))
    cheap = ScorerRun("lexical", "1", tuple(
        ItemResult(r.request_id, (MetricResult.ok("faithfulness", v),))
        for r, v in zip(records, (0.2, 0.9, 0.9, 0.9), strict=True)))
    # The judge got the low item and one random pick, and fails both.
    judge = ScorerRun("compact", "1", tuple(
        ItemResult(rid, (MetricResult.ok("faithfulness", 0.1),)) for rid in ("r0", "r1")),
        selection={"r0": "low", "r1": "random"})
    batch = ScoredBatch(records, (cheap, judge))
    written = [Written(run.scorer, item.request_id, item.metrics[0])
               for run in batch.runs for item in run.items]
    m.scoring.observe_written(Verdicts.of(batch, written, {"faithfulness": 0.5}), now=1010.0)
    for scorer, failed, scored in (("lexical", 1, 4), ("compact", 2, 2)):
        assert get("groundwatch_quality_failures_total",
                   {"metric": "faithfulness", "scorer": scorer, "route": "chat"}) == failed
        assert get("groundwatch_score_count", {"metric": "faithfulness", "scorer": scorer,
                                               "route": "chat", "model": ""}) == scored


def test_cascade_agreement_on_the_random_share(local_metrics: Metrics) -> None:
    """Only the judge's random picks are compared (the low and band picks would bias it), on
    the side of the threshold (0.5 for a metric without one), for newly written scores."""
    m = local_metrics
    get = m.registry.get_sample_value
    records = tuple(_record(request_id=f"r{i}", route="chat" if i != 1 else "search")
                    for i in range(4))
    cheap = ScorerRun("lexical", "1", tuple(
        ItemResult(r.request_id, (MetricResult.ok("faithfulness", v),
                                  MetricResult.ok("groundedness", v)))
        for r, v in zip(records, (0.6, 0.6, 0.2, 0.6), strict=True)))
    judge = ScorerRun("compact", "1", tuple(
        ItemResult(rid, (MetricResult.ok("faithfulness", v), MetricResult.ok("groundedness", v)))
        for rid, v in (("r0", 0.9), ("r1", 0.3), ("r2", 0.1), ("r3", 0.1))),
        selection={"r0": "random", "r1": "random", "r2": "low", "r3": "random"})
    batch = ScoredBatch(records, (cheap, judge))
    written = [Written(run.scorer, item.request_id, mr) for run in batch.runs
               for item in run.items for mr in item.metrics
               if (run.scorer, item.request_id) != ("compact", "r3")]  # r3: written before
    m.scoring.observe_written(Verdicts.of(batch, written, {"faithfulness": 0.7}), now=1010.0)
    compared = "groundwatch_cascade_compared_total"
    # faithfulness (threshold 0.7): r0 (chat) 0.6/0.9 disagree, r1 (search) 0.6/0.3 agree.
    assert get(compared, {"metric": "faithfulness", "route": "search", "agree": "yes"}) == 1
    assert get(compared, {"metric": "faithfulness", "route": "chat", "agree": "no"}) == 1
    # groundedness (no threshold: 0.5): r0 0.6/0.9 agree, r1 0.6/0.3 disagree.
    assert get(compared, {"metric": "groundedness", "route": "chat", "agree": "yes"}) == 1
    assert get(compared, {"metric": "groundedness", "route": "search", "agree": "no"}) == 1
    assert get(compared, {"metric": "groundedness", "route": "chat", "agree": "no"}) is None
    diff = {"metric": "faithfulness"}
    assert get("groundwatch_cascade_abs_diff_count", diff) == 2
    assert round(get("groundwatch_cascade_abs_diff_sum", diff) or 0.0, 9) == 0.6


def test_usage_of_a_batch(local_metrics: Metrics) -> None:
    m = local_metrics
    get = m.registry.get_sample_value
    usage = Usage(prompt_tokens=100, completion_tokens=20, cost_usd=0.25, truncations=2,
                  cache_hits=3, judge_statuses={"rate_limited": 1, "ok": 0},
                  redactions={"email": 2},
                  not_judged={NotJudged.BUDGET: 3, NotJudged.CIRCUIT_OPEN: 1})
    run = ScorerRun("compact", "1", (), usage + Usage(cost_usd=-1.0), {"r0": "low"})
    batch = ScoredBatch((), (run,))
    m.observe_usage(batch)
    assert get("groundwatch_scorer_truncations_total", {"scorer": "compact"}) == 2
    assert get("groundwatch_scorer_cache_lookups_total",
               {"scorer": "compact", "result": "hit"}) == 3
    assert get("groundwatch_scorer_cache_lookups_total",
               {"scorer": "compact", "result": "miss"}) is None  # nothing to count
    shared = ScorerRun("embedded", "1", (), Usage(shared_cache_hits=4, shared_cache_misses=1,
                                                  shared_cache_errors=2), {})
    m.observe_usage(ScoredBatch((), (shared,)))
    for result, n in (("hit", 4), ("miss", 1), ("error", 2)):
        assert get("groundwatch_scorer_shared_cache_lookups_total",
                   {"scorer": "embedded", "result": result}) == n
    assert get("groundwatch_judge_requests_total", {"status": "rate_limited"}) == 1
    assert get("groundwatch_judge_requests_total", {"status": "ok"}) is None
    assert get("groundwatch_judge_tokens_total", {"kind": "prompt"}) == 100
    assert get("groundwatch_judge_tokens_total", {"kind": "completion"}) == 20
    assert get("groundwatch_judge_cost_usd_total") == 0  # -0.75 in all: a negative is skipped
    assert get("groundwatch_judge_redactions_total", {"kind": "email"}) == 2
    assert get("groundwatch_judge_not_judged_total",
               {"judge": "compact", "reason": "budget"}) == 3
    assert get("groundwatch_judge_not_judged_total",
               {"judge": "compact", "reason": "circuit_open"}) == 1
    # Items not judged for a spent budget are also the budget's count.
    assert get("groundwatch_budget_exhausted_total") == 3
    assert get("groundwatch_cascade_picked_total", {"reason": "low"}) == 1
    m.judge.observe_usage(ScoredBatch((), (ScorerRun("compact", "1", (), Usage(cost_usd=0.25)),)))
    assert get("groundwatch_judge_cost_usd_total") == 0.25


def test_other_methods(local_metrics: Metrics) -> None:
    m = local_metrics
    get = m.registry.get_sample_value
    batch = ScoredBatch((), (ScorerRun("embedded", "1", tuple(
        ItemResult(f"r{i}", ()) for i in range(4)), Usage(latency_s=1.0)),
        ScorerRun("lexical", "1", (), Usage(latency_s=1.0))))  # no items: no latency
    m.scoring.observe_written(Verdicts.of(batch, [], {}), now=1000.0)
    assert get("groundwatch_scorer_latency_seconds_count", {"scorer": "embedded"}) == 4
    assert get("groundwatch_scorer_latency_seconds_sum", {"scorer": "embedded"}) == 1.0
    assert get("groundwatch_scorer_latency_seconds_count", {"scorer": "lexical"}) is None
    m.sampler.observe_sampled((route, "default") for route in ("a", "b", "c", "d", "e", "f", "g"))
    assert get("groundwatch_items_sampled_total", {"route": "other", "rule": "default"}) == 2
    m.sampler.observe_unmapped("wrong_type")
    m.scoring.observe_task_failure("unparseable")
    m.scoring.observe_task_retry("timeout")
    m.sampler.observe_enqueue_error()
    m.sampler.observe_config_reload(False)
    m.judge.set_judge_up("ragas", True)
    assert get("groundwatch_items_rejected_total", {"reason": "wrong_type"}) == 1
    assert get("groundwatch_logs_seen_total", {"source": "app"}) == 1  # seen, not mapped
    assert get("groundwatch_task_failures_total", {"kind": "unparseable"}) == 1
    assert get("groundwatch_task_retries_total", {"kind": "timeout"}) == 1
    assert get("groundwatch_enqueue_errors_total") == 1
    assert get("groundwatch_config_reloads_total", {"result": "error"}) == 1
    assert get("groundwatch_config_reloads_total", {"result": "ok"}) == 0  # pre-created
    assert get("groundwatch_judge_tokens_total", {"kind": "prompt"}) == 0  # pre-created
    assert get("groundwatch_judge_up", {"judge": "ragas"}) == 1


def test_build_info_and_bucket_choice(local_metrics: Metrics) -> None:
    m = local_metrics
    samples = [s for f in m.registry.collect() for s in f.samples
               if s.name == "groundwatch_build_info"]
    assert len(samples) == 1 and samples[0].value == 1
    assert samples[0].labels["version"] and samples[0].labels["python"]
    assert SCORE_BUCKETS[-1] == 1.0 and len(SCORE_BUCKETS) == 10


def test_two_metrics_objects_in_one_process(local_metrics: Metrics) -> None:
    # No global registry: a second instance does not collide with the first.
    Metrics(MetricsConfig(), multiprocess=False)


def test_every_metric_is_documented(local_metrics: Metrics) -> None:
    doc = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"`(groundwatch_[a-z_]+)`", doc))
    defined = set()
    for family in local_metrics.registry.collect():
        suffix = "_total" if family.type == "counter" else ""
        defined.add(family.name + suffix)
    defined |= {"groundwatch_queue_depth", "groundwatch_oldest_unscored_age_seconds",
                "groundwatch_exporter_collect_errors_total"}
    assert defined - documented == set()
    assert documented - defined == set()


def test_every_metric_has_its_documented_labels(local_metrics: Metrics) -> None:
    """The labels column of docs/metrics.md names exactly each metric's labels, in order
    (``result = hit \\| miss``: the name before ``=`` is the label)."""
    from prometheus_client.metrics import MetricWrapperBase

    doc = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    documented = {}
    for row in re.findall(r"^\| `(groundwatch_[a-z_]+)` \|(.*)$", doc, re.M):
        name, rest = row
        cells = re.split(r"(?<!\\)\|", rest)
        documented[name] = tuple(part.split("=")[0].strip()
                                 for part in cells[1].split(",") if part.strip())
    checked = 0
    m = local_metrics
    for metric in (v for recorder in (m.sampler, m.scoring, m.judge, m.health)
                   for v in vars(recorder).values()):
        if isinstance(metric, MetricWrapperBase):
            name = metric._name + ("_total" if metric._type == "counter" else "")
            assert documented[name] == tuple(metric._labelnames), name
            checked += 1
    assert checked > 30


# --- multiprocess aggregation across real processes ---------------------------------------


def _scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=5).text
    return {(s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def _value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
           **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def _series(samples: dict[tuple[str, frozenset[tuple[str, str]]], float],
            name: str) -> list[float]:
    return [v for (n, _), v in samples.items() if n == name]


def test_processes_aggregate_and_survive_restarts(tmp_path: Path) -> None:
    directory = tmp_path / "prom"
    config = {"labels": ["route"]}
    a, b, c = (MetricsProcess(directory, config) for _ in range(3))
    d: MetricsProcess | None = None
    try:
        a.call("log", n=3, route="chat", latency_ms=200)
        a.call("result", metric="faithfulness", scorer="lexical", value=0.3, threshold=0.5,
               route="chat", model="gpt", now=2000.0)
        a.call("judge.set_judge_up", judge="ragas", up=True)
        b.call("log", n=4, route="search", status="error")
        b.call("result", metric="faithfulness", scorer="lexical", value=0.9, threshold=0.5,
               route="chat", now=1000.0)
        b.call("judge.set_judge_up", judge="ragas", up=False)
        c.call("log", n=5, route="chat")
        c.call("latency", scorer="lexical", seconds=0.5, n_items=5)

        with Exporter(directory, "127.0.0.1", 0) as exporter:
            s = _scrape(exporter.url)
            assert _value(s, "groundwatch_logs_seen_total", source="app") == 12
            assert _value(s, "groundwatch_app_requests_total", route="chat", model="") == 8
            assert _value(s, "groundwatch_app_errors_total", route="search", model="") == 4
            score = {"metric": "faithfulness", "scorer": "lexical", "route": "chat", "model": ""}
            assert _value(s, "groundwatch_score_count", **score) == 2
            assert _value(s, "groundwatch_score_bucket", **score, le="0.3") == 1
            assert _value(s, "groundwatch_quality_failures_total",
                          metric="faithfulness", scorer="lexical", route="chat") == 1
            assert _value(s, "groundwatch_scorer_latency_seconds_count", scorer="lexical") == 5
            assert _value(s, "groundwatch_judge_up", judge="ragas") == 1  # livemax over a, b
            assert _value(s, "groundwatch_last_score_timestamp_seconds") == 2000.0  # max
            assert _series(s, "groundwatch_build_info") == [1.0]  # one series, no pid label

            # "Restart" a: it exits (marking itself dead), a new process takes over.
            a.exit()
            d = MetricsProcess(directory, config)
            d.call("log", n=2, route="chat")
            s = _scrape(exporter.url)
            assert _value(s, "groundwatch_logs_seen_total", source="app") == 14  # not reset
            assert _value(s, "groundwatch_score_count", **score) == 2
            assert _value(s, "groundwatch_judge_up", judge="ragas") == 0  # a's 1 is gone
            assert _value(s, "groundwatch_last_score_timestamp_seconds") == 2000.0  # kept
            assert _series(s, "groundwatch_build_info") == [1.0]

            # Every process gone: live gauges disappear, totals stay.
            for proc in (b, c, d):
                proc.exit()
            s = _scrape(exporter.url)
            assert _value(s, "groundwatch_logs_seen_total", source="app") == 14
            assert _series(s, "groundwatch_judge_up") == []
            assert _series(s, "groundwatch_build_info") == []
    finally:
        for leftover in (a, b, c, d):
            if leftover is not None:
                leftover.close()
