from __future__ import annotations

from dataclasses import dataclass

from groundwatch.report import build_report, format_report, mean_ci95


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
    assert "docs" in text and "b (0.10)" in text
