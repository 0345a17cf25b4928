"""Typed explanations, one module per metric (after ragas's ``metrics/collections``): the
claims and verdicts of faithfulness and groundedness, the parts of answer_relevance, the
per-passage context_relevance, the scope check, and the :class:`Explanation` that holds them.
"""

from evaluator.scorers.explanation.answer_relevance import AnswerRelevanceParts
from evaluator.scorers.explanation.context_relevance import ContextRelevanceParts
from evaluator.scorers.explanation.explanation import Explanation
from evaluator.scorers.explanation.faithfulness import Claim, Verdict
from evaluator.scorers.explanation.judge import JudgeTrace
from evaluator.scorers.explanation.scope import ScopeCheck

__all__ = ["AnswerRelevanceParts", "Claim", "ContextRelevanceParts", "Explanation",
           "JudgeTrace", "ScopeCheck", "Verdict"]
