"""The Grafana dashboard, generated from code with Grafana's own as-code library.

``python -m metrics.dashboard generate`` (``make dashboard``) writes
``configs/grafana/dashboards/groundwatch.json``, which Grafana loads through the provider in
``configs/grafana/provisioning/dashboards/groundwatch.yml``. ``--check`` writes nothing and
fails when the committed file is stale.

Every line drawn on a panel comes from the alert settings (``configs/alerts.yml`` through
:mod:`metrics.alerts`), so what the dashboard shows as "too low" is what the alerts fire on.
The PromQL follows docs/metrics.md and the alerts' own idioms: counters through ``rate`` /
``increase``, every division guarded (``x / (y > 0)``), a numerator that may not exist yet
filled with ``0 * denominator`` so a share reads 0 rather than "No data" where there is traffic.

The library (PyPI ``grafana-foundation-sdk``, pinned in the ``dev`` extra to the build for the
Grafana of docker-compose.yml) is a development tool: nothing at run time imports this module.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import heatmap, prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models import heatmap as heatmap_model
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from evaluator.errors import ConfigError
from metrics.alerts import AlertsConfig, RuleSet, build, load_alerts
from metrics.alerts.config import REPO_ROOT
from metrics.alerts.rules import DETECTION_KINDS, duration, number, quality_increase

DASHBOARD_PATH = Path("configs/grafana/dashboards/groundwatch.json")
UID = "groundwatch"
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="groundwatch-prometheus")
# The score histogram: its label values fill the route and metric variables.
SCORE_SERIES = "groundwatch_score_count"
# The quality panels read the scores the quality alerts read: the scorers that see every item,
# not a cascade judge's picks (metrics.alerts.rules.JUDGE_SCORERS says why; the judge has its
# own row). A judge that is the only scorer is read, as the alerts read it.
QUALITY_MATCHERS = ('route=~"$route"', 'metric=~"$metric"')
ROUTE = 'route=~"$route"'
# Quantiles drawn for every latency histogram: the typical item, the slow tail, the worst.
QUANTILES = (0.5, 0.95, 0.99)


@dataclass(frozen=True)
class Query:
    """One PromQL target of a panel, with the legend Grafana shows for its series."""

    expr: str
    legend: str


def _sel(*parts: str) -> str:
    inner = ", ".join(p for p in parts if p)
    return f"{{{inner}}}" if inner else ""


def _share(numerator: str, denominator: str) -> str:
    """``numerator / denominator`` as the alerts compute shares: 0 where the denominator has
    traffic and the numerator no series yet, nothing where there is no traffic."""
    return f"({numerator} or 0 * {denominator})\n/ ({denominator} > 0)"


def _quantiles(histogram: str, by: str, selector: str = "") -> list[Query]:
    legend_by = " · ".join("{{" + label.strip() + "}}" for label in by.split(",") if label)
    group = f"le, {by}" if by else "le"
    return [Query(f"histogram_quantile({q}, sum by ({group}) "
                  f"(rate({histogram}_bucket{selector}[$__rate_interval])))",
                  f"p{q * 100:g}" + (f" {legend_by}" if legend_by else ""))
            for q in QUANTILES]


def _steps(base: str, lines: Sequence[tuple[float, str]]) -> dash.ThresholdsConfig:
    """Absolute threshold steps: ``base`` colour below the first line."""
    steps = [model.Threshold(value=None, color=base)]
    steps += [model.Threshold(value=value, color=color) for value, color in sorted(lines)]
    return dash.ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE).steps(steps)


def _target(query: Query, ref: str) -> prometheus.Dataquery:
    return (prometheus.Dataquery().expr(query.expr).legend_format(query.legend).ref_id(ref)
            .range().datasource(DATASOURCE))


def _timeseries(title: str, description: str, queries: Sequence[Query], *, unit: str = "short",
                lines: Sequence[tuple[float, str]] = (), base: str = "green",
                span: int = 8, height: int = 8, min_val: float | None = 0,
                max_val: float | None = None, dashed_refs: Sequence[str] = ()
                ) -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).description(description).datasource(DATASOURCE)
             .unit(unit).span(span).height(height).line_width(1).fill_opacity(10)
             .show_points(common.VisibilityMode.NEVER)
             .legend(common_builder.VizLegendOptions().show_legend(True)
                     .display_mode(common.LegendDisplayMode.LIST)
                     .placement(common.LegendPlacement.BOTTOM)))
    if min_val is not None:
        panel = panel.min(min_val)
    if max_val is not None:
        panel = panel.max(max_val)
    if lines:
        # The alert's line, drawn dashed across the panel (Grafana's threshold style).
        panel = (panel.thresholds(_steps(base, lines))
                 .thresholds_style(common_builder.GraphThresholdsStyleConfig()
                                   .mode(common.GraphThresholdsStyleMode.DASHED)))
    for i, query in enumerate(queries):
        panel = panel.with_target(_target(query, chr(ord("A") + i)))
    for ref in dashed_refs:
        # A constant series (an alert threshold as a query): red, dashed, not filled.
        panel = panel.override_by_query(ref, [
            model.DynamicConfigValue(id_val="custom.lineStyle",
                                     value={"fill": "dash", "dash": [10, 10]}),
            model.DynamicConfigValue(id_val="custom.fillOpacity", value=0),
            model.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": "red"}),
        ])
    return panel


# --- the rows ------------------------------------------------------------------------------

def _mean_threshold_series(config: AlertsConfig) -> str:
    """The mean alert's line per metric, as a constant series labelled ``metric``, shown only
    for the metrics selected that have scores (the same numbers the alert compares against)."""
    chain = "\nor ".join(f'label_replace(vector({number(v)}), "metric", "{m}", "", "")'
                         for m, v in sorted(config.thresholds.items()))
    return f"({chain})\nand on(metric) sum by (metric) ({SCORE_SERIES}{_sel(*QUALITY_MATCHERS)})"


def _quality(rules: RuleSet) -> Iterator[Any]:
    config = rules.config
    fast = rules.alert("GroundwatchQualityBurnFast").params["share"]
    slow = rules.alert("GroundwatchQualityBurnSlow").params["share"]
    mean_window = duration(config.alerts.GroundwatchQualityMeanLow.window)
    def summed(series: str) -> str:
        return quality_increase(series, "$window", matchers=QUALITY_MATCHERS)

    scored = f"({summed(SCORE_SERIES)})"
    failures = f"({summed('groundwatch_quality_failures_total')})"
    cheap = ("The scores of the scorer that sees every item: a cascade judge's picks, "
             "chosen to lean towards failures, are left out, as the quality alerts leave them "
             "out (the judge has its own row).")
    yield dash.Row("Quality per route and metric")
    yield _timeseries(
        "Mean score over $window",
        "Mean score (sum / count of the score histogram) per route and metric over the "
        f"window chosen above. Dashed red: the mean line of GroundwatchQualityMeanLow per "
        f"metric (configs/alerts.yml; it compares the {mean_window} mean, with at least "
        f"{config.min_samples} scored items). {cheap}",
        [Query(f"({summed('groundwatch_score_sum')})\n/ ({scored} > 0)",
               "{{route}} · {{metric}}"),
         Query(_mean_threshold_series(config), "alert line · {{metric}}")],
        unit="none", max_val=1, span=12, dashed_refs=("B",))
    yield _timeseries(
        "Share of scored items below threshold over $window",
        "Items whose score was below its [scoring.thresholds] value, as a share of the scored "
        f"items. Lines: {fast:.0%} (GroundwatchQualityBurnFast, with its short window) and "
        f"{slow:.0%} (GroundwatchQualityBurnSlow); the budget is "
        f"{config.quality.budget_share:.0%}. {cheap}",
        [Query(_share(failures, scored), "{{route}} · {{metric}}")],
        unit="percentunit", max_val=1, span=12,
        lines=((slow, "orange"), (fast, "red")))
    yield _timeseries(
        "Scored items over $window",
        f"Quality alerts fire only on a window with at least {config.min_samples} scored items "
        "(the line): below it, a route's share is an anecdote. Small routes need "
        f"[sampling] route_minimums to reach it. {cheap}",
        [Query(scored, "{{route}} · {{metric}}")],
        lines=((config.min_samples, "green"),), base="text", span=24, height=6)


def _distributions() -> Iterator[Any]:
    yield dash.Row("Score distributions")
    # One heatmap per selected metric (repeat): each metric's scores mean something different.
    yield (heatmap.Panel().title("Score distribution: $metric")
           .description("How many scored items fell in each 0.1-wide score bucket per time "
                        "step (the groundwatch_score histogram, for the selected routes). A "
                        "drop shows as the mass moving down. The scorer that sees every item, "
                        "as in the quality row: a cascade judge's picks are left out.")
           .datasource(DATASOURCE).span(12).height(8).repeat("metric").repeat_direction("h")
           .max_per_row(2).calculate(False)
           .with_target(prometheus.Dataquery()
                        .expr("sum by (le) (\n"
                              + quality_increase("groundwatch_score_bucket", "$__interval",
                                                 "route, metric, le", QUALITY_MATCHERS)
                              + "\n)")
                        .legend_format("{{le}}").format(PromQueryFormat.HEATMAP).ref_id("A")
                        .range().datasource(DATASOURCE))
           .rows_frame(heatmap.RowsHeatmapOptions().layout(common.HeatmapCellLayout.LE))
           .y_axis(heatmap.YAxisConfig().unit("short").decimals(1))
           .color(heatmap.HeatmapColorOptions().mode(heatmap_model.HeatmapColorMode.SCHEME)
                  .scheme("Oranges").scale(heatmap_model.HeatmapColorScale.EXPONENTIAL)
                  .exponent(0.5))
           .cell_gap(1))


_KIND_TEXT = {
    "no_relevant_context": "retrieval brought nothing relevant (failure mode 1)",
    "out_of_scope": "the question is outside the configured scope (failure mode 4)",
    "refusal": "the app declined to answer",
    "empty_answer": "the app returned an empty answer",
}


def _failure_modes(rules: RuleSet) -> Iterator[Any]:
    sampled = ("sum by (route) "
               f"(increase(groundwatch_items_sampled_total{_sel(ROUTE)}[$window]))")
    alert_of = {kind: name for name, kind in DETECTION_KINDS.items()}
    yield dash.Row("Failure modes (share of sampled items)")
    for kind in ("no_relevant_context", "out_of_scope", "refusal", "empty_answer"):
        kind_sel = f'kind="{kind}"'
        detections = ("sum by (route) (increase(groundwatch_detections_total"
                      f"{_sel(ROUTE, kind_sel)}[$window]))")
        name = alert_of.get(kind)
        share = rules.alert(name).params["share"] if name else None
        line = (f" Line: {share:.0%}, {name}." if share is not None else
                " No alert: a symptom, read it beside the quality panels.")
        yield _timeseries(
            kind, f"Items detected as {kind} ({_KIND_TEXT[kind]}) over $window, as a share of "
            f"the route's sampled items.{line}",
            [Query(_share(detections, sampled), "{{route}}")], unit="percentunit",
            lines=((share, "red"),) if share is not None else (), span=6, height=7)


def _coverage(rules: RuleSet) -> Iterator[Any]:
    rejected = rules.alert("GroundwatchRejectedRowsHigh").params["share"]
    rate = "[$__rate_interval]"
    yield dash.Row("Sampling coverage")
    yield _timeseries(
        "Log rows seen", "Rows the sampler read from the source per second, mapped or "
        "rejected.",
        [Query(f"sum by (source) (rate(groundwatch_logs_seen_total{rate}))", "{{source}}")],
        span=6)
    yield _timeseries(
        "Sampled by rule", "Records the sampling policy selected per second, by the rule that "
        "matched (default = default_rate, route_minimum = a per-route minimum).",
        [Query(f"sum by (rule) (rate(groundwatch_items_sampled_total{_sel(ROUTE)}{rate}))",
               "{{rule}}")], span=6)
    yield _timeseries(
        "Rejected rows by reason", "Rows per second that could not be mapped onto a log "
        "record (docs/metrics.md lists the reasons).",
        [Query(f"sum by (reason) (rate(groundwatch_items_rejected_total{rate}))", "{{reason}}")],
        span=6)
    yield _timeseries(
        "Rejected share over $window", "Rejected rows as a share of the rows seen. Line: "
        f"{rejected:.0%}, GroundwatchRejectedRowsHigh.",
        [Query(_share("sum (increase(groundwatch_items_rejected_total[$window]))",
                      "sum (increase(groundwatch_logs_seen_total[$window]))"),
               "rejected share")], unit="percentunit", lines=((rejected, "red"),), span=6)
    yield _timeseries(
        "Capped by rule", "Records per second that a rule's rate selected but a per-minute cap "
        "(max_items_per_minute) refused: coverage given up to the budget.",
        [Query(f"sum by (rule) (rate(groundwatch_items_capped_total{rate}))", "{{rule}}")])
    yield _timeseries(
        "Dropped optional fields", "Optional fields per second left out of a record because "
        "their value could not be read without guessing; the row was kept.",
        [Query(f"sum by (field, reason) (rate(groundwatch_fields_dropped_total{rate}))",
               "{{field}} · {{reason}}")])
    yield _timeseries(
        "Late, unplaceable and missed rows", "Late: rows per second read from the lookback "
        "window behind the cursor (committed late). Unplaceable: rows the source cannot order "
        "(a NULL timestamp), never read until fixed (GroundwatchUnplaceableRows). Missed: rows "
        "behind the cursor never read (lookback too short; read them with groundwatch "
        "backfill). Both counts at the sampler's last check.",
        [Query(f"sum by (source) (rate(groundwatch_source_late_rows_total{rate}))",
               "late/s {{source}}"),
         Query("max by (source) (groundwatch_source_unplaceable_rows)", "unplaceable {{source}}"),
         Query("max by (source) (groundwatch_source_missed_rows)", "missed {{source}}")])


def _scorer(rules: RuleSet) -> Iterator[Any]:
    errors = rules.alert("GroundwatchScorerErrors").params["share"]
    outcomes = "sum by (scorer, metric) (increase(groundwatch_score_outcomes_total[$window]))"
    yield dash.Row("Scorer")
    yield _timeseries(
        "Scorer latency per item", "Scoring time per item (a batch's time spread over its "
        "items), by scorer.",
        _quantiles("groundwatch_scorer_latency_seconds", "scorer"), unit="s")
    yield _timeseries(
        "Scorer error share over $window", "Results with outcome error, as a share of a "
        f"scorer's results per metric: gaps in the scores, not low quality. Line: {errors:.0%}"
        ", GroundwatchScorerErrors. A judge's errors of kind budget or unavailable come with "
        "GroundwatchJudgeBudgetExhausted or GroundwatchJudgeDown.",
        [Query(_share('sum by (scorer, metric) (increase(groundwatch_score_outcomes_total'
                      '{outcome="error"}[$window]))', outcomes), "{{scorer}} · {{metric}}")],
        unit="percentunit", lines=((errors, "red"),))
    yield _timeseries(
        "Longest batch", "The longest scoring batch of any process since the metrics "
        "directory was cleaned: keep broker.visibility_timeout_s several times above it.",
        [Query("max by (scorer) (groundwatch_batch_seconds_max)", "{{scorer}}")], unit="s",
        span=4)
    yield _timeseries(
        "Slow batches over $window", "Batches that ran past half the broker's visibility "
        "timeout; past the whole timeout a batch is scored twice. 0 for every scorer that ran "
        "a batch and had none.",
        [Query("sum by (scorer) (increase(groundwatch_slow_batches_total[$window]))\n"
               "or 0 * max by (scorer) (groundwatch_batch_seconds_max)", "{{scorer}}")], span=4)


# The judge's scores are compared with the cheap scorer's on the random share only.
CASCADE_METRIC = 'metric=~"$metric"'
ALL_ROUTES_SEL = 'route="*"'  # the calibration's figures over all routes
DISAGREED = 'agree="no"'
NOT_JUDGED_REASONS = ("budget", "circuit_open")
# Quantiles of |cheap - judge|: the typical gap and the wide one (DIFF_BUCKETS are coarse).
DIFF_QUANTILES = (0.5, 0.9)


def _judge(rules: RuleSet) -> Iterator[Any]:
    """The LLM judge beside the cheap scorer: its calls and their cost, what it did not judge
    and why, what it was given, how far it agrees with the cheap scorer, and the golden set.
    Panels read nothing until a judge is configured (``[judge] base_url``)."""
    judge_errors = rules.alert("GroundwatchJudgeErrors").params["share"]
    disagreement = rules.alert("GroundwatchJudgeDisagreement").params
    drift = rules.alert("GroundwatchGoldenDrift").params["above"]
    disagree_window = duration(rules.config.alerts.GroundwatchJudgeDisagreement.window)
    judge_calls = "sum (increase(groundwatch_judge_requests_total[$window]))"
    rate = "[$__rate_interval]"
    compared = ("sum by (metric) (increase(groundwatch_cascade_compared_total"
                f"{_sel(CASCADE_METRIC)}[$window]))")
    disagreed = ("sum by (metric) (increase(groundwatch_cascade_compared_total"
                 f"{_sel(CASCADE_METRIC, DISAGREED)}[$window]))")
    # A judge that runs and skipped nothing reads 0 per reason, not "No data".
    running = "0 * max by (judge) (groundwatch_judge_up)"
    not_judged = "\nor ".join(
        ["sum by (judge, reason) (increase(groundwatch_judge_not_judged_total[$window]))"]
        + [f'label_replace({running}, "reason", "{r}", "", "")' for r in NOT_JUDGED_REASONS])
    yield dash.Row("Judge and cascade")
    yield _timeseries(
        "Judge calls by status", "LLM judge calls per second by result (ok or an error "
        "kind: timeout, rate_limited, unparseable, unavailable).",
        [Query(f"sum by (status) (rate(groundwatch_judge_requests_total{rate}))", "{{status}}")],
        span=6)
    yield _timeseries(
        "Judge error share over $window", "Failed judge calls as a share of all. Line: "
        f"{judge_errors:.0%}, GroundwatchJudgeErrors.",
        [Query(_share('sum (increase(groundwatch_judge_requests_total{status!="ok"}[$window]))',
                      judge_calls), "failed share")],
        unit="percentunit", lines=((judge_errors, "red"),), span=6)
    yield _timeseries(
        "Judge up", "1 when the judge answered the last call of a live worker "
        "(GroundwatchJudgeDown fires on 0).",
        [Query("max by (judge) (groundwatch_judge_up)", "{{judge}}")], max_val=1, span=6)
    yield _timeseries(
        "Items not judged over $window", "Items the cascade picked that the judge did not "
        "judge, by why: budget (a token or cost budget was spent, "
        "GroundwatchJudgeBudgetExhausted, which reads the budget-skipped count) or "
        "circuit_open (the judge failed repeatedly and is rested, GroundwatchJudgeDown). Their "
        "cheap scores are stored. 0 for every judge that runs and skipped nothing.",
        [Query(not_judged, "{{judge}} · {{reason}}"),
         Query("sum (increase(groundwatch_budget_exhausted_total[$window]))",
               "budget-skipped (the alert's count)")], span=6)
    yield _timeseries(
        "Judge tokens by kind", "Judge tokens per second, prompt and completion.",
        [Query(f"sum by (kind) (rate(groundwatch_judge_tokens_total{rate}))", "{{kind}}")],
        span=6)
    yield _timeseries(
        "Judge cost per hour", "The judge's spend in USD per hour, at the configured "
        "[judge.prices] (a model without a price costs 0).",
        [Query(f"sum (rate(groundwatch_judge_cost_usd_total{rate})) * 3600", "USD per hour")],
        unit="currencyUSD", span=6)
    yield _timeseries(
        "Redactions by kind", "PII values per second replaced before any text was sent to "
        "the judge (email, phone, card, iban, or a custom pattern's name).",
        [Query(f"sum by (kind) (rate(groundwatch_judge_redactions_total{rate}))", "{{kind}}")],
        span=6)
    yield _timeseries(
        "Items picked by reason", "Items per second the cascade gave the judge: random (the "
        "share, the only ones compared with the cheap scorer), low (cheap score below "
        "judge.cascade.low) or band (inside judge.cascade.band).",
        [Query(f"sum by (reason) (rate(groundwatch_cascade_picked_total{rate}))", "{{reason}}")],
        span=6)
    yield _timeseries(
        "Judge and cheap scorer agree over $window", "Of the random-share items both scored, "
        "the share on which judge and cheap scorer put the metric on the same side of its "
        f"threshold (1 - no / (yes + no)). Line: {1 - disagreement['share']:.0%}; "
        f"GroundwatchJudgeDisagreement fires below it over {disagree_window}, with at least "
        f"{disagreement['min_count']:g} compared items.",
        [Query(f"1 - {_share(disagreed, compared)}", "{{metric}}")],
        unit="percentunit", max_val=1, lines=((1 - disagreement["share"], "green"),),
        base="red", span=6)
    yield _timeseries(
        "|cheap - judge| over $window", "How far apart the two scores are on the random-share "
        "items, per metric: the median and the 90th percentile (from the "
        "groundwatch_cascade_abs_diff histogram; its buckets are 0.05, 0.1, 0.2, 0.3, 0.5, "
        "0.75, 1).",
        [Query(f"histogram_quantile({q}, sum by (le, metric) "
               f"(increase(groundwatch_cascade_abs_diff_bucket{_sel(CASCADE_METRIC)}"
               "[$window])))", f"p{q * 100:g} {{{{metric}}}}")
         for q in DIFF_QUANTILES], unit="none", max_val=1, span=6)
    yield _timeseries(
        "Cheap scorer vs judge per route (ROC-AUC)", "How well the cheap score ranks the "
        "random-share items the judge passed above those it failed, per route, over the "
        "newest calibration refit's window ([calibration] window_s; route * is all routes). "
        "Line: 0.5, a cheap scorer blind on that route: its alerts there say little "
        "(docs/calibration.md).",
        [Query(f"max by (route, metric) (groundwatch_calibration_agreement_auc"
               f"{_sel(CASCADE_METRIC)})", "{{route}} · {{metric}}")],
        unit="none", max_val=1, lines=((0.5, "red"),), span=6)
    yield _timeseries(
        "Calibration error, raw and calibrated", "Expected calibration error of the cheap "
        "score against the judge's value over the newest refit's window, all routes: raw, "
        "and after the fitted map (out of fold). groundwatch_calibration_map_usable says "
        "where a map applies.",
        [Query("max by (metric, values) (groundwatch_calibration_ece"
               f"{_sel(ALL_ROUTES_SEL, CASCADE_METRIC)})", "{{metric}} · {{values}}")],
        unit="none", max_val=1, span=6)
    yield _timeseries(
        "Calibration pairs per route", "Random-share items the judge and the cheap scorer "
        "both scored in the newest refit's window, per route (route * is all routes): a map "
        "needs [calibration] min_pairs of them.",
        [Query(f"max by (route, metric) (groundwatch_calibration_pairs{_sel(CASCADE_METRIC)})",
               "{{route}} · {{metric}}")], unit="none", span=6)
    yield _timeseries(
        "Calibration maps that apply", "1 where the newest fit of a route and metric applies "
        "(enough pairs, a narrow enough band), 0 where its scores stay raw.",
        [Query(f"max by (route, metric) (groundwatch_calibration_map_usable"
               f"{_sel(CASCADE_METRIC)})", "{{route}} · {{metric}}")],
        unit="none", max_val=1, span=6)
    yield _timeseries(
        "Golden set: mean score", "The judge's mean score per metric on the fixed golden set, "
        "at its newest run (judge.golden, docs/judge-golden.md). Empty without a golden set.",
        [Query(f"max by (metric) (groundwatch_golden_score{_sel(CASCADE_METRIC)})",
               "{{metric}}")], unit="none", max_val=1, span=6)
    yield _timeseries(
        "Golden set: drift from the baseline", "Mean |score - baseline score| per golden item "
        "at the newest run: the same inputs judged differently, i.e. the judge changed. Line: "
        f"{number(drift)}, GroundwatchGoldenDrift. Empty without a golden set.",
        [Query(f"max by (metric) (groundwatch_golden_drift{_sel(CASCADE_METRIC)})",
               "{{metric}}")], unit="none", lines=((drift, "red"),), span=6)


def _pipeline(rules: RuleSet) -> Iterator[Any]:
    config = rules.config
    alerts = config.alerts
    yield dash.Row("Pipeline health")
    yield _timeseries(
        "Queue depth", "Batches waiting in the broker queue (measured by the exporter at "
        f"scrape time). Line: {alerts.GroundwatchQueueBacklog.above:g}, "
        "GroundwatchQueueBacklog.",
        [Query("max by (queue) (groundwatch_queue_depth)", "{{queue}}")],
        lines=((alerts.GroundwatchQueueBacklog.above, "red"),), span=6)
    yield _timeseries(
        "Eval lag", "App log time to score time, per item: seconds to minutes when healthy, "
        "hours during a backfill.", _quantiles("groundwatch_eval_lag_seconds", ""), unit="s",
        span=6)
    yield _timeseries(
        "Oldest unscored item", "Age of the oldest item not yet scored, counted from when "
        "the sampler took it (so a backfill of old logs is not a backlog). Line: "
        f"{duration(alerts.GroundwatchBacklogAge.above)}, GroundwatchBacklogAge.",
        [Query("max (groundwatch_oldest_unscored_age_seconds)", "oldest unscored")], unit="s",
        lines=((alerts.GroundwatchBacklogAge.above, "red"),), span=6)
    window = alerts.GroundwatchPipelineStalled.window
    yield _timeseries(
        "Newest score age", "Seconds since the newest ok score of any worker. With items "
        f"sampled, more than {duration(window)} is GroundwatchPipelineStalled.",
        [Query("time() - max (groundwatch_last_score_timestamp_seconds)", "newest score age")],
        unit="s", lines=((window, "red"),), span=6)
    stale = alerts.GroundwatchWorkerDown.stale_after
    yield _timeseries(
        "Heartbeat age by role", "Seconds since the newest heartbeat of any process of a role "
        f"(sampler, worker, exporter). Past {duration(stale)}: GroundwatchWorkerDown / "
        "GroundwatchSamplerDown.",
        [Query("time() - max by (role) (groundwatch_heartbeat_timestamp_seconds)", "{{role}}")],
        unit="s", lines=((stale, "red"),))
    yield _timeseries(
        "Config reloads", "Reloads of the sampling section, ok or refused (a refused reload "
        "keeps the running config; the sampler's log says why).",
        [Query("sum by (result) (increase(groundwatch_config_reloads_total[$__rate_interval]))",
               "{{result}}")])
    yield _timeseries(
        "Source held", "1 while the sampler holds its cursor because every row of a read was "
        "rejected for the same field and reason (a mapping mistake; GroundwatchSourceHeld).",
        [Query("max by (source) (groundwatch_source_held)", "{{source}}")], max_val=1,
        lines=((1, "red"),))


def _app() -> Iterator[Any]:
    rate = "[$__rate_interval]"
    requests = f"sum by (route) (rate(groundwatch_app_requests_total{_sel(ROUTE)}{rate}))"
    yield dash.Row("The app, from its own logs")
    yield _timeseries(
        "App latency", "The app's logged latency_ms per request, by route.",
        _quantiles("groundwatch_app_latency_seconds", "route", _sel(ROUTE)), unit="s")
    yield _timeseries(
        "App error rate", "Requests logged with status error, as a share of the requests "
        "logged (app_errors_total / app_requests_total).",
        [Query(_share(f"sum by (route) (rate(groundwatch_app_errors_total{_sel(ROUTE)}{rate}))",
                      requests), "{{route}}")], unit="percentunit")
    yield _timeseries(
        "App cost per request", "The app's logged cost_usd per logged request, by route.",
        [Query(f"sum by (route) (rate(groundwatch_app_cost_usd_total{_sel(ROUTE)}{rate}))\n"
               f"/ ({requests} > 0)", "{{route}}")], unit="currencyUSD", min_val=None)


# --- the dashboard -------------------------------------------------------------------------

def _label_variable(name: str, label: str) -> dash.QueryVariable:
    return (dash.QueryVariable(name).label(label).datasource(DATASOURCE)
            .query({"query": f"label_values({SCORE_SERIES}, {name})", "refId": name})
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(model.VariableSort.ALPHABETICAL_ASC).multi(True).include_all(True)
            # .*, not the list of known values: All also matches series without the label
            # (route is "" when [metrics] labels leaves it out) and values seen later.
            .all_value(".*")
            .current(model.VariableOption(selected=True, text=["All"], value=["$__all"])))


def _window_variable(config: AlertsConfig) -> dash.IntervalVariable:
    """The quality window, offered at the alerts' own windows; the default is the mean
    alert's."""
    a = config.alerts
    windows = sorted({a.GroundwatchQualityBurnFast.short, a.GroundwatchQualityBurnFast.long,
                      a.GroundwatchQualityBurnSlow.long, a.GroundwatchQualityMeanLow.window})
    default = duration(a.GroundwatchQualityMeanLow.window)
    values = [duration(w) for w in windows]
    return (dash.IntervalVariable("window").label("window").values(",".join(values))
            .current(model.VariableOption(selected=True, text=default, value=default))
            .options([model.VariableOption(selected=v == default, text=v, value=v)
                      for v in values]))


