"""The Grafana dashboard: generated, committed fresh, and consistent with the alerts.

Grafana does not run here; tests/test_prometheus_e2e.py evaluates every panel query on a real
Prometheus. These tests check the file itself: it is what the generator writes, its variables
and data source are the documented ones, its lines are the alerts' numbers, every query is
valid PromQL (promtool), and the provider that loads it points where docker-compose mounts it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from metrics.alerts import build, load_alerts
from metrics.alerts.config import REPO_ROOT
from metrics.alerts.rules import JUDGE, NOT_JUDGE
from metrics.dashboard import (
    DASHBOARD_PATH,
    concrete,
    dashboard_json,
    main,
    panel_queries,
)

COMMITTED = REPO_ROOT / DASHBOARD_PATH
PROVIDER = REPO_ROOT / "configs/grafana/provisioning/dashboards/groundwatch.yml"
UID = "groundwatch-prometheus"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return dict(json.loads(COMMITTED.read_text(encoding="utf-8")))


def _panels(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in document["panels"] if p["type"] != "row"]


def test_committed_dashboard_is_what_the_generator_writes() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == dashboard_json(), \
        "configs/grafana/dashboards/groundwatch.json is stale: run `make dashboard`"
    assert main(["generate", "--check"]) == 0


def test_check_fails_on_a_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--out", str(tmp_path), "--check"]) == 1  # missing
    assert main(["generate", "--out", str(tmp_path)]) == 0
    assert main(["generate", "--out", str(tmp_path), "--check"]) == 0
    path = tmp_path / DASHBOARD_PATH
    path.write_text(path.read_text().replace('"groundwatch"', '"edited by hand"', 1))
    assert main(["generate", "--out", str(tmp_path), "--check"]) == 1
    assert "make dashboard" in capsys.readouterr().err


def test_variables_route_and_metric_from_the_score_histogram(document: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in document["templating"]["list"]}
    for name in ("route", "metric"):
        v = variables[name]
        assert v["type"] == "query"
        assert v["query"]["query"] == f"label_values(groundwatch_score_count, {name})"
        assert v["multi"] is True and v["includeAll"] is True
        assert v["allValue"] == ".*"  # All also matches series without the label
        assert v["datasource"]["uid"] == UID
    config = load_alerts()
    window = variables["window"]
    assert window["type"] == "interval"
    assert window["current"]["value"] == "1h" == \
        f"{config.alerts.GroundwatchQualityMeanLow.window // 3600}h"


def test_every_panel_and_target_uses_the_provisioned_data_source(
        document: dict[str, Any]) -> None:
    panels = _panels(document)
    assert len(panels) >= 30
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": UID}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == UID
    ids = [p["id"] for p in document["panels"]]
    assert len(ids) == len(set(ids))
    titles = [p["title"] for p in panels]
    assert len(titles) == len(set(titles))


def test_the_asked_for_views_are_there(document: dict[str, Any]) -> None:
    """Each view the issue asks for, by the metric its queries read."""
    text = "\n".join(expr for _, _, expr in panel_queries(document))
    for family in (
            "groundwatch_score_sum", "groundwatch_score_bucket", "groundwatch_quality_failures_total",
            "groundwatch_logs_seen_total", "groundwatch_items_sampled_total",
            "groundwatch_items_rejected_total", "groundwatch_items_capped_total",
            "groundwatch_fields_dropped_total", "groundwatch_source_late_rows_total",
            "groundwatch_source_unplaceable_rows", "groundwatch_source_missed_rows",
            "groundwatch_detections_total", "groundwatch_scorer_latency_seconds_bucket",
            "groundwatch_score_outcomes_total", "groundwatch_judge_requests_total",
            "groundwatch_judge_tokens_total", "groundwatch_judge_cost_usd_total",
            "groundwatch_judge_up", "groundwatch_budget_exhausted_total",
            "groundwatch_judge_not_judged_total", "groundwatch_judge_redactions_total",
            "groundwatch_cascade_picked_total", "groundwatch_cascade_compared_total",
            "groundwatch_cascade_abs_diff_bucket", "groundwatch_golden_score",
            "groundwatch_golden_drift",
            "groundwatch_queue_depth", "groundwatch_eval_lag_seconds_bucket",
            "groundwatch_oldest_unscored_age_seconds", "groundwatch_last_score_timestamp_seconds",
            "groundwatch_config_reloads_total", "groundwatch_slow_batches_total",
            "groundwatch_heartbeat_timestamp_seconds", "groundwatch_source_held",
            "groundwatch_app_latency_seconds_bucket", "groundwatch_app_errors_total",
            "groundwatch_app_requests_total", "groundwatch_app_cost_usd_total"):
        assert re.search(rf"\b{family}\b", text), family
    for kind in ("no_relevant_context", "out_of_scope", "refusal", "empty_answer"):
        assert f'kind="{kind}"' in text
    (heat,) = [p for p in _panels(document) if p["type"] == "heatmap"]
    assert heat["repeat"] == "metric"
    assert heat["targets"][0]["format"] == "heatmap"


def _panel(document: dict[str, Any], title: str) -> dict[str, Any]:
    (panel,) = [p for p in _panels(document) if p["title"] == title]
    return panel


def _lines(panel: dict[str, Any]) -> list[float]:
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[0]["value"] is None  # the base colour
    assert panel["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] != "off"
    return [s["value"] for s in steps[1:]]


def test_lines_are_the_alerts_numbers(document: dict[str, Any]) -> None:
    config = load_alerts()
    rules = build(config)
    share = {a.name: a.params.get("share") for a in rules.alerts}
    assert _lines(_panel(document, "Share of scored items below threshold over $window")) == \
        sorted([share["GroundwatchQualityBurnSlow"], share["GroundwatchQualityBurnFast"]])
    assert _lines(_panel(document, "Scored items over $window")) == [config.min_samples]
    assert _lines(_panel(document, "no_relevant_context")) == \
        [share["GroundwatchNoRelevantContextHigh"]]
    assert _lines(_panel(document, "out_of_scope")) == [share["GroundwatchOutOfScopeHigh"]]
    assert _lines(_panel(document, "refusal")) == [share["GroundwatchRefusalsHigh"]]
    assert _lines(_panel(document, "Scorer error share over $window")) == \
        [share["GroundwatchScorerErrors"]]
    assert _lines(_panel(document, "Queue depth")) == [config.alerts.GroundwatchQueueBacklog.above]
    assert _lines(_panel(document, "Oldest unscored item")) == \
        [config.alerts.GroundwatchBacklogAge.above]
    assert _lines(_panel(document, "Newest score age")) == \
        [config.alerts.GroundwatchPipelineStalled.window]
    assert _lines(_panel(document, "Judge error share over $window")) == \
        [share["GroundwatchJudgeErrors"]]
    # Agreement is drawn as 1 - the disagreement share: below the line is what fires.
    assert _lines(_panel(document, "Judge and cheap scorer agree over $window")) == \
        [pytest.approx(1 - share["GroundwatchJudgeDisagreement"])]
    assert _lines(_panel(document, "Golden set: drift from the baseline")) == \
        [rules.alert("GroundwatchGoldenDrift").params["above"]]
    # The mean lines: one constant series per metric with the mean alert's threshold.
    mean = _panel(document, "Mean score over $window")
    drawn = re.findall(r'vector\(([\d.]+)\), "metric", "(\w+)"', mean["targets"][1]["expr"])
    assert {m: float(v) for v, m in drawn} == config.thresholds


def test_quality_panels_read_the_scores_the_alerts_read(document: dict[str, Any]) -> None:
    """The quality row and the score heatmap leave a cascade judge's picks out, as the
    quality alerts do: every score and failure selector names the scorers, and the scored
    count is the alerts' own recorded count (variables at All, the 1h window)."""
    rules = build(load_alerts())
    titles = ("Mean score over $window", "Share of scored items below threshold over $window",
              "Scored items over $window", "Score distribution: $metric")
    for title in titles:
        for target in _panel(document, title)["targets"]:
            selectors = re.findall(r"\bgroundwatch_(?:score|quality_failures)\w*\{([^}]*)\}",
                                   target["expr"])
            if target["expr"].startswith("(label_replace"):  # the mean lines: existence only
                continue
            assert selectors, title
            scorers = [s.split(", ")[0] for s in selectors]
            assert set(scorers) == {NOT_JUDGE, JUDGE}, (title, scorers)
            assert scorers.count(NOT_JUDGE) >= scorers.count(JUDGE), title
    (scored,) = _panel(document, "Scored items over $window")["targets"]
    plain = concrete(scored["expr"], window="1h").replace(', route=~".*", metric=~".*"', "")
    record = next(r for r in rules.records if r.key == "scored:3600")
    assert plain == f"({rules.record_expr(record)})"


