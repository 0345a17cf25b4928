"""promtool test cases for every alert, computed from the same settings as the rules.

For each alert there is a case where it fires and at least one where it must not (below the
threshold, below the minimum sample count, the series absent, the sampler dead, ...). The
fixtures are derived from the configured numbers (a share midway between the threshold and 1
fires, half the threshold does not; a count of twice the minimum passes the guard, half of it
does not), so the tests stay meaningful when a user edits ``configs/alerts.yml``.

Each case also evaluates the alert's Grafana expression (``... == 1``) at the same instant and
expects exactly the series that fire in Prometheus: the two renderings are checked to agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from metrics.alerts.config import (
    AgeAbove,
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
from metrics.alerts.rules import CALIBRATED, DETECTION_KINDS, JUDGE_SCORERS, RuleSet, number

ROUTE = "checkout"
SCORER = "embedded"
# The cascade's judges in the quality cases: both names, so that the selector is shown to
# leave out each.
RAGAS, COMPACT = JUDGE_SCORERS
JOB_LABELS = {"job": "groundwatch", "instance": "exporter:9464"}


@dataclass
class Series:
    name: str
    labels: dict[str, str]
    values: str

    def selector(self) -> str:
        inner = ", ".join(f'{k}="{v}"' for k, v in self.labels.items())
        return f"{self.name}{{{inner}}}"


@dataclass
class Case:
    """One promtool test group: ``firing`` lists the label sets (without the rule's own
    labels) that must fire at ``eval_time``; empty means nothing may fire. ``pending``: the
    condition holds but not yet for the alert's ``for`` (Grafana's expression, which leaves
    ``for`` to Grafana, is 1 there)."""

    alert: str
    case: str
    series: list[Series]
    eval_time: int
    firing: list[dict[str, str]] = field(default_factory=list)
    pending: list[dict[str, str]] = field(default_factory=list)


def _fmt(x: float) -> str:
    return number(x)


def counter(step_rates: list[tuple[float, int]]) -> str:
    """A counter's values in promtool's expanding notation, continuous across segments:
    ``[(rate, steps), ...]`` increases by ``rate`` per step for ``steps`` steps each."""
    parts = []
    value = 0.0
    first = True
    for rate, steps in step_rates:
        if first:
            parts.append(f"0+{_fmt(rate)}x{steps}")
            value = rate * steps
            first = False
        elif steps > 0:
            start = value + rate
            parts.append(f"{_fmt(start)}+{_fmt(rate)}x{steps - 1}")
            value = start + rate * (steps - 1)
    return " ".join(parts)


def constant(value: float, steps: int) -> str:
    return f"{_fmt(value)}+0x{steps}"


class _Fixtures:
    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules
        self.config = rules.config
        self.step = self.config.evaluation_interval or 60

    def steps(self, seconds: float) -> int:
        return math.ceil(seconds / self.step)

    def at(self, seconds: float) -> int:
        """``seconds`` rounded up to whole steps."""
        return self.steps(seconds) * self.step

    def heartbeat(self, role: str, steps: int) -> Series:
        # Fresh: the value is the sample's own time, as a live process writes it.
        return Series("groundwatch_heartbeat_timestamp_seconds", {"role": role},
                      f"0+{self.step}x{steps}")

    def up(self, value: int, steps: int) -> Series:
        return Series("up", dict(JOB_LABELS), constant(value, steps))

    # --- quality ---------------------------------------------------------------------------

    def _quality_series(self, metric: str, per_step: float, failures: list[tuple[float, int]],
                        mean: float, steps: int, scorer: str = SCORER, *,
                        primary: bool = True) -> list[Series]:
        """A scorer's quality series. With ``quality.values: calibrated`` the first scorer
        (``primary``: the cheap one, or a judge that is the only scorer) writes its values
        as the calibrated series too, as the workers do; a cascade's judge does not."""
        score = {"metric": metric, "scorer": scorer, "route": ROUTE}
        names = ["groundwatch_score_count", "groundwatch_score_sum",
                 "groundwatch_quality_failures_total"]
        if primary and self.config.quality.values == "calibrated":
            names = [CALIBRATED[n] for n in names]
        return [
            Series(names[0], score, counter([(per_step, steps)])),
            Series(names[1], score, counter([(per_step * mean, steps)])),
            Series(names[2], {"metric": metric, "scorer": scorer, "route": ROUTE},
                   counter(failures)),
        ]

    def _other_values(self, series: list[Series]) -> list[Series]:
        """The same series under the quality values the alerts do *not* read (raw <->
        calibrated): what a case uses to show the rules read the configured ones."""
        swap = {**CALIBRATED, **{v: k for k, v in CALIBRATED.items()}}
        return [replace(x, name=swap[x.name]) for x in series]

    def _values_case(self, name: str, good: list[Series], bad: list[Series], t: int) -> Case:
        values = self.config.quality.values
        other = "raw" if values == "calibrated" else "calibrated"
        return Case(name, f"quiet: the {other} scores fail, the {values} ones (read) do not",
                    good + self._other_values(bad), t)

    def quality_burn(self, name: str, a: QualityBurn) -> list[Case]:
        p = self.rules.alert(name).params
        share, n, n_short = p["share"], int(p["min_samples"]), int(p["min_samples_short"])
        metric = sorted(self.config.thresholds)[0]
        t = self.at(a.long + a.for_ + 3 * self.step)
        steps = self.steps(t)
        # Twice each window's minimum, per step.
        k = max(2 * n * self.step / a.long, 2 * n_short * self.step / a.short)
        bad, good = (share + 1) / 2, share / 2
        labels = {"metric": metric, "route": ROUTE}
        cases = [
            Case(name, "fires", self._quality_series(metric, k, [(k * bad, steps)], 0.5, steps),
                 t, [labels]),
            Case(name, "quiet: share below the line",
                 self._quality_series(metric, k, [(k * good, steps)], 0.5, steps), t),
            Case(name, "quiet: too few scored items (min_samples)",
                 self._quality_series(metric, n * self.step / (2 * a.long),
                                      [(n * self.step / (2 * a.long) * bad, steps)], 0.5, steps),
                 t),
        ]
        # A cascade: a judge scores as many items again (more where the line is high), all
        # failing or none. Counted with the cheap scorer's, they would push the share over
        # the line (share / 2 + m > share * (1 + m)) or under it; the cheap scorer alone
        # decides. With no other scorer (scoring.scorer is a judge) the judge's items count.
        m = max(1.0, share / (1 - share))

        def judge(scorer: str, failing: float, per_step: float = k * m,
                  primary: bool = False) -> list[Series]:
            return self._quality_series(metric, per_step, [(per_step * failing, steps)], 0.5,
                                        steps, scorer, primary=primary)

        cases += [
            Case(name, "quiet: the judge's picks fail, the cheap scorer's items do not",
                 self._quality_series(metric, k, [(k * good, steps)], 0.5, steps)
                 + judge(RAGAS, 1.0), t),
            Case(name, "fires: the cheap scorer's items fail, the judge's do not",
                 self._quality_series(metric, k, [(k * bad, steps)], 0.5, steps)
                 + judge(COMPACT, 0.0), t, [labels]),
            Case(name, "fires: the judge is the only scorer",
                 judge(COMPACT, bad, per_step=k, primary=True), t, [labels]),
            self._values_case(
                name, self._quality_series(metric, k, [(k * good, steps)], 0.5, steps),
                self._quality_series(metric, k, [(k * bad, steps)], 0.5, steps), t),
        ]
        # Only the short window bad: the long window must hold the alert back. Possible
        # whenever the short window's weight in the long one is below the line.
        if a.short / a.long < share:
            quiet_steps = steps - self.steps(a.short)
            cases.append(Case(
                name, "quiet: only the short window is bad",
                self._quality_series(metric, k, [(0, quiet_steps), (k, steps - quiet_steps)],
                                     0.5, steps), t))
        return cases

    def quality_mean(self, name: str, a: QualityMean) -> list[Case]:
        n = self.config.min_samples
        metric, threshold = sorted(self.config.thresholds.items())[0]
        t = self.at(a.window + a.for_ + 3 * self.step)
        steps = self.steps(t)
        k = 2 * n * self.step / a.window
        few = n * self.step / (2 * a.window)
        low, high = threshold / 2, (threshold + 1) / 2
        labels = {"metric": metric, "route": ROUTE}
        # A judge's low scores on m times as many items would pull the mean under the line
        # ((high + m * low) / (1 + m) < threshold); the cheap scorer's mean alone decides.
        m = max(1.0, 1 / threshold)
        return [
            Case(name, "fires", self._quality_series(metric, k, [(0, steps)], low, steps), t,
                 [labels]),
            Case(name, "quiet: mean above the threshold",
                 self._quality_series(metric, k, [(0, steps)], high, steps), t),
            Case(name, "quiet: too few scored items (min_samples)",
                 self._quality_series(metric, few, [(0, steps)], low, steps), t),
            Case(name, "quiet: the judge's picks score low, the cheap scorer's items do not",
                 self._quality_series(metric, k, [(0, steps)], high, steps)
                 + self._quality_series(metric, k * m, [(0, steps)], low, steps, RAGAS,
                                        primary=False), t),
            Case(name, "fires: the judge is the only scorer",
                 self._quality_series(metric, k, [(0, steps)], low, steps, COMPACT), t,
                 [labels]),
            self._values_case(name, self._quality_series(metric, k, [(0, steps)], high, steps),
                              self._quality_series(metric, k, [(0, steps)], low, steps), t),
        ]

    # --- shares ----------------------------------------------------------------------------

    def detection(self, name: str, a: WindowShare) -> list[Case]:
        kind = DETECTION_KINDS[name]
        n = self.config.min_samples
        t = self.at(a.window + a.for_ + 3 * self.step)
        steps = self.steps(t)

        def series(per_step: float, share: float | None) -> list[Series]:
            out = [Series("groundwatch_items_sampled_total", {"route": ROUTE, "rule": "default"},
                          counter([(per_step, steps)]))]
            if share is not None:
                out.append(Series("groundwatch_detections_total", {"kind": kind, "route": ROUTE},
                                  counter([(per_step * share, steps)])))
            return out

        k = 2 * n * self.step / a.window
        bad = (a.share + 1) / 2
        return [
            Case(name, "fires", series(k, bad), t, [{"kind": kind, "route": ROUTE}]),
            Case(name, "quiet: share below the line", series(k, a.share / 2), t),
            Case(name, "quiet: none detected yet", series(k, None), t),
            Case(name, "quiet: too few sampled items (min_samples)",
                 series(n * self.step / (2 * a.window), bad), t),
        ]

    def counted_share(self, name: str, a: CountedShare) -> list[Case]:
        t = self.at(a.window + a.for_ + 3 * self.step)
        steps = self.steps(t)
        k = 2 * a.min_count * self.step / a.window
        few = a.min_count * self.step / (2 * a.window)
        bad = (a.share + 1) / 2

        def series(per_step: float, share: float | None) -> list[Series]:
            err = [] if share is None else [(per_step * share, steps)]
            ok = [(per_step * (1 - (share or 0)), steps)]
            if name == "GroundwatchScorerErrors":
                base = {"metric": "faithfulness", "scorer": SCORER}
                out = [Series("groundwatch_score_outcomes_total", {**base, "outcome": "ok"},
                              counter(ok))]
                if err:
                    out.append(Series("groundwatch_score_outcomes_total",
                                      {**base, "outcome": "error"}, counter(err)))
                return out
            if name == "GroundwatchJudgeErrors":
                out = [Series("groundwatch_judge_requests_total", {"status": "ok"}, counter(ok))]
                if err:
                    out.append(Series("groundwatch_judge_requests_total",
                                      {"status": "timeout"}, counter(err)))
                return out
            if name == "GroundwatchJudgeDisagreement":
                base = {"metric": "faithfulness"}
                out = [Series("groundwatch_cascade_compared_total", {**base, "agree": "yes"},
                              counter(ok))]
                if err:
                    out.append(Series("groundwatch_cascade_compared_total",
                                      {**base, "agree": "no"}, counter(err)))
                return out
            # Rejected rows count as seen too.
            out = [Series("groundwatch_logs_seen_total", {"source": "app"},
                          counter([(per_step, steps)]))]
            if err:
                out.append(Series("groundwatch_items_rejected_total",
                                  {"reason": "missing_field"}, counter(err)))
            return out

        fired = {"GroundwatchScorerErrors": {"metric": "faithfulness", "scorer": SCORER},
                 "GroundwatchJudgeDisagreement": {"metric": "faithfulness"}}.get(name, {})
        return [
            Case(name, "fires", series(k, bad), t, [fired]),
            Case(name, "quiet: share below the line", series(k, a.share / 2), t),
            Case(name, "quiet: no disagreement at all" if name == "GroundwatchJudgeDisagreement"
                 else "quiet: no error at all", series(k, None), t),
            Case(name, "quiet: too few to judge (min_count)", series(few, bad), t),
            Case(name, "quiet: series absent", [], t),
        ]

    # --- judge -----------------------------------------------------------------------------

    def judge_down(self, name: str, for_s: int) -> list[Case]:
        t = self.at(for_s + 3 * self.step)
        steps = self.steps(t)
        judge = {"judge": "ragas"}
        return [
            Case(name, "fires", [Series("groundwatch_judge_up", judge, constant(0, steps))], t,
                 [judge]),
            Case(name, "quiet: judge up",
                 [Series("groundwatch_judge_up", judge, constant(1, steps))], t),
            Case(name, "quiet: no judge configured (series absent)", [], t),
        ]

    def budget(self, name: str, a: WindowIncrease) -> list[Case]:
        t = self.at(a.window + a.for_ + 3 * self.step)
        steps = self.steps(t)
        # One jump, early enough that it has been inside the window for `for` at t.
        jump = steps - self.steps(a.for_) - 2
        return [
            Case(name, "fires", [Series("groundwatch_budget_exhausted_total", {},
                                        counter([(0, jump), (3, 1), (0, steps - jump - 1)]))],
                 t, [{}]),
            Case(name, "quiet: nothing skipped",
                 [Series("groundwatch_budget_exhausted_total", {}, constant(0, steps))], t),
        ]

    def golden_accuracy(self, name: str, a: GaugeBelow) -> list[Case]:
        t = self.at(a.for_ + 3 * self.step)
        steps = self.steps(t)
        judge = {"scorer": COMPACT, "metric": "faithfulness"}
        cheap = {"scorer": SCORER, "metric": "faithfulness"}
        low, high = a.below / 2, (a.below + 1) / 2

        def accuracy(labels: dict[str, str], values: str) -> Series:
            return Series("groundwatch_golden_accuracy", labels, values)

        return [
            Case(name, "fires on the scorer that disagrees with the labels",
                 [accuracy(judge, constant(low, steps)), accuracy(cheap, constant(high, steps))],
                 t, [judge]),
            Case(name, "quiet: both agree with the labels",
                 [accuracy(judge, constant(high, steps)), accuracy(cheap, constant(high, steps))],
                 t),
            Case(name, "quiet: no labelled golden items (series absent)", [], t),
        ]

    def golden(self, name: str, a: GaugeAbove) -> list[Case]:
        t = self.at(a.for_ + 3 * self.step)
        steps = self.steps(t)
        moved, still = {"metric": "faithfulness"}, {"metric": "answer_relevance"}
        # Drift is a mean |difference| of scores in [0, 1]: midway between the line and 1
        # fires, half the line does not.
        high, low = (a.above + 1) / 2, a.above / 2

        def drift(labels: dict[str, str], values: str) -> Series:
            return Series("groundwatch_golden_drift", labels, values)

        cases = [
            Case(name, "fires on the metric that moved",
                 [drift(moved, constant(high, steps)), drift(still, constant(low, steps))], t,
                 [moved]),
            Case(name, "quiet: below the line", [drift(moved, constant(low, steps))], t),
            Case(name, "quiet: no golden set (series absent)", [], t),
        ]
        if a.for_ >= 3 * self.step:
            # A run that moved only just now: pending, not yet firing.
            recent = self.steps(a.for_) - 2
            cases.append(Case(
                name, "quiet: moved for less than `for`",
                [drift(moved, f"{constant(low, steps - recent)} {constant(high, recent - 1)}")],
                t, pending=[moved]))
        return cases

    # --- backlog and flow ------------------------------------------------------------------

    def gauge_above(self, name: str, metric: str, labels: dict[str, str], above: float,
                    for_s: int, out: dict[str, str]) -> list[Case]:
        t = self.at(for_s + 3 * self.step)
        steps = self.steps(t)
        return [
            Case(name, "fires", [Series(metric, labels, constant(above * 2 + 1, steps))], t,
                 [out]),
            Case(name, "quiet: at the line", [Series(metric, labels, constant(above, steps))], t),
            Case(name, "quiet: high for less than `for`",
                 [Series(metric, labels, f"{constant(0, steps - self.steps(for_s) + 1)} "
                                         f"{constant(above * 2 + 1, self.steps(for_s) - 2)}")]
                 if for_s >= 3 * self.step else [], t, pending=[out]),
        ]

    def pipeline(self, name: str, a: PipelineStall) -> list[Case]:
        t = self.at(a.window * 2 + a.for_ + 3 * self.step)
        steps = self.steps(t)
        sampled = Series("groundwatch_items_sampled_total", {"route": ROUTE, "rule": "default"},
                         counter([(5, steps)]))
        idle = Series("groundwatch_items_sampled_total", {"route": ROUTE, "rule": "default"},
                      constant(100, steps))
        old = Series("groundwatch_last_score_timestamp_seconds", {}, constant(self.step, steps))
        fresh = Series("groundwatch_last_score_timestamp_seconds", {}, f"0+{self.step}x{steps}")
        return [
            Case(name, "fires", [sampled, old], t, [{}]),
            Case(name, "fires: never scored at all", [sampled], t, [{}]),
            Case(name, "quiet: scores arriving", [sampled, fresh], t),
            Case(name, "quiet: nothing sampled, nothing to score", [idle, old], t),
        ]

    def source(self, name: str, a: SourceStall) -> list[Case]:
        # Traffic for the baseline window, then silence for window + for + margin.
        silent = self.steps(a.window + a.for_ + 3 * self.step)
        busy = self.steps(a.baseline_window) + 2
        steps = busy + silent
        t = steps * self.step
        rows = self.rules.alert(name).params["baseline_rows"]
        k = 4 * rows * self.step / a.baseline_window   # four times the baseline's minimum

        def seen(rate: float, stop: bool = True) -> Series:
            segments = [(rate, busy), (0.0, silent)] if stop else [(rate, steps)]
            return Series("groundwatch_logs_seen_total", {"source": "app"}, counter(segments))

        stale = Series("groundwatch_heartbeat_timestamp_seconds", {"role": "sampler"},
                       constant(self.step, steps))
        alive = self.heartbeat("sampler", steps)
        cases = [
            Case(name, "quiet: rows still arriving", [seen(k, stop=False), alive], t),
            Case(name, "quiet: the sampler is down (GroundwatchSamplerDown's job)",
                 [seen(k), stale], t),
        ]
        if a.app_traffic_expr:
            return cases
        return [
            Case(name, "fires", [seen(k), alive], t, [{}]),
            *cases,
            Case(name, "quiet: traffic too thin to expect a row (baseline_min_rows)",
                 [seen(rows * self.step / (4 * a.baseline_window)), alive], t),
        ]

    def gauge_is(self, name: str, metric: str, fire: float, quiet: float, for_s: int,
                 ) -> list[Case]:
        t = self.at(for_s + 3 * self.step)
        steps = self.steps(t)
        labels = {"source": "app"}
        return [
            Case(name, "fires", [Series(metric, labels, constant(fire, steps))], t, [labels]),
            Case(name, "quiet", [Series(metric, labels, constant(quiet, steps))], t),
            Case(name, "quiet: series absent", [], t),
        ]

    def exporter(self, name: str, for_s: int) -> list[Case]:
        t = self.at(for_s + 3 * self.step)
        steps = self.steps(t)
        return [
            Case(name, "fires", [self.up(0, steps)], t, [dict(JOB_LABELS)]),
            Case(name, "quiet", [self.up(1, steps)], t),
        ]

    def heartbeat_down(self, name: str, a: HeartbeatStale) -> list[Case]:
        role = "worker" if name == "GroundwatchWorkerDown" else "sampler"
        t = self.at(a.stale_after * 2 + a.for_ + 3 * self.step)
        steps = self.steps(t)
        up = self.up(1, steps)
        stale = Series("groundwatch_heartbeat_timestamp_seconds", {"role": role},
                       constant(self.step, steps))
        other = self.heartbeat("worker" if role == "sampler" else "sampler", steps)
        return [
            Case(name, "fires: heartbeat stale", [up, stale], t, [{"role": role}]),
            Case(name, "fires: no heartbeat at all", [up, other], t, [{"role": role}]),
            Case(name, "quiet: heartbeat fresh", [up, self.heartbeat(role, steps)], t),
            Case(name, "quiet: exporter down (GroundwatchExporterDown's job)",
                 [self.up(0, steps), stale], t),
        ]


