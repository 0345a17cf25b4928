"""The lexical baseline: scores, outcomes, detections and explanations."""

from __future__ import annotations

from datetime import UTC, datetime

from evaluator.records import LogRecord
from evaluator.scorers import Outcome
from evaluator.scorers.lexical import LexicalScorer

CONTEXT = ("Deleted storage buckets are kept in a recoverable state for 30 days. After 30 days "
           "the bucket is purged permanently.")


def rec(question: str, answer: str, contexts: tuple[str, ...] = (CONTEXT,)) -> LogRecord:
    return LogRecord("r", datetime.now(UTC), question, contexts, answer)


def metrics(result: object) -> dict[str, tuple[Outcome, float | None, str | None]]:
    return {m.metric: (m.outcome, m.value, m.reason) for m in result.metrics}  # type: ignore[attr-defined]


def test_supported_answer_scores_high_and_lists_no_unsupported() -> None:
    r = LexicalScorer().score_one(rec("How long are deleted buckets kept?",
                                      "Deleted buckets are kept for 30 days."))
    m = metrics(r)
    assert m["faithfulness"] == (Outcome.OK, 1.0, None)
    assert m["answer_relevance"][1] and m["answer_relevance"][1] > 0.5
    assert r.explanation.unsupported == []
    assert len(m) == 4


def test_unsupported_sentence_is_explained() -> None:
    r = LexicalScorer().score_one(rec(
        "How long are deleted buckets kept?",
        "Deleted buckets are kept for 30 days. Support restores purged buckets from cold tape "
        "archives for a fee."))
    m = metrics(r)
    assert m["faithfulness"][1] == 0.5
    assert 0.0 < m["groundedness"][1] < 1.0  # type: ignore[operator]
    assert r.explanation.unsupported == [
        "Support restores purged buckets from cold tape archives for a fee."]


def test_outcomes_are_never_nan() -> None:
    scorer = LexicalScorer()
    cases = [rec("q?", ""), rec("How long?", "I don't know."), rec("the of?", "x"),
             rec("How long are buckets kept?", "Thirty days.", contexts=())]
    for r in scorer.score_batch(cases):
        for m in r.metrics:
            assert (m.outcome is Outcome.OK) == (m.value is not None)
            assert m.outcome is Outcome.OK or m.reason


def test_detections() -> None:
    scorer = LexicalScorer()
    empty = scorer.score_one(rec("How long are buckets kept?", ""))
    assert [d.kind for d in empty.detections] == ["empty_answer"]
    assert metrics(empty)["faithfulness"] == (Outcome.NOT_APPLICABLE, None, "empty_answer")
    assert metrics(empty)["answer_relevance"] == (Outcome.OK, 0.0, None)
    # A question without a content word gives relevance nothing to measure, answered or not.
    bare = scorer.score_one(rec("Why?", ""))
    assert metrics(bare)["answer_relevance"] == (Outcome.NOT_APPLICABLE, None, "empty_answer")
    refusal = scorer.score_one(rec("How long are buckets kept?", "I'm sorry, I cannot find that."))
    assert "refusal" in [d.kind for d in refusal.detections]
    assert metrics(refusal)["faithfulness"][2] == "refusal"
    nothing = scorer.score_one(rec("How long are buckets kept?", "Thirty days.", contexts=()))
    assert "no_relevant_context" in [d.kind for d in nothing.detections]
    assert metrics(nothing)["context_relevance"][2] == "no_contexts"
    off = scorer.score_one(rec("Best lasagna recipe?", "Bake it.", contexts=(CONTEXT,)))
    assert "no_relevant_context" in [d.kind for d in off.detections]
