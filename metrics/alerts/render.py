"""Writes a :class:`~metrics.alerts.rules.RuleSet` as files: Prometheus rules, their promtool
tests, Grafana alerting provisioning, and (through :mod:`metrics.alerts.notify`) where alerts
are sent. Output is deterministic (same settings, same bytes),
which is what the staleness test compares."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from metrics.alerts.config import render_template
from metrics.alerts.fixtures import Case, cases
from metrics.alerts.notify import (
    ALERTMANAGER_DIR,
    ALERTMANAGER_FILE,
    GRAFANA_NOTIFY_FILE,
    alertmanager_config,
    grafana_notifications,
)
from metrics.alerts.rules import AlertRule, RuleSet, duration
from metrics.alerts.yamlout import HEADER, Block, dump

PROMETHEUS_FILE = "alerts.yml"
TESTS_FILE = "alerts.test.yml"
GRAFANA_FILE = "groundwatch-alerts.yml"
# Where the committed files live, relative to the repository root.
PROMETHEUS_DIR = Path("configs/prometheus")
GRAFANA_DIR = Path("configs/grafana/provisioning/alerting")

def prometheus_rules(rules: RuleSet) -> str:
    """The rule file: recording rules first, then the alerts, in one group so that each
    evaluation of an alert reads recorded series of the same evaluation."""
    group: dict[str, Any] = {"name": "groundwatch"}
    if rules.config.evaluation_interval:
        group["interval"] = duration(rules.config.evaluation_interval)
    body: list[dict[str, Any]] = []
    for r in rules.records:
        record: dict[str, Any] = {"record": r.name, "expr": Block(rules.record_expr(r))}
        if r.labels:
            # Already set by the expression; stated so that the members of one family are
            # distinct rules to promtool's duplicate check (and to a reader).
            record["labels"] = dict(r.labels)
        body.append(record)
    for a in rules.alerts:
        rule: dict[str, Any] = {"alert": a.name, "expr": Block(a.expr)}
        if a.for_s:
            rule["for"] = duration(a.for_s)
        rule["labels"] = dict(a.labels)
        rule["annotations"] = dict(a.annotations)
        body.append(rule)
    group["rules"] = body
    return HEADER + dump({"groups": [group]})


def _labels_text(labels: dict[str, str]) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def _test_group(rule: AlertRule, case: Case, interval: int) -> dict[str, Any]:
    at = duration(case.eval_time)
    expected = []
    for labels in case.firing:
        full = {**labels, **rule.labels}
        expected.append({
            "exp_labels": full,
            "exp_annotations": {k: render_template(v, {**full, "alertname": rule.name})
                                for k, v in rule.annotations.items()},
        })
    return {
        "name": f"{rule.name}: {case.case}",
        "interval": duration(interval),
        "input_series": [{"series": s.selector(), "values": s.values} for s in case.series],
        "alert_rule_test": [{"eval_time": at, "alertname": rule.name, "exp_alerts": expected}],
        # The Grafana twin, evaluated on the same data: 1 exactly where Prometheus fires.
        "promql_expr_test": [{
            "expr": Block(f"(\n{rule.grafana_expr}\n) == 1"),
            "eval_time": at,
            "exp_samples": [{"labels": _labels_text(labels), "value": 1}
                            for labels in case.firing + case.pending],
        }],
    }


def promtool_tests(rules: RuleSet, rule_file: str = PROMETHEUS_FILE) -> str:
    """``promtool test rules`` input: every alert's fire and no-fire cases."""
    interval = rules.config.evaluation_interval or 60
    groups = [_test_group(rules.alert(c.alert), c, interval) for c in cases(rules)]
    doc = {"rule_files": [rule_file], "evaluation_interval": duration(interval), "tests": groups}
    return HEADER + dump(doc)


def grafana_uid(name: str) -> str:
    """``GroundwatchQueueBacklog`` → ``gw-queue-backlog`` (Grafana uids: 40 characters)."""
    words = re.sub(r"(?<!^)(?=[A-Z])", "-", name.removeprefix("Groundwatch")).lower()
    return f"gw-{words}"[:40]


def grafana_rules(rules: RuleSet) -> str:
    """Grafana-managed alert rules (file provisioning, ``apiVersion: 1``): query A is the
    alert's condition as 0/1 per series, B reduces it to its last value, C fires above 0."""
    g = rules.config.grafana
    uid = g.datasource_uid
    out = []
    for a in rules.alerts:
        out.append({
            "uid": grafana_uid(a.name),
            "title": a.name,
            "condition": "C",
            "data": [
                {"refId": "A", "relativeTimeRange": {"from": 600, "to": 0},
                 "datasourceUid": uid,
                 "model": {"refId": "A", "datasource": {"type": "prometheus", "uid": uid},
                           "editorMode": "code", "expr": Block(a.grafana_expr),
                           "instant": True, "range": False, "intervalMs": 1000,
                           "maxDataPoints": 43200}},
                {"refId": "B", "datasourceUid": "__expr__",
                 "model": {"refId": "B", "type": "reduce", "expression": "A",
                           "reducer": "last", "datasource": {"type": "__expr__",
                                                             "uid": "__expr__"}}},
                {"refId": "C", "datasourceUid": "__expr__",
                 "model": {"refId": "C", "type": "threshold", "expression": "B",
                           "conditions": [{"evaluator": {"type": "gt", "params": [0]}}],
                           "datasource": {"type": "__expr__", "uid": "__expr__"}}},
            ],
            # A series that does not exist is not an alert (as in Prometheus); a query that
            # fails is.
            "noDataState": "OK",
            "execErrState": "Error",
            "for": duration(a.for_s),
            "labels": dict(a.labels),
            "annotations": dict(a.annotations),
            "isPaused": False,
        })
    doc = {"apiVersion": 1, "groups": [{
        "orgId": 1, "name": g.group, "folder": g.folder, "interval": duration(g.interval),
        "rules": out}]}
    return HEADER + dump(doc)


def outputs(rules: RuleSet) -> dict[Path, str]:
    """Every generated file, by its path relative to the output root."""
    return {
        PROMETHEUS_DIR / PROMETHEUS_FILE: prometheus_rules(rules),
        PROMETHEUS_DIR / TESTS_FILE: promtool_tests(rules),
        GRAFANA_DIR / GRAFANA_FILE: grafana_rules(rules),
        ALERTMANAGER_DIR / ALERTMANAGER_FILE: alertmanager_config(rules.config),
        GRAFANA_DIR / GRAFANA_NOTIFY_FILE: grafana_notifications(rules.config),
    }
