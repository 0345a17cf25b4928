"""scope (failure mode 4): how close the question is to the configured scope examples."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ScopeCheck:
    """The nearest in-scope example and its similarity against ``threshold``; the nearest
    out-of-scope example when any is configured."""

    similarity: float
    nearest: str
    threshold: float
    nearest_out_of_scope: str | None = None
    out_of_scope_similarity: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"similarity": self.similarity, "nearest": self.nearest,
                               "threshold": self.threshold}
        if self.nearest_out_of_scope is not None:
            out["nearest_out_of_scope"] = self.nearest_out_of_scope
            out["out_of_scope_similarity"] = self.out_of_scope_similarity
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScopeCheck:
        return cls(float(data["similarity"]), str(data["nearest"]), float(data["threshold"]),
                   data.get("nearest_out_of_scope"), data.get("out_of_scope_similarity"))
