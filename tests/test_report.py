from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest

from groundwatch.report import build_report, format_report, mean_ci95, quality_rules
from metrics.alerts import load_alerts


@dataclass
class S:
    request_id: str
    metric: str
    scorer: str
    outcome: str
    value: float | None
    route: str | None


def test_mean_and_interval() -> None:
    mean, lo, hi = mean_ci95([0.0, 1.0, 0.5, 0.5])  # type: ignore[misc]
    assert mean == 0.5 and 0.0 < lo < 0.5 < hi < 1.0
    assert mean_ci95([]) is None
    assert mean_ci95([0.3]) == (0.3, 0.0, 1.0)


def test_report_groups_counts_and_worst() -> None:
    scores = [S("a", "faithfulness", "lexical", "ok", 0.9, "docs"),
              S("b", "faithfulness", "lexical", "ok", 0.1, "docs"),
              S("c", "faithfulness", "lexical", "not_applicable", None, "docs"),
              S("d", "faithfulness", "lexical", "error", None, "docs"),
              S("e", "faithfulness", "lexical", "ok", 0.4, None)]
    rows = build_report(scores, worst=1)
    docs = next(r for r in rows if r.route == "docs")
    assert (docs.count, docs.not_applicable, docs.errors) == (2, 1, 1)
    assert docs.mean == 0.5 and docs.worst == [("b", 0.1)]
    text = format_report(rows)
    assert "docs" in text and "worst 0.10  b" in text


# -- what the alerts see ----------------------------------------------------------------------

RULES = quality_rules({"faithfulness": 0.5, "context_relevance": 0.3})  # configs/alerts.yml


def _route(route: str, values: list[float], metric: str = "faithfulness",
           scorer: str = "lexical") -> list[S]:
    return [S(str(uuid.uuid5(uuid.NAMESPACE_URL, f"{route}/{metric}/{scorer}/{i}")), metric,
              scorer, "ok", v, route) for i, v in enumerate(values)]


def test_the_rules_are_the_alerts_files() -> None:
    alerts = load_alerts()
    assert RULES.min_samples == alerts.min_samples
    fast = alerts.alerts.GroundwatchQualityBurnFast
    assert RULES.burn[0].share == fast.factor * alerts.quality.budget_share
    assert RULES.mean_thresholds["faithfulness"] == 0.5


def test_a_route_just_below_its_threshold_is_flagged() -> None:
    n = RULES.min_samples + 10
    low = _route("docs", [0.44, 0.54] * (n // 2))  # mean 0.490, half of the items below 0.50
    ok = _route("billing", [0.9] * n)
    rows = build_report(low + ok, rules=RULES)
    docs = next(r for r in rows if r.route == "docs")
    assert docs.mean == pytest.approx(0.49) and docs.share_below == 0.5
    assert [a.split(":")[0] for a in docs.alerts] == ["GroundwatchQualityBurnSlow",
                                                      "GroundwatchQualityMeanLow"]
    text = format_report(rows, rules=RULES)
    line = next(t for t in text.splitlines() if t.startswith("docs "))
    assert line.split()[-3:] == ["0.50", "50.0%", "!"], line
    assert "! GroundwatchQualityMeanLow: mean 0.490 < 0.50" in text
    assert not next(r for r in rows if r.route == "billing").alerts
    assert "GroundwatchQualityBurnFast: more than 50% of items below" in text  # the legend


def test_too_few_items_are_not_flagged_and_the_report_says_why() -> None:
    rows = build_report(_route("rare", [0.1] * 12), rules=RULES)
    assert rows[0].alerts == [] and rows[0].share_below == 1.0
    text = format_report(rows, rules=RULES)
    assert "!" not in text.split("\n\n")[0]
    assert f"n 12 < {RULES.min_samples} scored items (min_samples)" in " ".join(text.split())


def test_a_judge_sample_is_not_flagged_where_a_cheap_scorer_covers_the_route() -> None:
    n = RULES.min_samples
    rows = build_report(_route("docs", [0.1] * n, scorer="compact")
                        + _route("docs", [0.9] * n), rules=RULES)
    judge = next(r for r in rows if r.scorer == "compact")
    assert judge.alerts == [] and judge.quiet.startswith("judge:")
    alone = build_report(_route("docs", [0.1] * n, scorer="compact"), rules=RULES)
    assert alone[0].alerts  # the judge scores every item: the alerts read it


def test_lines_fit_in_100_columns() -> None:
    route = "customer-support-escalations-emea-tier-2"
    scores = (_route(route, [0.2] * 40, metric="context_relevance", scorer="embedded-minilm-v2")
              + _route("docs", [0.3] * 5))
    question = "Why does my invoice " + "show a surcharge for the premium plan " * 8 + "?"
    text = format_report(build_report(scores, rules=RULES), rules=RULES,
                         question_of=lambda rid: question)
    lines = text.splitlines()
    assert max(len(t) for t in lines) <= 100, max(lines, key=len)
    worst = [t for t in lines if t.lstrip().startswith("worst")]
    assert worst and all(t.endswith("…") for t in worst)
    ids = {s.request_id for s in scores}
    assert all(t.split()[2] in ids for t in worst)  # whole, for `groundwatch explain`
    assert lines[2].startswith("custome…")  # the route, cut to fit
