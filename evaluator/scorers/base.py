"""The scorer protocol and the result types every backend returns.

A score is a number in [0, 1] with outcome ``ok``, or no number with outcome
``not_applicable`` (and a reason) or ``error`` (and a kind). There is no NaN anywhere: an
outage must never look like a drop in quality.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from evaluator.records import LogRecord

METRICS = ("faithfulness", "groundedness", "answer_relevance", "context_relevance")
DETECTION_KINDS = ("no_relevant_context", "out_of_scope", "empty_answer", "refusal")
ERROR_KINDS = ("timeout", "rate_limited", "unparseable", "unavailable", "budget", "internal")


class Outcome(StrEnum):
    OK = "ok"
    NOT_APPLICABLE = "not_applicable"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class MetricResult:
    """One metric of one item. ``reason`` explains ``not_applicable``; ``error_kind`` ``error``."""

    metric: str
    outcome: Outcome
    value: float | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"unknown metric {self.metric!r}; valid: {METRICS}")
        if self.outcome is Outcome.OK:
            if self.value is None or not math.isfinite(self.value) or not 0.0 <= self.value <= 1.0:
                raise ValueError(f"{self.metric}: an ok score must be a number in [0, 1], "
                                 f"got {self.value!r}")
        elif self.value is not None:
            raise ValueError(f"{self.metric}: outcome {self.outcome} carries no value")
        elif not self.reason:
            raise ValueError(f"{self.metric}: outcome {self.outcome} needs a reason")

    @classmethod
    def ok(cls, metric: str, value: float) -> MetricResult:
        return cls(metric, Outcome.OK, value)

    @classmethod
    def not_applicable(cls, metric: str, reason: str) -> MetricResult:
        return cls(metric, Outcome.NOT_APPLICABLE, None, reason)

    @classmethod
    def error(cls, metric: str, kind: str) -> MetricResult:
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown error kind {kind!r}; valid: {ERROR_KINDS}")
        return cls(metric, Outcome.ERROR, None, kind)


@dataclass(frozen=True, slots=True)
class Detection:
    """A failure mode found in one item (see ``DETECTION_KINDS``)."""

    kind: str
    detail: str = ""

    def __post_init__(self) -> None:
        if self.kind not in DETECTION_KINDS:
            raise ValueError(f"unknown detection {self.kind!r}; valid: {DETECTION_KINDS}")


@dataclass(frozen=True, slots=True)
class ItemResult:
    """Everything a scorer says about one record."""

    request_id: str
    metrics: tuple[MetricResult, ...]
    explanation: Mapping[str, Any] = field(default_factory=dict)
    detections: tuple[Detection, ...] = ()
    cost_usd: float = 0.0
    tokens: Mapping[str, int] = field(default_factory=dict)


@runtime_checkable
class Scorer(Protocol):
    """A scoring backend. Built once per worker process; ``score_batch`` may be called from
    several threads of that process, so it must not keep per-call state on ``self``.

    Optional, not part of the protocol check: ``stats() -> dict[str, int]``, this process's
    running totals since the scorer was built (monotonic, cheap to read, thread-safe). The
    worker reads it after each batch and exports the increase since the previous read
    (:meth:`metrics.registry.Metrics.observe_scorer_stats`). Keys it knows: ``truncations``
    (inputs cut to the configured size), ``cache_hits`` / ``cache_misses`` (cache lookups);
    other keys are ignored. Scorers without counters (lexical, noop) leave it out."""

    name: str
    version: str

    def score_batch(self, records: Sequence[LogRecord]) -> list[ItemResult]:
        """One result per record, in order. Per-item problems become ``error`` outcomes in that
        item's result; only a failure of the whole backend may raise."""
        ...

    def warm_up(self) -> None:
        """Load what the first batch would otherwise load (models, tokenizers, clients) and
        score one tiny batch, so the first real batch costs what every later one does. The
        worker calls it once per process before it reports ready: a batch must never carry a
        model load, or it can outlive the broker's visibility timeout and be delivered twice.
        Idempotent; a no-op for backends with nothing to load."""
        ...

    def close(self) -> None:
        """Release what the backend holds (models, clients)."""
        ...
