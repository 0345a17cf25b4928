"""``groundwatch report``: per route and metric, how many, how good, how sure, which worst, and
whether the quality alerts would fire on it.

The alerts (``configs/alerts.yml``) do not fire on a mean alone: the burn-rate alerts fire on
the *share of items below the threshold*, and every quality alert waits for ``min_samples``
scored items. So the report shows both numbers and applies the same rules (:class:`QualityRules`)
to the report's rows, flagging with ``!`` what an alert would page or ticket on.
"""

from __future__ import annotations

import math
import textwrap
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from evaluator.errors import ConfigError
from evaluator.scorers import JUDGES
from metrics.alerts.config import QualityBurn, load_alerts

WIDTH = 100
"""Columns a terminal report fits in (lines are cut or wrapped to it)."""


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


@dataclass(frozen=True)
class BurnRule:
    """One burn-rate alert: it fires above ``share`` of the items below their threshold."""

    alert: str
    share: float
    windows: str  # e.g. "5m and 1h", for the legend


@dataclass(frozen=True)
class QualityRules:
    """The quality alerts' numbers, read from ``configs/alerts.yml`` by :func:`quality_rules`.

    ``thresholds`` are the per-item ``[scoring.thresholds]`` (a score strictly below one counts
    as failing, as the workers count it); ``mean_thresholds`` are GroundwatchQualityMeanLow's;
    ``min_samples`` is the guard every quality alert applies to its window.
    """

    thresholds: Mapping[str, float]
    mean_thresholds: Mapping[str, float]
    min_samples: int
    burn: tuple[BurnRule, ...] = ()
    mean_alert: str = "GroundwatchQualityMeanLow"
    mean_window: str = "1h"
    source: str = ""


def _duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def quality_rules(thresholds: Mapping[str, float],
                  alerts_path: str | Path | None = None) -> QualityRules:
    """The quality alerts' rules with ``thresholds`` (the running config's
    ``[scoring.thresholds]``) as the per-item thresholds, and the alerts file's
    ``quality.mean_thresholds`` over them for the mean alert, as the rule generator merges them.
    """
    config = load_alerts(alerts_path)
    burn = []
    for name in ("GroundwatchQualityBurnFast", "GroundwatchQualityBurnSlow"):
        a = config.alert(name)
        assert isinstance(a, QualityBurn)
        burn.append(BurnRule(name, a.factor * config.quality.budget_share,
                             f"{_duration(a.short)} and {_duration(a.long)}"))
    mean = config.alerts.GroundwatchQualityMeanLow
    return QualityRules(dict(thresholds), {**thresholds, **config.quality.mean_thresholds},
                        config.min_samples, tuple(burn), mean_window=_duration(mean.window),
                        source=config.path)


def report_rules(thresholds: Mapping[str, float],
                 alerts_path: str | Path | None = None) -> tuple[QualityRules, str]:
    """The quality alerts' rules for a report, and "" or why there are no flags: an install
    without the repository's configs/alerts.yml still gets the share below ``thresholds``,
    flagging nothing."""
    try:
        return quality_rules(thresholds, alerts_path), ""
    except ConfigError as exc:
        return QualityRules(dict(thresholds), {}, 0), (
            f"no alert flags: {exc} (pass --alerts FILE, the alerts.yml the rules were "
            "generated from)")


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
    threshold: float | None = None  # per item: below it an item counts as failing
    below: int = 0  # ok scores strictly below ``threshold``
    mean_threshold: float | None = None
    alerts: list[str] = field(default_factory=list)  # what would fire, with its numbers
    quiet: str = ""  # why nothing is flagged though a rule's line is crossed (too few, ...)
    # The calibrated twin (evaluator/calibration): the mean of the ok scores after their map
    # (the raw value where none applied), how many went through one, and which maps.
    calibrated_mean: float | None = None
    calibrated_n: int = 0
    maps: tuple[str, ...] = ()

    @property
    def share_below(self) -> float | None:
        return self.below / self.count if self.count and self.threshold is not None else None


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


def build_report(scores: Iterable[ScoreLike], *, worst: int = 3,
                 rules: QualityRules | None = None) -> list[ReportRow]:
    """One row per route, metric and scorer; with ``rules``, the share below the threshold and
    the quality alerts each row would fire (see :func:`apply_rules`)."""
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
        mapped = [s for s in items if s.outcome == "ok" and s.value is not None
                  and getattr(s, "calibrated", None) is not None]
        if mapped:
            twins = {s.request_id: float(s.calibrated) for s in mapped}  # type: ignore[attr-defined]
            row.calibrated_mean = math.fsum(twins.get(rid, v) for rid, v in ok) / len(ok)
            row.calibrated_n = len(mapped)
            row.maps = tuple(sorted({str(s.calibration) for s in mapped}))  # type: ignore[attr-defined]
        if rules is not None:
            row.threshold = rules.thresholds.get(metric)
            row.mean_threshold = rules.mean_thresholds.get(metric)
            if row.threshold is not None:
                row.below = sum(v < row.threshold for _, v in ok)
        rows.append(row)
    if rules is not None:
        apply_rules(rows, rules)
    return rows


