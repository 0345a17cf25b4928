"""Where a firing alert goes: the generated alertmanager.yml passes ``amtool check-config`` and
routes as documented (``amtool config routes test``), Grafana's contact points and policies
match it, and, end to end, a real Prometheus and a real Alertmanager (Debian's) carry a
quality alert to a webhook with its labels and absolute runbook link, and hold a quality
alert back while a stall alert fires.

The stale-file check of the committed files is tests/test_alerts.py's (one generator).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from metrics.alerts import load_alerts
from metrics.alerts.__main__ import generate
from metrics.alerts.config import REPO_ROOT, AlertsConfig, Team
from metrics.alerts.notify import (
    ALERTMANAGER_DIR,
    ALERTMANAGER_FILE,
    GRAFANA_NOTIFY_FILE,
    alertmanager_config,
    grafana_notifications,
)
from metrics.alerts.render import GRAFANA_DIR, PROMETHEUS_DIR, PROMETHEUS_FILE
from tests.prom_helpers import running_alertmanager, running_prometheus, wait_until

COMMITTED = REPO_ROOT / ALERTMANAGER_DIR / ALERTMANAGER_FILE
AMTOOL_TIMEOUT_S = 60


def amtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("amtool")
    if exe is None:
        pytest.skip("amtool not installed (apt-get install prometheus-alertmanager; .ci/run does)")
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True,
                          timeout=AMTOOL_TIMEOUT_S, check=False)


def with_teams(config: AlertsConfig, **teams: Team) -> AlertsConfig:
    return config.model_copy(update={"alertmanager": config.alertmanager.model_copy(
        update={"teams": teams})})


def test_amtool_accepts_the_committed_config() -> None:
    result = amtool("check-config", COMMITTED)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(("labels", "receiver"), [
    (["severity=page", "route=docs_qa"], "docs-team-page"),
    (["severity=ticket", "route=docs_qa"], "docs-team-ticket"),
    (["severity=page", "route=support_chat"], "groundwatch-page"),
    (["severity=ticket"], "groundwatch-ticket"),
    (["alertname=GroundwatchWorkerDown", "severity=page", "role=worker"], "groundwatch-page"),
    # A severity no branch knows still reaches a person, on the ticket receiver.
    (["severity=info"], "groundwatch-ticket"),
])
def test_routes_by_severity_and_by_the_route_label(tmp_path: Path, labels: list[str],
                                                   receiver: str) -> None:
    config = with_teams(load_alerts(), **{"docs-team": Team(routes=["docs_qa", "docs_v2"])})
    path = tmp_path / "alertmanager.yml"
    path.write_text(alertmanager_config(config))
    assert amtool("check-config", path).returncode == 0
    result = amtool("config", "routes", "test", f"--config.file={path}", *labels)
    assert result.stdout.strip() == receiver, result.stdout + result.stderr


def test_the_committed_config_groups_and_inhibits_as_set() -> None:
    doc = yaml.safe_load(COMMITTED.read_text())
    assert doc["route"]["group_by"] == ["alertname", "route"]
    (rule,) = doc["inhibit_rules"]
    assert "GroundwatchPipelineStalled" in rule["source_matchers"][0]
    assert "GroundwatchQualityBurnFast" in rule["target_matchers"][0]
    assert rule["equal"] == ["service"]
    names = {r["name"] for r in doc["receivers"]}
    assert names == {"groundwatch-page", "groundwatch-ticket"}
    text = COMMITTED.read_text()
    for example in ("slack_configs", "pagerduty_configs", "email_configs"):
        assert f"#    {example}:" in text, example


def test_grafana_contact_points_and_policies_match_alertmanager() -> None:
    """Grafana is not installable here: its file is checked for the provisioning shape and
    against alertmanager.yml (same receivers, same tree), not loaded by a Grafana."""
    config = with_teams(load_alerts(), **{"docs-team": Team(routes=["docs_qa"])})
    am = yaml.safe_load(alertmanager_config(config))
    gf = yaml.safe_load(grafana_notifications(config))
    assert gf["apiVersion"] == 1
    points = {c["name"]: c for c in gf["contactPoints"]}
    assert set(points) == {r["name"] for r in am["receivers"]}
    uids = [r["uid"] for c in gf["contactPoints"] for r in c["receivers"]]
    assert len(set(uids)) == len(uids) and all(len(u) <= 40 for u in uids)
    for receiver in am["receivers"]:
        (cp,) = points[receiver["name"]]["receivers"]
        assert cp["type"] == "webhook"
        assert cp["settings"]["url"] == receiver["webhook_configs"][0]["url"]
    (policy,) = gf["policies"]

    def tree(node: dict[str, Any], key: str) -> Any:
        return (node["receiver"], node.get(key),
                [tree(r, key) for r in node.get("routes", [])])

    def am_matchers(node: dict[str, Any]) -> dict[str, Any]:
        out = dict(node)
        if "matchers" in out:
            out["matchers"] = [list(re.fullmatch(r'(\w+)(=~|!~|!=|=)"(.*)"', m).groups())  # type: ignore[union-attr]
                               for m in out["matchers"]]
        out["routes"] = [am_matchers(r) for r in node.get("routes", [])]
        return out

    assert tree(policy, "object_matchers") == tree(am_matchers(am["route"]), "matchers")
    assert policy["group_by"] == ["grafana_folder", *am["route"]["group_by"]]
    committed = yaml.safe_load((REPO_ROOT / GRAFANA_DIR / GRAFANA_NOTIFY_FILE).read_text())
    assert {c["name"] for c in committed["contactPoints"]} == {
        "groundwatch-page", "groundwatch-ticket"}


# --- end to end: Prometheus -> Alertmanager -> webhook ---------------------------------------

FAILING_PER_S = 20  # scored items per second per failing route, every one below threshold


class _Bed:
    """The test's own HTTP server: /metrics serves groundwatch series computed from the clock
    (no pipeline: the alert path is under test, not the scoring), POST stores webhook bodies."""

    def __init__(self) -> None:
        self.failing_since: dict[str, float] = {}
        self.worker_beat_frozen_at: float | None = None
        self.received: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def metrics(self) -> str:
        now = time.time()
        worker = self.worker_beat_frozen_at or now
        lines = [f'groundwatch_heartbeat_timestamp_seconds{{role="worker"}} {worker}',
                 f'groundwatch_heartbeat_timestamp_seconds{{role="sampler"}} {now}',
                 f"groundwatch_last_score_timestamp_seconds {now}"]
        for route, since in self.failing_since.items():
            n = int((now - since) * FAILING_PER_S)
            labels = f'scorer="lexical",route="{route}",metric="faithfulness"'
            lines += [f"groundwatch_score_count{{{labels}}} {n}",
                      f"groundwatch_score_sum{{{labels}}} {n * 0.1}",
                      f"groundwatch_quality_failures_total{{{labels}}} {n}"]
        return "\n".join(lines) + "\n"

    def alerts(self, status: str = "firing") -> list[dict[str, Any]]:
        with self.lock:
            return [a for body in self.received for a in body["alerts"]
                    if a["status"] == status]


@pytest.fixture
def bed() -> Iterator[tuple[_Bed, str]]:
    state = _Bed()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = state.metrics().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with state.lock:
                state.received.append(payload)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _abbreviated(payload: dict[str, Any]) -> str:
    return json.dumps(payload, indent=1, sort_keys=True)


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_a_quality_alert_reaches_the_webhook_and_a_stall_holds_the_next_back(
        tmp_path: Path, bed: tuple[_Bed, str]) -> None:
    state, address = bed
    if shutil.which("prometheus-alertmanager") is None:
        pytest.skip("prometheus-alertmanager not installed (.ci/run installs it)")
    config = load_alerts().scaled("test")
    config = config.model_copy(update={"alertmanager": config.alertmanager.model_copy(
        update={"webhook_url": f"http://{address}/hook"})})
    am_file = tmp_path / "alertmanager.yml"
    am_file.write_text(alertmanager_config(config))
    rules = tmp_path / PROMETHEUS_FILE
    rules.write_text(generate(profile="test")[PROMETHEUS_DIR / PROMETHEUS_FILE])

    state.failing_since["docs_qa"] = time.time()
    with running_alertmanager(tmp_path / "am", am_file) as am, \
            running_prometheus(tmp_path / "prom", [address], rule_files=[rules],
                               alertmanagers=[am]):
        # 1. A quality page reaches the webhook, labels and absolute runbook link intact.
        def burn(route: str) -> dict[str, Any] | None:
            return next((a for a in state.alerts()
                         if a["labels"]["alertname"] == "GroundwatchQualityBurnFast"
                         and a["labels"].get("route") == route), None)

        alert = wait_until(lambda: burn("docs_qa"), timeout=30, what="the docs_qa page")
        body = next(b for b in state.received if alert in b["alerts"])
        print("webhook payload:\n" + _abbreviated(body))
        assert body["receiver"] == "groundwatch-page"
        assert body["groupLabels"] == {"alertname": "GroundwatchQualityBurnFast",
                                       "route": "docs_qa"}
        assert alert["labels"]["severity"] == "page"
        assert alert["labels"]["metric"] == "faithfulness"
        assert alert["labels"]["service"] == "groundwatch"
        assert alert["annotations"]["runbook_url"] == (
            "https://github.com/groundwatch/groundwatch/blob/main/docs/runbooks/"
            "GroundwatchQualityBurnFast.md")
        assert "docs_qa" in alert["annotations"]["summary"]

        # 2. The workers stop beating: the stall page arrives...
        state.worker_beat_frozen_at = time.time()
        wait_until(lambda: any(a["labels"]["alertname"] == "GroundwatchWorkerDown"
                               for a in state.alerts()), timeout=30, what="the stall page")
        # ...and a quality alert that starts now is firing in Alertmanager, but inhibited.
        state.failing_since["support_chat"] = time.time()

        def inhibited() -> dict[str, Any] | None:
            found = httpx.get(f"http://{am}/api/v2/alerts", timeout=5).json()
            return next((a for a in found
                         if a["labels"]["alertname"] == "GroundwatchQualityBurnFast"
                         and a["labels"].get("route") == "support_chat"
                         and a["status"]["state"] == "suppressed"), None)

        held = wait_until(inhibited, timeout=30, what="the support_chat alert, suppressed")
        assert held["status"]["inhibitedBy"], held["status"]
        # A notification would have gone out after group_wait; give it group_wait +
        # group_interval and a scrape's margin.
        time.sleep(config.alertmanager.group_wait + config.alertmanager.group_interval + 2)
        assert burn("support_chat") is None, "an inhibited quality alert reached the webhook"
