"""``groundwatch report --html FILE``: the dashboard's main views as one self-contained page.

Grafana does not run where a newcomer runs the demo, so this draws what the store can tell
(quality per route and metric over time, failure modes, sampling coverage, the worst items and
their explanations) into one HTML file: inline CSS and SVG drawn here, no script, no font, no
request to anywhere, so it opens offline and can be mailed around. Every string from the store
is user data (questions, answers, route names) and is escaped.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html import escape
from pathlib import Path
from typing import Any, Protocol

from groundwatch.report import QualityRules, ReportRow, ScoreLike, build_report, mean_ci95
from groundwatch.report_explain import CSS as EXPLANATION_CSS
from groundwatch.report_explain import render_explanation

DETECTION_ORDER = ("no_relevant_context", "out_of_scope", "refusal", "empty_answer")
DETECTION_MEANING = {
    "no_relevant_context": "retrieval brought nothing relevant (failure mode 1)",
    "out_of_scope": "the question is outside the app's configured scope (failure mode 4)",
    "refusal": "the app declined to answer",
    "empty_answer": "the app answered nothing",
}
# Tableau 10: distinct for the ~10 routes the metrics' label allow-list keeps by default.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
MAX_ROUTE_LINES = len(PALETTE)
OTHER = "other routes"
# Bucket widths a reader can read off an axis; the report picks the first that gives at most
# the wanted number of buckets over the data's span.
_BUCKET_WIDTHS_S = (10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200,
                    86400, 2 * 86400, 7 * 86400, 14 * 86400, 30 * 86400)
# About this many scores per bucket and line, so a point's mean is more than noise.
_SCORES_PER_BUCKET = 8
_MAX_BUCKETS = 30
_MIN_BUCKETS = 4
# A bucket mean of fewer scores is drawn as a hollow dot: it may be one odd item.
FEW_SCORES = 5
_MAX_QUESTION_CHARS = 200
# Worst items are grouped by question among this many lowest scores per worst row shown (the
# questions are read one item at a time from the store, so the look-ups stay bounded).
_CANDIDATES_PER_ROW = 5
_MAX_REJECTED_ROWS = 20


class _ScoreLike(ScoreLike, Protocol):
    @property
    def scorer_version(self) -> str: ...
    @property
    def log_timestamp(self) -> datetime: ...


@dataclass(frozen=True, slots=True)
class Bucket:
    """The ok scores of one route and metric in one time bucket."""

    start: datetime
    n: int
    mean: float
    below: int = 0  # scores strictly below the metric's threshold, what the alerts count

    @property
    def share_below(self) -> float:
        return self.below / self.n


@dataclass
class Chart:
    """One metric (of one scorer): per route, a line of bucket means and one of the share of
    scores below the threshold. ``burn`` holds the burn-rate alerts' shares (name, share),
    drawn on the share chart."""

    metric: str
    scorer: str
    threshold: float | None
    lines: dict[str, list[Bucket]] = field(default_factory=dict)
    burn: tuple[tuple[str, float], ...] = ()


def bucket_width(span: timedelta, scores_per_line: int) -> timedelta:
    """The width of a time bucket: the smallest readable width that puts about
    ``_SCORES_PER_BUCKET`` scores per bucket and line, within 4 to 30 buckets over ``span``."""
    wanted = max(_MIN_BUCKETS, min(_MAX_BUCKETS, scores_per_line // _SCORES_PER_BUCKET))
    seconds = span.total_seconds()
    for width in _BUCKET_WIDTHS_S:
        if seconds / width <= wanted:
            return timedelta(seconds=width)
    return timedelta(seconds=math.ceil(seconds / wanted))


def _bucket_start(t: datetime, width: timedelta) -> datetime:
    w = width.total_seconds()
    epoch = t.timestamp()
    return datetime.fromtimestamp(epoch - epoch % w, tz=UTC)


def _route(route: str | None) -> str:
    return route if route is not None else "-"


def line_routes(counts: Mapping[str, int]) -> dict[str, str]:
    """Route → the line it is drawn on: its own for the busiest ones, ``other routes`` for the
    rest once there are more than the palette has colours."""
    ranked = sorted(counts, key=lambda r: (-counts[r], r))
    if len(ranked) <= MAX_ROUTE_LINES:
        return {r: r for r in ranked}
    keep = set(ranked[:MAX_ROUTE_LINES - 1])
    return {r: (r if r in keep else OTHER) for r in ranked}


def build_charts(scores: Sequence[_ScoreLike], thresholds: Mapping[str, float],
                 burn: Sequence[tuple[str, float]] = (),
                 ) -> tuple[list[Chart], dict[str, str], timedelta | None]:
    """The charts (one per metric and scorer), the route → line mapping shared by all of them
    (so a route has one colour on the page), and the bucket width (None without ok scores)."""
    ok = [s for s in scores if s.outcome == "ok" and s.value is not None]
    if not ok:
        return [], {}, None
    per_route: dict[str, int] = defaultdict(int)
    for s in ok:
        per_route[_route(s.route)] += 1
    lines = line_routes(per_route)
    first = min(s.log_timestamp for s in ok)
    last = max(s.log_timestamp for s in ok)
    per_line: dict[tuple[str, str, str], int] = defaultdict(int)
    for s in ok:
        per_line[(s.metric, s.scorer, lines[_route(s.route)])] += 1
    typical = sorted(per_line.values())[len(per_line) // 2]
    width = bucket_width(last - first, typical)
    values: dict[tuple[str, str], dict[str, dict[datetime, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list)))
    for s in ok:
        assert s.value is not None
        values[(s.metric, s.scorer)][lines[_route(s.route)]][
            _bucket_start(s.log_timestamp, width)].append(float(s.value))
    charts = []
    for (metric, scorer), by_line in sorted(values.items()):
        threshold = thresholds.get(metric)
        chart = Chart(metric, scorer, threshold, burn=tuple(burn))
        for line in sorted(by_line, key=lambda r: (r == OTHER, -per_route.get(r, 0), r)):
            chart.lines[line] = [
                Bucket(start, len(v), math.fsum(v) / len(v),
                       sum(x < threshold for x in v) if threshold is not None else 0)
                for start, v in sorted(by_line[line].items())]
        charts.append(chart)
    return charts, lines, width


# -- SVG ------------------------------------------------------------------------------------

_W, _H = 640, 260
_LEFT, _RIGHT, _TOP, _BOTTOM = 58, 96, 14, 34
MEAN, SHARE = "mean", "share"
def _time_label(t: datetime, span: timedelta, width: timedelta) -> str:
    if width < timedelta(minutes=1):
        return t.strftime("%H:%M:%S")
    if span < timedelta(days=1):
        return t.strftime("%H:%M")
    if span < timedelta(days=7):
        return t.strftime("%m-%d %H:%M")
    return t.strftime("%Y-%m-%d")


def _fmt_width(width: timedelta) -> str:
    s = int(width.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size and s % size == 0:
            return f"{s // size} {unit}"
    return f"{s} s"


def render_chart(chart: Chart, colours: Mapping[str, str], start: datetime, end: datetime,
                 width: timedelta, kind: str = MEAN) -> str:
    """One chart as inline SVG, a line and dots per route; every dot's tooltip gives its
    bucket, n, mean and share below the threshold.

    ``kind`` MEAN plots bucket means, with the threshold dashed over a tinted "below" band;
    SHARE plots the share of scores below the threshold (what the burn-rate alerts count),
    with each burn-rate alert's share dashed and the band above the lowest one tinted.
    """
    plot_w = _W - _LEFT - _RIGHT
    plot_h = _H - _TOP - _BOTTOM
    t0, t1 = start.timestamp(), (end + width).timestamp()
    span = max(t1 - t0, 1.0)
    share = kind == SHARE

    def x(t: datetime) -> float:
        return _LEFT + plot_w * ((t + width / 2).timestamp() - t0) / span

    def y(v: float) -> float:
        return _TOP + plot_h * (1.0 - v)

    def value(b: Bucket) -> float:
        return b.share_below if share else b.mean

    what = "share below threshold" if share else "mean"
    title = f"{chart.metric} ({chart.scorer})" + (f" {what}" if share else "")
    out = [f'<svg class="chart" viewBox="0 0 {_W} {_H}" preserveAspectRatio="xMidYMid meet" '
           f'role="img" aria-label="{escape(title)}">']
    if share and chart.burn:
        lowest = min(v for _, v in chart.burn)
        out.append(f'<rect class="above" x="{_LEFT}" y="{_TOP}" width="{plot_w}" '
                   f'height="{plot_h * (1 - lowest):.1f}"/>')
    elif not share and chart.threshold is not None:
        out.append(f'<rect class="below" x="{_LEFT}" y="{y(chart.threshold):.1f}" '
                   f'width="{plot_w}" height="{plot_h * chart.threshold:.1f}"/>')
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        label = f"{tick:.0%}" if share else f"{tick:.2f}"
        out.append(f'<line class="grid" x1="{_LEFT}" x2="{_LEFT + plot_w}" y1="{y(tick):.1f}" '
                   f'y2="{y(tick):.1f}"/><text class="ytick" x="{_LEFT - 6}" '
                   f'y="{y(tick) + 4:.1f}">{label}</text>')
    ytitle = (f"share below {chart.threshold:.2f}" if share and chart.threshold is not None
              else "mean score")
    out.append(f'<text class="ytitle" transform="translate(14 {_TOP + plot_h / 2:.0f}) '
               f'rotate(-90)">{escape(ytitle)}</text>')
    # Ticks on bucket edges (aligned to the width, so they read as round times), at most 7.
    edges = round((t1 - t0) / width.total_seconds())
    every = max(1, math.ceil(edges / 6))
    for i in range(0, edges + 1, every):
        t = start + width * i
        tx = _LEFT + plot_w * (t.timestamp() - t0) / span
        out.append(f'<line class="axis" x1="{tx:.1f}" x2="{tx:.1f}" y1="{_TOP + plot_h}" '
                   f'y2="{_TOP + plot_h + 4}"/><text class="xtick" x="{tx:.1f}" '
                   f'y="{_TOP + plot_h + 17}">{_time_label(t, end - start, width)}</text>')
    out.append(f'<line class="axis" x1="{_LEFT}" x2="{_LEFT + plot_w}" y1="{_TOP + plot_h}" '
               f'y2="{_TOP + plot_h}"/>')
    if share:
        for name, line in chart.burn:
            ty = y(line)
            short = name.removeprefix("GroundwatchQuality")
            out.append(f'<line class="threshold" x1="{_LEFT}" x2="{_LEFT + plot_w}" '
                       f'y1="{ty:.1f}" y2="{ty:.1f}"><title>{escape(name)} fires above '
                       f'{line:.0%} of items below the threshold (with enough items, over its '
                       f'windows)</title></line><text class="thlabel" x="{_LEFT + plot_w + 6}" '
                       f'y="{ty + 4:.1f}">{escape(short)} {line:.0%}</text>')
    elif chart.threshold is not None:
        ty = y(chart.threshold)
        out.append(f'<line class="threshold" x1="{_LEFT}" x2="{_LEFT + plot_w}" y1="{ty:.1f}" '
                   f'y2="{ty:.1f}"><title>threshold {chart.threshold:.2f}: scores below it '
                   f'count as quality failures</title></line>'
                   f'<text class="thlabel" x="{_LEFT + plot_w + 6}" y="{ty + 4:.1f}">'
                   f'threshold {chart.threshold:.2f}</text>')
    for route, buckets in chart.lines.items():
        colour = colours[route]
        out.append(f'<g class="route" style="--c:{colour}"><title>{escape(route)}</title>')
        # A gap in the data is a gap in the line, not a straight segment across it.
        segment: list[str] = []
        previous: datetime | None = None
        for b in buckets:
            if previous is not None and b.start - previous > width and segment:
                out.append(_polyline(segment))
                segment = []
            segment.append(f"{x(b.start):.1f},{y(value(b)):.1f}")
            previous = b.start
        if segment:
            out.append(_polyline(segment))
        for b in buckets:
            below = (f", {b.below} below {chart.threshold:.2f} ({b.share_below:.0%})"
                     if chart.threshold is not None else "")
            tip = (f"{route} · {b.start:%Y-%m-%d %H:%M:%S}–{b.start + width:%H:%M:%S} UTC\n"
                   f"n = {b.n}, mean {b.mean:.3f}{below}")
            few = ' class="few"' if b.n < FEW_SCORES else ""
            out.append(f'<circle{few} cx="{x(b.start):.1f}" cy="{y(value(b)):.1f}" r="3.5">'
                       f'<title>{escape(tip)}</title></circle>')
        out.append("</g>")
    out.append(f'<text class="xlabel" x="{_LEFT + plot_w / 2:.0f}" y="{_H - 2}">log time '
               f'(UTC), {what} per {_fmt_width(width)}</text></svg>')
    return "".join(out)


def _polyline(points: list[str]) -> str:
    return f'<polyline points="{" ".join(points)}"/>'


# -- page -----------------------------------------------------------------------------------

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2330;
  margin:0;background:#f5f6f8}
main{max-width:1340px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:22px;margin:8px 0 4px}h2{font-size:18px;margin:28px 0 8px;
  border-bottom:1px solid #d9dce3;padding-bottom:4px}h3{font-size:15px;margin:16px 0 6px}
nav a{margin-right:14px}a{color:#1a5fb4}
.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:8px 0}
.meta dt{color:#5b6270}.meta dd{margin:0}
.note{color:#5b6270;max-width:960px}
.cards{display:flex;flex-wrap:wrap;gap:16px}
.card{background:#fff;border:1px solid #d9dce3;border-radius:6px;padding:8px 10px}
.card h3{margin:2px 0 4px}
.legend{display:flex;flex-wrap:wrap;gap:4px 18px;margin:6px 0 10px}
.legend span{display:inline-flex;align-items:center;gap:6px}
.legend i{display:inline-block;width:18px;height:3px;background:var(--c)}
svg.chart{display:block;font-size:11px;width:100%;height:auto}
.metric{display:grid;grid-template-columns:repeat(auto-fit,minmax(480px,1fr));gap:12px}
.wide{flex:1 1 100%}
svg .above{fill:#ffe9cc}svg .ytitle{text-anchor:middle;fill:#30384a;font-size:12px}
td.alert{color:#b00020;font-weight:700}td.quiet{color:#5b6270}
.rules{margin:4px 0 8px 18px;padding:0}
svg .grid{stroke:#e6e8ee}svg .axis{stroke:#8a90a0}
svg .below{fill:#fdecec}
svg .threshold{stroke:#222;stroke-width:1.5;stroke-dasharray:6 4}
svg .thlabel{fill:#222}
svg .ytick{text-anchor:end;fill:#5b6270}svg .xtick,svg .xlabel{text-anchor:middle;fill:#5b6270}
svg .route polyline{fill:none;stroke:var(--c);stroke-width:2.5;stroke-linejoin:round}
svg .route circle{fill:var(--c);stroke:#fff;stroke-width:1}
svg .route circle.few{fill:#fff;stroke:var(--c);stroke-width:1.5}
svg:hover .route{opacity:.3}svg .route:hover{opacity:1}
table{border-collapse:collapse;background:#fff;margin:4px 0 8px}
th,td{border:1px solid #e1e4ea;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#eef0f4;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.low{color:#b00020;font-weight:600}
.bar{display:inline-block;height:9px;background:#7a8bb8;margin-right:6px;vertical-align:middle}
.q{max-width:330px}
.pair{display:grid;grid-template-columns:repeat(auto-fill,minmax(640px,1fr));gap:16px}
pre{background:#fff;border:1px solid #d9dce3;padding:8px;white-space:pre-wrap;
  word-break:break-word;font-size:12px}
section.explanation{margin-top:18px;background:#fff;border:1px solid #d9dce3;border-radius:6px;
  padding:4px 14px 10px}
section.explanation:target{border:2px solid #1a5fb4}
h4{font-size:13px;margin:10px 0 4px}
""" + EXPLANATION_CSS


