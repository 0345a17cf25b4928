"""What the calibration's refits found: per route and metric, how well the cheap scorer
agrees with the judge, and whether a map applies (evaluator/calibration, docs/calibration.md).

Set by the worker process that ran the refit; ``mostrecent``: the newest refit of any
process (refits are rare and set every gauge of a key together).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from evaluator.calibration.maps import ALL_ROUTES
from metrics.labels import OTHER
from metrics.recorder import Recorder

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from evaluator.calibration.maps import FittedMap
    from metrics.labels import LabelPolicy


class CalibrationMetrics(Recorder):
    def __init__(self, registry: CollectorRegistry, policy: LabelPolicy) -> None:
        super().__init__(registry, policy)
        labels = ("metric", "route")
        self.pairs = self._gauge(
            "calibration_pairs",
            "Pairs (cheap score, judge's value) of the random share in the newest refit's "
            "window; route=\"*\" is all routes.", labels, "mostrecent")
        self.agreement = self._gauge(
            "calibration_agreement_auc",
            "ROC-AUC of the cheap score against the judge's side of the threshold over the "
            "newest refit's window (0.5: the cheap scorer is blind on this route).", labels,
            "mostrecent")
        self.ece = self._gauge(
            "calibration_ece",
            "Expected calibration error against the judge's value over the window: of the raw "
            "score (values=raw) and of the map, out of fold (values=calibrated).",
            (*labels, "values"), "mostrecent")
        self.usable = self._gauge(
            "calibration_map_usable",
            "1 when the newest fit applies (enough pairs, band narrow enough), else 0.",
            labels, "mostrecent")
        self.refits = self._counter(
            "calibration_refits_total", "Refits of the calibration maps by result (ok | error).",
            ("result",))

    def set_maps(self, maps: Sequence[FittedMap]) -> None:
        """The newest refit's figures per (route, metric). Without the route label (not in
        metrics.labels) only the maps over all routes are exported, with route=""; routes
        past the label's value cap are left out (their figures are in the store and in
        ``groundwatch calibrate --show``)."""
        value = self.policy.value
        routes = "route" in self.policy.allowed  # ("*" itself takes no place under the cap)
        for m in maps:
            if m.route == ALL_ROUTES:
                route = ALL_ROUTES if routes else ""
            elif routes:
                route = value("route", m.route or None)
                if route == OTHER:  # past the label's cap: one series would mix routes
                    continue
            else:
                continue
            key = (m.metric, route)
            self._child(self.pairs, *key).set(m.n)
            if m.auc is not None:
                self._child(self.agreement, *key).set(m.auc)
            self._child(self.ece, *key, "raw").set(m.ece_raw)
            if m.ece_calibrated is not None:
                self._child(self.ece, *key, "calibrated").set(m.ece_calibrated)
            self._child(self.usable, *key).set(1 if m.usable else 0)

    def observe_refit(self, result: str) -> None:
        self._child(self.refits, result).inc()
