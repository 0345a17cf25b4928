"""The scorer protocol and the result types every backend returns.

A score is a number in [0, 1] with outcome ``ok``, or no number with outcome
``not_applicable`` (and a reason) or ``error`` (and a kind). There is no NaN anywhere: an
outage must never look like a drop in quality.

One batch scored by one or more scorers is a :class:`ScoredBatch`: the records, and per scorer
a :class:`ScorerRun` (one :class:`ItemResult` per record, plus the run's :class:`Usage`). The
store and the metrics are its only readers (``workers.tasks.score_and_record``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol, TypeVar, runtime_checkable

from evaluator.records import LogRecord
from evaluator.scorers.explanation import Explanation

if TYPE_CHECKING:
    from evaluator.scorers.gates import Gated

METRICS = ("faithfulness", "groundedness", "answer_relevance", "context_relevance")
DETECTION_KINDS = ("no_relevant_context", "out_of_scope", "empty_answer", "refusal")
_K = TypeVar("_K")

ERROR_KINDS = ("timeout", "rate_limited", "unparseable", "unavailable", "budget", "internal")


class Outcome(StrEnum):
    OK = "ok"
    NOT_APPLICABLE = "not_applicable"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class MetricResult:
    """One metric of one item. ``reason`` explains ``not_applicable``; ``error_kind`` ``error``.

    ``calibrated`` is an ``ok`` value after the calibration map named ``calibration``
    (``judge#12``; :mod:`evaluator.calibration`); both None where no map applied."""

    metric: str
    outcome: Outcome
    value: float | None = None
    reason: str | None = None
    calibrated: float | None = None
    calibration: str | None = None

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
        if (self.calibrated is None) != (self.calibration is None):
            raise ValueError(f"{self.metric}: a calibrated value needs its map's name and "
                             "a map's name its value")
        if self.calibrated is not None and (
                self.outcome is not Outcome.OK or not math.isfinite(self.calibrated)
                or not 0.0 <= self.calibrated <= 1.0):
            raise ValueError(f"{self.metric}: a calibrated value is an ok score's, in [0, 1], "
                             f"got {self.calibrated!r} on outcome {self.outcome}")

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
    """Everything a scorer says about one record. A plain mapping given as ``explanation``
    (a team's own scorer may return one) is read into an :class:`Explanation`."""

    request_id: str
    metrics: tuple[MetricResult, ...]
    explanation: Explanation = field(default_factory=Explanation)
    detections: tuple[Detection, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.explanation, Mapping):
            object.__setattr__(self, "explanation", Explanation.from_dict(self.explanation))


class NotJudged(StrEnum):
    """Why an item picked for the judge was not judged (the judge's refusals)."""

    BUDGET = "budget"
    CIRCUIT_OPEN = "circuit_open"


@dataclass(frozen=True, slots=True)
class Usage:
    """What scoring a batch cost one scorer. The judge fields stay 0 (or empty) for offline
    backends; ``truncations`` counts inputs cut to the configured size, ``cache_hits`` /
    ``cache_misses`` the backend's cache lookups (``shared_cache_*``: the lookups of its
    per-process misses in a cache shared by all workers, and its failures); ``latency_s`` is
    the run's wall time.

    The mappings are counts summed key by key: ``judge_statuses`` the judge's calls by how
    they ended (``ok`` or an error kind: ``rate_limited``, ``timeout``, ...), ``redactions``
    the PII values replaced before the judge saw the text, by kind (``email``, a custom
    pattern's name, ...), ``not_judged`` the items picked for the judge but refused.
    ``unpriced`` counts items with a call whose cost could not be priced."""

    judge_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cache_hits: int = 0
    cache_misses: int = 0
    shared_cache_hits: int = 0
    shared_cache_misses: int = 0
    shared_cache_errors: int = 0
    truncations: int = 0
    latency_s: float = 0.0
    unpriced: int = 0
    # Streamed judge replies given up as soon as they looped (judge.stream = "on").
    abandoned: int = 0
    judge_statuses: Mapping[str, int] = field(default_factory=dict)
    redactions: Mapping[str, int] = field(default_factory=dict)
    not_judged: Mapping[NotJudged, int] = field(default_factory=dict)

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            judge_calls=self.judge_calls + other.judge_calls,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
            cache_hits=self.cache_hits + other.cache_hits,
            cache_misses=self.cache_misses + other.cache_misses,
            shared_cache_hits=self.shared_cache_hits + other.shared_cache_hits,
            shared_cache_misses=self.shared_cache_misses + other.shared_cache_misses,
            shared_cache_errors=self.shared_cache_errors + other.shared_cache_errors,
            truncations=self.truncations + other.truncations,
            latency_s=self.latency_s + other.latency_s,
            unpriced=self.unpriced + other.unpriced,
            abandoned=self.abandoned + other.abandoned,
            judge_statuses=_summed(self.judge_statuses, other.judge_statuses),
            redactions=_summed(self.redactions, other.redactions),
            not_judged=_summed(self.not_judged, other.not_judged),
        )


