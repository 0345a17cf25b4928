"""Alerts from one source of truth: ``configs/alerts.yml``.

The file holds every threshold, window, minimum sample count, severity and text. From it,
``python -m metrics.alerts generate`` (``make alerts``) writes the Prometheus rules
(``configs/prometheus/alerts.yml``), their promtool tests (``alerts.test.yml``) and the
Grafana-managed twins (``configs/grafana/provisioning/alerting/groundwatch-alerts.yml``).

For other generators (runbooks, the dashboard, the end-to-end test)::

    from metrics.alerts import ALERT_NAMES, build, load_alerts

    config = load_alerts()                 # or load_alerts(path); .scaled("test") for short windows
    rules = build(config)
    for alert in rules.alerts:             # AlertRule: name, severity, for_s, labels,
        ...                                # annotations, expr, grafana_expr, params
    config.thresholds                      # mean thresholds per metric (dashboard lines)
    config.runbook_url("GroundwatchQueueBacklog")
"""

from metrics.alerts.config import ALERT_NAMES, DEFAULT_PATH, AlertsConfig, load_alerts
from metrics.alerts.rules import AlertRule, RuleSet, build

__all__ = ["ALERT_NAMES", "DEFAULT_PATH", "AlertRule", "AlertsConfig", "RuleSet", "build",
           "load_alerts"]
