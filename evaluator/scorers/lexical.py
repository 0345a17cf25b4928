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
from typing import TYPE_CHECKING

from evaluator.plugins import ScorerPlugin
from evaluator.records import LogRecord
from evaluator.scorers.base import Detection, ItemResult, MetricResult, Usage
from evaluator.scorers.explanation import Claim, Explanation, Verdict
from evaluator.scorers.gates import Assessment, Gated, GatedScorer
from evaluator.scorers.text import content_words, split_sentences

if TYPE_CHECKING:
    from evaluator.config import Config

SUPPORT = 0.5  # a sentence counts as supported when half its content words occur in the contexts


# Word overlap only: microseconds per item.
PLUGINS = (ScorerPlugin("lexical", "evaluator.scorers.lexical:LexicalScorer", item_seconds=0.01),)


class LexicalScorer(GatedScorer):
    """Word-overlap scorer. Stateless, thread-safe."""

    name = "lexical"
    version = "1"

    @classmethod
    def from_config(cls, config: Config) -> LexicalScorer:
        return cls()

    def assess(self, items: Sequence[Gated]) -> tuple[list[Assessment], Usage]:
        return [self._assess(g) for g in items], Usage()

    def score_one(self, record: LogRecord) -> ItemResult:
        """One record, gates included."""
        (result,) = self.score_batch([record])
        return result

    def _assess(self, g: Gated) -> Assessment:
        detections: list[Detection] = []
        results: list[MetricResult] = []
        question_words = set(content_words(g.question))
        passage_words = [set(content_words(p)) for p in g.contexts]
        best_context = None
        if g.wants_context_relevance:
            overlaps = [len(question_words & w) / len(question_words) for w in passage_words]
            best = max(overlaps)
            results.append(MetricResult.ok("context_relevance", best))
            best_context = overlaps.index(best)
            if best == 0.0:
                detections.append(Detection("no_relevant_context",
                                            "no retrieved passage shares a word with the question"))
        if g.wants_answer_relevance:
            answer_words = set(content_words(g.answer))
            results.append(MetricResult.ok(
                "answer_relevance", len(question_words & answer_words) / len(question_words)))
        claims = None
        if g.wants_support:
            context_words: set[str] = set().union(*passage_words)
            claims = self._claims(g.answer, context_words)
            results.extend(self._support(claims))
        return Assessment(tuple(results),
                          Explanation(scorer=self.name, best_context=best_context,
                                      claims=claims),
                          tuple(detections))

    @staticmethod
    def _claims(answer: str, context_words: set[str]) -> tuple[Claim, ...]:
        claims = []
        for sentence in split_sentences(answer):
            words = content_words(sentence)
            if not words:
                continue
            support = sum(w in context_words for w in words) / len(words)
            claims.append(Claim(
                sentence, Verdict.SUPPORTED if support >= SUPPORT else Verdict.UNSUPPORTED,
                strength=round(support, 4),
                missing=tuple(sorted({w for w in words if w not in context_words})[:20])))
        return tuple(claims)

    @staticmethod
    def _support(claims: tuple[Claim, ...]) -> list[MetricResult]:
        if not claims:
            return [MetricResult.not_applicable("faithfulness", "no_claims"),
                    MetricResult.not_applicable("groundedness", "no_claims")]
        supported = sum(c.supported for c in claims)
        return [
            MetricResult.ok("faithfulness", supported / len(claims)),
            MetricResult.ok("groundedness",
                            sum(c.strength or 0.0 for c in claims) / len(claims)),
        ]
