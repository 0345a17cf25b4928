"""The alerts as expressions, built from an :class:`~metrics.alerts.config.AlertsConfig`.

Each alert is a conjunction of comparisons (:class:`Term`). It is rendered twice from the same
terms, so the two cannot drift apart:

* for Prometheus, ``t1 > x and t2 >= n``: a filter that returns the series that fire, reading
  the recording rules of the same group (ordered before the alerts, so they are fresh);
* for Grafana-managed rules, ``(t1 > bool x) * (t2 >= bool n)``: the same condition as a 0/1
  value for *every* series that exists, with each recorded series inlined, so Grafana needs
  no recording rule and shows "Normal" series instead of "No data"; its threshold is ``> 0``.

Every division is guarded (``x / (y > 0)``), every counter goes through ``increase`` (reset
safe), and a numerator that may not exist yet (no error so far) is filled with
``0 * denominator``, so a share is 0, not missing, where there is traffic. Series that do not
exist at all (no judge configured) give no result, so nothing fires on them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from evaluator.errors import ConfigError
from evaluator.scorers import JUDGES
from metrics.alerts.config import (
    ALERT_NAMES,
    AgeAbove,
    AlertsConfig,
    CountedShare,
    GaugeAbove,
    GaugeBelow,
    HeartbeatStale,
    PipelineStall,
    QualityBurn,
    QualityMean,
    SourceStall,
    WindowIncrease,
    WindowShare,
)

Ref = Callable[[str], str]
Build = Callable[[Ref], str]

_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def duration(seconds: int) -> str:
    """A Prometheus duration in its largest exact unit: 3600 → ``1h``, 90 → ``90s``."""
    for unit, size in _UNITS:
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return "0s"


def number(value: float) -> str:
    """A float as PromQL text, without binary noise (0.30000000000000004 → 0.3)."""
    return f"{value:.10g}"


@dataclass(frozen=True)
class Record:
    """A recording rule. ``key`` names it for :data:`Ref` lookups; several records may share
    a ``name`` (a family) and differ in ``selector`` (the constant labels their expr sets)."""

    key: str
    name: str
    build: Build
    selector: str = ""
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Term:
    """``lhs op rhs``; ``match`` is the vector-matching clause for a vector ``rhs``
    (e.g. ``on(metric) group_left()``); ``on`` the labels this term is joined on with the
    terms before it (None: identical label sets)."""

    lhs: Build
    op: str
    rhs: float | Build
    match: str = ""
    on: tuple[str, ...] | None = None


@dataclass(frozen=True)
class AlertRule:
    """One alert, rendered. ``labels``/``annotations`` are identical in both renderings."""

    name: str
    severity: str
    for_s: int
    terms: tuple[Term, ...]
    labels: dict[str, str]
    annotations: dict[str, str]
    expr: str
    grafana_expr: str
    params: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RuleSet:
    records: tuple[Record, ...]
    alerts: tuple[AlertRule, ...]
    config: AlertsConfig

    def ref(self, key: str) -> str:
        """The recorded series' selector (what the Prometheus alerts read)."""
        record = self._by_key()[key]
        return record.name + record.selector

    def inline(self, key: str) -> str:
        """The recorded series' expression, with its own references inlined (Grafana)."""
        return "(" + self._by_key()[key].build(self.inline) + ")"

    def record_expr(self, record: Record) -> str:
        return record.build(self.ref)

    def _by_key(self) -> dict[str, Record]:
        return {r.key: r for r in self.records}

    def alert(self, name: str) -> AlertRule:
        return next(a for a in self.alerts if a.name == name)


_LOOSE = re.compile(r"\b(?:or|and|unless)\b|==|!=|>=|<=|>|<")


def _wrap(text: str) -> str:
    """``text`` in parentheses unless it binds tighter than a comparison already: only a
    set operator or a comparison outside any parentheses needs them."""
    depth, top = 0, []
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        top.append(ch if depth == 0 and ch not in "()" else " ")
    flat = "".join(top)
    # Label matchers ({kind="x"}, {status!="ok"}) hold "=" and "!=", never a comparison.
    flat = re.sub(r"{[^}]*}", " ", flat)
    return f"({text})" if _LOOSE.search(flat) else text


