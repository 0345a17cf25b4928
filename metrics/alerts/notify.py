"""Where a firing alert goes: the Alertmanager config and Grafana's contact points and
notification policies, both from the ``alertmanager`` section of ``configs/alerts.yml``.

One tree in both: alerts are grouped by (alertname, route); an app route owned by a team
(``teams``) goes to that team's receivers, everything else to ``<service>-page`` or
``<service>-ticket`` by ``severity``; an alert with a severity no branch knows still reaches
the ticket receiver (the root's), never nobody. Alertmanager also gets the inhibition rules
(quality alerts held back while a stall alert fires); Grafana's notification policies have no
inhibition, which docs/alert-routing.md says.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from metrics.alerts.config import SEVERITIES, AlertsConfig, Severity
from metrics.alerts.rules import duration
from metrics.alerts.yamlout import HEADER, dump

ALERTMANAGER_DIR = Path("configs/alertmanager")
ALERTMANAGER_FILE = "alertmanager.yml"
GRAFANA_NOTIFY_FILE = "groundwatch-notifications.yml"
GROUP_BY = ["alertname", "route"]
# The severity that reaches the root receiver when no branch matches.
FALLBACK: Severity = "ticket"

# Appended to the generated file as comments: amtool checks the live part, a user copies these.
EXAMPLES = """
# --- Other receivers (copy one into `receivers` above and name it in the route tree) -------
# Slack (an incoming-webhook URL; api_url_file keeps it out of this file):
#  - name: groundwatch-page
#    slack_configs:
#      - api_url_file: /etc/alertmanager/secrets/slack-url
#        channel: "#groundwatch-oncall"
#        send_resolved: true
#        title: '{{ .CommonLabels.alertname }} {{ .CommonLabels.route }}'
#        text: '{{ .CommonAnnotations.summary }} {{ .CommonAnnotations.runbook_url }}'
# PagerDuty (Events API v2 integration key):
#  - name: groundwatch-page
#    pagerduty_configs:
#      - routing_key_file: /etc/alertmanager/secrets/pagerduty-key
#        send_resolved: true
#        links:
#          - href: '{{ .CommonAnnotations.runbook_url }}'
#            text: runbook
# E-mail (needs global smtp_smarthost / smtp_from, or the same keys here):
#  - name: groundwatch-ticket
#    email_configs:
#      - to: groundwatch-team@example.com
#        smarthost: smtp.example.com:587
#        from: alertmanager@example.com
#        auth_username: alertmanager
#        auth_password_file: /etc/alertmanager/secrets/smtp-password
#        send_resolved: true
"""


def receiver(team: str, severity: str) -> str:
    return f"{team}-{severity}"


def _teams(config: AlertsConfig) -> list[tuple[str, str, list[str]]]:
    """(team, webhook URL, app routes) for each owning team; the service's own team last,
    with no routes (it takes everything else)."""
    am = config.alertmanager
    out = [(name, team.webhook_url or am.webhook_url, list(team.routes))
           for name, team in am.teams.items()]
    return [*out, (config.service, am.webhook_url, [])]


def _route_tree(config: AlertsConfig, matcher: Any) -> list[dict[str, Any]]:
    """The child routes, each ``matcher(name, op, value)`` spelled by the caller's format."""
    am = config.alertmanager

    def by_severity(team: str) -> list[dict[str, Any]]:
        return [{"receiver": receiver(team, s), "matchers": [matcher("severity", "=", s)],
                 "repeat_interval": duration(am.repeat_interval[s])}
                for s in SEVERITIES]

    routes: list[dict[str, Any]] = []
    for team, _, app_routes in _teams(config):
        if app_routes:
            routes.append({"receiver": receiver(team, FALLBACK),
                           "matchers": [matcher("route", "=~", "|".join(app_routes))],
                           "routes": by_severity(team)})
        else:
            routes += by_severity(team)
    return routes


def alertmanager_config(config: AlertsConfig) -> str:
    """``alertmanager.yml``: route tree, inhibition, one webhook receiver per team × severity."""
    am = config.alertmanager
    receivers = [{"name": receiver(team, s),
                  "webhook_configs": [{"url": url, "send_resolved": True}]}
                 for team, url, _ in _teams(config) for s in SEVERITIES]
    doc = {
        "route": {
            "receiver": receiver(config.service, FALLBACK),
            "group_by": GROUP_BY,
            "group_wait": duration(am.group_wait),
            "group_interval": duration(am.group_interval),
            "repeat_interval": duration(am.repeat_interval[FALLBACK]),
            "routes": _route_tree(config, lambda k, op, v: f'{k}{op}"{v}"'),
        },
        "inhibit_rules": [{
            "source_matchers": [f'alertname=~"{"|".join(am.inhibit.sources)}"'],
            "target_matchers": [f'alertname=~"{"|".join(am.inhibit.targets)}"'],
            # Stall alerts carry no route: equal on service only (a missing label on one side
            # would never be equal to the route of the other).
            "equal": ["service"],
        }],
        "receivers": receivers,
    }
    return HEADER + dump(doc) + EXAMPLES


def _contact_uid(name: str) -> str:
    return f"gw-cp-{name}"[:40]


def grafana_notifications(config: AlertsConfig) -> str:
    """Grafana file provisioning (``apiVersion: 1``): the same receivers as contact points and
    the same tree as a notification policy. Grafana has no inhibition rules."""
    am = config.alertmanager
    contact_points = [{
        "orgId": 1, "name": receiver(team, s),
        "receivers": [{"uid": _contact_uid(receiver(team, s)), "type": "webhook",
                       "settings": {"url": url, "httpMethod": "POST"},
                       "disableResolveMessage": False}]}
        for team, url, _ in _teams(config) for s in SEVERITIES]
    policy: dict[str, Any] = {
        "orgId": 1,
        "receiver": receiver(config.service, FALLBACK),
        # Grafana groups its own alerts by folder as well; the rest is Alertmanager's grouping.
        "group_by": ["grafana_folder", *GROUP_BY],
        "group_wait": duration(am.group_wait),
        "group_interval": duration(am.group_interval),
        "repeat_interval": duration(am.repeat_interval[FALLBACK]),
        "routes": _route_tree(config, lambda k, op, v: [k, op, v]),
    }
    _rename(policy["routes"])
    doc = {"apiVersion": 1, "contactPoints": contact_points, "policies": [policy]}
    return HEADER + dump(doc)


def _rename(routes: list[dict[str, Any]]) -> None:
    """Grafana spells Alertmanager's ``matchers`` as ``object_matchers`` (lists of 3)."""
    for r in routes:
        r["object_matchers"] = r.pop("matchers")
        _rename(r.get("routes", []))
