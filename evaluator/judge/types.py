"""What a judge backend is given for one item, and what it gives back per metric."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from evaluator.scorers.explanation import Claim


@dataclass(frozen=True, slots=True)
class JudgeInput:
    """The item's texts as they may leave the process: redacted, and cut to the judge's
    input limits."""

    question: str
    answer: str
    contexts: tuple[str, ...]

    def key(self) -> list[Any]:
        return [self.question, self.answer, list(self.contexts)]


@dataclass(frozen=True, slots=True)
class MetricOutcome:
    """A backend's value for one metric: a number, or NaN. NaN is "nothing to judge" where
    ``empty_reason`` names why (faithfulness of an answer without claims); where it is None
    NaN can only mean that the judge's replies were unusable (ragas's ResponseGroundedness
    and ContextRelevance return NaN when every attempt failed, and 0 for empty input), so it
    is an error. ``claims`` for faithfulness and groundedness; ``detail`` what the
    explanation should show (a rating, a generated question)."""

    value: float
    claims: tuple[Claim, ...] | None = None
    empty_reason: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


class JudgeBackend(Protocol):
    mode: str
    prompt_version: str

    async def judge(self, item: JudgeInput, metrics: Sequence[str],
                    limit: asyncio.Semaphore) -> dict[str, MetricOutcome | BaseException]:
        """A value (or the exception that cost it) for each of ``metrics``."""
        ...


# Whether this scoring attempt is the task's last (workers.tasks sets it through
# Scoring.score): a rate-limited item then becomes an error instead of sending the batch back
# to the queue once more.
FINAL_ATTEMPT: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "groundwatch_judge_final_attempt", default=True)
