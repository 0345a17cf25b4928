"""The exporter over real HTTP: /metrics, scrape-time gauges, /healthz, and a real Prometheus."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from metrics.exporter import Exporter, snapshot_text
from tests.prom_helpers import MetricsProcess, running_prometheus


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


@pytest.fixture
def metrics_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "prom"
    directory.mkdir()
    return directory


@pytest.fixture
def recorded_dir(metrics_dir: Path) -> Iterator[Path]:
    """A directory holding the metrics of one real process that has since exited."""
    with MetricsProcess(metrics_dir) as proc:
        # A read of 7 rows, one of them rejected (seen, but not mapped onto a record).
        proc.call("log", n=6, route="chat")
        proc.call("sampler.observe_unmapped", reason="wrong_type")
        proc.exit()
    yield metrics_dir


def _broken() -> Any:
    raise ConnectionError("broker unreachable")


def test_metrics_merges_directory_and_scrape_time_gauges(recorded_dir: Path) -> None:
    with Exporter(recorded_dir, "127.0.0.1", 0,
                  queue_depth=lambda: {"groundwatch.score": 7, "groundwatch.dead": 0},
                  oldest_unscored=lambda: 12.5) as exporter:
        response = httpx.get(f"{exporter.url}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    s = _samples(response.text)
    assert s[("groundwatch_logs_seen_total", frozenset({("source", "app")}))] == 7
    assert s[("groundwatch_queue_depth", frozenset({("queue", "groundwatch.score")}))] == 7
    assert s[("groundwatch_queue_depth", frozenset({("queue", "groundwatch.dead")}))] == 0
    assert s[("groundwatch_oldest_unscored_age_seconds", frozenset())] == 12.5
    errors = frozenset({("what", "queue_depth")})
    assert s[("groundwatch_exporter_collect_errors_total", errors)] == 0


def test_failing_callable_does_not_break_the_scrape(metrics_dir: Path) -> None:
    with Exporter(metrics_dir, "127.0.0.1", 0, queue_depth=_broken,
                  oldest_unscored=lambda: None) as exporter:
        for expected_errors in (1, 2):
            response = httpx.get(f"{exporter.url}/metrics", timeout=5)
            assert response.status_code == 200
            s = _samples(response.text)
            assert not [k for k in s if k[0] == "groundwatch_queue_depth"]
            errors = frozenset({("what", "queue_depth")})
            assert s[("groundwatch_exporter_collect_errors_total", errors)] == expected_errors
            # The other family is unaffected; None means nothing waits.
            assert s[("groundwatch_oldest_unscored_age_seconds", frozenset())] == 0


def test_openmetrics_negotiation(recorded_dir: Path) -> None:
    with Exporter(recorded_dir, "127.0.0.1", 0) as exporter:
        response = httpx.get(f"{exporter.url}/metrics", timeout=5,
                             headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")


def test_healthz_ok(metrics_dir: Path) -> None:
    with Exporter(metrics_dir, "127.0.0.1", 0, health=lambda: {"store": "ok"}) as exporter:
        response = httpx.get(f"{exporter.url}/healthz", timeout=5)
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "store": "ok"}


def test_healthz_without_callable(metrics_dir: Path) -> None:
    with Exporter(metrics_dir, "127.0.0.1", 0) as exporter:
        response = httpx.get(f"{exporter.url}/healthz", timeout=5)
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_healthz_reports_problem_with_503(metrics_dir: Path) -> None:
    with Exporter(metrics_dir, "127.0.0.1", 0,
                  health=lambda: {"status": "degraded", "broker": "down"}) as exporter:
        response = httpx.get(f"{exporter.url}/healthz", timeout=5)
    assert response.status_code == 503
    assert response.json() == {"status": "degraded", "broker": "down"}


def test_healthz_callable_raising_is_503(metrics_dir: Path) -> None:
    with Exporter(metrics_dir, "127.0.0.1", 0, health=_broken) as exporter:
        response = httpx.get(f"{exporter.url}/healthz", timeout=5)
        assert httpx.get(f"{exporter.url}/metrics", timeout=5).status_code == 200
    assert response.status_code == 503
    assert response.json()["status"] == "error"
    assert "ConnectionError" in response.json()["error"]


def test_unknown_path_is_404(metrics_dir: Path) -> None:
    with Exporter(metrics_dir, "127.0.0.1", 0) as exporter:
        assert httpx.get(f"{exporter.url}/", timeout=5).status_code == 404


def test_start_picks_port_and_stop_releases_it(tmp_path: Path) -> None:
    exporter = Exporter(tmp_path / "created-on-start", "127.0.0.1", 0)
    port = exporter.start()
    try:
        assert port > 0 and exporter.port == port
        assert (tmp_path / "created-on-start").is_dir()
        with pytest.raises(RuntimeError, match="already started"):
            exporter.start()
    finally:
        exporter.stop()
    exporter.stop()  # idempotent
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
    # The same port can be bound again right away.
    with Exporter(tmp_path, "127.0.0.1", port) as again:
        assert httpx.get(f"{again.url}/healthz", timeout=5).status_code == 200


def test_snapshot_text_passes_promtool_lint(recorded_dir: Path) -> None:
    text = snapshot_text(recorded_dir)
    assert 'groundwatch_logs_seen_total{source="app"} 7.0' in text
    assert 'groundwatch_items_rejected_total{reason="wrong_type"} 1.0' in text
    lint = subprocess.run(["/usr/bin/promtool", "check", "metrics"], input=text,
                          capture_output=True, text=True, timeout=30, check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr


@pytest.mark.integration
def test_real_prometheus_scrapes_the_exporter(tmp_path: Path, recorded_dir: Path) -> None:
    with Exporter(recorded_dir, "127.0.0.1", 0, queue_depth=lambda: {"groundwatch.score": 3},
                  oldest_unscored=_broken) as exporter, \
            running_prometheus(tmp_path / "prometheus", [f"127.0.0.1:{exporter.port}"]) as prom:
        prom.wait_for_value('groundwatch_logs_seen_total{source="app"}', 7)
        # More traffic from a new process shows up in the next scrapes.
        with MetricsProcess(recorded_dir) as proc:
            proc.call("log", n=5, route="chat")
            prom.wait_for_value('groundwatch_logs_seen_total{source="app"}', 12)
            proc.exit()
        assert prom.value('groundwatch_queue_depth{queue="groundwatch.score"}') == 3
        assert prom.value('up{job="groundwatch"}') == 1
        assert prom.value('groundwatch_exporter_collect_errors_total{what="oldest_unscored"}')
        assert prom.query("groundwatch_oldest_unscored_age_seconds") == []