def _rhs(term: Term, ref: Ref) -> str:
    return number(term.rhs) if isinstance(term.rhs, (int, float)) else _wrap(term.rhs(ref))


def render_filter(terms: tuple[Term, ...], ref: Ref) -> str:
    """The Prometheus form: series for which every term holds."""
    parts = []
    for i, t in enumerate(terms):
        match = f" {t.match}" if t.match else ""
        cmp = f"{_wrap(t.lhs(ref))} {t.op}{match} {_rhs(t, ref)}"
        if i == 0:
            parts.append(cmp)
        else:
            on = f" on({', '.join(t.on)})" if t.on is not None else ""
            parts.append(f"and{on} {cmp}")
    return "\n".join(parts)


def render_bool(terms: tuple[Term, ...], ref: Ref) -> str:
    """The Grafana form: 1 where every term holds, 0 where one does not."""
    parts = []
    for i, t in enumerate(terms):
        match = f" {t.match}" if t.match else ""
        cmp = f"({_wrap(t.lhs(ref))} {t.op} bool{match} {_rhs(t, ref)})"
        if i == 0:
            parts.append(cmp)
        else:
            # group_left keeps the first term's labels, as `and` does in the filter form.
            on = f" on({', '.join(t.on)}) group_left()" if t.on is not None else ""
            parts.append(f"*{on} {cmp}")
    return "\n".join(parts)


# --- the recording rules -------------------------------------------------------------------

QUALITY_BY = "route, metric"
# The scorer names of the LLM judges (evaluator.judge.scorer.MODES; a test keeps them equal).
# In a cascade the judge scores a random share plus the items the cheap scorer put low or in
# its band: a sample that leans towards failures, so counted with the cheap scorer's scores it
# raises a healthy route's failing share as soon as a judge is added. The quality records
# therefore read the scorers that see every item, every scorer but the judges; the judge has
# its own alerts (GroundwatchJudgeDisagreement, GroundwatchJudgeErrors) and its own dashboard
# row. A route and metric that no other scorer scored in the window are read from the judges
# instead: with ``scoring.scorer`` itself a judge there is no cascade and the judge scores
# every item, and without this fallback such a deployment would have no quality alerts.
JUDGE_SCORERS = JUDGES
NOT_JUDGE = f'scorer!~"{"|".join(JUDGE_SCORERS)}"'
JUDGE = f'scorer=~"{"|".join(JUDGE_SCORERS)}"'
DETECTION_KINDS = {
    "GroundwatchNoRelevantContextHigh": "no_relevant_context",
    "GroundwatchOutOfScopeHigh": "out_of_scope",
    "GroundwatchRefusalsHigh": "refusal",
}


def _increase(metric: str, window: int, by: str | None = None, selector: str = "",
              offset: int = 0) -> str:
    off = f" offset {duration(offset)}" if offset else ""
    agg = f"sum by ({by})" if by else "sum"
    return f"{agg} (increase({metric}{selector}[{duration(window)}]{off}))"


def quality_increase(series: str, window: str, by: str = QUALITY_BY,
                     matchers: tuple[str, ...] = ()) -> str:
    """``sum by (by) (increase(series[window]))`` over the scorers that see every item (see
    :data:`JUDGE_SCORERS`): every scorer but the judges, or the judges where no other scorer
    scored the route and metric. ``matchers`` narrow it further (the dashboard's variables);
    ``window`` is a PromQL duration or a Grafana variable."""
    def summed(name: str, scorers: str, by_: str) -> str:
        return f"sum by ({by_}) (increase({name}{{{', '.join((scorers, *matchers))}}}[{window}]))"

    cheap, judges = summed(series, NOT_JUDGE, by), summed(series, JUDGE, by)
    if series == "groundwatch_score_count" and by == QUALITY_BY:
        return f"{cheap}\nor {judges}"  # `or` alone keeps the judges' where the others have none
    cheap_scored = summed("groundwatch_score_count", NOT_JUDGE, QUALITY_BY)
    return f"{cheap}\nor ({judges}\n  unless on({QUALITY_BY}) {cheap_scored})"


