"""The alert rules: generated files fresh, promtool-checked and -tested, Grafana twins equal.

promtool is part of the test bed (``.ci/run`` installs Debian's ``prometheus``): a missing
promtool fails these tests rather than skipping them.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

from evaluator.errors import ConfigError
from metrics.alerts import ALERT_NAMES, build, load_alerts
from metrics.alerts import rules as rules_module
from metrics.alerts.__main__ import generate, main
from metrics.alerts.config import DEFAULT_PATH, REPO_ROOT, template_labels
from metrics.alerts.fixtures import cases
from metrics.alerts.notify import ALERTMANAGER_DIR, ALERTMANAGER_FILE, GRAFANA_NOTIFY_FILE
from metrics.alerts.render import (
    GRAFANA_DIR,
    GRAFANA_FILE,
    PROMETHEUS_DIR,
    PROMETHEUS_FILE,
    TESTS_FILE,
    outputs,
    prometheus_rules,
    promtool_tests,
)
from metrics.alerts.rules import JUDGE_SCORERS, RuleSet

PROM_RULES = REPO_ROOT / PROMETHEUS_DIR / PROMETHEUS_FILE
PROM_TESTS = REPO_ROOT / PROMETHEUS_DIR / TESTS_FILE
GRAFANA_RULES = REPO_ROOT / GRAFANA_DIR / GRAFANA_FILE
PROMTOOL_TIMEOUT_S = 180


def promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    assert exe, "promtool not found: install Debian's prometheus package (.ci/run does)"
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=PROMTOOL_TIMEOUT_S, check=False)


def promtool_test(rules_text: str, tests_text: str, out: Path,
                  ) -> subprocess.CompletedProcess[str]:
    """``promtool test rules`` on the cases of ``tests_text`` against the rules of
    ``rules_text``, in one call with one test file per alert, each loading only that alert and
    the recording rules it reads (transitively).

    promtool evaluates every rule of the loaded files at every step of every case, so the
    whole file costs (cases x steps x all rules): about six times the split. An alert's value
    depends only on the rules it reads, so each case's outcome is the same either way."""
    (group,) = yaml.safe_load(rules_text)["groups"]
    doc = yaml.safe_load(tests_text)
    records = [r for r in group["rules"] if "record" in r]

    def reads(expr: str) -> list[dict[str, Any]]:
        need: list[dict[str, Any]] = []
        frontier = [expr]
        while frontier:
            text = frontier.pop()
            for r in records:
                if r not in need and re.search(re.escape(r["record"]) + r"(?![\w:])", text):
                    need.append(r)
                    frontier.append(r["expr"])
        return [r for r in records if r in need]   # in file order

    files = []
    for alert in (r for r in group["rules"] if "alert" in r):
        name = alert["alert"]
        tests = [t for t in doc["tests"] if t["alert_rule_test"][0]["alertname"] == name]
        rules_file, tests_file = out / f"{name}.rules.yml", out / f"{name}.test.yml"
        rules_file.write_text(yaml.safe_dump(
            {"groups": [{**group, "rules": [*reads(alert["expr"]), alert]}]}))
        tests_file.write_text(yaml.safe_dump(
            {**doc, "rule_files": [rules_file.name], "tests": tests}))
        files.append(tests_file)
    covered = sum(len(yaml.safe_load(f.read_text())["tests"]) for f in files)
    assert covered == len(doc["tests"]), "a case names an alert that is not in the rules"
    return promtool("test", "rules", *files)


def _ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# --- the committed files --------------------------------------------------------------------

def test_committed_files_match_the_settings(tmp_path: Path) -> None:
    """Regenerating from configs/alerts.yml gives the committed bytes (`make alerts`)."""
    files = generate()
    assert set(files) == {PROMETHEUS_DIR / PROMETHEUS_FILE, PROMETHEUS_DIR / TESTS_FILE,
                          GRAFANA_DIR / GRAFANA_FILE, ALERTMANAGER_DIR / ALERTMANAGER_FILE,
                          GRAFANA_DIR / GRAFANA_NOTIFY_FILE}
    for rel, text in files.items():
        committed = REPO_ROOT / rel
        assert committed.is_file(), f"{rel} is missing: run `make alerts`"
        assert committed.read_bytes() == text.encode("utf-8"), f"{rel} is stale: run `make alerts`"
    assert main(["generate", "--check"]) == 0


