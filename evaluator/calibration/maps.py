"""The calibration's types, in plain Python (no numpy on the store's import path): a pair,
a monotone map, a fitted map with its figures, and the route names of the maps.

:mod:`.isotonic` and :mod:`.fit` make them (with numpy); the store keeps them, the workers
apply them (:mod:`.apply`), ``explain`` and the metrics read them.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

ALL_ROUTES = "*"
"""The route of the map fitted over every route's pairs: used where a route has no map."""
NO_ROUTE = ""
"""The route of records that carry none."""
SOURCES = ("judge", "labels")
# The grid a map's bootstrap band is kept on: 0, 0.05, ..., 1.
BAND_GRID = tuple(round(i / 20, 2) for i in range(21))


def interp(value: float, xs: Sequence[float], ys: Sequence[float]) -> float:
    """Linear interpolation through the points (xs increasing), flat beyond the ends: what
    ``numpy.interp`` computes, for one value."""
    if not xs:
        raise ValueError("interp needs at least one point")
    if value <= xs[0]:
        return float(ys[0])
    if value >= xs[-1]:
        return float(ys[-1])
    i = bisect.bisect_right(xs, value)
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return float(y0 + (value - x0) * (y1 - y0) / (x1 - x0)) if x1 > x0 else float(y1)


@dataclass(frozen=True, slots=True)
class MonotoneMap:
    """A non-decreasing map [0, 1] -> [0, 1], linear between its knots, flat beyond them."""

    x: tuple[float, ...]
    y: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.x or len(self.x) != len(self.y):
            raise ValueError("a monotone map needs as many y as x knots, at least one")
        if any(b < a for a, b in zip(self.x, self.x[1:], strict=False)) or \
                any(b < a for a, b in zip(self.y, self.y[1:], strict=False)):
            raise ValueError("a monotone map's knots must be non-decreasing")
        if not all(0.0 <= v <= 1.0 for v in (*self.x, *self.y)):
            raise ValueError("a monotone map's knots must lie in [0, 1]")

    def __call__(self, value: float) -> float:
        return interp(value, self.x, self.y)

    def to_dict(self) -> dict[str, list[float]]:
        return {"x": [round(v, 6) for v in self.x], "y": [round(v, 6) for v in self.y]}

    @classmethod
    def from_dict(cls, d: dict[str, Sequence[float]]) -> MonotoneMap:
        return cls(tuple(float(v) for v in d["x"]), tuple(float(v) for v in d["y"]))


@dataclass(frozen=True, slots=True)
class Pair:
    """One item's cheap score of one metric and what it should have been (0..1)."""

    request_id: str
    route: str
    metric: str
    cheap: float
    target: float


@dataclass(frozen=True, slots=True)
class FittedMap:
    """One route's and metric's map, with the figures that say how far it holds.

    ``usable`` is False (with ``why``) below ``min_pairs`` or with a band wider than
    ``max_band``: such a map is stored, for the figures, and never applied."""

    scorer: str
    scorer_version: str
    source: str
    route: str
    metric: str
    fitted_at: datetime
    n: int
    map: MonotoneMap | None
    band_lo: tuple[float, ...]
    band_hi: tuple[float, ...]
    band: float | None
    auc: float | None
    ece_raw: float
    ece_calibrated: float | None
    usable: bool
    why: str = ""
    id: int | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        """How explain and the report name it: ``judge#12`` (the store's id)."""
        return f"{self.source}#{self.id}" if self.id is not None else f"{self.source}#new"

    def apply(self, value: float) -> float:
        assert self.map is not None
        return self.map(value)  # in [0, 1]: the knots are

    def band_at(self, value: float) -> tuple[float, float]:
        """The bootstrap band of the map's value at ``value``."""
        return interp(value, BAND_GRID, self.band_lo), interp(value, BAND_GRID, self.band_hi)

    def body(self) -> dict[str, object]:
        """What the store keeps besides the key columns."""
        return {"map": self.map.to_dict() if self.map is not None else None,
                "band_lo": [round(v, 4) for v in self.band_lo],
                "band_hi": [round(v, 4) for v in self.band_hi],
                "band": self.band, "auc": self.auc, "ece_raw": self.ece_raw,
                "ece_calibrated": self.ece_calibrated, "why": self.why}

    @classmethod
    def from_row(cls, *, id: int, scorer: str, scorer_version: str, source: str, route: str,
                 metric: str, fitted_at: datetime, n: int, usable: bool,
                 body: Mapping[str, object]) -> FittedMap:
        raw_map = body.get("map")
        return cls(scorer, scorer_version, source, route, metric, fitted_at, n,
                   MonotoneMap.from_dict(raw_map) if isinstance(raw_map, dict) else None,
                   _floats(body.get("band_lo")), _floats(body.get("band_hi")),
                   _opt(body.get("band")), _opt(body.get("auc")),
                   _opt(body.get("ece_raw")) or 0.0, _opt(body.get("ece_calibrated")),
                   usable, str(body.get("why") or ""), id)


def _floats(value: object) -> tuple[float, ...]:
    return tuple(float(v) for v in value) if isinstance(value, list) else ()


def _opt(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]
