"""The alert settings: ``configs/alerts.yml``, loaded into one typed, validated object.

Every number an alert uses (threshold, window, minimum sample count, ``for``) and every text
it carries (severity, summary, description) lives in that file. :func:`load_alerts` reads it;
:mod:`metrics.alerts.rules` turns it into expressions; the generator writes the Prometheus
rules, their promtool tests and the Grafana provisioning file from it. A bad value is one
:class:`~evaluator.errors.ConfigError` naming the file and the key.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from evaluator.config import load_config, parse_duration
from evaluator.errors import ConfigError
from evaluator.scorers.base import METRICS

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PATH = REPO_ROOT / "configs" / "alerts.yml"


def _whole_seconds(value: Any) -> int:
    seconds = parse_duration(value)
    if seconds != int(seconds):
        raise ValueError(f"{value!r}: alert durations are whole seconds")
    return int(seconds)


# Seconds; written in the file as Prometheus durations ("5m", "1h", "90s") or a number.
Seconds = Annotated[int, BeforeValidator(_whole_seconds)]
Window = Annotated[int, BeforeValidator(_whole_seconds), Field(ge=1)]
Share = Annotated[float, Field(gt=0.0, lt=1.0)]
Count = Annotated[int, Field(ge=1)]
# Where a firing alert goes: "page" wakes a person, "ticket" waits for working hours.
Severity = Literal["page", "ticket"]
SEVERITIES: tuple[Severity, ...] = get_args(Severity)

# Annotations are rendered by Prometheus *and* by Grafana, whose template data differ
# ($value is a number in one and a map in the other). Only label references mean the same
# in both, so they are the only template action allowed.
_ACTION = re.compile(r"{{(.*?)}}", re.S)
_LABEL_REF = re.compile(r"\s*\$labels\.([A-Za-z_][A-Za-z0-9_]*)\s*")


def template_labels(text: str) -> list[str]:
    """The label names a summary/description refers to; ValueError for any other action."""
    names = []
    for action in _ACTION.findall(text):
        match = _LABEL_REF.fullmatch(action)
        if match is None:
            raise ValueError(
                f"template action {{{{{action}}}}} is not allowed: use only "
                "{{ $labels.NAME }} (Grafana and Prometheus render anything else differently)")
        names.append(match.group(1))
    if "{{" in _ACTION.sub("", text) or "}}" in _ACTION.sub("", text):
        raise ValueError("unbalanced '{{' or '}}' in the text")
    return names


def render_template(text: str, labels: dict[str, str]) -> str:
    """``text`` with each ``{{ $labels.X }}`` replaced as Prometheus renders it."""
    return _ACTION.sub(lambda m: labels.get(_LABEL_REF.fullmatch(m.group(1)).group(1),  # type: ignore[union-attr]
                                            "<no value>"), text)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Alert(_Model):
    """What every alert carries: severity, how long the condition must hold, and its texts."""

    severity: Severity
    for_: Seconds = Field(alias="for")
    summary: str = Field(min_length=1)
    description: str = Field(min_length=1)

    @model_validator(mode="after")
    def _templates(self) -> Alert:
        template_labels(self.summary)
        template_labels(self.description)
        return self


class QualityBurn(Alert):
    """Share of items below their threshold, over a short and a long window (both must be bad).

    Fires when both shares exceed ``factor`` × ``quality.budget_share``, the long window holds
    at least ``min_samples`` scored items and the short one ``min_samples_short``.
    """

    short: Window
    long: Window
    factor: float = Field(gt=0)
    min_samples_short: Count

    @model_validator(mode="after")
    def _windows(self) -> QualityBurn:
        if self.short >= self.long:
            raise ValueError("short must be shorter than long")
        return self


class QualityMean(Alert):
    """Mean score over ``window`` below the metric's threshold."""

    window: Window


class WindowShare(Alert):
    """A share over ``window`` above ``share``, with the file's ``min_samples`` guard."""

    window: Window
    share: Share


class CountedShare(WindowShare):
    """A share with its own minimum count (requests, rows) instead of the scored-item guard."""

    min_count: Count


class WindowIncrease(Alert):
    window: Window


class GaugeAbove(Alert):
    above: float = Field(ge=0)


class GaugeBelow(Alert):
    below: float = Field(gt=0, le=1)


class AgeAbove(Alert):
    above: Window


class PipelineStall(Alert):
    """Items were sampled in ``window`` but the newest score is older than ``window``."""

    window: Window


class SourceStall(Alert):
    """No row in ``window`` while the sampler is alive and traffic normally flows."""

    window: Window
    baseline_window: Window
    baseline_min_rows: Count
    app_traffic_expr: str = ""

    @model_validator(mode="after")
    def _baseline(self) -> SourceStall:
        if self.baseline_window < self.window:
            raise ValueError("baseline_window must be at least as long as window")
        return self


class HeartbeatStale(Alert):
    """A role's newest heartbeat older than ``stale_after`` (or none at all)."""

    stale_after: Window