def test_check_flag_reports_a_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         ) -> None:
    assert main(["generate", "--out", str(tmp_path)]) == 0
    rules = tmp_path / PROMETHEUS_DIR / PROMETHEUS_FILE
    assert main(["generate", "--check", "--out", str(tmp_path)]) == 0
    rules.write_text(rules.read_text().replace("> 0.5", "> 0.6", 1))
    assert main(["generate", "--check", "--out", str(tmp_path)]) == 1
    assert "configs/prometheus/alerts.yml" in capsys.readouterr().err


def test_prometheus_config_loads_the_rules() -> None:
    prom = _yaml(REPO_ROOT / "configs/prometheus/prometheus.yml")
    assert PROMETHEUS_FILE in prom["rule_files"]
    _ok(promtool("check", "config", REPO_ROOT / "configs/prometheus/prometheus.yml"))


# --- promtool ----------------------------------------------------------------------------

def test_promtool_check_and_test_the_committed_rules(tmp_path: Path) -> None:
    _ok(promtool("check", "rules", PROM_RULES))
    assert _yaml(PROM_TESTS)["rule_files"] == [PROMETHEUS_FILE]
    result = promtool_test(PROM_RULES.read_text(), PROM_TESTS.read_text(), tmp_path)
    _ok(result)
    assert result.stdout.count("SUCCESS") == len(ALERT_NAMES)


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    tests = _yaml(PROM_TESTS)["tests"]
    fires: dict[str, int] = {}
    quiet: dict[str, int] = {}
    for group in tests:
        (rule_test,) = group["alert_rule_test"]
        tally = fires if rule_test["exp_alerts"] else quiet
        tally[rule_test["alertname"]] = tally.get(rule_test["alertname"], 0) + 1
    assert set(fires) == set(quiet) == set(ALERT_NAMES)
    # The minimum-sample guard has its own no-fire case wherever there is one.
    names = {g["name"] for g in tests}
    for alert in ("GroundwatchQualityBurnFast", "GroundwatchQualityBurnSlow",
                  "GroundwatchQualityMeanLow", "GroundwatchNoRelevantContextHigh",
                  "GroundwatchOutOfScopeHigh", "GroundwatchRefusalsHigh"):
        assert any(n.startswith(alert) and "min_samples" in n for n in names), alert
    for alert in ("GroundwatchScorerErrors", "GroundwatchJudgeErrors",
                  "GroundwatchRejectedRowsHigh", "GroundwatchJudgeDisagreement"):
        assert any(n.startswith(alert) and "min_count" in n for n in names), alert


def test_the_judge_alerts_read_the_judge_metrics() -> None:
    """Each judge alert reads the counter or gauge its runbook and the dashboard name."""
    rules = build(load_alerts())
    config = rules.config.alerts

    def reads(name: str) -> str:
        alert = rules.alert(name)
        return alert.expr + "".join(rules.record_expr(r) for r in rules.records
                                    if rules.ref(r.key) in alert.expr)

    assert "increase(groundwatch_budget_exhausted_total[1h])" in reads(
        "GroundwatchJudgeBudgetExhausted")
    assert "groundwatch_judge_requests_total{status!=\"ok\"}" in reads("GroundwatchJudgeErrors")
    assert "max by (judge) (groundwatch_judge_up) == 0" in reads("GroundwatchJudgeDown")
    disagreement = reads("GroundwatchJudgeDisagreement")
    assert 'sum by (metric) (increase(groundwatch_cascade_compared_total{agree="no"}[6h]))' \
        in disagreement
    assert "> 0.3" in disagreement and ">= 30" in disagreement
    assert config.GroundwatchJudgeDisagreement.min_count == 30
    assert rules.alert("GroundwatchGoldenDrift").expr == \
        "max by (metric) (groundwatch_golden_drift) > 0.1"
    fired = {c.alert: c.firing[0] for c in cases(rules) if c.firing}
    assert set(fired["GroundwatchJudgeDisagreement"]) == {"metric"}
    assert set(fired["GroundwatchGoldenDrift"]) == {"metric"}


