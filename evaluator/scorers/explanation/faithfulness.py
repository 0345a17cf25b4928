"""faithfulness and groundedness: the answer's claims, each with a verdict and its evidence.

Both metrics are read off the same claims (faithfulness from the verdicts or support
probabilities, groundedness from the evidence strengths), so they share these types.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Verdict(StrEnum):
    SUPPORTED = "supported"
    UNSUPPORTED = "unsupported"
    CONTRADICTED = "contradicted"


@dataclass(frozen=True, slots=True)
class Claim:
    """One claim of the answer. ``None`` means "this backend does not say": ``missing`` is the
    lexical scorer's (content words absent from the contexts); ``support_probability``,
    ``evidence`` and ``evidence_context`` (the passage's index) the embedded scorer's;
    ``reason`` says why a claim is contradicted, ``mismatch`` shows a clash that did not
    change the verdict, and ``clash`` names the kind of either (number, negation, antonym,
    quantifier, entity, unit, date). ``unsupported_facts`` (the embedded scorer's) are the
    facts of a claim that asserts several which no passage contains: an observation beside
    the verdict, which (with the value) stays the claim model's; on a supported claim it is
    mostly a false alarm (decision 0025)."""

    claim: str
    verdict: Verdict
    strength: float | None = None
    missing: tuple[str, ...] | None = None
    support_probability: float | None = None
    evidence: str | None = None
    evidence_context: int | None = None
    reason: str | None = None
    mismatch: str | None = None
    clash: str | None = None
    unsupported_facts: tuple[str, ...] | None = None

    @property
    def supported(self) -> bool:
        return self.verdict is Verdict.SUPPORTED

    def to_dict(self) -> dict[str, Any]:
        """The stored JSON object: only what the backend said, in a fixed key order."""
        out: dict[str, Any] = {"claim": self.claim, "verdict": self.verdict.value}
        if self.strength is not None:
            out["strength"] = self.strength
        if self.missing is not None:
            out["missing"] = list(self.missing)
        for key in ("support_probability", "evidence", "evidence_context", "reason",
                    "mismatch", "clash"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.unsupported_facts:
            out["unsupported_facts"] = list(self.unsupported_facts)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Claim:
        """The inverse of :meth:`to_dict`; raises on a shape it does not know."""
        missing = data.get("missing")
        facts = data.get("unsupported_facts")
        return cls(
            claim=str(data["claim"]), verdict=Verdict(data["verdict"]),
            strength=data.get("strength"),
            missing=None if missing is None else tuple(str(w) for w in missing),
            support_probability=data.get("support_probability"),
            evidence=data.get("evidence"), evidence_context=data.get("evidence_context"),
            reason=data.get("reason"), mismatch=data.get("mismatch"), clash=data.get("clash"),
            unsupported_facts=None if facts is None else tuple(str(f) for f in facts))


def unsupported(claims: Sequence[Claim]) -> list[str]:
    """The text of every claim that is not supported, in order."""
    return [c.claim for c in claims if not c.supported]