def cases(rules: RuleSet) -> list[Case]:
    """Every test case, in alert order."""
    f = _Fixtures(rules)
    c = rules.config.alerts
    out: list[Case] = []
    out += f.quality_burn("GroundwatchQualityBurnFast", c.GroundwatchQualityBurnFast)
    out += f.quality_burn("GroundwatchQualityBurnSlow", c.GroundwatchQualityBurnSlow)
    out += f.quality_mean("GroundwatchQualityMeanLow", c.GroundwatchQualityMeanLow)
    for name in DETECTION_KINDS:
        out += f.detection(name, getattr(c, name))
    for name in ("GroundwatchScorerErrors", "GroundwatchJudgeErrors",
                 "GroundwatchRejectedRowsHigh"):
        out += f.counted_share(name, getattr(c, name))
    out += f.judge_down("GroundwatchJudgeDown", c.GroundwatchJudgeDown.for_)
    out += f.budget("GroundwatchJudgeBudgetExhausted", c.GroundwatchJudgeBudgetExhausted)
    out += f.counted_share("GroundwatchJudgeDisagreement", c.GroundwatchJudgeDisagreement)
    out += f.golden("GroundwatchGoldenDrift", c.GroundwatchGoldenDrift)
    out += f.golden_accuracy("GroundwatchGoldenAccuracyLow", c.GroundwatchGoldenAccuracyLow)
    q: GaugeAbove = c.GroundwatchQueueBacklog
    out += f.gauge_above("GroundwatchQueueBacklog", "groundwatch_queue_depth", {"queue": "celery"},
                         q.above, q.for_, {"queue": "celery"})
    age: AgeAbove = c.GroundwatchBacklogAge
    out += f.gauge_above("GroundwatchBacklogAge", "groundwatch_oldest_unscored_age_seconds", {},
                         age.above, age.for_, {})
    out += f.pipeline("GroundwatchPipelineStalled", c.GroundwatchPipelineStalled)
    out += f.source("GroundwatchSourceStalled", c.GroundwatchSourceStalled)
    out += f.gauge_is("GroundwatchSourceHeld", "groundwatch_source_held", 1, 0,
                      c.GroundwatchSourceHeld.for_)
    out += f.gauge_is("GroundwatchUnplaceableRows", "groundwatch_source_unplaceable_rows", 12, 0,
                      c.GroundwatchUnplaceableRows.for_)
    out += f.exporter("GroundwatchExporterDown", c.GroundwatchExporterDown.for_)
    out += f.heartbeat_down("GroundwatchWorkerDown", c.GroundwatchWorkerDown)
    out += f.heartbeat_down("GroundwatchSamplerDown", c.GroundwatchSamplerDown)
    # A case without series is kept only where absence is what it tests.
    return [case for case in out if case.series or case.case.endswith(("absent", "absent)"))]