def _mutant(rules: RuleSet, expr: str, grafana_expr: str) -> RuleSet:
    alerts = tuple(dataclasses.replace(a, expr=expr, grafana_expr=grafana_expr)
                   for a in rules.alerts)
    return RuleSet((), alerts, rules.config)


def _failures(rules: RuleSet, tmp_path: Path) -> tuple[int, int]:
    """(failed alert tests, failed Grafana-expression tests) of the generated cases when run
    against ``rules``."""
    result = promtool_test(prometheus_rules(rules), promtool_tests(rules), tmp_path)
    assert result.returncode != 0, "a mutant passed the tests"
    out = result.stdout + result.stderr
    return out.count("alertname: "), len(re.findall(r'^\s+expr: "', out, re.M))


def test_the_cases_can_fail(tmp_path: Path) -> None:
    """Rules that never fire fail every firing case; rules that always fire (without the
    right labels) fail every other case: each case checks something."""
    rules = build(load_alerts())
    all_cases = cases(rules)
    firing = sum(1 for c in all_cases if c.firing)
    true_somewhere = sum(1 for c in all_cases if c.firing or c.pending)
    never = _mutant(rules, "absent(vector(1))", "vector(0)")
    assert _failures(never, tmp_path) == (firing, true_somewhere)
    always = _mutant(rules, "vector(1)", "vector(1)")
    not_bare = sum(1 for c in all_cases if (c.firing or c.pending) != [{}])
    assert _failures(always, tmp_path) == (sum(1 for c in all_cases if c.firing != [{}]),
                                           not_bare)


def _failed_cases(rules: RuleSet, tmp_path: Path) -> set[str]:
    """The names of the groups that fail when the real cases run against ``rules``."""
    result = promtool_test(prometheus_rules(rules), promtool_tests(build(load_alerts())),
                           tmp_path)
    return set(re.findall(r"^\s+name: (.+),\s*$", result.stdout + result.stderr, re.M))


def test_the_judge_names_are_the_judge_modes() -> None:
    from evaluator.config import ScoringConfig
    from evaluator.judge.scorer import MODES

    assert JUDGE_SCORERS == MODES
    assert set(JUDGE_SCORERS) == set(get_args(ScoringConfig.model_fields["judge"].annotation)) - {""}