# The calibrated twins of the quality series: recorded for the first scorer only (the one
# that scores every item), so they need no judge selector.
CALIBRATED = {"groundwatch_score_count": "groundwatch_calibrated_score_count",
              "groundwatch_score_sum": "groundwatch_calibrated_score_sum",
              "groundwatch_quality_failures_total":
                  "groundwatch_calibrated_quality_failures_total"}


class _Records:
    """Collects the recording rules the alerts need, each window once. ``values`` is
    ``quality.values``: the quality rules read the raw or the calibrated scores."""

    def __init__(self, values: str = "raw") -> None:
        self.items: dict[str, Record] = {}
        self.values = values

    def add(self, record: Record) -> str:
        self.items.setdefault(record.key, record)
        return record.key

    def _quality(self, series: str, window: str) -> str:
        if self.values == "calibrated":
            return f"sum by ({QUALITY_BY}) (increase({CALIBRATED[series]}[{window}]))"
        return quality_increase(series, window)

    def _name(self, name: str) -> str:
        """A quality record's name, ``..._calibrated_...`` when it reads the calibrated
        scores, so that a rule file says which it is."""
        return name.replace(":groundwatch_", ":groundwatch_calibrated_", 1) \
            if self.values == "calibrated" else name

    def scored(self, w: int) -> str:
        return self.add(Record(
            f"scored:{w}", self._name(f"route_metric:groundwatch_scored:increase{duration(w)}"),
            lambda r: self._quality("groundwatch_score_count", duration(w))))

    def failure_ratio(self, w: int) -> str:
        scored = self.scored(w)
        return self.add(Record(
            f"failures:{w}",
            self._name(f"route_metric:groundwatch_quality_failures:ratio{duration(w)}"),
            lambda r: f"({self._quality('groundwatch_quality_failures_total', duration(w))}"
                      f"\nor 0 * {r(scored)})\n/ ({r(scored)} > 0)"))

    def mean(self, w: int) -> str:
        scored = self.scored(w)
        return self.add(Record(
            f"mean:{w}", self._name(f"route_metric:groundwatch_score:mean{duration(w)}"),
            lambda r: f"({self._quality('groundwatch_score_sum', duration(w))})"
                      f"\n/ ({r(scored)} > 0)"))

    def mean_threshold(self, thresholds: dict[str, float]) -> str:
        def build(r: Ref) -> str:
            return "\nor ".join(
                f'label_replace(vector({number(v)}), "metric", "{m}", "", "")'
                for m, v in sorted(thresholds.items()))
        return self.add(Record("threshold", "metric:groundwatch_score_mean_threshold:config",
                               build))

    def sampled(self, w: int) -> str:
        return self.add(Record(
            f"sampled:{w}", f"route:groundwatch_items_sampled:increase{duration(w)}",
            lambda r: _increase("groundwatch_items_sampled_total", w, "route")))

    def detection_ratio(self, kind: str, w: int) -> str:
        sampled = self.sampled(w)
        sel = f'{{kind="{kind}"}}'
        return self.add(Record(
            f"detections:{kind}:{w}", f"route_kind:groundwatch_detections:ratio{duration(w)}",
            lambda r: f"({_increase('groundwatch_detections_total', w, 'route, kind', sel)}"
                      f'\nor label_replace(0 * {r(sampled)}, "kind", "{kind}", "", ""))'
                      f"\n/ on(route) group_left() ({r(sampled)} > 0)",
            selector=sel, labels={"kind": kind}))

    def outcomes(self, w: int) -> str:
        return self.add(Record(
            f"outcomes:{w}", f"scorer_metric:groundwatch_score_outcomes:increase{duration(w)}",
            lambda r: _increase("groundwatch_score_outcomes_total", w, "scorer, metric")))

    def outcome_error_ratio(self, w: int) -> str:
        total = self.outcomes(w)
        err = '{outcome="error"}'
        return self.add(Record(
            f"outcome_errors:{w}",
            f"scorer_metric:groundwatch_score_outcomes_error:ratio{duration(w)}",
            lambda r: f"({_increase('groundwatch_score_outcomes_total', w, 'scorer, metric', err)}"
                      f" or 0 * {r(total)})\n/ ({r(total)} > 0)"))

    def judge_requests(self, w: int) -> str:
        return self.add(Record(
            f"judge:{w}", f"groundwatch:judge_requests:increase{duration(w)}",
            lambda r: _increase("groundwatch_judge_requests_total", w)))

    def judge_error_ratio(self, w: int) -> str:
        total = self.judge_requests(w)
        bad = '{status!="ok"}'
        return self.add(Record(
            f"judge_errors:{w}", f"groundwatch:judge_requests_error:ratio{duration(w)}",
            lambda r: f"({_increase('groundwatch_judge_requests_total', w, None, bad)}"
                      f" or 0 * {r(total)})\n/ ({r(total)} > 0)"))

    def compared(self, w: int) -> str:
        return self.add(Record(
            f"compared:{w}", f"metric:groundwatch_cascade_compared:increase{duration(w)}",
            lambda r: _increase("groundwatch_cascade_compared_total", w, "metric")))

    def disagreement_ratio(self, w: int) -> str:
        total = self.compared(w)
        no = '{agree="no"}'
        return self.add(Record(
            f"disagree:{w}", f"metric:groundwatch_cascade_disagree:ratio{duration(w)}",
            lambda r: f"({_increase('groundwatch_cascade_compared_total', w, 'metric', no)}"
                      f" or 0 * {r(total)})\n/ ({r(total)} > 0)"))

    def logs_seen(self, w: int) -> str:
        return self.add(Record(
            f"seen:{w}", f"groundwatch:logs_seen:increase{duration(w)}",
            lambda r: _increase("groundwatch_logs_seen_total", w)))

    def rejected_ratio(self, w: int) -> str:
        seen = self.logs_seen(w)
        return self.add(Record(
            f"rejected:{w}", f"groundwatch:items_rejected:ratio{duration(w)}",
            lambda r: f"({_increase('groundwatch_items_rejected_total', w)}"
                      f" or 0 * {r(seen)})\n/ ({r(seen)} > 0)"))