def build_dashboard(rules: RuleSet) -> model.Dashboard:
    """The dashboard for the alert rules ``rules`` (their thresholds are its lines)."""
    builder = (dash.Dashboard("groundwatch").uid(UID)
               .description("Quality of the app's answers, scored continuously by groundwatch "
                            "(docs/dashboard.md). Generated by `make dashboard`: do not edit.")
               .tags(["groundwatch", "generated"]).editable().refresh("1m")
               .time("now-6h", "now").timezone(common.TimeZoneBrowser)
               .tooltip(model.DashboardCursorSync.CROSSHAIR)
               .with_variable(_label_variable("route", "route"))
               .with_variable(_label_variable("metric", "metric"))
               .with_variable(_window_variable(rules.config)))
    for section in (_quality(rules), _distributions(), _failure_modes(rules),
                    _coverage(rules), _scorer(rules), _judge(rules), _pipeline(rules), _app()):
        for item in section:
            builder = (builder.with_row(item) if isinstance(item, dash.Row)
                       else builder.with_panel(item))
    built = builder.build()
    for i, panel in enumerate(built.panels or [], start=1):
        panel.id_val = i
    return built


def dashboard_json(config: AlertsConfig | None = None) -> str:
    """The dashboard as the JSON text that is committed (stable: keys in the SDK's order)."""
    rules = build(config or load_alerts())
    return json.dumps(build_dashboard(rules), cls=JSONEncoder, indent=2) + "\n"


