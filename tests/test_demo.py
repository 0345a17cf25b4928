"""`groundwatch demo` as a user runs it: no Redis, no LLM, no network."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from groundwatch.cli import build_parser
from tests.gw_helpers import parse_metrics, total
from tests.judge_server import CHAT_PATH, JudgeServer


def test_demo_runs_offline_and_leaves_a_report_a_snapshot_and_an_html_page(tmp_path: Path) -> None:
    env = {**os.environ, "GROUNDWATCH__BROKER__URL": "redis://127.0.0.1:1/0"}  # must not matter
    proc = subprocess.run(
        [sys.executable, "-m", "groundwatch", "demo", "--items", "300", "--workdir",
         str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = proc.stdout
    for route in ("docs_qa", "billing", "support_chat"):
        assert route in out
    assert re.search(r"rows read 300, sampled \d+, rejected \d+; scored \d+, failed 0", out)
    snapshot = Path(re.search(r"Prometheus snapshot of the metrics: (\S+)", out).group(1))  # type: ignore[union-attr]
    parsed = parse_metrics(snapshot.read_text())
    sampled = total(parsed, "groundwatch_items_sampled_total")
    assert sampled > 0
    assert total(parsed, "groundwatch_score_outcomes_total") == 4 * sampled
    assert total(parsed, "groundwatch_logs_seen_total") == 300
    for kind in ("no_relevant_context", "empty_answer", "refusal"):
        assert total(parsed, "groundwatch_detections_total", kind=kind) > 0
    assert "claims (" in out and "least faithful answer" in out
    assert "judge: none configured (--judge-url): the cascade is skipped" in out
    page = Path(re.search(r"HTML report \(.*\): (\S+)", out).group(1))  # type: ignore[union-attr]
    assert page == tmp_path / "demo" / "report.html"
    # It ends with three next steps, each command of which parses.
    steps = out.split("Next steps, on your own app's logs:")[1]
    assert str(page) in out.split("Next steps")[0].splitlines()[-2]
    assert re.findall(r"^  (\d)\. ", steps, re.MULTILINE) == ["1", "2", "3"]
    for key in ("[source.sql] url and table", "[source.columns]", "[store] url", "[broker] url"):
        assert key in " ".join(steps.split()), key
    commands = re.findall(r"^  \d\. (groundwatch [\w-]+)", steps, re.MULTILINE)
    assert commands == ["groundwatch check-config", "groundwatch run"]
    for command in commands:
        build_parser().parse_args(command.split()[1:])
    # The exporter's URL is said to be up while the demo runs, not left as if it still were.
    assert "exporter (up while the demo runs): http://127.0.0.1:" in out
    assert "it stopped with the demo" in out
    html = page.read_text(encoding="utf-8")
    assert html.count('<svg class="chart"') == 2 * 4  # per metric: share below, and mean
    for route in ("docs_qa", "billing", "support_chat"):
        assert f"<td>{route}</td>" in html
    assert f"<dt>items sampled</dt><dd>{int(sampled)}</dd>" in html
    from evaluator.errors import ConfigError
    from evaluator.scorers import check_scorer_name

    try:
        check_scorer_name("embedded")
    except ConfigError:
        return  # the demo fell back to lexical, which has no scope detector
    assert total(parsed, "groundwatch_detections_total", kind="out_of_scope") > 0


def test_the_judge_summary_counts_items_by_what_became_of_them() -> None:
    """Issue 20: "33 items judged" was printed when none got a judge score."""
    from types import SimpleNamespace

    from groundwatch.demo import judged_items

    def row(rid: str, outcome: str, reason: str | None = None,
            scorer: str = "compact") -> SimpleNamespace:
        return SimpleNamespace(scorer=scorer, request_id=rid, outcome=outcome, reason=reason)

    scores = [row("a", "ok"), row("a", "error", "timeout"),
              row("b", "error", "timeout"), row("b", "error", "timeout"),
              row("c", "not_applicable", "no_claims"), row("c", "error", "unparseable"),
              row("d", "not_applicable", "no_claims"), row("e", "ok", scorer="embedded")]
    items, metrics = judged_items(scores, "compact")
    assert items == {"scored": 1, "error:timeout": 1, "error:unparseable": 1,
                     "not_applicable": 1}
    assert metrics == {"ok": 1, "error:timeout": 3, "error:unparseable": 1,
                       "not_applicable": 2}
    none, _ = judged_items([row("x", "error", "timeout")], "compact")
    assert none["scored"] == 0 and none["error:timeout"] == 1


# compact only: ragas's path through a real worker is tests/test_judge_worker.py's, and a
# second demo run would add 40 s to CI for the same wiring.
@pytest.mark.parametrize("mode", ["compact"])
def test_the_demo_runs_the_cascade_when_a_judge_url_is_given(tmp_path: Path, mode: str) -> None:
    with JudgeServer() as server:
        proc = subprocess.run(
            [sys.executable, "-m", "groundwatch", "demo", "--items", "150", "--workdir",
             str(tmp_path / "demo"), "--judge-url", server.url, "--judge-model", "stub",
             "--judge-mode", mode, "--judge-key-env", "GW_DEMO_JUDGE_KEY"],
            capture_output=True, text=True, timeout=240, cwd=tmp_path,
            env={**os.environ, "GW_DEMO_JUDGE_KEY": "sk-demo-3c5e7a9b1d"})
        chat_calls = server.count(CHAT_PATH)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = proc.stdout
    assert f"judge: {mode} on {server.url} (model stub): the cascade sends 20%" in out
    found = re.search(rf"judge \({mode}, stub\): (\d+) items sent, (\d+) with a judge score"
                      r"[^;]*; metric scores (.*); (\d+) calls", out)
    assert found, out[-3000:]
    assert int(found.group(1)) >= int(found.group(2)) > 0 and "ok " in found.group(3)
    assert int(found.group(4)) >= chat_calls > 0
    snapshot = Path(re.search(r"Prometheus snapshot of the metrics: (\S+)", out).group(1))  # type: ignore[union-attr]
    parsed = parse_metrics(snapshot.read_text())
    assert total(parsed, "groundwatch_score_outcomes_total", scorer=mode) > 0
    assert total(parsed, "groundwatch_cascade_picked_total", reason="random") > 0
    assert "sk-demo-3c5e7a9b1d" not in out + proc.stderr