# --- the alerts ----------------------------------------------------------------------------

def _const(text: str) -> Build:
    return lambda r: text


def _rec(key: str) -> Build:
    return lambda r: r(key)


def _heartbeat_age(role: str) -> str:
    # A role that never reported counts as a heartbeat at Unix time 0: absent is as down as
    # stale. label_replace gives the fallback the same labels as the real series.
    return (f'time() - (max by (role) (groundwatch_heartbeat_timestamp_seconds{{role="{role}"}})'
            f'\n  or label_replace(vector(0), "role", "{role}", "", ""))')


def _terms(config: AlertsConfig, name: str, rec: _Records) -> tuple[tuple[Term, ...],
                                                                     dict[str, float]]:
    """The terms of alert ``name`` and the numbers they compare against (for docs/tests)."""
    a = config.alert(name)
    n = config.min_samples
    up = f'max(up{{job="{config.exporter_job}"}})'
    if isinstance(a, QualityBurn):
        share = a.factor * config.quality.budget_share
        return (
            Term(_rec(rec.failure_ratio(a.short)), ">", share),
            Term(_rec(rec.failure_ratio(a.long)), ">", share),
            Term(_rec(rec.scored(a.short)), ">=", a.min_samples_short),
            Term(_rec(rec.scored(a.long)), ">=", n),
        ), {"share": share, "min_samples": n, "min_samples_short": a.min_samples_short}
    if isinstance(a, QualityMean):
        threshold = rec.mean_threshold(config.thresholds)
        return (
            Term(_rec(rec.mean(a.window)), "<", _rec(threshold), match="on(metric) group_left()"),
            Term(_rec(rec.scored(a.window)), ">=", n),
        ), {"min_samples": n, **{f"threshold_{m}": v for m, v in config.thresholds.items()}}
    if name in DETECTION_KINDS:
        assert isinstance(a, WindowShare)
        kind = DETECTION_KINDS[name]
        return (
            Term(_rec(rec.detection_ratio(kind, a.window)), ">", a.share),
            Term(_rec(rec.sampled(a.window)), ">=", n, on=("route",)),
        ), {"share": a.share, "min_samples": n}
    if name == "GroundwatchScorerErrors":
        assert isinstance(a, CountedShare)
        return (
            Term(_rec(rec.outcome_error_ratio(a.window)), ">", a.share),
            Term(_rec(rec.outcomes(a.window)), ">=", a.min_count),
        ), {"share": a.share, "min_count": a.min_count}
    if name == "GroundwatchJudgeErrors":
        assert isinstance(a, CountedShare)
        return (
            Term(_rec(rec.judge_error_ratio(a.window)), ">", a.share),
            Term(_rec(rec.judge_requests(a.window)), ">=", a.min_count),
        ), {"share": a.share, "min_count": a.min_count}
    if name == "GroundwatchJudgeDisagreement":
        assert isinstance(a, CountedShare)
        # Only the random share is compared (the low and band picks are chosen by the cheap
        # score and would bias it), so min_count counts those items, per metric.
        return (
            Term(_rec(rec.disagreement_ratio(a.window)), ">", a.share),
            Term(_rec(rec.compared(a.window)), ">=", a.min_count),
        ), {"share": a.share, "min_count": a.min_count}
    if name == "GroundwatchRejectedRowsHigh":
        assert isinstance(a, CountedShare)
        return (
            Term(_rec(rec.rejected_ratio(a.window)), ">", a.share),
            Term(_rec(rec.logs_seen(a.window)), ">=", a.min_count),
        ), {"share": a.share, "min_count": a.min_count}
    if name == "GroundwatchJudgeDown":
        return (Term(_const("max by (judge) (groundwatch_judge_up)"), "==", 0),), {}
    if name == "GroundwatchJudgeBudgetExhausted":
        assert isinstance(a, WindowIncrease)
        return (Term(_const(_increase("groundwatch_budget_exhausted_total", a.window)), ">", 0),
                ), {}
    if name == "GroundwatchGoldenDrift":
        assert isinstance(a, GaugeAbove)
        # A gauge set at each golden run (mostrecent): it holds between runs, and is absent
        # until a golden set is configured and has run.
        return (Term(_const("max by (metric) (groundwatch_golden_drift)"), ">", a.above),
                ), {"above": a.above}
    if name == "GroundwatchGoldenAccuracyLow":
        assert isinstance(a, GaugeBelow)
        # Set at each golden run whose items carry labels (mostrecent), per scorer: absent
        # without labels.
        return (Term(_const("min by (scorer, metric) (groundwatch_golden_accuracy)"), "<",
                     a.below),), {"below": a.below}
    if name == "GroundwatchQueueBacklog":
        assert isinstance(a, GaugeAbove)
        # max, not sum: every exporter of a fleet reports the same broker queue.
        return (Term(_const("max by (queue) (groundwatch_queue_depth)"), ">", a.above),
                ), {"above": a.above}
    if name == "GroundwatchBacklogAge":
        assert isinstance(a, AgeAbove)
        return (Term(_const("max(groundwatch_oldest_unscored_age_seconds)"), ">", a.above),
                ), {"above": a.above}
    if name == "GroundwatchPipelineStalled":
        assert isinstance(a, PipelineStall)
        # Items sampled, not merely logs seen: a low sampling rate on quiet traffic may select
        # nothing for a while, and then no score is expected. max(...) or vector(0): no score
        # since the metrics directory was cleaned is as stalled as an old one.
        return (
            Term(_const(_increase("groundwatch_items_sampled_total", a.window)), ">", 0),
            Term(_const("time() - (max(groundwatch_last_score_timestamp_seconds) or vector(0))"),
                 ">", a.window, on=()),
        ), {"window": a.window}
    if name == "GroundwatchSourceStalled":
        assert isinstance(a, SourceStall)
        # groundwatch_app_requests_total counts the rows the sampler reads, so it cannot vouch
        # for traffic the sampler does not see. "Traffic normally flows" is therefore either
        # the app's own counter (app_traffic_expr) or groundwatch's own history: the baseline
        # window before this one averaged at least baseline_min_rows rows per window.
        baseline_rows = a.baseline_min_rows * a.baseline_window / a.window
        alive = (Term(_const(a.app_traffic_expr), ">", 0, on=()) if a.app_traffic_expr else
                 Term(_const(_increase("groundwatch_logs_seen_total", a.baseline_window,
                                       offset=a.window)), ">=", baseline_rows, on=()))
        return (
            Term(_const(_increase("groundwatch_logs_seen_total", a.window)), "==", 0),
            alive,
            Term(_const(_heartbeat_age("sampler")), "<",
                 config.alerts.GroundwatchSamplerDown.stale_after, on=()),
        ), {"baseline_rows": baseline_rows}
    if name == "GroundwatchSourceHeld":
        return (Term(_const("max by (source) (groundwatch_source_held)"), "==", 1),), {}
    if name == "GroundwatchUnplaceableRows":
        return (Term(_const("max by (source) (groundwatch_source_unplaceable_rows)"), ">", 0),
                ), {}
    if name == "GroundwatchExporterDown":
        return (Term(_const(f'up{{job="{config.exporter_job}"}}'), "==", 0),), {}
    if name in ("GroundwatchWorkerDown", "GroundwatchSamplerDown"):
        assert isinstance(a, HeartbeatStale)
        role = "worker" if name == "GroundwatchWorkerDown" else "sampler"
        # Only while an exporter answers: with none up, every series is absent and
        # GroundwatchExporterDown says so once.
        return (
            Term(_const(_heartbeat_age(role)), ">", a.stale_after),
            Term(_const(up), "==", 1, on=()),
        ), {"stale_after": a.stale_after}
    raise AssertionError(f"no expression for alert {name}")  # pragma: no cover


