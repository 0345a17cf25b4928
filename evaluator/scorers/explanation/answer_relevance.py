"""answer_relevance: P(on topic) x P(useful), both parts and the features they came from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class AnswerRelevanceParts:
    """The two factors of answer_relevance; ``features`` are the named model inputs."""

    on_topic: float
    useful: float
    features: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"on_topic": self.on_topic, "useful": self.useful, **self.features}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AnswerRelevanceParts:
        rest = {k: float(v) for k, v in data.items() if k not in ("on_topic", "useful")}
        return cls(float(data["on_topic"]), float(data["useful"]), rest)
