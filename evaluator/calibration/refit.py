"""Refitting the maps from the judge's pairs, on a schedule and on demand.

:func:`refit` reads the pairs of one cheap scorer version in the window, fits a map per
route and metric (:func:`~evaluator.calibration.fit.fit_maps`), stores them and returns them
with their ids. :class:`RefitScheduler` runs it every ``[calibration] refit_interval_s`` in
one worker process of many (:class:`~evaluator.periodic.ClaimedJob`) and sets the
calibration gauges; ``groundwatch calibrate`` runs it once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from evaluator.calibration.fit import FitSettings, fit_maps
from evaluator.calibration.maps import FittedMap, Pair
from evaluator.periodic import ClaimedJob

if TYPE_CHECKING:
    from evaluator.config import CalibrationConfig

log = logging.getLogger("groundwatch.calibration")

# The newest pairs one refit reads, as a multiple of [calibration] max_pairs (which bounds
# each route and metric): enough for several routes and all four metrics.
READ_FACTOR = 20


class PairStore(Protocol):
    def now(self) -> datetime: ...

    def pairs(self, scorer: str, scorer_version: str, since: datetime,
              limit: int | None = None) -> list[Pair]: ...

    def save_maps(self, maps: Sequence[FittedMap]) -> list[FittedMap]: ...


class ScheduleStore(Protocol):
    def claim_golden_run(self, name: str, interval_s: float,
                         now: datetime | None = None) -> bool: ...


class RefitSink(Protocol):
    def set_maps(self, maps: Sequence[FittedMap]) -> None: ...

    def observe_refit(self, result: str) -> None: ...


def settings_of(config: CalibrationConfig) -> FitSettings:
    return FitSettings(min_pairs=config.min_pairs, max_band=config.max_band,
                       max_pairs=config.max_pairs)


def refit(store: PairStore, *, scorer: str, scorer_version: str, config: CalibrationConfig,
          thresholds: Mapping[str, float], now: datetime | None = None) -> list[FittedMap]:
    """Fit and store the maps of ``scorer``/``scorer_version`` from the judge's pairs newer
    than ``config.window_s`` (by the store's clock); the stored maps (none when there is no
    pair)."""
    now = now or store.now()
    pairs = store.pairs(scorer, scorer_version, now - timedelta(seconds=config.window_s),
                        limit=config.max_pairs * READ_FACTOR)
    if not pairs:
        return []
    maps = fit_maps(pairs, scorer=scorer, scorer_version=scorer_version, source="judge",
                    thresholds=thresholds, settings=settings_of(config), now=now)
    return store.save_maps(maps)


def describe(maps: Sequence[FittedMap]) -> str:
    """One line per map: what the CLI prints and the refit logs."""
    lines = []
    for m in maps:
        route = m.route or "(none)"
        auc = f"{m.auc:.3f}" if m.auc is not None else "-"
        after = f"{m.ece_calibrated:.3f}" if m.ece_calibrated is not None else "-"
        state = "applies" if m.usable else f"not used: {m.why}"
        lines.append(f"{m.name:<12} {route:<20} {m.metric:<18} {m.n:>6} {auc:>6} "
                     f"{m.ece_raw:>7.3f} {after:>7}  {state}")
    return "\n".join(lines)


HEADER = (f"{'map':<12} {'route':<20} {'metric':<18} {'pairs':>6} {'AUC':>6} "
          f"{'ECE raw':>7} {'ECE cal':>7}  state")


class RefitScheduler:
    """Refits every ``config.refit_interval_s`` in one worker process of many, and sets the
    calibration gauges (``groundwatch_calibration_*``) from what it fitted."""

    def __init__(self, config: CalibrationConfig, store: PairStore, schedules: ScheduleStore,
                 metrics: RefitSink | None, *, scorer: str, scorer_version: str,
                 thresholds: Mapping[str, float]) -> None:
        if config.refit_interval_s <= 0:
            raise ValueError("the refit is off ([calibration] refit_interval_s = 0)")
        self.config = config
        self.store = store
        self.metrics = metrics
        self.scorer = scorer
        self.scorer_version = scorer_version
        self.thresholds = dict(thresholds)
        self.name = f"calibration:{scorer}/{scorer_version}"[:255]
        self._job: ClaimedJob[list[FittedMap]] = ClaimedJob(
            self.name, config.refit_interval_s, schedules.claim_golden_run, self._run,
            what=f"calibration refit ({scorer}/{scorer_version})", log=log, store=store)

    def _run(self) -> list[FittedMap]:
        try:
            maps = refit(self.store, scorer=self.scorer, scorer_version=self.scorer_version,
                         config=self.config, thresholds=self.thresholds)
        except Exception:
            if self.metrics is not None:
                self.metrics.observe_refit("error")
            raise
        if self.metrics is not None:
            self.metrics.set_maps(maps)
            self.metrics.observe_refit("ok")
        log.info("calibration refit: %d maps (%d apply) from the judge's pairs of %s/%s",
                 len(maps), sum(m.usable for m in maps), self.scorer, self.scorer_version)
        return maps

    def tick(self) -> list[FittedMap] | None:
        return self._job.tick()

    def start(self) -> None:
        self._job.start("groundwatch-calibration")

    def stop(self) -> None:
        self._job.stop()

    @property
    def running(self) -> bool:
        return self._job.running