_DURATION_FIELDS = ("for_", "short", "long", "window", "baseline_window", "stale_after")
_PARAM = re.compile(r"\$([a-z_]+)")


def text_values(config: AlertsConfig, name: str) -> dict[str, str]:
    """What ``$NAME`` in an alert's summary/description stands for."""
    a = config.alert(name)
    values = {"min_samples": str(config.min_samples),
              "budget_share": f"{config.quality.budget_share * 100:g}%"}
    for key, value in a.model_dump(exclude={"severity", "summary", "description"}).items():
        shown = key.removesuffix("_")
        if key in _DURATION_FIELDS or (key == "above" and isinstance(a, AgeAbove)):
            values[shown] = duration(int(value))
        elif key == "share":
            values[shown] = f"{value * 100:g}%"
        elif isinstance(value, (int, float)):
            values[shown] = number(value)
    if isinstance(a, QualityBurn):
        values["line"] = f"{a.factor * config.quality.budget_share * 100:g}%"
    return values


def fill_text(config: AlertsConfig, name: str, field_name: str, text: str) -> str:
    """``text`` with each ``$NAME`` outside ``{{ }}`` replaced by the alert's setting."""
    values = text_values(config, name)

    def one(m: re.Match[str]) -> str:
        if m.group(1) not in values:
            raise ConfigError(f"${m.group(1)} is not a setting of this alert; known: "
                              + ", ".join(f"${k}" for k in sorted(values)),
                              path=config.path, key=f"alerts.{name}.{field_name}")
        return values[m.group(1)]

    parts = re.split(r"({{.*?}})", text, flags=re.S)
    return "".join(p if p.startswith("{{") else _PARAM.sub(one, p) for p in parts).strip()


def build(config: AlertsConfig) -> RuleSet:
    """Every alert of ``config`` with its recording rules, rendered for both back ends."""
    rec = _Records(config.quality.values)
    built = [(name, *_terms(config, name, rec)) for name in ALERT_NAMES]
    shell = RuleSet(tuple(rec.items.values()), (), config)
    alerts = []
    for name, terms, params in built:
        a = config.alert(name)
        alerts.append(AlertRule(
            name=name, severity=a.severity, for_s=a.for_, terms=terms,
            labels={"severity": a.severity, "service": config.service},
            annotations={"summary": fill_text(config, name, "summary", a.summary),
                         "description": fill_text(config, name, "description", a.description),
                         "runbook_url": config.runbook_url(name)},
            expr=render_filter(terms, shell.ref),
            grafana_expr=render_bool(terms, shell.inline),
            params=params))
    return RuleSet(shell.records, tuple(alerts), config)