def _summed(a: Mapping[_K, int], b: Mapping[_K, int]) -> dict[_K, int]:
    out = dict(a)
    for key, n in b.items():
        out[key] = out.get(key, 0) + n
    return out


@dataclass(frozen=True, slots=True)
class ScorerRun:
    """One scorer over one batch: a result per record, in the batch's order."""

    scorer: str
    version: str
    items: tuple[ItemResult, ...]
    usage: Usage = Usage()
    # A cascade's judge scores some records only: request id -> why it was picked
    # (random | low | band). Empty for a scorer that scored every record.
    selection: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ScoredBatch:
    """A batch of records and what each scorer said about each of them."""

    records: tuple[LogRecord, ...]
    runs: tuple[ScorerRun, ...]

    @property
    def by_id(self) -> dict[str, LogRecord]:
        return {r.request_id: r for r in self.records}

    def results(self) -> Iterator[tuple[ScorerRun, ItemResult]]:
        for run in self.runs:
            for item in run.items:
                yield run, item


@dataclass(frozen=True, slots=True)
class Written:
    """A score the store newly wrote (what the metrics count: a batch delivered twice writes,
    and so counts, nothing the second time)."""

    scorer: str
    request_id: str
    result: MetricResult


@runtime_checkable
class BatchScorer(Protocol):
    """The smallest scorer: what a team's own backend (``module:Factory``) must have. The
    registry adapts it to :class:`Scorer` (``evaluator.scorers.ForeignScorer``)."""

    name: str
    version: str

    def score_batch(self, records: Sequence[LogRecord]) -> list[ItemResult]:
        """One result per record, in order."""
        ...


@runtime_checkable
class Scorer(Protocol):
    """A scoring backend. Built once per worker process; ``score_batch`` may be called from
    several threads of that process, so it must not keep per-call state on ``self``.

    The shipped backends derive from :class:`evaluator.scorers.gates.GatedScorer`: they judge
    only what the applicability gates left open, and report their :class:`Usage` per batch
    (``score_gated``), so that the gates run once whatever the number of scorers. A scorer that
    only has ``score_batch`` (a team's own) is adapted by the registry: it applies its own
    gates, if any, and reports no usage."""

    name: str
    version: str

    @property
    def judge_up(self) -> bool | None:
        """For ``groundwatch_judge_up``: whether an LLM judge's last call reached its
        endpoint; None for backends that call nothing, and before a judge's first call."""
        ...

    def score_gated(self, items: Sequence[Gated]) -> tuple[list[ItemResult], Usage]:
        """One result per gated record, in order, and what the batch cost. Per-item problems
        become ``error`` outcomes in that item's result; only a failure of the whole backend
        may raise."""
        ...

    def score_batch(self, records: Sequence[LogRecord]) -> list[ItemResult]:
        """The gates, then :meth:`score_gated` (offline scoring, tests)."""
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


class WholeBatchScorer:
    """For a backend that scores whole batches itself (``score_batch``) and calls nothing
    outside the process: :meth:`score_gated` hands it the records, and it reports no usage."""

    name: str
    version: str

    @property
    def judge_up(self) -> bool | None:
        return None  # calls nothing

    def score_batch(self, records: Sequence[LogRecord]) -> list[ItemResult]:
        raise NotImplementedError

    def score_gated(self, items: Sequence[Gated]) -> tuple[list[ItemResult], Usage]:
        return self.score_batch([g.record for g in items]), Usage()

    def warm_up(self) -> None:
        return None

    def close(self) -> None:
        return None


class ForeignScorer(WholeBatchScorer):
    """A team's own scorer that has only ``score_batch`` (the older, smaller protocol), made a
    full :class:`Scorer`: it gates itself, if at all, and reports no usage."""

    def __init__(self, inner: BatchScorer) -> None:
        self.inner = inner
        self.name = inner.name
        self.version = inner.version

    def score_batch(self, records: Sequence[LogRecord]) -> list[ItemResult]:
        return self.inner.score_batch(records)

    def warm_up(self) -> None:
        warm_up = getattr(self.inner, "warm_up", None)  # a scorer written before warm_up()
        if callable(warm_up):
            warm_up()

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if callable(close):
            close()


def as_scorer(scorer: Scorer | BatchScorer) -> Scorer:
    """``scorer`` itself when it is a whole :class:`Scorer`, else adapted by
    :class:`ForeignScorer`."""
    return scorer if isinstance(scorer, Scorer) else ForeignScorer(scorer)
