"""``lexical``: a fast, weak, zero-dependency baseline.

It measures word overlap, nothing more: a paraphrase looks unsupported and a copied sentence
with one changed number looks supported. Use it as a floor to compare other scorers against, or
where nothing else can run. The measured quality is in docs/scorers.md.

- faithfulness: share of answer sentences whose content words are mostly (>= ``SUPPORT``) found
  in the contexts;
- groundedness: mean share of each answer sentence's content words found in the contexts;
- answer_relevance: share of the question's content words that the answer uses;
- context_relevance: the best passage's share of the question's content words.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from evaluator.records import LogRecord
from evaluator.scorers.base import Detection, ItemResult, MetricResult
from evaluator.scorers.text import content_words, is_refusal, split_sentences

if TYPE_CHECKING:
    from evaluator.config import Config

SUPPORT = 0.5  # a sentence counts as supported when half its content words occur in the contexts
METRIC_NAMES = ("faithfulness", "groundedness", "answer_relevance", "context_relevance")


class LexicalScorer:
    """Word-overlap scorer. Stateless, thread-safe."""

    name = "lexical"
    version = "1"

    @classmethod
    def from_config(cls, config: Config) -> LexicalScorer:
        return cls()

    def warm_up(self) -> None:
        return None  # nothing to load

    def close(self) -> None:
        return None

    def score_batch(self, records: Sequence[LogRecord]) -> list[ItemResult]:
        return [self.score_one(r) for r in records]

    def score_one(self, record: LogRecord) -> ItemResult:
        detections: list[Detection] = []
        explanation: dict[str, Any] = {"scorer": self.name}
        question_words = set(content_words(record.question))
        passages = [p for p in record.contexts if p.strip()]
        passage_words = [set(content_words(p)) for p in passages]
        context_words: set[str] = set().union(*passage_words) if passage_words else set()
        answer = record.answer.strip()

        results: list[MetricResult] = []
        # context_relevance first: it does not depend on the answer.
        if not passages:
            results.append(MetricResult.not_applicable("context_relevance", "no_contexts"))
            detections.append(Detection("no_relevant_context", "no contexts were retrieved"))
        elif not question_words:
            results.append(MetricResult.not_applicable("context_relevance", "no_question_terms"))
        else:
            overlaps = [len(question_words & w) / len(question_words) for w in passage_words]
            best = max(overlaps)
            results.append(MetricResult.ok("context_relevance", best))
            explanation["best_context"] = overlaps.index(best)
            if best == 0.0:
                detections.append(Detection("no_relevant_context",
                                            "no retrieved passage shares a word with the question"))

        if not answer:
            detections.append(Detection("empty_answer", "the answer is empty"))
            for metric in ("faithfulness", "groundedness", "answer_relevance"):
                results.append(MetricResult.not_applicable(metric, "empty_answer"))
            return ItemResult(record.request_id, tuple(results), explanation, tuple(detections))

        if not question_words:
            results.append(MetricResult.not_applicable("answer_relevance", "no_question_terms"))
        else:
            answer_words = set(content_words(answer))
            results.append(MetricResult.ok(
                "answer_relevance", len(question_words & answer_words) / len(question_words)))

        if is_refusal(answer):
            detections.append(Detection("refusal", answer[:200]))
            for metric in ("faithfulness", "groundedness"):
                results.append(MetricResult.not_applicable(metric, "refusal"))
        elif not passages:
            for metric in ("faithfulness", "groundedness"):
                results.append(MetricResult.not_applicable(metric, "no_contexts"))
        else:
            results.extend(self._support(answer, context_words, explanation))
        return ItemResult(record.request_id, tuple(results), explanation, tuple(detections))

    @staticmethod
    def _support(answer: str, context_words: set[str],
                 explanation: dict[str, Any]) -> list[MetricResult]:
        claims: list[dict[str, Any]] = []
        for sentence in split_sentences(answer):
            words = content_words(sentence)
            if not words:
                continue
            support = sum(w in context_words for w in words) / len(words)
            claims.append({
                "claim": sentence,
                "verdict": "supported" if support >= SUPPORT else "unsupported",
                "strength": round(support, 4),
                "missing": sorted({w for w in words if w not in context_words})[:20],
            })
        explanation["claims"] = claims
        explanation["unsupported"] = [c["claim"] for c in claims if c["verdict"] != "supported"]
        if not claims:
            return [MetricResult.not_applicable("faithfulness", "no_claims"),
                    MetricResult.not_applicable("groundedness", "no_claims")]
        supported = sum(c["verdict"] == "supported" for c in claims)
        return [
            MetricResult.ok("faithfulness", supported / len(claims)),
            MetricResult.ok("groundedness", sum(c["strength"] for c in claims) / len(claims)),
        ]
