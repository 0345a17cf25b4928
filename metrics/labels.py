"""Label discipline: every label value reaching Prometheus passes through a :class:`LabelPolicy`.

Each distinct label value is a new time series in every process and in Prometheus, so values
that come from the watched app (its routes, its models) or from errors must be bounded:

- ``route`` and ``model`` are *optional* labels: they carry a value only when listed in
  ``[metrics] labels``; otherwise the value is ``""``, which Prometheus treats as "no label".
- ``None`` becomes ``"none"``; every value is cut to 64 characters.
- With ``[metrics.label_values] <label> = [...]`` configured, only those values pass (plus
  ``"none"``: a missing value is information, not an unknown value); the rest become ``"other"``.
- Otherwise the first ``max_label_values`` distinct values of a label seen by *this process*
  pass, and later newcomers become ``"other"``. The cap is per process: N worker processes may
  admit up to N × cap values between them. ``label_values`` is the way to a hard global bound.

This module does not import prometheus_client.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from evaluator.config import MetricsConfig

OPTIONAL_LABELS = frozenset({"route", "model"})
"""Labels a deployment switches on in ``[metrics] labels``; off means the value ``""``."""

OTHER = "other"
NONE = "none"
MAX_VALUE_LENGTH = 64


def _clip(value: object) -> str:
    text = value if isinstance(value, str) else str(value)
    return text[:MAX_VALUE_LENGTH]


class LabelPolicy:
    """Maps raw label values onto a bounded set. Thread-safe; one instance per process.

    ``allowed`` lists the optional labels (``route``, ``model``) that are switched on;
    ``max_values`` caps the distinct values per label; ``fixed_values`` pins a label to a list.
    """

    def __init__(
        self,
        allowed: Iterable[str],
        max_values: int,
        fixed_values: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        if max_values < 1:
            raise ValueError(f"max_values must be >= 1, got {max_values}")
        allowed = frozenset(allowed)
        unknown = allowed - OPTIONAL_LABELS
        if unknown:
            raise ValueError(
                f"unknown optional labels {sorted(unknown)}; valid: {sorted(OPTIONAL_LABELS)}"
            )
        self._allowed = allowed
        self._max_values = max_values
        self._fixed = {
            label: frozenset(_clip(v) for v in values) | {NONE}
            for label, values in (fixed_values or {}).items()
        }
        # Per label: raw value -> admitted value. Only admitted values are cached, and the cache
        # is bounded, so unbounded raw input cannot grow it. Reads happen without the lock (a dict
        # lookup is atomic under the GIL); writes take it.
        self._cache: dict[str, dict[object, str]] = {}
        self._distinct: dict[str, set[str]] = {}
        self._cache_limit = 4 * max_values + 64
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: MetricsConfig) -> LabelPolicy:
        """The policy described by the ``[metrics]`` config section."""
        return cls(config.labels, config.max_label_values, config.label_values)

    @property
    def allowed(self) -> frozenset[str]:
        return self._allowed

    def value(self, label: str, raw: str | None) -> str:
        """The value to export for ``label`` given the raw value ``raw``."""
        if label in OPTIONAL_LABELS and label not in self._allowed:
            return ""
        cache = self._cache.get(label)
        if cache is not None:
            hit = cache.get(raw)
            if hit is not None:
                return hit
        return self._admit(label, raw)

    def _admit(self, label: str, raw: str | None) -> str:
        value = NONE if raw is None else _clip(raw)
        fixed = self._fixed.get(label)
        with self._lock:
            if fixed is not None:
                if value not in fixed:
                    return OTHER
            else:
                distinct = self._distinct.setdefault(label, set())
                if value not in distinct:
                    if value == OTHER or len(distinct) >= self._max_values:
                        return OTHER
                    distinct.add(value)
            cache = self._cache.setdefault(label, {})
            if len(cache) < self._cache_limit:
                cache[raw] = value
            return value

    def distinct_values(self, label: str) -> frozenset[str]:
        """The values admitted so far for a capped ``label`` (for tests and debugging)."""
        with self._lock:
            return frozenset(self._distinct.get(label, ()))