class _Store(Protocol):
    def scores(self, *, since: datetime | None = ..., scorer: str | None = ...) -> Any: ...
    def count_items(self, *, since: datetime | None = ...) -> Any: ...
    def count_rejections(self, *, since: datetime | None = ...) -> Any: ...
    def count_failures(self, *, since: datetime | None = ...) -> Any: ...
    def item_detections(self, *, since: datetime | None = ...) -> Any: ...
    def item(self, request_id: str) -> Any: ...
    def rejections(self, limit: int = ...) -> Any: ...


def anchor(request_id: str) -> str:
    """A fragment id for an item's explanation: readable where the id allows, unique always."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", request_id)[:60]
    return f"item-{safe}-{hashlib.sha1(request_id.encode()).hexdigest()[:8]}"


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "-"


def _bar(part: int, whole: int, px: int = 120) -> str:
    share = part / whole if whole else 0.0
    return f'<span class="bar" style="width:{max(1, round(px * share)) if part else 0}px"></span>'


def _table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    """``rows`` hold HTML already escaped by the caller."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(rows_) + "</tr>" for rows_ in
                   (list(r) for r in rows))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _td(text: object, cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return f"<td{c}>{escape(str(text))}</td>"


def _short(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def build_html_report(store: _Store, *, thresholds: Mapping[str, float],
                      since: datetime | None = None, scorer: str | None = None,
                      worst: int = 20, now: datetime | None = None,
                      source: str = "", rules: QualityRules | None = None) -> str:
    """The page, as text. ``worst`` caps the worst questions (and so the explanations) per
    metric and scorer; ``source`` says where the data came from (a store URL without its
    password); ``rules`` are the quality alerts' (:func:`groundwatch.report.quality_rules`):
    without them the page shows the share below ``thresholds`` but flags nothing."""
    now = now or datetime.now(UTC)
    rules = rules or QualityRules(thresholds, {}, 0)
    scores = list(store.scores(since=since, scorer=scorer))
    charts, lines, width = build_charts(scores, rules.thresholds,
                                        [(b.alert, b.share) for b in rules.burn])
    colours: dict[str, str] = {}
    for line in dict.fromkeys(lines.values()):
        colours[line] = PALETTE[len(colours) % len(PALETTE)]
    item_counts: dict[tuple[str | None, str, str], int] = store.count_items(since=since)
    detections: dict[str, tuple[str | None, frozenset[str]]] = store.item_detections(
        since=since)
    rejections: dict[tuple[str, str], int] = store.count_rejections(since=since)
    failures: dict[tuple[str, str], int] = store.count_failures(since=since)

    parts = [_header(scores, item_counts, now, since, scorer, source, thresholds)]
    parts.append(_quality(scores, charts, colours, width, rules))
    parts.append(_failure_modes(detections))
    parts.append(_coverage(item_counts, rejections, failures,
                           store.rejections(limit=_MAX_REJECTED_ROWS)))
    worst_html, explained = _worst(scores, store, worst, rules.thresholds)
    parts.append(worst_html)
    parts.append(_explanations(store, explained, rules.thresholds))
    body = "\n".join(parts)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>groundwatch report · {now:%Y-%m-%d %H:%M} UTC</title>"
            f"<style>{CSS}</style></head><body><main id=\"top\">\n{body}\n</main></body></html>\n")


def write_html_report(store: _Store, path: str | Path, **options: Any) -> Path:
    """Write :func:`build_html_report` to ``path`` (its folder is created); return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(build_html_report(store, **options), encoding="utf-8")
    return target


def _header(scores: Sequence[_ScoreLike], item_counts: Mapping[tuple[str | None, str, str], int],
            now: datetime, since: datetime | None, scorer: str | None, source: str,
            thresholds: Mapping[str, float]) -> str:
    times = [s.log_timestamp for s in scores]
    if times:
        first, last = min(times), max(times)
        span = f"{first:%Y-%m-%d %H:%M:%S} – {last:%Y-%m-%d %H:%M:%S} UTC " \
               f"({_fmt_span(last - first)})"
    else:
        span = "no scores"
    scorers = sorted({(s.scorer, s.scorer_version) for s in scores})
    items_total = sum(item_counts.values())
    routes = {_route(s.route) for s in scores}
    outcomes: dict[str, int] = defaultdict(int)
    for s in scores:
        outcomes[str(s.outcome)] += 1
    filters = []
    if since is not None:
        filters.append(f"scores since {since:%Y-%m-%d %H:%M} UTC")
    if scorer is not None:
        filters.append(f"scorer {scorer}")
    rows = [
        ("log time range", span),
        ("items sampled", f"{items_total}"),
        ("scores", f"{len(scores)} ({outcomes.get('ok', 0)} ok, "
                   f"{outcomes.get('not_applicable', 0)} not applicable, "
                   f"{outcomes.get('error', 0)} error) on {len(routes)} route(s)"),
        ("scorers", ", ".join(f"{name} {version}" for name, version in scorers) or "-"),
        ("thresholds", ", ".join(f"{m} {v:.2f}" for m, v in sorted(thresholds.items()))
         + " ([scoring.thresholds])"),
        ("filter", ", ".join(filters) or "none: everything in the store"),
        ("store", source or "-"),
        ("generated", f"{now:%Y-%m-%d %H:%M:%S} UTC"),
    ]
    meta = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in rows)
    nav = ('<nav><a href="#quality">Quality over time</a><a href="#failure-modes">Failure '
           'modes</a><a href="#coverage">Sampling coverage</a><a href="#worst">Worst items</a>'
           '<a href="#explanations">Explanations</a></nav>')
    return f"<header><h1>groundwatch quality report</h1>{nav}<dl class=\"meta\">{meta}</dl></header>"


def _fmt_span(span: timedelta) -> str:
    s = span.total_seconds()
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def _quality(scores: Sequence[_ScoreLike], charts: Sequence[Chart], colours: Mapping[str, str],
             width: timedelta | None, rules: QualityRules) -> str:
    out = ['<section id="quality"><h2>Quality per route and metric over time</h2>']
    if not charts or width is None:
        out.append('<p class="note">No ok scores yet: nothing to draw.</p>')
    else:
        ok_times = [s.log_timestamp for s in scores if s.outcome == "ok"]
        start = _bucket_start(min(ok_times), width)
        end = _bucket_start(max(ok_times), width)
        legend = "".join(f'<span style="--c:{c}"><i></i>{escape(route)}</span>'
                         for route, c in colours.items())
        burn = ", ".join(f"{escape(b.alert)} above {b.share:.0%}" for b in rules.burn)
        out.append(f'<p class="note">Per {_fmt_width(width)} of log time, one line per route. '
                   f'<b>Left</b>: the share of ok scores below the metric\'s threshold, what '
                   f'the burn-rate alerts count ({burn or "no alerts file read"}; the tinted '
                   f'band is above the lowest). <b>Right</b>: the mean, the dashed line the '
                   f'threshold, the tinted band below it. Hover a dot for its n, mean and share;'
                   f' a hollow dot holds fewer than {FEW_SCORES} scores. Not-applicable and '
                   f'error outcomes are not scores and are counted in the table below.</p>'
                   f'<div class="legend">{legend}</div><div class="cards">')
        for chart in charts:
            share = (render_chart(chart, colours, start, end, width, SHARE)
                     if chart.threshold is not None else
                     '<p class="note">No threshold: no share below it.</p>')
            out.append(f'<div class="card wide"><h3>{escape(chart.metric)} '
                       f'<small>({escape(chart.scorer)})</small></h3><div class="metric">'
                       f'{share}{render_chart(chart, colours, start, end, width, MEAN)}'
                       f'</div></div>')
        out.append("</div>")
    report = build_report(scores, worst=0, rules=rules)
    calibrated = any(r.calibrated_mean is not None for r in report)
    rows = [_quality_row(r, calibrated) for r in report]
    if rows:
        out.append("<h3>Per route and metric</h3>")
        out.append(_table(("route", "metric", "scorer", "n (ok)", "not applicable", "error",
                           "mean", *(("calibrated mean",) if calibrated else ()), "95% CI",
                           "threshold", "below threshold", "alert"), rows))
        out.append(_rules_legend(rules))
    out.append("</section>")
    return "".join(out)


def _quality_row(r: ReportRow, calibrated: bool = False) -> list[str]:
    """A row of the quality table; with ``calibrated``, the calibrated mean (docs/
    calibration.md) after the mean, its maps in the cell's title."""
    low = r.mean is not None and r.mean_threshold is not None and r.mean < r.mean_threshold
    ci = f"{r.ci_low:.3f} – {r.ci_high:.3f}" if r.ci_low is not None else "-"
    share = (f"{r.share_below:.1%} ({r.below} of {r.count})" if r.share_below is not None
             else "-")
    if r.alerts:
        alert = (f'<td class="alert" title="{escape(chr(10).join(r.alerts))}">ALERT: '
                 + escape(", ".join(a.split(":")[0].removeprefix("GroundwatchQuality")
                                    for a in r.alerts)) + "</td>")
    else:
        alert = _td(r.quiet.split(": ", 1)[-1] if r.quiet else "", "quiet")
    return [_td(r.route), _td(r.metric), _td(r.scorer), _td(r.count, "num"),
            _td(r.not_applicable, "num"), _td(r.errors, "num"),
            _td(_num(r.mean), "num low" if low else "num"),
            *([_calibrated_cell(r)] if calibrated else []), _td(ci, "num"),
            _td(_num(r.threshold, 2), "num"), _td(share, "num"), alert]


def _calibrated_cell(r: ReportRow) -> str:
    if r.calibrated_mean is None:
        return _td("-", "num")
    title = escape(f"{r.calibrated_n} of {r.count} scores through {', '.join(r.maps)}")
    return f'<td class="num" title="{title}">{_num(r.calibrated_mean)}</td>'


def _rules_legend(rules: QualityRules) -> str:
    if not rules.burn and not rules.mean_thresholds:
        return ('<p class="note">No alerts file was read: nothing is flagged (<code>groundwatch '
                'report --alerts FILE</code>).</p>')
    items = [f"<li><b>{escape(b.alert)}</b> (ALERT: "
             f"{escape(b.alert.removeprefix('GroundwatchQuality'))}): more than {b.share:.0%} "
             f"of the items below the threshold, over {b.windows}</li>"
             for b in rules.burn]
    means = ", ".join(f"{m} {v:.2f}" for m, v in sorted(rules.mean_thresholds.items()))
    items.append(f"<li><b>{escape(rules.mean_alert)}</b> (ALERT: MeanLow): the mean below the "
                 f"mean threshold ({escape(means)}), over {rules.mean_window}</li>")
    return (f'<p class="note">ALERT marks a row on which a quality alert\'s rule holds, the '
            f'report\'s scores taken as one window, with at least {rules.min_samples} scored '
            f'items (<code>min_samples</code>; fewer: not flagged, and the row says why). The '
            f'alerts judge sliding windows, so this is what they would see, not that they '
            f'fired. Rules from <code>{escape(rules.source)}</code>:</p>'
            f'<ul class="rules">{"".join(items)}</ul>')


def _failure_modes(detections: Mapping[str, tuple[str | None, frozenset[str]]]) -> str:
    per_route: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(DETECTION_ORDER, 0))
    explained: dict[str, int] = defaultdict(int)
    for route, kinds in detections.values():
        name = _route(route)
        explained[name] += 1
        for kind in kinds:
            per_route[name][kind] = per_route[name].get(kind, 0) + 1
    out = ['<section id="failure-modes"><h2>Failure modes</h2>',
           '<p class="note">Items whose explanation holds each detection, and their share of '
           'the explained items of the route. ' + "; ".join(
               f"<b>{k}</b>: {escape(v)}" for k, v in DETECTION_MEANING.items()) + ".</p>"]
    if not explained:
        out.append('<p class="note">No explained items yet.</p></section>')
        return "".join(out)
    totals = dict.fromkeys(DETECTION_ORDER, 0)
    rows = []
    for route in sorted(explained, key=lambda r: (-explained[r], r)):
        cells = [_td(route), _td(explained[route], "num")]
        for kind in DETECTION_ORDER:
            n = per_route[route][kind]
            totals[kind] += n
            cells.append(f'<td class="num" title="{n} of {explained[route]}">'
                         f'{_bar(n, explained[route], 80)}{n} ({_pct(n, explained[route])})</td>')
        rows.append(cells)
    whole = sum(explained.values())
    rows.append([_td("all routes"), _td(whole, "num")] + [
        f'<td class="num">{_bar(totals[k], whole, 80)}{totals[k]} ({_pct(totals[k], whole)})</td>'
        for k in DETECTION_ORDER])
    out.append(_table(("route", "explained items", *DETECTION_ORDER), rows))
    out.append("</section>")
    return "".join(out)