def test_lines_follow_the_settings(tmp_path: Path) -> None:
    """Change a number in the alert settings: the dashboard's line moves with it."""
    settings = yaml.safe_load((REPO_ROOT / "configs/alerts.yml").read_text())
    settings["alerts"]["GroundwatchRefusalsHigh"]["share"] = 0.37
    settings["scoring_config"] = str(REPO_ROOT / "configs/groundwatch.toml")
    path = tmp_path / "alerts.yml"
    path.write_text(yaml.safe_dump(settings))
    document = json.loads(dashboard_json(load_alerts(path)))
    assert _lines(_panel(document, "refusal")) == [0.37]


def test_the_judge_row_holds_every_judge_panel(document: dict[str, Any]) -> None:
    """One row for the judge and the cascade, every judge metric read there and nowhere
    else, laid out on whole rows of the grid."""
    rows = [p for p in document["panels"] if p["type"] == "row"]
    assert [r["title"] for r in rows].count("Judge and cascade") == 1
    judge_row = next(r for r in rows if r["title"] == "Judge and cascade")
    after = [r["gridPos"]["y"] for r in rows if r["gridPos"]["y"] > judge_row["gridPos"]["y"]]
    inside = [p for p in _panels(document)
              if judge_row["gridPos"]["y"] < p["gridPos"]["y"] < min(after, default=10**6)]
    judge_families = re.compile(r"\bgroundwatch_(judge_|budget_|cascade_|golden_|calibration_)")
    for panel in _panels(document):
        reads_judge = any(judge_families.search(t["expr"]) for t in panel["targets"])
        assert reads_judge == (panel in inside), panel["title"]
    assert len(inside) == 16
    by_line: dict[int, int] = {}
    for panel in inside:
        by_line[panel["gridPos"]["y"]] = by_line.get(panel["gridPos"]["y"], 0) + \
            panel["gridPos"]["w"]
    assert set(by_line.values()) == {24}, by_line
    (agree,) = _panel(document, "Judge and cheap scorer agree over $window")["targets"]
    assert agree["expr"].startswith("1 - ") and 'agree="no"' in agree["expr"]
    quantiles = _panel(document, "|cheap - judge| over $window")["targets"]
    assert [t["expr"].split(",")[0] for t in quantiles] == \
        ["histogram_quantile(0.5", "histogram_quantile(0.9"]


