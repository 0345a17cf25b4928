"""The applicability gates: what there is to judge in a record, decided once, before any backend.

A record with no contexts has nothing to be faithful to, an empty answer or a refusal makes no
claims, and a question without a content word gives relevance nothing to measure. Those
metrics are ``not_applicable`` with the reason (an empty answer to a question is not relevant
to it: answer relevance 0), and the detections they imply (no relevant
context, empty answer, refusal) are raised here. A backend is handed the :class:`Gated`
records and judges only what is left open (:attr:`Gated.wants_context_relevance`,
:attr:`Gated.wants_answer_relevance`, :attr:`Gated.wants_support`); :meth:`Gated.result`
puts the two together. With a cascade of scorers the gates still run once per record.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

from evaluator.records import LogRecord
from evaluator.scorers.base import Detection, ItemResult, MetricResult, Usage
from evaluator.scorers.explanation import Explanation
from evaluator.scorers.text import content_words, is_refusal

SUPPORT_METRICS = ("faithfulness", "groundedness")
# The order detections are listed in an item's result (out_of_scope is the scope check's).
_DETECTION_ORDER = ("out_of_scope", "no_relevant_context", "empty_answer", "refusal")


@dataclass(frozen=True, slots=True)
class Gated:
    """One record after the gates. The texts are the record's, stripped; ``contexts`` holds
    the passages that are not blank."""

    record: LogRecord
    question: str
    answer: str
    contexts: tuple[str, ...]
    has_question_terms: bool
    refusal: bool

    @classmethod
    def of(cls, record: LogRecord) -> Gated:
        answer = record.answer.strip()
        return cls(record, record.question.strip(), answer,
                   tuple(p for p in record.contexts if p.strip()),
                   bool(content_words(record.question)), bool(answer) and is_refusal(answer))

    @property
    def wants_context_relevance(self) -> bool:
        return bool(self.contexts) and self.has_question_terms

    @property
    def wants_answer_relevance(self) -> bool:
        return bool(self.answer) and self.has_question_terms

    @property
    def wants_support(self) -> bool:
        """faithfulness and groundedness are open (the backend may still find no claims)."""
        return bool(self.answer) and bool(self.contexts) and not self.refusal

    def decided(self) -> tuple[dict[str, MetricResult], list[Detection]]:
        """The metrics the gates settle, and the detections they raise."""
        out: dict[str, MetricResult] = {}
        detections: list[Detection] = []
        if not self.contexts:
            out["context_relevance"] = MetricResult.not_applicable("context_relevance",
                                                                   "no_contexts")
            detections.append(Detection("no_relevant_context", "no contexts were retrieved"))
        elif not self.has_question_terms:
            out["context_relevance"] = MetricResult.not_applicable("context_relevance",
                                                                   "no_question_terms")
        if not self.answer:
            detections.append(Detection("empty_answer", "the answer is empty"))
            for metric in SUPPORT_METRICS:
                out[metric] = MetricResult.not_applicable(metric, "empty_answer")
            # Nothing answers the question: not relevant, for every backend (a missing value
            # would leave an app that answers nothing out of the relevance alerts).
            out["answer_relevance"] = (
                MetricResult.ok("answer_relevance", 0.0) if self.has_question_terms
                else MetricResult.not_applicable("answer_relevance", "empty_answer"))
            return out, detections
        if not self.has_question_terms:
            out["answer_relevance"] = MetricResult.not_applicable("answer_relevance",
                                                                  "no_question_terms")
        if self.refusal:
            detections.append(Detection("refusal", self.answer[:200]))
        reason = "refusal" if self.refusal else None if self.contexts else "no_contexts"
        if reason:
            for metric in SUPPORT_METRICS:
                out[metric] = MetricResult.not_applicable(metric, reason)
        return out, detections

    def result(self, assessment: Assessment) -> ItemResult:
        """The item's result: the gates' decisions and the backend's ``assessment``."""
        rid = self.record.request_id
        if assessment.error is not None:  # the backend could not score it: all of it failed
            return ItemResult(rid, tuple(MetricResult.error(m, assessment.error) for m in
                                         (*SUPPORT_METRICS, "answer_relevance",
                                          "context_relevance")),
                              assessment.explanation)
        decided, detections = self.decided()
        found = {m.metric: m for m in assessment.metrics}
        both = {**found, **decided}
        order = (("context_relevance", *SUPPORT_METRICS, "answer_relevance") if not self.answer
                 else ("context_relevance", "answer_relevance", *SUPPORT_METRICS))
        metrics = tuple(both[m] for m in order if m in both)
        detections.extend(assessment.detections)
        detections.sort(key=lambda d: _DETECTION_ORDER.index(d.kind)
                        if d.kind in _DETECTION_ORDER else len(_DETECTION_ORDER))
        return ItemResult(rid, metrics, assessment.explanation, tuple(detections))


@dataclass(frozen=True, slots=True)
class Assessment:
    """What a backend found for one gated record: the metrics the gates left open, its
    explanation and its own detections; or, with ``error`` (a kind), that it could not score
    the record at all (every metric is then an error of that kind)."""

    metrics: tuple[MetricResult, ...] = ()
    explanation: Explanation = field(default_factory=Explanation)
    detections: tuple[Detection, ...] = ()
    error: str | None = None


def apply_gates(records: Sequence[LogRecord]) -> list[Gated]:
    return [Gated.of(r) for r in records]


class GatedScorer(ABC):
    """Base of the shipped backends: :meth:`assess` judges gated records, the rest is here."""

    name: str
    version: str

    @property
    def judge_up(self) -> bool | None:
        return None  # the LLM judges override it

    @abstractmethod
    def assess(self, items: Sequence[Gated]) -> tuple[list[Assessment], Usage]:
        """One assessment per item, in order, and what the batch cost."""

    def score_gated(self, items: Sequence[Gated]) -> tuple[list[ItemResult], Usage]:
        assessments, usage = self.assess(items)
        if len(assessments) != len(items):
            raise RuntimeError(f"scorer {self.name} assessed {len(assessments)} of "
                               f"{len(items)} records")
        return [g.result(a) for g, a in zip(items, assessments, strict=True)], usage

    def score_batch(self, records: Sequence[LogRecord]) -> list[ItemResult]:
        """Gates and score ``records`` on their own (offline scoring, tests)."""
        return self.score_gated(apply_gates(records))[0]

    def warm_up(self) -> None:
        return None

    def close(self) -> None:
        return None