def _coverage(item_counts: Mapping[tuple[str | None, str, str], int],
              rejections: Mapping[tuple[str, str], int],
              failures: Mapping[tuple[str, str], int], newest_rejected: Sequence[Any]) -> str:
    statuses = ("queued", "scored", "failed")
    by_route: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(statuses, 0))
    by_rule: dict[str, int] = defaultdict(int)
    for (route, rule, status), n in item_counts.items():
        by_route[_route(route)][status] = by_route[_route(route)].get(status, 0) + n
        by_rule[rule] += n
    total = sum(item_counts.values())
    out = ['<section id="coverage"><h2>Sampling coverage</h2>',
           '<p class="note">What the store holds: the items the sampler took, by status, rule and '
           'route; the source rows it rejected; the work that failed for good. It cannot tell '
           'how many rows were <em>not</em> taken: rows skipped by the sampling rate and rows '
           'capped by a budget are not stored, and retention (<code>store.retention_days</code>) '
           'purges old rows. For those, read the Prometheus metrics '
           '<code>groundwatch_logs_seen_total</code>, '
           '<code>groundwatch_items_sampled_total{route, rule}</code>, '
           '<code>groundwatch_items_capped_total{rule}</code> and '
           '<code>groundwatch_items_rejected_total{reason}</code>.</p>',
           '<div class="cards">']
    status_totals = {s: sum(v[s] for v in by_route.values()) for s in statuses}
    rows = [[_td(route), *(_td(counts[s], "num") for s in statuses),
             _td(sum(counts.values()), "num")]
            for route, counts in sorted(by_route.items(), key=lambda kv: (-sum(kv[1].values()),
                                                                           kv[0]))]
    rows.append([_td("all routes"), *(_td(status_totals[s], "num") for s in statuses),
                 _td(total, "num")])
    out.append('<div class="card"><h3>Items by status</h3>'
               + _table(("route", *statuses, "total"), rows) + "</div>")
    rows = [[_td(rule), f'<td class="num">{_bar(n, total)}{n}</td>', _td(_pct(n, total), "num")]
            for rule, n in sorted(by_rule.items(), key=lambda kv: (-kv[1], kv[0]))]
    out.append('<div class="card"><h3>Items by sampling rule</h3>'
               + (_table(("rule", "items", "share"), rows) if rows
                  else '<p class="note">No items yet.</p>') + "</div>")
    rej_total = sum(rejections.values())
    rows = [[_td(f), _td(reason), f'<td class="num">{_bar(n, rej_total)}{n}</td>']
            for (f, reason), n in sorted(rejections.items(), key=lambda kv: (-kv[1], kv[0]))]
    out.append('<div class="card"><h3>Rejected source rows</h3>'
               + (_table(("field", "reason", "rows"), rows) if rows
                  else '<p class="note">None stored.</p>') + "</div>")
    if newest_rejected:
        rows = [[_td(r.row_ref), _td(r.source), _td(r.field), _td(r.reason),
                 _td(_short(r.detail, 80)), _td(f"{r.created_at:%Y-%m-%d %H:%M:%S}"),
                 f"<td><code>groundwatch explain {escape(r.row_ref)}</code></td>"]
                for r in newest_rejected]
        out.append(f'<div class="card wide"><h3>The newest {len(newest_rejected)} rejected '
                   'rows</h3><p class="note">The row\'s id is its request id where it had one '
                   '(else where the source found it); <code>groundwatch explain ID</code> '
                   'shows the whole rejection. Any age (the counts above follow the filter).'
                   '</p>' + _table(("row id", "source", "field", "reason", "detail",
                                    "rejected (UTC)", "see it with"), rows) + "</div>")
    rows = [[_td(stage), _td(kind), _td(n, "num")]
            for (stage, kind), n in sorted(failures.items(), key=lambda kv: (-kv[1], kv[0]))]
    out.append('<div class="card"><h3>Failures (dead letters)</h3>'
               + (_table(("stage", "kind", "count"), rows) if rows
                  else '<p class="note">None.</p>') + "</div>")
    out.append("</div></section>")
    return "".join(out)