def apply_rules(rows: list[ReportRow], rules: QualityRules) -> None:
    """Fill each row's ``alerts`` and ``quiet`` as the quality alerts would judge the row's
    scores taken as one window.

    As in the rules (metrics/alerts/rules.py): a judge's rows count only where no other scorer
    scored the route and metric (in a cascade the judge sees a sample leaning to failures);
    every alert needs ``min_samples`` scored items; the burn-rate alerts fire above their share
    of items below the threshold, the mean alert below the mean threshold.
    """
    cheap = {(r.route, r.metric) for r in rows if r.scorer not in JUDGES and r.count}
    for r in rows:
        r.alerts, r.quiet = [], ""
        crossed = []
        share = r.share_below
        for burn in rules.burn:
            if share is not None and share > burn.share:
                crossed.append(f"{burn.alert}: {share:.1%} below {r.threshold:.2f} "
                               f"> {burn.share:.0%}")
                break  # the stricter alert implies the looser one
        if r.mean is not None and r.mean_threshold is not None and r.mean < r.mean_threshold:
            crossed.append(f"{rules.mean_alert}: mean {r.mean:.3f} < {r.mean_threshold:.2f}")
        if not crossed:
            continue
        if r.scorer in JUDGES and (r.route, r.metric) in cheap:
            r.quiet = ("judge: not flagged: the alerts read the other scorer of this route and "
                       "metric, not the judge's sample")
        elif r.count < rules.min_samples:
            r.quiet = (f"few: not flagged: n {r.count} < {rules.min_samples} scored items "
                       f"(min_samples), too few to judge; would be "
                       + "; ".join(c.split(":")[0] for c in crossed))
        else:
            r.alerts = crossed


def legend(rules: QualityRules) -> list[str]:
    """What ``!`` means: each quality alert and its rule, from the alerts file."""
    lines = [f"! = an alert's rule holds over the report's scores taken as one window, with at "
             f"least {rules.min_samples} scored items (min_samples; the alerts judge sliding "
             f"windows, so this says what they would see, not that they fired):"]
    for b in rules.burn:
        lines.append(f"  {b.alert}: more than {b.share:.0%} of items below the threshold "
                     f"(over {b.windows})")
    lines.append(f"  {rules.mean_alert}: mean below the mean threshold (over "
                 f"{rules.mean_window})")
    lines.append("<thr = share of ok scores strictly below thr, the per-item threshold "
                 "([scoring.thresholds])" + (f"; rules from {rules.source}" if rules.source
                                              else ""))
    return [w for line in lines for w in textwrap.wrap(
        line, WIDTH, initial_indent=line[:len(line) - len(line.lstrip())],
        subsequent_indent=line[:len(line) - len(line.lstrip())] + "    ")]


def cut(text: str, width: int = WIDTH) -> str:
    """``text`` on one line of at most ``width`` columns, ending in ``…`` when cut."""
    text = text.replace("\r", " ").replace("\n", " ").replace("\t", " ")
    return text if len(text) <= width else text[:width - 1] + "…"


def _ellipsize(text: str, width: int) -> str:
    return text if len(text) <= width else text[:max(1, width - 1)] + "…"


def format_report(rows: list[ReportRow], *, rules: QualityRules | None = None,
                  question_of: Callable[[str], str] | None = None,
                  width: int = WIDTH) -> str:
    """The report as text no wider than ``width`` columns: a table, then under each row what
    would fire (or why not) and its worst items (their whole ids, for ``groundwatch explain``,
    and their questions cut to fit when ``question_of`` gives them)."""
    if not rows:
        return "no scores yet"
    header = ("route", "metric", "scorer", "n", "n/a", "err", "mean", "95% CI", "thr", "<thr",
              "alert")
    table: list[list[str]] = [list(header)]
    for r in rows:
        mean = f"{r.mean:.3f}" if r.mean is not None else "-"
        ci = f"{r.ci_low:.2f}-{r.ci_high:.2f}" if r.ci_low is not None else "-"
        thr = f"{r.threshold:.2f}" if r.threshold is not None else "-"
        share = f"{r.share_below:.1%}" if r.share_below is not None else "-"
        flag = "!" if r.alerts else r.quiet.split(":")[0]
        table.append([r.route, r.metric, r.scorer, str(r.count), str(r.not_applicable),
                      str(r.errors), mean, ci, thr, share, flag])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    # Too wide: cut the free-text columns (route, then scorer, then metric) with an ellipsis.
    for col, floor in ((0, 8), (2, 7), (1, 10)):
        over = sum(widths) + 2 * (len(widths) - 1) - width
        if over > 0:
            widths[col] = max(floor, widths[col] - over)
    lines = []
    for i, row in enumerate(table):
        cells = [_ellipsize(c, w).ljust(w) for c, w in zip(row, widths, strict=True)]
        lines.append(cut("  ".join(cells).rstrip(), width))
        if i == 0:
            lines.append("-" * min(width, len(lines[0])))
            continue
        r = rows[i - 1]
        for text in r.alerts:
            lines.append(cut(f"    ! {text}", width))
        if r.calibrated_mean is not None:
            lines.append(cut(f"    calibrated mean {r.calibrated_mean:.3f} ({r.calibrated_n} of "
                             f"{r.count} through {', '.join(r.maps)})", width))
        if r.quiet:
            lines += textwrap.wrap(r.quiet, width, initial_indent="    ",
                                   subsequent_indent="      ")
        for rid, value in r.worst:
            line = f"    worst {value:.2f}  {rid}"
            question = " ".join((question_of(rid) if question_of else "").split())
            room = width - len(line) - 2
            if question and room >= 12:
                line += "  " + _ellipsize(question, room)
            lines.append(cut(line, width))
    if rules is not None and (rules.burn or rules.mean_thresholds):
        lines += ["", *legend(rules)]
    return "\n".join(lines)
