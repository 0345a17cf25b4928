"""``groundwatch report``: per route and metric, how many, how good, how sure, which worst."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol


class ScoreLike(Protocol):
    """What a report reads of a score (:class:`~evaluator.store.ScoreRow` has it)."""

    @property
    def request_id(self) -> str: ...
    @property
    def metric(self) -> str: ...
    @property
    def scorer(self) -> str: ...
    @property
    def outcome(self) -> str: ...
    @property
    def value(self) -> float | None: ...
    @property
    def route(self) -> str | None: ...


@dataclass
class ReportRow:
    route: str
    metric: str
    scorer: str
    count: int = 0  # ok scores
    not_applicable: int = 0
    errors: int = 0
    mean: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    worst: list[tuple[str, float]] = field(default_factory=list)


def mean_ci95(values: list[float]) -> tuple[float, float, float] | None:
    """Mean with a normal-approximation 95% interval, clipped to [0, 1]; None when empty.

    With one value the interval is the whole [0, 1]: one sample says nothing about spread.
    """
    n = len(values)
    if n == 0:
        return None
    mean = math.fsum(values) / n
    if n == 1:
        return mean, 0.0, 1.0
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    half = 1.96 * math.sqrt(var / n)
    return mean, max(0.0, mean - half), min(1.0, mean + half)


def build_report(scores: Iterable[ScoreLike], *, worst: int = 3) -> list[ReportRow]:
    groups: dict[tuple[str, str, str], list[ScoreLike]] = defaultdict(list)
    for s in scores:
        groups[(s.route or "-", s.metric, s.scorer)].append(s)
    rows = []
    for (route, metric, scorer), items in sorted(groups.items()):
        ok = [(s.request_id, float(s.value)) for s in items
              if s.outcome == "ok" and s.value is not None]
        row = ReportRow(route, metric, scorer, count=len(ok),
                        not_applicable=sum(s.outcome == "not_applicable" for s in items),
                        errors=sum(s.outcome == "error" for s in items))
        stats = mean_ci95([v for _, v in ok])
        if stats:
            row.mean, row.ci_low, row.ci_high = stats
        row.worst = sorted(ok, key=lambda p: (p[1], p[0]))[:worst]
        rows.append(row)
    return rows


def format_report(rows: list[ReportRow]) -> str:
    if not rows:
        return "no scores yet"
    header = ("route", "metric", "scorer", "n", "n/a", "err", "mean", "95% CI", "worst items")
    table: list[tuple[Any, ...]] = [header]
    for r in rows:
        mean = f"{r.mean:.3f}" if r.mean is not None else "-"
        ci = f"{r.ci_low:.3f}-{r.ci_high:.3f}" if r.ci_low is not None else "-"
        worst = ", ".join(f"{rid} ({v:.2f})" for rid, v in r.worst) or "-"
        table.append((r.route, r.metric, r.scorer, r.count, r.not_applicable, r.errors, mean, ci,
                      worst))
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header) - 1)]
    lines = []
    for row in table:
        cells = [str(c).ljust(w) for c, w in zip(row[:-1], widths, strict=True)]
        lines.append("  ".join([*cells, str(row[-1])]).rstrip())
    lines.insert(1, "-" * min(160, len(lines[0])))
    return "\n".join(lines)