def _worst(scores: Sequence[_ScoreLike], store: _Store, limit: int,
           thresholds: Mapping[str, float]) -> tuple[str, list[str]]:
    groups: dict[tuple[str, str], list[_ScoreLike]] = defaultdict(list)
    for s in scores:
        if s.outcome == "ok" and s.value is not None:
            groups[(s.metric, s.scorer)].append(s)
    candidates = limit * _CANDIDATES_PER_ROW
    out = ['<section id="worst"><h2>Worst questions per metric</h2>',
           f'<p class="note">The {limit} lowest-scored questions of each metric: the items of '
           f'its {candidates} lowest scores grouped by their question, lowest first, with how '
           'many of them asked it. The first request id links to its explanation further down '
           '(the others: <code>groundwatch explain ID</code>).</p><div class="pair">']
    explained: dict[str, None] = {}
    questions: dict[str, str] = {}
    for (metric, scorer), group in sorted(groups.items()):
        lowest = sorted(group, key=lambda s: (s.value, s.request_id))[:candidates]
        by_question: dict[str, list[_ScoreLike]] = {}
        for s in lowest:
            if s.request_id not in questions:
                item = store.item(s.request_id)
                payload = (item.payload or {}) if item is not None else {}
                questions[s.request_id] = " ".join(str(payload.get("question", "")).split())
            by_question.setdefault(questions[s.request_id], []).append(s)
        rows = []
        threshold = thresholds.get(metric)
        for question, same in list(by_question.items())[:limit]:
            first = same[0]
            assert first.value is not None
            explained[first.request_id] = None
            low = threshold is not None and first.value < threshold
            routes = ", ".join(dict.fromkeys(_route(s.route) for s in same))
            others = [escape(s.request_id) for s in same[1:4]]
            more = f" +{len(same) - 4} more" if len(same) > 4 else ""
            ids = (f'<a href="#{anchor(first.request_id)}">{escape(first.request_id)}</a>'
                   + "".join(f"<br><small>{o}</small>" for o in others) + more)
            rows.append([_td(_num(first.value), "num low" if low else "num"),
                         _td(len(same), "num"), _td(routes), f"<td>{ids}</td>",
                         _td(_short(question, _MAX_QUESTION_CHARS) or "(no question)", "q")])
        stats = mean_ci95([float(s.value) for s in group if s.value is not None])
        mean = f", mean {stats[0]:.3f} over {len(group)}" if stats else ""
        out.append(f'<div class="card"><h3>{escape(metric)} '
                   f'<small>({escape(scorer)}{mean})</small></h3>'
                   f'{_table(("lowest", "items", "route", "request ids", "question"), rows)}'
                   '</div>')
    if not groups:
        out.append('<p class="note">No ok scores yet.</p>')
    out.append("</div></section>")
    return "".join(out), list(explained)


def _explanations(store: _Store, request_ids: Sequence[str],
                  thresholds: Mapping[str, float]) -> str:
    out = ['<section id="explanations"><h2>Explanations of the worst items</h2>',
           '<p class="note">Each claim of the answer with its verdict; under it the evidence '
           'the scorer found, the words it shares with the claim <mark>highlighted</mark>, or '
           'the claim\'s words that no passage holds. The text of <code>groundwatch explain'
           '</code> is folded under each.</p>']
    if not request_ids:
        out.append('<p class="note">None.</p>')
    for rid in request_ids:
        out.append(render_explanation(store, rid, anchor(rid), thresholds))
    out.append("</section>")
    return "".join(out)
