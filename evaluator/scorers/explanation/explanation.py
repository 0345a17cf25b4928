"""One scorer's explanation of one item: what the store keeps beside the numbers and what
``groundwatch explain`` and the HTML report show.

It is serialised to a JSON object (:meth:`Explanation.to_dict`) whose keys are the ones the
store has always held, and read back with :meth:`Explanation.from_dict`, which keeps whatever
it does not recognise (an older version's keys, a team's own scorer's) in ``extra``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from evaluator.scorers.explanation.answer_relevance import AnswerRelevanceParts
from evaluator.scorers.explanation.context_relevance import ContextRelevanceParts
from evaluator.scorers.explanation.faithfulness import Claim, unsupported
from evaluator.scorers.explanation.judge import JudgeTrace
from evaluator.scorers.explanation.scope import ScopeCheck

T = TypeVar("T")

# Keys of the stored object, in the order they are written.
_KEYS = ("scorer", "version", "error", "scope", "best_context", "context_relevance",
         "answer_relevance", "claims", "unsupported", "supported_share", "judge")


@dataclass(frozen=True, slots=True)
class Explanation:
    """Every part is optional: a backend fills in what it measured. ``claims`` is ``None``
    when claims were not checked and ``()`` when the answer had none; ``best_context`` is
    the lexical scorer's index of the best passage (the embedded one gives
    ``context_relevance`` instead); ``error`` is the kind of a failure that cost the whole
    item."""

    scorer: str | None = None
    version: str | None = None
    error: str | None = None
    scope: ScopeCheck | None = None
    best_context: int | None = None
    context_relevance: ContextRelevanceParts | None = None
    answer_relevance: AnswerRelevanceParts | None = None
    claims: tuple[Claim, ...] | None = None
    supported_share: float | None = None
    judge: JudgeTrace | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def unsupported(self) -> list[str]:
        """The claims that are not supported (empty when claims were not checked)."""
        return unsupported(self.claims or ())

    def to_dict(self) -> dict[str, Any]:
        """The stored JSON object."""
        out: dict[str, Any] = {}
        for key in ("scorer", "version", "error"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.scope is not None:
            out["scope"] = self.scope.to_dict()
        if self.best_context is not None:
            out["best_context"] = self.best_context
        if self.context_relevance is not None:
            out["context_relevance"] = self.context_relevance.to_dict()
        if self.answer_relevance is not None:
            out["answer_relevance"] = self.answer_relevance.to_dict()
        if self.claims is not None:
            out["claims"] = [c.to_dict() for c in self.claims]
            out["unsupported"] = self.unsupported
        if self.supported_share is not None:
            out["supported_share"] = self.supported_share
        if self.judge is not None:
            out["judge"] = self.judge.to_dict()
        out.update({k: v for k, v in self.extra.items() if k not in out})
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Explanation:
        """Read a stored object back. Never raises: a part whose shape is unknown stays, as
        stored, in ``extra`` (explain shows what it can)."""
        data = dict(data or {})
        extra = {k: v for k, v in data.items() if k not in _KEYS}
        kept: dict[str, Any] = {}

        def part(key: str, parse: Callable[[Any], T]) -> T | None:
            if data.get(key) is None:
                return None
            try:
                return parse(data[key])
            except (KeyError, TypeError, ValueError, AttributeError):
                kept[key] = data[key]
                return None

        def text(value: Any) -> str:
            if not isinstance(value, str):
                raise TypeError(value)
            return value

        explanation = cls(
            scorer=part("scorer", text), version=part("version", text),
            error=part("error", text), scope=part("scope", ScopeCheck.from_dict),
            best_context=part("best_context", int),
            context_relevance=part("context_relevance", ContextRelevanceParts.from_dict),
            answer_relevance=part("answer_relevance", AnswerRelevanceParts.from_dict),
            claims=part("claims", lambda v: tuple(Claim.from_dict(c) for c in v)),
            supported_share=part("supported_share", float),
            judge=part("judge", JudgeTrace.from_dict),
            extra={**kept, **extra})
        return explanation