def test_the_quality_cases_tell_the_cheap_scorer_from_the_judge(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cascade cases are not vacuous: quality rules that count the judge's scores with
    the cheap scorer's (as before the scorer selector) fail them, and rules that leave the
    judges out even where they are the only scorer fail the judge-only cases."""
    quality = ("GroundwatchQualityBurnFast", "GroundwatchQualityBurnSlow",
               "GroundwatchQualityMeanLow")
    monkeypatch.setattr(rules_module, "NOT_JUDGE", 'scorer=~".*"')
    monkeypatch.setattr(rules_module, "JUDGE", 'scorer="none"')
    failed = _failed_cases(build(load_alerts()), tmp_path)
    judge_quiet = {f"{name}: quiet: the judge's picks "
                   + ("score low" if name.endswith("MeanLow") else "fail")
                   + ", the cheap scorer's items do not" for name in quality}
    assert judge_quiet <= failed
    assert "GroundwatchQualityBurnFast: fires: the cheap scorer's items fail, the judge's do " \
           "not" in failed
    assert all("judge" in name for name in failed), failed

    monkeypatch.undo()
    monkeypatch.setattr(rules_module, "JUDGE", 'scorer="none"')
    assert _failed_cases(build(load_alerts()), tmp_path) == {
        f"{name}: fires: the judge is the only scorer" for name in quality}


def test_test_profile_passes_promtool(tmp_path: Path) -> None:
    """The short-window variant for the end-to-end test: same alerts, scaled, and its own
    generated cases pass on it."""
    assert main(["generate", "--profile", "test", "--out", str(tmp_path)]) == 0
    rules_file = tmp_path / PROMETHEUS_DIR / PROMETHEUS_FILE
    _ok(promtool("check", "rules", rules_file))
    _ok(promtool_test(rules_file.read_text(),
                      (tmp_path / PROMETHEUS_DIR / TESTS_FILE).read_text(), tmp_path))
    group = _yaml(rules_file)["groups"][0]
    assert group["interval"] == "1s"
    alerts = {r["alert"]: r for r in group["rules"] if "alert" in r}
    assert set(alerts) == set(ALERT_NAMES)
    records = {r["record"]: r["expr"] for r in group["rules"] if "record" in r}
    fast = alerts["GroundwatchQualityBurnFast"]["expr"]
    # 5m and 1h, divided by 60
    assert "route_metric:groundwatch_quality_failures:ratio5s > 0.5" in fast
    assert "route_metric:groundwatch_quality_failures:ratio1m > 0.5" in fast
    assert "[5s]" in records["route_metric:groundwatch_scored:increase5s"]
    assert alerts["GroundwatchQualityBurnFast"]["for"] == "2s"
    # Counts are not scaled.
    assert ">= 30" in alerts["GroundwatchQualityBurnFast"]["expr"]


# --- Grafana -------------------------------------------------------------------------------

def test_every_prometheus_alert_has_a_grafana_twin() -> None:
    prom = {r["alert"]: r for r in _yaml(PROM_RULES)["groups"][0]["rules"] if "alert" in r}
    (group,) = _yaml(GRAFANA_RULES)["groups"]
    grafana = {r["title"]: r for r in group["rules"]}
    assert list(prom) == list(grafana) == list(ALERT_NAMES)
    for name, rule in prom.items():
        twin = grafana[name]
        assert twin["labels"] == rule["labels"], name
        assert twin["annotations"] == rule["annotations"], name
        assert twin["for"] == rule.get("for", "0s"), name


_DURATION = re.compile(r"^(\d+[smhd])+$")


def test_grafana_file_follows_the_provisioning_format() -> None:
    config = load_alerts()
    doc = _yaml(GRAFANA_RULES)
    assert doc["apiVersion"] == 1
    (group,) = doc["groups"]
    assert {"orgId", "name", "folder", "interval", "rules"} <= set(group)
    assert _DURATION.match(group["interval"])
    uids = [r["uid"] for r in group["rules"]]
    assert len(set(uids)) == len(uids)
    for rule in group["rules"]:
        assert {"uid", "title", "condition", "data", "noDataState", "execErrState", "for",
                "labels", "annotations"} <= set(rule), rule["title"]
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", rule["uid"])
        assert rule["noDataState"] in ("OK", "NoData", "Alerting", "KeepLast")
        assert rule["execErrState"] in ("OK", "Error", "Alerting", "KeepLast")
        assert _DURATION.match(rule["for"])
        refs = [d["refId"] for d in rule["data"]]
        assert len(set(refs)) == len(refs) and rule["condition"] in refs
        for d in rule["data"]:
            assert d["model"]["refId"] == d["refId"]
            if d["datasourceUid"] == "__expr__":
                assert d["model"]["type"] in ("reduce", "threshold", "math", "classic_conditions")
                assert d["model"]["expression"] in refs and d["model"]["expression"] != d["refId"]
            else:
                assert d["datasourceUid"] == config.grafana.datasource_uid
                assert d["model"]["datasource"]["uid"] == config.grafana.datasource_uid
                assert d["model"]["expr"].strip()
                assert d["relativeTimeRange"]["from"] > 0


def test_grafana_expressions_parse(tmp_path: Path) -> None:
    """Every Grafana query, as a recording rule in a scratch file, passes promtool."""
    (group,) = _yaml(GRAFANA_RULES)["groups"]
    exprs = [d["model"]["expr"] for r in group["rules"] for d in r["data"]
             if d["datasourceUid"] != "__expr__"]
    assert len(exprs) == len(ALERT_NAMES)
    scratch = {"groups": [{"name": "grafana", "rules": [
        {"record": f"grafana:query_{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    path = tmp_path / "grafana-queries.yml"
    path.write_text(yaml.safe_dump(scratch))
    _ok(promtool("check", "rules", path))
    # And a broken one is caught, so the check above means something.
    path.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [
        {"record": "grafana:broken", "expr": exprs[0] + " >"}]}]}))
    assert promtool("check", "rules", path).returncode != 0


# --- what the alerts say -------------------------------------------------------------------

def test_labels_and_annotations() -> None:
    rules = build(load_alerts())
    fired = {c.alert: c.firing[0] for c in cases(rules) if c.firing}
    for a in rules.alerts:
        assert a.labels["severity"] in ("page", "ticket")
        assert a.labels["service"] == "groundwatch"
        assert a.annotations["runbook_url"].endswith(f"docs/runbooks/{a.name}.md")
        assert a.annotations["summary"] and a.annotations["description"]
        assert "$" not in re.sub(r"{{.*?}}", "", a.annotations["summary"] + a.annotations[
            "description"]), f"{a.name}: a $setting was left unfilled"
        # A template may only name labels the alert's series carry.
        carried = set(fired[a.name]) | set(a.labels)
        for text in a.annotations.values():
            assert set(template_labels(text)) <= carried, (a.name, text)
    for name in ("GroundwatchQualityBurnFast", "GroundwatchQualityBurnSlow",
                 "GroundwatchQualityMeanLow"):
        summary = rules.alert(name).annotations["summary"]
        assert "{{ $labels.route }}" in summary and "{{ $labels.metric }}" in summary
    assert {a.name for a in rules.alerts if a.severity == "page"} == {
        "GroundwatchQualityBurnFast", "GroundwatchPipelineStalled", "GroundwatchExporterDown",
        "GroundwatchWorkerDown", "GroundwatchSamplerDown"}


def test_thresholds_default_to_the_scoring_config(tmp_path: Path) -> None:
    (tmp_path / "groundwatch.toml").write_text(
        '[scoring]\nthresholds = { faithfulness = 0.7, context_relevance = 0.2 }\n')
    text = DEFAULT_PATH.read_text().replace("mean_thresholds: {}",
                                            "mean_thresholds: {context_relevance: 0.4}")
    (tmp_path / "alerts.yml").write_text(text)
    config = load_alerts(tmp_path / "alerts.yml")
    assert config.thresholds == {"faithfulness": 0.7, "context_relevance": 0.4}
    expr = build(config).records
    threshold = next(r for r in expr if r.key == "threshold")
    assert '0.7), "metric", "faithfulness"' in threshold.build(lambda k: k)
    assert '0.4), "metric", "context_relevance"' in threshold.build(lambda k: k)


def test_scaled_profile_divides_durations_only() -> None:
    config = load_alerts()
    test = config.scaled("test")
    fast, fast_t = config.alerts.GroundwatchQualityBurnFast, test.alerts.GroundwatchQualityBurnFast
    assert (fast_t.short, fast_t.long, fast_t.for_) == (5, 60, 2)
    assert (fast_t.factor, fast_t.min_samples_short) == (fast.factor, fast.min_samples_short)
    assert test.min_samples == config.min_samples
    assert test.alerts.GroundwatchBacklogAge.above == 30            # 30m / 60
    assert test.alerts.GroundwatchQueueBacklog.above == 1000        # a count: unchanged
    assert test.evaluation_interval == 1
    with pytest.raises(ConfigError, match="no profile 'nope'"):
        config.scaled("nope")


# --- bad settings: one error naming the file and the key -------------------------------------

def _broken(tmp_path: Path, old: str, new: str) -> Path:
    text = DEFAULT_PATH.read_text()
    assert old in text, old
    (tmp_path / "groundwatch.toml").write_text((DEFAULT_PATH.parent / "groundwatch.toml")
                                               .read_text())
    path = tmp_path / "alerts.yml"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(("old", "new", "key", "says"), [
    ("min_samples: 30", "min_samples: 0", "min_samples", "greater than or equal to 1"),
    ("    short: 5m\n", "    short: 5 minutes\n", "alerts.GroundwatchQualityBurnFast.short",
     "not a duration"),
    ("    short: 5m\n", "    short: 2h\n", "alerts.GroundwatchQualityBurnFast",
     "short must be shorter than long"),
    ("    factor: 5 ", "    factor: 12 ", "alerts.GroundwatchQualityBurnFast.factor",
     "can never happen"),
    ("    share: 0.25", "    share: 1.5", "alerts.GroundwatchNoRelevantContextHigh.share",
     "less than 1"),
    ("severity: page", "severity: urgent", "alerts.GroundwatchQualityBurnFast.severity",
     "'page' or 'ticket'"),
    ("service: groundwatch ", "servce: groundwatch ", "servce", "Extra inputs"),
    ("dropped sharply", "dropped {{ $value }}", "alerts.GroundwatchQualityBurnFast",
     "not allowed"),
    ("dropped sharply", "dropped $nonsense", "alerts.GroundwatchQualityBurnFast.summary",
     "not a setting of this alert"),
    ("mean_thresholds: {}", "mean_thresholds: {faithfulnes: 0.4}", "quality.mean_thresholds",
     "unknown metric"),
    ("mean_thresholds: {}", "mean_thresholds: {faithfulness: 0}",
     "quality.mean_thresholds.faithfulness", "greater than 0"),
    ("    for: 2m\n", "    for: 1.5s\n", "alerts.GroundwatchQualityBurnFast.for",
     "whole seconds"),
])
def test_bad_settings_name_the_file_and_key(tmp_path: Path, old: str, new: str, key: str,
                                            says: str) -> None:
    path = _broken(tmp_path, old, new)
    with pytest.raises(ConfigError) as err:
        build(load_alerts(path))
    assert err.value.path == str(path)
    assert err.value.key == key, str(err.value)
    assert says in str(err.value)


def test_a_missing_alert_and_a_bad_file_are_errors(tmp_path: Path) -> None:
    text = DEFAULT_PATH.read_text()
    start = text.index("  GroundwatchJudgeDown:")
    end = text.index("  GroundwatchJudgeBudgetExhausted:")
    (tmp_path / "alerts.yml").write_text(text[:start] + text[end:])
    with pytest.raises(ConfigError) as err:
        load_alerts(tmp_path / "alerts.yml")
    assert err.value.key == "alerts.GroundwatchJudgeDown"
    (tmp_path / "alerts.yml").write_text("alerts: [")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_alerts(tmp_path / "alerts.yml")
    with pytest.raises(ConfigError, match="file not found"):
        load_alerts(tmp_path / "nope.yml")
    assert main(["generate", "--config", str(tmp_path / "nope.yml")]) == 2


def test_outputs_are_deterministic() -> None:
    rules = build(load_alerts())
    assert outputs(rules) == outputs(build(load_alerts()))


def _calibrated_config(tmp_path: Path) -> Any:
    (tmp_path / "groundwatch.toml").write_text("")
    text = DEFAULT_PATH.read_text()
    assert "  budget_share: 0.1\n" in text
    (tmp_path / "alerts.yml").write_text(
        text.replace("  budget_share: 0.1\n", "  budget_share: 0.1\n  values: calibrated\n"))
    return load_alerts(tmp_path / "alerts.yml")


def test_quality_alerts_can_read_the_calibrated_scores(tmp_path: Path) -> None:
    """quality.values: calibrated: the quality rules read groundwatch_calibrated_* (the first
    scorer's values after their calibration map) under their own record names, and their
    generated cases pass promtool, including the judge-only deployment (its judge is the
    first scorer) and the case where the raw scores fail and the calibrated ones do not."""
    config = _calibrated_config(tmp_path)
    assert config.quality.values == "calibrated"
    rules = build(config)
    text = prometheus_rules(rules)
    assert "groundwatch_calibrated_score_count" in text
    assert "groundwatch_calibrated_quality_failures_total" in text
    assert "route_metric:groundwatch_calibrated_quality_failures:ratio" in text
    assert "increase(groundwatch_quality_failures_total" not in text
    tests_text = promtool_tests(rules)
    assert "quiet: the raw scores fail, the calibrated ones (read) do not" in tests_text
    rules_path = tmp_path / "rules.yml"
    rules_path.write_text(text)
    _ok(promtool("check", "rules", rules_path))
    _ok(promtool_test(text, tests_text, tmp_path))
    # Not vacuous: the default rules (reading the raw scores) fail those cases.
    result = promtool_test(prometheus_rules(build(load_alerts())), tests_text, tmp_path)
    failed = set(re.findall(r"^\s+name: (.+),\s*$", result.stdout + result.stderr, re.M))
    assert {f"{name}: quiet: the raw scores fail, the calibrated ones (read) do not"
            for name in ("GroundwatchQualityBurnFast", "GroundwatchQualityBurnSlow",
                         "GroundwatchQualityMeanLow")} <= failed