class Alerts(_Model):
    """One field per alert: the names are the alert names everywhere (rules, Grafana,
    runbooks at ``docs/runbooks/<name>.md``)."""

    GroundwatchQualityBurnFast: QualityBurn
    GroundwatchQualityBurnSlow: QualityBurn
    GroundwatchQualityMeanLow: QualityMean
    GroundwatchNoRelevantContextHigh: WindowShare
    GroundwatchOutOfScopeHigh: WindowShare
    GroundwatchRefusalsHigh: WindowShare
    GroundwatchScorerErrors: CountedShare
    GroundwatchJudgeErrors: CountedShare
    GroundwatchJudgeDown: Alert
    GroundwatchJudgeBudgetExhausted: WindowIncrease
    GroundwatchJudgeDisagreement: CountedShare
    GroundwatchGoldenDrift: GaugeAbove
    GroundwatchGoldenAccuracyLow: GaugeBelow
    GroundwatchQueueBacklog: GaugeAbove
    GroundwatchBacklogAge: AgeAbove
    GroundwatchPipelineStalled: PipelineStall
    GroundwatchSourceStalled: SourceStall
    GroundwatchRejectedRowsHigh: CountedShare
    GroundwatchSourceHeld: Alert
    GroundwatchUnplaceableRows: Alert
    GroundwatchExporterDown: Alert
    GroundwatchWorkerDown: HeartbeatStale
    GroundwatchSamplerDown: HeartbeatStale


ALERT_NAMES: tuple[str, ...] = tuple(Alerts.model_fields)


class Quality(_Model):
    budget_share: Share
    # Which scores the quality alerts read: "raw" (groundwatch_score) or "calibrated"
    # (groundwatch_calibrated_score: after the calibration map of the route and metric, the
    # raw score where none applies; docs/calibration.md).
    values: Literal["raw", "calibrated"] = "raw"
    # Per metric: the mean below which GroundwatchQualityMeanLow fires. A metric left out takes
    # its [scoring.thresholds] value from the scoring config.
    mean_thresholds: dict[str, Annotated[float, Field(gt=0.0, le=1.0)]] = Field(
        default_factory=dict)

    @field_validator("mean_thresholds")
    @classmethod
    def _known_metrics(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(METRICS))
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; known: {list(METRICS)}")
        return value


class Grafana(_Model):
    datasource_uid: str = Field(pattern=r"^[A-Za-z0-9_-]{1,40}$")
    folder: str = Field(min_length=1)
    group: str = Field(min_length=1)
    interval: Window


# An app route as the `route` label carries it; no regex characters, so that a route list
# joins into one Alertmanager matcher without escaping.
_ROUTE = r"^[A-Za-z0-9_:-]+$"
_RECEIVER = r"^[a-z0-9][a-z0-9_-]{0,30}$"
_URL = r"^https?://[^\s]+$"


class Team(_Model):
    """An owner of some app routes (the ``route`` label): its alerts go to its receivers."""

    routes: list[Annotated[str, Field(pattern=_ROUTE)]] = Field(min_length=1)
    # None: the default webhook_url.
    webhook_url: str | None = Field(default=None, pattern=_URL)


class Inhibit(_Model):
    """While a ``sources`` alert fires, the ``targets`` alerts are not sent (same ``service``)."""

    sources: list[str] = Field(min_length=1)
    targets: list[str] = Field(min_length=1)

    @field_validator("sources", "targets")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in ALERT_NAMES]
        if unknown:
            raise ValueError(f"unknown alert(s) {unknown}; known: {list(ALERT_NAMES)}")
        return names


class Alertmanager(_Model):
    """How a firing alert reaches a person: ``configs/alertmanager/alertmanager.yml`` and the
    Grafana contact points and notification policies are generated from this."""

    webhook_url: str = Field(pattern=_URL)
    group_wait: Window
    group_interval: Window
    repeat_interval: dict[Severity, Window]
    teams: dict[Annotated[str, Field(pattern=_RECEIVER)], Team] = Field(default_factory=dict)
    inhibit: Inhibit

    @model_validator(mode="after")
    def _complete(self) -> Alertmanager:
        missing = [s for s in SEVERITIES if s not in self.repeat_interval]
        if missing:
            raise ValueError(f"repeat_interval needs a value for {missing}")
        seen: dict[str, str] = {}
        for name, team in self.teams.items():
            for route in team.routes:
                if route in seen:
                    raise ValueError(f"route {route!r} belongs to two teams: "
                                     f"{seen[route]!r} and {name!r}")
                seen[route] = name
        overlap = set(self.inhibit.sources) & set(self.inhibit.targets)
        if overlap:
            raise ValueError(f"an alert cannot inhibit itself: {sorted(overlap)}")
        return self


class Profile(_Model):
    """A variant of the rules for tests: every duration divided by ``divide_by``.

    Range windows never go below ``min_window`` (a rate needs a few scrapes inside its
    window); ``evaluation_interval`` and ``grafana_interval`` set the groups' intervals.
    Counts, shares and thresholds are not changed.
    """

    divide_by: float = Field(gt=1)
    min_window: Window
    evaluation_interval: Window
    grafana_interval: Window


