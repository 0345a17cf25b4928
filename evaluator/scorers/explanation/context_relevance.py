"""context_relevance: the relevance of each retrieved passage to the question."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ContextRelevanceParts:
    """Per-passage relevance (``per_context``, in retrieval order), its best and mean, and the
    index of the best passage."""

    best: float
    mean: float
    best_context: int
    per_context: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"best": self.best, "mean": self.mean, "best_context": self.best_context,
                "per_context": list(self.per_context)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ContextRelevanceParts:
        return cls(float(data["best"]), float(data["mean"]), int(data["best_context"]),
                   tuple(float(v) for v in data["per_context"]))
