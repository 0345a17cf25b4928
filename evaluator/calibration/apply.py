"""Applying the maps: the cheap scorer's ``ok`` values get a calibrated twin.

A :class:`Calibrator` holds the newest usable map of each (route, metric) of one cheap
scorer version, reloaded every ``refresh_s`` from wherever they are kept (the store). A
record's route uses its own map, else the map over all routes (``*``), else none: its
calibrated value is then absent and its raw value is what counts. A failed reload keeps the
maps it had (logged once) and tries again after ``refresh_s``: calibration never stops
scoring.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from evaluator.calibration.maps import ALL_ROUTES, NO_ROUTE, FittedMap
from evaluator.records import LogRecord
from evaluator.scorers.base import ItemResult, MetricResult, Outcome, ScorerRun

log = logging.getLogger("groundwatch.calibration")


class Calibrator:
    """The maps of one cheap scorer (name and version), applied to its runs. Thread-safe."""

    def __init__(self, scorer: str, scorer_version: str,
                 load: Callable[[], Sequence[FittedMap]], *, refresh_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.scorer = scorer
        self.scorer_version = scorer_version
        self._load = load
        self.refresh_s = refresh_s
        self._clock = clock
        self._maps: dict[tuple[str, str], FittedMap] = {}
        self._loaded_at: float | None = None
        self._failing = False
        self._lock = threading.Lock()

    def maps(self) -> Mapping[tuple[str, str], FittedMap]:
        """The maps that apply, by (route, metric), reloaded when ``refresh_s`` has passed."""
        now = self._clock()
        with self._lock:
            if self._loaded_at is None or now - self._loaded_at >= self.refresh_s:
                self._loaded_at = now
                try:
                    loaded = self._load()
                except Exception as exc:
                    if not self._failing:
                        log.warning("calibration: cannot load the maps: %s: %s; keeping the "
                                    "%d loaded, retrying every %gs", type(exc).__name__,
                                    " ".join(str(exc).split())[:300], len(self._maps),
                                    self.refresh_s)
                    self._failing = True
                else:
                    if self._failing:
                        log.info("calibration: the maps load again")
                    self._failing = False
                    self._maps = {(m.route, m.metric): m for m in loaded
                                  if m.usable and m.map is not None
                                  and m.scorer == self.scorer
                                  and m.scorer_version == self.scorer_version}
            return self._maps

    def lookup(self, route: str | None, metric: str) -> FittedMap | None:
        """The map a record of ``route`` uses for ``metric``, or None."""
        return _lookup(self.maps(), route, metric)

    def apply(self, run: ScorerRun, records: Mapping[str, LogRecord]) -> ScorerRun:
        """``run`` with each ``ok`` value that has a map given its calibrated twin; a run of
        another scorer or version, or with no map at all, is returned as it is."""
        if run.scorer != self.scorer or run.version != self.scorer_version:
            return run
        maps = self.maps()  # once per run: the same maps for all its items
        if not maps:
            return run
        items = []
        for item in run.items:
            route = records[item.request_id].route if item.request_id in records else None
            items.append(_item(maps, item, route))
        return dataclasses.replace(run, items=tuple(items))


def _lookup(maps: Mapping[tuple[str, str], FittedMap], route: str | None,
            metric: str) -> FittedMap | None:
    return maps.get((route or NO_ROUTE, metric)) or maps.get((ALL_ROUTES, metric))


def _item(maps: Mapping[tuple[str, str], FittedMap], item: ItemResult,
          route: str | None) -> ItemResult:
    changed = False
    metrics: list[MetricResult] = []
    for m in item.metrics:
        fitted = _lookup(maps, route, m.metric) if m.outcome is Outcome.OK else None
        if fitted is None or m.value is None:
            metrics.append(m)
            continue
        metrics.append(dataclasses.replace(m, calibrated=round(fitted.apply(m.value), 6),
                                           calibration=fitted.name))
        changed = True
    return dataclasses.replace(item, metrics=tuple(metrics)) if changed else item
