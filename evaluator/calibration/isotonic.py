"""The arithmetic of a calibration map: a monotone fit, its bootstrap band, and how well a
score ranks and is calibrated against a target.

- :func:`fit_isotonic` -- pool adjacent violators: the non-decreasing step function closest
  (least squares) to the targets; the map interpolates linearly between its blocks' centres,
  so two nearby raw values never jump apart;
- :func:`bootstrap_band` -- the band a map's value moves in when its pairs are resampled;
- :func:`ece` -- expected calibration error: over ten equal-width bins of the prediction, the
  count-weighted mean of |mean prediction - mean target| (with 0/1 targets the usual ECE;
  with a judge's values in [0, 1], the same reading against the judge's mean);
- :func:`roc_auc` -- how well a raw score ranks the positive targets above the negatives.

Pure numpy; no fitting library is needed at run time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ECE_BINS = 10
# The grid the band is kept on: 0, 0.05, ..., 1.
BAND_GRID = tuple(round(i / 20, 2) for i in range(21))


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
        return float(np.interp(value, self.x, self.y))

    def many(self, values: Sequence[float] | np.ndarray) -> np.ndarray:
        return np.interp(np.asarray(values, dtype=float), self.x, self.y)

    def to_dict(self) -> dict[str, list[float]]:
        return {"x": [round(v, 6) for v in self.x], "y": [round(v, 6) for v in self.y]}

    @classmethod
    def from_dict(cls, d: dict[str, Sequence[float]]) -> MonotoneMap:
        return cls(tuple(float(v) for v in d["x"]), tuple(float(v) for v in d["y"]))


def fit_isotonic(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray
                 ) -> MonotoneMap:
    """The least-squares non-decreasing fit of ``y`` on ``x`` (pool adjacent violators), as
    a :class:`MonotoneMap` through each block's (mean x, mean y)."""
    xs = np.asarray(x, dtype=float)
    ys = np.asarray(y, dtype=float)
    if xs.size == 0 or xs.shape != ys.shape:
        raise ValueError("fit_isotonic needs as many targets as scores, at least one")
    order = np.argsort(xs, kind="stable")
    xs, ys = xs[order], ys[order]
    # Equal raw scores are one block from the start: a map is a function of the score.
    ux, start = np.unique(xs, return_index=True)
    counts = np.diff(np.append(start, xs.size))
    sums = np.add.reduceat(ys, start)
    # Blocks as stacks of (sum of y, weight, sum of x).
    b_sum: list[float] = []
    b_w: list[float] = []
    b_x: list[float] = []
    for sx, w, sy in zip(ux * counts, counts, sums, strict=True):
        b_sum.append(float(sy))
        b_w.append(float(w))
        b_x.append(float(sx))
        while len(b_sum) > 1 and b_sum[-2] / b_w[-2] >= b_sum[-1] / b_w[-1]:
            s, w2, x2 = b_sum.pop(), b_w.pop(), b_x.pop()
            b_sum[-1] += s
            b_w[-1] += w2
            b_x[-1] += x2
    kx = [min(1.0, max(0.0, sx / w)) for sx, w in zip(b_x, b_w, strict=True)]
    ky = [min(1.0, max(0.0, sy / w)) for sy, w in zip(b_sum, b_w, strict=True)]
    return MonotoneMap(tuple(kx), tuple(ky))


def bootstrap_band(x: np.ndarray, y: np.ndarray, *, rounds: int = 50, seed: int = 0,
                   grid: Sequence[float] = BAND_GRID, level: float = 0.9
                   ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The central ``level`` band of the map refitted on ``rounds`` resamples of the pairs,
    on ``grid``: (lower, upper) per grid point. A fixed seed: the same pairs give the same
    band."""
    rng = np.random.default_rng(seed)
    n = x.size
    fits = np.empty((rounds, len(grid)))
    for r in range(rounds):
        pick = rng.integers(0, n, n)
        fits[r] = fit_isotonic(x[pick], y[pick]).many(grid)
    tail = (1.0 - level) / 2 * 100
    lo = np.percentile(fits, tail, axis=0)
    hi = np.percentile(fits, 100 - tail, axis=0)
    return tuple(float(v) for v in lo), tuple(float(v) for v in hi)


def ece(pred: Sequence[float] | np.ndarray, target: Sequence[float] | np.ndarray,
        bins: int = ECE_BINS) -> float:
    """Expected calibration error of ``pred`` against ``target`` (see the module's text)."""
    p = np.asarray(pred, dtype=float)
    t = np.asarray(target, dtype=float)
    if p.size == 0:
        raise ValueError("ece needs at least one prediction")
    which = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        k = int(mask.sum())
        if k:
            total += k * abs(float(p[mask].mean()) - float(t[mask].mean()))
    return total / p.size


def roc_auc(score: Sequence[float] | np.ndarray, positive: Sequence[bool] | np.ndarray
            ) -> float | None:
    """P(a positive scores above a negative), ties counting half; None without both kinds."""
    s = np.asarray(score, dtype=float)
    pos = np.asarray(positive, dtype=bool)
    n_pos = int(pos.sum())
    n_neg = pos.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="stable")
    ranks = np.empty(s.size)
    sorted_s = s[order]
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