class AlertsConfig(_Model):
    """The whole of ``configs/alerts.yml``. ``path`` is where it was read from."""

    service: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    exporter_job: str = Field(min_length=1)
    # Absolute: a pager or chat message must open it. runbook_url = <base>/<AlertName>.md.
    runbook_base_url: str = Field(pattern=_URL)
    scoring_config: str = Field(min_length=1)
    min_samples: Count
    quality: Quality
    alerts: Alerts
    grafana: Grafana
    alertmanager: Alertmanager
    profiles: dict[str, Profile] = Field(default_factory=dict)
    # Filled by load_alerts: [scoring.thresholds] merged under quality.mean_thresholds.
    thresholds: dict[str, float] = Field(default_factory=dict)
    path: str = ""
    # Set by scaled(): the rule group's own evaluation interval (None: Prometheus's global one).
    evaluation_interval: int | None = None

    def runbook_url(self, name: str) -> str:
        return f"{self.runbook_base_url.rstrip('/')}/{name}.md"

    def alert(self, name: str) -> Alert:
        return getattr(self.alerts, name)

    def scaled(self, profile: str) -> AlertsConfig:
        """This config with every duration divided by the profile's ``divide_by``."""
        try:
            p = self.profiles[profile]
        except KeyError:
            raise ConfigError(f"no profile {profile!r}; defined: {sorted(self.profiles)}",
                              path=self.path, key="profiles") from None

        def window(seconds: int) -> int:
            return max(p.min_window, round(seconds / p.divide_by))

        def duration(seconds: int) -> int:
            return round(seconds / p.divide_by)

        alerts: dict[str, Any] = {}
        for name in ALERT_NAMES:
            alert = self.alert(name)
            update: dict[str, Any] = {"for_": duration(alert.for_)}
            for field in ("short", "long", "window", "baseline_window", "stale_after"):
                if hasattr(alert, field):
                    update[field] = window(getattr(alert, field))
            if isinstance(alert, AgeAbove):
                update["above"] = duration(alert.above)
            alerts[name] = alert.model_copy(update=update)
        am = self.alertmanager
        # Notification timings shrink too (never to 0, which Alertmanager reads as "unset").
        notify = {"group_wait": max(1, duration(am.group_wait)),
                  "group_interval": max(1, duration(am.group_interval)),
                  "repeat_interval": {k: max(1, duration(v))
                                      for k, v in am.repeat_interval.items()}}
        return self.model_copy(update={
            "alerts": self.alerts.model_copy(update=alerts),
            "alertmanager": am.model_copy(update=notify),
            "grafana": self.grafana.model_copy(update={"interval": p.grafana_interval}),
            "profiles": {},
            "evaluation_interval": p.evaluation_interval,
        })


def _key(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc if part not in ("function-after",)) or "(top)"


def scoring_thresholds(path: str | os.PathLike[str]) -> dict[str, float]:
    """``[scoring.thresholds]`` of a groundwatch config file, environment ignored (the
    generated files must not depend on who runs the generator)."""
    return dict(load_config(path, environ={}).scoring.thresholds)


def load_alerts(path: str | os.PathLike[str] | None = None) -> AlertsConfig:
    """Read and validate the alert settings (default ``configs/alerts.yml``)."""
    file = Path(path) if path is not None else DEFAULT_PATH
    shown = str(file)
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("file not found", path=shown) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", path=shown) from None
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", path=shown) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", path=shown) from None
    if not isinstance(raw, dict):
        raise ConfigError("the file must hold a mapping of settings", path=shown)
    for reserved in ("thresholds", "path", "evaluation_interval"):  # filled in below
        if reserved in raw:
            raise ConfigError("set by the loader, not in the file", path=shown, key=reserved)
    try:
        config = AlertsConfig.model_validate(raw)
    except ValidationError as exc:
        # A misspelt key is reported as unknown *and* as a missing one: name the typo first.
        err = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")[0]
        more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
        msg = err["msg"].removeprefix("Value error, ")
        raise ConfigError(msg + more, path=shown, key=_key(tuple(err["loc"]))) from None
    scoring_path = file.parent / config.scoring_config
    thresholds = scoring_thresholds(scoring_path)
    thresholds.update(config.quality.mean_thresholds)
    for metric, value in thresholds.items():
        if not 0.0 < value <= 1.0 or math.isnan(value):
            raise ConfigError(
                f"the mean threshold of {metric} is {value} (from {scoring_path}): a mean "
                "cannot fall below it; set quality.mean_thresholds." + metric + " in (0, 1]",
                path=shown, key=f"quality.mean_thresholds.{metric}")
    for name in ALERT_NAMES:
        alert = config.alert(name)
        if isinstance(alert, QualityBurn) and not alert.factor * config.quality.budget_share < 1:
            raise ConfigError(
                f"factor × quality.budget_share = {alert.factor * config.quality.budget_share:g}"
                ": a share above 1 can never happen", path=shown, key=f"alerts.{name}.factor")
    return config.model_copy(update={"thresholds": thresholds, "path": shown})
