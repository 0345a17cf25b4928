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

Pure numpy; no fitting library is needed at run time. The benchmarks measure with these
same two functions (benchmarks/quality.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from evaluator.calibration.maps import BAND_GRID, MonotoneMap

ECE_BINS = 10


def many(fitted: MonotoneMap, values: Sequence[float] | np.ndarray) -> np.ndarray:
    """``fitted`` at each of ``values``, as an array (``numpy.interp``)."""
    return np.interp(np.asarray(values, dtype=float), fitted.x, fitted.y)


def fit_isotonic(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray
                 ) -> MonotoneMap:
    """The least-squares non-decreasing fit of ``y`` on ``x`` (pool adjacent violators), as
    a :class:`~.maps.MonotoneMap` through each block's (mean x, mean y)."""
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
        fits[r] = many(fit_isotonic(x[pick], y[pick]), grid)
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
    which = np.clip((p * bins).astype(int), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        k = int(mask.sum())
        if k:
            total += k * abs(float(p[mask].mean()) - float(t[mask].mean()))
    return total / p.size


def roc_auc(scores: Sequence[float] | np.ndarray, labels: Sequence[int | bool] | np.ndarray
            ) -> float | None:
    """ROC-AUC of ``scores`` against binary ``labels`` (Mann-Whitney U with average ranks for
    ties): P(a positive scores above a negative), ties counting half. ``None`` when either
    class is empty. Raises ``ValueError`` on non-finite scores or mismatched lengths."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels).astype(bool)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"scores and labels must be 1-D and the same length, "
                         f"got {s.shape} and {y.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # 1-based rank of each distinct value's last occurrence
    average_rank = last - (counts - 1) / 2.0
    ranks = average_rank[inverse]
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))