def test_every_query_is_valid_promql(document: dict[str, Any], tmp_path: Path) -> None:
    """Every target, with the variables filled in as Grafana would, passes promtool."""
    exe = shutil.which("promtool")
    assert exe, "promtool not found: install Debian's prometheus package (.ci/run does)"
    queries = list(panel_queries(document))
    assert len(queries) >= 40
    rules = [{"record": f"dashboard:query_{i}", "expr": concrete(expr)}
             for i, (_, _, expr) in enumerate(queries)]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([exe, "check", "rules", str(path)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    # A broken query is caught, so the check above means something.
    rules[0]["expr"] += " >"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert subprocess.run([exe, "check", "rules", str(path)], capture_output=True,
                          timeout=60).returncode != 0


def test_concrete_refuses_an_unknown_variable() -> None:
    assert concrete('rate(x{route=~"$route"}[$__rate_interval])', rate_interval="10s") == \
        'rate(x{route=~".*"}[10s])'
    with pytest.raises(ValueError, match="unknown variable"):
        concrete("rate(x[$__range])")


def test_provider_loads_the_folder_docker_compose_mounts() -> None:
    provider = yaml.safe_load(PROVIDER.read_text())
    assert provider["apiVersion"] == 1
    (entry,) = provider["providers"]
    assert entry["type"] == "file"
    assert entry["options"]["path"] == "/var/lib/grafana/dashboards"
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    volumes = compose["services"]["grafana"]["volumes"]
    assert any(v.startswith("./configs/grafana/dashboards:/var/lib/grafana/dashboards")
               for v in volumes)
    assert any(v.startswith("./configs/grafana/provisioning:/etc/grafana/provisioning")
               for v in volumes)