def concrete(expr: str, *, route: str = ".*", metric: str = ".*", window: str = "1h",
             rate_interval: str = "1m", interval: str = "1m") -> str:
    """``expr`` with the dashboard's variables and Grafana's interval macros replaced by
    plain values, as Grafana would send it: how a panel query is checked against Prometheus
    without Grafana (tests/test_prometheus_e2e.py)."""
    values = {"$__rate_interval": rate_interval, "$__interval": interval, "$window": window,
              "$route": route, "$metric": metric}
    for name in sorted(values, key=len, reverse=True):  # $__rate_interval before $__interval
        expr = expr.replace(name, values[name])
    if "$" in expr:
        raise ValueError(f"unknown variable left in {expr!r}")
    return expr


def panel_queries(document: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(panel title, ref id, PromQL) of every target of every panel of a dashboard JSON."""
    for panel in document.get("panels", []):
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                yield inner.get("title", ""), target.get("refId", ""), target["expr"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m metrics.dashboard")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="write configs/grafana/dashboards/groundwatch.json")
    gen.add_argument("--config", default=None, help="the alert settings file")
    gen.add_argument("--out", default=str(REPO_ROOT), help="root to write configs/... under")
    gen.add_argument("--check", action="store_true",
                     help="compare with the file under --out instead of writing")
    args = parser.parse_args(argv)
    try:
        text = dashboard_json(load_alerts(args.config) if args.config else None)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    path = Path(args.out) / DASHBOARD_PATH
    if args.check:
        if not path.is_file() or path.read_bytes() != text.encode("utf-8"):
            print(f"stale (run `make dashboard`): {DASHBOARD_PATH}", file=sys.stderr)
            return 1
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
