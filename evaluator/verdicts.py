"""What the scores the store newly wrote mean: the rules, decided where scores are made.

The metrics only count what these say (``metrics.scoring``); the report, the alerts' docs and
the metrics must agree on one reading of a score, so the reading lives here, once:

- a **quality failure** is an ``ok`` score strictly below its metric's configured threshold
  (a metric without a threshold never fails);
- in a cascade, the judge **agrees** with the cheap scorer on one metric of one item when both
  scores sit on the same side of the metric's threshold (0.5 when it has none). Only the
  random share is compared: the low and band picks are chosen by the cheap score, so they
  would bias it;
- the **calibrated** series count the first scorer's values after the calibration map that
  applied (:mod:`evaluator.calibration`), its raw values where none did, so they cover every
  item and the quality alerts may read them instead (``quality.values`` in alerts.yml);
- an item's **eval lag** is counted once, on its first newly written score;
- a **detection** counts once per kind per newly scored item, whatever the number of scorers.

A batch delivered twice writes, and so reports, nothing the second time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from evaluator.scorers.base import MetricResult, Outcome, ScoredBatch, Written

AGREEMENT_THRESHOLD = 0.5
"""The side of a metric without a configured threshold, for the cascade's agreement."""


def is_quality_failure(result: MetricResult, threshold: float | None) -> bool:
    """An ``ok`` value strictly below ``threshold`` (``None``: the metric never fails)."""
    return (result.outcome is Outcome.OK and result.value is not None
            and threshold is not None and result.value < threshold)


@dataclass(frozen=True, slots=True)
class NewScore:
    """One score the store newly wrote, with the route and model of its record.
    ``log_timestamp`` is the record's time on the item's first new score only (its eval lag
    is counted once), else None."""

    route: str | None
    model: str | None
    result: MetricResult
    quality_failure: bool
    log_timestamp: datetime | None
    # The primary scorer's value as the calibrated series count it (its calibrated twin where
    # a map applied, else its raw value), and whether that is below the threshold; None for
    # the other scorers' scores and for scores that are not ok.
    calibrated: float | None = None
    calibrated_failure: bool = False


@dataclass(frozen=True, slots=True)
class RunVerdict:
    """One scorer's run of a batch: its wall time over its items, and its new scores."""

    scorer: str
    latency_s: float
    n_items: int
    scores: tuple[NewScore, ...]
    primary: bool = False  # the scorer that scores every item (the cascade's cheap one)


@dataclass(frozen=True, slots=True)
class Agreement:
    """The cascade's judge against the cheap scorer on one metric of one random-share item."""

    metric: str
    agree: bool
    abs_diff: float
    route: str | None = None


@dataclass(frozen=True, slots=True)
class SharePair:
    """A newly written judge score of a random-share item beside the cheap scorer's raw score
    of the same metric: an agreement to count and a calibration pair to store."""

    request_id: str
    metric: str
    route: str | None
    cheap_scorer: str
    cheap_version: str
    judge: str
    cheap: float
    judge_value: float


@dataclass(frozen=True, slots=True)
class NewDetection:
    """A failure mode found in a newly scored item, once per kind per item."""

    kind: str
    route: str | None


@dataclass(frozen=True, slots=True)
class Verdicts:
    """Everything the scores newly written for one batch mean, in the batch's order."""

    runs: tuple[RunVerdict, ...]
    agreements: tuple[Agreement, ...]
    detections: tuple[NewDetection, ...]

    @classmethod
    def of(cls, batch: ScoredBatch, written: Sequence[Written],
           thresholds: Mapping[str, float]) -> Verdicts:
        """The verdicts on ``written`` (what the store returned for ``batch``)."""
        runs, fresh = _runs(batch, written, thresholds)
        return cls(runs, _agreements(batch, written, thresholds), _detections(batch, fresh))


def _runs(batch: ScoredBatch, written: Sequence[Written],
          thresholds: Mapping[str, float]) -> tuple[tuple[RunVerdict, ...], set[str]]:
    """Per run its new scores; and the request ids that got at least one."""
    records = batch.by_id
    fresh: set[str] = set()  # across runs: an item's lag counts once, whichever scorer wrote
    runs = []
    for index, run in enumerate(batch.runs):
        scores = []
        for w in written:
            if w.scorer != run.scorer:
                continue
            record = records[w.request_id]
            first = w.request_id not in fresh
            fresh.add(w.request_id)
            threshold = thresholds.get(w.result.metric)
            calibrated = (w.result.calibrated if w.result.calibrated is not None
                          else w.result.value) if index == 0 else None
            scores.append(NewScore(record.route, record.model, w.result,
                                   is_quality_failure(w.result, threshold),
                                   record.timestamp if first else None, calibrated,
                                   calibrated is not None and threshold is not None
                                   and calibrated < threshold))
        runs.append(RunVerdict(run.scorer, run.usage.latency_s, len(run.items), tuple(scores),
                               index == 0))
    return tuple(runs), fresh


def random_share_pairs(batch: ScoredBatch, written: Sequence[Written]) -> list[SharePair]:
    """The judge (every run after the first) beside the cheap scorer (the first run) on the
    random share, for the judge's ``ok`` scores the store newly wrote (so a batch delivered
    twice gives nothing the second time). The low and band picks are left out: they were
    chosen by the cheap score, and would bias both the agreement and a calibration map."""
    if len(batch.runs) < 2:
        return []
    first = batch.runs[0]
    records = batch.by_id
    cheap = {item.request_id: {m.metric: m.value for m in item.metrics
                               if m.value is not None} for item in first.items}
    new = {(w.scorer, w.request_id, w.result.metric) for w in written}
    out = []
    for run in batch.runs[1:]:
        for item in run.items:
            if run.selection.get(item.request_id) != "random":
                continue
            mine = cheap.get(item.request_id, {})
            for m in item.metrics:
                if m.value is None or m.metric not in mine or \
                        (run.scorer, item.request_id, m.metric) not in new:
                    continue
                out.append(SharePair(item.request_id, m.metric, records[item.request_id].route,
                                     first.scorer, first.version,
                                     f"{run.scorer}/{run.version}", mine[m.metric], m.value))
    return out


def _agreements(batch: ScoredBatch, written: Sequence[Written],
                thresholds: Mapping[str, float]) -> tuple[Agreement, ...]:
    """Each random-share pair: on the same side of the metric's threshold or not."""
    out = []
    for p in random_share_pairs(batch, written):
        threshold = thresholds.get(p.metric, AGREEMENT_THRESHOLD)
        out.append(Agreement(p.metric, (p.cheap >= threshold) == (p.judge_value >= threshold),
                             abs(p.cheap - p.judge_value), p.route))
    return tuple(out)


def _detections(batch: ScoredBatch, fresh: set[str]) -> tuple[NewDetection, ...]:
    """Each newly scored item's detections, once per kind whatever the number of scorers."""
    records = batch.by_id
    seen: set[tuple[str, str]] = set()
    out = []
    for _, item in batch.results():
        if item.request_id not in fresh:
            continue
        for detection in item.detections:
            if (item.request_id, detection.kind) not in seen:
                seen.add((item.request_id, detection.kind))
                out.append(NewDetection(detection.kind, records[item.request_id].route))
    return tuple(out)
